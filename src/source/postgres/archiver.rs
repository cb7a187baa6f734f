//! PostgreSQL's WAL archiver as a base backup sees it.
//!
//! A base backup is taken with `-X none`: it restores only with the WAL the
//! archive holds. So before it starts, [`ArchiverState::refusal`] refuses a
//! cluster that archives nothing (`archive_mode = off`, an empty
//! `archive_command`, a standby that does not archive itself) or whose
//! archiver is failing now (`pg_stat_archiver`: the last failure is newer
//! than the last success). While it runs, [`watch`] bounds PostgreSQL's own
//! wait for the backup's last segment to be archived, which otherwise lasts
//! forever when archiving fails: once the backup's walsender has been in
//! the `waiting for wal archiving to finish` phase (`pg_stat_progress_basebackup`) for
//! `archive_wait`, `pg_basebackup` is killed and the backup fails with the
//! archiver's state — it is never committed.
//!
//! The role needs no privilege beyond the one base backups need:
//! `pg_stat_archiver` is readable by every role, and the progress row of
//! the role's own walsender is visible to it. `archive_command` is read
//! from `pg_settings` only when the role may see it.

use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::oneshot;

use super::SegmentId;
use crate::fault::RetryClass;
use crate::source::SourceError;

/// How often the backup's progress is looked at.
const POLL: Duration = Duration::from_secs(1);
/// Longest one look may take (a stuck server must not stop the watch).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server says about archiving.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiverState {
    /// `archive_mode`: `off`, `on` or `always`.
    pub archive_mode: String,
    /// The server is a standby (`pg_is_in_recovery()`).
    pub in_recovery: bool,
    /// `archive_command`, when the role may read it.
    pub archive_command: Option<String>,
    /// `archive_library` (PostgreSQL 15+), when the role may read it.
    pub archive_library: Option<String>,
    /// `pg_stat_archiver.last_archived_wal`.
    pub last_archived_wal: Option<String>,
    /// `pg_stat_archiver.last_archived_time` (UTC, RFC 3339).
    pub last_archived_time: Option<String>,
    /// `pg_stat_archiver.last_failed_wal`.
    pub last_failed_wal: Option<String>,
    /// `pg_stat_archiver.last_failed_time` (UTC, RFC 3339).
    pub last_failed_time: Option<String>,
    /// `pg_stat_archiver.failed_count`.
    pub failed_count: i64,
    /// The last attempt failed: a failure newer than the last success.
    pub failing: bool,
    /// The segment of the server's current WAL position (primary only).
    pub current_segment: Option<String>,
}

const STATE_SQL: &str = "SELECT current_setting('archive_mode'), pg_is_in_recovery(), \
     (SELECT setting FROM pg_settings WHERE name = 'archive_command'), \
     (SELECT setting FROM pg_settings WHERE name = 'archive_library'), \
     a.last_archived_wal, \
     to_char(a.last_archived_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     a.last_failed_wal, \
     to_char(a.last_failed_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     a.failed_count, \
     coalesce(a.last_failed_time > a.last_archived_time, a.last_failed_time IS NOT NULL), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END \
     FROM pg_stat_archiver a";

impl ArchiverState {
    /// Reads the archiver's state over `client`.
    pub async fn read(client: &tokio_postgres::Client) -> Result<Self, tokio_postgres::Error> {
        let r = client.query_one(STATE_SQL, &[]).await?;
        Ok(ArchiverState {
            archive_mode: r.get(0),
            in_recovery: r.get(1),
            archive_command: r.get(2),
            archive_library: r.get(3),
            last_archived_wal: r.get(4),
            last_archived_time: r.get(5),
            last_failed_wal: r.get(6),
            last_failed_time: r.get(7),
            failed_count: r.get(8),
            failing: r.get(9),
            current_segment: r.get(10),
        })
    }

