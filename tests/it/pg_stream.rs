//! PostgreSQL `capture = "stream"`: `gsdr capture` receives WAL with
//! pg_receivewal and a physical slot, stores the current segment's partial
//! every `stream_flush`, and restores (latest and point in time) replay
//! into that partial — on throwaway PostgreSQL 15 clusters.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::cli::Fixture;
use crate::postgres::{ok, restore, scratch, setup, start_restored, WAIT};
use crate::support::gsdr_bin;
use crate::support::postgres::PgCluster;

/// The streaming settings appended to the fixture's `[sources.pg.postgres]`
/// (the policy's last table), and the server's slot cap.
fn stream_setup() -> (Fixture, PgCluster) {
    let (fx, a) = setup();
    let mut text = std::fs::read_to_string(&fx.policy).unwrap();
    text += &format!(
        "capture = \"stream\"\nstream_flush = \"2s\"\nslot_max_retained = \"1GiB\"\nspool_dir = \"{}\"\n",
        fx.dir.path().join("spool").display()
    );
    std::fs::write(&fx.policy, text).unwrap();
    a.append_conf("max_slot_wal_keep_size = '1GB'\n");
    (fx, a)
}

/// `gsdr capture --source pg` in the background, its log in `capture-N.log`.
pub(crate) fn start_capture(fx: &Fixture, n: u32) -> Child {
    let log = std::fs::File::create(fx.dir.path().join(format!("capture-{n}.log"))).unwrap();
    Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&fx.policy)
        .args(["capture", "--source", "pg"])
        .env("GSDR_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub(crate) fn capture_log(fx: &Fixture, n: u32) -> String {
    std::fs::read_to_string(fx.dir.path().join(format!("capture-{n}.log"))).unwrap_or_default()
}

/// Stops the capture with SIGTERM and asserts it ended cleanly.
pub(crate) fn stop_capture(fx: &Fixture, mut c: Child, n: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = c.wait().unwrap();
    assert!(
        st.success(),
        "gsdr capture did not stop cleanly ({st}): {}",
        capture_log(fx, n)
    );
}

