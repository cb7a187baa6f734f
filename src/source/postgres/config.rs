//! Settings of a `postgres` source (`[sources.NAME.postgres]`).

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::SecretRef;
use crate::units::HumanDuration;

/// How gsdr reaches one PostgreSQL cluster and how it archives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name, IP or Unix socket directory of the server to base-backup.
    #[serde(default = "default_host")]
    pub host: String,
    /// Port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Role with the REPLICATION attribute (base backups).
    #[serde(default = "default_user")]
    pub user: String,
    /// Password of `user`; unset: trust, peer or `~/.pgpass`.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Database used for the metadata queries (system identifier, timeline).
    #[serde(default = "default_dbname")]
    pub dbname: String,
    /// Directory of `pg_basebackup` (e.g. `/usr/lib/postgresql/15/bin`); unset: `PATH`.
    #[serde(default)]
    pub pg_bin: Option<PathBuf>,
    /// `pg_basebackup --checkpoint`: `fast` (start at once) or `spread`.
    #[serde(default = "default_checkpoint")]
    pub checkpoint: String,
    /// The gsdr binary written into `restore_command` on restore; unset: this executable.
    #[serde(default)]
    pub gsdr_bin: Option<PathBuf>,
    /// Segments `wal-push` uploads at once (the requested one plus following `.ready` ones).
    #[serde(default = "default_push_concurrency")]
    pub push_concurrency: usize,
    /// Segments `wal-fetch` downloads ahead into `pg_wal/.gsdr-prefetch` (0 = off).
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// WAL segment size of the cluster (`initdb --wal-segsize`), in bytes.
    #[serde(default = "default_segment_bytes")]
    pub wal_segment_bytes: u64,
    /// No longer used: a restored cluster never archives unless the restore
    /// is given `--keep-archiving` (accepted so that older policies parse).
    #[serde(default)]
    pub restore_disable_archiving: Option<bool>,
    /// Longest a base backup waits, once its files are streamed, for
    /// PostgreSQL to archive the WAL it needs; then it is aborted (never
    /// committed) with the archiver's state. PostgreSQL alone waits forever.
    /// Below `pipeline.stall_timeout` (no byte flows meanwhile).
    #[serde(default = "default_archive_wait")]
    pub archive_wait: HumanDuration,
    /// `wal-fetch`: a segment missing while its sidecar (or a later segment
    /// of its timeline) was stored less than this ago may be a push under
    /// way: it is waited for up to this long before recovery is stopped.
    #[serde(default = "default_in_flight_grace")]
    pub in_flight_grace: HumanDuration,
    /// How WAL reaches the archive: `archive` (PostgreSQL's `archive_command`
    /// runs `gsdr wal-push`, one complete segment at a time) or `stream`
    /// (gsdr's capture job receives WAL over replication with
    /// `pg_receivewal` and a physical slot, and stores the current segment's
    /// progress every `stream_flush`; `archive_command` may stay set).
    #[serde(default = "default_capture")]
    pub capture: String,
    /// `stream`: longest the stored partial of the current segment lags the
    /// server (the RPO on the primary target while gsdr streams).
    #[serde(default = "default_stream_flush")]
    pub stream_flush: HumanDuration,
    /// `stream`: the physical replication slot that holds the WAL gsdr has
    /// not stored yet; unset: `gsdr_<source>` (other characters as `_`).
    #[serde(default)]
    pub slot: Option<String>,
    /// `stream`: the most WAL the slot may hold on the server. Enforced by
    /// PostgreSQL's `max_slot_wal_keep_size`, which the capture requires to
    /// be set at or below this (it refuses to stream otherwise and names the
    /// `ALTER SYSTEM` to run), so a dead gsdr cannot fill the server's disk.
    #[serde(default = "default_slot_max_retained")]
    pub slot_max_retained: crate::units::ByteSize,
    /// `stream`: local folder pg_receivewal writes into (bounded to
    /// `spool_segments` complete segments plus the current one); unset: a
    /// folder under the system's temporary directory. Losing it loses
    /// nothing: the slot only moves past a segment once it is stored.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// `stream`: complete segments waiting for their upload before
    /// pg_receivewal is stopped (the slot then keeps the WAL on the server).
    #[serde(default = "default_spool_segments")]
    pub spool_segments: usize,
    /// Connect with TLS: gsdr's own sessions and the libpq programs it runs
    /// (`pg_basebackup`, `pg_receivewal`); off: plaintext (`sslmode=disable`).
    #[serde(default)]
    pub tls: bool,
    /// What TLS verifies (libpq's `sslmode`): `verify-full` (the default:
    /// the CA and the host name), `verify-ca` (the CA only) or `require`
    /// (encryption only, nothing verified).
    #[serde(default)]
    pub tls_mode: Option<String>,
    /// PEM file of the CA that signed the server's certificate (libpq's
    /// `sslrootcert`); needed by `verify-full` and `verify-ca`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that ask for one (`clientcert=`
    /// or `cert` in pg_hba.conf). Needs `tls_key_file`.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`; refused when group or others can read it.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// `capture = "archive"`: WAL arrives through `archive_command` only.
