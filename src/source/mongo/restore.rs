//! Restore: an archive stream back into a server, and deep verification.
//!
//! The archive is parsed on a blocking thread ([`ArchiveReader`] over the
//! decoded stream) into batches of at most `insert_batch_docs` documents /
//! `insert_batch_bytes`, sent over a bounded channel; at most `concurrency`
//! unordered `insertMany` calls run at once, across collections. Indexes are
//! built after the data, views created last, then the captured oplog is
//! replayed (one `applyOps` per entry, `ui` stripped) up to the recorded point.
//! Memory: `2 × concurrency × insert_batch_bytes` plus the pipeline's bound.
//! A target collection that holds documents is refused unless `drop` is set;
//! with `drop` the whole backup is read and checked first (nothing is
//! dropped before it proved readable end to end).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::Client;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::io::SyncIoBridge;

use super::archive::{ArchiveError, ArchiveReader, CollectionMeta, Event, Metadata, Namespace};
use super::backup::DumpDetails;
use super::config::{glob, rename};
use super::digest::ContentDigest;
use super::oplog::{entry_ts, Replayer};
use super::{connect, read_uri, MongoConfig, ReadPreferenceMode};
use crate::catalog::{Catalog, Manifest};
use crate::pipeline::{Ends, PipelineError, StreamError};
use crate::secret::SecretRef;
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::{
    download_label, not_supported, Overwrite, RecoveryPoint, RestoreCtx, RestoreHost, RestoreOutcome,
    RestoreSpec, RestoreTarget, SourceError,
};
use crate::stream::BoxRead;
use crate::stream::progress::Progress;

/// How to restore an archive.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Rename namespaces matching this pattern (`db.*`, one `*` at most)…
    pub ns_from: Option<String>,
    /// …to this one (`drill_db.*`).
    pub ns_to: Option<String>,
    /// Drop target collections that hold documents instead of refusing.
    pub drop: bool,
    /// Replay the captured oplog (if the archive has one).
    pub oplog_replay: bool,
    /// Apply only oplog entries strictly before this timestamp (`--oplogLimit`).
    pub oplog_limit: Option<Timestamp>,
    /// Insert calls in flight at once.
    pub concurrency: usize,
    /// Documents per `insertMany`.
    pub insert_batch_docs: usize,
    /// Bytes per `insertMany`.
    pub insert_batch_bytes: usize,
    /// The source's `include` patterns: oplog entries of other namespaces are not replayed.
    pub include: Vec<String>,
    /// The source's `exclude` patterns.
    pub exclude: Vec<String>,
}

impl RestoreOptions {
    /// Options from a source's settings (batch sizes, concurrency) and nothing renamed.
    pub fn from_config(cfg: &MongoConfig) -> Self {
        RestoreOptions {
            ns_from: None,
            ns_to: None,
            drop: false,
            oplog_replay: true,
            oplog_limit: None,
            concurrency: cfg.concurrency.get(),
            insert_batch_docs: cfg.insert_batch_docs,
            insert_batch_bytes: cfg.insert_batch_bytes.0 as usize,
            include: cfg.include.clone(),
            exclude: cfg.exclude.clone(),
        }
    }

