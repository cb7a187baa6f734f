//! `[daemon]`: scheduling, locking, retries, shutdown, metrics and alerting settings.

use super::*;

/// What the daemon does on start for a source whose last success is older than its interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Run it once now, then follow the schedule.
    #[default]
    RunOnce,
    /// Wait for the next scheduled time.
    Skip,
}

/// A setting written in the policy as plain text, or referenced as a secret
/// (`{ file = "…" }` / `{ env = "…" }`) when its value holds credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SecretOrPlain {
    /// Written in the policy.
    Plain(String),
    /// Read from a secret.
    Secret(SecretRef),
}

impl SecretOrPlain {
    /// The value; errors name the reference, never the value.
    pub fn read(&self) -> Result<Secret, String> {
        match self {
            SecretOrPlain::Plain(s) => Ok(Secret::new(s.clone())),
            SecretOrPlain::Secret(r) => r.read(),
        }
    }
}

/// `[daemon]`: scheduling, locking, retries, shutdown, metrics and notifications.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    /// Pushgateway base URL `gsdr run --once` and `gsdr drill --scheduled` push
    /// their metrics to when they end (a plain URL, or a secret when it holds
    /// credentials); unset: nothing is pushed.
    #[serde(default)]
    pub pushgateway_url: Option<SecretOrPlain>,
    /// Lifetime of a source's run lease; a lease not renewed within it may be taken over by another replica.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: HumanDuration,
    /// How often a running job renews its lease (well below `lease_ttl`).
    #[serde(default = "default_lease_renew")]
    pub lease_renew: HumanDuration,
    /// Key prefix of the lease objects on each source's primary target (`<locks_prefix>/<source>.json`).
    #[serde(default = "default_locks_prefix")]
    pub locks_prefix: String,
    /// Attempts per scheduled run, first included; only temporary errors are retried.
    #[serde(default = "default_retry_max_attempts")]
    pub retry_max_attempts: u32,
    /// Wait before the first retry; doubled each time, with ±20% jitter.
    #[serde(default = "default_retry_backoff_base")]
    pub retry_backoff_base: HumanDuration,
    /// Longest wait between retries.
    #[serde(default = "default_retry_backoff_max")]
    pub retry_backoff_max: HumanDuration,
    /// On SIGTERM, how long running jobs may take to finish before they are aborted.
    #[serde(default = "default_grace_period")]
    pub grace_period: HumanDuration,
    /// What to do on start for a source whose last success is older than its interval.
    #[serde(default)]
    pub missed_runs: MissedRuns,
    /// How often the daemon sweeps every source for backups the off-site target lacks (failed copies are retried then).
    #[serde(default = "default_replicate_every")]
    pub replicate_every: HumanDuration,
    /// How often the daemon reads how far a restore of each postgres source
    /// reaches, the end of its contiguous WAL chain (`gsdr_wal_last_archived_timestamp_seconds`).
    #[serde(default = "default_wal_status_every")]
    pub wal_status_every: HumanDuration,
    /// Apply the source's retention (primary and off-site) after each successful run, as `gsdr prune` does.
    #[serde(default = "yes")]
    pub prune_after_run: bool,
    /// When the daemon applies every source's retention as a job of its own
    /// (`prune/all`), beside `prune_after_run`; unset: no scheduled prune job.
    #[serde(default)]
    pub prune_schedule: Option<CronSchedule>,
    /// How often the watch job (one replica) checks RPO, WAL and off-site lag
    /// against their thresholds and notifies drill results and the heartbeat.
    #[serde(default = "default_watch_every")]
    pub watch_every: HumanDuration,
    /// Deadlines of one attempt of each job kind other than backups (whose
    /// deadline is `timeout` of the source or of `[defaults]`).
    #[serde(default)]
    pub timeouts: JobTimeouts,
    /// Most runs (streams) at once in one process: memory is about this × one stream's bound.
    #[serde(default = "default_max_concurrent_runs")]
    pub max_concurrent_runs: usize,
    /// Slack-compatible webhook URL (a secret: `{ file = "…" }` or `{ env = "…" }`); unset: no notifications.
    #[serde(default)]
    pub webhook_url: Option<SecretRef>,
    /// At most one notification per source in this interval (recoveries always pass).
    #[serde(default = "default_notify_min_interval")]
    pub notify_min_interval: HumanDuration,
    /// Body of webhook posts: `slack` (`{"text": …, "blocks": […]}`, the default) or `json` (`{"kind": …, "severity": …, "policy": …, …}`).
    #[serde(default)]
    pub webhook_format: WebhookFormat,
    /// A postgres source whose WAL archive lags this much behind now is notified (and again when it catches up).
    #[serde(default = "default_wal_lag_alert")]
    pub wal_lag_alert: HumanDuration,
    /// A source whose off-site copy lags its primary by this much is notified (and again when it catches up).
    #[serde(default = "default_offsite_lag_alert")]
    pub offsite_lag_alert: HumanDuration,
    /// Dead man's switch URL (a secret like `webhook_url`), posted to while nothing is failing; unset: no heartbeat.
    #[serde(default)]
    pub heartbeat_url: Option<SecretRef>,
    /// At most one heartbeat per this interval.
    #[serde(default = "default_heartbeat_every")]
    pub heartbeat_every: HumanDuration,
    /// Time zone of cron schedules: `UTC` (default), a fixed offset like
    /// `+01:00`, or an IANA name like `Europe/Berlin` (daylight saving: a slot
    /// in the skipped hour runs once at the end of the gap, one in the repeated hour once).
    #[serde(default)]
    pub timezone: Option<String>,
    /// How often the daemon collects garbage on every target (also once at
    /// start): interrupted uploads, temp files, data objects without a manifest.
    #[serde(default = "default_gc_every")]
    pub gc_every: HumanDuration,
    /// How old a leftover must be before garbage collection removes it
    /// (`gsdr storage gc` and the daemon): longer than any backup or copy runs.
    #[serde(default = "default_gc_grace")]
    pub gc_grace: HumanDuration,
    /// A continuous capture that stopped (the server went away, an error) is
    /// started again this long after (its reconnect backoff; one replica holds it).
    #[serde(default = "default_capture_restart")]
    pub capture_restart: HumanDuration,
    /// A continuous capture whose newest stored point lags this much behind
    /// the server is notified (and again when it catches up).
    #[serde(default = "default_capture_lag_alert")]
    pub capture_lag_alert: HumanDuration,
}

