//! The daemon loop: jobs ([`job`]: backups, Velero backups, drills, prune,
//! replication sweeps, garbage collection, WAL status) on their triggers, one
//! run per job at a time (also across replicas, through a [`lease`]), retries
//! with exponential backoff and jitter decided by the error's [`RetryClass`],
//! a deadline per attempt, the missed-run policy, a [`record`] of every run in
//! the catalog, and graceful shutdown.
//!
//! Time and shutdown are injected: the scheduler reads "now" from a
//! [`Clock`] and sleeps with tokio's timer (tests pause it); it stops taking
//! new runs when `shutdown` fires, lets running ones finish within the grace
//! period, then cancels them through the token each [`Runner::run`] gets. A
//! cancelled backup never commits its manifest, so no partial backup is
//! listed; its incomplete upload is removed by `abort_incomplete_after`.
//!
//! One task per scheduled job; each runs its slots one after the other,
//! so a job never runs twice at once in one process. A slot missed while
//! the previous run was still going is skipped, not queued.

pub mod clock;
pub mod job;
pub mod lease;
pub mod record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, SystemClock, TokioClock};
pub use job::{JobId, JobKind, JobPlan, Trigger};
use lease::{Acquire, Lease};
use record::{RunEntry, RunResult};

use crate::cron::{CronSchedule, Zone};
use crate::error::{Error, RetryClass};
use crate::metrics::events;
use crate::policy::{DaemonConfig, MissedRuns};

/// What one successful attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// What it made: backup id, drill report location, Velero backup name, a summary.
    pub id: String,
    /// Raw bytes.
    pub bytes_raw: u64,
    /// Stored bytes.
    pub bytes_stored: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// When what it made is dated (a backup: its manifest's finish time, which
    /// every replica reads back from the catalog); none: the end of the run.
    pub committed_at: Option<DateTime<Utc>>,
}

/// What the scheduler runs (production: [`runner::JobRunner`]).
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs one attempt of `job`. When `cancel` fires it must stop promptly, leaving no listed partial backup.
    async fn run(&self, job: &JobId, cancel: CancellationToken) -> crate::Result<RunReport>;
    /// When `job` last succeeded (a backup: its newest committed backup), for the missed-run policy.
    async fn last_success(&self, job: &JobId) -> crate::Result<Option<DateTime<Utc>>>;
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
    pub zone: Zone,
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
            zone: d.zone().map_err(Error::Invalid)?,
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
    zone: Zone,
    now: DateTime<Utc>,
) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    (
        schedule.latest_at_or_before(now, &zone),
        schedule.next_after(now, &zone),
    )
}

/// The interval of a schedule around `now` (distance between the next two slots).
pub fn interval(schedule: &CronSchedule, zone: Zone, now: DateTime<Utc>) -> Option<Duration> {
    let a = schedule.next_after(now, &zone)?;
    let b = schedule.next_after(a, &zone)?;
    (b - a).to_std().ok()
}

/// Told the outcome of every slot this replica ran (notifications: the lease
/// holder tells, so a message goes out once across replicas).
pub trait OutcomeHook: Send + Sync {
    /// `outcome` of a slot of `job` (never called for skipped slots), with the
    /// job's record before this slot when it has one (whoever ran the earlier
    /// slots). Returns whether it sent a failure message (the record keeps when).
    fn outcome(
        &self,
        job: &JobId,
        outcome: &SlotOutcome,
        before: Option<&record::JobRecord>,
    ) -> bool;
}

