//! `gsdr verify`: stream backups back and check them.

use serde::Serialize;

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup ids to verify; with none, the newest backup of every source (or of --source).
    ids: Vec<String>,
    /// Only backups of this source.
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Read from this target instead of the source's primary target.
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
}

#[derive(Serialize)]
struct Report {
    results: Vec<gsdr::job::VerifyReport>,
}

/// Runs `gsdr verify`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let mut results = Vec::new();
    let sources: Vec<String> = match &args.source {
        Some(s) => vec![s.clone()],
        None => env.policy.sources.keys().cloned().collect(),
    };
    let mut todo = Vec::new();
    for s in &sources {
        let target = match &args.target {
            Some(t) => t.clone(),
            None => env.primary_target_name(s)?,
        };
        let cat = env.catalog(&target).await?;
        let list = cat.list(Some(s)).await?;
        if args.ids.is_empty() {
            if let Some(m) = list.into_iter().max_by_key(|m| m.started_at) {
                todo.push((cat.clone(), m));
            }
        } else {
            todo.extend(
                list.into_iter()
                    .filter(|m| args.ids.contains(&m.id))
                    .map(|m| (cat.clone(), m)),
            );
        }
    }
    for id in &args.ids {
        if !todo.iter().any(|(_, m)| &m.id == id) {
            anyhow::bail!("no backup `{id}` found; `gsdr list` shows the backups");
        }
    }
    if todo.is_empty() {
        anyhow::bail!("no backups to verify");
    }
    for (cat, m) in &todo {
        results.push(gsdr::job::verify(&env, cat, m).await?);
    }
    let all_ok = results.iter().all(|r| r.ok);
    emit(ctx.json, &Report { results }, |r| {
        let mut s = String::new();
        for v in &r.results {
            if v.ok {
                s += &format!(
                    "ok      {:<20} {}  {} read, {} restored in {:.1}s\n",
                    v.source,
                    v.id,
                    bytes(v.stored_bytes),
                    bytes(v.raw_bytes),
                    v.duration_secs
                );
            } else {
                s += &format!(
                    "FAILED  {:<20} {}  {}\n",
                    v.source,
                    v.id,
                    v.error.as_deref().unwrap_or("unknown error")
                );
            }
        }
        s
    })?;
    Ok(if all_ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
