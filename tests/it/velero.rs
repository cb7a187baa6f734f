//! Velero: every object gsdr sends checked against Velero's own CRD schemas
//! (tests/data/velero-crds), the client driven against an in-process FAKE
//! Kubernetes API (support::fake_kube) through every terminal phase, the RBAC
//! Role, and a real-cluster test that runs only when pointed at one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gsdr::velero::{
    self, objects, Outcome, RestoreRequest, VeleroClient, VeleroConfig, VeleroError,
};
use serde_json::{json, Value};

use crate::support::fake_kube::{step, FakeKube};
use crate::support::repo_root;

// ---------------------------------------------------------------- CRD schemas

/// The openAPIV3Schema of a Velero CRD, made strict: where Kubernetes would
/// silently PRUNE a field its schema does not declare (a typo such as
/// `includeNamespaces`), the validator rejects it. Objects under
/// `x-kubernetes-preserve-unknown-fields: true` keep accepting anything, as
/// the API server does. Other `x-kubernetes-*` keywords (map-type,
/// int-or-string) are not JSON Schema and are ignored by the validator.
fn crd_schema(plural: &str) -> Value {
    if plural == "deletebackuprequests" {
        // Not in the shared CRD set: the whole spec of that CRD, written out.
        let mut s = json!({
            "type": "object",
            "properties": {
                "apiVersion": { "type": "string" }, "kind": { "type": "string" },
                "metadata": { "type": "object" },
                "spec": { "type": "object", "required": ["backupName"], "properties": { "backupName": { "type": "string" } } },
            },
        });
        make_strict(&mut s);
        return s;
    }
    let path = repo_root().join(format!("tests/data/velero-crds/velero.io_{plural}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    let v1 = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1")
        .unwrap();
    let mut schema = v1["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "{plural}: no openAPIV3Schema");
    make_strict(&mut schema);
    schema
}

fn make_strict(s: &mut Value) {
    let Some(o) = s.as_object_mut() else { return };
    let preserve = o.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if o.contains_key("properties") && !o.contains_key("additionalProperties") && !preserve {
        o.insert("additionalProperties".into(), json!(false));
    }
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        props.values_mut().for_each(make_strict);
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = o.get_mut(k) {
            make_strict(v);
        }
    }
}

/// Validation errors of `object` against the CRD of `plural` (empty = valid).
fn crd_errors(plural: &str, object: &Value) -> Vec<String> {
    let schema = crd_schema(plural);
    let v = jsonschema::validator_for(&schema).unwrap();
    v.iter_errors(object)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn assert_valid(plural: &str, object: &Value) {
    let errs = crd_errors(plural, object);
    assert!(
        errs.is_empty(),
        "{plural} object rejected by Velero's CRD schema: {errs:#?}\n{object:#}"
    );
}

/// Every object the fake received, checked against its CRD.
fn assert_all_created_valid(fake: &FakeKube) -> usize {
    let created = fake.created();
    for (plural, obj) in &created {
        assert_valid(plural, obj);
    }
    created.len()
}

const FULL_POLICY: &str = r#"
namespace = "velero"
storage_location = "primary"
timeout = "30s"

[jobs.cluster-full]
schedule = "0 3 * * *"
ttl = "720h"
include_cluster_resources = true
snapshot_volumes = false
default_volumes_to_fs_backup = true
excluded_namespaces = ["kube-system"]
excluded_resources = ["events"]

[jobs.data-namespaces]
schedule = "0 * * * *"
ttl = "720h"
included_namespaces = ["data", "minio"]
included_resources = ["*"]
label_selector = { "app.kubernetes.io/part-of" = "platform" }
storage_location = "offsite"
volume_snapshot_locations = ["default"]
snapshot_volumes = true

[[jobs.data-namespaces.hooks]]
name = "mongo-fsync"
included_namespaces = ["data"]
excluded_namespaces = ["minio"]
label_selector = { app = "mongo" }
pre = [{ container = "mongod", command = ["mongosh", "--eval", "db.fsyncLock()"], on_error = "fail", timeout = "30s" }]
post = [{ command = ["mongosh", "--eval", "db.fsyncUnlock()"], on_error = "continue" }]

[jobs.quick]
included_namespaces = ["data"]
timeout = "400ms"
"#;

fn config() -> VeleroConfig {
    let c: VeleroConfig = toml::from_str(FULL_POLICY).unwrap();
    c.validate().unwrap();
    c
}

#[test]
fn velero_crd_schemas_accept_every_object_gsdr_builds() {
    let c = config();
    for (name, job) in &c.jobs {
        let o = objects::backup_object(
            &format!("{name}-20261129030000-abcd"),
            "velero",
            name,
            job,
            c.storage_location.as_deref(),
        );
        assert_valid("backups", &o);
    }
    let hooks = &objects::backup_object(
        "b",
        "velero",
        "data-namespaces",
        &c.jobs["data-namespaces"],
        None,
    )["spec"]["hooks"];
    assert_eq!(hooks["resources"][0]["pre"][0]["exec"]["onError"], "Fail");
    assert_eq!(
        hooks["resources"][0]["pre"][0]["exec"]["timeout"],
        "0h0m30s"
    );
    let full = objects::backup_object(
        "b",
        "velero",
        "cluster-full",
        &c.jobs["cluster-full"],
        Some("primary"),
    );
    assert_eq!(full["spec"]["ttl"], "720h0m0s");
    assert_eq!(full["spec"]["includedNamespaces"], json!(["*"]));
    assert_eq!(full["spec"]["storageLocation"], "primary");

    let req = RestoreRequest {
        backup_name: "data-namespaces-20261129030000-abcd".into(),
        namespace_mapping: [("data".to_string(), "drill-data".to_string())].into(),
        included_namespaces: vec![],
        restore_pvs: Some(true),
    };
    assert_valid("restores", &objects::restore_object("r", "velero", &req));
    for kind in [objects::LogKind::Backup, objects::LogKind::Restore] {
        assert_valid(
            "downloadrequests",
            &objects::download_request_object("d", "velero", kind, "b"),
        );
    }
    assert_valid(
        "deletebackuprequests",
        &objects::delete_backup_request_object("x", "velero", "b"),
    );
}

#[test]
fn velero_crd_validator_rejects_what_velero_would_not_take() {
    let c = config();
    let good = objects::backup_object(
        "b",
        "velero",
        "data-namespaces",
        &c.jobs["data-namespaces"],
        None,
    );
    assert_valid("backups", &good);

    let mut typo = good.clone();
    typo["spec"]["includeNamespaces"] = json!(["data"]);
    assert!(
        !crd_errors("backups", &typo).is_empty(),
        "a misspelt field must be rejected, not pruned"
    );

    let mut wrong_type = good.clone();
    wrong_type["spec"]["ttl"] = json!(2_592_000);
    assert!(
        !crd_errors("backups", &wrong_type).is_empty(),
        "ttl is a duration string"
    );

    let mut bad_enum = good.clone();
    bad_enum["spec"]["hooks"]["resources"][0]["pre"][0]["exec"]["onError"] = json!("fail");
    assert!(
        !crd_errors("backups", &bad_enum).is_empty(),
        "onError is Continue or Fail"
    );

    let mut no_command = good;
    no_command["spec"]["hooks"]["resources"][0]["pre"][0]["exec"]
        .as_object_mut()
        .unwrap()
        .remove("command");
    assert!(
        !crd_errors("backups", &no_command).is_empty(),
        "exec.command is required"
    );

    let mut dr = objects::download_request_object("d", "velero", objects::LogKind::Backup, "b");
    dr["spec"]["target"]["kind"] = json!("BackupLogs");
    assert!(!crd_errors("downloadrequests", &dr).is_empty());
    let dbr = json!({ "apiVersion": "velero.io/v1", "kind": "DeleteBackupRequest", "metadata": { "name": "x" }, "spec": {} });
    assert!(!crd_errors("deletebackuprequests", &dbr).is_empty());
}

// ---------------------------------------------------------------- fake API server

fn times(status: Value) -> Value {
    let mut s = status;
    s["startTimestamp"] = json!("2026-11-29T03:00:01Z");
    s["completionTimestamp"] = json!("2026-11-29T03:04:00Z");
    s["expiration"] = json!("2026-12-29T03:00:01Z");
    s
}

async fn client(fake: &FakeKube) -> VeleroClient {
    VeleroClient::from_url(&fake.url, "velero").unwrap()
}

fn plurals_created(fake: &FakeKube) -> Vec<String> {
    fake.created().into_iter().map(|(p, _)| p).collect()
}

#[tokio::test]
async fn velero_backup_completed_is_recorded() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![
            step(20, json!({ "phase": "New" })),
            step(20, json!({ "phase": "InProgress", "startTimestamp": "2026-11-29T03:00:01Z", "progress": { "totalItems": 120, "itemsBackedUp": 10 } })),
            step(20, times(json!({ "phase": "Completed", "progress": { "totalItems": 120, "itemsBackedUp": 120 } }))),
        ],
    );
    let c = config();
    let rec = velero::backup(&client(&fake).await, &c, "data-namespaces")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Completed);
    assert_eq!(rec.phase.as_deref(), Some("Completed"));
    assert_eq!(rec.job.as_deref(), Some("data-namespaces"));
    assert!(rec.name.starts_with("data-namespaces-"), "{}", rec.name);
    assert_eq!(
        (rec.items_backed_up, rec.total_items),
        (Some(120), Some(120))
    );
    assert_eq!(
        rec.expiration.unwrap().to_rfc3339(),
        "2026-12-29T03:00:01+00:00"
    );
    assert_eq!(rec.storage_location.as_deref(), Some("offsite"));
    assert!(rec.log.is_none(), "a clean backup needs no log");
    assert_eq!(plurals_created(&fake), ["backups"]);
    assert_eq!(assert_all_created_valid(&fake), 1);

    // It waited by watching from the object's resourceVersion, filtered by name.
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(|r| r.contains("watch=true")
            && r.contains(&format!("fieldSelector=metadata.name={}", rec.name))
            && r.contains("resourceVersion=")),
        "{reqs:#?}"
    );

    // The catalog record round-trips through JSON.
    let key = velero::record_key(rec.job.as_deref().unwrap(), &rec.name);
    assert_eq!(key, format!("velero/data-namespaces/{}.json", rec.name));
    let text = serde_json::to_string(&rec).unwrap();
    assert_eq!(
        serde_json::from_str::<velero::VeleroRecord>(&text).unwrap(),
        rec
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["outcome"], "completed");
    assert_eq!(v["schema_version"], 1);
}

