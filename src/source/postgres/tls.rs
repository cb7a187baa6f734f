//! TLS for every connection gsdr makes to PostgreSQL: its own sessions
//! (tokio-postgres with rustls: metadata, archiver watch, capture slot,
//! canary, scratch and incident checks) and the libpq programs it runs
//! (`pg_basebackup`, `pg_receivewal`), which get the same settings through
//! `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` (paths only:
//! nothing secret is put in argv or the environment).
//!
//! The certificate is always checked against the policy's `host`, also
//! when gsdr connects to a scratch copy on 127.0.0.1: a restored data
//! directory serves the source's own certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::Socket;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::PostgresConfig;

/// `tls_mode = "verify-full"`: the chain and the host name are verified (the default).
pub const MODE_VERIFY_FULL: &str = "verify-full";
/// `tls_mode = "verify-ca"`: the chain is verified, not the name.
pub const MODE_VERIFY_CA: &str = "verify-ca";
/// `tls_mode = "require"`: encrypted, nothing verified (libpq's `require`).
pub const MODE_REQUIRE: &str = "require";
/// Every `tls_mode`.
pub const MODES: &[&str] = &[MODE_VERIFY_FULL, MODE_VERIFY_CA, MODE_REQUIRE];

/// The TLS settings of a source, read from its files once per connection
/// attempt (cheap: a few KiB), so a rotated certificate is taken at once.
#[derive(Clone)]
pub struct PgTls {
    mode: &'static str,
    /// The name the server's certificate must carry (the policy's `host`).
    host: String,
    rustls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("host", &self.host)
            .finish()
    }
}

impl PostgresConfig {
    /// The `tls_mode` in force (`verify-full` when unset).
    pub fn tls_mode(&self) -> &'static str {
        let m = self.tls_mode.as_deref().unwrap_or(MODE_VERIFY_FULL);
        MODES.iter().find(|x| **x == m).copied().unwrap_or(MODE_VERIFY_FULL)
    }
}

/// Reads `p` for `field`; the error names the field and the file, never content.
fn read(field: &str, p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("`{field}` {}: cannot read it: {e}", p.display()))
}

/// Refuses a private key that group or others may read (what libpq also
/// refuses), with the `chmod` to run.
fn check_key_mode(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(p)
        .map_err(|e| format!("`tls_key_file` {}: {e}", p.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "`tls_key_file` {} can be read by group or others (mode {mode:04o}): run `chmod 600 {}` (Kubernetes: `defaultMode: 0400` on the secret volume)",
            p.display(),
            p.display()
        ));
    }
    Ok(())
}

impl PgTls {
    /// The TLS settings of `c`; `None` when `tls` is off. Reads and checks
    /// the CA, certificate and key files (key not readable by group or
    /// others, certificate and key matching): `gsdr policy check` runs this.
    pub fn load(c: &PostgresConfig) -> Result<Option<PgTls>, String> {
        if !c.tls {
            return Ok(None);
        }
        let mode = c.tls_mode();
        let ca = match &c.tls_ca_file {
            Some(p) => Some(read("tls_ca_file", p)?),
            None => None,
        };
        let client = match (&c.tls_cert_file, &c.tls_key_file) {
            (Some(cp), Some(kp)) => {
                check_key_mode(kp)?;
                Some((read("tls_cert_file", cp)?, read("tls_key_file", kp)?))
            }
            _ => None,
        };
        let provider = crate::tls::provider();
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            MODE_REQUIRE => Arc::new(NoVerify(provider.clone())),
            _ => {
                let pem = ca.as_deref().ok_or_else(|| {
                    format!("tls_mode = \"{mode}\" needs `tls_ca_file` (the CA that signed the server's certificate)")
                })?;
                let mut roots = rustls::RootCertStore::empty();
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
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("`tls_ca_file`: {e}"))?;
                if mode == MODE_VERIFY_CA {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match client {
            Some((cert, key)) => {
                let certs = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("`tls_cert_file`: not a PEM certificate: {e}"))?;
                if certs.is_empty() {
                    return Err("`tls_cert_file` holds no PEM certificate".into());
                }
                // The key's parse error could quote key bytes: say only what failed.
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|_| "`tls_key_file` holds no PEM private key".to_string())?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| format!("`tls_cert_file`/`tls_key_file` do not match: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        ServerName::try_from(c.host.clone())
            .map_err(|_| format!("host = \"{}\" is not a name or address TLS can verify", c.host))?;
        Ok(Some(PgTls {
            mode,
            host: c.host.clone(),
            rustls: Arc::new(config),
        }))
    }

    fn connector(&self) -> Named {
        Named {
            inner: MakeRustlsConnect::new((*self.rustls).clone()),
            host: self.host.clone(),
        }
    }
}

/// `MakeRustlsConnect` that verifies the policy's host name whatever
/// address tokio-postgres dialled (a scratch copy on 127.0.0.1).
#[derive(Clone)]
struct Named {
    inner: MakeRustlsConnect,
    host: String,
}

impl MakeTlsConnect<Socket> for Named {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, _dialled: &str) -> Result<Self::TlsConnect, Self::Error> {
        let host = self.host.clone();
        MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, &host)
    }
}

