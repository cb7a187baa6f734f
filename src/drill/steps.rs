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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::super::scenario::Action;
    use super::*;

    fn step(name: &str, after: &[&str]) -> Step {
        Step {
            name: name.into(),
            after: after.iter().map(|a| a.to_string()).collect(),
            action: Action::Sha256 { source: "s".into() },
        }
    }

    fn names(ds: &[Decision<'_>]) -> Vec<String> {
        ds.iter()
            .map(|d| match d {
                Decision::Skip(s) => format!("skip {}", s.name),
                Decision::AlreadyDone(s, _) => format!("done {}", s.name),
                Decision::Start(s) => format!("start {}", s.name),
            })
            .collect()
    }

    #[test]
    fn steps_start_after_their_dependencies_within_max_parallel() {
        let steps = [
            step("a", &[]),
            step("b", &[]),
            step("c", &[]),
            step("d", &["a", "b"]),
        ];
        let earlier = BTreeMap::new();
        let mut s = Scheduler::new(&steps, 2, &earlier);
        assert_eq!(names(&s.decide()), ["start a", "start b"]);
        assert!(s.decide().is_empty(), "two running: nothing more starts");
        s.finished(&steps[0], StepStatus::Ok);
        assert_eq!(names(&s.decide()), ["start c"], "d still waits for b");
        s.finished(&steps[1], StepStatus::Ok);
        assert_eq!(names(&s.decide()), ["start d"]);
    }

    #[test]
    fn a_failed_step_skips_its_dependents_transitively_and_only_them() {
        let steps = [
            step("a", &[]),
            step("b", &["a"]),
            step("c", &["b"]),
            step("x", &[]),
        ];
        let earlier = BTreeMap::new();
        let mut s = Scheduler::new(&steps, 4, &earlier);
        assert_eq!(names(&s.decide()), ["start a", "start x"]);
        s.finished(&steps[0], StepStatus::Failed);
        assert_eq!(names(&s.decide()), ["skip b", "skip c"]);
        s.finished(&steps[3], StepStatus::Ok);
        assert!(s.decide().is_empty());
    }

    #[test]
    fn a_resumed_run_does_not_redo_what_passed_and_retries_what_failed() {
        let steps = [step("a", &[]), step("b", &["a"]), step("c", &["b"])];
        let report = |status| StepReport {
            status,
            ..skipped(&steps[0], Utc::now(), "earlier")
        };
        let earlier = BTreeMap::from([
            ("a".to_string(), report(StepStatus::Ok)),
            ("b".to_string(), report(StepStatus::Failed)),
        ]);
        let mut s = Scheduler::new(&steps, 4, &earlier);
        assert_eq!(names(&s.decide()), ["done a", "start b"]);
        s.finished(&steps[1], StepStatus::Ok);
        assert_eq!(names(&s.decide()), ["start c"]);
    }

    /// With paused time the steps' sleeps pass instantly, in order: three
    /// independent 10 s steps under `max_parallel = 2` take 20 s, never
    /// three at once, and the dependent step starts after both it waits for.
    #[tokio::test(start_paused = true)]
    async fn run_steps_runs_ready_steps_concurrently_up_to_max_parallel() {
        let steps = [
            step("a", &[]),
            step("b", &[]),
            step("c", &[]),
            step("d", &["a", "c"]),
        ];
        let earlier = BTreeMap::new();
        let t0 = tokio::time::Instant::now();
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let started: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
        let seen = Mutex::new(Vec::new());
        let reports = run_steps(
            &steps,
            2,
            &earlier,
            Utc::now(),
            |st| {
                let (running, most, started) = (&running, &most, &started);
                async move {
                    started
                        .lock()
                        .unwrap()
                        .push((st.name.clone(), t0.elapsed().as_secs()));
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    StepReport {
                        status: StepStatus::Ok,
                        ..skipped(st, Utc::now(), "ran")
                    }
                }
            },
            |st, _| {
                seen.lock().unwrap().push(st.name.clone());
                Ok::<_, ()>(())
            },
        )
        .await
        .unwrap();
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(
            *started.lock().unwrap(),
            [
                ("a".to_string(), 0),
                ("b".to_string(), 0),
                ("c".to_string(), 10),
                ("d".to_string(), 20)
            ]
        );
        assert_eq!(t0.elapsed().as_secs(), 30);
        assert_eq!(reports.len(), 4);
        assert_eq!(seen.lock().unwrap().len(), 4, "every end is reported");
    }
}
