//! CLI wiring: clap definitions, logging, exit codes, and one module per subcommand.
//!
//! Exit codes, the same for every command: 0 ok; 1 a check found damage or
//! missed a target; 2 an error (bad input, unreachable server, wrong key, no
//! such backup, not supported yet). The code of an error comes from its
//! [`gsdr::ErrorKind`]; with `--json` the error is also one JSON document on stdout.
//! Data goes to stdout (`--json` for machines), logs and progress to stderr.

mod backup;
mod canary;
mod capture;
mod completions;
mod daemon;
mod drill;
mod keygen;
mod list;
mod log_json;
mod output;
mod policy_cmd;
mod progress;
mod prune;
mod replicate;
mod restore;
mod run;
mod status;
mod storage_cmd;
mod velero;
mod verify;
mod wal;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use gsdr::job::Env;
use gsdr::policy::Policy;

/// gsdr: streaming, compressed, encrypted backups to S3, and recovery drills that measure RTO and RPO.
#[derive(Debug, Parser)]
#[command(name = "gsdr", version, about, long_about = None)]
pub struct Cli {
    /// Policy file (TOML).
    #[arg(long, global = true, env = "GSDR_POLICY", value_name = "FILE")]
    policy: Option<PathBuf>,
    /// age identity file (private key) for restore and verify; overrides the policy's `encryption.identity_file`.
    #[arg(long, global = true, env = "GSDR_IDENTITY_FILE", value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Accept unsigned manifests this once (written before `[signing]` was set up); forged or changed ones are still refused.
    #[arg(long, global = true)]
    allow_unsigned: bool,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less logging (-q warnings only, -qq errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
    /// Log format on stderr (auto: text on a terminal, JSON otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Back up sources of the policy now (all of them unless --source is given).
    Backup(backup::Args),
    /// List committed backups.
    List(list::Args),
    /// Stream a backup back and check it: size, SHA-256, decryption, decompression.
    Verify(verify::Args),
    /// Restore a backup, or recover a whole scenario in an incident (`--scenario`).
    Restore(Box<restore::Args>),
    /// Rehearse recovery scenarios into scratch targets; measure RTO and RPO against the objectives.
    Drill(drill::Args),
    /// Write a heartbeat canary into sources now (drills read it back to measure the RPO).
    Canary(canary::Args),
    /// Check a policy file.
    Policy(policy_cmd::Args),
    /// Create an age identity file (private key, mode 0600) and print its recipient (public key).
    Keygen(keygen::Args),
    /// PostgreSQL archive_command: archive one WAL file (`%p`); exit 1 on failure.
    WalPush(wal::PushArgs),
    /// PostgreSQL restore_command: fetch one WAL file (`%f %p`); exit 1 if absent, 255 to stop recovery.
    WalFetch(wal::FetchArgs),
    /// Check the WAL archive for gaps per timeline (exit 1 on gaps).
    WalVerify(wal::VerifyArgs),
    /// Every scheduled job: next run, last run, outcome (from the catalog); with --source, a postgres source's WAL status.
    Status(wal::VerifyArgs),
    /// Run every job (backups, Velero, drills, prune, replication, gc) on its schedule until SIGTERM; serve /metrics, /healthz, /readyz.
    Daemon(daemon::Args),
    /// CronJob mode: run what is due (or --source) once and exit non-zero if any run failed.
    Run(run::Args),
    /// Apply retention: delete backups no rule keeps (--dry-run shows what and why).
    Prune(prune::Args),
    /// Copy to the off-site target what it lacks (--check: only list it).
    Replicate(replicate::Args),
    /// Stream a source's changes (WAL, Redis replication, oplog) into its targets until SIGTERM.
    Capture(capture::Args),
    /// Bucket settings (lifecycle rules, versioning, Object Lock) and garbage collection of leftovers.
    Storage(storage_cmd::Args),
    /// Velero: Kubernetes backups and restores through the Kubernetes API.
    Velero(velero::Args),
    /// Print a shell completion script (bash, zsh, fish) on stdout.
    Completions(completions::Args),
    /// Print the man page (roff) on stdout.
    Man,
}

/// What a subcommand concluded.
pub enum Outcome {
    /// Everything passed.
    Ok,
    /// A check failed (exit 1).
    CheckFailed,
    /// A specific exit status (PostgreSQL's archive/restore command contract).
    Exit(u8),
}

/// Runs the CLI and maps the result to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() && std::env::args().any(|a| a == "--json") {
                let text = e.render().to_string();
                let first = text.lines().next().unwrap_or_default();
                let message = first.strip_prefix("error: ").unwrap_or(first);
                output::emit_error("invalid_input", message, Some("see `gsdr --help`"));
            }
            e.exit()
        }
    };
    let json = cli.json;
    init_logging(&cli);
    if matches!(cli.command, Command::Daemon(_)) {
        if let Some(n) = gsdr::daemon::alloc::limit_arenas() {
            tracing::debug!(event = "malloc_arenas_capped", arenas = n);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(cli));
    if let Some(counts) = gsdr::storage::counted::global() {
        eprintln!("gsdr-store-stats: {}", counts.summary());
    }
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::CheckFailed) => ExitCode::from(1),
        Ok(Outcome::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            let text = error_text(&e);
            eprintln!("error: {text}");
            let kind = gsdr::failure::kind_of_chain(e.chain());
            if json {
                output::emit_error(&kind_name(kind), &text, hint(kind));
            }
            ExitCode::from(kind.exit_code())
        }
    }
}

