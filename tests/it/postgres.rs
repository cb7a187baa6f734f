//! PostgreSQL: WAL archiving with the real `gsdr` binary as `archive_command`,
//! base backups, point-in-time restore, refusals, an archive outage and a
//! timeline switch — all on throwaway PostgreSQL 15 clusters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::Fixture;
use crate::support::gsdr_bin;
use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};

pub(crate) const WAIT: Duration = Duration::from_secs(90);

/// A policy with a folder target and a postgres source `pg` for `cluster`, and
/// `cluster` configured to archive with `gsdr wal-push`.
pub(crate) fn setup() -> (Fixture, PgCluster) {
    setup_with(FS_TARGET, "")
}

/// A folder target `local` in the fixture's folder.
pub(crate) const FS_TARGET: &str = "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n";

/// [`setup`] with another `local` target (`{dir}` is the fixture's folder,
/// which the server's user can read) and `defaults` added to the policy's
/// `[defaults]` table.
pub(crate) fn setup_with(target: &str, defaults: &str) -> (Fixture, PgCluster) {
    let cluster = PgCluster::init("");
    let fx = Fixture::new(&format!(
        "{target}[defaults]\ntarget = \"local\"\n{defaults}\
         [sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
         pg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\nprefetch = 4\n",
        cluster.port,
        pg_gsdr_bin().display()
    ));
    std::fs::create_dir_all(fx.dir.path().join("store/pg/wal")).unwrap();
    give_to_pg_user(fx.dir.path());
    // The archive_command PostgreSQL runs (as its own user) for every segment.
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --policy {} -q wal-push --source pg %p'\n",
        pg_gsdr_bin().display(),
        fx.policy.display()
    ));
    (fx, cluster)
}

pub(crate) fn ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An order-sensitive digest of everything the tests write.
fn contents(c: &PgCluster) -> String {
    c.psql(
        "SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(id || '=' || v, ',' ORDER BY id)), '') FROM t) \
         || '|' || (SELECT coalesce(sum(abalance), 0) || ':' || count(*) FROM pgbench_accounts) \
         || '|' || (SELECT count(*) FROM pgbench_history)",
    )
}

pub(crate) fn restore(fx: &Fixture, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let d = dir.display().to_string();
    let mut args = vec!["restore", "--source", "pg", "--to-dir", d.as_str()];
    args.extend_from_slice(extra);
    fx.gsdr_json(&args)
}

pub(crate) fn start_restored(dir: &Path) -> PgCluster {
    let mut c = PgCluster::existing(dir);
    c.start();
    c.wait_promoted(WAIT);
    c
}

pub(crate) fn scratch(fx: &Fixture, name: &str) -> PathBuf {
    fx.dir.path().join(name)
}

