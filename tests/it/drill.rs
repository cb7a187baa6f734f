//! DR drills and incident restores over `command` sources, end to end through
//! the real binary: reports (JSON, Markdown, offline HTML), missed targets,
//! failing checks with scratch cleanup, incident plans and resume, and the
//! runbooks kept in sync with their scenario files.

use std::path::{Path, PathBuf};

use crate::cli::Fixture;
use crate::support::{repo_root, tempdir};

const TARGETS: &str = "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n[targets.offsite]\nkind = \"fs\"\npath = \"{dir}/offsite\"\n";

/// Two command sources (`cfg`, `data`) backing up files written into the fixture.
pub(crate) fn fixture(objectives: &str) -> Fixture {
    fixture_with(TARGETS, objectives)
}

/// [`fixture`] with other `local` and `offsite` targets.
fn fixture_with(targets: &str, objectives: &str) -> Fixture {
    let f = Fixture::new(&format!(
        "{targets}[defaults]\ntarget = \"local\"\noffsite = \"offsite\"\nobjectives = {objectives}\n\
         [sources.cfg]\nkind = \"command\"\n[sources.cfg.command]\nargv = [\"cat\", \"{{dir}}/cfg.txt\"]\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{{dir}}/data.bin\"]\n"
    ));
    std::fs::write(f.dir.path().join("cfg.txt"), "replicas = 3\n").unwrap();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(f.dir.path().join("data.bin"), data).unwrap();
    let j = f.gsdr_json(&["backup"]);
    assert_eq!(j["backups"].as_array().unwrap().len(), 2, "{j}");
    f
}

pub(crate) const SCENARIO: &str = r#"
name = "cmd-loss"
title = "Both command sources are lost"
description = "Restore both streams and verify them."
from = "primary"
max_parallel = 2

[[steps]]
name = "restore-cfg"
kind = "restore_command_source"
source = "cfg"

[[steps]]
name = "restore-data"
kind = "restore_command_source"
source = "data"

[[steps]]
name = "sha-cfg"
kind = "sha256"
source = "cfg"
after = ["restore-cfg"]

[[steps]]
name = "sha-data"
kind = "sha256"
source = "data"
after = ["restore-data"]

[[steps]]
name = "point-data"
kind = "canary_age"
source = "data"
after = ["restore-data"]
"#;

/// A runbooks dir holding `text` as `<name>.toml`.
pub(crate) fn runbooks(f: &Fixture, name: &str, text: &str) -> PathBuf {
    let d = f.dir.path().join("runbooks");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(format!("{name}.toml")), text).unwrap();
    d
}

/// A runbooks dir with `ransom`: [`SCENARIO`] from the off-site copy, the
/// primary hostile, plus `extra` scenario settings.
fn ransom_runbooks(f: &Fixture, extra: &str) -> PathBuf {
    let text = SCENARIO
        .replace("name = \"cmd-loss\"", "name = \"ransom\"")
        .replace(
            "from = \"primary\"",
            &format!("from = \"offsite\"\nprimary_hostile = true\n{extra}"),
        );
    runbooks(f, "ransom", &text)
}

fn run(f: &Fixture, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = f.gsdr(&a);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// Writes the heartbeat canary of `source`; returns when it was written.
fn write_canary(f: &Fixture, source: &str) -> chrono::DateTime<chrono::Utc> {
    let c = f.gsdr_json(&["canary", "--source", source]);
    c["canaries"][0]["written_at"]
        .as_str()
        .unwrap_or_else(|| panic!("{c}"))
        .parse()
        .unwrap()
}

/// Runs `drill --scenario NAME` with scratch targets under `scratch`; asserts exit 0.
fn drill_ok(f: &Fixture, scenario: &str, runbooks: &Path, scratch: &Path) -> serde_json::Value {
    let (code, j, err) = run(
        f,
        &[
            "drill",
            "--scenario",
            scenario,
            "--runbooks",
            runbooks.to_str().unwrap(),
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{j}\n{err}");
    j
}

/// The step named `name` of a drill report.
fn step_named<'r>(report: &'r serde_json::Value, name: &str) -> &'r serde_json::Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step `{name}`: {report}"))
}

fn files_in(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn drill_over_command_sources_writes_reports_and_measures() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = runbooks(&f, "cmd-loss", SCENARIO);
    let out = f.dir.path().join("out");
    let scratch = f.dir.path().join("scratch");
    let args = [
        "drill",
        "--scenario",
        "all",
        "--runbooks",
        rb.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ];
    let (code, j, err) = run(&f, &args);
    assert_eq!(code, 0, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["kind"], "drill");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|s| s["status"] == "ok"), "{r}");
    let data = steps.iter().find(|s| s["name"] == "restore-data").unwrap();
    assert_eq!(data["raw_bytes"], 3_000_000);
    assert!(data["duration_secs"].as_f64().unwrap() > 0.0);
    // RTO: start → last step end, within the 1h target.
    let rto = r["rto"]["achieved_secs"].as_f64().unwrap();
    let last_end = steps
        .iter()
        .map(|s| s["start_offset_secs"].as_f64().unwrap() + s["duration_secs"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(
        (rto - last_end).abs() < 1e-9,
        "RTO {rto} is the end of the last step {last_end}"
    );
    assert_eq!(r["rto"]["target_secs"], 3600.0);
    // RPO per source, from the manifests (command sources hold no canary), and said so.
    let rpo = r["rpo"].as_array().unwrap();
    assert_eq!(rpo.len(), 2);
    for p in rpo {
        assert_eq!(p["measured_by"], "manifest");
        assert!(p["note"].as_str().unwrap().contains("canary"), "{p}");
        assert!(p["achieved_secs"].as_f64().unwrap() >= 0.0);
        assert_eq!(p["met"], true);
    }
    // Scratch removed; reports stored in the primary target and written locally.
    assert_eq!(r["scratch_cleaned"], true);
    assert!(files_in(&scratch).is_empty(), "{:?}", files_in(&scratch));
    let keys = j["reports"][0]["stored_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for k in keys {
        let k = k.as_str().unwrap();
        assert!(
            k.starts_with("drills/") && k.contains("/cmd-loss/report."),
            "{k}"
        );
        assert!(f.dir.path().join("store").join(k).is_file(), "{k} stored");
    }
    let local_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("cmd-loss/report.json")).unwrap()).unwrap();
    assert_eq!(local_json["scenario"], "cmd-loss");
    let html = std::fs::read_to_string(out.join("cmd-loss/report.html")).unwrap();
    assert!(html.contains("<svg"), "timeline chart inline");
    for attr in ["src=", "href="] {
        for (i, _) in html.match_indices(attr) {
            let v = &html[i + attr.len()..(i + attr.len() + 12).min(html.len())];
            assert!(
                !v.contains("http"),
                "external resource in the HTML: {attr}{v}"
            );
        }
    }
    assert!(!html.contains("<script"), "no scripts");
    let prom = std::fs::read_to_string(out.join("cmd-loss/report.prom")).unwrap();
    assert!(
        prom.contains("gsdr_drill_passed{scenario=\"cmd-loss\",kind=\"drill\"} 1"),
        "{prom}"
    );
    assert!(prom.contains(&format!("gsdr_drill_rto_seconds{{scenario=\"cmd-loss\",kind=\"drill\",value=\"achieved\"}} {rto}")), "{prom}");
    let md = std::fs::read_to_string(out.join("cmd-loss/report.md")).unwrap();
    assert!(md.contains("PASSED") && md.contains("restore-data"), "{md}");

    // A second drill reads the first back: the trend has two points.
    let (code, j, err) = run(&f, &args);
    assert_eq!(code, 0, "{err}");
    let t = &j["reports"][0]["report"]["trend"];
    assert_eq!(t["points"].as_array().unwrap().len(), 2, "{t}");
    assert!(t["throughput_bytes_per_sec"].as_f64().unwrap() > 0.0);

    // Snapshot of the Markdown report, with times, durations and ids redacted.
    let mut rep: gsdr::drill::DrillReport =
        serde_json::from_value(j["reports"][0]["report"].clone()).unwrap();
    redact(&mut rep);
    insta::assert_snapshot!("drill_report_md", rep.to_markdown());
}