/// The `error.kind` of a `--json` error document: the kind's snake_case name.
fn kind_name(kind: gsdr::ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "other".into())
}

/// What to do next, for the kinds where one answer fits every command.
fn hint(kind: gsdr::ErrorKind) -> Option<&'static str> {
    use gsdr::ErrorKind as K;
    match kind {
        K::WrongKey => Some("pass the identity file of one of the backup's recipients (--identity or encryption.identity_file)"),
        K::NotFound => Some("`gsdr list` shows the backups"),
        K::Unreachable => Some("check that the server is up and the endpoint in the policy is right"),
        K::InvalidInput => Some("`gsdr policy check` checks the policy"),
        _ => None,
    }
}

/// `e` and its causes joined with `: `, each cause left out when the text
/// so far already says it (many errors print their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let t = c.to_string();
        if out.is_empty() {
            out = t;
        } else if !out.contains(&t) {
            out = format!("{out}: {t}");
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet > 0,
        policy: cli.policy.clone(),
        identity: cli.identity.clone(),
        allow_unsigned: cli.allow_unsigned,
    };
    match cli.command {
        Command::Backup(a) => backup::run(&ctx, a).await,
        Command::List(a) => list::run(&ctx, a).await,
        Command::Verify(a) => verify::run(&ctx, a).await,
        Command::Restore(a) => restore::run(&ctx, *a).await,
        Command::Drill(a) => drill::run(&ctx, a).await,
        Command::Canary(a) => canary::run(&ctx, a).await,
        Command::Policy(a) => policy_cmd::run(&ctx, a).await,
        Command::Keygen(a) => keygen::run(&ctx, a),
        Command::WalPush(a) => wal::push(&ctx, a).await,
        Command::WalFetch(a) => wal::fetch(&ctx, a).await,
        Command::WalVerify(a) => wal::verify(&ctx, a).await,
        Command::Status(a) => status::run(&ctx, a).await,
        Command::Daemon(a) => daemon::run(&ctx, a).await,
        Command::Run(a) => run::run(&ctx, a).await,
        Command::Prune(a) => prune::run(&ctx, a).await,
        Command::Replicate(a) => replicate::run(&ctx, a).await,
        Command::Capture(a) => capture::run(&ctx, a).await,
        Command::Storage(a) => storage_cmd::run(&ctx, a).await,
        Command::Velero(a) => velero::run(&ctx, a).await,
        Command::Completions(a) => completions::completions(a),
        Command::Man => completions::man(),
    }
}

/// Global options every subcommand sees.
pub struct Ctx {
    /// `--json`.
    pub json: bool,
    /// `-q` given.
    pub quiet: bool,
    policy: Option<PathBuf>,
    identity: Option<PathBuf>,
    allow_unsigned: bool,
}

impl Ctx {
    /// Loads the policy named by `--policy` / `GSDR_POLICY`.
    pub fn load_policy(&self) -> anyhow::Result<Policy> {
        let path = self
            .policy
            .as_ref()
            .context("no policy file: pass --policy FILE or set GSDR_POLICY")?;
        Ok(Policy::load(path)?)
    }

    /// The job environment for the policy.
    pub fn env(&self) -> anyhow::Result<Env> {
        let mut env = Env::new(self.load_policy()?);
        env.identity_file = self.identity.clone();
        env.allow_unsigned = self.allow_unsigned;
        Ok(env)
    }
}

fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let level = match (cli.verbose, cli.quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let filter = EnvFilter::try_from_env("GSDR_LOG").unwrap_or_else(|_| {
        EnvFilter::new(format!("{level},aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn,mongodb=warn,kube=warn"))
    });
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.event_format(log_json::JsonLines).init();
    } else {
        builder.with_target(false).init();
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_text_leaves_out_causes_the_message_already_says() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading the stored object: {0}")]
        struct Outer(#[source] std::io::Error);
        let e = anyhow::Error::from(Outer(std::io::Error::other("the server stopped answering")))
            .context("restore of `cache`");
        assert_eq!(
            super::error_text(&e),
            "restore of `cache`: reading the stored object: the server stopped answering"
        );
    }
}
