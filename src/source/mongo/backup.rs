//! The dump: every selected collection as raw BSON, several at once, into one
//! mongodump archive stream; the oplog window on a replica set.
//!
//! Steps (as `mongodump --oplog`): list databases, collections (with
//! `listCollections` run as a cursor command) and indexes; on a replica set
//! note the oplog start; write the header and prelude; dump the collections,
//! at most `concurrency` at once, each sending whole segments of about
//! `segment_bytes` into one bounded channel (so blocks interleave); then, on a
//! replica set, note the oplog end, check the oplog did not roll over and copy
//! the window `[start, end]` into the `.oplog` namespace. The manifest gets the
//! end as the consistency point. A standalone server has no oplog: the dump
//! is then fuzzy between its start and end, the manifest says `oplog: false`,
//! and the consistency point recorded is the dump's start (writes during the
//! dump may or may not be in it).

use std::collections::BTreeMap;
use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, spec::BinarySubtype, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::Client;
use tokio::sync::mpsc;

use super::archive::{
    eof_block, write_prelude, ArchiveHeader, CollectionMeta, Metadata, Namespace, SegmentBuilder,
    CRC64, FORMAT_VERSION,
};
use super::digest::ContentDigest;
use super::{classify, connect_member, read_uri, MongoConfig};
use crate::fault::RetryClass;
use crate::source::{BackupSource, SourceError, SourceMeta, SourceStream};

/// A configured MongoDB source.
#[derive(Debug, Clone)]
pub struct MongoSource {
    name: String,
    cfg: MongoConfig,
}

impl MongoSource {
    /// The source named `name` with settings `cfg`.
    pub fn new(name: impl Into<String>, cfg: MongoConfig) -> Self {
        MongoSource {
            name: name.into(),
            cfg,
        }
    }
}

/// What the dump records per namespace in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsSummary {
    /// Documents dumped.
    pub count: u64,
    /// [`ContentDigest`] of those documents, hex.
    pub digest: String,
    /// Raw bytes of those documents.
    pub bytes: u64,
    /// `collection`, `view` or `timeseries`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The engine details a Mongo dump stores in `consistency.details`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DumpDetails {
    /// Whether the oplog was captured (replica set): the dump is consistent at `oplog_end`.
    pub oplog: bool,
    /// Oplog window start `{t, i}` (seconds, increment), when captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_start: Option<(u32, u32)>,
    /// Oplog window end: the consistency point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_end: Option<(u32, u32)>,
    /// Oplog entries captured.
    #[serde(default)]
    pub oplog_entries: u64,
    /// How consistent the dump is, in words.
    pub consistency: String,
    /// Replica set name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_set: Option<String>,
    /// The one replica-set member (`host:port`) every read of the dump went
    /// to: the oplog bounds, each collection and the oplog window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// Server version.
    pub server_version: String,
    /// Per namespace (`db.collection`): count, digest, bytes.
    pub collections: BTreeMap<String, NsSummary>,
}

/// One namespace to dump.
#[derive(Debug, Clone)]
struct Intent {
    meta: CollectionMeta,
    /// Where the data is read from and written to (timeseries: `system.buckets.X`).
    data_ns: Namespace,
    /// Views have no data of their own.
    read_data: bool,
}

struct Plan {
    server_version: String,
    replica_set: Option<String>,
    intents: Vec<Intent>,
    /// The member every read goes to (replica set).
    member: Option<String>,
}

/// Where a dump (and the capture) reads the oplog from.
#[derive(Debug, Clone)]
pub(crate) struct OplogSource {
    /// `local.oplog.rs`, or the `oplog_namespace` test hook.
    pub ns: Namespace,
    /// The test hook: `ts` is an int64, ordered by `ts` (not `$natural`).
    pub hook: bool,
}

impl OplogSource {
    /// The oplog of the source with settings `cfg`.
    pub fn of(cfg: &MongoConfig) -> OplogSource {
        match cfg.oplog_namespace.as_deref().and_then(|n| n.split_once('.')) {
            Some((d, c)) => OplogSource {
                ns: Namespace::new(d, c),
                hook: true,
            },
            None => OplogSource {
                ns: Namespace::new("local", "oplog.rs"),
                hook: false,
            },
        }
    }

