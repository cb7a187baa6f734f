//! Restore steps of the engines: into scratch servers (drills) or the real
//! endpoints (incidents). Scratch servers are registered in the run's context
//! so the runner stops them at the end, also when a step failed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::ctx::{planned_backup, restored_of, Ctx, Restored};
use super::report::{RunKind, StepReport};
use super::scenario::Step;
use crate::error::Error;

pub(super) fn server_uri(ctx: &Ctx<'_>, st: &Step, source: &str) -> Result<String, Error> {
    restored_of(ctx, source)?.uri.ok_or_else(|| {
        Error::Invalid(format!(
            "check `{}`: source `{source}` was restored to a file, not a server",
            st.name
        ))
    })
}

/// Redis: into a scratch `redis-server` loading the RDB (drill), or copied key by key into the real endpoint (incident).
pub(super) async fn restore_redis(
    ctx: &Ctx<'_>,
    st: &Step,
    source: &str,
    rep: &mut StepReport,
) -> Result<String, Error> {
    let pb = planned_backup(ctx, st)?;
    let cat = ctx.env.catalog(&pb.target).await?;
    let m = cat.find(&pb.id).await?;
    rep.backup_id = Some(m.id.clone());
    rep.from_target = Some(pb.target.clone());
    let (uri, bytes) = match ctx.opts.kind {
        RunKind::Drill => {
            let dir = ctx
                .scratch
                .as_ref()
                .expect("drills have a scratch dir")
                .join(source);
            std::fs::create_dir_all(&dir).map_err(|e| Error::LocalIo {
                what: "creating the scratch directory",
                path: dir.clone(),
                source: e,
            })?;
            let out = crate::job::restore_raw_to_file(
                ctx.env,
                &cat,
                &m,
                &dir.join("dump.rdb"),
                true,
                ctx.progress,
            )
            .await?;
            let bin = ctx
                .env
                .policy
                .sources
                .get(source)
                .and_then(|s| s.redis.as_ref())
                .map(|r| r.redis_server.clone())
                .unwrap_or_else(|| "redis-server".into());
            let server = crate::source::redis::ScratchServer::start(&bin, &dir).await?;
            let uri = format!("redis://127.0.0.1:{}/0", server.port);
            ctx.redis_servers.lock().expect("lock").push(server);
            (uri, out.raw_bytes)
        }
        RunKind::Incident => {
            let uri = ctx.opts.endpoints[source].clone();
            let req = crate::job::RestoreRequest {
                to_uri: Some(uri.clone()),
                replace: true,
                yes: true,
                ..Default::default()
            };
            let out = crate::job::restore(ctx.env, &cat, &m, &req, ctx.progress).await?;
            (uri, out.raw_bytes)
        }
    };
    Ok(record_server_restore(
        ctx, source, &m, &pb.target, uri, bytes, rep,
    ))
}

