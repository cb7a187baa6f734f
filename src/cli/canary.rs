//! `gsdr canary`: write a heartbeat canary into sources now, so drills can
//! measure the recovered point from restored data (run it on a schedule).

use serde::Serialize;

use super::output::emit;
use super::{Ctx, Outcome};

/// Arguments of `gsdr canary`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Source to write into (repeatable); default: every source that can hold a canary.
    #[arg(long = "source", short = 's', value_name = "NAME")]
    sources: Vec<String>,
}

#[derive(Serialize)]
struct Report {
    canaries: Vec<Written>,
}

#[derive(Serialize)]
struct Written {
    source: String,
    written_at: Option<chrono::DateTime<chrono::Utc>>,
    error: Option<String>,
}

/// Runs `gsdr canary`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let sources: Vec<String> = if args.sources.is_empty() {
        env.policy
            .sources
            .iter()
            .filter(|(n, c)| c.engine(n).is_ok_and(|e| e.has_canary()))
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        args.sources
    };
    let mut out = Vec::new();
    for s in &sources {
        let r = gsdr::drill::canary::write(&env, s).await;
        out.push(Written {
            source: s.clone(),
            written_at: r.as_ref().ok().copied(),
            error: r.err().map(|e| e.to_string()),
        });
    }
    let out = Report { canaries: out };
    emit(ctx.json, &out, |v| {
        v.canaries
            .iter()
            .map(|w| match (&w.written_at, &w.error) {
                (Some(t), _) => format!("ok      {:<20} canary {}\n", w.source, t.to_rfc3339()),
                (_, Some(e)) => format!("FAILED  {:<20} {e}\n", w.source),
                _ => String::new(),
            })
            .collect()
    })?;
    let failed = out.canaries.iter().filter(|w| w.error.is_some()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} canaries failed",
        out.canaries.len()
    );
    Ok(Outcome::Ok)
}