    /// The oplog replayer these options describe (renames, selection).
    pub fn replayer(&self) -> Replayer {
        let (inc, exc) = (self.include.clone(), self.exclude.clone());
        Replayer::new(self.ns_from.clone(), self.ns_to.clone(), move |ns| {
            (inc.is_empty() || inc.iter().any(|p| glob(p, ns)))
                && !exc.iter().any(|p| glob(p, ns))
        })
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RestoreSummary {
    /// Archive namespace → (target namespace, documents inserted).
    pub collections: BTreeMap<String, (String, u64)>,
    /// Namespaces in the archive that were not restored (users, roles, system collections).
    pub skipped: Vec<String>,
    /// Indexes created (the `_id` index excluded).
    pub indexes_built: u64,
    /// Views created.
    pub views_created: u64,
    /// Oplog entries applied.
    pub oplog_applied: u64,
    /// Oplog slices of the continuous capture read (point-in-time restores).
    pub slices_replayed: u64,
}

fn rerr(name: &str, message: impl Into<String>, e: Option<mongodb::error::Error>) -> SourceError {
    SourceError::Restore {
        source_name: name.to_string(),
        message: message.into(),
        cause: e.map(|e| Box::new(e) as _),
    }
}

fn split_ns(ns: &str) -> Namespace {
    match ns.split_once('.') {
        Some((d, c)) => Namespace::new(d, c),
        None => Namespace::new(ns, ""),
    }
}

enum Msg {
    Start(Vec<CollectionMeta>, Vec<Metadata>),
    Batch(Namespace, Vec<RawDocumentBuf>),
    End,
}

/// Parses the archive on the current (blocking) thread into batches.
fn parse(
    reader: BoxRead,
    tx: mpsc::Sender<Msg>,
    docs_max: usize,
    bytes_max: usize,
) -> std::result::Result<(), ArchiveError> {
    let mut rd = ArchiveReader::open(SyncIoBridge::new(reader))?;
    if tx
        .blocking_send(Msg::Start(rd.prelude().to_vec(), rd.metadata().to_vec()))
        .is_err()
    {
        return Ok(());
    }
    let mut pending: Option<(Namespace, Vec<RawDocumentBuf>, usize)> = None;
    let flush = |p: &mut Option<(Namespace, Vec<RawDocumentBuf>, usize)>| -> bool {
        match p.take() {
            Some((ns, docs, _)) if !docs.is_empty() => {
                tx.blocking_send(Msg::Batch(ns, docs)).is_ok()
            }
            _ => true,
        }
    };
    while let Some(ev) = rd.next_event()? {
        let ok = match ev {
            Event::Doc { ns, doc } => {
                let mut ok = true;
                if pending.as_ref().is_some_and(|(p, _, _)| *p != ns) {
                    ok = flush(&mut pending);
                }
                let p = pending.get_or_insert_with(|| (ns, Vec::new(), 0));
                p.2 += doc.as_bytes().len();
                p.1.push(doc);
                if p.1.len() >= docs_max || p.2 >= bytes_max {
                    ok = ok && flush(&mut pending);
                }
                ok
            }
            Event::End { .. } => flush(&mut pending) && tx.blocking_send(Msg::End).is_ok(),
        };
        if !ok {
            return Ok(()); // the restore side stopped; it reports why
        }
    }
    flush(&mut pending);
    Ok(())
}

struct Target {
    ns: Namespace,
    meta: Metadata,
}

/// Restores the archive read from `reader` into `client`'s server.
pub async fn restore_archive(
    name: &str,
    client: &Client,
    reader: BoxRead,
    opts: &RestoreOptions,
) -> std::result::Result<RestoreSummary, SourceError> {
    restore_archive_with(name, client, reader, opts, &mut opts.replayer()).await
}

/// [`restore_archive`] replaying the archive's oplog with `replayer`, whose
/// held transactions then carry on into later oplog slices.
pub async fn restore_archive_with(
    name: &str,
    client: &Client,
    reader: BoxRead,
    opts: &RestoreOptions,
    replayer: &mut Replayer,
) -> std::result::Result<RestoreSummary, SourceError> {
    let concurrency = opts.concurrency.max(1);
    let (tx, mut rx) = mpsc::channel::<Msg>(concurrency);
    let (docs_max, bytes_max) = (
        opts.insert_batch_docs.max(1),
        opts.insert_batch_bytes.max(1),
    );
    let parser = tokio::task::spawn_blocking(move || parse(reader, tx, docs_max, bytes_max));
    let result = restore_messages(name, client, &mut rx, opts, concurrency, replayer).await;
    drop(rx);
    let parsed = parser
        .await
        .map_err(|e| rerr(name, format!("the archive parser failed: {e}"), None))?;
    match (result, parsed) {
        // A damaged archive explains any failure that follows from it.
        (_, Err(e)) => Err(SourceError::Format {
            source_name: name.to_string(),
            message: e.to_string(),
        }),
        (r, Ok(())) => r,
    }
}

async fn restore_messages(
    name: &str,
    client: &Client,
    rx: &mut mpsc::Receiver<Msg>,
    opts: &RestoreOptions,
    concurrency: usize,
    replayer: &mut Replayer,
) -> std::result::Result<RestoreSummary, SourceError> {
    let Some(Msg::Start(prelude, metadata)) = rx.recv().await else {
        return Err(rerr(name, "the archive ended before its prelude", None));
    };
    let mut summary = RestoreSummary::default();
    // Archive data namespace → where it goes.
    let mut targets: HashMap<Namespace, Target> = HashMap::new();
    let mut views = Vec::new();
    let mut has_oplog = false;
    for (m, md) in prelude.iter().zip(metadata) {
        if m.ns.is_oplog() {
            has_oplog = true;
            continue;
        }
        if m.ns.db == "admin"
            || (m.ns.collection.starts_with("system.") && m.ns.collection != "system.js")
        {
            summary.skipped.push(m.ns.to_string());
            continue;
        }
        let to = split_ns(&rename(
            opts.ns_from.as_deref(),
            opts.ns_to.as_deref(),
            &m.ns.to_string(),
        ));
        let kind = md
            .kind
            .clone()
            .or_else(|| m.kind.clone())
            .unwrap_or_else(|| "collection".into());
        let data_ns = if kind == "timeseries" {
            Namespace::new(&m.ns.db, format!("system.buckets.{}", m.ns.collection))
        } else {
            m.ns.clone()
        };
        if kind == "view" {
            if opts.drop {
                // An existing view of that name would make `create` fail.
                drop_existing_view(name, client, &to).await?;
            }
            views.push((to, md));
            continue;
        }
        let db = client.database(&to.db);
        let coll = db.collection::<RawDocumentBuf>(&to.collection);
        let nonempty = coll
            .find_one(doc! {})
            .await
            .map_err(|e| rerr(name, format!("cannot read target `{to}`"), Some(e)))?
            .is_some();
        if nonempty {
            if !opts.drop {
                return Err(rerr(
                    name,
                    format!("target collection `{to}` is not empty; refusing to write into it (pass --drop to replace it, or --ns-to to restore elsewhere)"),
                    None,
                ));
            }
            coll.drop()
                .await
                .map_err(|e| rerr(name, format!("cannot drop `{to}`"), Some(e)))?;
        }
        if !md.options.is_empty() {
            let mut cmd = doc! {"create": &to.collection};
            cmd.extend(md.options.clone());
            if let Err(e) = db.run_command(cmd).await {
                tracing::warn!(event = "mongo_create_failed", ns = %to, error = %e);
            }
        }
        // Time-series data are buckets: they go into the target's buckets, not its view.
        let to = if kind == "timeseries" {
            Namespace::new(&to.db, format!("system.buckets.{}", to.collection))
        } else {
            to
        };
        targets.insert(data_ns, Target { ns: to, meta: md });
    }
    let _ = has_oplog;

    let sem = Arc::new(Semaphore::new(concurrency));
    let mut inserts: JoinSet<std::result::Result<(), SourceError>> = JoinSet::new();
    let mut counts: HashMap<Namespace, u64> = HashMap::new();
    let mut post_data_done = false;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Start(..) => return Err(rerr(name, "a second prelude in the archive", None)),
            Msg::End => {}
            Msg::Batch(ns, docs) if ns.is_oplog() => {
                if !opts.oplog_replay {
                    continue;
                }
                if !post_data_done {
                    finish_inserts(&mut inserts).await?;
                    build_indexes(name, client, &targets, &mut summary).await?;
                    post_data_done = true;
                }
                for d in docs {
                    if apply_oplog_entry(name, client, &d, opts.oplog_limit, replayer).await? {
                        summary.oplog_applied += 1;
                    }
                }
            }
            Msg::Batch(ns, docs) => {
                let Some(t) = targets.get(&ns) else {
                    if !summary.skipped.contains(&ns.to_string()) {
                        summary.skipped.push(ns.to_string());
                    }
                    continue;
                };
                if post_data_done {
                    return Err(rerr(
                        name,
                        format!("data of `{ns}` after the oplog in the archive; not supported"),
                        None,
                    ));
                }
                *counts.entry(ns.clone()).or_default() += docs.len() as u64;
                let permit = sem.clone().acquire_owned().await.expect("semaphore open");
                while let Some(r) = inserts.try_join_next() {
                    joined(r)?;
                }
                let coll = client
                    .database(&t.ns.db)
                    .collection::<RawDocumentBuf>(&t.ns.collection);
                let (to, name) = (t.ns.clone(), name.to_string());
                inserts.spawn(async move {
                    let n = docs.len();
                    let r = coll.insert_many(&docs).ordered(false).await;
                    drop(permit);
                    r.map(|_| ()).map_err(|e| {
                        rerr(
                            &name,
                            format!("inserting {n} documents into `{to}` failed"),
                            Some(e),
                        )
                    })
                });
            }
        }
    }
    finish_inserts(&mut inserts).await?;
    if !post_data_done {
        build_indexes(name, client, &targets, &mut summary).await?;
    }
    for (to, md) in views {
        let mut cmd = doc! {"create": &to.collection};
        cmd.extend(md.options.clone());
        client
            .database(&to.db)
            .run_command(cmd)
            .await
            .map_err(|e| rerr(name, format!("creating view `{to}` failed"), Some(e)))?;
        summary.views_created += 1;
    }
    for (ns, t) in &targets {
        summary.collections.insert(
            ns.to_string(),
            (t.ns.to_string(), counts.get(ns).copied().unwrap_or(0)),
        );
    }
    Ok(summary)
}

