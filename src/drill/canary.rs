//! Heartbeat canaries: a small timestamped record gsdr writes into each source
//! on a schedule, so that after a restore the newest canary found in the
//! restored data is the point actually recovered (the RPO is measured from
//! data, not from what a manifest claims).
//!
//! Per engine: a row in table [`SQL_TABLE`] (PostgreSQL), a document in
//! collection [`MONGO_COLLECTION`] (MongoDB), the key [`REDIS_KEY`] (Redis).
//! A `command` source is an opaque stream: no canary can exist there, and the
//! drill falls back to the manifest's recovery point and says so.

use chrono::{DateTime, Utc};

use crate::policy::Engine;

/// PostgreSQL canary table: `(id bigserial, written_at timestamptz)`.
pub const SQL_TABLE: &str = "gsdr_canary";
/// MongoDB canary collection: documents `{_id: "heartbeat", written_at: <date>}`.
pub const MONGO_COLLECTION: &str = "gsdr_canary";
/// Redis canary key: the RFC 3339 time of the last heartbeat.
pub const REDIS_KEY: &str = "gsdr:canary";

/// Why the recovered point of a source comes from its manifest.
pub const COMMAND_FALLBACK_NOTE: &str =
    "command sources are opaque streams and cannot hold a heartbeat canary: the RPO uses the manifest's recovery point";

/// How a recovered point was measured.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recovered {
    /// The newest point recovered.
    pub point: DateTime<Utc>,
    /// `canary` or `manifest`.
    pub measured_by: String,
    /// Why the manifest was used, if it was.
    pub note: Option<String>,
}

/// Whether sources of `engine` can hold a canary.
pub fn supported(engine: Engine) -> bool {
    !matches!(engine, Engine::Command)
}

/// Writes a heartbeat canary into the source named `source` now; returns its time.
pub async fn write(env: &crate::job::Env, source: &str) -> Result<DateTime<Utc>, crate::Error> {
    let cfg = env.source_config(source)?;
    match cfg.kind {
        Engine::Command => Err(crate::Error::Invalid(format!(
            "source `{source}`: {COMMAND_FALLBACK_NOTE}"
        ))),
        other => Err(crate::Error::NotSupported(format!(
            "heartbeat canaries for `{}` sources (source `{source}`); the engine lands on its own branch",
            other.as_str()
        ))),
    }
}