#[tokio::test]
async fn velero_backup_partially_failed_keeps_counts_and_log() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![
            step(10, json!({ "phase": "InProgress" })),
            step(10, json!({ "phase": "WaitingForPluginOperationsPartiallyFailed", "errors": 1 })),
            step(10, json!({ "phase": "FinalizingPartiallyFailed", "errors": 2, "warnings": 5 })),
            step(10, times(json!({ "phase": "PartiallyFailed", "errors": 2, "warnings": 5, "progress": { "totalItems": 50, "itemsBackedUp": 48 } }))),
        ],
    );
    fake.set_log("*", "time=\"x\" level=info msg=\"starting\"\ntime=\"x\" level=error msg=\"pod volume backup failed\" pod=data/mongo-0\ntime=\"x\" level=info msg=\"done\"\n");
    let rec = velero::backup(&client(&fake).await, &config(), "cluster-full")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::PartiallyFailed);
    assert!(rec.outcome.is_failure());
    assert_eq!(
        (rec.errors, rec.warnings, rec.items_backed_up),
        (2, 5, Some(48))
    );
    let log = rec
        .log
        .as_ref()
        .unwrap_or_else(|| panic!("log not fetched: {:?}", rec.log_error));
    assert_eq!(log.total_lines, 3);
    assert_eq!(log.errors.len(), 1);
    assert!(log.errors[0].contains("mongo-0"));
    // The log came through a BackupLog DownloadRequest for this backup.
    let created = fake.created();
    let dr = &created
        .iter()
        .find(|(p, _)| p == "downloadrequests")
        .unwrap()
        .1;
    assert_eq!(
        dr["spec"]["target"],
        json!({ "kind": "BackupLog", "name": rec.name })
    );
    assert_eq!(assert_all_created_valid(&fake), 2);
}

