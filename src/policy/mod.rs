//! Policy files (`policies/*.toml`): what to back up, when, where, for how long,
//! encrypted to whom, and the recovery objectives.
//!
//! Parsing is strict: unknown fields are errors, and every error names the
//! file, the line and the field. Secrets are references (`{ env = "NAME" }`
//! or `{ file = "/path" }`), never values. `policies/reference.toml`
//! documents every field.

mod cron;
mod locate;
use locate::line_of;
mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use cron::{parse_offset, CronError, CronSchedule, Zone, MAX_GAP_DAYS};
pub use types::{ByteSize, HumanDuration, Secret, SecretRef};

/// The retention applied when a policy sets none: keep every backup of the last 30 days.
pub const DEFAULT_KEEP_WITHIN_DAYS: u64 = 30;

/// A whole policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name of the protected platform, used in reports and metric labels.
    pub name: String,
    /// Who can read the backups.
    pub encryption: Encryption,
    /// How hard to compress.
    #[serde(default)]
    pub compression: Compression,
    /// Memory and progress limits of every stream (`[pipeline]`).
    #[serde(default)]
    pub pipeline: PipelineLimits,
    /// Where backups go, by name.
    pub targets: BTreeMap<String, TargetConfig>,
    /// Settings every source inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// What to back up, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// Velero jobs: Kubernetes object backups driven through the Kubernetes API (`[velero]`).
    #[serde(default)]
    pub velero: Option<crate::velero::VeleroConfig>,
    /// How `gsdr daemon` and `gsdr run` schedule, retry, lock and report.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Scheduled DR drills (`gsdr drill` and the daemon).
    #[serde(default)]
    pub drills: Option<DrillsConfig>,
    /// The file this policy was read from (set by [`Policy::load`]).
    #[serde(skip)]
    pub path: PathBuf,
}

/// age encryption settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// age X25519 recipients (public keys, `age1…`): typically an operations key and an offline break-glass key.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of further recipients, one per line (`#` comments allowed), e.g. a mounted ConfigMap.
    #[serde(default)]
    pub recipients_file: Option<PathBuf>,
    /// Identity file (private key) used to restore and verify; only needed there. A mounted secret.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
}

/// zstd settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// zstd level, 1–19.
    #[serde(default = "default_level")]
    pub level: i32,
    /// zstd worker threads; 0 = one per CPU.
    #[serde(default)]
    pub workers: u32,
}

fn default_level() -> i32 {
    3
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: default_level(),
            workers: 0,
        }
    }
}

impl Compression {
    /// Worker threads to use, resolving 0 to the CPU count.
    pub fn effective_workers(&self) -> u32 {
        if self.workers == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        } else {
            self.workers
        }
    }
}

/// `[pipeline]`: what one stream (a backup, a restore, a WAL segment) may use.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineLimits {
    /// Memory one stream may use: the zstd worker count and the S3 part
    /// buffers in flight are derived from it (see `docs/ARCHITECTURE.md`, "Memory").
    #[serde(default = "default_memory_budget")]
    pub memory_budget: ByteSize,
    /// A stream that moves no byte for this long (source silent, upload or
    /// restore target not answering) is cancelled with an error naming the side that stalled.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout: HumanDuration,
}

fn default_memory_budget() -> ByteSize {
    ByteSize(256 << 20)
}
fn default_stall_timeout() -> HumanDuration {
    HumanDuration(crate::pipeline::DEFAULT_STALL_TIMEOUT)
}

impl Default for PipelineLimits {
    fn default() -> Self {
        PipelineLimits {
            memory_budget: default_memory_budget(),
            stall_timeout: default_stall_timeout(),
        }
    }
}

/// A target: an S3 bucket (and prefix) or a local folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
// Read once per process; boxing the S3 variant would only add noise to every match.
#[allow(clippy::large_enum_variant)]
pub enum TargetConfig {
    /// A local folder.
    Fs(FsTarget),
    /// An S3-compatible bucket.
    S3(S3Target),
}

/// A local folder target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsTarget {
    /// The folder (created if missing).
    pub path: PathBuf,
}

/// An S3 target (MinIO, AWS, any S3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// Endpoint URL, e.g. `http://minio.minio.svc:9000`; empty for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket, without a trailing slash.
    #[serde(default)]
    pub prefix: String,
    /// Region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (MinIO and most S3-compatible servers need it).
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Access key id; unset = the SDK's default chain (env, web identity, instance role).
    #[serde(default)]
    pub access_key_id: Option<SecretRef>,
    /// Secret access key, with `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<SecretRef>,
    /// Multipart part size; grown automatically so a stream stays under 10,000 parts.
    #[serde(default = "default_part_size")]
    pub part_size: ByteSize,
    /// Parts uploaded at once.
    #[serde(default = "default_concurrency")]
    pub upload_concurrency: usize,
    /// Request checksums: `when_supported` (SDK default) or `when_required` (for servers that reject them).
    #[serde(default)]
    pub request_checksums: ChecksumMode,
    /// Largest stream expected, used to size parts when the size is unknown up front.
    #[serde(default = "default_max_object")]
    pub max_object_size: ByteSize,
    /// Attempts per S3 request, first included (SDK default 3); `1` turns retries off (error-path tests).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Longest wait for the answer to one request (each attempt) that carries no part: heads, lists, manifests, leases, WAL sidecars.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Longest one attempt at uploading a part (or a whole small object) may take.
    #[serde(default = "default_part_timeout")]
    pub part_timeout: HumanDuration,
    /// A download that delivers no byte for this long fails (a server that stops answering mid-object).
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    /// Bucket settings `gsdr storage init` applies: lifecycle rules, versioning, Object Lock.
    #[serde(default)]
    pub lifecycle: Option<Box<Lifecycle>>,
}

