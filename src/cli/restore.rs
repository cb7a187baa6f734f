//! `gsdr restore`: a backup back into a file, a server or a directory.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::output::{bytes, emit};
use super::{progress, Ctx, Outcome};
use gsdr::job::RestoreRequest;

/// Arguments of `gsdr restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Backup id (see `gsdr list`); default: the newest restorable backup of --source.
    #[arg(long = "backup", value_name = "ID")]
    backup: Option<String>,
    /// Backup id, positionally.
    #[arg(value_name = "ID", conflicts_with = "backup")]
    id: Option<String>,
    /// Source to restore (required without an id).
    #[arg(long, short = 's', value_name = "NAME")]
    source: Option<String>,
    /// Read from this target instead of the source's primary target (e.g. the off-site copy).
    #[arg(long, value_name = "TARGET")]
    target: Option<String>,
    /// Write the raw stream (decrypted, decompressed) to FILE; `-` for stdout.
    #[arg(long, value_name = "FILE")]
    to_file: Option<PathBuf>,
    /// Restore into this running server (Mongo URI, Redis URL).
    #[arg(long = "to", value_name = "URI")]
    to_uri: Option<String>,
    /// Restore into this directory (PostgreSQL data directory).
    #[arg(long, value_name = "DIR")]
    to_dir: Option<PathBuf>,
    /// Rename namespaces from this pattern (`db.*`).
    #[arg(long, value_name = "PATTERN")]
    ns_from: Option<String>,
    /// Rename namespaces to this pattern (`drill_db.*`).
    #[arg(long, value_name = "PATTERN")]
    ns_to: Option<String>,
    /// Replace what is there: drop target collections, flush a Redis target, overwrite a file, use a non-empty directory.
    #[arg(long, visible_aliases = ["drop", "flush", "force"])]
    replace: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Point-in-time target (RFC 3339, e.g. 2026-11-29T01:45:00Z).
    #[arg(long, value_name = "TIME")]
    target_time: Option<DateTime<Utc>>,
    /// LSN target (PostgreSQL).
    #[arg(long, value_name = "LSN")]
    target_lsn: Option<String>,
    /// Recover to the newest point available.
    #[arg(long)]
    latest: bool,
    /// Read the backup from the newest Object-Locked versions of its manifest and data
    /// (a versioned bucket whose current versions an attacker may have overwritten or
    /// deleted); needs --source.
    #[arg(long, requires = "source", conflicts_with = "version_id")]
    locked: bool,
    /// Read this version of the backup's data object (versioned bucket; see
    /// `aws s3api list-object-versions`); the manifest's digests still decide.
    #[arg(long, value_name = "VERSION")]
    version_id: Option<String>,
    /// PostgreSQL: the restored cluster replaces production and keeps archiving into the
    /// source's WAL archive once promoted (default: it does not archive at all).
    #[arg(long, conflicts_with = "no_archiving")]
    keep_archiving: bool,
    /// PostgreSQL: the restored cluster does not archive (the default for --to-dir; an
    /// incident restore asks for one of --keep-archiving / --no-archiving).
    #[arg(long)]
    no_archiving: bool,
    /// Incident mode: recover every source of this scenario (see `runbooks/`).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["backup", "id", "source"])]
    scenario: Option<String>,
    /// With --scenario: print what would be restored, from which backup, into which targets, and the implied RPO; change nothing.
    #[arg(long, requires = "scenario")]
    plan: bool,
    /// With --scenario: the endpoint of a source, `SOURCE=PATH|URI` (repeatable).
    #[arg(long, value_name = "SOURCE=ENDPOINT", requires = "scenario")]
    into: Vec<String>,
    /// With --scenario: state file recording finished steps (default: `gsdr-incident-<scenario>.state.json`).
    #[arg(long, value_name = "FILE", requires = "scenario")]
    state: Option<PathBuf>,
    /// With --scenario: continue the run recorded in the state file, skipping finished steps.
    #[arg(long, requires = "scenario")]
    resume: bool,
    /// With --scenario: directory of the scenario files.
    #[arg(long, value_name = "DIR", env = "GSDR_RUNBOOKS", requires = "scenario")]
    runbooks: Option<PathBuf>,
    /// With --scenario: start each restored PostgreSQL data directory with pg_ctl on the source's port and wait until it promotes (default: prepare it for the operator to start).
    #[arg(long, requires = "scenario")]
    start_postgres: bool,
    /// With --scenario: also write the incident record (json, md, html) under DIR/<scenario>/.
    #[arg(long, value_name = "DIR", requires = "scenario")]
    out: Option<PathBuf>,
    /// Password of a --to / --into URI written without one, from this environment
    /// variable; `SOURCE=VAR` for one source of --into (repeatable). Default: the
    /// source's own password in the policy.
    #[arg(long, value_name = "[SOURCE=]VAR")]
    password_env: Vec<String>,
    /// As --password-env, from this file (trailing newline trimmed).
    #[arg(long, value_name = "[SOURCE=]FILE")]
    password_file: Vec<String>,
}

