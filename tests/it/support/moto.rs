//! An S3 server for tests: a throwaway `moto` server on a free port, or the
//! external server named by `GSDR_TEST_S3_ENDPOINT` (MinIO from
//! docker-compose.test.yml, with `GSDR_TEST_S3_ACCESS_KEY` and
//! `GSDR_TEST_S3_SECRET_KEY`).
//!
//! Every [`Moto`] has its own bucket with a unique name. Credentials reach the
//! store through `SecretRef::File` (two files in a temp dir), so the client
//! never depends on the ambient environment.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use gsdr::secret::SecretRef;
use gsdr::storage::{ChecksumMode, S3Target, TargetConfig};
use gsdr::units::{ByteSize, HumanDuration};

use super::{free_port, repo_root, tempdir, wait_for_port, ChildGuard};

const INSTALL_HINT: &str =
    "create a venv with `python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.1.22'` \
     (or point GSDR_TEST_VENV at one, or run scripts/test.sh, which installs every test server)";

/// Which S3 server a [`Moto`] (an [`S3Server`]) is.
pub enum S3Kind {
    /// Our own moto process.
    Moto,
    /// Our own single-node Garage ([`Moto::garage`]), with its metadata and data dir.
    Garage {
        /// Removed with the server.
        _data: tempfile::TempDir,
        /// The garage binary.
        bin: PathBuf,
        /// Its `garage.toml`.
        config: PathBuf,
    },
    /// A server the environment names (`GSDR_TEST_S3_ENDPOINT`).
    External,
}

