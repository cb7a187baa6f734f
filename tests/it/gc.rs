//! Garbage collection (`gsdr storage gc`, the daemon's start-up round), the
//! suspicious catalog (bad manifests are skipped, never fatal) and the folder
//! store's durability (which folders are fsynced), against the real binary on
//! folder targets and moto.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cli::Fixture;
use crate::support::moto::Moto;
use crate::support::{free_port, gsdr_bin, require_program, wait_for_port};

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).unwrap()))
}

/// A few MiB of data that compresses a little, and its SHA-256.
fn input(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("input.bin");
    let mut x: u64 = 7;
    let data: Vec<u8> = (0..3 << 20)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if i % 3 == 0 {
                b'a'
            } else {
                (x >> 56) as u8
            }
        })
        .collect();
    std::fs::write(&p, data).unwrap();
    let h = sha256_file(&p);
    (p, h)
}

/// Sets a file's modification time `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn tmp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.map(|e| e.unwrap()) {
        if e.file_type().unwrap().is_dir() {
            out.extend(tmp_files(&e.path()));
        } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(e.path());
        }
    }
    out
}

fn tally(t: &Value, side: &str, category: &str) -> (u64, u64) {
    let c = &t[side][category];
    (
        c["count"].as_u64().unwrap_or(0),
        c["bytes"].as_u64().unwrap_or(0),
    )
}

fn restore_matches(f: &Fixture, source: &str, target: Option<&str>, want_sha: &str) {
    let out_file = f
        .dir
        .path()
        .join(format!("restored-{}", rand::random::<u32>()));
    let mut args = vec!["restore", "--source", source];
    if let Some(t) = target {
        args.extend(["--target", t]);
    }
    args.extend(["--to-file", out_file.to_str().unwrap()]);
    ok(&f.gsdr(&args), "restore");
    assert_eq!(sha256_file(&out_file), want_sha, "restored content differs");
}

/// A backup SIGKILLed mid-stream leaves a temp file; with a data object
/// without a manifest beside it, `storage gc --dry-run` reports both (counts
/// and bytes per category) and removes nothing, `storage gc` removes them,
/// and the committed backup, the WAL and a leftover younger than the grace
/// period stay; the backup still restores.
#[test]
fn storage_gc_on_a_folder_target_removes_what_a_killed_backup_left_and_nothing_else() {
    let dir = crate::support::tempdir();
    let (data, sha) = input(dir.path());
    let pid_file = dir.path().join("slow.pid");
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n\
         [sources.slow]\nkind = \"command\"\n[sources.slow.command]\n\
         argv = [\"sh\", \"-c\", \"echo $$ > {}; head -c 20000000 /dev/urandom; exec sleep 600\"]\n",
        data.display(),
        pid_file.display()
    ));
    let store = f.dir.path().join("store");
    ok(&f.gsdr(&["backup", "--source", "data"]), "backup");

    // A backup killed with SIGKILL while its stream is being written.
    let mut child = Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .args(["backup", "--source", "slow"])
        .env("GSDR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while tmp_files(&store.join("slow")).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the slow backup never started writing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid.trim().parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let leftovers = tmp_files(&store.join("slow"));
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    let tmp = leftovers[0].clone();
    age(&tmp, 7200);
    let tmp_bytes = std::fs::metadata(&tmp).unwrap().len();

    // A run that died between the upload and the manifest, two hours ago, and one just now.
    let committed = f.gsdr_json(&["list"])["backups"][0].clone();
    let data_key = committed["data_key"].as_str().unwrap().to_string();
    let orphan = store.join("data/stdout/20200101T000000Z-0dead0/data.zst.age");
    write(&orphan, &[7u8; 4321]);
    age(&orphan, 7200);
    let young = store.join("data/stdout/20200101T000000Z-0dead1/data.zst.age");
    write(&young, &[8u8; 100]);
    // WAL is never garbage, however old and whatever its name.
    let wal = store.join("data/wal/00000001/data.zst.age");
    write(&wal, b"wal");
    age(&wal, 7200);

    let dry = f.gsdr_json(&["storage", "gc", "--dry-run", "--grace", "1h"]);
    let t = &dry["targets"][0];
    assert_eq!(dry["dry_run"], true);
    assert_eq!(t["target"], "local");
    assert_eq!(tally(t, "removed", "temp_file"), (1, tmp_bytes), "{dry}");
    assert_eq!(tally(t, "removed", "orphan_data"), (1, 4321), "{dry}");
    assert_eq!(tally(t, "kept", "orphan_data"), (1, 100), "{dry}");
    let human = ok(
        &f.gsdr(&["storage", "gc", "--dry-run", "--grace", "1h"]),
        "dry run",
    );
    assert!(
        human.contains("local: would remove 1 data objects without a manifest (4.2 KiB); kept 1"),
        "{human}"
    );
    assert!(tmp.exists() && orphan.exists(), "a dry run removes nothing");

    let run = f.gsdr_json(&["storage", "gc", "--grace", "1h"]);
    let t = &run["targets"][0];
    assert_eq!(tally(t, "removed", "temp_file"), (1, tmp_bytes), "{run}");
    assert_eq!(tally(t, "removed", "orphan_data"), (1, 4321), "{run}");
    assert!(!tmp.exists() && !orphan.exists());
    assert!(
        !store.join("slow").exists(),
        "the killed run's empty folders go too"
    );
    assert!(young.exists(), "younger than the grace period: kept");
    assert!(wal.exists(), "WAL is never collected");
    assert!(store.join(&data_key).exists());
    let list = f.gsdr_json(&["list"]);
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);
    assert_eq!(list["backups"][0]["id"], committed["id"]);
    restore_matches(&f, "data", None, &sha);

    // Nothing left to do.
    let again = f.gsdr_json(&["storage", "gc", "--grace", "1h"]);
    assert_eq!(
        again["targets"][0]["removed"],
        serde_json::json!({}),
        "{again}"
    );
}

