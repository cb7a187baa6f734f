//! Garbage collection as the daemon and `gsdr storage gc` run it: on every
//! target of the policy, keeping off the sources whose run lease is held.
//!
//! A lease ([`crate::scheduler::lease`]) that is neither released nor expired means a
//! run of that source may be writing right now (an upload can take longer
//! than the grace period); [`live_runs`] reads every source's lease, and
//! [`crate::job::gc::gc_target`] keeps everything of those sources.
//! An unreadable lease counts as live: when in doubt, keep.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::job::gc::{gc_target, GcOptions, TargetGc};
use crate::job::Env;
use crate::metrics::events;
use crate::scheduler::lease::{lease_key, LeaseDoc};

const LEASE_MAX_BYTES: u64 = 64 << 10;

/// Sources of the policy whose run lease is live at `now` (source → holder).
pub async fn live_runs(env: &Env, now: DateTime<Utc>) -> Result<BTreeMap<String, String>> {
    let locks = &env.policy.daemon.locks_prefix;
    let mut out = BTreeMap::new();
    for source in env.policy.sources.keys() {
        let Some(target) = env.policy.target_of(source) else {
            continue;
        };
        let store = env.store(target).await?;
        let key = lease_key(locks, source);
        match store.get_small(&key, LEASE_MAX_BYTES).await {
            Ok((bytes, _)) => match serde_json::from_slice::<LeaseDoc>(&bytes) {
                Ok(doc) if !doc.released && doc.expires_at > now => {
                    out.insert(source.clone(), doc.holder);
                }
                Ok(_) => {}
                Err(_) => {
                    out.insert(source.clone(), format!("unreadable lease `{key}`"));
                }
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Collects the garbage of every target of the policy (or of `only`), leftovers
/// older than `grace` and of no live run. A target that cannot be collected is
/// reported by a [`events::GcFailed`] event and the error; the others go on.
pub async fn collect(
    env: &Env,
    only: Option<&str>,
    grace: Duration,
    dry_run: bool,
) -> Result<Vec<std::result::Result<TargetGc, (String, Error)>>> {
    if let Some(t) = only {
        if !env.policy.targets.contains_key(t) {
            return Err(Error::Invalid(format!(
                "unknown target `{t}` in {}; defined targets: {}",
                env.policy.path.display(),
                env.policy
                    .targets
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let now = Utc::now();
    let busy = live_runs(env, now).await?;
    let opts = GcOptions {
        grace,
        dry_run,
        now,
        busy,
    };
    let mut out = Vec::new();
    for name in env.policy.targets.keys() {
        if only.is_some_and(|t| t != name) {
            continue;
        }
        let r = async {
            let store = env.store(name).await?;
            gc_target(name, &store, &opts).await
        }
        .await;
        out.push(r.map_err(|e| {
            events::GcFailed {
                target: name,
                key: "",
                error: &e.to_string(),
            }
            .emit();
            (name.clone(), e)
        }));
    }
    Ok(out)
}

/// The daemon's garbage collection: once at start, then every
/// `daemon.gc_every`, with `daemon.gc_grace`, until `stop`. Failures are
/// reported (events, `gsdr_gc_failures_total`) and retried at the next round.
pub async fn run_every(env: Arc<Env>, stop: CancellationToken) {
    let (every, grace) = (env.policy.daemon.gc_every.0, env.policy.daemon.gc_grace.0);
    loop {
        tokio::select! {
            r = collect(&env, None, grace, false) => {
                if let Err(e) = r {
                    events::GcFailed { target: "", key: "", error: &e.to_string() }.emit();
                }
            }
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
    }
}
