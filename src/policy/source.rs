//! `[sources.*]` and `[defaults]`: what is backed up, with which engine, on which schedule.

use super::*;

/// Defaults applied to every source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Defaults {
    /// Primary target name.
    pub target: Option<String>,
    /// Off-site target name.
    pub offsite: Option<String>,
    /// Retention.
    pub retention: Option<Retention>,
    /// Recovery objectives.
    pub objectives: Option<Objectives>,
    /// Deadline of one backup run of a source, retries excluded (default `"6h"`): past it the run is cancelled, reported as failed and its lease released.
    pub timeout: Option<HumanDuration>,
}

/// The deadline of one backup run when the policy sets none.
pub const DEFAULT_JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// One source. `kind` picks the engine; its settings live in the sub-table of
/// the same name (`[sources.NAME.mongo]`), parsed once into the engine's
/// [`EngineConfig`](crate::source::EngineConfig), so every engine's fields
/// are checked strictly and no other code reads an engine's table.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The engine's kind (one of [`crate::source::KINDS`]).
    pub kind: &'static str,
    /// When to back up (cron, UTC). Unset: only on demand.
    pub schedule: Option<CronSchedule>,
    /// Primary target (default: `defaults.target`).
    pub target: Option<String>,
    /// Off-site target (default: `defaults.offsite`).
    pub offsite: Option<String>,
    /// Retention (default: `defaults.retention`).
    pub retention: Option<Retention>,
    /// Objectives (default: `defaults.objectives`).
    pub objectives: Option<Objectives>,
    /// Deadline of one backup run of this source (default: `defaults.timeout`).
    pub timeout: Option<HumanDuration>,
    /// The engine's settings: the sub-table `kind` names, if present.
    pub engine: Option<crate::source::EngineConfig>,
    /// The engine sub-tables present, by kind (exactly `[kind]` is valid).
    pub tables: Vec<&'static str>,
}

/// The keys of a source table, engine sub-tables last.
fn source_fields() -> &'static [&'static str] {
    static FIELDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut f = vec![
            "kind",
            "schedule",
            "target",
            "offsite",
            "retention",
            "objectives",
            "timeout",
        ];
        f.extend_from_slice(crate::source::KINDS);
        f
    })
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

/// A registered engine kind, refused where it is written when unknown.
struct KindName(&'static str);

impl<'de> Deserialize<'de> for KindName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let k = String::deserialize(d)?;
        let kinds = crate::source::KINDS;
        kinds
            .iter()
            .copied()
            .find(|x| *x == k)
            .map(KindName)
            .ok_or_else(|| serde::de::Error::unknown_variant(&k, kinds))
    }
}

/// Parses an engine's sub-table straight from the document, so its errors
/// keep their place (`sources.s.mongo.batch_docs`).
struct EngineTable(&'static str);

impl<'de> serde::de::DeserializeSeed<'de> for EngineTable {
    type Value = crate::source::EngineConfig;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        crate::source::EngineConfig::parse(self.0, d).expect("a registered kind")
    }
}

impl<'de> serde::de::Visitor<'de> for SourceVisitor {
    type Value = SourceConfig;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a source table")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SourceConfig, A::Error> {
        use serde::de::Error as _;
        let kinds = crate::source::KINDS;
        let mut kind: Option<&'static str> = None;
        let mut out = SourceConfig {
            kind: "",
            schedule: None,
            target: None,
            offsite: None,
            retention: None,
            objectives: None,
            timeout: None,
            engine: None,
            tables: Vec::new(),
        };
        // A sub-table met before `kind` (an inline table) is parsed once kind is known.
        let mut early: Vec<(&'static str, toml::Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "kind" => kind = Some(map.next_value::<KindName>()?.0),
                "schedule" => out.schedule = Some(map.next_value()?),
                "target" => out.target = Some(map.next_value()?),
                "offsite" => out.offsite = Some(map.next_value()?),
                "retention" => out.retention = Some(map.next_value()?),
                "objectives" => out.objectives = Some(map.next_value()?),
                "timeout" => out.timeout = Some(map.next_value()?),
                other => {
                    let Some(table) = kinds.iter().copied().find(|x| *x == other) else {
                        return Err(A::Error::unknown_field(other, source_fields()));
                    };
                    out.tables.push(table);
                    match kind {
                        Some(k) if k == table => {
                            out.engine = Some(map.next_value_seed(EngineTable(table))?)
                        }
                        Some(_) => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        None => early.push((table, map.next_value()?)),
                    }
                }
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("kind"))?;
        for (table, value) in early {
            if table == kind {
                out.engine = Some(
                    crate::source::EngineConfig::parse(table, value)
                        .expect("a registered kind")
                        .map_err(A::Error::custom)?,
                );
            }
        }
        out.kind = kind;
        out.tables
            .sort_by_key(|t| kinds.iter().position(|k| k == t));
        Ok(out)
    }
}

impl SourceConfig {
    /// The engine settings of source `name`: the sub-table its `kind` names.
    pub fn engine_config(
        &self,
        name: &str,
    ) -> Result<crate::source::EngineConfig, crate::source::SourceError> {
        self.engine
            .clone()
            .ok_or_else(|| crate::source::SourceError::Config {
                message: format!(
                    "source `{name}` has no [sources.{name}.{}] table",
                    self.kind
                ),
            })
    }

    /// The engine of source `name`.
    pub fn engine(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<dyn crate::source::Engine>, crate::source::SourceError> {
        self.engine_config(name)?.engine(name)
    }
}
