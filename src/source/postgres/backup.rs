//! Base backups: `pg_basebackup -D - -Ft -X none` streamed through the pipeline.
//!
//! Why `pg_basebackup` as a child: upstream tokio-postgres cannot open
//! replication connections (no `BASE_BACKUP`), and the low-level
//! `pg_backup_start`/`pg_backup_stop` API would need gsdr to run beside the
//! data directory. `pg_basebackup` works over the network from any pod, reads
//! consistent files through the server, writes a tar to stdout, and with
//! `-X none` relies on the WAL archive (which gsdr keeps) instead of copying
//! WAL. Limits: one tablespace only (pg_basebackup writes a single tar to
//! stdout only then); the role needs the REPLICATION attribute and a
//! `replication` line in `pg_hba.conf`.
//!
//! The manifest's details: `start_lsn`, `stop_lsn`, `timeline`,
//! `system_identifier`, `first_segment` (the oldest WAL file a restore needs),
//! `start_time`, `stop_time`; the consistency time is the stop time (taken
//! when pg_basebackup exited, so never earlier than the real end of backup).

use std::process::Stdio;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::archiver::{self, ArchiverState};
use super::tls::{self, PgConn};
use super::{format_lsn, parse_lsn, PostgresConfig, SegmentId};
use crate::stream::progress::Inspect;
use crate::fault::RetryClass;
use crate::source::{BackupSource, SourceError, SourceMeta, SourceStream};

/// Engine details of a base backup, as stored in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseDetails {
    /// WAL position where the backup started (`0/2000028`).
    pub start_lsn: String,
    /// WAL position where it ended: recovery must replay at least to here.
    pub stop_lsn: String,
    /// Timeline of the backup.
    pub timeline: u32,
    /// PostgreSQL system identifier.
    pub system_identifier: String,
    /// Oldest WAL file a restore of this backup needs.
    pub first_segment: String,
    /// WAL file holding `stop_lsn`.
    pub last_segment: String,
    /// When pg_basebackup started.
    pub start_time: chrono::DateTime<chrono::Utc>,
    /// When pg_basebackup finished (the consistency time).
    pub stop_time: chrono::DateTime<chrono::Utc>,
    /// `server_version` of the cluster.
    pub server_version: String,
    /// WAL segment size in bytes.
    pub wal_segment_bytes: u64,
}

/// A `base` backup of one PostgreSQL cluster.
pub struct BaseBackupSource {
    name: String,
    cfg: PostgresConfig,
}

impl BaseBackupSource {
    /// A source for the cluster described by `cfg`.
    pub fn new(name: &str, cfg: PostgresConfig) -> Self {
        BaseBackupSource {
            name: name.to_string(),
            cfg,
        }
    }

    fn connect_err(&self, message: String) -> SourceError {
        SourceError::Connect {
            source_name: self.name.clone(),
            message,
            cause: None,
        }
    }

    pub(crate) fn password(&self) -> Result<Option<String>, SourceError> {
        match &self.cfg.password {
            None => Ok(None),
            Some(r) => r
                .read()
                .map(|s| Some(s.expose().to_string()))
                .map_err(|m| self.connect_err(format!("cannot read the password: {m}"))),
        }
    }

    /// Checks the server answers, has one tablespace and archives WAL:
    /// `gsdr policy check --connect`.
    pub async fn probe(&self) -> Result<(), SourceError> {
        let password = self.password()?;
        let client = self.connect(password.as_deref()).await?;
        self.server_facts(&client).await.map(|_| ())
    }

