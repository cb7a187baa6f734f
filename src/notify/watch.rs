//! When to notify: [`evaluate`] turns what the watch job observed (per
//! source: RPO exposure and target, WAL archive lag, off-site lag; per job:
//! its last outcome) into transition notices, against the previous
//! [`WatchState`].
//!
//! - A threshold fires once when crossed, once more when back within it,
//!   and in between reminds at most every [`Rules::remind_every`].
//! - A job's failure fires once; while it keeps failing, a newer failed run
//!   reminds at most every `remind_every`; its first success after a failure
//!   fires a recovery. Every new drill result fires a `DrillFinished`.
//! - While nothing fires, a heartbeat goes out at most every
//!   [`Rules::heartbeat_every`] (when a heartbeat URL is set).
//!
//! The function is pure and the state serialisable: the replica holding the
//! watch job's lease stores the new state (in the catalog) once its notices
//! are sent, so other replicas and restarts do not send them again. If a send
//! fails, keep the previous state: the next evaluation derives the notices
//! again. A value that was not observed (`None`) keeps its alert as it was;
//! a source no longer observed drops its alerts without a notice.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DrillResult, Notice};
use crate::policy::DaemonConfig;

pub use crate::scheduler::JobKind;

/// What the watch job saw at one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Per source.
    pub sources: BTreeMap<String, SourceObservation>,
    /// The last outcome of each job that has one.
    pub jobs: Vec<JobObservation>,
}

/// One source's exposure and lags; `None` = not known this time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceObservation {
    /// Time since the newest restorable point.
    pub rpo_exposure: Option<Duration>,
    /// The source's RPO objective (`None`: no objective, no RPO notice).
    pub rpo_target: Option<Duration>,
    /// How far the WAL archive is behind now (postgres sources).
    pub wal_lag: Option<Duration>,
    /// How far the off-site copy is behind the primary (sources with an off-site target).
    pub offsite_lag: Option<Duration>,
}

/// The last outcome of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobObservation {
    /// Job kind.
    pub kind: JobKind,
    /// Job name: the source, Velero job, scenario or target.
    pub name: String,
    /// When that run finished; a later time is a new run.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: JobOutcome,
}

/// How a job's run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// It succeeded; `id` is the backup (or Velero Backup) it produced, if any.
    Succeeded {
        /// Backup id or Velero Backup name.
        id: Option<String>,
    },
    /// It failed.
    Failed {
        /// The last error.
        error: String,
    },
    /// A drill ran to the end and wrote its report (passed or not).
    Drill(DrillResult),
}

/// Thresholds and intervals of the watch (from the policy's `[daemon]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// WAL archive lag that fires `WalLagAbove`.
    pub wal_lag_alert: Duration,
    /// Off-site lag that fires `OffsiteLagAbove`.
    pub offsite_lag_alert: Duration,
    /// Least time between two notices of the same ongoing problem.
    pub remind_every: Duration,
    /// Least time between heartbeats; `None`: no heartbeat.
    pub heartbeat_every: Option<Duration>,
}

impl Rules {
    /// The rules of a policy's `[daemon]` table.
    pub fn from_policy(d: &DaemonConfig) -> Rules {
        Rules {
            wal_lag_alert: d.wal_lag_alert.0,
            offsite_lag_alert: d.offsite_lag_alert.0,
            remind_every: d.notify_min_interval.0,
            heartbeat_every: d.heartbeat_url.as_ref().map(|_| d.heartbeat_every.0),
        }
    }
}

/// What the watch remembers between evaluations (stored in the catalog).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchState {
    /// Thresholds currently crossed, by key (`rpo/<source>`, `wal_lag/<source>`, `offsite_lag/<source>`).
    pub alerts: BTreeMap<String, Alert>,
    /// Per job (`<kind>/<name>`): the last run seen and whether it failed.
    pub jobs: BTreeMap<String, JobState>,
    /// When the last heartbeat was due.
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// A threshold being crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alert {
    /// When it was first seen crossed.
    pub since: DateTime<Utc>,
    /// When it was last notified.
    pub last_sent: DateTime<Utc>,
}

