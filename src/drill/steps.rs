//! Which steps run when: a step starts once every step in its `after` list
//! has finished; the steps ready at the same time run concurrently, at most
//! `max_parallel` at once; a failed step makes its dependents `skipped`; a
//! step finished in an earlier (resumed) run is `already-done`.
//!
//! [`Scheduler`] is the pure decision logic; [`run_steps`] drives it with the
//! step futures. Neither knows what a step does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};

use super::report::{StepReport, StepStatus};
use super::scenario::Step;
use super::verdict::secs_between;

/// What the scheduler decided for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Decision<'s> {
    /// A step it runs after did not pass: it is skipped.
    Skip(&'s Step),
    /// It finished in an earlier run (this report): it is not run again.
    AlreadyDone(&'s Step, &'s StepReport),
    /// Run it now.
    Start(&'s Step),
}

/// The step order of one run: what is decided, what is running.
pub(super) struct Scheduler<'s> {
    steps: &'s [Step],
    max_parallel: usize,
    earlier: &'s BTreeMap<String, StepReport>,
    /// Whether each decided step passed (ok or already done).
    decided: BTreeMap<&'s str, bool>,
    running: BTreeSet<&'s str>,
}

impl<'s> Scheduler<'s> {
    /// A scheduler over `steps`; `earlier` holds the reports of a resumed run.
    pub(super) fn new(
        steps: &'s [Step],
        max_parallel: usize,
        earlier: &'s BTreeMap<String, StepReport>,
    ) -> Self {
        Scheduler {
            steps,
            max_parallel,
            earlier,
            decided: BTreeMap::new(),
            running: BTreeSet::new(),
        }
    }

    /// Every decision possible now, in the order made. Skips and already-done
    /// steps count as decided at once (their dependents may follow in the
    /// same call); started steps are running until [`Scheduler::finished`].
    pub(super) fn decide(&mut self) -> Vec<Decision<'s>> {
        let mut out = Vec::new();
        let mut progressed = true;
        while progressed {
            progressed = false;
            for st in self.steps {
                if self.decided.contains_key(st.name.as_str())
                    || self.running.contains(st.name.as_str())
                    || !st
                        .after
                        .iter()
                        .all(|a| self.decided.contains_key(a.as_str()))
                {
                    continue;
                }
                let dep_failed = st.after.iter().any(|a| !self.decided[a.as_str()]);
                let previous = self.earlier.get(&st.name).filter(|r| passed(r.status));
                if dep_failed {
                    self.decided.insert(&st.name, false);
                    out.push(Decision::Skip(st));
                    progressed = true;
                } else if let Some(prev) = previous {
                    self.decided.insert(&st.name, true);
                    out.push(Decision::AlreadyDone(st, prev));
                    progressed = true;
                } else if self.running.len() < self.max_parallel {
                    self.running.insert(&st.name);
                    out.push(Decision::Start(st));
                }
            }
        }
        out
    }

    /// Records that the started step `st` ended with `status`.
    pub(super) fn finished(&mut self, st: &'s Step, status: StepStatus) {
        self.running.remove(st.name.as_str());
        self.decided.insert(&st.name, passed(status));
    }
}

fn passed(s: StepStatus) -> bool {
    matches!(s, StepStatus::Ok | StepStatus::AlreadyDone)
}

/// Runs `steps` in the scheduler's order: `exec` runs one step; `finished`
/// sees each step's report as it ends (an `Err` stops the run at once).
/// Returns the reports in the order they were decided.
pub(super) async fn run_steps<'s, Fut, E>(
    steps: &'s [Step],
    max_parallel: usize,
    earlier: &'s BTreeMap<String, StepReport>,
    started_at: DateTime<Utc>,
    exec: impl Fn(&'s Step) -> Fut,
    mut finished: impl FnMut(&Step, &StepReport) -> Result<(), E>,
) -> Result<Vec<StepReport>, E>
where
    Fut: Future<Output = StepReport>,
{
    let mut sched = Scheduler::new(steps, max_parallel, earlier);
    let mut out = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    loop {
        for d in sched.decide() {
            match d {
                Decision::Skip(st) => {
                    out.push(skipped(st, started_at, "a step it runs after failed"))
                }
                Decision::AlreadyDone(st, prev) => {
                    let mut r = prev.clone();
                    r.status = StepStatus::AlreadyDone;
                    r.detail = format!("finished in an earlier run: {}", prev.detail);
                    tracing::info!(event = "drill_step_already_done", step = %st.name);
                    out.push(r);
                }
                Decision::Start(st) => {
                    let fut = exec(st);
                    in_flight.push(async move { (st, fut.await) });
                }
            }
        }
        let Some((st, r)) = in_flight.next().await else {
            break;
        };
        tracing::info!(event = "drill_step_finished", step = %st.name, status = ?r.status, duration_secs = r.duration_secs, detail = %r.detail);
        sched.finished(st, r.status);
        finished(st, &r)?;
        out.push(r);
    }
    Ok(out)
}

/// The report of a step that did not run.
fn skipped(st: &Step, started_at: DateTime<Utc>, why: &str) -> StepReport {
    StepReport {
        name: st.name.clone(),
        kind: st.action.kind().into(),
        source: st.action.source().map(str::to_string),
        status: StepStatus::Skipped,
        start_offset_secs: secs_between(started_at, Utc::now()),
        duration_secs: 0.0,
        backup_id: None,
        from_target: None,
        into: None,
        raw_bytes: None,
        detail: why.into(),
    }
}
