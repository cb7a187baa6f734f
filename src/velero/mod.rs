//! Velero: Kubernetes backups and restores driven through the Kubernetes API.
//!
//! gsdr does not run the `velero` CLI. It creates `velero.io/v1` objects with
//! kube-rs and waits on their phase:
//!
//! - [`backup`] creates a `Backup` from a policy job (`[velero.jobs.NAME]`),
//!   waits for a terminal phase (`Completed`, `PartiallyFailed`, `Failed`,
//!   `FailedValidation`; any other phase, known or not, is "still running"),
//!   and returns a [`VeleroRecord`] for gsdr's catalog (under [`record_key`]).
//!   A failed or partly failed backup's log is fetched through a
//!   `DownloadRequest` and a bounded excerpt kept in the record.
//! - [`restore`] does the same with a `Restore`, with a namespace mapping for
//!   drills into scratch namespaces.
//! - [`delete_backup`] deletes through a `DeleteBackupRequest`, never by
//!   deleting the Backup object (that would leave the data in object storage).
//! - [`status`] lists Backups, Restores and BackupStorageLocations.
//!
//! gsdr triggers Backups from its own scheduler rather than managing Velero
//! `Schedule` objects: one schedule view, one lease, one catalog (see
//! `docs/velero.md`).

pub mod catalog;
mod client;
pub mod config;
pub mod objects;

use crate::fault::ErrorKind;
use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use catalog::{list_records, put_record, record_key};
pub use client::{
    LogExcerpt, Resource, VeleroClient, LOG_ERROR_LINES, LOG_LINE_MAX, LOG_TAIL_LINES,
};
pub use config::{VeleroConfig, VeleroJob};
pub use objects::{LogKind, Outcome, RestoreRequest, RunStatus};

use crate::fault::RetryClass;

/// Version of the JSON shapes below (catalog records and `--json` output).
pub const SCHEMA_VERSION: u32 = 1;

/// A failure talking to Velero.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VeleroError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}{}", kube_hint(source))]
    Kube {
        /// What gsdr was doing.
        what: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Velero did not reach a terminal phase in time; the object goes on in the cluster.
    #[error("{kind} `{name}` in namespace `{namespace}` did not finish within {}: last phase {}; it may still finish: check `gsdr velero status`, or raise `velero.timeout`", humantime::format_duration(*waited), phase.as_deref().unwrap_or("(none yet)"))]
    Timeout {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Velero's namespace.
        namespace: String,
        /// The last phase seen.
        phase: Option<String>,
        /// How long gsdr waited.
        waited: Duration,
    },
    /// The object was deleted while gsdr waited on it.
    #[error(
        "{kind} `{name}` in namespace `{namespace}` was deleted while gsdr waited for it to finish"
    )]
    Vanished {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// Velero's namespace.
        namespace: String,
    },
    /// The policy has no such job.
    #[error("no Velero job `{job}` in the policy (known: {known}); add `[velero.jobs.{job}]` or pick one of these")]
    UnknownJob {
        /// The job asked for.
        job: String,
        /// The jobs the policy has.
        known: String,
    },
    /// An object did not have the expected shape.
    #[error("{what}: unexpected object: {source}")]
    Decode {
        /// What gsdr was doing.
        what: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Downloading a log failed.
    #[error("{what}: {source}; the download URL comes from Velero's object store: check that gsdr can reach it")]
    Http {
        /// What gsdr was doing.
        what: String,
        /// The cause (without the presigned URL).
        #[source]
        source: reqwest::Error,
    },
    /// A log could not be decompressed.
    #[error("{what}: the log is not valid gzip: {source}")]
    LogFormat {
        /// What gsdr was doing.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a Velero record in gsdr's catalog failed.
    #[error("Velero record `{key}` in {store}: {source}")]
    Catalog {
        /// The record's key.
        key: String,
        /// The store, described.
        store: String,
        /// The cause.
        #[source]
        source: Box<crate::storage::StorageError>,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
}

fn kube_hint(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 403 => {
            "; gsdr's service account lacks a permission: apply deploy/rbac/velero-role.yaml"
        }
        kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound" => "",
        kube::Error::Api(s) if s.code == 404 => "; is Velero installed (its CRDs) in this cluster?",
        _ => "",
    }
}

impl VeleroError {
    /// Whether a retry may succeed.
    pub fn retry_class(&self) -> RetryClass {
        match self {
            VeleroError::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(s) if s.code == 429 || s.code >= 500 => RetryClass::Temporary,
                kube::Error::Api(_) => RetryClass::Permanent,
                _ => RetryClass::Temporary,
            },
            VeleroError::Timeout { .. } | VeleroError::Http { .. } => RetryClass::Temporary,
            VeleroError::Catalog { source, .. } => source.retry_class(),
            _ => RetryClass::Permanent,
        }
    }
}