/// Bucket settings of an S3 target, applied by `gsdr storage init`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// Expire *current* objects under the prefix this long after they were written (whole days); unset: never
    /// (the default, and the only choice on a target any source keeps backups on: an age-based expiration
    /// would delete a source's newest restorable backup and its WAL once its backups stop, whatever the
    /// retention keeps, so `gsdr policy check` refuses it there). `gsdr prune` decides for current objects.
    #[serde(default)]
    pub expire_after: Option<HumanDuration>,
    /// With `versioning = true`: how long a version `gsdr prune` deleted (hidden by a delete marker) or an
    /// object overwrote stays recoverable before the lifecycle removes it (whole days, default `"1d"`).
    /// Object Lock keeps a locked version until its retention ends, whatever this says.
    #[serde(default = "default_noncurrent_expire")]
    pub noncurrent_expire_after: HumanDuration,
    /// Abort multipart uploads left open this long (whole days, at least `"1d"`).
    #[serde(default = "default_abort_incomplete")]
    pub abort_incomplete_after: HumanDuration,
    /// Turn bucket versioning on (required by Object Lock; deleted versions then expire after `noncurrent_expire_after`).
    #[serde(default)]
    pub versioning: bool,
    /// Default Object Lock retention of new objects; the bucket must have been created with Object Lock enabled.
    #[serde(default)]
    pub object_lock: Option<ObjectLock>,
}

fn default_noncurrent_expire() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(86_400))
}

fn default_abort_incomplete() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(86_400))
}

/// Default Object Lock retention of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    /// `governance` (users with `s3:BypassGovernanceRetention` may still delete) or `compliance` (nobody can, not even root).
    pub mode: LockMode,
    /// How long each new object version is locked (whole days), e.g. `"30d"`.
    pub retention: HumanDuration,
}

/// Object Lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Deletable before expiry only with the bypass permission.
    Governance,
    /// Not deletable before expiry by anyone.
    Compliance,
}

impl LockMode {
    /// The S3 API spelling (`GOVERNANCE`, `COMPLIANCE`).
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

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
}

fn hd(secs: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(secs))
}
fn default_metrics_addr() -> String {
    "0.0.0.0:9464".into()
}
fn default_lease_ttl() -> HumanDuration {
    hd(300)
}
fn default_lease_renew() -> HumanDuration {
    hd(60)
}
fn default_locks_prefix() -> String {
    "locks".into()
}
fn default_retry_max_attempts() -> u32 {
    3
}
fn default_retry_backoff_base() -> HumanDuration {
    hd(30)
}
fn default_retry_backoff_max() -> HumanDuration {
    hd(900)
}
fn default_replicate_every() -> HumanDuration {
    hd(900)
}
fn default_wal_status_every() -> HumanDuration {
    hd(60)
}
fn default_max_concurrent_runs() -> usize {
    2
}
fn default_grace_period() -> HumanDuration {
    hd(600)
}
fn default_notify_min_interval() -> HumanDuration {
    hd(900)
}
fn default_wal_lag_alert() -> HumanDuration {
    hd(900)
}
fn default_offsite_lag_alert() -> HumanDuration {
    hd(3600)
}
fn default_heartbeat_every() -> HumanDuration {
    hd(300)
}
fn default_watch_every() -> HumanDuration {
    hd(60)
}
fn default_gc_every() -> HumanDuration {
    hd(6 * 3600)
}
fn default_gc_grace() -> HumanDuration {
    hd(24 * 3600)
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

fn default_drill_timeout() -> HumanDuration {
    hd(6 * 3600)
}
fn default_prune_timeout() -> HumanDuration {
    hd(3600)
}
fn default_replicate_timeout() -> HumanDuration {
    hd(6 * 3600)
}
fn default_gc_timeout() -> HumanDuration {
    hd(2 * 3600)
}
fn default_wal_status_timeout() -> HumanDuration {
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

fn default_region() -> String {
    "us-east-1".into()
}
fn yes() -> bool {
    true
}
fn default_part_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_concurrency() -> usize {
    2
}
fn default_request_timeout() -> HumanDuration {
    hd(60)
}
fn default_part_timeout() -> HumanDuration {
    hd(600)
}
fn default_read_timeout() -> HumanDuration {
    hd(60)
}
fn default_max_object() -> ByteSize {
    ByteSize(2 << 40)
}

/// When to send request checksums.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumMode {
    /// On every request that supports them (the SDK's default).
    #[default]
    WhenSupported,
    /// Only where the API requires them.
    WhenRequired,
}

/// Defaults applied to every source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Primary target name.
    #[serde(default)]
    pub target: Option<String>,
    /// Off-site target name.
    #[serde(default)]
    pub offsite: Option<String>,
    /// Retention.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Recovery objectives.
    #[serde(default)]
    pub objectives: Option<Objectives>,
    /// Deadline of one backup run of a source, retries excluded (default `"6h"`): past it the run is cancelled, reported as failed and its lease released.
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
}