fn joined(
    r: std::result::Result<std::result::Result<(), SourceError>, tokio::task::JoinError>,
) -> std::result::Result<(), SourceError> {
    r.map_err(|e| SourceError::Restore {
        source_name: String::new(),
        message: format!("an insert task failed: {e}"),
        cause: None,
    })?
}

async fn finish_inserts(
    set: &mut JoinSet<std::result::Result<(), SourceError>>,
) -> std::result::Result<(), SourceError> {
    while let Some(r) = set.join_next().await {
        joined(r)?;
    }
    Ok(())
}

async fn build_indexes(
    name: &str,
    client: &Client,
    targets: &HashMap<Namespace, Target>,
    summary: &mut RestoreSummary,
) -> std::result::Result<(), SourceError> {
    for t in targets.values() {
        let specs: Vec<Bson> = t
            .meta
            .indexes
            .iter()
            .filter(|i| i.get_str("name").ok() != Some("_id_"))
            .map(|i| {
                let mut i = i.clone();
                i.remove("ns");
                Bson::Document(i)
            })
            .collect();
        if specs.is_empty() {
            continue;
        }
        let n = specs.len() as u64;
        client
            .database(&t.ns.db)
            .run_command(doc! {"createIndexes": &t.ns.collection, "indexes": specs})
            .await
            .map_err(|e| {
                rerr(
                    name,
                    format!("building the indexes of `{}` failed", t.ns),
                    Some(e),
                )
            })?;
        summary.indexes_built += n;
    }
    Ok(())
}

