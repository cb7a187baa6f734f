//! Validation of a parsed policy: every rule the run would enforce, checked once at load.

use super::*;

impl Policy {
    pub(super) fn validate_daemon(&self, text: &str) -> Result<(), PolicyError> {
        let d = &self.daemon;
        d.metrics_addr
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                self.err(
                    text,
                    "daemon.metrics_addr",
                    format!(
                        "`{}` is not an address like 0.0.0.0:9464: {e}",
                        d.metrics_addr
                    ),
                )
            })?;
        if d.lease_renew.0.is_zero() || d.lease_renew.0 * 2 > d.lease_ttl.0 {
            return Err(self.err(
                text,
                "daemon.lease_renew",
                format!("must be above 0 and at most half of lease_ttl ({}), so a lease is renewed before it expires", d.lease_ttl),
            ));
        }
        if d.replicate_every.0.is_zero() {
            return Err(self.err(text, "daemon.replicate_every", "must be above 0"));
        }
        if d.wal_status_every.0.is_zero() {
            return Err(self.err(text, "daemon.wal_status_every", "must be above 0"));
        }
        for (field, v) in [
            ("daemon.wal_lag_alert", d.wal_lag_alert),
            ("daemon.offsite_lag_alert", d.offsite_lag_alert),
            ("daemon.heartbeat_every", d.heartbeat_every),
        ] {
            if v.0.is_zero() {
                return Err(self.err(text, field, "must be above 0"));
            }
        }
        if d.gc_every.0.is_zero() {
            return Err(self.err(text, "daemon.gc_every", "must be above 0"));
        }
        if d.gc_grace.0 < d.lease_ttl.0 {
            return Err(self.err(
                text,
                "daemon.gc_grace",
                format!("must be at least lease_ttl ({}): a shorter grace could remove what a backup is still writing", d.lease_ttl),
            ));
        }
        if d.max_concurrent_runs == 0 {
            return Err(self.err(text, "daemon.max_concurrent_runs", "must be at least 1"));
        }
        if d.retry_max_attempts == 0 {
            return Err(self.err(
                text,
                "daemon.retry_max_attempts",
                "must be at least 1 (1 = no retries)",
            ));
        }
        if d.retry_backoff_base.0 > d.retry_backoff_max.0 {
            return Err(self.err(
                text,
                "daemon.retry_backoff_base",
                "must not exceed retry_backoff_max",
            ));
        }
        check_name(&d.locks_prefix).map_err(|m| self.err(text, "daemon.locks_prefix", m))?;
        if self.sources.contains_key(&d.locks_prefix) {
            return Err(self.err(
                text,
                "daemon.locks_prefix",
                format!(
                    "`{}` is also a source name; pick another prefix",
                    d.locks_prefix
                ),
            ));
        }
        d.zone().map_err(|m| self.err(text, "daemon.timezone", m))?;
        Ok(())
    }

    /// Every schedule of the policy, with the dotted path of its field.
    pub fn schedules(&self) -> Vec<(String, &CronSchedule)> {
        let mut out: Vec<(String, &CronSchedule)> = self
            .sources
            .iter()
            .filter_map(|(n, s)| Some((format!("sources.{n}.schedule"), s.schedule.as_ref()?)))
            .collect();
        if let Some(v) = &self.velero {
            out.extend(v.jobs.iter().filter_map(|(n, j)| {
                Some((format!("velero.jobs.{n}.schedule"), j.schedule.as_ref()?))
            }));
        }
        if let Some(s) = self.drills.as_ref().and_then(|d| d.schedule.as_ref()) {
            out.push(("drills.schedule".into(), s));
        }
        out
    }

    /// Refuses a schedule that never runs or goes more than 400 days without a run.
    pub(super) fn validate_schedules(&self, text: &str) -> Result<(), PolicyError> {
        for (field, s) in self.schedules() {
            s.check_frequency().map_err(|m| self.err(text, &field, m))?;
        }
        Ok(())
    }
}

pub(crate) fn expire_days_text(d: HumanDuration) -> String {
    let secs = d.0.as_secs();
    if secs % 86_400 == 0 {
        format!("{}d", secs / 86_400)
    } else {
        d.to_string()
    }
}

