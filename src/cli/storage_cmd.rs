//! `gsdr storage init`: apply each S3 target's lifecycle, versioning and Object Lock settings, showing the difference,
//! and warn (exit 1) about other lifecycle rules of the bucket that can expire gsdr's objects.
//! `gsdr storage gc`: remove what interrupted runs left behind, with counts and bytes per category.

use serde::Serialize;

use gsdr::job::gc::{Category, GcAction, TargetGc};
use gsdr::storage::lifecycle::{self, Change};
use gsdr::storage::s3::S3Store;
use gsdr::storage::TargetConfig;

use super::output::{bytes, emit};
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
    /// Remove leftovers of interrupted runs on every target: incomplete multipart
    /// uploads, temp files, data objects without a manifest (older than the grace
    /// period, of no live run).
    Gc {
        /// Show what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this target.
        #[arg(long, value_name = "TARGET")]
        target: Option<String>,
        /// Keep leftovers younger than this (default: `daemon.gc_grace`, 24h).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
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
    match args.command {
        Sub::Init { dry_run, target } => init(ctx, dry_run, target).await,
        Sub::Gc {
            dry_run,
            target,
            grace,
        } => gc(ctx, dry_run, target, grace).await,
    }
}

#[derive(Serialize)]
struct GcReport {
    dry_run: bool,
    /// Seconds.
    grace_secs: u64,
    targets: Vec<TargetGc>,
    /// Targets that could not be collected, with the error.
    errors: Vec<GcError>,
}

#[derive(Serialize)]
struct GcError {
    target: String,
    error: String,
}

async fn gc(
    ctx: &Ctx,
    dry_run: bool,
    target: Option<String>,
    grace: Option<std::time::Duration>,
) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let grace = grace.unwrap_or(env.policy.daemon.gc_grace.0);
    let results = gsdr::daemon::gc::collect(&env, target.as_deref(), grace, dry_run).await?;
    let mut report = GcReport {
        dry_run,
        grace_secs: grace.as_secs(),
        targets: Vec::new(),
        errors: Vec::new(),
    };
    for r in results {
        match r {
            Ok(t) => report.targets.push(t),
            Err((target, e)) => report.errors.push(GcError {
                target,
                error: format!("{e}"),
            }),
        }
    }
    let failed = !report.errors.is_empty() || report.targets.iter().any(|t| t.failed > 0);
    emit(ctx.json, &report, |r| {
        let mut out = String::new();
        let verb = if r.dry_run { "would remove" } else { "removed" };
        for t in &r.targets {
            for c in [
                Category::MultipartUpload,
                Category::TempFile,
                Category::OrphanData,
            ] {
                let done = t.removed.get(&c).cloned().unwrap_or_default();
                let kept = t.kept.get(&c).cloned().unwrap_or_default();
                out += &format!(
                    "{}: {verb} {} {} ({}){}\n",
                    t.target,
                    done.count,
                    c.human(),
                    bytes(done.bytes),
                    if kept.count > 0 {
                        format!("; kept {} ({})", kept.count, bytes(kept.bytes))
                    } else {
                        String::new()
                    }
                );
            }
            for i in &t.items {
                let what = match &i.action {
                    GcAction::Removed => "removed".to_string(),
                    GcAction::WouldRemove => "would remove".to_string(),
                    GcAction::Kept(why) => format!("kept: {why}"),
                    GcAction::Failed(e) => format!("FAILED: {e}"),
                };
                out += &format!(
                    "{}:   {:<16} {} ({}) {what}\n",
                    t.target,
                    i.category.as_str(),
                    i.key,
                    bytes(i.bytes)
                );
            }
        }
        for e in &r.errors {
            out += &format!("{}: FAILED: {}\n", e.target, e.error);
        }
        out
    })?;
    if failed {
        anyhow::bail!("garbage collection failed on some targets or leftovers (see above); the rest was collected");
    }
    Ok(Outcome::Ok)
}

async fn init(ctx: &Ctx, dry_run: bool, target: Option<String>) -> anyhow::Result<Outcome> {
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
        // A server without versioning, Object Lock or lifecycle rules gets a
        // refusal that says what to do, not its own `NotImplemented`.
        // Reads only: probe objects would be versions in the bucket whose
        // Object Lock is about to be configured.
        let caps = store.probe_bucket_settings().await;
        gsdr::storage::capabilities::check(
            name,
            &gsdr::storage::Store::describe(&store),
            s3,
            gsdr::storage::capabilities::Uses::default(),
            &caps,
        )?;
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
