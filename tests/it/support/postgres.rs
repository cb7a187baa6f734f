//! Throwaway PostgreSQL 15 clusters: `initdb` in a temp dir, `pg_ctl` on a
//! free port. When the tests run as root (containers), the server runs as
//! the `postgres` user through `runuser`, and the dirs it needs are handed
//! to that user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::free_port;

/// Where the PostgreSQL 15 server binaries live.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Path of a PostgreSQL program, panicking with an install hint if missing.
pub fn pg_program(name: &str) -> PathBuf {
    let p = Path::new(PG_BIN).join(name);
    assert!(
        p.exists(),
        "`{}` is missing: install PostgreSQL 15 (apt-get install postgresql-15)",
        p.display()
    );
    p
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The gsdr binary as the server's user can run it (`archive_command`,
/// `restore_command`): the build's own when that user can reach it, else a
/// copy in the temp dir — a checkout under a directory only root may enter
/// would otherwise make every archive attempt fail.
pub fn pg_gsdr_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let bin = super::gsdr_bin();
        if !is_root()
            || Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-x"])
                .arg(bin)
                .status()
                .is_ok_and(|s| s.success())
        {
            return bin.to_path_buf();
        }
        use std::os::unix::fs::PermissionsExt;
        // One copy per build (size and mtime), replaced when the build changes.
        let meta = std::fs::metadata(bin).unwrap();
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let dir = std::env::temp_dir().join("gsdr-test-bin");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(format!("gsdr-{}-{stamp}", meta.len()));
        std::fs::copy(bin, &copy).unwrap();
        for (p, mode) in [(&dir, 0o755), (&copy, 0o755)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        copy
    })
}

/// A command running `prog` as the server's user.
pub fn as_pg_user(prog: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(prog);
        c
    } else {
        Command::new(prog)
    }
}

/// Gives `path` (recursively) to the server's user when running as root.
pub fn give_to_pg_user(path: &Path) {
    if is_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "chown {} failed", path.display());
    }
}

