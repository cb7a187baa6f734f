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
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoints.
    pub metrics_addr: String,
    /// Pushgateway base URL `gsdr run --once` and `gsdr drill --scheduled` push
    /// their metrics to when they end (a plain URL, or a secret when it holds
    /// credentials); unset: nothing is pushed.
    pub pushgateway_url: Option<SecretOrPlain>,
    /// Lifetime of a source's run lease; a lease not renewed within it may be taken over by another replica.
    pub lease_ttl: HumanDuration,
    /// How often a running job renews its lease (well below `lease_ttl`).
    pub lease_renew: HumanDuration,
    /// Key prefix of the lease objects on each source's primary target (`<locks_prefix>/<source>.json`).
    pub locks_prefix: String,
    /// Attempts per scheduled run, first included; only temporary errors are retried.
    pub retry_max_attempts: u32,
    /// Wait before the first retry; doubled each time, with ±20% jitter.
    pub retry_backoff_base: HumanDuration,
    /// Longest wait between retries.
    pub retry_backoff_max: HumanDuration,
    /// On SIGTERM, how long running jobs may take to finish before they are aborted.
    pub grace_period: HumanDuration,
    /// What to do on start for a source whose last success is older than its interval.
    pub missed_runs: MissedRuns,
    /// How often the daemon sweeps every source for backups the off-site target lacks (failed copies are retried then).
    pub replicate_every: HumanDuration,
    /// How often the daemon reads how far a restore of each postgres source
    /// reaches, the end of its contiguous WAL chain (`gsdr_wal_last_archived_timestamp_seconds`).
    pub wal_status_every: HumanDuration,
    /// Apply the source's retention (primary and off-site) after each successful run, as `gsdr prune` does.
    pub prune_after_run: bool,
    /// When the daemon applies every source's retention as a job of its own
    /// (`prune/all`), beside `prune_after_run`; unset: no scheduled prune job.
    pub prune_schedule: Option<CronSchedule>,
    /// How often the watch job (one replica) checks RPO, WAL and off-site lag
    /// against their thresholds and notifies drill results and the heartbeat.
    pub watch_every: HumanDuration,
    /// Deadlines of one attempt of each job kind other than backups (whose
    /// deadline is `timeout` of the source or of `[defaults]`).
    pub timeouts: JobTimeouts,
    /// Most runs (streams) at once in one process: memory is about this × one stream's bound.
    pub max_concurrent_runs: usize,
    /// Slack-compatible webhook URL (a secret: `{ file = "…" }` or `{ env = "…" }`); unset: no notifications.
    pub webhook_url: Option<SecretRef>,
    /// At most one notification per source in this interval (recoveries always pass).
    pub notify_min_interval: HumanDuration,
    /// Body of webhook posts: `slack` (`{"text": …, "blocks": […]}`, the default) or `json` (`{"kind": …, "severity": …, "policy": …, …}`).
    pub webhook_format: WebhookFormat,
    /// A postgres source whose WAL archive lags this much behind now is notified (and again when it catches up).
    pub wal_lag_alert: HumanDuration,
    /// A source whose off-site copy lags its primary by this much is notified (and again when it catches up).
    pub offsite_lag_alert: HumanDuration,
    /// Dead man's switch URL (a secret like `webhook_url`), posted to while nothing is failing; unset: no heartbeat.
    pub heartbeat_url: Option<SecretRef>,
    /// At most one heartbeat per this interval.
    pub heartbeat_every: HumanDuration,
    /// Time zone of cron schedules: `UTC` (default), a fixed offset like
    /// `+01:00`, or an IANA name like `Europe/Berlin` (daylight saving: a slot
    /// in the skipped hour runs once at the end of the gap, one in the repeated hour once).
    pub timezone: Option<String>,
    /// How often the daemon collects garbage on every target (also once at
    /// start): interrupted uploads, temp files, data objects without a manifest.
    pub gc_every: HumanDuration,
    /// How old a leftover must be before garbage collection removes it
    /// (`gsdr storage gc` and the daemon): longer than any backup or copy runs.
    pub gc_grace: HumanDuration,
    /// A continuous capture that stopped (the server went away, an error) is
    /// started again this long after (its reconnect backoff; one replica holds it).
    pub capture_restart: HumanDuration,
    /// A continuous capture whose newest stored point lags this much behind
    /// the server is notified (and again when it catches up).
    pub capture_lag_alert: HumanDuration,
}

pub(crate) fn hd(secs: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(secs))
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            metrics_addr: "0.0.0.0:9464".into(),
            pushgateway_url: None,
            lease_ttl: hd(300),
            lease_renew: hd(60),
            locks_prefix: "locks".into(),
            retry_max_attempts: 3,
            retry_backoff_base: hd(30),
            retry_backoff_max: hd(900),
            grace_period: hd(600),
            missed_runs: MissedRuns::default(),
            max_concurrent_runs: 2,
            prune_after_run: true,
            prune_schedule: None,
            timeouts: JobTimeouts::default(),
            watch_every: hd(60),
            replicate_every: hd(900),
            wal_status_every: hd(60),
            webhook_url: None,
            notify_min_interval: hd(900),
            webhook_format: WebhookFormat::default(),
            wal_lag_alert: hd(900),
            offsite_lag_alert: hd(3600),
            heartbeat_url: None,
            heartbeat_every: hd(300),
            timezone: None,
            gc_every: hd(6 * 3600),
            gc_grace: hd(24 * 3600),
            capture_restart: hd(10),
            capture_lag_alert: hd(60),
        }
    }
}

/// `[daemon.timeouts]`: the deadline of one attempt of each job kind.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobTimeouts {
    /// A Velero job (default: the job's Velero wait, `velero.timeout`, plus 10 minutes).
    pub velero: Option<HumanDuration>,
    /// The scheduled drills, all scenarios together.
    pub drill: HumanDuration,
    /// Retention of every source.
    pub prune: HumanDuration,
    /// The replication sweep of every source.
    pub replicate: HumanDuration,
    /// Garbage collection of every target.
    pub gc: HumanDuration,
    /// The status refresh (WAL chain ends, metrics from the catalog).
    #[serde(rename = "wal-status")]
    pub wal_status: HumanDuration,
    /// The watch (thresholds, drill results, heartbeat).
    pub watch: HumanDuration,
}

impl Default for JobTimeouts {
    fn default() -> Self {
        JobTimeouts {
            velero: None,
            drill: hd(6 * 3600),
            prune: hd(3600),
            replicate: hd(6 * 3600),
            gc: hd(2 * 3600),
            wal_status: hd(600),
            watch: hd(600),
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