#[tokio::test]
async fn velero_backup_failed_has_reason_and_log_without_leaking_the_url() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![step(10, json!({ "phase": "InProgress" })), step(10, times(json!({ "phase": "Failed", "failureReason": "error getting backup storage location: BackupStorageLocation.velero.io \"offsite\" not found" })))],
    );
    let mut log = String::new();
    for i in 0..500 {
        log.push_str(&format!("time=\"x\" level=info msg=\"item {i}\"\n"));
    }
    log.push_str("time=\"x\" level=error msg=\"backup storage location unavailable\"\n");
    fake.set_log("*", &log);
    let rec = velero::backup(&client(&fake).await, &config(), "data-namespaces")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Failed);
    assert!(rec
        .failure_reason
        .as_deref()
        .unwrap()
        .contains("\"offsite\" not found"));
    let l = rec.log.as_ref().expect("log fetched");
    assert_eq!(l.total_lines, 501);
    assert_eq!(l.tail.len(), velero::LOG_TAIL_LINES);
    assert!(l.tail.last().unwrap().contains("unavailable"));
    assert_eq!(l.errors.len(), 1);
    let json = serde_json::to_string(&rec).unwrap();
    assert!(
        !json.contains("X-Amz-Signature"),
        "the presigned URL is a credential"
    );
}