/// `verify-ca`: the chain must lead to the CA; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: any certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How to open one session: the connection settings and the source's TLS.
#[derive(Debug, Clone)]
pub struct PgConn {
    /// Host, port, user, database, password.
    pub config: tokio_postgres::Config,
    /// `None`: plaintext (`tls = false`).
    pub tls: Option<PgTls>,
}

impl PgConn {
    /// `config` with the TLS of the source `c` (read from its files now).
    pub fn new(config: tokio_postgres::Config, c: &PostgresConfig) -> Result<PgConn, String> {
        Ok(PgConn {
            config,
            tls: PgTls::load(c)?,
        })
    }

    /// Opens a session; its connection runs in a task that ends when the
    /// client is dropped (await the handle to wait for that).
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        let mut config = self.config.clone();
        // PostgreSQL never offers TLS on a Unix socket (a scratch server's
        // private socket): plaintext there, whatever the source uses.
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
            && hosts
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        match self.tls.as_ref().filter(|_| !unix_only) {
            None => {
                config.ssl_mode(SslMode::Disable);
                let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
                Ok((client, tokio::spawn(async move { drop(conn.await) })))
            }
            Some(t) => {
                config.ssl_mode(SslMode::Require);
                let (client, conn) = config.connect(t.connector()).await?;
                Ok((client, tokio::spawn(async move { drop(conn.await) })))
            }
        }
    }
}

/// Gives a libpq program (`pg_basebackup`, `pg_receivewal`) the source's
/// TLS settings by environment (file paths only), replacing whatever gsdr's
/// own environment holds: the policy decides, not a stray `PGSSLMODE`.
pub fn libpq_env(c: &PostgresConfig, cmd: &mut tokio::process::Command) {
    let vars: [(&str, Option<&Path>); 3] = [
        ("PGSSLROOTCERT", c.tls_ca_file.as_deref()),
        ("PGSSLCERT", c.tls_cert_file.as_deref()),
        ("PGSSLKEY", c.tls_key_file.as_deref()),
    ];
    if !c.tls {
        cmd.env("PGSSLMODE", "disable");
        for (k, _) in vars {
            cmd.env_remove(k);
        }
        return;
    }
    cmd.env("PGSSLMODE", c.tls_mode());
    for (k, v) in vars {
        match v {
            Some(p) => cmd.env(k, p),
            None => cmd.env_remove(k),
        };
    }
}

