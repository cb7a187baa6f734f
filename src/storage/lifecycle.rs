//! Bucket settings of an S3 target: versioning, one lifecycle rule for gsdr's
//! prefix, and the Object Lock default retention (`gsdr storage init`).
//!
//! [`read`] reads what the server holds, [`desired`] says what the policy
//! wants, [`diff`] lists the differences, [`apply`] makes the changes (only
//! those; running it twice changes nothing). Other lifecycle rules of the
//! bucket are kept; [`hazards`] names those that could expire gsdr's
//! objects. Versioning is only ever turned on (S3 cannot turn it off, only
//! suspend it), and Object Lock only managed when configured.
//!
//! **Retention's floor holds against the lifecycle**: no rule gsdr installs
//! expires a *current* object, so none can delete a source's newest
//! restorable backup or the WAL it needs — `gsdr prune` decides for current
//! objects. gsdr's rule (id `gsdr:<prefix>`, filter `<prefix>/`):
//! - `NoncurrentVersionExpiration.NoncurrentDays = noncurrent_expire_after`
//!   when versioning is on: versions prune deleted (hidden by a delete
//!   marker) go that long after, unless Object Lock still holds them, in
//!   which case they go once their retention ends;
//! - `Expiration.ExpiredObjectDeleteMarker` when versioning is on: delete
//!   markers with no version left behind them are removed (they hide
//!   nothing);
//! - `AbortIncompleteMultipartUpload.DaysAfterInitiation = abort_incomplete_after`;
//! - `Expiration.Days = expire_after` only when set, which the policy check
//!   allows only on a target no source keeps backups on.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketVersioningStatus,
    DefaultRetention, ExpirationStatus, LifecycleExpiration, LifecycleRule, LifecycleRuleFilter,
    NoncurrentVersionExpiration, ObjectLockConfiguration, ObjectLockEnabled,
    ObjectLockRetentionMode, ObjectLockRule, VersioningConfiguration,
};
use serde::Serialize;

use super::s3::S3Store;
use super::Lifecycle;
use super::{StorageError, Store};
use crate::fault::RetryClass;

/// gsdr's lifecycle rule for one prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleState {
    /// Rule id.
    pub id: String,
    /// Filter prefix.
    pub prefix: String,
    /// Expiration of current versions, days.
    pub expire_days: Option<i32>,
    /// Removal of delete markers with no noncurrent version behind them.
    pub expired_delete_markers: bool,
    /// Expiration of noncurrent versions, days.
    pub noncurrent_days: Option<i32>,
    /// Abort of incomplete multipart uploads, days.
    pub abort_days: Option<i32>,
}

/// The bucket settings gsdr manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketState {
    /// `Enabled`, `Suspended` or `Off`.
    pub versioning: String,
    /// Object Lock is enabled on the bucket.
    pub object_lock_enabled: bool,
    /// Default retention: mode (`GOVERNANCE`/`COMPLIANCE`) and days.
    pub default_retention: Option<(String, i32)>,
    /// gsdr's lifecycle rule for this prefix, if present.
    pub rule: Option<RuleState>,
}

/// One difference between the bucket and the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Which setting.
    pub setting: String,
    /// What the bucket has.
    pub current: String,
    /// What the policy wants.
    pub desired: String,
}

fn sdk_err<E, R>(
    store: &S3Store,
    op: &'static str,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().unwrap_or("").to_string();
    let msg = e.message().unwrap_or("").to_string();
    let class = if matches!(
        e,
        aws_sdk_s3::error::SdkError::DispatchFailure(_)
            | aws_sdk_s3::error::SdkError::TimeoutError(_)
    ) {
        RetryClass::Temporary
    } else {
        RetryClass::Permanent
    };
    StorageError::Io {
        op,
        store: store.describe(),
        key: format!("(bucket {})", store.bucket()),
        class,
        source: format!(
            "{code}: {msg} ({})",
            aws_sdk_s3::error::DisplayErrorContext(&e)
        )
        .into(),
    }
}

/// The id of gsdr's rule for `prefix`.
pub fn rule_id(prefix: &str) -> String {
    format!(
        "gsdr:{}",
        if prefix.is_empty() {
            "(bucket)"
        } else {
            prefix
        }
    )
}

fn rule_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn days(d: &crate::units::HumanDuration) -> i32 {
    (d.0.as_secs() / 86_400).min(i32::MAX as u64) as i32
}