pub(crate) fn hd(secs: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(secs))
}
pub(crate) fn default_metrics_addr() -> String {
    "0.0.0.0:9464".into()
}
pub(crate) fn default_lease_ttl() -> HumanDuration {
    hd(300)
}
pub(crate) fn default_lease_renew() -> HumanDuration {
    hd(60)
}
pub(crate) fn default_locks_prefix() -> String {
    "locks".into()
}
pub(crate) fn default_retry_max_attempts() -> u32 {
    3
}
pub(crate) fn default_retry_backoff_base() -> HumanDuration {
    hd(30)
}
pub(crate) fn default_retry_backoff_max() -> HumanDuration {
    hd(900)
}
pub(crate) fn default_replicate_every() -> HumanDuration {
    hd(900)
}
pub(crate) fn default_wal_status_every() -> HumanDuration {
    hd(60)
}
pub(crate) fn default_max_concurrent_runs() -> usize {
    2
}
pub(crate) fn default_grace_period() -> HumanDuration {
    hd(600)
}
pub(crate) fn default_notify_min_interval() -> HumanDuration {
    hd(900)
}
pub(crate) fn default_wal_lag_alert() -> HumanDuration {
    hd(900)
}
pub(crate) fn default_offsite_lag_alert() -> HumanDuration {
    hd(3600)
}
pub(crate) fn default_heartbeat_every() -> HumanDuration {
    hd(300)
}
pub(crate) fn default_watch_every() -> HumanDuration {
    hd(60)
}
pub(crate) fn default_gc_every() -> HumanDuration {
    hd(6 * 3600)
}
pub(crate) fn default_gc_grace() -> HumanDuration {
    hd(24 * 3600)
}
pub(crate) fn default_capture_restart() -> HumanDuration {
    hd(10)
}
pub(crate) fn default_capture_lag_alert() -> HumanDuration {
    hd(60)
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            metrics_addr: default_metrics_addr(),
            pushgateway_url: None,
            lease_ttl: default_lease_ttl(),
            lease_renew: default_lease_renew(),
            locks_prefix: default_locks_prefix(),
            retry_max_attempts: default_retry_max_attempts(),
            retry_backoff_base: default_retry_backoff_base(),
            retry_backoff_max: default_retry_backoff_max(),
            grace_period: default_grace_period(),
            missed_runs: MissedRuns::default(),
            max_concurrent_runs: default_max_concurrent_runs(),
            prune_after_run: true,
            prune_schedule: None,
            timeouts: JobTimeouts::default(),
            watch_every: default_watch_every(),
            replicate_every: default_replicate_every(),
            wal_status_every: default_wal_status_every(),
            webhook_url: None,
            notify_min_interval: default_notify_min_interval(),
            webhook_format: WebhookFormat::default(),
            wal_lag_alert: default_wal_lag_alert(),
            offsite_lag_alert: default_offsite_lag_alert(),
            heartbeat_url: None,
            heartbeat_every: default_heartbeat_every(),
            timezone: None,
            gc_every: default_gc_every(),
            gc_grace: default_gc_grace(),
            capture_restart: default_capture_restart(),
            capture_lag_alert: default_capture_lag_alert(),
        }
    }
}