/// The deadline of one backup run when the policy sets none.
pub const DEFAULT_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// How long backups are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keep every backup newer than this.
    #[serde(default)]
    pub keep_within: Option<HumanDuration>,
    /// Keep the newest N.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N days.
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N weeks.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
}

/// Recovery objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery time objective: outage → service restored and verified.
    pub rto: HumanDuration,
    /// Recovery point objective: the most data (in time) that may be lost.
    pub rpo: HumanDuration,
}

/// Scheduled DR drills: which scenarios the daemon rehearses, when, and how many reports it keeps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillsConfig {
    /// When the drills run (cron, UTC), e.g. `"0 4 * * 0"` weekly. Unset: on demand only.
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
    /// Whether the daemon runs the scheduled drills itself (its image must
    /// carry the scratch servers' binaries); `false` when a Kubernetes
    /// CronJob runs `gsdr drill --scheduled` instead (`deploy/components/drills`).
    #[serde(default = "yes")]
    pub in_daemon: bool,
    /// Scenario names from the runbooks directory, or `["all"]`.
    #[serde(default = "default_drill_scenarios")]
    pub scenarios: Vec<String>,
    /// Reports kept per scenario under `<prefix>/drills/`; older ones are deleted.
    #[serde(default = "default_keep_reports")]
    pub keep_reports: u32,
    /// Past reports read back for the trend section of each report.
    #[serde(default = "default_trend_reports")]
    pub trend_reports: usize,
    /// Directory of the scenario files (`runbooks/*.toml`).
    #[serde(default = "default_runbooks_dir")]
    pub runbooks_dir: PathBuf,
    /// Parent directory of drills' scratch targets (default: the system temp dir).
    #[serde(default)]
    pub scratch_dir: Option<PathBuf>,
    /// Program and arguments of a drill's scratch MongoDB server; `{port}` and `{dir}` are substituted.
    #[serde(default = "default_mongo_scratch_argv")]
    pub mongo_scratch_argv: Vec<String>,
}

fn default_mongo_scratch_argv() -> Vec<String> {
    [
        "mongod",
        "--port",
        "{port}",
        "--bind_ip",
        "127.0.0.1",
        "--dbpath",
        "{dir}",
    ]
    .map(String::from)
    .to_vec()
}

fn default_drill_scenarios() -> Vec<String> {
    vec!["all".into()]
}
fn default_keep_reports() -> u32 {
    12
}
fn default_trend_reports() -> usize {
    10
}
fn default_runbooks_dir() -> PathBuf {
    PathBuf::from("runbooks")
}

impl Default for DrillsConfig {
    fn default() -> Self {
        DrillsConfig {
            schedule: None,
            in_daemon: true,
            scenarios: default_drill_scenarios(),
            keep_reports: default_keep_reports(),
            trend_reports: default_trend_reports(),
            runbooks_dir: default_runbooks_dir(),
            scratch_dir: None,
            mongo_scratch_argv: default_mongo_scratch_argv(),
        }
    }
}

/// Which engine a source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Any program's stdout.
    Command,
    /// MongoDB.
    Mongo,
    /// Redis.
    Redis,
    /// PostgreSQL.
    Postgres,
}

impl Engine {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Command => "command",
            Engine::Mongo => "mongo",
            Engine::Redis => "redis",
            Engine::Postgres => "postgres",
        }
    }
}

/// One source. `kind` picks the engine; its settings live in the sub-table of
/// the same name (`[sources.NAME.mongo]`), so every engine's fields are checked strictly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Engine.
    pub kind: Engine,
    /// When to back up (cron, UTC). Unset: only on demand.
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
    /// Primary target (default: `defaults.target`).
    #[serde(default)]
    pub target: Option<String>,
    /// Off-site target (default: `defaults.offsite`).
    #[serde(default)]
    pub offsite: Option<String>,
    /// Retention (default: `defaults.retention`).
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Objectives (default: `defaults.objectives`).
    #[serde(default)]
    pub objectives: Option<Objectives>,
    /// Deadline of one backup run of this source (default: `defaults.timeout`).
    #[serde(default)]
    pub timeout: Option<HumanDuration>,
    /// Settings of a `command` source.
    #[serde(default)]
    pub command: Option<crate::source::command::CommandConfig>,
    /// Settings of a `mongo` source.
    #[serde(default)]
    pub mongo: Option<crate::source::mongo::MongoConfig>,
    /// Settings of a `redis` source.
    #[serde(default)]
    pub redis: Option<crate::source::redis::RedisConfig>,
    /// Settings of a `postgres` source.
    #[serde(default)]
    pub postgres: Option<crate::source::postgres::PostgresConfig>,
}