// Older servers answer with the rule-level `Prefix` instead of a filter.
#[allow(deprecated)]
fn rule_state(r: &LifecycleRule) -> RuleState {
    RuleState {
        id: r.id().unwrap_or_default().to_string(),
        prefix: r
            .filter()
            .and_then(|f| f.prefix())
            .or(r.prefix())
            .unwrap_or_default()
            .to_string(),
        expire_days: r.expiration().and_then(|e| e.days()),
        expired_delete_markers: r
            .expiration()
            .and_then(|e| e.expired_object_delete_marker())
            .unwrap_or(false),
        noncurrent_days: r
            .noncurrent_version_expiration()
            .and_then(|e| e.noncurrent_days()),
        abort_days: r
            .abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
    }
}

async fn current_rules(store: &S3Store) -> Result<Vec<LifecycleRule>, StorageError> {
    match store
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(store.bucket())
        .send()
        .await
    {
        Ok(o) => Ok(o.rules().to_vec()),
        Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Ok(Vec::new()),
        Err(e) => Err(sdk_err(store, "reading the lifecycle rules of", e)),
    }
}

/// Reads the settings gsdr manages from the bucket.
pub async fn read(store: &S3Store) -> Result<BucketState, StorageError> {
    let c = store.client();
    let v = c
        .get_bucket_versioning()
        .bucket(store.bucket())
        .send()
        .await
        .map_err(|e| sdk_err(store, "reading the versioning of", e))?;
    let versioning = match v.status() {
        Some(BucketVersioningStatus::Enabled) => "Enabled",
        Some(BucketVersioningStatus::Suspended) => "Suspended",
        _ => "Off",
    }
    .to_string();
    let (object_lock_enabled, default_retention) = match c
        .get_object_lock_configuration()
        .bucket(store.bucket())
        .send()
        .await
    {
        Ok(o) => {
            let cfg = o.object_lock_configuration();
            let enabled =
                cfg.and_then(|c| c.object_lock_enabled()) == Some(&ObjectLockEnabled::Enabled);
            let ret = cfg
                .and_then(|c| c.rule())
                .and_then(|r| r.default_retention())
                .and_then(|d| {
                    Some((
                        d.mode()?.as_str().to_string(),
                        d.days().or(d.years().map(|y| y * 365))?,
                    ))
                });
            (enabled, ret)
        }
        Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => (false, None),
        Err(e) => {
            return Err(sdk_err(
                store,
                "reading the Object Lock configuration of",
                e,
            ))
        }
    };
    let id = rule_id(store.prefix());
    let rule = current_rules(store)
        .await?
        .iter()
        .find(|r| r.id() == Some(id.as_str()))
        .map(rule_state);
    Ok(BucketState {
        versioning,
        object_lock_enabled,
        default_retention,
        rule,
    })
}

/// What the policy's lifecycle table asks for, given the bucket now (`current`).
pub fn desired(cfg: &Lifecycle, prefix: &str, current: &BucketState) -> BucketState {
    let versioning = if cfg.versioning {
        "Enabled".to_string()
    } else {
        current.versioning.clone()
    };
    let versioned = versioning == "Enabled";
    BucketState {
        object_lock_enabled: cfg.object_lock.is_some() || current.object_lock_enabled,
        default_retention: match &cfg.object_lock {
            Some(l) => Some((l.mode.as_s3().to_string(), days(&l.retention))),
            None => current.default_retention.clone(),
        },
        rule: Some(RuleState {
            id: rule_id(prefix),
            prefix: rule_prefix(prefix),
            expire_days: cfg.expire_after.as_ref().map(days),
            // S3 takes Days or ExpiredObjectDeleteMarker in one Expiration, not both.
            expired_delete_markers: versioned && cfg.expire_after.is_none(),
            noncurrent_days: versioned.then(|| days(&cfg.noncurrent_expire_after)),
            abort_days: Some(days(&cfg.abort_incomplete_after)),
        }),
        versioning,
    }
}

