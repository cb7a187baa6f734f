//! The `[targets.*]` settings of a policy: where backups are stored and the bucket rules gsdr installs.

use std::path::PathBuf;

use serde::Deserialize;

use crate::secret::SecretRef;
use crate::units::{ByteSize, HumanDuration};

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
#[serde(default, deny_unknown_fields)]
pub struct Lifecycle {
    /// Expire *current* objects under the prefix this long after they were written (whole days); unset: never
    /// (the default, and the only choice on a target any source keeps backups on: an age-based expiration
    /// would delete a source's newest restorable backup and its WAL once its backups stop, whatever the
    /// retention keeps, so `gsdr policy check` refuses it there). `gsdr prune` decides for current objects.
    pub expire_after: Option<HumanDuration>,
    /// With `versioning = true`: how long a version `gsdr prune` deleted (hidden by a delete marker) or an
    /// object overwrote stays recoverable before the lifecycle removes it (whole days, default `"1d"`).
    /// Object Lock keeps a locked version until its retention ends, whatever this says.
    pub noncurrent_expire_after: HumanDuration,
    /// Abort multipart uploads left open this long (whole days, at least `"1d"`).
    pub abort_incomplete_after: HumanDuration,
    /// Turn bucket versioning on (required by Object Lock; deleted versions then expire after `noncurrent_expire_after`).
    pub versioning: bool,
    /// Default Object Lock retention of new objects; the bucket must have been created with Object Lock enabled.
    pub object_lock: Option<DefaultLock>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        let day = HumanDuration(std::time::Duration::from_secs(86_400));
        Lifecycle {
            expire_after: None,
            noncurrent_expire_after: day,
            abort_incomplete_after: day,
            versioning: false,
            object_lock: None,
        }
    }
}

/// Default Object Lock retention of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultLock {
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

fn hd(secs: u64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(secs))
}
