//! Scenarios as code: the `runbooks/<name>.toml` files.
//!
//! A scenario names its steps (restores and checks), their order
//! (`after = [...]`; steps whose dependencies are met run in parallel, at most
//! `max_parallel` at once) and where the backups come from. The human runbook
//! `runbooks/<name>.md` is generated from it ([`Scenario::render_markdown`])
//! and a test checks the two cannot drift.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::DrillError;

/// One scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, the file stem: `node-loss`.
    pub name: String,
    /// One-line title for reports.
    pub title: String,
    /// What happened to the platform, and what the recovery does.
    pub description: String,
    /// Which copy the backups are restored from.
    #[serde(default)]
    pub from: BackupCopy,
    /// The primary bucket is considered hostile (ransomware): it is neither read nor written.
    #[serde(default)]
    pub primary_hostile: bool,
    /// Restore only backups whose data and manifest are under S3 Object Lock
    /// (the newest locked one per source): unlocked ones may have been
    /// planted or altered by whoever holds the bucket's credentials.
    #[serde(default)]
    pub require_object_lock: bool,
    /// Point-in-time target: restore to just before `start − before` (e.g. `"10m"`); unset = newest.
    #[serde(default)]
    pub pitr_before: Option<String>,
    /// Most steps run at once.
    #[serde(default = "default_parallel")]
    pub max_parallel: usize,
    /// The steps, in file order; `after` adds ordering.
    pub steps: Vec<Step>,
}

fn default_parallel() -> usize {
    2
}

/// Which copy of the backups a scenario restores from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupCopy {
    /// Each source's primary target.
    #[default]
    Primary,
    /// Each source's off-site target only (region loss, ransomware).
    Offsite,
}

/// One step: a restore or a check.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Step {
    /// Unique name within the scenario.
    pub name: String,
    /// Steps that must finish first.
    #[serde(default)]
    pub after: Vec<String>,
    /// What the step does.
    #[serde(flatten)]
    pub action: Action,
}

/// What a step does. Restores put data into a scratch target (drill) or the
/// real endpoint (incident); checks look at what was restored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Restore a `command` source's stream to a file.
    RestoreCommandSource {
        /// Policy source name.
        source: String,
    },
    /// Point-in-time restore of PostgreSQL (base backup + WAL) into a scratch cluster.
    RestorePostgresPitr {
        /// Policy source name.
        source: String,
    },
    /// Restore a MongoDB archive into a scratch server.
    RestoreMongo {
        /// Policy source name.
        source: String,
    },
    /// Restore a Redis RDB into a scratch redis-server.
    RestoreRedis {
        /// Policy source name.
        source: String,
    },
    /// A Velero restore of a backup into a mapped namespace.
    VeleroRestore {
        /// Velero schedule whose newest backup is restored.
        schedule: String,
        /// Namespace mapping `from=to` for drills.
        #[serde(default)]
        namespace_mapping: Vec<String>,
    },
    /// Run an SQL query on the restored PostgreSQL; the first column of the first row must be at least `min`.
    Sql {
        /// Source whose restore is queried.
        source: String,
        /// Query.
        query: String,
        /// Lowest acceptable value.
        min: i64,
    },
    /// Count documents of a collection in the restored MongoDB.
    MongoCount {
        /// Source.
        source: String,
        /// `db.collection`.
        collection: String,
        /// Lowest acceptable count.
        min: u64,
    },
    /// Count keys in the restored Redis.
    RedisKeys {
        /// Source.
        source: String,
        /// Lowest acceptable count.
        min: u64,
    },
    /// Find the newest heartbeat canary in the restored data: it gives the recovered point (RPO).
    CanaryAge {
        /// Source.
        source: String,
    },
    /// SHA-256 of the restored data equals the manifest's.
    Sha256 {
        /// Source.
        source: String,
    },
}

