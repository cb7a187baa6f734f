//! The daemon loop: cron triggers, one run per source at a time (also across
//! replicas, through a [`lease`]), retries with exponential backoff and
//! jitter decided by the error's [`RetryClass`], the missed-run policy, and
//! graceful shutdown.
//!
//! Time and shutdown are injected: the scheduler reads "now" from a
//! [`Clock`] and sleeps with tokio's timer (tests pause it); it stops taking
//! new runs when `shutdown` fires, lets running ones finish within the grace
//! period, then cancels them through the token each [`Runner::run`] gets. A
//! cancelled backup never commits its manifest, so no partial backup is
//! listed; its incomplete upload is removed by `abort_incomplete_after`.
//!
//! One task per scheduled source; each runs its slots one after the other,
//! so a source never runs twice at once in one process. A slot missed while
//! the previous run was still going is skipped, not queued.

pub mod clock;
pub mod gc;
pub mod lease;
pub mod runner;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock, TokioClock};
use lease::{Acquire, Lease};

use crate::error::{Error, RetryClass};
use crate::metrics::events;
use crate::policy::{CronSchedule, DaemonConfig, MissedRuns, Zone};
use crate::storage::Store;

/// What one successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Backup id.
    pub id: String,
    /// Raw bytes.
    pub bytes_raw: u64,
    /// Stored bytes.
    pub bytes_stored: u64,
    /// Seconds taken.
    pub duration_secs: f64,
}

/// The job the scheduler runs for a source (production: backup, then replication).
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs one attempt. When `cancel` fires it must stop promptly, leaving no listed partial backup.
    async fn run(&self, source: &str, cancel: CancellationToken) -> crate::Result<RunReport>;
    /// Finish time of the newest committed backup of `source`, for the missed-run policy.
    async fn last_success(&self, source: &str) -> crate::Result<Option<DateTime<Utc>>>;
}

/// A source the scheduler runs.
#[derive(Debug, Clone)]
pub struct SourcePlan {
    /// Source name.
    pub name: String,
    /// Its cron schedule.
    pub schedule: CronSchedule,
    /// Where its lease lives (its primary target); `None` = no cross-replica lease.
    pub lease_store: Option<Arc<dyn Store>>,
    /// Deadline of one attempt: past it the attempt is cancelled and the slot fails.
    pub timeout: Duration,
}

/// Scheduler settings (from the policy's `[daemon]`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts per slot, first included.
    pub retry_max_attempts: u32,
    /// First backoff.
    pub backoff_base: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// Time running jobs get after shutdown.
    pub grace_period: Duration,
    /// Lease lifetime.
    pub lease_ttl: Duration,
    /// Lease renewal period.
    pub lease_renew: Duration,
    /// Prefix of lease keys.
    pub locks_prefix: String,
    /// Missed-run policy.
    pub missed_runs: MissedRuns,
    /// Most runs at once in this process.
    pub max_concurrent_runs: usize,
    /// Time zone of the cron schedules.
    pub offset: FixedOffset,
    /// This replica's id in leases.
    pub holder: String,
    /// Jitter fraction of backoffs (0.2 = ±20%; 0 in tests that check exact times).
    pub jitter: f64,
}

impl Settings {
    /// Settings from a policy's `[daemon]` table.
    pub fn from_policy(d: &DaemonConfig) -> crate::Result<Settings> {
        Ok(Settings {
            retry_max_attempts: d.retry_max_attempts,
            backoff_base: d.retry_backoff_base.0,
            backoff_max: d.retry_backoff_max.0,
            grace_period: d.grace_period.0,
            lease_ttl: d.lease_ttl.0,
            lease_renew: d.lease_renew.0,
            locks_prefix: d.locks_prefix.clone(),
            missed_runs: d.missed_runs,
            max_concurrent_runs: d.max_concurrent_runs,
            offset: d.offset().map_err(Error::Invalid)?,
            holder: default_holder(),
            jitter: 0.2,
        })
    }
}

/// `<hostname>-<pid>-<random>`: unique per process.
pub fn default_holder() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gsdr".into());
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// The backoff before retry number `retry` (1 = first retry): `base × 2^(retry−1)`, capped, ± jitter.
pub fn backoff(s: &Settings, retry: u32) -> Duration {
    let exp = s.backoff_base.saturating_mul(
        1u32.checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX),
    );
    let d = exp.min(s.backoff_max);
    if s.jitter <= 0.0 {
        return d;
    }
    let f = 1.0 + s.jitter * (2.0 * rand::random::<f64>() - 1.0);
    d.mul_f64(f.max(0.0)).min(s.backoff_max)
}

/// How a slot ended.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotOutcome {
    /// A backup committed.
    Success(RunReport),
    /// Every attempt failed (or the failure was permanent); the last error's text.
    Failed(String),
    /// Another replica runs or ran it.
    Skipped(String),
    /// Cancelled by shutdown.
    Aborted,
}

