//! The Redis scratch server: a throwaway `redis-server` on a free loopback
//! port loading a `dump.rdb` (restores prove a backup readable through it,
//! deep verify counts its keys, drills restore into it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::connect::restore_connection as connect;
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
}

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
        let child = Command::new(redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", &dir.display().to_string(), "--dbfilename", "dump.rdb"])
            .args(["--appendonly", "no", "--save", "", "--protected-mode", "no"])
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

    /// A client of database `db` on this server.
    pub fn client(&self, db: i64) -> Result<redis::Client, SourceError> {
        redis::Client::open(format!("redis://127.0.0.1:{}/{db}", self.port))
            .map_err(|e| invalid(format!("scratch redis-server client: {e}")))
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
    fn uri(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
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