/// Replaces every measured time, duration and id by a fixed value.
fn redact(r: &mut gsdr::drill::DrillReport) {
    let t0: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    r.id = "[run-id]".into();
    r.policy = "[policy]".into();
    r.started_at = t0;
    r.finished_at = t0;
    r.rto.achieved_secs = Some(1.0);
    // Parallel steps start in an order that varies from run to run.
    r.steps.sort_by(|a, b| a.name.cmp(&b.name));
    for (i, s) in r.steps.iter_mut().enumerate() {
        s.start_offset_secs = i as f64;
        s.duration_secs = 0.5;
        s.detail = format!("[detail of {}]", s.kind);
        s.backup_id = s.backup_id.as_ref().map(|_| "[backup-id]".into());
        s.into = s.into.as_ref().map(|_| "[path]".into());
    }
    for p in &mut r.rpo {
        p.recovered_point = t0;
        p.achieved_secs = 2.0;
    }
    r.trend = None;
}

#[test]
fn stale_backups_miss_the_rpo_target_and_exit_1() {
    let f = fixture("{ rto = \"1h\", rpo = \"1s\" }");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let rb = runbooks(&f, "cmd-loss", SCENARIO);
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "cmd-loss",
            "--runbooks",
            rb.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    assert_eq!(r["passed"], false);
    assert!(r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "ok"));
    let failures: Vec<&str> = r["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        failures
            .iter()
            .any(|m| m.contains("RPO of `data` missed") && m.contains("over by")),
        "{failures:?}"
    );
    let data = r["rpo"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["source"] == "data")
        .unwrap();
    assert_eq!(data["met"], false);
    assert!(data["achieved_secs"].as_f64().unwrap() > 1.0);
}

