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
#[serde(default, deny_unknown_fields)]
pub struct DrillsConfig {
    /// When the drills run (cron, UTC), e.g. `"0 4 * * 0"` weekly. Unset: on demand only.
    pub schedule: Option<CronSchedule>,
    /// Whether the daemon runs the scheduled drills itself (its image must
    /// carry the scratch servers' binaries); `false` when a Kubernetes
    /// CronJob runs `gsdr drill --scheduled` instead (`deploy/components/drills`).
    pub in_daemon: bool,
    /// Scenario names from the runbooks directory, or `["all"]`.
    pub scenarios: Vec<String>,
    /// Reports kept per scenario under `<prefix>/drills/`; older ones are deleted.
    pub keep_reports: u32,
    /// Past reports read back for the trend section of each report.
    pub trend_reports: usize,
    /// Directory of the scenario files (`runbooks/*.toml`).
    pub runbooks_dir: PathBuf,
    /// Parent directory of drills' scratch targets (default: the system temp dir).
    pub scratch_dir: Option<PathBuf>,
    /// Program and arguments of a drill's scratch MongoDB server; `{port}` and `{dir}` are substituted.
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

impl Default for DrillsConfig {
    fn default() -> Self {
        DrillsConfig {
            schedule: None,
            in_daemon: true,
            scenarios: vec!["all".into()],
            keep_reports: 12,
            trend_reports: 10,
            runbooks_dir: PathBuf::from("runbooks"),
            scratch_dir: None,
            mongo_scratch_argv: default_mongo_scratch_argv(),
        }
    }
}