/// On S3: an open multipart upload made directly with the SDK and a data
/// object without a manifest are reported, then removed; an upload of a
/// source whose run lease is live is kept until the lease is released; the
/// committed backup and the WAL stay, and the backup still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_gc_on_s3_aborts_uploads_of_no_live_run_and_deletes_orphans() {
    let moto = Moto::start().await;
    let dir = crate::support::tempdir();
    let (data, sha) = input(dir.path());
    let f = Fixture::new(&format!(
        "[targets.s3]\n{}[defaults]\ntarget = \"s3\"\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n\
         [sources.busy]\nkind = \"command\"\n[sources.busy.command]\nargv = [\"echo\", \"x\"]\n",
        moto.target_toml("gc"),
        data.display()
    ));
    // The binary blocks: run it off the runtime's worker.
    let gsdr = |args: &[&str]| tokio::task::block_in_place(|| f.gsdr(args));
    let json = |out: Output| -> Value { serde_json::from_str(&ok(&out, "gsdr --json")).unwrap() };
    ok(&gsdr(&["backup", "--source", "data"]), "backup");

    let s3 = moto.client();
    let bucket = moto.bucket.clone();
    let open_upload = |key: &'static str, part: usize| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            let up = s3
                .create_multipart_upload()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            if part > 0 {
                s3.upload_part()
                    .bucket(&bucket)
                    .key(key)
                    .upload_id(up.upload_id().unwrap())
                    .part_number(1)
                    .body(vec![1u8; part].into())
                    .send()
                    .await
                    .unwrap();
            }
        }
    };
    let uploads = || {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            let mut keys: Vec<String> = s3
                .list_multipart_uploads()
                .bucket(&bucket)
                .send()
                .await
                .unwrap()
                .uploads()
                .iter()
                .map(|u| u.key().unwrap().to_string())
                .collect();
            keys.sort();
            keys
        }
    };
    let put = |key: &'static str, body: Vec<u8>| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            s3.put_object()
                .bucket(&bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .unwrap();
        }
    };
    let exists = |key: &'static str| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        async move {
            s3.head_object()
                .bucket(&bucket)
                .key(key)
                .send()
                .await
                .is_ok()
        }
    };
    // What a SIGKILLed backup leaves: an open upload with one part.
    open_upload("gc/data/stdout/20200101T000000Z-0dead0/data.zst.age", 1024).await;
    // A run that died after its upload, before its manifest.
    put(
        "gc/data/stdout/20200101T000000Z-0dead1/data.zst.age",
        vec![3u8; 1000],
    )
    .await;
    put(
        "gc/data/wal/00000001/000000010000000000000001.zst.age",
        b"wal".to_vec(),
    )
    .await;
    // A run of `busy` holds its lease right now: its upload may be in progress.
    let lease = |released: bool| {
        serde_json::to_vec(&serde_json::json!({
            "holder": "other-replica-1-abcdef",
            "slot": chrono::Utc::now(),
            "expires_at": chrono::Utc::now() + chrono::Duration::hours(1),
            "released": released,
            "done_slot": null,
        }))
        .unwrap()
    };
    put("gc/locks/busy.json", lease(false)).await;
    open_upload("gc/busy/stdout/20200101T000000Z-0busy0/data.zst.age", 0).await;

    // moto reports every upload as initiated in 2010: old whatever the grace.
    // The orphan data object is a second old: kept with the default 24 h.
    let dry = json(gsdr(&["--json", "storage", "gc", "--dry-run"]));
    let t = &dry["targets"][0];
    assert_eq!(tally(t, "removed", "multipart_upload"), (1, 1024), "{dry}");
    assert_eq!(tally(t, "kept", "multipart_upload"), (1, 0), "{dry}");
    assert_eq!(tally(t, "kept", "orphan_data"), (1, 1000), "{dry}");
    let busy = t["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"].as_str().unwrap().starts_with("busy/"))
        .unwrap();
    assert!(
        busy["detail"]
            .as_str()
            .unwrap()
            .contains("a run of `busy` holds its lease (other-replica-1-abcdef)"),
        "{busy}"
    );
    let dry0 = json(gsdr(&[
        "--json",
        "storage",
        "gc",
        "--dry-run",
        "--grace",
        "0s",
    ]));
    assert_eq!(
        tally(&dry0["targets"][0], "removed", "orphan_data"),
        (1, 1000),
        "{dry0}"
    );
    assert_eq!(uploads().await.len(), 2, "a dry run aborts nothing");
    assert!(exists("gc/data/stdout/20200101T000000Z-0dead1/data.zst.age").await);

    let run = json(gsdr(&["--json", "storage", "gc", "--grace", "0s"]));
    let t = &run["targets"][0];
    assert_eq!(tally(t, "removed", "multipart_upload"), (1, 1024), "{run}");
    assert_eq!(tally(t, "removed", "orphan_data"), (1, 1000), "{run}");
    assert_eq!(
        uploads().await,
        vec!["gc/busy/stdout/20200101T000000Z-0busy0/data.zst.age".to_string()]
    );
    assert!(!exists("gc/data/stdout/20200101T000000Z-0dead1/data.zst.age").await);
    assert!(exists("gc/data/wal/00000001/000000010000000000000001.zst.age").await);
    let list = json(gsdr(&["--json", "list"]));
    assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list}");
    tokio::task::block_in_place(|| restore_matches(&f, "data", None, &sha));

    // The run ends and lets go of its lease: its leftover is garbage now.
    put("gc/locks/busy.json", lease(true)).await;
    let run = json(gsdr(&["--json", "storage", "gc", "--grace", "0s"]));
    assert_eq!(
        tally(&run["targets"][0], "removed", "multipart_upload"),
        (1, 0),
        "{run}"
    );
    assert!(uploads().await.is_empty());
}

