//! Garage, a real S3 server (Rust, AGPL-3.0), for the tests: a throwaway
//! single-node cluster on free ports in a temp dir, beside moto.
//!
//! gsdr never links Garage: `scripts/install-deps.sh` installs its binary
//! (`cargo install --locked garage`) and the tests run it as a separate
//! process, exactly like moto or `redis-server`.
//!
//! Set-up of one instance (under 1 s: a whole test that starts one took 0.8 s): write `garage.toml` (LMDB metadata,
//! `replication_factor = 1`, the S3 API in region `us-east-1` so the SDK's
//! default region signs correctly), start `garage server`, assign the node a
//! zone and capacity and apply layout version 1, import a fixed access key
//! (also allowed to create buckets through the S3 API, for tests that make
//! their own), then `garage bucket create` the test bucket and `garage bucket
//! allow --read --write --owner` it to the key. (A bucket made with S3
//! CreateBucket has only an alias local to the key, which the admin CLI
//! cannot name.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::moto::{Moto, S3Kind};
use super::{free_port, tempdir, wait_for_port, ChildGuard};

const INSTALL_HINT: &str = "run scripts/install-deps.sh (it builds Garage 2.5.0 with `cargo install --locked` into \
     $HOME/.cache/gsdr-tools, which scripts/env.sh puts on PATH), or point GSDR_GARAGE_BIN at a garage binary";

/// The access key every test instance imports (Garage wants `GK` + 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// Its secret (64 hex digits).
pub const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The garage binary: `$GSDR_GARAGE_BIN`, else `$GSDR_TOOLS_ROOT/bin` (default
/// `$HOME/.cache/gsdr-tools/bin`), else `PATH`. A missing one is a failure
/// that says how to install it, never a skipped test.
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GSDR_GARAGE_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "GSDR_GARAGE_BIN={} does not exist ({INSTALL_HINT})",
            p.display()
        );
        return p;
    }
    let root = std::env::var_os("GSDR_TOOLS_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/gsdr-tools")));
    if let Some(p) = root.map(|r| r.join("bin/garage")).filter(|p| p.exists()) {
        return p;
    }
    super::require_program("garage", INSTALL_HINT)
}

impl Moto {
    /// A new single-node Garage server with a fresh bucket (see the module doc).
    pub async fn garage() -> Moto {
        let bin = garage_bin();
        let dir = tempdir();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"lmdb\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"us-east-1\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
                secret = format!("{:016x}", rand::random::<u64>()).repeat(4),
            ),
        )
        .unwrap();
        let log = dir.path().join("garage.log");
        let mut cmd = Command::new(&bin);
        cmd.arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut guard = ChildGuard::spawn(cmd, "garage server");
        let what = format!("garage server (log {}; {INSTALL_HINT})", log.display());
        wait_for_port(rpc, Duration::from_secs(30), &what, &mut guard.child);
        wait_for_port(s3, Duration::from_secs(30), &what, &mut guard.child);
        let cli = |args: &[&str]| garage_cli(&bin, &config, args);
        let id = cli(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap().to_string();
        cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        cli(&["layout", "apply", "--version", "1"]);
        cli(&[
            "key",
            "import",
            "--yes",
            "-n",
            "gsdr-test",
            ACCESS_KEY,
            SECRET_KEY,
        ]);
        cli(&["key", "allow", "--create-bucket", ACCESS_KEY]);
        Moto::with(
            Some(guard),
            S3Kind::Garage {
                _data: dir,
                bin,
                config,
            },
            format!("http://127.0.0.1:{s3}"),
            ACCESS_KEY.into(),
            SECRET_KEY.into(),
        )
        .await
    }

    /// Runs a `garage` admin command on this Garage node (keys, bucket
    /// rights); panics with its output if it fails. Garage only.
    pub fn garage_admin(&self, args: &[&str]) -> String {
        match &self.kind {
            S3Kind::Garage { bin, config, .. } => garage_cli(bin, config, args),
            _ => panic!("garage_admin on a {} server", self.name()),
        }
    }

    /// Imports another access key (with `garage key import`) and returns the
    /// files holding its id and secret, for a target: rights are given with
    /// [`Moto::garage_admin`] (`bucket allow …`). Garage only.
    pub fn garage_key(&self, name: &str, id: &str, secret: &str) -> (PathBuf, PathBuf) {
        self.garage_admin(&["key", "import", "--yes", "-n", name, id, secret]);
        let dir = self.dir();
        let (k, s) = (
            dir.join(format!("{name}.id")),
            dir.join(format!("{name}.secret")),
        );
        std::fs::write(&k, id).unwrap();
        std::fs::write(&s, secret).unwrap();
        (k, s)
    }
}

/// Runs one `garage` admin command against the test node; panics with its
/// output (and where the server's log is) when it fails.
fn garage_cli(bin: &Path, config: &Path, args: &[&str]) -> String {
    let log = config.with_file_name("garage.log");
    // Right after start the node may still be connecting to itself.
    let start = Instant::now();
    loop {
        let out = Command::new(bin)
            .arg("-c")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({INSTALL_HINT}): {e}", bin.display()));
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!(
                "`garage {}` failed ({}): {}{} (server log {})",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
