//! A throwaway `nx-27017` (MongoDB wire protocol over SQLite) on a free port.
//!
//! Each instance gets its own `--log-file` and `--pid-file` in a temp dir (the
//! defaults collide between instances). nx-27017 keeps only some BSON types
//! exactly (see docs/ARCHITECTURE.md); tests use those.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, require_program, tempdir, wait_for_port, ChildGuard};

/// A running nx-27017 server.
pub struct NxMongo {
    /// The process (killed on drop).
    pub child: ChildGuard,
    /// Its port.
    pub port: u16,
    /// Its files.
    pub dir: tempfile::TempDir,
}

impl NxMongo {
    /// Starts an in-memory instance.
    pub fn start() -> NxMongo {
        let bin = require_program(
            "nx-27017",
            "install it in a venv: python3 -m venv .venv && .venv/bin/pip install nx-27017 (set GSDR_TEST_VENV to that venv)",
        );
        let dir = tempdir();
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--db", "memory", "--host", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("--log-file")
            .arg(dir.path().join("nx.log"))
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn(cmd, "nx-27017");
        wait_for_port(port, Duration::from_secs(20), "nx-27017", &mut child.child);
        NxMongo { child, port, dir }
    }

    /// Connection string (direct connection, as nx-27017 needs).
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// A driver client.
    pub async fn client(&self) -> mongodb::Client {
        mongodb::Client::with_uri_str(self.uri()).await.unwrap()
    }
}

/// The URI of the docker-compose replica set, if the environment names it.
pub fn replica_set_uri() -> Option<String> {
    std::env::var("GSDR_TEST_MONGO_RS_URI")
        .ok()
        .filter(|s| !s.is_empty())
}