/// The daemon collects garbage once at start: a stale temp file and an orphan
/// data object are gone and `/metrics` counts them by category.
#[test]
fn daemon_collects_garbage_at_start_and_counts_it() {
    let port = free_port();
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.d]\nkind = \"command\"\n[sources.d.command]\nargv = [\"echo\", \"hello\"]\n\
         [daemon]\nmetrics_addr = \"127.0.0.1:{port}\"\ngrace_period = \"5s\"\ngc_grace = \"1h\"\n"
    ));
    ok(&f.gsdr(&["backup", "--source", "d"]), "backup");
    let store = f.dir.path().join("store");
    let tmp = store.join("d/stdout/20200101T000000Z-0dead0/.tmp-0123456789abcdef-data.zst.age");
    write(&tmp, &[1u8; 2000]);
    age(&tmp, 7200);
    let orphan = store.join("d/stdout/20200101T000000Z-0dead1/data.zst.age");
    write(&orphan, &[2u8; 3000]);
    age(&orphan, 7200);
    let mut child = Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .arg("daemon")
        .env("GSDR_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port, Duration::from_secs(30), "gsdr daemon", &mut child);
    let want = [
        "gsdr_gc_removed_objects_total{target=\"local\",category=\"temp_file\"} 1",
        "gsdr_gc_removed_bytes_total{target=\"local\",category=\"temp_file\"} 2000",
        "gsdr_gc_removed_objects_total{target=\"local\",category=\"orphan_data\"} 1",
        "gsdr_gc_removed_bytes_total{target=\"local\",category=\"orphan_data\"} 3000",
    ];
    let t0 = std::time::Instant::now();
    let metrics = loop {
        let body = crate::daemon::http::blocking_get(&format!("http://127.0.0.1:{port}/metrics"));
        if want.iter().all(|w| body.contains(w)) || t0.elapsed() > Duration::from_secs(30) {
            break body;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    crate::daemon::stop_daemon(child);
    for w in want {
        assert!(metrics.contains(w), "{w} missing in:\n{metrics}");
    }
    assert!(!tmp.exists() && !orphan.exists());
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        1
    );
}

/// Garbage, a newer schema and a manifest copied to another backup's key
/// (with dates that would make them the newest) are skipped with a warning:
/// list shows the others, replicate copies only them, prune keeps the newest
/// real one and touches nothing of the bad ones, restore works, and gc keeps
/// the data a manifest sits beside, readable or not.
#[test]
fn bad_manifests_are_skipped_with_a_warning_and_the_rest_still_works() {
    let dir = crate::support::tempdir();
    let (data, sha) = input(dir.path());
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n\
         [targets.off]\nkind = \"fs\"\npath = \"{{dir}}/off\"\n\
         [defaults]\ntarget = \"local\"\noffsite = \"off\"\nretention = {{ keep_last = 1 }}\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n",
        data.display()
    ));
    let store = f.dir.path().join("store");
    ok(&f.gsdr(&["backup"]), "first backup");
    // Backup ids and times have a one-second resolution: the second one is newer.
    std::thread::sleep(Duration::from_millis(1100));
    ok(&f.gsdr(&["backup"]), "second backup");
    let list = f.gsdr_json(&["list"]);
    let ids: Vec<String> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let (old, new) = (&ids[0], &ids[1]);
    let old_dir = store.join(format!("data/stdout/{old}"));
    let old_manifest = std::fs::read(old_dir.join("manifest.json")).unwrap();
    let old_data = std::fs::read(old_dir.join("data.zst.age")).unwrap();

    let bad = |id: &str, manifest: &[u8]| {
        let d = store.join(format!("data/stdout/{id}"));
        write(&d.join("manifest.json"), manifest);
        write(&d.join("data.zst.age"), &old_data);
        age(&d.join("data.zst.age"), 7200);
        d
    };
    let garbage = bad(
        "20990101T000000Z-garbag",
        b"{\"schema_version\": 1, \"id\": ",
    );
    let mut newer: Value = serde_json::from_slice(&old_manifest).unwrap();
    newer["schema_version"] = 2.into();
    newer["id"] = "20990101T000000Z-newer0".into();
    newer["data_key"] = "data/stdout/20990101T000000Z-newer0/data.zst.age".into();
    newer["a_field_of_the_future"] = true.into();
    let newer = bad(
        "20990101T000000Z-newer0",
        &serde_json::to_vec(&newer).unwrap(),
    );
    let copied = bad("20990101T000000Z-copied", &old_manifest);
    let bad_dirs = [&garbage, &newer, &copied];
    let snapshot = |d: &PathBuf| {
        (
            std::fs::read(d.join("manifest.json")).unwrap(),
            std::fs::read(d.join("data.zst.age")).unwrap(),
        )
    };
    let before: Vec<_> = bad_dirs.iter().map(|d| snapshot(d)).collect();

    // list: the two real ones, the three bad ones as warnings on stderr and in the JSON.
    let out = f.gsdr(&["list"]);
    let stdout = ok(&out, "list");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(old.as_str()) && stdout.contains(new.as_str()),
        "{stdout}"
    );
    assert!(!stdout.contains("20990101T"), "{stdout}");
    // One warning event per skipped manifest (JSON log lines: stderr is not a terminal)…
    for (id, reason) in [
        ("20990101T000000Z-garbag", "unreadable"),
        ("20990101T000000Z-newer0", "newer_schema"),
        ("20990101T000000Z-copied", "mismatch"),
    ] {
        assert!(
            stderr.lines().any(|l| {
                let Ok(v) = serde_json::from_str::<Value>(l) else {
                    return false;
                };
                v["event"] == "manifest_skipped"
                    && v["level"] == "WARN"
                    && v["key"].as_str().is_some_and(|k| k.contains(id))
                    && v["reason"] == reason
            }),
            "{id} {reason}: {stderr}"
        );
    }
    // …and one summary line that `-qq` does not silence.
    assert!(stderr.contains("upgrade gsdr"), "{stderr}");
    let quiet = f.gsdr(&["-qq", "list"]);
    let quiet_err = String::from_utf8_lossy(&quiet.stderr);
    assert!(
        quiet_err.contains("warning: 3 manifest(s) on target `local` skipped"),
        "{quiet_err}"
    );
    let list = f.gsdr_json(&["list"]);
    assert_eq!(list["backups"].as_array().unwrap().len(), 2);
    let mut reasons: Vec<&str> = list["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["mismatch", "newer_schema", "unreadable"],
        "{list}"
    );

    // replicate: the two real backups, nothing of the bad ones.
    ok(&f.gsdr(&["replicate"]), "replicate");
    let off = f.dir.path().join("off/data/stdout");
    let mut copied_ids: Vec<String> = std::fs::read_dir(&off)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    copied_ids.sort();
    assert_eq!(copied_ids, ids);
    ok(&f.gsdr(&["replicate", "--check"]), "replicate --check");

    // prune (keep_last = 1): the older real backup goes, on both targets; the bad ones stay as they were.
    let out = f.gsdr_json(&["prune"]);
    let deleted: Vec<&str> = out["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["deleted"] == true)
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, [old.as_str(), old.as_str()], "{out}");
    assert!(!old_dir.exists());
    assert!(store
        .join(format!("data/stdout/{new}/data.zst.age"))
        .exists());
    let after: Vec<_> = bad_dirs.iter().map(|d| snapshot(d)).collect();
    assert!(before == after, "prune touched a skipped manifest's folder");
    let list = f.gsdr_json(&["list"]);
    assert_eq!(list["backups"][0]["id"].as_str(), Some(new.as_str()));
    assert_eq!(list["backups"].as_array().unwrap().len(), 1);

    // restore from either copy, verify.
    restore_matches(&f, "data", None, &sha);
    restore_matches(&f, "data", Some("off"), &sha);
    ok(&f.gsdr(&["verify", new]), "verify");

    // gc: a data object with a manifest beside it is never garbage, readable or not.
    let gc = f.gsdr_json(&["storage", "gc", "--grace", "0s"]);
    assert_eq!(gc["targets"][0]["removed"], serde_json::json!({}), "{gc}");
    let after: Vec<_> = bad_dirs.iter().map(|d| snapshot(d)).collect();
    assert!(before == after, "gc touched a skipped manifest's folder");
}

