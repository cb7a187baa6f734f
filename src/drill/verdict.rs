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
        let achieved = secs_between(rec.point, started_at);
        let target = env
            .policy
            .objectives_of(&src)
            .map(|o| o.rpo.0.as_secs_f64());
        let met = target.is_none_or(|t| achieved <= t);
        if !met {
            failures.push(format!(
                "RPO of `{src}` missed: {} achieved (recovered point {}, by {}), target {}, over by {}",
                super::report::secs(achieved),
                rec.point.to_rfc3339(),
                rec.measured_by,
                super::report::secs(target.unwrap_or(0.0)),
                super::report::secs(achieved - target.unwrap_or(0.0))
            ));
        }
        rpo.push(RpoResult {
            source: src,
            recovered_point: rec.point,
            achieved_secs: achieved,
            target_secs: target,
            met,
            measured_by: rec.measured_by,
            note: rec.note,
        });
    }
    let rto_target = scenario
        .restored_sources()
        .iter()
        .filter_map(|s| env.policy.objectives_of(s).map(|o| o.rto.0.as_secs_f64()))
        .reduce(f64::min);
    let achieved = all_ok.then(|| {
        steps
            .iter()
            .map(|s| s.start_offset_secs + s.duration_secs)
            .fold(0.0, f64::max)
    });
    let rto_met = match (achieved, rto_target) {
        (Some(a), Some(t)) => a <= t,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if let (Some(a), Some(t), false) = (achieved, rto_target, rto_met) {
        failures.push(format!(
            "RTO missed: {} achieved, target {}",
            super::report::secs(a),
            super::report::secs(t)
        ));
    }
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
        rto: RtoResult {
            achieved_secs: achieved,
            target_secs: rto_target,
            met: rto_met,
        },
        rpo,
        failures,
        scratch_cleaned,
        trend: None,
    }
}
