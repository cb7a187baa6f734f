//! The `velero.io/v1` objects gsdr sends and the status fields it reads.
//!
//! gsdr builds exactly the fields it means to set (field names as in Velero's
//! CRDs, checked against them in tests) and reads statuses leniently: Velero
//! adds fields and phases between versions, and an unknown phase means
//! "still running".

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{BackupHook, ExecHook, VeleroJob};

/// API group and version of every object here.
pub const API_VERSION: &str = "velero.io/v1";
/// Label put on every object gsdr creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "gsdr");
/// Label naming the gsdr job that created a Backup.
pub const JOB_LABEL: &str = "gsdr.io/job";

/// A Velero duration (Go `time.Duration` text): `720h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let ms = d.subsec_millis();
    if ms == 0 {
        format!("{}h{}m{}s", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}h{}m{}.{ms:03}s", s / 3600, s / 60 % 60, s % 60)
    }
}

fn label_selector(labels: &BTreeMap<String, String>) -> Option<Value> {
    (!labels.is_empty()).then(|| json!({ "matchLabels": labels }))
}

fn exec(e: &ExecHook) -> Value {
    let mut x = serde_json::Map::new();
    if let Some(c) = &e.container {
        x.insert("container".into(), json!(c));
    }
    x.insert("command".into(), json!(e.command));
    if let Some(o) = e.on_error {
        x.insert("onError".into(), json!(o.as_velero()));
    }
    if let Some(t) = e.timeout {
        x.insert("timeout".into(), json!(go_duration(t.0)));
    }
    json!({ "exec": x })
}

fn hook(h: &BackupHook) -> Value {
    let mut r = serde_json::Map::new();
    r.insert("name".into(), json!(h.name));
    if !h.included_namespaces.is_empty() {
        r.insert("includedNamespaces".into(), json!(h.included_namespaces));
    }
    if !h.excluded_namespaces.is_empty() {
        r.insert("excludedNamespaces".into(), json!(h.excluded_namespaces));
    }
    if let Some(s) = label_selector(&h.label_selector) {
        r.insert("labelSelector".into(), s);
    }
    if !h.pre.is_empty() {
        r.insert("pre".into(), Value::Array(h.pre.iter().map(exec).collect()));
    }
    if !h.post.is_empty() {
        r.insert(
            "post".into(),
            Value::Array(h.post.iter().map(exec).collect()),
        );
    }
    Value::Object(r)
}

fn metadata(name: &str, namespace: &str, labels: &[(&str, &str)]) -> Value {
    let labels: BTreeMap<&str, &str> = labels.iter().copied().chain([MANAGED_BY]).collect();
    json!({ "name": name, "namespace": namespace, "labels": labels })
}

/// The Backup object for `job`, named `name`.
pub fn backup_object(
    name: &str,
    namespace: &str,
    job_name: &str,
    job: &VeleroJob,
    default_location: Option<&str>,
) -> Value {
    let mut spec = serde_json::Map::new();
    let included = if job.included_namespaces.is_empty() {
        vec!["*".to_string()]
    } else {
        job.included_namespaces.clone()
    };
    spec.insert("includedNamespaces".into(), json!(included));
    let lists = [
        ("excludedNamespaces", &job.excluded_namespaces),
        ("includedResources", &job.included_resources),
        ("excludedResources", &job.excluded_resources),
        ("volumeSnapshotLocations", &job.volume_snapshot_locations),
    ];
    for (k, v) in lists {
        if !v.is_empty() {
            spec.insert(k.into(), json!(v));
        }
    }
    if let Some(b) = job.include_cluster_resources {
        spec.insert("includeClusterResources".into(), json!(b));
    }
    if let Some(s) = label_selector(&job.label_selector) {
        spec.insert("labelSelector".into(), s);
    }
    if let Some(t) = job.ttl {
        spec.insert("ttl".into(), json!(go_duration(t.0)));
    }
    if let Some(l) = job.storage_location.as_deref().or(default_location) {
        spec.insert("storageLocation".into(), json!(l));
    }
    if let Some(b) = job.snapshot_volumes {
        spec.insert("snapshotVolumes".into(), json!(b));
    }
    if let Some(b) = job.default_volumes_to_fs_backup {
        spec.insert("defaultVolumesToFsBackup".into(), json!(b));
    }
    if !job.hooks.is_empty() {
        spec.insert(
            "hooks".into(),
            json!({ "resources": job.hooks.iter().map(hook).collect::<Vec<_>>() }),
        );
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": metadata(name, namespace, &[(JOB_LABEL, job_name)]),
        "spec": spec,
    })
}

/// What to restore, from which backup, into which namespaces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// The Velero Backup to restore from.
    pub backup_name: String,
    /// Namespace renames (`from` → `to`), e.g. into a scratch namespace for a drill.
    #[serde(default)]
    pub namespace_mapping: BTreeMap<String, String>,
    /// Namespaces to restore; empty = the mapped ones if a mapping is given, else all in the backup.
    #[serde(default)]
    pub included_namespaces: Vec<String>,
    /// Whether to restore persistent volumes; unset: Velero's default.
    #[serde(default)]
    pub restore_pvs: Option<bool>,
}