/// Applies one captured oplog entry (`raw`) unless it is at or after
/// `limit`; `Ok(false)` when nothing was applied.
pub(crate) async fn apply_oplog_entry(
    name: &str,
    client: &Client,
    raw: &RawDocumentBuf,
    limit: Option<Timestamp>,
    replayer: &mut Replayer,
) -> std::result::Result<bool, SourceError> {
    let e: Document = raw.to_document().map_err(|err| {
        rerr(
            name,
            format!("an oplog entry is not valid BSON: {err}"),
            None,
        )
    })?;
    if let (Some(limit), Some(ts)) = (limit, entry_ts(&e)) {
        if ts >= limit {
            return Ok(false);
        }
    }
    let ops = replayer
        .plan(&e)
        .map_err(|err| rerr(name, format!("cannot replay the oplog: {err}"), None))?;
    for op in &ops {
        op.apply(client)
            .await
            .map_err(|err| rerr(name, format!("replaying the oplog failed: {err}"), None))?;
    }
    Ok(!ops.is_empty())
}

async fn drop_existing_view(
    name: &str,
    client: &Client,
    to: &Namespace,
) -> std::result::Result<(), SourceError> {
    let db = client.database(&to.db);
    let listed: Vec<Document> = db
        .run_cursor_command(doc! {"listCollections": 1, "filter": {"name": &to.collection}})
        .await
        .map_err(|e| rerr(name, format!("cannot list `{}`", to.db), Some(e)))?
        .try_collect()
        .await
        .map_err(|e| rerr(name, format!("cannot list `{}`", to.db), Some(e)))?;
    if !listed.is_empty() {
        db.collection::<Document>(&to.collection)
            .drop()
            .await
            .map_err(|e| rerr(name, format!("cannot drop the existing view `{to}`"), Some(e)))?;
    }
    Ok(())
}

