//! MongoDB in drills and incidents: restored into a scratch `mongod` the
//! drill starts, or into the endpoint (incident).

use std::path::Path;

use super::{restore, MongoEngine};
use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::{
    find_program, redact_uri, RecoveryPoint, RestoreCtx, RestoreSpec, RestoreTarget, Scratch,
    StandIn, StandInTo, StoodIn,
};

/// The scenario steps of this engine.
pub const DRILL_STEPS: &[&str] = &["restore_mongo", "mongo_count"];

/// Restores into a scratch server (drill) or the endpoint (incident), up to
/// `req.until` where the backup's oplog reaches.
pub(super) async fn stand_in(
    e: &MongoEngine,
    ctx: &RestoreCtx<'_>,
    req: &StandIn<'_>,
) -> Result<StoodIn> {
    let (uri, server): (String, Option<Box<dyn Scratch>>) = match &req.to {
        StandInTo::Scratch { dir, argv } => {
            let s = super::scratch::ScratchMongo::start(argv, dir).await?;
            (s.uri(), Some(Box::new(s)))
        }
        StandInTo::Endpoint { endpoint, .. } => (endpoint.to_string(), None),
    };
    let spec = RestoreSpec {
        replace: true,
        point: req.until.map_or(RecoveryPoint::Backup, RecoveryPoint::Time),
        ..RestoreSpec::new(RestoreTarget::Server(uri.clone()))
    };
    let outcome = match restore(ctx, e.config.as_ref(), &spec)
    .await
    {
        Ok(o) => o,
        Err(e) => {
            if let Some(s) = server {
                s.stop().await;
            }
            return Err(e);
        }
    };
    Ok(StoodIn {
        outcome,
        into: redact_uri(&uri),
        uri,
        what: "backup",
        replayed: None,
        server,
        start_hint: None,
    })
}

/// The scratch server's program (`drills.mongo_scratch_argv[0]`) must be installed.
pub(super) fn scratch_programs(argv: &[String]) -> std::result::Result<(), String> {
    let Some(prog) = argv.first() else {
        return Err("drills.mongo_scratch_argv is empty: name the server program".into());
    };
    if find_program(Path::new(prog)).is_none() {
        return Err(format!(
            "`{prog}` (drills.mongo_scratch_argv[0], the scratch MongoDB) is not found on PATH; install it or set drills.mongo_scratch_argv"
        ));
    }
    Ok(())
}

/// Documents in collection `query` (`db.collection`) of the restored MongoDB at `uri`.
pub(super) async fn count(uri: &str, query: Option<&str>) -> Result<i64> {
    let ns = query.ok_or_else(|| {
        Error::Invalid("a MongoDB check counts a collection: name it as db.collection".into())
    })?;
    Ok(super::scratch::count(uri, ns).await? as i64)
}