/// Everything a job task needs.
struct Shared {
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    hooks: Vec<Arc<dyn OutcomeHook>>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// The name events and `/healthz` give a job: a backup by its source (as
/// before jobs had kinds), any other job as `kind/name`.
fn label(id: &JobId) -> String {
    match id.kind {
        JobKind::Backup => id.name.clone(),
        _ => id.to_string(),
    }
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

    /// Runs one slot: lease, attempts with backoff, record, release.
    async fn run_slot(
        &self,
        plan: &JobPlan,
        slot: DateTime<Utc>,
        shutdown: &CancellationToken,
        jobs: &CancellationToken,
    ) -> SlotOutcome {
        let id = &plan.id;
        let name = label(id);
        // Bounded memory: at most `max_concurrent_runs` streams at once; wait
        // before taking the lease. Only backups stream through the pipeline.
        let _permit = if id.kind == JobKind::Backup {
            tokio::select! {
                p = self.slots.clone().acquire_owned() => Some(p.expect("the run semaphore is never closed")),
                _ = shutdown.cancelled() => return SlotOutcome::Skipped("shutting down".into()),
            }
        } else {
            None
        };
        let mut lease = None;
        let leased = id.kind.leased();
        if let (true, Some(store)) = (leased, &plan.home) {
            let key = id.lease_key(&self.settings.locks_prefix);
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
                        source: &name,
                        holder: &holder,
                        slot,
                    }
                    .emit();
                    let why = format!("lease held or slot done by {holder}");
                    events::JobFinished {
                        job: id,
                        result: "skipped",
                        detail: &why,
                        duration_secs: 0.0,
                        finished_at: None,
                    }
                    .emit();
                    return SlotOutcome::Skipped(why);
                }
                Err(e) => {
                    let msg = format!("cannot take the run lease: {e}");
                    events::JobFailed {
                        job: id,
                        error: &msg,
                        class: e.retry_class(),
                        attempt: 0,
                        will_retry: false,
                    }
                    .emit();
                    events::JobFinished {
                        job: id,
                        result: "failure",
                        detail: &msg,
                        duration_secs: 0.0,
                        finished_at: None,
                    }
                    .emit();
                    let outcome = SlotOutcome::Failed(msg);
                    for h in &self.hooks {
                        h.outcome(id, &outcome, None);
                    }
                    return outcome;
                }
            }
        }
        let started_at = self.clock.now();
        let attempt_cancel = jobs.child_token();
        let renewer = lease.map(|l| self.spawn_renewer(l, attempt_cancel.clone()));
        let (outcome, attempts) = self.attempts(plan, slot, shutdown, &attempt_cancel).await;
        attempt_cancel.cancel();
        let finished_at = self.clock.now();
        let (result, detail) = match &outcome {
            SlotOutcome::Success(r) => ("success", r.id.clone()),
            SlotOutcome::Failed(e) => ("failure", e.clone()),
            SlotOutcome::Skipped(w) => ("skipped", w.clone()),
            SlotOutcome::Aborted => ("failure", "aborted by shutdown".to_string()),
        };
        // The record before the release: a replica that takes the next slot reads it.
        let holds = match renewer {
            Some(r) => r.await.ok().flatten(),
            None => None,
        };
        let entry = RunEntry {
            slot,
            started_at,
            finished_at,
            result: match outcome {
                SlotOutcome::Success(_) => RunResult::Success,
                SlotOutcome::Aborted => RunResult::Aborted,
                _ => RunResult::Failure,
            },
            detail: detail.clone(),
            attempts,
            holder: self.settings.holder.clone(),
        };
        match (&plan.home, &holds) {
            (Some(store), Some(_)) => {
                record_and_notify(store.as_ref(), id, entry, &outcome, &self.hooks).await;
            }
            _ => {
                for h in &self.hooks {
                    h.outcome(id, &outcome, None);
                }
            }
        }
        if let Some(l) = holds {
            let done = !matches!(outcome, SlotOutcome::Aborted);
            if let Err(e) = l.release(self.clock.now(), done).await {
                tracing::warn!(event = "lease_release_failed", job = %id, error = %e);
            }
        }
        events::JobFinished {
            job: id,
            result,
            detail: &detail,
            duration_secs: (finished_at - started_at).num_milliseconds() as f64 / 1000.0,
            finished_at: matches!(outcome, SlotOutcome::Success(_)).then_some(finished_at),
        }
        .emit();
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
        id: &JobId,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Option<crate::Result<RunReport>> {
        use futures::FutureExt;
        let name = label(id);
        let what = match id.kind {
            JobKind::Backup => format!("the backup of `{}`", id.name),
            _ => format!("job `{id}`"),
        };
        let attempt_cancel = cancel.child_token();
        let _running = events::running_job(&name, timeout);
        let run = std::panic::AssertUnwindSafe(self.runner.run(id, attempt_cancel.clone()))
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
                    source: &name,
                    message: &msg,
                }
                .emit();
                Err(Error::Panicked(format!(
                    "{what} panicked: {msg}; nothing was committed (a bug: please report it)"
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
            source: &name,
            timeout_secs: timeout.as_secs(),
        }
        .emit();
        attempt_cancel.cancel();
        let limit = crate::pipeline::WIND_DOWN * 2;
        if tokio::time::timeout(limit, &mut run).await.is_err() {
            tracing::error!(
                event = "job_not_stopped",
                job = %id,
                "the cancelled job did not stop; abandoning it"
            );
        }
        let knob = match id.kind {
            JobKind::Backup => "`timeout` for this source".to_string(),
            k => format!("`daemon.timeouts.{k}`"),
        };
        Some(Err(Error::DeadlineExceeded(format!(
            "{what} ran past its deadline of {}; it was cancelled and nothing was committed (raise {knob} if it is legitimately that long)",
            humantime::format_duration(timeout)
        ))))
    }

    /// The attempts of one slot, and how many were made.
    async fn attempts(
        &self,
        plan: &JobPlan,
        slot: DateTime<Utc>,
        shutdown: &CancellationToken,
        cancel: &CancellationToken,
    ) -> (SlotOutcome, u32) {
        let id = &plan.id;
        let name = label(id);
        let max = if id.kind.retried() {
            self.settings.retry_max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            events::RunStarted {
                source: &name,
                slot,
                attempt,
            }
            .emit();
            let Some(res) = self.attempt(id, plan.timeout, cancel).await else {
                return (SlotOutcome::Aborted, attempt);
            };
            let e = match res {
                Ok(r) => {
                    if id.kind == JobKind::Backup {
                        events::BackupSucceeded {
                            source: &id.name,
                            id: &r.id,
                            bytes_raw: r.bytes_raw,
                            bytes_stored: r.bytes_stored,
                            duration_secs: r.duration_secs,
                            finished_at: r.committed_at.unwrap_or_else(|| self.clock.now()),
                        }
                        .emit();
                    }
                    return (SlotOutcome::Success(r), attempt);
                }
                Err(e) => e,
            };
            if cancel.is_cancelled() {
                return (SlotOutcome::Aborted, attempt);
            }
            let class = e.retry_class();
            let will_retry =
                class == RetryClass::Temporary && attempt < max && !shutdown.is_cancelled();
            let msg = e.to_string();
            events::JobFailed {
                job: id,
                error: &msg,
                class,
                attempt,
                will_retry,
            }
            .emit();
            if !will_retry {
                return (SlotOutcome::Failed(msg), attempt);
            }
            let wait = backoff(&self.settings, attempt);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return (SlotOutcome::Failed(format!("{msg} (not retried: shutting down)")), attempt),
                _ = cancel.cancelled() => return (SlotOutcome::Aborted, attempt),
            }
            attempt += 1;
        }
    }

    /// The first slot to run on start: the previous one if the job missed it.
    async fn first_slot(&self, plan: &JobPlan) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let (prev, next) = plan.trigger.slots(self.settings.zone, now);
        if self.settings.missed_runs == MissedRuns::Skip {
            return next;
        }
        let Some(prev) = prev else { return next };
        let ival = plan
            .trigger
            .interval(self.settings.zone, now)
            .unwrap_or(Duration::MAX);
        let missed = match self.runner.last_success(&plan.id).await {
            Ok(None) => true,
            Ok(Some(last)) => clock::until(last, now) > ival,
            Err(e) => {
                tracing::warn!(event = "missed_run_check_failed", job = %plan.id, error = %e);
                false
            }
        };
        if missed {
            tracing::info!(event = "missed_run", job = %plan.id, slot = %prev.to_rfc3339());
            Some(prev)
        } else {
            next
        }
    }

    async fn job_loop(
        self: Arc<Self>,
        plan: JobPlan,
        shutdown: CancellationToken,
        jobs: CancellationToken,
    ) -> u32 {
        let mut failures = 0;
        let mut next = self.first_slot(&plan).await;
        while let Some(slot) = next {
            events::JobNextRun {
                job: &plan.id,
                at: slot,
            }
            .emit();
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
            next = plan.trigger.slots(self.settings.zone, after).1;
        }
        failures
    }
}