    /// Why a base backup of this server (`server` = `host:port`) must not
    /// start, and whether trying again later may help; `None`: it may.
    pub fn refusal(&self, server: &str, source: &str) -> Option<(String, RetryClass)> {
        let fix = format!("archive_command = 'gsdr --policy … -q wal-push --source {source} %p'");
        if self.archive_mode == "off" {
            return Some((
                format!(
                    "refusing a base backup of {server}: archive_mode is off, so PostgreSQL archives no WAL and a base backup taken without WAL (-X none) could never be restored; set archive_mode = on and {fix} (archive_mode needs a restart), then back up again"
                ),
                RetryClass::Permanent,
            ));
        }
        if self.in_recovery && self.archive_mode != "always" {
            return Some((
                format!(
                    "refusing a base backup of {server}: it is a standby with archive_mode = {}: a standby archives nothing then and PostgreSQL does not wait for the backup's WAL to be archived, so the backup could be committed without the WAL it needs; point the source's host at the primary, or set archive_mode = always and {fix} on the standby",
                    self.archive_mode
                ),
                RetryClass::Permanent,
            ));
        }
        let empty = |s: &Option<String>| s.as_deref().is_some_and(|c| c.trim().is_empty());
        if empty(&self.archive_command)
            && (self.archive_library.is_none() || empty(&self.archive_library))
        {
            return Some((
                format!(
                    "refusing a base backup of {server}: archive_mode = {} but archive_command is empty, so no WAL is archived and the backup could never be restored; set {fix} (a reload is enough), then back up again",
                    self.archive_mode
                ),
                RetryClass::Permanent,
            ));
        }
        if self.failing {
            return Some((
                format!(
                    "refusing a base backup of {server}: WAL archiving is failing ({}); the backup would wait for WAL that is not being archived and could not be restored. Fix archive_command (its errors are in the server log), then back up again",
                    self.describe()
                ),
                RetryClass::Temporary,
            ));
        }
        None
    }

    /// The archiver's state in words, for error messages.
    pub fn describe(&self) -> String {
        let last_ok = match (&self.last_archived_wal, &self.last_archived_time) {
            (Some(w), Some(t)) => format!("last archived {w} at {t}"),
            _ => "nothing archived since the statistics were reset".into(),
        };
        if self.failing {
            format!(
                "pg_stat_archiver: failing, the last failure on {} at {} ({} failures in all); {last_ok}",
                self.last_failed_wal.as_deref().unwrap_or("?"),
                self.last_failed_time.as_deref().unwrap_or("?"),
                self.failed_count
            )
        } else {
            format!(
                "pg_stat_archiver: no failure since the last success, {last_ok} ({} failures in all)",
                self.failed_count
            )
        }
    }
}

/// What [`watch`] needs to look at one base backup.
pub struct Watch {
    /// Source name (messages).
    pub source: String,
    /// How to connect again when the watching session is lost (TLS included).
    pub conn: super::tls::PgConn,
    /// The watching session, if connected.
    pub client: Option<tokio_postgres::Client>,
    /// `application_name` of the backup's `pg_basebackup` (`PGAPPNAME`).
    pub application_name: String,
    /// How long PostgreSQL may wait for the backup's WAL to be archived.
    pub archive_wait: Duration,
    /// The backup's start position and timeline, once `backup_label` was seen.
    pub start: Box<dyn Fn() -> Option<(u64, u32)> + Send>,
    /// WAL segment size.
    pub seg_bytes: u64,
}

impl Watch {
    async fn client(&mut self) -> Option<&tokio_postgres::Client> {
        if self.client.is_none() {
            match tokio::time::timeout(QUERY_TIMEOUT, self.conn.connect()).await {
                Ok(Ok((c, _conn))) => {
                    self.client = Some(c);
                }
                Ok(Err(e)) => {
                    tracing::warn!(event = "pg_backup_watch_failed", source = %self.source, error = %e);
                }
                Err(_) => {
                    tracing::warn!(event = "pg_backup_watch_failed", source = %self.source, error = "connect timed out");
                }
            }
        }
        self.client.as_ref()
    }

    /// The backup's progress phase, `None` when its row is not (or no longer) there.
    async fn phase(&mut self) -> Option<String> {
        let app = self.application_name.clone();
        let client = self.client().await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&app];
        let q = client.query_opt(
            "SELECT p.phase FROM pg_stat_progress_basebackup p JOIN pg_stat_activity a ON a.pid = p.pid \
             WHERE a.application_name = $1",
            &params,
        );
        match tokio::time::timeout(QUERY_TIMEOUT, q).await {
            Ok(Ok(row)) => row.map(|r| r.get::<_, String>(0)),
            Ok(Err(e)) => {
                tracing::warn!(event = "pg_backup_watch_failed", source = %self.source, error = %e);
                self.client = None;
                None
            }
            Err(_) => {
                self.client = None;
                None
            }
        }
    }

    async fn state(&mut self) -> Option<ArchiverState> {
        let client = self.client().await?;
        tokio::time::timeout(QUERY_TIMEOUT, ArchiverState::read(client))
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn timed_out(&self, state: Option<ArchiverState>) -> SourceError {
        let first = (self.start)()
            .map(|(lsn, tli)| SegmentId::of_lsn(tli, lsn, self.seg_bytes).name(self.seg_bytes));
        let needs = match (&first, state.as_ref().and_then(|s| s.current_segment.clone())) {
            (Some(f), Some(c)) => format!(
                "it needs every segment from {f} to the one of its stop position (at most {c}, the server's current segment)"
            ),
            (Some(f), None) => format!("it needs every segment from {f} to the one of its stop position"),
            (None, _) => "its backup_label was not seen".into(),
        };
        let held_back = match (&first, state.as_ref().and_then(|s| s.last_failed_wal.as_ref())) {
            (Some(f), Some(w)) if state.as_ref().is_some_and(|s| s.failing) && w.as_str() < f.as_str() => {
                " (the archiver takes segments in order: a failure on an earlier one holds this backup's back too)"
            }
            _ => "",
        };
        let archiver = state.map_or_else(
            || "the archiver's state could not be read".to_string(),
            |s| s.describe(),
        ) + held_back;
        SourceError::Dump {
            source_name: self.source.clone(),
            message: format!(
                "PostgreSQL did not archive the WAL this base backup needs within archive_wait ({}): {needs}; {archiver}. The backup was aborted and is not committed: fix archiving (archive_command; its errors are in the server log), or raise archive_wait",
                crate::units::HumanDuration(self.archive_wait)
            ),
            class: RetryClass::Temporary,
            cause: None,
        }
    }
}

