//! `gsdr policy check [--connect]`.

use serde::Serialize;

use super::output::emit;
use super::{Ctx, Outcome};

/// Arguments of `gsdr policy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Validate the policy; with --connect also reach every target and server.
    Check {
        /// Also reach every target (and server) and say which fail.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Serialize)]
struct Report {
    policy: String,
    valid: bool,
    sources: Vec<String>,
    targets: Vec<String>,
    checks: Vec<Check>,
}

#[derive(Serialize)]
struct Check {
    what: String,
    ok: bool,
    error: Option<String>,
}

/// Runs `gsdr policy …`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let Cmd::Check { connect } = args.cmd;
    let env = ctx.env()?;
    let p = &env.policy;
    env.encode_options()?;
    let mut report = Report {
        policy: p.path.display().to_string(),
        valid: true,
        sources: p.sources.keys().cloned().collect(),
        targets: p.targets.keys().cloned().collect(),
        checks: Vec::new(),
    };
    // The files a source names (TLS keys...) are read even without
    // --connect: a missing or world-readable key is a policy mistake.
    for s in p.sources.keys() {
        let engine = p.sources[s].engine(s)?;
        if let Some(res) = engine.check_files() {
            report.checks.push(Check {
                what: format!("source {s} files"),
                ok: res.is_ok(),
                error: res
                    .err()
                    .map(|e| format!("[sources.{s}.{}]: {e}", engine.kind())),
            });
        }
    }
    if connect {
        for t in p.targets.keys() {
            let res = async { env.store(t).await?.probe().await.map_err(gsdr::Error::from) }.await;
            report.checks.push(Check {
                what: format!("target {t}"),
                ok: res.is_ok(),
                error: res.err().map(|e| e.to_string()),
            });
        }
        for s in p.sources.keys() {
            let res = async { p.sources[s].engine(s)?.probe().await }.await;
            report.checks.push(Check {
                what: format!("source {s}"),
                ok: res.is_ok(),
                error: res.err().map(|e| e.to_string()),
            });
        }
    }
    let failed = report.checks.iter().any(|c| !c.ok);
    emit(ctx.json, &report, |r| {
        let mut s = format!(
            "policy {} is valid: {} sources, {} targets\n",
            r.policy,
            r.sources.len(),
            r.targets.len()
        );
        for c in &r.checks {
            match &c.error {
                None => s += &format!("ok      {}\n", c.what),
                Some(e) => s += &format!("FAILED  {}: {e}\n", c.what),
            }
        }
        s
    })?;
    Ok(if failed {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}
