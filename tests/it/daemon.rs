//! The daemon side: the scheduler's state machine under paused time, leases,
//! two daemons against one bucket, off-site replication between two S3
//! servers, bucket lifecycle and Object Lock, /metrics, and the alert rules.

use std::collections::{BTreeMap, VecDeque};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use gsdr::catalog::Catalog;
use gsdr::policy::MissedRuns;
use gsdr::scheduler::lease::{self, Acquire};
use gsdr::scheduler::{
    Clock, JobId, JobPlan, RunReport, Runner, Scheduler, Settings, SlotOutcome, SystemClock,
    TokioClock,
};
use gsdr::storage::s3::S3Store;
use gsdr::storage::S3Target;
use gsdr::storage::Store;

use crate::support::{free_port, require_program, tempdir, wait_for_port, ChildGuard};

// ---------------------------------------------------------------- fakes

/// What an attempt of the scripted job does.
#[derive(Debug, Clone, Copy)]
enum Step {
    Ok,
    Temporary,
    Permanent,
}

/// A job that records when it ran, takes `job_time`, and follows a script.
#[derive(Debug)]
struct Scripted {
    clock: Arc<dyn Clock>,
    job_time: Duration,
    script: Mutex<VecDeque<Step>>,
    last: Option<DateTime<Utc>>,
    calls: Mutex<Vec<(String, DateTime<Utc>)>>,
    cancelled: Mutex<u32>,
    tag: String,
}

impl Scripted {
    fn new(clock: Arc<dyn Clock>, job_time: Duration) -> Scripted {
        Scripted {
            clock,
            job_time,
            script: Mutex::new(VecDeque::new()),
            last: None,
            calls: Mutex::new(Vec::new()),
            cancelled: Mutex::new(0),
            tag: String::new(),
        }
    }
    fn times(&self) -> Vec<DateTime<Utc>> {
        self.calls.lock().unwrap().iter().map(|c| c.1).collect()
    }
}

#[async_trait]
impl Runner for Scripted {
    async fn run(&self, job: &JobId, cancel: CancellationToken) -> gsdr::Result<RunReport> {
        let source = &job.name;
        self.calls
            .lock()
            .unwrap()
            .push((format!("{}{source}", self.tag), self.clock.now()));
        tokio::select! {
            _ = tokio::time::sleep(self.job_time) => {}
            _ = cancel.cancelled() => {
                *self.cancelled.lock().unwrap() += 1;
                return Err(gsdr::Error::Invalid("cancelled".into()));
            }
        }
        let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Ok);
        match step {
            Step::Ok => Ok(RunReport {
                id: format!("b-{}", self.clock.now().timestamp()),
                bytes_raw: 10,
                bytes_stored: 5,
                duration_secs: self.job_time.as_secs_f64(),
                committed_at: None,
            }),
            Step::Temporary => Err(gsdr::Error::LocalIo {
                what: "reading",
                path: "/flaky".into(),
                source: std::io::Error::other("blip"),
            }),
            Step::Permanent => Err(gsdr::Error::Invalid("bad config".into())),
        }
    }

    async fn last_success(&self, _: &JobId) -> gsdr::Result<Option<DateTime<Utc>>> {
        Ok(self.last)
    }
}

fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
}

fn settings(missed: MissedRuns) -> Settings {
    Settings {
        retry_max_attempts: 3,
        backoff_base: Duration::from_secs(60),
        backoff_max: Duration::from_secs(600),
        grace_period: Duration::from_secs(600),
        lease_ttl: Duration::from_secs(300),
        lease_renew: Duration::from_secs(60),
        locks_prefix: "locks".into(),
        missed_runs: missed,
        max_concurrent_runs: 2,
        zone: gsdr::cron::Zone::UTC,
        holder: "test".into(),
        jitter: 0.0,
    }
}

fn plan(name: &str, cron: &str, store: Option<Arc<dyn Store>>) -> JobPlan {
    JobPlan::backup(
        name,
        cron.parse().unwrap(),
        store,
        Duration::from_secs(3600),
    )
}

/// Runs a scheduler over `job` for `run_for` of (paused) time, then shuts it down.
async fn drive(
    job: Arc<Scripted>,
    clock: TokioClock,
    p: JobPlan,
    s: Settings,
    run_for: Duration,
) -> gsdr::scheduler::Summary {
    let sched = Scheduler::new(vec![p], job, Arc::new(clock), s, vec![]);
    let stop = CancellationToken::new();
    let h = tokio::spawn(sched.run(stop.clone()));
    tokio::time::sleep(run_for).await;
    stop.cancel();
    h.await.unwrap()
}

// ---------------------------------------------------------------- scheduler, paused time

#[tokio::test(start_paused = true)]
async fn scheduler_runs_at_cron_due_times() {
    let clock = TokioClock::starting_at(at(29, 1, 0));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::from_secs(30)));
    let s = drive(
        job.clone(),
        clock,
        plan("sched-due", "0 0 */6 * * *", None),
        settings(MissedRuns::Skip),
        Duration::from_secs(24 * 3600),
    )
    .await;
    assert_eq!(
        job.times(),
        [at(29, 6, 0), at(29, 12, 0), at(29, 18, 0), at(30, 0, 0)]
    );
    assert_eq!(s.failures, 0);
    assert!(!s.aborted_in_flight);
}