#[test]
fn pg_archive_base_backup_and_point_in_time_restore() {
    let (fx, mut a) = setup();
    a.start();
    a.pgbench(&["-i", "-s", "2", "-q"]);
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.pgbench(&["-T", "3", "-c", "2"]);
    let out = fx.gsdr(&["backup", "--source", "pg"]);
    ok(&out, "gsdr backup");
    let list = fx.gsdr_json(&["list", "--source", "pg"]);
    let m = &list["backups"][0];
    assert_eq!(m["kind"], "base");
    let details = &m["consistency"]["details"];
    assert_eq!(details["timeline"], 1);
    assert_eq!(
        details["system_identifier"].as_str().unwrap(),
        a.psql("SELECT system_identifier FROM pg_control_system()")
    );
    assert_eq!(details["first_segment"].as_str().unwrap().len(), 24);

    // Writes after the base backup, then T, then more writes.
    a.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    a.pgbench(&["-T", "2", "-c", "2"]);
    std::thread::sleep(Duration::from_millis(1200));
    let at_t = contents(&a);
    let t = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1200));
    a.psql("INSERT INTO t SELECT g, 'late' FROM generate_series(1001, 1500) g");
    a.psql("UPDATE t SET v = 'changed' WHERE id <= 10");
    a.pgbench(&["-T", "2", "-c", "2"]);
    let latest = contents(&a);
    assert_ne!(at_t, latest);
    a.switch_and_wait_archived(WAIT);

    // Point in time.
    let d1 = scratch(&fx, "restore-t");
    let tt = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let r = restore(&fx, &d1, &["--target-time", &tt]);
    assert_eq!(r["details"]["base_backup"], m["id"]);
    let c1 = start_restored(&d1);
    assert_eq!(
        contents(&c1),
        at_t,
        "restore to {tt} differs from the data at T"
    );
    drop(c1);

    // Latest.
    let d2 = scratch(&fx, "restore-latest");
    restore(&fx, &d2, &["--latest"]);
    let c2 = start_restored(&d2);
    assert_eq!(contents(&c2), latest);
    drop(c2);

    // A non-empty directory is refused without --replace.
    let out = fx.gsdr(&[
        "restore",
        "--source",
        "pg",
        "--to-dir",
        d2.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // The archive has no gaps, and status names the newest segment.
    let v = fx.gsdr_json(&["wal-verify", "--source", "pg"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["base_backups"][0]["restorable"], true);
    let s = fx.gsdr_json(&["status", "--source", "pg"]);
    assert!(s["last_segment"].as_str().unwrap().starts_with("00000001"));
}

#[test]
fn pg_same_segment_twice_and_other_cluster_are_handled() {
    let (fx, mut a) = setup();
    a.start();
    a.psql("CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'x' FROM generate_series(1, 5000) g");
    let seg = a.switch_and_wait_archived(WAIT);
    let copy_dir = fx.dir.path().join("copies");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join(&seg);
    std::fs::copy(a.data.join("pg_wal").join(&seg), &copy).unwrap_or_else(|_| {
        // Recycled already: fetch it back from the archive instead.
        let out = fx.gsdr(&["wal-fetch", "--source", "pg", &seg, copy.to_str().unwrap()]);
        ok(&out, "wal-fetch");
        0
    });
    let sidecar = fx
        .dir
        .path()
        .join(format!("store/pg/wal/00000001/{seg}.json"));
    let before = std::fs::read(&sidecar).unwrap();

    // Same content: success, nothing rewritten.
    let out = fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]);
    ok(&out, "second push of the same segment");

    // Altered content: refused with exit 1, archive unchanged.
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[100_000] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    let out = fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REFUSED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&sidecar).unwrap(), before);

    // Fetch: an absent segment and an absent history file exit 1.
    let dest = copy_dir.join("RECOVERYXLOG");
    for name in ["0000000100000000000000FE", "00000009.history"] {
        let out = fx.gsdr(&["wal-fetch", "--source", "pg", name, dest.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "wal-fetch {name}");
    }
    // The archived one comes back bit for bit.
    let out = fx.gsdr(&["wal-fetch", "--source", "pg", &seg, dest.to_str().unwrap()]);
    ok(&out, "wal-fetch");
    bytes[100_000] ^= 0xff;
    assert!(std::fs::read(&dest).unwrap() == bytes);
    // A corrupted object stops recovery (exit above 125), it does not end it.
    let obj = fx
        .dir
        .path()
        .join(format!("store/pg/wal/00000001/{seg}.zst.age"));
    let mut stored = std::fs::read(&obj).unwrap();
    let mid = stored.len() / 2;
    stored[mid] ^= 1;
    std::fs::write(&obj, &stored).unwrap();
    let out = fx.gsdr(&["wal-fetch", "--source", "pg", &seg, dest.to_str().unwrap()]);
    assert!(out.status.code().unwrap() > 125, "{:?}", out.status);

    // Another cluster's segment into this prefix: refused.
    let mut b = PgCluster::init("");
    b.start();
    let bseg = b.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    b.stop();
    let out = fx.gsdr(&[
        "wal-push",
        "--source",
        "pg",
        b.data.join("pg_wal").join(&bseg).to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to the cluster"));
}

#[test]
fn pg_archive_outage_fails_then_catches_up() {
    let (fx, a) = setup();
    // Target down: the timeline folder becomes unwritable for the server's user.
    let tl = fx.dir.path().join("store/pg/wal/00000001");
    let chmod = |mode: &str| {
        assert!(std::process::Command::new("chmod")
            .args([mode, tl.to_str().unwrap()])
            .status()
            .unwrap()
            .success())
    };
    archive_outage(&fx, a, || chmod("0555"), || chmod("0755"));
}

/// The same outage on S3 (moto), the production path: the network to the
/// server is cut by a relay while moto keeps its objects, then healed.
#[test]
fn pg_archive_to_s3_outage_fails_then_catches_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = rt.block_on(crate::support::moto::Moto::start_own(&[]));
    let proxy = rt.block_on(crate::support::moto::CutProxy::start(moto.port()));
    let (fx, a) = setup_with(&format!(
        "[targets.local]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"gs\"\n\
         access_key_id = {{ file = \"{{dir}}/s3-key\" }}\nsecret_access_key = {{ file = \"{{dir}}/s3-key\" }}\n",
        proxy.endpoint(),
        moto.bucket
    ), "");
    std::fs::write(fx.dir.path().join("s3-key"), "gsdr-test-key\n").unwrap();
    give_to_pg_user(fx.dir.path());
    archive_outage(&fx, a, || proxy.cut(), || rt.block_on(proxy.heal()));
}

/// Archiving with the target `down()`: `wal-push` fails, the failures are
/// counted, no segment is lost; `up()` again: archiving catches up and a
/// restore to latest has every committed row.
fn archive_outage(fx: &Fixture, mut a: PgCluster, down: impl Fn(), up: impl Fn()) {
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.pgbench(&["-i", "-s", "1", "-q"]);
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.switch_and_wait_archived(WAIT);
    let (_, failed0) = a.archiver_counts();

    down();
    let mut last = String::new();
    for i in 0..3 {
        a.psql(&format!(
            "INSERT INTO t SELECT g, 'outage' FROM generate_series({}, {}) g",
            i * 100 + 1,
            i * 100 + 100
        ));
        last = a.psql("SELECT pg_walfile_name(pg_switch_wal())");
    }
    let start = std::time::Instant::now();
    while a.archiver_counts().1 <= failed0 {
        assert!(start.elapsed() < WAIT, "failed_count never rose");
        std::thread::sleep(Duration::from_millis(200));
    }
    let archived = a.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
    assert!(
        archived.as_str() < last.as_str(),
        "archived {archived} during the outage"
    );
    assert!(a.data.join("pg_wal").join(&last).exists(), "segment lost");

    // Target back: archiving catches up; a restore to latest has every committed row.
    up();
    a.wait_archived(&last, WAIT);
    a.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(301, 400) g");
    let want = contents(&a);
    a.switch_and_wait_archived(WAIT);
    let d = scratch(fx, "restore");
    restore(fx, &d, &["--latest"]);
    let c = start_restored(&d);
    assert_eq!(contents(&c), want);
    assert_eq!(c.psql("SELECT count(*) FROM t"), "400");
}

#[test]
fn pg_timeline_switch_restore_follows_the_new_timeline() {
    let (fx, mut a) = setup();
    a.start();
    a.pgbench(&["-i", "-s", "1", "-q"]);
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.psql("INSERT INTO t SELECT g, 'tl1' FROM generate_series(1, 100) g");
    a.switch_and_wait_archived(WAIT);
    a.stop();

    // B: restored from A to replace it (--keep-archiving), promoted onto
    // timeline 2, keeps archiving into the same source.
    let db = scratch(&fx, "b");
    let r = restore(&fx, &db, &["--latest", "--keep-archiving"]);
    assert_eq!(r["details"]["archiving"], "kept", "{r}");
    let b = start_restored(&db);
    assert_eq!(
        b.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    b.psql("INSERT INTO t SELECT g, 'tl2' FROM generate_series(101, 200) g");
    let want = contents(&b);
    b.switch_and_wait_archived(WAIT);
    drop(b);
    assert!(fx
        .dir
        .path()
        .join("store/pg/wal/00000002/00000002.history.zst.age")
        .exists());

    // C: from A's base backup (timeline 1), recovery follows the history to timeline 2.
    let dc = scratch(&fx, "c");
    restore(&fx, &dc, &["--latest"]);
    let c = start_restored(&dc);
    assert_eq!(contents(&c), want);
    assert_eq!(c.psql("SELECT count(*) FROM t WHERE v = 'tl2'"), "100");
    let v = fx.gsdr_json(&["wal-verify", "--source", "pg"]);
    let tls: Vec<&str> = v["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_str().unwrap())
        .collect();
    assert!(
        tls.contains(&"00000001") && tls.contains(&"00000002"),
        "{v}"
    );
}

pub(crate) const PG_LOSS: &str = r#"
name = "pg-loss"
title = "The PostgreSQL node is lost"
description = "Restore the newest base backup and the archived WAL into the new data directory."

[[steps]]
name = "restore-pg"
kind = "restore_postgres_pitr"
source = "pg"

[[steps]]
name = "check-rows"
kind = "sql"
source = "pg"
query = "SELECT count(*) FROM t"
min = 500
after = ["restore-pg"]

[[steps]]
name = "canary-pg"
kind = "canary_age"
source = "pg"
after = ["restore-pg"]
"#;

/// An incident on PostgreSQL (`restore --scenario`): the node is lost, its
/// data directory restored into a new one at the real endpoint. Without
/// `--start-postgres` the directory is prepared and the checks, which
/// connect to the source's own host and port, fail with what to do; once the
/// operator starts it, `--resume` runs only the checks. With
/// `--start-postgres` gsdr starts it on the source's port itself.
#[test]
fn pg_incident_restores_the_endpoint_checks_it_and_resumes() {
    let (fx, mut a) = setup();
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 500) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(501, 600) g");
    ok(&fx.gsdr(&["canary", "--source", "pg"]), "gsdr canary");
    a.switch_and_wait_archived(WAIT);
    let port = a.port;
    a.stop(); // the node is lost

    let rb = fx.dir.path().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    std::fs::write(rb.join("pg-loss.toml"), PG_LOSS).unwrap();
    let rb = rb.display().to_string();
    let incident = |dir: &Path, extra: &[&str]| {
        let into = format!("pg={}", dir.display());
        let state = dir.with_extension("state.json").display().to_string();
        let mut args = vec![
            "--json",
            "restore",
            "--scenario",
            "pg-loss",
            "--runbooks",
            &rb,
            "--into",
            &into,
            "--state",
            &state,
            "--yes",
            "--keep-archiving",
        ];
        args.extend_from_slice(extra);
        let out = fx.gsdr(&args);
        let j: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), j)
    };
    let step = |j: &serde_json::Value, name: &str| {
        j["reports"][0]["report"]["steps"]
            .as_array()
            .unwrap_or_else(|| panic!("{j}"))
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no step {name}: {j}"))
    };

    let all_rows_back = |j: &serde_json::Value| {
        let detail = step(j, "check-rows")["detail"].to_string();
        assert!(detail.contains("= 600"), "every committed row: {j}");
    };

    // The plan says what the restore overwrites and what the restored
    // cluster will do with its WAL; without that choice it does not run.
    let d = scratch(&fx, "new-node");
    let into = format!("pg={}", d.display());
    let base = [
        "restore",
        "--scenario",
        "pg-loss",
        "--runbooks",
        &rb,
        "--into",
        &into,
    ];
    let plan = fx.gsdr(&[&base[..], &["--plan"]].concat());
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        text.contains("does not exist: nothing is overwritten")
            && text.contains("archiving after promotion: NOT CHOSEN"),
        "{text}"
    );
    let plan = fx.gsdr(&[&base[..], &["--plan", "--keep-archiving"]].concat());
    assert!(String::from_utf8_lossy(&plan.stdout).contains("archiving after promotion: KEPT"));
    let out = fx.gsdr(&[&base[..], &["--yes"]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--keep-archiving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!d.exists(), "nothing restored without the choice");

    // Prepared only: the checks cannot connect and say what to do.
    let (code, j) = incident(&d, &[]);
    assert_eq!(code, Some(1), "{j}");
    assert_eq!(step(&j, "restore-pg")["status"], "ok", "{j}");
    let check = step(&j, "check-rows");
    assert_eq!(check["status"], "failed", "{j}");
    assert!(
        check.to_string().contains("--start-postgres") && check.to_string().contains("--resume"),
        "{check}"
    );
    // The operator starts it on the endpoint's port; --resume runs the checks only.
    let mut restored = PgCluster::existing(&d);
    restored.port = port;
    restored.start();
    restored.wait_promoted(WAIT);
    let (code, j) = incident(&d, &["--resume"]);
    assert_eq!(code, Some(0), "{j}");
    all_rows_back(&j);
    assert_eq!(step(&j, "canary-pg")["status"], "ok", "{j}");
    restored.stop();

    // --start-postgres: gsdr starts the restored directory on the source's port.
    let d2 = scratch(&fx, "new-node-2");
    let (code, j) = incident(&d2, &["--start-postgres"]);
    let _running = PgCluster::adopt_running(&d2, port);
    assert_eq!(code, Some(0), "{j}");
    assert!(
        step(&j, "restore-pg")["into"]
            .as_str()
            .unwrap()
            .contains("started with pg_ctl"),
        "{j}"
    );
    all_rows_back(&j);
}

