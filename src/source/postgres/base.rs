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

use super::{format_lsn, parse_lsn, PostgresConfig, SegmentId};
use crate::error::RetryClass;
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

    fn password(&self) -> Result<Option<String>, SourceError> {
        match &self.cfg.password {
            None => Ok(None),
            Some(r) => r
                .read()
                .map(|s| Some(s.expose().to_string()))
                .map_err(|m| self.connect_err(format!("cannot read the password: {m}"))),
        }
    }

    /// Connects with tokio-postgres and reads the facts pg_basebackup does not print.
    async fn server_facts(&self, password: Option<&str>) -> Result<(String, String), SourceError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.cfg.host)
            .port(self.cfg.port)
            .user(&self.cfg.user)
            .dbname(&self.cfg.dbname)
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(p) = password {
            c.password(p);
        }
        let (client, conn) = c.connect(tokio_postgres::NoTls).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("password") || msg.contains("authentication") {
                SourceError::Auth {
                    source_name: self.name.clone(),
                    message: msg,
                }
            } else {
                SourceError::Connect {
                    source_name: self.name.clone(),
                    message: format!(
                        "cannot connect to PostgreSQL at {}:{} as `{}`; check host, port and pg_hba.conf",
                        self.cfg.host, self.cfg.port, self.cfg.user
                    ),
                    cause: Some(Box::new(e)),
                }
            }
        })?;
        let conn = tokio::spawn(conn);
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
        drop(client);
        let _ = conn.await;
        if spaces > 0 {
            return Err(SourceError::Dump {
                source_name: self.name.clone(),
                message: format!("the cluster has {spaces} extra tablespace(s); gsdr's base backups support the default tablespace only (pg_basebackup streams one tablespace to stdout)"),
                class: RetryClass::Permanent,
                cause: None,
            });
        }
        Ok((sysid, version))
    }
}

/// Parses pg_basebackup's `-v` lines: `write-ahead log start point: 0/2000028 on timeline 1`
/// and `write-ahead log end point: 0/2000100`.
pub fn parse_progress(lines: &[String]) -> (Option<(u64, u32)>, Option<u64>) {
    let mut start = None;
    let mut end = None;
    for l in lines {
        if let Some(rest) = l.split("start point: ").nth(1) {
            let mut it = rest.split_whitespace();
            let lsn = it.next().and_then(parse_lsn);
            let tli = rest
                .split("on timeline ")
                .nth(1)
                .and_then(|t| t.trim().parse::<u32>().ok());
            if let (Some(lsn), Some(tli)) = (lsn, tli) {
                start = Some((lsn, tli));
            }
        } else if let Some(rest) = l.split("end point: ").nth(1) {
            end = rest.split_whitespace().next().and_then(parse_lsn);
        }
    }
    (start, end)
}

#[async_trait]
impl BackupSource for BaseBackupSource {
    fn kind(&self) -> &'static str {
        "base"
    }

    async fn open(&self) -> Result<SourceStream, SourceError> {
        let password = self.password()?;
        let (sysid, version) = self.server_facts(password.as_deref()).await?;
        let prog = self.cfg.program("pg_basebackup");
        let mut cmd = tokio::process::Command::new(&prog);
        cmd.args(["-D", "-", "-Ft", "-X", "none", "-v", "-w"])
            .arg(format!("--checkpoint={}", self.cfg.checkpoint))
            .args(["-h", &self.cfg.host, "-p", &self.cfg.port.to_string()])
            .args(["-U", &self.cfg.user])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = &password {
            cmd.env("PGPASSWORD", p);
        }
        let start_time = chrono::Utc::now();
        let mut child = cmd.spawn().map_err(|e| SourceError::Connect {
            source_name: self.name.clone(),
            message: format!(
                "cannot start `{}`; install the PostgreSQL client or set pg_bin",
                prog.display()
            ),
            cause: Some(Box::new(e)),
        })?;
        let stdout = child.stdout.take().expect("piped");
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
        let seg_bytes = self.cfg.wal_segment_bytes;
        let done = async move {
            let status = child.wait().await.map_err(|e| SourceError::Dump {
                source_name: name.clone(),
                message: "waiting for pg_basebackup failed".into(),
                class: RetryClass::Temporary,
                cause: Some(Box::new(e)),
            })?;
            let stop_time = chrono::Utc::now();
            let lines = err_task.await.unwrap_or_default();
            if !status.success() {
                let tail: Vec<&str> = lines.iter().rev().take(5).rev().map(String::as_str).collect();
                return Err(SourceError::Dump {
                    source_name: name,
                    message: format!("pg_basebackup exited with {status}: {}", tail.join(" | ")),
                    class: RetryClass::Temporary,
                    cause: None,
                });
            }
            let (start, end) = parse_progress(&lines);
            let (Some((start_lsn, tli)), Some(stop_lsn)) = (start, end) else {
                return Err(SourceError::Format {
                    source_name: name,
                    message: format!(
                        "pg_basebackup did not report its start and end WAL positions: {}",
                        lines.join(" | ")
                    ),
                });
            };
            let details = BaseDetails {
                start_lsn: format_lsn(start_lsn),
                stop_lsn: format_lsn(stop_lsn),
                timeline: tli,
                system_identifier: sysid,
                first_segment: SegmentId::of_lsn(tli, start_lsn, seg_bytes).name(seg_bytes),
                last_segment: SegmentId::of_lsn(tli, stop_lsn.saturating_sub(1).max(start_lsn), seg_bytes)
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
    fn progress_lines_parse() {
        let lines: Vec<String> = [
            "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
            "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 3",
            "pg_basebackup: write-ahead log end point: 0/2000100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (s, e) = parse_progress(&lines);
        assert_eq!(s, Some((0x2000028, 3)));
        assert_eq!(e, Some(0x2000100));
    }
}
