//! Trend of the last drills of a scenario: RTO and RPO over time, and a
//! projection that warns when data growth will break the RTO.
//!
//! Projection: data size grows linearly (least squares over the reports'
//! restored bytes against time); restore throughput is the latest drill's
//! restored bytes ÷ seconds spent restoring; the time outside restores
//! (checks, start-up) is taken as constant. Projected RTO at day `d` =
//! overhead + size(d) ÷ throughput.

use super::report::DrillReport;
pub use super::series::{Trend, TrendPoint, HORIZON_DAYS};
use super::text::{human_bytes, secs};
use crate::storage::Store;

/// Largest report gsdr reads back.
const REPORT_MAX_BYTES: u64 = 8 << 20;

impl TrendPoint {
    /// The point of a report.
    pub fn of(r: &DrillReport) -> TrendPoint {
        TrendPoint {
            started_at: r.started_at,
            passed: r.passed,
            rto_secs: r.rto.achieved_secs,
            worst_rpo_secs: r.rpo.iter().map(|x| x.achieved_secs).reduce(f64::max),
            restored_bytes: r.restored_bytes(),
            restore_secs: r.restore_secs(),
        }
    }
}

/// Reads back the reports of `scenario` stored under `drills/` in `store`, oldest first, at most `n`.
pub async fn history(
    store: &dyn Store,
    scenario: &str,
    n: usize,
) -> Result<Vec<DrillReport>, crate::storage::StorageError> {
    let suffix = format!("/{scenario}/report.json");
    let mut keys: Vec<String> = store
        .list("drills/")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| k.ends_with(&suffix))
        .collect();
    keys.sort();
    let skip = keys.len().saturating_sub(n);
    let mut out = Vec::new();
    for k in keys.into_iter().skip(skip) {
        let (bytes, _) = store.get_small(&k, REPORT_MAX_BYTES).await?;
        match serde_json::from_slice::<DrillReport>(&bytes) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(event = "drill_report_unreadable", key = %k, error = %e),
        }
    }
    Ok(out)
}

/// The trend of `past` reports followed by `current`.
pub fn compute(past: &[DrillReport], current: &DrillReport) -> Trend {
    let mut points: Vec<TrendPoint> = past.iter().map(TrendPoint::of).collect();
    points.push(TrendPoint::of(current));
    let mut warnings = Vec::new();
    let t0 = points[0].started_at;
    let xs: Vec<f64> = points
        .iter()
        .map(|p| (p.started_at - t0).num_milliseconds() as f64 / 86_400_000.0)
        .collect();
    let ys: Vec<f64> = points.iter().map(|p| p.restored_bytes as f64).collect();
    let growth = slope(&xs, &ys);
    let last = points.last().expect("current point");
    let throughput = (last.restore_secs > 0.0 && last.restored_bytes > 0)
        .then(|| last.restored_bytes as f64 / last.restore_secs);
    let overhead = last.rto_secs.map(|r| (r - last.restore_secs).max(0.0));
    let target = current.rto.target_secs;
    let mut projected = None;
    let mut days_until = None;
    if let (Some(g), Some(tp), Some(oh)) = (growth, throughput, overhead) {
        let size_at = |d: f64| (last.restored_bytes as f64 + g * d).max(0.0);
        let p = oh + size_at(HORIZON_DAYS) / tp;
        projected = Some(p);
        if let Some(t) = target {
            if g > 0.0 {
                // oh + (size + g d)/tp = t  →  d = ((t − oh)·tp − size)/g
                let d = ((t - oh) * tp - last.restored_bytes as f64) / g;
                if d <= HORIZON_DAYS {
                    days_until = Some(d.max(0.0));
                    warnings.push(format!(
                        "at the current data growth ({}/day) and restore throughput ({}/s) the RTO target of {} will be missed in about {:.0} days",
                        human_bytes(g),
                        human_bytes(tp),
                        secs(t),
                        d.max(0.0)
                    ));
                }
            }
        }
    }
    if points.len() < 2 {
        warnings.push("one drill only so far: no growth trend yet".into());
    }
    Trend {
        points,
        growth_bytes_per_day: growth,
        throughput_bytes_per_sec: throughput,
        projected_rto_secs: projected,
        days_until_rto_missed: days_until,
        warnings,
    }
}

fn slope(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx <= f64::EPSILON {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    Some(sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::{RtoResult, RunKind, StepReport, StepStatus, REPORT_SCHEMA};
    use chrono::{DateTime, Utc};

    fn report(day: i64, bytes: u64, restore_secs: f64, rto_target: f64) -> DrillReport {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        DrillReport {
            schema_version: REPORT_SCHEMA,
            kind: RunKind::Drill,
            id: format!("d{day}"),
            scenario: "s".into(),
            title: "t".into(),
            policy: "p".into(),
            started_at: t0 + chrono::Duration::days(day),
            finished_at: t0 + chrono::Duration::days(day),
            passed: true,
            steps: vec![StepReport {
                name: "restore".into(),
                kind: "restore_command_source".into(),
                source: Some("x".into()),
                status: StepStatus::Ok,
                start_offset_secs: 0.0,
                duration_secs: restore_secs,
                backup_id: None,
                from_target: None,
                into: None,
                raw_bytes: Some(bytes),
                detail: String::new(),
            }],
            rto: RtoResult {
                achieved_secs: Some(restore_secs + 10.0),
                target_secs: Some(rto_target),
                met: true,
            },
            rpo: vec![],
            failures: vec![],
            scratch_cleaned: Some(true),
            trend: None,
        }
    }

    #[test]
    fn growth_that_breaks_the_rto_is_projected_and_warned() {
        // 1 GB/day growth, 1 MB/s restore: each day adds 1000 s of restore time.
        let past = [
            report(0, 10_000_000_000, 10_000.0, 100_000.0),
            report(1, 11_000_000_000, 11_000.0, 100_000.0),
        ];
        let cur = report(2, 12_000_000_000, 12_000.0, 100_000.0);
        let t = compute(&past, &cur);
        assert_eq!(t.points.len(), 3);
        let g = t.growth_bytes_per_day.unwrap();
        assert!((g - 1e9).abs() < 1.0, "{g}");
        assert!((t.throughput_bytes_per_sec.unwrap() - 1e6).abs() < 1e-6);
        // (100000 − 10 − 12000) s × 1 MB/s = 87.99 GB more = 87.99 days.
        let d = t.days_until_rto_missed.unwrap();
        assert!((d - 87.99).abs() < 0.01, "{d}");
        assert!(
            t.warnings
                .iter()
                .any(|w| w.contains("will be missed in about 88 days")),
            "{:?}",
            t.warnings
        );
        assert!((t.projected_rto_secs.unwrap() - (10.0 + 12_000.0 + 90_000.0)).abs() < 1e-6);
    }

    #[test]
    fn flat_data_gives_no_warning() {
        let past = [report(0, 1_000, 1.0, 100.0)];
        let t = compute(&past, &report(1, 1_000, 1.0, 100.0));
        assert_eq!(t.growth_bytes_per_day, Some(0.0));
        assert!(
            t.days_until_rto_missed.is_none() && t.warnings.is_empty(),
            "{t:?}"
        );
    }
}
