//! The secret-marker test of issue #15, for what `secrets.rs`'s does not
//! reach: S3 credentials (`{ file }` and `{ env }` references) on a moto
//! target, a PostgreSQL 15 password (SCRAM, `{ file }`) for gsdr's sessions
//! and its `pg_basebackup` child, `wal-push` run by the server's archiver,
//! an incident restore and its state file, `gsdr daemon` left running with a
//! failing job that notifies a local HTTP webhook sink, and failures (a
//! wrong PostgreSQL password, an unreachable S3 endpoint). Every process's
//! argv is sampled while each command runs; then the output, the logs, every
//! file written (the fixture's folder: restored data directory, state file,
//! drill reports), every object stored in the bucket and every webhook body
//! are searched for the markers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cli::Fixture;
use crate::secrets::{cmdlines_with, files_holding, printed};
use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
use crate::support::{gsdr_bin, tempdir};

const MK_S3_KEY: &str = "gsdrmarkerS3KEYa1b2";
const MK_S3_SECRET: &str = "gsdr-marker-s3secret-9d8c";
const MK_PG: &str = "gsdr-marker-pgpw-41f0";
const MK_PG_BAD: &str = "gsdr-marker-pgbadpw-6a2e";
const MK_HOOK: &str = "gsdr-marker-hookurl-c3d4";
const MARKERS: [&str; 5] = [MK_S3_KEY, MK_S3_SECRET, MK_PG, MK_PG_BAD, MK_HOOK];
/// The variable the S3 secret key comes from (`{ env = … }`).
const SECRET_ENV: &str = "GSDR_TEST_MARKER_S3_SECRET";

/// Samples every process's argv for [`MARKERS`] while `run` runs.
fn watched<T>(run: impl FnOnce() -> T) -> (T, Vec<(u32, String)>) {
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut scans = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for m in MARKERS {
                    seen.extend(cmdlines_with(m));
                }
                scans += 1;
                // Sampled: a scan reads every /proc/*/cmdline.
                std::thread::sleep(Duration::from_millis(5));
            }
            (seen, scans)
        })
    };
    let out = run();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (seen, scans) = watcher.join().unwrap();
    assert!(scans > 0);
    (out, seen)
}

fn gsdr_cmd(policy: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(gsdr_bin());
    c.arg("--policy")
        .arg(policy)
        .args(args)
        .env("GSDR_LOG", "info")
        .env(SECRET_ENV, MK_S3_SECRET);
    c
}