/// Tells `hooks` the outcome of a slot of `id` with the job's record before
/// it, then stores the record with `entry` (and when a failure was notified).
async fn record_and_notify(
    store: &dyn crate::storage::Store,
    id: &JobId,
    entry: RunEntry,
    outcome: &SlotOutcome,
    hooks: &[Arc<dyn OutcomeHook>],
) {
    let before = match record::read(store, id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(event = "job_record_failed", job = %id, error = %e);
            None
        }
    };
    let mut sent = false;
    for h in hooks {
        sent |= h.outcome(id, outcome, before.as_ref());
    }
    let at = entry.finished_at;
    let mut rec = record::JobRecord::next(before, id, entry);
    if sent {
        rec.notified_failure_at = Some(at);
    }
    match record::write(store, &rec).await {
        Ok(()) => rec.recorded().emit(),
        Err(e) => tracing::warn!(event = "job_record_failed", job = %id, error = %e),
    }
}

/// Records a run of `id` made outside the daemon (the drills CronJob's
/// `gsdr drill --scheduled`) as a daemon slot would be: its job record on
/// `home`, the metrics and the notifications. One such process runs at a
/// time (the CronJob forbids concurrent runs), so no lease is taken.
pub async fn record_outside_run(
    home: &dyn crate::storage::Store,
    id: &JobId,
    started_at: DateTime<Utc>,
    outcome: &SlotOutcome,
    hooks: &[Arc<dyn OutcomeHook>],
) {
    let finished_at = Utc::now();
    let (result, detail) = match outcome {
        SlotOutcome::Success(r) => (RunResult::Success, r.id.clone()),
        SlotOutcome::Failed(e) => (RunResult::Failure, e.clone()),
        SlotOutcome::Skipped(w) => (RunResult::Failure, w.clone()),
        SlotOutcome::Aborted => (RunResult::Aborted, "aborted".to_string()),
    };
    let entry = RunEntry {
        slot: started_at,
        started_at,
        finished_at,
        result,
        detail: detail.clone(),
        attempts: 1,
        holder: default_holder(),
    };
    events::JobFinished {
        job: id,
        result: if result == RunResult::Success {
            "success"
        } else {
            "failure"
        },
        detail: &detail,
        duration_secs: (finished_at - started_at).num_milliseconds() as f64 / 1000.0,
        finished_at: (result == RunResult::Success).then_some(finished_at),
    }
    .emit();
    record_and_notify(home, id, entry, outcome, hooks).await;
}

