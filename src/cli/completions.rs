//! `gsdr completions SHELL` and `gsdr man`: generated from the clap definitions, written to stdout.

use clap::CommandFactory;

use super::{Cli, Outcome};

/// Arguments of `gsdr completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Shells `gsdr completions` writes a script for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for the shell to stdout.
pub fn completions(args: Args) -> anyhow::Result<Outcome> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    // Into memory first: clap_complete panics on a failed write (a closed
    // pipe), while a write error here ends the command like any other output.
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "gsdr", &mut out);
    write_stdout(&out)
}

/// Writes the man page (roff, section 1) to stdout.
pub fn man() -> anyhow::Result<Outcome> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<Outcome> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(Outcome::Ok)
}
