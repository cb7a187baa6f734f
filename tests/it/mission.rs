//! The whole mission, unattended, with two replicas: two real `gsdr daemon`
//! processes share one policy and one S3 server (moto: a primary and an
//! off-site prefix), and by themselves back up every engine (PostgreSQL 15
//! with WAL archiving through `wal-push`, redis-server, nx-27017 for MongoDB,
//! a command source), drive Velero (through the fake Kubernetes API of
//! `support::fake_kube`: there is no Kubernetes here), run the scheduled
//! drill into scratch servers, prune, sweep the off-site copy, collect
//! garbage and refresh their metrics, on schedules compressed to seconds.
//! One Velero backup is made to fail.
//!
//! It checks what an on-call engineer relies on: every slot ran exactly once
//! across the replicas (the job records in the catalog), drill reports and
//! Velero records landed in the catalog, both replicas publish the same
//! per-source and per-job series, the injected failure shows in the record
//! and the metrics and is notified exactly once, and `gsdr status --json`
//! lists every job with its last outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::Fixture;
use crate::support::fake_kube::{step, FakeKube};
use crate::support::mongo::NxMongo;
use crate::support::moto::Moto;
use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
use crate::support::redis::{Opts, RedisServer};
use crate::support::{free_port, gsdr_bin, repo_root, require_program};

/// A webhook receiver on a loopback port: every POSTed body, in order.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    async fn start() -> Hook {
        use axum::routing::post;
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let b = b.clone();
                async move {
                    let v = serde_json::from_slice(&body)
                        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
                    b.lock().unwrap().push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Hook { url, bodies }
    }

    fn texts(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect()
    }
}

