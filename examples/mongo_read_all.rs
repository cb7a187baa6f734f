//! Baseline for `scripts/bench-mongo.sh`: the bare driver loop gsdr's dump is
//! compared with. `read URI [CONCURRENCY]` reads every collection of every
//! database but `admin`, `local` and `config` as raw BSON and discards it
//! (CONCURRENCY collections at once), printing `docs= bytes= secs=`.
//! `fill URI DOCS PAD` loads DOCS documents (~PAD bytes of padding each) into
//! four collections of two databases.

use std::time::Instant;

use futures::StreamExt;
use mongodb::bson::{doc, Document, RawDocumentBuf};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: mongo_read_all read URI [CONCURRENCY] | fill URI DOCS PAD";
    let (mode, uri) = (args.get(1).ok_or(usage)?, args.get(2).ok_or(usage)?);
    let client = mongodb::Client::with_uri_str(uri).await?;
    match mode.as_str() {
        "fill" => {
            let docs: i64 = args.get(3).ok_or(usage)?.parse()?;
            let pad: usize = args.get(4).ok_or(usage)?.parse()?;
            let targets = [
                ("bench_a", "c1"),
                ("bench_a", "c2"),
                ("bench_b", "c3"),
                ("bench_b", "c4"),
            ];
            for (n, (db, coll)) in targets.iter().enumerate() {
                let c = client.database(db).collection::<Document>(coll);
                let per = docs / targets.len() as i64;
                let mut i = 0;
                while i < per {
                    let batch: Vec<Document> = (i..(i + 5000).min(per))
                        .map(|k| doc! {"_id": k, "n": n as i32, "v": k * 7, "s": "x".repeat(pad), "t": mongodb::bson::DateTime::now()})
                        .collect();
                    c.insert_many(batch).await?;
                    i += 5000;
                }
            }
            println!("filled {docs} documents");
        }
        "read" => {
            let conc: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(4);
            let start = Instant::now();
            let mut colls = Vec::new();
            for db in client.list_database_names().await? {
                if matches!(db.as_str(), "admin" | "local" | "config") {
                    continue;
                }
                let mut cur = client
                    .database(&db)
                    .run_cursor_command(doc! {"listCollections": 1})
                    .await?;
                while let Some(c) = cur.next().await {
                    let c = c?;
                    if c.get_str("type").unwrap_or("collection") == "collection" {
                        colls.push((db.clone(), c.get_str("name")?.to_string()));
                    }
                }
            }
            let results: Vec<Result<(u64, u64), mongodb::error::Error>> =
                futures::stream::iter(colls)
                    .map(|(db, coll)| {
                        let client = client.clone();
                        async move {
                            let mut cur = client
                                .database(&db)
                                .collection::<RawDocumentBuf>(&coll)
                                .find(doc! {})
                                .batch_size(1000)
                                .await?;
                            let (mut n, mut b) = (0u64, 0u64);
                            while cur.advance().await? {
                                n += 1;
                                b += cur.current().as_bytes().len() as u64;
                            }
                            Ok((n, b))
                        }
                    })
                    .buffer_unordered(conc)
                    .collect()
                    .await;
            let (mut n, mut b) = (0, 0);
            for r in results {
                let (dn, db) = r?;
                n += dn;
                b += db;
            }
            println!(
                "docs={n} bytes={b} secs={:.3}",
                start.elapsed().as_secs_f64()
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
