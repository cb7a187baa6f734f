//! MongoDB engine against a real nx-27017 (and, when `GSDR_TEST_MONGO_RS_URI`
//! names it, the docker-compose replica set).
//!
//! nx-27017 keeps ObjectId, int32, large int64, double, string, datetime,
//! binary subtype 0, bool, null, nested documents and arrays exactly: the data
//! here uses those. Oplog capture/replay and mongorestore compatibility need a
//! real `mongod` replica set: those tests are `#[ignore]`d with the command to run them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use gsdr::catalog::Catalog;
use gsdr::job::RestoreRequest;
use gsdr::job::{Env, NoProgress};
use gsdr::policy::Policy;
use gsdr::source::mongo::{list_indexes, DumpDetails};
use mongodb::bson::{doc, oid::ObjectId, Binary, Bson, DateTime, Document, RawDocumentBuf};

use crate::support::mongo::{replica_set_uri, NxMongo};
use crate::support::{tempdir, ChildGuard};

/// A policy with one fs target and one mongo source `m` whose URI is in a file.
struct Setup {
    env: Env,
    _dir: tempfile::TempDir,
}

fn setup(uri: &str, extra: &str) -> Setup {
    let dir = tempdir();
    let id_file = dir.path().join("identity.txt");
    let recipient = gsdr::pipeline::keys::keygen(&id_file).unwrap();
    let uri_file = dir.path().join("mongo-uri");
    std::fs::write(&uri_file, uri).unwrap();
    let store = dir.path().join("store");
    // TOML refuses a key given twice: `extra` may choose its own.
    let read_pref = if extra.contains("read_preference") {
        ""
    } else {
        "read_preference = \"primary\"\n"
    };
    let text = format!(
        r#"name = "t"
[encryption]
recipients = ["{recipient}"]
identity_file = "{}"
[targets.local]
kind = "fs"
path = "{}"
[sources.m]
kind = "mongo"
[sources.m.mongo]
uri = {{ file = "{}" }}
{read_pref}concurrency = 3
connect_timeout_secs = 3
{extra}
"#,
        id_file.display(),
        store.display(),
        uri_file.display()
    );
    let policy = Policy::parse(&text, Path::new("test.toml")).unwrap();
    Setup {
        env: Env::new(policy),
        _dir: dir,
    }
}

fn doc_of(i: i64, pad: usize) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "seq": i as i32,
        "big": 5_000_000_000_i64 + i,
        "mgdl": 80.5 + (i % 100) as f64,
        "patient": format!("p{:05}", i % 977),
        "at": DateTime::from_millis(1_700_000_000_000 + i * 1000),
        "raw": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![(i % 251) as u8; 16] },
        "ok": i % 2 == 0,
        "none": Bson::Null,
        "nested": { "a": [1, 2, { "b": "c" }], "s": "x".repeat(pad) },
    }
}

async fn fill(client: &mongodb::Client, db: &str, coll: &str, n: i64, pad: usize) {
    let c = client.database(db).collection::<Document>(coll);
    let mut i = 0;
    while i < n {
        let batch: Vec<Document> = (i..(i + 5000).min(n)).map(|k| doc_of(k, pad)).collect();
        c.insert_many(batch).await.unwrap();
        i += 5000;
    }
}

/// Every document of a collection, raw, sorted by its bytes (order-free comparison).
async fn raw_docs(client: &mongodb::Client, db: &str, coll: &str) -> Vec<RawDocumentBuf> {
    let mut v: Vec<RawDocumentBuf> = client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    v.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    v
}

/// Index definitions without the names nx-27017 rewrites: (key, unique, ttl).
async fn index_shapes(client: &mongodb::Client, db: &str, coll: &str) -> Vec<String> {
    let ns = gsdr::source::mongo::archive::Namespace::new(db, coll);
    let mut v: Vec<String> = list_indexes(client, &ns)
        .await
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{} unique={:?} ttl={:?}",
                i.get_document("key").unwrap(),
                i.get_bool("unique").ok(),
                i.get("expireAfterSeconds").map(|b| b.to_string())
            )
        })
        .collect();
    v.sort();
    v
}

