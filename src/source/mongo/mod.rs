//! The `mongo` engine: streaming dumps in the mongodump archive format,
//! restores, oplog capture and deep verification.
//!
//! - [`archive`]: the archive format (writer and reader, CRC-64/XZ checked).
//! - [`MongoSource`]: the dump, a [`crate::source::BackupSource`]. Collections are
//!   read as raw BSON, several at once, and interleaved in the archive.
//!   Memory: `concurrency × (2 × segment_bytes + the driver's batch)` plus the
//!   pipeline's own bound, whatever the collection sizes (a single document is
//!   at most 16 MiB).
//! - [`restore()`] and [`verify_deep`]: the archive back into a server.
//!
//! Per-collection document counts and content digests ([`ContentDigest`]) go
//! into the manifest (`consistency.details.collections`), so a restore can be
//! checked without the source.

mod drill;
pub use drill::DRILL_STEPS;
pub mod archive;
mod backup;
pub mod canary;
mod config;
mod digest;
pub mod oplog;
mod restore;
pub mod slices;
mod capture;
pub mod scratch;

pub use backup::{DumpDetails, MongoSource, NsSummary};
pub use config::{MongoConfig, MongoTls, OplogMode, ReadPreferenceMode};
pub use digest::ContentDigest;
pub use restore::{
    describe_overwrite, list_indexes, restore, restore_archive, verify_deep, DeepVerifyReport,
    NsCheck, RestoreOptions, RestoreSummary,
};

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use mongodb::options::{
    ClientOptions, ReadPreference, ReadPreferenceOptions, SelectionCriteria, Tls, TlsOptions,
};

use crate::source::{
    BackupSource, DeepVerify, Engine, EngineResult, Overwrite, RestoreCtx, RestoreOutcome,
    RestoreSpec, RestoreTarget, Scratch, ScratchSpec, SourceError,
};

/// The engine's name in policies and manifests.
pub const KIND: &str = "mongo";

