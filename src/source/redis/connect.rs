//! How gsdr reaches a Redis node or sentinel: credentials and TLS from the
//! policy, for the `redis` crate's clients and for the hand-written
//! replication client alike, so that both trust and present the same
//! certificates.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::RedisConfig;
use crate::secret::Secret;

/// PEM material for TLS, read once from the files the policy names.
pub struct TlsMaterial {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("custom_ca", &self.ca.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// Reads the CA, certificate and key files of `c`; `None` when `tls` is off.
    /// Errors name the field and file, never the content.
    pub fn load(c: &RedisConfig) -> Result<Option<Self>, String> {
        if !c.tls {
            return Ok(None);
        }
        let read = |field: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("`{field}` {}: {e}", p.display()))
        };
        let ca = match &c.tls_ca_file {
            Some(p) => Some(read("tls_ca_file", p)?),
            None => None,
        };
        let client = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cp), Some(kp)) => Some((read("tls_cert_file", cp)?, read("tls_key_file", kp)?)),
            _ => None,
        };
        let rustls = rustls_config(ca.as_deref(), client.as_ref())?;
        Ok(Some(TlsMaterial { ca, client, rustls }))
    }
}

fn rustls_config(
    ca: Option<&[u8]>,
    client: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| format!("`tls_ca_file`: not a PEM certificate: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("`tls_ca_file`: unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("`tls_ca_file` holds no PEM certificate".into());
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("TLS: the system trust store is empty; set `tls_ca_file` to the CA that signed the Redis certificates".into());
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("`tls_cert_file`: not a PEM certificate: {e}"))?;
            if certs.is_empty() {
                return Err("`tls_cert_file` holds no PEM certificate".into());
            }
            // The key's parse error could quote key bytes: say only what failed.
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|_| "`tls_key_file` holds no PEM private key".to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("`tls_cert_file`/`tls_key_file` do not match: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Credentials and transport for one kind of server (data nodes, or sentinels).
#[derive(Clone, Default)]
pub struct Access {
    /// ACL user; `None` = `default`.
    pub username: Option<String>,
    /// Password (`AUTH`).
    pub password: Option<Secret>,
    /// TLS material; `None` = plain TCP.
    pub tls: Option<Arc<TlsMaterial>>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// A byte stream to a node, plain or TLS.
pub trait NodeIo: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> NodeIo for T {}

impl Access {
    /// A `redis` crate client of `host:port` with these credentials.
    pub fn client(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p.expose());
        }
        let host = host.to_string();
        match &self.tls {
            None => redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
                host, port,
            ))
            .and_then(|i| redis::Client::open(i.set_redis_settings(settings))),
            Some(t) => {
                crate::tls::install_default_provider();
                let info = redis::IntoConnectionInfo::into_connection_info(
                    redis::ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    },
                )?
                .set_redis_settings(settings);
                redis::Client::build_with_tls(info, t.certificates())
            }
        }
    }

    /// A connected byte stream to `host:port` for the replication protocol:
    /// TCP, with the TLS handshake done when TLS is configured.
    pub async fn stream(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> io::Result<Box<dyn NodeIo>> {
        let work = async {
            let tcp = TcpStream::connect((host, port)).await?;
            let _ = tcp.set_nodelay(true);
            let Some(t) = &self.tls else {
                return Ok(Box::new(tcp) as Box<dyn NodeIo>);
            };
            let name = ServerName::try_from(host.to_string()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{host}` is not a valid TLS server name"),
                )
            })?;
            let tls = tokio_rustls::TlsConnector::from(t.rustls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
            Ok(Box::new(tls) as Box<dyn NodeIo>)
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {timeout:?}"),
            )
        })?
    }
}

impl TlsMaterial {
    /// The material in the form the `redis` crate's TLS clients take.
    pub(super) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|(c, k)| redis::ClientTlsConfig {
                client_cert: c.clone(),
                client_key: k.clone(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// `message` with a hint appended when it shows a TLS mismatch; `tls` says
/// whether the source uses TLS.
pub fn with_tls_hint(message: String, tls: bool) -> String {
    let hint = if message.contains("CertificateRequired") {
        "the server requires a client certificate: set `tls_cert_file` and `tls_key_file`"
    } else if message.contains("UnknownIssuer") || message.contains("BadSignature") {
        "the server's certificate is not signed by the CA in `tls_ca_file` (or the system trust store when unset)"
    } else if message.contains("NotValidForName") {
        "the server's certificate does not name this host: connect by a name or address it lists"
    } else if tls && message.contains("InvalidContentType") {
        "this port does not speak TLS: point at the server's `tls-port`, or set `tls = false`"
    } else if !tls
        && (message.contains("closed the connection") || message.contains("Connection reset"))
    {
        "if this is a TLS port (`tls-port`), set `tls = true`"
    } else {
        return message;
    };
    format!("{message} ({hint})")
}

/// Longest wait for one reply while restoring (a `RESTORE` of a huge key, `FLUSHALL`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// An async connection with timeouts fit for restores (the crate's default
/// response timeout of 500 ms is too short for big keys).
pub(crate) async fn restore_connection(
    client: &redis::Client,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    client
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(10)))
                .set_response_timeout(Some(RESPONSE_TIMEOUT)),
        )
        .await
}