/// One Velero backup as gsdr's catalog records it (`velero/<job>/<name>.json`) and `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VeleroRecord {
    /// Version of this shape.
    pub schema_version: u32,
    /// Backup object name.
    pub name: String,
    /// The gsdr job that created it (label `gsdr.io/job`); none for backups made elsewhere.
    pub job: Option<String>,
    /// Velero's namespace.
    pub namespace: String,
    /// Phase as Velero wrote it (none before Velero has seen the object).
    pub phase: Option<String>,
    /// How the phase counts.
    pub outcome: Outcome,
    /// When Velero started.
    pub started: Option<DateTime<Utc>>,
    /// When Velero finished.
    pub completed: Option<DateTime<Utc>>,
    /// When Velero deletes it (creation + TTL).
    pub expiration: Option<DateTime<Utc>>,
    /// Items that failed.
    pub errors: u64,
    /// Warnings.
    pub warnings: u64,
    /// Items backed up.
    pub items_backed_up: Option<u64>,
    /// Items Velero expected.
    pub total_items: Option<u64>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Why the spec was rejected (FailedValidation).
    pub validation_errors: Vec<String>,
    /// BackupStorageLocation.
    pub storage_location: Option<String>,
    /// Excerpt of Velero's log, fetched when the backup did not complete cleanly.
    pub log: Option<LogExcerpt>,
    /// Why the log could not be fetched, if it could not.
    pub log_error: Option<String>,
}

impl VeleroRecord {
    /// Builds a record from a Backup object.
    pub fn from_object(obj: &Value) -> VeleroRecord {
        let st = RunStatus::of(obj);
        let md = &obj["metadata"];
        VeleroRecord {
            schema_version: SCHEMA_VERSION,
            name: md["name"].as_str().unwrap_or_default().to_string(),
            job: md["labels"][objects::JOB_LABEL]
                .as_str()
                .map(str::to_string),
            namespace: md["namespace"].as_str().unwrap_or_default().to_string(),
            outcome: st.outcome(),
            phase: st.phase,
            started: st.start_timestamp,
            completed: st.completion_timestamp,
            expiration: st.expiration,
            errors: st.errors,
            warnings: st.warnings,
            items_backed_up: st.progress.items_backed_up,
            total_items: st.progress.total_items,
            failure_reason: st.failure_reason,
            validation_errors: st.validation_errors,
            storage_location: obj["spec"]["storageLocation"].as_str().map(str::to_string),
            log: None,
            log_error: None,
        }
    }
}

/// One Velero restore, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    /// Version of this shape.
    pub schema_version: u32,
    /// Restore object name.
    pub name: String,
    /// The Backup restored from.
    pub backup_name: String,
    /// Namespace renames applied.
    pub namespace_mapping: BTreeMap<String, String>,
    /// Phase as Velero wrote it.
    pub phase: Option<String>,
    /// How the phase counts.
    pub outcome: Outcome,
    /// When Velero started.
    pub started: Option<DateTime<Utc>>,
    /// When Velero finished.
    pub completed: Option<DateTime<Utc>>,
    /// Items that failed.
    pub errors: u64,
    /// Warnings.
    pub warnings: u64,
    /// Items restored.
    pub items_restored: Option<u64>,
    /// Items Velero expected.
    pub total_items: Option<u64>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// Why the spec was rejected (FailedValidation).
    pub validation_errors: Vec<String>,
    /// Excerpt of Velero's log, fetched when the restore did not complete cleanly.
    pub log: Option<LogExcerpt>,
    /// Why the log could not be fetched, if it could not.
    pub log_error: Option<String>,
}

