//! Restores over a live target while the S3 server stalls or cuts the
//! download: Redis `--flush` into a running server, PostgreSQL
//! `--to-dir --replace` over a cluster's data directory. Each ends within a
//! bound, names the cause, and leaves the target exactly as it was (keys,
//! TTLs and values; files and rows); the same restore then succeeds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::engines::BOUND;
use super::{check, failed_in_time, s3_fixture, text, with_fault_after, Case};
use crate::support::faults::{FaultProxy, Mode};
use crate::support::moto::Moto;

/// When the fault lands after the restore started.
const FAULT_AFTER: Duration = Duration::from_millis(1000);
/// The download cap while a fault is tried (a 10 MB backup then takes 3 s).
const RATE: u64 = 3 << 20;

/// What each fault's error must say.
fn needle(mode: Mode) -> &'static str {
    match mode {
        Mode::Stall => "stopped answering",
        _ => "s3://",
    }
}

/// Every key of db 0 with its `DUMP` payload and TTL (rounded to seconds).
async fn redis_state(port: u16) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let d: Vec<u8> = redis::cmd("DUMP")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        // The absolute expiry (Redis 7), not the TTL: a TTL ticks down between the two reads.
        let t: i64 = redis::cmd("EXPIRETIME")
            .arg(&k)
            .query_async(&mut c)
            .await
            .unwrap();
        out.insert(k, (d, t));
    }
    out
}

/// Redis `restore --to URL --flush --yes` under S3 stalled and cut.
pub(super) fn redis_restore_over_live(
    rt: &tokio::runtime::Runtime,
    moto: &Moto,
) -> Vec<(String, Case)> {
    use crate::support::redis::RedisServer;
    let src = RedisServer::start(Default::default());
    rt.block_on(super::engines::fill_redis(src.port, 2500, 4000));
    let live = RedisServer::start(Default::default());
    rt.block_on(async {
        let mut c = live.conn(0).await;
        let mut p = redis::pipe();
        for i in 0..500 {
            p.cmd("SET").arg(format!("live{i}")).arg(i).ignore();
        }
        p.cmd("SET")
            .arg("ttl")
            .arg("x")
            .arg("EX")
            .arg(3600)
            .ignore();
        p.query_async::<()>(&mut c).await.unwrap();
    });
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &s3,
        "liveredis",
        &format!(
            "[sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
            src.addr()
        ),
    );
    let o = f.gsdr(&["backup", "--source", "cache"]);
    if !o.status.success() {
        return vec![("restore into live redis".into(), Err(text(&o)))];
    }
    let url = live.url(0);
    let args = [
        "restore", "--source", "cache", "--to", &url, "--flush", "--yes",
    ];
    let mut out = Vec::new();
    for mode in [Mode::Stall, Mode::Cut] {
        let name = format!("restore into live redis --flush / S3 {mode:?} mid-download");
        let case = (|| {
            let before = rt.block_on(redis_state(live.port));
            s3.throttle(RATE);
            let r = with_fault_after(&f, &args, FAULT_AFTER, || s3.set(mode));
            s3.set(Mode::Pass);
            s3.throttle(0);
            let (o, took) = r?;
            eprintln!(
                "  redis restore / {mode:?}: failed {:.1} s after the fault: {}",
                took.as_secs_f64(),
                text(&o).lines().last().unwrap_or_default()
            );
            failed_in_time(&o, took, BOUND, needle(mode))?;
            let after = rt.block_on(redis_state(live.port));
            check(after == before, || {
                format!(
                    "the live target changed: {} keys before, {} after",
                    before.len(),
                    after.len()
                )
            })
        })();
        out.push((name, case));
    }
    // With the server healthy, the same restore replaces the target.
    let o = f.gsdr(&args);
    let n = rt.block_on(redis_state(live.port)).len();
    let healed = check(o.status.success() && n == 2500, || {
        format!("the restore after the faults ({n} keys): {}", text(&o))
    });
    if let Some(last) = out.last_mut() {
        last.1 = last.1.clone().and(healed);
    }
    out
}

