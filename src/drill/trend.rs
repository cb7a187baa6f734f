//! Trend of the last drills of a scenario: RTO and RPO over time, and a
//! projection that warns when data growth will break the RTO.
//!
//! Projection: data size grows linearly (least squares over the reports'
//! restored bytes against time); restore throughput is the latest drill's
//! restored bytes ÷ seconds spent restoring; the time outside restores
//! (checks, start-up) is taken as constant. Projected RTO at day `d` =
//! overhead + size(d) ÷ throughput.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::report::{esc, secs, DrillReport};
use crate::storage::Store;

/// How far ahead the projection looks, in days.
pub const HORIZON_DAYS: f64 = 90.0;
/// Largest report gsdr reads back.
const REPORT_MAX_BYTES: u64 = 8 << 20;

/// One past drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendPoint {
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Passed.
    pub passed: bool,
    /// RTO achieved, seconds.
    pub rto_secs: Option<f64>,
    /// Worst RPO achieved, seconds.
    pub worst_rpo_secs: Option<f64>,
    /// Raw bytes restored.
    pub restored_bytes: u64,
    /// Seconds spent restoring.
    pub restore_secs: f64,
}

/// The trend and the projection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trend {
    /// Oldest first, the current run last.
    pub points: Vec<TrendPoint>,
    /// Data growth, bytes per day (least squares), if two or more points.
    pub growth_bytes_per_day: Option<f64>,
    /// Restore throughput of the latest run, bytes per second.
    pub throughput_bytes_per_sec: Option<f64>,
    /// Projected RTO in [`HORIZON_DAYS`] days, seconds.
    pub projected_rto_secs: Option<f64>,
    /// Days until the projected RTO exceeds the target, if within the horizon.
    pub days_until_rto_missed: Option<f64>,
    /// Warnings for the reader.
    pub warnings: Vec<String>,
}

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

fn human_bytes(b: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut i) = (b, 0);
    while v.abs() >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

impl Trend {
    /// Markdown section.
    pub fn to_markdown(&self) -> String {
        let mut m = String::from("## Trend of the last drills\n\n| started | passed | RTO | worst RPO | restored |\n|---|---|---|---|---|\n");
        for p in &self.points {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} |",
                p.started_at.to_rfc3339(),
                if p.passed { "yes" } else { "no" },
                p.rto_secs.map(secs).unwrap_or_else(|| "–".into()),
                p.worst_rpo_secs.map(secs).unwrap_or_else(|| "–".into()),
                human_bytes(p.restored_bytes as f64)
            );
        }
        if let Some(p) = self.projected_rto_secs {
            let _ = writeln!(m, "\nProjected RTO in {HORIZON_DAYS:.0} days: {}.", secs(p));
        }
        for w in &self.warnings {
            let _ = writeln!(m, "\n> **Warning:** {w}");
        }
        m
    }

    /// HTML section with an SVG chart of RTO and worst RPO per drill.
    pub fn to_html(&self) -> String {
        let max = self
            .points
            .iter()
            .flat_map(|p| [p.rto_secs, p.worst_rpo_secs])
            .flatten()
            .fold(0.001_f64, f64::max);
        let (w, h) = (700.0, 160.0);
        let step = w / self.points.len().max(1) as f64;
        let mut svg = format!(
            "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"RTO and RPO over time\">\n",
            w + 20.0,
            h + 20.0
        );
        for (i, p) in self.points.iter().enumerate() {
            let x = i as f64 * step + 4.0;
            for (j, (v, color)) in [(p.rto_secs, "#36c"), (p.worst_rpo_secs, "#c90")]
                .iter()
                .enumerate()
            {
                if let Some(v) = v {
                    let bh = v / max * h;
                    let _ = write!(
                        svg,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{} {}: {}</title></rect>",
                        x + j as f64 * step * 0.4,
                        h - bh,
                        step * 0.38,
                        esc(&p.started_at.to_rfc3339()),
                        if j == 0 { "RTO" } else { "worst RPO" },
                        secs(*v)
                    );
                }
            }
        }
        svg.push_str(&format!("<text x=\"4\" y=\"{:.1}\" font-size=\"11\">blue: RTO, orange: worst RPO; oldest left</text></svg>\n", h + 16.0));
        let warn: String = self
            .warnings
            .iter()
            .map(|w| format!("<p><strong>Warning:</strong> {}</p>", esc(w)))
            .collect();
        let proj = self
            .projected_rto_secs
            .map(|p| {
                format!(
                    "<p>Projected RTO in {HORIZON_DAYS:.0} days: {}</p>",
                    secs(p)
                )
            })
            .unwrap_or_default();
        format!("<h2>Trend of the last drills</h2>\n{svg}{proj}{warn}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::report::{RtoResult, RunKind, StepReport, StepStatus, REPORT_SCHEMA};

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
