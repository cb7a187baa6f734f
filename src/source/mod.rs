//! Sources: what produces the bytes of a backup and accepts them back.
//!
//! Every engine has a folder of its own (`src/source/<engine>/`, each with
//! `mod.rs`, `config.rs`, `backup.rs`, `restore.rs`, `canary.rs`,
//! `scratch.rs`) and implements [`Engine`], which owns the engine's whole
//! life: backup, probe, restore into a typed [`RestoreTarget`], deep verify,
//! heartbeat canaries and scratch servers. Code outside the folders never
//! names an engine: it holds an [`EngineConfig`] (parsed once, at policy
//! load) and asks [`EngineConfig::engine`] for the `dyn Engine`. A capability
//! an engine lacks answers [`SourceError::NotSupported`]. Adding an engine is
//! one folder and one line in [`engines!`]'s invocation below.
//!
//! The backup half is [`BackupSource`]: it opens a raw byte stream
//! ([`SourceStream`]) whose `done` future, awaited after the reader reached
//! end-of-file, confirms the stream was complete (the child exited 0, the CRC
//! trailer matched, the oplog window closed) and returns the engine's
//! consistency point for the manifest. The pipeline awaits `done` before it
//! lets the upload commit, so a source that fails late leaves no backup.
//!
//! Engines sit below the policy and the jobs: they never see the policy file
//! or the job environment. A restore gets the backup through a
//! [`RestoreHost`] (the job environment implements it: it opens and decrypts
//! the backup, holds the keys, and says how a restored server calls gsdr
//! back), its engine's own settings, and a progress handle; it fails with an
//! [`EngineError`], which the aggregate error takes over variant by variant.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::stream::{SourceError, SourceMeta, SourceStream};
pub use error::{EngineError, EngineResult};
pub use restore::{
    download_label, open_backup, restore_raw_to_file, GsdrCall, RestoreHost, RestoreOutcome,
};

pub mod capture;
pub mod error;
pub mod restore;

/// Something gsdr can back up.
#[async_trait]
pub trait BackupSource: Send + Sync {
    /// The backup kind stored in the object layout (`full`, `base`, `rdb`, `stdout`).
    fn kind(&self) -> &'static str;

    /// Starts a dump. Fallible set-up (connect, authenticate) happens here.
    async fn open(&self) -> Result<SourceStream, SourceError>;
}

/// Where a restore writes: one typed destination instead of a bag of options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreTarget {
    /// The raw stream (decrypted, decompressed) into this file; `-` is stdout.
    /// Every engine supports it: the operator's escape hatch.
    File(PathBuf),
    /// Into this running server (a MongoDB URI, a Redis URL).
    Server(String),
    /// Into the source's own server, as the policy names it.
    Origin,
    /// Into this directory (a PostgreSQL data directory).
    DataDir(PathBuf),
}

impl RestoreTarget {
    /// The flag an operator uses for this destination, for messages.
    pub fn flag(&self) -> &'static str {
        match self {
            RestoreTarget::File(_) => "--to-file",
            RestoreTarget::Server(_) => "--to",
            RestoreTarget::Origin => "no destination",
            RestoreTarget::DataDir(_) => "--to-dir",
        }
    }
}

/// How far a restore recovers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPoint {
    /// The chosen backup's own consistency point (logs the engine replays by
    /// default, e.g. PostgreSQL's WAL to its end, still apply).
    Backup,
    /// Replay logs up to this time.
    Time(DateTime<Utc>),
    /// Replay up to this log position, as the operator wrote it (`0/16B3748`).
    Lsn(String),
    /// The newest point available.
    Latest,
}

impl RecoveryPoint {
    /// The target time, if this point is one.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        match self {
            RecoveryPoint::Time(t) => Some(*t),
            _ => None,
        }
    }

    /// The target LSN, if this point is one.
    pub fn lsn(&self) -> Option<&str> {
        match self {
            RecoveryPoint::Lsn(l) => Some(l),
            _ => None,
        }
    }
}

/// A namespace rename applied while restoring (`db.*` → `drill_db.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsRename {
    /// Pattern to rename from.
    pub from: String,
    /// Pattern to rename to.
    pub to: String,
}

/// A restore, typed: where to, to which point, and how.
#[derive(Debug, Clone)]
pub struct RestoreSpec {
    /// Destination.
    pub target: RestoreTarget,
    /// How far to recover.
    pub point: RecoveryPoint,
    /// Namespace rename, for engines with namespaces.
    pub rename: Option<NsRename>,
    /// Replace existing data (Mongo `--drop`, Redis flush, a non-empty directory, an existing file).
    pub replace: bool,
    /// The target the backup is read from when it is not the source's primary
    /// (the off-site copy): PostgreSQL then fetches WAL from it too.
    pub from_target: Option<String>,
    /// PostgreSQL: the restored cluster keeps archiving into the source's WAL
    /// archive once promoted. Unset, it does not archive (`archive_mode = off`).
    pub keep_archiving: bool,
}

