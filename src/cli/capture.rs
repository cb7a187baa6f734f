//! `gsdr capture`: a source's continuous capture in the foreground until
//! SIGINT/SIGTERM (the daemon runs the same as its `capture/<source>` job).

use serde::Serialize;

use super::output::{bytes, emit};
use super::{Ctx, Outcome};

/// Arguments of `gsdr capture`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The source to capture (its engine settings must enable continuous capture).
    #[arg(long, short = 's', value_name = "NAME")]
    source: String,
}

#[derive(Serialize)]
struct Report<'a> {
    source: &'a str,
    #[serde(flatten)]
    capture: gsdr::source::capture::CaptureReport,
}

/// Runs `gsdr capture`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let shutdown = super::daemon::shutdown_on_signal()?;
    let r = gsdr::job::capture::run(&env, &args.source, shutdown).await?;
    let report = Report {
        source: &args.source,
        capture: r,
    };
    emit(ctx.json, &report, |r| {
        format!(
            "capture of `{}` stopped: {} objects, {} stored; {}\n",
            r.source,
            r.capture.objects,
            bytes(r.capture.bytes),
            r.capture.detail
        )
    })?;
    Ok(Outcome::Ok)
}
