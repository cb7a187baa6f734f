//! `gsdr list`: committed backups.

use std::collections::BTreeSet;

use serde::Serialize;

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this source.
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Read this target instead of each source's primary target (e.g. the off-site one).
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
}

#[derive(Serialize)]
struct Listing {
    backups: Vec<gsdr::catalog::Manifest>,
    /// Velero backups recorded in the same catalog.
    velero: Vec<gsdr::velero::VeleroRecord>,
    /// Manifests that do not count (unreadable, newer schema, not matching their key).
    skipped: Vec<SkippedOn>,
}

#[derive(Serialize)]
struct SkippedOn {
    target: String,
    #[serde(flatten)]
    skipped: gsdr::catalog::Skipped,
}

/// Runs `gsdr list`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let mut targets: BTreeSet<String> = match (&args.target, &args.source) {
        (Some(t), _) => [t.clone()].into(),
        (None, Some(s)) => [env.primary_target_name(s)?].into(),
        (None, None) => env
            .policy
            .sources
            .keys()
            .filter_map(|s| env.policy.target_of(s).map(str::to_string))
            .collect(),
    };
    if args.target.is_none() && args.source.is_none() && env.policy.velero.is_some() {
        // Velero records live on the primary target (see `gsdr velero backup`).
        if let Some(t) = super::velero::record_target(&env.policy) {
            targets.insert(t);
        }
    }
    let mut backups = Vec::new();
    let mut velero = Vec::new();
    let mut skipped = Vec::new();
    for t in targets {
        let cat = env.catalog(&t).await?;
        let listing = cat.list_checked(args.source.as_deref()).await?;
        backups.extend(listing.manifests);
        skipped.extend(listing.skipped.into_iter().map(|s| SkippedOn {
            target: t.clone(),
            skipped: s,
        }));
        if args.source.is_none() && env.policy.velero.is_some() {
            velero.extend(gsdr::velero::list_records(cat.store().as_ref(), None).await?);
        }
    }
    backups.sort_by(|a, b| (&a.source, a.started_at).cmp(&(&b.source, b.started_at)));
    // Data on stdout, warnings on stderr. Each skipped manifest was already
    // logged as a `manifest_skipped` warning (key, reason, detail); this line
    // says it once more where `-qq` silences the log.
    let mut per_target = std::collections::BTreeMap::<&str, usize>::new();
    for s in &skipped {
        *per_target.entry(s.target.as_str()).or_default() += 1;
    }
    for (t, n) in per_target {
        eprintln!(
            "warning: {n} manifest(s) on target `{t}` skipped (unreadable, of a newer schema, or not matching their key): not listed; `gsdr --json list` shows them under `skipped`"
        );
    }
    let listing = Listing {
        backups,
        velero,
        skipped,
    };
    emit(ctx.json, &listing, |l| {
        let mut s = format!(
            "{:<20} {:<26} {:<8} {:>10} {:>10}  {}\n",
            "SOURCE", "ID", "KIND", "RAW", "STORED", "RECOVERY POINT"
        );
        for m in &l.backups {
            s += &format!(
                "{:<20} {:<26} {:<8} {:>10} {:>10}  {}\n",
                m.source,
                m.id,
                m.kind,
                bytes(m.raw_bytes),
                bytes(m.stored_bytes),
                m.recovery_point()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        for v in &l.velero {
            s += &format!(
                "{:<20} {:<26} {:<8} {:>10} {:>10}  {}\n",
                format!("velero/{}", v.job.as_deref().unwrap_or("-")),
                v.name,
                "velero",
                format!("{:?}", v.outcome),
                "",
                v.completed
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()
            );
        }
        s
    })?;
    Ok(Outcome::Ok)
}
