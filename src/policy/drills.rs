//! `[drills]` and `[objectives]`: scheduled DR drills and the recovery targets they measure.

use super::*;

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

pub(crate) fn default_mongo_scratch_argv() -> Vec<String> {
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

pub(crate) fn default_drill_scenarios() -> Vec<String> {
    vec!["all".into()]
}
pub(crate) fn default_keep_reports() -> u32 {
    12
}
pub(crate) fn default_trend_reports() -> usize {
    10
}
pub(crate) fn default_runbooks_dir() -> PathBuf {
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

fn yes() -> bool {
    true
}
