//! A drill whose download is cut: `gsdr drill` restores a Redis backup from
//! S3 into a scratch `redis-server` while the S3 connection is cut. It exits
//! non-zero within a bound, its report says the restore step failed, and the
//! scratch server and directory are gone; the next drill passes.

use std::time::Duration;

use super::engines::BOUND;
use super::{check, s3_fixture, text, with_fault_after, Case};
use crate::support::faults::{FaultProxy, Mode};
use crate::support::moto::Moto;

const SCENARIO: &str = r#"
name = "redis-loss"
title = "Redis is lost"
description = "Restore the RDB into a scratch redis-server and count its keys."

[[steps]]
name = "restore-redis"
kind = "restore_redis"
source = "cache"

[[steps]]
name = "keys"
kind = "redis_keys"
source = "cache"
min = 2500
after = ["restore-redis"]
"#;

/// The port of the scratch server a drill report names (`into` of its first step).
fn scratch_port(report: &serde_json::Value) -> Option<u16> {
    report["steps"][0]["into"]
        .as_str()?
        .rsplit(':')
        .next()?
        .split('/')
        .next()?
        .parse()
        .ok()
}

pub(super) fn drill_with_s3_cut(rt: &tokio::runtime::Runtime, moto: &Moto) -> Case {
    let server = crate::support::redis::RedisServer::start(Default::default());
    rt.block_on(super::engines::fill_redis(server.port, 2500, 4000));
    let s3 = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &s3,
        "drillcut",
        &format!(
            "[sources.cache]\nkind = \"redis\"\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
             [sources.cache.redis]\naddr = \"{}\"\n",
            server.addr()
        ),
    );
    let o = f.gsdr(&["backup", "--source", "cache"]);
    check(o.status.success(), || text(&o))?;
    let rb = crate::drill::runbooks(&f, "redis-loss", SCENARIO);
    let scratch = f.dir.path().join("scratch");
    let args = [
        "--json",
        "drill",
        "--scenario",
        "redis-loss",
        "--runbooks",
        rb.to_str().unwrap(),
        "--scratch-dir",
        scratch.to_str().unwrap(),
    ];
    s3.throttle(3 << 20);
    let r = with_fault_after(&f, &args, Duration::from_millis(1000), || s3.set(Mode::Cut));
    s3.set(Mode::Pass);
    s3.throttle(0);
    let (o, took) = r?;
    eprintln!(
        "  drill / S3 cut: ended {:.1} s after the fault with {:?}",
        took.as_secs_f64(),
        o.status.code()
    );
    check(
        took < BOUND && matches!(o.status.code(), Some(1 | 2)),
        || {
            format!(
                "drill under a cut: {:?} after {took:?}: {}",
                o.status,
                text(&o)
            )
        },
    )?;
    if let Ok(j) = serde_json::from_slice::<serde_json::Value>(&o.stdout) {
        let r = &j["reports"][0]["report"];
        let step = r["steps"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "restore-redis"));
        check(step.is_some_and(|s| s["status"] == "failed"), || {
            format!("the report does not say the restore failed: {r}")
        })?;
        check(r["scratch_cleaned"] == true, || {
            format!("scratch not cleaned: {r}")
        })?;
        if let Some(port) = scratch_port(r) {
            check(
                std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
                || format!("the scratch redis-server still listens on {port}"),
            )?;
        }
    }
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    check(left.is_empty(), || format!("scratch left behind: {left:?}"))?;
    // With the server back, the same drill passes.
    let o = f.gsdr(&args);
    check(o.status.success(), || {
        format!("the drill after the fault: {}", text(&o))
    })
}