/// The engine has no error types of its own beyond [`SourceError`](crate::source::SourceError).
pub fn error_kind(_: &(dyn std::error::Error + 'static)) -> Option<crate::fault::ErrorKind> {
    None
}

/// The engine of source `source`; without settings (a backup whose source
/// left the policy), a restore needs an explicit `--to URI`.
pub fn engine(source: &str, cfg: Option<&MongoConfig>) -> Result<Arc<dyn Engine>, SourceError> {
    Ok(Arc::new(MongoEngine {
        name: source.to_string(),
        config: cfg.cloned(),
    }))
}

/// A MongoDB source.
#[derive(Debug, Clone)]
pub struct MongoEngine {
    name: String,
    config: Option<MongoConfig>,
}

impl MongoEngine {
    fn config(&self) -> Result<&MongoConfig, SourceError> {
        crate::source::settings(self.config.as_ref(), &self.name, KIND)
    }
}

#[async_trait]
impl Engine for MongoEngine {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn source_name(&self) -> &str {
        &self.name
    }

    fn backup(&self) -> Result<Box<dyn BackupSource>, SourceError> {
        Ok(Box::new(MongoSource::new(
            &self.name,
            self.config()?.clone(),
        )))
    }

    async fn probe(&self) -> Result<(), SourceError> {
        probe(&self.name, self.config()?).await
    }

    async fn restore(
        &self,
        ctx: &RestoreCtx<'_>,
        spec: &RestoreSpec,
    ) -> EngineResult<RestoreOutcome> {
        restore(ctx, self.config.as_ref(), spec)
        .await
    }

    async fn describe_overwrite(
        &self,
        m: &crate::catalog::Manifest,
        spec: &RestoreSpec,
    ) -> Option<Overwrite> {
        let uri = match &spec.target {
            RestoreTarget::Server(u) => Some(u.as_str()),
            RestoreTarget::Origin => None,
            _ => return None,
        };
        spec.replace.then_some(())?;
        Some(describe_overwrite(self.config.as_ref(), m, uri).await)
    }

    async fn verify_deep(
        &self,
        ctx: &RestoreCtx<'_>,
        scratch: Option<&str>,
    ) -> EngineResult<DeepVerify> {
        let uri = scratch.ok_or_else(|| SourceError::Invalid {
            message: "--deep on a MongoDB backup needs --scratch URI (a drill server)".into(),
        })?;
        let r = verify_deep(
            ctx.host,
            self.config.as_ref(),
            ctx.catalog,
            ctx.manifest,
            uri,
            ctx.progress,
        )
        .await?;
        Ok(DeepVerify {
            ok: r.ok,
            report: serde_json::to_value(&r).unwrap_or_default(),
        })
    }

    async fn canary_write(&self) -> EngineResult<DateTime<Utc>> {
        canary::write(&self.name, self.config()?).await
    }

    async fn canary_read(&self, uri: &str) -> EngineResult<DateTime<Utc>> {
        canary::read(uri).await
    }

    async fn scratch_start(&self, spec: &ScratchSpec<'_>) -> EngineResult<Box<dyn Scratch>> {
        Ok(Box::new(
            scratch::ScratchMongo::start(spec.argv, spec.dir).await?,
        ))
    }

    async fn stand_in(
        &self,
        ctx: &RestoreCtx<'_>,
        req: &crate::source::StandIn<'_>,
    ) -> EngineResult<crate::source::StoodIn> {
        drill::stand_in(self, ctx, req).await
    }

    fn policy_password(&self) -> Option<crate::secret::Secret> {
        // The source's connection string is itself the secret: its password.
        let uri = self.config.as_ref()?.uri.read().ok()?;
        crate::secret::uri_password(uri.expose()).map(crate::secret::Secret::new)
    }

    fn scratch_programs(&self, argv: &[String]) -> Result<(), String> {
        drill::scratch_programs(argv)
    }

    async fn count(&self, uri: &str, query: Option<&str>) -> EngineResult<i64> {
        drill::count(uri, query).await
    }

    fn log_archive(&self) -> Option<&dyn crate::source::LogArchive> {
        Some(self)
    }

    fn capture(&self) -> Option<&dyn crate::source::capture::Capture> {
        self.config
            .as_ref()
            .is_some_and(|c| c.oplog == OplogMode::Continuous)
            .then_some(self as &dyn crate::source::capture::Capture)
    }
}

#[async_trait]
impl crate::source::capture::Capture for MongoEngine {
    async fn run(
        &self,
        ctx: crate::source::capture::CaptureCtx,
    ) -> EngineResult<crate::source::capture::CaptureReport> {
        capture::run(self, ctx).await
    }
}

/// The oplog slices of the continuous capture ([`slices`]), seen by status,
/// metrics, the off-site sweep and prune.
#[async_trait]
impl crate::source::LogArchive for MongoEngine {
    async fn tail(
        &self,
        store: Arc<dyn crate::storage::Store>,
    ) -> Result<crate::source::LogTail, crate::source::LogError> {
        let s = slices::list(store.as_ref(), &self.name).await?;
        Ok(s.last()
            .map(|l| crate::source::LogTail {
                last: Some(l.name.clone()),
                stored_at: l.stored_at,
            })
            .unwrap_or_default())
    }

    async fn reaches(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        m: &crate::catalog::Manifest,
    ) -> Result<Option<DateTime<Utc>>, crate::source::LogError> {
        let s = slices::list(store.as_ref(), &self.name).await?;
        Ok(Some(slices::reach_of(&s, m)))
    }

    async fn newest(
        &self,
        store: &Arc<dyn crate::storage::Store>,
        manifests: &[crate::catalog::Manifest],
    ) -> Result<Option<DateTime<Utc>>, crate::source::LogError> {
        let s = slices::list(store.as_ref(), &self.name).await?;
        Ok(manifests
            .iter()
            .filter(|m| m.source == self.name)
            .map(|m| slices::reach_of(&s, m))
            .max())
    }

    async fn catch_up(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
        _trust: &crate::signing::Trust,
    ) -> Result<crate::source::LogSweep, crate::source::LogError> {
        Ok(slices::catch_up(primary.as_ref(), offsite.as_ref(), &self.name).await?)
    }

    async fn offsite_gap(
        &self,
        primary: &Arc<dyn crate::storage::Store>,
        offsite: &Arc<dyn crate::storage::Store>,
    ) -> Result<Option<String>, crate::source::LogError> {
        Ok(slices::offsite_gap(primary.as_ref(), offsite.as_ref(), &self.name).await?)
    }

    async fn prune(
        &self,
        store: &dyn crate::storage::Store,
        target: &str,
        remaining: &[crate::catalog::Manifest],
        failed: usize,
        dry_run: bool,
    ) -> Box<dyn crate::source::LogPruned> {
        Box::new(slices::prune(store, target, &self.name, remaining, failed, dry_run).await)
    }
}

/// Opens a driver client for `uri` with the source's settings and pings it.
/// Errors never contain the URI (it may hold a password).
pub async fn connect(
    source_name: &str,
    uri: &str,
    cfg: &MongoConfig,
) -> Result<mongodb::Client, SourceError> {
    let opts = client_options(source_name, uri, cfg).await?;
    open_client(source_name, uri, opts).await
}

/// The read preference the source's settings name.
fn read_preference(cfg: &MongoConfig) -> ReadPreference {
    let rp_opts = Some(ReadPreferenceOptions::default());
    match cfg.read_preference {
        ReadPreferenceMode::Primary => ReadPreference::Primary,
        ReadPreferenceMode::PrimaryPreferred => {
            ReadPreference::PrimaryPreferred { options: rp_opts }
        }
        ReadPreferenceMode::Secondary => ReadPreference::Secondary { options: rp_opts },
        ReadPreferenceMode::SecondaryPreferred => {
            ReadPreference::SecondaryPreferred { options: rp_opts }
        }
        ReadPreferenceMode::Nearest => ReadPreference::Nearest { options: rp_opts },
    }
}

async fn client_options(
    source_name: &str,
    uri: &str,
    cfg: &MongoConfig,
) -> Result<ClientOptions, SourceError> {
    let mut opts = ClientOptions::parse(uri)
        .await
        .map_err(|e| SourceError::Connect {
            source_name: source_name.to_string(),
            message: format!(
                "the MongoDB connection string is invalid ({}); check the secret it is read from",
                redact(&e.to_string(), uri)
            ),
            cause: None,
        })?;
    opts.app_name = Some("gsdr".into());
    let timeout = Duration::from_secs(cfg.connect_timeout_secs.max(1));
    opts.server_selection_timeout = Some(timeout);
    opts.connect_timeout = Some(timeout);
    opts.selection_criteria = Some(SelectionCriteria::ReadPreference(read_preference(cfg)));
    if let Some(t) = &cfg.tls {
        let mut o = TlsOptions::default();
        o.ca_file_path = t.ca_file.clone();
        o.cert_key_file_path = t.cert_key_file.clone();
        o.allow_invalid_certificates = Some(t.allow_invalid_certificates);
        opts.tls = Some(Tls::Enabled(o));
    }
    Ok(opts)
}

async fn open_client(
    source_name: &str,
    uri: &str,
    opts: ClientOptions,
) -> Result<mongodb::Client, SourceError> {
    let hosts = hosts_of(&opts);
    let client = mongodb::Client::with_options(opts).map_err(|e| SourceError::Connect {
        source_name: source_name.to_string(),
        message: format!(
            "cannot set up a MongoDB client for {hosts}: {}",
            redact(&e.to_string(), uri)
        ),
        cause: None,
    })?;
    client
        .database("admin")
        .run_command(mongodb::bson::doc! {"ping": 1})
        .await
        .map_err(|e| {
            classify(
                source_name,
                &format!("cannot reach MongoDB at {hosts}"),
                e,
                uri,
            )
        })?;
    Ok(client)
}

/// A client pinned to ONE replica-set member: the one the source's read
/// preference selects now (asked with `hello`, whose `me` names it), or
/// `prefer` when it is still a member and reachable. Every read of a dump
/// (the oplog bounds, each collection, the oplog window) and the oplog
/// capture go through it, so they cannot land on different secondaries.
/// On a standalone server (no `setName`) it is the plain client and no member.
pub async fn connect_member(
    source_name: &str,
    uri: &str,
    cfg: &MongoConfig,
    prefer: Option<&str>,
) -> Result<(mongodb::Client, Option<String>), SourceError> {
    let client = connect(source_name, uri, cfg).await?;
    let hello = client
        .database("admin")
        .run_command(mongodb::bson::doc! {"hello": 1})
        .selection_criteria(SelectionCriteria::ReadPreference(read_preference(cfg)))
        .await
        .map_err(|e| classify(source_name, "`hello` failed", e, uri))?;
    if hello.get_str("setName").is_err() {
        return Ok((client, None));
    }
    let members: Vec<String> = ["hosts", "passives"]
        .iter()
        .filter_map(|k| hello.get_array(k).ok())
        .flatten()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    let selected = hello
        .get_str("me")
        .map_err(|_| SourceError::Connect {
            source_name: source_name.to_string(),
            message: "the replica-set member's `hello` reply has no `me`: cannot pin the dump to one member".into(),
            cause: None,
        })?
        .to_string();
    let mut candidates = Vec::new();
    if let Some(p) = prefer.filter(|p| members.iter().any(|m| m == p) && *p != selected) {
        candidates.push(p.to_string());
    }
    candidates.push(selected);
    let mut last_err = None;
    for member in candidates {
        let mut opts = client_options(source_name, uri, cfg).await?;
        let addr = mongodb::options::ServerAddress::parse(&member).map_err(|e| {
            SourceError::Connect {
                source_name: source_name.to_string(),
                message: format!("the member address `{member}` is invalid: {e}"),
                cause: None,
            }
        })?;
        opts.hosts = vec![addr];
        opts.direct_connection = Some(true);
        opts.repl_set_name = None;
        // A direct connection to a secondary reads only with a non-primary preference.
        opts.selection_criteria = Some(SelectionCriteria::ReadPreference(
            ReadPreference::PrimaryPreferred {
                options: Some(ReadPreferenceOptions::default()),
            },
        ));
        match open_client(source_name, uri, opts).await {
            Ok(c) => {
                tracing::info!(event = "mongo_member_pinned", source = source_name, member = %member);
                return Ok((c, Some(member)));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("at least one candidate"))
}

/// `host:port,…` of a client's seed list (no credentials).
pub(crate) fn hosts_of(opts: &ClientOptions) -> String {
    opts.hosts
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Removes the URI (and so any password) from a driver message.
pub(crate) fn redact(msg: &str, uri: &str) -> String {
    if uri.is_empty() {
        msg.to_string()
    } else {
        msg.replace(uri, "<uri>")
    }
}

/// Maps a driver error to a source error, keeping auth failures apart.
pub(crate) fn classify(
    source_name: &str,
    what: &str,
    e: mongodb::error::Error,
    uri: &str,
) -> SourceError {
    let text = redact(&e.to_string(), uri);
    if matches!(*e.kind, mongodb::error::ErrorKind::Authentication { .. }) {
        return SourceError::Auth {
            source_name: source_name.to_string(),
            message: format!(
                "{what}: {text}; check the user and password in the connection string secret"
            ),
        };
    }
    SourceError::Connect {
        source_name: source_name.to_string(),
        message: format!("{what}: {text}"),
        cause: Some(Box::new(e)),
    }
}

/// Checks that the source can be reached (`gsdr policy check --connect`).
pub async fn probe(name: &str, cfg: &MongoConfig) -> Result<(), SourceError> {
    let uri = read_uri(name, cfg)?;
    connect(name, uri.expose(), cfg).await?;
    Ok(())
}

/// Reads the URI secret of source `name`.
pub(crate) fn read_uri(
    name: &str,
    cfg: &MongoConfig,
) -> Result<crate::secret::Secret, SourceError> {
    cfg.uri.read().map_err(|m| SourceError::Connect {
        source_name: name.to_string(),
        message: format!("cannot read the MongoDB connection string: {m}"),
        cause: None,
    })
}
