//! The scheduler's per-slot hook: a Slack-compatible webhook message on a
//! backup's failure and on its recovery, rate limited per source.
//!
//! A source that keeps failing sends at most one message per
//! `notify_min_interval`; its first success after a failure always sends a
//! recovery message. The webhook URL is a secret (read from a file or an
//! environment variable) and never appears in logs or errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::{Notice, Sender};
use crate::policy::{Secret, WebhookFormat};
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
    source: &str,
    outcome: &SlotOutcome,
    now: tokio::time::Instant,
    min_interval: Duration,
) -> Option<Notice> {
    match outcome {
        SlotOutcome::Success(r) => {
            let was = std::mem::take(&mut state.failing);
            state.last_sent = None;
            was.then(|| Notice::BackupRecovered {
                source: source.to_string(),
                backup_id: r.id.clone(),
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
            Some(Notice::BackupFailed {
                source: source.to_string(),
                error: e.clone(),
            })
        }
        SlotOutcome::Aborted => {
            state.failing = true;
            None
        }
        SlotOutcome::Skipped(_) => None,
    }
}

/// Posts backup failures and recoveries to a Slack-compatible webhook.
pub struct Notifier {
    sender: Sender,
    platform: String,
    min_interval: Duration,
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
        let client = reqwest::Client::builder()
            .timeout(super::SEND_TIMEOUT)
            .build()
            .unwrap_or_default();
        Notifier {
            sender: Sender::with_client(
                platform,
                WebhookFormat::Slack,
                Some(url),
                None,
                super::SEND_TIMEOUT,
                client,
            ),
            platform: platform.to_string(),
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
    fn outcome(&self, source: &str, outcome: &SlotOutcome) {
        let msg = {
            let mut st = self.state.lock().expect("notify lock");
            let s = st.entry(source.to_string()).or_default();
            decide(
                s,
                source,
                outcome,
                tokio::time::Instant::now(),
                self.min_interval,
            )
        };
        if let Some(notice) = msg {
            let me = self.clone();
            tokio::spawn(async move { me.send(&notice).await });
        }
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
        });
        let t0 = tokio::time::Instant::now();
        let text = |n: Option<Notice>| n.map(|n| crate::notify::render::text(&n, "p"));
        assert!(
            decide(&mut st, "s", &ok, t0, min).is_none(),
            "no recovery without a failure"
        );
        assert!(text(decide(&mut st, "s", &fail, t0, min))
            .unwrap()
            .contains("failed: boom"));
        assert!(decide(&mut st, "s", &fail, t0 + Duration::from_secs(60), min).is_none());
        assert!(decide(&mut st, "s", &fail, t0 + Duration::from_secs(901), min).is_some());
        assert!(text(decide(
            &mut st,
            "s",
            &ok,
            t0 + Duration::from_secs(902),
            min
        ))
        .unwrap()
        .contains("recovered"));
        assert!(!st.failing);
    }
}