/// How the retention of `source` outlives an expiration after `expire`, the
/// plainest reason first (lower rank): `keep_last`, then a `keep_*` span at
/// least as long, then the floor every source has (its newest backup).
pub(crate) fn retention_outlives(
    source: &str,
    r: Option<Retention>,
    expire: HumanDuration,
) -> (u8, String) {
    const DAY: u64 = 86_400;
    let days = |secs: u64| {
        if secs % DAY == 0 {
            format!("{}d", secs / DAY)
        } else {
            HumanDuration(std::time::Duration::from_secs(secs)).to_string()
        }
    };
    let r = r.unwrap_or(Retention {
        keep_within: Some(HumanDuration(std::time::Duration::from_secs(
            DEFAULT_KEEP_WITHIN_DAYS * DAY,
        ))),
        keep_last: None,
        keep_daily: None,
        keep_weekly: None,
        keep_monthly: None,
    });
    if let Some(n) = r.keep_last.filter(|n| *n > 0) {
        return (
            0,
            format!("source `{source}` has keep_last = {n}, which keeps its newest {n} backups whatever their age"),
        );
    }
    let e = expire.0.as_secs();
    let spans = [
        (
            "keep_monthly",
            r.keep_monthly.map(|n| n as u64 * 31 * DAY),
            "months",
        ),
        (
            "keep_weekly",
            r.keep_weekly.map(|n| n as u64 * 7 * DAY),
            "weeks",
        ),
        ("keep_daily", r.keep_daily.map(|n| n as u64 * DAY), "days"),
        ("keep_within", r.keep_within.map(|d| d.0.as_secs()), ""),
    ];
    for (field, span, unit) in spans {
        let Some(span) = span.filter(|s| *s >= e) else {
            continue;
        };
        let n = match field {
            "keep_monthly" => r.keep_monthly.map(|n| n.to_string()),
            "keep_weekly" => r.keep_weekly.map(|n| n.to_string()),
            "keep_daily" => r.keep_daily.map(|n| n.to_string()),
            _ => r
                .keep_within
                .map(|d| format!("\"{}\"", days(d.0.as_secs()))),
        }
        .unwrap_or_default();
        return (
            1,
            format!(
                "source `{source}` has {field} = {n}, which keeps backups up to {}{}, at least as long as the expiration",
                days(span),
                if unit.is_empty() { String::new() } else { format!(" ({n} {unit})") }
            ),
        );
    }
    (
        2,
        format!("`gsdr prune` always keeps the newest restorable backup of source `{source}` and the WAL it needs, and the expiration would delete them {} after its last successful backup", days(e)),
    )
}

/// Checks a lifecycle table; errors carry the sub-field (`.expire_after`) and the message.
pub(crate) fn validate_lifecycle(l: &Lifecycle) -> Result<(), (String, String)> {
    let whole_days = |k: &str, d: &HumanDuration| -> Result<u64, (String, String)> {
        let secs = d.0.as_secs();
        if secs == 0 || secs % 86_400 != 0 || d.0.subsec_nanos() != 0 {
            return Err((
                format!(".{k}"),
                format!("`{d}`: S3 counts these in whole days; write e.g. \"30d\""),
            ));
        }
        Ok(secs / 86_400)
    };
    let expire = l
        .expire_after
        .as_ref()
        .map(|d| whole_days("expire_after", d))
        .transpose()?;
    whole_days("abort_incomplete_after", &l.abort_incomplete_after)?;
    whole_days("noncurrent_expire_after", &l.noncurrent_expire_after)?;
    if let Some(lock) = &l.object_lock {
        let days = whole_days("object_lock.retention", &lock.retention)?;
        if !l.versioning {
            return Err((
                ".versioning".into(),
                "Object Lock needs versioning: set versioning = true".into(),
            ));
        }
        if expire.is_some_and(|e| e < days) {
            return Err((
                ".expire_after".into(),
                "must be at least object_lock.retention: a lifecycle rule cannot remove a locked version".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "`{name}`: names use letters, digits, `-` and `_` only (they become object keys)"
        ));
    }
    Ok(())
}