/// The differences between `current` and `want`.
pub fn diff(current: &BucketState, want: &BucketState) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |setting: &str, c: String, d: String| {
        if c != d {
            out.push(Change {
                setting: setting.into(),
                current: c,
                desired: d,
            })
        }
    };
    push(
        "versioning",
        current.versioning.clone(),
        want.versioning.clone(),
    );
    let ret = |r: &Option<(String, i32)>| {
        r.as_ref()
            .map_or("none".into(), |(m, d)| format!("{m} {d} days"))
    };
    push(
        "object_lock.default_retention",
        ret(&current.default_retention),
        ret(&want.default_retention),
    );
    fn opt(v: Option<i32>) -> String {
        v.map_or("none".into(), |d| format!("{d} days"))
    }
    let (cr, wr) = (current.rule.as_ref(), want.rule.as_ref());
    let field =
        |r: Option<&RuleState>, f: fn(&RuleState) -> String| r.map_or("(no rule)".to_string(), f);
    type Shown = fn(&RuleState) -> String;
    let rule_settings: [(&str, Shown); 5] = [
        ("lifecycle.prefix", |r| r.prefix.clone()),
        ("lifecycle.expiration", |r| opt(r.expire_days)),
        ("lifecycle.expired_object_delete_marker", |r| {
            r.expired_delete_markers.to_string()
        }),
        ("lifecycle.noncurrent_version_expiration", |r| {
            opt(r.noncurrent_days)
        }),
        ("lifecycle.abort_incomplete_multipart_upload", |r| {
            opt(r.abort_days)
        }),
    ];
    for (setting, f) in rule_settings {
        push(setting, field(cr, f), field(wr, f));
    }
    out
}

/// Applies `cfg` to the bucket of `store` unless `dry_run`; returns the differences found before.
pub async fn apply(
    store: &S3Store,
    cfg: &Lifecycle,
    dry_run: bool,
) -> Result<Vec<Change>, StorageError> {
    let current = read(store).await?;
    let want = desired(cfg, store.prefix(), &current);
    let changes = diff(&current, &want);
    if dry_run || changes.is_empty() {
        return Ok(changes);
    }
    let c = store.client();
    let bad = |m: String| StorageError::Config {
        store: store.describe(),
        message: m,
    };
    if want.versioning != current.versioning && want.versioning == "Enabled" {
        c.put_bucket_versioning()
            .bucket(store.bucket())
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_err(store, "turning on versioning of", e))?;
    }
    if want.default_retention != current.default_retention {
        if let Some(l) = &cfg.object_lock {
            let mode = ObjectLockRetentionMode::from(l.mode.as_s3());
            let conf = ObjectLockConfiguration::builder()
                .object_lock_enabled(ObjectLockEnabled::Enabled)
                .rule(
                    ObjectLockRule::builder()
                        .default_retention(
                            DefaultRetention::builder()
                                .mode(mode)
                                .days(days(&l.retention))
                                .build(),
                        )
                        .build(),
                )
                .build();
            c.put_object_lock_configuration()
                .bucket(store.bucket())
                .object_lock_configuration(conf)
                .send()
                .await
                .map_err(|e| {
                    let mut err = sdk_err(store, "setting the Object Lock retention of", e);
                    if let StorageError::Io { ref mut op, .. } = err {
                        *op = "setting the Object Lock retention (the bucket must have been created with Object Lock enabled) of";
                    }
                    err
                })?;
        }
    }
    if want.rule != current.rule {
        let w = want.rule.as_ref().expect("desired always has gsdr's rule");
        let mut b = LifecycleRule::builder()
            .id(&w.id)
            .status(ExpirationStatus::Enabled)
            .filter(LifecycleRuleFilter::builder().prefix(&w.prefix).build());
        if let Some(d) = w.expire_days {
            b = b.expiration(LifecycleExpiration::builder().days(d).build());
        } else if w.expired_delete_markers {
            b = b.expiration(
                LifecycleExpiration::builder()
                    .expired_object_delete_marker(true)
                    .build(),
            );
        }
        if let Some(d) = w.noncurrent_days {
            b = b.noncurrent_version_expiration(
                NoncurrentVersionExpiration::builder()
                    .noncurrent_days(d)
                    .build(),
            );
        }
        if let Some(d) = w.abort_days {
            b = b.abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(d)
                    .build(),
            );
        }
        let ours = b
            .build()
            .map_err(|e| bad(format!("building the lifecycle rule: {e}")))?;
        let mut rules: Vec<LifecycleRule> = current_rules(store)
            .await?
            .into_iter()
            .filter(|r| r.id() != Some(w.id.as_str()))
            .collect();
        rules.push(ours);
        let conf = BucketLifecycleConfiguration::builder()
            .set_rules(Some(rules))
            .build()
            .map_err(|e| bad(format!("building the lifecycle configuration: {e}")))?;
        c.put_bucket_lifecycle_configuration()
            .bucket(store.bucket())
            .lifecycle_configuration(conf)
            .send()
            .await
            .map_err(|e| sdk_err(store, "writing the lifecycle rules of", e))?;
    }
    Ok(changes)
}

