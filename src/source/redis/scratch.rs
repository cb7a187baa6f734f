//! The Redis scratch server: a throwaway `redis-server` on a free loopback
//! port loading a `dump.rdb` (restores prove a backup readable through it,
//! deep verify counts its keys, drills restore into it).
//!
//! It holds production data, so it is locked: bound to 127.0.0.1 only,
//! protected mode on, and a random password (`requirepass`) that only gsdr
//! knows. The password is in a config file (mode 0600) in the server's
//! directory, never in its argv (`/proc/PID/cmdline` is world-readable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::connect::restore_connection as connect;
use crate::secret::Secret;
use crate::source::{Scratch, SourceError};

fn invalid(message: String) -> SourceError {
    SourceError::Invalid { message }
}

/// Longest time a scratch server may take to load a snapshot.
const LOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// A throwaway `redis-server` on a free loopback port, loading `dump.rdb`
/// from its directory; killed when dropped.
pub struct ScratchServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    password: Secret,
}

/// The name of the scratch server's config file (holding its password) in its directory.
const CONF: &str = "gsdr-scratch.conf";

impl std::fmt::Debug for ScratchServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScratchServer(127.0.0.1:{})", self.port)
    }
}

impl ScratchServer {
    /// Starts `redis_server` in `dir` (which holds `dump.rdb`, or nothing for
    /// an empty server) and waits until it has loaded the data.
    pub async fn start(redis_server: &str, dir: &Path) -> Result<ScratchServer, SourceError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| {
                invalid(format!(
                    "finding a free port for a scratch redis-server in `{}`: {e}",
                    dir.display()
                ))
            })?;
        let log = dir.join("redis.log");
        let password = Secret::new(
            rand::Rng::sample_iter(rand::thread_rng(), &rand::distributions::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect::<String>(),
        );
        let conf = dir.join(CONF);
        crate::secret::write_private(
            &conf,
            format!("requirepass {}\n", password.expose()).as_bytes(),
        )
        .map_err(|e| {
            invalid(format!(
                "writing the scratch redis-server's config `{}`: {e}",
                conf.display()
            ))
        })?;
        let child = Command::new(redis_server)
            .arg(&conf)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.display().to_string(), "--dbfilename", "dump.rdb"])
            .args(["--appendonly", "no", "--save", "", "--protected-mode", "yes"])
            .args(["--logfile", &log.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                invalid(format!(
                    "cannot start `{redis_server}` for a scratch server: {e}; install redis-server or set `redis_server` in the source's policy"
                ))
            })?;
        let mut s = ScratchServer {
            child,
            port,
            dir: dir.to_path_buf(),
            password,
        };
        s.wait_loaded().await?;
        Ok(s)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    async fn wait_loaded(&mut self) -> Result<(), SourceError> {
        let start = Instant::now();
        let client = self.client(0)?;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(invalid(format!(
                    "the scratch redis-server exited with {status} while loading the snapshot (is it older than the backup's RDB version?); its log ends: {}",
                    self.log_tail()
                )));
            }
            if let Ok(mut c) = connect(&client).await {
                match redis::cmd("PING").query_async::<String>(&mut c).await {
                    Ok(_) => return Ok(()),
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) => {}
                    Err(_) => {}
                }
            }
            if start.elapsed() > LOAD_TIMEOUT {
                return Err(invalid(format!(
                    "the scratch redis-server did not finish loading within {LOAD_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of database `db` on this server (with its password).
    pub fn client(&self, db: i64) -> Result<redis::Client, SourceError> {
        redis::Client::open(self.uri_of(db))
            .map_err(|e| invalid(format!("scratch redis-server client: {e}")))
    }

    /// The server's random password (`requirepass`).
    pub fn password(&self) -> &Secret {
        &self.password
    }

    fn uri_of(&self, db: i64) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/{db}",
            self.password.expose(),
            self.port
        )
    }

    /// Keys per database (`INFO keyspace`).
    pub async fn keyspace(&self) -> Result<BTreeMap<u32, u64>, SourceError> {
        let mut c = connect(&self.client(0)?)
            .await
            .map_err(|e| invalid(format!("scratch redis-server: {e}")))?;
        keyspace_of(&mut c)
            .await
            .map_err(|e| invalid(format!("scratch redis-server: INFO keyspace: {e}")))
    }
}

impl Drop for ScratchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) async fn keyspace_of(
    c: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<BTreeMap<u32, u64>> {
    let text: String = redis::cmd("INFO").arg("keyspace").query_async(c).await?;
    Ok(
        super::replication::keyspace(&super::replication::parse_info(&text))
            .into_iter()
            .map(|(db, (keys, _))| (db, keys))
            .collect(),
    )
}

#[async_trait]
impl Scratch for ScratchServer {
    /// With the password: for connecting, never for showing.
    fn uri(&self) -> String {
        self.uri_of(0)
    }

    async fn stop(self: Box<Self>) {
        // Dropping kills the server and waits for it: off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }

    fn detach(self: Box<Self>) {
        // The server outlives gsdr: its process is not killed on drop.
        std::mem::forget(self);
    }
}
