//! Restores of Redis backups, and deep verification.
//!
//! - To a file: the raw stream is the `dump.rdb` (see [`crate::source::restore_raw_to_file`]).
//!   Redis loads it at start-up only if `appendonly` is off for that start.
//! - Into a running instance: the RDB is written to a temp dir, a scratch
//!   `redis-server` on a free loopback port loads it, and every key is copied
//!   with `DUMP` + `PEXPIRETIME` → `RESTORE key <abs-ms> <payload> ABSTTL`,
//!   database by database (`SCAN`, [`BATCH_KEYS`] keys per round trip, so
//!   memory is bounded by `BATCH_KEYS ×` the largest value). A target that
//!   holds keys is refused unless the request says replace (`--flush`);
//!   then `FLUSHALL` runs only once the scratch server has loaded the
//!   snapshot — the backup is proven readable (decrypted, checksums, RDB
//!   parsed) before anything in the target is touched. The target must run a
//!   Redis version that reads the backup's RDB version.
//! - Deep verify: the scratch server loads the RDB; the keys of the RDB
//!   itself are counted per database ([`super::rdbkeys`]) and the server
//!   must hold every one except those whose expiry passed, which are
//!   reported as excluded.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::connect::{restore_connection as connect, TlsMaterial};
use super::RedisConfig;
use crate::catalog::{Catalog, Manifest};
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::{
    not_supported, restore_raw_to_file, Overwrite, RecoveryPoint, RestoreCtx, RestoreHost, RestoreOutcome,
    RestoreSpec, RestoreTarget, SourceError,
};
use crate::stream::progress::Progress;

/// Keys copied per round trip.
pub const BATCH_KEYS: usize = 100;
fn restore_err(source: &str, message: String, cause: Option<redis::RedisError>) -> Error {
    Error::Source(SourceError::Restore {
        source_name: source.to_string(),
        message,
        cause: cause.map(|c| Box::new(c) as _),
    })
}

use super::scratch::keyspace_of;
pub use super::scratch::ScratchServer;

fn redis_server_for(cfg: Option<&RedisConfig>) -> String {
    cfg.map(|r| r.redis_server.clone())
        .unwrap_or_else(super::config::default_redis_server)
}

/// TLS material of the backup's source, for a `rediss://` target.
fn source_tls(
    cfg: Option<&RedisConfig>,
    m: &Manifest,
) -> Result<Option<std::sync::Arc<TlsMaterial>>> {
    let Some(c) = cfg else {
        return Ok(None);
    };
    TlsMaterial::load(c)
        .map(|t| t.map(std::sync::Arc::new))
        .map_err(|e| Error::Invalid(format!("source `{}`: {e}", m.source)))
}

/// The client of the `--to` URL. A `rediss://` target is reached with the
/// source's CA and client certificate when the source uses TLS (a restore
/// usually goes back into the same, or a sibling, deployment), else with the
/// system trust store.
fn target_client(cfg: Option<&RedisConfig>, m: &Manifest, uri: &str) -> Result<redis::Client> {
    let bad = |e: redis::RedisError| {
        Error::Invalid(format!(
            "`--to`: not a Redis URL (redis[s]://[user:password@]host:port): {e}"
        ))
    };
    let info = redis::IntoConnectionInfo::into_connection_info(uri).map_err(bad)?;
    let tls = match info.addr() {
        redis::ConnectionAddr::TcpTls { .. } => source_tls(cfg, m)?,
        _ => None,
    };
    match &tls {
        Some(t) => {
            crate::tls::install_default_provider();
            redis::Client::build_with_tls(info, t.certificates())
        }
        None => redis::Client::open(info),
    }
    .map_err(bad)
}

fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("gsdr-redis-")
        .tempdir()
        .map_err(|e| Error::LocalIo {
            what: "creating a scratch directory in",
            path: std::env::temp_dir(),
            source: e,
        })
}

