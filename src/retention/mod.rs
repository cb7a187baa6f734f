//! Retention: which backups of a source to keep, and why.
//!
//! [`decide`] is pure: it takes the backups of ONE source (id and recovery
//! point) and the rules, and returns a keep/delete decision with reasons for
//! every backup. Rules combine like restic's `forget`: a backup is kept if
//! ANY rule keeps it.
//!
//! - `keep_within D`: every backup whose recovery point is within `D` of now;
//! - `keep_last N`: the newest `N`;
//! - `keep_daily/weekly/monthly N`: the newest backup of each of the last `N`
//!   days / ISO weeks / months that have a backup (UTC);
//! - always: the newest backup of the source (a source never loses its last
//!   restorable backup, whatever the rules say);
//! - protected ids the caller passes: a veto on deletion, with its reason.
//!
//! With no retention in the policy, `keep_within = 30d` applies.
//!
//! WAL follows the base backups: for a postgres source, once the backup
//! deletions of a target are done, `job::prune::prune_policy_source` deletes the
//! archived WAL that none of the backups still there needs
//! ([`crate::source::postgres::walprune`]); never before, so that a failed
//! backup deletion only keeps more WAL.

mod config;

pub use config::*;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use crate::catalog::Manifest;

/// One backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Backup id.
    pub id: String,
    /// Its recovery point (consistency time, or the dump start).
    pub time: DateTime<Utc>,
}