/// Every object under `store/pg/wal/`, as `<timeline>/<file>`.
fn wal_objects(fx: &Fixture) -> std::collections::BTreeSet<String> {
    let wal = fx.dir.path().join("store/pg/wal");
    let mut out = std::collections::BTreeSet::new();
    for tl in std::fs::read_dir(&wal).unwrap().flatten() {
        if !tl.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(tl.path()).unwrap().flatten() {
            out.insert(format!(
                "{}/{}",
                tl.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            ));
        }
    }
    out
}

#[test]
fn pg_prune_deletes_only_wal_before_the_retained_base_backup() {
    let (fx, mut a) = setup_with(FS_TARGET, "retention = { keep_last = 1 }\n");
    a.start();
    a.pgbench(&["-i", "-s", "1", "-q"]);
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g");
    a.switch_and_wait_archived(WAIT);

    // WAL but no base backup: prune deletes no WAL, and says why.
    let r = fx.gsdr_json(&["prune"]);
    assert_eq!(r["wal"][0]["files"], 0, "{r}");
    assert_eq!(r["wal"][0]["floor"]["rule"], "no_base_backup", "{r}");
    assert!(!wal_objects(&fx).is_empty());

    // Base backup 1, WAL between, base backup 2, WAL after.
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup 1");
    for i in 0..2 {
        a.psql(&format!(
            "INSERT INTO t SELECT g, 'between' FROM generate_series({}, {}) g",
            101 + i * 100,
            200 + i * 100
        ));
        a.switch_and_wait_archived(WAIT);
    }
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup 2");
    a.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(301, 400) g");
    a.switch_and_wait_archived(WAIT);
    let want = contents(&a);

    let mut backups = fx.gsdr_json(&["list", "--source", "pg"])["backups"]
        .as_array()
        .unwrap()
        .clone();
    backups.sort_by_key(|b| b["id"].as_str().unwrap().to_string());
    let [old, new] = &backups[..] else {
        panic!("two base backups expected: {backups:?}")
    };
    let first_of = |b: &serde_json::Value| {
        b["consistency"]["details"]["first_segment"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (old_first, floor) = (first_of(old), first_of(new));
    assert!(old_first < floor);

    // What must go: every WAL object whose position is before the retained backup's first segment.
    let before = wal_objects(&fx);
    let name_of = |o: &str| {
        let f = o.split_once('/').unwrap().1;
        f.strip_suffix(".zst.age")
            .or_else(|| f.strip_suffix(".json"))
            .unwrap_or(f)
            .to_string()
    };
    let doomed: std::collections::BTreeSet<String> = before
        .iter()
        .filter(|o| {
            let n = name_of(o);
            n.len() >= 24 && n[8..24] < floor[8..24]
        })
        .cloned()
        .collect();
    let doomed_names: std::collections::BTreeSet<String> =
        doomed.iter().map(|o| name_of(o)).collect();
    // Before the first backup, and between the two backups (the old backup's own first segment).
    assert!(doomed_names.iter().any(|n| n.as_str() < old_first.as_str()));
    assert!(doomed_names.contains(&old_first), "{doomed_names:?}");
    assert!(doomed.contains(&format!("00000001/{old_first}.json")));

    // Dry run: lists, deletes nothing.
    let dry = fx.gsdr_json(&["prune", "--dry-run"]);
    let w = &dry["wal"][0];
    assert_eq!(w["deleted"], false, "{dry}");
    assert_eq!(w["files"], doomed_names.len(), "{dry}");
    assert_eq!(w["objects"], doomed.len(), "{dry}");
    assert_eq!(w["first"], doomed_names.first().unwrap().as_str());
    assert_eq!(w["last"], doomed_names.last().unwrap().as_str());
    assert_eq!(w["floor"]["segment"], floor.as_str());
    assert_eq!(w["floor"]["backup"], new["id"]);
    assert_eq!(w["oldest_kept"], floor.as_str());
    let text = String::from_utf8_lossy(&fx.gsdr(&["prune", "--dry-run"]).stdout).into_owned();
    assert!(
        text.contains(&format!("WAL: {} files", doomed_names.len())) && text.contains("dry run"),
        "{text}"
    );
    assert_eq!(wal_objects(&fx), before, "a dry run deletes no WAL");
    assert_eq!(
        fx.gsdr_json(&["list", "--source", "pg"])["backups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Prune: the old backup goes, and exactly the WAL before the retained backup's first segment.
    let r = fx.gsdr_json(&["prune"]);
    let deleted: Vec<&str> = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["deleted"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, vec![old["id"].as_str().unwrap()], "{r}");
    assert_eq!(r["wal"][0]["deleted"], true);
    assert_eq!(r["wal"][0]["objects"], doomed.len(), "{r}");
    let after = wal_objects(&fx);
    let gone: std::collections::BTreeSet<String> = before.difference(&after).cloned().collect();
    assert_eq!(gone, doomed);
    assert!(fx.dir.path().join("store/pg/wal/cluster.json").exists());
    // Nothing more to do.
    assert_eq!(fx.gsdr_json(&["prune"])["wal"][0]["files"], 0);

    // The retained backup's WAL range is complete, and it restores to the latest state.
    let v = fx.gsdr_json(&["wal-verify", "--source", "pg"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["base_backups"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["base_backups"][0]["id"], new["id"]);
    assert_eq!(v["base_backups"][0]["restorable"], true);
    assert_eq!(v["timelines"][0]["first"], floor.as_str(), "{v}");
    let d = scratch(&fx, "restore-latest");
    let rr = restore(&fx, &d, &["--latest"]);
    assert_eq!(rr["details"]["base_backup"], new["id"]);
    let c = start_restored(&d);
    assert_eq!(contents(&c), want);
    assert_eq!(c.psql("SELECT count(*) FROM t"), "400");
}

/// Region loss for PostgreSQL: `gsdr replicate` copies the base backup and
/// the archived WAL (as stored, data objects before sidecars) to the
/// off-site target; with the primary target gone, a restore from the
/// off-site copy alone (`--target offsite`, whose `restore_command` fetches
/// WAL from there too) reaches the latest committed row.
#[test]
fn pg_region_loss_restores_from_the_offsite_copy_with_its_wal() {
    let (fx, mut a) = setup_with(
        &format!("{FS_TARGET}[targets.offsite]\nkind = \"fs\"\npath = \"{{dir}}/offsite\"\n"),
        "offsite = \"offsite\"\n",
    );
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.pgbench(&["-i", "-s", "1", "-q"]);
    a.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 300) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.psql("INSERT INTO t SELECT g, 'after' FROM generate_series(301, 400) g");
    let seg = a.switch_and_wait_archived(WAIT);
    // wal-push copied each segment off-site as soon as it stored it.
    for f in [format!("{seg}.zst.age"), format!("{seg}.json")] {
        let p = fx.dir.path().join("offsite/pg/wal/00000001").join(&f);
        assert!(p.exists(), "{f} is not off-site right after wal-push");
    }
    let r = fx.gsdr_json(&["replicate"]);
    let failed = r["sweeps"]["pg"]["wal"][0]["failed"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(failed, 0, "{r}");
    let check = fx.gsdr(&["--json", "replicate", "--check"]);
    ok(&check, "replicate --check");
    // The safe point (RPO metric) counts the WAL replicated after the base backup.
    let base_point: chrono::DateTime<chrono::Utc> = fx.gsdr_json(&["list", "--source", "pg"])
        ["backups"][0]["consistency"]["consistency_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let safety = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let store = |d: &str| -> std::sync::Arc<dyn gsdr::storage::Store> {
            std::sync::Arc::new(gsdr::storage::fs::FsStore::new(fx.dir.path().join(d)).unwrap())
        };
        gsdr::replicate::safety(
            &store("store"),
            Some(&store("offsite")),
            "pg",
            &Default::default(),
        )
        .await
        .unwrap()
    });
    assert!(
        safety.safe_point.unwrap() > base_point,
        "WAL after the base backup extends the safe point: {safety:?}, base backup at {base_point}"
    );
    let v = fx.gsdr(&[
        "--json",
        "wal-verify",
        "--source",
        "pg",
        "--target",
        "offsite",
    ]);
    ok(&v, "wal-verify --target offsite");
    // A new segment is off-site as soon as wal-push stored it: the check
    // finds nothing missing without a sweep.
    a.psql("INSERT INTO t VALUES (401, 'late')");
    let want = contents(&a);
    a.switch_and_wait_archived(WAIT);
    let check = fx.gsdr(&["--json", "replicate", "--check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    a.stop();

    // The primary target is lost.
    let store = fx.dir.path().join("store");
    std::fs::rename(&store, fx.dir.path().join("store-lost")).unwrap();
    std::fs::write(&store, "lost").unwrap();
    give_to_pg_user(fx.dir.path());
    let d = scratch(&fx, "from-offsite");
    let dir = d.display().to_string();
    let rr = fx.gsdr_json(&[
        "restore", "--source", "pg", "--target", "offsite", "--to-dir", &dir, "--latest",
    ]);
    assert_eq!(rr["source"], "pg", "{rr}");
    let conf = std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("--target offsite"), "{conf}");
    let c = start_restored(&d);
    assert_eq!(contents(&c), want, "everything replicated is back");
}

/// The daemon publishes PostgreSQL archiving health although `wal-push`
/// runs in PostgreSQL's archiver, not in the daemon: it reads the end of
/// the contiguous WAL chain of the newest base backup from the store (on start, then every
/// `wal_status_every`) and serves when it was stored and the lag.
#[test]
fn daemon_exports_when_the_newest_wal_was_archived() {
    let port = crate::support::free_port();
    let (fx, mut a) = setup_with(FS_TARGET, "");
    let mut policy = std::fs::read_to_string(&fx.policy).unwrap();
    policy += &format!("[daemon]\nmetrics_addr = \"127.0.0.1:{port}\"\nwal_status_every = \"1s\"\ngrace_period = \"5s\"\n");
    std::fs::write(&fx.policy, policy).unwrap();
    a.start();
    let started = chrono::Utc::now().timestamp() as f64;
    a.psql("CREATE TABLE t (id int)");
    // The gauge is how far a restore reaches: the WAL chain of a base backup.
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.switch_and_wait_archived(WAIT);
    let mut child = std::process::Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&fx.policy)
        .arg("daemon")
        .env("GSDR_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::wait_for_port(port, Duration::from_secs(30), "gsdr daemon", &mut child);
    let value = |body: &str, metric: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(&format!("{metric}{{source=\"pg\"}} ")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let t0 = std::time::Instant::now();
    let body = loop {
        let body = crate::daemon::http::blocking_get(&format!("http://127.0.0.1:{port}/metrics"));
        if value(&body, "gsdr_wal_last_archived_timestamp_seconds").is_some()
            || t0.elapsed() > Duration::from_secs(30)
        {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let at = value(&body, "gsdr_wal_last_archived_timestamp_seconds")
        .unwrap_or_else(|| panic!("no WAL timestamp for pg: {body}"));
    assert!(
        at >= started - 1.0,
        "archived at {at}, test started {started}"
    );
    let lag = value(&body, "gsdr_wal_archive_lag_seconds").expect("a lag");
    assert!((0.0..120.0).contains(&lag), "lag {lag}");
    // A newer segment moves the timestamp on.
    std::thread::sleep(Duration::from_millis(1100));
    a.psql("INSERT INTO t VALUES (1)");
    a.switch_and_wait_archived(WAIT);
    let t0 = std::time::Instant::now();
    loop {
        let body = crate::daemon::http::blocking_get(&format!("http://127.0.0.1:{port}/metrics"));
        let now_at = value(&body, "gsdr_wal_last_archived_timestamp_seconds").unwrap_or(0.0);
        if now_at > at {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the timestamp never moved: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    crate::daemon::stop_daemon(child);
}

/// Every object of the archive with its bytes (`<timeline>/<file>` → content).
fn wal_snapshot(fx: &Fixture) -> std::collections::BTreeMap<String, Vec<u8>> {
    let wal = fx.dir.path().join("store/pg/wal");
    wal_objects(fx)
        .into_iter()
        .map(|o| {
            let b = std::fs::read(wal.join(&o)).unwrap();
            (o, b)
        })
        .collect()
}

/// Issue 19: an operator restores a backup by hand to look at the data and
/// starts the copy; it promotes and switches WAL. It must not archive into
/// production's prefix (it shares production's system identifier, and its
/// timeline 2 would later refuse production's own failover onto timeline 2).
/// Production's WAL prefix is unchanged, and production's next timeline —
/// a standby promoted after the copy — archives.
#[test]
fn pg_hand_restored_copy_never_archives_into_production_and_production_fails_over() {
    let (fx, mut a) = setup();
    a.start();
    a.pgbench(&["-i", "-s", "1", "-q"]);
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'prod' FROM generate_series(1, 100) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.switch_and_wait_archived(WAIT);
    let mut standby = PgCluster::standby_of(&a);

    let before = wal_snapshot(&fx);
    let d = scratch(&fx, "look-at-the-data");
    let r = restore(&fx, &d, &["--latest"]);
    assert_eq!(r["details"]["archiving"], "off", "{r}");
    let conf = std::fs::read_to_string(d.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("archive_mode = 'off'"), "{conf}");
    assert!(
        conf.contains("--allow-branch") && conf.contains("real failover"),
        "the config says how to re-enable archiving: {conf}"
    );
    let mut copy = start_restored(&d);
    assert_eq!(copy.psql("SHOW archive_mode"), "off");
    assert_eq!(
        copy.psql("SELECT timeline_id FROM pg_control_checkpoint()"),
        "2"
    );
    copy.psql("INSERT INTO t SELECT g, 'copy' FROM generate_series(101, 200) g");
    copy.psql("SELECT pg_switch_wal()");
    copy.psql("CHECKPOINT");
    // A fast shutdown gives an archiver its last chance to archive.
    copy.stop();
    let after = wal_snapshot(&fx);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the copy added or removed archive objects"
    );
    assert!(before == after, "the copy changed an archive object");

    // Production fails over: its standby promotes onto timeline 2 and archives.
    standby.start();
    a.psql("INSERT INTO t SELECT g, 'prod' FROM generate_series(201, 300) g");
    let lsn = a.psql("SELECT pg_current_wal_lsn()");
    let start = std::time::Instant::now();
    while standby.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'")) != "t" {
        assert!(start.elapsed() < WAIT, "the standby never caught up");
        std::thread::sleep(Duration::from_millis(100));
    }
    a.stop();
    standby.promote();
    assert_eq!(
        standby.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002"
    );
    standby.psql("INSERT INTO t SELECT g, 'tl2' FROM generate_series(301, 400) g");
    let want = contents(&standby);
    standby.switch_and_wait_archived(WAIT);
    let (_, failed) = standby.archiver_counts();
    assert_eq!(
        failed, 0,
        "production's new timeline archives without a failure"
    );
    let hist = fx
        .dir
        .path()
        .join("store/pg/wal/00000002/00000002.history.json");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&hist).unwrap()).unwrap();
    let local = std::fs::read(standby.data.join("pg_wal/00000002.history")).unwrap();
    assert_eq!(
        sidecar["raw_sha256"].as_str().unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&local)),
        "the archived history of timeline 2 is production's"
    );
    standby.stop();
    // A restore to latest follows production's timeline 2.
    let d2 = scratch(&fx, "after-failover");
    restore(&fx, &d2, &["--latest"]);
    let c = start_restored(&d2);
    assert_eq!(contents(&c), want);
    assert_eq!(c.psql("SELECT count(*) FROM t WHERE v = 'copy'"), "0");
}

/// An S3 target on `endpoint` for [`setup_with`] (credentials in `{dir}/s3-key`).
fn s3_target(endpoint: &str, bucket: &str) -> String {
    format!(
        "[targets.local]\nkind = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nprefix = \"gs\"\n\
         access_key_id = {{ file = \"{{dir}}/s3-key\" }}\nsecret_access_key = {{ file = \"{{dir}}/s3-key\" }}\nmax_attempts = 1\n"
    )
}

/// Runs gsdr with another policy file.
fn gsdr_with(policy: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(gsdr_bin())
        .arg("--policy")
        .arg(policy)
        .args(args)
        .env("GSDR_LOG", "warn")
        .output()
        .unwrap()
}

/// Issue 19: without `s3:ListBucket`, S3 answers 403 for a key that does not
/// exist. `wal-fetch` must say so — naming the permission — and exit above
/// 125, so that recovery stops once instead of ending early or probing
/// forever; `wal-push` fails with the same explanation; `policy check
/// --connect` finds the missing permission. A relay in front of moto answers
/// like S3 for such a user.
#[test]
fn pg_without_list_bucket_wal_commands_name_the_permission_and_recovery_stops() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = rt.block_on(crate::support::moto::Moto::start_own(&[]));
    let denied = rt.block_on(crate::support::moto::DenyMissingProxy::start(
        moto.port(),
        true,
    ));
    let missing_only = rt.block_on(crate::support::moto::DenyMissingProxy::start(
        moto.port(),
        false,
    ));
    let (fx, mut a) = setup_with(&s3_target(&moto.endpoint, &moto.bucket), "");
    std::fs::write(fx.dir.path().join("s3-key"), "gsdr-test-key\n").unwrap();
    give_to_pg_user(fx.dir.path());
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    let archived = a.switch_and_wait_archived(WAIT);
    // The same policy with the restricted user's view of the bucket.
    let policy_text = std::fs::read_to_string(&fx.policy).unwrap();
    let policy_for = |name: &str, endpoint: &str| {
        let p = fx.dir.path().join(name);
        std::fs::write(&p, policy_text.replace(&moto.endpoint, endpoint)).unwrap();
        p
    };
    let no_list = policy_for("no-list.toml", &denied.endpoint());
    let no_list_head_ok = policy_for("no-list-missing-only.toml", &missing_only.endpoint());
    give_to_pg_user(fx.dir.path());

    // policy check --connect: fine with the full user, the permission named without it.
    let out = fx.gsdr(&["policy", "check", "--connect"]);
    ok(&out, "policy check --connect");
    for p in [&no_list, &no_list_head_ok] {
        let out = gsdr_with(p, &["policy", "check", "--connect"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("s3:ListBucket"), "{}: {text}", p.display());
    }

    // wal-fetch of a file that is not archived: the permission, exit > 125.
    let dest = fx.dir.path().join("RECOVERYXLOG");
    let out = gsdr_with(
        &no_list,
        &[
            "wal-fetch",
            "--source",
            "pg",
            "00000009.history",
            dest.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.code().unwrap() > 125, "{:?}: {err}", out.status);
    assert!(
        err.contains("s3:ListBucket") && err.contains("stops recovery"),
        "{err}"
    );
    // An archived one is still fetched.
    let out = gsdr_with(
        &no_list,
        &[
            "wal-fetch",
            "--source",
            "pg",
            &archived,
            dest.to_str().unwrap(),
        ],
    );
    ok(&out, "wal-fetch of an archived segment");
    // wal-push of a segment not archived yet: exit 1 with the permission.
    a.psql("INSERT INTO t VALUES (101, 'new segment')");
    let current = a.psql("SELECT pg_walfile_name(pg_current_wal_insert_lsn())");
    assert!(current.as_str() > archived.as_str());
    let copy = fx.dir.path().join(&current);
    std::fs::copy(a.data.join("pg_wal").join(&current), &copy).unwrap();
    let out = gsdr_with(
        &no_list,
        &["wal-push", "--source", "pg", copy.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("s3:ListBucket"), "{err}");

    // Recovery with that user: the restored server asks for a history file
    // that does not exist, wal-fetch exits 255 once, and the server stops —
    // it neither promotes short of the archive's end nor retries forever.
    let d = scratch(&fx, "restored");
    restore(&fx, &d, &["--latest"]);
    let auto = d.join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&auto).unwrap();
    let p = fx.policy.canonicalize().unwrap().display().to_string();
    assert!(conf.contains(&p), "{conf}");
    std::fs::write(&auto, conf.replace(&p, &no_list.display().to_string())).unwrap();
    let c = PgCluster::existing(&d);
    let mut start =
        crate::support::postgres::as_pg_user(&crate::support::postgres::pg_program("pg_ctl"));
    start
        .arg("-D")
        .arg(&d)
        .arg("-l")
        .arg(&c.log)
        .args(["-w", "-t", "120", "-o"])
        .arg(format!(
            "-p {} -k {}",
            c.port,
            d.parent().unwrap().display()
        ))
        .arg("start");
    let out = start.output().unwrap();
    let log = std::fs::read_to_string(&c.log).unwrap();
    assert!(!out.status.success(), "the server started: {log}");
    assert!(
        !d.join("postmaster.pid").exists(),
        "the server still runs: {log}"
    );
    assert!(
        log.contains("s3:ListBucket") && log.contains("exit code 255"),
        "{log}"
    );
    assert_eq!(
        log.matches("access denied. S3 answers 403").count(),
        1,
        "restore_command ran once, not in a loop: {log}"
    );
    assert!(!log.contains("database system is ready"), "{log}");
}

/// Issue 19: a zero-byte or short WAL object is never "already stored": a
/// second push of the file (PostgreSQL retrying, or an operator) replaces it
/// with the content the sidecar claims, and `wal-verify` reports an empty one.
#[test]
fn pg_zero_byte_or_short_wal_object_is_replaced_not_taken_as_stored() {
    let (fx, mut a) = setup();
    a.start();
    a.psql("CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let seg = a.switch_and_wait_archived(WAIT);
    let copy = fx.dir.path().join(&seg);
    let out = fx.gsdr(&["wal-fetch", "--source", "pg", &seg, copy.to_str().unwrap()]);
    ok(&out, "wal-fetch");
    let original = std::fs::read(&copy).unwrap();
    let obj = fx
        .dir
        .path()
        .join(format!("store/pg/wal/00000001/{seg}.zst.age"));
    let sidecar = fx
        .dir
        .path()
        .join(format!("store/pg/wal/00000001/{seg}.json"));
    let stored = std::fs::read(&obj).unwrap();
    let sc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(
        sc["stored_bytes"].as_u64(),
        Some(stored.len() as u64),
        "the sidecar records the stored size: {sc}"
    );
    let fetch_back = |what: &str| {
        let dest = fx.dir.path().join("fetched");
        let _ = std::fs::remove_file(&dest);
        let out = fx.gsdr(&["wal-fetch", "--source", "pg", &seg, dest.to_str().unwrap()]);
        ok(&out, what);
        assert!(
            std::fs::read(&dest).unwrap() == original,
            "{what}: the segment comes back"
        );
    };

    // Zero bytes: wal-verify reports it, a push replaces it.
    std::fs::write(&obj, b"").unwrap();
    let v = fx.gsdr(&["--json", "wal-verify", "--source", "pg"]);
    assert_eq!(
        v.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    assert!(String::from_utf8_lossy(&v.stdout).contains(&seg));
    let out = fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]);
    ok(&out, "wal-push over a zero-byte object");
    assert!(String::from_utf8_lossy(&out.stderr).contains("wal_object_damaged"));
    assert!(std::fs::metadata(&obj).unwrap().len() > 0);
    fetch_back("after replacing a zero-byte object");

    // Short (half the bytes), with the stored size recorded: replaced.
    let now = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &now[..now.len() / 2]).unwrap();
    ok(
        &fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]),
        "wal-push over a short object",
    );
    fetch_back("after replacing a short object");

    // Short, under a sidecar of an older version (no stored size): too short
    // for an age file (without the key, only its framing can be checked).
    let mut old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("stored_bytes");
    std::fs::write(&sidecar, serde_json::to_vec(&old).unwrap()).unwrap();
    let now = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &now[..100]).unwrap();
    ok(
        &fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]),
        "wal-push over a short legacy object",
    );
    fetch_back("after replacing a short legacy object");
    // A whole object under such a sidecar is kept, and its size recorded.
    let kept = std::fs::read(&obj).unwrap();
    old.as_object_mut().unwrap().remove("stored_bytes");
    std::fs::write(&sidecar, serde_json::to_vec(&old).unwrap()).unwrap();
    let out = fx.gsdr(&["wal-push", "--source", "pg", copy.to_str().unwrap()]);
    ok(&out, "wal-push over a whole legacy object");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wal_object_damaged"));
    assert!(
        std::fs::read(&obj).unwrap() == kept,
        "a whole object is not rewritten"
    );
    let sc: serde_json::Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert_eq!(sc["stored_bytes"].as_u64(), Some(kept.len() as u64));
    assert_eq!(fx.gsdr_json(&["wal-verify", "--source", "pg"])["ok"], true);
}