/// Other lifecycle rules of the bucket that expire current objects under
/// gsdr's prefix (their filter covers it, or lies inside it): each could
/// delete a source's newest backup or its WAL, which no rule gsdr installs
/// does. One sentence per rule; empty when there is none.
pub async fn hazards(store: &S3Store) -> Result<Vec<String>, StorageError> {
    let ours = rule_id(store.prefix());
    let prefix = rule_prefix(store.prefix());
    Ok(current_rules(store)
        .await?
        .iter()
        .filter(|r| r.id() != Some(ours.as_str()))
        .filter(|r| r.status() == &ExpirationStatus::Enabled)
        .map(rule_state_with_date)
        .filter(|(r, _)| overlaps(&r.prefix, &prefix))
        .filter_map(|(r, date)| {
            let when = match (r.expire_days, date) {
                (Some(d), _) => format!("{d} days after they are written"),
                (None, Some(d)) => format!("on {d}"),
                (None, None) => return None,
            };
            Some(format!(
                "lifecycle rule `{}` (prefix `{}`) of bucket {} expires current objects {when}, gsdr's under `{prefix}` included: it can delete a source's newest backup and the WAL it needs; narrow its filter or remove it",
                if r.id.is_empty() { "(no id)" } else { r.id.as_str() },
                r.prefix,
                store.bucket()
            ))
        })
        .collect())
}

fn rule_state_with_date(r: &LifecycleRule) -> (RuleState, Option<String>) {
    (
        rule_state(r),
        r.expiration().and_then(|e| e.date()).map(|d| d.to_string()),
    )
}

/// Whether a rule filtering on `theirs` reaches objects under `ours`.
fn overlaps(theirs: &str, ours: &str) -> bool {
    ours.starts_with(theirs) || theirs.starts_with(ours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{DefaultLock, LockMode};
    use crate::units::HumanDuration;
    use std::time::Duration;

    fn d(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n * 86_400))
    }

    #[test]
    fn diff_of_a_bare_bucket_lists_every_setting_and_none_once_applied() {
        let cfg = Lifecycle {
            expire_after: None,
            noncurrent_expire_after: d(7),
            abort_incomplete_after: d(1),
            versioning: true,
            object_lock: Some(DefaultLock {
                mode: LockMode::Compliance,
                retention: d(30),
            }),
        };
        let bare = BucketState {
            versioning: "Off".into(),
            object_lock_enabled: false,
            default_retention: None,
            rule: None,
        };
        let want = desired(&cfg, "p", &bare);
        let ch = diff(&bare, &want);
        let names: Vec<&str> = ch.iter().map(|c| c.setting.as_str()).collect();
        assert_eq!(
            names,
            [
                "versioning",
                "object_lock.default_retention",
                "lifecycle.prefix",
                "lifecycle.expiration",
                "lifecycle.expired_object_delete_marker",
                "lifecycle.noncurrent_version_expiration",
                "lifecycle.abort_incomplete_multipart_upload"
            ]
        );
        assert_eq!(ch[1].desired, "COMPLIANCE 30 days");
        let rule = want.rule.as_ref().unwrap();
        assert_eq!(rule.expire_days, None, "no current object ever expires");
        assert_eq!(rule.noncurrent_days, Some(7));
        assert!(rule.expired_delete_markers);
        assert!(diff(&want, &desired(&cfg, "p", &want)).is_empty());
    }

    #[test]
    fn an_old_prefix_wide_expiration_is_removed_and_foreign_rules_are_matched_by_prefix() {
        let cfg = Lifecycle {
            expire_after: None,
            noncurrent_expire_after: d(1),
            abort_incomplete_after: d(1),
            versioning: false,
            object_lock: None,
        };
        let old = BucketState {
            versioning: "Off".into(),
            object_lock_enabled: false,
            default_retention: None,
            rule: Some(RuleState {
                id: rule_id("p"),
                prefix: "p/".into(),
                expire_days: Some(35),
                expired_delete_markers: false,
                noncurrent_days: None,
                abort_days: Some(1),
            }),
        };
        let ch = diff(&old, &desired(&cfg, "p", &old));
        assert_eq!(ch.len(), 1, "{ch:?}");
        assert_eq!(
            (
                ch[0].setting.as_str(),
                ch[0].current.as_str(),
                ch[0].desired.as_str()
            ),
            ("lifecycle.expiration", "35 days", "none")
        );
        assert!(overlaps("", "p/"));
        assert!(overlaps("p/", "p/"));
        assert!(overlaps("p/pg/wal/", "p/"));
        assert!(overlaps("p", "p/"));
        assert!(!overlaps("q/", "p/"));
        assert!(!overlaps("p2/", "p/"));
    }
}