#[test]
fn corrupted_backup_fails_the_drill_and_scratch_is_removed() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    // Flip one byte in the middle of `data`'s stored object.
    let obj = walk(&f.dir.path().join("store/data"))
        .into_iter()
        .find(|p| p.ends_with("data.zst.age"))
        .unwrap();
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&obj, bytes).unwrap();
    let rb = runbooks(&f, "cmd-loss", SCENARIO);
    let scratch = f.dir.path().join("scratch");
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "cmd-loss",
            "--runbooks",
            rb.to_str().unwrap(),
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    let step = |n: &str| {
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(step("restore-data")["status"], "failed", "{r}");
    assert!(!step("restore-data")["detail"].as_str().unwrap().is_empty());
    assert_eq!(step("sha-data")["status"], "skipped");
    assert_eq!(step("restore-cfg")["status"], "ok");
    assert!(
        r["failures"][0].as_str().unwrap().contains("restore-data"),
        "{r}"
    );
    assert_eq!(r["rto"]["achieved_secs"], serde_json::Value::Null);
    assert_eq!(r["scratch_cleaned"], true);
    assert!(
        files_in(&scratch).is_empty(),
        "scratch left behind: {:?}",
        files_in(&scratch)
    );
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in files_in(d) {
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn offsite_scenario_with_hostile_primary_never_touches_it() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    // The off-site copy (replication is not this test's concern), then the primary turns hostile:
    // its folder becomes a plain file, so any access to it fails.
    let store = f.dir.path().join("store");
    let off = f.dir.path().join("offsite");
    for p in walk(&store) {
        let dst = off.join(p.strip_prefix(&store).unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&p, &dst).unwrap();
    }
    std::fs::remove_dir_all(&store).unwrap();
    std::fs::write(&store, "hostile").unwrap();
    let rb = ransom_runbooks(&f, "");
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "ransom",
            "--runbooks",
            rb.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{j}\n{err}");
    let e = &j["reports"][0];
    assert!(e["report"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["raw_bytes"].is_number())
        .all(|s| s["from_target"] == "offsite"));
    assert_eq!(e["store_error"], serde_json::Value::Null, "{e}");
    let k = e["stored_keys"][0].as_str().unwrap();
    assert!(off.join(k).is_file(), "report stored off-site");
    assert_eq!(std::fs::read_to_string(&store).unwrap(), "hostile");
}

const INCIDENT: &str = r#"
name = "inc"
title = "Incident over two command sources"
description = "Restore cfg, then data."

[[steps]]
name = "restore-cfg"
kind = "restore_command_source"
source = "cfg"

[[steps]]
name = "restore-data"
kind = "restore_command_source"
source = "data"
after = ["restore-cfg"]

[[steps]]
name = "sha-data"
kind = "sha256"
source = "data"
after = ["restore-data"]
"#;

#[test]
fn incident_plan_then_failed_run_resumes_without_redoing_steps() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = runbooks(&f, "inc", INCIDENT);
    let d = f.dir.path();
    let cfg_out = d.join("cfg.restored");
    let state = d.join("inc.state.json");
    let into_cfg = format!("cfg={}", cfg_out.display());
    let bad_data = format!("data={}", d.join("missing-dir/data.restored").display());
    let good_data = format!("data={}", d.join("data.restored").display());
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "restore",
            "--scenario",
            "inc",
            "--runbooks",
            rb.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--into",
            &into_cfg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };

    // --plan: the backups, targets and implied RPO; nothing restored.
    let a = base(&["--into", &good_data, "--plan"]);
    let (code, plan, err) = run(&f, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let steps = plan["steps"].as_array().unwrap();
    assert_eq!(steps[0]["backup"]["target"], "local");
    assert!(steps[0]["backup"]["implied_rpo_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(steps[0]["into"], cfg_out.display().to_string());
    assert_eq!(steps[0]["backup"]["engine"], "command");
    assert!(!cfg_out.exists(), "--plan restores nothing");
    let human = f.gsdr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("implied RPO") && text.contains("from target `local`"),
        "{text}"
    );

    // Without --yes and without a terminal: refused.
    let a = base(&["--into", &good_data]);
    let o = f.gsdr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!cfg_out.exists());

    // First run: restore-data fails (its directory is missing); restore-cfg finished and is recorded.
    let a = base(&["--into", &bad_data, "--yes"]);
    let (code, j, err) = run(&f, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    assert_eq!(r["kind"], "incident");
    assert_eq!(r["steps"][0]["status"], "ok");
    assert_eq!(r["steps"][1]["status"], "failed");
    assert!(cfg_out.is_file() && state.is_file());
    let planned_cfg = steps[0]["backup"]["id"].clone();
    assert_eq!(
        r["steps"][0]["backup_id"], planned_cfg,
        "execution uses the planned backup"
    );

    // A rerun without --resume refuses to start over silently.
    let o = f.gsdr(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--resume"));

    // Resume with the directory fixed: restore-cfg is not redone (its file stays deleted).
    std::fs::remove_file(&cfg_out).unwrap();
    let a = base(&["--into", &good_data, "--yes", "--resume"]);
    let (code, j, err) = run(&f, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    assert_eq!(r["steps"][0]["status"], "already_done", "{r}");
    assert_eq!(r["steps"][1]["status"], "ok");
    assert_eq!(r["steps"][2]["status"], "ok");
    assert!(!cfg_out.exists(), "finished step was not redone");
    assert_eq!(
        std::fs::read(d.join("data.restored")).unwrap(),
        std::fs::read(d.join("data.bin")).unwrap()
    );
    assert!(r["rto"]["achieved_secs"].as_f64().is_some());
    assert!(
        !state.exists(),
        "the state file is removed once the incident is recovered"
    );
    assert!(j["reports"][0]["stored_keys"][0]
        .as_str()
        .unwrap()
        .starts_with("incidents/"));
}

#[test]
fn runbook_markdown_is_generated_from_the_scenario_files() {
    let dir = repo_root().join("runbooks");
    let scenarios = gsdr::drill::scenario::load_dir(&dir).unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "node-loss",
        "mongo-primary-loss",
        "redis-loss",
        "postgres-corruption",
        "region-loss",
        "ransomware",
    ] {
        assert!(names.contains(&want), "runbooks/{want}.toml is missing");
    }
    for s in &scenarios {
        let md = std::fs::read_to_string(dir.join(format!("{}.md", s.name))).unwrap_or_default();
        assert_eq!(
            md,
            s.render_markdown(),
            "runbooks/{}.md is out of date: run `gsdr drill --render-runbooks --runbooks runbooks`",
            s.name
        );
    }
}

const REDIS_SCENARIO: &str = r#"
name = "redis-loss"
title = "Redis is lost"
description = "Restore the RDB into a scratch redis-server and verify it."

[[steps]]
name = "restore-redis"
kind = "restore_redis"
source = "cache"

[[steps]]
name = "keys"
kind = "redis_keys"
source = "cache"
min = 202
after = ["restore-redis"]

[[steps]]
name = "canary"
kind = "canary_age"
source = "cache"
after = ["restore-redis"]
"#;

/// A real Redis: heartbeat canary, backup, drill into a scratch redis-server;
/// the RPO comes from the canary found in the restored data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_drill_measures_rpo_from_the_restored_canary() {
    use crate::support::redis::{Opts, RedisServer};
    let server = RedisServer::start(Opts::default());
    let mut c = server.conn(0).await;
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("reading:{i}"))
            .arg(i)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n[sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
        server.addr()
    ));
    let written = write_canary(&f, "cache");
    // A key written after the canary but before the backup: the canary, not the backup time, is the recovered point.
    let _: () = redis::cmd("SET")
        .arg("late")
        .arg(1)
        .query_async(&mut c)
        .await
        .unwrap();
    f.gsdr_json(&["backup", "--source", "cache"]);
    let rb = runbooks(&f, "redis-loss", REDIS_SCENARIO);
    let scratch = f.dir.path().join("scratch");
    let j = drill_ok(&f, "redis-loss", &rb, &scratch);
    let r = &j["reports"][0]["report"];
    let keys = step_named(r, "keys");
    assert_eq!(
        keys["detail"], "202 keys (at least 202 expected)",
        "200 readings, the canary, the late key"
    );
    let rpo = &r["rpo"][0];
    assert_eq!(rpo["measured_by"], "canary", "{rpo}");
    let recovered: chrono::DateTime<chrono::Utc> =
        rpo["recovered_point"].as_str().unwrap().parse().unwrap();
    assert_eq!(recovered.timestamp_millis(), written.timestamp_millis());
    let started: chrono::DateTime<chrono::Utc> = r["started_at"].as_str().unwrap().parse().unwrap();
    let want = (started - written).num_milliseconds() as f64 / 1000.0;
    assert!((rpo["achieved_secs"].as_f64().unwrap() - want).abs() < 0.01);
    // The scratch redis-server is gone and its directory removed.
    let into = r["steps"][0]["into"].as_str().unwrap();
    let port: u16 = into
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "scratch server still listening on {port}"
    );
    assert!(files_in(&scratch).is_empty());

    // Incident: the same scenario into a real Redis endpoint that holds keys:
    // the plan says what the restore flushes there.
    let fresh = RedisServer::start(Opts::default());
    {
        let mut fc = fresh.conn(3).await;
        let mut p = redis::pipe();
        for i in 0..1234 {
            p.cmd("SET").arg(format!("stale{i}")).arg(i).ignore();
        }
        p.query_async::<()>(&mut fc).await.unwrap();
    }
    let into = format!("cache={}", fresh.url(0));
    let state = f.dir.path().join("redis.state.json");
    let plan = f.gsdr(&[
        "restore",
        "--scenario",
        "redis-loss",
        "--runbooks",
        rb.to_str().unwrap(),
        "--into",
        &into,
        "--plan",
    ]);
    let text = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "overwrites: flushes 1,234 keys in redis://127.0.0.1:{} (db3 1,234)",
            fresh.port
        )),
        "{text}"
    );
    let (code, j, err) = run(
        &f,
        &[
            "restore",
            "--scenario",
            "redis-loss",
            "--runbooks",
            rb.to_str().unwrap(),
            "--into",
            &into,
            "--state",
            state.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(code, 0, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    assert_eq!(r["kind"], "incident");
    assert_eq!(r["rpo"][0]["measured_by"], "canary");
    let mut fc = fresh.conn(0).await;
    let n: u64 = redis::cmd("DBSIZE").query_async(&mut fc).await.unwrap();
    assert_eq!(n, 202, "every key restored into the endpoint");
}

/// The daemon's entry point: the `[drills]` section picks the scenarios, each
/// report is stored, and only the newest `keep_reports` are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_drills_run_from_the_policy_and_keep_n_reports() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = runbooks(&f, "cmd-loss", SCENARIO);
    let mut text = std::fs::read_to_string(&f.policy).unwrap();
    text += &format!(
        "[drills]\nschedule = \"0 4 * * SUN\"\nscenarios = [\"cmd-loss\"]\nkeep_reports = 2\nrunbooks_dir = \"{}\"\n",
        rb.display()
    );
    std::fs::write(&f.policy, &text).unwrap();
    let policy = gsdr::policy::Policy::load(&f.policy).unwrap();
    assert_eq!(policy.drills.as_ref().unwrap().keep_reports, 2);
    let env = gsdr::job::Env::new(policy);
    for i in 0..3 {
        let out = gsdr::drill::run_scheduled(&env, None, &gsdr::job::NoProgress)
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, "cmd-loss");
        let r = out[0].1.as_ref().unwrap();
        assert!(r.report.passed, "{:?}", r.report.failures);
        assert_eq!(
            r.report.trend.as_ref().unwrap().points.len(),
            (i + 1).min(3)
        );
        // Report prefixes have one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let runs = files_in(&f.dir.path().join("store/drills"));
    assert_eq!(runs.len(), 2, "{runs:?}");
}

const PG_SCENARIO: &str = r#"
name = "pg-corruption"
title = "PostgreSQL point-in-time restore"
description = "Base backup + WAL into a scratch cluster, then verify."

[[steps]]
name = "restore-postgres"
kind = "restore_postgres_pitr"
source = "pg"

[[steps]]
name = "rows"
kind = "sql"
source = "pg"
query = "SELECT count(*) FROM t"
min = 1500
after = ["restore-postgres"]

[[steps]]
name = "canary"
kind = "canary_age"
source = "pg"
after = ["restore-postgres"]
"#;

/// A real PostgreSQL 15 with `gsdr wal-push` archiving: canary, base backup,
/// more writes and a second canary, archived; the drill restores base + WAL
/// into a scratch cluster, checks the rows, and the RPO comes from the
/// second canary found in the restored data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pitr_drill_measures_rpo_from_the_restored_canary() {
    use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
    let mut cluster = PgCluster::init("");
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
         pg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\nprefetch = 4\n",
        cluster.port,
        pg_gsdr_bin().display()
    ));
    std::fs::create_dir_all(f.dir.path().join("store/pg/wal")).unwrap();
    let rb = runbooks(&f, "pg-corruption", PG_SCENARIO);
    let scratch = f.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    give_to_pg_user(f.dir.path());
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --policy {} -q wal-push --source pg %p'\n",
        pg_gsdr_bin().display(),
        f.policy.display()
    ));
    cluster.start();
    cluster.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    cluster.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    let first = write_canary(&f, "pg");
    f.gsdr_json(&["backup", "--source", "pg"]);
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let t = chrono::Utc::now();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    // After the base backup and T: more rows and a newer canary, only in the WAL.
    cluster.psql("INSERT INTO t SELECT g, 'late' FROM generate_series(1001, 1500) g");
    let written = write_canary(&f, "pg");
    cluster.switch_and_wait_archived(std::time::Duration::from_secs(90));

    let j = drill_ok(&f, "pg-corruption", &rb, &scratch);
    let r = &j["reports"][0]["report"];
    let rows = step_named(r, "rows");
    assert_eq!(
        rows["detail"], "`SELECT count(*) FROM t` = 1500 (at least 1500 expected)",
        "{r}"
    );
    let rpo = &r["rpo"][0];
    assert_eq!(rpo["measured_by"], "canary", "{rpo}");
    let recovered: chrono::DateTime<chrono::Utc> =
        rpo["recovered_point"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        recovered.timestamp_micros(),
        written.timestamp_micros(),
        "the canary written after the base backup, replayed from WAL"
    );
    assert!(files_in(&scratch).is_empty(), "{:?}", files_in(&scratch));

    // Point in time: to T (between the two canaries), as the postgres-corruption scenario does.
    let pitr = PG_SCENARIO
        .replace(
            "name = \"pg-corruption\"",
            "name = \"pg-pitr\"\npitr_before = \"0s\"",
        )
        .replace("min = 1500", "min = 1000");
    let rb = runbooks(&f, "pg-pitr", &pitr);
    let tt = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "pg-pitr",
            "--runbooks",
            rb.to_str().unwrap(),
            "--target-time",
            &tt,
        ],
    );
    assert_eq!(code, 0, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    let rows = step_named(r, "rows");
    assert_eq!(
        rows["detail"], "`SELECT count(*) FROM t` = 1000 (at least 1000 expected)",
        "{r}"
    );
    let recovered: chrono::DateTime<chrono::Utc> = r["rpo"][0]["recovered_point"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        recovered.timestamp_micros(),
        first.timestamp_micros(),
        "only the canary before T survives"
    );
}

