//! Shared test support: free ports, child servers that stop on drop, and
//! clear failures when a server binary is missing.
//!
//! Each server module (`moto`, `garage`, `postgres`, `redis`, `mongo`) starts its own
//! throwaway instance on a free port in a temp dir. Where the environment
//! names an external server (docker-compose.test.yml), the module uses that
//! instead; see each module.

#![allow(dead_code)]

pub mod fake_kube;
pub mod faults;
pub mod garage;
pub mod mongo;
pub mod moto;
pub mod postgres;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1 (bound and released: the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Finds a program: first `$GSDR_TEST_VENV/bin` / the repo's `.venv/bin`, then `PATH`.
/// Panics with `install_hint` when it is missing: a missing server is a failure.
pub fn require_program(name: &str, install_hint: &str) -> PathBuf {
    let venv = std::env::var_os("GSDR_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let candidates = [venv.join("bin").join(name), PathBuf::from(name)];
    for c in &candidates {
        if c.is_absolute() && c.exists() {
            return c.clone();
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("`{name}` is not installed: {install_hint} (or run scripts/test.sh, which installs every test server)");
}

/// Waits until something accepts TCP connections on `port`, or panics after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration, what: &str, child: &mut Child) {
    let start = Instant::now();
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited with {status} before listening on port {port}");
        }
        if start.elapsed() > timeout {
            panic!("{what} did not listen on port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (and reaped) when dropped.
pub struct ChildGuard {
    /// The process.
    pub child: Child,
    /// What it is, for messages.
    pub what: String,
}

impl ChildGuard {
    /// Starts `cmd`, panicking with a clear message if it cannot start.
    pub fn spawn(mut cmd: Command, what: &str) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what} ({:?}): {e}", cmd.get_program()));
        ChildGuard {
            child,
            what: what.to_string(),
        }
    }

    /// Kills the process now (to simulate a crash), keeping the guard.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh temp dir, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gsdr-test-")
        .tempdir()
        .unwrap()
}

/// Path of the built `gsdr` binary, for end-to-end tests.
pub fn gsdr_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gsdr"))
}
pub mod redis;