/// What the watch knows of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobState {
    /// Finish time of the newest run seen.
    pub last_finished: DateTime<Utc>,
    /// That run failed (for a drill: did not pass).
    pub failing: bool,
    /// When its failure was last notified.
    pub last_sent: Option<DateTime<Utc>>,
}

fn due(last: DateTime<Utc>, now: DateTime<Utc>, every: Duration) -> bool {
    (now - last).to_std().is_ok_and(|d| d >= every)
}

/// A watched per-source value.
#[derive(Debug, Clone, Copy)]
enum Metric {
    Rpo,
    WalLag,
    OffsiteLag,
}

impl Metric {
    fn key(self, source: &str) -> String {
        let m = match self {
            Metric::Rpo => "rpo",
            Metric::WalLag => "wal_lag",
            Metric::OffsiteLag => "offsite_lag",
        };
        format!("{m}/{source}")
    }

    /// The notice of `source` crossing (`above`) or coming back within the threshold.
    fn notice(self, above: bool, source: &str, value: f64, threshold: f64) -> Notice {
        let source = source.to_string();
        let (lag_secs, threshold_secs) = (value, threshold);
        match (self, above) {
            (Metric::Rpo, true) => Notice::RpoAboveTarget {
                source,
                exposure_secs: value,
                target_secs: threshold,
            },
            (Metric::Rpo, false) => Notice::RpoWithinTarget {
                source,
                exposure_secs: value,
                target_secs: threshold,
            },
            (Metric::WalLag, true) => Notice::WalLagAbove {
                source,
                lag_secs,
                threshold_secs,
            },
            (Metric::WalLag, false) => Notice::WalLagRecovered {
                source,
                lag_secs,
                threshold_secs,
            },
            (Metric::OffsiteLag, true) => Notice::OffsiteLagAbove {
                source,
                lag_secs,
                threshold_secs,
            },
            (Metric::OffsiteLag, false) => Notice::OffsiteLagRecovered {
                source,
                lag_secs,
                threshold_secs,
            },
        }
    }
}

/// The new state and the notices to send, from `prev` and what was observed `now`.
pub fn evaluate(
    prev: &WatchState,
    obs: &Observations,
    rules: &Rules,
    now: DateTime<Utc>,
) -> (WatchState, Vec<Notice>) {
    let mut next = WatchState {
        alerts: BTreeMap::new(),
        jobs: prev.jobs.clone(),
        last_heartbeat: prev.last_heartbeat,
    };
    let mut out = Vec::new();
    for (source, o) in &obs.sources {
        let checks = [
            (Metric::Rpo, o.rpo_exposure, o.rpo_target),
            (Metric::WalLag, o.wal_lag, Some(rules.wal_lag_alert)),
            (
                Metric::OffsiteLag,
                o.offsite_lag,
                Some(rules.offsite_lag_alert),
            ),
        ];
        for (metric, value, threshold) in checks {
            let key = metric.key(source);
            let was = prev.alerts.get(&key).copied();
            let (Some(v), Some(t)) = (value, threshold) else {
                // Not observed this time: the alert stays as it was.
                if let Some(a) = was {
                    next.alerts.insert(key, a);
                }
                continue;
            };
            let (vs, ts) = (v.as_secs_f64(), t.as_secs_f64());
            if v <= t {
                if was.is_some() {
                    out.push(metric.notice(false, source, vs, ts));
                }
                continue;
            }
            let (alert, send) = match was {
                None => (
                    Alert {
                        since: now,
                        last_sent: now,
                    },
                    true,
                ),
                Some(a) if due(a.last_sent, now, rules.remind_every) => (
                    Alert {
                        last_sent: now,
                        ..a
                    },
                    true,
                ),
                Some(a) => (a, false),
            };
            if send {
                out.push(metric.notice(true, source, vs, ts));
            }
            next.alerts.insert(key, alert);
        }
    }
    for j in &obs.jobs {
        job(&mut next, &mut out, j, rules, now);
    }
    let healthy = next.alerts.is_empty() && next.jobs.values().all(|j| !j.failing);
    if let Some(every) = rules.heartbeat_every {
        if healthy && prev.last_heartbeat.is_none_or(|h| due(h, now, every)) {
            next.last_heartbeat = Some(now);
            out.push(Notice::Heartbeat);
        }
    }
    (next, out)
}

