//! Restore steps of the engines: into scratch servers (drills) or the real
//! endpoints (incidents). Scratch servers are registered in the run's context
//! so the runner stops them at the end, also when a step failed.

use std::collections::BTreeMap;

use super::ctx::{planned_backup, restored_of, Ctx, Restored};
use super::report::{RunKind, StepReport};
use super::scenario::Step;
use crate::error::Error;
use crate::source::{RestoreCtx, StandIn, StandInTo};

pub(super) fn server_uri(ctx: &Ctx<'_>, st: &Step, source: &str) -> Result<String, Error> {
    restored_of(ctx, source)?.uri.ok_or_else(|| {
        Error::Invalid(format!(
            "check `{}`: source `{source}` was restored to a file, not a server",
            st.name
        ))
    })
}

/// A source's restore step, through its engine: into a scratch server the
/// engine starts (drill) or into the incident's endpoint. Logs (PostgreSQL's
/// WAL) replay up to the plan's target time, or as far as they reach.
pub(super) async fn restore_source(
    ctx: &Ctx<'_>,
    st: &Step,
    source: &str,
    rep: &mut StepReport,
) -> Result<String, Error> {
    let pb = planned_backup(ctx, st)?;
    let cat = ctx.env.catalog(&pb.target).await?;
    let m = pb.manifest_in(&cat).await?;
    let engine = crate::job::engine_for(ctx.env, &m)?;
    rep.from_target = Some(pb.target.clone());
    let logs = engine.restore_keeps_archiving();
    if ctx.opts.kind == RunKind::Incident && logs && ctx.opts.keep_archiving.is_none() {
        return Err(Error::Invalid(super::plan::archiving_words(source, None)));
    }
    let argv = ctx
        .env
        .policy
        .drills
        .clone()
        .unwrap_or_default()
        .mongo_scratch_argv;
    let dir;
    let to = match ctx.opts.kind {
        RunKind::Drill => {
            dir = ctx
                .scratch
                .as_ref()
                .expect("drills have a scratch dir")
                .join(source);
            std::fs::create_dir_all(&dir).map_err(|e| Error::LocalIo {
                what: "creating the scratch directory",
                path: dir.clone(),
                source: e,
            })?;
            StandInTo::Scratch {
                dir: &dir,
                argv: &argv,
            }
        }
        RunKind::Incident => StandInTo::Endpoint {
            endpoint: &ctx.opts.endpoints[source],
            start: ctx.opts.start_postgres,
            keep_archiving: ctx.opts.keep_archiving == Some(true),
        },
    };
    let req = StandIn {
        to,
        until: ctx.plan.target_time,
        from_target: &pb.target,
    };
    let rctx = RestoreCtx {
        host: ctx.env,
        catalog: &cat,
        manifest: &m,
        progress: ctx.progress,
    };
    let stood = engine.stand_in(&rctx, &req).await?;
    if let Some(s) = stood.server {
        ctx.servers.lock().expect("lock").push(s);
    }
    let out = stood.outcome;
    rep.raw_bytes = Some(out.raw_bytes);
    rep.backup_id = Some(out.id.clone());
    rep.into = Some(stood.into.clone());
    // The engine may restore another backup than planned (PostgreSQL: the
    // base backup the target time needs).
    let base = if out.id == m.id {
        m
    } else {
        cat.find(&out.id).await.unwrap_or(m)
    };
    let line = format!(
        "restored {} {} from target `{}` ({} bytes){} into {}",
        stood.what,
        base.id,
        pb.target,
        out.raw_bytes,
        stood
            .replayed
            .map(|r| format!(" and {r}"))
            .unwrap_or_default(),
        stood.into
    );
    ctx.restored.lock().expect("lock").insert(
        source.to_string(),
        Restored {
            manifest: base,
            target: pb.target.clone(),
            into: stood.into,
            path: None,
            uri: Some(stood.uri),
            recovered: None,
            start_hint: stood.start_hint,
        },
    );
    Ok(line)
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
