//! The MongoDB scratch server: a MongoDB-wire server on a free loopback port for drills, started
//! from `drills.mongo_scratch_argv` (`{port}` and `{dir}` are substituted);
//! killed by [`ScratchMongo::stop`] or, as a last resort, on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::source::error::{EngineError as Error, EngineResult as Result};

/// Longest wait for the server to listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running scratch server.
#[derive(Debug)]
pub struct ScratchMongo {
    child: tokio::process::Child,
    /// Port on 127.0.0.1.
    pub port: u16,
}

impl ScratchMongo {
    /// Starts `argv` in `dir` and waits until it accepts connections.
    pub async fn start(argv: &[String], dir: &Path) -> Result<ScratchMongo> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::LocalIo {
                what: "finding a free port for a scratch MongoDB for",
                path: dir.to_path_buf(),
                source: e,
            })?;
        let args: Vec<String> = argv
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.display().to_string())
            })
            .collect();
        let (prog, rest) = args.split_first().ok_or_else(|| {
            Error::Invalid("drills.mongo_scratch_argv is empty: name the server program".into())
        })?;
        let child = tokio::process::Command::new(prog)
            .args(rest)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::Invalid(format!(
                    "cannot start `{prog}` for a scratch MongoDB: {e}; install it or set drills.mongo_scratch_argv"
                ))
            })?;
        let mut s = ScratchMongo { child, port };
        let start = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(Error::Invalid(format!(
                    "the scratch MongoDB `{prog}` exited with {st} before listening on port {port}"
                )));
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(Error::Invalid(format!(
                    "the scratch MongoDB `{prog}` did not listen on port {port} within {START_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Connection string of the server.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Kills the server and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[async_trait::async_trait]
impl crate::source::Scratch for ScratchMongo {
    fn uri(&self) -> String {
        ScratchMongo::uri(self)
    }

    async fn stop(self: Box<Self>) {
        ScratchMongo::stop(*self).await;
    }

    fn detach(self: Box<Self>) {
        // The server outlives gsdr: its process is not killed on drop.
        std::mem::forget(self);
    }
}

/// Documents in `db.collection` of the server at `uri`.
pub async fn count(uri: &str, namespace: &str) -> Result<u64> {
    let (db, coll) = namespace.split_once('.').ok_or_else(|| {
        Error::Invalid(format!(
            "`{namespace}` is not a namespace like db.collection"
        ))
    })?;
    let client = mongodb::Client::with_uri_str(uri)
        .await
        .map_err(|e| Error::Invalid(format!("restored MongoDB: cannot connect: {e}")))?;
    let n = client
        .database(db)
        .collection::<mongodb::bson::Document>(coll)
        .count_documents(mongodb::bson::doc! {})
        .await
        .map_err(|e| Error::Invalid(format!("restored MongoDB: counting `{namespace}`: {e}")))?;
    Ok(n)
}