/// The MongoDB settings and URI a restore of `m` uses.
fn restore_target(
    cfg: Option<&MongoConfig>,
    m: &Manifest,
    to_uri: Option<&str>,
) -> Result<(MongoConfig, crate::secret::Secret)> {
    let cfg = cfg.cloned();
    let uri = match (to_uri, &cfg) {
        (Some(u), _) => crate::secret::Secret::new(u),
        (None, Some(c)) => read_uri(&m.source, c)?,
        (None, None) => {
            return Err(Error::Invalid(format!(
                "source `{}` is not a mongo source in this policy: pass --to URI",
                m.source
            )))
        }
    };
    let mut cfg =
        cfg.unwrap_or_else(|| MongoConfig::with_uri(SecretRef::Env("GSDR_UNUSED".into())));
    cfg.read_preference = ReadPreferenceMode::Primary;
    Ok((cfg, uri))
}

const NOT_A_DIR: &str = "a mongo restore takes --to URI (or the source's URI), --ns-from/--ns-to, --drop and --target-time; not a directory or an LSN";

/// Restores a Mongo backup into a server (`gsdr restore --to URI`, `--ns-from/--ns-to`, `--drop`).
pub async fn restore(
    ctx: &RestoreCtx<'_>,
    cfg: Option<&MongoConfig>,
    spec: &RestoreSpec,
) -> Result<RestoreOutcome> {
    let (host, catalog, m, progress) = (ctx.host, ctx.catalog, ctx.manifest, ctx.progress);
    let to_uri = match &spec.target {
        RestoreTarget::Server(u) => Some(u.as_str()),
        RestoreTarget::Origin => None,
        RestoreTarget::DataDir(_) | RestoreTarget::File(_) => {
            return Err(not_supported(&m.source, NOT_A_DIR).into())
        }
    };
    if let RecoveryPoint::Lsn(_) = spec.point {
        return Err(not_supported(&m.source, NOT_A_DIR).into());
    }
    let (cfg, uri) = restore_target(cfg, m, to_uri)?;
    let mut opts = RestoreOptions::from_config(&cfg);
    opts.ns_from = spec.rename.as_ref().map(|r| r.from.clone());
    opts.ns_to = spec.rename.as_ref().map(|r| r.to.clone());
    opts.drop = spec.replace;
    // To the second: every entry whose `ts` second is at or before the target.
    opts.oplog_limit = spec.point.time().map(|t| Timestamp {
        time: (t.timestamp() + 1).clamp(0, u32::MAX as i64) as u32,
        increment: 0,
    });
    let start = Instant::now();
    let client = connect(&m.source, uri.expose(), &cfg).await?;
    if opts.drop {
        // `--drop` destroys target collections as the stream reaches them:
        // first prove the whole backup readable, so a wrong key or a damaged
        // object never costs the target a collection.
        prove_readable(host, catalog, m).await?;
    }
    // One replayer for the dump's oplog and the slices after it: a
    // transaction still open at the dump's end (`partialTxn` entries held)
    // commits in a later slice with all its parts.
    let mut replayer = opts.replayer();
    let (mut summary, raw_bytes) =
        run_restore(host, catalog, m, &client, &opts, &mut replayer, progress).await?;
    if matches!(spec.point, RecoveryPoint::Time(_) | RecoveryPoint::Latest) {
        let (applied, slices) =
            replay_slices(host, catalog, m, &client, &opts, spec, &mut replayer).await?;
        summary.oplog_applied += applied;
        summary.slices_replayed = slices;
    }
    let destination = mongodb::options::ClientOptions::parse(uri.expose())
        .await
        .map(|o| format!("mongodb://{}", super::hosts_of(&o)))
        .unwrap_or_else(|_| "mongodb".into());
    tracing::info!(event = "mongo_restore_finished", id = %m.id, namespaces = summary.collections.len(), oplog_applied = summary.oplog_applied);
    Ok(RestoreOutcome {
        id: m.id.clone(),
        source: m.source.clone(),
        destination,
        raw_bytes,
        duration_secs: start.elapsed().as_secs_f64(),
        details: serde_json::to_value(&summary).expect("summary serialises"),
    })
}