#[tokio::test]
async fn velero_log_download_failure_is_recorded_not_fatal() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![step(
            10,
            times(json!({ "phase": "Failed", "failureReason": "boom" })),
        )],
    );
    // No log registered: the "object store" answers 404.
    let rec = velero::backup(&client(&fake).await, &config(), "cluster-full")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Failed);
    assert!(rec.log.is_none());
    let e = rec.log_error.expect("the download error is kept");
    assert!(e.contains("downloading the log of"), "{e}");
    assert!(e.contains("404"), "{e}");
    assert!(!e.contains("X-Amz-Signature"), "{e}");
}

#[tokio::test]
async fn velero_backup_failed_validation_reports_why() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![step(10, json!({ "phase": "FailedValidation", "validationErrors": ["an existing backup storage location was not specified"] }))],
    );
    let rec = velero::backup(&client(&fake).await, &config(), "cluster-full")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::FailedValidation);
    assert_eq!(
        rec.validation_errors,
        ["an existing backup storage location was not specified"]
    );
    assert_eq!(
        plurals_created(&fake),
        ["backups"],
        "nothing ran, so there is no log to fetch"
    );
}

#[tokio::test]
async fn velero_unknown_phases_count_as_running() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![
            step(10, json!({ "phase": "Queued", "queuePosition": 3 })),
            step(10, json!({ "phase": "ReadyToStart" })),
            // A phase from a Velero newer than this gsdr.
            step(10, json!({ "phase": "WaitingForQuantumEntanglement" })),
            step(30, times(json!({ "phase": "Completed" }))),
        ],
    );
    // Also make the first watch expire (410 Gone): gsdr must re-read and watch again.
    fake.expire_next_watch();
    let rec = velero::backup(&client(&fake).await, &config(), "cluster-full")
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Completed);
    let watches = fake
        .requests()
        .iter()
        .filter(|r| r.contains("watch=true"))
        .count();
    assert!(
        watches >= 2,
        "expected a second watch after 410 Gone, saw {watches}"
    );
}