/// Owns `pg_basebackup` until it exits and sends its exit status to `done`;
/// kills it (and sends the reason) once PostgreSQL has waited longer than
/// `archive_wait` for the backup's WAL, or when `done` is dropped (the
/// backup was given up).
pub async fn watch(
    mut child: Child,
    mut w: Watch,
    mut done: oneshot::Sender<Result<ExitStatus, SourceError>>,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut waiting_since: Option<tokio::time::Instant> = None;
    let res = loop {
        tokio::select! {
            st = child.wait() => {
                break st.map_err(|e| SourceError::Dump {
                    source_name: w.source.clone(),
                    message: "waiting for pg_basebackup failed".into(),
                    class: RetryClass::Temporary,
                    cause: Some(Box::new(e)),
                });
            }
            _ = done.closed() => {
                let _ = child.kill().await;
                return;
            }
            _ = tick.tick() => {
                let waiting = w
                    .phase()
                    .await
                    .is_some_and(|p| p.to_ascii_lowercase().starts_with("waiting for wal archiving"));
                if !waiting {
                    continue;
                }
                let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= w.archive_wait {
                    let state = w.state().await;
                    let _ = child.kill().await;
                    let _ = child.wait().await;
                    break Err(w.timed_out(state));
                }
            }
        }
    };
    let _ = done.send(res);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> ArchiverState {
        ArchiverState {
            archive_mode: "on".into(),
            archive_command: Some("gsdr wal-push %p".into()),
            last_archived_wal: Some("000000010000000000000003".into()),
            last_archived_time: Some("2026-11-29T01:00:00Z".into()),
            ..ArchiverState::default()
        }
    }

    #[test]
    fn refusals_name_the_setting_and_the_fix() {
        assert_eq!(healthy().refusal("h:5432", "pg"), None);
        let off = ArchiverState {
            archive_mode: "off".into(),
            ..healthy()
        };
        let (m, class) = off.refusal("h:5432", "pg").unwrap();
        assert!(
            m.contains("archive_mode is off") && m.contains("--source pg"),
            "{m}"
        );
        assert_eq!(class, RetryClass::Permanent);
        let standby = ArchiverState {
            in_recovery: true,
            ..healthy()
        };
        assert!(standby.refusal("h", "pg").unwrap().0.contains("standby"));
        let always = ArchiverState {
            in_recovery: true,
            archive_mode: "always".into(),
            ..healthy()
        };
        assert_eq!(always.refusal("h", "pg"), None);
        let empty = ArchiverState {
            archive_command: Some(String::new()),
            ..healthy()
        };
        assert!(empty
            .refusal("h", "pg")
            .unwrap()
            .0
            .contains("archive_command is empty"));
        // Hidden from the role: not held against it.
        let hidden = ArchiverState {
            archive_command: None,
            ..healthy()
        };
        assert_eq!(hidden.refusal("h", "pg"), None);
        let failing = ArchiverState {
            failing: true,
            failed_count: 7,
            last_failed_wal: Some("000000010000000000000004".into()),
            last_failed_time: Some("2026-11-29T01:05:00Z".into()),
            ..healthy()
        };
        let (m, class) = failing.refusal("h", "pg").unwrap();
        assert!(
            m.contains("failing")
                && m.contains("000000010000000000000004 at 2026-11-29T01:05:00Z (7 failures")
                && m.contains("last archived 000000010000000000000003"),
            "{m}"
        );
        assert_eq!(class, RetryClass::Temporary);
    }
}