async fn only_manifest(env: &Env) -> (Catalog, gsdr::catalog::Manifest) {
    let cat = env.catalog_for("m").await.unwrap();
    let mut list = cat.list(Some("m")).await.unwrap();
    assert_eq!(list.len(), 1);
    (cat, list.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_dump_and_restore_into_renamed_namespaces_is_byte_identical() {
    let nx = NxMongo::start();
    let client = nx.client().await;
    // Several databases, 100k+ documents, ~1 MB documents, an empty collection, indexes.
    let (fill_a, fill_b) = (
        fill(&client, "readings", "glucose", 70_000, 0),
        fill(&client, "ml", "predictions", 31_000, 0),
    );
    tokio::join!(fill_a, fill_b);
    let models = client.database("ml").collection::<Document>("models");
    let big: Vec<Document> = (0..4)
        .map(|i| doc! {"_id": format!("model-{i}"), "weights": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![i as u8; 1_000_000] }})
        .collect();
    models.insert_many(big).await.unwrap();
    client
        .database("ml")
        .create_collection("empty")
        .await
        .unwrap();
    let glucose = client
        .database("readings")
        .collection::<Document>("glucose");
    glucose
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"patient": 1, "seq": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();
    glucose
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"at": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .expire_after(std::time::Duration::from_secs(86_400 * 365 * 50))
                        .build(),
                )
                .build(),
        )
        .await
        .unwrap();

    let s = setup(&nx.uri(), "");
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let m = out.manifest;
    assert_eq!(m.engine, "mongo");
    assert_eq!(m.kind, "full");
    let details: DumpDetails = serde_json::from_value(m.consistency.details.clone()).unwrap();
    assert!(
        !details.oplog,
        "nx-27017 is a standalone server without an oplog"
    );
    assert!(details.consistency.starts_with("fuzzy"));
    assert_eq!(
        m.consistency.consistency_time.map(|t| t <= m.finished_at),
        Some(true)
    );
    assert_eq!(details.collections["readings.glucose"].count, 70_000);
    assert_eq!(details.collections["ml.predictions"].count, 31_000);
    assert_eq!(details.collections["ml.models"].count, 4);
    assert_eq!(details.collections["ml.empty"].count, 0);

    let (cat, m2) = only_manifest(&s.env).await;
    assert_eq!(m2, m);
    let req = RestoreRequest {
        to_uri: Some(nx.uri()),
        ns_from: Some("*".into()),
        ns_to: Some("r_*".into()),
        ..Default::default()
    };
    let restored = gsdr::job::restore(&s.env, &cat, &m, &req, &NoProgress)
        .await
        .unwrap();
    assert_eq!(restored.raw_bytes, m.raw_bytes);
    assert!(!restored.destination.contains('@'));

    for (db, coll) in [
        ("readings", "glucose"),
        ("ml", "predictions"),
        ("ml", "models"),
        ("ml", "empty"),
    ] {
        let src = raw_docs(&client, db, coll).await;
        let dst = raw_docs(&client, &format!("r_{db}"), coll).await;
        assert_eq!(src.len(), dst.len(), "{db}.{coll}");
        assert!(
            src == dst,
            "{db}.{coll}: restored documents differ byte for byte"
        );
        assert_eq!(
            index_shapes(&client, db, coll).await,
            index_shapes(&client, &format!("r_{db}"), coll).await,
            "{db}.{coll}: indexes"
        );
    }
    assert_eq!(
        index_shapes(&client, "r_readings", "glucose").await.len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_restore_refuses_non_empty_targets_unless_drop() {
    let nx = NxMongo::start();
    let client = nx.client().await;
    fill(&client, "app", "events", 1_000, 10).await;
    // Incompressible bytes: the stored stream spans many age chunks, so a
    // damaged one near the end is met only after the archive's prelude.
    let blobs: Vec<Document> = (0..4000)
        .map(|i| {
            doc! { "_id": i, "b": Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: (0..2048).map(|_| rand::random::<u8>()).collect() } }
        })
        .collect();
    client
        .database("app")
        .collection::<Document>("blobs")
        .insert_many(blobs)
        .await
        .unwrap();
    let s = setup(&nx.uri(), "");
    let m = gsdr::job::backup(&s.env, "m", &NoProgress)
        .await
        .unwrap()
        .manifest;
    let cat = s.env.catalog_for("m").await.unwrap();
    let req = RestoreRequest {
        to_uri: Some(nx.uri()),
        ns_from: Some("app.*".into()),
        ns_to: Some("copy.*".into()),
        ..Default::default()
    };
    gsdr::job::restore(&s.env, &cat, &m, &req, &NoProgress)
        .await
        .unwrap();
    // Someone writes into the restored copy; a second restore must not mix data in.
    client
        .database("copy")
        .collection::<Document>("events")
        .insert_one(doc! {"_id": "extra"})
        .await
        .unwrap();
    let err = gsdr::job::restore(&s.env, &cat, &m, &req, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    assert!(err.to_string().contains("--drop"), "{err}");
    assert_eq!(
        raw_docs(&client, "copy", "events").await.len(),
        1_001,
        "the refused restore wrote nothing"
    );
    // Restoring over the source itself is refused the same way.
    let over = RestoreRequest {
        to_uri: Some(nx.uri()),
        ..Default::default()
    };
    assert!(gsdr::job::restore(&s.env, &cat, &m, &over, &NoProgress)
        .await
        .is_err());
    // With --drop but a damaged backup: nothing is dropped, because the
    // whole backup is read and checked before the first drop.
    let drop_req = RestoreRequest {
        replace: true,
        ..req.clone()
    };
    let data = s._dir.path().join("store").join(&m.data_key);
    let good = std::fs::read(&data).unwrap();
    assert!(good.len() > 4 * 65_536, "{} bytes", good.len());
    let mut bad = good.clone();
    let at = bad.len() - 1_000;
    bad[at] ^= 1;
    std::fs::write(&data, &bad).unwrap();
    let err = gsdr::job::restore(&s.env, &cat, &m, &drop_req, &NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        raw_docs(&client, "copy", "events").await.len(),
        1_001,
        "nothing dropped for a damaged backup: {err}"
    );
    assert_eq!(raw_docs(&client, "copy", "blobs").await.len(), 4000);
    std::fs::write(&data, &good).unwrap();
    // With --drop the target is replaced by exactly the backup.
    let out = gsdr::job::restore(&s.env, &cat, &m, &drop_req, &NoProgress)
        .await
        .unwrap();
    assert_eq!(out.details["collections"]["app.events"][1], 1_000);
    assert!(raw_docs(&client, "copy", "events").await == raw_docs(&client, "app", "events").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_deep_verify_notices_a_changed_manifest_digest() {
    let nx = NxMongo::start();
    let client = nx.client().await;
    fill(&client, "app", "events", 500, 10).await;
    let s = setup(&nx.uri(), "");
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let cat = s.env.catalog_for("m").await.unwrap();
    let mut m = out.manifest;
    let cfg = match &s.env.policy.sources["m"].engine {
        Some(gsdr::source::EngineConfig::Mongo(c)) => Some(c),
        _ => None,
    };
    let report = gsdr::source::mongo::verify_deep(&s.env, cfg, &cat, &m, &nx.uri(), &NoProgress)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    // The same data checked against a different digest must fail.
    m.consistency.details["collections"]["app.events"]["digest"] = "0".repeat(32).into();
    let report = gsdr::source::mongo::verify_deep(&s.env, cfg, &cat, &m, &nx.uri(), &NoProgress)
        .await
        .unwrap();
    assert!(!report.ok);
    assert!(!report.collections[0].ok);
    assert_eq!(report.collections[0].actual_count, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_include_exclude_filters_select_namespaces() {
    let nx = NxMongo::start();
    let client = nx.client().await;
    fill(&client, "keep", "a", 10, 0).await;
    fill(&client, "keep", "tmp_b", 10, 0).await;
    fill(&client, "drop", "c", 10, 0).await;
    let s = setup(
        &nx.uri(),
        "include = [\"keep.*\"]\nexclude = [\"keep.tmp_*\"]",
    );
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let details: DumpDetails = serde_json::from_value(out.manifest.consistency.details).unwrap();
    assert_eq!(details.collections.keys().collect::<Vec<_>>(), ["keep.a"]);
}

/// A source that kills the server once `after` bytes of the dump were read.
struct KillingSource {
    inner: gsdr::source::mongo::MongoSource,
    child: Arc<Mutex<Option<ChildGuard>>>,
    after: u64,
}

#[async_trait::async_trait]
impl gsdr::source::BackupSource for KillingSource {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn open(&self) -> Result<gsdr::source::SourceStream, gsdr::source::SourceError> {
        let s = self.inner.open().await?;
        Ok(gsdr::source::SourceStream {
            reader: Box::pin(gsdr::stream::progress::Inspect::new(s.reader, {
                let (child, mut left) = (self.child.clone(), self.after);
                move |b: &[u8]| {
                    left = left.saturating_sub(b.len() as u64);
                    if left == 0 {
                        if let Some(mut c) = child.lock().unwrap().take() {
                            c.kill();
                        }
                    }
                }
            })),
            done: s.done,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_server_killed_mid_dump_fails_the_backup_and_lists_nothing() {
    let mut nx = NxMongo::start();
    let client = nx.client().await;
    fill(&client, "app", "events", 20_000, 200).await;
    let s = setup(&nx.uri(), "batch_docs = 100\nsegment_bytes = \"64KiB\"");
    // Move the process into the killer; the guard left behind is a no-op stand-in.
    let child = std::mem::replace(
        &mut nx.child,
        ChildGuard::spawn(std::process::Command::new("true"), "placeholder"),
    );
    let Some(gsdr::source::EngineConfig::Mongo(cfg)) = s.env.policy.sources["m"].engine.clone()
    else {
        panic!("a mongo source");
    };
    let src = KillingSource {
        inner: gsdr::source::mongo::MongoSource::new("m", cfg),
        child: Arc::new(Mutex::new(Some(child))),
        after: 200_000,
    };
    let store = s.env.store("local").await.unwrap();
    let opts = s.env.encode_options().unwrap();
    let res = gsdr::job::backup_with("m", "mongo", &src, store, &opts, &NoProgress).await;
    assert!(
        src.child.lock().unwrap().is_none(),
        "the server was never killed"
    );
    let err = res.expect_err("a dump whose server died must fail");
    assert!(err.to_string().contains("source `m`"), "{err}");
    let cat = s.env.catalog_for("m").await.unwrap();
    assert!(
        cat.list(None).await.unwrap().is_empty(),
        "a failed dump must leave no backup"
    );
}

// ------------------------------------------------------------------ replica set

const RS: &str = "needs the docker-compose replica set: GSDR_TEST_MONGO_RS_URI=mongodb://localhost:27017/?replicaSet=rs0 cargo test --test it mongo_rs -- --ignored";

fn rs_uri() -> String {
    replica_set_uri().unwrap_or_else(|| panic!("GSDR_TEST_MONGO_RS_URI is not set: {RS}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker-compose replica set: GSDR_TEST_MONGO_RS_URI=... cargo test -- --ignored"]
async fn mongo_rs_oplog_is_captured_and_replayed_to_the_consistency_point() {
    let uri = rs_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = format!("gsdr_rs_{}", std::process::id());
    client.database(&db).drop().await.unwrap();
    fill(&client, &db, "c", 20_000, 100).await;
    // Writes keep coming during the dump: the oplog must make the restore consistent.
    let writer = {
        let c = client.database(&db).collection::<Document>("c");
        tokio::spawn(async move {
            for i in 0..2_000 {
                c.insert_one(doc_of(1_000_000 + i, 10)).await.unwrap();
            }
        })
    };
    let s = setup(&uri, "read_preference = \"secondary\"");
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    writer.await.unwrap();
    let details: DumpDetails =
        serde_json::from_value(out.manifest.consistency.details.clone()).unwrap();
    assert!(details.oplog);
    assert!(details.replica_set.is_some());
    // The one-member fix: every read went to one named member, a secondary
    // as the read preference asks.
    let member = details.member.clone().expect("the dump names its member");
    let pinned =
        mongodb::Client::with_uri_str(format!("mongodb://{member}/?directConnection=true"))
            .await
            .unwrap();
    let hello = pinned
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    assert_eq!(hello.get_str("me").unwrap(), member);
    assert_eq!(hello.get_bool("secondary").ok(), Some(true), "{hello:?}");
    let end = details.oplog_end.unwrap();
    assert_eq!(
        out.manifest
            .consistency
            .consistency_time
            .unwrap()
            .timestamp(),
        end.0 as i64
    );
    let cat = s.env.catalog_for("m").await.unwrap();
    let req = RestoreRequest {
        to_uri: Some(uri.clone()),
        ns_from: Some(format!("{db}.*")),
        ns_to: Some(format!("{db}_r.*")),
        ..Default::default()
    };
    let r = gsdr::job::restore(&s.env, &cat, &out.manifest, &req, &NoProgress)
        .await
        .unwrap();
    assert!(r.details["oplog_applied"].as_u64().unwrap() > 0 || details.oplog_entries == 0);
    // Every document written up to the consistency point is in the restore.
    let src_n = client
        .database(&db)
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    let dst_n = client
        .database(&format!("{db}_r"))
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert!(
        dst_n >= 20_000 && dst_n <= src_n,
        "restored {dst_n} of {src_n}"
    );
    client.database(&db).drop().await.unwrap();
    client.database(&format!("{db}_r")).drop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker-compose replica set: GSDR_TEST_MONGO_RS_URI=... cargo test -- --ignored"]
async fn mongo_rs_archive_is_readable_by_mongorestore() {
    let uri = rs_uri();
    let mongorestore = crate::support::require_program(
        "mongorestore",
        "install the MongoDB database tools (https://www.mongodb.com/try/download/database-tools)",
    );
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = format!("gsdr_mr_{}", std::process::id());
    fill(&client, &db, "c", 1_000, 10).await;
    let s = setup(&uri, &format!("include = [\"{db}.*\"]"));
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let cat = s.env.catalog_for("m").await.unwrap();
    let dir = tempdir();
    let file = dir.path().join("dump.archive");
    gsdr::job::restore_raw_to_file(&s.env, &cat, &out.manifest, &file, false, &NoProgress)
        .await
        .unwrap();
    let st = std::process::Command::new(mongorestore)
        .arg(format!("--uri={uri}"))
        .arg(format!("--archive={}", file.display()))
        .arg(format!("--nsFrom={db}.*"))
        .arg(format!("--nsTo={db}_mr.*"))
        .status()
        .unwrap();
    assert!(st.success());
    let n = client
        .database(&format!("{db}_mr"))
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 1_000);
    client.database(&db).drop().await.unwrap();
    client.database(&format!("{db}_mr")).drop().await.unwrap();
}

/// Continuous capture on the docker-compose replica set: the capture tails
/// `local.oplog.rs` of the dump's member with a tailable cursor while rounds
/// of writes (one of them a multi-document transaction over two
/// collections) arrive; restores to three times between the rounds give
/// exactly the documents of those times, the transaction whole or not at all.
/// Needs a real `mongod` (nx-27017 has no oplog or transactions): `RS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the docker-compose replica set: GSDR_TEST_MONGO_RS_URI=... cargo test -- --ignored"]
async fn mongo_rs_continuous_slices_restore_to_times_between_rounds() {
    let uri = rs_uri();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = format!("gsdr_pitr_{}", std::process::id());
    client.database(&db).drop().await.unwrap();
    fill(&client, &db, "c", 1_000, 10).await;
    let s = setup(
        &uri,
        &format!("include = [\"{db}.*\"]\noplog = \"continuous\"\nslice = \"1s\""),
    );
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let cat = s.env.catalog_for("m").await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let capture = gsdr::job::capture::run(&s.env, "m", cancel.clone());
    let store = cat.store().clone();
    let driver = async {
        let count = |coll: &'static str| {
            let c = client.database(&db).collection::<Document>(coll);
            async move { c.count_documents(doc! {}).await.unwrap() }
        };
        // (point in time, documents in `c`, documents in `t`) between rounds:
        // oplog times are whole seconds, so each point is a second away from
        // the writes on either side of it.
        let mut points = Vec::new();
        for round in 0..4i64 {
            if round == 2 {
                let mut session = client.start_session().await.unwrap();
                session.start_transaction().await.unwrap();
                let c = client.database(&db).collection::<Document>("c");
                let t = client.database(&db).collection::<Document>("t");
                c.insert_one(doc_of(2_000_000, 10))
                    .session(&mut session)
                    .await
                    .unwrap();
                t.insert_one(doc! {"_id": 1, "round": round})
                    .session(&mut session)
                    .await
                    .unwrap();
                session.commit_transaction().await.unwrap();
            } else {
                let c = client.database(&db).collection::<Document>("c");
                for i in 0..100 {
                    c.insert_one(doc_of(1_000_000 + round * 1_000 + i, 10))
                        .await
                        .unwrap();
                }
                c.delete_one(doc! {"_id": round}).await.unwrap();
            }
            tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
            points.push((chrono::Utc::now(), count("c").await, count("t").await));
            tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
        }
        // Wait until the slices reach the last point, then stop the capture.
        let last = points.last().unwrap().0.timestamp();
        let mut waited = 0;
        loop {
            let sl = gsdr::source::mongo::slices::list(store.as_ref(), "m")
                .await
                .unwrap();
            if sl.last().is_some_and(|l| l.end.time as i64 >= last) {
                for w in sl.windows(2) {
                    assert_eq!(w[0].end, w[1].from, "the slices chain");
                }
                break;
            }
            waited += 1;
            assert!(waited < 300, "no slice reached {last} within 30 s");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        cancel.cancel();
        points
    };
    let (rep, points) = tokio::join!(capture, driver);
    let rep = rep.unwrap();
    assert!(rep.objects >= 1, "{rep:?}");
    for (i, (at, want_c, want_t)) in points.iter().enumerate() {
        let to = format!("{db}_r{i}");
        let req = RestoreRequest {
            to_uri: Some(uri.clone()),
            ns_from: Some(format!("{db}.*")),
            ns_to: Some(format!("{to}.*")),
            target_time: Some(*at),
            ..Default::default()
        };
        let m = cat.newest_before("m", None, req.target_time).await.unwrap();
        assert_eq!(m.id, out.manifest.id);
        gsdr::job::restore(&s.env, &cat, &m, &req, &NoProgress)
            .await
            .unwrap();
        let got = |coll: &'static str| {
            let c = client.database(&to).collection::<Document>(coll);
            async move { c.count_documents(doc! {}).await.unwrap() }
        };
        assert_eq!(got("c").await, *want_c, "`c` restored to point {i} ({at})");
        assert_eq!(
            got("t").await,
            *want_t,
            "`t` restored to point {i} ({at}): the transaction is whole or absent"
        );
        client.database(&to).drop().await.unwrap();
    }
    client.database(&db).drop().await.unwrap();
}

/// The recorded oplog fixture (`tests/data/mongo-oplog/fixture-5.0-7.0.json`:
/// entry shapes of MongoDB 5.0–7.0) as documents.
fn oplog_fixture() -> Vec<Document> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mongo-oplog/fixture-5.0-7.0.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| match Bson::try_from(e.clone()).unwrap() {
            Bson::Document(d) => d,
            other => panic!("not a document: {other:?}"),
        })
        .collect()
}

/// `d` with its keys sorted at every level, for comparisons where field
/// order is the server's business.
fn sorted(d: &Document) -> Document {
    let mut keys: Vec<&String> = d.keys().collect();
    keys.sort();
    let mut out = Document::new();
    for k in keys {
        let v = match d.get(k).unwrap() {
            Bson::Document(x) => Bson::Document(sorted(x)),
            other => other.clone(),
        };
        out.insert(k.clone(), v);
    }
    out
}

/// The fixture replayed into nx-27017 under a namespace mapping gives the
/// documents the entries describe: transactions (committed, partial chains,
/// prepared then aborted), `$v: 2` diffs with an array truncation, a
/// replacement, a delete, index builds and a rename under the mapping. Time-series and
/// views (database `metrics`) need a real mongod and are left out here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_oplog_fixture_replays_into_nx_under_a_namespace_mapping() {
    use gsdr::source::mongo::oplog::{ReplayOp, Replayer};
    let nx = NxMongo::start();
    let client = nx.client().await;
    let mut r = Replayer::new(Some("shop.*".into()), Some("shop_r.*".into()), |ns| {
        ns.starts_with("shop.")
    });
    let mut applied = 0;
    for e in oplog_fixture() {
        for op in r.plan(&e).unwrap() {
            // nx-27017 answers `renameCollection` on `admin` (where a real
            // mongod requires it) with ok and does nothing; on the database
            // itself it renames. The mapped names are what is checked.
            let op = match op {
                ReplayOp::Command { db, cmd, tolerate } if cmd.contains_key("renameCollection") => {
                    assert_eq!(db, "admin");
                    let to_db = cmd
                        .get_str("to")
                        .unwrap()
                        .split('.')
                        .next()
                        .unwrap()
                        .to_string();
                    ReplayOp::Command {
                        db: to_db,
                        cmd,
                        tolerate,
                    }
                }
                other => other,
            };
            op.apply(&client)
                .await
                .unwrap_or_else(|err| panic!("{}: {err}", op.describe()));
            applied += 1;
        }
    }
    assert!(applied > 20, "{applied} commands");
    assert_eq!(r.pending_transactions(), 0);
    let orders: Vec<Document> = client
        .database("shop_r")
        .collection::<Document>("orders")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // The array diff truncated `tags` to 2; its `$set` of `tags.1` ("B") is
    // ignored by nx-27017 (no array-index paths): that value needs a real
    // mongod (the unit test checks the command sent).
    let tags = orders[0].get_array("tags").unwrap();
    assert_eq!(tags.len(), 2);
    assert_eq!(tags[0], Bson::String("a".into()));
    let got: Vec<Document> = orders
        .iter()
        .map(|d| {
            let mut d = d.clone();
            d.remove("tags");
            sorted(&d)
        })
        .collect();
    let want: Vec<Document> = [
        doc! {"_id": 1, "item": "pen", "qty": 8, "addr": {"city": "Bergen"}, "price": 2.5},
        doc! {"_id": 3, "item": "cap", "qty": 10},
        doc! {"_id": 4, "item": "mug", "qty": 1},
        doc! {"_id": 5, "item": "bag"},
        doc! {"_id": 6, "item": "box"},
        doc! {"_id": 8, "item": "lid"},
    ]
    .iter()
    .map(sorted)
    .collect();
    assert_eq!(got, want);
    let names: Vec<String> = client
        .database("shop_r")
        .run_cursor_command(doc! {"listCollections": 1})
        .await
        .unwrap()
        .try_collect::<Vec<Document>>()
        .await
        .unwrap()
        .iter()
        .map(|c| c.get_str("name").unwrap().to_string())
        .collect();
    assert!(names.contains(&"archived".to_string()), "{names:?}");
    assert!(!names.contains(&"tmp".to_string()), "{names:?}");
    assert!(!names.contains(&"scratch".to_string()), "{names:?}");
    let archived: Vec<Document> = client
        .database("shop_r")
        .collection::<Document>("archived")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(archived, vec![doc! {"_id": 1, "v": "t"}]);
    let shapes = index_shapes(&client, "shop_r", "orders").await;
    assert!(
        shapes.iter().any(|s| s.contains("item")),
        "commitIndexBuild created the item index: {shapes:?}"
    );
    // Nothing was written under the source names.
    let dbs = client.list_database_names().await.unwrap();
    assert!(!dbs.contains(&"shop".to_string()), "{dbs:?}");
}

/// Appends an entry to the test hook's oplog-shaped collection (`ts` as the
/// int64 `t << 32 | 1`: nx-27017 has no Timestamp type).
async fn fake_oplog(client: &mongodb::Client, t: i64, mut entry: Document) {
    entry.insert("ts", (t << 32) | 1);
    entry.insert("t", 1i64);
    entry.insert("v", 2);
    entry.insert("wall", DateTime::from_millis(t * 1000));
    client
        .database("gsdrtest")
        .collection::<Document>("oplog")
        .insert_one(entry)
        .await
        .unwrap();
}

async fn ids_of(client: &mongodb::Client, db: &str) -> Vec<(i32, i32)> {
    let docs: Vec<Document> = client
        .database(db)
        .collection::<Document>("items")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    // Sorted here: nx-27017's `sort` orders upserted documents after the
    // ones it held already, whatever their `_id`.
    let mut ids: Vec<(i32, i32)> = docs
        .iter()
        .map(|d| (d.get_i32("_id").unwrap(), d.get_i32("v").unwrap()))
        .collect();
    ids.sort_unstable();
    ids
}

/// Continuous capture on nx-27017 through the polled fallback over an
/// oplog-shaped collection (`oplog_namespace`, the test hook): a dump, then
/// slices stored while entries arrive, then restores to two times in the
/// middle give exactly the documents of those times. A real `mongod` tails
/// `local.oplog.rs` with a tailable cursor instead (`mongo_rs_*` tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_continuous_capture_slices_and_restores_to_a_time_on_nx() {
    let nx = NxMongo::start();
    let client = nx.client().await;
    let base = chrono::Utc::now().timestamp() - 3600;
    let items = client.database("app").collection::<Document>("items");
    for i in 1..=3 {
        items.insert_one(doc! {"_id": i, "v": i}).await.unwrap();
        fake_oplog(
            &client,
            base + i as i64,
            doc! {"op": "i", "ns": "app.items", "o": {"_id": i, "v": i}},
        )
        .await;
    }
    // A large transaction still open when the dump starts: its first part
    // (`partialTxn`) is the dump's oplog start, its commit comes in a slice.
    let lsid = doc! {"id": Binary { subtype: mongodb::bson::spec::BinarySubtype::Uuid, bytes: vec![7; 16] }};
    fake_oplog(
        &client,
        base + 4,
        doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid.clone(), "txnNumber": 1i64,
              "o": {"applyOps": [{"op": "i", "ns": "app.items", "o": {"_id": 50, "v": 50}}], "partialTxn": true}},
    )
    .await;
    let nx_bin =
        crate::support::require_program("nx-27017", "pip install nx-27017 into $GSDR_TEST_VENV");
    let scratch_dir = tempdir();
    let s = setup(
        &nx.uri(),
        &format!(
            "include = [\"app.*\"]\noplog = \"continuous\"\nslice = \"1s\"\noplog_namespace = \"gsdrtest.oplog\"\n\
             [drills]\nmongo_scratch_argv = [\"{}\", \"--db\", \"memory\", \"--host\", \"127.0.0.1\", \"-p\", \"{{port}}\", \"--log-file\", \"{{dir}}/nx.log\", \"--pid-file\", \"{{dir}}/nx.pid\"]",
            nx_bin.display()
        ),
    );
    let out = gsdr::job::backup(&s.env, "m", &NoProgress).await.unwrap();
    let details: DumpDetails =
        serde_json::from_value(out.manifest.consistency.details.clone()).unwrap();
    assert!(
        details.oplog,
        "the test hook's oplog is captured by the dump"
    );
    assert_eq!(details.oplog_end, Some(((base + 4) as u32, 1)));
    let cat = s.env.catalog_for("m").await.unwrap();
    let store = cat.store().clone();
    let reached = |want: i64| {
        let store = store.clone();
        async move {
            for _ in 0..300 {
                let sl = gsdr::source::mongo::slices::list(store.as_ref(), "m")
                    .await
                    .unwrap();
                if sl.last().is_some_and(|l| l.end.time as i64 >= want) {
                    return sl;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("no slice reached {want} within 30 s");
        }
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let capture = gsdr::job::capture::run(&s.env, "m", cancel.clone());
    let driver = async {
        for i in 4..=6 {
            fake_oplog(
                &client,
                base + 6 + i as i64,
                doc! {"op": "i", "ns": "app.items", "o": {"_id": i, "v": i}},
            )
            .await;
        }
        reached(base + 12).await;
        fake_oplog(
            &client,
            base + 19,
            doc! {"op": "c", "ns": "admin.$cmd", "lsid": lsid.clone(), "txnNumber": 1i64,
            "o": {"applyOps": [{"op": "i", "ns": "app.items", "o": {"_id": 51, "v": 51}}]}},
        )
        .await;
        fake_oplog(
            &client,
            base + 20,
            doc! {"op": "i", "ns": "app.items", "o": {"_id": 7, "v": 7}},
        )
        .await;
        fake_oplog(&client, base + 21, doc! {"op": "u", "ns": "app.items", "o": {"$v": 2, "diff": {"u": {"v": 100}}}, "o2": {"_id": 1}}).await;
        fake_oplog(
            &client,
            base + 22,
            doc! {"op": "i", "ns": "app.items", "o": {"_id": 8, "v": 8}},
        )
        .await;
        fake_oplog(
            &client,
            base + 23,
            doc! {"op": "d", "ns": "app.items", "o": {"_id": 2}},
        )
        .await;
        let sl = reached(base + 23).await;
        cancel.cancel();
        sl
    };
    let (rep, sl) = tokio::join!(capture, driver);
    let rep = rep.unwrap();
    assert!(rep.objects >= 2, "{rep:?}");
    assert!(sl.len() >= 2);
    // The slices chain from the dump's oplog end.
    assert_eq!(sl[0].from.time as i64, base + 4);
    for w in sl.windows(2) {
        assert_eq!(w[0].end, w[1].from);
    }
    // Restore to a time between the two bursts, then to one inside the second.
    for (db, at, want) in [
        (
            "rone",
            base + 15,
            vec![(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6)],
        ),
        (
            "rtwo",
            base + 21,
            vec![
                (1, 100),
                (2, 2),
                (3, 3),
                (4, 4),
                (5, 5),
                (6, 6),
                (7, 7),
                (50, 50),
                (51, 51),
            ],
        ),
        (
            "rall",
            base + 23,
            vec![
                (1, 100),
                (3, 3),
                (4, 4),
                (5, 5),
                (6, 6),
                (7, 7),
                (8, 8),
                (50, 50),
                (51, 51),
            ],
        ),
    ] {
        let req = RestoreRequest {
            to_uri: Some(nx.uri()),
            ns_from: Some("app.*".into()),
            ns_to: Some(format!("{db}.*")),
            target_time: chrono::DateTime::from_timestamp(at, 500_000_000),
            ..Default::default()
        };
        let m = cat.newest_before("m", None, req.target_time).await.unwrap();
        assert_eq!(m.id, out.manifest.id);
        let r = gsdr::job::restore(&s.env, &cat, &m, &req, &NoProgress)
            .await
            .unwrap();
        assert!(r.details["slices_replayed"].as_u64().unwrap() >= 1);
        assert_eq!(ids_of(&client, db).await, want, "restore to {at}");
    }
    // Past the slices' end: refused, naming how far they reach.
    let req = RestoreRequest {
        to_uri: Some(nx.uri()),
        ns_from: Some("app.*".into()),
        ns_to: Some("rlate.*".into()),
        target_time: chrono::DateTime::from_timestamp(base + 100, 0),
        ..Default::default()
    };
    let e = gsdr::job::restore(&s.env, &cat, &out.manifest, &req, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("reaches only"), "{e}");
    // The log archive sees how far a restore of the dump reaches.
    let engine = gsdr::source::mongo::engine("m", None).unwrap();
    let reach = engine
        .log_archive()
        .unwrap()
        .reaches(&store, &out.manifest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reach.timestamp(), base + 23);

    // A drill takes `pitr_before` for MongoDB too: the dump, then the slices
    // up to the scenario's point, into a scratch server.
    let scenario = gsdr::drill::Scenario::parse(
        r#"
name = "mongo-pitr"
title = "MongoDB to a point in time"
description = "The dump and its oplog slices up to just before the incident."
pitr_before = "2s"
[[steps]]
name = "restore-mongo"
kind = "restore_mongo"
source = "m"
[[steps]]
name = "items"
kind = "mongo_count"
source = "m"
collection = "app.items"
min = 1
after = ["restore-mongo"]
"#,
        Path::new("mongo-pitr.toml"),
    )
    .unwrap();
    let mut opts = gsdr::drill::RunOptions::drill();
    opts.scratch_root = Some(scratch_dir.path().to_path_buf());
    opts.store_report = false;
    for (incident_at, want) in [(base + 17, 6), (base + 25, 9)] {
        opts.target_time = chrono::DateTime::from_timestamp(incident_at, 500_000_000);
        let r = gsdr::drill::run(&s.env, &scenario, &opts, &NoProgress)
            .await
            .unwrap()
            .report;
        assert!(r.passed, "{:?}", r.failures);
        let items = r.steps.iter().find(|st| st.name == "items").unwrap();
        assert_eq!(
            items.detail,
            format!("`app.items`: {want} documents (at least 1 expected)"),
            "incident at base+{}: the slices up to 2 s before it",
            incident_at - base
        );
    }
}