    fn pg_config(&self, password: Option<&str>) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.cfg.host)
            .port(self.cfg.port)
            .user(&self.cfg.user)
            .dbname(&self.cfg.dbname)
            .application_name("gsdr")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(p) = password {
            c.password(p);
        }
        c
    }

    /// The session settings with the source's TLS (its files read now).
    pub(crate) fn pg_conn(&self, password: Option<&str>) -> Result<PgConn, SourceError> {
        PgConn::new(self.pg_config(password), &self.cfg).map_err(|m| SourceError::Config {
            message: format!("[sources.{}.postgres]: {m}", self.name),
        })
    }

    fn server(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    /// A session for the metadata queries (its connection task runs until the client is dropped).
    pub(crate) async fn connect(
        &self,
        password: Option<&str>,
    ) -> Result<tokio_postgres::Client, SourceError> {
        let (client, _conn) = self.pg_conn(password)?.connect().await.map_err(|e| {
            let msg = e.to_string();
            let all = tls::chain(&e);
            if let Some(h) = tls::hint(&self.cfg, &self.name, &all) {
                // A setting to change, not a failure to retry.
                SourceError::Config {
                    message: format!(
                        "source `{}`: cannot connect to PostgreSQL at {} as `{}`: {}; {h}",
                        self.name,
                        self.server(),
                        self.cfg.user,
                        crate::fault::root_cause(&e)
                    ),
                }
            } else if msg.contains("password") || msg.contains("authentication") {
                SourceError::Auth {
                    source_name: self.name.clone(),
                    message: msg,
                }
            } else {
                SourceError::Connect {
                    source_name: self.name.clone(),
                    message: format!(
                        "cannot connect to PostgreSQL at {} as `{}`: {}; check host, port and pg_hba.conf",
                        self.server(),
                        self.cfg.user,
                        crate::fault::root_cause(&e)
                    ),
                    // The root cause is in the message: the chain would repeat it.
                    cause: None,
                }
            }
        })?;
        Ok(client)
    }

    /// Reads the facts pg_basebackup does not print (system identifier,
    /// version), and refuses a cluster with extra tablespaces or whose WAL
    /// archiving is off or failing ([`ArchiverState::refusal`]).
    async fn server_facts(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<(String, String), SourceError> {
        let q = |e: tokio_postgres::Error| SourceError::Connect {
            source_name: self.name.clone(),
            message: "metadata query failed".into(),
            cause: Some(Box::new(e)),
        };
        let row = client
            .query_one(
                "SELECT (SELECT system_identifier::text FROM pg_control_system()), current_setting('server_version'), \
                 (SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default','pg_global'))",
                &[],
            )
            .await
            .map_err(q)?;
        let sysid: String = row.get(0);
        let version: String = row.get(1);
        let spaces: i64 = row.get(2);
        if spaces > 0 {
            return Err(SourceError::Dump {
                source_name: self.name.clone(),
                message: format!("the cluster has {spaces} extra tablespace(s); gsdr's base backups support the default tablespace only (pg_basebackup streams one tablespace to stdout)"),
                class: RetryClass::Permanent,
                cause: None,
            });
        }
        let archiver = ArchiverState::read(client).await.map_err(q)?;
        if let Some((message, class)) = archiver.refusal(&self.server(), &self.name) {
            tracing::error!(event = "pg_base_backup_refused", source = %self.name, reason = %message);
            return Err(SourceError::Dump {
                source_name: self.name.clone(),
                message,
                class,
                cause: None,
            });
        }
        Ok((sysid, version))
    }
}

/// What the tar watcher saw: `backup_label` and the tail of `backup_manifest`.
#[derive(Debug, Default)]
struct TarSeen {
    label: Vec<u8>,
    manifest_tail: Vec<u8>,
    manifest_seen: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Capture {
    None,
    Label,
    Manifest,
}

/// Follows the tar headers of the stream as it passes, capturing
/// `backup_label` (small) and the last 16 KiB of `backup_manifest` (its
/// `WAL-Ranges` give the stop LSN). Memory: one header and those captures.
struct TarWatch {
    header: Vec<u8>,
    /// Bytes of the current member's content left.
    content_left: u64,
    /// Bytes of padding after the content left.
    pad_left: u64,
    capture: Capture,
    ended: bool,
    seen: std::sync::Arc<std::sync::Mutex<TarSeen>>,
}

const MANIFEST_TAIL: usize = 16 << 10;

fn octal(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for large sizes.
        return field[1..].iter().fold(0u64, |a, b| (a << 8) | *b as u64);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    u64::from_str_radix(s.trim(), 8).unwrap_or(0)
}

impl TarWatch {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.ended {
            if self.content_left > 0 {
                let n = (self.content_left as usize).min(data.len());
                let chunk = &data[..n];
                let mut seen = self.seen.lock().expect("not poisoned");
                match self.capture {
                    Capture::Label if seen.label.len() < 64 << 10 => {
                        seen.label.extend_from_slice(chunk)
                    }
                    Capture::Manifest => {
                        seen.manifest_tail.extend_from_slice(chunk);
                        let len = seen.manifest_tail.len();
                        if len > 2 * MANIFEST_TAIL {
                            seen.manifest_tail.drain(..len - MANIFEST_TAIL);
                        }
                    }
                    _ => {}
                }
                drop(seen);
                self.content_left -= n as u64;
                data = &data[n..];
            } else if self.pad_left > 0 {
                let n = (self.pad_left as usize).min(data.len());
                self.pad_left -= n as u64;
                data = &data[n..];
            } else {
                let n = (512 - self.header.len()).min(data.len());
                self.header.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.header.len() == 512 {
                    self.parse_header();
                    self.header.clear();
                }
            }
        }
    }

    fn parse_header(&mut self) {
        let h = &self.header;
        if h.iter().all(|b| *b == 0) {
            // End-of-archive blocks; pg_basebackup may still append nothing else.
            return;
        }
        let name: String = h[..100]
            .iter()
            .take_while(|b| **b != 0)
            .map(|b| *b as char)
            .collect();
        let size = octal(&h[124..136]);
        let kind = h[156];
        self.capture = match (kind, name.trim_start_matches("./")) {
            (b'0' | 0, "backup_label") => Capture::Label,
            (b'0' | 0, "backup_manifest") => {
                self.seen.lock().expect("not poisoned").manifest_seen = true;
                Capture::Manifest
            }
            _ => Capture::None,
        };
        self.content_left = size;
        self.pad_left = (512 - size % 512) % 512;
    }
}

impl TarWatch {
    /// `inner`, watched: every chunk read passes through the tar parser.
    fn over<R>(mut self, inner: R) -> Inspect<R, impl FnMut(&[u8]) + Unpin> {
        Inspect::new(inner, move |b: &[u8]| self.feed(b))
    }
}

/// Start LSN and timeline from `backup_label`.
pub fn parse_label(label: &str) -> Option<(u64, u32)> {
    let mut lsn = None;
    let mut tli = None;
    for l in label.lines() {
        if let Some(r) = l.strip_prefix("START WAL LOCATION: ") {
            lsn = r.split_whitespace().next().and_then(parse_lsn);
        } else if let Some(r) = l.strip_prefix("START TIMELINE: ") {
            tli = r.trim().parse().ok();
        }
    }
    Some((lsn?, tli?))
}

/// The last `End-LSN` in the tail of a `backup_manifest`.
pub fn parse_manifest_end(tail: &str) -> Option<u64> {
    let i = tail.rfind("\"End-LSN\"")?;
    let rest = &tail[i + "\"End-LSN\"".len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    parse_lsn(&rest[start..end])
}

#[async_trait]
impl BackupSource for BaseBackupSource {
    fn kind(&self) -> &'static str {
        "base"
    }

    async fn open(&self) -> Result<SourceStream, SourceError> {
        let password = self.password()?;
        let client = self.connect(password.as_deref()).await?;
        let (sysid, version) = self.server_facts(&client).await?;
        let watch_conn = self.pg_conn(password.as_deref())?;
        let prog = self.cfg.program("pg_basebackup");
        // A name of its own, so the watch finds this backup's walsender.
        let app = format!("gsdr-base-{:08x}", rand::random::<u32>());
        let mut cmd = tokio::process::Command::new(&prog);
        cmd.args(["-D", "-", "-Ft", "-X", "none", "-w"])
            .arg(format!("--checkpoint={}", self.cfg.checkpoint))
            .args(["-h", &self.cfg.host, "-p", &self.cfg.port.to_string()])
            .args(["-U", &self.cfg.user])
            .env("PGAPPNAME", &app)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &password {
            cmd.env("PGPASSWORD", p);
        }
        tls::libpq_env(&self.cfg, &mut cmd);
        let start_time = chrono::Utc::now();
        let mut child = cmd.spawn().map_err(|e| SourceError::Connect {
            source_name: self.name.clone(),
            message: format!(
                "cannot start `{}`; install the PostgreSQL client or set pg_bin",
                prog.display()
            ),
            cause: Some(Box::new(e)),
        })?;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(TarSeen::default()));
        let stdout = TarWatch {
            header: Vec::with_capacity(512),
            content_left: 0,
            pad_left: 0,
            capture: Capture::None,
            ended: false,
            seen: seen.clone(),
        }
        .over(child.stdout.take().expect("piped"));
        let stderr = child.stderr.take().expect("piped");
        // Keep the last lines of stderr (bounded) for messages and the LSNs.
        let err_task = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut keep: Vec<String> = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                if keep.len() >= 200 {
                    keep.remove(0);
                }
                keep.push(l);
            }
            keep
        });
        let name = self.name.clone();
        let cfg = self.cfg.clone();
        let seg_bytes = self.cfg.wal_segment_bytes;
        // The watch owns the child: it bounds PostgreSQL's wait for the WAL.
        let (status_tx, status_rx) = tokio::sync::oneshot::channel();
        let label_seen = seen.clone();
        tokio::spawn(archiver::watch(
            child,
            archiver::Watch {
                source: self.name.clone(),
                conn: watch_conn,
                client: Some(client),
                application_name: app,
                archive_wait: self.cfg.archive_wait.0,
                start: Box::new(move || {
                    let g = label_seen.lock().expect("not poisoned");
                    parse_label(&String::from_utf8_lossy(&g.label))
                }),
                seg_bytes,
            },
            status_tx,
        ));
        let done = async move {
            let status = status_rx.await.map_err(|_| SourceError::Dump {
                source_name: name.clone(),
                message: "the pg_basebackup watch ended without a status".into(),
                class: RetryClass::Temporary,
                cause: None,
            })??;
            let stop_time = chrono::Utc::now();
            let lines = err_task.await.unwrap_or_default();
            if !status.success() {
                let tail: Vec<&str> = lines
                    .iter()
                    .rev()
                    .take(5)
                    .rev()
                    .map(String::as_str)
                    .collect();
                let said = tail.join(" | ");
                let hint = tls::hint(&cfg, &name, &said)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                return Err(SourceError::Dump {
                    source_name: name,
                    message: format!("pg_basebackup exited with {status}: {said}{hint}"),
                    class: RetryClass::Temporary,
                    cause: None,
                });
            }
            let (label, tail, manifest_seen) = {
                let g = seen.lock().expect("not poisoned");
                (
                    String::from_utf8_lossy(&g.label).into_owned(),
                    String::from_utf8_lossy(&g.manifest_tail).into_owned(),
                    g.manifest_seen,
                )
            };
            let Some((start_lsn, tli)) = parse_label(&label) else {
                return Err(SourceError::Format {
                    source_name: name,
                    message: format!(
                        "no readable backup_label in pg_basebackup's tar stream: {label:?}"
                    ),
                });
            };
            let Some(stop_lsn) = parse_manifest_end(&tail) else {
                return Err(SourceError::Format {
                    source_name: name,
                    message: format!(
                        "no End-LSN in the backup_manifest of pg_basebackup's tar stream (manifest present: {manifest_seen}); PostgreSQL 13 or later with backup manifests is required"
                    ),
                });
            };
            let details = BaseDetails {
                start_lsn: format_lsn(start_lsn),
                stop_lsn: format_lsn(stop_lsn),
                timeline: tli,
                system_identifier: sysid,
                first_segment: SegmentId::of_lsn(tli, start_lsn, seg_bytes).name(seg_bytes),
                last_segment: SegmentId::of_lsn(
                    tli,
                    stop_lsn.saturating_sub(1).max(start_lsn),
                    seg_bytes,
                )
                .name(seg_bytes),
                start_time,
                stop_time,
                server_version: version,
                wal_segment_bytes: seg_bytes,
            };
            Ok(SourceMeta {
                consistency_time: Some(stop_time),
                details: serde_json::to_value(&details).expect("serialises"),
            })
        };
        Ok(SourceStream {
            reader: Box::pin(stdout),
            done: Box::pin(done),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_and_manifest_parse() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000030000000000000002)\nCHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nSTART TIMELINE: 3\n";
        assert_eq!(parse_label(label), Some((0x2000028, 3)));
        let tail = r#"{ "Path": "x", "Size": 1 } ],
"WAL-Ranges": [
{ "Timeline": 3, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
"Manifest-Checksum": "abc"}"#;
        assert_eq!(parse_manifest_end(tail), Some(0x2000100));
    }

    #[tokio::test]
    async fn tar_watch_captures_label_and_manifest() {
        let mut b = tar::Builder::new(Vec::new());
        for (name, body) in [
            ("backup_label", b"START WAL LOCATION: 0/5000028 (file x)\nSTART TIMELINE: 1\n".to_vec()),
            ("base/1/1234", vec![7u8; 5000]),
            ("backup_manifest", format!("{{\"Files\": [{}], \"WAL-Ranges\": [{{ \"Timeline\": 1, \"Start-LSN\": \"0/5000028\", \"End-LSN\": \"0/5000138\" }}]}}", "{},".repeat(20000)).into_bytes()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(body.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, &body[..]).unwrap();
        }
        let data = b.into_inner().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(TarSeen::default()));
        let mut w = TarWatch {
            header: Vec::new(),
            content_left: 0,
            pad_left: 0,
            capture: Capture::None,
            ended: false,
            seen: seen.clone(),
        }
        .over(std::io::Cursor::new(data.clone()));
        let mut out = Vec::new();
        tokio::io::copy(&mut w, &mut out).await.unwrap();
        assert_eq!(out, data);
        let g = seen.lock().unwrap();
        assert_eq!(
            parse_label(&String::from_utf8_lossy(&g.label)),
            Some((0x5000028, 1))
        );
        assert!(g.manifest_tail.len() <= 2 * MANIFEST_TAIL);
        assert_eq!(
            parse_manifest_end(&String::from_utf8_lossy(&g.manifest_tail)),
            Some(0x5000138)
        );
    }
}