/// The newest slot at or before `now` (within 400 days), and the next one after `now`.
pub fn slots(
    schedule: &CronSchedule,
    offset: FixedOffset,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let zone = Zone::Fixed(offset);
    (
        schedule.latest_at_or_before(now, &zone),
        schedule.next_after(now, &zone),
    )
}

/// The interval of a schedule around `now` (distance between the next two slots).
pub fn interval(
    schedule: &CronSchedule,
    offset: FixedOffset,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let zone = Zone::Fixed(offset);
    let a = schedule.next_after(now, &zone)?;
    let b = schedule.next_after(a, &zone)?;
    (b - a).to_std().ok()
}

/// Told the outcome of every slot that ran (notifications).
pub trait OutcomeHook: Send + Sync {
    /// `outcome` of a slot of `source` (never called for skipped slots).
    fn outcome(&self, source: &str, outcome: &SlotOutcome);
}

/// Everything a source task needs.
struct Shared {
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    hooks: Vec<Arc<dyn OutcomeHook>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    fn new(
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        hooks: Vec<Arc<dyn OutcomeHook>>,
    ) -> Self {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            settings.max_concurrent_runs.max(1),
        ));
        Shared {
            runner,
            clock,
            settings,
            hooks,
            slots,
        }
    }

    /// Runs one slot: lease, attempts with backoff, release.
    async fn run_slot(
        &self,
        plan: &SourcePlan,
        slot: DateTime<Utc>,
        shutdown: &CancellationToken,
        jobs: &CancellationToken,
    ) -> SlotOutcome {
        let source = plan.name.as_str();
        // Bounded memory: at most `max_concurrent_runs` streams at once; wait before taking the lease.
        let _permit = tokio::select! {
            p = self.slots.clone().acquire_owned() => p.expect("the run semaphore is never closed"),
            _ = shutdown.cancelled() => return SlotOutcome::Skipped("shutting down".into()),
        };
        let mut lease = None;
        if let Some(store) = &plan.lease_store {
            let key = lease::lease_key(&self.settings.locks_prefix, source);
            match lease::acquire(
                store.clone(),
                &key,
                &self.settings.holder,
                slot,
                self.clock.now(),
                self.settings.lease_ttl,
            )
            .await
            {
                Ok(Acquire::Got(l)) => lease = Some(l),
                Ok(Acquire::Busy { holder }) | Ok(Acquire::Done { by: holder }) => {
                    events::LeaseConflict {
                        source,
                        holder: &holder,
                        slot,
                    }
                    .emit();
                    let why = format!("lease held or slot done by {holder}");
                    events::RunFinished {
                        source,
                        result: "skipped",
                        detail: &why,
                    }
                    .emit();
                    return SlotOutcome::Skipped(why);
                }
                Err(e) => {
                    let msg = format!("cannot take the run lease: {e}");
                    events::BackupFailed {
                        source,
                        error: &msg,
                        class: e.retry_class(),
                        attempt: 0,
                        will_retry: false,
                    }
                    .emit();
                    events::RunFinished {
                        source,
                        result: "failure",
                        detail: &msg,
                    }
                    .emit();
                    return SlotOutcome::Failed(msg);
                }
            }
        }
        let attempt_cancel = jobs.child_token();
        let renewer = lease.map(|l| self.spawn_renewer(l, attempt_cancel.clone()));
        let outcome = self
            .attempts(source, slot, plan.timeout, shutdown, &attempt_cancel)
            .await;
        attempt_cancel.cancel();
        if let Some(r) = renewer {
            if let Ok(Some(l)) = r.await {
                let done = !matches!(outcome, SlotOutcome::Aborted);
                if let Err(e) = l.release(self.clock.now(), done).await {
                    tracing::warn!(event = "lease_release_failed", source, error = %e);
                }
            }
        }
        let (result, detail) = match &outcome {
            SlotOutcome::Success(r) => ("success", r.id.clone()),
            SlotOutcome::Failed(e) => ("failure", e.clone()),
            SlotOutcome::Skipped(w) => ("skipped", w.clone()),
            SlotOutcome::Aborted => ("failure", "aborted by shutdown".to_string()),
        };
        events::RunFinished {
            source,
            result,
            detail: &detail,
        }
        .emit();
        for h in &self.hooks {
            h.outcome(source, &outcome);
        }
        outcome
    }

    /// Renews the lease until `stop` fires; cancels `stop` itself if the lease is lost.
    /// Returns the lease (to release) unless it was lost.
    fn spawn_renewer(
        &self,
        mut l: Lease,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<Option<Lease>> {
        let clock = self.clock.clone();
        let (renew, ttl) = (self.settings.lease_renew, self.settings.lease_ttl);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Some(l),
                    _ = tokio::time::sleep(renew) => {}
                }
                if let Err(e) = l.renew(clock.now(), ttl).await {
                    let source = l.doc().holder.clone();
                    tracing::warn!(event = "lease_lost", holder = %source, error = %e);
                    if matches!(e, crate::storage::StorageError::PreconditionFailed { .. }) {
                        stop.cancel();
                        return None;
                    }
                }
            }
        })
    }

    /// One attempt, contained: a panic is a failure, and past `timeout` the
    /// attempt is cancelled (it gets [`crate::pipeline::WIND_DOWN`] twice over
    /// to stop cleanly, then it is dropped) and reported as failed.
    async fn attempt(
        &self,
        source: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Option<crate::Result<RunReport>> {
        use futures::FutureExt;
        let attempt_cancel = cancel.child_token();
        let _running = events::running_job(source, timeout);
        let run = std::panic::AssertUnwindSafe(self.runner.run(source, attempt_cancel.clone()))
            .catch_unwind();
        tokio::pin!(run);
        let contained = |r: std::thread::Result<crate::Result<RunReport>>| match r {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into());
                events::JobPanicked {
                    source,
                    message: &msg,
                }
                .emit();
                Err(Error::Panicked(format!(
                    "the backup job of `{source}` panicked: {msg}; nothing was committed (a bug: please report it)"
                )))
            }
        };
        // Biased: a runner that returns on cancellation reports it itself.
        tokio::select! {
            biased;
            r = &mut run => return Some(contained(r)),
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(timeout) => {}
        }
        events::JobDeadlineExceeded {
            source,
            timeout_secs: timeout.as_secs(),
        }
        .emit();
        attempt_cancel.cancel();
        let limit = crate::pipeline::WIND_DOWN * 2;
        if tokio::time::timeout(limit, &mut run).await.is_err() {
            tracing::error!(
                event = "job_not_stopped",
                source,
                "the cancelled job did not stop; abandoning it"
            );
        }
        Some(Err(Error::DeadlineExceeded(format!(
            "the backup of `{source}` ran past its deadline of {}; it was cancelled and nothing was committed (raise `timeout` for this source if it is legitimately that long)",
            humantime::format_duration(timeout)
        ))))
    }

    async fn attempts(
        &self,
        source: &str,
        slot: DateTime<Utc>,
        timeout: Duration,
        shutdown: &CancellationToken,
        cancel: &CancellationToken,
    ) -> SlotOutcome {
        let max = self.settings.retry_max_attempts.max(1);
        let mut attempt = 1;
        loop {
            events::RunStarted {
                source,
                slot,
                attempt,
            }
            .emit();
            let Some(res) = self.attempt(source, timeout, cancel).await else {
                return SlotOutcome::Aborted;
            };
            let e = match res {
                Ok(r) => {
                    events::BackupSucceeded {
                        source,
                        id: &r.id,
                        bytes_raw: r.bytes_raw,
                        bytes_stored: r.bytes_stored,
                        duration_secs: r.duration_secs,
                        finished_at: self.clock.now(),
                    }
                    .emit();
                    return SlotOutcome::Success(r);
                }
                Err(e) => e,
            };
            if cancel.is_cancelled() {
                return SlotOutcome::Aborted;
            }
            let class = e.retry_class();
            let will_retry =
                class == RetryClass::Temporary && attempt < max && !shutdown.is_cancelled();
            let msg = e.to_string();
            events::BackupFailed {
                source,
                error: &msg,
                class,
                attempt,
                will_retry,
            }
            .emit();
            if !will_retry {
                return SlotOutcome::Failed(msg);
            }
            let wait = backoff(&self.settings, attempt);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return SlotOutcome::Failed(format!("{msg} (not retried: shutting down)")),
                _ = cancel.cancelled() => return SlotOutcome::Aborted,
            }
            attempt += 1;
        }
    }

    /// The first slot to run on start: the previous one if the source missed it.
    async fn first_slot(&self, plan: &SourcePlan) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let (prev, next) = slots(&plan.schedule, self.settings.offset, now);
        if self.settings.missed_runs == MissedRuns::Skip {
            return next;
        }
        let Some(prev) = prev else { return next };
        let ival = interval(&plan.schedule, self.settings.offset, now).unwrap_or(Duration::MAX);
        let missed = match self.runner.last_success(&plan.name).await {
            Ok(None) => true,
            Ok(Some(last)) => clock::until(last, now) > ival,
            Err(e) => {
                tracing::warn!(event = "missed_run_check_failed", source = %plan.name, error = %e);
                false
            }
        };
        if missed {
            tracing::info!(event = "missed_run", source = %plan.name, slot = %prev.to_rfc3339());
            Some(prev)
        } else {
            next
        }
    }

    async fn source_loop(
        self: Arc<Self>,
        plan: SourcePlan,
        shutdown: CancellationToken,
        jobs: CancellationToken,
    ) -> u32 {
        let mut failures = 0;
        let mut next = self.first_slot(&plan).await;
        while let Some(slot) = next {
            let wait = clock::until(self.clock.now(), slot);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
            if shutdown.is_cancelled() {
                break;
            }
            match self.run_slot(&plan, slot, &shutdown, &jobs).await {
                SlotOutcome::Failed(_) | SlotOutcome::Aborted => failures += 1,
                _ => {}
            }
            // The next slot strictly after both this one and now (slots passed while running are skipped).
            let after = self.clock.now().max(slot);
            next = slots(&plan.schedule, self.settings.offset, after).1;
        }
        failures
    }
}

