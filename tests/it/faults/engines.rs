//! Backups of the real engines under faults: Redis (`redis-server`),
//! PostgreSQL 15 (a base backup through `pg_basebackup`, WAL archived by
//! `gsdr wal-push`) and MongoDB (`nx-27017`), each with an S3 target cut
//! mid-stream and with the server itself killed mid-dump.
//!
//! Both the S3 server and the engine sit behind a [`FaultProxy`]; the
//! engine's relay is capped at a few MB/s during a fault so that a dump of
//! about 10 MB is still under way when the fault lands (the run fails the
//! case if it ended first).

use std::time::Duration;

use super::{check, failed_in_time, gc_leaves_nothing, listed, s3_fixture, text, Case};
use crate::cli::Fixture;
use crate::support::faults::{FaultProxy, Mode};
use crate::support::moto::Moto;

/// One engine's server, as the fault cases drive it.
pub(super) trait Engine {
    /// The source's name in the policy (also its S3 prefix).
    fn name(&self) -> &'static str;
    /// Kills the server mid-dump, as a node dying.
    fn kill(&mut self);
    /// Brings a server back (with some data); returns the port to relay to.
    fn restart(&mut self, rt: &tokio::runtime::Runtime) -> u16;
    /// Checks after the faults that nothing the engine's archive needs was lost.
    fn nothing_lost(&self, _f: &Fixture) -> Case {
        Ok(())
    }
}

/// An engine behind `src`, backed up to `moto` behind `s3`.
pub(super) struct Rig {
    pub f: Fixture,
    pub s3: FaultProxy,
    pub src: FaultProxy,
    pub engine: Box<dyn Engine>,
    /// Relay cap during a fault, bytes/s (the dump then lasts 2–3 s).
    pub rate: u64,
}

/// When the fault lands after the backup started.
const FAULT_AFTER: Duration = Duration::from_millis(1000);
/// How long after the fault the backup must have ended.
pub(super) const BOUND: Duration = Duration::from_secs(30);

impl Rig {
    fn backup(&self) -> Case {
        let o = self.f.gsdr(&["backup", "--source", self.engine.name()]);
        check(o.status.success(), || {
            format!("backup of {}: {}", self.engine.name(), text(&o))
        })
    }

    /// One fault during a backup: ends within [`BOUND`], fails, lists no
    /// new backup and loses none, leaves nothing after gc; then (`heal`)
    /// the next backup commits.
    fn fault_case(
        &mut self,
        rt: &tokio::runtime::Runtime,
        moto: &Moto,
        what: &str,
        needle: &str,
    ) -> Case {
        let name = self.engine.name();
        let before = listed(&self.f, &[]);
        self.src.throttle(self.rate);
        let (s3, engine) = (&self.s3, &mut self.engine);
        let r =
            super::with_fault_after(&self.f, &["backup", "--source", name], FAULT_AFTER, || {
                match what {
                    "cut" => s3.set(Mode::Cut),
                    _ => engine.kill(),
                }
            });
        self.src.throttle(0);
        self.s3.set(Mode::Pass);
        let (o, took) = r?;
        eprintln!(
            "  {name} / {what}: failed {:.1} s after the fault: {}",
            took.as_secs_f64(),
            text(&o).lines().last().unwrap_or_default()
        );
        failed_in_time(&o, took, BOUND, needle)?;
        check(listed(&self.f, &[]) == before, || {
            format!("{before} backups listed before the fault, not after")
        })?;
        gc_leaves_nothing(&self.f, rt, moto, name)?;
        if what != "cut" {
            let port = self.engine.restart(rt);
            self.src.retarget(port);
        }
        self.backup()?;
        check(listed(&self.f, &[]) == before + 1, || {
            "the backup after the fault is not listed".into()
        })
    }
}

/// Runs both faults on `rig` (after a first backup that must survive them).
pub(super) fn both_faults(
    rt: &tokio::runtime::Runtime,
    moto: &Moto,
    mut rig: Rig,
) -> Vec<(String, Case)> {
    let name = rig.engine.name();
    let cut = format!("backup of {name} / S3 cut mid-stream");
    let kill = format!("backup of {name} / server killed mid-dump");
    if let Err(e) = rig.backup() {
        return vec![(cut, Err(e.clone())), (kill, Err(e))];
    }
    let a = rig.fault_case(rt, moto, "cut", "s3://");
    let b = rig.fault_case(rt, moto, "kill", name);
    let c = rig.engine.nothing_lost(&rig.f);
    let verify = rig.f.gsdr(&["verify", "--source", name]);
    let end = c.and(check(verify.status.success(), || {
        format!("verify after the faults: {}", text(&verify))
    }));
    vec![(cut, a), (kill, b.and(end))]
}

// ---------------------------------------------------------------- Redis

struct Redis {
    server: crate::support::redis::RedisServer,
}

pub(super) async fn fill_redis(port: u16, keys: usize, bytes: usize) {
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let mut p = redis::pipe();
        for i in chunk {
            let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
            p.cmd("SET").arg(format!("k{i}")).arg(v).ignore();
        }
        p.query_async::<()>(&mut c).await.unwrap();
    }
}

