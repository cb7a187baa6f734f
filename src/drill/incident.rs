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
use crate::secret::strip_uri_password;

/// A restored source, as later steps (checks) and resumed runs need it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Restored {
    pub(super) manifest: Manifest,
    pub(super) target: String,
    pub(super) into: String,
    pub(super) path: Option<PathBuf>,
    /// Server URI of a restore into a server (scratch or real). Written to
    /// the state file without its password; a resumed run takes it again
    /// from its endpoint ([`IncidentState::reconnect`]).
    #[serde(default, serialize_with = "without_password")]
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

    /// Gives the restored servers back the passwords the state file does not
    /// hold: a source's URI is its endpoint's (from this run's `--into` and
    /// its password reference) when they agree but for the password.
    pub(super) fn reconnect(&mut self, endpoints: &BTreeMap<String, String>) {
        for (source, r) in &mut self.restored {
            if let (Some(uri), Some(ep)) = (&r.uri, endpoints.get(source)) {
                if *uri == strip_uri_password(ep) {
                    r.uri = Some(ep.clone());
                }
            }
        }
    }

    /// Writes it atomically (temporary file, then rename), mode 0600, with no
    /// password in it.
    pub(super) fn save(&self, path: &Path) -> Result<(), DrillError> {
        let body = serde_json::to_vec_pretty(self).expect("state serialises");
        crate::secret::write_private(path, &body).map_err(|e| {
            DrillError::Gsdr(Error::LocalIo {
                what: "writing the incident state file",
                path: path.to_path_buf(),
                source: e,
            })
        })
    }
}

fn without_password<S: serde::Serializer>(uri: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    uri.as_deref().map(strip_uri_password).serialize(s)
}
