//! PostgreSQL in drills and incidents: the base backup plus WAL up to the
//! target, into a scratch directory started on a free port until it promotes
//! (drill), or into the endpoint directory, ready to start or started (incident).

use std::path::{Path, PathBuf};

use super::{restore, scratch::ScratchPg, PgScratch, PostgresEngine};
use crate::source::error::{EngineError, EngineResult as Result};
use crate::source::{
    find_program, RecoveryPoint, RestoreCtx, RestoreSpec, RestoreTarget, Scratch, StandIn,
    StandInTo, StoodIn,
};

/// The scenario steps of this engine.
pub const DRILL_STEPS: &[&str] = &["restore_postgres_pitr", "sql"];

/// Restores into a scratch server (drill) or the endpoint directory (incident).
pub(super) async fn stand_in(
    e: &PostgresEngine,
    ctx: &RestoreCtx<'_>,
    req: &StandIn<'_>,
) -> Result<StoodIn> {
    let cfg = e.config()?;
    let (dir, keep_archiving) = match &req.to {
        StandInTo::Scratch { dir, .. } => (dir.join("pgdata"), false),
        StandInTo::Endpoint {
            endpoint,
            keep_archiving,
            ..
        } => (PathBuf::from(endpoint), *keep_archiving),
    };
    let spec = RestoreSpec {
        point: req.until.map_or(RecoveryPoint::Latest, RecoveryPoint::Time),
        replace: true,
        from_target: Some(req.from_target.to_string()),
        // Drills never archive; an incident does what the operator chose.
        keep_archiving,
        ..RestoreSpec::new(RestoreTarget::DataDir(dir.clone()))
    };
    let outcome = restore::restore(
        ctx.host,
        Some(cfg),
        ctx.catalog,
        &ctx.manifest.source,
        Some(ctx.manifest),
        &spec,
        ctx.progress,
    )
    .await?;
    let replayed = Some(format!(
        "replayed WAL to {}",
        req.until
            .map(|t| format!("time {}", t.to_rfc3339()))
            .unwrap_or_else(|| "the end of the archive".into())
    ));
    let mut start_hint = None;
    let (uri, into, server): (String, String, Option<Box<dyn Scratch>>) = match &req.to {
        StandInTo::Scratch { .. } => {
            let pg = ScratchPg::start(&e.name, cfg, &dir).await?;
            let uri = pg.conn_string(cfg);
            let into = format!("scratch PostgreSQL on {} ({})", pg.shown(), dir.display());
            (
                uri.clone(),
                into,
                Some(Box::new(PgScratch { server: pg, uri })),
            )
        }
        StandInTo::Endpoint { start, .. } => {
            // The checks connect where clients do: the source's own endpoint.
            let conn = format!(
                "host={} port={} user={} dbname={}",
                cfg.host, cfg.port, cfg.user, cfg.dbname
            );
            let into = if *start {
                ScratchPg::start_endpoint(&e.name, cfg, &dir).await?.detach();
                format!(
                    "{} (started with pg_ctl on port {}, promoted)",
                    dir.display(),
                    cfg.port
                )
            } else {
                start_hint = Some(
                    "start PostgreSQL on the restored data directory (or pass --start-postgres), then rerun with --resume".to_string(),
                );
                format!(
                    "{} (prepared: start PostgreSQL on it; the checks connect to {}:{})",
                    dir.display(),
                    cfg.host,
                    cfg.port
                )
            };
            (conn, into, None)
        }
    };
    Ok(StoodIn {
        outcome,
        uri,
        into,
        what: "base backup",
        replayed,
        server,
        start_hint,
    })
}

/// The scratch server's programs (`pg_ctl`, `postgres`) must be installed.
pub(super) fn scratch_programs(e: &PostgresEngine) -> std::result::Result<(), String> {
    let source = &e.name;
    let pg = e
        .config
        .as_ref()
        .ok_or_else(|| format!("source `{source}` has no [sources.{source}.postgres]"))?;
    for prog in ["pg_ctl", "postgres"] {
        let p = pg.program(prog);
        if find_program(&p).is_none() {
            return Err(format!(
                "`{}` (for the scratch PostgreSQL) is not found; set sources.{source}.postgres.pg_bin to the folder of the PostgreSQL programs",
                p.display()
            ));
        }
    }
    Ok(())
}

/// The integer SQL `query` returns in the restored PostgreSQL reachable at
/// `uri` (with the source's password).
pub(super) async fn count(e: &PostgresEngine, uri: &str, query: Option<&str>) -> Result<i64> {
    let query = query.ok_or_else(|| {
        EngineError::Invalid("a PostgreSQL check runs a query: give it one".into())
    })?;
    let conn = super::canary::restored_conn(&e.name, uri, e.config.as_ref())?;
    super::scratch::query_i64(&conn, query).await
}

/// An incident endpoint of PostgreSQL is a data directory.
pub(super) fn endpoint_target(endpoint: &str) -> RestoreTarget {
    RestoreTarget::DataDir(Path::new(endpoint).to_path_buf())
}
