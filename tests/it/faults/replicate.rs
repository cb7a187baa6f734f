//! Replication (`gsdr replicate`: primary GET streamed into the off-site
//! PUT) with the primary stalling mid-copy: the run ends within a bound
//! (the S3 `read_timeout` on every download, three attempts with backoff;
//! the next backup waits for the next sweep), exits non-zero naming the
//! stalled side and the cause, the off-site catalog lists
//! nothing half-copied, and the next run completes the copy. (An off-site
//! that stalls is a case in `mod.rs`.)

use std::time::Duration;

use super::{check, s3_target_toml, text, with_fault_after, Case};
use crate::cli::Fixture;
use crate::support::faults::{FaultProxy, Mode};
use crate::support::moto::Moto;

/// How long after the stall the run must have ended (three attempts of one
/// copy, each bounded by `read_timeout`/`request_timeout`, with their backoff).
const BOUND: Duration = Duration::from_secs(45);

/// The primary stalls while its backup streams off-site.
pub(super) fn replicate_with_the_primary_stalled(
    rt: &tokio::runtime::Runtime,
    moto: &Moto,
) -> Case {
    let prim = rt.block_on(FaultProxy::start(moto.port()));
    let off = rt.block_on(FaultProxy::start(moto.port()));
    let f = Fixture::new(&format!(
        "{}{}[defaults]\ntarget = \"s3\"\noffsite = \"off\"\n[pipeline]\nstall_timeout = \"5s\"\n\
         [compression]\nlevel = 1\n{}",
        s3_target_toml(moto, &prim, "replprim").replace("max_attempts = 2", "max_attempts = 1"),
        s3_target_toml(moto, &off, "featoff").replace("[targets.s3]", "[targets.off]"),
        super::command_source("rs", "head -c 12000000 /dev/urandom"),
    ));
    std::fs::write(f.dir.path().join("s3-key"), "test").unwrap();
    let (side, proxy, needle) = ("primary", &prim, "replprim");
    // Two backups to copy: the first stalls, the second waits for the next sweep.
    for _ in 0..2 {
        let o = f.gsdr(&["backup", "--source", "rs"]);
        check(o.status.success(), || text(&o))?;
    }
    prim.throttle(4 << 20);
    off.throttle(4 << 20);
    let r = with_fault_after(&f, &["replicate"], Duration::from_millis(1200), || {
        proxy.set(Mode::Stall)
    });
    prim.throttle(0);
    off.throttle(0);
    let (o, took) = r?;
    proxy.set(Mode::Pass);
    eprintln!(
        "  replicate / {side} stalled: failed {:.1} s after the fault: {}",
        took.as_secs_f64(),
        text(&o).lines().last().unwrap_or_default()
    );
    check(took < BOUND && o.status.code() == Some(2), || {
        format!(
            "replicate with the {side} stalled: {:?} after {took:?} (bound {BOUND:?}): {}",
            o.status,
            text(&o)
        )
    })?;
    check(
        text(&o).contains("stopped answering") && text(&o).contains("not tried in this sweep"),
        || {
            format!(
                "the copy's cause and the backup left for the next sweep must be named: {}",
                text(&o)
            )
        },
    )?;
    check(text(&o).contains(needle), || {
        format!(
            "the error must name the stalled {side} ({needle}): {}",
            text(&o)
        )
    })?;
    // Nothing half-copied is listed off-site or left there after gc, nothing
    // is lost on the primary; the next run copies both whole.
    check(super::listed(&f, &["--target", "off"]) == 0, || {
        "a half-copied backup is listed off-site".into()
    })?;
    check(super::listed(&f, &[]) == 2, || {
        "the primary lost a backup".into()
    })?;
    super::gc_leaves_nothing(&f, rt, moto, "featoff")?;
    let o = f.gsdr(&["replicate", "--check"]);
    check(!o.status.success(), || {
        "replicate --check passes with a copy missing".into()
    })?;
    let o = f.gsdr(&["replicate"]);
    check(o.status.success(), || {
        format!("replicate after the stall: {}", text(&o))
    })?;
    check(super::listed(&f, &["--target", "off"]) == 2, || {
        "the next sweep did not copy both backups".into()
    })?;
    let o = f.gsdr(&["verify", "--source", "rs", "--target", "off"]);
    check(o.status.success(), || {
        format!("verify of the off-site copy: {}", text(&o))
    })
}
