//! One type for both outputs: `--json` serialises the struct the human table renders.

use std::io::Write;

use serde::Serialize;

/// Schema version of every `--json` document.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    schema_version: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// Prints `value` as JSON (with `schema_version`) or through `human`.
pub fn emit<T: Serialize>(
    json: bool,
    value: &T,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        REPORTED.store(true, std::sync::atomic::Ordering::SeqCst);
        serde_json::to_writer_pretty(
            &mut out,
            &Envelope {
                schema_version: SCHEMA_VERSION,
                body: value,
            },
        )?;
        writeln!(out)?;
    } else {
        out.write_all(human(value).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Serialize)]
struct ErrorDoc<'a> {
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hint: Option<&'a str>,
}

/// Prints the `--json` error document `{"schema_version", "error": {kind, message, hint}}`.
/// Best effort: the error is on stderr already, so a closed stdout is ignored.
/// Set once a JSON document went to stdout: stdout holds one document only.
static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The `--json` error document, unless the command already printed its
/// report (a drill or run whose items failed): then the report carries the
/// failures and stdout stays one document.
pub fn emit_error(kind: &str, message: &str, hint: Option<&str>) {
    if REPORTED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    #[derive(Serialize)]
    struct Body<'a> {
        error: ErrorDoc<'a>,
    }
    let body = Body {
        error: ErrorDoc {
            kind,
            message,
            hint,
        },
    };
    let _ = emit(true, &body, |_| String::new());
}

/// Bytes in binary units, e.g. `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    gsdr::units::human_bytes(n)
}