impl Action {
    /// The `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RestoreCommandSource { .. } => "restore_command_source",
            Action::RestorePostgresPitr { .. } => "restore_postgres_pitr",
            Action::RestoreMongo { .. } => "restore_mongo",
            Action::RestoreRedis { .. } => "restore_redis",
            Action::VeleroRestore { .. } => "velero_restore",
            Action::Sql { .. } => "sql",
            Action::MongoCount { .. } => "mongo_count",
            Action::RedisKeys { .. } => "redis_keys",
            Action::CanaryAge { .. } => "canary_age",
            Action::Sha256 { .. } => "sha256",
        }
    }

    /// The source the step is about, if any.
    pub fn source(&self) -> Option<&str> {
        match self {
            Action::RestoreCommandSource { source }
            | Action::RestorePostgresPitr { source }
            | Action::RestoreMongo { source }
            | Action::RestoreRedis { source }
            | Action::Sql { source, .. }
            | Action::MongoCount { source, .. }
            | Action::RedisKeys { source, .. }
            | Action::CanaryAge { source }
            | Action::Sha256 { source } => Some(source),
            Action::VeleroRestore { .. } => None,
        }
    }

    /// True for restores (they produce a restored source), false for checks.
    pub fn is_restore(&self) -> bool {
        matches!(
            self,
            Action::RestoreCommandSource { .. }
                | Action::RestorePostgresPitr { .. }
                | Action::RestoreMongo { .. }
                | Action::RestoreRedis { .. }
                | Action::VeleroRestore { .. }
        )
    }

    /// One sentence for runbooks and plans.
    pub fn describe(&self) -> String {
        match self {
            Action::RestoreCommandSource { source } => {
                format!("Restore the newest backup of `{source}` (a command stream) to a file.")
            }
            Action::RestorePostgresPitr { source } => format!(
                "Restore PostgreSQL `{source}`: newest base backup before the target time, then replay WAL up to it."
            ),
            Action::RestoreMongo { source } => {
                format!("Restore the newest MongoDB archive of `{source}`.")
            }
            Action::RestoreRedis { source } => {
                format!("Restore the newest Redis RDB snapshot of `{source}`.")
            }
            Action::VeleroRestore {
                schedule,
                namespace_mapping,
            } => {
                let map = if namespace_mapping.is_empty() {
                    String::new()
                } else {
                    format!(" (namespaces mapped: {})", namespace_mapping.join(", "))
                };
                format!("Velero: restore the newest backup of schedule `{schedule}`{map}.")
            }
            Action::Sql { source, query, min } => {
                format!("Check `{source}`: `{query}` returns at least {min}.")
            }
            Action::MongoCount {
                source,
                collection,
                min,
            } => format!("Check `{source}`: `{collection}` holds at least {min} documents."),
            Action::RedisKeys { source, min } => {
                format!("Check `{source}`: at least {min} keys.")
            }
            Action::CanaryAge { source } => format!(
                "Check `{source}`: the newest heartbeat canary in the restored data gives the recovered point (RPO)."
            ),
            Action::Sha256 { source } => format!(
                "Check `{source}`: SHA-256 of the restored data equals the backup manifest's."
            ),
        }
    }
}