/// Restores a Redis backup as `spec` asks: a server URL
/// (`redis://[user:password@]host:port`) gets every key copied into the
/// running instance, TTLs included (a file destination is the job's).
pub async fn restore(
    ctx: &RestoreCtx<'_>,
    cfg: Option<&RedisConfig>,
    spec: &RestoreSpec,
) -> Result<RestoreOutcome> {
    let (host, catalog, m, progress) = (ctx.host, ctx.catalog, ctx.manifest, ctx.progress);
    if m.engine != super::KIND {
        return Err(Error::Invalid(format!(
            "backup {} is a `{}` backup, not a Redis one",
            m.id, m.engine
        )));
    }
    if matches!(spec.target, RestoreTarget::DataDir(_))
        || spec.rename.is_some()
        || matches!(spec.point, RecoveryPoint::Lsn(_))
    {
        return Err(not_supported(
            &m.source,
            "a Redis backup restores with --to-file FILE (the dump.rdb) or --to redis://HOST:PORT; --to-dir, --ns-from/--ns-to and --target-lsn do not apply",
        )
        .into());
    }
    let pitr = match spec.point {
        RecoveryPoint::Time(t) => Some(Some(t)),
        RecoveryPoint::Latest => Some(None),
        _ => None,
    };
    match &spec.target {
        RestoreTarget::File(_) if pitr.is_some() => Err(not_supported(
            &m.source,
            "a Redis restore to a time (or to latest) replays the capture log into a server: restore with --to redis://HOST:PORT, or pick a snapshot with --backup ID for --to-file",
        )
        .into()),
        RestoreTarget::File(path) => {
            restore_raw_to_file(host, catalog, m, path, spec.replace, progress).await
        }
        RestoreTarget::Server(uri) => {
            restore_into(host, cfg, catalog, m, uri, spec.replace, pitr, progress).await
        }
        _ => Err(Error::Invalid(
            "restore a Redis backup with exactly one of --to-file FILE (the dump.rdb to place before Redis starts, with appendonly off) or --to redis://HOST:PORT (a running instance)".into(),
        )),
    }
}

/// A snapshot loaded into a scratch server: the staged `dump.rdb` stays in
/// `dir` (deep verify walks it afterwards).
pub(super) struct Loaded {
    dir: tempfile::TempDir,
    pub(super) server: ScratchServer,
    raw_bytes: u64,
    /// Unix ms just before the server started loading.
    load_started_ms: i64,
}

/// Loads `m` into a scratch server (the RDB is staged in a temp dir). This
/// proves the backup readable end to end: size and SHA-256 against the
/// manifest, age authentication, zstd checksums, and a `redis-server` that
/// parsed the whole RDB (its CRC-64 included).
async fn load_scratch(
    host: &dyn RestoreHost,
    cfg: Option<&RedisConfig>,
    catalog: &Catalog,
    m: &Manifest,
    progress: &dyn Progress,
) -> Result<Loaded> {
    let dir = scratch_dir()?;
    let out = restore_raw_to_file(
        host,
        catalog,
        m,
        &dir.path().join("dump.rdb"),
        true,
        progress,
    )
    .await?;
    let load_started_ms = chrono::Utc::now().timestamp_millis();
    let server = ScratchServer::start(&redis_server_for(cfg), dir.path()).await?;
    Ok(Loaded {
        dir,
        server,
        raw_bytes: out.raw_bytes,
        load_started_ms,
    })
}

