//! The `[velero]` section of a policy file: where Velero runs and which
//! Backups gsdr triggers, when.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::cron::CronSchedule;
use crate::units::HumanDuration;

/// Velero settings of a policy (`[velero]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VeleroConfig {
    /// Namespace Velero runs in and where its Backup/Restore objects live.
    pub namespace: String,
    /// BackupStorageLocation used when a job names none (unset: Velero's default location).
    pub storage_location: Option<String>,
    /// How long gsdr waits for a Backup or Restore to reach a terminal phase before giving up on waiting.
    pub timeout: HumanDuration,
    /// Velero backup jobs, by name (`[velero.jobs.cluster-full]`).
    pub jobs: BTreeMap<String, VeleroJob>,
}

impl Default for VeleroConfig {
    fn default() -> Self {
        VeleroConfig {
            namespace: "velero".into(),
            storage_location: None,
            timeout: HumanDuration(Duration::from_secs(4 * 3600)),
            jobs: BTreeMap::new(),
        }
    }
}

/// One Velero backup job: a Backup object gsdr creates on its schedule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VeleroJob {
    /// When to run (cron, UTC). Unset: only on demand (`gsdr velero backup --job NAME`).
    pub schedule: Option<CronSchedule>,
    /// How long Velero keeps the backup before it garbage-collects it (Backup `spec.ttl`); unset: Velero's default (720h).
    pub ttl: Option<HumanDuration>,
    /// Namespaces to include; empty = all (`*`).
    pub included_namespaces: Vec<String>,
    /// Namespaces to leave out.
    pub excluded_namespaces: Vec<String>,
    /// Resources to include (e.g. `deployments.apps`); empty = all.
    pub included_resources: Vec<String>,
    /// Resources to leave out.
    pub excluded_resources: Vec<String>,
    /// Whether cluster-scoped resources are included; unset: Velero decides (all for a full backup).
    pub include_cluster_resources: Option<bool>,
    /// Only objects carrying all these labels (`matchLabels`).
    pub label_selector: BTreeMap<String, String>,
    /// BackupStorageLocation (default: `velero.storage_location`, then Velero's default).
    pub storage_location: Option<String>,
    /// VolumeSnapshotLocations for volume snapshots.
    pub volume_snapshot_locations: Vec<String>,
    /// Take cloud/CSI snapshots of persistent volumes; unset: Velero's default.
    pub snapshot_volumes: Option<bool>,
    /// Back up every pod volume with the file-system uploader (kopia) unless opted out.
    pub default_volumes_to_fs_backup: Option<bool>,
    /// Wait timeout for this job (default: `velero.timeout`).
    pub timeout: Option<HumanDuration>,
    /// Backup hooks: commands run in pods before and after their volumes are backed up.
    pub hooks: Vec<BackupHook>,
}

/// A backup hook: exec commands in the matching pods (`[[velero.jobs.NAME.hooks]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupHook {
    /// Name of the hook (shown in Velero's logs).
    pub name: String,
    /// Namespaces the hook applies to; empty = all included.
    #[serde(default)]
    pub included_namespaces: Vec<String>,
    /// Namespaces the hook skips.
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    /// Only pods carrying all these labels.
    #[serde(default)]
    pub label_selector: BTreeMap<String, String>,
    /// Commands run before the pod's volumes are backed up.
    #[serde(default)]
    pub pre: Vec<ExecHook>,
    /// Commands run after the pod's volumes are backed up.
    #[serde(default)]
    pub post: Vec<ExecHook>,
}

/// One command run in a container by a hook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecHook {
    /// Container to run in; unset: the pod's first container.
    #[serde(default)]
    pub container: Option<String>,
    /// The program and its arguments (no shell unless you call one).
    pub command: Vec<String>,
    /// What Velero does when the command fails: `continue` or `fail` the backup.
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// How long the command may run (Velero's default: 30s).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// What to do when a hook command fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Log it and go on.
    Continue,
    /// Fail the backup (it ends `PartiallyFailed`).
    Fail,
}

impl OnError {
    /// The value Velero expects.
    pub fn as_velero(self) -> &'static str {
        match self {
            OnError::Continue => "Continue",
            OnError::Fail => "Fail",
        }
    }
}

