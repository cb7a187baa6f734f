//! Notifications: a Slack-compatible webhook (`{"text": …}`) on failure and
//! on recovery, rate limited per source.
//!
//! A source that keeps failing sends at most one message per
//! `notify_min_interval`; its first success after a failure always sends a
//! recovery message. The webhook URL is a secret (read from a file or an
//! environment variable) and never appears in logs or errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::policy::Secret;
use crate::scheduler::{OutcomeHook, SlotOutcome};

/// Per-source notification state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyState {
    /// The last slot failed.
    pub failing: bool,
    /// When the last failure message went out (tokio time).
    pub last_sent: Option<tokio::time::Instant>,
}

/// What to send for `outcome`, updating `state`; `None` = nothing (rate limited or nothing new).
pub fn decide(
    state: &mut NotifyState,
    platform: &str,
    subject: &str,
    outcome: &SlotOutcome,
    now: tokio::time::Instant,
    min_interval: Duration,
) -> Option<String> {
    match outcome {
        SlotOutcome::Success(r) => {
            let was = std::mem::take(&mut state.failing);
            state.last_sent = None;
            was.then(|| {
                format!(
                    ":white_check_mark: gsdr {platform}: {subject} recovered ({})",
                    r.id
                )
            })
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
            Some(format!(":x: gsdr {platform}: {subject} failed: {e}"))
        }
        SlotOutcome::Aborted => {
            state.failing = true;
            None
        }
        SlotOutcome::Skipped(_) => None,
    }
}

/// Posts to a webhook.
pub struct Notifier {
    url: Secret,
    platform: String,
    min_interval: Duration,
    client: reqwest::Client,
    state: Mutex<HashMap<String, NotifyState>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier posting to `url` for `platform`.
    pub fn new(url: Secret, platform: &str, min_interval: Duration) -> Self {
        Notifier {
            url,
            platform: platform.to_string(),
            min_interval,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Posts `text` now; errors are logged without the URL.
    pub async fn send(&self, text: &str) {
        let r = self
            .client
            .post(self.url.expose())
            .json(&serde_json::json!({ "text": text }))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match r {
            Ok(_) => tracing::info!(event = "notification_sent"),
            // reqwest errors can carry the URL: log only the kind.
            Err(e) => tracing::warn!(
                event = "notification_failed",
                status = e.status().map(|s| s.as_u16()),
                timeout = e.is_timeout(),
                connect = e.is_connect()
            ),
        }
    }
}

impl OutcomeHook for std::sync::Arc<Notifier> {
    fn outcome(
        &self,
        job: &crate::scheduler::JobId,
        outcome: &SlotOutcome,
        before: Option<&crate::scheduler::record::JobRecord>,
    ) -> bool {
        let subject = match job.kind {
            crate::scheduler::JobKind::Backup => format!("backup of `{}`", job.name),
            _ => format!("job `{job}`"),
        };
        let msg = match before {
            // The catalog's record says whether the job was failing and when
            // that was last said, whichever replica ran the earlier slots.
            Some(rec) => decide_recorded(
                rec,
                &self.platform,
                &subject,
                outcome,
                chrono::Utc::now(),
                self.min_interval,
            ),
            None => {
                let mut st = self.state.lock().expect("notify lock");
                let s = st.entry(job.to_string()).or_default();
                decide(
                    s,
                    &self.platform,
                    &subject,
                    outcome,
                    tokio::time::Instant::now(),
                    self.min_interval,
                )
            }
        };
        let Some(text) = msg else { return false };
        let failure = matches!(outcome, SlotOutcome::Failed(_));
        let me = self.clone();
        tokio::spawn(async move { me.send(&text).await });
        failure
    }
}

/// [`decide`] from a job's record in the catalog: a recovery when the
/// previous run failed; a failure when the previous run succeeded, or when
/// the streak was last notified at least `min_interval` ago.
pub fn decide_recorded(
    before: &crate::scheduler::record::JobRecord,
    platform: &str,
    subject: &str,
    outcome: &SlotOutcome,
    now: chrono::DateTime<chrono::Utc>,
    min_interval: Duration,
) -> Option<String> {
    match outcome {
        SlotOutcome::Success(r) => before.failing().then(|| {
            format!(
                ":white_check_mark: gsdr {platform}: {subject} recovered ({})",
                r.id
            )
        }),
        SlotOutcome::Failed(e) => {
            let recent = before.failing()
                && before
                    .notified_failure_at
                    .is_some_and(|t| (now - t).to_std().unwrap_or(Duration::ZERO) < min_interval);
            (!recent).then(|| format!(":x: gsdr {platform}: {subject} failed: {e}"))
        }
        SlotOutcome::Aborted | SlotOutcome::Skipped(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::RunReport;

    #[tokio::test(start_paused = true)]
    async fn failures_are_rate_limited_and_recovery_always_sent() {
        let mut st = NotifyState::default();
        let min = Duration::from_secs(900);
        let fail = SlotOutcome::Failed("boom".into());
        let ok = SlotOutcome::Success(RunReport {
            id: "b1".into(),
            bytes_raw: 1,
            bytes_stored: 1,
            duration_secs: 0.1,
            committed_at: None,
        });
        let t0 = tokio::time::Instant::now();
        assert!(
            decide(&mut st, "p", "s", &ok, t0, min).is_none(),
            "no recovery without a failure"
        );
        assert!(decide(&mut st, "p", "s", &fail, t0, min)
            .unwrap()
            .contains("failed: boom"));
        assert!(decide(&mut st, "p", "s", &fail, t0 + Duration::from_secs(60), min).is_none());
        assert!(decide(&mut st, "p", "s", &fail, t0 + Duration::from_secs(901), min).is_some());
        assert!(
            decide(&mut st, "p", "s", &ok, t0 + Duration::from_secs(902), min)
                .unwrap()
                .contains("recovered")
        );
        assert!(!st.failing);
    }
}