/// The scheduler of one daemon process.
pub struct Scheduler {
    shared: Arc<Shared>,
    plans: Vec<SourcePlan>,
}

/// What a scheduler did before it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Slots that failed or were aborted.
    pub failures: u32,
    /// Whether running jobs had to be aborted when the grace period ended.
    pub aborted_in_flight: bool,
}

impl Scheduler {
    /// A scheduler for `plans`, running jobs through `runner`.
    pub fn new(
        plans: Vec<SourcePlan>,
        runner: Arc<dyn Runner>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        hooks: Vec<Arc<dyn OutcomeHook>>,
    ) -> Self {
        Scheduler {
            shared: Arc::new(Shared::new(runner, clock, settings, hooks)),
            plans,
        }
    }

    /// Runs until `shutdown` fires, then waits up to the grace period for running jobs and aborts the rest.
    pub async fn run(self, shutdown: CancellationToken) -> Summary {
        let jobs = CancellationToken::new();
        let mut set = JoinSet::new();
        for plan in self.plans {
            let ival = interval(
                &plan.schedule,
                self.shared.settings.offset,
                self.shared.clock.now(),
            );
            events::SourceConfigured {
                source: &plan.name,
                interval_secs: ival.map_or(0.0, |d| d.as_secs_f64()),
                rpo_secs: None,
            }
            .emit();
            set.spawn(
                self.shared
                    .clone()
                    .source_loop(plan, shutdown.clone(), jobs.clone()),
            );
        }
        shutdown.cancelled().await;
        tracing::info!(
            event = "shutdown_started",
            grace_secs = self.shared.settings.grace_period.as_secs()
        );
        let mut summary = Summary::default();
        let grace = tokio::time::sleep(self.shared.settings.grace_period);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = set.join_next() => match r {
                    Some(Ok(f)) => summary.failures += f,
                    Some(Err(e)) => tracing::error!(event = "scheduler_task_failed", error = %e),
                    None => break,
                },
                _ = &mut grace, if !jobs.is_cancelled() => {
                    tracing::warn!(event = "grace_period_over", "aborting running jobs");
                    summary.aborted_in_flight = true;
                    jobs.cancel();
                }
            }
        }
        tracing::info!(event = "shutdown_complete", failures = summary.failures);
        summary
    }
}