impl VeleroConfig {
    /// Checks what serde cannot: names usable in Kubernetes, commands not empty.
    /// Returns (dotted field, message) for the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_dns_label(&self.namespace).map_err(|m| ("velero.namespace".to_string(), m))?;
        for (name, job) in &self.jobs {
            let f = format!("velero.jobs.{name}");
            // The Backup name is `<job>-<yyyymmddhhmmss>-<4 hex>`: keep the job short enough.
            if name.len() > 40 {
                return Err((
                    f,
                    "job names are at most 40 characters (they start the Backup object's name)"
                        .into(),
                ));
            }
            check_dns_label(name).map_err(|m| (f.clone(), m))?;
            for (i, h) in job.hooks.iter().enumerate() {
                for (which, list) in [("pre", &h.pre), ("post", &h.post)] {
                    for (j, e) in list.iter().enumerate() {
                        if e.command.is_empty() {
                            return Err((
                                format!("{f}.hooks[{i}].{which}[{j}].command"),
                                "needs the program and its arguments".into(),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The job named `job`, or an error listing the known ones.
    pub fn job(&self, job: &str) -> Result<&VeleroJob, super::VeleroError> {
        self.jobs
            .get(job)
            .ok_or_else(|| super::VeleroError::UnknownJob {
                job: job.to_string(),
                known: self.jobs.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// The wait timeout of a job.
    pub fn timeout_of(&self, job: &VeleroJob) -> Duration {
        job.timeout.unwrap_or(self.timeout).0
    }
}

/// A Kubernetes DNS-1123 label: lower-case letters, digits and `-`, starting and ending alphanumeric, ≤ 63.
fn check_dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}`: use lower-case letters, digits and `-` (a Kubernetes name), starting and ending with a letter or digit"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
namespace = "velero"
timeout = "2h"

[jobs.cluster-full]
schedule = "0 3 * * *"
ttl = "720h"
snapshot_volumes = false
default_volumes_to_fs_backup = true

[jobs.data-namespaces]
schedule = "0 * * * *"
ttl = "720h"
included_namespaces = ["data", "minio"]
label_selector = { "app.kubernetes.io/part-of" = "platform" }

[[jobs.data-namespaces.hooks]]
name = "mongo-fsync"
included_namespaces = ["data"]
label_selector = { app = "mongo" }
pre = [{ container = "mongod", command = ["mongosh", "--eval", "db.fsyncLock()"], on_error = "fail", timeout = "30s" }]
post = [{ container = "mongod", command = ["mongosh", "--eval", "db.fsyncUnlock()"] }]
"#;

    #[test]
    fn example_parses_and_validates() {
        let c: VeleroConfig = toml::from_str(EXAMPLE).unwrap();
        c.validate().unwrap();
        assert_eq!(c.jobs.len(), 2);
        let d = &c.jobs["data-namespaces"];
        assert_eq!(d.included_namespaces, ["data", "minio"]);
        assert_eq!(d.hooks[0].pre[0].on_error, Some(OnError::Fail));
        assert_eq!(c.timeout_of(d), Duration::from_secs(7200));
        assert_eq!(
            c.jobs["cluster-full"].ttl.unwrap().0,
            Duration::from_secs(720 * 3600)
        );
    }

    #[test]
    fn unknown_fields_and_bad_names_are_rejected() {
        let e =
            toml::from_str::<VeleroConfig>("[jobs.a]\nincluded_namespace = [\"x\"]\n").unwrap_err();
        assert!(e.to_string().contains("included_namespace"), "{e}");
        let c: VeleroConfig = toml::from_str("[jobs.Cluster_Full]\n").unwrap();
        let (field, msg) = c.validate().unwrap_err();
        assert_eq!(field, "velero.jobs.Cluster_Full");
        assert!(msg.contains("lower-case"), "{msg}");
        let c: VeleroConfig =
            toml::from_str("[[jobs.a.hooks]]\nname = \"h\"\npre = [{ command = [] }]\n").unwrap();
        assert_eq!(
            c.validate().unwrap_err().0,
            "velero.jobs.a.hooks[0].pre[0].command"
        );
    }
}
