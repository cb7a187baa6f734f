//! Redis continuous capture (issue 14, item 3): gsdr attached as a replica
//! stores the replication stream in segments; restores to a time replay
//! them onto the base snapshot. Real `redis-server` processes (and a
//! sentinel) only. Each write batch ends with `WAIT`, which returns once
//! gsdr acknowledged it, and gsdr acknowledges only what it has stored: the
//! expected data at each recorded time is exact, with no timing assumption.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gsdr::catalog::Manifest;
use gsdr::job::{Env, NoProgress, RestoreRequest};
use gsdr::policy::Policy;
use tokio_util::sync::CancellationToken;

use crate::support::redis::{Opts, RedisServer, Sentinel};
use crate::support::tempdir;

struct Ctx {
    _dir: tempfile::TempDir,
    env: Env,
    /// The policy, as a file for the `gsdr` binary.
    policy: std::path::PathBuf,
}

/// An environment with a local primary target, a local off-site target and
/// a continuously captured `cache` source set up by `redis_toml`.
fn ctx(redis_toml: &str) -> Arc<Ctx> {
    ctx_with(redis_toml, "")
}

/// [`ctx`] with more top-level tables (`[pipeline]`…).
fn ctx_with(redis_toml: &str, tables: &str) -> Arc<Ctx> {
    let dir = tempdir();
    let key = dir.path().join("key.txt");
    let recipient = gsdr::pipeline::keys::keygen(&key).unwrap();
    let text = format!(
        r#"
name = "test"
{tables}
[defaults]
target = "local"
offsite = "far"
[encryption]
recipients = ["{recipient}"]
identity_file = "{}"
[targets.local]
kind = "fs"
path = "{}"
[targets.far]
kind = "fs"
path = "{}"
[sources.cache]
kind = "redis"
[sources.cache.redis]
continuous = true
slice = "500ms"
connect_timeout = "2s"
{redis_toml}
"#,
        key.display(),
        dir.path().join("store").display(),
        dir.path().join("far").display()
    );
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, &text).unwrap();
    let policy = Policy::parse(&text, Path::new("test.toml")).unwrap();
    Arc::new(Ctx {
        env: Env::new(policy),
        _dir: dir,
        policy: file,
    })
}

/// Every key and string value of databases 0 and 1.
type Data = BTreeMap<(u32, String), String>;

async fn data_of(url: impl Fn(u32) -> String) -> Data {
    let mut out = Data::new();
    for db in [0, 1] {
        let mut c = redis::Client::open(url(db))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            let v: String = redis::cmd("GET").arg(&k).query_async(&mut c).await.unwrap();
            out.insert((db, k), v);
        }
    }
    out
}

/// Batch `i` of writes to `url`: new keys in two databases, an overwrite,
/// an increment and a delete of an earlier batch's key, in a transaction
/// too; then `WAIT` until gsdr has stored them all (`replicas` acks).
async fn write_batch(url: &dyn Fn(u32) -> String, i: u32, replicas: usize) {
    let mut last = None;
    for db in [0u32, 1] {
        let mut c = redis::Client::open(url(db))
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(40))),
            )
            .await
            .unwrap();
        for j in 0..40 {
            redis::cmd("SET")
                .arg(format!("b{i}:k{j}"))
                .arg(format!("v{i}-{j}"))
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        redis::cmd("SET")
            .arg("latest")
            .arg(i.to_string())
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        redis::cmd("INCR")
            .arg("counter")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        if i > 0 {
            redis::cmd("DEL")
                .arg(format!("b{}:k0", i - 1))
                .query_async::<()>(&mut c)
                .await
                .unwrap();
        }
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(format!("tx{i}"))
            .arg("a")
            .cmd("APPEND")
            .arg(format!("tx{i}"))
            .arg("b")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
        last = Some(c);
    }
    // `WAIT` waits for the offset of this connection's last write, which
    // follows every write above.
    let mut c = last.unwrap();
    let acked: usize = redis::cmd("WAIT")
        .arg(replicas)
        .arg(30_000)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        acked >= replicas,
        "batch {i}: only {acked} replica(s) acknowledged within 30 s (gsdr acknowledges what it stored)"
    );
}