/// One `run --once` pass: runs every due source (or only `only`), one after the other.
/// A source is due when a scheduled slot has passed since its last success, or it has none.
pub async fn run_once(
    plans: &[SourcePlan],
    only: Option<&str>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    hooks: Vec<Arc<dyn OutcomeHook>>,
    shutdown: CancellationToken,
) -> BTreeMap<String, SlotOutcome> {
    let shared = Shared::new(runner, clock, settings, hooks);
    let jobs = CancellationToken::new();
    // Shutdown during a one-shot run aborts after the grace period too.
    let aborter = {
        let (jobs, shutdown, grace) =
            (jobs.clone(), shutdown.clone(), shared.settings.grace_period);
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            jobs.cancel();
        })
    };
    let mut out = BTreeMap::new();
    for plan in plans.iter().filter(|p| only.is_none_or(|o| o == p.name)) {
        if shutdown.is_cancelled() {
            break;
        }
        let now = shared.clock.now();
        let (prev, _) = slots(&plan.schedule, shared.settings.offset, now);
        let slot = if only.is_some() {
            Some(now)
        } else {
            match (prev, shared.runner.last_success(&plan.name).await) {
                (Some(p), Ok(Some(last))) if last >= p => None,
                (Some(p), _) => Some(p),
                (None, Ok(None)) => Some(now),
                (None, _) => None,
            }
        };
        match slot {
            Some(slot) => {
                let o = shared.run_slot(plan, slot, &shutdown, &jobs).await;
                out.insert(plan.name.clone(), o);
            }
            None => {
                tracing::info!(event = "not_due", source = %plan.name);
            }
        }
    }
    aborter.abort();
    out
}
