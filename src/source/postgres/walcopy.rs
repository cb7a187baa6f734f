//! Off-site copies of archived PostgreSQL WAL (the log archive's part of `gsdr replicate`).
//!
//! A base backup is useless without the WAL after it (it is taken with
//! `-X none`), so the off-site copy of a postgres source must hold its WAL
//! too, or a region-loss restore cannot even reach consistency. The WAL
//! objects are copied as they are stored (already compressed and
//! encrypted): per file the data object first, then its sidecar, so an
//! off-site sidecar always has its object; `cluster.json` (the cluster's
//! identity) too. Only keys absent off-site are written, with two
//! exceptions that cannot lose data: a sidecar that differs only by the
//! stored size `wal-push` records after the upload is brought up to date, and
//! a data object whose primary copy is confirmed by that recorded size
//! replaces an off-site copy of another size (a zero-byte or short object).
//! Any other size difference is reported, never replaced.
//!
//! Memory: [`CONCURRENCY`] streamed copies at once, each bounded by the
//! off-site store's upload buffers.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::walname::partial_of_key;
use crate::layout;
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::LogSweep;
use crate::storage::{ObjectMeta, PutOptions, Store};

/// WAL objects copied at once.
pub const CONCURRENCY: usize = 4;

/// What one WAL sweep of a source did.
pub type WalSweep = LogSweep;

/// The WAL objects of `source` on a store, by key.
async fn wal_objects(store: &Arc<dyn Store>, source: &str) -> Result<BTreeMap<String, ObjectMeta>> {
    Ok(store
        .list(&layout::wal_prefix(source))
        .await?
        .into_iter()
        .map(|o| (o.key.clone(), o))
        .collect())
}

/// Replication order: data objects before their sidecars (an off-site
/// sidecar then always has its object), `cluster.json` last.
fn order(key: &str) -> (u8, &str) {
    let rank = if key.ends_with(layout::WAL_DATA_SUFFIX) {
        0
    } else if key.ends_with(&format!("/{}", layout::WAL_CLUSTER_FILE)) {
        2
    } else {
        1
    };
    (rank, key)
}

/// What the off-site copy lacks of `source`'s WAL: keys missing there, and
/// keys whose off-site size differs (`Some(off-site size)`).
async fn differences(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
) -> Result<Vec<(ObjectMeta, Option<u64>)>> {
    let have = wal_objects(offsite, source).await?;
    let mut out: Vec<(ObjectMeta, Option<u64>)> = wal_objects(primary, source)
        .await?
        .into_values()
        .filter_map(|o| match have.get(&o.key) {
            None => Some((o, None)),
            Some(h) if h.size != o.size => {
                let size = h.size;
                Some((o, Some(size)))
            }
            Some(_) => None,
        })
        .collect();
    out.sort_by(|a, b| order(&a.0.key).cmp(&order(&b.0.key)));
    Ok(out)
}

/// Copies one object as stored, checking its size.
async fn copy_object(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    o: &ObjectMeta,
) -> Result<u64> {
    let mut body = primary.get_stream(&o.key).await?;
    let put = offsite
        .put_stream(
            &o.key,
            &mut body,
            PutOptions {
                size_hint: Some(o.size),
                // Only keys absent off-site get here (see `differences`).
                if_absent: false,
            },
        )
        .await?;
    if put.size != o.size {
        return Err(Error::Invalid(format!(
            "off-site copy of `{}` in {} stored {} bytes, the primary holds {}",
            o.key,
            offsite.describe(),
            put.size,
            o.size
        )));
    }
    Ok(o.size)
}

/// An off-site WAL object of another size than the primary's: replaced when
/// that provably loses nothing (see the module doc), else an error.
async fn reconcile(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
    o: &ObjectMeta,
    off_size: u64,
) -> Result<u64> {
    use super::wal::{file_of_key, WalSidecar};
    const MAX: u64 = 64 << 10;
    let refused = || {
        Error::Invalid(format!(
            "the off-site `{}` is {off_size} bytes, the primary's {}: not overwritten; check which is right",
            o.key, o.size
        ))
    };
    let read = |store: &Arc<dyn Store>, key: String| {
        let store = store.clone();
        async move {
            let (b, _) = store.get_small(&key, MAX).await?;
            serde_json::from_slice::<WalSidecar>(&b)
                .map_err(|e| Error::Invalid(format!("sidecar `{key}` is unreadable: {e}")))
        }
    };
    match file_of_key(source, &o.key) {
        Some((_, false)) => {
            let (p, s) = (
                read(primary, o.key.clone()).await?,
                read(offsite, o.key.clone()).await?,
            );
            if p.raw_sha256 != s.raw_sha256 || p.raw_bytes != s.raw_bytes {
                return Err(refused());
            }
            let (body, _) = primary.get_small(&o.key, MAX).await?;
            offsite
                .put_small(&o.key, body, crate::storage::PutCondition::Overwrite)
                .await?;
            Ok(o.size)
        }
        Some((name, true)) => {
            let p = read(primary, layout::wal_sidecar(source, name)).await?;
            if p.stored_bytes != Some(o.size) {
                return Err(refused());
            }
            tracing::warn!(event = "wal_offsite_object_replaced", key = %o.key, offsite_bytes = off_size, primary_bytes = o.size);
            offsite.delete(&o.key).await?;
            copy_object(primary, offsite, o).await
        }
        None => Err(refused()),
    }
}