/// A running S3 server with a fresh bucket: moto ([`Moto::start`]), Garage
/// ([`Moto::garage`]) or an external one. The type keeps moto's name, the
/// first server the tests had; [`S3Server`] names it for tests run on any.
pub struct Moto {
    /// The server process; `None` for an external server.
    child: Option<Mutex<ChildGuard>>,
    /// Which server it is.
    pub kind: S3Kind,
    /// Endpoint URL, e.g. `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// The bucket made for this test.
    pub bucket: String,
    access_key: String,
    secret_key: String,
    key_file: PathBuf,
    secret_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// The external server if `GSDR_TEST_S3_ENDPOINT` is set, else a new moto server.
    pub async fn start() -> Moto {
        match std::env::var("GSDR_TEST_S3_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => {
                let key = std::env::var("GSDR_TEST_S3_ACCESS_KEY")
                    .expect("GSDR_TEST_S3_ENDPOINT is set: set GSDR_TEST_S3_ACCESS_KEY too");
                let secret = std::env::var("GSDR_TEST_S3_SECRET_KEY")
                    .expect("GSDR_TEST_S3_ENDPOINT is set: set GSDR_TEST_S3_SECRET_KEY too");
                Moto::with(None, S3Kind::External, endpoint, key, secret).await
            }
            _ => Moto::start_own(&[]).await,
        }
    }

    /// Always a new moto server (for tests that kill it), with extra
    /// environment variables for it (e.g. `INITIAL_NO_AUTH_ACTION_COUNT`).
    pub async fn start_own(env: &[(&str, &str)]) -> Moto {
        let venv = std::env::var_os("GSDR_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".venv"));
        let python = venv.join("bin").join("python");
        if !python.exists() {
            panic!(
                "moto is not installed: no Python venv at {} ({INSTALL_HINT})",
                venv.display()
            );
        }
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut guard = ChildGuard::spawn(cmd, "moto server");
        let what = format!("moto server (log {}; {INSTALL_HINT})", log.path().display());
        wait_for_port(port, Duration::from_secs(30), &what, &mut guard.child);
        // Keep the log with the temp dir of this instance.
        let moto = Moto::with(
            Some(guard),
            S3Kind::Moto,
            format!("http://127.0.0.1:{port}"),
            "gsdr-test-key".into(),
            "gsdr-test-secret".into(),
        )
        .await;
        let _ = log.persist(moto._dir.path().join("moto.log"));
        moto
    }

    pub(super) async fn with(
        child: Option<ChildGuard>,
        kind: S3Kind,
        endpoint: String,
        access_key: String,
        secret_key: String,
    ) -> Moto {
        let dir = tempdir();
        let key_file = dir.path().join("access_key_id");
        let secret_file = dir.path().join("secret_access_key");
        std::fs::write(&key_file, format!("{access_key}\n")).unwrap();
        std::fs::write(&secret_file, format!("{secret_key}\n")).unwrap();
        let bucket = format!(
            "gsdr-test-{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let moto = Moto {
            child: child.map(Mutex::new),
            kind,
            endpoint,
            bucket,
            access_key,
            secret_key,
            key_file,
            secret_file,
            _dir: dir,
        };
        if moto.is_garage() {
            // A bucket the S3 API creates has only a local alias in the key's
            // namespace, which the admin CLI cannot name (`bucket allow`).
            moto.garage_admin(&["bucket", "create", &moto.bucket]);
            let key = moto.access_key.clone();
            moto.garage_admin(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                &moto.bucket,
                "--key",
                &key,
            ]);
            return moto;
        }
        moto.client()
            .create_bucket()
            .bucket(&moto.bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot create bucket {} on {} ({}): {}",
                    moto.bucket,
                    moto.endpoint,
                    moto.name(),
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                )
            });
        moto
    }

    /// `moto`, `garage` or `external`, for messages and test tables.
    pub fn name(&self) -> &'static str {
        match self.kind {
            S3Kind::Moto => "moto",
            S3Kind::Garage { .. } => "garage",
            S3Kind::External => "external",
        }
    }

    /// This instance's temp dir (credential files, logs).
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Whether this is our own Garage server.
    pub fn is_garage(&self) -> bool {
        matches!(self.kind, S3Kind::Garage { .. })
    }

    /// A target for this bucket under `prefix`: 5 MiB parts, 2 in flight.
    pub fn target(&self, prefix: &str) -> S3Target {
        S3Target {
            endpoint: Some(self.endpoint.clone()),
            bucket: self.bucket.clone(),
            prefix: prefix.to_string(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: Some(SecretRef::File(self.key_file.clone())),
            secret_access_key: Some(SecretRef::File(self.secret_file.clone())),
            part_size: ByteSize(5 << 20),
            upload_concurrency: 2,
            request_checksums: ChecksumMode::WhenSupported,
            max_object_size: ByteSize(1 << 30),
            max_attempts: None,
            request_timeout: HumanDuration(Duration::from_secs(30)),
            part_timeout: HumanDuration(Duration::from_secs(120)),
            read_timeout: HumanDuration(Duration::from_secs(30)),
            lifecycle: None,
        }
    }

    /// The body of a `[targets.NAME]` table (after the header) for this bucket
    /// under `prefix`, as a policy file names it: for tests that run the binary.
    pub fn target_toml(&self, prefix: &str) -> String {
        format!(
            "kind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
             access_key_id = {{ file = \"{}\" }}\nsecret_access_key = {{ file = \"{}\" }}\n\
             part_size = \"5MiB\"\n",
            self.endpoint,
            self.bucket,
            self.key_file.display(),
            self.secret_file.display()
        )
    }

    /// [`Moto::target`] as a policy target.
    pub fn target_config(&self, prefix: &str) -> TargetConfig {
        TargetConfig::S3(self.target(prefix))
    }

    /// A raw SDK client on this server (to set up what gsdr must cope with).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "gsdr-test",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// Creates an IAM user with an access key and no permissions, then turns
    /// moto's authentication on: from then on every request is checked
    /// against IAM. Returns the user's (access key id, secret). Own moto only.
    pub async fn user_without_permissions_then_enforce_auth(&self) -> (String, String) {
        assert!(
            matches!(self.kind, S3Kind::Moto),
            "only our own moto server can switch authentication on"
        );
        let http = reqwest::Client::new();
        let iam = |action: &str| {
            // Authentication is still off: the signature is not checked, the
            // credential scope only routes the request to moto's IAM.
            http.post(format!("{}/", self.endpoint))
                .header(
                    "Authorization",
                    "AWS4-HMAC-SHA256 Credential=gsdr-test-key/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
                )
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(format!("Action={action}&UserName=gsdr-no-rights&Version=2010-05-08"))
                .send()
        };
        let created = iam("CreateUser").await.unwrap();
        assert!(
            created.status().is_success(),
            "CreateUser: {}",
            created.text().await.unwrap()
        );
        let body = iam("CreateAccessKey").await.unwrap().text().await.unwrap();
        let field = |name: &str| {
            let start = body
                .find(&format!("<{name}>"))
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                + name.len()
                + 2;
            body[start..start + body[start..].find('<').unwrap()].to_string()
        };
        let pair = (field("AccessKeyId"), field("SecretAccessKey"));
        let reset = http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body("0")
            .send()
            .await
            .unwrap();
        assert!(
            reset.status().is_success(),
            "moto-api/reset-auth: {}",
            reset.status()
        );
        pair
    }

    /// The server's port (own moto or an external endpoint with a port).
    pub fn port(&self) -> u16 {
        self.endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .expect("endpoint with a port")
    }

    /// Whether this is an external server (MinIO) rather than our own moto or Garage.
    pub fn is_external(&self) -> bool {
        self.child.is_none()
    }

    /// Kills the server now, as a crash would. Panics for an external server.
    pub fn kill(&self) {
        self.child
            .as_ref()
            .expect("cannot kill an external S3 server")
            .lock()
            .unwrap()
            .kill();
    }
}

/// Any of the S3 servers the tests run on (see [`Moto`]).
pub type S3Server = Moto;

/// A TCP relay in front of a server whose connections can all be cut at once
/// (a network partition) while the server keeps running, and healed again.
pub struct CutProxy {
    port: u16,
    target_port: u16,
    cut: Mutex<tokio_util::sync::CancellationToken>,
}

impl CutProxy {
    /// Relays `127.0.0.1:<new port>` to `127.0.0.1:<target_port>`.
    pub async fn start(target_port: u16) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = tokio_util::sync::CancellationToken::new();
        Self::serve(listener, target_port, cut.clone());
        CutProxy {
            port,
            target_port,
            cut: Mutex::new(cut),
        }
    }

    fn serve(
        listener: tokio::net::TcpListener,
        target_port: u16,
        token: tokio_util::sync::CancellationToken,
    ) {
        tokio::spawn(async move {
            loop {
                let mut inbound = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((s, _)) => s,
                        Err(_) => return,
                    },
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                    // Dropping both sockets resets the client's connection.
                });
            }
        });
    }

    /// Endpoint URL through the relay.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Cuts every connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.lock().unwrap().cancel();
    }

    /// Ends a [`CutProxy::cut`]: relays again on the same port.
    pub async fn heal(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let token = tokio_util::sync::CancellationToken::new();
        Self::serve(listener, self.target_port, token.clone());
        *self.cut.lock().unwrap() = token;
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut.lock().unwrap().cancel();
    }
}