const MONGO_SCENARIO: &str = r#"
name = "mongo-primary-loss"
title = "MongoDB is lost"
description = "Restore the archive into a scratch server and verify it."

[[steps]]
name = "restore-mongo"
kind = "restore_mongo"
source = "m"

[[steps]]
name = "readings"
kind = "mongo_count"
source = "m"
collection = "glucosync.readings"
min = 300
after = ["restore-mongo"]

[[steps]]
name = "canary"
kind = "canary_age"
source = "m"
after = ["restore-mongo"]
"#;

/// nx-27017 (MongoDB wire protocol): canary, archive backup, drill into a
/// scratch nx-27017 started from `drills.mongo_scratch_argv`; the RPO comes
/// from the canary document found in the restored data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_drill_measures_rpo_from_the_restored_canary() {
    use crate::support::mongo::NxMongo;
    use crate::support::require_program;
    let server = NxMongo::start();
    let client = server.client().await;
    let docs: Vec<mongodb::bson::Document> = (0..300)
        .map(|i| mongodb::bson::doc! { "seq": i, "mg_dl": 90 + i % 50 })
        .collect();
    client
        .database("glucosync")
        .collection::<mongodb::bson::Document>("readings")
        .insert_many(docs)
        .await
        .unwrap();
    let nx = require_program("nx-27017", "pip install nx-27017 into $GSDR_TEST_VENV");
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [sources.m]\nkind = \"mongo\"\n[sources.m.mongo]\nuri = {{ file = \"{{dir}}/mongo-uri\" }}\nread_preference = \"primary\"\n\
         [drills]\nmongo_scratch_argv = [\"{}\", \"--db\", \"memory\", \"--host\", \"127.0.0.1\", \"-p\", \"{{port}}\", \"--log-file\", \"{{dir}}/nx.log\", \"--pid-file\", \"{{dir}}/nx.pid\"]\n",
        nx.display()
    ));
    std::fs::write(f.dir.path().join("mongo-uri"), server.uri()).unwrap();
    let written = write_canary(&f, "m");
    f.gsdr_json(&["backup", "--source", "m"]);
    let rb = runbooks(&f, "mongo-primary-loss", MONGO_SCENARIO);
    let scratch = f.dir.path().join("scratch");
    let j = drill_ok(&f, "mongo-primary-loss", &rb, &scratch);
    let r = &j["reports"][0]["report"];
    let n = step_named(r, "readings");
    assert_eq!(
        n["detail"], "`glucosync.readings`: 300 documents (at least 300 expected)",
        "{r}"
    );
    let rpo = &r["rpo"][0];
    assert_eq!(rpo["measured_by"], "canary", "{rpo}");
    let recovered: chrono::DateTime<chrono::Utc> =
        rpo["recovered_point"].as_str().unwrap().parse().unwrap();
    assert_eq!(recovered.timestamp_millis(), written.timestamp_millis());
    let into = r["steps"][0]["into"].as_str().unwrap();
    let port: u16 = into
        .trim_start_matches("mongodb://127.0.0.1:")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "scratch server still listening on {port}"
    );
    assert!(files_in(&scratch).is_empty());
}

