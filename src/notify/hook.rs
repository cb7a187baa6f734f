//! The scheduler's per-slot hook: a message when a job fails and when it
//! recovers (backups, Velero backups and every other job kind).
//!
//! Whether a job was failing, and when that was last said, comes from the
//! job's record in the catalog ([`crate::scheduler::record`]), so the replica
//! that runs a slot (it holds the slot's lease) decides for all replicas and
//! across restarts: one message per failure streak per `notify_min_interval`,
//! one recovery message. A job without a record (no home target) falls back
//! to this process's memory. The webhook URL is a secret and never appears
//! in logs or errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Notice, Sender};
use crate::policy::WebhookFormat;
use crate::scheduler::record::JobRecord;
use crate::scheduler::{JobId, JobKind, OutcomeHook, SlotOutcome};
use crate::secret::Secret;

/// Per-job notification state of this process (jobs without a record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// The last slot failed.
    pub failing: bool,
    /// When the last failure message went out (tokio time).
    pub last_sent: Option<tokio::time::Instant>,
}

/// The failure notice of `job`.
fn failed(job: &JobId, error: &str) -> Notice {
    match job.kind {
        JobKind::Backup => Notice::BackupFailed {
            source: job.name.clone(),
            error: error.to_string(),
        },
        JobKind::Velero => Notice::VeleroFailed {
            job: job.name.clone(),
            error: error.to_string(),
        },
        k => Notice::JobFailed {
            job_kind: k.as_str().to_string(),
            name: job.name.clone(),
            error: error.to_string(),
        },
    }
}

/// The recovery notice of `job`, whose run made `made`.
fn recovered(job: &JobId, made: &str) -> Notice {
    match job.kind {
        JobKind::Backup => Notice::BackupRecovered {
            source: job.name.clone(),
            backup_id: made.to_string(),
        },
        JobKind::Velero => Notice::VeleroRecovered {
            job: job.name.clone(),
            backup: Some(made.to_string()),
        },
        k => Notice::JobRecovered {
            job_kind: k.as_str().to_string(),
            name: job.name.clone(),
        },
    }
}

/// What to send for `outcome`, updating `state`; `None` = nothing (rate limited or nothing new).
pub fn decide(
    state: &mut NotifyState,
    job: &JobId,
    outcome: &SlotOutcome,
    now: tokio::time::Instant,
    min_interval: Duration,
) -> Option<Notice> {
    match outcome {
        SlotOutcome::Success(r) => {
            let was = std::mem::take(&mut state.failing);
            state.last_sent = None;
            was.then(|| recovered(job, &r.id))
        }
        SlotOutcome::Failed(e) => {
            state.failing = true;
            if state
                .last_sent
                .is_some_and(|t| now.duration_since(t) < min_interval)
            {
                return None;
            }
            state.last_sent = Some(now);
            Some(failed(job, e))
        }
        SlotOutcome::Aborted => {
            state.failing = true;
            None
        }
        SlotOutcome::Skipped(_) => None,
    }
}

/// [`decide`] from the job's record before this slot: a recovery when the
/// previous run failed; a failure when the previous run succeeded, or when
/// the streak was last notified at least `min_interval` ago.
pub fn decide_recorded(
    before: &JobRecord,
    job: &JobId,
    outcome: &SlotOutcome,
    now: chrono::DateTime<chrono::Utc>,
    min_interval: Duration,
) -> Option<Notice> {
    match outcome {
        SlotOutcome::Success(r) => before.failing().then(|| recovered(job, &r.id)),
        SlotOutcome::Failed(e) => {
            let recent = before.failing()
                && before
                    .notified_failure_at
                    .is_some_and(|t| (now - t).to_std().unwrap_or(Duration::ZERO) < min_interval);
            (!recent).then(|| failed(job, e))
        }
        SlotOutcome::Aborted | SlotOutcome::Skipped(_) => None,
    }
}