/// `[daemon.timeouts]`: the deadline of one attempt of each job kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobTimeouts {
    /// A Velero job (default: the job's Velero wait, `velero.timeout`, plus 10 minutes).
    #[serde(default)]
    pub velero: Option<HumanDuration>,
    /// The scheduled drills, all scenarios together.
    #[serde(default = "default_drill_timeout")]
    pub drill: HumanDuration,
    /// Retention of every source.
    #[serde(default = "default_prune_timeout")]
    pub prune: HumanDuration,
    /// The replication sweep of every source.
    #[serde(default = "default_replicate_timeout")]
    pub replicate: HumanDuration,
    /// Garbage collection of every target.
    #[serde(default = "default_gc_timeout")]
    pub gc: HumanDuration,
    /// The status refresh (WAL chain ends, metrics from the catalog).
    #[serde(default = "default_wal_status_timeout", rename = "wal-status")]
    pub wal_status: HumanDuration,
    /// The watch (thresholds, drill results, heartbeat).
    #[serde(default = "default_wal_status_timeout")]
    pub watch: HumanDuration,
}

pub(crate) fn default_drill_timeout() -> HumanDuration {
    hd(6 * 3600)
}
pub(crate) fn default_prune_timeout() -> HumanDuration {
    hd(3600)
}
pub(crate) fn default_replicate_timeout() -> HumanDuration {
    hd(6 * 3600)
}
pub(crate) fn default_gc_timeout() -> HumanDuration {
    hd(2 * 3600)
}
pub(crate) fn default_wal_status_timeout() -> HumanDuration {
    hd(600)
}

impl Default for JobTimeouts {
    fn default() -> Self {
        JobTimeouts {
            velero: None,
            drill: default_drill_timeout(),
            prune: default_prune_timeout(),
            replicate: default_replicate_timeout(),
            gc: default_gc_timeout(),
            wal_status: default_wal_status_timeout(),
            watch: default_wal_status_timeout(),
        }
    }
}

/// The body of webhook posts (`daemon.webhook_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// Slack-compatible: `{"text": …, "blocks": […]}` (also Mattermost, Rocket.Chat, Teams workflows).
    #[default]
    Slack,
    /// `{"kind": …, "severity": …, "policy": …, "text": …, <fields>}` for alert routers and scripts.
    Json,
}

impl DaemonConfig {
    /// The time zone cron schedules are read in (UTC when unset).
    pub fn zone(&self) -> Result<Zone, String> {
        self.timezone.as_deref().map_or(Ok(Zone::UTC), Zone::parse)
    }

    /// The cron time zone as a fixed offset (UTC when unset), for callers
    /// that take no IANA zone; an IANA name is refused here.
    pub fn offset(&self) -> Result<chrono::FixedOffset, String> {
        match self.zone()? {
            Zone::Fixed(o) => Ok(o),
            Zone::Iana(z) => Err(format!(
                "`{}`: this scheduler takes `UTC` or a fixed offset like `+01:00`, not an IANA zone",
                z.name()
            )),
        }
    }
}

fn yes() -> bool {
    true
}