/// Point-in-time: replays the oplog slices that continue the dump `m`
/// (from its `oplog_end`) up to the target, from the store the backup is read
/// from; returns the entries applied and the slices read. A target later
/// than the slices reach is an error when the source has slices; without
/// any (no continuous capture) the dump's own oplog is all there is.
async fn replay_slices(
    host: &dyn RestoreHost,
    catalog: &Catalog,
    m: &Manifest,
    client: &Client,
    opts: &RestoreOptions,
    spec: &RestoreSpec,
    replayer: &mut Replayer,
) -> Result<(u64, u64)> {
    let store = catalog.store().clone();
    let all = super::slices::list(store.as_ref(), &m.source).await?;
    if all.is_empty() {
        return Ok((0, 0));
    }
    let Some(end) = super::slices::dump_end(m) else {
        return Ok((0, 0));
    };
    let chain = super::slices::chain_from(&all, end);
    let reach = chain.last().map(|s| s.end).unwrap_or(end);
    if let RecoveryPoint::Time(t) = spec.point {
        if (reach.time as i64) < t.timestamp() {
            return Err(Error::Invalid(format!(
                "the oplog of `{}` after backup {} reaches only {} (Timestamp({}, {})) on {}; the target {} is later: restore to an earlier time, or wait for the capture to store the next slice",
                m.source,
                m.id,
                super::slices::ts_time(reach).to_rfc3339(),
                reach.time,
                reach.increment,
                store.describe(),
                t.to_rfc3339()
            )));
        }
    }
    let ids = host.identities()?;
    let mut applied = 0u64;
    'slices: for s in &chain {
        let docs = super::slices::read(store.as_ref(), &m.source, &s.name, ids.clone())
            .await
            .map_err(|e| rerr(&m.source, e.to_string(), None))?;
        for d in docs {
            let ts = d.to_document().ok().and_then(|d| entry_ts(&d));
            if ts.is_some_and(|ts| ts <= end) {
                continue; // already in the dump's own oplog
            }
            if let (Some(limit), Some(ts)) = (opts.oplog_limit, ts) {
                if ts >= limit {
                    break 'slices;
                }
            }
            if apply_oplog_entry(&m.source, client, &d, opts.oplog_limit, replayer).await? {
                applied += 1;
            }
        }
    }
    Ok((applied, chain.len() as u64))
}

/// Reads the whole backup through every check — size and SHA-256 against
/// the manifest, age, zstd, the archive's framing to its end — writing
/// nothing anywhere.
async fn prove_readable(host: &dyn RestoreHost, catalog: &Catalog, m: &Manifest) -> Result<()> {
    let decoded = host.open_backup(catalog, m).await?;
    let input = download_label(catalog, m);
    let ended = decoded
        .finish(
            Ends::new(&input, "the check of the archive before --drop"),
            None,
            |reader| async move {
                tokio::task::spawn_blocking(move || -> std::result::Result<(), ArchiveError> {
                    let mut rd = ArchiveReader::open(SyncIoBridge::new(reader))?;
                    while rd.next_event()?.is_some() {}
                    Ok(())
                })
                .await
                .map_err(|e| ArchiveError::Io {
                    offset: 0,
                    source: std::io::Error::other(e.to_string()),
                })
                .and_then(|r| r)
            },
        )
        .await;
    match ended {
        Err(StreamError::Pipeline(e)) => Err(e.into()),
        Err(StreamError::Sink(e)) => Err(SourceError::Format {
            source_name: m.source.clone(),
            message: e.to_string(),
        }
        .into()),
        Ok(_) => Ok(()),
    }
}

