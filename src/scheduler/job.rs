//! What the scheduler runs: jobs of a few kinds, each with a trigger (a cron
//! schedule or a fixed period), a lease, a deadline and retries.
//!
//! A job is named `<kind>/<name>`: `backup/<source>`, `velero/<job>`,
//! `drill/scheduled`, `prune/all`, `replicate/all`, `gc/all`, `wal-status/all`,
//! `watch/all`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::cron::{CronSchedule, Zone};
use crate::storage::Store;

pub use crate::job_id::{JobId, JobKind};

impl JobId {
    /// The key of its run lease under `locks_prefix`. Backups keep the
    /// source-named key older daemons and `storage gc` read (`<prefix>/<source>.json`).
    pub fn lease_key(&self, locks_prefix: &str) -> String {
        match self.kind {
            JobKind::Backup => super::lease::lease_key(locks_prefix, &self.name),
            k => format!(
                "{}/jobs/{}/{}.json",
                locks_prefix.trim_end_matches('/'),
                k.as_str(),
                self.name
            ),
        }
    }
}

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// At the slots of a cron schedule.
    Cron(Box<CronSchedule>),
    /// Every period, at whole multiples of it since the Unix epoch (so replicas agree on the slots).
    Every(Duration),
}

impl Trigger {
    /// The newest slot at or before `now`, and the next one after `now`.
    pub fn slots(
        &self,
        zone: Zone,
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self {
            Trigger::Cron(s) => super::slots(s, zone, now),
            Trigger::Every(d) => {
                let p = d.as_millis().max(1) as i64;
                let at = now.timestamp_millis().div_euclid(p) * p;
                let prev = Utc.timestamp_millis_opt(at).single();
                let next = Utc.timestamp_millis_opt(at + p).single();
                (prev, next)
            }
        }
    }

    /// The distance between the next two slots.
    pub fn interval(&self, zone: Zone, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Trigger::Cron(s) => super::interval(s, zone, now),
            Trigger::Every(d) => Some(*d),
        }
    }

    /// The schedule as the policy states it (`every 15m` for periods).
    pub fn describe(&self) -> String {
        match self {
            Trigger::Cron(s) => s.text().to_string(),
            Trigger::Every(d) => format!("every {}", humantime::format_duration(*d)),
        }
    }
}

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Which job.
    pub id: JobId,
    /// When it runs.
    pub trigger: Trigger,
    /// Its home target: where its lease and its [`super::record`] live; `None` = no lease, no record.
    pub home: Option<Arc<dyn Store>>,
    /// Deadline of one attempt: past it the attempt is cancelled and the slot fails.
    pub timeout: Duration,
}

impl JobPlan {
    /// The backup job of `source` on a cron schedule, leased and recorded on `home`.
    pub fn backup(
        source: &str,
        schedule: CronSchedule,
        home: Option<Arc<dyn Store>>,
        timeout: Duration,
    ) -> Self {
        JobPlan {
            id: JobId::backup(source),
            trigger: Trigger::Cron(Box::new(schedule)),
            home,
            timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_slot_at_epoch_multiples_so_replicas_agree() {
        let t = Trigger::Every(Duration::from_secs(900));
        let utc = Zone::UTC;
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 10, 7, 12).unwrap();
        let (p, n) = t.slots(utc, now);
        assert_eq!(
            p,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).unwrap())
        );
        assert_eq!(
            n,
            Some(Utc.with_ymd_and_hms(2026, 12, 2, 10, 15, 0).unwrap())
        );
        let exact = Utc.with_ymd_and_hms(2026, 12, 2, 10, 15, 0).unwrap();
        assert_eq!(t.slots(utc, exact).0, Some(exact));
    }

    #[test]
    fn job_ids_and_lease_keys() {
        assert_eq!(JobId::backup("pg").to_string(), "backup/pg");
        assert_eq!(JobId::backup("pg").lease_key("locks"), "locks/pg.json");
        assert_eq!(
            JobId::new(JobKind::Velero, "daily").lease_key("locks/"),
            "locks/jobs/velero/daily.json"
        );
        assert_eq!("wal-status".parse::<JobKind>(), Ok(JobKind::WalStatus));
        assert!("nope"
            .parse::<JobKind>()
            .unwrap_err()
            .contains("kinds: backup"));
    }
}