#[tokio::test(start_paused = true)]
async fn missed_run_runs_once_on_start_only_when_older_than_interval() {
    // Last success 20 h ago on a 6-hourly schedule: run now, then follow the schedule.
    let clock = TokioClock::starting_at(at(29, 1, 0));
    let mut j = Scripted::new(Arc::new(clock), Duration::from_secs(30));
    j.last = Some(at(28, 5, 0));
    let job = Arc::new(j);
    drive(
        job.clone(),
        clock,
        plan("sched-missed", "0 0 */6 * * *", None),
        settings(MissedRuns::RunOnce),
        Duration::from_secs(6 * 3600),
    )
    .await;
    assert_eq!(job.times(), [at(29, 1, 0), at(29, 6, 0)]);

    // Last success 1 h ago: nothing was missed.
    let clock = TokioClock::starting_at(at(29, 1, 0));
    let mut j = Scripted::new(Arc::new(clock), Duration::from_secs(30));
    j.last = Some(at(29, 0, 0));
    let job = Arc::new(j);
    drive(
        job.clone(),
        clock,
        plan("sched-not-missed", "0 0 */6 * * *", None),
        settings(MissedRuns::RunOnce),
        Duration::from_secs(6 * 3600),
    )
    .await;
    assert_eq!(job.times(), [at(29, 6, 0)]);

    // Never backed up, policy `skip`: wait for the schedule.
    let clock = TokioClock::starting_at(at(29, 1, 0));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::from_secs(30)));
    drive(
        job.clone(),
        clock,
        plan("sched-skip", "0 0 */6 * * *", None),
        settings(MissedRuns::Skip),
        Duration::from_secs(6 * 3600),
    )
    .await;
    assert_eq!(job.times(), [at(29, 6, 0)]);
}

#[tokio::test(start_paused = true)]
async fn temporary_errors_retry_with_exponential_backoff_permanent_ones_do_not() {
    let clock = TokioClock::starting_at(at(29, 5, 0));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::ZERO));
    job.script.lock().unwrap().extend([
        Step::Temporary,
        Step::Temporary,
        Step::Ok,        // slot 06:00: third attempt succeeds
        Step::Permanent, // slot 12:00: given up at once
        Step::Temporary,
        Step::Temporary,
        Step::Temporary, // slot 18:00: all 3 attempts fail
    ]);
    let s = drive(
        job.clone(),
        clock,
        plan("sched-retry", "0 0 */6 * * *", None),
        settings(MissedRuns::Skip),
        Duration::from_secs(14 * 3600),
    )
    .await;
    let base = Duration::from_secs(60);
    let plus = |t: DateTime<Utc>, d: Duration| t + chrono::Duration::from_std(d).unwrap();
    assert_eq!(
        job.times(),
        [
            at(29, 6, 0),
            plus(at(29, 6, 0), base),
            plus(at(29, 6, 0), base * 3), // waits 1 min, then 2 min
            at(29, 12, 0),
            at(29, 18, 0),
            plus(at(29, 18, 0), base),
            plus(at(29, 18, 0), base * 3),
        ]
    );
    assert_eq!(s.failures, 2, "slots 12:00 and 18:00 failed");
    // The backoff is capped and jittered within ±20%.
    let mut st = settings(MissedRuns::Skip);
    st.jitter = 0.2;
    for _ in 0..50 {
        let b = gsdr::scheduler::backoff(&st, 2);
        assert!(
            b >= Duration::from_secs(96) && b <= Duration::from_secs(144),
            "{b:?}"
        );
        assert!(gsdr::scheduler::backoff(&st, 30) <= Duration::from_secs(600));
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_a_short_run_finish_and_aborts_a_long_one_after_the_grace_period() {
    // A 5-minute job, SIGTERM 1 minute in: it finishes, nothing aborted.
    let clock = TokioClock::starting_at(at(29, 5, 59));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::from_secs(300)));
    let start = tokio::time::Instant::now();
    let s = drive(
        job.clone(),
        clock,
        plan("sched-stop-short", "0 0 */6 * * *", None),
        settings(MissedRuns::Skip),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(job.times(), [at(29, 6, 0)]);
    assert_eq!(*job.cancelled.lock().unwrap(), 0);
    assert_eq!((s.failures, s.aborted_in_flight), (0, false));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(60 + 300),
        "waited for the run to finish"
    );

    // A 1-hour job, SIGTERM 1 minute in: aborted when the 10-minute grace period ends.
    let clock = TokioClock::starting_at(at(29, 5, 59));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::from_secs(3600)));
    let start = tokio::time::Instant::now();
    let s = drive(
        job.clone(),
        clock,
        plan("sched-stop-long", "0 0 */6 * * *", None),
        settings(MissedRuns::Skip),
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        *job.cancelled.lock().unwrap(),
        1,
        "the job saw the cancellation"
    );
    assert_eq!((s.failures, s.aborted_in_flight), (1, true));
    assert_eq!(start.elapsed(), Duration::from_secs(120 + 600));
}