/// The pg_receivewal a SIGKILLed capture leaves running (its pid file).
fn kill_leftover_receiver(fx: &Fixture) {
    if let Ok(pid) = std::fs::read_to_string(fx.dir.path().join("spool/.gsdr-receiver.pid")) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// When `gsdr status` says the newest stored WAL (segment or streamed
/// partial) was stored, and the partial it names.
fn stored_until(fx: &Fixture) -> (Option<DateTime<Utc>>, Option<String>) {
    let s = fx.gsdr_json(&["status", "--source", "pg"]);
    (
        s["last_archived_at"].as_str().map(|t| t.parse().unwrap()),
        s["streamed_partial"].as_str().map(str::to_string),
    )
}

/// Waits until the archive holds WAL stored after `t` (a commit's time)
/// that reaches the server's current segment (its streamed partial);
/// returns how long that took and the partial `gsdr status` names.
pub(crate) fn wait_stored_after(
    fx: &Fixture,
    a: &PgCluster,
    t: DateTime<Utc>,
    n: u32,
) -> (Duration, Option<String>) {
    let t0 = Instant::now();
    let current = a.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    loop {
        let (at, partial) = stored_until(fx);
        if at.is_some_and(|at| at > t) && partial.as_deref() == Some(current.as_str()) {
            return (t0.elapsed(), partial);
        }
        assert!(
            t0.elapsed() < WAIT,
            "nothing reaching {current} was stored after {t} within {WAIT:?}: {}",
            capture_log(fx, n)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn count(c: &PgCluster) -> i64 {
    c.psql("SELECT count(*) FROM t").parse().unwrap()
}

fn partial_objects(fx: &Fixture) -> Vec<String> {
    let dir = fx.dir.path().join("store/pg/wal/00000001");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".stream.zst.age"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn restore_count(fx: &Fixture, dir: &Path, extra: &[&str]) -> i64 {
    restore(fx, dir, extra);
    let c = start_restored(dir);
    count(&c)
}

#[test]
fn pg_stream_stores_the_partial_segment_and_restores_to_latest_from_it() {
    let (fx, mut a) = stream_setup();
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    let cap = start_capture(&fx, 1);
    a.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g");
    let committed = Utc::now();
    let (took, partial) = wait_stored_after(&fx, &a, committed, 1);
    eprintln!(
        "figure: commit to stored partial: {:.1}s (stream_flush 2s)",
        took.as_secs_f64()
    );
    let partial = partial.expect("gsdr status names the streamed partial");
    // The commit's segment is not complete (no switch, no archive_timeout):
    // only its streamed partial holds it.
    let seg = a.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    assert_eq!(partial, seg, "the partial is the server's current segment");
    assert!(
        !fx.dir
            .path()
            .join(format!("store/pg/wal/00000001/{seg}.zst.age"))
            .exists(),
        "{seg} was archived complete: the test would not exercise the partial"
    );
    assert_eq!(partial_objects(&fx), [format!("{seg}.stream.zst.age")]);
    stop_capture(&fx, cap, 1);
    let log = capture_log(&fx, 1);
    assert!(log.contains("capture_slot_created"), "{log}");

    let d = scratch(&fx, "restore-latest");
    assert_eq!(restore_count(&fx, &d, &["--latest"]), 500);
}

#[test]
fn pg_stream_killed_capture_loses_no_wal_thanks_to_the_slot() {
    let (fx, mut a) = stream_setup();
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    // From here on only the stream archives: PostgreSQL's archiver drops
    // every segment, so only the slot keeps what gsdr has not stored.
    a.psql("ALTER SYSTEM SET archive_command = '/bin/true'");
    a.psql("SELECT pg_reload_conf()");
    let mut cap = start_capture(&fx, 1);
    a.psql("INSERT INTO t SELECT g, 'one' FROM generate_series(1, 1000) g");
    let t = Utc::now();
    wait_stored_after(&fx, &a, t, 1);
    cap.kill().unwrap(); // SIGKILL: no last flush
    cap.wait().unwrap();
    kill_leftover_receiver(&fx);
    // Written while gsdr is down, across several segments.
    a.psql("INSERT INTO t SELECT g, 'two' FROM generate_series(1001, 2000) g");
    for _ in 0..3 {
        a.psql("SELECT pg_switch_wal()");
        a.psql("INSERT INTO t SELECT max(id) + 1, 'gap' FROM t");
    }
    a.psql("CHECKPOINT");
    let retained: i64 = a
        .psql("SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'gsdr_pg'")
        .parse()
        .unwrap();
    assert!(retained > 0, "the slot holds the WAL gsdr has not stored");
    let cap = start_capture(&fx, 2);
    a.psql("INSERT INTO t SELECT g, 'three' FROM generate_series(3001, 3500) g");
    let t = Utc::now();
    let want = count(&a);
    wait_stored_after(&fx, &a, t, 2);
    stop_capture(&fx, cap, 2);
    let d = scratch(&fx, "restore-latest");
    assert_eq!(
        restore_count(&fx, &d, &["--latest"]),
        want,
        "rows committed while gsdr was down are lost: {}\n--- first run ---\n{}\n--- store ---\n{:?}",
        capture_log(&fx, 2),
        capture_log(&fx, 1),
        std::fs::read_dir(fx.dir.path().join("store/pg/wal/00000001"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect::<Vec<_>>()
    );
    // The stored segments advanced the slot.
    let after: i64 = a
        .psql("SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'gsdr_pg'")
        .parse()
        .unwrap();
    assert!(
        after < retained,
        "slot retained {after} bytes after the catch-up, {retained} before"
    );
}

#[test]
fn pg_stream_restores_to_random_times_match_the_counts_taken_then() {
    let (fx, mut a) = stream_setup();
    a.start();
    a.psql("CREATE TABLE t (id serial PRIMARY KEY, v text)");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    let cap = start_capture(&fx, 1);
    // Rounds of writes; between rounds, a point in time and the count then.
    let mut points: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for round in 0..8 {
        let rows = 50 + (rand::random::<u32>() % 200);
        a.psql(&format!(
            "INSERT INTO t (v) SELECT 'r{round}' FROM generate_series(1, {rows})"
        ));
        if round == 3 {
            a.psql("SELECT pg_switch_wal()");
        }
        std::thread::sleep(Duration::from_millis(600));
        points.push((Utc::now(), count(&a)));
        std::thread::sleep(Duration::from_millis(600));
    }
    let last = points.last().unwrap().0;
    wait_stored_after(&fx, &a, last, 1);
    stop_capture(&fx, cap, 1);
    let mut picks: Vec<usize> = (0..points.len()).collect();
    picks.sort_by_key(|_| rand::random::<u32>());
    picks.truncate(5);
    for (i, p) in picks.into_iter().enumerate() {
        let (t, want) = points[p];
        let tt = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let d = scratch(&fx, &format!("restore-{i}"));
        assert_eq!(
            restore_count(&fx, &d, &["--target-time", &tt]),
            want,
            "restore to {tt} (point {p}) differs from the count taken then"
        );
    }
}

/// `gsdr policy check --connect` asks a streamed source's server what the
/// capture needs: with `max_slot_wal_keep_size` within `slot_max_retained`
/// it passes; unlimited (-1), it fails naming the `ALTER SYSTEM` to run —
/// before any daemon starts, and without creating the slot.
#[test]
fn pg_stream_policy_check_connect_checks_the_slot_cap() {
    let (fx, mut a) = stream_setup();
    a.start();
    ok(
        &fx.gsdr(&["policy", "check", "--connect"]),
        "policy check --connect with the cap set",
    );
    a.psql("ALTER SYSTEM SET max_slot_wal_keep_size = -1");
    a.psql("SELECT pg_reload_conf()");
    let out = fx.gsdr(&["policy", "check", "--connect"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("max_slot_wal_keep_size is -1") && said.contains("ALTER SYSTEM SET"),
        "{said}"
    );
    assert_eq!(
        a.psql("SELECT count(*) FROM pg_replication_slots"),
        "0",
        "a check creates no slot"
    );
}