/// Loads the base for a restore into a scratch server: `m`'s snapshot, or,
/// for a restore to a time or to latest (`pitr`), the base that reaches
/// furthest with its capture log replayed on top ([`super::replay`]).
pub(super) async fn load_for(
    host: &dyn RestoreHost,
    cfg: Option<&RedisConfig>,
    catalog: &Catalog,
    m: &Manifest,
    pitr: Option<Option<chrono::DateTime<chrono::Utc>>>,
    progress: &dyn Progress,
) -> Result<(Manifest, Loaded, Option<super::replay::Replayed>)> {
    let Some(until) = pitr else {
        let l = load_scratch(host, cfg, catalog, m, progress).await?;
        return Ok((m.clone(), l, None));
    };
    let base = super::replay::pick_base(catalog, m, until).await?;
    let l = load_scratch(host, cfg, catalog, &base, progress).await?;
    let r = super::replay::replay(catalog.store(), host.identities()?, &base, until, l.server.port, l.server.password())
        .await?;
    if r.short_of_target {
        tracing::warn!(event = "redis_log_short_of_target", base = %base.id, reached = %r.reached.map(|t| t.to_rfc3339()).unwrap_or_default(), target = %until.map(|t| t.to_rfc3339()).unwrap_or_else(|| "latest".into()), "the capture log does not reach the target: restored as far as it goes");
    }
    if r.errors > 0 {
        tracing::warn!(event = "redis_log_replay_errors", base = %base.id, errors = r.errors, first = r.first_error.as_deref().unwrap_or(""));
    }
    Ok((base, l, Some(r)))
}

#[allow(clippy::too_many_arguments)]
async fn restore_into(
    host: &dyn RestoreHost,
    cfg: Option<&RedisConfig>,
    catalog: &Catalog,
    m: &Manifest,
    uri: &str,
    replace: bool,
    pitr: Option<Option<chrono::DateTime<chrono::Utc>>>,
    progress: &dyn Progress,
) -> Result<RestoreOutcome> {
    let start = Instant::now();
    let target = target_client(cfg, m, uri)?;
    let target_info = target.get_connection_info().clone();
    let scheme = match target_info.addr() {
        redis::ConnectionAddr::TcpTls { .. } => "rediss",
        _ => "redis",
    };
    let shown = format!("{scheme}://{}", target_info.addr());
    let terr = |what: &str, e: redis::RedisError| {
        restore_err(&m.source, format!("target {shown}: {what}: {e}"), Some(e))
    };
    let mut tc = connect(&target)
        .await
        .map_err(|e| terr("cannot connect", e))?;
    let existing = keyspace_of(&mut tc)
        .await
        .map_err(|e| terr("INFO keyspace", e))?;
    let existing_keys: u64 = existing.values().sum();
    if existing_keys > 0 && !replace {
        return Err(Error::Invalid(format!(
            "target {shown} holds {existing_keys} keys; refusing to restore over them (pass --flush to empty it first)"
        )));
    }

    // Prove the backup readable before the target is touched: a wrong key, a
    // damaged object or an RDB the server cannot load fails here, and the
    // target keeps every key it had.
    let (m, loaded, replayed) = load_for(host, cfg, catalog, m, pitr, progress).await?;
    let (m, scratch, raw_bytes) = (&m, &loaded.server, loaded.raw_bytes);
    if existing_keys > 0 {
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut tc)
            .await
            .map_err(|e| terr("FLUSHALL", e))?;
        tracing::warn!(event = "redis_target_flushed", uri = %shown, keys = existing_keys);
    }
    let dbs = scratch.keyspace().await?;
    let mut restored: BTreeMap<u32, u64> = BTreeMap::new();
    progress.start(&format!("copy keys into {shown}"), None);
    for (&db, &expected) in &dbs {
        let mut sc = connect(&scratch.client(db.into())?)
            .await
            .map_err(|e| Error::Invalid(format!("scratch redis-server: {e}")))?;
        let tdb = target_info
            .clone()
            .set_redis_settings(target_info.redis_settings().clone().set_db(db.into()));
        // The connection info carries the TLS parameters, if any.
        let tclient = redis::Client::open(tdb).map_err(|e| terr("client", e))?;
        let mut tc = connect(&tclient)
            .await
            .map_err(|e| terr(&format!("SELECT {db}"), e))?;
        let n = copy_db(&mut sc, &mut tc, replace)
            .await
            .map_err(|e| terr(&format!("copying database {db}"), e))?;
        progress.advance(n);
        if n != expected {
            tracing::warn!(
                event = "redis_restore_count_differs",
                db,
                expected,
                restored = n,
                "keys expired while copying"
            );
        }
        restored.insert(db, n);
    }
    progress.finish();
    tracing::info!(event = "redis_restore_finished", uri = %shown, keys = restored.values().sum::<u64>());
    Ok(RestoreOutcome {
        id: m.id.clone(),
        source: m.source.clone(),
        destination: shown,
        raw_bytes,
        duration_secs: start.elapsed().as_secs_f64(),
        details: match replayed {
            Some(r) => serde_json::json!({ "keys_per_db": restored, "replayed": r }),
            None => serde_json::json!({ "keys_per_db": restored }),
        },
    })
}