impl RestoreSpec {
    /// A restore into `target` of the backup's own point, replacing nothing.
    pub fn new(target: RestoreTarget) -> RestoreSpec {
        RestoreSpec {
            target,
            point: RecoveryPoint::Backup,
            rename: None,
            replace: false,
            from_target: None,
            keep_archiving: false,
        }
    }
}

/// What an engine's restore and deep verify read from: the backup and the
/// means to open it.
pub struct RestoreCtx<'a> {
    /// Opens and decrypts the backup (the job environment).
    pub host: &'a dyn RestoreHost,
    /// The catalog the backup is listed in.
    pub catalog: &'a crate::catalog::Catalog,
    /// The backup to restore.
    pub manifest: &'a crate::catalog::Manifest,
    /// Progress of the long phases.
    pub progress: &'a dyn crate::stream::progress::Progress,
}

/// The result of a deep verification: restored into a scratch server and
/// compared with the manifest.
#[derive(Debug, Clone)]
pub struct DeepVerify {
    /// Every comparison matched.
    pub ok: bool,
    /// The engine's own report (`id`, `summary`, `error`, and details).
    pub report: serde_json::Value,
}

/// What a scratch server for drills is started from.
#[derive(Debug, Clone)]
pub struct ScratchSpec<'a> {
    /// Directory the server keeps its data in (for Redis: holding the `dump.rdb`;
    /// for PostgreSQL: the restored data directory).
    pub dir: &'a Path,
    /// The server replaces the source (an incident): it listens where the
    /// source did and is left running, not a throwaway on a free port.
    pub as_endpoint: bool,
    /// Program and arguments for engines whose scratch server the policy
    /// describes (`[drills] mongo_scratch_argv`); empty for the others.
    pub argv: &'a [String],
}

/// A running scratch server. Every engine's server stops the same way.
#[async_trait]
pub trait Scratch: Send + Sync {
    /// Where clients reach it (a URI).
    fn uri(&self) -> String;
    /// Stops the server and waits for it to exit.
    async fn stop(self: Box<Self>);
    /// Leaves the server running after gsdr exits (an incident's endpoint).
    fn detach(self: Box<Self>);
}

/// Each source's engine as the policy configures it (`Env::engines`), by
/// source name: the replicate sweeps and recovery points ask it for the
/// source's log archive.
pub type Engines = std::collections::BTreeMap<String, Arc<dyn Engine>>;

/// An engine: everything gsdr does with one kind of source, for one source.
/// Built from an [`EngineConfig`] (or, for a backup whose source left the
/// policy, from the engine's defaults: [`engine_for_kind`]).
#[async_trait]
pub trait Engine: Send + Sync {
    /// The engine's kind as policies and manifests write it.
    fn kind(&self) -> &'static str;

    /// The policy name of the source.
    fn source_name(&self) -> &str;

    /// The backup side.
    fn backup(&self) -> Result<Box<dyn BackupSource>, SourceError>;

    /// Checks the source can be reached and authenticated, without a backup
    /// (`gsdr policy check --connect`).
    async fn probe(&self) -> Result<(), SourceError>;

    /// Restores `ctx.manifest` as `spec` asks. A file destination is handled
    /// before the engine is asked (by the job layer's restore), so engines
    /// see servers and directories.
    async fn restore(
        &self,
        ctx: &RestoreCtx<'_>,
        spec: &RestoreSpec,
    ) -> EngineResult<RestoreOutcome>;

    /// What restoring `m` as `spec` asks would destroy at its destination;
    /// `None` when nothing can be destroyed there.
    async fn describe_overwrite(
        &self,
        m: &crate::catalog::Manifest,
        spec: &RestoreSpec,
    ) -> Option<Overwrite>;

    /// Restores into a scratch server (`scratch`: one given by the operator,
    /// for engines that cannot start their own) and compares with the manifest.
    async fn verify_deep(
        &self,
        ctx: &RestoreCtx<'_>,
        scratch: Option<&str>,
    ) -> EngineResult<DeepVerify>;

    /// Whether sources of this engine can hold a heartbeat canary (most can).
    fn has_canary(&self) -> bool {
        true
    }