#[tokio::test]
async fn velero_backup_that_never_finishes_times_out() {
    let fake = FakeKube::start().await;
    fake.script("backups", vec![step(10, json!({ "phase": "InProgress" }))]);
    let start = Instant::now();
    let err = velero::backup(&client(&fake).await, &config(), "quick")
        .await
        .unwrap_err();
    let took = start.elapsed();
    match &err {
        VeleroError::Timeout {
            kind,
            phase,
            waited,
            ..
        } => {
            assert_eq!(*kind, "Backup");
            assert_eq!(phase.as_deref(), Some("InProgress"));
            assert_eq!(*waited, Duration::from_millis(400));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(err.retry_class(), gsdr::RetryClass::Temporary);
    assert!(
        err.to_string().contains("did not finish within 400ms"),
        "{err}"
    );
}

#[tokio::test]
async fn velero_backup_with_no_velero_running_times_out_with_no_phase() {
    let fake = FakeKube::start().await; // no script: the Backup never gets a status
    let err = velero::backup(&client(&fake).await, &config(), "quick")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VeleroError::Timeout { phase: None, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("last phase (none yet)"), "{err}");
}

#[tokio::test]
async fn velero_restore_with_namespace_mapping() {
    let fake = FakeKube::start().await;
    fake.script(
        "restores",
        vec![
            step(10, json!({ "phase": "InProgress", "progress": { "totalItems": 30 } })),
            step(10, times(json!({ "phase": "Completed", "warnings": 1, "progress": { "totalItems": 30, "itemsRestored": 30 } }))),
        ],
    );
    fake.script(
        "restores",
        vec![step(
            10,
            times(json!({ "phase": "PartiallyFailed", "errors": 3 })),
        )],
    );
    fake.set_log(
        "*",
        "time=\"x\" level=error msg=\"could not restore pvc\"\n",
    );
    let c = client(&fake).await;
    let req = RestoreRequest {
        backup_name: "data-namespaces-20261129030000-abcd".into(),
        namespace_mapping: [("data".to_string(), "drill-data".to_string())].into(),
        ..Default::default()
    };
    let rec = velero::restore(&c, &req, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rec.outcome, Outcome::Completed);
    assert_eq!((rec.items_restored, rec.warnings), (Some(30), 1));
    assert_eq!(
        rec.namespace_mapping,
        BTreeMap::from([("data".to_string(), "drill-data".to_string())])
    );
    assert_eq!(rec.backup_name, req.backup_name);
    let sent = &fake.created()[0].1;
    assert_eq!(
        sent["spec"]["namespaceMapping"],
        json!({ "data": "drill-data" })
    );
    assert_eq!(sent["spec"]["includedNamespaces"], json!(["data"]));

    let rec = velero::restore(&c, &req, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!((rec.outcome, rec.errors), (Outcome::PartiallyFailed, 3));
    assert_eq!(rec.log.expect("restore log").errors.len(), 1);
    let created = fake.created();
    let dr = &created
        .iter()
        .find(|(p, _)| p == "downloadrequests")
        .unwrap()
        .1;
    assert_eq!(dr["spec"]["target"]["kind"], "RestoreLog");
    assert_eq!(assert_all_created_valid(&fake), 3);
}

#[tokio::test]
async fn velero_delete_goes_through_a_delete_backup_request() {
    let fake = FakeKube::start().await;
    let name = velero::delete_backup(&client(&fake).await, "cluster-full-20261129030000-abcd")
        .await
        .unwrap();
    let created = fake.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].0, "deletebackuprequests");
    assert_eq!(created[0].1["metadata"]["name"], name);
    assert_eq!(
        created[0].1["spec"]["backupName"],
        "cluster-full-20261129030000-abcd"
    );
    assert_valid("deletebackuprequests", &created[0].1);
    assert!(
        fake.requests().iter().all(|r| !r.starts_with("DELETE")),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn velero_status_lists_backups_restores_and_locations() {
    let fake = FakeKube::start().await;
    let bsl = json!({
        "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
        "metadata": { "name": "default", "namespace": "velero" },
        "spec": { "provider": "aws", "default": true, "objectStorage": { "bucket": "velero", "prefix": "cluster" } },
        "status": { "phase": "Available", "lastValidationTime": "2026-11-29T03:59:00Z" },
    });
    assert_valid("backupstoragelocations", &bsl);
    fake.insert("backupstoragelocations", bsl);
    for (name, created, phase) in [
        ("older", "2026-11-28T03:00:00Z", "Completed"),
        ("newer", "2026-11-29T03:00:00Z", "PartiallyFailed"),
    ] {
        fake.insert(
            "backups",
            json!({
                "apiVersion": "velero.io/v1", "kind": "Backup",
                "metadata": { "name": name, "namespace": "velero", "creationTimestamp": created, "labels": { "gsdr.io/job": "cluster-full" } },
                "spec": { "storageLocation": "default" },
                "status": { "phase": phase, "errors": 0, "warnings": 2 },
            }),
        );
    }
    let report = velero::status(&client(&fake).await).await.unwrap();
    assert_eq!(report.namespace, "velero");
    assert_eq!(
        report
            .backups
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["newer", "older"]
    );
    assert_eq!(report.backups[0].outcome, Outcome::PartiallyFailed);
    assert_eq!(report.backups[1].job.as_deref(), Some("cluster-full"));
    assert!(report.restores.is_empty());
    assert_eq!(report.storage_locations.len(), 1);
    let l = &report.storage_locations[0];
    assert_eq!(
        (l.phase.as_deref(), l.default, l.bucket.as_deref()),
        (Some("Available"), true, Some("velero"))
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["schema_version"], 1);
}

#[tokio::test]
async fn velero_unknown_job_and_unreachable_api_are_clear_errors() {
    let fake = FakeKube::start().await;
    let err = velero::backup(&client(&fake).await, &config(), "nope")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no Velero job `nope`"), "{err}");
    assert!(err.to_string().contains("cluster-full"), "{err}");

    let port = crate::support::free_port();
    let c = VeleroClient::from_url(&format!("http://127.0.0.1:{port}"), "velero").unwrap();
    let err = velero::status(&c).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("listing backups in namespace `velero`"),
        "{err}"
    );
    assert_eq!(err.retry_class(), gsdr::RetryClass::Temporary);
}

// ---------------------------------------------------------------- policy and RBAC

#[test]
fn velero_policy_section_parses_and_names_bad_fields() {
    let recipient = age::x25519::Identity::generate().to_public().to_string();
    let base = format!("name = \"p\"\n[encryption]\nrecipients = [\"{recipient}\"]\n[targets.local]\nkind = \"fs\"\npath = \"/tmp/x\"\n");
    let text = format!("{base}[velero]\nnamespace = \"velero\"\n[velero.jobs.cluster-full]\nschedule = \"0 3 * * *\"\nttl = \"720h\"\n[velero.jobs.data-namespaces]\nschedule = \"0 * * * *\"\nincluded_namespaces = [\"data\"]\n");
    let p = gsdr::policy::Policy::parse(&text, std::path::Path::new("p.toml")).unwrap();
    let v = p.velero.unwrap();
    assert_eq!(v.jobs.len(), 2);
    assert_eq!(
        v.jobs["cluster-full"].schedule.as_ref().unwrap().text(),
        "0 3 * * *"
    );

    let bad = format!("{base}[velero.jobs.Data_NS]\nttl = \"720h\"\n");
    let e = gsdr::policy::Policy::parse(&bad, std::path::Path::new("p.toml")).unwrap_err();
    assert_eq!(e.field, "velero.jobs.Data_NS");
    assert_eq!(e.line, Some(7));

    let bad = format!("{base}[velero.jobs.a]\nttl = \"forever\"\n");
    let e = gsdr::policy::Policy::parse(&bad, std::path::Path::new("p.toml")).unwrap_err();
    assert!(e.message.contains("not a duration"), "{e}");
}

#[test]
fn velero_rbac_role_grants_exactly_what_gsdr_uses() {
    let text = std::fs::read_to_string(repo_root().join("deploy/rbac/velero-role.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("a Role");
    assert_eq!(role["metadata"]["namespace"], "velero");
    let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        assert_eq!(rule["apiGroups"], json!(["velero.io"]));
        let verbs: Vec<String> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for r in rule["resources"].as_array().unwrap() {
            grants
                .entry(r.as_str().unwrap().to_string())
                .or_default()
                .extend(verbs.clone());
        }
    }
    let crud = ["create", "get", "list", "watch"];
    let ro = ["get", "list", "watch"];
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in [
        "backups",
        "restores",
        "downloadrequests",
        "deletebackuprequests",
    ] {
        want.insert(r.into(), crud.iter().map(|s| s.to_string()).collect());
    }
    want.insert(
        "backupstoragelocations".into(),
        ro.iter().map(|s| s.to_string()).collect(),
    );
    for v in grants.values_mut() {
        v.sort();
    }
    for v in want.values_mut() {
        v.sort();
    }
    assert_eq!(
        grants, want,
        "no delete/update/patch, no schedules: gsdr does not manage them"
    );
    let binding = docs
        .iter()
        .find(|d| d["kind"] == "RoleBinding")
        .expect("a RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
}

// ---------------------------------------------------------------- real cluster

/// Runs against a real cluster with Velero installed. Needs
/// `GSDR_TEST_KUBECONFIG=/path/to/kubeconfig` (or `KUBECONFIG` plus
/// `GSDR_TEST_REAL_VELERO=1`); optional `GSDR_TEST_VELERO_NAMESPACE` (default
/// `velero`) and `GSDR_TEST_VELERO_BACKUP_NS` (the namespace to back up,
/// default `default`). Run: `cargo test --test it velero_real -- --ignored`.
#[tokio::test]
#[ignore = "needs a real Kubernetes cluster with Velero: set GSDR_TEST_KUBECONFIG and run `cargo test --test it velero_real -- --ignored` (docs/velero.md)"]
async fn velero_real_cluster_backup_status_delete() {
    let kubeconfig = std::env::var_os("GSDR_TEST_KUBECONFIG").or_else(|| {
        (std::env::var("GSDR_TEST_REAL_VELERO").as_deref() == Ok("1"))
            .then(|| std::env::var_os("KUBECONFIG"))
            .flatten()
    });
    let Some(kubeconfig) = kubeconfig else {
        panic!("velero_real needs GSDR_TEST_KUBECONFIG=/path/to/kubeconfig (or KUBECONFIG with GSDR_TEST_REAL_VELERO=1): it does not pass without a cluster");
    };
    let ns = std::env::var("GSDR_TEST_VELERO_NAMESPACE").unwrap_or_else(|_| "velero".into());
    let backup_ns =
        std::env::var("GSDR_TEST_VELERO_BACKUP_NS").unwrap_or_else(|_| "default".into());
    let c = VeleroClient::from_kubeconfig(std::path::Path::new(&kubeconfig), &ns)
        .await
        .unwrap();
    let before = velero::status(&c).await.unwrap();
    assert!(
        !before.storage_locations.is_empty(),
        "Velero has no BackupStorageLocation in `{ns}`"
    );

    let cfg: VeleroConfig = toml::from_str(&format!(
        "namespace = \"{ns}\"\ntimeout = \"10m\"\n[jobs.gsdr-test]\nttl = \"1h\"\nincluded_namespaces = [\"{backup_ns}\"]\nsnapshot_volumes = false\n"
    ))
    .unwrap();
    let rec = velero::backup(&c, &cfg, "gsdr-test").await.unwrap();
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:#?}");
    assert!(
        rec.started.is_some() && rec.completed.is_some() && rec.expiration.is_some(),
        "{rec:#?}"
    );

    let after = velero::status(&c).await.unwrap();
    assert!(
        after.backups.iter().any(|b| b.name == rec.name),
        "the new backup is listed"
    );
    let dbr = velero::delete_backup(&c, &rec.name).await.unwrap();
    assert!(!dbr.is_empty());
}

// ---------------------------------------------------------------- catalog records

#[tokio::test]
async fn velero_records_live_in_the_catalog_beside_database_backups() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn gsdr::storage::Store> =
        std::sync::Arc::new(gsdr::storage::fs::FsStore::new(dir.path()).unwrap());
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![step(10, times(json!({ "phase": "Completed" })))],
    );
    fake.script(
        "backups",
        vec![step(
            10,
            times(json!({ "phase": "PartiallyFailed", "errors": 1 })),
        )],
    );
    fake.set_log("*", "time=\"x\" level=error msg=\"x\"\n");
    let c = client(&fake).await;
    let a = velero::backup(&c, &config(), "cluster-full").await.unwrap();
    let b = velero::backup(&c, &config(), "data-namespaces")
        .await
        .unwrap();
    assert_eq!(
        velero::put_record(store.as_ref(), &a).await.unwrap(),
        format!("velero/cluster-full/{}.json", a.name)
    );
    velero::put_record(store.as_ref(), &b).await.unwrap();

    let all = velero::list_records(store.as_ref(), None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.contains(&a) && all.contains(&b));
    let one = velero::list_records(store.as_ref(), Some("data-namespaces"))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], b);
    assert_eq!(one[0].log.as_ref().unwrap().errors.len(), 1);

    // The database catalog does not mistake them for backup manifests.
    let cat = gsdr::catalog::Catalog::new(store.clone());
    assert!(cat.list(None).await.unwrap().is_empty());

    // A backup made outside gsdr (no job label) is refused, not filed under a made-up job.
    let mut stray = a.clone();
    stray.job = None;
    let e = velero::put_record(store.as_ref(), &stray)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not made by a gsdr job"), "{e}");
}

