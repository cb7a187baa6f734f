//! The verdict of a run: RPO and RTO achieved against the policy's
//! objectives, the failures in words, and the report that carries them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::canary::Recovered;
use super::incident::Restored;
use super::report::{
    DrillReport, RpoResult, RtoResult, RunKind, StepReport, StepStatus, REPORT_SCHEMA,
};
use super::scenario::Scenario;
use crate::job::Env;

/// Seconds from `a` to `b` (negative when `b` is earlier), at millisecond precision.
pub(super) fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// The report of a finished run: failures, RPO and RTO against the objectives.
#[allow(clippy::too_many_arguments)]
pub(super) fn build_report(
    env: &Env,
    scenario: &Scenario,
    kind: RunKind,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    steps: Vec<StepReport>,
    restored: &BTreeMap<String, Restored>,
    scratch_cleaned: Option<bool>,
) -> DrillReport {
    let mut failures = Vec::new();
    for s in &steps {
        match s.status {
            StepStatus::Failed => failures.push(format!("step `{}` failed: {}", s.name, s.detail)),
            StepStatus::Skipped => {
                failures.push(format!("step `{}` skipped: {}", s.name, s.detail))
            }
            _ => {}
        }
    }
    let all_ok = failures.is_empty();
    let mut rpo = Vec::new();
    for src in scenario.restored_sources() {
        let Some(r) = restored.get(&src) else {
            continue;
        };
        let rec = r.recovered.clone().unwrap_or_else(|| Recovered {
            point: r.manifest.recovery_point(),
            measured_by: "manifest".into(),
            note: Some(
                crate::job::engine_for(env, &r.manifest)
                    .ok()
                    .and_then(|e| e.canary_absent_note())
                    .unwrap_or("the scenario has no canary_age check for this source: the RPO uses the manifest's recovery point")
                    .into(),
            ),
        });
        let target = env
            .policy
            .objectives_of(&src)
            .map(|o| o.rpo.0.as_secs_f64());
        let (r, failure) = rpo_verdict(src, rec, started_at, target);
        failures.extend(failure);
        rpo.push(r);
    }
    let rto_target = scenario
        .restored_sources()
        .iter()
        .filter_map(|s| env.policy.objectives_of(s).map(|o| o.rto.0.as_secs_f64()))
        .reduce(f64::min);
    let (rto, failure) = rto_verdict(&steps, all_ok, rto_target);
    failures.extend(failure);
    DrillReport {
        schema_version: REPORT_SCHEMA,
        kind,
        id: format!("{}-{}", started_at.format("%Y%m%dT%H%M%SZ"), scenario.name),
        scenario: scenario.name.clone(),
        title: scenario.title.clone(),
        policy: env.policy.name.clone(),
        started_at,
        finished_at,
        passed: failures.is_empty(),
        steps,
        rto,
        rpo,
        failures,
        scratch_cleaned,
        trend: None,
    }
}

/// The RPO of `source`: from its recovered point to the run's start, against
/// `target` (seconds); the failure in words when missed.
pub(super) fn rpo_verdict(
    source: String,
    rec: Recovered,
    started_at: DateTime<Utc>,
    target: Option<f64>,
) -> (RpoResult, Option<String>) {
    let achieved = secs_between(rec.point, started_at);
    let met = target.is_none_or(|t| achieved <= t);
    let failure = (!met).then(|| {
        format!(
            "RPO of `{source}` missed: {} achieved (recovered point {}, by {}), target {}, over by {}",
            super::report::secs(achieved),
            rec.point.to_rfc3339(),
            rec.measured_by,
            super::report::secs(target.unwrap_or(0.0)),
            super::report::secs(achieved - target.unwrap_or(0.0))
        )
    });
    let r = RpoResult {
        source,
        recovered_point: rec.point,
        achieved_secs: achieved,
        target_secs: target,
        met,
        measured_by: rec.measured_by,
        note: rec.note,
    };
    (r, failure)
}

/// The RTO of a run: the end of its last step, only when every step passed
/// (a failed run recovered nothing), against `target` (seconds); the failure
/// in words when missed.
pub(super) fn rto_verdict(
    steps: &[StepReport],
    all_ok: bool,
    target: Option<f64>,
) -> (RtoResult, Option<String>) {
    let achieved = all_ok.then(|| {
        steps
            .iter()
            .map(|s| s.start_offset_secs + s.duration_secs)
            .fold(0.0, f64::max)
    });
    let met = match (achieved, target) {
        (Some(a), Some(t)) => a <= t,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let failure = match (achieved, target, met) {
        (Some(a), Some(t), false) => Some(format!(
            "RTO missed: {} achieved, target {}",
            super::report::secs(a),
            super::report::secs(t)
        )),
        _ => None,
    };
    let r = RtoResult {
        achieved_secs: achieved,
        target_secs: target,
        met,
    };
    (r, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offset: f64, duration: f64) -> StepReport {
        StepReport {
            name: "s".into(),
            kind: "sha256".into(),
            source: None,
            status: StepStatus::Ok,
            start_offset_secs: offset,
            duration_secs: duration,
            backup_id: None,
            from_target: None,
            into: None,
            raw_bytes: None,
            detail: String::new(),
        }
    }

    #[test]
    fn rto_is_the_end_of_the_last_step_and_only_counts_when_all_passed() {
        let steps = [step(0.0, 30.0), step(10.0, 50.0), step(5.0, 1.0)];
        let (r, f) = rto_verdict(&steps, true, Some(60.0));
        assert_eq!((r.achieved_secs, r.met, f), (Some(60.0), true, None));
        let (r, f) = rto_verdict(&steps, true, Some(59.9));
        assert!(!r.met);
        assert!(f.unwrap().starts_with("RTO missed: "));
        let (r, f) = rto_verdict(&steps, false, Some(3600.0));
        assert_eq!((r.achieved_secs, r.met, f), (None, false, None));
        let (r, _) = rto_verdict(&steps, true, None);
        assert!(r.met, "no objective: nothing to miss");
    }

    #[test]
    fn rpo_is_the_age_of_the_recovered_point_at_the_start() {
        let start: DateTime<Utc> = "2026-12-03T06:00:00Z".parse().unwrap();
        let rec = |mins: i64| Recovered {
            point: start - chrono::Duration::minutes(mins),
            measured_by: "canary".into(),
            note: None,
        };
        let (r, f) = rpo_verdict("db".into(), rec(30), start, Some(3600.0));
        assert_eq!((r.achieved_secs, r.met, f), (1800.0, true, None));
        let (r, f) = rpo_verdict("db".into(), rec(90), start, Some(3600.0));
        assert!(!r.met);
        let f = f.unwrap();
        assert!(f.starts_with("RPO of `db` missed: "), "{f}");
        assert!(f.contains("by canary"), "{f}");
        let (r, f) = rpo_verdict("db".into(), rec(90), start, None);
        assert_eq!((r.met, f), (true, None));
    }
}