/// What a restore of `m` into `uri` overwrites, for incident plans and their
/// confirmation: the keys `FLUSHALL` removes ("flushes 50,002 keys in …").
pub async fn describe_overwrite(cfg: Option<&RedisConfig>, m: &Manifest, uri: &str) -> Overwrite {
    let shown = |c: &redis::Client| {
        let info = c.get_connection_info();
        let scheme = match info.addr() {
            redis::ConnectionAddr::TcpTls { .. } => "rediss",
            _ => "redis",
        };
        format!("{scheme}://{}", info.addr())
    };
    let client = match target_client(cfg, m, uri) {
        Ok(c) => c,
        Err(e) => return Overwrite::destroys(format!("cannot use the endpoint: {e}")),
    };
    let at = shown(&client);
    let counted = async {
        let mut c = connect(&client).await?;
        keyspace_of(&mut c).await
    };
    match tokio::time::timeout(Duration::from_secs(10), counted).await {
        Ok(Ok(k)) if k.values().sum::<u64>() == 0 => {
            Overwrite::nothing(format!("{at} holds no keys: nothing is overwritten"))
        }
        Ok(Ok(k)) => Overwrite::destroys(format!(
            "flushes {} keys in {at} ({}), once the backup has loaded into a scratch server",
            crate::source::thousands(k.values().sum()),
            k.iter()
                .map(|(db, n)| format!("db{db} {}", crate::source::thousands(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Ok(Err(e)) => Overwrite::destroys(format!(
            "cannot count the keys in {at} ({e}): a restore flushes whatever it holds"
        )),
        Err(_) => Overwrite::destroys(format!(
            "{at} did not answer within 10 s: a restore flushes whatever it holds"
        )),
    }
}

/// Copies every key of the scratch connection's database to the target's.
async fn copy_db(
    sc: &mut redis::aio::MultiplexedConnection,
    tc: &mut redis::aio::MultiplexedConnection,
    replace: bool,
) -> redis::RedisResult<u64> {
    let mut cursor: u64 = 0;
    let mut copied = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(BATCH_KEYS)
            .query_async(sc)
            .await?;
        if !keys.is_empty() {
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd("DUMP").arg(k).cmd("PEXPIRETIME").arg(k);
            }
            let vals: Vec<redis::Value> = p.query_async(sc).await?;
            let mut r = redis::pipe();
            let mut n = 0;
            for (k, pair) in keys.iter().zip(vals.chunks(2)) {
                let payload: Option<Vec<u8>> = redis::from_redis_value_ref(&pair[0])?;
                let at: i64 = redis::from_redis_value_ref(&pair[1])?;
                let Some(payload) = payload else { continue };
                if at == -2 {
                    continue; // expired between SCAN and DUMP
                }
                let c = r
                    .cmd("RESTORE")
                    .arg(k)
                    .arg(at.max(0))
                    .arg(payload)
                    .arg("ABSTTL");
                if replace {
                    c.arg("REPLACE");
                }
                n += 1;
            }
            if n > 0 {
                r.query_async::<()>(tc).await?;
            }
            copied += n;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(copied);
        }
    }
}

/// The outcome of a deep verify.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeepVerifyReport {
    /// Backup id.
    pub id: String,
    /// Source.
    pub source: String,
    /// The stream checked out and the scratch server loaded every key of the
    /// RDB except those whose expiry had passed.
    pub ok: bool,
    /// Keys per database the scratch server should hold: the RDB's keys
    /// minus those whose expiry had passed when the load began.
    pub expected_keys_per_db: BTreeMap<u32, u64>,
    /// Keys per database the loaded snapshot holds.
    pub loaded_keys_per_db: BTreeMap<u32, u64>,
    /// Keys per database in the RDB itself (counted at the fork).
    pub rdb_keys_per_db: BTreeMap<u32, u64>,
    /// Keys with an expiry per database in the RDB.
    pub rdb_expires_per_db: BTreeMap<u32, u64>,
    /// Keys of the RDB the server did not keep because their expiry passed
    /// (before or during the load): RDB keys − loaded keys.
    pub expired_excluded: u64,
    /// Keys per database from `INFO keyspace` before the sync (the
    /// manifest): shown for comparison, not checked (writes before the fork
    /// and expiries make them differ).
    pub manifest_keys_per_db: BTreeMap<u32, u64>,
    /// One line for people.
    pub summary: String,
    /// Raw bytes restored.
    pub raw_bytes: u64,
    /// Seconds taken.
    pub duration_secs: f64,
    /// What failed, if anything.
    pub error: Option<String>,
}

/// Keys per database recorded in a Redis manifest.
pub fn manifest_keys(m: &Manifest) -> BTreeMap<u32, u64> {
    m.consistency
        .details
        .get("keys_per_db")
        .and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(db, v)| Some((db.parse().ok()?, v.get("keys")?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The comparison of a deep verify, database by database: the server must
/// hold every key of the RDB except those whose expiry passed. A key whose
/// expiry lies between the start of the load and the key count may or may
/// not be there yet, so the loaded count must lie in
/// `[keys − expired by the count, keys − expired by the load start]`.
fn compare(
    rdb: &BTreeMap<u32, super::rdbkeys::DbCounts>,
    loaded: &BTreeMap<u32, u64>,
) -> std::result::Result<(), String> {
    let mut bad = Vec::new();
    let dbs: std::collections::BTreeSet<u32> = rdb.keys().chain(loaded.keys()).copied().collect();
    for db in dbs {
        let have = loaded.get(&db).copied().unwrap_or(0);
        let (keys, at_start, at_count) = rdb
            .get(&db)
            .map(|c| (c.keys, c.expired_before[0], c.expired_before[1]))
            .unwrap_or((0, 0, 0));
        let (lo, hi) = (keys - at_count, keys - at_start);
        if !(lo..=hi).contains(&have) {
            bad.push(if lo == hi {
                format!("db{db}: {have} keys loaded, {hi} expected")
            } else {
                format!("db{db}: {have} keys loaded, {lo} to {hi} expected")
            });
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the scratch server did not load what the RDB holds ({}; keys whose expiry passed are not counted)",
            bad.join(", ")
        ))
    }
}

/// Deep verify: decrypt the backup, load it into a scratch `redis-server`,
/// count the keys of the RDB itself, and check that the server holds every
/// one of them except those whose expiry had passed. `Ok` with `ok: false`
/// when the data does not match; `Err` when the check could not run.
pub async fn verify_deep(
    host: &dyn RestoreHost,
    cfg: Option<&RedisConfig>,
    catalog: &Catalog,
    m: &Manifest,
    progress: &dyn Progress,
) -> Result<DeepVerifyReport> {
    let start = Instant::now();
    let mut report = DeepVerifyReport {
        id: m.id.clone(),
        source: m.source.clone(),
        ok: false,
        expected_keys_per_db: BTreeMap::new(),
        loaded_keys_per_db: BTreeMap::new(),
        rdb_keys_per_db: BTreeMap::new(),
        rdb_expires_per_db: BTreeMap::new(),
        expired_excluded: 0,
        manifest_keys_per_db: manifest_keys(m),
        summary: String::new(),
        raw_bytes: 0,
        duration_secs: 0.0,
        error: None,
    };
    match load_scratch(host, cfg, catalog, m, progress).await {
        Ok(l) => {
            report.raw_bytes = l.raw_bytes;
            let loaded = l.server.keyspace().await?;
            let counted_ms = chrono::Utc::now().timestamp_millis();
            let file = l.dir.path().join("dump.rdb");
            let instants = [l.load_started_ms, counted_ms + 1];
            let rdb = tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&file)?;
                super::rdbkeys::count_keys(std::io::BufReader::with_capacity(1 << 20, f), &instants)
                    .map_err(std::io::Error::other)
            })
            .await
            .map_err(|e| Error::Invalid(format!("counting the keys of the RDB: {e}")))?
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot count the keys of backup {} from its RDB: {e}",
                    m.id
                ))
            })?;
            drop(l);
            let rdb_total: u64 = rdb.values().map(|c| c.keys).sum();
            let loaded_total: u64 = loaded.values().sum();
            report.rdb_keys_per_db = rdb.iter().map(|(d, c)| (*d, c.keys)).collect();
            report.rdb_expires_per_db = rdb.iter().map(|(d, c)| (*d, c.expires)).collect();
            report.expected_keys_per_db = rdb
                .iter()
                .map(|(d, c)| (*d, c.keys - c.expired_before[0]))
                .filter(|(_, n)| *n > 0)
                .collect();
            report.expired_excluded = rdb_total.saturating_sub(loaded_total);
            match compare(&rdb, &loaded) {
                Ok(()) => report.ok = true,
                Err(e) => report.error = Some(e),
            }
            report.summary = format!(
                "{loaded_total} of the RDB's {rdb_total} keys loaded in {} database(s); {} expired keys excluded",
                loaded.len(),
                report.expired_excluded
            );
            report.loaded_keys_per_db = loaded;
        }
        Err(e @ Error::Pipeline(crate::pipeline::PipelineError::Key(_))) => return Err(e),
        Err(
            e
            @ (Error::Pipeline(_) | Error::Storage(crate::storage::StorageError::NotFound { .. })),
        ) => report.error = Some(e.to_string()),
        Err(e) => return Err(e),
    }
    report.duration_secs = start.elapsed().as_secs_f64();
    tracing::info!(event = "verify_deep_finished", id = %m.id, ok = report.ok, expired_excluded = report.expired_excluded, error = report.error.as_deref().unwrap_or(""));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::rdbkeys::DbCounts;
    use super::*;

    fn counts(keys: u64, at_start: u64, at_count: u64) -> DbCounts {
        DbCounts {
            keys,
            expires: at_count,
            expired_before: vec![at_start, at_count],
        }
    }

    #[test]
    fn expired_keys_are_not_expected_and_keys_expiring_during_the_load_may_go_either_way() {
        let rdb = BTreeMap::from([(0, counts(230, 30, 30)), (1, counts(60, 8, 10))]);
        assert!(compare(&rdb, &BTreeMap::from([(0, 200), (1, 50)])).is_ok());
        assert!(compare(&rdb, &BTreeMap::from([(0, 200), (1, 52)])).is_ok());
        let e = compare(&rdb, &BTreeMap::from([(0, 199), (1, 53)])).unwrap_err();
        assert!(e.contains("db0: 199 keys loaded, 200 expected"), "{e}");
        assert!(e.contains("db1: 53 keys loaded, 50 to 52 expected"), "{e}");
        // A database the RDB does not have, or one the server lost entirely.
        let e = compare(&rdb, &BTreeMap::from([(0, 200), (1, 50), (4, 1)])).unwrap_err();
        assert!(e.contains("db4: 1 keys loaded, 0 expected"), "{e}");
        assert!(compare(&rdb, &BTreeMap::from([(0, 200)])).is_err());
    }
}