/// What a `--drop` restore of `m` into `uri` (or the source's own URI)
/// overwrites, for incident plans and their confirmation: the backup's
/// collections that already hold documents there.
pub async fn describe_overwrite(
    cfg: Option<&MongoConfig>,
    m: &Manifest,
    uri: Option<&str>,
) -> Overwrite {
    let details: DumpDetails = match serde_json::from_value(m.consistency.details.clone()) {
        Ok(d) => d,
        Err(e) => {
            return Overwrite::destroys(format!("cannot read the backup's collections ({e})"))
        }
    };
    let (cfg, uri) = match restore_target(cfg, m, uri) {
        Ok(x) => x,
        Err(e) => return Overwrite::destroys(format!("cannot use the endpoint: {e}")),
    };
    let at = mongodb::options::ClientOptions::parse(uri.expose())
        .await
        .map(|o| format!("mongodb://{}", super::hosts_of(&o)))
        .unwrap_or_else(|_| "the target".into());
    let counted = async {
        let client = connect(&m.source, uri.expose(), &cfg).await?;
        let mut hit = Vec::new();
        for ns in details.collections.keys() {
            let n = split_ns(ns);
            if n.db == "admin" || n.collection.starts_with("system.") {
                continue;
            }
            let c = client
                .database(&n.db)
                .collection::<RawDocumentBuf>(&n.collection)
                .estimated_document_count()
                .await
                .map_err(|e| rerr(&m.source, format!("counting `{ns}`"), Some(e)))?;
            if c > 0 {
                hit.push((ns.clone(), c));
            }
        }
        Ok::<_, SourceError>(hit)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(20), counted).await {
        Ok(Ok(hit)) if hit.is_empty() => Overwrite::nothing(format!(
            "none of the backup's {} collections holds documents in {at}: nothing is dropped",
            details.collections.len()
        )),
        Ok(Ok(hit)) => Overwrite::destroys(format!(
            "drops {} collections holding {} documents in {at} ({}), once the whole backup has been read and checked",
            hit.len(),
            crate::source::thousands(hit.iter().map(|(_, n)| n).sum()),
            hit.iter()
                .map(|(ns, n)| format!("{ns} {}", crate::source::thousands(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(Err(e)) => Overwrite::destroys(format!("cannot count the documents in {at} ({e}): a restore drops the backup's collections there")),
        Err(_) => Overwrite::destroys(format!("{at} did not answer within 20 s: a restore drops the backup's collections there")),
    }
}

async fn run_restore(
    host: &dyn RestoreHost,
    catalog: &Catalog,
    m: &Manifest,
    client: &Client,
    opts: &RestoreOptions,
    replayer: &mut Replayer,
    progress: &dyn Progress,
) -> Result<(RestoreSummary, u64)> {
    let decoded = host.open_backup(catalog, m).await?;
    progress.start(&format!("restore {}", m.id), Some(m.raw_bytes));
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let input = download_label(catalog, m);
    let ended = decoded
        .finish(
            Ends::new(&input, "the MongoDB restore target"),
            None,
            |reader| async {
                // The parser runs on another thread: bytes are counted here and
                // reported by the ticker below.
                let count = counter.clone();
                let reader = crate::stream::progress::Inspect::new(reader, move |b: &[u8]| {
                    count.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                });
                let fut = restore_archive_with(&m.source, client, Box::pin(reader), opts, replayer);
                tokio::pin!(fut);
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tokio::select! {
                        r = &mut fut => break r,
                        _ = tick.tick() => progress.advance(counter.swap(0, std::sync::atomic::Ordering::Relaxed)),
                    }
                }
            },
        )
        .await;
    progress.advance(counter.swap(0, std::sync::atomic::Ordering::Relaxed));
    progress.finish();
    match ended {
        Err(StreamError::Pipeline(e)) => Err(e.into()),
        Err(StreamError::Sink(e)) => Err(e.into()),
        Ok((st, s)) => Ok((s, st.raw_bytes)),
    }
}


/// One namespace compared by [`verify_deep`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NsCheck {
    /// Namespace in the backup.
    pub ns: String,
    /// Where it was restored for the check.
    pub restored_as: String,
    /// Count in the manifest.
    pub expected_count: u64,
    /// Count read back.
    pub actual_count: u64,
    /// Digest in the manifest.
    pub expected_digest: String,
    /// Digest read back.
    pub actual_digest: String,
    /// Both match.
    pub ok: bool,
}

/// Outcome of [`verify_deep`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeepVerifyReport {
    /// Backup id.
    pub id: String,
    /// Every namespace matched.
    pub ok: bool,
    /// Scratch databases used (dropped afterwards).
    pub scratch_databases: Vec<String>,
    /// Per namespace.
    pub collections: Vec<NsCheck>,
    /// Namespaces not restored (users, roles, system collections).
    pub skipped: Vec<String>,
    /// Seconds taken.
    pub duration_secs: f64,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// Reads a collection back and digests it.
pub(crate) async fn digest_collection(
    client: &Client,
    ns: &Namespace,
) -> std::result::Result<ContentDigest, mongodb::error::Error> {
    let mut cur = client
        .database(&ns.db)
        .collection::<RawDocumentBuf>(&ns.collection)
        .find(doc! {})
        .await?;
    let mut d = ContentDigest::default();
    while cur.advance().await? {
        d.add(cur.current().as_bytes());
    }
    Ok(d)
}

/// `gsdr verify ID --deep --scratch URI`: restores `m` into scratch databases
/// (`gsdrv_<random>_<db>`) on `scratch_uri`, without oplog replay, compares every
/// collection's count and content digest with the manifest, then drops them.
/// `Ok` with `ok: false` when the data differs; `Err` when the check could not run.
pub async fn verify_deep(
    host: &dyn RestoreHost,
    cfg: Option<&MongoConfig>,
    catalog: &Catalog,
    m: &Manifest,
    scratch_uri: &str,
    progress: &dyn Progress,
) -> Result<DeepVerifyReport> {
    let start = Instant::now();
    let details: DumpDetails = serde_json::from_value(m.consistency.details.clone()).map_err(|e| {
        Error::Invalid(format!(
            "backup `{}` has no Mongo dump details in its manifest ({e}); deep verification needs a mongo backup",
            m.id
        ))
    })?;
    let (cfg, _) = restore_target(cfg, m, Some(scratch_uri))?;
    let prefix = format!("gsdrv_{:06x}_", rand::random::<u32>() & 0xff_ffff);
    let mut opts = RestoreOptions::from_config(&cfg);
    opts.ns_from = Some("*".into());
    opts.ns_to = Some(format!("{prefix}*"));
    opts.oplog_replay = false;
    let client = connect(&m.source, scratch_uri, &cfg).await?;
    let restored = run_restore(host, catalog, m, &client, &opts, &mut opts.replayer(), progress).await;
    let mut report = DeepVerifyReport {
        id: m.id.clone(),
        ok: false,
        scratch_databases: Vec::new(),
        collections: Vec::new(),
        skipped: Vec::new(),
        duration_secs: 0.0,
        error: None,
    };
    let mut dbs = BTreeSet::new();
    match restored {
        Err(e @ Error::Pipeline(PipelineError::Key(_))) => return Err(e),
        Err(e) => report.error = Some(e.to_string()),
        Ok((summary, _)) => {
            report.skipped = summary.skipped.clone();
            let mut ok = true;
            for (ns, expect) in &details.collections {
                if expect.kind == "view" {
                    continue;
                }
                let Some((to, _)) = summary.collections.get(ns) else {
                    if !summary.skipped.contains(ns) {
                        ok = false;
                        report.collections.push(NsCheck {
                            ns: ns.clone(),
                            restored_as: String::new(),
                            expected_count: expect.count,
                            actual_count: 0,
                            expected_digest: expect.digest.clone(),
                            actual_digest: String::new(),
                            ok: false,
                        });
                    }
                    continue;
                };
                let to_ns = split_ns(to);
                dbs.insert(to_ns.db.clone());
                let got = digest_collection(&client, &to_ns)
                    .await
                    .map_err(|e| rerr(&m.source, format!("reading back `{to}` failed"), Some(e)))?;
                let c = NsCheck {
                    ns: ns.clone(),
                    restored_as: to.clone(),
                    expected_count: expect.count,
                    actual_count: got.count,
                    expected_digest: expect.digest.clone(),
                    actual_digest: got.hex(),
                    ok: got.count == expect.count && got.hex() == expect.digest,
                };
                ok &= c.ok;
                report.collections.push(c);
            }
            report.ok = ok;
            if !ok {
                report.error =
                    Some("restored data differs from the manifest's counts or digests".into());
            }
        }
    }
    // Scratch databases: every one named with our prefix.
    if let Ok(names) = client.list_database_names().await {
        dbs.extend(names.into_iter().filter(|n| n.starts_with(&prefix)));
    }
    for db in &dbs {
        if let Err(e) = client.database(db).drop().await {
            tracing::warn!(event = "mongo_scratch_drop_failed", db = %db, error = %e);
        }
    }
    report.scratch_databases = dbs.into_iter().collect();
    report.duration_secs = start.elapsed().as_secs_f64();
    tracing::info!(event = "verify_deep_finished", id = %m.id, ok = report.ok);
    Ok(report)
}

/// Lists a collection's indexes (for tests and tools).
pub async fn list_indexes(
    client: &Client,
    ns: &Namespace,
) -> mongodb::error::Result<Vec<Document>> {
    client
        .database(&ns.db)
        .run_cursor_command(doc! {"listIndexes": &ns.collection})
        .await?
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case(Some("db.*"), Some("drill.*"), "db.c", "drill.c")]
    #[case(Some("db.*"), Some("drill.*"), "other.c", "other.c")]
    #[case(Some("*"), Some("p_*"), "db.c", "p_db.c")]
    #[case(Some("a.b"), Some("c.d"), "a.b", "c.d")]
    #[case(None, None, "a.b", "a.b")]
    fn renames(
        #[case] from: Option<&str>,
        #[case] to: Option<&str>,
        #[case] ns: &str,
        #[case] want: &str,
    ) {
        assert_eq!(rename(from, to, ns), want);
    }
}
