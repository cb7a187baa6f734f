//! `gsdr backup`: back up sources now.

use serde::Serialize;

use super::output::{bytes, emit};
use super::{progress, Ctx, Outcome};

/// Arguments of `gsdr backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source to back up (repeatable); default: every source of the policy.
    #[arg(long = "source", short = 's', value_name = "NAME")]
    sources: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    backups: Vec<gsdr::job::BackupOutcome>,
    failures: Vec<Failure>,
}

#[derive(Serialize)]
struct Failure {
    source: String,
    error: String,
    retry_class: gsdr::RetryClass,
}

/// Runs `gsdr backup`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let sources: Vec<String> = if args.sources.is_empty() {
        env.policy.sources.keys().cloned().collect()
    } else {
        args.sources
    };
    if sources.is_empty() {
        anyhow::bail!(
            "the policy {} defines no sources",
            env.policy.path.display()
        );
    }
    let progress = progress::for_terminal(ctx.quiet || ctx.json);
    let mut report = Report {
        backups: Vec::new(),
        failures: Vec::new(),
    };
    for s in &sources {
        match gsdr::job::backup(&env, s, progress.as_ref()).await {
            Ok(o) => report.backups.push(o),
            Err(e) => report.failures.push(Failure {
                source: s.clone(),
                retry_class: e.retry_class(),
                error: e.to_string(),
            }),
        }
    }
    emit(ctx.json, &report, |r| {
        let mut s = String::new();
        for b in &r.backups {
            let m = &b.manifest;
            s += &format!(
                "ok      {:<20} {}  {} -> {} ({:.1}x) in {:.1}s to {}\n",
                m.source,
                m.id,
                bytes(m.raw_bytes),
                bytes(m.stored_bytes),
                m.raw_bytes as f64 / m.stored_bytes.max(1) as f64,
                b.duration_secs,
                b.target
            );
        }
        for f in &r.failures {
            s += &format!("FAILED  {:<20} {}\n", f.source, f.error);
        }
        s
    })?;
    if report.failures.is_empty() {
        Ok(Outcome::Ok)
    } else {
        anyhow::bail!(
            "{} of {} backups failed",
            report.failures.len(),
            sources.len()
        )
    }
}
