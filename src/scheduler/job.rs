//! What the scheduler runs: jobs of a few kinds, each with a trigger (a cron
//! schedule or a fixed period), a lease, a deadline and retries.
//!
//! A job is named `<kind>/<name>`: `backup/<source>`, `velero/<job>`,
//! `drill/scheduled`, `prune/all`, `replicate/all`, `gc/all`, `wal-status/all`,
//! `watch/all`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{CronSchedule, Zone};
use crate::storage::Store;

/// The kinds of scheduled jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// A backup of one source (then its replication, and its retention when `prune_after_run`).
    Backup,
    /// A Velero Backup of one `[velero.jobs.NAME]`, recorded in the catalog.
    Velero,
    /// The scheduled DR drills of `[drills]`.
    Drill,
    /// Retention of every source on every target (`gsdr prune`).
    Prune,
    /// The catch-up sweep: what the off-site targets lack (`gsdr replicate`).
    Replicate,
    /// Garbage collection of every target (`gsdr storage gc`).
    Gc,
    /// The end of each postgres source's contiguous WAL chain, and the metrics
    /// every replica derives from the catalog (not leased: every replica runs it).
    WalStatus,
    /// What the on-call engineer must know beyond job failures: RPO above
    /// target, WAL and off-site lag, drill results, the heartbeat.
    Watch,
}

impl JobKind {
    /// Every kind, in the order `gsdr status` lists them.
    pub const ALL: [JobKind; 8] = [
        JobKind::Backup,
        JobKind::Velero,
        JobKind::Drill,
        JobKind::Prune,
        JobKind::Replicate,
        JobKind::Gc,
        JobKind::WalStatus,
        JobKind::Watch,
    ];

    /// The kind's name in job ids, metrics labels and `daemon.timeouts`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Velero => "velero",
            JobKind::Drill => "drill",
            JobKind::Prune => "prune",
            JobKind::Replicate => "replicate",
            JobKind::Gc => "gc",
            JobKind::WalStatus => "wal-status",
            JobKind::Watch => "watch",
        }
    }

    /// Whether one run per slot across replicas (a lease); otherwise every replica runs it.
    pub fn leased(self) -> bool {
        self != JobKind::WalStatus
    }

    /// Whether a failed attempt with a temporary error is retried within its slot.
    pub fn retried(self) -> bool {
        matches!(self, JobKind::Backup | JobKind::Velero)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a job kind; kinds: {}",
                    JobKind::ALL.map(JobKind::as_str).join(", ")
                )
            })
    }
}

/// A job's identity: kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId {
    /// Its kind.
    pub kind: JobKind,
    /// Source, Velero job, or `all` / `scheduled` for the policy-wide jobs.
    pub name: String,
}

impl JobId {
    /// `kind/name`.
    pub fn new(kind: JobKind, name: impl Into<String>) -> Self {
        JobId {
            kind,
            name: name.into(),
        }
    }

    /// The backup job of `source`.
    pub fn backup(source: &str) -> Self {
        JobId::new(JobKind::Backup, source)
    }

    /// The key of its run lease under `locks_prefix`. Backups keep the
    /// source-named key older daemons and `storage gc` read (`<prefix>/<source>.json`).
    pub fn lease_key(&self, locks_prefix: &str) -> String {
        match self.kind {
            JobKind::Backup => super::lease::lease_key(locks_prefix, &self.name),
            k => format!(
                "{}/jobs/{}/{}.json",
                locks_prefix.trim_end_matches('/'),
                k.as_str(),
                self.name
            ),
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// At the slots of a cron schedule.
    Cron(Box<CronSchedule>),
    /// Every period, at whole multiples of it since the Unix epoch (so replicas agree on the slots).
    Every(Duration),
}

impl Trigger {
    /// The newest slot at or before `now`, and the next one after `now`.
    pub fn slots(
        &self,
        zone: Zone,
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self {
            Trigger::Cron(s) => super::slots(s, zone, now),
            Trigger::Every(d) => {
                let p = d.as_millis().max(1) as i64;
                let at = now.timestamp_millis().div_euclid(p) * p;
                let prev = Utc.timestamp_millis_opt(at).single();
                let next = Utc.timestamp_millis_opt(at + p).single();
                (prev, next)
            }
        }
    }

    /// The distance between the next two slots.
    pub fn interval(&self, zone: Zone, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Trigger::Cron(s) => super::interval(s, zone, now),
            Trigger::Every(d) => Some(*d),
        }
    }

    /// The schedule as the policy states it (`every 15m` for periods).
    pub fn describe(&self) -> String {
        match self {
            Trigger::Cron(s) => s.text().to_string(),
            Trigger::Every(d) => format!("every {}", humantime::format_duration(*d)),
        }
    }
}

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Which job.
    pub id: JobId,
    /// When it runs.
    pub trigger: Trigger,
    /// Its home target: where its lease and its [`super::record`] live; `None` = no lease, no record.
    pub home: Option<Arc<dyn Store>>,
    /// Deadline of one attempt: past it the attempt is cancelled and the slot fails.
    pub timeout: Duration,
}

impl JobPlan {
    /// The backup job of `source` on a cron schedule, leased and recorded on `home`.
    pub fn backup(
        source: &str,
        schedule: CronSchedule,
        home: Option<Arc<dyn Store>>,
        timeout: Duration,
    ) -> Self {
        JobPlan {
            id: JobId::backup(source),
            trigger: Trigger::Cron(Box::new(schedule)),
            home,
            timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_slot_at_epoch_multiples_so_replicas_agree() {
        let t = Trigger::Every(Duration::from_secs(900));
        let utc = Zone::UTC;
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 7, 12).unwrap();
        let (p, n) = t.slots(utc, now);
        assert_eq!(
            p,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap())
        );
        assert_eq!(
            n,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 10, 15, 0).unwrap())
        );
        let exact = Utc.with_ymd_and_hms(2026, 12, 2, 10, 15, 0).unwrap();
        assert_eq!(t.slots(utc, exact).0, Some(exact));
    }

    #[test]
    fn job_ids_and_lease_keys() {
        assert_eq!(JobId::backup("pg").to_string(), "backup/pg");
        assert_eq!(JobId::backup("pg").lease_key("locks"), "locks/pg.json");
        assert_eq!(
            JobId::new(JobKind::Velero, "daily").lease_key("locks/"),
            "locks/jobs/velero/daily.json"
        );
        assert_eq!("wal-status".parse::<JobKind>(), Ok(JobKind::WalStatus));
        assert!("nope"
            .parse::<JobKind>()
            .unwrap_err()
            .contains("kinds: backup"));
    }
}