/// The passwords of `--password-env` / `--password-file`: one for every
/// target URI without its own, and per source (`SOURCE=…`, a source of the
/// policy), read now so that a missing one fails before anything is restored.
pub(super) struct Passwords {
    /// For every target without a per-source one.
    pub(super) all: Option<gsdr::secret::Secret>,
    /// Per source.
    pub(super) by_source: std::collections::BTreeMap<String, gsdr::secret::Secret>,
}

impl Passwords {
    fn read(args: &Args, sources: &[&str]) -> anyhow::Result<Passwords> {
        use gsdr::secret::SecretRef;
        let mut p = Passwords {
            all: None,
            by_source: Default::default(),
        };
        let given = args
            .password_env
            .iter()
            .map(|v| (v, "--password-env"))
            .chain(args.password_file.iter().map(|v| (v, "--password-file")));
        for (v, flag) in given {
            let (source, rest) = match v.split_once('=') {
                Some((s, r)) if sources.contains(&s) => (Some(s), r),
                _ => (None, v.as_str()),
            };
            let r = match flag {
                "--password-env" => SecretRef::Env(rest.to_string()),
                _ => SecretRef::File(rest.into()),
            };
            let secret = r.read().map_err(|e| anyhow::anyhow!("{flag} {v}: {e}"))?;
            match source {
                Some(s) => {
                    p.by_source.insert(s.to_string(), secret);
                }
                None => {
                    anyhow::ensure!(
                        p.all.is_none(),
                        "{flag} {v}: a password for every target is already given; name the source (SOURCE=…) for each"
                    );
                    p.all = Some(secret);
                }
            }
        }
        Ok(p)
    }

    /// The password for `source`'s target, if one was given.
    pub(super) fn of(&self, source: &str) -> Option<&gsdr::secret::Secret> {
        self.by_source.get(source).or(self.all.as_ref())
    }
}

/// Warns about a password written in argv: the process list and the shell
/// history show it. Kept working (scripts rely on it), never silently.
fn warn_password_in_argv(flag: &str, uri: &str) {
    if gsdr::secret::uri_password(uri).is_some() {
        tracing::warn!(event = "password_in_argv", flag, uri = %gsdr::secret::strip_uri_password(uri));
        eprintln!(
            "warning: the URI of {flag} holds a password, which the process list and your shell history show: write it without one ({}) and pass --password-env VAR or --password-file FILE, or let gsdr take the source's own password from the policy",
            gsdr::secret::strip_uri_password(uri)
        );
    }
}