/// Posts failure and recovery messages for the slots this replica runs.
pub struct Notifier {
    sender: Sender,
    min_interval: Duration,
    state: Mutex<HashMap<String, NotifyState>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier posting Slack-compatible messages to `url` for `platform`.
    pub fn new(url: Secret, platform: &str, min_interval: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(super::SEND_TIMEOUT)
            .build()
            .unwrap_or_default();
        Notifier::with_sender(
            Sender::with_client(
                platform,
                WebhookFormat::Slack,
                Some(url),
                None,
                super::SEND_TIMEOUT,
                client,
            ),
            min_interval,
        )
    }

    /// A notifier posting through `sender` (the policy's format and URLs).
    pub fn with_sender(sender: Sender, min_interval: Duration) -> Self {
        Notifier {
            sender,
            min_interval,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Posts `notice` now; a failure is logged without the URL.
    pub async fn send(&self, notice: &Notice) {
        // The sender logs the failure (without the URL); nothing else to do here.
        let _ = self.sender.send(notice).await;
    }
}

impl OutcomeHook for std::sync::Arc<Notifier> {
    fn outcome(&self, job: &JobId, outcome: &SlotOutcome, before: Option<&JobRecord>) -> bool {
        let msg = match before {
            Some(rec) => decide_recorded(rec, job, outcome, chrono::Utc::now(), self.min_interval),
            None => {
                let mut st = self.state.lock().expect("notify lock");
                let s = st.entry(job.to_string()).or_default();
                decide(
                    s,
                    job,
                    outcome,
                    tokio::time::Instant::now(),
                    self.min_interval,
                )
            }
        };
        let Some(notice) = msg else { return false };
        let failure = matches!(outcome, SlotOutcome::Failed(_));
        let me = self.clone();
        tokio::spawn(async move { me.send(&notice).await });
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::record::{RunEntry, RunResult};
    use crate::scheduler::RunReport;

    fn ok() -> SlotOutcome {
        SlotOutcome::Success(RunReport {
            id: "b1".into(),
            bytes_raw: 1,
            bytes_stored: 1,
            duration_secs: 0.1,
            committed_at: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_rate_limited_and_recovery_always_sent() {
        let mut st = NotifyState::default();
        let min = Duration::from_secs(900);
        let fail = SlotOutcome::Failed("boom".into());
        let job = JobId::backup("s");
        let t0 = tokio::time::Instant::now();
        let text = |n: Option<Notice>| n.map(|n| crate::notify::render::text(&n, "p"));
        assert!(
            decide(&mut st, &job, &ok(), t0, min).is_none(),
            "no recovery without a failure"
        );
        assert!(text(decide(&mut st, &job, &fail, t0, min))
            .unwrap()
            .contains("failed: boom"));
        assert!(decide(&mut st, &job, &fail, t0 + Duration::from_secs(60), min).is_none());
        assert!(decide(&mut st, &job, &fail, t0 + Duration::from_secs(901), min).is_some());
        assert!(text(decide(
            &mut st,
            &job,
            &ok(),
            t0 + Duration::from_secs(902),
            min
        ))
        .unwrap()
        .contains("recovered"));
        assert!(!st.failing);
    }

    #[test]
    fn the_record_decides_across_replicas() {
        let t = chrono::Utc::now();
        let job = JobId::new(JobKind::Velero, "daily");
        let entry = |result| RunEntry {
            slot: t,
            started_at: t,
            finished_at: t,
            result,
            detail: String::new(),
            attempts: 1,
            holder: "other-replica".into(),
        };
        let min = Duration::from_secs(900);
        let fail = SlotOutcome::Failed("phase Failed".into());
        let good = JobRecord::next(None, &job, entry(RunResult::Success));
        assert!(matches!(
            decide_recorded(&good, &job, &fail, t, min),
            Some(Notice::VeleroFailed { .. })
        ));
        assert!(decide_recorded(&good, &job, &ok(), t, min).is_none());
        let mut bad = JobRecord::next(Some(good), &job, entry(RunResult::Failure));
        bad.notified_failure_at = Some(t);
        assert!(
            decide_recorded(&bad, &job, &fail, t + chrono::Duration::seconds(60), min).is_none()
        );
        assert!(
            decide_recorded(&bad, &job, &fail, t + chrono::Duration::seconds(901), min).is_some()
        );
        assert!(matches!(
            decide_recorded(&bad, &job, &ok(), t, min),
            Some(Notice::VeleroRecovered { .. })
        ));
    }
}