pub const CAPTURE_ARCHIVE: &str = "archive";
/// `capture = "stream"`: gsdr streams WAL over replication.
pub const CAPTURE_STREAM: &str = "stream";

fn default_capture() -> String {
    CAPTURE_ARCHIVE.into()
}
fn default_stream_flush() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(10))
}
fn default_slot_max_retained() -> crate::units::ByteSize {
    crate::units::ByteSize(10 << 30)
}
fn default_spool_segments() -> usize {
    8
}

fn default_host() -> String {
    "localhost".into()
}
fn default_port() -> u16 {
    5432
}
fn default_user() -> String {
    "postgres".into()
}
fn default_dbname() -> String {
    "postgres".into()
}
fn default_checkpoint() -> String {
    "fast".into()
}
fn default_push_concurrency() -> usize {
    4
}
fn default_prefetch() -> usize {
    8
}
fn default_archive_wait() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(240))
}
fn default_in_flight_grace() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}
fn default_segment_bytes() -> u64 {
    super::DEFAULT_SEGMENT_BYTES
}

impl PostgresConfig {
    /// The backup stream is silent while PostgreSQL waits for the backup's WAL to be archived.
    pub fn silent_wait(&self) -> Option<crate::source::SilentWait> {
        Some(crate::source::SilentWait {
            field: "archive_wait",
            wait: self.archive_wait.0,
            why: "no byte flows while PostgreSQL waits for the backup's WAL, and the stall detector would end the backup first without naming the archiver's state",
        })
    }

