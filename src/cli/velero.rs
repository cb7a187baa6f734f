//! `gsdr velero backup|restore|status`: Velero through the Kubernetes API.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::output::emit;
use super::{Ctx, Outcome};
use gsdr::velero::{self, Outcome as Phase, VeleroClient};

/// Arguments of `gsdr velero`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Create a Velero Backup for a policy job (every job when none is named), wait, record it in the catalog.
    Backup {
        /// Job name from `[velero.jobs.NAME]`.
        #[arg(long)]
        job: Option<String>,
    },
    /// Create a Velero Restore from a backup and wait for it.
    Restore {
        /// Velero backup name.
        #[arg(long)]
        backup: String,
        /// Restore namespace FROM into TO (repeatable), e.g. for drills into a scratch namespace.
        #[arg(long = "namespace-mapping", value_name = "FROM:TO")]
        mapping: Vec<String>,
    },
    /// Backups, restores and storage locations as Velero sees them.
    Status,
}

#[derive(Serialize)]
struct Backups {
    backups: Vec<velero::VeleroRecord>,
}

/// Runs `gsdr velero …`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let cfg = env
        .policy
        .velero
        .clone()
        .context("the policy has no [velero] section")?;
    let client = VeleroClient::connect(cfg.namespace.clone()).await?;
    match args.cmd {
        Cmd::Backup { job } => {
            let jobs: Vec<String> = match job {
                Some(j) => vec![j],
                None => cfg.jobs.keys().cloned().collect(),
            };
            let target =
                record_target(&env.policy).context("no target to record Velero backups in")?;
            let store = env.store(&target).await?;
            let mut out = Backups {
                backups: Vec::new(),
            };
            for j in &jobs {
                let rec = velero::backup(&client, &cfg, j).await?;
                velero::put_record(store.as_ref(), &rec).await?;
                out.backups.push(rec);
            }
            let ok = out.backups.iter().all(|r| r.outcome == Phase::Completed);
            emit(ctx.json, &out, |o| {
                o.backups
                    .iter()
                    .map(|r| {
                        format!(
                            "{:<16} {:<40} {:?} errors={} warnings={}\n",
                            r.job.as_deref().unwrap_or("-"),
                            r.name,
                            r.outcome,
                            r.errors,
                            r.warnings
                        )
                    })
                    .collect()
            })?;
            Ok(if ok {
                Outcome::Ok
            } else {
                Outcome::CheckFailed
            })
        }
        Cmd::Restore { backup, mapping } => {
            let mut namespace_mapping = BTreeMap::new();
            for m in &mapping {
                let (from, to) = m
                    .split_once(':')
                    .with_context(|| format!("--namespace-mapping `{m}`: expected FROM:TO"))?;
                namespace_mapping.insert(from.to_string(), to.to_string());
            }
            let req = velero::RestoreRequest {
                backup_name: backup,
                namespace_mapping,
                ..Default::default()
            };
            let rec = velero::restore(&client, &req, cfg.timeout.0).await?;
            let ok = rec.outcome == Phase::Completed;
            emit(ctx.json, &rec, |r| format!("{} {:?}\n", r.name, r.outcome))?;
            Ok(if ok {
                Outcome::Ok
            } else {
                Outcome::CheckFailed
            })
        }
        Cmd::Status => {
            let st = velero::status(&client).await?;
            emit(ctx.json, &st, |s| {
                serde_json::to_string_pretty(s).unwrap_or_default() + "\n"
            })?;
            Ok(Outcome::Ok)
        }
    }
}

/// The target Velero records are kept in: the default target, else the first one.
pub fn record_target(policy: &gsdr::policy::Policy) -> Option<String> {
    policy
        .defaults
        .target
        .clone()
        .or_else(|| policy.targets.keys().next().cloned())
}
