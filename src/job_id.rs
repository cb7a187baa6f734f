//! The names of scheduled jobs (`<kind>/<name>`: `backup/<source>`,
//! `velero/<job>`, `drill/scheduled`, `prune/all`…): vocabulary shared by the
//! scheduler that runs them and the metrics and notifications that report them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of scheduled jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// A backup of one source (then its replication, and its retention when `prune_after_run`).
    Backup,
    /// A Velero Backup of one `[velero.jobs.NAME]`, recorded in the catalog.
    Velero,
    /// The scheduled DR drills of `[drills]`.
    Drill,
    /// Retention of every source on every target (`gsdr prune`).
    Prune,
    /// The catch-up sweep: what the off-site targets lack (`gsdr replicate`).
    Replicate,
    /// Garbage collection of every target (`gsdr storage gc`).
    Gc,
    /// The end of each postgres source's contiguous WAL chain, and the metrics
    /// every replica derives from the catalog (not leased: every replica runs it).
    WalStatus,
    /// What the on-call engineer must know beyond job failures: RPO above
    /// target, WAL and off-site lag, drill results, the heartbeat.
    Watch,
    /// A source's continuous capture (`source::capture`): runs until shutdown;
    /// a failed run restarts at the next slot (`daemon.capture_restart`).
    Capture,
}

impl JobKind {
    /// Every kind, in the order `gsdr status` lists them.
    pub const ALL: [JobKind; 9] = [
        JobKind::Backup,
        JobKind::Velero,
        JobKind::Drill,
        JobKind::Prune,
        JobKind::Replicate,
        JobKind::Gc,
        JobKind::WalStatus,
        JobKind::Watch,
        JobKind::Capture,
    ];

    /// The kind's name in job ids, metrics labels and `daemon.timeouts`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Velero => "velero",
            JobKind::Drill => "drill",
            JobKind::Prune => "prune",
            JobKind::Replicate => "replicate",
            JobKind::Gc => "gc",
            JobKind::WalStatus => "wal-status",
            JobKind::Watch => "watch",
            JobKind::Capture => "capture",
        }
    }

    /// Whether one run per slot across replicas (a lease); otherwise every replica runs it.
    pub fn leased(self) -> bool {
        self != JobKind::WalStatus
    }

    /// Whether a failed attempt with a temporary error is retried within its slot.
    pub fn retried(self) -> bool {
        matches!(self, JobKind::Backup | JobKind::Velero)
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a job kind; kinds: {}",
                    JobKind::ALL.map(JobKind::as_str).join(", ")
                )
            })
    }
}

/// A job's identity: kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId {
    /// Its kind.
    pub kind: JobKind,
    /// Source, Velero job, or `all` / `scheduled` for the policy-wide jobs.
    pub name: String,
}

impl JobId {
    /// `kind/name`.
    pub fn new(kind: JobKind, name: impl Into<String>) -> Self {
        JobId {
            kind,
            name: name.into(),
        }
    }

    /// The backup job of `source`.
    pub fn backup(source: &str) -> Self {
        JobId::new(JobKind::Backup, source)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}