/// An HTTP relay in front of an S3 server that behaves like S3 for a user
/// without `s3:ListBucket`: a read (GET/HEAD) of a key that does not exist
/// answers 403 `AccessDenied` instead of 404, and listing the bucket and
/// `HeadBucket` (which need that permission too) are denied.
/// Everything else is passed through unchanged.
pub struct DenyMissingProxy {
    port: u16,
    stop: tokio_util::sync::CancellationToken,
}

impl DenyMissingProxy {
    /// Relays `127.0.0.1:<new port>` to `127.0.0.1:<target_port>`;
    /// `deny_bucket_reads: false` lets listing and HeadBucket through (only
    /// missing keys are denied), to reach gsdr's missing-key check.
    pub async fn start(target_port: u16, deny_bucket_reads: bool) -> DenyMissingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = tokio_util::sync::CancellationToken::new();
        let client = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            relay_denying_missing(client.clone(), target_port, deny_bucket_reads, req)
        });
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        DenyMissingProxy { port, stop }
    }

    /// Endpoint URL through the relay.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DenyMissingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

const ACCESS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>";

async fn relay_denying_missing(
    client: reqwest::Client,
    port: u16,
    deny_bucket_reads: bool,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse;
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path();
    let is_read = parts.method == Method::GET || parts.method == Method::HEAD;
    let object_key = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, k)| !k.is_empty());
    let denied = |head: bool| {
        let mut r = (
            StatusCode::FORBIDDEN,
            [("content-type", "application/xml")],
            if head {
                String::new()
            } else {
                ACCESS_DENIED.to_string()
            },
        )
            .into_response();
        r.headers_mut().remove("content-length");
        r
    };
    // Listing the bucket, and HeadBucket, need s3:ListBucket as well.
    if deny_bucket_reads && is_read && !object_key && path.len() > 1 {
        return denied(parts.method == Method::HEAD);
    }
    let url = format!(
        "http://127.0.0.1:{port}{}",
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut rb = client.request(parts.method.clone(), url);
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" && k != "transfer-encoding" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.body(body).send().await.unwrap();
    if is_read && object_key && resp.status() == reqwest::StatusCode::NOT_FOUND {
        return denied(parts.method == Method::HEAD);
    }
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap();
    let mut out = (status, bytes).into_response();
    // A HEAD answer has no body but the object's length.
    let keep_length = parts.method == Method::HEAD;
    for (k, v) in &headers {
        if (k != "content-length" || keep_length) && k != "transfer-encoding" && k != "connection" {
            out.headers_mut().insert(k, v.clone());
        }
    }
    out
}