impl RestoreRecord {
    /// Builds a record from a Restore object.
    pub fn from_object(obj: &Value) -> RestoreRecord {
        let st = RunStatus::of(obj);
        let spec = &obj["spec"];
        RestoreRecord {
            schema_version: SCHEMA_VERSION,
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            backup_name: spec["backupName"].as_str().unwrap_or_default().to_string(),
            namespace_mapping: serde_json::from_value(spec["namespaceMapping"].clone())
                .unwrap_or_default(),
            outcome: st.outcome(),
            phase: st.phase,
            started: st.start_timestamp,
            completed: st.completion_timestamp,
            errors: st.errors,
            warnings: st.warnings,
            items_restored: st.progress.items_restored,
            total_items: st.progress.total_items,
            failure_reason: st.failure_reason,
            validation_errors: st.validation_errors,
            log: None,
            log_error: None,
        }
    }
}

/// A BackupStorageLocation, as `gsdr velero status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageLocation {
    /// Name.
    pub name: String,
    /// `Available` or `Unavailable` (as Velero last validated it).
    pub phase: Option<String>,
    /// Whether it is Velero's default location.
    pub default: bool,
    /// Object store plugin, e.g. `aws`.
    pub provider: Option<String>,
    /// Bucket.
    pub bucket: Option<String>,
    /// Prefix in the bucket.
    pub prefix: Option<String>,
    /// When Velero last checked it.
    pub last_validation_time: Option<DateTime<Utc>>,
    /// Velero's message (why it is unavailable).
    pub message: Option<String>,
}

impl StorageLocation {
    fn from_object(obj: &Value) -> StorageLocation {
        let s = |v: &Value| v.as_str().map(str::to_string);
        StorageLocation {
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            phase: s(&obj["status"]["phase"]),
            default: obj["spec"]["default"].as_bool().unwrap_or(false),
            provider: s(&obj["spec"]["provider"]),
            bucket: s(&obj["spec"]["objectStorage"]["bucket"]),
            prefix: s(&obj["spec"]["objectStorage"]["prefix"]),
            last_validation_time: obj["status"]["lastValidationTime"]
                .as_str()
                .and_then(|t| t.parse().ok()),
            message: s(&obj["status"]["message"]),
        }
    }
}

/// What `gsdr velero status` shows: backups and restores (newest first) and storage locations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// Version of this shape.
    pub schema_version: u32,
    /// Velero's namespace.
    pub namespace: String,
    /// Every Backup in the namespace, newest first.
    pub backups: Vec<VeleroRecord>,
    /// Every Restore in the namespace, newest first.
    pub restores: Vec<RestoreRecord>,
    /// Every BackupStorageLocation.
    pub storage_locations: Vec<StorageLocation>,
}

/// A Backup or Restore name: `<prefix>-<yyyymmddhhmmss>-<4 hex>` (sorts by time, at most 63 characters).
pub fn object_name(prefix: &str, now: DateTime<Utc>) -> String {
    format!(
        "{prefix}-{}-{:04x}",
        now.format("%Y%m%d%H%M%S"),
        rand::random::<u16>()
    )
}

/// Creates a Backup for policy job `job`, waits for it to finish, and returns its record.
///
/// Every terminal phase returns `Ok` (a failed backup is still recorded); check
/// [`VeleroRecord::outcome`]. `Err` means gsdr could not create or follow it
/// (API errors, timeout).
pub async fn backup(
    client: &VeleroClient,
    cfg: &VeleroConfig,
    job: &str,
) -> Result<VeleroRecord, VeleroError> {
    let spec = cfg.job(job)?;
    let name = object_name(job, Utc::now());
    let obj = objects::backup_object(
        &name,
        client.namespace(),
        job,
        spec,
        cfg.storage_location.as_deref(),
    );
    client.create(Resource::Backup, &obj).await?;
    tracing::info!(job, name, "velero backup created");
    let done = client
        .wait_terminal(Resource::Backup, &name, cfg.timeout_of(spec))
        .await?;
    let mut rec = VeleroRecord::from_object(&done);
    if matches!(rec.outcome, Outcome::Failed | Outcome::PartiallyFailed) {
        match client.fetch_log(LogKind::Backup, &name).await {
            Ok(l) => rec.log = Some(l),
            Err(e) => rec.log_error = Some(e.to_string()),
        }
    }
    tracing::info!(
        job,
        name,
        phase = rec.phase.as_deref().unwrap_or(""),
        errors = rec.errors,
        warnings = rec.warnings,
        "velero backup finished"
    );
    Ok(rec)
}

