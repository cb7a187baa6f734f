//! Redis engine: snapshots over the replication protocol (both framings),
//! Sentinel discovery, restores to a file and into a live instance, deep
//! verify, failures (node dies mid-transfer, wrong password). Real
//! `redis-server` processes only.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gsdr::catalog::{Catalog, Manifest};
use gsdr::job::RestoreRequest;
use gsdr::job::{Env, NoProgress};
use gsdr::policy::Policy;
use gsdr::source::redis::{rdb, verify_deep};

use crate::support::redis::{write_file, Opts, RedisServer, Sentinel, TlsFiles};
use crate::support::tempdir;

struct Ctx {
    dir: tempfile::TempDir,
    env: Env,
}

/// An environment with a local target and a `cache` Redis source set up by `redis_toml`.
fn ctx(redis_toml: &str) -> Ctx {
    let dir = tempdir();
    let key = dir.path().join("key.txt");
    let recipient = gsdr::pipeline::keys::keygen(&key).unwrap();
    let text = format!(
        r#"
name = "test"
[encryption]
recipients = ["{recipient}"]
identity_file = "{}"
[targets.local]
kind = "fs"
path = "{}"
[sources.cache]
kind = "redis"
[sources.cache.redis]
{redis_toml}
"#,
        key.display(),
        dir.path().join("store").display()
    );
    let policy = Policy::parse(&text, Path::new("test.toml")).unwrap();
    Ctx {
        env: Env::new(policy),
        dir,
    }
}

impl Ctx {
    async fn catalog(&self) -> Catalog {
        self.env.catalog("local").await.unwrap()
    }

    /// A backup of `cache` that must succeed.
    async fn backup(&self) -> Manifest {
        gsdr::job::backup(&self.env, "cache", &NoProgress)
            .await
            .unwrap()
            .manifest
    }
}

const BIG_KEY_BYTES: usize = 11 << 20;

/// Every data type, TTLs, a >10 MB key, several databases.
async fn populate(s: &RedisServer) {
    let mut c = s.conn(0).await;
    let big: Vec<u8> = (0..BIG_KEY_BYTES).map(|_| rand::random::<u8>()).collect();
    let mut p = redis::pipe();
    p.cmd("SET")
        .arg("str")
        .arg("hello")
        .cmd("SET")
        .arg("int")
        .arg(42)
        .cmd("HSET")
        .arg("hash")
        .arg("f1")
        .arg("v1")
        .arg("f2")
        .arg("v2")
        .cmd("RPUSH")
        .arg("list")
        .arg("a")
        .arg("b")
        .arg("c")
        .cmd("SADD")
        .arg("set")
        .arg("x")
        .arg("y")
        .arg("z")
        .cmd("SADD")
        .arg("intset")
        .arg(1)
        .arg(2)
        .arg(3)
        .cmd("ZADD")
        .arg("zset")
        .arg(1.5)
        .arg("a")
        .arg(2)
        .arg("b")
        .cmd("SET")
        .arg("ttl:str")
        .arg("v")
        .arg("EX")
        .arg(3600)
        .cmd("HSET")
        .arg("ttl:hash")
        .arg("f")
        .arg("v")
        .cmd("PEXPIRE")
        .arg("ttl:hash")
        .arg(7_200_000)
        .cmd("SET")
        .arg("big")
        .arg(big);
    for i in 0..1000 {
        p.cmd("HSET").arg("bighash").arg(format!("field{i}")).arg(i);
        p.cmd("ZADD").arg("bigzset").arg(i).arg(format!("m{i}"));
    }
    for i in 0..5 {
        p.cmd("XADD").arg("stream").arg("*").arg("n").arg(i);
    }
    p.cmd("XGROUP")
        .arg("CREATE")
        .arg("stream")
        .arg("g1")
        .arg("0");
    p.query_async::<()>(&mut c).await.unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g1")
        .arg("consumer1")
        .arg("COUNT")
        .arg(2)
        .arg("STREAMS")
        .arg("stream")
        .arg(">")
        .query_async(&mut c)
        .await
        .unwrap();
    let mut c1 = s.conn(1).await;
    redis::pipe()
        .cmd("SET")
        .arg("db1:a")
        .arg("1")
        .cmd("LPUSH")
        .arg("db1:list")
        .arg("q")
        .cmd("SET")
        .arg("db1:ttl")
        .arg("v")
        .arg("EX")
        .arg(500)
        .query_async::<()>(&mut c1)
        .await
        .unwrap();
    let mut c5 = s.conn(5).await;
    redis::cmd("SADD")
        .arg("db5:set")
        .arg("m")
        .query_async::<()>(&mut c5)
        .await
        .unwrap();
}