/// Every object in the moto bucket, concatenated.
async fn bucket_bytes(moto: &crate::support::moto::Moto) -> (usize, Vec<u8>) {
    let c = moto.client();
    let list = c
        .list_objects_v2()
        .bucket(&moto.bucket)
        .send()
        .await
        .unwrap();
    let mut all = Vec::new();
    let objects = list.contents();
    for o in objects {
        let body = c
            .get_object()
            .bucket(&moto.bucket)
            .key(o.key().unwrap())
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        all.extend_from_slice(o.key().unwrap().as_bytes());
        all.extend_from_slice(&body);
    }
    (objects.len(), all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_marker_with_s3_keys_a_pg_password_an_incident_and_the_daemon() {
    // The webhook sink: every body posted, whatever the path.
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().fallback(move |body: String| {
            let bodies = bodies.clone();
            async move {
                bodies.lock().unwrap().push(body);
                "ok"
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let moto = crate::support::moto::Moto::start_own(&[]).await;
    // Secrets as the cluster mounts them; the server's user reads them too
    // (its archiver runs `wal-push`).
    let secrets = tempdir();
    let write = |name: &str, v: &str| {
        let p = secrets.path().join(name);
        std::fs::write(&p, format!("{v}\n")).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        p
    };
    let s3_key = write("s3-key", MK_S3_KEY);
    let s3_secret = write("s3-secret", MK_S3_SECRET);
    let pg_pw = write("pg-pw", MK_PG);
    let pg_bad = write("pg-bad-pw", MK_PG_BAD);
    let hook = write("hook", &format!("http://{hook_addr}/hooks/{MK_HOOK}"));
    give_to_pg_user(secrets.path());

    // PostgreSQL 15 with SCRAM for gsdr's role (the test's own psql, as
    // `postgres`, is trusted).
    let mut cluster = PgCluster::init("password_encryption = 'scram-sha-256'\n");
    std::fs::write(
        cluster.data.join("pg_hba.conf"),
        "local all all trust\nlocal replication all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    let s3 = format!(
        "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"m\"\n\
         access_key_id = {{ file = \"{}\" }}\nsecret_access_key = {{ env = \"{SECRET_ENV}\" }}\npart_size = \"5MiB\"\n",
        moto.endpoint,
        moto.bucket,
        s3_key.display(),
    );
    let pg = |name: &str, pw: &Path, schedule: &str| {
        format!(
            "[sources.{name}]\nkind = \"postgres\"\n{schedule}[sources.{name}.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
             user = \"gsdr\"\npassword = {{ file = \"{}\" }}\ndbname = \"postgres\"\npg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\n",
            cluster.port,
            pw.display(),
            pg_gsdr_bin().display()
        )
    };
    let f = Fixture::new(&format!(
        "[targets.s3]\n{s3}\
         [targets.dead]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\n\
         access_key_id = {{ file = \"{}\" }}\nsecret_access_key = {{ file = \"{}\" }}\nmax_attempts = 1\n\
         [defaults]\ntarget = \"s3\"\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [daemon]\nretry_max_attempts = 1\ngrace_period = \"5s\"\nwebhook_url = {{ file = \"{}\" }}\n\
         {}{}\
         [sources.cfg]\nkind = \"command\"\n[sources.cfg.command]\nargv = [\"cat\", \"{{dir}}/input.txt\"]\n\
         [sources.lost]\nkind = \"command\"\ntarget = \"dead\"\n[sources.lost.command]\nargv = [\"echo\", \"x\"]\n\
         [drills]\nrunbooks_dir = \"{{dir}}/runbooks\"\nscratch_dir = \"{{dir}}/scratch\"\n",
        s3_key.display(),
        s3_secret.display(),
        hook.display(),
        pg("pg", &pg_pw, ""),
        pg("pgbad", &pg_bad, "schedule = \"0 3 * * *\"\n"),
    ));
    std::fs::write(f.dir.path().join("input.txt"), "config v1\n").unwrap();
    // The archiver runs `wal-push` through a wrapper that exports the S3
    // secret from its file, as a pod's environment would: never in argv.
    let wrapper = f.dir.path().join("wal-push.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport {SECRET_ENV}=\"$(cat {})\"\nexec {} --policy {} -q wal-push --source pg \"$1\"\n",
            s3_secret.display(),
            pg_gsdr_bin().display(),
            f.policy.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    give_to_pg_user(f.dir.path());
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} %p'\n",
        wrapper.display()
    ));
    cluster.start();
    // Set through a file psql reads, not its argv (the watcher is not on yet,
    // but the server log and the test's own processes stay clean too).
    let setup = f.dir.path().join("setup.sql");
    std::fs::write(
        &setup,
        format!("CREATE ROLE gsdr LOGIN REPLICATION SUPERUSER PASSWORD '{MK_PG}';\n"),
    )
    .unwrap();
    give_to_pg_user(&setup);
    cluster.psql(&format!("\\i {}", setup.display()));
    std::fs::remove_file(&setup).unwrap();
    cluster.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g");

    let scenario = "name = \"cfg-loss\"\ntitle = \"cfg is lost\"\ndescription = \"Restore cfg.\"\n\
        [[steps]]\nname = \"restore\"\nkind = \"restore_command_source\"\nsource = \"cfg\"\n";
    let rb = crate::drill::runbooks(&f, "cfg-loss", scenario);
    // A drill into a scratch PostgreSQL: restored with WAL fetched from S3
    // by the scratch server's restore_command (`gsdr wal-fetch`).
    crate::drill::runbooks(
        &f,
        "pg-loss",
        "name = \"pg-loss\"\ntitle = \"pg is lost\"\ndescription = \"Restore pg and count.\"\n\
         [[steps]]\nname = \"restore\"\nkind = \"restore_postgres_pitr\"\nsource = \"pg\"\n\
         [[steps]]\nname = \"rows\"\nkind = \"sql\"\nsource = \"pg\"\nquery = \"SELECT count(*) FROM t\"\nmin = 2000\nafter = [\"restore\"]\n",
    );
    let restored = f.dir.path().join("restored-pg");
    let state = f.dir.path().join("incident.state.json");
    let reports = f.dir.path().join("reports");
    let into_ok = format!("cfg={}", f.dir.path().join("cfg-restored.txt").display());
    let into_bad = format!("cfg={}", f.dir.path().join("no-such-dir/cfg.txt").display());
    let mut outputs = String::new();
    let mut covered = Vec::new();
    let t0 = Instant::now();
    for (args, ok) in [
        (vec!["policy", "check"], true),
        (vec!["--json", "backup", "--source", "pg"], true),
        (vec!["--json", "backup", "--source", "cfg"], true),
        (vec!["list", "--source", "pg"], true),
        (vec!["--json", "verify", "--source", "pg", "--deep"], true),
        (
            vec![
                "--json",
                "restore",
                "--source",
                "pg",
                "--latest",
                "--to-dir",
                restored.to_str().unwrap(),
            ],
            true,
        ),
        (
            vec![
                "--json",
                "drill",
                "--scenario",
                "cfg-loss",
                "--runbooks",
                rb.to_str().unwrap(),
                "--out",
                reports.to_str().unwrap(),
            ],
            true,
        ),
        (
            vec![
                "--json",
                "restore",
                "--scenario",
                "cfg-loss",
                "--runbooks",
                rb.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
                "--yes",
                "--into",
                &into_ok,
            ],
            true,
        ),
        // The same incident failing (its endpoint cannot be written): the
        // state file stays, to be searched below.
        (
            vec![
                "--json",
                "restore",
                "--scenario",
                "cfg-loss",
                "--runbooks",
                rb.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
                "--yes",
                "--into",
                &into_bad,
            ],
            false,
        ),
        (
            vec![
                "--json",
                "drill",
                "--scenario",
                "pg-loss",
                "--runbooks",
                rb.to_str().unwrap(),
                "--out",
                reports.to_str().unwrap(),
            ],
            true,
        ),
        // Failures: a refused password, an unreachable S3 endpoint.
        (vec!["--json", "backup", "--source", "pgbad"], false),
        (vec!["--json", "canary", "--source", "pgbad"], false),
        (vec!["--json", "backup", "--source", "lost"], false),
        (vec!["policy", "check", "--connect"], false),
    ] {
        let (o, seen) = watched(|| gsdr_cmd(&f.policy, &args).output().unwrap());
        assert_eq!(o.status.success(), ok, "{args:?}: {}", printed(&o));
        assert!(seen.is_empty(), "{args:?}: an argv held a secret: {seen:?}");
        outputs += &printed(&o);
        covered.push(format!("{} ({:?})", args.join(" "), t0.elapsed()));
    }
    // WAL archived through the wrapper (wal-push read both S3 secrets).
    let (_, seen) = watched(|| cluster.switch_and_wait_archived(crate::postgres::WAIT));
    assert!(seen.is_empty(), "wal-push: an argv held a secret: {seen:?}");
    assert!(
        restored.join("PG_VERSION").is_file(),
        "the restore wrote the data directory"
    );
    assert!(
        f.dir.path().join("cfg-restored.txt").is_file(),
        "the incident restored cfg"
    );
    assert!(state.is_file(), "the failed incident left its state file");

    // The daemon: `pgbad` is scheduled and never backed up, so it runs at
    // start, fails (wrong password) and notifies the webhook.
    let ((daemon_out, notified), seen) = watched(|| {
        let child = gsdr_cmd(&f.policy, &["daemon"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while bodies.lock().unwrap().is_empty() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        // A few seconds more of the daemon's life (heartbeats, metrics, logs).
        std::thread::sleep(Duration::from_secs(3));
        let notified = bodies.lock().unwrap().len();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        (child.wait_with_output().unwrap(), notified)
    });
    assert!(seen.is_empty(), "daemon: an argv held a secret: {seen:?}");
    assert!(
        notified > 0,
        "the failing job notified nobody: {}",
        printed(&daemon_out)
    );
    outputs += &printed(&daemon_out);
    let posted = bodies.lock().unwrap().join("\n");
    assert!(
        posted.contains("pgbad"),
        "the notice names the job: {posted}"
    );
    covered.push(format!("daemon ({:?})", t0.elapsed()));

    let (objects, stored) = bucket_bytes(&moto).await;
    assert!(
        objects > 3,
        "backups, manifests and WAL were stored: {objects}"
    );
    for m in MARKERS {
        assert!(!outputs.contains(m), "output holds {m}: {outputs}");
        assert!(!posted.contains(m), "a webhook body holds {m}: {posted}");
        assert!(
            !stored.windows(m.len()).any(|w| w == m.as_bytes()),
            "an object in the bucket holds {m}"
        );
        let files = files_holding(f.dir.path(), m, &[]);
        assert!(files.is_empty(), "{m} in {files:?} (after {covered:?})");
        let files = files_holding(&cluster.data, m, &[]);
        assert!(files.is_empty(), "{m} in the server's files {files:?}");
    }
    eprintln!("covered: {covered:#?}\nwebhook bodies: {posted}");
    sink.abort();
}
