//! The state file of an incident run: the steps finished so far and what
//! they restored, so a failed run resumes without redoing them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::canary::Recovered;
use super::report::StepReport;
use super::DrillError;
use crate::catalog::Manifest;
use crate::error::Error;

/// A restored source, as later steps (checks) and resumed runs need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Restored {
    pub(super) manifest: Manifest,
    pub(super) target: String,
    pub(super) into: String,
    pub(super) path: Option<PathBuf>,
    /// Server URI of a restore into a server (scratch or real).
    #[serde(default)]
    pub(super) uri: Option<String>,
    pub(super) recovered: Option<Recovered>,
    /// What to do before checks can connect (an endpoint prepared, not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) start_hint: Option<String>,
}

/// The resumable record of an incident run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IncidentState {
    pub(super) scenario: String,
    pub(super) started_at: DateTime<Utc>,
    pub(super) steps: BTreeMap<String, StepReport>,
    pub(super) restored: BTreeMap<String, Restored>,
}

impl IncidentState {
    /// Reads the state of `scenario`'s run from `path`.
    pub(super) fn load(path: &Path, scenario: &str) -> Result<IncidentState, DrillError> {
        let err = |message: String| DrillError::State {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read it ({e}); run without --resume to start over"
            ))
        })?;
        let s: IncidentState =
            serde_json::from_str(&text).map_err(|e| err(format!("unreadable: {e}")))?;
        if s.scenario != scenario {
            return Err(err(format!(
                "it records scenario `{}`, not `{scenario}`",
                s.scenario
            )));
        }
        Ok(s)
    }

    /// Writes it atomically (temporary file, then rename).
    pub(super) fn save(&self, path: &Path) -> Result<(), DrillError> {
        let tmp = path.with_extension("tmp");
        let io = |e| {
            DrillError::Gsdr(Error::LocalIo {
                what: "writing the incident state file",
                path: path.to_path_buf(),
                source: e,
            })
        };
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).expect("state serialises"),
        )
        .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