const EXPECTED_KEYS: [(u32, u64); 3] = [(0, 13), (1, 3), (5, 1)];

/// (database, key) → (dump, absolute expiry in ms).
type Dumped = BTreeMap<(u32, Vec<u8>), (Vec<u8>, i64)>;

/// Every key of every database: its `DUMP` and absolute expiry (ms, -1 = none).
///
/// A `hashtable`-encoded hash or set is dumped in its hash table's iteration
/// order, which a reload is free to change; for those the "dump" is the
/// sorted content instead (every other encoding is compared byte for byte).
async fn dump_all(s: &RedisServer) -> Dumped {
    let mut out = BTreeMap::new();
    for db in 0..16 {
        let mut c = s.conn(db).await;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .unwrap();
        for k in keys {
            let enc: String = redis::cmd("OBJECT")
                .arg("ENCODING")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap();
            let d: Vec<u8> = if enc == "hashtable" {
                let t: String = redis::cmd("TYPE")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let mut items: Vec<Vec<u8>> = match t.as_str() {
                    "hash" => redis::cmd("HGETALL")
                        .arg(&k)
                        .query_async::<Vec<(Vec<u8>, Vec<u8>)>>(&mut c)
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|(f, v)| [f, b"=".to_vec(), v].concat())
                        .collect(),
                    _ => redis::cmd("SMEMBERS")
                        .arg(&k)
                        .query_async(&mut c)
                        .await
                        .unwrap(),
                };
                items.sort();
                [format!("{t}:").into_bytes(), items.join(&b'\n')].concat()
            } else {
                redis::cmd("DUMP")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
                    .unwrap()
            };
            let t: i64 = redis::cmd("PEXPIRETIME")
                .arg(&k)
                .query_async(&mut c)
                .await
                .unwrap();
            out.insert((db, k), (d, t));
        }
    }
    out
}

fn assert_same_data(a: &Dumped, b: &Dumped) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "the same keys in the same databases");
    let counts: BTreeMap<u32, u64> = a.keys().fold(BTreeMap::new(), |mut m, (db, _)| {
        *m.entry(*db).or_default() += 1;
        m
    });
    assert_eq!(counts, BTreeMap::from(EXPECTED_KEYS));
    let mut ttls = 0;
    for (k, (dump_a, t_a)) in a {
        let (dump_b, t_b) = &b[k];
        assert!(
            dump_a == dump_b,
            "DUMP of {:?} differs",
            String::from_utf8_lossy(&k.1)
        );
        assert!(
            (t_a - t_b).abs() <= 1000,
            "TTL of {:?}: {t_a} vs {t_b}",
            String::from_utf8_lossy(&k.1)
        );
        assert_eq!(*t_a == -1, *t_b == -1);
        if *t_a > 0 {
            ttls += 1;
        }
    }
    assert_eq!(ttls, 3, "keys with TTLs survive");
    let big = &a[&(0, b"big".to_vec())].0;
    assert!(big.len() > BIG_KEY_BYTES);
}

fn details(m: &Manifest) -> &serde_json::Value {
    &m.consistency.details
}

