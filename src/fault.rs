//! How a failure is classified, for every layer: whether a retry may help
//! ([`RetryClass`]) and what the operator must fix ([`ErrorKind`], which the
//! CLI turns into exit codes and `--json` error documents). Each layer's own
//! error type maps itself onto these; the aggregate `crate::Error` lives at
//! the top.

/// Whether retrying the failed operation may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryClass {
    /// Network blips, a server restarting, throttling: retry with backoff.
    Temporary,
    /// Bad configuration, wrong key, corrupt data: retrying repeats the failure.
    Permanent,
}

/// What kind of failure an error is, for exit codes and `--json` error documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The policy, a scenario or an argument is wrong.
    InvalidInput,
    /// A server, bucket or API could not be reached or did not answer.
    Unreachable,
    /// The server refused gsdr's credentials.
    AccessDenied,
    /// No identity in the identity file opens the backup.
    WrongKey,
    /// The backup, object or catalog entry asked for does not exist.
    NotFound,
    /// The stored data is damaged: truncated, altered or corrupt.
    Damaged,
    /// The engine or feature is not built yet.
    NotSupported,
    /// A local file could not be read or written.
    LocalIo,
    /// A source failed while dumping or restoring.
    SourceFailed,
    /// A job was cancelled or ran past its deadline.
    Cancelled,
    /// Anything else (a bug, an unexpected answer).
    Other,
}

impl ErrorKind {
    /// The CLI's exit code: 1 when a check found damage, 2 for every other error.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Damaged => 1,
            _ => 2,
        }
    }
}

/// The innermost cause of `err`, named as an operator reads it:
/// `connection refused`, `connection timed out`, `DNS lookup failed (…)`,
/// `TLS failed (…)`, else the innermost message.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut last = err;
    let mut io_kind = None;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        last = e;
        cur = e.source();
    }
    let text = last.to_string();
    let lower = text.to_lowercase();
    match io_kind {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".into(),
        Some(std::io::ErrorKind::TimedOut) => "connection timed out".into(),
        _ if lower.contains("refused") => "connection refused".into(),
        _ if lower.contains("dns")
            || lower.contains("lookup")
            || lower.contains("name or service") =>
        {
            format!("DNS lookup failed ({text})")
        }
        _ if lower.contains("certificate") || lower.contains("tls") => {
            format!("TLS failed ({text})")
        }
        _ => text,
    }
}
