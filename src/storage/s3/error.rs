//! Turning SDK errors into gsdr's [`StorageError`](crate::storage::StorageError), by error code.

use std::fmt;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::fault::RetryClass;

/// A failed S3 call, summarised for people (`SdkError`'s own `Display` says
/// only "service error"), keeping the SDK error as its source.
#[derive(Debug)]
pub(super) struct S3Failure {
    pub(super) summary: String,
    /// The SDK error; `None` when the summary already says all of it (an
    /// unreachable server: endpoint and root cause).
    pub(super) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for S3Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// What an SDK error means for gsdr.
pub(super) enum Kind {
    AccessDenied(crate::storage::Denied),
    NotFound,
    NoSuchBucket,
    Precondition,
    Other(RetryClass),
}

pub(super) fn kind_of<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Kind {
    use crate::storage::Denied;
    let status = err.raw_response().map(|r| r.status().as_u16());
    match err.code() {
        Some("InvalidAccessKeyId" | "SignatureDoesNotMatch") => {
            return Kind::AccessDenied(Denied::Credentials)
        }
        // Garage says `AccessDenied` for both and tells them apart in the
        // message ("No such key: …", "Invalid signature").
        Some("AccessDenied" | "AllAccessDisabled") => {
            return Kind::AccessDenied(if credentials_message(err.message()) {
                Denied::Credentials
            } else {
                Denied::Permission
            })
        }
        Some("NoSuchKey" | "NotFound") => return Kind::NotFound,
        Some("NoSuchBucket") => return Kind::NoSuchBucket,
        Some("PreconditionFailed" | "ConditionalRequestConflict") => return Kind::Precondition,
        Some(
            "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeTooSkewed",
        ) => return Kind::Other(RetryClass::Temporary),
        _ => {}
    }
    match (err, status) {
        (_, Some(412)) => Kind::Precondition,
        (_, Some(404)) => Kind::NotFound,
        (_, Some(403)) => Kind::AccessDenied(crate::storage::Denied::Permission),
        (_, Some(s)) if s >= 500 || s == 429 => Kind::Other(RetryClass::Temporary),
        (
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_),
            _,
        ) => Kind::Other(RetryClass::Temporary),
        _ => Kind::Other(RetryClass::Permanent),
    }
}

/// Whether an `AccessDenied` message speaks of the credentials, not of rights.
fn credentials_message(msg: Option<&str>) -> bool {
    let m = msg.unwrap_or("").to_ascii_lowercase();
    [
        "signature",
        "no such key",
        "access key",
        "invalid key",
        "unknown key",
    ]
    .iter()
    .any(|w| m.contains(w))
}

pub(super) fn summarize<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (
        err.code(),
        err.message().filter(|m| !m.trim().is_empty()),
        status,
    ) {
        (Some(code), Some(msg), Some(s)) => format!("{code}: {msg} (HTTP {s})"),
        (Some(code), None, Some(s)) => format!("{code} (HTTP {s})"),
        (None, _, Some(s)) => format!("HTTP {s}"),
        _ => match err {
            SdkError::DispatchFailure(_) => format!("cannot reach the server: {}", causes(err)),
            SdkError::TimeoutError(_) => "the request timed out".to_string(),
            _ => causes(err),
        },
    }
}

/// `cannot reach <endpoint>: <root cause> (<fix>)` when `err` is a failure to reach
/// the server (refused, timed out, DNS, TLS), else `None`.
pub(super) fn unreachable<E, R>(err: &SdkError<E, R>, endpoint: Option<&str>) -> Option<String>
where
    E: std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let root = match err {
        SdkError::DispatchFailure(_) => crate::fault::root_cause(err),
        SdkError::TimeoutError(_) => "the request timed out".to_string(),
        _ => return None,
    };
    let at = endpoint.unwrap_or("the S3 endpoint (the SDK's default for the region)");
    Some(format!(
        "cannot reach {at}: {root} (check that the server is up and the target's `endpoint`)"
    ))
}

/// `url` without the `user:password@` part, for messages.
pub(super) fn without_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The error and its causes, `: `-separated, without repeating a message
/// that already contains the next one.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}