/// Catalog listing through the library on both stores: a skipped manifest is
/// counted in `gsdr_catalog_manifests_skipped_total` and `read` refuses it.
#[tokio::test]
async fn skipped_manifests_are_counted_on_both_stores() {
    use gsdr::catalog::{Catalog, SkipReason};
    use gsdr::storage::{fs::FsStore, s3::S3Store, PutCondition, Store};
    use std::sync::Arc;
    let moto = Moto::start().await;
    let dir = crate::support::tempdir();
    let stores: Vec<Arc<dyn Store>> = vec![
        Arc::new(FsStore::new(dir.path().join("t")).unwrap()),
        Arc::new(S3Store::new(&moto.target("cat")).await.unwrap()),
    ];
    for store in stores {
        let key = "src/full/20261129T000000Z-abcdef/manifest.json";
        store
            .put_small(key, "not a manifest".into(), PutCondition::Overwrite)
            .await
            .unwrap();
        let cat = Catalog::new(store.clone());
        let listing = cat.list_checked(None).await.unwrap();
        assert!(listing.manifests.is_empty());
        assert_eq!(listing.skipped.len(), 1);
        assert_eq!(listing.skipped[0].reason, SkipReason::Unreadable);
        assert_eq!(listing.skipped[0].key, key);
        let err = cat.read(key).await.unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains("not a valid manifest"),
            "{err}"
        );
        let metrics = gsdr::metrics::global().encode(chrono::Utc::now());
        let line = format!(
            "gsdr_catalog_manifests_skipped_total{{store=\"{}\",reason=\"unreadable\"}} 1",
            store.describe()
        );
        assert!(metrics.contains(&line), "{line} missing in:\n{metrics}");
    }
}