    /// `ts` as the oplog stores it.
    pub fn ts_value(&self, ts: Timestamp) -> Bson {
        if self.hook {
            Bson::Int64(super::oplog::ts_as_i64(ts))
        } else {
            Bson::Timestamp(ts)
        }
    }

    /// The sort of oplog order.
    pub fn order(&self, dir: i32) -> Document {
        if self.hook {
            doc! {"ts": dir}
        } else {
            doc! {"$natural": dir}
        }
    }
}

fn dump_err(
    name: &str,
    message: impl Into<String>,
    e: Option<mongodb::error::Error>,
) -> SourceError {
    SourceError::Dump {
        source_name: name.to_string(),
        message: message.into(),
        class: RetryClass::Temporary,
        cause: e.map(|e| Box::new(e) as _),
    }
}

/// Whether mongodump would dump this collection.
fn wanted(db: &str, coll: &str) -> bool {
    match db {
        "local" | "config" => false,
        "admin" => matches!(coll, "system.users" | "system.roles" | "system.version"),
        _ => !coll.starts_with("system.") || coll == "system.js",
    }
}

/// Every document of the cursor command `cmd` on `db`; `failed` says what failed.
async fn cursor_docs(
    name: &str,
    db: &mongodb::Database,
    cmd: Document,
    failed: String,
) -> Result<Vec<Document>, SourceError> {
    let cursor = db
        .run_cursor_command(cmd)
        .await
        .map_err(|e| dump_err(name, failed.clone(), Some(e)))?;
    cursor
        .try_collect()
        .await
        .map_err(|e| dump_err(name, failed, Some(e)))
}