    /// Why a drill's RPO of this engine's sources comes from the manifest
    /// when no canary was read, if the engine has its own reason (no canary can exist).
    fn canary_absent_note(&self) -> Option<&'static str> {
        None
    }

    /// Writes a heartbeat canary into the source now; returns its time.
    async fn canary_write(&self) -> EngineResult<DateTime<Utc>>;

    /// The newest heartbeat canary in data restored to `uri`.
    async fn canary_read(&self, uri: &str) -> EngineResult<DateTime<Utc>>;

    /// Starts a scratch server over `spec.dir`.
    async fn scratch_start(&self, spec: &ScratchSpec<'_>) -> EngineResult<Box<dyn Scratch>>;

    /// Restores `ctx.manifest` for a drill (into a scratch server the engine
    /// starts) or an incident (into the endpoint): the stand-in a scenario's
    /// checks then read.
    async fn stand_in(&self, ctx: &RestoreCtx<'_>, req: &StandIn<'_>) -> EngineResult<StoodIn>;

    /// What an incident's endpoint for this engine is (a server URI, a data
    /// directory, a file), as a restore destination; by default a server URI.
    fn endpoint_target(&self, endpoint: &str) -> RestoreTarget {
        RestoreTarget::Server(endpoint.to_string())
    }

    /// The password the source's policy gives for its servers, which a
    /// restore target URI written without one takes (`--to URI`, `--into
    /// SOURCE=URI`): a replacement server usually keeps the source's
    /// credentials. `None`: no password in the policy (or unreadable).
    fn policy_password(&self) -> Option<crate::secret::Secret> {
        None
    }

    /// Checks that the programs a drill's scratch server needs are installed
    /// (`argv`: the policy's scratch command, for engines that take one).
    fn scratch_programs(&self, argv: &[String]) -> Result<(), String>;

    /// Reads and checks the local files the source's settings name (TLS
    /// CA, certificate and key), for `gsdr policy check`; `None` when it
    /// names none. No server is contacted.
    fn check_files(&self) -> Option<Result<(), String>> {
        None
    }

    /// Counts in the restored server at `uri`: keys (no `query`), a
    /// collection's documents, or the integer a SQL query returns, as the
    /// engine understands `query`.
    async fn count(&self, uri: &str, query: Option<&str>) -> EngineResult<i64>;

    /// The engine's continuous log archive (PostgreSQL's WAL), if its
    /// sources keep one beside their backups.
    fn log_archive(&self) -> Option<&dyn LogArchive> {
        None
    }

    /// Whether a server restored into an incident endpoint can go on
    /// archiving into the source's log (PostgreSQL's `archive_command`): the
    /// operator then says `--keep-archiving` or `--no-archiving`.
    fn restore_keeps_archiving(&self) -> bool {
        false
    }

    /// The source's continuous capture, when its settings enable one
    /// (`capture::Capture`); `None`: backups (and `archive_command`) only.
    fn capture(&self) -> Option<&dyn capture::Capture> {
        None
    }
}

/// Where a drill's or an incident's restore goes.
#[derive(Debug, Clone)]
pub enum StandInTo<'a> {
    /// Into a scratch server started over `dir` (a drill).
    Scratch {
        /// The source's folder in the drill's scratch directory.
        dir: &'a Path,
        /// The policy's scratch server command, for engines that take one.
        argv: &'a [String],
    },
    /// Into the endpoint that replaces the source (an incident).
    Endpoint {
        /// The endpoint as the operator named it (a URI, a data directory).
        endpoint: &'a str,
        /// Start a server on it and leave it running (`--start-postgres`).
        start: bool,
        /// The restored server keeps archiving into the source's log archive.
        keep_archiving: bool,
    },
}

/// A drill's or an incident's restore request.
#[derive(Debug, Clone)]
pub struct StandIn<'a> {
    /// Where to.
    pub to: StandInTo<'a>,
    /// Replay logs up to this time (engines with logs); `None`: as far as they reach.
    pub until: Option<DateTime<Utc>>,
    /// The target the backup is read from.
    pub from_target: &'a str,
}

/// What a stand-in restore did and where its data can be read.
pub struct StoodIn {
    /// The restore.
    pub outcome: RestoreOutcome,
    /// Where the checks connect (a URI or connection string; may hold a
    /// password: never shown).
    pub uri: String,
    /// Where it went, for people (no password).
    pub into: String,
    /// What was restored, for the step's line: `backup`, `base backup`.
    pub what: &'static str,
    /// How far logs were replayed, for the step's line (`replayed WAL to …`).
    pub replayed: Option<String>,
    /// The scratch server started, stopped at the end of the run.
    pub server: Option<Box<dyn Scratch>>,
    /// What the operator must do before the checks can connect (an endpoint
    /// prepared but not started), added to a check's "cannot connect".
    pub start_hint: Option<String>,
}

