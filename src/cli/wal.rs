//! `gsdr wal-push`, `wal-fetch`, `wal-verify`, `status`: PostgreSQL's
//! `archive_command` / `restore_command` and the archive's health.
//!
//! Exit codes differ from the other subcommands, as PostgreSQL needs:
//! `wal-push` exits 1 on any failure (never above 125); `wal-fetch` exits 1
//! when the file is not archived and 255 for every other failure (including
//! an unreadable policy), which stops recovery instead of ending it early.

use std::path::PathBuf;

use super::output::emit;
use super::{Ctx, Outcome};
use gsdr::job::Env;
use gsdr::source::postgres::{wal, walverify};

/// Arguments of `gsdr wal-push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Postgres source (default: the policy's only postgres source).
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// The file to archive (`%p`).
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// Accept a new timeline that branches off before the end of the archive:
    /// this cluster replaces production after a point-in-time restore
    /// (`gsdr restore --keep-archiving` writes it into archive_command).
    #[arg(long)]
    allow_branch: bool,
}

/// Arguments of `gsdr wal-fetch`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Postgres source (default: the policy's only postgres source).
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Fetch from this target instead of the source's primary (a restore from the off-site copy).
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// WAL file name (`%f`).
    #[arg(value_name = "NAME")]
    name: String,
    /// Where to write it (`%p`).
    #[arg(value_name = "PATH")]
    dest: PathBuf,
}

/// Arguments of `gsdr wal-verify` and `gsdr status`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Postgres source (default: the policy's only postgres source).
    #[arg(long, short = 's', value_name = "NAME")]
    pub(crate) source: Option<String>,
    /// wal-verify: check this target's archive (e.g. the off-site copy) instead of the primary's.
    #[arg(long, value_name = "TARGET")]
    pub(crate) target: Option<String>,
}

fn pick_source(env: &Env, given: Option<String>) -> anyhow::Result<String> {
    if let Some(s) = given {
        return Ok(s);
    }
    let pg: Vec<&String> = env
        .policy
        .sources
        .iter()
        .filter(|(n, c)| c.engine(n).is_ok_and(|e| e.restore_keeps_archiving()))
        .map(|(n, _)| n)
        .collect();
    match pg.as_slice() {
        [one] => Ok((*one).clone()),
        [] => anyhow::bail!("the policy has no postgres source"),
        _ => anyhow::bail!("several postgres sources: pass --source NAME"),
    }
}

/// Runs `gsdr wal-push`.
pub async fn push(ctx: &Ctx, a: PushArgs) -> anyhow::Result<Outcome> {
    let res = async {
        let env = ctx.env()?;
        let source = pick_source(&env, a.source)?;
        let opts = wal::PushOptions {
            allow_branch: a.allow_branch,
        };
        let pushed = async {
            wal::push_name(&a.path)?;
            let archive = wal_archive(&env, &source, None)
                .await
                .map_err(wal::WalError::setup)?;
            let encode = env.encode_options().map_err(wal::WalError::setup)?;
            // Copied off-site as soon as it is stored (the sweep catches up
            // what this misses); an off-site target that cannot be opened
            // never fails the push.
            let offsite = match env.policy.offsite_of(&source) {
                Some(o) => match env.store(o).await {
                    Ok(s) => Some((o.to_string(), s)),
                    Err(e) => {
                        tracing::warn!(event = "wal_offsite_copy_failed", source = %source, target = o, error = %e, "the replicate sweep copies it later");
                        None
                    }
                },
                None => None,
            };
            let off = offsite.as_ref().map(|(n, s)| (n.as_str(), s));
            let r = wal::wal_push(&archive, encode, &a.path, opts).await;
            if let Ok(rep) = &r {
                for n in &rep.stored {
                    gsdr::source::postgres::walcopy::copy_offsite(&archive, off, n).await;
                }
            }
            r
        }
        .await;
        Ok::<_, anyhow::Error>(pushed)
    }
    .await;
    match res {
        Ok(Ok(_)) => Ok(Outcome::Ok),
        Ok(Err(e)) => {
            eprintln!("error: wal-push {}: {e}", a.path.display());
            Ok(Outcome::Exit(e.push_exit_code()))
        }
        Err(e) => {
            let e: anyhow::Error = e;
            eprintln!("error: wal-push {}: {e:#}", a.path.display());
            Ok(Outcome::Exit(1))
        }
    }
}