/// PostgreSQL: base backup + WAL up to the target into a scratch directory,
/// started on a free port until it promotes (drill); into the endpoint
/// directory, ready to start (incident).
pub(super) async fn restore_postgres(
    ctx: &Ctx<'_>,
    st: &Step,
    source: &str,
    rep: &mut StepReport,
) -> Result<String, Error> {
    let pb = planned_backup(ctx, st)?;
    let cat = ctx.env.catalog(&pb.target).await?;
    let m = cat.find(&pb.id).await?;
    let cfg = ctx
        .env
        .source_config(source)?
        .postgres
        .clone()
        .ok_or_else(|| Error::Invalid(format!("source `{source}` is not a postgres source")))?;
    rep.from_target = Some(pb.target.clone());
    if ctx.opts.kind == RunKind::Incident && ctx.opts.keep_archiving.is_none() {
        return Err(Error::Invalid(super::plan::archiving_words(source, None)));
    }
    let dir = match ctx.opts.kind {
        RunKind::Drill => ctx
            .scratch
            .as_ref()
            .expect("drills have a scratch dir")
            .join(source)
            .join("pgdata"),
        RunKind::Incident => PathBuf::from(&ctx.opts.endpoints[source]),
    };
    let req = crate::job::RestoreRequest {
        to_dir: Some(dir.clone()),
        from_target: Some(pb.target.clone()),
        target_time: ctx.plan.target_time,
        latest: ctx.plan.target_time.is_none(),
        replace: true,
        yes: true,
        // Drills never archive; an incident does what the operator chose.
        keep_archiving: ctx.opts.kind == RunKind::Incident && ctx.opts.keep_archiving == Some(true),
        ..Default::default()
    };
    let out = crate::source::postgres::restore::restore(
        ctx.env,
        Some(&cfg),
        &cat,
        source,
        Some(&m),
        &req.spec()?,
        ctx.progress,
    )
    .await?;
    rep.raw_bytes = Some(out.raw_bytes);
    rep.backup_id = Some(out.id.clone());
    let base = cat.find(&out.id).await.unwrap_or(m);
    let target = ctx
        .plan
        .target_time
        .map(|t| format!("time {}", t.to_rfc3339()))
        .unwrap_or_else(|| "the end of the archive".into());
    let (uri, into) = match ctx.opts.kind {
        RunKind::Drill => {
            let pg = super::scratch_pg::ScratchPg::start(&cfg, &dir).await?;
            let conn = pg.conn_string(&cfg);
            let shown = format!(
                "scratch PostgreSQL 127.0.0.1:{} ({})",
                pg.port,
                dir.display()
            );
            ctx.pg_servers.lock().expect("lock").push(pg);
            (Some(conn), shown)
        }
        RunKind::Incident => {
            // The checks connect where clients do: the source's own endpoint.
            let conn = format!(
                "host={} port={} user={} dbname={}",
                cfg.host, cfg.port, cfg.user, cfg.dbname
            );
            let into = if ctx.opts.start_postgres {
                super::scratch_pg::ScratchPg::start_endpoint(&cfg, &dir)
                    .await?
                    .detach();
                format!(
                    "{} (started with pg_ctl on port {}, promoted)",
                    dir.display(),
                    cfg.port
                )
            } else {
                format!(
                    "{} (prepared: start PostgreSQL on it; the checks connect to {}:{})",
                    dir.display(),
                    cfg.host,
                    cfg.port
                )
            };
            (Some(conn), into)
        }
    };
    rep.into = Some(into.clone());
    ctx.restored.lock().expect("lock").insert(
        source.to_string(),
        Restored {
            manifest: base.clone(),
            target: pb.target.clone(),
            into: into.clone(),
            path: None,
            uri,
            recovered: None,
        },
    );
    Ok(format!(
        "restored base backup {} from target `{}` ({} bytes) and replayed WAL to {target} into {into}",
        base.id, pb.target, out.raw_bytes
    ))
}

/// MongoDB: into a scratch server (drill) or the endpoint URI (incident).
pub(super) async fn restore_mongo(
    ctx: &Ctx<'_>,
    st: &Step,
    source: &str,
    rep: &mut StepReport,
) -> Result<String, Error> {
    let pb = planned_backup(ctx, st)?;
    let cat = ctx.env.catalog(&pb.target).await?;
    let m = cat.find(&pb.id).await?;
    rep.backup_id = Some(m.id.clone());
    rep.from_target = Some(pb.target.clone());
    let uri = match ctx.opts.kind {
        RunKind::Drill => {
            let dir = ctx
                .scratch
                .as_ref()
                .expect("drills have a scratch dir")
                .join(source);
            std::fs::create_dir_all(&dir).map_err(|e| Error::LocalIo {
                what: "creating the scratch directory",
                path: dir.clone(),
                source: e,
            })?;
            let argv = ctx
                .env
                .policy
                .drills
                .clone()
                .unwrap_or_default()
                .mongo_scratch_argv;
            let server = super::scratch_mongo::ScratchMongo::start(&argv, &dir).await?;
            let uri = server.uri();
            ctx.mongo_servers.lock().expect("lock").push(server);
            uri
        }
        RunKind::Incident => ctx.opts.endpoints[source].clone(),
    };
    let req = crate::job::RestoreRequest {
        to_uri: Some(uri.clone()),
        replace: true,
        yes: true,
        target_time: ctx.plan.target_time,
        ..Default::default()
    };
    let out = crate::job::restore(ctx.env, &cat, &m, &req, ctx.progress).await?;
    Ok(record_server_restore(
        ctx,
        source,
        &m,
        &pb.target,
        uri,
        out.raw_bytes,
        rep,
    ))
}

/// A URI without its password, for reports.
fn redact_uri(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &uri[..s], &uri[at + 1..]),
        _ => uri.to_string(),
    }
}

