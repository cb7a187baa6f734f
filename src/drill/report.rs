//! The drill / incident report: one struct, rendered as JSON, Markdown and a
//! self-contained HTML page (inline CSS and SVG, no external resources).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::series::Trend;
pub use super::text::{esc, secs};

/// Schema version of `report.json`.
pub const REPORT_SCHEMA: u32 = 1;

/// Drill (scratch targets) or incident (real endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A rehearsal into scratch targets.
    Drill,
    /// A real recovery into the platform's endpoints.
    Incident,
}

/// Outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Ran and passed.
    Ok,
    /// Ran and failed.
    Failed,
    /// Not run: a step it depends on failed.
    Skipped,
    /// Not run again: finished in an earlier run of this incident (resume).
    AlreadyDone,
}

/// One step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step name.
    pub name: String,
    /// Step kind (`restore_command_source`, `sha256`, …).
    pub kind: String,
    /// Source it concerns.
    #[serde(default)]
    pub source: Option<String>,
    /// Outcome.
    pub status: StepStatus,
    /// Seconds from the run start to the step start.
    pub start_offset_secs: f64,
    /// Seconds the step took.
    pub duration_secs: f64,
    /// Backup restored (restore steps).
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Target the backup was read from.
    #[serde(default)]
    pub from_target: Option<String>,
    /// Where it was restored to.
    #[serde(default)]
    pub into: Option<String>,
    /// Raw bytes restored.
    #[serde(default)]
    pub raw_bytes: Option<u64>,
    /// What the step found, or why it failed.
    pub detail: String,
}

/// RTO of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RtoResult {
    /// Start → every step passed, seconds; `None` if a step failed.
    pub achieved_secs: Option<f64>,
    /// The strictest `rto` of the restored sources, seconds.
    pub target_secs: Option<f64>,
    /// Achieved within target.
    pub met: bool,
}

/// RPO of one source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpoResult {
    /// Source.
    pub source: String,
    /// Newest point recovered.
    pub recovered_point: DateTime<Utc>,
    /// Run start − recovered point, seconds.
    pub achieved_secs: f64,
    /// The source's `rpo`, seconds.
    pub target_secs: Option<f64>,
    /// Achieved within target.
    pub met: bool,
    /// `canary` (read from the restored data) or `manifest` (the backup's recorded point).
    pub measured_by: String,
    /// Why a manifest was used, or other remarks.
    #[serde(default)]
    pub note: Option<String>,
}

/// A drill or incident report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// Schema of this document.
    pub schema_version: u32,
    /// Drill or incident.
    pub kind: RunKind,
    /// Run id (`<stamp>-<scenario>`).
    pub id: String,
    /// Scenario name.
    pub scenario: String,
    /// Scenario title.
    pub title: String,
    /// Policy name.
    pub policy: String,
    /// Run start (RTO and RPO are measured from it).
    pub started_at: DateTime<Utc>,
    /// Run end.
    pub finished_at: DateTime<Utc>,
    /// Every step passed and every target met.
    pub passed: bool,
    /// The steps, in start order.
    pub steps: Vec<StepReport>,
    /// RTO.
    pub rto: RtoResult,
    /// RPO per restored source.
    pub rpo: Vec<RpoResult>,
    /// Failures in words: failed steps and missed targets.
    pub failures: Vec<String>,
    /// Scratch targets created and whether they were all removed.
    pub scratch_cleaned: Option<bool>,
    /// Trend over the last drills of this scenario, if known.
    #[serde(default)]
    pub trend: Option<Trend>,
}