/// Starts the capture of `cache`; returns its cancel token and task.
fn start_capture(
    ctx: &Arc<Ctx>,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<gsdr::error::Result<gsdr::source::capture::CaptureReport>>,
) {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let ctx = ctx.clone();
    let task = tokio::spawn(async move { gsdr::job::capture::run(&ctx.env, "cache", c).await });
    (cancel, task)
}

/// The capture bases (`capture: true` backups) of `cache` in `target`.
async fn bases(ctx: &Ctx, target: &str) -> Vec<Manifest> {
    let cat = ctx.env.catalog(target).await.unwrap();
    cat.list(Some("cache"))
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.consistency.details["capture"] == true)
        .collect()
}

async fn wait_for_base(ctx: &Ctx) {
    for _ in 0..600 {
        if !bases(ctx, "local").await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the capture stored no base within 30 s");
}

/// Restores `cache` from `target` as of `t` into `into` (replacing what it holds).
async fn restore_at(
    ctx: &Ctx,
    target: &str,
    t: DateTime<Utc>,
    into: &RedisServer,
) -> serde_json::Value {
    let cat = ctx.env.catalog(target).await.unwrap();
    let m = cat.newest_before("cache", None, Some(t)).await.unwrap();
    let req = RestoreRequest {
        to_uri: Some(into.url(0)),
        replace: true,
        target_time: Some(t),
        from_target: Some(target.to_string()),
        ..RestoreRequest::default()
    };
    gsdr::job::restore(&ctx.env, &cat, &m, &req, &NoProgress)
        .await
        .unwrap()
        .details
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_capture_restores_to_five_random_times_exactly() {
    let primary = RedisServer::start(Opts::default());
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let url = |db: u32| primary.url(db);
    write_batch(&url, 0, 0).await; // before the capture: in the base
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;

    let mut points: Vec<(DateTime<Utc>, Data)> = Vec::new();
    for i in 1..=7 {
        write_batch(&url, i, 1).await;
        let t = Utc::now();
        points.push((t, data_of(url).await));
        // The next batch is received strictly after `t`.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more, so the log reaches past every recorded time.
    write_batch(&url, 8, 1).await;
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    assert!(report.objects >= 8, "a base and segments: {report:?}");
    assert_eq!(bases(&ctx, "local").await.len(), 1, "one base, one chain");

    use rand::seq::SliceRandom;
    let mut picks: Vec<usize> = (0..points.len()).collect();
    picks.shuffle(&mut rand::thread_rng());
    let target = RedisServer::start(Opts::default());
    for &p in &picks[..5] {
        let (t, want) = &points[p];
        let details = restore_at(&ctx, "local", *t, &target).await;
        assert_eq!(details["replayed"]["errors"], 0, "{details}");
        assert_eq!(details["replayed"]["short_of_target"], false, "{details}");
        let got = data_of(|db| target.url(db)).await;
        assert_eq!(
            got.len(),
            want.len(),
            "restore to batch {}'s time: key count",
            p + 1
        );
        assert_eq!(&got, want, "restore to batch {}'s time: data", p + 1);
    }
    // The off-site copy got every segment as it was stored: the same restore works from it.
    let (t, want) = &points[points.len() - 1];
    // The base reaches the off-site target through the replicate sweep.
    let local = ctx.env.store("local").await.unwrap();
    let far = ctx.env.store("far").await.unwrap();
    let trust = ctx.env.trust().unwrap();
    gsdr::replicate::catch_up(&local, &far, Some("cache"), &ctx.env.engines(), &trust)
        .await
        .unwrap();
    restore_at(&ctx, "far", *t, &target).await;
    assert_eq!(
        &data_of(|db| target.url(db)).await,
        want,
        "restore from off-site"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_capture_continues_with_psync_after_the_link_is_killed() {
    let primary = RedisServer::start(Opts::default());
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let url = |db: u32| primary.url(db);
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;
    write_batch(&url, 0, 1).await;
    let mut admin = primary.conn(0).await;
    for round in 1..=3 {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("replica")
            .query_async(&mut admin)
            .await
            .unwrap();
        assert_eq!(killed, 1, "round {round}: gsdr's link was killed");
        // Written while gsdr is reconnecting: it must come from the backlog.
        write_batch(&url, round, 1).await;
    }
    let t = Utc::now();
    let want = data_of(url).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        bases(&ctx, "local").await.len(),
        1,
        "PSYNC continued the same base after each kill"
    );
    let target = RedisServer::start(Opts::default());
    let details = restore_at(&ctx, "local", t, &target).await;
    assert_eq!(details["replayed"]["errors"], 0, "{details}");
    assert_eq!(data_of(|db| target.url(db)).await, want, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_capture_follows_a_sentinel_failover_losing_nothing() {
    let primary = RedisServer::start(Opts::default());
    let replica = RedisServer::start(Opts {
        replica_of: Some(primary.port),
        ..Opts::default()
    });
    replica.wait_in_sync(&primary).await;
    let sentinel = Sentinel::start("mymaster", primary.port, None);
    sentinel.wait_replicas("mymaster", 1).await;
    let ctx = ctx(&format!(
        "sentinels = [\"{}\"]\nmaster_name = \"mymaster\"",
        sentinel.addr()
    ));
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;
    let old = |db: u32| primary.url(db);
    // Both the replica and gsdr acknowledge.
    write_batch(&old, 0, 2).await;
    write_batch(&old, 1, 2).await;

    let mut s = redis::Client::open(format!("redis://{}", sentinel.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg("mymaster")
        .query_async::<()>(&mut s)
        .await
        .unwrap();
    let mut promoted = false;
    for _ in 0..600 {
        let addr: Vec<String> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg("mymaster")
            .query_async(&mut s)
            .await
            .unwrap();
        if addr.get(1) == Some(&replica.port.to_string()) {
            promoted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(promoted, "the sentinel promoted the replica");
    let new = |db: u32| replica.url(db);
    // gsdr follows the new master: WAIT returns once gsdr stored batch 2
    // from there and the demoted master (now its replica) has it too.
    write_batch(&new, 2, 2).await;
    let t = Utc::now();
    let want = data_of(new).await;
    assert!(
        want.contains_key(&(0, "b1:k5".to_string())),
        "written before the failover"
    );
    cancel.cancel();
    task.await.unwrap().unwrap();

    let n = bases(&ctx, "local").await.len();
    assert!(n == 1 || n == 2, "one chain continued, or a new base: {n}");
    let target = RedisServer::start(Opts::default());
    let details = restore_at(&ctx, "local", t, &target).await;
    assert_eq!(details["replayed"]["errors"], 0, "{details}");
    let got = data_of(|db| target.url(db)).await;
    let missing: Vec<_> = want.iter().filter(|(k, v)| got.get(k) != Some(v)).collect();
    let extra: Vec<_> = got.iter().filter(|(k, _)| !want.contains_key(k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "everything written before the failover, and after it, is restored ({n} base(s)); missing or different {missing:?}, extra {extra:?}; {details}"
    );
}

/// Peak resident memory of process `pid` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gsdr_capture_in_the_foreground_and_gsdr_restore_target_time() {
    let primary = RedisServer::start(Opts::default());
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let url = |db: u32| primary.url(db);
    write_batch(&url, 0, 0).await;
    let child = std::process::Command::new(crate::support::gsdr_bin())
        .arg("--policy")
        .arg(&ctx.policy)
        .args(["--json", "capture", "--source", "cache"])
        .env("GSDR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_base(&ctx).await;
    let mut points = Vec::new();
    for i in 1..=3 {
        write_batch(&url, i, 1).await;
        points.push((Utc::now(), data_of(url).await));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    write_batch(&url, 4, 1).await;
    let rss = peak_rss_kib(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "gsdr capture exits 0 on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["objects"].as_u64().unwrap() >= 5, "{report}");
    eprintln!("gsdr capture peak RSS: {} KiB", rss);
    assert!(rss < 256 << 10, "gsdr capture's peak RSS is {rss} KiB");

    let target = RedisServer::start(Opts::default());
    for (t, want) in &points {
        let out = std::process::Command::new(crate::support::gsdr_bin())
            .arg("--policy")
            .arg(&ctx.policy)
            .args([
                "restore",
                "--source",
                "cache",
                "--target-time",
                &t.to_rfc3339(),
            ])
            .args(["--to", &target.url(0), "--flush", "--yes"])
            .env("GSDR_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "gsdr restore --target-time {t}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            &data_of(|db| target.url(db)).await,
            want,
            "restored as of {t}"
        );
    }

    // A drill takes `pitr_before` too: to the second point (the scenario's
    // 0 s before `--target-time`), the restored scratch server holds exactly
    // the keys of that time.
    let (t, want) = &points[1];
    assert_ne!(want.len(), points[2].1.len(), "the points differ in keys");
    let scenario = format!(
        r#"name = "redis-pitr"
title = "Redis to a point in time"
description = "Restore the captured Redis to just before the incident."
pitr_before = "0s"

[[steps]]
name = "restore-redis"
kind = "restore_redis"
source = "cache"

[[steps]]
name = "keys"
kind = "redis_keys"
source = "cache"
min = {}
after = ["restore-redis"]
"#,
        want.len()
    );
    let rb = ctx.policy.parent().unwrap().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(rb.join("redis-pitr.toml"), scenario).unwrap();
    let out = std::process::Command::new(crate::support::gsdr_bin())
        .arg("--policy")
        .arg(&ctx.policy)
        .args(["--json", "drill", "--scenario", "redis-pitr", "--runbooks"])
        .arg(&rb)
        .args(["--target-time", &t.to_rfc3339()])
        .env("GSDR_LOG", "warn")
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "drill output is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{j}");
    let steps = j["reports"][0]["report"]["steps"].as_array().unwrap();
    let keys = steps.iter().find(|s| s["name"] == "keys").unwrap();
    assert_eq!(
        keys["detail"],
        format!("{0} keys (at least {0} expected)", want.len()),
        "{j}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_capture_continues_the_stored_chain_with_psync() {
    let primary = RedisServer::start(Opts::default());
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let url = |db: u32| primary.url(db);
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;
    write_batch(&url, 0, 1).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    // Written while no gsdr runs: the master's backlog keeps it.
    write_batch(&url, 1, 0).await;
    let (cancel, task) = start_capture(&ctx);
    write_batch(&url, 2, 1).await;
    let t = Utc::now();
    let want = data_of(url).await;
    write_batch(&url, 3, 1).await;
    cancel.cancel();
    let report = task.await.unwrap().unwrap();
    assert!(report.detail.contains("0 base(s)"), "{report:?}");
    assert_eq!(bases(&ctx, "local").await.len(), 1, "no new full sync");
    let target = RedisServer::start(Opts::default());
    let details = restore_at(&ctx, "local", t, &target).await;
    assert_eq!(details["replayed"]["short_of_target"], false, "{details}");
    assert_eq!(
        data_of(|db| target.url(db)).await,
        want,
        "nothing lost across the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_capture_log_is_seen_by_status_swept_off_site_and_pruned_with_its_base() {
    let primary = RedisServer::start(Opts::default());
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let url = |db: u32| primary.url(db);
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;
    write_batch(&url, 0, 1).await;
    let t = Utc::now();
    cancel.cancel();
    task.await.unwrap().unwrap();

    let engine = ctx
        .env
        .source_config("cache")
        .unwrap()
        .engine("cache")
        .unwrap();
    let log = engine
        .log_archive()
        .expect("a captured redis source keeps a log");
    let local = ctx.env.store("local").await.unwrap();
    let far = ctx.env.store("far").await.unwrap();
    let tail = log.tail(local.clone()).await.unwrap();
    assert!(
        tail.last
            .as_deref()
            .is_some_and(|k| k.starts_with("cache/log/")),
        "{tail:?}"
    );
    assert!(
        tail.stored_at.unwrap() <= t,
        "the write was stored before WAIT returned"
    );
    let base = bases(&ctx, "local").await.remove(0);
    let reach = log.reaches(&local, &base).await.unwrap().unwrap();
    assert!(
        reach > base.recovery_point(),
        "the log reaches past the base"
    );
    assert_eq!(
        log.newest(&local, std::slice::from_ref(&base))
            .await
            .unwrap(),
        Some(reach)
    );

    // Every segment went off-site as it was stored; one lost there is found and copied back.
    assert_eq!(log.offsite_gap(&local, &far).await.unwrap(), None);
    let segs = far.list("cache/log/").await.unwrap();
    assert!(!segs.is_empty());
    far.delete(&segs[0].key).await.unwrap();
    let gap = log.offsite_gap(&local, &far).await.unwrap().unwrap();
    assert!(gap.contains("1 capture segment"), "{gap}");
    // Through the replicate sweep, as `gsdr replicate` and the daemon run it:
    // it must take the policy's (captured) engine, not the kind's defaults.
    let trust = ctx.env.trust().unwrap();
    let missing = gsdr::replicate::check(&local, &far, Some("cache"), &ctx.env.engines())
        .await
        .unwrap();
    assert!(
        missing
            .iter()
            .any(|m| m.problem.contains("1 capture segment")),
        "{missing:?}"
    );
    let rep = gsdr::replicate::catch_up(&local, &far, Some("cache"), &ctx.env.engines(), &trust)
        .await
        .unwrap();
    let sweep = &rep.wal[0];
    assert_eq!((sweep.copied, sweep.failed.len()), (1, 0), "{sweep:?}");
    assert_eq!(log.offsite_gap(&local, &far).await.unwrap(), None);

    // Kept base: nothing goes. Base pruned (a newer backup kept): its segments go.
    let n = local.list("cache/log/").await.unwrap().len();
    let kept = log
        .prune(
            local.as_ref(),
            "local",
            std::slice::from_ref(&base),
            0,
            false,
        )
        .await;
    assert!(kept.error().is_none(), "{}", kept.line());
    assert_eq!(local.list("cache/log/").await.unwrap().len(), n);
    let newer = gsdr::job::backup(&ctx.env, "cache", &NoProgress)
        .await
        .unwrap()
        .manifest;
    let dry = log
        .prune(
            local.as_ref(),
            "local",
            std::slice::from_ref(&newer),
            0,
            true,
        )
        .await;
    assert_eq!(dry.to_json()["segments"], n, "{}", dry.line());
    assert_eq!(
        local.list("cache/log/").await.unwrap().len(),
        n,
        "a dry run deletes nothing"
    );
    let done = log.prune(local.as_ref(), "local", &[newer], 0, false).await;
    assert!(done.error().is_none(), "{}", done.line());
    assert!(
        local.list("cache/log/").await.unwrap().is_empty(),
        "{}",
        done.line()
    );
}

/// `gsdr_capture_reconnects_total` of `class` for source `cache`, from the
/// process's metrics (this is the only test whose capture stalls).
fn reconnects(class: &str) -> f64 {
    let text = gsdr::metrics::global().encode(Utc::now());
    text.lines()
        .filter(|l| l.starts_with("gsdr_capture_reconnects_total"))
        .filter(|l| l.contains("source=\"cache\"") && l.contains(&format!("class=\"{class}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_master_is_detected_and_the_capture_continues_when_it_wakes() {
    let primary = RedisServer::start(Opts {
        extra: vec![("repl-ping-replica-period".into(), "1".into())],
        ..Opts::default()
    });
    let ctx = ctx_with(
        &format!("addr = \"{}\"", primary.addr()),
        "[pipeline]\nstall_timeout = \"3s\"",
    );
    let url = |db: u32| primary.url(db);
    let (cancel, task) = start_capture(&ctx);
    wait_for_base(&ctx).await;
    write_batch(&url, 0, 1).await;
    let before = reconnects("stalled");
    let pid = nix::unistd::Pid::from_raw(primary.guard.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let mut seen = false;
    for _ in 0..400 {
        if reconnects("stalled") > before {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(seen, "the stall detector reported the silent master");
    write_batch(&url, 1, 1).await;
    let t = Utc::now();
    let want = data_of(url).await;
    cancel.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(
        bases(&ctx, "local").await.len(),
        1,
        "PSYNC continued after the stall"
    );
    let target = RedisServer::start(Opts::default());
    restore_at(&ctx, "local", t, &target).await;
    assert_eq!(data_of(|db| target.url(db)).await, want, "nothing lost");
}
