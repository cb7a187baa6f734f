//! `gsdr prune`: apply retention; shows what goes and why, backups and PostgreSQL WAL.

use serde::Serialize;

use gsdr::job::prune::{self, PruneReport};
use gsdr::retention::PruneAction;

use super::output::emit;
use super::{Ctx, Outcome};

/// Arguments of `gsdr prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only this source.
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Only this target (default: each source's primary and off-site targets).
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
}

#[derive(Serialize)]
struct Report {
    dry_run: bool,
    actions: Vec<PruneAction>,
    /// Sources with a log archive (PostgreSQL's WAL): the log per target
    /// (a separate list keeps `actions` as it was).
    wal: Vec<serde_json::Value>,
}

/// Runs `gsdr prune`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let sources: Vec<String> = match &args.source {
        Some(s) => {
            env.source_config(s)?;
            vec![s.clone()]
        }
        None => env.policy.sources.keys().cloned().collect(),
    };
    let now = chrono::Utc::now();
    let mut all = PruneReport::default();
    for s in &sources {
        let r =
            prune::prune_policy_source(&env, s, args.target.as_deref(), now, args.dry_run).await?;
        all.actions.extend(r.actions);
        all.wal.extend(r.wal);
    }
    let errors = all.errors();
    let lines: Vec<String> = all.wal.iter().map(|w| w.line()).collect();
    let report = Report {
        dry_run: args.dry_run,
        actions: all.actions,
        wal: all.wal.iter().map(|w| w.to_json()).collect(),
    };
    emit(ctx.json, &report, |r| {
        let mut out = String::new();
        for a in &r.actions {
            let d = &a.decision;
            let what = match (d.delete(), a.deleted, &a.error) {
                (false, _, _) => "keep",
                (true, _, Some(_)) => "FAILED",
                (true, true, None) => "deleted",
                (true, false, None) => "delete",
            };
            let why = if d.delete() {
                a.error.clone().unwrap_or_else(|| "no rule keeps it".into())
            } else {
                d.keep
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out += &format!(
                "{what:<8}{:<12}{:<20} {}  {}\n",
                a.target, a.source, d.id, why
            );
        }
        for l in &lines {
            out += l;
        }
        if r.dry_run {
            out += "(dry run: nothing deleted)\n";
        }
        out
    })?;
    if errors > 0 {
        anyhow::bail!("{errors} deletions failed");
    }
    Ok(Outcome::Ok)
}