/// An error of a log archive (the engine's own type, classified by [`error_kind`]).
pub type LogError = Box<dyn std::error::Error + Send + Sync>;

/// The end of a source's log archive a restore reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogTail {
    /// The last log file of the contiguous chain (`None`: no restorable chain).
    pub last: Option<String>,
    /// When it was stored.
    pub stored_at: Option<DateTime<Utc>>,
}

/// What one off-site sweep of a source's log did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogSweep {
    /// Source.
    pub source: String,
    /// Objects copied (PostgreSQL: segments, history files, sidecars, `cluster.json`).
    pub copied: u64,
    /// Stored bytes copied.
    pub bytes: u64,
    /// Objects that could not be copied, with the error.
    pub failed: Vec<(String, String)>,
}

/// What pruning a source's log archive on one target did (or would do).
pub trait LogPruned: std::fmt::Debug + Send + Sync {
    /// One line for the operator.
    fn line(&self) -> String;
    /// The machine-readable record (`gsdr prune --json`).
    fn to_json(&self) -> serde_json::Value;
    /// The target it ran on.
    fn target(&self) -> &str;
    /// Why listing or a deletion failed, if it did.
    fn error(&self) -> Option<&str>;
}

/// A continuous log archive kept beside a source's backups: what the daemon
/// measures (lag) and what retention prunes after the backups.
#[async_trait]
pub trait LogArchive: Send + Sync {
    /// How far a restore to latest reaches in `store` now.
    async fn tail(&self, store: Arc<dyn crate::storage::Store>) -> Result<LogTail, LogError>;

    /// How far a restore of `m` from `store` reaches: the end of the
    /// contiguous log after it (when later than its own point); `None` when
    /// the log does not even reach the backup's own end.
    async fn reaches(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        m: &crate::catalog::Manifest,
    ) -> Result<Option<DateTime<Utc>>, LogError>;

    /// The newest point a restore from `store` reaches through the log,
    /// from any of `manifests` (the source's backups there).
    async fn newest(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        manifests: &[crate::catalog::Manifest],
    ) -> Result<Option<DateTime<Utc>>, LogError>;

    /// Copies what the off-site store lacks of the source's log (`gsdr
    /// replicate`); metadata signed for the log (PostgreSQL's WAL sidecars)
    /// that `trust` refuses is reported as failed, never copied.
    async fn catch_up(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
        trust: &crate::signing::Trust,
    ) -> Result<LogSweep, LogError>;

    /// What the off-site copy of the log lacks, as one line (`None`: nothing).
    async fn offsite_gap(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
    ) -> Result<Option<String>, LogError>;

    /// Deletes (unless `dry_run`) the log of the source in `store` (target
    /// `target`) that none of `remaining` (the backups left after pruning,
    /// `failed` of them because their deletion failed) needs.
    async fn prune(
        &self,
        store: &dyn crate::storage::Store,
        target: &str,
        remaining: &[crate::catalog::Manifest],
        failed: usize,
        dry_run: bool,
    ) -> Box<dyn LogPruned>;
}

/// The settings of source `source` of engine `kind`, or the error that says
/// its policy has no `[sources.NAME.KIND]` table (a backup whose source left
/// the policy can still be restored where the engine needs no settings).
pub fn settings<'a, C>(
    config: Option<&'a C>,
    source: &str,
    kind: &str,
) -> Result<&'a C, SourceError> {
    config.ok_or_else(|| SourceError::Config {
        message: format!("source `{source}` has no [sources.{source}.{kind}] table"),
    })
}

/// The error of a capability `engine` (of source `source`) does not have.
pub fn not_supported(source: &str, what: impl Into<String>) -> SourceError {
    SourceError::NotSupported {
        source_name: source.to_string(),
        what: what.into(),
    }
}

/// A URI without its password, for reports and messages.
pub fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &uri[..s], &uri[at + 1..]),
        _ => uri.to_string(),
    }
}

