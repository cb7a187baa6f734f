//! Job records: the catalog's memory of what the scheduler ran.
//!
//! One small JSON object per job, `jobs/<kind>/<name>.json`, on the job's
//! home target (a backup's primary target; the policy's default target for
//! the other kinds). Only the replica that ran a slot writes it (it holds the
//! slot's lease), so every replica, a restarted one, or `gsdr status` on a
//! laptop reads the same history, and the metrics derived from it agree.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::job::{JobId, JobKind};
use crate::storage::{PutCondition, StorageError, Store};

/// Runs kept in a record's history.
pub const HISTORY: usize = 20;

const RECORD_MAX_BYTES: u64 = 1 << 20;

/// How a run ended, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// It did its work.
    Success,
    /// It failed (every attempt, or a permanent error).
    Failure,
    /// Shutdown cancelled it.
    Aborted,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEntry {
    /// The slot it served.
    pub slot: DateTime<Utc>,
    /// When its first attempt started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// How it ended.
    pub result: RunResult,
    /// Backup id, report location, Velero backup name… or the error.
    pub detail: String,
    /// Attempts made.
    pub attempts: u32,
    /// The replica that ran it.
    pub holder: String,
}

impl RunEntry {
    /// Seconds from start to end.
    pub fn duration_secs(&self) -> f64 {
        (self.finished_at - self.started_at).num_milliseconds() as f64 / 1000.0
    }
}

/// The record of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// Which job.
    #[serde(flatten)]
    pub id: JobId,
    /// The newest run.
    pub last: RunEntry,
    /// The newest successful run.
    pub last_success: Option<RunEntry>,
    /// The newest runs, newest first, at most [`HISTORY`].
    pub history: Vec<RunEntry>,
    /// When the current failure streak was last notified (none while succeeding):
    /// the rate limit of failure messages holds across replicas and restarts.
    #[serde(default)]
    pub notified_failure_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// The metrics event that publishes this record.
    pub fn recorded(&self) -> crate::metrics::events::JobRecorded<'_> {
        crate::metrics::events::JobRecorded {
            job: &self.id,
            ok: self.last.result == RunResult::Success,
            last_finished_at: self.last.finished_at,
            last_duration_secs: self.last.duration_secs(),
            last_success_at: self.last_success.as_ref().map(|s| s.finished_at),
        }
    }

    /// The record after `run`, from the previous one (if any).
    pub fn next(prev: Option<JobRecord>, id: &JobId, run: RunEntry) -> JobRecord {
        let (mut history, last_success, notified) = match prev {
            Some(p) => (p.history, p.last_success, p.notified_failure_at),
            None => (Vec::new(), None, None),
        };
        let notified = if run.result == RunResult::Success {
            None
        } else {
            notified
        };
        history.insert(0, run.clone());
        history.truncate(HISTORY);
        JobRecord {
            id: id.clone(),
            last_success: if run.result == RunResult::Success {
                Some(run.clone())
            } else {
                last_success
            },
            last: run,
            history,
            notified_failure_at: notified,
        }
    }

    /// Whether the newest run did not succeed.
    pub fn failing(&self) -> bool {
        self.last.result != RunResult::Success
    }
}

/// Where the record of `id` lives.
pub fn record_key(id: &JobId) -> String {
    format!("jobs/{}/{}.json", id.kind, id.name)
}

/// Reads the record of `id`; `None` if the job never ran. An unreadable record
/// counts as none (it is rewritten by the next run), with a warning.
pub async fn read(store: &dyn Store, id: &JobId) -> Result<Option<JobRecord>, StorageError> {
    let key = record_key(id);
    match store.get_small(&key, RECORD_MAX_BYTES).await {
        Ok((bytes, _)) => match serde_json::from_slice(&bytes) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                tracing::warn!(event = "job_record_unreadable", key, error = %e);
                Ok(None)
            }
        },
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Stores `rec` (the lease holder of the job's slot writes it).
pub async fn write(store: &dyn Store, rec: &JobRecord) -> Result<(), StorageError> {
    let id = &rec.id;
    let body = serde_json::to_vec_pretty(rec).expect("a job record serialises");
    store
        .put_small(&record_key(id), Bytes::from(body), PutCondition::Overwrite)
        .await?;
    Ok(())
}

/// Every record of `kind` on `store`.
pub async fn list(store: &dyn Store, kind: JobKind) -> Result<Vec<JobRecord>, StorageError> {
    let prefix = format!("jobs/{kind}/");
    let mut out = Vec::new();
    for o in store.list(&prefix).await? {
        let Some(name) = o
            .key
            .strip_prefix(&prefix)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        if let Some(r) = read(store, &JobId::new(kind, name)).await? {
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(min: u32, result: RunResult) -> RunEntry {
        let t = DateTime::parse_from_rfc3339(&format!("2026-12-02T10:{min:02}:00Z"))
            .unwrap()
            .with_timezone(&Utc);
        RunEntry {
            slot: t,
            started_at: t,
            finished_at: t + chrono::Duration::seconds(3),
            result,
            detail: format!("run {min}"),
            attempts: 1,
            holder: "a".into(),
        }
    }

    #[test]
    fn a_failure_keeps_the_last_success_and_history_is_bounded() {
        let id = JobId::backup("pg");
        let mut rec = JobRecord::next(None, &id, entry(0, RunResult::Success));
        rec = JobRecord::next(Some(rec), &id, entry(1, RunResult::Failure));
        assert_eq!(rec.last.result, RunResult::Failure);
        assert_eq!(rec.last_success.as_ref().unwrap().detail, "run 0");
        for m in 2..40 {
            rec = JobRecord::next(Some(rec), &id, entry(m, RunResult::Success));
        }
        assert_eq!(rec.history.len(), HISTORY);
        assert_eq!(rec.history[0].detail, "run 39");
        assert_eq!(rec.last.duration_secs(), 3.0);
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["kind"], "backup");
        assert_eq!(json["name"], "pg");
        assert_eq!(record_key(&id), "jobs/backup/pg.json");
    }
}