/// A daemon process, stopped with SIGTERM (then killed) on drop.
struct Daemon {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(f: &Fixture, tag: &str, kubeconfig: &Path) -> Daemon {
        let port = free_port();
        let log = f.dir.path().join(format!("daemon-{tag}.log"));
        let child = Command::new(gsdr_bin())
            .args(["--json", "--policy"])
            .arg(&f.policy)
            .args(["daemon", "--metrics-addr", &format!("127.0.0.1:{port}")])
            .env("KUBECONFIG", kubeconfig)
            .env("HOSTNAME", format!("replica-{tag}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, port, log }
    }

    async fn metrics(&self) -> Option<String> {
        let r = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .ok()?;
        r.text().await.ok()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!(
                    "daemon did not stop within 60 s of SIGTERM; log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The series both replicas must agree on: per source and per job, all read from the catalog.
const SHARED_SERIES: &[&str] = &[
    "gsdr_backup_last_success_timestamp_seconds",
    "gsdr_backup_last_attempt_success",
    "gsdr_backup_interval_seconds",
    "gsdr_rpo_target_seconds",
    "gsdr_rpo_safe_point_timestamp_seconds",
    "gsdr_replication_lag_seconds",
    "gsdr_recovery_point_timestamp_seconds",
    "gsdr_wal_last_archived_timestamp_seconds",
    "gsdr_job_last_attempt_success",
    "gsdr_job_last_success_timestamp_seconds",
    "gsdr_job_last_run_timestamp_seconds",
    "gsdr_velero_last_attempt_success",
    "gsdr_velero_last_success_timestamp_seconds",
    "gsdr_drill_last_success",
    "gsdr_drill_last_run_timestamp_seconds",
];

/// Values `this` held for at least `min_run` consecutive scrapes that
/// `other` never showed during the run or within `window` scrapes of it,
/// as "from Ns to Ms: series = value".
fn held_alone(
    this: &[BTreeMap<String, String>],
    other: &[BTreeMap<String, String>],
    min_run: usize,
    window: usize,
) -> Vec<String> {
    let keys: std::collections::BTreeSet<&String> = this.iter().flat_map(|s| s.keys()).collect();
    let mut found = Vec::new();
    for k in keys {
        let mut i = 0;
        while i < this.len() {
            let Some(v) = this[i].get(k) else {
                i += 1;
                continue;
            };
            let start = i;
            while i < this.len() && this[i].get(k) == Some(v) {
                i += 1;
            }
            if i - start < min_run {
                continue;
            }
            let (lo, hi) = (start.saturating_sub(window), (i + window).min(other.len()));
            if !other[lo..hi].iter().any(|s| s.get(k) == Some(v)) {
                found.push(format!("from {start}s to {}s: {k} = {v}", i - 1));
            }
        }
    }
    found
}

#[test]
fn held_alone_reports_only_long_runs_the_other_never_shows() {
    let at = |v: &str| BTreeMap::from([("x".to_string(), v.to_string())]);
    let a: Vec<_> = ["1", "2", "2", "2", "3"].iter().map(|v| at(v)).collect();
    let b: Vec<_> = ["1", "1", "1", "1", "3"].iter().map(|v| at(v)).collect();
    assert_eq!(held_alone(&a, &b, 3, 1), vec!["from 1s to 3s: x = 2"]);
    assert!(
        held_alone(&a, &b, 4, 1).is_empty(),
        "a run shorter than min_run"
    );
    assert!(held_alone(&b, &a, 3, 1).is_empty(), "b's 1 shows on a");
}

/// `name{labels}` → value, for the [`SHARED_SERIES`].
fn shared_series(text: &str) -> BTreeMap<String, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .filter(|s| SHARED_SERIES.contains(&s.metric.as_str()))
        // The status refresh runs on every replica (not leased): its own series differ by design.
        .filter(|s| s.labels.get("kind") != Some("wal-status"))
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Counter(v) => v,
                _ => f64::NAN,
            };
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            (
                format!("{}{{{}}}", s.metric, labels.join(",")),
                v.to_string(),
            )
        })
        .collect()
}

/// The job records under `jobs/` of `prefix` in the bucket, by `kind/name`.
async fn records(moto: &Moto, prefix: &str) -> BTreeMap<String, Value> {
    let c = moto.client();
    let mut out = BTreeMap::new();
    let list = c
        .list_objects_v2()
        .bucket(&moto.bucket)
        .prefix(format!("{prefix}/jobs/"))
        .send()
        .await
        .unwrap();
    for o in list.contents() {
        let key = o.key().unwrap();
        let body = c
            .get_object()
            .bucket(&moto.bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        if key.ends_with("/jobs/watch-state.json") {
            continue; // the watch's state, not a job record
        }
        let id = format!(
            "{}/{}",
            v["kind"].as_str().unwrap(),
            v["name"].as_str().unwrap()
        );
        out.insert(id, v);
    }
    out
}

async fn keys_under(moto: &Moto, prefix: &str) -> Vec<String> {
    let c = moto.client();
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let r = c
            .list_objects_v2()
            .bucket(&moto.bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        out.extend(
            r.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        match r.next_continuation_token() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

/// How many runs each job must have made before the run is long enough.
fn enough(recs: &BTreeMap<String, Value>) -> bool {
    let runs = |id: &str| {
        recs.get(id)
            .and_then(|r| r["history"].as_array())
            .map_or(0, |h| h.len())
    };
    runs("backup/platform-config") >= 4
        && runs("backup/redis") >= 3
        && runs("backup/mongo") >= 3
        && runs("backup/postgres") >= 2
        && runs("velero/glucosync-daily") >= 3
        && runs("drill/scheduled") >= 2
        && runs("prune/all") >= 2
        && runs("replicate/all") >= 3
        && runs("gc/all") >= 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_run_the_whole_mission_exactly_once_and_agree() {
    let mut pg = PgCluster::init("");
    let rs = RedisServer::start(Opts {
        extra: vec![("enable-debug-command".into(), "yes".into())],
        ..Opts::default()
    });
    let nxm = NxMongo::start();
    let nx = require_program("nx-27017", "pip install nx-27017 into $GSDR_TEST_VENV");
    let moto = Moto::start_own(&[]).await;
    let fake = FakeKube::start().await;
    let hook = Hook::start().await;
    // Velero: the second Backup gsdr creates fails; every other one completes.
    for i in 0..12 {
        let phase = if i == 1 { "Failed" } else { "Completed" };
        fake.script(
            "backups",
            vec![
                step(50, json!({ "phase": "InProgress" })),
                step(
                    300,
                    json!({ "phase": phase, "completionTimestamp": chrono::Utc::now().to_rfc3339(), "errors": u32::from(i == 1) }),
                ),
            ],
        );
    }
    fake.set_log("*", "time=\"x\" level=error msg=\"backup failed\"\n");

    let s3 = |prefix: &str| {
        format!(
            "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
             access_key_id = {{ file = \"{{dir}}/s3-key\" }}\nsecret_access_key = {{ file = \"{{dir}}/s3-key\" }}\npart_size = \"5MiB\"\n",
            moto.endpoint, moto.bucket
        )
    };
    // The production policy's shape (policies/glucosync.toml) with the
    // schedules compressed to seconds (6-field cron: second first).
    let f = Fixture::new(&format!(
        "[targets.minio]\n{}\n[targets.offsite]\n{}\n\
         [defaults]\ntarget = \"minio\"\noffsite = \"offsite\"\nretention = {{ keep_last = 3 }}\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [sources.postgres]\nkind = \"postgres\"\nschedule = \"*/40 * * * * *\"\n[sources.postgres.postgres]\nhost = \"127.0.0.1\"\nport = {}\npg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\nprefetch = 4\n\
         [sources.redis]\nkind = \"redis\"\nschedule = \"10/20 * * * * *\"\n[sources.redis.redis]\naddr = \"{}\"\n\
         [sources.mongo]\nkind = \"mongo\"\nschedule = \"5/30 * * * * *\"\n[sources.mongo.mongo]\nuri = {{ file = \"{{dir}}/mongo-uri\" }}\nread_preference = \"primary\"\n\
         [sources.platform-config]\nkind = \"command\"\nschedule = \"*/15 * * * * *\"\n[sources.platform-config.command]\nargv = [\"head\", \"-c\", \"1000000\", \"/dev/urandom\"]\n\
         [drills]\nschedule = \"0 * * * * *\"\nscenarios = [\"mission-loss\"]\nkeep_reports = 12\nrunbooks_dir = \"{{dir}}/runbooks\"\nscratch_dir = \"{{dir}}/scratch\"\n\
         mongo_scratch_argv = [\"{}\", \"--db\", \"memory\", \"--host\", \"127.0.0.1\", \"-p\", \"{{port}}\", \"--log-file\", \"nx.log\", \"--pid-file\", \"nx.pid\"]\n\
         [velero]\nnamespace = \"velero\"\ntimeout = \"30s\"\n[velero.jobs.glucosync-daily]\nschedule = \"20/30 * * * * *\"\nttl = \"720h\"\ninclude_cluster_resources = true\n\
         [daemon]\nlease_ttl = \"20s\"\nlease_renew = \"4s\"\nretry_max_attempts = 2\nretry_backoff_base = \"1s\"\nretry_backoff_max = \"2s\"\n\
         replicate_every = \"20s\"\nwal_status_every = \"5s\"\ngc_every = \"30s\"\ngc_grace = \"1h\"\nprune_schedule = \"45 * * * * *\"\nwatch_every = \"20s\"\n\
         missed_runs = \"skip\"\ngrace_period = \"30s\"\nnotify_min_interval = \"1h\"\nwebhook_url = {{ file = \"{{dir}}/webhook\" }}\n",
        s3("mission"),
        s3("mission-offsite"),
        pg.port,
        pg_gsdr_bin().display(),
        rs.addr(),
        nx.display()
    ));
    let dir = f.dir.path();
    std::fs::write(dir.join("s3-key"), "gsdr-test-key\n").unwrap();
    std::fs::write(dir.join("mongo-uri"), nxm.uri()).unwrap();
    std::fs::write(dir.join("webhook"), &hook.url).unwrap();
    let rb = dir.join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    let all = crate::drill::node_loss_without_velero("mission-loss");
    std::fs::write(rb.join("mission-loss.toml"), all).unwrap();
    give_to_pg_user(dir);
    pg.append_conf(&format!(
        "archive_mode = on\narchive_timeout = 10\narchive_command = '{} --policy {} -q wal-push --source postgres %p'\n",
        pg_gsdr_bin().display(),
        f.policy.display()
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", "1", "-q"]);
    let mut c = rs.conn(0).await;
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(20_000)
        .arg("reading")
        .query_async(&mut c)
        .await
        .unwrap();
    let client = nxm.client().await;
    let docs: Vec<mongodb::bson::Document> = (0..2_000)
        .map(|i| mongodb::bson::doc! { "seq": i, "mg_dl": 90 + i % 50 })
        .collect();
    client
        .database("glucosync")
        .collection::<mongodb::bson::Document>("readings")
        .insert_many(docs)
        .await
        .unwrap();
    // What a platform has when gsdr takes over: one backup of each source.
    f.gsdr_json(&["canary"]);
    let b = f.gsdr_json(&["backup"]);
    assert_eq!(b["backups"].as_array().unwrap().len(), 4, "{b}");
    pg.switch_and_wait_archived(Duration::from_secs(120));

    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: not-a-secret\n",
            fake.url
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut a = Daemon::start(&f, "a", &kubeconfig);
    let mut b = Daemon::start(&f, "b", &kubeconfig);

    // Long enough that every job kind fired several times (bounded).
    let limit = Duration::from_secs(300);
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let recs = records(&moto, "mission").await;
        if enough(&recs) {
            break;
        }
        assert!(
            started.elapsed() < limit,
            "not every job ran often enough within {limit:?}: {}\nlog a: {}",
            serde_json::to_string_pretty(&recs).unwrap(),
            std::fs::read_to_string(&a.log).unwrap_or_default()
        );
    }
    eprintln!(
        "mission: every job fired several times after {:.0} s",
        started.elapsed().as_secs_f64()
    );

    // Both replicas publish the same per-source and per-job series (read
    // from the catalog). The jobs never rest here (slots every few seconds),
    // so the check is on runs: scraped every second for 40 s, a value one
    // replica held for more than two of its refreshes (`wal_status_every` =
    // 5 s, so 11 scrapes or more: the catalog state behind it lasted over
    // 10 s) must show on the other replica during that run or within
    // WINDOW seconds of it. A state that lasts a few seconds (a base backup's
    // burst of WAL segments, copied off-site moments later) can fall between
    // one replica's refreshes; a replica that keeps a value of its own cannot.
    let mut sa = Vec::new();
    let mut sb = Vec::new();
    let mut last_text = String::new();
    let mut last_b = String::new();
    for _ in 0..40 {
        let (Some(ta), Some(tb)) = (a.metrics().await, b.metrics().await) else {
            panic!("a replica stopped serving /metrics");
        };
        sa.push(shared_series(&ta));
        sb.push(shared_series(&tb));
        last_text = ta;
        last_b = tb;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let disagreements = [(&sa, &sb, "a"), (&sb, &sa, "b")]
        .into_iter()
        .flat_map(|(this, other, name)| {
            held_alone(this, other, 11, 8)
                .into_iter()
                .map(move |d| format!("{name} {d}"))
        })
        .collect::<Vec<_>>();
    assert!(
        disagreements.is_empty(),
        "{} disagreements, first: {:#?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(10)]
    );
    let ma = sa.last().unwrap().clone();
    assert_eq!(
        ma.keys().collect::<Vec<_>>(),
        sb.last().unwrap().keys().collect::<Vec<_>>(),
        "both replicas publish the same series"
    );
    let mb = last_text.clone();
    // The shipped alert rules on the series both replicas published at the
    // end of the run: nothing fires on this healthy platform, and a Velero
    // job whose last attempt failed raises exactly one alert.
    promtool_on_captured(&last_text, &last_b, chrono::Utc::now(), dir);
    for source in ["postgres", "redis", "mongo", "platform-config"] {
        let k = format!("gsdr_backup_last_success_timestamp_seconds{{source={source}}}");
        assert!(ma.contains_key(&k), "{k} missing: {ma:#?}");
    }
    assert!(
        ma.contains_key("gsdr_wal_last_archived_timestamp_seconds{source=postgres}"),
        "{ma:#?}"
    );
    assert_eq!(
        ma.get("gsdr_drill_last_success{scenario=mission-loss}"),
        Some(&"1".to_string()),
        "{ma:#?}"
    );
    std::fs::write(dir.join("metrics-a.txt"), &mb).unwrap();

    let sa = a.stop();
    let sb = b.stop();
    let logs = format!(
        "log a: {}\nlog b: {}",
        std::fs::read_to_string(&a.log).unwrap_or_default(),
        std::fs::read_to_string(&b.log).unwrap_or_default()
    );
    assert!(sa.success() && sb.success(), "exit {sa} / {sb}\n{logs}");

    // Every slot ran exactly once across the replicas. moto's conditional
    // writes are check-then-act (ARCHITECTURE.md): a rare race has two
    // winners; allow one such slot in the whole run, never a pattern.
    let recs = records(&moto, "mission").await;
    let mut doubles = Vec::new();
    let mut holders = BTreeSet::new();
    for (id, r) in &recs {
        let h = r["history"].as_array().unwrap();
        let mut slots = BTreeSet::new();
        for e in h {
            holders.insert(e["holder"].as_str().unwrap().to_string());
            if !slots.insert(e["slot"].as_str().unwrap().to_string()) {
                doubles.push(format!("{id} {}", e["slot"]));
            }
        }
    }
    assert!(doubles.len() <= 1, "slots run twice: {doubles:?}");
    assert_eq!(holders.len(), 2, "both replicas took slots: {holders:?}");
    let ids: BTreeSet<&str> = recs.keys().map(String::as_str).collect();
    for id in [
        "backup/postgres",
        "backup/redis",
        "backup/mongo",
        "backup/platform-config",
        "velero/glucosync-daily",
        "drill/scheduled",
        "prune/all",
        "replicate/all",
        "gc/all",
        "watch/all",
    ] {
        assert!(ids.contains(id), "no record of {id}: {ids:?}");
    }
    // Every scheduled backup succeeded; so did every drill and every policy-wide job.
    for id in [
        "backup/postgres",
        "backup/redis",
        "backup/mongo",
        "backup/platform-config",
        "drill/scheduled",
        "prune/all",
        "replicate/all",
        "gc/all",
        "watch/all",
    ] {
        let h = recs[id]["history"].as_array().unwrap();
        assert!(
            h.iter().all(|e| e["result"] == "success"),
            "{id}: {}\n{logs}",
            serde_json::to_string_pretty(h).unwrap()
        );
    }
    // The injected Velero failure is recorded, and the job recovered after it.
    let v = recs["velero/glucosync-daily"]["history"]
        .as_array()
        .unwrap();
    assert_eq!(
        v.iter().filter(|e| e["result"] == "failure").count(),
        1,
        "{v:#?}"
    );
    assert_eq!(v[0]["result"], "success", "{v:#?}");

    // Drill reports and Velero records landed in the catalog.
    let reports: Vec<String> = keys_under(&moto, "mission/drills/")
        .await
        .into_iter()
        .filter(|k| k.ends_with("/mission-loss/report.json"))
        .collect();
    assert!(reports.len() >= 2, "{reports:?}");
    let velero: Vec<String> = keys_under(&moto, "mission/velero/glucosync-daily/").await;
    assert!(velero.len() >= 3, "{velero:?}");
    // Backups went off-site.
    let off = keys_under(&moto, "mission-offsite/").await;
    for s in ["postgres/", "redis/", "mongo/", "platform-config/"] {
        assert!(
            off.iter()
                .any(|k| k.starts_with(&format!("mission-offsite/{s}"))
                    && k.ends_with("manifest.json")),
            "no off-site backup of {s}"
        );
    }

    // The failure was notified once (by the replica that ran the slot), and its recovery once.
    let texts = hook.texts();
    let failed: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("Velero backup `glucosync-daily` failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{texts:#?}");
    let recovered = texts
        .iter()
        .filter(|t| t.contains("Velero backup `glucosync-daily` recovered"))
        .count();
    assert_eq!(recovered, 1, "{texts:#?}");
    // The watch job (one replica) told each new drill result once, with its report's location.
    let drills: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("drill `mission-loss` passed"))
        .collect();
    let drill_runs = recs["drill/scheduled"]["history"].as_array().unwrap().len();
    assert!(
        !drills.is_empty() && drills.len() <= drill_runs,
        "{drill_runs} drills, notices: {texts:#?}"
    );
    assert!(
        drills
            .iter()
            .all(|t| t.contains("report s3://") && t.contains("/drills/")),
        "{drills:#?}"
    );
    let mut seen = BTreeSet::new();
    for t in &drills {
        assert!(seen.insert(t.as_str()), "a drill result told twice: {t}");
    }

    // `gsdr status --json` lists every job with its last outcome.
    let st = f.gsdr_json(&["status"]);
    let jobs = st["jobs"].as_array().unwrap();
    let listed: BTreeSet<&str> = jobs.iter().map(|j| j["job"].as_str().unwrap()).collect();
    for id in ids.iter().chain(["wal-status/all"].iter()) {
        assert!(listed.contains(id), "{id} not in status: {st}");
    }
    for j in jobs.iter().filter(|j| j["leased"] == true) {
        assert!(
            j["last_run"]["result"].is_string(),
            "{} has no last outcome: {st}",
            j["job"]
        );
        assert!(j["next_run"].is_string(), "{st}");
    }
    // ... and how far a restore of each source reaches on each target.
    for source in ["postgres", "redis", "mongo", "platform-config"] {
        let row = st["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["source"] == source)
            .unwrap_or_else(|| panic!("{source} not in status: {st}"));
        let roles: Vec<&str> = row["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["primary", "offsite"], "{row}");
        for t in row["targets"].as_array().unwrap() {
            assert!(
                t["point"].is_string(),
                "{source} has no recoverable point: {row}"
            );
            assert!(t["exposure_secs"].as_f64().unwrap() >= 0.0, "{row}");
        }
    }
}

/// `promtool test rules` with the PrometheusRule of the monitoring component
/// on the series `a` and `b` published (as pods `a` and `b`), timestamps
/// shifted so that the capture is at the evaluation time.
fn promtool_on_captured(a: &str, b: &str, captured: chrono::DateTime<chrono::Utc>, dir: &Path) {
    const EVAL_MIN: i64 = 300;
    let shift = captured.timestamp() as f64 - (EVAL_MIN * 60) as f64;
    let mut series = Vec::new();
    for (pod, text) in [("a", a), ("b", b)] {
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
        for s in scrape.samples {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            if !s.metric.starts_with("gsdr_") || !v.is_finite() {
                continue;
            }
            let v = if s.metric.ends_with("_timestamp_seconds") {
                v - shift
            } else {
                v
            };
            let mut labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.push(format!("pod=\"{pod}\""));
            labels.sort();
            series.push((s.metric.clone(), labels.join(","), v));
        }
        series.push((
            "up".into(),
            format!("job=\"gsdr-metrics\",pod=\"{pod}\""),
            1.0,
        ));
    }
    let rule = std::fs::read_to_string(
        repo_root().join("deploy/components/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    let rule: serde_yaml::Value = serde_yaml::from_str(&rule).unwrap();
    let alerts: Vec<String> = rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    let inputs = |failed_velero: bool| -> String {
        series
            .iter()
            .map(|(m, l, v)| {
                let v = if failed_velero
                    && m == "gsdr_velero_last_attempt_success"
                    && l.contains("name=\"glucosync-daily\"")
                {
                    0.0
                } else {
                    *v
                };
                format!("      - {{ series: '{m}{{{l}}}', values: '{v}x{EVAL_MIN}' }}\n")
            })
            .collect()
    };
    let mut t = String::from("rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n");
    t += "  - name: the series captured at the end of the mission run fire nothing\n    interval: 1m\n    input_series:\n";
    t += &inputs(false);
    t += "    alert_rule_test:\n";
    for al in &alerts {
        t += &format!("      - {{ eval_time: {EVAL_MIN}m, alertname: {al}, exp_alerts: [] }}\n");
    }
    t += "  - name: the same with the Velero job's last attempt failed on both replicas\n    interval: 1m\n    input_series:\n";
    t += &inputs(true);
    t += &format!(
        "    alert_rule_test:\n      - eval_time: {EVAL_MIN}m\n        alertname: GsdrVeleroBackupFailed\n        exp_alerts:\n\
         \x20         - exp_labels: {{ severity: warning, name: glucosync-daily }}\n\
         \x20           exp_annotations:\n\
         \x20             summary: \"Velero backup job glucosync-daily failed\"\n\
         \x20             description: \"The last Velero Backup of glucosync-daily did not complete; `gsdr velero status` lists it with Velero's reason.\"\n"
    );
    let pdir = dir.join("promtool");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(
        pdir.join("rules.yaml"),
        serde_yaml::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    std::fs::write(pdir.join("captured.yaml"), &t).unwrap();
    let promtool = require_program(
        "promtool",
        "install Debian's `prometheus` package (scripts/install-deps.sh)",
    );
    let out = Command::new(promtool)
        .args(["test", "rules", "captured.yaml"])
        .current_dir(&pdir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules on the captured series:\n{}{}\n{t}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "mission: promtool passed on {} captured series ({} alerts checked)",
        series.len(),
        alerts.len()
    );
}