/// Off-site copies, at once, of one WAL file just stored on the primary
/// (`wal-push`, the stream capture): its data object, then its sidecar, and
/// `cluster.json` while the off-site archive has none. Keys already off-site
/// at the primary's size are left alone; another size goes through the
/// sweep's [`reconcile`]. Returns the bytes copied.
pub async fn copy_file(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
    name: &str,
) -> Result<u64> {
    let mut copied = 0;
    for key in [
        layout::wal_data(source, name),
        layout::wal_sidecar(source, name),
        layout::wal_cluster(source),
    ] {
        let Some(o) = primary.head(&key).await? else {
            return Err(Error::Invalid(format!(
                "`{key}` is not in {} right after it was stored there",
                primary.describe()
            )));
        };
        copied += match offsite.head(&key).await? {
            None => copy_object(primary, offsite, &o).await?,
            Some(h) if h.size == o.size => 0,
            Some(h) if key.ends_with(layout::WAL_CLUSTER_FILE) => {
                return Err(Error::Invalid(format!(
                    "the off-site `{key}` is {} bytes, the primary's {}: two clusters' archives; check which is right",
                    h.size, o.size
                )))
            }
            Some(h) => reconcile(primary, offsite, source, &o, h.size).await?,
        };
    }
    Ok(copied)
}

/// Copies WAL file `name`, just stored in `ctx`, to the off-site target
/// `offsite` (name, store) at once, so the off-site copy keeps the primary's
/// pace. A failure is a warning (`wal_offsite_copy_failed`, and
/// `wal_replicated` with `failed`): the replicate sweep catches up.
/// Returns the bytes copied (`None`: failed or no off-site target).
pub async fn copy_offsite(
    ctx: &super::wal::WalArchive,
    offsite: Option<(&str, &Arc<dyn Store>)>,
    name: &str,
) -> Option<u64> {
    let (target, store) = offsite?;
    let r = copy_file(&ctx.store, store, &ctx.source, name).await;
    let (files, bytes, failed) = match &r {
        Ok(b) => (u64::from(*b > 0), *b, 0),
        Err(e) => {
            tracing::warn!(event = "wal_offsite_copy_failed", source = %ctx.source, name, target, error = %e, "the replicate sweep copies it later");
            (0, 0, 1)
        }
    };
    if files > 0 || failed > 0 {
        crate::metrics::events::WalReplicated {
            source: &ctx.source,
            files,
            bytes,
            failed,
        }
        .emit();
    }
    r.ok()
}

/// Off-site copy of the streamed partial of segment `name` just stored on
/// the primary (replacing the previous one). Returns the bytes copied.
pub async fn copy_partial(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
    name: &str,
) -> Result<u64> {
    let key = layout::wal_stream_partial(source, name);
    match primary.head(&key).await? {
        Some(o) => copy_object(primary, offsite, &o).await,
        // Replaced by the complete segment meanwhile: nothing to copy.
        None => Ok(0),
    }
}

/// Refuses to copy the sidecar `key` of `source` off-site unless `trust`
/// accepts it (nothing is read when the policy has no verify keys): a
/// forgery on the primary must not reach the off-site copy, the one a
/// region-loss restore trusts.
async fn check_sidecar(
    primary: &Arc<dyn Store>,
    source: &str,
    key: &str,
    trust: &crate::signing::Trust,
) -> Result<()> {
    use super::wal::{file_of_key, untrusted_problem, WalSidecar};
    let Some((name, false)) = file_of_key(source, key) else {
        return Ok(());
    };
    if trust.keys.is_empty() {
        return Ok(());
    }
    let (b, _) = primary.get_small(key, 64 << 10).await?;
    let sc: WalSidecar = serde_json::from_slice(&b)
        .map_err(|e| Error::Invalid(format!("sidecar `{key}` is unreadable: {e}")))?;
    sc.authenticate(source, key, trust).map_err(|e| {
        Error::Invalid(format!(
            "WAL file `{name}` of source `{source}` in {} is not copied off-site: {}",
            primary.describe(),
            untrusted_problem(&e)
        ))
    })
}