fn job(
    next: &mut WatchState,
    out: &mut Vec<Notice>,
    j: &JobObservation,
    rules: &Rules,
    now: DateTime<Utc>,
) {
    let key = format!("{}/{}", j.kind.as_str(), j.name);
    let prev = next.jobs.get(&key).copied();
    if prev.is_some_and(|p| j.finished_at <= p.last_finished) {
        return;
    }
    let was_failing = prev.is_some_and(|p| p.failing);
    let mut state = JobState {
        last_finished: j.finished_at,
        failing: false,
        last_sent: None,
    };
    match &j.outcome {
        JobOutcome::Failed { error } => {
            state.failing = true;
            state.last_sent = prev.and_then(|p| p.last_sent.filter(|_| p.failing));
            if state
                .last_sent
                .is_none_or(|s| due(s, now, rules.remind_every))
            {
                state.last_sent = Some(now);
                out.push(failed(j, error));
            }
        }
        JobOutcome::Succeeded { id } => {
            if was_failing {
                out.push(recovered(j, id.clone()));
            }
        }
        JobOutcome::Drill(d) => {
            state.failing = !d.passed;
            out.push(Notice::DrillFinished(d.clone()));
        }
    }
    next.jobs.insert(key, state);
}

fn failed(j: &JobObservation, error: &str) -> Notice {
    let (name, error) = (j.name.clone(), error.to_string());
    match j.kind {
        JobKind::Backup => Notice::BackupFailed {
            source: name,
            error,
        },
        JobKind::Velero => Notice::VeleroFailed { job: name, error },
        k => Notice::JobFailed {
            job_kind: k.as_str().into(),
            name,
            error,
        },
    }
}

