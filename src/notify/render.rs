//! Message bodies: one line of text per notice, a Slack-compatible body
//! (`{"text": …, "blocks": […]}`) and a generic JSON body
//! (`{"kind": …, "severity": …, "policy": …, "text": …, <the notice's fields>}`).

use std::time::Duration;

use serde_json::{json, Value};

use super::Notice;
use crate::policy::WebhookFormat;

/// A duration in seconds as `1h 5m` (whole seconds).
fn human(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0).round() as u64)).to_string()
}

fn target(t: Option<f64>) -> String {
    t.map_or_else(|| "no target".into(), |t| format!("target {}", human(t)))
}

const FAIL: &str = ":x:";
const OK: &str = ":white_check_mark:";
const WARN: &str = ":warning:";

/// The one-line text of `n` for platform `policy` (Slack mrkdwn: names in backticks).
pub fn text(n: &Notice, policy: &str) -> String {
    let head = |icon: &str| format!("{icon} gsdr {policy}:");
    match n {
        Notice::BackupFailed { source, error } => {
            format!("{} backup of `{source}` failed: {error}", head(FAIL))
        }
        Notice::BackupRecovered { source, backup_id } => format!(
            "{} backup of `{source}` recovered (backup {backup_id})",
            head(OK)
        ),
        Notice::JobFailed {
            job_kind,
            name,
            error,
        } => format!("{} {job_kind} `{name}` failed: {error}", head(FAIL)),
        Notice::JobRecovered { job_kind, name } => {
            format!("{} {job_kind} `{name}` recovered", head(OK))
        }
        Notice::DrillFinished(d) => {
            let rto = match d.rto_secs {
                Some(r) => format!("RTO {} ({})", human(r), target(d.rto_target_secs)),
                None => "RTO not reached".into(),
            };
            let rpo: Vec<String> = d
                .rpo
                .iter()
                .map(|p| {
                    format!(
                        "RPO `{}` {} ({})",
                        p.source,
                        human(p.rpo_secs),
                        target(p.target_secs)
                    )
                })
                .collect();
            let mut parts = vec![rto];
            parts.extend(rpo);
            format!(
                "{} drill `{}` {}: {}; report {}",
                head(if d.passed { OK } else { FAIL }),
                d.scenario,
                if d.passed { "passed" } else { "FAILED" },
                parts.join(", "),
                d.report
            )
        }
        Notice::RpoAboveTarget {
            source,
            exposure_secs,
            target_secs,
        } => format!(
            "{} RPO of `{source}` is {}, above its target of {}",
            head(FAIL),
            human(*exposure_secs),
            human(*target_secs)
        ),
        Notice::RpoWithinTarget {
            source,
            exposure_secs,
            target_secs,
        } => format!(
            "{} RPO of `{source}` is back within its target ({} of {})",
            head(OK),
            human(*exposure_secs),
            human(*target_secs)
        ),
        Notice::WalLagAbove {
            source,
            lag_secs,
            threshold_secs,
        } => format!(
            "{} WAL archive of `{source}` lags {} (alert at {})",
            head(WARN),
            human(*lag_secs),
            human(*threshold_secs)
        ),
        Notice::WalLagRecovered {
            source,
            lag_secs,
            threshold_secs,
        } => format!(
            "{} WAL archive of `{source}` caught up (lag {}, alert at {})",
            head(OK),
            human(*lag_secs),
            human(*threshold_secs)
        ),
        Notice::OffsiteLagAbove {
            source,
            lag_secs,
            threshold_secs,
        } => format!(
            "{} off-site copy of `{source}` lags {} (alert at {})",
            head(WARN),
            human(*lag_secs),
            human(*threshold_secs)
        ),
        Notice::OffsiteLagRecovered {
            source,
            lag_secs,
            threshold_secs,
        } => format!(
            "{} off-site copy of `{source}` caught up (lag {}, alert at {})",
            head(OK),
            human(*lag_secs),
            human(*threshold_secs)
        ),
        Notice::VeleroFailed { job, error } => {
            format!("{} Velero backup `{job}` failed: {error}", head(FAIL))
        }
        Notice::VeleroRecovered { job, backup } => format!(
            "{} Velero backup `{job}` recovered{}",
            head(OK),
            backup
                .as_ref()
                .map(|b| format!(" (backup {b})"))
                .unwrap_or_default()
        ),
        Notice::Heartbeat => format!(":heartbeat: gsdr {policy}: nothing is failing"),
    }
}

/// The generic JSON body: `kind`, `severity`, `policy`, `text` and the notice's fields.
pub fn json_body(n: &Notice, policy: &str) -> Value {
    let mut v = serde_json::to_value(n).unwrap_or_else(|_| json!({ "kind": n.kind() }));
    if let Value::Object(m) = &mut v {
        m.insert("severity".into(), json!(n.severity()));
        m.insert("policy".into(), json!(policy));
        m.insert("text".into(), json!(text(n, policy)));
    }
    v
}

/// The Slack-compatible body: `text` (what every client shows), a section
/// block with the same text and a context line `severity · kind · policy`.
pub fn slack_body(n: &Notice, policy: &str) -> Value {
    let t = text(n, policy);
    json!({
        "text": t,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": t } },
            { "type": "context", "elements": [
                { "type": "mrkdwn", "text": format!("{} · {} · {}", n.severity().as_str(), n.kind(), policy) }
            ] }
        ]
    })
}

