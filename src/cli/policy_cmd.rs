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
    /// With --connect: what each reachable target's server can do (S3 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    capabilities: Vec<gsdr::job::TargetCapabilities>,
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
        capabilities: Vec::new(),
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
        let leases = env.run_lease_targets()?;
        for t in p.targets.keys() {
            let res = async { env.store(t).await?.probe().await.map_err(gsdr::Error::from) }.await;
            let reachable = res.is_ok();
            report.checks.push(Check {
                what: format!("target {t}"),
                ok: res.is_ok(),
                error: res.err().map(|e| e.to_string()),
            });
            if !reachable {
                continue;
            }
            let caps = env.target_capabilities(t, leases.contains(t)).await;
            match caps {
                Ok(c) if c.capabilities.is_none() => {}
                Ok(c) => {
                    let store = env.store(t).await?.describe();
                    for r in &c.refusals {
                        report.checks.push(Check {
                            what: format!("target {t} {}", r.capability.name()),
                            ok: false,
                            error: Some(refusal_text(t, &store, &c, r)),
                        });
                    }
                    report.capabilities.push(c);
                }
                Err(e) => report.checks.push(Check {
                    what: format!("target {t} capabilities"),
                    ok: false,
                    error: Some(e.to_string()),
                }),
            }
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
        for t in &r.capabilities {
            s += &capability_table(t);
        }
        s
    })?;
    Ok(if failed {
        Outcome::CheckFailed
    } else {
        Outcome::Ok
    })
}

/// A refusal as the daemon would word it (one sentence: capability, need, alternative).
fn refusal_text(
    name: &str,
    store: &str,
    t: &gsdr::job::TargetCapabilities,
    r: &gsdr::storage::capabilities::Refusal,
) -> String {
    let detail = t
        .capabilities
        .as_ref()
        .map(|c| c.get(r.capability).detail.clone())
        .unwrap_or_default();
    gsdr::storage::StorageError::Unsupported {
        store: format!("`{name}` ({store})"),
        capability: r.capability.what(),
        needed_by: r.needed_by.clone(),
        detail,
        alternative: r.alternative.clone(),
    }
    .to_string()
}

/// The capability table of one target: capability, yes/no/unknown, what the server did.
fn capability_table(t: &gsdr::job::TargetCapabilities) -> String {
    use gsdr::storage::capabilities::Support;
    let Some(caps) = &t.capabilities else {
        return String::new();
    };
    let mut s = format!(
        "\ncapabilities of target {}{}:\n",
        t.target,
        if t.run_leases {
            " (holds the daemon's run leases)"
        } else {
            ""
        }
    );
    for (c, p) in caps.rows() {
        let word = match p.support {
            Support::Yes => "yes",
            Support::No => "NO",
            Support::Unknown => "unknown",
        };
        s += &format!("  {:<20} {:<8} {}\n", c.name(), word, p.detail);
    }
    s
}
