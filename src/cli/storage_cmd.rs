//! `gsdr storage init`: apply each S3 target's lifecycle, versioning and Object Lock settings, showing the difference,
//! and warn (exit 1) about other lifecycle rules of the bucket that can expire gsdr's objects.

use serde::Serialize;

use gsdr::policy::TargetConfig;
use gsdr::storage::lifecycle::{self, Change};
use gsdr::storage::s3::S3Store;

use super::output::emit;
use super::{Ctx, Outcome};

/// Arguments of `gsdr storage`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Apply `[targets.NAME.lifecycle]` to each S3 target (idempotent); prints what differs.
    Init {
        /// Show the differences, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this target.
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
    },
}

#[derive(Serialize)]
struct TargetReport {
    target: String,
    changes: Vec<Change>,
    applied: bool,
    /// Other lifecycle rules of the bucket that can expire gsdr's objects.
    warnings: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    targets: Vec<TargetReport>,
}

/// Runs `gsdr storage`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let Sub::Init { dry_run, target } = args.command;
    let policy = ctx.load_policy()?;
    let mut report = Report {
        targets: Vec::new(),
    };
    for (name, t) in &policy.targets {
        if target.as_ref().is_some_and(|w| w != name) {
            continue;
        }
        let TargetConfig::S3(s3) = t else { continue };
        let Some(lc) = &s3.lifecycle else { continue };
        let store = S3Store::new(s3).await?;
        let changes = lifecycle::apply(&store, lc, dry_run)
            .await
            .map_err(|e| anyhow::anyhow!("target `{name}`: {e}"))?;
        let warnings = lifecycle::hazards(&store)
            .await
            .map_err(|e| anyhow::anyhow!("target `{name}`: {e}"))?;
        report.targets.push(TargetReport {
            target: name.clone(),
            applied: !dry_run && !changes.is_empty(),
            changes,
            warnings,
        });
    }
    if report.targets.is_empty() {
        anyhow::bail!(
            "no S3 target has a [targets.NAME.lifecycle] table in {}",
            policy.path.display()
        );
    }
    emit(ctx.json, &report, |r| {
        let mut out = String::new();
        for t in &r.targets {
            if t.changes.is_empty() {
                out += &format!("{}: up to date\n", t.target);
            }
            for w in &t.warnings {
                out += &format!("{}: WARNING: {w}\n", t.target);
            }
            for c in &t.changes {
                out += &format!(
                    "{}: {:<45} {} -> {}{}\n",
                    t.target,
                    c.setting,
                    c.current,
                    c.desired,
                    if t.applied { "" } else { "  (not applied)" }
                );
            }
        }
        out
    })?;
    // A foreign rule that can delete backups is a failed check (exit 1), not an error.
    Ok(if report.targets.iter().any(|t| !t.warnings.is_empty()) {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}