#[tokio::test(start_paused = true)]
async fn max_concurrent_runs_bounds_simultaneous_streams() {
    let clock = TokioClock::starting_at(at(29, 5, 0));
    let job = Arc::new(Scripted::new(Arc::new(clock), Duration::from_secs(600)));
    let mut s = settings(MissedRuns::Skip);
    s.max_concurrent_runs = 1;
    let plans = vec![
        plan("conc-a", "0 0 6 * * *", None),
        plan("conc-b", "0 0 6 * * *", None),
    ];
    let sched = Scheduler::new(plans, job.clone(), Arc::new(clock), s, vec![]);
    let stop = CancellationToken::new();
    let h = tokio::spawn(sched.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    stop.cancel();
    h.await.unwrap();
    let mut times = job.times();
    times.sort();
    assert_eq!(
        times,
        [at(29, 6, 0), at(29, 6, 10)],
        "the second stream waits for the first"
    );
}

#[tokio::test(start_paused = true)]
async fn run_once_runs_only_due_sources_or_the_named_one() {
    let clock = TokioClock::starting_at(at(29, 7, 0));
    let mut j = Scripted::new(Arc::new(clock), Duration::from_secs(1));
    j.last = Some(at(29, 6, 30)); // after the 06:00 slot of the 6-hourly source
    let job = Arc::new(j);
    let plans = vec![
        plan("once-6h", "0 0 */6 * * *", None),
        plan("once-hourly", "0 0 * * * *", None),
    ];
    let out = gsdr::scheduler::run_once(
        &plans,
        None,
        job.clone(),
        Arc::new(clock),
        settings(MissedRuns::RunOnce),
        vec![],
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        out.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["once-hourly"],
        "07:00 slot passed since 06:30"
    );
    assert!(matches!(
        out[&JobId::backup("once-hourly")],
        SlotOutcome::Success(_)
    ));
    let out = gsdr::scheduler::run_once(
        &plans,
        Some("once-6h"),
        job.clone(),
        Arc::new(clock),
        settings(MissedRuns::RunOnce),
        vec![],
        CancellationToken::new(),
    )
    .await;
    assert_eq!(
        out.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(),
        ["once-6h"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_backup_leaves_no_listed_backup() {
    use gsdr::daemon::runner::JobRunner;
    let dir = tempdir();
    let id = age::x25519::Identity::generate();
    let text = format!(
        "name = \"t\"\n[encryption]\nrecipients = [\"{}\"]\n[targets.local]\nkind = \"fs\"\npath = \"{}\"\n\
         [sources.slow]\nkind = \"command\"\n[sources.slow.command]\nargv = [\"sh\", \"-c\", \"head -c 3000000 /dev/urandom; exec sleep 30\"]\n",
        id.to_public(),
        dir.path().join("b").display()
    );
    let policy = gsdr::policy::Policy::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let env = Arc::new(gsdr::job::Env::new(policy));
    let runner = JobRunner::new(env.clone());
    let cancel = CancellationToken::new();
    let task = {
        let cancel = cancel.clone();
        tokio::spawn(async move { runner.run(&JobId::backup("slow"), cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t0 = std::time::Instant::now();
    cancel.cancel();
    let e = task.await.unwrap().unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the cancelled backup stops promptly"
    );
    assert!(e.to_string().contains("nothing was committed"), "{e}");
    let listed = env
        .catalog_for("slow")
        .await
        .unwrap()
        .list(Some("slow"))
        .await
        .unwrap();
    assert!(
        listed.is_empty(),
        "an aborted backup is never listed: {listed:?}"
    );
}

// ---------------------------------------------------------------- leases

#[tokio::test]
async fn lease_busy_done_and_takeover_after_expiry() {
    let dir = tempdir();
    let store: Arc<dyn Store> = Arc::new(gsdr::storage::fs::FsStore::new(dir.path()).unwrap());
    lease_busy_done_and_takeover(store).await;
}

/// The lease semantics on S3: moto here, Garage in `s3compat`.
#[tokio::test]
async fn lease_busy_done_and_takeover_after_expiry_on_moto() {
    let moto = crate::support::moto::Moto::start().await;
    let store: Arc<dyn Store> = Arc::new(S3Store::new(&moto.target("p")).await.unwrap());
    lease_busy_done_and_takeover(store).await;
}

/// Acquire, busy, release as done, takeover of an expired lease: on any store.
pub(crate) async fn lease_busy_done_and_takeover(store: Arc<dyn Store>) {
    let key = lease::lease_key("locks", "src");
    let ttl = Duration::from_secs(300);
    let (t0, slot) = (at(29, 6, 0), at(29, 6, 0));
    let Acquire::Got(a) = lease::acquire(store.clone(), &key, "A", slot, t0, ttl)
        .await
        .unwrap()
    else {
        panic!("first acquire must win")
    };
    match lease::acquire(store.clone(), &key, "B", slot, t0, ttl)
        .await
        .unwrap()
    {
        Acquire::Busy { holder } => assert_eq!(holder, "A"),
        other => panic!("B must find it busy: {other:?}"),
    }
    a.release(t0, true).await.unwrap();
    match lease::acquire(store.clone(), &key, "B", slot, t0, ttl)
        .await
        .unwrap()
    {
        Acquire::Done { by } => assert_eq!(by, "A"),
        other => panic!("the slot is done: {other:?}"),
    }
    // Next slot: A takes it and dies without releasing; B takes over once it expired.
    let slot2 = at(29, 12, 0);
    let Acquire::Got(_dead) = lease::acquire(store.clone(), &key, "A", slot2, slot2, ttl)
        .await
        .unwrap()
    else {
        panic!("A takes slot 2")
    };
    let before = slot2 + chrono::Duration::seconds(299);
    assert!(matches!(
        lease::acquire(store.clone(), &key, "B", slot2, before, ttl)
            .await
            .unwrap(),
        Acquire::Busy { .. }
    ));
    let after = slot2 + chrono::Duration::seconds(301);
    let Acquire::Got(b) = lease::acquire(store.clone(), &key, "B", slot2, after, ttl)
        .await
        .unwrap()
    else {
        panic!("B takes over an expired lease")
    };
    assert_eq!(
        b.doc().done_slot,
        Some(slot),
        "the done slot survives a takeover"
    );
}

// ---------------------------------------------------------------- moto

struct Moto {
    guard: ChildGuard,
    port: u16,
}

fn start_moto(port: u16) -> Moto {
    let bin = require_program(
        "moto_server",
        "pip install 'moto[server]==5.1.22' into $GSDR_TEST_VENV",
    );
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut guard = ChildGuard::spawn(cmd, "moto_server");
    wait_for_port(
        port,
        Duration::from_secs(30),
        "moto_server",
        &mut guard.child,
    );
    Moto { guard, port }
}

/// An S3 target on `port` (any credentials: moto does not check them).
fn s3_target(
    dir: &std::path::Path,
    port: u16,
    bucket: &str,
    prefix: &str,
    extra: &str,
) -> S3Target {
    let key = dir.join("s3-key");
    std::fs::write(&key, "test").unwrap();
    toml::from_str(&format!(
        "endpoint = \"http://127.0.0.1:{port}\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\npart_size = \"5MiB\"\n{extra}",
        k = key.display()
    ))
    .unwrap()
}

async fn make_bucket(store: &S3Store, object_lock: bool) {
    store
        .client()
        .create_bucket()
        .bucket(store.bucket())
        .object_lock_enabled_for_bucket(object_lock)
        .send()
        .await
        .unwrap();
}

/// A run that records which replica ran which 4-second slot (slack for a loaded machine).
#[derive(Debug)]
struct SlotRecorder {
    tag: String,
    runs: Arc<Mutex<Vec<(String, i64)>>>,
}

#[async_trait]
impl Runner for SlotRecorder {
    async fn run(&self, _: &JobId, _: CancellationToken) -> gsdr::Result<RunReport> {
        let slot = Utc::now().timestamp() / 4 * 4;
        self.runs.lock().unwrap().push((self.tag.clone(), slot));
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(RunReport {
            id: format!("{}-{slot}", self.tag),
            bytes_raw: 1,
            bytes_stored: 1,
            duration_secs: 0.3,
            committed_at: None,
        })
    }
    async fn last_success(&self, _: &JobId) -> gsdr::Result<Option<DateTime<Utc>>> {
        Ok(None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_races_on_s3_have_one_winner() {
    let moto = start_moto(free_port());
    let dir = tempdir();
    let target = s3_target(dir.path(), moto.port, "races", "p", "");
    let first = S3Store::new(&target).await.unwrap();
    make_bucket(&first, false).await;
    let doubles = lease_races(Arc::new(first), 30, 8).await;
    // moto's conditional writes are check-then-act (ARCHITECTURE.md: ~1 in 100–150 rounds at 32-way).
    assert!(
        doubles <= 2,
        "{doubles} of 30 rounds had two winners: more than moto's race explains"
    );
}

/// `rounds` rounds of `ways` acquirers racing for one lease (even rounds
/// create it, odd ones take over a released one with `If-Match`); returns
/// how many rounds had more than one winner.
pub(crate) async fn lease_races(store: Arc<dyn Store>, rounds: usize, ways: usize) -> usize {
    let ttl = Duration::from_secs(60);
    let mut doubles = 0;
    for round in 0..rounds {
        // Even rounds race to create the lease, odd rounds to take over a released one (If-Match).
        let key = lease::lease_key("locks", &format!("race{}", round / 2));
        let slot = at(29, 0, 0) + chrono::Duration::minutes(round as i64);
        let mut set = tokio::task::JoinSet::new();
        for w in 0..ways {
            let store = store.clone();
            let key = key.clone();
            set.spawn(async move {
                match lease::acquire(store, &key, &format!("w{w}"), slot, slot, ttl)
                    .await
                    .unwrap()
                {
                    Acquire::Got(l) => Some(l),
                    _ => None,
                }
            });
        }
        let mut winners = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Some(l) = r.unwrap() {
                winners.push(l);
            }
        }
        assert!(!winners.is_empty(), "round {round}: nobody got the lease");
        if winners.len() > 1 {
            doubles += 1;
        }
        // Release (done) so the next round's takeover starts from a released lease.
        let mut released = false;
        for l in winners {
            released |= l.release(slot, true).await.is_ok();
        }
        assert!(released, "round {round}: the winner could not release");
    }
    eprintln!(
        "lease races on {}: {doubles} of {rounds} rounds ({ways}-way) had two winners",
        store.describe()
    );
    doubles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_one_bucket_every_slot_runs_exactly_once() {
    let moto = start_moto(free_port());
    let dir = tempdir();
    let target = s3_target(dir.path(), moto.port, "leases", "p", "");
    let a = S3Store::new(&target).await.unwrap();
    make_bucket(&a, false).await;
    let b = S3Store::new(&target).await.unwrap();
    let runs = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for (tag, store) in [("A", a), ("B", b)] {
        let mut s = settings(MissedRuns::Skip);
        s.holder = tag.into();
        s.lease_ttl = Duration::from_secs(10);
        s.lease_renew = Duration::from_secs(2);
        let runner = Arc::new(SlotRecorder {
            tag: tag.into(),
            runs: runs.clone(),
        });
        let p = plan("two-daemons", "*/4 * * * * *", Some(Arc::new(store)));
        let sched = Scheduler::new(vec![p], runner, Arc::new(SystemClock), s, vec![]);
        handles.push(tokio::spawn(sched.run(stop.clone())));
    }
    tokio::time::sleep(Duration::from_secs(17)).await;
    stop.cancel();
    for h in handles {
        h.await.unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    let mut per_slot: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (tag, slot) in &runs {
        per_slot.entry(*slot).or_default().push(tag.clone());
    }
    let slots: Vec<i64> = per_slot.keys().copied().collect();
    assert!(slots.len() >= 3, "about 4 slots in 17 s: {per_slot:?}");
    for w in slots.windows(2) {
        assert_eq!(w[1] - w[0], 4, "no slot skipped: {per_slot:?}");
    }
    // moto's conditional write is check-then-act: a rare round has two
    // winners (ARCHITECTURE.md). Allow one such round, never a pattern.
    let doubles = per_slot.values().filter(|v| v.len() > 1).count();
    assert!(doubles <= 1, "slots run twice: {per_slot:?}");
    assert!(per_slot.values().all(|v| v.len() <= 2));
    let by: std::collections::BTreeSet<&String> = runs.iter().map(|r| &r.0).collect();
    eprintln!(
        "two daemons: {} slots, runs by {by:?}, {doubles} double",
        slots.len()
    );
}

async fn sha_of(store: &Arc<dyn Store>, key: &str) -> String {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut r = store.get_stream(key).await.unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_catches_up_after_the_offsite_server_dies_midway() {
    let p_moto = start_moto(free_port());
    let o_port = free_port();
    let mut o_moto = start_moto(o_port);
    let dir = tempdir();
    let ps = S3Store::new(&s3_target(dir.path(), p_moto.port, "primary", "gs", ""))
        .await
        .unwrap();
    make_bucket(&ps, false).await;
    let os_target = s3_target(dir.path(), o_port, "offsite", "gs", "max_attempts = 1");
    let os = S3Store::new(&os_target).await.unwrap();
    make_bucket(&os, false).await;
    let primary: Arc<dyn Store> = Arc::new(ps);
    let offsite: Arc<dyn Store> = Arc::new(os);

    // Four backups of 6 MiB (two parts each) on the primary.
    let id = age::x25519::Identity::generate();
    let opts = gsdr::pipeline::EncodeOptions {
        level: 1,
        workers: 0,
        recipients: vec![id.to_public()],
        stall_timeout: gsdr::pipeline::DEFAULT_STALL_TIMEOUT,
        signer: None,
    };
    let src = gsdr::source::command::CommandSource::new(
        "repl",
        toml::from_str("argv = [\"head\", \"-c\", \"6291456\", \"/dev/urandom\"]").unwrap(),
    );
    for _ in 0..4 {
        gsdr::job::backup_with(
            "repl",
            "command",
            &src,
            primary.clone(),
            &opts,
            &gsdr::job::NoProgress,
        )
        .await
        .unwrap();
    }
    let manifests = Catalog::new(primary.clone())
        .list(Some("repl"))
        .await
        .unwrap();
    assert_eq!(manifests.len(), 4);
    assert_eq!(
        sha_of(&primary, &manifests[0].data_key).await,
        manifests[0].stored_sha256
    );

    // Kill the off-site server once the first backup landed there.
    let sweep = {
        let (p, o) = (primary.clone(), offsite.clone());
        tokio::spawn(async move {
            gsdr::replicate::catch_up(
                &p,
                &o,
                Some("repl"),
                &Default::default(),
                &Default::default(),
            )
            .await
        })
    };
    let t0 = std::time::Instant::now();
    loop {
        let n = offsite
            .list("repl/")
            .await
            .map(|l| {
                l.iter()
                    .filter(|o| o.key.ends_with("manifest.json"))
                    .count()
            })
            .unwrap_or(0);
        if n >= 1 {
            break;
        }
        if sweep.is_finished() {
            panic!(
                "the sweep ended before the kill: {:?}",
                sweep.await.unwrap()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "first copy never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    o_moto.guard.kill();
    let first = sweep.await.unwrap();
    let failed = match first {
        Ok(r) => r.failed.len(),
        Err(_) => 4,
    };
    assert!(failed >= 1, "the sweep must notice the dead server");

    // The server comes back (empty: moto keeps data in memory); the catch-up sweep completes.
    let _o_moto2 = start_moto(o_port);
    make_bucket(&S3Store::new(&os_target).await.unwrap(), false).await;
    let missing = gsdr::replicate::check(&primary, &offsite, Some("repl"), &Default::default())
        .await
        .unwrap();
    assert_eq!(missing.len(), 4, "{missing:?}");
    let r = gsdr::replicate::catch_up(
        &primary,
        &offsite,
        Some("repl"),
        &Default::default(),
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(r.copied.len(), 4, "{r:?}");
    assert!(r.failed.is_empty());
    assert!(
        gsdr::replicate::check(&primary, &offsite, Some("repl"), &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    for m in &manifests {
        assert_eq!(
            sha_of(&offsite, &m.data_key).await,
            m.stored_sha256,
            "off-site copy of {}",
            m.id
        );
    }
    let off = Catalog::new(offsite.clone())
        .list(Some("repl"))
        .await
        .unwrap();
    assert_eq!(
        off, manifests,
        "the off-site catalog equals the primary one"
    );
    // Safe point = newest recovery point present on both.
    let s = gsdr::replicate::safety(&primary, Some(&offsite), "repl", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        s.safe_point,
        manifests.iter().map(|m| m.recovery_point()).max()
    );
    assert_eq!(s.replication_lag_secs, 0.0);

    // A corrupt primary object is never copied: the check on the way refuses it.
    let m = &manifests[0];
    let mut bad = m.clone();
    bad.stored_sha256 = "0".repeat(64);
    let e = gsdr::replicate::copy_backup(&primary, &offsite, &bad, &Default::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert_eq!(e.kind(), gsdr::ErrorKind::Damaged, "damage is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_init_applies_lifecycle_and_object_lock_idempotently() {
    let moto = start_moto(free_port());
    let dir = tempdir();
    let target = s3_target(
        dir.path(),
        moto.port,
        "locked",
        "gs",
        "[lifecycle]\nabort_incomplete_after = \"1d\"\nversioning = true\nobject_lock = { mode = \"compliance\", retention = \"30d\" }\n",
    );
    let store = S3Store::new(&target).await.unwrap();
    make_bucket(&store, true).await;
    let lc = target.lifecycle.clone().unwrap();

    let dry = gsdr::storage::lifecycle::apply(&store, &lc, true)
        .await
        .unwrap();
    assert!(!dry.is_empty());
    assert_eq!(
        gsdr::storage::lifecycle::apply(&store, &lc, true)
            .await
            .unwrap(),
        dry,
        "a dry run changes nothing"
    );
    let applied = gsdr::storage::lifecycle::apply(&store, &lc, false)
        .await
        .unwrap();
    assert_eq!(applied, dry);
    let again = gsdr::storage::lifecycle::apply(&store, &lc, false)
        .await
        .unwrap();
    assert!(
        again.is_empty(),
        "second init must find nothing to change: {again:?}"
    );

    // Read back from the server.
    let st = gsdr::storage::lifecycle::read(&store).await.unwrap();
    assert_eq!(st.versioning, "Enabled");
    assert!(st.object_lock_enabled);
    assert_eq!(st.default_retention, Some(("COMPLIANCE".into(), 30)));
    let rule = st.rule.unwrap();
    assert_eq!(
        (
            rule.prefix.as_str(),
            rule.expire_days,
            rule.expired_delete_markers,
            rule.abort_days,
            rule.noncurrent_days
        ),
        ("gs/", None, true, Some(1), Some(1)),
        "no current object expires: prune decides"
    );

    // A locked object version cannot be deleted; a plain delete only hides it (prune's view).
    let s: Arc<dyn Store> = Arc::new(store.clone());
    s.put_small(
        "src/full/x/manifest.json",
        bytes::Bytes::from_static(b"{}"),
        gsdr::storage::PutCondition::Overwrite,
    )
    .await
    .unwrap();
    let vers = store
        .client()
        .list_object_versions()
        .bucket("locked")
        .prefix("gs/src/full/x/")
        .send()
        .await
        .unwrap();
    let v = vers.versions()[0].version_id().unwrap().to_string();
    let head = store
        .client()
        .head_object()
        .bucket("locked")
        .key("gs/src/full/x/manifest.json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let del = store
        .client()
        .delete_object()
        .bucket("locked")
        .key("gs/src/full/x/manifest.json")
        .version_id(&v)
        .send()
        .await;
    assert!(
        del.is_err(),
        "deleting a COMPLIANCE-locked version must fail"
    );
    s.delete("src/full/x/manifest.json").await.unwrap();
    assert!(
        s.head("src/full/x/manifest.json").await.unwrap().is_none(),
        "hidden by a delete marker"
    );
    let still = store
        .client()
        .head_object()
        .bucket("locked")
        .key("gs/src/full/x/manifest.json")
        .version_id(&v)
        .send()
        .await;
    assert!(still.is_ok(), "the locked version is still there");
}

// ---------------------------------------------------------------- metrics, alerts

#[tokio::test]
async fn metrics_endpoint_serves_parseable_prometheus_text() {
    use gsdr::metrics::events;
    let health = gsdr::metrics::server::Health::default();
    let stop = CancellationToken::new();
    let (addr, task) =
        gsdr::metrics::server::serve("127.0.0.1:0".parse().unwrap(), health.clone(), stop.clone())
            .await
            .unwrap();
    events::SourceConfigured {
        source: "metrics-src",
        interval_secs: 21600.0,
        rpo_secs: Some(21600.0),
    }
    .emit();
    events::BackupSucceeded {
        source: "metrics-src",
        id: "b1",
        bytes_raw: 1000,
        bytes_stored: 400,
        duration_secs: 2.5,
        finished_at: Utc::now(),
    }
    .emit();
    events::BackupFailed {
        source: "metrics-src",
        error: "boom",
        class: gsdr::RetryClass::Temporary,
        attempt: 1,
        will_retry: true,
    }
    .emit();
    events::SafetyState {
        source: "metrics-src",
        safe_point: Some(Utc::now() - chrono::Duration::seconds(3600)),
        replication_lag_secs: 12.0,
    }
    .emit();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    assert_eq!(
        http.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    health.set_ready(true);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("source") == Some("metrics-src"))
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(value("gsdr_backup_stored_bytes"), 400.0);
    assert_eq!(value("gsdr_backup_last_attempt_success"), 0.0);
    assert_eq!(value("gsdr_backup_failures_total"), 1.0);
    assert_eq!(value("gsdr_replication_lag_seconds"), 12.0);
    assert_eq!(value("gsdr_rpo_target_seconds"), 21600.0);
    let exposure = value("gsdr_rpo_exposure_seconds");
    assert!((3599.0..3700.0).contains(&exposure), "{exposure}");
    stop.cancel();
    task.await.unwrap();
}

// ---------------------------------------------------------------- CLI end to end

#[test]
fn cli_run_once_prune_and_replicate_check() {
    let f = crate::cli::Fixture::new(
        "[targets.local]\nkind = \"fs\"\npath = \"{dir}/primary\"\n\
         [targets.off]\nkind = \"fs\"\npath = \"{dir}/off\"\n\
         [defaults]\ntarget = \"local\"\noffsite = \"off\"\nretention = { keep_last = 1 }\n\
         [sources.s]\nkind = \"command\"\nschedule = \"0 3 * * *\"\n\
         [sources.s.command]\nargv = [\"head\", \"-c\", \"100000\", \"/dev/urandom\"]\n\
         [sources.bad]\nkind = \"command\"\n\
         [sources.bad.command]\nargv = [\"false\"]\n\
         [daemon]\nretry_max_attempts = 2\nretry_backoff_base = \"1s\"\nretry_backoff_max = \"1s\"\nprune_after_run = false\n",
    );
    // Never backed up and a 03:00 slot has passed: due. `bad` has no schedule: not run.
    let backups = |r: &serde_json::Value| -> Vec<serde_json::Value> {
        r["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "backup")
            .cloned()
            .collect()
    };
    let r = f.gsdr_json(&["run", "--once"]);
    let runs = backups(&r);
    assert_eq!(runs.len(), 1, "{r}");
    assert_eq!(
        (runs[0]["source"].as_str(), runs[0]["result"].as_str()),
        (Some("s"), Some("ok"))
    );
    // The policy-wide jobs were due too (never ran): the sweep, gc, the status refresh.
    let jobs: Vec<&str> = r["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["job"].as_str().unwrap())
        .collect();
    assert_eq!(
        jobs,
        ["backup/s", "replicate/all", "gc/all", "wal-status/all"],
        "{r}"
    );
    // Just backed up: no backup due (and the leased jobs just ran).
    let again = f.gsdr_json(&["run", "--once"]);
    assert_eq!(backups(&again).len(), 0, "{again}");
    assert!(
        again["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["kind"] == "wal-status"),
        "{again}"
    );
    // By name it runs anyway; the run replicated its backup.
    assert_eq!(
        f.gsdr_json(&["run", "--once", "--source", "s"])["runs"][0]["result"],
        "ok"
    );
    let check = f.gsdr(&["replicate", "--check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        f.gsdr_json(&["list", "--target", "off"])["backups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // keep_last = 1: prune shows one deletion per target, then does it.
    let dry = f.gsdr_json(&["prune", "--dry-run"]);
    let actions = dry["actions"].as_array().unwrap();
    let deletes: Vec<_> = actions
        .iter()
        .filter(|a| a["keep"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(deletes.len(), 2, "{dry}");
    assert!(actions.iter().all(|a| a["deleted"] == false));
    let newest_kept = actions
        .iter()
        .find(|a| !a["keep"].as_array().unwrap().is_empty())
        .unwrap();
    assert_eq!(newest_kept["keep"][0]["rule"], "newest");
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        2,
        "a dry run deletes nothing"
    );
    f.gsdr_json(&["prune"]);
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        1
    );
    assert!(f.gsdr(&["replicate", "--check"]).status.success());
    // The off-site copy loses a manifest: --check lists it and exits 1; replicate repairs it.
    let kept = f.gsdr_json(&["list"])["backups"][0].clone();
    let data = f
        .dir
        .path()
        .join("off")
        .join(kept["data_key"].as_str().unwrap());
    std::fs::remove_file(data.with_file_name("manifest.json")).unwrap();
    let out = f.gsdr(&["replicate", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(kept["id"].as_str().unwrap()) && text.contains("no manifest off-site"),
        "{text}"
    );
    let fixed = f.gsdr_json(&["replicate"]);
    assert_eq!(
        fixed["sweeps"]["s"]["copied"].as_array().unwrap().len(),
        1,
        "{fixed}"
    );
    assert!(f.gsdr(&["replicate", "--check"]).status.success());

    // A failing run exits non-zero and says why.
    let out = f.gsdr(&["run", "--once", "--source", "bad"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("FAILED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn cli_run_prunes_after_each_run_by_default() {
    let f = crate::cli::Fixture::new(
        "[targets.local]\nkind = \"fs\"\npath = \"{dir}/primary\"\n\
         [defaults]\nretention = { keep_last = 1 }\n\
         [sources.s]\nkind = \"command\"\n\
         [sources.s.command]\nargv = [\"echo\", \"hello\"]\n",
    );
    for _ in 0..3 {
        assert_eq!(
            f.gsdr_json(&["run", "--once", "--source", "s"])["runs"][0]["result"],
            "ok"
        );
    }
    let list = f.gsdr_json(&["list"]);
    assert_eq!(
        list["backups"].as_array().unwrap().len(),
        1,
        "keep_last = 1 applied after each run: {list}"
    );
}

#[test]
fn cli_daemon_runs_a_missed_source_serves_metrics_and_stops_on_sigterm() {
    let port = free_port();
    let f = crate::cli::Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/primary\"\n\
         [targets.off]\nkind = \"fs\"\npath = \"{{dir}}/off\"\n\
         [defaults]\ntarget = \"local\"\noffsite = \"off\"\n\
         [sources.d]\nkind = \"command\"\nschedule = \"0 3 * * *\"\nobjectives = {{ rto = \"4h\", rpo = \"6h\" }}\n\
         [sources.d.command]\nargv = [\"echo\", \"hello\"]\n\
         [sources.e]\nkind = \"command\"\n[sources.e.command]\nargv = [\"echo\", \"unscheduled\"]\n\
         [daemon]\nmetrics_addr = \"127.0.0.1:{port}\"\ngrace_period = \"5s\"\n"
    ));
    // A backup made before the daemon, never copied off-site: the start sweep copies it.
    assert!(f.gsdr(&["backup", "--source", "e"]).status.success());
    assert_eq!(f.gsdr(&["replicate", "--check"]).status.code(), Some(1));
    let mut child = std::process::Command::new(crate::support::gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .arg("daemon")
        .env("GSDR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30), "gsdr daemon", &mut child);
    // Never backed up: the missed-run policy runs it at start.
    let t0 = std::time::Instant::now();
    let metrics = loop {
        let body = http::blocking_get(&format!("http://127.0.0.1:{port}/metrics"));
        if body.contains("gsdr_backup_last_attempt_success{source=\"d\"} 1")
            || t0.elapsed() > Duration::from_secs(20)
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        metrics.contains("gsdr_backup_last_attempt_success{source=\"d\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gsdr_rpo_target_seconds{source=\"d\"} 21600"),
        "{metrics}"
    );
    assert_eq!(
        http::blocking_status(&format!("http://127.0.0.1:{port}/readyz")),
        200
    );
    // The start sweep copies `e`'s older backup off-site while the daemon runs.
    let t0 = std::time::Instant::now();
    while !f.gsdr(&["replicate", "--check"]).status.success() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the start sweep never copied `e`"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_daemon(child);
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        2
    );
    let check = f.gsdr(&["replicate", "--check"]);
    assert!(
        check.status.success(),
        "the sweep and the run copied both: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}

/// Sends SIGTERM to a `gsdr daemon` child and asserts it exits 0.
pub(crate) fn stop_daemon(child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Tiny blocking HTTP GET for tests that run the binary (no runtime of their own).
pub(crate) mod http {
    pub fn blocking_get(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { reqwest::get(url).await.ok()?.text().await.ok() })
            .unwrap_or_default()
    }
    pub fn blocking_status(url: &str) -> u16 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::get(url)
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    }
}

// ---------------------------------------------------------------- notifications

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_failure_message_per_interval_and_a_recovery() {
    use axum::routing::post;
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            post(move |axum::Json(v): axum::Json<serde_json::Value>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(v);
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    // The URL comes from a secret file, as in the cluster.
    let dir = tempdir();
    let f = dir.path().join("url");
    std::fs::write(&f, format!("http://{addr}/hook\n")).unwrap();
    let url = gsdr::secret::SecretRef::File(f).read().unwrap();
    let n = Arc::new(gsdr::notify::Notifier::new(
        url,
        "glucosync",
        Duration::from_secs(900),
    ));
    let hook: Arc<dyn gsdr::scheduler::OutcomeHook> = Arc::new(n);
    hook.outcome(
        &JobId::backup("notify-src"),
        &SlotOutcome::Failed("disk full".into()),
        None,
    );
    hook.outcome(
        &JobId::backup("notify-src"),
        &SlotOutcome::Failed("disk full".into()),
        None,
    );
    hook.outcome(
        &JobId::backup("notify-src"),
        &SlotOutcome::Failed("disk full".into()),
        None,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    hook.outcome(
        &JobId::backup("notify-src"),
        &SlotOutcome::Success(RunReport {
            id: "b9".into(),
            bytes_raw: 1,
            bytes_stored: 1,
            duration_secs: 1.0,
            committed_at: None,
        }),
        None,
    );
    let t0 = std::time::Instant::now();
    while got.lock().unwrap().len() < 2 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let msgs: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        msgs.len(),
        2,
        "one failure (rate limited) and one recovery: {msgs:?}"
    );
    assert!(
        msgs[0].contains("`notify-src` failed: disk full") && msgs[0].contains("glucosync"),
        "{msgs:?}"
    );
    assert!(msgs[1].contains("recovered"), "{msgs:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_storage_init_shows_the_difference_then_is_up_to_date() {
    let moto = start_moto(free_port());
    let dir = tempdir();
    let s = S3Store::new(&s3_target(dir.path(), moto.port, "clilock", "gs", ""))
        .await
        .unwrap();
    make_bucket(&s, true).await;
    let key = dir.path().join("k");
    std::fs::write(&key, "test").unwrap();
    let f = crate::cli::Fixture::new(&format!(
        "[targets.m]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:{}\"\nbucket = \"clilock\"\nprefix = \"gs\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\n\
         [targets.m.lifecycle]\nversioning = true\nobject_lock = {{ mode = \"governance\", retention = \"30d\" }}\n",
        moto.port,
        k = key.display()
    ));
    let run = |args: &[&str]| {
        let out = f.gsdr(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dry = run(&["storage", "init", "--dry-run"]);
    // A bucket made with Object Lock has versioning on already: not in the difference.
    assert!(
        !dry.contains("m: versioning") && dry.contains("(not applied)"),
        "{dry}"
    );
    assert!(dry.contains("GOVERNANCE 30 days"), "{dry}");
    assert_eq!(
        run(&["storage", "init", "--dry-run"]),
        dry,
        "a dry run changes nothing"
    );
    let applied = run(&["storage", "init"]);
    assert!(!applied.contains("(not applied)"), "{applied}");
    assert_eq!(run(&["storage", "init"]), "m: up to date\n");
    let st = gsdr::storage::lifecycle::read(&s).await.unwrap();
    assert_eq!(st.default_retention, Some(("GOVERNANCE".into(), 30)));
}