/// Size of the generated platform for the combined drill: `GSDR_DRILL_SCALE`
/// (default 1: seconds; the figure in the report used a larger one).
fn drill_scale() -> u64 {
    env_u64("GSDR_DRILL_SCALE", 1)
}

/// A number from the environment, `default` when unset.
fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `drill --scenario all` over every engine at once: PostgreSQL (pgbench data,
/// WAL archiving), Redis, nx-27017 and a command source, restored in parallel
/// into scratch servers, each verified, RPO from each canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_all_engines_end_to_end() {
    use crate::support::mongo::NxMongo;
    use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
    use crate::support::redis::{Opts, RedisServer};
    use crate::support::require_program;
    let scale = drill_scale();
    let t_setup = std::time::Instant::now();
    let mut pg = PgCluster::init("");
    let rs = RedisServer::start(Opts {
        extra: vec![("enable-debug-command".into(), "yes".into())],
        ..Opts::default()
    });
    let nxm = NxMongo::start();
    let nx = require_program("nx-27017", "pip install nx-27017 into $GSDR_TEST_VENV");
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\nobjectives = {{ rto = \"4h\", rpo = \"6h\" }}\n\
         [sources.postgres]\nkind = \"postgres\"\n[sources.postgres.postgres]\nhost = \"127.0.0.1\"\nport = {}\npg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\nprefetch = 4\n\
         [sources.redis]\nkind = \"redis\"\n[sources.redis.redis]\naddr = \"{}\"\n\
         [sources.mongo]\nkind = \"mongo\"\n[sources.mongo.mongo]\nuri = {{ file = \"{{dir}}/mongo-uri\" }}\nread_preference = \"primary\"\n\
         [sources.platform-config]\nkind = \"command\"\n[sources.platform-config.command]\nargv = [\"head\", \"-c\", \"{}\", \"/dev/urandom\"]\n\
         [drills]\nmongo_scratch_argv = [\"{}\", \"--db\", \"memory\", \"--host\", \"127.0.0.1\", \"-p\", \"{{port}}\", \"--log-file\", \"nx.log\", \"--pid-file\", \"nx.pid\"]\n",
        pg.port,
        pg_gsdr_bin().display(),
        rs.addr(),
        (scale * 4) << 20,
        nx.display()
    ));
    std::fs::write(f.dir.path().join("mongo-uri"), nxm.uri()).unwrap();
    std::fs::create_dir_all(f.dir.path().join("store/postgres/wal")).unwrap();
    let rb = f.dir.path().join("runbooks");
    std::fs::create_dir_all(&rb).unwrap();
    let all = node_loss_without_velero("platform-loss");
    std::fs::write(rb.join("platform-loss.toml"), all).unwrap();
    give_to_pg_user(f.dir.path());
    pg.append_conf(&format!(
        "archive_mode = on\narchive_timeout = 60\narchive_command = '{} --policy {} -q wal-push --source postgres %p'\n",
        pg_gsdr_bin().display(),
        f.policy.display()
    ));
    pg.start();
    pg.pgbench(&["-i", "-s", &scale.to_string(), "-q"]);
    let mut c = rs.conn(0).await;
    let _: () = redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(scale * 20_000)
        .arg("reading")
        // Value size: GSDR_DRILL_REDIS_VALUE bytes (default 64).
        .arg(env_u64("GSDR_DRILL_REDIS_VALUE", 64))
        .query_async(&mut c)
        .await
        .unwrap();
    let client = nxm.client().await;
    // Each reading carries GSDR_DRILL_MONGO_PAYLOAD bytes of notes (default none).
    let notes = "n".repeat(env_u64("GSDR_DRILL_MONGO_PAYLOAD", 0) as usize);
    let docs: Vec<mongodb::bson::Document> = (0..scale as i32 * 2_000)
        .map(|i| mongodb::bson::doc! { "seq": i, "mg_dl": 90 + i % 50, "patient": format!("p{:05}", i % 977), "notes": &notes })
        .collect();
    for chunk in docs.chunks(1000) {
        client
            .database("glucosync")
            .collection::<mongodb::bson::Document>("readings")
            .insert_many(chunk.to_vec())
            .await
            .unwrap();
    }
    let c = f.gsdr_json(&["canary"]);
    assert_eq!(c["canaries"].as_array().unwrap().len(), 3, "{c}");
    let b = f.gsdr_json(&["backup"]);
    assert_eq!(b["backups"].as_array().unwrap().len(), 4, "{b}");
    pg.switch_and_wait_archived(std::time::Duration::from_secs(120));
    eprintln!(
        "setup (data, canaries, backups): {:.1}s",
        t_setup.elapsed().as_secs_f64()
    );

    let out = f.dir.path().join("out");
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "all",
            "--runbooks",
            rb.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{j}\n{err}");
    let r = &j["reports"][0]["report"];
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 12);
    assert!(steps.iter().all(|s| s["status"] == "ok"), "{r}");
    let by: Vec<(String, String)> = r["rpo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["source"].as_str().unwrap().to_string(),
                p["measured_by"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (s, m) in &by {
        assert_eq!(
            m,
            if s == "platform-config" {
                "manifest"
            } else {
                "canary"
            },
            "{by:?}"
        );
    }
    // Restores ran in parallel (max_parallel = 3): some restore started before another ended.
    let restores: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s["kind"].as_str().unwrap().starts_with("restore_"))
        .map(|s| {
            (
                s["start_offset_secs"].as_f64().unwrap(),
                s["start_offset_secs"].as_f64().unwrap() + s["duration_secs"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(
        restores
            .iter()
            .any(|a| restores.iter().any(|b| a != b && b.0 < a.1 && b.0 >= a.0)),
        "{restores:?}"
    );
    let bytes: u64 = steps.iter().filter_map(|s| s["raw_bytes"].as_u64()).sum();
    eprintln!(
        "DRILL scale={scale} restored={bytes} bytes RTO={:.2}s RPO={}",
        r["rto"]["achieved_secs"].as_f64().unwrap(),
        r["rpo"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!(
                "{}={:.1}s",
                p["source"].as_str().unwrap(),
                p["achieved_secs"].as_f64().unwrap()
            ))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for s in steps {
        eprintln!(
            "  {:<24} +{:>7.2}s {:>7.2}s  {}",
            s["name"].as_str().unwrap(),
            s["start_offset_secs"].as_f64().unwrap(),
            s["duration_secs"].as_f64().unwrap(),
            s["detail"].as_str().unwrap()
        );
    }
}

/// Scenarios that cannot run (their sources are not in this policy) are
/// listed with the reason; the others still run; exit 2.
#[test]
fn scenarios_that_cannot_run_are_reported_and_the_rest_still_run() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = runbooks(&f, "cmd-loss", SCENARIO);
    std::fs::copy(
        repo_root().join("runbooks/redis-loss.toml"),
        rb.join("redis-loss.toml"),
    )
    .unwrap();
    let out = f.gsdr(&[
        "--json",
        "drill",
        "--scenario",
        "all",
        "--runbooks",
        rb.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["reports"][0]["report"]["scenario"], "cmd-loss");
    assert_eq!(j["reports"][0]["report"]["passed"], true);
    assert_eq!(j["not_run"][0]["scenario"], "redis-loss");
    assert!(
        j["not_run"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no source `redis`"),
        "{j}"
    );
}

/// Ransomware: only object-locked backups are restored (`require_object_lock`,
/// as in `runbooks/ransomware.toml`). The off-site target is a real moto S3
/// bucket with Object Lock. With no locked backup the scenario cannot run
/// and says why; once the bucket locks new objects, the newest locked backup
/// is used and a newer unlocked one (as an attacker holding the off-site
/// credentials could plant) is skipped, in the plan and in the drill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ransomware_drill_restores_only_object_locked_backups() {
    let moto = crate::support::moto::Moto::start_own(&[]).await;
    let bucket = format!("{}-locked", moto.bucket);
    let s3 = moto.client();
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let key_dir = tempdir();
    let key = key_dir.path().join("k");
    std::fs::write(&key, "gsdr-test-key\n").unwrap();
    let targets = format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n\
         [targets.offsite]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nprefix = \"gs\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\n\
         [targets.offsite.lifecycle]\nversioning = true\nobject_lock = {{ mode = \"governance\", retention = \"30d\" }}\n",
        moto.endpoint,
        k = key.display()
    );
    let f = fixture_with(&targets, "{ rto = \"1h\", rpo = \"6h\" }");
    f.gsdr_json(&["replicate"]);
    let rb = ransom_runbooks(&f, "require_object_lock = true\n");
    let rb = rb.to_str().unwrap();

    // Nothing locked yet: the scenario cannot run, and says what to do.
    let (code, j, err) = run(&f, &["drill", "--scenario", "ransom", "--runbooks", rb]);
    assert_ne!(code, 0, "{j}");
    let why = format!("{j}{err}");
    assert!(
        why.contains("none of the 1 backups of source `") && why.contains("gsdr storage init"),
        "{why}"
    );

    // Those backups get locked (moto refuses a default retention on a
    // non-empty bucket, so each object is locked as the default would have)...
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let until =
        aws_sdk_s3::primitives::DateTime::from_secs(chrono::Utc::now().timestamp() + 86_400);
    for o in listed.contents() {
        s3.put_object_retention()
            .bucket(&bucket)
            .key(o.key().unwrap())
            .retention(
                aws_sdk_s3::types::ObjectLockRetention::builder()
                    .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Governance)
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let locked_id = f.gsdr_json(&["list", "--source", "data"])["backups"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // ...then a newer, unlocked one lands, as an attacker holding the off-site credentials could plant.
    let newer = f.gsdr_json(&["backup", "--source", "data"]);
    let newer_id = newer["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{newer}"))
        .to_string();
    f.gsdr_json(&["replicate"]);

    let plan = f.gsdr_json(&[
        "restore",
        "--scenario",
        "ransom",
        "--runbooks",
        rb,
        "--plan",
    ]);
    let data_step = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "restore-data")
        .unwrap_or_else(|| panic!("{plan}"));
    let b = &data_step["backup"];
    assert_eq!(
        b["id"],
        locked_id.as_str(),
        "the newest LOCKED backup, not {newer_id}: {plan}"
    );
    assert_eq!(b["skipped_unlocked"], 1, "{plan}");
    assert_eq!(b["object_lock"]["mode"], "GOVERNANCE", "{plan}");

    let (code, j, err) = run(&f, &["drill", "--scenario", "ransom", "--runbooks", rb]);
    assert_eq!(code, 0, "{j}\n{err}");
    let steps = j["reports"][0]["report"]["steps"].as_array().unwrap();
    let restored = steps.iter().find(|s| s["name"] == "restore-data").unwrap();
    assert_eq!(restored["backup_id"], locked_id.as_str(), "{j}");
    assert_eq!(restored["from_target"], "offsite");

    // The attacker writes over the locked backup: a new version of its data
    // object (same size, other bytes) and a delete marker on its manifest.
    // Neither removes the locked versions, and the drill restores those.
    let objects = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    let keys: Vec<String> = objects
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .filter(|k| k.contains(&locked_id))
        .collect();
    let data_key = keys.iter().find(|k| !k.ends_with(".json")).unwrap().clone();
    let manifest_key = keys.iter().find(|k| k.ends_with(".json")).unwrap().clone();
    let versions = |key: String| {
        let s3 = s3.clone();
        let bucket = bucket.clone();
        async move {
            s3.list_object_versions()
                .bucket(&bucket)
                .prefix(&key)
                .send()
                .await
                .unwrap()
                .versions()
                .iter()
                .map(|v| v.version_id().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    let original = versions(data_key.clone()).await;
    assert_eq!(original.len(), 1, "{original:?}");
    let size = objects
        .contents()
        .iter()
        .find(|o| o.key() == Some(data_key.as_str()))
        .unwrap()
        .size()
        .unwrap() as usize;
    s3.put_object()
        .bucket(&bucket)
        .key(&data_key)
        .body(aws_sdk_s3::primitives::ByteStream::from(vec![0x42u8; size]))
        .send()
        .await
        .unwrap();
    s3.delete_object()
        .bucket(&bucket)
        .key(&manifest_key)
        .send()
        .await
        .unwrap();
    assert_eq!(versions(data_key.clone()).await.len(), 2);
    let plan = f.gsdr_json(&[
        "restore",
        "--scenario",
        "ransom",
        "--runbooks",
        rb,
        "--plan",
    ]);
    let b = &plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "restore-data")
        .unwrap()["backup"];
    assert_eq!(b["id"], locked_id.as_str(), "{plan}");
    assert_eq!(
        b["data_version"],
        original[0].as_str(),
        "the locked version, not the attacker's: {plan}"
    );
    let (code, j, err) = run(&f, &["drill", "--scenario", "ransom", "--runbooks", rb]);
    assert_eq!(code, 0, "{j}\n{err}");
    let steps = j["reports"][0]["report"]["steps"].as_array().unwrap();
    let restored = steps.iter().find(|s| s["name"] == "restore-data").unwrap();
    assert_eq!(restored["backup_id"], locked_id.as_str(), "{j}");
    assert_eq!(j["passed"], true, "{j}");
    assert!(
        steps.iter().all(|s| s["status"] == "ok"),
        "every check passes on the locked version's bytes: {j}"
    );
    // A plain restore of the current versions gets the attacker's bytes and refuses them.
    let out = f.gsdr(&[
        "restore",
        "--source",
        "data",
        "--target",
        "offsite",
        "--backup",
        &locked_id,
        "--to-file",
        "-",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no backup"),
        "the manifest's current version is a delete marker: {err}"
    );
    // `--locked` reads the locked versions, as the drill did.
    let out_file = f.dir.path().join("locked.out");
    let out = f.gsdr(&[
        "restore",
        "--source",
        "data",
        "--target",
        "offsite",
        "--locked",
        "--to-file",
        out_file.to_str().unwrap(),
    ]);
    crate::postgres::ok(&out, "restore --locked");
    assert_eq!(std::fs::metadata(&out_file).unwrap().len(), 3_000_000);
}

/// The shipped node-loss scenario named `name`, minus its Velero step (a
/// restore of workloads needs a cluster), checking pgbench's table.
pub fn node_loss_without_velero(name: &str) -> String {
    let all = std::fs::read_to_string(repo_root().join("runbooks/node-loss.toml"))
        .unwrap()
        .replace("name = \"node-loss\"", &format!("name = \"{name}\""));
    let all = all[..all.find("[[steps]]\nname = \"velero-workloads\"").unwrap()].to_string()
        + &all[all
            .find("[[steps]]\nname = \"check-postgres-rows\"")
            .unwrap()..];
    all.replace(
        "SELECT count(*) FROM accounts",
        "SELECT count(*) FROM pgbench_accounts",
    )
}

/// A Velero step in a policy without `[velero]` is refused before anything
/// runs: by the drill (no step ran, no report, nothing restored) and by an
/// incident's `--plan`, each naming the step and the missing section.
#[test]
fn velero_step_without_velero_section_is_refused_before_any_restore() {
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let text = SCENARIO.replace("name = \"cmd-loss\"", "name = \"kube-loss\"")
        + "\n[[steps]]\nname = \"velero-workloads\"\nkind = \"velero_restore\"\nschedule = \"daily\"\nafter = [\"sha-cfg\"]\n";
    let rb = runbooks(&f, "kube-loss", &text);
    let d = f.dir.path();
    let (out, scratch) = (d.join("out"), d.join("scratch"));
    let (code, j, err) = run(
        &f,
        &[
            "drill",
            "--scenario",
            "kube-loss",
            "--runbooks",
            rb.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{j}\n{err}");
    assert!(
        j["reports"].as_array().is_none_or(|r| r.is_empty()),
        "no step ran: {j}"
    );
    let why = j["not_run"][0]["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("velero-workloads") && why.contains("[velero]"),
        "{j}"
    );
    assert!(walk(&out).is_empty(), "no report written: {:?}", walk(&out));
    assert!(
        walk(&scratch).is_empty(),
        "nothing restored: {:?}",
        walk(&scratch)
    );

    let into = format!("cfg={}", d.join("cfg.restored").display());
    let into_data = format!("data={}", d.join("data.restored").display());
    let o = f.gsdr(&[
        "restore",
        "--scenario",
        "kube-loss",
        "--runbooks",
        rb.to_str().unwrap(),
        "--into",
        &into,
        "--into",
        &into_data,
        "--plan",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("velero-workloads") && stderr.contains("[velero]"),
        "{stderr}"
    );
    assert!(!d.join("cfg.restored").exists());
}

/// A step on a source of another engine, and a scratch server program that
/// is not installed, are refused by the drill before any step runs.
#[test]
fn wrong_engine_and_missing_scratch_program_are_refused_before_any_restore() {
    let f = Fixture::new(&format!(
        "{TARGETS}[defaults]\ntarget = \"local\"\n\
         [sources.cfg]\nkind = \"command\"\n[sources.cfg.command]\nargv = [\"true\"]\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"127.0.0.1:1\"\n\
         redis_server = \"gsdr-no-such-redis-server\"\n"
    ));
    let drill = |name: &str, steps: &str| {
        let rb = runbooks(
            &f,
            name,
            &format!("name = \"{name}\"\ntitle = \"t\"\ndescription = \"d\"\n{steps}"),
        );
        let scratch = f.dir.path().join("scratch");
        let (code, j, err) = run(
            &f,
            &[
                "drill",
                "--scenario",
                name,
                "--runbooks",
                rb.to_str().unwrap(),
                "--scratch-dir",
                scratch.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 2, "{j}\n{err}");
        assert!(
            walk(&scratch).is_empty(),
            "nothing restored: {:?}",
            walk(&scratch)
        );
        j["not_run"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let why = drill(
        "wrong-engine",
        "[[steps]]\nname = \"keys\"\nkind = \"redis_keys\"\nsource = \"cfg\"\nmin = 1\n",
    );
    assert!(
        why.contains("step `keys`")
            && why.contains("is a command source, the step needs a redis source"),
        "{why}"
    );
    let why = drill(
        "no-redis-server",
        "[[steps]]\nname = \"restore-cache\"\nkind = \"restore_redis\"\nsource = \"cache\"\n",
    );
    assert!(
        why.contains("`gsdr-no-such-redis-server`") && why.contains("not found"),
        "{why}"
    );
}

/// The HTML report as a person sees it: rendered by headless Chromium
/// (Debian's `chromium`) into a PNG, kept in the test's target tmp dir as
/// `drill-report.png`. The page holds the log-scale objectives chart with the
/// targets and tick labels, the objectives table (met, measured by), and a
/// trend chart with a value axis, values and dates; it loads nothing external.
#[test]
fn drill_report_html_renders_in_headless_chromium() {
    let chromium = crate::support::require_program(
        "chromium",
        "apt-get install chromium (scripts/install-deps.sh installs it)",
    );
    let f = fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = runbooks(&f, "cmd-loss", SCENARIO).display().to_string();
    let out = f.dir.path().join("out");
    let o = out.display().to_string();
    let args = ["drill", "--scenario", "all", "--runbooks", &rb, "--out", &o];
    for _ in 0..2 {
        let (code, j, err) = run(&f, &args);
        assert_eq!(code, 0, "{j}\n{err}");
    }
    let page = out.join("cmd-loss/report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    for want in [
        "log scale; black mark: target",
        ">1 h</text>",
        "<th>met</th><th>measured by</th>",
        "<td>RPO data</td>",
        "<td>manifest</td>",
        "oldest left (UTC)",
    ] {
        assert!(html.contains(want), "`{want}` missing from the report");
    }
    for external in ["http://", "https://", "url(", "<script", "<link", "<img"] {
        assert!(!html.contains(external), "the report holds `{external}`");
    }
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("drill-report.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempdir();
    let shot = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1100,1400",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        shot.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("chromium wrote the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20_000,
        "a rendered page, not a blank one: {} bytes",
        bytes.len()
    );
}
