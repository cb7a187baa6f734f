//! Policy files (`policies/*.toml`): what to back up, when, where, for how long,
//! encrypted to whom, and the recovery objectives.
//!
//! Parsing is strict: unknown fields are errors, and every error names the
//! file, the line and the field. Secrets are references (`{ env = "NAME" }`
//! or `{ file = "/path" }`), never values. `policies/reference.toml`
//! documents every field.

mod locate;
use locate::line_of;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cron::{CronSchedule, Zone};
mod daemon;
mod drills;
mod source;
mod validate;

use crate::pipeline::{Compression, Encryption, PipelineLimits};
use crate::retention::{Retention, DEFAULT_KEEP_WITHIN_DAYS};
use crate::secret::{Secret, SecretRef};
use crate::storage::{Lifecycle, TargetConfig};
use crate::units::HumanDuration;
pub use daemon::*;
pub use drills::*;
use locate::{find_field_line, key_on_line};
pub use source::*;
use validate::*;

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
    /// Who signs manifests and which keys restores trust (`[signing]`).
    #[serde(default)]
    pub signing: crate::signing::SigningConfig,
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
    /// Every secret reference in the policy, wherever it sits (set by
    /// [`Policy::parse`]): what gsdr redacts from text it passes on.
    #[serde(skip)]
    pub secret_refs: Vec<SecretRef>,
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
                Some(t) if e.message().contains(crate::secret::INLINE_SECRET) => Some(
                    // The first string (in the order serde reads them) whose field
                    // takes a reference is it: a field before it refusing a
                    // reference fails first ("invalid type"), and with several
                    // inline secrets the first one's fix leaves the next one's error.
                    locate::culprit(text, &t, |candidate| {
                        toml::from_str::<Policy>(candidate)
                            .err()
                            .is_none_or(|e2| !e2.message().contains("invalid type"))
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
        policy.secret_refs = crate::secret::refs_in_toml(text);
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
        for k in &self.signing.verify_keys {
            crate::signing::VerifyKey::parse(k)
                .map_err(|e| self.err(text, "signing.verify_keys", e.to_string()))?;
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
            let present = &s.tables;
            if present[..] != [s.kind] {
                return Err(self.err(
                    text,
                    &format!("{f}.kind"),
                    format!(
                        "a `{}` source needs exactly one settings table, [{f}.{}] (found: {})",
                        s.kind,
                        s.kind,
                        if present.is_empty() {
                            "none".to_string()
                        } else {
                            present.join(", ")
                        }
                    ),
                ));
            }
            let engine = s
                .engine_config(name)
                .map_err(|e| self.err(text, &f, e.to_string()))?;
            let table = format!("{f}.{}", engine.kind());
            engine.validate().map_err(|issue| {
                let at = match issue.field {
                    Some(field) => format!("{table}.{field}"),
                    None => table.clone(),
                };
                self.err(text, &at, issue.message)
            })?;
            // A stream silent by design (PostgreSQL waiting for the backup's
            // WAL) must not be ended by the stall detector, without saying why.
            if let Some(w) = engine.silent_wait() {
                if w.wait >= self.pipeline.stall_timeout.0 {
                    return Err(self.err(
                        text,
                        &format!("{table}.{}", w.field),
                        format!(
                            "must be below pipeline.stall_timeout ({}): {}",
                            self.pipeline.stall_timeout, w.why
                        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::parse_offset;
    use crate::storage::LockMode;

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
    fn two_inline_secrets_in_one_table_are_reported_at_the_first_read() {
        // Written out of order, after plain fields that take no reference.
        let e = err("[targets.s3]\nkind = \"s3\"\nbucket = \"b\"\nsecret_access_key = \"hunter2\"\nregion = \"x\"\naccess_key_id = \"AKIA1\"\n");
        assert_eq!(
            (e.field.as_str(), e.line),
            ("targets.s3.access_key_id", Some(9)),
            "{e}"
        );
        assert!(
            !e.to_string().contains("hunter2") && !e.to_string().contains("AKIA1"),
            "{e}"
        );
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
