//! The trend's data — past drills as points, the projection — and how it
//! renders; below the report (which embeds it) and the trend maths (which fill it).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::text::{esc, human_bytes, secs};

/// How far ahead the projection looks, in days.
pub const HORIZON_DAYS: f64 = 90.0;
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

    /// HTML section with an SVG chart of RTO and worst RPO per drill: a
    /// value axis with its scale, each bar's value written on it, each
    /// drill's date under its bars.
    pub fn to_html(&self) -> String {
        let max = self
            .points
            .iter()
            .flat_map(|p| [p.rto_secs, p.worst_rpo_secs])
            .flatten()
            .fold(0.001_f64, f64::max)
            * 1.15;
        let (left, w, h, top) = (70.0, 640.0, 160.0, 16.0);
        let step = w / self.points.len().max(1) as f64;
        let mut svg = format!(
            "<svg width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"RTO and RPO over time\">\n",
            left + w + 20.0,
            top + h + 52.0
        );
        let base = top + h;
        // The value axis: 0, half, full scale.
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{base}\" stroke=\"#555\"/><line x1=\"{left}\" x2=\"{:.1}\" y1=\"{base}\" y2=\"{base}\" stroke=\"#555\"/>",
            left + w
        );
        for f in [0.0, 0.5, 1.0] {
            let y = base - f * h;
            let _ = write!(
                svg,
                "<line x1=\"{:.1}\" x2=\"{left}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#555\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
                left - 4.0,
                left - 6.0,
                y + 3.0,
                secs(f * max)
            );
        }
        for (i, p) in self.points.iter().enumerate() {
            let x = left + i as f64 * step + 4.0;
            for (j, (v, color)) in [(p.rto_secs, "#36c"), (p.worst_rpo_secs, "#c90")]
                .iter()
                .enumerate()
            {
                if let Some(v) = v {
                    let bh = v / max * h;
                    let bx = x + j as f64 * step * 0.4;
                    let _ = write!(
                        svg,
                        "<rect x=\"{bx:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{color}\"><title>{} {}: {}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                        base - bh,
                        step * 0.38,
                        esc(&p.started_at.to_rfc3339()),
                        if j == 0 { "RTO" } else { "worst RPO" },
                        secs(*v),
                        bx + step * 0.19,
                        base - bh - 3.0,
                        secs(*v)
                    );
                }
            }
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + step * 0.4,
                base + 14.0,
                p.started_at.format("%m-%d %H:%M")
            );
        }
        svg.push_str(&format!("<text x=\"{left}\" y=\"{:.1}\" font-size=\"11\">blue: RTO, orange: worst RPO (seconds); one pair of bars per drill, oldest left (UTC)</text></svg>\n", base + 34.0));
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
