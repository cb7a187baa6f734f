//! `gsdr keygen`: a new age identity, or (`--signing`) a manifest signing key.

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
    /// Make an Ed25519 manifest signing key instead (for `signing.key_file`);
    /// prints its verify key (for `signing.verify_keys`).
    #[arg(long)]
    signing: bool,
}

#[derive(Serialize)]
struct SigningKey {
    key_file: PathBuf,
    verify_key: String,
}

#[derive(Serialize)]
struct Key {
    identity_file: PathBuf,
    recipient: String,
}

/// Runs `gsdr keygen`.
pub fn run(ctx: &Ctx, args: Args) -> anyhow::Result<Outcome> {
    if args.signing {
        let verify_key = gsdr::signing::Signer::create(&args.output)?;
        emit(
            ctx.json,
            &SigningKey {
                key_file: args.output,
                verify_key,
            },
            |k| format!("{}\n", k.verify_key),
        )?;
        return Ok(Outcome::Ok);
    }
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