/// Every error text of `e` and its causes, joined (the TLS reason sits deep).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// What to change when `message` (from tokio-postgres or a libpq program)
/// shows a TLS mismatch between the server and the policy of `source`;
/// `None` when it does not.
pub fn hint(c: &PostgresConfig, source: &str, message: &str) -> Option<String> {
    let table = format!("[sources.{source}.postgres]");
    let m = message;
    let ca = c
        .tls_ca_file
        .as_ref()
        .map_or("(unset)".to_string(), |p| p.display().to_string());
    if !c.tls && (m.contains("no encryption") || m.contains("SSL connection is required")) {
        return Some(format!(
            "the server accepts only TLS connections: set `tls = true` in {table} with `tls_ca_file` = the CA that signed the server's certificate (and `tls_cert_file`/`tls_key_file` if it asks for a client certificate)"
        ));
    }
    if c.tls
        && (m.contains("server does not support TLS")
            || m.contains("server does not support SSL"))
    {
        return Some(format!(
            "the server at {}:{} does not accept TLS (`ssl = off`): turn `ssl` on in its postgresql.conf, or set `tls = false` in {table}",
            c.host, c.port
        ));
    }
    if m.contains("UnknownIssuer")
        || m.contains("BadSignature")
        || m.contains("certificate verify failed")
        || m.contains("unable to get local issuer")
    {
        return Some(format!(
            "the server's certificate is not signed by the CA in `tls_ca_file` ({ca}): set `tls_ca_file` in {table} to the CA that signed it"
        ));
    }
    if m.contains("NotValidForName")
        || m.contains("not valid for name")
        || m.contains("does not match host name")
    {
        return Some(format!(
            "the server's certificate does not name host `{}`: set `host` in {table} to a name the certificate lists, or `tls_mode = \"verify-ca\"`",
            c.host
        ));
    }
    if m.contains("CertificateRequired")
        || m.contains("certificate required")
        || m.contains("requires a valid client certificate")
    {
        return Some(format!(
            "the server requires a client certificate: set `tls_cert_file` and `tls_key_file` in {table}"
        ));
    }
    if m.contains("Expired")
        || m.contains("certificate expired")
        || m.contains("certificate has expired")
    {
        return Some(
            "the server's certificate has expired (or the clock is wrong): renew it".to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PostgresConfig, String> {
        let c: PostgresConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn tls_fields_are_validated_together() {
        let c = parse("tls = true\ntls_ca_file = \"/ca.pem\"").unwrap();
        assert_eq!(c.tls_mode(), MODE_VERIFY_FULL, "verify-full by default");
        assert!(parse("tls_ca_file = \"/ca.pem\"")
            .unwrap_err()
            .contains("set `tls = true`"));
        assert!(parse("tls_mode = \"require\"")
            .unwrap_err()
            .contains("set `tls = true`"));
        assert!(parse("tls = true").unwrap_err().contains("needs `tls_ca_file`"));
        assert!(parse("tls = true\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/c\"")
            .unwrap_err()
            .contains("go together"));
        assert!(parse("tls = true\ntls_ca_file = \"/ca\"\ntls_mode = \"prefer\"")
            .unwrap_err()
            .contains("tls_mode = \"prefer\""));
        assert!(parse("tls = true\ntls_ca_file = \"/ca\"\ntls_mode = \"require\"")
            .unwrap_err()
            .contains("verifies nothing"));
        assert!(parse("tls = true\ntls_mode = \"require\"").is_ok());
        assert!(parse("tls = true\ntls_ca_file = \"/ca\"\nhost = \"/run/postgresql\"")
            .unwrap_err()
            .contains("Unix socket"));
    }

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn load_reads_the_files_and_refuses_a_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gsdr".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let ca = write(dir.path(), "ca.crt", &cert.pem(), 0o644);
        let crt = write(dir.path(), "c.crt", &cert.pem(), 0o644);
        let k = write(dir.path(), "c.key", &key.serialize_pem(), 0o640);
        let text = format!(
            "tls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            ca.display(),
            crt.display(),
            k.display()
        );
        let c = parse(&text).unwrap();
        let e = PgTls::load(&c).unwrap_err();
        assert!(e.contains(&format!("run `chmod 600 {}`", k.display())), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = PgTls::load(&c).unwrap().expect("tls on");
        assert!(!format!("{t:?}").contains("PRIVATE"));
        // A file that is not a certificate, and one that is missing.
        std::fs::write(&ca, "nothing").unwrap();
        assert!(PgTls::load(&c).unwrap_err().contains("`tls_ca_file` holds no PEM"));
        std::fs::remove_file(&ca).unwrap();
        let e = PgTls::load(&c).unwrap_err();
        assert!(e.contains("`tls_ca_file`") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn libpq_programs_get_the_policy_settings_by_environment() {
        let env_of = |text: &str| {
            let c = parse(text).unwrap();
            let mut cmd = tokio::process::Command::new("true");
            libpq_env(&c, &mut cmd);
            cmd.as_std()
                .get_envs()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.map(|v| v.to_string_lossy().into_owned()),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let on = env_of("tls = true\ntls_ca_file = \"/ca\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"");
        assert_eq!(on["PGSSLMODE"].as_deref(), Some("verify-full"));
        assert_eq!(on["PGSSLROOTCERT"].as_deref(), Some("/ca"));
        assert_eq!(on["PGSSLCERT"].as_deref(), Some("/c"));
        assert_eq!(on["PGSSLKEY"].as_deref(), Some("/k"));
        let off = env_of("");
        assert_eq!(off["PGSSLMODE"].as_deref(), Some("disable"));
        assert_eq!(off["PGSSLKEY"], None, "removed, not inherited");
    }

    #[test]
    fn hints_name_the_fix() {
        let off = parse("").unwrap();
        let on = parse("tls = true\ntls_ca_file = \"/ca.pem\"").unwrap();
        let h = hint(&off, "pg", "db error: FATAL: no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"postgres\", no encryption").unwrap();
        assert!(h.contains("set `tls = true` in [sources.pg.postgres]"), "{h}");
        assert!(h.contains("tls_ca_file"), "{h}");
        let h = hint(&on, "pg", "error performing TLS handshake: invalid peer certificate: UnknownIssuer").unwrap();
        assert!(h.contains("not signed by the CA in `tls_ca_file` (/ca.pem)"), "{h}");
        let h = hint(&on, "pg", "error performing TLS handshake: server does not support TLS").unwrap();
        assert!(h.contains("`ssl = off`"), "{h}");
        let h = hint(&on, "pg", "invalid peer certificate: NotValidForName").unwrap();
        assert!(h.contains("does not name host `localhost`"), "{h}");
        assert_eq!(hint(&on, "pg", "connection refused"), None);
    }
}