async fn plan(name: &str, client: &Client, cfg: &MongoConfig) -> Result<Plan, SourceError> {
    let admin = client.database("admin");
    let hello = admin
        .run_command(doc! {"hello": 1})
        .await
        .map_err(|e| dump_err(name, "`hello` failed", Some(e)))?;
    let replica_set = hello.get_str("setName").ok().map(str::to_string);
    let server_version = admin
        .run_command(doc! {"buildInfo": 1})
        .await
        .ok()
        .and_then(|b| b.get_str("version").ok().map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    let dbs = client
        .list_database_names()
        .await
        .map_err(|e| dump_err(name, "listing databases failed", Some(e)))?;
    let mut intents = Vec::new();
    for dbname in dbs {
        let db = client.database(&dbname);
        let colls = cursor_docs(
            name,
            &db,
            doc! {"listCollections": 1},
            format!("listCollections on `{dbname}` failed"),
        )
        .await?;
        let mut colls: Vec<Document> = colls;
        colls.sort_by(|a, b| {
            a.get_str("name")
                .unwrap_or("")
                .cmp(b.get_str("name").unwrap_or(""))
        });
        for c in colls {
            let Ok(cname) = c.get_str("name") else {
                continue;
            };
            let full = format!("{dbname}.{cname}");
            if !wanted(&dbname, cname)
                || !cfg.selects(&full)
                || cfg.oplog_namespace.as_deref() == Some(full.as_str())
            {
                continue;
            }
            let kind = c.get_str("type").unwrap_or("collection").to_string();
            let options = c.get_document("options").cloned().unwrap_or_default();
            let uuid = c
                .get_document("info")
                .ok()
                .and_then(|i| match i.get("uuid") {
                    Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid => {
                        Some(hex::encode(&b.bytes))
                    }
                    _ => None,
                });
            let indexes: Vec<Document> = if kind == "view" {
                Vec::new()
            } else {
                cursor_docs(
                    name,
                    &db,
                    doc! {"listIndexes": cname},
                    format!("listIndexes on `{dbname}.{cname}` failed"),
                )
                .await?
            };
            let md = Metadata {
                options,
                indexes,
                uuid,
                kind: Some(kind.clone()),
            };
            let ns = Namespace::new(&dbname, cname);
            let data_ns = if kind == "timeseries" {
                Namespace::new(&dbname, format!("system.buckets.{cname}"))
            } else {
                ns.clone()
            };
            intents.push(Intent {
                meta: CollectionMeta {
                    metadata: md.to_json(cname),
                    ns,
                    size: 0,
                    kind: Some(kind.clone()),
                },
                data_ns,
                read_data: kind != "view",
            });
        }
    }
    Ok(Plan {
        server_version,
        replica_set,
        intents,
        member: None,
    })
}

type Tx = mpsc::Sender<io::Result<Bytes>>;
type Job = futures::future::BoxFuture<'static, Result<(Intent, ContentDigest, u64), SourceError>>;

async fn send(tx: &Tx, block: Vec<u8>) -> Result<(), ()> {
    tx.send(Ok(Bytes::from(block))).await.map_err(|_| ())
}

fn consumer_gone(name: &str) -> SourceError {
    SourceError::Dump {
        source_name: name.to_string(),
        message: "the pipeline stopped reading the dump (the upload failed first)".into(),
        class: RetryClass::Temporary,
        cause: None,
    }
}

/// Dumps one namespace (`filter` selects documents; the oplog uses it) into segments.
async fn dump_ns(
    name: String,
    client: Client,
    read_ns: Namespace,
    write_ns: Namespace,
    filter: Document,
    cfg: MongoConfig,
    tx: Tx,
) -> Result<(ContentDigest, u64), SourceError> {
    let coll = client
        .database(&read_ns.db)
        .collection::<RawDocumentBuf>(&read_ns.collection);
    let what = format!("reading `{read_ns}`");
    let mut cursor = coll
        .find(filter)
        .batch_size(cfg.batch_docs)
        .await
        .map_err(|e| dump_err(&name, format!("{what} failed"), Some(e)))?;
    let seg_bytes = cfg.segment_bytes.0 as usize;
    let mut crc = CRC64.digest();
    let mut digest = ContentDigest::default();
    let mut bytes = 0u64;
    let mut seg = SegmentBuilder::new(&write_ns, seg_bytes + 64 * 1024);
    let mut sent_any = false;
    while cursor.advance().await.map_err(|e| {
        dump_err(
            &name,
            format!("{what} failed after {} documents", digest.count),
            Some(e),
        )
    })? {
        let d = cursor.current().as_bytes();
        crc.update(d);
        digest.add(d);
        bytes += d.len() as u64;
        seg.push(d);
        if seg.doc_bytes() >= seg_bytes {
            let full = std::mem::replace(
                &mut seg,
                SegmentBuilder::new(&write_ns, seg_bytes + 64 * 1024),
            );
            send(&tx, full.finish())
                .await
                .map_err(|_| consumer_gone(&name))?;
            sent_any = true;
        }
    }
    if seg.docs() > 0 || !sent_any {
        send(&tx, seg.finish())
            .await
            .map_err(|_| consumer_gone(&name))?;
    }
    send(&tx, eof_block(&write_ns, crc.finalize()))
        .await
        .map_err(|_| consumer_gone(&name))?;
    tracing::debug!(event = "mongo_collection_dumped", source = %name, ns = %write_ns, docs = digest.count, bytes);
    Ok((digest, bytes))
}

/// The newest (`natural` -1) or oldest (1) oplog entry's `ts`.
pub(crate) async fn newest_oplog_ts(
    name: &str,
    client: &Client,
    src: &OplogSource,
    natural: i32,
) -> Result<Timestamp, SourceError> {
    let oplog = client
        .database(&src.ns.db)
        .collection::<Document>(&src.ns.collection);
    let d = oplog
        .find_one(doc! {})
        .sort(src.order(natural))
        .projection(doc! {"ts": 1})
        .await
        .map_err(|e| dump_err(name, format!("reading {} failed", src.ns), Some(e)))?
        .ok_or_else(|| dump_err(name, format!("{} is empty", src.ns), None))?;
    super::oplog::entry_ts(&d)
        .ok_or_else(|| dump_err(name, "an oplog entry without a `ts` timestamp", None))
}

/// `oplogStart`: the newest entry, or the start of the oldest open transaction.
async fn oplog_start(
    name: &str,
    client: &Client,
    src: &OplogSource,
) -> Result<Timestamp, SourceError> {
    let newest = newest_oplog_ts(name, client, src, -1).await?;
    if src.hook {
        return Ok(newest);
    }
    let txns = client
        .database("config")
        .collection::<Document>("transactions");
    let open = txns
        .find_one(doc! {"state": {"$in": ["prepared", "inProgress"]}})
        .sort(doc! {"startOpTime.ts": 1})
        .await
        .ok()
        .flatten()
        .and_then(|t| {
            t.get_document("startOpTime")
                .ok()
                .and_then(|s| s.get_timestamp("ts").ok())
        });
    Ok(match open {
        Some(t) if t < newest => t,
        _ => newest,
    })
}

fn ts_time(ts: Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(ts.time as i64, 0)
}

/// Runs the whole dump, writing blocks to `tx`.
async fn run(
    name: String,
    client: Client,
    cfg: MongoConfig,
    plan: Plan,
    oplog_from: Option<Timestamp>,
    started: chrono::DateTime<chrono::Utc>,
    tx: Tx,
) -> Result<SourceMeta, SourceError> {
    let src = OplogSource::of(&cfg);
    let mut prelude: Vec<CollectionMeta> = plan.intents.iter().map(|i| i.meta.clone()).collect();
    if oplog_from.is_some() {
        prelude.push(CollectionMeta {
            ns: Namespace::oplog(),
            metadata: String::new(),
            size: 0,
            kind: None,
        });
    }
    let mut head = Vec::new();
    write_prelude(
        &mut head,
        &ArchiveHeader {
            concurrent_collections: cfg.concurrency.get() as i32,
            version: FORMAT_VERSION.into(),
            server_version: plan.server_version.clone(),
            tool_version: format!("gsdr-{}", env!("CARGO_PKG_VERSION")),
        },
        &prelude,
    );
    send(&tx, head).await.map_err(|_| consumer_gone(&name))?;

    let mut collections = BTreeMap::new();
    let mut jobs: Vec<Job> = Vec::new();
    for i in plan.intents.iter().cloned() {
        let (name, client, cfg, tx) = (name.clone(), client.clone(), cfg.clone(), tx.clone());
        jobs.push(Box::pin(async move {
            let res = if i.read_data {
                tokio::spawn(dump_ns(
                    name.clone(),
                    client,
                    i.data_ns.clone(),
                    i.data_ns.clone(),
                    doc! {},
                    cfg,
                    tx,
                ))
                .await
                .map_err(|e| {
                    dump_err(
                        &name,
                        format!("the task dumping `{}` failed: {e}", i.data_ns),
                        None,
                    )
                })?
            } else {
                // Views: an empty segment and an EOF block, as mongodump writes them.
                send(&tx, SegmentBuilder::new(&i.data_ns, 64).finish())
                    .await
                    .map_err(|_| consumer_gone(&name))?;
                send(&tx, eof_block(&i.data_ns, 0))
                    .await
                    .map_err(|_| consumer_gone(&name))?;
                Ok((ContentDigest::default(), 0))
            };
            res.map(|(d, b)| (i, d, b))
        }));
    }
    let mut stream = futures::stream::iter(jobs).buffer_unordered(cfg.concurrency.get());
    while let Some(r) = stream.next().await {
        let (i, d, b) = r?;
        collections.insert(
            i.data_ns.to_string(),
            NsSummary {
                count: d.count,
                digest: d.hex(),
                bytes: b,
                kind: i.meta.kind.clone().unwrap_or_else(|| "collection".into()),
            },
        );
    }
    drop(stream);

    let mut details = DumpDetails {
        oplog: false,
        oplog_start: None,
        oplog_end: None,
        oplog_entries: 0,
        consistency: String::new(),
        replica_set: plan.replica_set.clone(),
        member: plan.member.clone(),
        server_version: plan.server_version.clone(),
        collections,
    };
    let consistency_time = if let Some(start) = oplog_from {
        let end = newest_oplog_ts(&name, &client, &src, -1).await?;
        let oldest = newest_oplog_ts(&name, &client, &src, 1).await?;
        if oldest > start {
            return Err(SourceError::Dump {
                source_name: name,
                message: "the oplog rolled over during the dump (its oldest entry is newer than the dump's start); enlarge the oplog or dump faster".into(),
                class: RetryClass::Permanent,
                cause: None,
            });
        }
        let (digest, _) = dump_ns(
            name.clone(),
            client.clone(),
            src.ns.clone(),
            Namespace::oplog(),
            doc! {"ts": {"$gte": src.ts_value(start), "$lte": src.ts_value(end)}},
            cfg.clone(),
            tx.clone(),
        )
        .await?;
        details.oplog = true;
        details.oplog_start = Some((start.time, start.increment));
        details.oplog_end = Some((end.time, end.increment));
        details.oplog_entries = digest.count;
        details.consistency = "consistent at oplog_end: replaying the captured oplog window brings every collection to that point".into();
        ts_time(end)
    } else {
        details.consistency = if plan.replica_set.is_some() {
            "fuzzy: oplog capture disabled by the policy (oplog = false); documents written between the dump's start and end may or may not be included; the consistency point recorded is the dump's start".into()
        } else {
            "fuzzy: standalone server without an oplog; documents written between the dump's start and end may or may not be included; the consistency point recorded is the dump's start".into()
        };
        Some(started)
    };
    drop(tx);
    Ok(SourceMeta {
        consistency_time,
        details: serde_json::to_value(&details).expect("details serialise"),
    })
}

#[async_trait]
impl BackupSource for MongoSource {
    fn kind(&self) -> &'static str {
        "full"
    }

    async fn open(&self) -> Result<SourceStream, SourceError> {
        let uri = read_uri(&self.name, &self.cfg)?;
        // One member for every read: the bounds, the collections, the window.
        let (client, member) = connect_member(&self.name, uri.expose(), &self.cfg, None).await?;
        let started = chrono::Utc::now();
        let mut plan = plan(&self.name, &client, &self.cfg)
            .await
            .map_err(|e| match e {
                SourceError::Dump {
                    cause: Some(c),
                    source_name,
                    message,
                    ..
                } => match c.downcast::<mongodb::error::Error>() {
                    Ok(me) => classify(&source_name, &message, *me, uri.expose()),
                    Err(c) => SourceError::Dump {
                        source_name,
                        message,
                        class: RetryClass::Temporary,
                        cause: Some(c),
                    },
                },
                other => other,
            })?;
        plan.member = member;
        let src = OplogSource::of(&self.cfg);
        let oplog_from = if (plan.replica_set.is_some() || src.hook) && self.cfg.oplog.in_dump() {
            Some(oplog_start(&self.name, &client, &src).await?)
        } else {
            None
        };
        tracing::info!(
            event = "mongo_dump_started",
            source = %self.name,
            namespaces = plan.intents.len(),
            oplog = oplog_from.is_some(),
        );
        // Bound: `concurrency` segments in the channel plus one being built per worker.
        let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(self.cfg.concurrency.get());
        let name = self.name.clone();
        let cfg = self.cfg.clone();
        let fail_tx = tx.clone();
        let task = tokio::spawn(async move {
            let r = run(name, client, cfg, plan, oplog_from, started, tx).await;
            if let Err(e) = &r {
                // The reader must end in an error, never in a clean (truncated) EOF.
                let _ = fail_tx.send(Err(io::Error::other(e.to_string()))).await;
            }
            drop(fail_tx);
            r
        });
        let stream = async_stream(move |cx| rx.poll_recv(cx));
        let reader = tokio_util::io::StreamReader::new(stream);
        let name = self.name.clone();
        let done = Box::pin(async move {
            task.await.map_err(|e| SourceError::Dump {
                source_name: name,
                message: format!("the dump task failed: {e}"),
                class: RetryClass::Temporary,
                cause: None,
            })?
        });
        Ok(SourceStream {
            reader: Box::pin(reader),
            done,
        })
    }
}

/// A stream from a poll function (a bounded receiver).
fn async_stream<T, F>(f: F) -> futures::stream::PollFn<F>
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>>,
{
    futures::stream::poll_fn(f)
}