/// A Velero restore of the newest completed backup of a gsdr Velero job,
/// optionally into mapped (scratch) namespaces.
pub(super) async fn restore_velero(
    ctx: &Ctx<'_>,
    job: &str,
    mapping: &[String],
    rep: &mut StepReport,
) -> Result<String, Error> {
    let cfg = ctx.env.policy.velero.clone().ok_or_else(|| {
        Error::Invalid(format!(
            "the scenario restores Velero job `{job}` but the policy has no [velero] section"
        ))
    })?;
    let client = crate::velero::VeleroClient::connect(cfg.namespace.clone()).await?;
    let status = crate::velero::status(&client).await?;
    let newest = status
        .backups
        .into_iter()
        .filter(|b| b.job.as_deref() == Some(job) && b.outcome == crate::velero::Outcome::Completed)
        .max_by_key(|b| b.completed)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no completed Velero backup of job `{job}` to restore"
            ))
        })?;
    let mut namespace_mapping = BTreeMap::new();
    for m in mapping {
        let (from, to) = m
            .split_once('=')
            .or_else(|| m.split_once(':'))
            .ok_or_else(|| Error::Invalid(format!("namespace mapping `{m}`: expected FROM=TO")))?;
        namespace_mapping.insert(from.to_string(), to.to_string());
    }
    if ctx.opts.kind == RunKind::Drill {
        // Only namespaces the drill creates are deleted afterwards: never
        // restore a drill into (and then delete) one that already exists.
        for to in namespace_mapping.values() {
            if client.namespace_exists(to).await? {
                return Err(Error::Invalid(format!(
                    "scratch namespace `{to}` already exists: a drill restores only into namespaces it creates, and deletes them afterwards; map to another name or delete it"
                )));
            }
            ctx.scratch_namespaces
                .lock()
                .expect("lock")
                .push(to.clone());
        }
    }
    rep.backup_id = Some(newest.name.clone());
    rep.into = Some(if namespace_mapping.is_empty() {
        "the original namespaces".to_string()
    } else {
        format!("{namespace_mapping:?}")
    });
    let req = crate::velero::RestoreRequest {
        backup_name: newest.name.clone(),
        namespace_mapping,
        ..Default::default()
    };
    let rec = crate::velero::restore(&client, &req, cfg.timeout.0).await?;
    if rec.outcome != crate::velero::Outcome::Completed {
        return Err(Error::Invalid(format!(
            "Velero restore `{}` of backup `{}` ended {:?}",
            rec.name, newest.name, rec.outcome
        )));
    }
    Ok(format!(
        "Velero restore `{}` of backup `{}` completed",
        rec.name, newest.name
    ))
}

/// Deletes the scratch namespaces Velero restores of a drill created; true
/// when all are gone (or there were none).
pub(super) async fn delete_scratch_namespaces(
    env: &crate::job::Env,
    namespaces: &[String],
) -> bool {
    let Some(cfg) = env
        .policy
        .velero
        .as_ref()
        .filter(|_| !namespaces.is_empty())
    else {
        return true;
    };
    let client = match crate::velero::VeleroClient::connect(cfg.namespace.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(event = "drill_namespace_cleanup_failed", error = %e, namespaces = ?namespaces);
            return false;
        }
    };
    let mut all = true;
    for ns in namespaces {
        match client.delete_namespace(ns).await {
            Ok(()) => tracing::info!(event = "drill_namespace_deleted", namespace = %ns),
            Err(e) => {
                all = false;
                tracing::warn!(event = "drill_namespace_cleanup_failed", namespace = %ns, error = %e);
            }
        }
    }
    all
}

/// Records a restore into a scratch server (for the checks after it) and describes it.
fn record_server_restore(
    ctx: &Ctx<'_>,
    source: &str,
    m: &crate::catalog::Manifest,
    target: &str,
    uri: String,
    bytes: u64,
    rep: &mut StepReport,
) -> String {
    rep.raw_bytes = Some(bytes);
    let shown = redact_uri(&uri);
    rep.into = Some(shown.clone());
    ctx.restored.lock().expect("lock").insert(
        source.to_string(),
        Restored {
            manifest: m.clone(),
            target: target.to_string(),
            into: shown.clone(),
            path: None,
            uri: Some(uri),
            recovered: None,
        },
    );
    format!(
        "restored backup {} from target `{target}` ({bytes} bytes) into {shown}",
        m.id
    )
}