fn recovered(j: &JobObservation, id: Option<String>) -> Notice {
    let name = j.name.clone();
    match j.kind {
        JobKind::Backup => Notice::BackupRecovered {
            source: name,
            backup_id: id.unwrap_or_default(),
        },
        JobKind::Velero => Notice::VeleroRecovered {
            job: name,
            backup: id,
        },
        k => Notice::JobRecovered {
            job_kind: k.as_str().into(),
            name,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::SourceRpo;

    const MIN: Duration = Duration::from_secs(60);

    fn rules() -> Rules {
        Rules {
            wal_lag_alert: 15 * MIN,
            offsite_lag_alert: 60 * MIN,
            remind_every: 15 * MIN,
            heartbeat_every: None,
        }
    }

    fn t(min: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::minutes(min)
    }

    fn rpo(exposure_min: u64) -> Observations {
        let mut o = Observations::default();
        o.sources.insert(
            "pg".into(),
            SourceObservation {
                rpo_exposure: Some(MIN * exposure_min as u32),
                rpo_target: Some(60 * MIN),
                ..Default::default()
            },
        );
        o
    }

    /// Evaluates `steps` in turn, returning the notices' kinds at each step and the last state.
    fn run(steps: &[(i64, Observations)], rules: &Rules) -> (Vec<Vec<&'static str>>, WatchState) {
        let mut st = WatchState::default();
        let mut kinds = Vec::new();
        for (min, obs) in steps {
            let (next, out) = evaluate(&st, obs, rules, t(*min));
            kinds.push(out.iter().map(Notice::kind).collect());
            st = next;
        }
        (kinds, st)
    }

    #[test]
    fn a_threshold_fires_once_reminds_after_the_interval_and_recovers_once() {
        let (kinds, st) = run(
            &[
                (0, rpo(90)),
                (1, rpo(91)),
                (14, rpo(104)),
                (15, rpo(105)),
                (16, rpo(106)),
                (17, rpo(10)),
                (18, rpo(11)),
            ],
            &rules(),
        );
        assert_eq!(
            kinds,
            [
                vec!["rpo_above_target"],
                vec![],
                vec![],
                vec!["rpo_above_target"],
                vec![],
                vec!["rpo_within_target"],
                vec![],
            ]
        );
        assert!(st.alerts.is_empty());
        let (_, out) = evaluate(&WatchState::default(), &rpo(90), &rules(), t(0));
        assert_eq!(
            out,
            [Notice::RpoAboveTarget {
                source: "pg".into(),
                exposure_secs: 5400.0,
                target_secs: 3600.0
            }]
        );
    }

    #[test]
    fn a_restart_from_the_stored_state_sends_nothing_again() {
        let (_, st) = run(&[(0, rpo(90))], &rules());
        let stored = serde_json::to_string(&st).unwrap();
        let back: WatchState = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, st);
        let (next, out) = evaluate(&back, &rpo(95), &rules(), t(5));
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(next.alerts["rpo/pg"].since, t(0));
    }

    #[test]
    fn unobserved_values_keep_their_alert_and_removed_sources_drop_it() {
        let unknown = {
            let mut o = rpo(0);
            o.sources.get_mut("pg").unwrap().rpo_exposure = None;
            o
        };
        let (kinds, st) = run(&[(0, rpo(90)), (1, unknown), (2, rpo(95))], &rules());
        assert_eq!(kinds, [vec!["rpo_above_target"], vec![], vec![]]);
        assert!(st.alerts.contains_key("rpo/pg"));
        let (next, out) = evaluate(&st, &Observations::default(), &rules(), t(3));
        assert!(out.is_empty() && next.alerts.is_empty(), "{out:?}");
        // No target: no RPO notice at all.
        let mut no_target = rpo(1000);
        no_target.sources.get_mut("pg").unwrap().rpo_target = None;
        assert!(evaluate(&WatchState::default(), &no_target, &rules(), t(0))
            .1
            .is_empty());
    }

    #[test]
    fn wal_and_offsite_lags_use_the_policy_thresholds() {
        let lag = |wal: u64, offsite: u64| {
            let mut o = Observations::default();
            o.sources.insert(
                "pg".into(),
                SourceObservation {
                    wal_lag: Some(MIN * wal as u32),
                    offsite_lag: Some(MIN * offsite as u32),
                    ..Default::default()
                },
            );
            o
        };
        let (kinds, _) = run(
            &[
                (0, lag(15, 60)),
                (1, lag(16, 60)),
                (2, lag(16, 61)),
                (3, lag(1, 2)),
            ],
            &rules(),
        );
        assert_eq!(
            kinds,
            [
                vec![],
                vec!["wal_lag_above"],
                vec!["offsite_lag_above"],
                vec!["wal_lag_recovered", "offsite_lag_recovered"],
            ]
        );
    }

    fn jobs(kind: JobKind, name: &str, min: i64, outcome: JobOutcome) -> Observations {
        Observations {
            sources: BTreeMap::new(),
            jobs: vec![JobObservation {
                kind,
                name: name.into(),
                finished_at: t(min),
                outcome,
            }],
        }
    }

    fn fail(e: &str) -> JobOutcome {
        JobOutcome::Failed { error: e.into() }
    }

    fn ok(id: Option<&str>) -> JobOutcome {
        JobOutcome::Succeeded {
            id: id.map(String::from),
        }
    }

    #[test]
    fn a_job_failure_fires_once_a_new_failure_reminds_and_a_success_recovers() {
        let b = |min, o| jobs(JobKind::Backup, "mongo", min, o);
        let (kinds, st) = run(
            &[
                (0, b(0, ok(Some("b0")))),
                (1, b(1, fail("disk full"))),
                (2, b(1, fail("disk full"))),
                (10, b(10, fail("disk full"))),
                // Still failing, no newer run: no reminder.
                (30, b(10, fail("disk full"))),
                (31, b(31, fail("disk full"))),
                (32, b(32, ok(Some("b7")))),
                (33, b(33, ok(Some("b8")))),
            ],
            &rules(),
        );
        assert_eq!(
            kinds,
            [
                vec![],
                vec!["backup_failed"],
                vec![],
                vec![],
                vec![],
                vec!["backup_failed"],
                vec!["backup_recovered"],
                vec![],
            ]
        );
        assert!(!st.jobs["backup/mongo"].failing);
        let (_, out) = evaluate(&st, &b(40, fail("gone")), &rules(), t(40));
        assert_eq!(
            out,
            [Notice::BackupFailed {
                source: "mongo".into(),
                error: "gone".into()
            }]
        );
    }

    #[test]
    fn velero_and_other_jobs_have_their_own_notices() {
        let r = rules();
        let (_, out) = evaluate(
            &WatchState::default(),
            &jobs(JobKind::Velero, "cluster-full", 0, fail("PartiallyFailed")),
            &r,
            t(0),
        );
        assert_eq!(
            out,
            [Notice::VeleroFailed {
                job: "cluster-full".into(),
                error: "PartiallyFailed".into()
            }]
        );
        let (st, _) = evaluate(
            &WatchState::default(),
            &jobs(JobKind::Velero, "cluster-full", 0, fail("x")),
            &r,
            t(0),
        );
        let (_, out) = evaluate(
            &st,
            &jobs(
                JobKind::Velero,
                "cluster-full",
                1,
                ok(Some("cluster-full-1")),
            ),
            &r,
            t(1),
        );
        assert_eq!(
            out,
            [Notice::VeleroRecovered {
                job: "cluster-full".into(),
                backup: Some("cluster-full-1".into())
            }]
        );
        let (st, out) = evaluate(
            &WatchState::default(),
            &jobs(JobKind::WalStatus, "pg", 0, fail("denied")),
            &r,
            t(0),
        );
        assert_eq!(
            out,
            [Notice::JobFailed {
                job_kind: "wal-status".into(),
                name: "pg".into(),
                error: "denied".into()
            }]
        );
        let (_, out) = evaluate(&st, &jobs(JobKind::WalStatus, "pg", 1, ok(None)), &r, t(1));
        assert_eq!(
            out,
            [Notice::JobRecovered {
                job_kind: "wal-status".into(),
                name: "pg".into()
            }]
        );
    }

    fn drill(passed: bool) -> JobOutcome {
        JobOutcome::Drill(DrillResult {
            scenario: "full".into(),
            passed,
            rto_secs: Some(600.0),
            rto_target_secs: Some(3600.0),
            rpo: vec![SourceRpo {
                source: "pg".into(),
                rpo_secs: 30.0,
                target_secs: Some(900.0),
            }],
            report: "s3://b/drills/full/r.json".into(),
        })
    }

    #[test]
    fn every_new_drill_result_is_notified_once() {
        let d = |min, passed| jobs(JobKind::Drill, "full", min, drill(passed));
        let (kinds, st) = run(
            &[(0, d(0, false)), (1, d(0, false)), (60, d(60, true))],
            &rules(),
        );
        assert_eq!(
            kinds,
            [vec!["drill_finished"], vec![], vec!["drill_finished"]]
        );
        assert!(!st.jobs["drill/full"].failing);
    }

    #[test]
    fn the_heartbeat_goes_out_while_nothing_fails_at_most_every_interval() {
        let r = Rules {
            heartbeat_every: Some(5 * MIN),
            ..rules()
        };
        let quiet = rpo(10);
        let (kinds, _) = run(
            &[
                (0, quiet.clone()),
                (1, quiet.clone()),
                (5, quiet.clone()),
                (6, rpo(90)),
                (11, rpo(90)),
                (12, quiet.clone()),
                (13, jobs(JobKind::Drill, "full", 13, drill(false))),
                (20, Observations::default()),
            ],
            &r,
        );
        assert_eq!(
            kinds,
            [
                vec!["heartbeat"],
                vec![],
                vec!["heartbeat"],
                vec!["rpo_above_target"],
                vec![],
                vec!["rpo_within_target", "heartbeat"],
                vec!["drill_finished"],
                // The failed drill is still the newest result.
                vec![],
            ]
        );
        let (kinds, _) = run(&[(0, quiet)], &rules());
        assert_eq!(
            kinds,
            [Vec::<&str>::new()],
            "no heartbeat URL, no heartbeat"
        );
    }
}