/// The scheduler of one daemon process.
pub struct Scheduler {
    shared: Arc<Shared>,
    plans: Vec<JobPlan>,
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
        plans: Vec<JobPlan>,
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
            if plan.id.kind == JobKind::Backup {
                let ival = plan
                    .trigger
                    .interval(self.shared.settings.zone, self.shared.clock.now());
                events::SourceConfigured {
                    source: &plan.id.name,
                    interval_secs: ival.map_or(0.0, |d| d.as_secs_f64()),
                    rpo_secs: None,
                }
                .emit();
            }
            tracing::info!(event = "job_scheduled", job = %plan.id, schedule = %plan.trigger.describe(), timeout_secs = plan.timeout.as_secs());
            set.spawn(
                self.shared
                    .clone()
                    .job_loop(plan, shutdown.clone(), jobs.clone()),
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

/// One `run --once` pass: runs every due job (or only the backup of `only`), one after the other.
/// A job is due when a scheduled slot has passed since its last success, or it has none.
pub async fn run_once(
    plans: &[JobPlan],
    only: Option<&str>,
    runner: Arc<dyn Runner>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    hooks: Vec<Arc<dyn OutcomeHook>>,
    shutdown: CancellationToken,
) -> BTreeMap<JobId, SlotOutcome> {
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
    let wanted = |p: &&JobPlan| match only {
        Some(o) => p.id.kind == JobKind::Backup && p.id.name == o,
        None => true,
    };
    for plan in plans.iter().filter(wanted) {
        if shutdown.is_cancelled() {
            break;
        }
        let now = shared.clock.now();
        let (prev, _) = plan.trigger.slots(shared.settings.zone, now);
        let slot = if only.is_some() {
            Some(now)
        } else {
            match (prev, shared.runner.last_success(&plan.id).await) {
                (Some(p), Ok(Some(last))) if last >= p => None,
                (Some(p), _) => Some(p),
                (None, Ok(None)) => Some(now),
                (None, _) => None,
            }
        };
        match slot {
            Some(slot) => {
                let o = shared.run_slot(plan, slot, &shutdown, &jobs).await;
                out.insert(plan.id.clone(), o);
            }
            None => {
                tracing::info!(event = "not_due", job = %plan.id);
            }
        }
    }
    aborter.abort();
    out
}
