//! Throwaway `redis-server` instances (primary, replica, sentinel) on free
//! loopback ports, each in its own temp dir, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require_program, tempdir, wait_for_port, ChildGuard};

const HINT: &str = "install Redis 7 (`apt-get install redis-server`)";

/// Settings of a test server.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `requirepass` (and `masterauth` for a replica).
    pub password: Option<String>,
    /// `repl-diskless-sync yes` with no delay.
    pub diskless: bool,
    /// Replicate from this port on 127.0.0.1.
    pub replica_of: Option<u16>,
    /// Extra `--name value` settings.
    pub extra: Vec<(String, String)>,
    /// Also listen with TLS (on [`RedisServer::tls_port`]), replicate over
    /// TLS, and require client certificates (Redis's default).
    pub tls: Option<TlsFiles>,
}

/// A test CA and the certificates it signed (files in `dir`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate for 127.0.0.1 and localhost (also the servers'
    /// client certificate when they replicate).
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// A client certificate for gsdr.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh CA, server and client certificate into `dir`.
    pub fn generate(dir: &Path) -> TlsFiles {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        // Distinct subject names: OpenSSL takes a leaf whose subject equals
        // its issuer for self-signed, and refuses it.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "gsdr test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names[names.len() - 1].clone());
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["gsdr-client".into()]);
        TlsFiles {
            ca: write_file(dir, "ca.crt", &ca_cert.pem()),
            server_cert: write_file(dir, "server.crt", &server_cert),
            server_key: write_file(dir, "server.key", &server_key),
            client_cert: write_file(dir, "client.crt", &client_cert),
            client_key: write_file(dir, "client.key", &client_key),
        }
    }

    /// The server-side `--name value` settings, listening with TLS on `port`.
    fn server_args(&self, port: u16) -> Vec<(String, String)> {
        [
            ("tls-port", port.to_string()),
            ("tls-cert-file", self.server_cert.display().to_string()),
            ("tls-key-file", self.server_key.display().to_string()),
            ("tls-ca-cert-file", self.ca.display().to_string()),
            ("tls-replication", "yes".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The policy lines of a source that connects with TLS and this client certificate.
    pub fn policy_lines(&self) -> String {
        format!(
            "tls = true\ntls_ca_file = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.ca.display(),
            self.client_cert.display(),
            self.client_key.display()
        )
    }
}

/// A running `redis-server`.
pub struct RedisServer {
    /// The process.
    pub guard: ChildGuard,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Password, if any.
    pub password: Option<String>,
    /// TLS port on 127.0.0.1, when started with [`Opts::tls`].
    pub tls_port: Option<u16>,
    /// Its directory.
    pub dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with `opts`.
    pub fn start(opts: Opts) -> RedisServer {
        let dir = tempdir();
        Self::start_in(opts, dir)
    }

    /// Starts a server in `dir` (which may hold a `dump.rdb` to load).
    pub fn start_in(opts: Opts, dir: tempfile::TempDir) -> RedisServer {
        let bin = require_program("redis-server", HINT);
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.path().display().to_string()])
            .args(["--appendonly", "no", "--save", "", "--daemonize", "no"])
            .args([
                "--logfile",
                &dir.path().join("redis.log").display().to_string(),
            ])
            .args([
                "--repl-diskless-sync",
                if opts.diskless { "yes" } else { "no" },
                "--repl-diskless-sync-delay",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &opts.password {
            cmd.args(["--requirepass", pw, "--masterauth", pw]);
        }
        if let Some(p) = opts.replica_of {
            cmd.args(["--replicaof", "127.0.0.1", &p.to_string()]);
        }
        let tls_port = opts.tls.as_ref().map(|_| free_port());
        let tls_args = match (&opts.tls, tls_port) {
            (Some(t), Some(p)) => t.server_args(p),
            _ => Vec::new(),
        };
        for (k, v) in opts.extra.iter().chain(&tls_args) {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let mut guard = ChildGuard::spawn(cmd, "redis-server");
        for p in std::iter::once(port).chain(tls_port) {
            wait_for_port(p, Duration::from_secs(10), "redis-server", &mut guard.child);
        }
        RedisServer {
            guard,
            port,
            password: opts.password,
            tls_port,
            dir,
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:port/db`.
    pub fn url(&self, db: u32) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    /// An async connection to database `db`.
    pub async fn conn(&self, db: u32) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url(db))
            .unwrap()
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_response_timeout(Some(Duration::from_secs(60))),
            )
            .await
            .unwrap()
    }

    /// Waits until this replica's link is up and it has caught up with its primary.
    pub async fn wait_in_sync(&self, primary: &RedisServer) {
        let start = Instant::now();
        let mut r = self.conn(0).await;
        let mut p = primary.conn(0).await;
        loop {
            let ri: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut r)
                .await
                .unwrap();
            let pi: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut p)
                .await
                .unwrap();
            let field = |t: &str, k: &str| {
                t.lines().find_map(|l| {
                    l.strip_prefix(&format!("{k}:"))
                        .map(|v| v.trim().to_string())
                })
            };
            if field(&ri, "master_link_status").as_deref() == Some("up")
                && field(&ri, "slave_repl_offset") == field(&pi, "master_repl_offset")
            {
                return;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                panic!(
                    "replica did not sync: {ri}\nlast log lines (newest first):\n{}",
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// PIDs of this server's children (its fork while saving), from /proc.
    pub fn children(&self) -> Vec<i32> {
        let pid = self.guard.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Kills the server and its fork, like a node dying.
    pub fn crash(&mut self) {
        let children = self.children();
        self.guard.kill();
        for c in children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A running sentinel.
pub struct Sentinel {
    /// The process.
    pub guard: ChildGuard,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Its directory (holds the rewritten config).
    pub dir: tempfile::TempDir,
}

impl Sentinel {
    /// Starts a sentinel monitoring the primary on `master_port` as `name` (quorum 1).
    pub fn start(name: &str, master_port: u16, master_password: Option<&str>) -> Sentinel {
        Self::start_tls(name, master_port, master_password, None).0
    }

    /// As [`Sentinel::start`]; with `tls`, it also listens with TLS (the
    /// returned port) and reaches the data nodes over TLS.
    pub fn start_tls(
        name: &str,
        master_port: u16,
        master_password: Option<&str>,
        tls: Option<&TlsFiles>,
    ) -> (Sentinel, Option<u16>) {
        let bin = require_program("redis-server", HINT);
        let dir = tempdir();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let mut text = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nlogfile {}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds {name} 5000\n",
            dir.path().display(),
            dir.path().join("sentinel.log").display()
        );
        if let Some(pw) = master_password {
            text += &format!("sentinel auth-pass {name} {pw}\n");
        }
        let tls_port = tls.map(|_| free_port());
        if let (Some(t), Some(p)) = (tls, tls_port) {
            for (k, v) in t.server_args(p) {
                text += &format!("{k} {v}\n");
            }
        }
        std::fs::write(&conf, text).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn(cmd, "redis-server --sentinel");
        for p in std::iter::once(port).chain(tls_port) {
            wait_for_port(
                p,
                Duration::from_secs(10),
                "redis sentinel",
                &mut guard.child,
            );
        }
        (Sentinel { guard, port, dir }, tls_port)
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until the sentinel lists `n` replicas of `name` with a healthy link.
    pub async fn wait_replicas(&self, name: &str, n: usize) {
        let start = Instant::now();
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        loop {
            let rs: Vec<std::collections::HashMap<String, String>> = redis::cmd("SENTINEL")
                .arg("replicas")
                .arg(name)
                .query_async(&mut c)
                .await
                .unwrap();
            let ok = rs
                .iter()
                .filter(|r| r.get("master-link-status").map(String::as_str) == Some("ok"))
                .count();
            if ok >= n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "sentinel sees {rs:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}
