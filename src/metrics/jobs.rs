//! The jobs running in this process and their deadlines, for `/healthz` and
//! `/readyz`: a job still running past its deadline (its cancellation did not
//! take) makes both answer 503 with its name, so the pod is restarted rather
//! than left wedged while every dashboard stays green.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static RUNNING: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

/// Slack past a deadline before a job counts as overdue: time for its cancellation to take.
pub const OVERDUE_AFTER: Duration = Duration::from_secs(60);

/// Removes its job from the registry when dropped (bookkeeping only).
#[derive(Debug)]
pub struct RunningJob(String);

impl Drop for RunningJob {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// Records that job `name` runs until at most `deadline` from now.
pub fn start(name: &str, deadline: Duration) -> RunningJob {
    let at = Instant::now()
        .checked_add(deadline)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), at);
    RunningJob(name.to_string())
}

/// Jobs past their deadline by more than [`OVERDUE_AFTER`], with how far past it.
pub fn overdue() -> Vec<(String, Duration)> {
    let now = Instant::now();
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(name, &at)| {
            let late = now.checked_duration_since(at)?;
            (late > OVERDUE_AFTER).then(|| (name.clone(), late))
        })
        .collect()
}

/// `None` when no job is overdue, else the line `/healthz` answers.
pub fn overdue_message() -> Option<String> {
    let late = overdue();
    if late.is_empty() {
        return None;
    }
    let list: Vec<String> = late
        .iter()
        .map(|(n, d)| format!("{n} ({} s past its deadline)", d.as_secs()))
        .collect();
    Some(format!("jobs past their deadline: {}\n", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_past_its_deadline_is_reported_until_it_ends() {
        let job = start("test-overdue", Duration::ZERO);
        // Pretend the deadline passed long ago.
        RUNNING.lock().unwrap().insert(
            "test-overdue".into(),
            Instant::now() - OVERDUE_AFTER - Duration::from_secs(5),
        );
        let msg = overdue_message().expect("overdue");
        assert!(msg.contains("test-overdue ("), "{msg}");
        drop(job);
        assert!(!overdue().iter().any(|(n, _)| n == "test-overdue"));
    }
}