/// Every file under `d` with its size and modification time.
fn files_of(d: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![d.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(path.clone());
            }
            out.insert(path.display().to_string(), (m.len(), m.modified().unwrap()));
        }
    }
    out
}

/// PostgreSQL `restore --to-dir DATA --replace --latest --yes` over a
/// stopped cluster under S3 stalled and cut.
pub(super) fn pg_restore_over_live(
    rt: &tokio::runtime::Runtime,
    moto: &Moto,
) -> Vec<(String, Case)> {
    use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
    let mut a = PgCluster::init("");
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &s3,
        "livepg",
        &format!(
            "[sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
             pg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\narchive_wait = \"4s\"\n",
            a.port,
            pg_gsdr_bin().display()
        ),
    );
    give_to_pg_user(f.dir.path());
    a.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --policy {} -q wal-push --source pg %p'\n",
        pg_gsdr_bin().display(),
        f.policy.display()
    ));
    a.start();
    a.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 150000) g",
    );
    let o = f.gsdr(&["backup", "--source", "pg"]);
    if !o.status.success() {
        return vec![("restore over live postgres".into(), Err(text(&o)))];
    }
    a.switch_and_wait_archived(Duration::from_secs(60));
    let want = a.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t");
    // The live target: another cluster with its own rows, stopped (a running one is refused).
    let mut b = PgCluster::init("");
    b.start();
    b.psql("CREATE TABLE live (id int PRIMARY KEY, v text)");
    b.psql("INSERT INTO live SELECT g, 'live' FROM generate_series(1, 777) g");
    let rows = "SELECT count(*) || ':' || md5(string_agg(v || id, ',' ORDER BY id)) FROM live";
    let live_rows = b.psql(rows);
    b.stop();
    let dir = b.data.display().to_string();
    let args = [
        "restore",
        "--source",
        "pg",
        "--to-dir",
        &dir,
        "--replace",
        "--latest",
        "--yes",
    ];
    let mut out = Vec::new();
    for mode in [Mode::Stall, Mode::Cut] {
        let name = format!("restore over live postgres --replace / S3 {mode:?} mid-download");
        let case = (|| {
            let before = files_of(&b.data);
            s3.throttle(RATE);
            let r = with_fault_after(&f, &args, FAULT_AFTER, || s3.set(mode));
            s3.set(Mode::Pass);
            s3.throttle(0);
            let (o, took) = r?;
            eprintln!(
                "  pg restore / {mode:?}: failed {:.1} s after the fault: {}",
                took.as_secs_f64(),
                text(&o).lines().last().unwrap_or_default()
            );
            failed_in_time(&o, took, BOUND, needle(mode))?;
            let after = files_of(&b.data);
            check(after == before, || {
                let changed: Vec<_> = after
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(v))
                    .map(|(k, _)| k)
                    .chain(before.keys().filter(|k| !after.contains_key(*k)))
                    .take(5)
                    .collect();
                format!("the data directory changed: {changed:?}")
            })
        })();
        out.push((name, case));
    }
    // Every row of the target is still there; then the restore succeeds.
    b.start();
    let still = b.psql(rows);
    b.stop();
    let mut end = check(still == live_rows, || {
        format!("the target's rows changed: {live_rows} before, {still} after")
    });
    if end.is_ok() {
        let o = f.gsdr(&args);
        end = check(o.status.success(), || {
            format!("the restore after the faults: {}", text(&o))
        });
        if end.is_ok() {
            let c = crate::postgres::start_restored(&b.data);
            let got =
                c.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t");
            end = check(got == want, || {
                format!("the restored rows differ: {got} (want {want})")
            });
        }
    }
    if let Some(last) = out.last_mut() {
        last.1 = last.1.clone().and(end);
    }
    out
}
