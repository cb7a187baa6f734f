//! Fills a target with synthetic backups for `scripts/bench-catalog.sh`:
//!
//! `catalog_fill TARGET SOURCE FIRST COUNT WAL KEY_FILE`
//!
//! writes backups `FIRST..FIRST+COUNT` of `SOURCE` (a signed manifest, as
//! gsdr writes it, and a 3-byte data object each; one an hour back from
//! 2026-12-01) and `WAL` WAL objects (data and sidecar pairs) under
//! `SOURCE/wal/`, straight into the store, without the index (as an older
//! gsdr would: the first `gsdr list` builds it). TARGET is a folder (files
//! written directly, no fsync: a benchmark fixture) or a `.toml` file
//! holding one `[targets.NAME]` body of kind `s3` (written 64 at a time).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{Duration, TimeZone, Utc};
use futures::stream::{self, StreamExt};
use gsdr::catalog::Manifest;
use gsdr::signing::Signer;
use gsdr::storage::{PutCondition, Store, TargetConfig};

/// Writes in flight against S3.
const CONCURRENCY: usize = 64;

fn manifest(source: &str, n: u64, signer: &Signer) -> Manifest {
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() - Duration::hours(n as i64);
    let id = format!("{}-{:06x}", at.format("%Y%m%dT%H%M%SZ"), n & 0xff_ffff);
    let mut m: Manifest = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "id": id, "source": source, "engine": "command", "kind": "stdout",
        "started_at": at.to_rfc3339(), "finished_at": (at + Duration::seconds(42)).to_rfc3339(),
        "consistency": {"consistency_time": (at + Duration::seconds(40)).to_rfc3339()},
        "raw_bytes": 1_048_576 + n, "raw_sha256": format!("{:064x}", n),
        "stored_bytes": 3, "stored_sha256": format!("{:064x}", n + 1),
        "data_key": gsdr::layout::backup_data(source, "stdout", &id), "zstd_level": 3,
        "recipients": [
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
            "age1lggyhqrw2nlhcxprm67z43rta597azn8gknawjehu9d9dl0jq3yqqvfafg"
        ],
        "gsdr_version": env!("CARGO_PKG_VERSION")
    }))
    .expect("a valid manifest");
    m.sign(signer);
    m
}

/// Every object to write: key and body.
fn objects(
    source: &str,
    first: u64,
    count: u64,
    wal: u64,
    signer: &Signer,
) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for n in first..first + count {
        let m = manifest(source, n, signer);
        out.push((m.data_key.clone(), Bytes::from_static(b"abc")));
        out.push((
            m.manifest_key(),
            serde_json::to_vec_pretty(&m).expect("serialises").into(),
        ));
    }
    for i in 0..wal / 2 {
        let name = format!("00000001{:08X}{:08X}", i >> 8, i & 0xff);
        out.push((
            gsdr::layout::wal_data(source, &name),
            Bytes::from_static(b"w"),
        ));
        out.push((
            gsdr::layout::wal_sidecar(source, &name),
            Bytes::from_static(b"{}"),
        ));
    }
    out
}

fn usage() -> ! {
    eprintln!("usage: catalog_fill TARGET SOURCE FIRST COUNT WAL KEY_FILE");
    std::process::exit(2)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, source, first, count, wal, key] = args.as_slice() else {
        usage()
    };
    let (first, count, wal): (u64, u64, u64) = (first.parse()?, count.parse()?, wal.parse()?);
    let signer = Signer::read(Path::new(key))?;
    let objects = objects(source, first, count, wal, &signer);
    let n = objects.len();
    let started = std::time::Instant::now();
    if target.ends_with(".toml") {
        let cfg: TargetConfig = toml::from_str(&std::fs::read_to_string(target)?)?;
        let store: Arc<dyn Store> = gsdr::storage::open_target("bench", &cfg, 1 << 30).await?;
        let mut puts = stream::iter(objects.into_iter().map(|(k, b)| {
            let store = store.clone();
            async move { store.put_small(&k, b, PutCondition::Overwrite).await }
        }))
        .buffer_unordered(CONCURRENCY);
        while let Some(r) = puts.next().await {
            r?;
        }
    } else {
        let root = PathBuf::from(target);
        for (k, b) in objects {
            let p = root.join(&k);
            std::fs::create_dir_all(p.parent().expect("keys have folders"))?;
            std::fs::write(p, b)?;
        }
    }
    eprintln!(
        "catalog_fill: {n} objects into {target} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