/// The body of `n` in `format`.
pub fn body(n: &Notice, policy: &str, format: WebhookFormat) -> Value {
    match format {
        WebhookFormat::Slack => slack_body(n, policy),
        WebhookFormat::Json => json_body(n, policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{DrillResult, SourceRpo};

    fn drill(passed: bool) -> Notice {
        Notice::DrillFinished(DrillResult {
            scenario: "full-loss".into(),
            passed,
            rto_secs: Some(754.2),
            rto_target_secs: Some(3600.0),
            rpo: vec![
                SourceRpo {
                    source: "pg".into(),
                    rpo_secs: 42.0,
                    target_secs: Some(900.0),
                },
                SourceRpo {
                    source: "cache".into(),
                    rpo_secs: 4000.0,
                    target_secs: None,
                },
            ],
            report: "s3://backups/gsdr/drills/full-loss/20261202T040000Z.json".into(),
        })
    }

    #[test]
    fn texts_name_what_happened_and_the_numbers() {
        let cases = [
            (
                Notice::BackupFailed {
                    source: "mongo".into(),
                    error: "disk full".into(),
                },
                ":x: gsdr glucosync: backup of `mongo` failed: disk full",
            ),
            (
                Notice::BackupRecovered {
                    source: "mongo".into(),
                    backup_id: "b1".into(),
                },
                ":white_check_mark: gsdr glucosync: backup of `mongo` recovered (backup b1)",
            ),
            (
                Notice::JobFailed {
                    job_kind: "prune".into(),
                    name: "pg".into(),
                    error: "denied".into(),
                },
                ":x: gsdr glucosync: prune `pg` failed: denied",
            ),
            (
                drill(true),
                ":white_check_mark: gsdr glucosync: drill `full-loss` passed: RTO 12m 34s (target 1h), RPO `pg` 42s (target 15m), RPO `cache` 1h 6m 40s (no target); report s3://backups/gsdr/drills/full-loss/20261202T040000Z.json",
            ),
            (
                Notice::RpoAboveTarget {
                    source: "pg".into(),
                    exposure_secs: 5400.0,
                    target_secs: 3600.0,
                },
                ":x: gsdr glucosync: RPO of `pg` is 1h 30m, above its target of 1h",
            ),
            (
                Notice::WalLagAbove {
                    source: "pg".into(),
                    lag_secs: 1200.0,
                    threshold_secs: 900.0,
                },
                ":warning: gsdr glucosync: WAL archive of `pg` lags 20m (alert at 15m)",
            ),
            (
                Notice::OffsiteLagRecovered {
                    source: "pg".into(),
                    lag_secs: 60.0,
                    threshold_secs: 3600.0,
                },
                ":white_check_mark: gsdr glucosync: off-site copy of `pg` caught up (lag 1m, alert at 1h)",
            ),
            (
                Notice::VeleroRecovered {
                    job: "cluster-full".into(),
                    backup: None,
                },
                ":white_check_mark: gsdr glucosync: Velero backup `cluster-full` recovered",
            ),
            (
                Notice::Heartbeat,
                ":heartbeat: gsdr glucosync: nothing is failing",
            ),
        ];
        for (n, want) in cases {
            assert_eq!(text(&n, "glucosync"), want);
        }
        assert!(text(&drill(false), "p")
            .starts_with(":x: gsdr p: drill `full-loss` FAILED: RTO 12m 34s"));
    }

    #[test]
    fn json_body_carries_kind_severity_policy_and_the_fields() {
        assert_eq!(
            json_body(&drill(false), "glucosync"),
            json!({
                "kind": "drill_finished",
                "severity": "critical",
                "policy": "glucosync",
                "text": text(&drill(false), "glucosync"),
                "scenario": "full-loss",
                "passed": false,
                "rto_secs": 754.2,
                "rto_target_secs": 3600.0,
                "rpo": [
                    { "source": "pg", "rpo_secs": 42.0, "target_secs": 900.0 },
                    { "source": "cache", "rpo_secs": 4000.0, "target_secs": null }
                ],
                "report": "s3://backups/gsdr/drills/full-loss/20261202T040000Z.json"
            })
        );
        assert_eq!(
            json_body(&Notice::Heartbeat, "p"),
            json!({"kind": "heartbeat", "severity": "info", "policy": "p", "text": ":heartbeat: gsdr p: nothing is failing"})
        );
        let lag = Notice::OffsiteLagAbove {
            source: "pg".into(),
            lag_secs: 4000.0,
            threshold_secs: 3600.0,
        };
        assert_eq!(json_body(&lag, "p")["severity"], "warning");
    }

    #[test]
    fn slack_body_has_text_and_blocks() {
        let n = Notice::VeleroFailed {
            job: "cluster-full".into(),
            error: "phase PartiallyFailed".into(),
        };
        let t = ":x: gsdr glucosync: Velero backup `cluster-full` failed: phase PartiallyFailed";
        assert_eq!(
            body(&n, "glucosync", WebhookFormat::Slack),
            json!({
                "text": t,
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": t } },
                    { "type": "context", "elements": [
                        { "type": "mrkdwn", "text": "critical · velero_failed · glucosync" }
                    ] }
                ]
            })
        );
        assert_eq!(
            body(&n, "glucosync", WebhookFormat::Json)["kind"],
            "velero_failed"
        );
    }
}
