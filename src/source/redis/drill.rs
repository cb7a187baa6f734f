//! Redis in drills and incidents: a scratch `redis-server` loading the RDB
//! (drill), or the snapshot copied key by key into the endpoint (incident).

use std::path::Path;

use super::{restore, RedisEngine, ScratchServer};
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::{
    find_program, redact_uri, RestoreCtx, RestoreSpec, RestoreTarget, Scratch, StandIn, StandInTo,
    StoodIn,
};

/// The scenario steps of this engine.
pub const DRILL_STEPS: &[&str] = &["restore_redis", "redis_keys"];

/// Restores into a scratch server (drill) or the endpoint (incident).
pub(super) async fn stand_in(
    e: &RedisEngine,
    ctx: &RestoreCtx<'_>,
    req: &StandIn<'_>,
) -> Result<StoodIn> {
    match &req.to {
        StandInTo::Scratch { dir, .. } => {
            // A captured source replays its log (to `until`, or as far as it reaches).
            let base = match e.capture.is_some() {
                true => super::replay::pick_base(ctx.catalog, ctx.manifest, req.until).await?,
                false => ctx.manifest.clone(),
            };
            let outcome = crate::source::restore_raw_to_file(
                ctx.host,
                ctx.catalog,
                &base,
                &dir.join("dump.rdb"),
                true,
                ctx.progress,
            )
            .await?;
            let server = ScratchServer::start(&e.redis_server(), dir).await?;
            let replayed = match e.capture.is_some() {
                true => {
                    let r = super::replay::replay(
                        ctx.catalog.store(),
                        ctx.host.identities()?,
                        &base,
                        req.until,
                        server.port,
                        server.password(),
                    )
                    .await?;
                    Some(format!(
                        "replayed {} capture segment(s) of base {} to {}{}",
                        r.segments,
                        r.base,
                        r.reached.map(|t| t.to_rfc3339()).unwrap_or_default(),
                        if r.short_of_target { " (the log ends there)" } else { "" }
                    ))
                }
                false => None,
            };
            let uri = server.uri();
            Ok(StoodIn {
                outcome,
                into: redact_uri(&uri),
                uri,
                what: "backup",
                replayed,
                server: Some(Box::new(server)),
                start_hint: None,
            })
        }
        StandInTo::Endpoint { endpoint, .. } => {
            let spec = RestoreSpec {
                replace: true,
                point: match (e.capture.is_some(), req.until) {
                    (false, _) => crate::source::RecoveryPoint::Backup,
                    (true, Some(t)) => crate::source::RecoveryPoint::Time(t),
                    (true, None) => crate::source::RecoveryPoint::Latest,
                },
                ..RestoreSpec::new(RestoreTarget::Server(endpoint.to_string()))
            };
            let outcome = restore(ctx, e.config.as_ref(), &spec)
            .await?;
            Ok(StoodIn {
                outcome,
                into: redact_uri(endpoint),
                uri: endpoint.to_string(),
                what: "backup",
                replayed: None,
                server: None,
                start_hint: None,
            })
        }
    }
}

/// The scratch server's program must be installed.
pub(super) fn scratch_programs(e: &RedisEngine) -> std::result::Result<(), String> {
    let bin = e.redis_server();
    if find_program(Path::new(&bin)).is_none() {
        return Err(format!(
            "`{bin}` (for the scratch Redis) is not found; install redis-server or set sources.{}.redis.redis_server",
            e.name
        ));
    }
    Ok(())
}

/// Keys in every database of the restored Redis at `uri`.
pub(super) async fn count(uri: &str, query: Option<&str>) -> Result<i64> {
    if let Some(q) = query {
        return Err(Error::Invalid(format!(
            "a Redis check counts keys; it takes no query (got `{q}`)"
        )));
    }
    Ok(super::canary::key_count(uri).await? as i64)
}