/// Every folder a write creates is fsynced into its parent, and the folder of
/// a renamed or linked file after the rename — for backups and for WAL in a
/// new timeline folder alike (watched with strace on the real binary).
#[test]
fn folder_store_fsyncs_every_folder_it_creates_and_every_rename() {
    let strace = require_program("strace", "apt-get install strace");
    let f = Fixture::new(
        "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.d]\nkind = \"command\"\n[sources.d.command]\nargv = [\"echo\", \"hello\"]\n\
         [sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\n",
    );
    let store = f.dir.path().join("store");
    let traced = |args: &[&str]| -> String {
        let log = f
            .dir
            .path()
            .join(format!("strace-{}.txt", rand::random::<u32>()));
        let out = Command::new(&strace)
            .args(["-f", "-y", "-qq", "-e", "trace=fsync", "-o"])
            .arg(&log)
            .arg(gsdr_bin())
            .arg("--policy")
            .arg(&f.policy)
            .args(args)
            .env("GSDR_LOG", "warn")
            .output()
            .unwrap();
        ok(&out, &format!("strace gsdr {args:?}"));
        std::fs::read_to_string(&log).unwrap()
    };
    // `-y` prints `fsync(9</path>)`, or `fsync(9</path> <unfinished ...>` when another thread interrupts the line.
    let synced = |log: &str, dir: &Path| {
        let (done, split) = (
            format!("<{}>)", dir.display()),
            format!("<{}> <unfinished", dir.display()),
        );
        log.lines()
            .any(|l| l.contains("fsync(") && (l.contains(&done) || l.contains(&split)))
    };
    let log = traced(&["backup", "--source", "d"]);
    let id = f.gsdr_json(&["list"])["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // `store` itself is new: its parent, then each new folder's parent, then the backup folder after each rename.
    for d in [
        f.dir.path().to_path_buf(),
        store.clone(),
        store.join("d"),
        store.join("d/stdout"),
        store.join(format!("d/stdout/{id}")),
    ] {
        assert!(synced(&log, &d), "{} never fsynced:\n{log}", d.display());
    }

    // A WAL segment of a new timeline: every new folder down to the timeline's.
    let seg = f.dir.path().join("pg_wal/000000010000000000000001");
    let mut bytes = vec![0u8; 16 << 20];
    bytes[2..4].copy_from_slice(&2u16.to_le_bytes()); // XLP_LONG_HEADER
    bytes[24..32].copy_from_slice(&7_000_000_000_000_000_001u64.to_le_bytes());
    bytes[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
    write(&seg, &bytes);
    let log = traced(&["wal-push", "--source", "pg", seg.to_str().unwrap()]);
    for d in [
        store.join("pg"),
        store.join("pg/wal"),
        store.join("pg/wal/00000001"),
    ] {
        assert!(synced(&log, &d), "{} never fsynced:\n{log}", d.display());
    }
    assert!(store
        .join("pg/wal/00000001/000000010000000000000001.zst.age")
        .exists());
}
