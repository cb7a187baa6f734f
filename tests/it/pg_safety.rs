//! PostgreSQL safety on real PostgreSQL 15 clusters: a base backup is
//! refused when the cluster archives no WAL or its archiving is failing,
//! and is aborted (never committed) when PostgreSQL waits longer than
//! `archive_wait` for its WAL; a hole in the archived WAL stops recovery
//! with an error instead of ending it silently, and `gsdr status` /
//! `replicate::safety` report the end of the contiguous chain.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::cli::Fixture;
use crate::postgres::{ok, restore, scratch, setup, start_restored, WAIT};
use crate::support::gsdr_bin;
use crate::support::postgres::{as_pg_user, pg_program, PgCluster};

/// Adds `settings` to the `[sources.pg.postgres]` table (the policy's last).
fn add_pg_settings(fx: &Fixture, settings: &str) {
    let mut p = std::fs::read_to_string(&fx.policy).unwrap();
    p += settings;
    std::fs::write(&fx.policy, p).unwrap();
}

/// Runs gsdr, killing it (and failing) if it has not ended within `limit`:
/// the behaviour under test is that it ends.
fn gsdr_bounded(fx: &Fixture, args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = std::process::Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&fx.policy)
        .args(args)
        .env("GSDR_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "gsdr {args:?} still running after {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An order-sensitive digest of table `t`.
fn contents(c: &PgCluster) -> String {
    c.psql("SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM t")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn backups(fx: &Fixture) -> usize {
    fx.gsdr_json(&["list", "--source", "pg"])["backups"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn pg_base_backup_refused_when_archive_mode_is_off() {
    let (fx, mut a) = setup();
    a.append_conf("archive_mode = off");
    a.start();
    a.psql("CREATE TABLE t (id int)");
    let out = fx.gsdr(&["backup", "--source", "pg"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refusing a base backup of 127.0.0.1:")
            && err.contains("archive_mode is off")
            && err.contains("could never be restored")
            && err.contains("wal-push --source pg %p"),
        "{err}"
    );
    assert_eq!(backups(&fx), 0, "nothing committed");
    // `policy check --connect` says the same before any backup is tried.
    let out = fx.gsdr(&["--json", "policy", "check", "--connect"]);
    assert_ne!(out.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pg = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["what"] == "source pg")
        .unwrap()
        .clone();
    assert_eq!(pg["ok"], false, "{report}");
    assert!(
        pg["error"]
            .as_str()
            .unwrap()
            .contains("archive_mode is off"),
        "{pg}"
    );
}

/// Archiving fails (`archive_command = 'false'`) on a cluster that had no
/// failure yet: the backup streams, PostgreSQL then waits for its WAL, and
/// gsdr aborts it after `archive_wait` naming the segments and the
/// archiver's state. With failures recorded, the next backup is refused
/// before it starts.
#[test]
fn pg_base_backup_fails_within_archive_wait_when_archiving_fails_then_is_refused() {
    let (fx, mut a) = setup();
    add_pg_settings(&fx, "archive_wait = \"3s\"\n");
    a.append_conf("archive_command = 'false'");
    a.start();
    a.psql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)");
    assert_eq!(a.archiver_counts().1, 0, "no failure before the backup");

    let (out, took) = gsdr_bounded(&fx, &["backup", "--source", "pg"], Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("did not archive the WAL this base backup needs within archive_wait (3s)")
            && err.contains("it needs every segment from 00000001")
            && err.contains("pg_stat_archiver: failing, the last failure on 00000001")
            && err.contains("not committed"),
        "{err}"
    );
    // Well within the bound (3 s + polling), where PostgreSQL alone waits forever.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(backups(&fx), 0, "the aborted backup is not listed");
    // Nothing of it is left visible in the store.
    let base = fx.dir.path().join("store/pg/base");
    let manifests = walk(&base)
        .into_iter()
        .filter(|p| p.ends_with("manifest.json"))
        .count();
    assert_eq!(manifests, 0);

    // The archiver has failed since its last success: refused at once.
    let (_, failed) = a.archiver_counts();
    assert!(failed > 0);
    let failed_wal = a.psql("SELECT last_failed_wal FROM pg_stat_archiver");
    let (out, _) = gsdr_bounded(&fx, &["backup", "--source", "pg"], WAIT);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("WAL archiving is failing")
            && err.contains(&format!("the last failure on {failed_wal} at "))
            && err.contains("Fix archive_command"),
        "{err}"
    );
    assert_eq!(backups(&fx), 0);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// An incident that restores the newest base backup of `pg` and its WAL.
const PG_LOSS: &str = r#"
name = "pg-loss"
title = "The PostgreSQL node is lost"
description = "Restore the newest base backup and the archived WAL."

[[steps]]
name = "restore-pg"
kind = "restore_postgres_pitr"
source = "pg"
"#;

/// The first value of `key` anywhere in `v`.
fn find<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => {
            m.get(key).or_else(|| m.values().find_map(|x| find(x, key)))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

/// Starts a restored data directory whose recovery is expected to stop with
/// an error: waits until the server has exited, and returns its log.
fn start_expecting_recovery_to_stop(dir: &Path) -> String {
    let c = PgCluster::existing(dir);
    let sock = dir.parent().unwrap();
    let mut cmd = as_pg_user(&pg_program("pg_ctl"));
    cmd.arg("-D")
        .arg(dir)
        .arg("-l")
        .arg(&c.log)
        .args(["-w", "-t", "120", "-o"])
        .arg(format!("-p {} -k {}", c.port, sock.display()))
        .arg("start");
    // pg_ctl may or may not see the server up before recovery fails.
    let _ = cmd.output().unwrap();
    let _stop_if_still_up = PgCluster::adopt_running(dir, c.port);
    let t0 = Instant::now();
    while dir.join("postmaster.pid").exists() {
        assert!(
            t0.elapsed() < WAIT,
            "the restored server is still running: recovery did not stop\n--- server log ---\n{}",
            std::fs::read_to_string(&c.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::read_to_string(&c.log).unwrap()
}

/// Segment N is deleted from the store after N+1 was archived: `status`
/// and the safe point stop at N-1 (the end of the contiguous chain, not the
/// newest object), `wal-fetch N` exits above 125 both for a sidecar without
/// its data and for the hole, and a restore to latest stops recovery with
/// that error instead of promoting at N-1. With N put back, the same
/// restore reaches every row.
#[test]
fn pg_wal_hole_stops_recovery_and_status_reports_the_chain_end() {
    let (fx, mut a) = setup();
    add_pg_settings(&fx, "in_flight_grace = \"1s\"\n");
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    let base = fx.gsdr_json(&["list", "--source", "pg"])["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut segs = Vec::new();
    for (i, tag) in ["a", "b", "c"].iter().enumerate() {
        // Apart in time, so that the plan's implied RPO tells the segments apart.
        std::thread::sleep(Duration::from_millis(1100));
        a.psql(&format!(
            "INSERT INTO t SELECT g, '{tag}' FROM generate_series({}, {}) g",
            101 + i * 100,
            200 + i * 100
        ));
        segs.push(a.switch_and_wait_archived(WAIT));
    }
    let want = contents(&a);
    a.stop();
    let (seg_a, seg_b, seg_c) = (&segs[0], &segs[1], &segs[2]);
    let tl = fx.dir.path().join("store/pg/wal/00000001");
    let (data_b, side_b) = (
        tl.join(format!("{seg_b}.zst.age")),
        tl.join(format!("{seg_b}.json")),
    );
    let aside = fx.dir.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    let dest = aside.join("RECOVERYXLOG");
    let fetch =
        |name: &str| fx.gsdr(&["wal-fetch", "--source", "pg", name, dest.to_str().unwrap()]);

    // A sidecar without its data object stops recovery.
    std::fs::rename(&data_b, aside.join("b.zst.age")).unwrap();
    let out = fetch(seg_b);
    assert!(out.status.code().unwrap() > 125, "{:?}", out.status);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("WAL segment `{seg_b}`"))
            && err.contains("only its sidecar is stored")
            && err.contains("Recovery stops here"),
        "{err}"
    );

    // The hole: nothing of N, N+1 stored.
    std::fs::rename(&side_b, aside.join("b.json")).unwrap();
    let out = fetch(seg_b);
    assert!(out.status.code().unwrap() > 125, "{:?}", out.status);
    let err = stderr(&out);
    assert!(
        err.contains(
            "missing from the archive while 1 later segment(s) of its timeline are stored"
        ) && err.contains(&format!("the next: `{seg_c}`"))
            && err.contains("--target-lsn below"),
        "{err}"
    );
    // After it, and past the end, the archive still answers as before.
    ok(&fetch(seg_c), "wal-fetch of the segment after the hole");
    let past = format!(
        "{}{:08X}",
        &seg_c[..16],
        u32::from_str_radix(&seg_c[16..], 16).unwrap() + 1
    );
    assert_eq!(
        fetch(&past).status.code(),
        Some(1),
        "the end of the archive"
    );

    // Status and the safe point: the end of the contiguous chain from the base backup.
    let s = fx.gsdr_json(&["status", "--source", "pg"]);
    assert_eq!(s["last_segment"], seg_a.as_str(), "{s}");
    assert_eq!(s["hole_at"], seg_b.as_str(), "{s}");
    assert_eq!(s["newest_segment"], seg_c.as_str(), "{s}");
    assert_eq!(s["chain_base_backup"], base.as_str(), "{s}");
    let chain_end: chrono::DateTime<chrono::Utc> =
        s["last_archived_at"].as_str().unwrap().parse().unwrap();
    let text = String::from_utf8_lossy(&fx.gsdr(&["status", "--source", "pg"]).stdout).into_owned();
    assert!(
        text.contains(&format!("restorable up to WAL {seg_a}"))
            && text.contains(&format!("WARNING: {seg_b} is missing")),
        "{text}"
    );
    let store: std::sync::Arc<dyn gsdr::storage::Store> =
        std::sync::Arc::new(gsdr::storage::fs::FsStore::new(fx.dir.path().join("store")).unwrap());
    let safety = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(gsdr::replicate::safety(
            &store,
            None,
            "pg",
            &Default::default(),
        ))
        .unwrap();
    assert_eq!(safety.safe_point, Some(chain_end), "{safety:?}");
    let newest = std::fs::metadata(tl.join(format!("{seg_c}.zst.age")))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        chrono::DateTime::<chrono::Utc>::from(newest) > chain_end,
        "the newest object is later than the safe point"
    );
    let v = fx.gsdr(&["--json", "wal-verify", "--source", "pg"]);
    assert_eq!(v.status.code(), Some(1));
    // An incident plan implies the RPO of the chain's end, not of the newest object.
    let rb = fx.dir.path().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(rb.join("pg-loss.toml"), PG_LOSS).unwrap();
    let into = format!("pg={}", scratch(&fx, "planned").display());
    let before = chrono::Utc::now();
    let plan = fx.gsdr_json(&[
        "restore",
        "--scenario",
        "pg-loss",
        "--runbooks",
        rb.to_str().unwrap(),
        "--plan",
        "--into",
        &into,
    ]);
    let after = chrono::Utc::now();
    let implied = find(&plan, "implied_rpo_secs")
        .and_then(|v| v.as_f64())
        .unwrap_or_else(|| panic!("no implied RPO: {plan}"));
    let secs = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (a - b).num_milliseconds() as f64 / 1000.0
    };
    assert!(
        implied >= secs(before, chain_end) - 0.01 && implied <= secs(after, chain_end) + 0.01,
        "implied RPO {implied} s, chain end {chain_end}, plan between {before} and {after}: {plan}"
    );

    // A restore to latest: recovery stops with the error, it never promotes at N-1.
    let d1 = scratch(&fx, "restore-hole");
    restore(&fx, &d1, &["--latest"]);
    let log = start_expecting_recovery_to_stop(&d1);
    assert!(
        log.contains(&format!("wal-fetch {seg_b}")) && log.contains("a hole"),
        "{log}"
    );
    assert!(
        !log.contains("selected new timeline ID"),
        "the server promoted: {log}"
    );

    // The segment put back: the same restore reaches every row.
    std::fs::rename(aside.join("b.zst.age"), &data_b).unwrap();
    std::fs::rename(aside.join("b.json"), &side_b).unwrap();
    let s = fx.gsdr_json(&["status", "--source", "pg"]);
    assert_eq!(s["last_segment"], seg_c.as_str(), "{s}");
    assert!(s["hole_at"].is_null(), "{s}");
    let d2 = scratch(&fx, "restore-whole");
    restore(&fx, &d2, &["--latest"]);
    let c = start_restored(&d2);
    assert_eq!(contents(&c), want);
}
