//! Sources: what produces the bytes of a backup and accepts them back.
//!
//! Every engine (`command`, `mongo`, `redis`, `postgres`) has a folder of its
//! own and implements [`BackupSource`]: it opens a raw byte stream
//! ([`SourceStream`]) whose `done` future, awaited after the reader reached
//! end-of-file, confirms the stream was complete (the child exited 0, the CRC
//! trailer matched, the oplog window closed) and returns the engine's
//! consistency point for the manifest. The pipeline awaits `done` before it
//! lets the upload commit, so a source that fails late leaves no backup.

use async_trait::async_trait;

pub use crate::stream::{SourceError, SourceMeta, SourceStream};

pub mod command;
pub mod mongo;
pub mod postgres;
pub mod redis;

/// Something gsdr can back up.
#[async_trait]
pub trait BackupSource: Send + Sync {
    /// The backup kind stored in the object layout (`full`, `base`, `rdb`, `stdout`).
    fn kind(&self) -> &'static str;

    /// Starts a dump. Fallible set-up (connect, authenticate) happens here.
    async fn open(&self) -> Result<SourceStream, SourceError>;
}

/// What the operator asked a restore to do; each engine uses the fields that
/// apply to it and refuses the others with a clear error.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// Write the raw stream (decrypted, decompressed) to this file; `-` is stdout.
    pub to_file: Option<std::path::PathBuf>,
    /// Restore into this running server (Mongo URI, Redis URL).
    pub to_uri: Option<String>,
    /// Restore into this directory (PostgreSQL data directory).
    pub to_dir: Option<std::path::PathBuf>,
    /// Namespace pattern to rename from (`db.*`).
    pub ns_from: Option<String>,
    /// Namespace pattern to rename to (`drill_db.*`).
    pub ns_to: Option<String>,
    /// Replace existing data (Mongo `--drop`, Redis `--flush`, a non-empty directory).
    pub replace: bool,
    /// Do not ask for confirmation.
    pub yes: bool,
    /// Point-in-time target.
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// LSN target (PostgreSQL).
    pub target_lsn: Option<String>,
    /// Recover to the newest point available.
    pub latest: bool,
    /// The target the backup is read from when it is not the source's
    /// primary (the off-site copy): PostgreSQL then fetches WAL from it too.
    pub from_target: Option<String>,
    /// PostgreSQL: the restored cluster keeps archiving into the source's WAL
    /// archive once promoted (it replaces production). Unset, it does not
    /// archive at all (`archive_mode = off`).
    pub keep_archiving: bool,
}

/// Builds the source named `name` from its policy settings.
pub fn open_source(
    name: &str,
    cfg: &crate::policy::SourceConfig,
) -> Result<Box<dyn BackupSource>, crate::Error> {
    use crate::policy::Engine;
    match cfg.kind {
        Engine::Command => {
            let c = cfg.command.clone().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{name}` has no [sources.{name}.command] table"
                ))
            })?;
            Ok(Box::new(command::CommandSource::new(name, c)))
        }
        Engine::Redis => {
            let c = cfg.redis.clone().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{name}` has no [sources.{name}.redis] table"
                ))
            })?;
            Ok(Box::new(redis::RedisSource::new(name, c)?))
        }
        Engine::Postgres => {
            let c = cfg.postgres.clone().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{name}` has no [sources.{name}.postgres] table"
                ))
            })?;
            c.validate()
                .map_err(|m| crate::Error::Invalid(format!("[sources.{name}.postgres]: {m}")))?;
            Ok(Box::new(postgres::base::BaseBackupSource::new(name, c)))
        }
        Engine::Mongo => {
            let c = cfg.mongo.clone().ok_or_else(|| {
                crate::Error::Invalid(format!(
                    "source `{name}` has no [sources.{name}.mongo] table"
                ))
            })?;
            Ok(Box::new(mongo::MongoSource::new(name, c)))
        }
    }
}

/// Checks that the source named `name` can be reached (`gsdr policy check --connect`).
pub async fn probe(name: &str, cfg: &crate::policy::SourceConfig) -> Result<(), crate::Error> {
    use crate::policy::Engine;
    match cfg.kind {
        Engine::Command => {
            let c = cfg
                .command
                .as_ref()
                .ok_or_else(|| crate::Error::Invalid(format!("source `{name}` has no command")))?;
            command::probe(name, c)
        }
        Engine::Redis => {
            let c = cfg.redis.as_ref().ok_or_else(|| {
                crate::Error::Invalid(format!("source `{name}` has no redis table"))
            })?;
            redis::probe(name, c).await
        }
        Engine::Postgres => {
            let c = cfg.postgres.clone().ok_or_else(|| {
                crate::Error::Invalid(format!("source `{name}` has no postgres table"))
            })?;
            Ok(postgres::base::BaseBackupSource::new(name, c)
                .probe()
                .await?)
        }
        Engine::Mongo => {
            let c = cfg.mongo.as_ref().ok_or_else(|| {
                crate::Error::Invalid(format!("source `{name}` has no mongo settings"))
            })?;
            mongo::probe(name, c).await
        }
    }
}

/// What a restore would destroy at its endpoint, in words, for incident
/// plans and the confirmation a destructive restore asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Overwrite {
    /// Something there is lost (or it could not be checked, which counts as lost).
    pub destroys: bool,
    /// "flushes 50,002 keys in redis://…".
    pub text: String,
}

impl Overwrite {
    /// Nothing is destroyed.
    pub fn nothing(text: String) -> Overwrite {
        Overwrite {
            destroys: false,
            text,
        }
    }

    /// Something is (or may be) destroyed.
    pub fn destroys(text: String) -> Overwrite {
        Overwrite {
            destroys: true,
            text,
        }
    }
}

/// `n` with thousands separators (`50,002`), for plans people confirm.
pub fn thousands(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