/// Runs `gsdr wal-fetch`.
pub async fn fetch(ctx: &Ctx, a: FetchArgs) -> anyhow::Result<Outcome> {
    let res = async {
        let env = ctx.env()?;
        let source = pick_source(&env, a.source)?;
        let fetched = async {
            wal::check_name(&a.name)?;
            let archive = wal_archive(&env, &source, a.target.as_deref())
                .await
                .map_err(wal::WalError::setup)?;
            let ids = env.identities().map_err(wal::WalError::setup)?;
            wal::wal_fetch(&archive, ids, &a.name, &a.dest).await
        }
        .await;
        Ok::<_, anyhow::Error>(fetched)
    }
    .await;
    match res {
        Ok(Ok(_)) => Ok(Outcome::Ok),
        Ok(Err(e)) => {
            if e.fetch_exit_code() == 1 {
                tracing::debug!(event = "wal_fetch_not_found", name = %a.name);
            } else {
                eprintln!("error: wal-fetch {}: {e} (stopping recovery)", a.name);
            }
            Ok(Outcome::Exit(e.fetch_exit_code()))
        }
        Err(e) => {
            eprintln!("error: wal-fetch {}: {e:#} (stopping recovery)", a.name);
            Ok(Outcome::Exit(wal::FATAL_EXIT))
        }
    }
}

/// Runs `gsdr wal-verify`: exit 1 when the archive has gaps.
pub async fn verify(ctx: &Ctx, a: VerifyArgs) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let source = pick_source(&env, a.source)?;
    let r = async {
        let archive = wal_archive(&env, &source, a.target.as_deref())
            .await
            .map_err(wal::WalError::setup)?;
        walverify::wal_verify(&archive).await
    }
    .await?;
    emit(ctx.json, &r, |r| {
        let mut s = String::new();
        for t in &r.timelines {
            s += &format!(
                "timeline {}: {} .. {}: {} found, {} missing{}{}\n",
                t.timeline,
                t.first,
                t.last,
                t.found,
                t.missing_count,
                if t.missing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.missing.join(", "))
                },
                if t.incomplete.is_empty() {
                    String::new()
                } else {
                    format!("; incomplete: {}", t.incomplete.join(", "))
                }
            );
        }
        for b in &r.base_backups {
            s += &format!(
                "base {}: WAL {} .. {} {}\n",
                b.id,
                b.first_segment,
                b.last_segment,
                if b.restorable {
                    "complete"
                } else {
                    "INCOMPLETE"
                }
            );
        }
        for u in &r.untrusted {
            s += &format!("UNTRUSTED {}: {}\n", u.name, u.problem);
        }
        s += match (r.ok, r.untrusted.is_empty()) {
            (true, _) => "ok\n",
            (false, true) => "GAPS FOUND\n",
            (false, false) => "UNTRUSTED WAL FOUND\n",
        };
        s
    })?;
    Ok(if r.ok {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

/// Runs `gsdr status` for a postgres source.
pub async fn status(ctx: &Ctx, a: VerifyArgs) -> anyhow::Result<Outcome> {
    let env = ctx.env()?;
    let source = pick_source(&env, a.source)?;
    let r = async {
        let archive = wal_archive(&env, &source, None)
            .await
            .map_err(wal::WalError::setup)?;
        walverify::wal_status(&archive).await
    }
    .await?;
    emit(ctx.json, &r, |r| {
        let mut s = match (&r.last_segment, &r.chain_base_backup) {
            (Some(seg), Some(base)) => format!(
                "source {}: restorable up to WAL {seg} stored at {} ({} s ago), the end of the contiguous chain from base backup {base}",
                r.source,
                r.last_archived_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or("-".into()),
                r.seconds_since_last_archive
                    .map(|s| s.to_string())
                    .unwrap_or("-".into()),
            ),
            _ => format!(
                "source {}: no restorable base backup (newest WAL stored: {}): nothing can be recovered yet",
                r.source,
                r.newest_segment.as_deref().unwrap_or("-")
            ),
        };
        s += &format!(
            "; last base backup {} at {}\n",
            r.last_base_backup.as_deref().unwrap_or("-"),
            r.last_base_backup_at
                .map(|t| t.to_rfc3339())
                .unwrap_or("-".into()),
        );
        if let Some(h) = &r.hole_at {
            s += &format!(
                "WARNING: {h} is missing while later WAL is stored (newest {}): recovery stops before it; run `gsdr wal-verify`\n",
                r.newest_segment.as_deref().unwrap_or("-")
            );
        }
        s
    })?;
    Ok(Outcome::Ok)
}

/// The WAL archive of postgres source `source` on `target` (default: its
/// primary target), for the WAL commands.
async fn wal_archive(
    env: &Env,
    source: &str,
    target: Option<&str>,
) -> gsdr::Result<wal::WalArchive> {
    let sc = env.source_config(source)?;
    let target = match target {
        Some(t) => t.to_string(),
        None => env.primary_target_name(source)?,
    };
    let store = env.store(&target).await?;
    let mut archive = wal::WalArchive::of(source, sc.engine.as_ref(), store)?;
    // wal-fetch and wal-verify refuse sidecars the verify keys do not accept.
    archive.trust = env.trust()?;
    Ok(archive)
}
