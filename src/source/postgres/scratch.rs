//! A scratch PostgreSQL server started from a restored data directory on a
//! free loopback port; it replays the archived WAL up to the restore target
//! and promotes. Stopped by [`ScratchPg::stop`] (async) or, as a last
//! resort, on drop (`pg_ctl stop -m immediate`).
//!
//! When gsdr runs as root (containers), the server runs as the `postgres`
//! user through `runuser` and the directory is handed to that user: PostgreSQL
//! refuses to run as root.
//!
//! A scratch server holds production data, and its restored `pg_hba.conf`
//! and roles are production's (perhaps `trust` on loopback): it listens on
//! no TCP port at all, only on a Unix socket of mode 0700 in its own
//! directory, with an `hba_file` of gsdr's that admits that socket only. Only
//! gsdr's OS user (and the `postgres` user it runs the server as) can connect.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::source::error::{EngineError as Error, EngineResult as Result};
use crate::source::postgres::tls::PgConn;
use crate::source::postgres::PostgresConfig;
use crate::source::SourceError;

/// Longest wait for recovery to finish and the server to promote.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A running scratch PostgreSQL.
#[derive(Debug)]
pub struct ScratchPg {
    pg_ctl: PathBuf,
    data: PathBuf,
    /// Port: of the Unix socket's name (a scratch server), or on the
    /// network (an incident's server started on the source's port).
    pub port: u16,
    stopped: bool,
    /// The directory of a scratch server's private socket (`None`: TCP on 127.0.0.1).
    socket_dir: Option<PathBuf>,
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn as_server_user(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

impl ScratchPg {
    /// Starts the restored directory `data` and waits until it has promoted.
    pub async fn start(source: &str, cfg: &PostgresConfig, data: &Path) -> Result<ScratchPg> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::LocalIo {
                what: "finding a free port for a scratch PostgreSQL for",
                path: data.to_path_buf(),
                source: e,
            })?;
        let parent = data.parent().unwrap_or(data).to_path_buf();
        let hba = parent.join("gsdr_hba.conf");
        std::fs::write(
            &hba,
            "# gsdr scratch server: its socket (mode 0700) is the only way in\nlocal all all trust\n",
        )
        .map_err(|e| Error::LocalIo {
            what: "writing the scratch PostgreSQL's hba_file",
            path: hba.clone(),
            source: e,
        })?;
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&parent)
                .status();
        }
        let opts = format!(
            "-p {port} -c listen_addresses='' -c unix_socket_directories={} -c unix_socket_permissions=0700 -c hba_file={} -c archive_mode=off",
            parent.display(),
            hba.display()
        );
        let log = parent.join("postgres.log");
        Self::start_with(source, cfg, data, port, &opts, &log, Some(parent)).await
    }

    /// Starts a directory restored in an incident as the real server: on the
    /// source's port with the restored configuration otherwise untouched
    /// (archiving as the restore wrote it: off, or kept with
    /// `--keep-archiving`), and waits until it has promoted. It keeps
    /// running after gsdr exits (see [`ScratchPg::detach`]).
    pub async fn start_endpoint(
        source: &str,
        cfg: &PostgresConfig,
        data: &Path,
    ) -> Result<ScratchPg> {
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(data)
                .status();
        }
        let log = data.join("log").join("gsdr-incident-start.log");
        let _ = std::fs::create_dir_all(log.parent().expect("has a parent"));
        if is_root() {
            let _ = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(log.parent().expect("has a parent"))
                .status();
        }
        let opts = format!("-p {}", cfg.port);
        Self::start_with(source, cfg, data, cfg.port, &opts, &log, None).await
    }

    /// Leaves the server running when this handle goes (an incident's real server).
    pub fn detach(mut self) {
        self.stopped = true;
    }

    async fn start_with(
        source: &str,
        cfg: &PostgresConfig,
        data: &Path,
        port: u16,
        opts: &str,
        log: &Path,
        socket_dir: Option<PathBuf>,
    ) -> Result<ScratchPg> {
        let pg_ctl = cfg.program("pg_ctl");
        let log = log.to_path_buf();
        let opts = opts.to_string();
        let data_s = data.display().to_string();
        let log_s = log.display().to_string();
        let mut cmd = as_server_user(&pg_ctl);
        cmd.args(["-D", &data_s, "-l", &log_s, "-o", &opts, "-W", "start"]);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| Error::Invalid(format!("pg_ctl start: {e}")))?
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot run `{}` for a scratch PostgreSQL: {e}; set pg_bin in the source's policy",
                    pg_ctl.display()
                ))
            })?;
        let s = ScratchPg {
            pg_ctl,
            data: data.to_path_buf(),
            port,
            stopped: false,
            socket_dir,
        };
        if !out.status.success() {
            return Err(Error::Invalid(format!(
                "pg_ctl start of the restored directory failed ({}): {}; server log: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                log_tail(&log)
            )));
        }
        s.wait_promoted(source, cfg, &log).await?;
        Ok(s)
    }

    /// Connection settings for this server, as the source's user and database.
    fn config(&self, cfg: &PostgresConfig) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        match &self.socket_dir {
            Some(d) => c.host_path(d),
            None => c.host("127.0.0.1"),
        };
        c.port(self.port)
            .user(&cfg.user)
            .dbname(&cfg.dbname);
        if let Some(pw) = cfg.password.as_ref().and_then(|p| p.read().ok()) {
            c.password(pw.expose());
        }
        c
    }

    /// A libpq connection string for this server, as the source's user and database.
    pub fn conn_string(&self, cfg: &PostgresConfig) -> String {
        let host = match &self.socket_dir {
            Some(d) => d.display().to_string(),
            None => "127.0.0.1".to_string(),
        };
        format!(
            "host={host} port={} user={} dbname={}",
            self.port, cfg.user, cfg.dbname
        )
    }

    /// Where clients reach it, for people: the socket's directory or 127.0.0.1:port.
    pub fn shown(&self) -> String {
        match &self.socket_dir {
            Some(d) => format!("its private socket in {} (port {})", d.display(), self.port),
            None => format!("127.0.0.1:{}", self.port),
        }
    }

    async fn wait_promoted(&self, source: &str, cfg: &PostgresConfig, log: &Path) -> Result<()> {
        let start = Instant::now();
        // The source's TLS: a restored pg_hba.conf may accept only TLS.
        let conn = PgConn::new(self.config(cfg), cfg)
            .map_err(|m| Error::Invalid(format!("scratch PostgreSQL: {m}")))?;
        let mut last_err = String::new();
        loop {
            match conn.connect().await {
                Err(e) => last_err = super::tls::chain(&e),
                Ok((client, h)) => {
                last_err.clear();
                let r = client.query_one("SELECT pg_is_in_recovery()", &[]).await;
                drop(client);
                let _ = h.await;
                if let Ok(row) = r {
                    if !row.get::<_, bool>(0) {
                        return Ok(());
                    }
                }
                }
            }
            // A TLS mismatch does not heal by waiting: say what to change now.
            if let Some(h) = super::tls::hint(cfg, source, &last_err) {
                return Err(Error::Invalid(format!(
                    "cannot connect to the scratch PostgreSQL on 127.0.0.1:{}: {last_err}; {h}",
                    self.port
                )));
            }
            if start.elapsed() > PROMOTE_TIMEOUT {
                return Err(Error::Invalid(format!(
                    "the scratch PostgreSQL did not finish recovery within {PROMOTE_TIMEOUT:?} (last connection error: {last_err}); server log: {}",
                    log_tail(log)
                )));
            }
            // pg_ctl -W returns before the postmaster writes its pid file: allow it a moment.
            let shut_down = std::fs::read_to_string(log)
                .is_ok_and(|t| t.contains("database system is shut down"));
            if shut_down
                || (start.elapsed() > Duration::from_secs(10)
                    && !self.data.join("postmaster.pid").exists())
            {
                return Err(Error::Invalid(format!(
                    "the scratch PostgreSQL stopped during recovery; server log: {}",
                    log_tail(log)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop_sync(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let _ = as_server_user(&self.pg_ctl)
            .args([
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }

    /// Stops the server (immediate: the data is thrown away).
    pub async fn stop(mut self) {
        let _ = tokio::task::spawn_blocking(move || self.stop_sync()).await;
    }
}

impl Drop for ScratchPg {
    fn drop(&mut self) {
        self.stop_sync();
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Runs `query` and returns the first column of the first row as an integer.
pub async fn query_i64(conn: &PgConn, query: &str) -> Result<i64> {
    let (client, h) = conn.connect().await.map_err(|e| {
        Error::Source(SourceError::Unreachable {
            message: format!(
                "restored PostgreSQL {}: cannot connect: {}",
                shown(&conn.config),
                super::tls::chain(&e)
            ),
        })
    })?;
    let row = client
        .query_one(&format!("SELECT ({query})::bigint"), &[])
        .await
        .map_err(|e| Error::Invalid(format!("restored PostgreSQL: `{query}`: {e}")));
    drop(client);
    let _ = h.await;
    Ok(row?.get::<_, i64>(0))
}

/// Runs `query` and returns the first column of the first row as text (NULL = `None`).
pub async fn query_text(conn: &PgConn, query: &str) -> Result<Option<String>> {
    let (client, h) = conn.connect().await.map_err(|e| {
        Error::Source(SourceError::Unreachable {
            message: format!(
                "PostgreSQL {}: cannot connect: {}",
                shown(&conn.config),
                super::tls::chain(&e)
            ),
        })
    })?;
    let row = client
        .query_one(query, &[])
        .await
        .map_err(|e| Error::Invalid(format!("PostgreSQL: `{query}`: {e}")));
    drop(client);
    let _ = h.await;
    Ok(row?.get::<_, Option<String>>(0))
}

/// `host:port` of a connection config, for messages (never the password).
fn shown(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    format!("{host}:{}", c.get_ports().first().copied().unwrap_or(5432))
}