/// The Restore object for `req`, named `name`.
pub fn restore_object(name: &str, namespace: &str, req: &RestoreRequest) -> Value {
    let mut spec = serde_json::Map::new();
    spec.insert("backupName".into(), json!(req.backup_name));
    let included: Vec<&String> = if req.included_namespaces.is_empty() {
        req.namespace_mapping.keys().collect()
    } else {
        req.included_namespaces.iter().collect()
    };
    if !included.is_empty() {
        spec.insert("includedNamespaces".into(), json!(included));
    }
    if !req.namespace_mapping.is_empty() {
        spec.insert("namespaceMapping".into(), json!(req.namespace_mapping));
    }
    if let Some(b) = req.restore_pvs {
        spec.insert("restorePVs".into(), json!(b));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Restore",
        "metadata": metadata(name, namespace, &[("velero.io/backup-name", &req.backup_name)]),
        "spec": spec,
    })
}

/// Which log a DownloadRequest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A Backup's log.
    Backup,
    /// A Restore's log.
    Restore,
}

/// A DownloadRequest for the log of a Backup or Restore.
pub fn download_request_object(name: &str, namespace: &str, kind: LogKind, target: &str) -> Value {
    let kind = match kind {
        LogKind::Backup => "BackupLog",
        LogKind::Restore => "RestoreLog",
    };
    json!({
        "apiVersion": API_VERSION,
        "kind": "DownloadRequest",
        "metadata": metadata(name, namespace, &[]),
        "spec": { "target": { "kind": kind, "name": target } },
    })
}

/// A DeleteBackupRequest: the only way gsdr deletes a backup (Velero then
/// removes its data from object storage, its snapshots and the Backup object).
pub fn delete_backup_request_object(name: &str, namespace: &str, backup: &str) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "DeleteBackupRequest",
        "metadata": metadata(name, namespace, &[("velero.io/backup-name", backup)]),
        "spec": { "backupName": backup },
    })
}

/// How a Backup or Restore phase counts for a waiting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything was backed up / restored.
    Completed,
    /// Done, with errors on some items.
    PartiallyFailed,
    /// Velero gave up.
    Failed,
    /// The spec was rejected before anything ran.
    FailedValidation,
    /// Anything else, including phases this gsdr does not know: keep waiting.
    Running,
}

impl Outcome {
    /// Classifies a phase (`None`: no status yet).
    pub fn of(phase: Option<&str>) -> Outcome {
        match phase {
            Some("Completed") => Outcome::Completed,
            Some("PartiallyFailed") => Outcome::PartiallyFailed,
            Some("Failed") => Outcome::Failed,
            Some("FailedValidation") => Outcome::FailedValidation,
            _ => Outcome::Running,
        }
    }

    /// Whether waiting is over.
    pub fn is_terminal(self) -> bool {
        self != Outcome::Running
    }

    /// Whether the operator should look at it (anything but `Completed`).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::PartiallyFailed | Outcome::Failed | Outcome::FailedValidation
        )
    }
}

/// `status.progress` of a Backup or Restore.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Progress {
    /// Items Velero expects to handle.
    pub total_items: Option<u64>,
    /// Items backed up so far.
    pub items_backed_up: Option<u64>,
    /// Items restored so far.
    pub items_restored: Option<u64>,
}

/// The status fields gsdr reads from a Backup or Restore (lenient: unknown fields ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunStatus {
    /// Phase as Velero wrote it.
    pub phase: Option<String>,
    /// Items that failed.
    pub errors: u64,
    /// Warnings.
    pub warnings: u64,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Why the spec was rejected (FailedValidation).
    pub validation_errors: Vec<String>,
    /// When Velero started.
    pub start_timestamp: Option<DateTime<Utc>>,
    /// When Velero finished.
    pub completion_timestamp: Option<DateTime<Utc>>,
    /// When Velero will delete the backup (Backups only).
    pub expiration: Option<DateTime<Utc>>,
    /// Item counts.
    pub progress: Progress,
}

impl RunStatus {
    /// Reads `status` from an object (missing or malformed status = empty).
    pub fn of(obj: &Value) -> RunStatus {
        obj.get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default()
    }

    /// How the phase counts.
    pub fn outcome(&self) -> Outcome {
        Outcome::of(self.phase.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration(Duration::from_secs(720 * 3600)), "720h0m0s");
        assert_eq!(go_duration(Duration::from_secs(90)), "0h1m30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "0h0m1.500s");
    }

    #[test]
    fn phases() {
        assert_eq!(Outcome::of(Some("Completed")), Outcome::Completed);
        for p in [
            None,
            Some("New"),
            Some("Queued"),
            Some("FinalizingPartiallyFailed"),
            Some("Teleporting"),
        ] {
            assert!(!Outcome::of(p).is_terminal(), "{p:?}");
        }
        assert!(Outcome::of(Some("FailedValidation")).is_failure());
    }

    #[test]
    fn restore_defaults_to_mapped_namespaces() {
        let req = RestoreRequest {
            backup_name: "b".into(),
            namespace_mapping: [("data".to_string(), "drill-data".to_string())].into(),
            ..Default::default()
        };
        let o = restore_object("r", "velero", &req);
        assert_eq!(o["spec"]["includedNamespaces"], json!(["data"]));
        assert_eq!(o["spec"]["namespaceMapping"]["data"], "drill-data");
    }
}
