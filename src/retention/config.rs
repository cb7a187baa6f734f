//! The `retention` settings of a policy.

use serde::Deserialize;

use crate::units::HumanDuration;

/// The retention applied when a policy sets none: keep every backup of the last 30 days.
pub const DEFAULT_KEEP_WITHIN_DAYS: u64 = 30;

/// How long backups are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Keep every backup newer than this.
    pub keep_within: Option<HumanDuration>,
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N days.
    pub keep_daily: Option<u32>,
    /// Keep the newest of each of the last N weeks.
    pub keep_weekly: Option<u32>,
    /// Keep the newest of each of the last N months.
    pub keep_monthly: Option<u32>,
}