/// Creates a Restore, waits up to `timeout` for it to finish, and returns its record.
/// Every terminal phase returns `Ok`; check [`RestoreRecord::outcome`].
pub async fn restore(
    client: &VeleroClient,
    req: &RestoreRequest,
    timeout: Duration,
) -> Result<RestoreRecord, VeleroError> {
    if req.backup_name.is_empty() {
        return Err(VeleroError::Invalid(
            "a restore needs the name of a Velero backup (--backup NAME)".into(),
        ));
    }
    let prefix = format!(
        "{}-restore",
        req.backup_name
            .chars()
            .take(30)
            .collect::<String>()
            .trim_end_matches('-')
    );
    let name = object_name(&prefix, Utc::now());
    client
        .create(
            Resource::Restore,
            &objects::restore_object(&name, client.namespace(), req),
        )
        .await?;
    tracing::info!(backup = req.backup_name, name, "velero restore created");
    let done = client
        .wait_terminal(Resource::Restore, &name, timeout)
        .await?;
    let mut rec = RestoreRecord::from_object(&done);
    if matches!(rec.outcome, Outcome::Failed | Outcome::PartiallyFailed) {
        match client.fetch_log(LogKind::Restore, &name).await {
            Ok(l) => rec.log = Some(l),
            Err(e) => rec.log_error = Some(e.to_string()),
        }
    }
    Ok(rec)
}

/// Asks Velero to delete a backup (its data, snapshots and object) through a
/// `DeleteBackupRequest`; returns the request's name. Velero does the deletion asynchronously.
pub async fn delete_backup(
    client: &VeleroClient,
    backup_name: &str,
) -> Result<String, VeleroError> {
    let name = object_name(
        &format!(
            "{}-delete",
            backup_name
                .chars()
                .take(35)
                .collect::<String>()
                .trim_end_matches('-')
        ),
        Utc::now(),
    );
    client
        .create(
            Resource::DeleteBackupRequest,
            &objects::delete_backup_request_object(&name, client.namespace(), backup_name),
        )
        .await?;
    Ok(name)
}

fn newest_first(items: &mut [Value]) {
    items.sort_by(|a, b| {
        let t = |v: &Value| {
            v["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        t(b).cmp(&t(a)).then_with(|| {
            b["metadata"]["name"]
                .as_str()
                .cmp(&a["metadata"]["name"].as_str())
        })
    });
}

/// Backups, restores and storage locations in Velero's namespace.
pub async fn status(client: &VeleroClient) -> Result<StatusReport, VeleroError> {
    let mut backups = client.list(Resource::Backup).await?;
    let mut restores = client.list(Resource::Restore).await?;
    let locations = client.list(Resource::BackupStorageLocation).await?;
    newest_first(&mut backups);
    newest_first(&mut restores);
    Ok(StatusReport {
        schema_version: SCHEMA_VERSION,
        namespace: client.namespace().to_string(),
        backups: backups.iter().map(VeleroRecord::from_object).collect(),
        restores: restores.iter().map(RestoreRecord::from_object).collect(),
        storage_locations: locations.iter().map(StorageLocation::from_object).collect(),
    })
}

impl VeleroError {
    /// What the operator must fix (exit codes, `--json` error documents).
    pub fn kind(&self) -> ErrorKind {
        match self {
            VeleroError::Kube { .. } | VeleroError::Http { .. } => ErrorKind::Unreachable,
            VeleroError::Timeout { .. } => ErrorKind::Cancelled,
            VeleroError::UnknownJob { .. } => ErrorKind::InvalidInput,
            _ => ErrorKind::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        let t: DateTime<Utc> = "2026-11-29T03:00:00Z".parse().unwrap();
        let n = object_name(&"a".repeat(40), t);
        assert!(n.len() <= 63, "{n}");
        assert!(
            n.starts_with(&format!("{}-20261129030000-", "a".repeat(40))),
            "{n}"
        );
        assert_eq!(
            record_key("cluster-full", "x"),
            "velero/cluster-full/x.json"
        );
    }

    #[test]
    fn timeout_message_says_what_to_do() {
        let e = VeleroError::Timeout {
            kind: "Backup",
            name: "b".into(),
            namespace: "velero".into(),
            phase: Some("InProgress".into()),
            waited: Duration::from_secs(90),
        };
        assert_eq!(
            e.to_string(),
            "Backup `b` in namespace `velero` did not finish within 1m 30s: last phase InProgress; it may still finish: check `gsdr velero status`, or raise `velero.timeout`"
        );
        assert_eq!(e.retry_class(), RetryClass::Temporary);
    }
}