/// The `gsdr velero backup|status` and `gsdr list` commands end to end: the real
/// binary, a kubeconfig pointing at the fake API server, the record stored in the
/// catalog beside database backups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_cli_backup_records_in_the_catalog_and_lists() {
    let fake = FakeKube::start().await;
    fake.script(
        "backups",
        vec![
            step(20, json!({ "phase": "InProgress" })),
            step(20, times(json!({ "phase": "Completed", "progress": { "totalItems": 7, "itemsBackedUp": 7 } }))),
        ],
    );
    let f = crate::cli::Fixture::new(
        "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n\
         [velero]\nnamespace = \"velero\"\ntimeout = \"30s\"\n\
         [velero.jobs.data-namespaces]\nschedule = \"0 * * * *\"\nttl = \"720h\"\nincluded_namespaces = [\"data\"]\n",
    );
    let kubeconfig = write_kubeconfig(f.dir.path(), &fake.url);
    let run = |args: Vec<String>| {
        let policy = f.policy.clone();
        let kc = kubeconfig.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(crate::support::gsdr_bin())
                .arg("--policy")
                .arg(policy)
                .arg("--json")
                .args(args)
                .env("KUBECONFIG", kc)
                .env("GSDR_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let out = run(vec!["velero".into(), "backup".into()]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["backups"][0]["outcome"], "completed", "{j}");
    assert_eq!(j["backups"][0]["job"], "data-namespaces");

    let out = run(vec!["list".into()]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["velero"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["velero"][0]["phase"], "Completed");

    let out = run(vec!["velero".into(), "status".into()]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A drill step `velero_restore` restores the newest completed backup of a gsdr
/// Velero job into mapped namespaces, through the fake API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn velero_drill_step_restores_the_newest_completed_backup() {
    let fake = FakeKube::start().await;
    for (name, phase, done) in [
        (
            "platform-20261128030000-aaaa",
            "Completed",
            "2026-11-28T03:04:00Z",
        ),
        (
            "platform-20261129030000-bbbb",
            "Completed",
            "2026-11-29T03:04:00Z",
        ),
        (
            "platform-20261129040000-cccc",
            "Failed",
            "2026-11-29T04:04:00Z",
        ),
    ] {
        fake.insert(
            "backups",
            json!({
                "apiVersion": "velero.io/v1", "kind": "Backup",
                "metadata": { "name": name, "namespace": "velero", "labels": { "gsdr.io/job": "platform" } },
                "spec": {},
                "status": { "phase": phase, "completionTimestamp": done }
            }),
        );
    }
    fake.script(
        "restores",
        vec![
            step(20, json!({ "phase": "InProgress" })),
            step(20, json!({ "phase": "Completed" })),
        ],
    );
    let f = crate::drill::fixture("{ rto = \"1h\", rpo = \"6h\" }");
    let mut policy = std::fs::read_to_string(&f.policy).unwrap();
    policy += "[velero]\nnamespace = \"velero\"\ntimeout = \"30s\"\n[velero.jobs.platform]\nschedule = \"0 3 * * *\"\nttl = \"720h\"\n";
    std::fs::write(&f.policy, policy).unwrap();
    let scenario = crate::drill::SCENARIO.replace("name = \"cmd-loss\"", "name = \"with-velero\"")
        + "\n[[steps]]\nname = \"workloads\"\nkind = \"velero_restore\"\nschedule = \"platform\"\nnamespace_mapping = [\"data=drill-data\"]\n";
    let rb = crate::drill::runbooks(&f, "with-velero", &scenario);
    let kubeconfig = write_kubeconfig(f.dir.path(), &fake.url);
    let (code, j) = velero_drill(&f, &rb, &kubeconfig).await;
    assert_eq!(code, Some(0), "{j}");
    let steps = j["reports"][0]["report"]["steps"].as_array().unwrap();
    let v = steps.iter().find(|s| s["name"] == "workloads").unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(
        v["backup_id"], "platform-20261129030000-bbbb",
        "the newest completed one: {v}"
    );
    let created = fake.created();
    let (_, restore) = created
        .iter()
        .find(|(p, _)| p == "restores")
        .expect("a Restore was created");
    assert_eq!(
        restore["spec"]["backupName"],
        "platform-20261129030000-bbbb"
    );
    assert_eq!(restore["spec"]["namespaceMapping"]["data"], "drill-data");
    // The scratch namespace was checked absent before, and deleted after.
    let reqs = fake.requests();
    let pos = |r: &str| {
        reqs.iter()
            .position(|x| x == r)
            .unwrap_or_else(|| panic!("no `{r}` in {reqs:?}"))
    };
    assert!(
        pos("GET /api/v1/namespaces/drill-data")
            < pos("POST /apis/velero.io/v1/namespaces/velero/restores")
    );
    assert!(
        pos("POST /apis/velero.io/v1/namespaces/velero/restores")
            < pos("DELETE /api/v1/namespaces/drill-data")
    );
    assert_eq!(j["reports"][0]["report"]["scratch_cleaned"], true, "{j}");

    // A scratch namespace that already exists is never restored into (nor deleted).
    fake.add_namespace("drill-data");
    let before = fake.requests().len();
    let (code, j) = velero_drill(&f, &rb, &kubeconfig).await;
    assert_eq!(code, Some(1), "{j}");
    let steps = j["reports"][0]["report"]["steps"].as_array().unwrap();
    let v = steps.iter().find(|s| s["name"] == "workloads").unwrap();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v.to_string().contains("already exists"), "{v}");
    let later = &fake.requests()[before..];
    assert!(
        later
            .iter()
            .all(|r| !r.starts_with("DELETE") && !r.starts_with("POST")),
        "{later:?}"
    );
}

/// Runs `gsdr drill --scenario with-velero` with `kubeconfig`: exit code and JSON output.
async fn velero_drill(
    f: &crate::cli::Fixture,
    runbooks: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> (Option<i32>, serde_json::Value) {
    let (policy, rbs, kc) = (
        f.policy.clone(),
        runbooks.to_path_buf(),
        kubeconfig.to_path_buf(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::gsdr_bin())
            .arg("--policy")
            .arg(policy)
            .args([
                "--json",
                "drill",
                "--scenario",
                "with-velero",
                "--no-store",
                "--runbooks",
            ])
            .arg(rbs)
            .env("KUBECONFIG", kc)
            .env("GSDR_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let j = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), j)
}

/// A kubeconfig pointing at the fake API server at `url`.
fn write_kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\nusers:\n- name: fake\n  user:\n    token: not-a-secret\n"
        ),
    )
    .unwrap();
    path
}