async fn snapshot_roundtrip(diskless: bool) {
    let primary = RedisServer::start(Opts {
        diskless,
        ..Opts::default()
    });
    populate(&primary).await;
    let ctx = ctx(&format!("addr = \"{}\"", primary.addr()));
    let out = gsdr::job::backup(&ctx.env, "cache", &NoProgress)
        .await
        .unwrap();
    let m = out.manifest;
    assert_eq!((m.engine.as_str(), m.kind.as_str()), ("redis", "rdb"));
    let d = details(&m);
    assert_eq!(d["framing"], if diskless { "eof-mark" } else { "length" });
    assert_eq!(d["master_replid"].as_str().unwrap().len(), 40);
    assert!(d["master_repl_offset"].as_u64().is_some());
    assert_eq!(d["rdb_version"], 10);
    assert!(d["redis_version"].as_str().unwrap().starts_with('7'));
    assert_eq!(d["keys_per_db"]["0"]["keys"], 13);
    assert_eq!(d["keys_per_db"]["1"]["keys"], 3);
    assert_eq!(d["keys_per_db"]["5"]["keys"], 1);
    assert!(
        d["rdb_crc64"].as_str().is_some(),
        "the checksum was verified"
    );
    assert!(m.consistency.consistency_time.unwrap() >= m.started_at);
    assert!(m.raw_bytes > BIG_KEY_BYTES as u64);

    // Restore to a file: a dump.rdb whose trailer checks out (no EOF mark left in it).
    let catalog = ctx.catalog().await;
    let data_dir = tempdir();
    let file = data_dir.path().join("dump.rdb");
    let req = RestoreRequest {
        to_file: Some(file.clone()),
        ..RestoreRequest::default()
    };
    let r = gsdr::job::restore(&ctx.env, &catalog, &m, &req, &NoProgress)
        .await
        .unwrap();
    assert_eq!(r.raw_bytes, m.raw_bytes);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, d["rdb_bytes"].as_u64().unwrap());
    assert!(bytes.starts_with(b"REDIS0010"));
    let (body, trailer) = bytes.split_at(bytes.len() - 8);
    assert_eq!(
        u64::from_le_bytes(trailer.try_into().unwrap()),
        rdb::crc64(body)
    );

    // A fresh redis-server started on it holds the same data.
    let fresh = RedisServer::start_in(Opts::default(), data_dir);
    assert_same_data(&dump_all(&primary).await, &dump_all(&fresh).await);

    let cfg = match &ctx.env.policy.sources["cache"].engine {
        Some(gsdr::source::EngineConfig::Redis(r)) => Some(r),
        _ => None,
    };
    let v = verify_deep(&ctx.env, cfg, &catalog, &m, &NoProgress)
        .await
        .unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.loaded_keys_per_db, BTreeMap::from(EXPECTED_KEYS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_snapshot_disk_framing_restores_to_file() {
    snapshot_roundtrip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_snapshot_diskless_framing_restores_to_file() {
    snapshot_roundtrip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_replica_snapshot_restores_into_live_instance() {
    let pw = "s3cret-pw";
    let primary = RedisServer::start(Opts {
        password: Some(pw.into()),
        ..Opts::default()
    });
    populate(&primary).await;
    let replica = RedisServer::start(Opts {
        password: Some(pw.into()),
        replica_of: Some(primary.port),
        ..Opts::default()
    });
    replica.wait_in_sync(&primary).await;
    let sentinel = Sentinel::start("mymaster", primary.port, Some(pw));
    let second = Sentinel::start("mymaster", primary.port, Some(pw));
    sentinel.wait_replicas("mymaster", 1).await;
    second.wait_replicas("mymaster", 1).await;

    let secret_dir = tempdir();
    let pw_file = write_file(secret_dir.path(), "pw", &format!("{pw}\n"));
    // One of the three sentinels is down: the two others are a majority.
    let ctx = ctx(&format!(
        "sentinels = [\"127.0.0.1:1\", \"{}\", \"{}\"]\nmaster_name = \"mymaster\"\npassword = {{ file = \"{}\" }}\nconnect_timeout = \"2s\"",
        sentinel.addr(),
        second.addr(),
        pw_file.display()
    ));
    let m = ctx.backup().await;
    let d = details(&m);
    assert_eq!(
        d["node"],
        replica.addr(),
        "the replica was snapshotted, not the master"
    );
    assert_eq!(d["role"], "slave");
    assert_eq!(d["discovery"]["role_chosen"], "replica");
    assert_eq!(d["discovery"]["master_addr"], primary.addr());
    let json = serde_json::to_string(&m).unwrap();
    assert!(!json.contains(pw), "no secret in the manifest");

    // Into a live, empty instance.
    let target = RedisServer::start(Opts::default());
    let catalog = ctx.catalog().await;
    let req = RestoreRequest {
        to_uri: Some(target.url(0)),
        ..RestoreRequest::default()
    };
    let out = gsdr::job::restore(&ctx.env, &catalog, &m, &req, &NoProgress)
        .await
        .unwrap();
    assert_eq!(out.details["keys_per_db"]["0"], 13);
    assert_same_data(&dump_all(&primary).await, &dump_all(&target).await);

    // A non-empty target is refused without --flush, and replaced with it.
    let err = gsdr::job::restore(&ctx.env, &catalog, &m, &req, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--flush"), "{err}");
    let mut tc = target.conn(2).await;
    redis::cmd("SET")
        .arg("stray")
        .arg("x")
        .query_async::<()>(&mut tc)
        .await
        .unwrap();
    let req = RestoreRequest {
        replace: true,
        ..req
    };
    gsdr::job::restore(&ctx.env, &catalog, &m, &req, &NoProgress)
        .await
        .unwrap();
    assert_same_data(&dump_all(&primary).await, &dump_all(&target).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_node_dying_mid_transfer_fails_the_backup() {
    let mut primary = RedisServer::start(Opts {
        diskless: true,
        extra: vec![("rdb-key-save-delay".into(), "1000".into())],
        ..Opts::default()
    });
    let mut c = primary.conn(0).await;
    let mut p = redis::pipe();
    for i in 0..4000 {
        p.cmd("SET").arg(format!("k{i}")).arg(i);
    }
    p.query_async::<()>(&mut c).await.unwrap();
    let ctx = Arc::new(ctx(&format!("addr = \"{}\"", primary.addr())));
    let c2 = ctx.clone();
    let job = tokio::spawn(async move { gsdr::job::backup(&c2.env, "cache", &NoProgress).await });
    // Wait for the fork that streams the snapshot, then kill the node.
    let start = std::time::Instant::now();
    while primary.children().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no snapshot fork started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.crash();
    let err = job.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("truncated") || err.contains("connection"),
        "{err}"
    );
    let listed = ctx.catalog().await.list(Some("cache")).await.unwrap();
    assert!(
        listed.is_empty(),
        "nothing listed after a failed backup: {listed:?}"
    );
    let _ = &ctx.dir;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wrong_or_missing_password_is_a_clear_error_acl_user_works() {
    let server = RedisServer::start(Opts {
        password: Some("the-right-one".into()),
        ..Opts::default()
    });
    let secret_dir = tempdir();
    let wrong = "Wr0ng-pa55word";
    let pw_file = write_file(secret_dir.path(), "pw", wrong);
    let ctx1 = ctx(&format!(
        "addr = \"{}\"\npassword = {{ file = \"{}\" }}",
        server.addr(),
        pw_file.display()
    ));
    let err = gsdr::job::backup(&ctx1.env, "cache", &NoProgress)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains("check username and password"),
        "{msg}"
    );
    assert!(!msg.contains(wrong), "the password never appears: {msg}");
    assert_eq!(err.retry_class(), gsdr::RetryClass::Permanent);

    let ctx2 = ctx(&format!("addr = \"{}\"", server.addr()));
    let msg = gsdr::job::backup(&ctx2.env, "cache", &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("authentication failed") && msg.contains("set `password`"),
        "{msg}"
    );
    for c in [&ctx1, &ctx2] {
        assert!(c.catalog().await.list(None).await.unwrap().is_empty());
    }

    // An ACL user with only the rights docs/redis.md lists can take snapshots.
    let mut admin = server.conn(0).await;
    redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "backup",
            "on",
            ">backup-pw",
            "+psync",
            "+replconf",
            "+info",
            "+ping",
        ])
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let pw_file = write_file(secret_dir.path(), "pw2", "backup-pw");
    let ctx3 = ctx(&format!(
        "addr = \"{}\"\nusername = \"backup\"\npassword = {{ file = \"{}\" }}",
        server.addr(),
        pw_file.display()
    ));
    let m = ctx3.backup().await;
    assert!(m.raw_bytes > 0);
}

/// Sentinel quorum: a master is taken only when a majority of the
/// *configured* sentinels name it. Two of three down, or a partitioned
/// sentinel naming another (stale) master against one naming the real one:
/// refused, nothing stored, the error saying what each sentinel said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_minority_or_split_answers_are_refused() {
    let primary = RedisServer::start(Opts::default());
    let replica = RedisServer::start(Opts {
        replica_of: Some(primary.port),
        ..Opts::default()
    });
    replica.wait_in_sync(&primary).await;
    let good = Sentinel::start("mq", primary.port, None);
    good.wait_replicas("mq", 1).await;
    // A stale master: a lone server another sentinel still monitors as `mq`.
    let stale = RedisServer::start(Opts::default());
    let partitioned = Sentinel::start("mq", stale.port, None);
    for (sentinels, what) in [
        (
            format!("\"127.0.0.1:1\", \"127.0.0.1:2\", \"{}\"", good.addr()),
            "one of three answers",
        ),
        (
            format!("\"{}\", \"{}\"", good.addr(), partitioned.addr()),
            "two sentinels name two masters",
        ),
    ] {
        let c = ctx(&format!(
            "sentinels = [{sentinels}]\nmaster_name = \"mq\"\nconnect_timeout = \"2s\"\nallow_master_fallback = true"
        ));
        let msg = gsdr::job::backup(&c.env, "cache", &NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("no majority of the")
                && msg.contains(&format!("names {}", primary.addr())),
            "{what}: {msg}"
        );
        assert!(
            c.catalog().await.list(None).await.unwrap().is_empty(),
            "{what}"
        );
    }
    // The good sentinel and a second one agreeing: the replica is snapshotted.
    let agreeing = Sentinel::start("mq", primary.port, None);
    agreeing.wait_replicas("mq", 1).await;
    let c = ctx(&format!(
        "sentinels = [\"{}\", \"{}\", \"{}\"]\nmaster_name = \"mq\"\nconnect_timeout = \"2s\"",
        good.addr(),
        partitioned.addr(),
        agreeing.addr()
    ));
    let m = c.backup().await;
    assert_eq!(m.consistency.details["node"], replica.addr());
    assert_eq!(
        m.consistency.details["discovery"]["sentinel"],
        format!("{},{}", good.addr(), agreeing.addr())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_without_replica_uses_master_only_if_allowed() {
    let primary = RedisServer::start(Opts::default());
    let mut c = primary.conn(0).await;
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async::<()>(&mut c)
        .await
        .unwrap();
    let sentinel = Sentinel::start("solo", primary.port, None);
    let base = format!(
        "sentinels = [\"{}\"]\nmaster_name = \"solo\"\n",
        sentinel.addr()
    );
    let refused = ctx(&base);
    let msg = gsdr::job::backup(&refused.env, "cache", &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("no healthy, in-sync replica") && msg.contains("allow_master_fallback"),
        "{msg}"
    );
    assert!(refused.catalog().await.list(None).await.unwrap().is_empty());

    let allowed = ctx(&format!("{base}allow_master_fallback = true"));
    let m = allowed.backup().await;
    assert_eq!(m.consistency.details["node"], primary.addr());
    assert_eq!(m.consistency.details["discovery"]["role_chosen"], "master");
    assert_eq!(m.consistency.details["keys_per_db"]["0"]["keys"], 1);
}

/// TLS everywhere, as a hardened deployment runs it: data nodes and the
/// sentinel listen with TLS and require client certificates (Redis's
/// default), replication between them is TLS. gsdr finds the replica through
/// the sentinel, snapshots it, writes the canary to the master and restores
/// into a `rediss://` target, all over TLS. Then the ways it goes wrong: no
/// client certificate, a CA that did not sign the server, plain TCP to a TLS
/// port — each a clear error, nothing listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_sentinel_snapshot_canary_and_restore_into_tls_target() {
    let certs_dir = tempdir();
    let tls = TlsFiles::generate(certs_dir.path());
    let with_tls = || Opts {
        tls: Some(tls.clone()),
        ..Opts::default()
    };
    let primary = RedisServer::start(with_tls());
    populate(&primary).await;
    let replica = RedisServer::start(Opts {
        replica_of: primary.tls_port,
        ..with_tls()
    });
    replica.wait_in_sync(&primary).await;
    let (sentinel, sentinel_tls) =
        Sentinel::start_tls("tlsmaster", primary.tls_port.unwrap(), None, Some(&tls));
    sentinel.wait_replicas("tlsmaster", 1).await;

    let main = ctx(&format!(
        "sentinels = [\"127.0.0.1:{}\"]\nmaster_name = \"tlsmaster\"\nconnect_timeout = \"5s\"\n{}",
        sentinel_tls.unwrap(),
        tls.policy_lines()
    ));
    let Some(gsdr::source::EngineConfig::Redis(cfg)) =
        main.env.policy.sources["cache"].engine.clone()
    else {
        panic!("a redis source");
    };
    gsdr::source::redis::probe("cache", &cfg).await.unwrap();
    let m = main.backup().await;
    let d = details(&m);
    assert_eq!(
        d["node"],
        format!("127.0.0.1:{}", replica.tls_port.unwrap()),
        "the replica's TLS port, as the sentinel announced it"
    );
    assert_eq!(d["discovery"]["role_chosen"], "replica");
    assert_eq!(d["keys_per_db"]["0"]["keys"], 13);

    // The drill canary goes to the master, over TLS.
    gsdr::drill::canary::write(&main.env, "cache")
        .await
        .unwrap();
    let mut pc = primary.conn(0).await;
    let canary: Option<String> = redis::cmd("GET")
        .arg("gsdr:canary")
        .query_async(&mut pc)
        .await
        .unwrap();
    assert!(canary.is_some(), "the canary reached the master");
    redis::cmd("DEL")
        .arg("gsdr:canary")
        .query_async::<()>(&mut pc)
        .await
        .unwrap();

    // Into a live TLS instance with the source's CA and client certificate.
    let target = RedisServer::start(with_tls());
    let catalog = main.catalog().await;
    let req = RestoreRequest {
        to_uri: Some(format!("rediss://127.0.0.1:{}/0", target.tls_port.unwrap())),
        ..RestoreRequest::default()
    };
    let out = gsdr::job::restore(&main.env, &catalog, &m, &req, &NoProgress)
        .await
        .unwrap();
    assert!(
        out.destination.starts_with("rediss://"),
        "{}",
        out.destination
    );
    assert_same_data(&dump_all(&primary).await, &dump_all(&target).await);

    // The ways TLS goes wrong, each a clear error, nothing listed.
    let node = format!("127.0.0.1:{}", primary.tls_port.unwrap());
    let other_dir = tempdir();
    let other = TlsFiles::generate(other_dir.path());
    let cases = [
        (
            // The server requires a client certificate.
            format!(
                "addr = \"{node}\"\ntls = true\ntls_ca_file = \"{}\"",
                tls.ca.display()
            ),
            "requires a client certificate: set `tls_cert_file`",
        ),
        (
            // The server's certificate is not signed by the configured CA.
            format!(
                "addr = \"{node}\"\ntls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
                other.ca.display(),
                tls.client_cert.display(),
                tls.client_key.display()
            ),
            "not signed by the CA in `tls_ca_file`",
        ),
        (
            // Plain TCP to the TLS port.
            format!("addr = \"{node}\"\nconnect_timeout = \"2s\""),
            "set `tls = true`",
        ),
    ];
    for (toml, expected) in cases {
        let c = ctx(&toml);
        let err = gsdr::job::backup(&c.env, "cache", &NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected) && err.contains(&node),
            "{toml}: {err}"
        );
        assert!(!err.contains("PRIVATE KEY"), "{err}");
        assert!(c.catalog().await.list(None).await.unwrap().is_empty());
    }

    // A key file that is not a key: named, never quoted.
    let bad_key = write_file(certs_dir.path(), "bad.key", "not a key at all");
    let c = ctx(&format!(
        "addr = \"{node}\"\ntls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
        tls.ca.display(),
        tls.client_cert.display(),
        bad_key.display()
    ));
    let err = gsdr::job::backup(&c.env, "cache", &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("tls_key_file"), "{err}");
    assert!(!err.contains("not a key at all"), "{err}");
}

/// Issue 19: keys whose TTL runs out seconds after the backup. The scratch
/// server loading the snapshot as a master drops them, so a deep verify must
/// count them from the RDB itself and say how many it excluded — not fail a
/// healthy backup against counts taken before the fork.
#[test]
fn redis_deep_verify_passes_after_keys_expired_and_prints_the_excluded_count() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = RedisServer::start(Opts::default());
    rt.block_on(async {
        for (db, live, ttl) in [(0u32, 200, 30), (1, 50, 10)] {
            let mut c = src.conn(db).await;
            let mut p = redis::pipe();
            for i in 0..live {
                p.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
            }
            for i in 0..ttl {
                // Expire a few seconds after the backup, well before the verify.
                p.cmd("SET")
                    .arg(format!("soon{i}"))
                    .arg(i)
                    .arg("PX")
                    .arg(2500)
                    .ignore();
            }
            p.query_async::<()>(&mut c).await.unwrap();
        }
    });
    let fx = crate::cli::Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
        src.addr()
    ));
    let b = fx.gsdr_json(&["backup", "--source", "cache"]);
    let id = b["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait until the source itself has expired every TTL key (not a fixed sleep).
    rt.block_on(async {
        let start = std::time::Instant::now();
        for db in [0u32, 1] {
            let mut c = src.conn(db).await;
            loop {
                let left: u64 = redis::cmd("EXISTS")
                    .arg((0..30).map(|i| format!("soon{i}")).collect::<Vec<_>>())
                    .query_async(&mut c)
                    .await
                    .unwrap();
                if left == 0 {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "keys never expired"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let out = fx.gsdr(&["verify", &id, "--deep"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "deep verify failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("40 expired keys excluded"), "{text}");
    let j = fx.gsdr_json(&["verify", &id, "--deep"]);
    let d = &j["deep"][0];
    assert_eq!(d["ok"], true, "{j}");
    assert_eq!(d["rdb_keys_per_db"]["0"], 230, "{j}");
    assert_eq!(d["rdb_keys_per_db"]["1"], 60, "{j}");
    assert_eq!(d["loaded_keys_per_db"]["0"], 200, "{j}");
    assert_eq!(d["loaded_keys_per_db"]["1"], 50, "{j}");
    assert_eq!(d["expired_excluded"], 40, "{j}");
}

/// Issue 11: a restore over a live Redis with `--flush` but the wrong age
/// identity fails before the target is touched — every key is still there.
#[test]
fn redis_restore_over_a_live_target_with_a_wrong_identity_leaves_it_as_it_was() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = RedisServer::start(Opts::default());
    let target = RedisServer::start(Opts::default());
    rt.block_on(async {
        populate(&src).await;
        let mut c = target.conn(0).await;
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
    let before = rt.block_on(dump_all(&target));
    assert_eq!(before.len(), 501);
    let fx = crate::cli::Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
        src.addr()
    ));
    fx.gsdr_json(&["backup", "--source", "cache"]);
    let wrong = fx.dir.path().join("wrong.key");
    let out = fx.gsdr(&["keygen", "-o", wrong.to_str().unwrap()]);
    assert!(out.status.success());
    let url = target.url(0);
    let out = fx.gsdr(&[
        "--identity",
        wrong.to_str().unwrap(),
        "restore",
        "--source",
        "cache",
        "--to",
        &url,
        "--flush",
        "--yes",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = rt.block_on(dump_all(&target));
    assert_eq!(after.len(), before.len(), "no key was flushed");
    for (k, (d, t)) in &before {
        let (d2, t2) = &after[k];
        assert!(d == d2 && (t - t2).abs() <= 1000, "key {:?} changed", k);
    }
    // With the right identity the same command replaces the target.
    let out = fx.gsdr(&[
        "restore", "--source", "cache", "--to", &url, "--flush", "--yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_data(
        &rt.block_on(dump_all(&src)),
        &rt.block_on(dump_all(&target)),
    );
}

/// Issue 18: `verify --deep A B` deep-checks every id even when one cannot
/// be deep-checked (its scratch `redis-server` cannot start): that id's
/// error is in its own entry, the other's result is there, and the exit
/// code is the worst class (2: the check could not run).
#[test]
fn deep_verify_of_several_ids_reports_each_and_exits_with_the_worst_class() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = RedisServer::start(Opts::default());
    rt.block_on(populate(&src));
    let fx = crate::cli::Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.good]\nkind = \"redis\"\n[sources.good.redis]\naddr = \"{0}\"\n\
         [sources.bad]\nkind = \"redis\"\n[sources.bad.redis]\naddr = \"{0}\"\nredis_server = \"/nonexistent/redis-server\"\n",
        src.addr()
    ));
    let b = fx.gsdr_json(&["backup"]);
    let ids: Vec<(String, String)> = b["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["manifest"]["source"].as_str().unwrap().to_string(),
                x["manifest"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids.len(), 2, "{b}");
    let id_of = |s: &str| ids.iter().find(|(src, _)| src == s).unwrap().1.clone();
    let (good, bad) = (id_of("good"), id_of("bad"));
    let out = fx.gsdr(&["--json", "verify", &bad, &good, "--deep"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let deep = j["deep"].as_array().unwrap();
    assert_eq!(deep.len(), 2, "{j}");
    let entry = |id: &str| {
        deep.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {j}"))
    };
    assert_eq!(entry(&good)["ok"], true, "{j}");
    assert_eq!(entry(&bad)["ok"], false, "{j}");
    assert!(
        entry(&bad)["error"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/redis-server"),
        "{j}"
    );
    assert!(
        j["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["ok"] == true),
        "{j}"
    );
}

/// Least privilege (docs/security.md): the ACL user gsdr needs to snapshot
/// and to write its canary, and nothing more — `INFO`, `REPLCONF`, `PSYNC`,
/// `PING`, and `SET`/`GET` on the canary key only. With it a backup and a
/// canary succeed; without `psync` the backup fails naming the missing
/// permission; the user cannot touch other keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_least_privilege_acl_user_snapshots_and_writes_the_canary() {
    let server = RedisServer::start(Opts::default());
    populate(&server).await;
    let mut admin = server.conn(0).await;
    let acl = "on >gsdr-acl-pw resetkeys ~gsdr:canary resetchannels -@all +info +replconf +psync +ping +set +get";
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg("gsdr");
    for rule in acl.split(' ') {
        setuser.arg(rule);
    }
    setuser.query_async::<()>(&mut admin).await.unwrap();
    let pw = write_file(tempdir().keep().as_path(), "pw", "gsdr-acl-pw\n");
    let c = ctx(&format!(
        "addr = \"{}\"\nusername = \"gsdr\"\npassword = {{ file = \"{}\" }}",
        server.addr(),
        pw.display()
    ));
    let m = c.backup().await;
    assert_eq!(m.consistency.details["keys_per_db"]["0"]["keys"], 13);
    gsdr::drill::canary::write(&c.env, "cache").await.unwrap();
    let canary: Option<String> = redis::cmd("GET")
        .arg("gsdr:canary")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(canary.is_some(), "the canary was written with the ACL user");
    // The user reaches nothing else.
    let mut as_gsdr = redis::Client::open(format!("redis://gsdr:gsdr-acl-pw@{}/0", server.addr()))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let denied = redis::cmd("GET")
        .arg("string")
        .query_async::<Option<String>>(&mut as_gsdr)
        .await
        .unwrap_err()
        .to_string();
    assert!(denied.to_lowercase().contains("noperm"), "{denied}");
    // Without PSYNC the snapshot is refused, and the error says so.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("gsdr")
        .arg("-psync")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let err = gsdr::job::backup(&c.env, "cache", &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("noperm") || err.to_lowercase().contains("permission"),
        "{err}"
    );
}
