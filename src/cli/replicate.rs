//! `gsdr replicate`: copy to the off-site target what it lacks, or (`--check`) list it.

use std::collections::BTreeMap;

use serde::Serialize;

use gsdr::replicate::{self, Missing, SweepReport};

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr replicate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Copy nothing: list what the off-site copy lacks; exit 1 if anything.
    #[arg(long)]
    check: bool,
    /// Only this source.
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
}

#[derive(Serialize)]
struct Report {
    missing: Vec<Missing>,
    sweeps: BTreeMap<String, SweepReport>,
}

/// Runs `gsdr replicate`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    // (primary, off-site) pairs, each with the sources it carries.
    let mut pairs: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for s in env.policy.sources.keys() {
        if args.source.as_ref().is_some_and(|w| w != s) {
            continue;
        }
        let Some(off) = env.policy.offsite_of(s) else {
            continue;
        };
        pairs
            .entry((env.primary_target_name(s)?, off.to_string()))
            .or_default()
            .push(s.clone());
    }
    if pairs.is_empty() {
        anyhow::bail!(
            "no source has an off-site target: set defaults.offsite or sources.NAME.offsite"
        );
    }
    let mut report = Report {
        missing: Vec::new(),
        sweeps: BTreeMap::new(),
    };
    for ((p, o), sources) in &pairs {
        let (ps, os) = (env.store(p).await?, env.store(o).await?);
        for s in sources {
            if args.check {
                report
                    .missing
                    .extend(replicate::check(&ps, &os, Some(s), &env.engines()).await?);
            } else {
                report.sweeps.insert(
                    s.clone(),
                    replicate::catch_up(&ps, &os, Some(s), &env.engines(), &env.trust()?).await?,
                );
            }
        }
    }
    emit(ctx.json, &report, |r| {
        let mut out = String::new();
        for m in &r.missing {
            out += &format!("missing {:<20} {}  {}\n", m.source, m.id, m.problem);
        }
        for (s, w) in &r.sweeps {
            out += &format!(
                "copied  {:<20} {} backups, {}\n",
                s,
                w.copied.len(),
                bytes(w.bytes)
            );
            for (id, e) in &w.failed {
                out += &format!("FAILED  {s:<20} {id}  {e}\n");
            }
            for ws in &w.wal {
                out += &format!(
                    "copied  {:<20} {} WAL objects, {}\n",
                    ws.source,
                    ws.copied,
                    bytes(ws.bytes)
                );
                for (key, e) in &ws.failed {
                    out += &format!("FAILED  {:<20} {key}  {e}\n", ws.source);
                }
            }
        }
        if args.check && r.missing.is_empty() {
            out += "the off-site copy is complete\n";
        }
        out
    })?;
    let failed: usize = report.sweeps.values().map(|w| w.failed.len()).sum();
    let wal_failed: usize = report
        .sweeps
        .values()
        .flat_map(|w| &w.wal)
        .map(|w| w.failed.len())
        .sum();
    if failed > 0 || wal_failed > 0 {
        anyhow::bail!("{failed} backups and {wal_failed} WAL objects could not be copied off-site");
    }
    if !report.missing.is_empty() {
        return Ok(Outcome::CheckFailed);
    }
    Ok(Outcome::Ok)
}