/// An invalid policy. Names the file, the line and the field.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {field}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    /// The policy file.
    pub file: PathBuf,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `sources.readings.schedule`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            file: path.to_path_buf(),
            line: None,
            field: "(file)".into(),
            message: format!("cannot read the policy: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates policy text; `path` is used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Policy, PolicyError> {
        let mut policy: Policy = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .and_then(|s| locate::at_error(text, s.start, e.message()));
            let line = e.span().map(|s| line_of(text, s.start));
            // A plain string where a secret reference belongs: inside a tagged
            // table the span is the whole table, so find the string whose
            // replacement by a reference makes the error go away.
            let at = match at {
                Some(t) if e.message().contains(types::INLINE_SECRET) => Some(
                    locate::culprit(text, &t, |candidate| {
                        toml::from_str::<Policy>(candidate).err().is_none_or(|e2| {
                            // A field refusing a reference is not the culprit.
                            let m = e2.message();
                            !m.contains(types::INLINE_SECRET) && !m.contains("invalid type")
                        })
                    })
                    .unwrap_or(t),
                ),
                other => other,
            };
            PolicyError {
                file: path.to_path_buf(),
                line: at.as_ref().map(|k| k.line).or(line),
                field: at.map(|k| k.path).unwrap_or_else(|| {
                    line.map(|l| key_on_line(text, l))
                        .unwrap_or_else(|| "(document)".into())
                }),
                message: e.message().to_string(),
            }
        })?;
        policy.path = path.to_path_buf();
        policy.validate(text)?;
        Ok(policy)
    }

    fn err(&self, text: &str, field: &str, message: impl Into<String>) -> PolicyError {
        PolicyError {
            file: self.path.clone(),
            line: locate::line_of_path(text, field).or_else(|| find_field_line(text, field)),
            field: field.into(),
            message: message.into(),
        }
    }

    fn validate(&self, text: &str) -> Result<(), PolicyError> {
        if self.encryption.recipients.is_empty() && self.encryption.recipients_file.is_none() {
            return Err(self.err(
                text,
                "encryption.recipients",
                "at least one age recipient (public key) is required",
            ));
        }
        for r in &self.encryption.recipients {
            crate::pipeline::keys::parse_recipient(r)
                .map_err(|e| self.err(text, "encryption.recipients", e.to_string()))?;
        }
        if !(1..=19).contains(&self.compression.level) {
            return Err(self.err(text, "compression.level", "must be between 1 and 19"));
        }
        if self.targets.is_empty() {
            return Err(self.err(text, "targets", "at least one target is required"));
        }
        for (name, t) in &self.targets {
            check_name(name).map_err(|m| self.err(text, &format!("targets.{name}"), m))?;
            if let TargetConfig::S3(s) = t {
                if s.access_key_id.is_some() != s.secret_access_key.is_some() {
                    return Err(self.err(
                        text,
                        &format!("targets.{name}"),
                        "set both access_key_id and secret_access_key, or neither",
                    ));
                }
                if s.part_size.0 < 5 << 20 {
                    return Err(self.err(
                        text,
                        &format!("targets.{name}.part_size"),
                        "S3 parts must be at least 5MiB",
                    ));
                }
                if let Some(l) = &s.lifecycle {
                    let f = format!("targets.{name}.lifecycle");
                    validate_lifecycle(l)
                        .map_err(|(k, m)| self.err(text, &format!("{f}{k}"), m))?;
                }
                if s.max_attempts == Some(0) {
                    return Err(self.err(
                        text,
                        &format!("targets.{name}.max_attempts"),
                        "must be at least 1 (1 = no retries)",
                    ));
                }
                if s.upload_concurrency == 0 {
                    return Err(self.err(
                        text,
                        &format!("targets.{name}.upload_concurrency"),
                        "must be at least 1",
                    ));
                }
            }
        }
        let check_target = |field: &str, t: &Option<String>| -> Result<(), PolicyError> {
            match t {
                Some(t) if !self.targets.contains_key(t) => Err(self.err(
                    text,
                    field,
                    format!(
                        "unknown target `{t}`; defined targets: {}",
                        self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )),
                _ => Ok(()),
            }
        };
        check_target("defaults.target", &self.defaults.target)?;
        check_target("defaults.offsite", &self.defaults.offsite)?;
        if self.defaults.target.is_none() && self.targets.len() > 1 {
            return Err(self.err(
                text,
                "defaults.target",
                "several targets are defined: name the primary one",
            ));
        }
        self.validate_daemon(text)?;
        self.validate_schedules(text)?;
        for (name, s) in &self.sources {
            let f = format!("sources.{name}");
            check_name(name).map_err(|m| self.err(text, &f, m))?;
            check_target(&format!("{f}.target"), &s.target)?;
            check_target(&format!("{f}.offsite"), &s.offsite)?;
            let present: Vec<&str> = [
                ("command", s.command.is_some()),
                ("mongo", s.mongo.is_some()),
                ("redis", s.redis.is_some()),
                ("postgres", s.postgres.is_some()),
            ]
            .iter()
            .filter(|(_, p)| *p)
            .map(|(n, _)| *n)
            .collect();
            if present != [s.kind.as_str()] {
                return Err(self.err(
                    text,
                    &format!("{f}.kind"),
                    format!(
                        "a `{}` source needs exactly one settings table, [{f}.{}] (found: {})",
                        s.kind.as_str(),
                        s.kind.as_str(),
                        if present.is_empty() {
                            "none".to_string()
                        } else {
                            present.join(", ")
                        }
                    ),
                ));
            }
            if let Some(r) = &s.redis {
                r.validate()
                    .map_err(|m| self.err(text, &format!("{f}.redis"), m))?;
            }
            if let Some(p) = &s.postgres {
                p.validate()
                    .map_err(|m| self.err(text, &format!("{f}.postgres"), m))?;
                // The stream is silent while PostgreSQL waits for the WAL: the
                // stall detector must not end the backup first, without saying why.
                if p.archive_wait >= self.pipeline.stall_timeout {
                    return Err(self.err(
                        text,
                        &format!("{f}.postgres.archive_wait"),
                        format!(
                            "must be below pipeline.stall_timeout ({}): no byte flows while PostgreSQL waits for the backup's WAL, and the stall detector would end the backup first without naming the archiver's state",
                            self.pipeline.stall_timeout
                        ),
                    ));
                }
            }
            if let Some(m) = &s.mongo {
                m.validate()
                    .map_err(|(field, msg)| self.err(text, &format!("{f}.mongo.{field}"), msg))?;
            }
            if let Some(c) = &s.command {
                if c.argv.is_empty() {
                    return Err(self.err(
                        text,
                        &format!("{f}.command.argv"),
                        "needs the program and its arguments",
                    ));
                }
            }
        }
        if let Some(v) = &self.velero {
            v.validate()
                .map_err(|(field, message)| self.err(text, &field, message))?;
        }
        self.validate_lifecycle_vs_retention(text)?;
        Ok(())
    }

    /// Refuses a lifecycle `Expiration` (of current objects) on a target a
    /// source keeps backups on (as its primary or off-site target): it covers
    /// every backup and WAL object under the prefix by age alone, so it would
    /// delete what retention keeps — always the source's newest restorable
    /// backup and the WAL it needs, once its backups stop for `expire_after`.
    /// The error names the retention rule it contradicts most plainly.
    fn validate_lifecycle_vs_retention(&self, text: &str) -> Result<(), PolicyError> {
        for (name, t) in &self.targets {
            let TargetConfig::S3(s3) = t else { continue };
            let Some(expire) = s3.lifecycle.as_ref().and_then(|l| l.expire_after) else {
                continue;
            };
            let mut reasons: Vec<(u8, String)> = Vec::new();
            for source in self.sources.keys() {
                let on = self.target_of(source) == Some(name.as_str())
                    || self.offsite_of(source) == Some(name.as_str());
                if !on {
                    continue;
                }
                reasons.push(retention_outlives(
                    source,
                    self.retention_of(source),
                    expire,
                ));
            }
            let Some((_, why)) = reasons.into_iter().min() else {
                continue;
            };
            return Err(self.err(
                text,
                &format!("targets.{name}.lifecycle.expire_after"),
                format!(
                    "an Expiration after {} deletes every current backup and WAL object under the prefix by age, whatever the retention keeps: {why}. Remove expire_after: `gsdr prune` decides for current objects (it never deletes a source's newest restorable backup or the WAL it needs), and with versioning = true the lifecycle removes only what prune deleted, after noncurrent_expire_after",
                    expire_days_text(expire)
                ),
            ));
        }
        Ok(())
    }

    /// Every recipient: the inline ones and those of `recipients_file`.
    pub fn recipients(&self) -> Result<Vec<String>, PolicyError> {
        let mut out = self.encryption.recipients.clone();
        if let Some(path) = &self.encryption.recipients_file {
            let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
                file: self.path.clone(),
                line: None,
                field: "encryption.recipients_file".into(),
                message: format!("cannot read `{}`: {e}", path.display()),
            })?;
            out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        if out.is_empty() {
            return Err(PolicyError {
                file: self.path.clone(),
                line: None,
                field: "encryption.recipients".into(),
                message: "no age recipient: a backup must be encrypted to at least one public key"
                    .into(),
            });
        }
        Ok(out)
    }

    /// Primary target name of a source.
    pub fn target_of(&self, source: &str) -> Option<&str> {
        let s = self.sources.get(source)?;
        s.target
            .as_deref()
            .or(self.defaults.target.as_deref())
            .or_else(|| {
                (self.targets.len() == 1)
                    .then(|| self.targets.keys().next().map(String::as_str))
                    .flatten()
            })
    }

    /// Off-site target name of a source, if any.
    pub fn offsite_of(&self, source: &str) -> Option<&str> {
        let s = self.sources.get(source)?;
        s.offsite.as_deref().or(self.defaults.offsite.as_deref())
    }

    /// Deadline of one backup run of a source.
    pub fn timeout_of(&self, source: &str) -> std::time::Duration {
        self.sources
            .get(source)
            .and_then(|s| s.timeout)
            .or(self.defaults.timeout)
            .map_or(DEFAULT_JOB_TIMEOUT, |d| d.0)
    }

    /// Objectives of a source.
    pub fn objectives_of(&self, source: &str) -> Option<Objectives> {
        self.sources
            .get(source)?
            .objectives
            .or(self.defaults.objectives)
    }

    /// Retention of a source.
    pub fn retention_of(&self, source: &str) -> Option<Retention> {
        self.sources
            .get(source)?
            .retention
            .clone()
            .or_else(|| self.defaults.retention.clone())
    }
}