impl Engine for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }
    fn kill(&mut self) {
        self.server.crash();
    }
    fn restart(&mut self, rt: &tokio::runtime::Runtime) -> u16 {
        self.server = crate::support::redis::RedisServer::start(Default::default());
        rt.block_on(fill_redis(self.server.port, 100, 100));
        self.server.port
    }
}

/// Redis with 12 MB of random values.
pub(super) fn redis_rig(rt: &tokio::runtime::Runtime, moto: &Moto) -> Rig {
    let server = crate::support::redis::RedisServer::start(Default::default());
    rt.block_on(fill_redis(server.port, 3000, 4000));
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let src = rt.block_on(FaultProxy::start(server.port));
    let f = s3_fixture(
        moto,
        &s3,
        "redis",
        &format!(
            "[sources.redis]\nkind = \"redis\"\n[sources.redis.redis]\naddr = \"127.0.0.1:{}\"\n",
            src.port()
        ),
    );
    Rig {
        f,
        s3,
        src,
        engine: Box::new(Redis { server }),
        rate: 4 << 20,
    }
}

// ---------------------------------------------------------------- MongoDB

struct Mongo {
    server: crate::support::mongo::NxMongo,
}

async fn fill_mongo(uri: &str, docs: usize, bytes: usize) {
    use mongodb::bson::{doc, Binary, Document};
    let c = mongodb::Client::with_uri_str(uri).await.unwrap();
    let coll = c.database("app").collection::<Document>("readings");
    for chunk in (0..docs).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Document> = chunk
            .iter()
            .map(|&i| {
                doc! { "seq": i as i32, "raw": Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: (0..bytes).map(|_| rand::random::<u8>()).collect(),
                } }
            })
            .collect();
        coll.insert_many(batch).await.unwrap();
    }
}

impl Engine for Mongo {
    fn name(&self) -> &'static str {
        "mongo"
    }
    fn kill(&mut self) {
        self.server.child.kill();
    }
    fn restart(&mut self, rt: &tokio::runtime::Runtime) -> u16 {
        self.server = crate::support::mongo::NxMongo::start();
        rt.block_on(fill_mongo(&self.server.uri(), 100, 100));
        self.server.port
    }
}

/// nx-27017 with 8 MB of random binaries.
pub(super) fn mongo_rig(rt: &tokio::runtime::Runtime, moto: &Moto) -> Rig {
    let server = crate::support::mongo::NxMongo::start();
    rt.block_on(fill_mongo(&server.uri(), 2000, 4000));
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let src = rt.block_on(FaultProxy::start(server.port));
    let f = s3_fixture(
        moto,
        &s3,
        "mongo",
        "[sources.mongo]\nkind = \"mongo\"\n[sources.mongo.mongo]\nuri = { file = \"{dir}/mongo-uri\" }\nread_preference = \"primary\"\n",
    );
    std::fs::write(
        f.dir.path().join("mongo-uri"),
        format!("mongodb://127.0.0.1:{}/?directConnection=true", src.port()),
    )
    .unwrap();
    Rig {
        f,
        s3,
        src,
        engine: Box::new(Mongo { server }),
        rate: 3 << 20,
    }
}

// ---------------------------------------------------------------- PostgreSQL

struct Postgres {
    cluster: crate::support::postgres::PgCluster,
}

impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "pg"
    }
    fn kill(&mut self) {
        self.cluster.crash();
    }
    fn restart(&mut self, _: &tokio::runtime::Runtime) -> u16 {
        self.cluster.start();
        self.cluster.port
    }
    fn nothing_lost(&self, f: &Fixture) -> Case {
        self.cluster
            .switch_and_wait_archived(Duration::from_secs(60));
        let o = f.gsdr(&["--json", "wal-verify", "--source", "pg"]);
        check(o.status.success(), || {
            format!("wal-verify after the faults: {}", text(&o))
        })
    }
}

/// A PostgreSQL 15 cluster with about 15 MB of rows, archiving to the same
/// S3 target with `gsdr wal-push`.
pub(super) fn pg_rig(rt: &tokio::runtime::Runtime, moto: &Moto) -> Rig {
    use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};
    let mut cluster = PgCluster::init("");
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let src = rt.block_on(FaultProxy::start(cluster.port));
    let f = s3_fixture(
        moto,
        &s3,
        "pg",
        &format!(
            "[sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
             pg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\narchive_wait = \"4s\"\n",
            src.port(),
            pg_gsdr_bin().display()
        ),
    );
    give_to_pg_user(f.dir.path());
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --policy {} -q wal-push --source pg %p'\n",
        pg_gsdr_bin().display(),
        f.policy.display()
    ));
    cluster.start();
    cluster.psql(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v \
         FROM generate_series(1, 120000) g",
    );
    Rig {
        f,
        s3,
        src,
        engine: Box::new(Postgres { cluster }),
        rate: 10 << 20,
    }
}