impl From<&Manifest> for Item {
    fn from(m: &Manifest) -> Self {
        Item {
            id: m.id.clone(),
            time: m.recovery_point(),
        }
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule", content = "detail")]
pub enum Reason {
    /// The newest backup of its source: never deleted.
    Newest,
    /// Within `keep_within`.
    Within(String),
    /// One of the newest `keep_last`.
    Last(u32),
    /// Newest of its day (`2026-11-29`).
    Daily(String),
    /// Newest of its ISO week (`2026-W48`).
    Weekly(String),
    /// Newest of its month (`2026-11`).
    Monthly(String),
    /// An engine needs it (e.g. WAL continuity), with its explanation.
    Protected(String),
}

/// The decision for one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Backup id.
    pub id: String,
    /// Recovery point.
    pub time: DateTime<Utc>,
    /// Kept, and why; empty = delete.
    pub keep: Vec<Reason>,
}

impl Decision {
    /// True when the backup is to be deleted.
    pub fn delete(&self) -> bool {
        self.keep.is_empty()
    }
}

/// Effective rules: the policy's retention, or the default `keep_within = 30d`.
pub fn effective(r: Option<&Retention>) -> Retention {
    r.cloned().unwrap_or(Retention {
        keep_within: Some(crate::units::HumanDuration(Duration::from_secs(
            DEFAULT_KEEP_WITHIN_DAYS * 86_400,
        ))),
        keep_last: None,
        keep_daily: None,
        keep_weekly: None,
        keep_monthly: None,
    })
}

/// Decides, for the backups of one source, which to keep and why. Output is
/// newest first. `protected` maps ids an engine needs to its reason.
pub fn decide(
    rules: &Retention,
    now: DateTime<Utc>,
    items: &[Item],
    protected: &BTreeMap<String, String>,
) -> Vec<Decision> {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    let mut out: Vec<Decision> = sorted
        .iter()
        .map(|i| Decision {
            id: i.id.clone(),
            time: i.time,
            keep: Vec::new(),
        })
        .collect();
    if let Some(first) = out.first_mut() {
        first.keep.push(Reason::Newest);
    }
    if let Some(w) = &rules.keep_within {
        let within = chrono::Duration::from_std(w.0).unwrap_or(chrono::Duration::MAX);
        for d in out.iter_mut() {
            if now.signed_duration_since(d.time) <= within {
                d.keep.push(Reason::Within(w.to_string()));
            }
        }
    }
    if let Some(n) = rules.keep_last {
        for d in out.iter_mut().take(n as usize) {
            d.keep.push(Reason::Last(n));
        }
    }
    let mut bucketed =
        |n: Option<u32>, bucket: fn(DateTime<Utc>) -> String, r: fn(String) -> Reason| {
            let Some(n) = n else { return };
            let mut seen = BTreeSet::new();
            for d in out.iter_mut() {
                if seen.len() >= n as usize {
                    break;
                }
                let b = bucket(d.time);
                if seen.insert(b.clone()) {
                    d.keep.push(r(b));
                }
            }
        };
    bucketed(
        rules.keep_daily,
        |t| t.format("%Y-%m-%d").to_string(),
        Reason::Daily,
    );
    bucketed(
        rules.keep_weekly,
        |t| {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        },
        Reason::Weekly,
    );
    bucketed(
        rules.keep_monthly,
        |t| t.format("%Y-%m").to_string(),
        Reason::Monthly,
    );
    for d in out.iter_mut() {
        if let Some(why) = protected.get(&d.id) {
            d.keep.push(Reason::Protected(why.clone()));
        }
    }
    out
}

/// What prune did (or would do) to one backup.
#[derive(Debug, Clone, Serialize)]
pub struct PruneAction {
    /// Target name.
    pub target: String,
    /// Source.
    pub source: String,
    /// The decision and its reasons.
    #[serde(flatten)]
    pub decision: Decision,
    /// Deleted (false in a dry run, or when the deletion failed).
    pub deleted: bool,
    /// Why the deletion failed, if it did.
    pub error: Option<String>,
}

/// What prune did to the backups of one source on one target.
#[derive(Debug, Clone)]
pub struct TargetPrune {
    /// One per backup.
    pub actions: Vec<PruneAction>,
    /// The backups still there afterwards: those kept and those whose
    /// deletion failed (in a dry run: those kept).
    pub remaining: Vec<Manifest>,
}

/// Applies `rules` to the backups of `source` in `catalog` (target `target`):
/// deletes (unless `dry_run`) every backup no rule keeps, manifest first (it
/// stops being listed at once), then its data object.
pub async fn prune_source(
    catalog: &crate::catalog::Catalog,
    target: &str,
    source: &str,
    rules: &Retention,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<TargetPrune, crate::catalog::CatalogError> {
    let manifests = catalog.list(Some(source)).await?;
    let protected = BTreeMap::new();
    let items: Vec<Item> = manifests.iter().map(Item::from).collect();
    let mut out = Vec::new();
    for d in decide(rules, now, &items, &protected) {
        let mut action = PruneAction {
            target: target.to_string(),
            source: source.to_string(),
            decision: d,
            deleted: false,
            error: None,
        };
        if action.decision.delete() && !dry_run {
            let m = manifests
                .iter()
                .find(|m| m.id == action.decision.id)
                .expect("decided ids come from the manifests");
            let store = catalog.store();
            let r = async {
                store.delete(&m.manifest_key()).await?;
                store.delete(&m.data_key).await
            }
            .await;
            match r {
                Ok(()) => {
                    action.deleted = true;
                    crate::metrics::events::BackupPruned {
                        source,
                        target,
                        id: &m.id,
                    }
                    .emit();
                }
                Err(e) => action.error = Some(e.to_string()),
            }
        }
        out.push(action);
    }
    if !dry_run {
        // Those whose deletion failed too: a listing re-reads a manifest still there.
        let tried: Vec<&str> = out
            .iter()
            .filter(|a| a.decision.delete())
            .map(|a| a.decision.id.as_str())
            .collect();
        catalog.forget(source, &tried).await;
    }
    let gone: BTreeSet<&str> = out
        .iter()
        .filter(|a| a.deleted || (dry_run && a.decision.delete()))
        .map(|a| a.decision.id.as_str())
        .collect();
    let remaining = manifests
        .iter()
        .filter(|m| !gone.contains(m.id.as_str()))
        .cloned()
        .collect();
    Ok(TargetPrune {
        actions: out,
        remaining,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::HumanDuration;
    use chrono::TimeZone;
    use rstest::rstest;

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    fn items(times: &[(u32, u32)]) -> Vec<Item> {
        times
            .iter()
            .map(|&(d, h)| Item {
                id: format!("d{d:02}h{h:02}"),
                time: t(d, h),
            })
            .collect()
    }

    fn rules(within_days: Option<u64>, last: Option<u32>, daily: Option<u32>) -> Retention {
        Retention {
            keep_within: within_days.map(|d| HumanDuration(Duration::from_secs(d * 86_400))),
            keep_last: last,
            keep_daily: daily,
            keep_weekly: None,
            keep_monthly: None,
        }
    }

    fn kept(ds: &[Decision]) -> Vec<&str> {
        ds.iter()
            .filter(|d| !d.delete())
            .map(|d| d.id.as_str())
            .collect()
    }

    #[rstest]
    // keep_within 2 days at now = 29th 12:00: the 27th 12:00 is exactly 2 days old (kept), the 27th 06:00 is not.
    #[case::within(rules(Some(2), None, None), &[(29, 6), (28, 0), (27, 12), (27, 6), (1, 0)], vec!["d29h06", "d28h00", "d27h12"])]
    #[case::last(rules(None, Some(2), None), &[(29, 6), (28, 0), (27, 12), (1, 0)], vec!["d29h06", "d28h00"])]
    // daily 3: newest of each of the last 3 days that have backups.
    #[case::daily(rules(None, None, Some(3)), &[(29, 6), (29, 1), (28, 23), (28, 2), (25, 4), (20, 1)], vec!["d29h06", "d28h23", "d25h04"])]
    // rules union: within 1 day OR last 3.
    #[case::union(rules(Some(1), Some(3), None), &[(29, 11), (29, 10), (29, 9), (29, 8), (20, 1)], vec!["d29h11", "d29h10", "d29h09", "d29h08"])]
    // everything old: the newest still stays.
    #[case::newest_always(rules(Some(1), None, None), &[(10, 0), (9, 0), (8, 0)], vec!["d10h00"])]
    #[case::empty(rules(Some(1), Some(1), Some(1)), &[], vec![])]
    fn decisions(#[case] r: Retention, #[case] times: &[(u32, u32)], #[case] want: Vec<&str>) {
        let ds = decide(&r, t(29, 12), &items(times), &BTreeMap::new());
        assert_eq!(kept(&ds), want);
        assert_eq!(ds.len(), times.len());
    }

    #[test]
    fn weekly_and_monthly_bucket_by_iso_week_and_month() {
        let r = Retention {
            keep_within: None,
            keep_last: None,
            keep_daily: None,
            keep_weekly: Some(2),
            keep_monthly: Some(2),
        };
        let mk = |m: u32, d: u32| Item {
            id: format!("m{m:02}d{d:02}"),
            time: Utc.with_ymd_and_hms(2026, m, d, 0, 0, 0).unwrap(),
        };
        // 2026-11-23 is a Monday: 24 and 22 are in different ISO weeks.
        let its = vec![
            mk(11, 24),
            mk(11, 23),
            mk(11, 22),
            mk(10, 31),
            mk(10, 1),
            mk(9, 1),
        ];
        let ds = decide(&r, t(29, 0), &its, &BTreeMap::new());
        assert_eq!(kept(&ds), vec!["m11d24", "m11d22", "m10d31"]);
        let d22 = ds.iter().find(|d| d.id == "m11d22").unwrap();
        assert_eq!(d22.keep, vec![Reason::Weekly("2026-W47".into())]);
        let d31 = ds.iter().find(|d| d.id == "m10d31").unwrap();
        assert_eq!(d31.keep, vec![Reason::Monthly("2026-10".into())]);
    }

    #[test]
    fn protectors_veto_deletion() {
        let its = items(&[(29, 0), (1, 0)]);
        let protected = BTreeMap::from([("d01h00".to_string(), "WAL base".to_string())]);
        let ds = decide(&rules(Some(1), None, None), t(29, 12), &its, &protected);
        assert_eq!(kept(&ds), vec!["d29h00", "d01h00"]);
        assert_eq!(ds[1].keep, vec![Reason::Protected("WAL base".into())]);
    }

    #[test]
    fn default_is_thirty_days() {
        let r = effective(None);
        assert_eq!(r.keep_within.unwrap().0, Duration::from_secs(30 * 86_400));
    }
}