impl Policy {
    fn validate_daemon(&self, text: &str) -> Result<(), PolicyError> {
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
    fn validate_schedules(&self, text: &str) -> Result<(), PolicyError> {
        for (field, s) in self.schedules() {
            s.check_frequency().map_err(|m| self.err(text, &field, m))?;
        }
        Ok(())
    }
}

fn expire_days_text(d: HumanDuration) -> String {
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
fn retention_outlives(source: &str, r: Option<Retention>, expire: HumanDuration) -> (u8, String) {
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
fn validate_lifecycle(l: &Lifecycle) -> Result<(), (String, String)> {
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

fn check_name(name: &str) -> Result<(), String> {
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

/// The key written on a 1-based line (`key = …`), or the table header.
fn key_on_line(text: &str, line: usize) -> String {
    let l = text.lines().nth(line - 1).unwrap_or("").trim();
    l.split('=')
        .next()
        .unwrap_or(l)
        .trim()
        .trim_matches(['[', ']'])
        .to_string()
}

/// Best-effort line of a dotted field: the table header, then the key below it.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field.split('.').collect();
    for split in (1..=parts.len()).rev() {
        let table = parts[..split].join(".");
        let header = format!("[{table}]");
        if let Some(idx) = text.lines().position(|l| l.trim() == header) {
            if split == parts.len() {
                return Some(idx + 1);
            }
            let key = parts[split];
            for (j, l) in text.lines().enumerate().skip(idx + 1) {
                let t = l.trim_start();
                if t.starts_with('[') {
                    break;
                }
                if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                    return Some(j + 1);
                }
            }
            return Some(idx + 1);
        }
    }
    let last = parts.last()?;
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(last) && t[last.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `daemon.pushgateway_url` is a plain URL or a secret reference.
    #[test]
    fn pushgateway_url_is_plain_or_a_secret() {
        let parse = |v: &str| {
            toml::from_str::<DaemonConfig>(&format!("pushgateway_url = {v}"))
                .map(|d| d.pushgateway_url)
        };
        assert_eq!(
            parse("\"http://pg:9091\"").unwrap(),
            Some(SecretOrPlain::Plain("http://pg:9091".into()))
        );
        assert_eq!(
            parse("{ file = \"/s/url\" }").unwrap(),
            Some(SecretOrPlain::Secret(SecretRef::File("/s/url".into())))
        );
        assert!(parse("{ path = \"/s/url\" }").is_err());
        assert_eq!(
            SecretOrPlain::Plain("u".into()).read().unwrap().expose(),
            "u"
        );
    }

    /// Every shipped policy parses and validates.
    #[test]
    fn every_policy_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Policy::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 2, "policies/ holds the production and local policies");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let text = "name = \"x\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\nrecipientz = []\n[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n";
        let e = Policy::parse(text, Path::new("p.toml")).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert_eq!(e.field, "encryption.recipientz");
        assert!(
            e.to_string()
                .starts_with("p.toml:4: encryption.recipientz:"),
            "{e}"
        );
    }

    #[test]
    fn source_needs_its_engine_table() {
        let text = "name = \"x\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[sources.s]\nkind = \"command\"\n";
        let e = Policy::parse(text, Path::new("p.toml")).unwrap_err();
        assert_eq!(e.field, "sources.s.kind");
        assert_eq!(e.line, Some(8));
        assert!(e.message.contains("[sources.s.command]"), "{e}");
    }

    const HEAD: &str = "name = \"x\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n";

    fn s3(lifecycle: &str) -> String {
        format!(
            "{HEAD}[targets.b]\nkind = \"s3\"\nbucket = \"b\"\n[targets.b.lifecycle]\n{lifecycle}"
        )
    }

    #[test]
    fn daemon_section_defaults_and_checks() {
        let p = Policy::parse(
            &format!("{HEAD}[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n"),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(p.daemon, DaemonConfig::default());
        assert_eq!(p.daemon.offset().unwrap().local_minus_utc(), 0);
        let bad = |d: &str| {
            Policy::parse(
                &format!("{HEAD}[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[daemon]\n{d}\n"),
                Path::new("p.toml"),
            )
            .unwrap_err()
        };
        assert_eq!(
            bad("lease_ttl = \"1m\"\nlease_renew = \"45s\"").field,
            "daemon.lease_renew"
        );
        assert_eq!(
            bad("metrics_addr = \"nowhere\"").field,
            "daemon.metrics_addr"
        );
        assert_eq!(bad("timezone = \"Mars/Olympus\"").field, "daemon.timezone");
        assert_eq!(
            bad("retry_max_attempts = 0").field,
            "daemon.retry_max_attempts"
        );
        assert_eq!(bad("lease_tll = \"5m\"").field, "daemon.lease_tll");
        assert_eq!(parse_offset("+01:30").unwrap().local_minus_utc(), 5400);
    }

    #[test]
    fn a_schedule_that_never_runs_names_file_line_and_field() {
        let policy = |schedule: &str, drills: &str| {
            format!(
                "{HEAD}[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[sources.s]\nkind = \"command\"\nschedule = \"{schedule}\"\n[sources.s.command]\nargv = [\"true\"]\n{drills}"
            )
        };
        let e = Policy::parse(&policy("0 0 30 2 *", ""), Path::new("policies/p.toml")).unwrap_err();
        assert_eq!(e.field, "sources.s.schedule", "{e}");
        assert_eq!(e.line, Some(9), "{e}");
        assert!(
            e.to_string()
                .starts_with("policies/p.toml:9: sources.s.schedule: `0 0 30 2 *` never runs"),
            "{e}"
        );
        let e = Policy::parse(
            &policy("@daily", "[drills]\nschedule = \"0 0 29 2 *\"\n"),
            Path::new("p.toml"),
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("drills.schedule", Some(13)),
            "{e}"
        );
        assert!(e.message.contains("at least once every 400 days"), "{e}");
        // Crontab syntax: Sunday as 0, weekday names, an IANA zone.
        let p = Policy::parse(
            &format!(
                "{}[daemon]\ntimezone = \"Europe/Berlin\"\n",
                policy("0 4 * * 0", "[drills]\nschedule = \"30 5 * * MON-FRI\"\n")
            ),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(p.daemon.zone().unwrap().to_string(), "Europe/Berlin");
        assert!(
            p.daemon.offset().is_err(),
            "a fixed offset cannot stand for an IANA zone"
        );
        let fields: Vec<String> = p.schedules().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["sources.s.schedule", "drills.schedule"]);
        // A syntax error is reported on the schedule's line too.
        let e = Policy::parse(&policy("0 4 * * 8", ""), Path::new("p.toml")).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sources.s.schedule", Some(9)),
            "{e}"
        );
        assert!(e.message.contains("0 and 7 are Sunday"), "{e}");
    }

    #[test]
    fn lifecycle_checks_days_versioning_and_lock_vs_expiry() {
        let ok = Policy::parse(&s3("expire_after = \"35d\"\nversioning = true\nobject_lock = { mode = \"compliance\", retention = \"30d\" }\n"), Path::new("p.toml")).unwrap();
        let TargetConfig::S3(t) = &ok.targets["b"] else {
            panic!()
        };
        let l = t.lifecycle.as_ref().unwrap();
        assert_eq!(l.abort_incomplete_after.0.as_secs(), 86_400, "default 1d");
        assert_eq!(l.object_lock.unwrap().mode, LockMode::Compliance);
        let err = |l: &str| Policy::parse(&s3(l), Path::new("p.toml")).unwrap_err();
        assert_eq!(
            err("expire_after = \"36h\"").field,
            "targets.b.lifecycle.expire_after"
        );
        assert_eq!(
            err("object_lock = { mode = \"governance\", retention = \"30d\" }").field,
            "targets.b.lifecycle.versioning"
        );
        assert_eq!(
            err("expire_after = \"7d\"\nversioning = true\nobject_lock = { mode = \"governance\", retention = \"30d\" }").field,
            "targets.b.lifecycle.expire_after"
        );
        assert!(
            err("object_lock = { mode = \"legal\", retention = \"30d\" }")
                .message
                .contains("legal")
        );
    }

    #[test]
    fn postgres_archive_wait_stays_below_the_stall_timeout() {
        let pg = |extra: &str| {
            format!(
                "{HEAD}{extra}[targets.f]\nkind = \"fs\"\npath = \"/tmp/x\"\n\
                 [sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"h\"\narchive_wait = \"5m\"\n"
            )
        };
        let e = Policy::parse(&pg(""), Path::new("p.toml")).unwrap_err();
        assert_eq!(e.field, "sources.pg.postgres.archive_wait", "{e}");
        assert!(
            e.message.contains("below pipeline.stall_timeout (5m)"),
            "{e}"
        );
        Policy::parse(
            &pg("[pipeline]\nstall_timeout = \"10m\"\n"),
            Path::new("p.toml"),
        )
        .unwrap();
    }

    /// A policy with target `b` (lifecycle `lifecycle`), a second target
    /// `f`, and source `s` on `target` (off-site `offsite`) with `retention`.
    fn with_source(lifecycle: &str, target: &str, offsite: &str, retention: &str) -> String {
        format!(
            "{}[targets.f]\nkind = \"fs\"\npath = \"/tmp/x\"\n[defaults]\ntarget = \"{target}\"\n{offsite}\
             [sources.s]\nkind = \"command\"\n{retention}[sources.s.command]\nargv = [\"true\"]\n",
            s3(lifecycle)
        )
    }

    #[test]
    fn an_expiration_on_a_target_holding_backups_is_refused_with_the_rule_it_breaks() {
        let parse = |t: &str| Policy::parse(t, Path::new("policies/p.toml"));
        let lc = "expire_after = \"35d\"\nversioning = true\n";
        let cases = [
            // (retention of the source, what the message must say)
            (
                "retention = { keep_last = 4 }\n",
                "keep_last = 4, which keeps its newest 4 backups whatever their age",
            ),
            (
                "retention = { keep_within = \"7d\", keep_monthly = 12 }\n",
                "keep_monthly = 12, which keeps backups up to",
            ),
            ("retention = { keep_daily = 40 }\n", "keep_daily = 40"),
            (
                "retention = { keep_within = \"60d\" }\n",
                "keep_within = \"60d\", which keeps backups up to 60d",
            ),
            // The default retention (keep_within 30d < 35d): the floor still breaks.
            (
                "",
                "always keeps the newest restorable backup of source `s` and the WAL it needs",
            ),
        ];
        for (retention, says) in cases {
            let e = parse(&with_source(lc, "b", "", retention)).unwrap_err();
            assert_eq!(e.field, "targets.b.lifecycle.expire_after", "{e}");
            let line = s3(lc)
                .lines()
                .position(|l| l.starts_with("expire_after"))
                .unwrap()
                + 1;
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(says), "{retention}: {e}");
            assert!(e.message.contains("Remove expire_after"), "{e}");
            assert!(
                e.to_string().starts_with(&format!(
                    "policies/p.toml:{line}: targets.b.lifecycle.expire_after: "
                )),
                "{e}"
            );
        }
        // As the off-site target too.
        let e = parse(&with_source(
            lc,
            "f",
            "offsite = \"b\"\n",
            "retention = { keep_last = 2 }\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("keep_last = 2"), "{e}");
        // No expiration, or no source on that target: accepted.
        parse(&with_source(
            "versioning = true\n",
            "b",
            "",
            "retention = { keep_last = 4 }\n",
        ))
        .unwrap();
        parse(&with_source(lc, "f", "", "retention = { keep_last = 4 }\n")).unwrap();
        // noncurrent_expire_after counts whole days.
        let e = parse(&with_source(
            "versioning = true\nnoncurrent_expire_after = \"12h\"\n",
            "b",
            "",
            "",
        ))
        .unwrap_err();
        assert_eq!(
            e.field, "targets.b.lifecycle.noncurrent_expire_after",
            "{e}"
        );
    }
}

#[cfg(test)]
mod locate_tests {
    use super::*;

    const HEAD: &str = "name = \"x\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n";

    fn err(body: &str) -> PolicyError {
        Policy::parse(&format!("{HEAD}{body}"), Path::new("p.toml")).unwrap_err()
    }

    #[test]
    fn an_unknown_field_in_a_tagged_table_names_its_dotted_path_and_line() {
        let e = err("[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[sources.redis]\nkind = \"redis\"\nschedul = \"0 * * * *\"\n[sources.redis.redis]\naddr = \"127.0.0.1:6379\"\n");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sources.redis.schedul", Some(9)),
            "{e}"
        );
        assert!(
            e.to_string()
                .starts_with("p.toml:9: sources.redis.schedul: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn an_inline_secret_is_reported_at_its_field() {
        let e = err("[targets.s3]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = { env = \"K\" }\nregion = \"x\"\nsecret_access_key = \"hunter2\"\n");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("targets.s3.secret_access_key", Some(9)),
            "{e}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn a_bad_value_names_its_dotted_path_and_line() {
        let e =
            err("[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[pipeline]\nstall_timeout = 12\n");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("pipeline.stall_timeout", Some(8)),
            "{e}"
        );
    }

    #[test]
    fn a_cross_field_rule_names_the_key_line_not_the_header() {
        let e = err("[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[sources.x]\nkind = \"command\"\n# why\ntarget = \"nowhere\"\n[sources.x.command]\nargv = [\"true\"]\n");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("sources.x.target", Some(10)),
            "{e}"
        );
    }
}