    /// Path of a PostgreSQL client program (`pg_basebackup`).
    pub fn program(&self, name: &str) -> PathBuf {
        match &self.pg_bin {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// Whether WAL is streamed (`capture = "stream"`).
    pub fn streams(&self) -> bool {
        self.capture == CAPTURE_STREAM
    }

    /// The replication slot of source `source`: `slot`, else `gsdr_<source>`
    /// with every character a slot name cannot hold as `_`.
    pub fn slot_name(&self, source: &str) -> String {
        match &self.slot {
            Some(s) => s.clone(),
            None => {
                let mut n: String = format!("gsdr_{source}")
                    .chars()
                    .map(|c| match c {
                        'a'..='z' | '0'..='9' | '_' => c,
                        'A'..='Z' => c.to_ascii_lowercase(),
                        _ => '_',
                    })
                    .collect();
                n.truncate(63);
                n
            }
        }
    }

    /// The local folder pg_receivewal of source `source` writes into.
    pub fn spool_for(&self, source: &str) -> PathBuf {
        match &self.spool_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("gsdr-spool-{}", self.slot_name(source))),
        }
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if !["fast", "spread"].contains(&self.checkpoint.as_str()) {
            return Err(format!(
                "checkpoint = \"{}\": use \"fast\" or \"spread\"",
                self.checkpoint
            ));
        }
        let s = self.wal_segment_bytes;
        if !s.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&s) {
            return Err(format!(
                "wal_segment_bytes = {s}: must be a power of two between 1 MiB and 1 GiB"
            ));
        }
        if self.archive_wait.0.is_zero() {
            return Err(
                "archive_wait must be above 0 (PostgreSQL needs some time to archive the backup's last segment)"
                    .into(),
            );
        }
        if ![CAPTURE_ARCHIVE, CAPTURE_STREAM].contains(&self.capture.as_str()) {
            return Err(format!(
                "capture = \"{}\": use \"archive\" (archive_command) or \"stream\" (gsdr streams WAL with pg_receivewal)",
                self.capture
            ));
        }
        if self.stream_flush.0 < std::time::Duration::from_secs(1) {
            return Err("stream_flush must be at least 1s".into());
        }
        if let Some(s) = &self.slot {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(format!(
                    "slot = \"{s}\": a replication slot name is 1 to 63 lower-case letters, digits and `_`"
                ));
            }
        }
        if self.slot_max_retained.0 < self.wal_segment_bytes.saturating_mul(4) {
            return Err(format!(
                "slot_max_retained = {} bytes is below 4 WAL segments; allow the slot at least {} bytes",
                self.slot_max_retained.0,
                self.wal_segment_bytes * 4
            ));
        }
        if self.spool_segments == 0 {
            return Err("spool_segments must be at least 1".into());
        }
        if self.push_concurrency == 0 {
            return Err("push_concurrency must be at least 1".into());
        }
        self.validate_tls()
    }

    /// The TLS fields together (no file is read here: `wal-push` runs as
    /// PostgreSQL's user, who need not read gsdr's key; see [`super::tls::PgTls::load`]).
    fn validate_tls(&self) -> Result<(), String> {
        use super::tls::{MODES, MODE_REQUIRE};
        if !self.tls {
            let set = [
                ("tls_mode", self.tls_mode.is_some()),
                ("tls_ca_file", self.tls_ca_file.is_some()),
                ("tls_cert_file", self.tls_cert_file.is_some()),
                ("tls_key_file", self.tls_key_file.is_some()),
            ];
            if let Some((field, _)) = set.iter().find(|(_, s)| *s) {
                return Err(format!("`{field}` is set but `tls` is not: set `tls = true`"));
            }
            return Ok(());
        }
        if let Some(m) = &self.tls_mode {
            if !MODES.contains(&m.as_str()) {
                return Err(format!(
                    "tls_mode = \"{m}\": use \"verify-full\" (CA and host name), \"verify-ca\" (CA only) or \"require\" (encryption only)"
                ));
            }
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(
                "`tls_cert_file` and `tls_key_file` go together: set both or neither".into(),
            );
        }
        let mode = self.tls_mode();
        if mode == MODE_REQUIRE {
            if self.tls_ca_file.is_some() {
                return Err("`tls_ca_file` is set but tls_mode = \"require\" verifies nothing: use tls_mode = \"verify-full\" (or \"verify-ca\")".into());
            }
        } else if self.tls_ca_file.is_none() {
            // libpq 15 (pg_basebackup) has no `sslrootcert=system`: a file is needed.
            return Err(format!(
                "tls_mode = \"{mode}\" needs `tls_ca_file`: the PEM file of the CA that signed the server's certificate (for a public CA, the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt)"
            ));
        }
        if self.host.starts_with('/') {
            return Err(format!(
                "`tls = true` with host = \"{}\", a Unix socket directory: TLS runs over TCP only; set `host` to the server's name",
                self.host
            ));
        }
        Ok(())
    }
}
