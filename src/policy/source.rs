//! `[sources.*]` and `[defaults]`: what is backed up, with which engine, on which schedule.

use super::*;

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

impl SourceConfig {
    /// The engine settings of source `name`: the sub-table its `kind` names.
    pub fn engine_config(
        &self,
        name: &str,
    ) -> Result<crate::source::EngineConfig, crate::source::SourceError> {
        use crate::source::{command, mongo, postgres, redis, EngineConfig};
        let kind = self.kind.as_str();
        let found = match kind {
            command::KIND => self.command.clone().map(EngineConfig::Command),
            mongo::KIND => self.mongo.clone().map(EngineConfig::Mongo),
            redis::KIND => self.redis.clone().map(EngineConfig::Redis),
            postgres::KIND => self.postgres.clone().map(EngineConfig::Postgres),
            _ => None,
        };
        found.ok_or_else(|| crate::source::SourceError::Config {
            message: format!("source `{name}` has no [sources.{name}.{kind}] table"),
        })
    }

    /// The engine of source `name`.
    pub fn engine(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<dyn crate::source::Engine>, crate::source::SourceError> {
        self.engine_config(name)?.engine(name)
    }

    /// The engine settings tables this source has, by engine kind.
    pub fn tables_present(&self) -> Vec<&'static str> {
        [
            ("command", self.command.is_some()),
            ("mongo", self.mongo.is_some()),
            ("redis", self.redis.is_some()),
            ("postgres", self.postgres.is_some()),
        ]
        .into_iter()
        .filter(|(_, p)| *p)
        .map(|(n, _)| n)
        .collect()
    }
}