/// `PGSSL*` settings of a libpq client that verifies the server against
/// `tls`'s CA and presents its client certificate.
pub fn tls_client_env(tls: &super::redis::TlsFiles) -> Vec<(String, String)> {
    [
        ("PGSSLMODE", "verify-full".to_string()),
        ("PGSSLROOTCERT", tls.ca.display().to_string()),
        ("PGSSLCERT", tls.client_cert.display().to_string()),
        ("PGSSLKEY", tls.client_key.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn run(mut c: Command, what: &str) -> String {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One cluster: a data directory and a port. Stopped (immediate) on drop.
pub struct PgCluster {
    /// Data directory.
    pub data: PathBuf,
    /// Port.
    pub port: u16,
    /// Server log.
    pub log: PathBuf,
    /// Environment of the test's own clients (psql, pgbench): the `PGSSL*`
    /// settings of a server that accepts only TLS.
    pub client_env: Vec<(String, String)>,
    running: bool,
    _dir: Option<tempfile::TempDir>,
}

impl PgCluster {
    /// `initdb` a new cluster (trust auth, user `postgres`) and append `conf` to postgresql.conf.
    pub fn init(conf: &str) -> PgCluster {
        let dir = super::tempdir();
        give_to_pg_user(dir.path());
        let data = dir.path().join("data");
        let mut c = as_pg_user(&pg_program("initdb"));
        c.arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        run(c, "initdb");
        let port = free_port();
        let base = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = on\nwal_level = replica\nmax_wal_senders = 4\nlog_min_messages = info\n",
            dir.path().display()
        );
        let f = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&f).unwrap();
        text += &base;
        text += conf;
        text += "\n";
        std::fs::write(&f, text).unwrap();
        let log = dir.path().join("server.log");
        PgCluster {
            data,
            port,
            log,
            client_env: Vec::new(),
            running: false,
            _dir: Some(dir),
        }
    }

    /// Appends settings to postgresql.conf (before `start`).
    pub fn append_conf(&self, conf: &str) {
        let f = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&f).unwrap();
        text += "\n";
        text += conf;
        text += "\n";
        std::fs::write(&f, text).unwrap();
    }

    /// Makes the server accept only TLS connections (before `start`):
    /// `ssl = on` with `tls`'s server certificate, `hostssl` lines that
    /// require a client certificate signed by `tls`'s CA, and `hostnossl
    /// … reject`. The test's own clients get `tls`'s client certificate
    /// and verify the server (`verify-full`).
    pub fn require_tls(&mut self, tls: &super::redis::TlsFiles) {
        use std::os::unix::fs::PermissionsExt;
        for k in [&tls.server_key, &tls.client_key] {
            std::fs::set_permissions(k, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        give_to_pg_user(tls.ca.parent().unwrap());
        self.append_conf(&format!(
            "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n",
            tls.server_cert.display(),
            tls.server_key.display(),
            tls.ca.display()
        ));
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             hostnossl all all 0.0.0.0/0 reject\nhostnossl replication all 0.0.0.0/0 reject\n\
             hostssl all all 127.0.0.0/8 trust clientcert=verify-ca\n\
             hostssl replication all 127.0.0.0/8 trust clientcert=verify-ca\n",
        )
        .unwrap();
        give_to_pg_user(&self.data);
        self.client_env = tls_client_env(tls);
    }

    /// An existing (e.g. restored) data directory, on a new free port.
    pub fn existing(data: &Path) -> PgCluster {
        give_to_pg_user(data);
        let log = data.with_extension("log");
        let _ = std::fs::write(&log, b"");
        give_to_pg_user(&log);
        PgCluster {
            data: data.to_path_buf(),
            port: free_port(),
            log,
            client_env: Vec::new(),
            running: false,
            _dir: None,
        }
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`) in a new temp
    /// dir, on a free port; its configuration (archiving included) is the
    /// primary's. Not started.
    pub fn standby_of(primary: &PgCluster) -> PgCluster {
        let dir = super::tempdir();
        give_to_pg_user(dir.path());
        let data = dir.path().join("data");
        let mut c = as_pg_user(&pg_program("pg_basebackup"));
        c.arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-h", "127.0.0.1", "-U", "postgres"])
            .args(["-p", &primary.port.to_string()]);
        run(c, "pg_basebackup for a standby");
        let log = dir.path().join("server.log");
        PgCluster {
            data,
            port: free_port(),
            log,
            client_env: Vec::new(),
            running: false,
            _dir: Some(dir),
        }
    }

    /// Promotes this standby (`pg_ctl promote -w`): a failover onto a new timeline.
    pub fn promote(&self) {
        let mut c = as_pg_user(&pg_program("pg_ctl"));
        c.arg("-D").arg(&self.data).args(["-w", "promote"]);
        run(c, "pg_ctl promote");
        self.wait_promoted(Duration::from_secs(90));
    }

    /// A server another program started on `data` and `port`: stopped on drop.
    pub fn adopt_running(data: &Path, port: u16) -> PgCluster {
        PgCluster {
            data: data.to_path_buf(),
            port,
            log: data.with_extension("log"),
            client_env: Vec::new(),
            running: true,
            _dir: None,
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        let sock = self.data.parent().unwrap();
        let mut c = as_pg_user(&pg_program("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "-o"])
            .arg(format!("-p {} -k {}", self.port, sock.display()))
            .arg("start");
        let out = c.output().unwrap();
        if !out.status.success() {
            panic!(
                "pg_ctl start failed: {}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.running = true;
    }

    /// Stops the server (fast shutdown: archives what it can first).
    pub fn stop(&mut self) {
        if self.running {
            let mut c = as_pg_user(&pg_program("pg_ctl"));
            c.arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]);
            let _ = c.output();
            self.running = false;
        }
    }

    /// Crashes the server (`pg_ctl -m immediate stop`: every process quits at
    /// once, no checkpoint); [`PgCluster::start`] runs crash recovery.
    pub fn crash(&mut self) {
        let mut c = as_pg_user(&pg_program("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = c.output();
        self.running = false;
    }

    /// Runs SQL with psql; returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        run(self.psql_command(sql), &format!("psql `{sql}`"))
    }

    /// `psql -c sql`, `None` when it fails (a server still starting up).
    pub fn try_psql(&self, sql: &str) -> Option<String> {
        let out = self.psql_command(sql).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn psql_command(&self, sql: &str) -> Command {
        let mut c = Command::new(pg_program("psql"));
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAtq",
        ])
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-p",
            &self.port.to_string(),
            "-c",
            sql,
        ])
        .envs(self.client_env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Runs pgbench with `args`.
    pub fn pgbench(&self, args: &[&str]) {
        let mut c = Command::new(pg_program("pgbench"));
        c.args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-p",
            &self.port.to_string(),
        ])
        .args(args)
        .arg("postgres")
        .envs(self.client_env.iter().map(|(k, v)| (k, v)));
        run(c, "pgbench");
    }

    /// Waits until recovery has finished (promoted), up to `timeout`.
    pub fn wait_promoted(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            // A server replaying a long archive refuses connections ("the
            // database system is not yet accepting connections") for a while
            // on a loaded machine, though `pg_ctl -w` has returned.
            if self.try_psql("SELECT pg_is_in_recovery()").as_deref() == Some("f") {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "still in recovery after {timeout:?}\n--- server log ---\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Switches to a new WAL segment and waits until the old one is archived.
    pub fn switch_and_wait_archived(&self, timeout: Duration) -> String {
        let seg = self.psql("SELECT pg_walfile_name(pg_switch_wal())");
        self.wait_archived(&seg, timeout);
        seg
    }

    /// Waits until `pg_stat_archiver.last_archived_wal` reaches `seg`.
    pub fn wait_archived(&self, seg: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            let last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            // A backup history file (`<seg>.<offset>.backup`) is named after
            // the segment the backup *started* in, which is still being
            // written: it reaches `seg` only if it names a later segment.
            let reached = match last.len() {
                24 => last.as_str() >= seg,
                n if n > 24 => &last[..24] > seg,
                _ => false,
            };
            let done = self
                .data
                .join("pg_wal/archive_status")
                .join(format!("{seg}.done"))
                .exists();
            if reached || done {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "segment {seg} not archived within {timeout:?} (last: {last})\n--- server log ---\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `pg_stat_archiver` counters: (archived_count, failed_count).
    pub fn archiver_counts(&self) -> (i64, i64) {
        let s = self.psql("SELECT archived_count || ',' || failed_count FROM pg_stat_archiver");
        let (a, f) = s.split_once(',').unwrap();
        (a.parse().unwrap(), f.parse().unwrap())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut c = as_pg_user(&pg_program("pg_ctl"));
            c.arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = c.output();
        }
    }
}