/// `prog` as the OS would run it: a path with a `/` as is, a bare name searched on `PATH`.
pub fn find_program(prog: &Path) -> Option<PathBuf> {
    fn is_executable(p: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    if prog.components().count() > 1 {
        return is_executable(prog).then(|| prog.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_executable(p))
}

/// What an engine's `validate` found wrong with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The setting at fault, within the engine's table (`wal_segment_bytes`), if one is.
    pub field: Option<&'static str>,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl From<String> for ConfigIssue {
    fn from(message: String) -> ConfigIssue {
        ConfigIssue {
            field: None,
            message,
        }
    }
}

impl From<(&'static str, String)> for ConfigIssue {
    fn from((field, message): (&'static str, String)) -> ConfigIssue {
        ConfigIssue {
            field: Some(field),
            message,
        }
    }
}

/// A setting during which an engine's stream is silent by design.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilentWait {
    /// The setting, within the engine's table (`archive_wait`).
    pub field: &'static str,
    /// Its value.
    pub wait: std::time::Duration,
    /// Why no byte flows meanwhile, for the operator.
    pub why: &'static str,
}

/// The registry: one line per engine, `Variant => module::Config`. Each
/// module provides `KIND` (its name in policies and manifests) and
/// `engine(source, Option<&Config>)` (its `dyn Engine`, from the defaults
/// when there is no config), and `error_kind(&dyn Error)` (the kind of its own
/// error types).
macro_rules! engines {
    ($($variant:ident => $module:ident :: $config:ident),+ $(,)?) => {
        $(
            #[doc = concat!("The `", stringify!($module), "` engine.")]
            pub mod $module;
        )+

        /// The settings of a source's engine, parsed from `kind` and its sub-table once.
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub enum EngineConfig {
            $(
                #[doc = concat!("The `", stringify!($module), "` engine.")]
                $variant($module::$config),
            )+
        }

        impl EngineConfig {
            /// The engine's kind as policies and manifests write it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(EngineConfig::$variant(_) => $module::KIND,)+
                }
            }

            /// The engine of source `source`.
            pub fn engine(&self, source: &str) -> Result<Arc<dyn Engine>, SourceError> {
                match self {
                    $(EngineConfig::$variant(c) => $module::engine(source, Some(c)),)+
                }
            }

            /// Parses the settings table of engine `kind`; `None` for an unknown kind.
            pub fn parse<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                table: D,
            ) -> Option<Result<EngineConfig, D::Error>> {
                use serde::Deserialize;
                $(
                    if kind == $module::KIND {
                        return Some($module::$config::deserialize(table).map(EngineConfig::$variant));
                    }
                )+
                None
            }

            /// How long the engine's stream may be silent by design, if it may:
            /// the stall detector must wait longer.
            pub fn silent_wait(&self) -> Option<SilentWait> {
                match self {
                    $(EngineConfig::$variant(c) => c.silent_wait(),)+
                }
            }

            /// Checks the settings beyond what parsing checks (what the run would refuse).
            pub fn validate(&self) -> Result<(), ConfigIssue> {
                match self {
                    $(EngineConfig::$variant(c) => c.validate().map_err(ConfigIssue::from),)+
                }
            }
        }

        /// The kind of `e` if it is one of an engine's own error types
        /// (PostgreSQL's WAL errors...), for exit codes and `--json` documents.
        pub fn error_kind(e: &(dyn std::error::Error + 'static)) -> Option<crate::fault::ErrorKind> {
            None$(.or_else(|| $module::error_kind(e)))+
        }

        /// The engine a scenario step kind (`restore_redis`, `sql`…) belongs to,
        /// if it belongs to one: each engine lists its steps in `DRILL_STEPS`.
        pub fn kind_of_step(step: &str) -> Option<&'static str> {
            $(
                if $module::DRILL_STEPS.contains(&step) {
                    return Some($module::KIND);
                }
            )+
            None
        }

        /// Every engine's kind, in registration order.
        pub const KINDS: &[&str] = &[$($module::KIND),+];

        /// The engine `kind` with its default settings, for a backup whose
        /// source is not (or no longer) in the policy; `None` for an unknown kind.
        pub fn engine_for_kind(kind: &str, source: &str) -> Option<Result<Arc<dyn Engine>, SourceError>> {
            $(
                if kind == $module::KIND {
                    return Some($module::engine(source, None));
                }
            )+
            None
        }
    };
}

engines! {
    Command => command::CommandConfig,
    Mongo => mongo::MongoConfig,
    Redis => redis::RedisConfig,
    Postgres => postgres::PostgresConfig,
}

/// The engine of the backup `m`: built from the policy's settings of its
/// source when they are of the backup's engine, else from the engine's defaults.
pub fn engine_for_manifest(
    m: &crate::catalog::Manifest,
    cfg: Option<&EngineConfig>,
) -> Result<Arc<dyn Engine>, SourceError> {
    match cfg {
        Some(c) if c.kind() == m.engine => c.engine(&m.source),
        _ => engine_for_kind(&m.engine, &m.source).unwrap_or_else(|| {
            Err(not_supported(
                &m.source,
                format!("restoring `{}` backups into a server", m.engine),
            ))
        }),
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