/// Issue 11: `restore --to-dir --replace` over a live target. A running
/// postmaster is refused; a wrong identity fails before anything is
/// touched (the rows are all there afterwards); with the right identity the
/// old contents are moved aside and deleted only once the restore succeeded.
#[test]
fn pg_replace_over_a_live_target_refuses_a_running_server_and_a_wrong_key_changes_nothing() {
    let (fx, mut a) = setup();
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'backup' FROM generate_series(1, 300) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.pgbench(&["-i", "-s", "1", "-q"]);
    let want = contents(&a);
    a.switch_and_wait_archived(WAIT);

    // The live target: another cluster with its own rows.
    let mut b = PgCluster::init("");
    b.start();
    b.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    b.psql("INSERT INTO t SELECT g, 'live' FROM generate_series(1, 777) g");
    b.pgbench(&["-i", "-s", "1", "-q"]);
    let live = contents(&b);
    let entries = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let dir = b.data.display().to_string();

    // Running: refused.
    let out = fx.gsdr(&[
        "restore",
        "--source",
        "pg",
        "--to-dir",
        &dir,
        "--replace",
        "--latest",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("is running on"), "{err}");
    assert_eq!(contents(&b), live);
    b.stop();
    let before = entries(&b.data);

    // A wrong identity: nothing touched.
    let wrong = fx.dir.path().join("wrong.key");
    ok(
        &fx.gsdr(&["keygen", "-o", wrong.to_str().unwrap()]),
        "keygen",
    );
    let out = fx.gsdr(&[
        "--identity",
        wrong.to_str().unwrap(),
        "restore",
        "--source",
        "pg",
        "--to-dir",
        &dir,
        "--replace",
        "--latest",
        "--yes",
    ]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("decrypt") || err.contains("key"), "{err}");
    assert_eq!(entries(&b.data), before, "the directory is as it was");
    b.start();
    assert_eq!(contents(&b), live, "every row of the target is still there");
    b.stop();

    // Without --yes (and no terminal) the restore says what it would replace, and stops.
    let out = fx.gsdr(&[
        "restore",
        "--source",
        "pg",
        "--to-dir",
        &dir,
        "--replace",
        "--latest",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains(&format!("replaces the {} entries of {dir}", before.len())),
        "{err}"
    );
    assert_eq!(entries(&b.data), before);

    // The right identity: replaced; nothing of the old contents is left.
    let r = restore(&fx, &b.data, &["--replace", "--latest", "--yes"]);
    assert!(
        r["details"]["replaced_entries"].as_u64().unwrap() > 5,
        "{r}"
    );
    assert!(r["details"]["old_contents_left_at"].is_null(), "{r}");
    assert!(
        !entries(&b.data).iter().any(|e| e.starts_with(".gsdr-")),
        "{:?}",
        entries(&b.data)
    );
    let c = start_restored(&b.data);
    assert_eq!(contents(&c), want);
}

/// Issue 19: a copy restored to an earlier point whose configuration still
/// archives into production's prefix (restored by another tool, or archiving
/// switched back on by hand): `wal-push` refuses its new timeline — it
/// branches off timeline 1 before WAL production archived later — with an
/// error naming the restored copy, and nothing of it reaches the archive.
/// With `--allow-branch` (a cluster that replaces production) the same
/// history is accepted.
#[test]
fn pg_wal_push_refuses_the_timeline_of_a_copy_restored_to_an_earlier_point() {
    let (fx, mut a) = setup();
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    a.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    a.switch_and_wait_archived(WAIT);
    std::thread::sleep(Duration::from_millis(1100));
    let t = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..3 {
        a.psql(&format!("INSERT INTO t VALUES ({}, 'later')", 1000 + i));
        a.switch_and_wait_archived(WAIT);
    }

    let d = scratch(&fx, "copy-of-t");
    let tt = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    restore(&fx, &d, &["--target-time", &tt]);
    // As if gsdr had not turned archiving off: production's archive_command
    // from postgresql.conf applies.
    let auto = d.join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&auto).unwrap();
    std::fs::write(&auto, conf.replace("\narchive_mode = 'off'\n", "\n")).unwrap();
    let copy = start_restored(&d);
    assert_eq!(copy.psql("SHOW archive_mode"), "on");
    let start = std::time::Instant::now();
    while copy.archiver_counts().1 == 0 {
        assert!(start.elapsed() < WAIT, "the copy never tried to archive");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&copy.log).unwrap();
    assert!(
        log.contains("REFUSED: new timeline 00000002")
            && log.contains("does not descend")
            && log.contains("restored from this archive"),
        "{log}"
    );
    assert!(
        !wal_objects(&fx).iter().any(|o| o.starts_with("00000002/")),
        "{:?}",
        wal_objects(&fx)
    );
    let history = d.join("pg_wal/00000002.history");
    drop(copy);
    // Production keeps archiving.
    a.psql("INSERT INTO t VALUES (2000, 'prod')");
    a.switch_and_wait_archived(WAIT);

    // The same history pushed with --allow-branch is accepted.
    let out = fx.gsdr(&[
        "wal-push",
        "--source",
        "pg",
        "--allow-branch",
        history.to_str().unwrap(),
    ]);
    ok(&out, "wal-push --allow-branch");
    assert!(wal_objects(&fx).contains("00000002/00000002.history.zst.age"));
    // A different history for the same timeline: refused, naming the copy.
    let other = fx.dir.path().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let fake = other.join("00000002.history");
    std::fs::write(&fake, "1\t0/9000000\tno recovery target specified\n").unwrap();
    let out = fx.gsdr(&["wal-push", "--source", "pg", fake.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already started timeline 00000002") && err.contains("restored"),
        "{err}"
    );
    // A history of timeline 3 that does not begin with the archived one of 2: refused even with --allow-branch.
    let fake3 = other.join("00000003.history");
    std::fs::write(&fake3, "1\t0/1000000\tx\n2\t0/9000000\ty\n").unwrap();
    let out = fx.gsdr(&[
        "wal-push",
        "--source",
        "pg",
        "--allow-branch",
        fake3.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not begin with the archived history of its parent timeline 00000002"),
        "{err}"
    );
}

/// The stored size `wal-push` records in sidecars reaches the off-site copy:
/// `gsdr replicate` brings an off-site sidecar that lacks it up to date, and
/// replaces a zero-byte off-site object when the primary's size is confirmed
/// by its sidecar; the segment then comes back from the off-site copy.
#[test]
fn pg_replicate_repairs_offsite_sidecars_and_zero_byte_objects() {
    let (fx, mut a) = setup_with(
        &format!("{FS_TARGET}[targets.offsite]\nkind = \"fs\"\npath = \"{{dir}}/offsite\"\n"),
        "offsite = \"offsite\"\n",
    );
    a.start();
    a.psql("CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
    let seg = a.switch_and_wait_archived(WAIT);
    let r = fx.gsdr_json(&["replicate"]);
    assert_eq!(
        r["sweeps"]["pg"]["wal"][0]["failed"]
            .as_array()
            .map_or(0, Vec::len),
        0,
        "{r}"
    );
    let off = fx.dir.path().join("offsite/pg/wal/00000001");
    let sidecar = off.join(format!("{seg}.json"));
    let mut sc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
    assert!(sc["stored_bytes"].as_u64().is_some(), "{sc}");
    sc.as_object_mut().unwrap().remove("stored_bytes");
    std::fs::write(&sidecar, serde_json::to_vec(&sc).unwrap()).unwrap();
    std::fs::write(off.join(format!("{seg}.zst.age")), b"").unwrap();
    let r = fx.gsdr_json(&["replicate"]);
    let wal = &r["sweeps"]["pg"]["wal"][0];
    assert_eq!(wal["failed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(wal["copied"], 2, "{r}");
    assert_eq!(
        std::fs::read(&sidecar).unwrap(),
        std::fs::read(
            fx.dir
                .path()
                .join(format!("store/pg/wal/00000001/{seg}.json"))
        )
        .unwrap()
    );
    let dest = fx.dir.path().join("from-offsite");
    let out = fx.gsdr(&[
        "wal-fetch",
        "--source",
        "pg",
        "--target",
        "offsite",
        &seg,
        dest.to_str().unwrap(),
    ]);
    ok(&out, "wal-fetch from the off-site copy");
    ok(
        &fx.gsdr(&["--json", "replicate", "--check"]),
        "replicate --check",
    );
}