/// Runs `gsdr restore`.
pub async fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    if let Some(u) = &args.to_uri {
        warn_password_in_argv("--to", u);
    }
    for kv in &args.into {
        warn_password_in_argv("--into", kv);
    }
    let passwords = {
        let policy = ctx.load_policy().ok();
        let sources: Vec<&str> = policy
            .as_ref()
            .map(|p| p.sources.keys().map(String::as_str).collect())
            .unwrap_or_default();
        Passwords::read(&args, &sources)?
    };
    if let Some(scenario) = args.scenario.clone() {
        return super::drill::incident(
            ctx,
            super::drill::IncidentArgs {
                scenario,
                plan: args.plan,
                into: args.into,
                passwords,
                state: args.state,
                resume: args.resume,
                runbooks: args.runbooks,
                out: args.out,
                yes: args.yes,
                target_time: args.target_time,
                start_postgres: args.start_postgres,
                archiving: match (args.keep_archiving, args.no_archiving) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
            },
        )
        .await;
    }
    let env = ctx.env()?;
    let id = args.backup.clone().or(args.id.clone());
    let req = RestoreRequest {
        to_file: args.to_file.clone(),
        to_uri: args.to_uri.clone(),
        to_dir: args.to_dir.clone(),
        ns_from: args.ns_from.clone(),
        ns_to: args.ns_to.clone(),
        replace: args.replace,
        yes: args.yes,
        target_time: args.target_time,
        target_lsn: args.target_lsn.clone(),
        latest: args.latest,
        from_target: args.target.clone(),
        keep_archiving: args.keep_archiving,
        to_password: None,
    };
    // Find the backup: by id (searching the named or every primary target), or newest of a source.
    let (catalog, mut manifest) = match (&id, &args.source) {
        (_, Some(s)) if args.locked => locked_backup(&env, &args, s, id.as_deref()).await?,
        (Some(id), _) => {
            let targets: Vec<String> = match (&args.target, &args.source) {
                (Some(t), _) => vec![t.clone()],
                (None, Some(s)) => vec![env.primary_target_name(s)?],
                (None, None) => {
                    let mut t: Vec<String> = env
                        .policy
                        .sources
                        .keys()
                        .filter_map(|s| env.policy.target_of(s).map(str::to_string))
                        .collect();
                    t.sort();
                    t.dedup();
                    t
                }
            };
            let mut found = None;
            for t in targets {
                let cat = env.catalog(&t).await?;
                if let Ok(m) = cat.find(id).await {
                    found = Some((cat, m));
                    break;
                }
            }
            found.ok_or_else(|| {
                gsdr::Error::Catalog(gsdr::catalog::CatalogError::UnknownBackup {
                    id: id.clone(),
                    store: "any target of the policy".into(),
                })
            })?
        }
        (None, Some(s)) => {
            let target = match &args.target {
                Some(t) => t.clone(),
                None => env.primary_target_name(s)?,
            };
            let cat = env.catalog(&target).await?;
            let m = cat.newest_before(s, None, args.target_time).await?;
            (cat, m)
        }
        (None, None) => anyhow::bail!("name a backup id or --source"),
    };
    let req = RestoreRequest {
        to_password: passwords.of(&manifest.source).cloned(),
        ..req
    };
    if let Some(v) = &args.version_id {
        manifest.data_version = Some(v.clone());
    }
    // A restore that destroys what is at its destination says what, and asks.
    if let Some(o) = gsdr::job::describe_overwrite(&env, &manifest, &req).await {
        if o.destroys && !args.yes {
            use std::io::{BufRead, IsTerminal, Write};
            anyhow::ensure!(
                std::io::stdin().is_terminal(),
                "this restore {}: pass --yes to confirm (stdin is not a terminal)",
                o.text
            );
            eprint!("This restore {}. Type `yes` to proceed: ", o.text);
            std::io::stderr().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            anyhow::ensure!(line.trim() == "yes", "not confirmed; nothing was restored");
        }
    }
    let progress = progress::for_terminal(ctx.quiet || ctx.json);
    let outcome = gsdr::job::restore(&env, &catalog, &manifest, &req, progress.as_ref()).await?;
    if req.to_file.as_deref() == Some(std::path::Path::new("-")) {
        // stdout carries the data: the summary goes to the log.
        tracing::info!(event = "restore_finished", id = %outcome.id, bytes = outcome.raw_bytes);
        return Ok(Outcome::Ok);
    }
    emit(ctx.json, &outcome, |o| {
        format!(
            "restored {} ({}) to {}: {} in {:.1}s\n",
            o.id,
            o.source,
            o.destination,
            bytes(o.raw_bytes),
            o.duration_secs
        )
    })?;
    Ok(Outcome::Ok)
}

/// The backup `id` of `source` (default: the newest before --target-time)
/// as the newest Object-Locked versions on the target give it.
async fn locked_backup(
    env: &gsdr::job::Env,
    args: &Args,
    source: &str,
    id: Option<&str>,
) -> anyhow::Result<(gsdr::catalog::Catalog, gsdr::catalog::Manifest)> {
    let target = match &args.target {
        Some(t) => t.clone(),
        None => env.primary_target_name(source)?,
    };
    let cat = env.catalog(&target).await?;
    let Some(all) = cat
        .locked_backups(source, Utc::now(), |m| env.authenticate(m).is_ok())
        .await?
    else {
        anyhow::bail!(
            "--locked: target `{target}` keeps no object versions ({}); enable versioning and object_lock in [targets.{target}.lifecycle]",
            cat.store().describe()
        );
    };
    let found = all
        .into_iter()
        .rev()
        .filter(|b| b.lock.is_some())
        .find(|b| match id {
            Some(id) => b.manifest.id == id,
            None => args
                .target_time
                .is_none_or(|t| b.manifest.recovery_point() <= t),
        });
    match found {
        Some(b) => Ok((cat, b.manifest)),
        None => anyhow::bail!(
            "--locked: no backup{} of `{source}` on target `{target}` has its manifest and data under Object Lock",
            id.map(|i| format!(" `{i}`")).unwrap_or_default()
        ),
    }
}
