//! Notifications for the on-call engineer: what happened ([`Notice`]), how
//! it reads ([`render`]: a Slack-compatible or a generic JSON body), when it
//! is due ([`watch`]: transitions of a serialisable [`WatchState`]), and how
//! it is delivered ([`Sender`]: webhook and heartbeat URLs, with a timeout).
//!
//! Sent once across replicas: [`watch::evaluate`] is pure and its state is
//! serialisable, so the replica that holds the watch job's lease evaluates,
//! sends, and stores the state in the catalog; another replica, or a
//! restart, starts from that state and does not send the same notice again.
//! URLs are secrets: they never appear in logs or errors.
//!
//! [`Notifier`] is the older per-slot hook of the scheduler (backup failure
//! and recovery, rate limited per source); it renders and posts through the
//! same code.

mod hook;
pub mod render;
mod sender;
pub mod watch;

use serde::Serialize;

pub use hook::{decide, Notifier, NotifyState};
pub use sender::{Endpoint, NotifyError, Sender, SEND_TIMEOUT};
pub use watch::{
    evaluate, JobKind, JobObservation, JobOutcome, Observations, Rules, SourceObservation,
    WatchState,
};

/// Something an on-call engineer must know. Durations are seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notice {
    /// A backup of a source failed (every attempt, or a permanent error).
    BackupFailed {
        /// Source name.
        source: String,
        /// The last error.
        error: String,
    },
    /// The first successful backup of a source after a failure.
    BackupRecovered {
        /// Source name.
        source: String,
        /// The backup that succeeded.
        backup_id: String,
    },
    /// A job other than a backup, a Velero backup or a drill result failed.
    JobFailed {
        /// Job kind (`prune`, `replicate`, `gc`, `wal-status`, `drill`).
        job_kind: String,
        /// Job name (a source, a target, a scenario…).
        name: String,
        /// The last error.
        error: String,
    },
    /// The first success of such a job after a failure.
    JobRecovered {
        /// Job kind.
        job_kind: String,
        /// Job name.
        name: String,
    },
    /// A DR drill finished, passed or not.
    DrillFinished(DrillResult),
    /// A source's RPO exposure (time since its newest restorable point) is above its target.
    RpoAboveTarget {
        /// Source name.
        source: String,
        /// Current exposure.
        exposure_secs: f64,
        /// The source's RPO objective.
        target_secs: f64,
    },
    /// A source's RPO exposure is back within its target.
    RpoWithinTarget {
        /// Source name.
        source: String,
        /// Current exposure.
        exposure_secs: f64,
        /// The source's RPO objective.
        target_secs: f64,
    },
    /// A postgres source's WAL archive lags more than `daemon.wal_lag_alert`.
    WalLagAbove {
        /// Source name.
        source: String,
        /// Current lag.
        lag_secs: f64,
        /// The threshold.
        threshold_secs: f64,
    },
    /// The WAL archive lag is back below the threshold.
    WalLagRecovered {
        /// Source name.
        source: String,
        /// Current lag.
        lag_secs: f64,
        /// The threshold.
        threshold_secs: f64,
    },
    /// A source's off-site copy lags its primary more than `daemon.offsite_lag_alert`.
    OffsiteLagAbove {
        /// Source name.
        source: String,
        /// Current lag.
        lag_secs: f64,
        /// The threshold.
        threshold_secs: f64,
    },
    /// The off-site lag is back below the threshold.
    OffsiteLagRecovered {
        /// Source name.
        source: String,
        /// Current lag.
        lag_secs: f64,
        /// The threshold.
        threshold_secs: f64,
    },
    /// A Velero backup job failed.
    VeleroFailed {
        /// Velero job name.
        job: String,
        /// The error (or the Backup's phase and reason).
        error: String,
    },
    /// The first completed Velero backup of a job after a failure.
    VeleroRecovered {
        /// Velero job name.
        job: String,
        /// The Backup object that completed, if known.
        backup: Option<String>,
    },
    /// Nothing is failing: the dead man's switch ping (`daemon.heartbeat_url`).
    Heartbeat,
}

/// The outcome of one DR drill, as notified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillResult {
    /// Scenario name.
    pub scenario: String,
    /// Every step passed and every objective was met.
    pub passed: bool,
    /// Measured recovery time, if the drill got that far.
    pub rto_secs: Option<f64>,
    /// The RTO objective.
    pub rto_target_secs: Option<f64>,
    /// Recovery point per source.
    pub rpo: Vec<SourceRpo>,
    /// Where the report is (`s3://bucket/prefix/drills/…json` or a path).
    pub report: String,
}

/// The recovery point a drill measured for one source.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRpo {
    /// Source name.
    pub source: String,
    /// Data lost, in seconds.
    pub rpo_secs: f64,
    /// The RPO objective.
    pub target_secs: Option<f64>,
}

impl DrillResult {
    /// The summary of a drill report stored at `report`.
    pub fn from_report(r: &crate::drill::report::DrillReport, report: impl Into<String>) -> Self {
        DrillResult {
            scenario: r.scenario.clone(),
            passed: r.passed,
            rto_secs: r.rto.achieved_secs,
            rto_target_secs: r.rto.target_secs,
            rpo: r
                .rpo
                .iter()
                .map(|p| SourceRpo {
                    source: p.source.clone(),
                    rpo_secs: p.achieved_secs,
                    target_secs: p.target_secs,
                })
                .collect(),
            report: report.into(),
        }
    }
}

/// How urgent a notice is (`severity` in the JSON body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Data is at risk now: a failure, an RPO breach, a failed drill.
    Critical,
    /// A lag above its threshold: data will be at risk if it lasts.
    Warning,
    /// A recovery, a passed drill, a heartbeat.
    Info,
}

impl Severity {
    /// `critical`, `warning` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl Notice {
    /// How urgent this notice is.
    pub fn severity(&self) -> Severity {
        match self {
            Notice::BackupFailed { .. }
            | Notice::JobFailed { .. }
            | Notice::RpoAboveTarget { .. }
            | Notice::VeleroFailed { .. } => Severity::Critical,
            Notice::DrillFinished(d) if !d.passed => Severity::Critical,
            Notice::WalLagAbove { .. } | Notice::OffsiteLagAbove { .. } => Severity::Warning,
            _ => Severity::Info,
        }
    }

    /// The `kind` of the JSON body (`backup_failed`, `drill_finished`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::BackupFailed { .. } => "backup_failed",
            Notice::BackupRecovered { .. } => "backup_recovered",
            Notice::JobFailed { .. } => "job_failed",
            Notice::JobRecovered { .. } => "job_recovered",
            Notice::DrillFinished(_) => "drill_finished",
            Notice::RpoAboveTarget { .. } => "rpo_above_target",
            Notice::RpoWithinTarget { .. } => "rpo_within_target",
            Notice::WalLagAbove { .. } => "wal_lag_above",
            Notice::WalLagRecovered { .. } => "wal_lag_recovered",
            Notice::OffsiteLagAbove { .. } => "offsite_lag_above",
            Notice::OffsiteLagRecovered { .. } => "offsite_lag_recovered",
            Notice::VeleroFailed { .. } => "velero_failed",
            Notice::VeleroRecovered { .. } => "velero_recovered",
            Notice::Heartbeat => "heartbeat",
        }
    }
}