impl DrillReport {
    /// The metrics event that publishes this report's verdict.
    pub fn observed(&self) -> crate::metrics::events::DrillObserved<'_> {
        crate::metrics::events::DrillObserved {
            scenario: &self.scenario,
            ok: self.passed,
            started_at: self.started_at,
            rto_secs: self.rto.achieved_secs,
            rto_target_secs: self.rto.target_secs,
        }
    }

    /// Raw bytes restored by this run.
    pub fn restored_bytes(&self) -> u64 {
        self.steps.iter().filter_map(|s| s.raw_bytes).sum()
    }

    /// Seconds spent in restore steps (sum).
    pub fn restore_secs(&self) -> f64 {
        self.steps
            .iter()
            .filter(|s| s.raw_bytes.is_some())
            .map(|s| s.duration_secs)
            .sum()
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// The results as Prometheus text exposition (for a node-exporter textfile or the daemon's registry).
    pub fn to_prometheus(&self) -> String {
        let sc = self.scenario.replace('"', "");
        let kind = match self.kind {
            RunKind::Drill => "drill",
            RunKind::Incident => "incident",
        };
        let mut m = String::new();
        let _ = writeln!(m, "# HELP gsdr_drill_passed 1 if every step passed and every target was met.\n# TYPE gsdr_drill_passed gauge");
        let _ = writeln!(
            m,
            "gsdr_drill_passed{{scenario=\"{sc}\",kind=\"{kind}\"}} {}",
            u8::from(self.passed)
        );
        let _ = writeln!(m, "# HELP gsdr_drill_last_run_timestamp_seconds Start of the last run.\n# TYPE gsdr_drill_last_run_timestamp_seconds gauge");
        let _ = writeln!(
            m,
            "gsdr_drill_last_run_timestamp_seconds{{scenario=\"{sc}\",kind=\"{kind}\"}} {}",
            self.started_at.timestamp()
        );
        let _ = writeln!(m, "# HELP gsdr_drill_rto_seconds RTO achieved (absent if a step failed) and its target.\n# TYPE gsdr_drill_rto_seconds gauge");
        if let Some(a) = self.rto.achieved_secs {
            let _ = writeln!(m, "gsdr_drill_rto_seconds{{scenario=\"{sc}\",kind=\"{kind}\",value=\"achieved\"}} {a}");
        }
        if let Some(t) = self.rto.target_secs {
            let _ = writeln!(
                m,
                "gsdr_drill_rto_seconds{{scenario=\"{sc}\",kind=\"{kind}\",value=\"target\"}} {t}"
            );
        }
        let _ = writeln!(m, "# HELP gsdr_drill_rpo_seconds RPO achieved per source and its target.\n# TYPE gsdr_drill_rpo_seconds gauge");
        for r in &self.rpo {
            let src = r.source.replace('"', "");
            let _ = writeln!(m, "gsdr_drill_rpo_seconds{{scenario=\"{sc}\",kind=\"{kind}\",source=\"{src}\",value=\"achieved\"}} {}", r.achieved_secs);
            if let Some(t) = r.target_secs {
                let _ = writeln!(m, "gsdr_drill_rpo_seconds{{scenario=\"{sc}\",kind=\"{kind}\",source=\"{src}\",value=\"target\"}} {t}");
            }
        }
        let _ = writeln!(m, "# HELP gsdr_drill_step_duration_seconds Duration of each step of the last run.\n# TYPE gsdr_drill_step_duration_seconds gauge");
        for s in &self.steps {
            let _ = writeln!(m, "gsdr_drill_step_duration_seconds{{scenario=\"{sc}\",kind=\"{kind}\",step=\"{}\"}} {}", s.name.replace('"', ""), s.duration_secs);
        }
        m
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut m = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            m,
            "# {} `{}`: {verdict}\n\n{}\n\n- run: `{}`\n- policy: `{}`\n- started: {}\n- finished: {}\n",
            match self.kind {
                RunKind::Drill => "Drill",
                RunKind::Incident => "Incident restore",
            },
            self.scenario,
            self.title,
            self.id,
            self.policy,
            self.started_at.to_rfc3339(),
            self.finished_at.to_rfc3339()
        );
        let _ = writeln!(
            m,
            "## Objectives\n\n| objective | achieved | target | met |\n|---|---|---|---|"
        );
        let _ = writeln!(
            m,
            "| RTO | {} | {} | {} |",
            opt_secs(self.rto.achieved_secs),
            opt_secs(self.rto.target_secs),
            yes_no(self.rto.met)
        );
        for r in &self.rpo {
            let _ = writeln!(
                m,
                "| RPO `{}` ({}) | {} | {} | {} |",
                r.source,
                r.measured_by,
                secs(r.achieved_secs),
                opt_secs(r.target_secs),
                yes_no(r.met)
            );
        }
        let notes: Vec<String> = self
            .rpo
            .iter()
            .filter_map(|r| r.note.as_ref().map(|n| format!("- `{}`: {n}", r.source)))
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(m, "\n{}", notes.join("\n"));
        }
        let _ = writeln!(
            m,
            "\n## Steps\n\n| step | kind | source | status | start | duration | detail |\n|---|---|---|---|---|---|---|"
        );
        for s in &self.steps {
            let _ = writeln!(
                m,
                "| `{}` | {} | {} | {} | +{} | {} | {} |",
                s.name,
                s.kind,
                s.source.as_deref().unwrap_or("–"),
                status_word(s.status),
                secs(s.start_offset_secs),
                secs(s.duration_secs),
                s.detail.replace('|', "\\|").replace('\n', " ")
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(m, "\n## Failures\n");
            for f in &self.failures {
                let _ = writeln!(m, "- {f}");
            }
        }
        if let Some(c) = self.scratch_cleaned {
            let _ = writeln!(
                m,
                "\nScratch targets: {}.",
                if c {
                    "removed"
                } else {
                    "NOT all removed: check the scratch directory"
                }
            );
        }
        if let Some(t) = &self.trend {
            let _ = writeln!(m, "\n{}", t.to_markdown());
        }
        m
    }

    /// A self-contained HTML page: inline CSS and SVG, no scripts, no external links.
    pub fn to_html(&self) -> String {
        let md_table_rows: String = self
            .steps
            .iter()
            .map(|s| {
                format!(
                    "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>+{}</td><td>{}</td><td>{}</td></tr>\n",
                    status_word(s.status),
                    esc(&s.name),
                    esc(&s.kind),
                    esc(s.source.as_deref().unwrap_or("–")),
                    status_word(s.status),
                    secs(s.start_offset_secs),
                    secs(s.duration_secs),
                    esc(&s.detail)
                )
            })
            .collect();
        let failures: String = self
            .failures
            .iter()
            .map(|f| format!("<li>{}</li>", esc(f)))
            .collect();
        let trend = self.trend.as_ref().map(|t| t.to_html()).unwrap_or_default();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{kind} {scenario}: {verdict}</title>\n<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.failed td{{background:#fdd}}.PASSED{{color:#070}}.FAILED{{color:#b00}}</style></head>\n<body>\n<h1>{kind} <code>{scenario}</code>: <span class=\"{verdict}\">{verdict}</span></h1>\n<p>{title}</p>\n<p>run <code>{id}</code>, policy <code>{policy}</code>, started {start}, finished {end}</p>\n<h2>Timeline</h2>\n{timeline}\n<h2>RTO and RPO against targets</h2>\n{bars}\n{objectives}<h2>Steps</h2>\n<table><tr><th>step</th><th>kind</th><th>source</th><th>status</th><th>start</th><th>duration</th><th>detail</th></tr>\n{rows}</table>\n{fail}{trend}</body></html>\n",
            kind = match self.kind {
                RunKind::Drill => "Drill",
                RunKind::Incident => "Incident restore",
            },
            scenario = esc(&self.scenario),
            verdict = if self.passed { "PASSED" } else { "FAILED" },
            title = esc(&self.title),
            id = esc(&self.id),
            policy = esc(&self.policy),
            start = self.started_at.to_rfc3339(),
            end = self.finished_at.to_rfc3339(),
            timeline = self.timeline_svg(),
            bars = self.objectives_svg(),
            objectives = self.objectives_table(),
            rows = md_table_rows,
            fail = if failures.is_empty() {
                String::new()
            } else {
                format!("<h2>Failures</h2><ul>{failures}</ul>\n")
            },
        )
    }

    /// The steps on a time axis (SVG).
    pub fn timeline_svg(&self) -> String {
        let total = self
            .steps
            .iter()
            .map(|s| s.start_offset_secs + s.duration_secs)
            .fold(0.0_f64, f64::max)
            .max(0.001);
        let (label_w, chart_w, row_h) = (220.0, 700.0, 22.0);
        let h = row_h * self.steps.len() as f64 + 30.0;
        let mut svg = format!(
            "<svg width=\"{}\" height=\"{h}\" role=\"img\" aria-label=\"step timeline\">\n",
            label_w + chart_w + 20.0
        );
        for (i, s) in self.steps.iter().enumerate() {
            let y = i as f64 * row_h + 4.0;
            let x = label_w + s.start_offset_secs / total * chart_w;
            let w = (s.duration_secs / total * chart_w).max(2.0);
            let color = match s.status {
                StepStatus::Ok => "#4a4",
                StepStatus::Failed => "#c33",
                StepStatus::Skipped => "#aaa",
                StepStatus::AlreadyDone => "#8ac",
            };
            let _ = writeln!(
                svg,
                "<text x=\"4\" y=\"{:.1}\" font-size=\"12\">{}</text><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {}</title></rect>",
                y + 13.0,
                esc(&s.name),
                row_h - 6.0,
                esc(&s.name),
                secs(s.duration_secs)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{label_w}\" y=\"{:.1}\" font-size=\"11\">0 s</text><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n</svg>",
            h - 6.0,
            label_w + chart_w,
            h - 6.0,
            secs(total)
        );
        svg
    }

    /// RTO and each RPO as bars against their targets (SVG), on one log
    /// scale from 10 ms: a 3 s restore and a 6 h target are both readable.
    /// Each target is a black mark; the value and target are written beside.
    pub fn objectives_svg(&self) -> String {
        let rows = self.objective_rows();
        let top = rows
            .iter()
            .flat_map(|r| [r.achieved, r.target])
            .flatten()
            .fold(10.0_f64, f64::max)
            * 1.5;
        let (label_w, chart_w, row_h) = (200.0, 560.0, 28.0);
        let x_of = |v: f64| label_w + log_pos(v, top) * chart_w;
        let h = row_h * rows.len() as f64 + 34.0;
        let mut svg = format!(
            "<svg width=\"{}\" height=\"{h}\" role=\"img\" aria-label=\"RTO and RPO against targets (log scale)\">\n",
            label_w + chart_w + 220.0
        );
        for (i, r) in rows.iter().enumerate() {
            let y = i as f64 * row_h + 4.0;
            let w = r
                .achieved
                .map(|a| x_of(a) - label_w)
                .unwrap_or(0.0)
                .max(2.0);
            let color = if r.met { "#4a4" } else { "#c33" };
            let _ = write!(
                svg,
                "<text x=\"4\" y=\"{:.1}\" font-size=\"12\">{}</text><rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{color}\"/>",
                y + 15.0,
                esc(&r.label),
                row_h - 10.0
            );
            if let Some(t) = r.target {
                let tx = x_of(t);
                let _ = write!(
                    svg,
                    "<line x1=\"{tx:.1}\" x2=\"{tx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-width=\"3\"/>",
                    y - 3.0,
                    y + row_h - 7.0
                );
            }
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{} / target {} — {}</text>",
                label_w + chart_w + 8.0,
                y + 15.0,
                opt_secs(r.achieved),
                opt_secs(r.target),
                if r.met { "met" } else { "MISSED" }
            );
        }
        // The axis: decades and the usual objective sizes.
        let ay = rows.len() as f64 * row_h + 6.0;
        let _ = write!(
            svg,
            "<line x1=\"{label_w}\" x2=\"{:.1}\" y1=\"{ay:.1}\" y2=\"{ay:.1}\" stroke=\"#555\"/>",
            label_w + chart_w
        );
        for (v, label) in AXIS_TICKS.iter().filter(|(v, _)| *v <= top) {
            let x = x_of(*v);
            let _ = write!(
                svg,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{ay:.1}\" y2=\"{:.1}\" stroke=\"#555\"/><text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{label}</text>",
                ay + 5.0,
                ay + 17.0
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">log scale; black mark: target</text>\n</svg>",
            label_w + chart_w + 8.0,
            ay + 17.0
        );
        svg
    }

    /// The objectives as a table: achieved, target, met, and how each RPO was measured.
    pub fn objectives_table(&self) -> String {
        let mut out = String::from("<table><tr><th>objective</th><th>achieved</th><th>target</th><th>met</th><th>measured by</th></tr>\n");
        for r in self.objective_rows() {
            let _ = writeln!(
                out,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if r.met { "ok" } else { "failed" },
                esc(&r.label),
                opt_secs(r.achieved),
                opt_secs(r.target),
                yes_no(r.met),
                esc(&r.measured_by)
            );
        }
        out.push_str("</table>\n");
        out
    }

    fn objective_rows(&self) -> Vec<ObjectiveRow> {
        let mut rows = vec![ObjectiveRow {
            label: "RTO".into(),
            achieved: self.rto.achieved_secs,
            target: self.rto.target_secs,
            met: self.rto.met,
            measured_by: "end of the last step".into(),
        }];
        for r in &self.rpo {
            rows.push(ObjectiveRow {
                label: format!("RPO {}", r.source),
                achieved: Some(r.achieved_secs),
                target: r.target_secs,
                met: r.met,
                measured_by: r.measured_by.clone(),
            });
        }
        rows
    }
}

/// One objective of a report, as the HTML shows it.
struct ObjectiveRow {
    label: String,
    achieved: Option<f64>,
    target: Option<f64>,
    met: bool,
    measured_by: String,
}

/// Axis ticks of the objectives chart, in seconds.
const AXIS_TICKS: &[(f64, &str)] = &[
    (0.01, "10 ms"),
    (0.1, "0.1 s"),
    (1.0, "1 s"),
    (10.0, "10 s"),
    (60.0, "1 min"),
    (600.0, "10 min"),
    (3600.0, "1 h"),
    (6.0 * 3600.0, "6 h"),
    (86400.0, "1 d"),
    (7.0 * 86400.0, "7 d"),
];

/// The bottom of the objectives axis: drills of small data take well under a second.
const AXIS_FLOOR_SECS: f64 = 0.01;

/// Where `v` seconds falls on a log axis from [`AXIS_FLOOR_SECS`] to `top` (0..=1).
fn log_pos(v: f64, top: f64) -> f64 {
    let f = AXIS_FLOOR_SECS;
    ((v.max(f) / f).ln() / (top.max(2.0 * f) / f).ln()).clamp(0.0, 1.0)
}

fn opt_secs(s: Option<f64>) -> String {
    s.map(secs).unwrap_or_else(|| "–".into())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**NO**"
    }
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Ok => "ok",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::AlreadyDone => "already-done",
    }
}
