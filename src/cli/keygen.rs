//! `gsdr keygen`: a new age identity.

use std::path::PathBuf;

use serde::Serialize;

use super::output::emit;
use super::{Ctx, Outcome};

/// Arguments of `gsdr keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the identity (created with mode 0600; never overwritten).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

#[derive(Serialize)]
struct Key {
    identity_file: PathBuf,
    recipient: String,
}

/// Runs `gsdr keygen`.
pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    let recipient = gsdr::pipeline::keys::keygen(&args.output)?;
    emit(
        ctx.json,
        &Key {
            identity_file: args.output,
            recipient,
        },
        |k| format!("{}\n", k.recipient),
    )?;
    Ok(Outcome::Ok)
}