/// Copies every WAL object of `source` the off-site store lacks. Objects
/// that exist off-site with another size are reported as failed, unless
/// replacing them provably loses nothing ([`reconcile`]); sidecars `trust`
/// refuses are reported as failed and not copied.
pub async fn catch_up(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
    trust: &crate::signing::Trust,
) -> Result<WalSweep> {
    let todo = differences(primary, offsite, source).await?;
    let mut sweep = WalSweep {
        source: source.to_string(),
        ..WalSweep::default()
    };
    drop_stale_partials(primary, offsite, source, &mut sweep).await?;
    // Data objects (and history files) first, in parallel; sidecars and
    // cluster.json only after every data object has been tried.
    for rank in 0..=2u8 {
        let mut batch = todo
            .iter()
            .filter(|(o, _)| order(&o.key).0 == rank)
            .cloned();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < CONCURRENCY {
                let Some((o, off_size)) = batch.next() else {
                    break;
                };
                let (p, s) = (primary.clone(), offsite.clone());
                let source = source.to_string();
                let trust = trust.clone();
                running.spawn(async move {
                    if let Err(e) = check_sidecar(&p, &source, &o.key, &trust).await {
                        return (o.key, Err(e));
                    }
                    let partial = partial_of_key(&source, &o.key).is_some();
                    let r = match off_size {
                        // A streamed partial grows: the primary's is newer.
                        Some(_) if partial => copy_object(&p, &s, &o).await,
                        Some(size) => reconcile(&p, &s, &source, &o, size).await,
                        None => copy_object(&p, &s, &o).await,
                    };
                    (o.key, r)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok((_, Ok(b))) => {
                    sweep.copied += 1;
                    sweep.bytes += b;
                }
                Ok((key, Err(e))) => sweep.failed.push((key, e.to_string())),
                Err(e) => sweep
                    .failed
                    .push(("(copy task)".into(), format!("the copy task failed: {e}"))),
            }
        }
    }
    if sweep.copied > 0 || !sweep.failed.is_empty() {
        crate::metrics::events::WalReplicated {
            source,
            files: sweep.copied,
            bytes: sweep.bytes,
            failed: sweep.failed.len() as u64,
        }
        .emit();
    }
    Ok(sweep)
}

/// Deletes off-site streamed partials the primary no longer holds once the
/// off-site copy holds their complete segment (the capture dropped them on
/// the primary when the segment was stored).
async fn drop_stale_partials(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
    sweep: &mut WalSweep,
) -> Result<()> {
    let off = wal_objects(offsite, source).await?;
    let stale: Vec<&String> = off
        .keys()
        .filter(|k| {
            partial_of_key(source, k).is_some_and(|n| {
                off.contains_key(&layout::wal_data(source, n))
                    && off.contains_key(&layout::wal_sidecar(source, n))
            })
        })
        .collect();
    for k in stale {
        if primary.head(k).await?.is_none() {
            if let Err(e) = offsite.delete(k).await {
                sweep.failed.push((k.clone(), e.to_string()));
            }
        }
    }
    Ok(())
}

/// What the off-site copy lacks of `source`'s WAL, as one line (`None`: nothing).
pub async fn check(
    primary: &Arc<dyn Store>,
    offsite: &Arc<dyn Store>,
    source: &str,
) -> Result<Option<String>> {
    let d = differences(primary, offsite, source).await?;
    if d.is_empty() {
        return Ok(None);
    }
    let missing = d.iter().filter(|(_, s)| s.is_none()).count();
    let differ = d.len() - missing;
    let mut keys: Vec<&str> = d.iter().map(|(o, _)| o.key.as_str()).collect();
    keys.sort();
    Ok(Some(format!(
        "{missing} WAL objects missing off-site, {differ} of another size (first {}, last {})",
        keys[0],
        keys[keys.len() - 1]
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_objects_go_before_sidecars_and_cluster_json_last() {
        let mut keys = vec![
            "pg/wal/cluster.json",
            "pg/wal/00000001/000000010000000000000002.json",
            "pg/wal/00000001/000000010000000000000002.zst.age",
            "pg/wal/00000001/000000010000000000000001.json",
            "pg/wal/00000001/000000010000000000000001.zst.age",
        ];
        keys.sort_by(|a, b| order(a).cmp(&order(b)));
        assert_eq!(
            keys,
            [
                "pg/wal/00000001/000000010000000000000001.zst.age",
                "pg/wal/00000001/000000010000000000000002.zst.age",
                "pg/wal/00000001/000000010000000000000001.json",
                "pg/wal/00000001/000000010000000000000002.json",
                "pg/wal/cluster.json",
            ]
        );
    }
}