impl Scenario {
    /// Parses a scenario file and validates it.
    pub fn load(path: &Path) -> Result<Scenario, DrillError> {
        let text = std::fs::read_to_string(path).map_err(|e| DrillError::Scenario {
            file: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses scenario text; `path` is used in errors and must be named after the scenario.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, DrillError> {
        let err = |message: String| DrillError::Scenario {
            file: path.to_path_buf(),
            message,
        };
        let s: Scenario = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if !stem.is_empty() && stem != s.name {
            return Err(err(format!(
                "name `{}` differs from the file name `{stem}`",
                s.name
            )));
        }
        if s.steps.is_empty() {
            return Err(err("a scenario needs at least one step".into()));
        }
        if s.max_parallel == 0 {
            return Err(err("max_parallel must be at least 1".into()));
        }
        if let Some(b) = &s.pitr_before {
            humantime::parse_duration(b)
                .map_err(|e| err(format!("pitr_before `{b}` is not a duration: {e}")))?;
        }
        let mut seen = BTreeSet::new();
        for st in &s.steps {
            for a in &st.after {
                if !seen.contains(a.as_str()) {
                    return Err(err(format!(
                        "step `{}` runs after `{a}`, which is not an earlier step",
                        st.name
                    )));
                }
            }
            if !seen.insert(st.name.as_str()) {
                return Err(err(format!("two steps are named `{}`", st.name)));
            }
        }
        Ok(s)
    }

    /// The point-in-time offset, if any.
    pub fn pitr_offset(&self) -> Option<std::time::Duration> {
        self.pitr_before
            .as_deref()
            .and_then(|b| humantime::parse_duration(b).ok())
    }

    /// Sources this scenario restores.
    pub fn restored_sources(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s.action.is_restore())
            .filter_map(|s| s.action.source().map(str::to_string))
            .collect();
        v.dedup();
        v
    }

    /// The human runbook, generated from this file (`runbooks/<name>.md`).
    pub fn render_markdown(&self) -> String {
        let mut md = format!(
            "<!-- Generated from runbooks/{0}.toml by `gsdr drill --render-runbooks`; edit the .toml, not this file. -->\n\n# Runbook: {1}\n\n{2}\n\n",
            self.name,
            self.title,
            self.description.trim()
        );
        md += "## Run it\n\n";
        md += &format!(
            "- Rehearse (scratch targets, nothing touched): `gsdr drill --scenario {}`\n- In an incident, see the plan first: `gsdr restore --scenario {0} --plan` (it says what each step overwrites)\n- Then execute: `gsdr restore --scenario {0}` (asks for confirmation of those overwrites; `--yes` skips it; `--resume` continues a failed run)\n",
            self.name
        );
        if self
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::RestorePostgresPitr { .. }))
        {
            md += "- PostgreSQL: add `--keep-archiving` when the restored cluster replaces production (it continues the WAL archive on a new timeline), or `--no-archiving` for a copy that must never write into it\n";
        }
        md += "\n";
        md += "## Where the data comes from\n\n";
        md += match self.from {
            BackupCopy::Primary => "- Each source's **primary** target.\n",
            BackupCopy::Offsite => {
                "- Each source's **off-site** target only; the primary copy is not used.\n"
            }
        };
        if self.primary_hostile {
            md += "- The primary bucket is **hostile**: gsdr neither reads nor writes it.\n";
        }
        if self.require_object_lock {
            md += "- Only backups under **S3 Object Lock** are restored: for each source the newest backup whose data and manifest are locked; newer unlocked ones are skipped (the plan says how many). No locked backup: the scenario cannot run.\n";
        }
        if let Some(b) = &self.pitr_before {
            md += &format!("- Point in time: just before the incident, `{b}` before the time given with `--target-time` (default: the start of the run).\n");
        }
        md += &format!(
            "- At most {} steps run at once.\n\n## Steps\n\n| # | step | kind | after | what it does |\n|---|---|---|---|---|\n",
            self.max_parallel
        );
        for (i, st) in self.steps.iter().enumerate() {
            md += &format!(
                "| {} | `{}` | {} | {} | {} |\n",
                i + 1,
                st.name,
                st.action.kind(),
                if st.after.is_empty() {
                    "–".to_string()
                } else {
                    st.after.join(", ")
                },
                st.action.describe().replace('|', "\\|")
            );
        }
        md += "\n## Done when\n\nEvery step passed, the achieved RTO (start → last check passed) is within the policy's `rto`, and for every restored source the achieved RPO (start − newest recovered point, from its heartbeat canary) is within its `rpo`.\n";
        md
    }
}

/// Every scenario in `dir` (`*.toml`), sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, DrillError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DrillError::Scenario {
        file: dir.to_path_buf(),
        message: format!("cannot read the runbooks directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Scenario::load(p)).collect()
}

/// The scenarios named `name` in `dir` (`all` = every one).
pub fn select(dir: &Path, name: &str) -> Result<Vec<Scenario>, DrillError> {
    if name == "all" {
        let v = load_dir(dir)?;
        if v.is_empty() {
            return Err(DrillError::Scenario {
                file: dir.to_path_buf(),
                message: "no scenario files (*.toml) here".into(),
            });
        }
        return Ok(v);
    }
    let p = dir.join(format!("{name}.toml"));
    if !p.exists() {
        let names: Vec<String> = load_dir(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect();
        return Err(DrillError::Scenario {
            file: p,
            message: format!(
                "no such scenario; available: {}, or `all`",
                names.join(", ")
            ),
        });
    }
    Ok(vec![Scenario::load(&p)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "x"
title = "X"
description = "d"
[[steps]]
name = "restore"
kind = "restore_command_source"
source = "cfg"
[[steps]]
name = "hash"
kind = "sha256"
source = "cfg"
after = ["restore"]
"#;

    #[test]
    fn parses_and_orders() {
        let s = Scenario::parse(OK, Path::new("x.toml")).unwrap();
        assert_eq!(s.steps.len(), 2);
        assert_eq!(s.steps[1].action.kind(), "sha256");
        assert_eq!(s.restored_sources(), vec!["cfg".to_string()]);
    }

    #[test]
    fn unknown_step_field_is_an_error() {
        let t = OK.replace(
            "source = \"cfg\"\n[[steps]]",
            "source = \"cfg\"\nsorce = 1\n[[steps]]",
        );
        let e = Scenario::parse(&t, Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("sorce"), "{e}");
    }

    #[test]
    fn unknown_top_field_and_bad_order_are_errors() {
        let t = format!("colour = 1\n{OK}");
        assert!(Scenario::parse(&t, Path::new("x.toml")).is_err());
        let t = OK.replace("after = [\"restore\"]", "after = [\"later\"]");
        let e = Scenario::parse(&t, Path::new("x.toml")).unwrap_err();
        assert!(e.to_string().contains("not an earlier step"), "{e}");
    }
}
