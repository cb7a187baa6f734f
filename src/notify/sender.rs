//! Delivery: POSTs a notice's body to the webhook, or the heartbeat to the
//! heartbeat URL, with a timeout. URLs are secrets: errors and logs name the
//! endpoint by its policy field, never by its address.

use std::fmt;
use std::time::Duration;

use super::{render, Notice};
use crate::policy::{Policy, WebhookFormat};
use crate::secret::Secret;

/// How long one POST may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Which URL a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `daemon.webhook_url`.
    Webhook,
    /// `daemon.heartbeat_url`.
    Heartbeat,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Endpoint::Webhook => "webhook (daemon.webhook_url)",
            Endpoint::Heartbeat => "heartbeat URL (daemon.heartbeat_url)",
        })
    }
}

/// A notification that could not be sent. Never contains a URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A URL's secret could not be read.
    #[error("{field}: {message}")]
    Secret {
        /// The policy field.
        field: &'static str,
        /// Why (names the reference, not the value).
        message: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for notifications: {0}")]
    Client(#[source] reqwest::Error),
    /// No answer within [`SEND_TIMEOUT`].
    #[error("the {endpoint} did not answer within {}; check that it is reachable from the pod", humantime::format_duration(*timeout))]
    Timeout {
        /// Where to.
        endpoint: Endpoint,
        /// The timeout.
        timeout: Duration,
    },
    /// Answered with an error status.
    #[error("the {endpoint} answered HTTP {status}; check the URL in its secret")]
    Status {
        /// Where to.
        endpoint: Endpoint,
        /// The status code.
        status: u16,
    },
    /// Connection refused, DNS, TLS and other transport errors.
    #[error("cannot reach the {endpoint}: {cause}")]
    Request {
        /// Where to.
        endpoint: Endpoint,
        /// What failed, e.g. `connect: Connection refused (os error 111)`. A
        /// text, not the client's error: that one names the address it dialled.
        cause: String,
    },
}

/// Posts notices to the webhook and heartbeats to the heartbeat URL.
pub struct Sender {
    policy: String,
    format: WebhookFormat,
    webhook: Option<Secret>,
    heartbeat: Option<Secret>,
    timeout: Duration,
    client: reqwest::Client,
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("policy", &self.policy)
            .field("format", &self.format)
            .field("webhook", &self.webhook.is_some())
            .field("heartbeat", &self.heartbeat.is_some())
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for platform `policy`; either URL may be absent.
    pub fn new(
        policy: &str,
        format: WebhookFormat,
        webhook: Option<Secret>,
        heartbeat: Option<Secret>,
        timeout: Duration,
    ) -> Result<Sender, NotifyError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(NotifyError::Client)?;
        Ok(Self::with_client(
            policy, format, webhook, heartbeat, timeout, client,
        ))
    }

    pub(super) fn with_client(
        policy: &str,
        format: WebhookFormat,
        webhook: Option<Secret>,
        heartbeat: Option<Secret>,
        timeout: Duration,
        client: reqwest::Client,
    ) -> Sender {
        Sender {
            policy: policy.to_string(),
            format,
            webhook,
            heartbeat,
            timeout,
            client,
        }
    }

    /// The sender of a policy's `[daemon]` settings, its URLs read from their secrets.
    pub fn from_policy(p: &Policy) -> Result<Sender, NotifyError> {
        let read = |field: &'static str, r: &Option<crate::secret::SecretRef>| {
            r.as_ref()
                .map(|r| r.read())
                .transpose()
                .map_err(|message| NotifyError::Secret { field, message })
        };
        Sender::new(
            &p.name,
            p.daemon.webhook_format,
            read("daemon.webhook_url", &p.daemon.webhook_url)?,
            read("daemon.heartbeat_url", &p.daemon.heartbeat_url)?,
            SEND_TIMEOUT,
        )
    }

    /// Whether `n` has somewhere to go (a webhook, or a heartbeat URL for a heartbeat).
    pub fn sends(&self, n: &Notice) -> bool {
        self.url_for(n).is_some()
    }

    fn url_for(&self, n: &Notice) -> Option<(Endpoint, &Secret)> {
        match n {
            Notice::Heartbeat => self.heartbeat.as_ref().map(|u| (Endpoint::Heartbeat, u)),
            _ => self.webhook.as_ref().map(|u| (Endpoint::Webhook, u)),
        }
    }

    /// Posts `n`: a heartbeat to the heartbeat URL (generic JSON body),
    /// anything else to the webhook (in `webhook_format`). `Ok(false)`: no URL
    /// is configured for it, nothing was sent.
    pub async fn send(&self, n: &Notice) -> Result<bool, NotifyError> {
        let Some((endpoint, url)) = self.url_for(n) else {
            return Ok(false);
        };
        let body = match endpoint {
            Endpoint::Heartbeat => render::json_body(n, &self.policy),
            Endpoint::Webhook => render::body(n, &self.policy, self.format),
        };
        // No secret the policy references leaves in a webhook, whatever
        // text (a command's stderr) the notice carries.
        let body = crate::secret::redact(&body.to_string());
        let r = self
            .client
            .post(url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .and_then(|r| r.error_for_status());
        match r {
            Ok(_) => {
                tracing::info!(event = "notification_sent", kind = n.kind());
                Ok(true)
            }
            Err(e) => {
                let err = if e.is_timeout() {
                    NotifyError::Timeout {
                        endpoint,
                        timeout: self.timeout,
                    }
                } else if let Some(s) = e.status() {
                    NotifyError::Status {
                        endpoint,
                        status: s.as_u16(),
                    }
                } else {
                    NotifyError::Request {
                        endpoint,
                        cause: cause(&e),
                    }
                };
                tracing::warn!(event = "notification_failed", kind = n.kind(), error = %err);
                Err(err)
            }
        }
    }
}

/// What a transport error was, without the URL or the address: its class and
/// the operating system's message, if one is in its chain.
fn cause(e: &reqwest::Error) -> String {
    let class = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else if e.is_redirect() {
        "redirect"
    } else {
        "request"
    };
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return format!("{class}: {io}");
        }
        src = s.source();
    }
    class.to_string()
}
