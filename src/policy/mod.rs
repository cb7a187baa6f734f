//! Policy files (`policies/*.toml`): what to back up, when, where, for how long,
//! encrypted to whom, and the recovery objectives.
//!
//! Parsing is strict: unknown fields are errors, and every error names the
//! file, the line and the field. Secrets are references (`{ env = "NAME" }`
//! or `{ file = "/path" }`), never values. `policies/reference.toml`
//! documents every field.

mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use types::{ByteSize, CronSchedule, HumanDuration, Secret, SecretRef};

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
    /// Where backups go, by name.
    pub targets: BTreeMap<String, TargetConfig>,
    /// Settings every source inherits unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// What to back up, by name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
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

/// A target: an S3 bucket (and prefix) or a local folder.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
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
}

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
    /// When the daemon runs the drills (cron, UTC), e.g. `"0 4 * * 0"` weekly. Unset: on demand only.
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
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
            let line = e.span().map(|s| line_of(text, s.start));
            PolicyError {
                file: path.to_path_buf(),
                line,
                field: line
                    .map(|l| key_on_line(text, l))
                    .unwrap_or_else(|| "(document)".into()),
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
            line: find_field_line(text, field),
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

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
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
        assert_eq!(e.field, "recipientz");
        assert!(e.to_string().starts_with("p.toml:4: recipientz:"), "{e}");
    }

    #[test]
    fn source_needs_its_engine_table() {
        let text = "name = \"x\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n[targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[sources.s]\nkind = \"command\"\n";
        let e = Policy::parse(text, Path::new("p.toml")).unwrap_err();
        assert_eq!(e.field, "sources.s.kind");
        assert_eq!(e.line, Some(8));
        assert!(e.message.contains("[sources.s.command]"), "{e}");
    }
}
