//! Pushgateway push: how a process that exits (`gsdr run --once` in a
//! CronJob, `gsdr drill --scheduled`) leaves its metrics where Prometheus
//! scrapes them.
//!
//! One `PUT <url>/metrics/job/<job>/instance/<instance>` with the registry in
//! the Prometheus text format (0.0.4): a PUT replaces every series of that
//! group, so a source that vanished from the policy vanishes from the
//! Pushgateway at the next push. The registry encodes OpenMetrics;
//! [`to_text_format`] rewrites it, because the Pushgateway parses the classic
//! text format, where a counter's TYPE line names the `_total` series. No
//! gsdr series carries a `job` label (jobs are `{kind, name}`), so the
//! Pushgateway's grouping label `job` is free.

use std::time::Duration;

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one push may take: a CronJob must not hang on a dead Pushgateway.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a push failed. Never contains the URL (it may hold credentials).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The request could not be sent or answered.
    #[error("push to the Pushgateway failed: {0}")]
    Http(#[source] reqwest::Error),
    /// The Pushgateway answered with an error status.
    #[error("the Pushgateway answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// Start of the answer's body (the Pushgateway says what it rejected).
        body: String,
    },
}

/// The grouping-key URL of `job`/`instance` under the Pushgateway at `base`.
/// A label value with characters outside `[A-Za-z0-9._-]` (or empty) is
/// sent base64url-encoded, the label name marked `@base64` as the
/// Pushgateway expects.
pub fn group_url(base: &str, job: &str, instance: &str) -> String {
    format!(
        "{}/metrics/{}/{}",
        base.trim_end_matches('/'),
        path_pair("job", job),
        path_pair("instance", instance)
    )
}

fn path_pair(label: &str, v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if plain {
        format!("{label}/{v}")
    } else if v.is_empty() {
        format!("{label}@base64/=")
    } else {
        format!("{label}@base64/{}", base64url(v.as_bytes()))
    }
}

fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

/// Rewrites an OpenMetrics exposition (what the registry encodes) into the
/// classic text format: no `# EOF` or `# UNIT` lines, a counter's
/// `# TYPE`/`# HELP` lines name its `_total` series.
pub fn to_text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(p) => {
                let rest = &line[p.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(format!("{p}{name}{suffix} {tail}").trim_end_matches(' '));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// PUTs `exposition` (OpenMetrics, as the registry encodes it) to the group
/// `job`/`instance` of the Pushgateway at `base`.
pub async fn push(
    base: &str,
    job: &str,
    instance: &str,
    exposition: &str,
) -> Result<(), PushError> {
    let client = reqwest::Client::builder()
        .timeout(PUSH_TIMEOUT)
        .build()
        .map_err(|e| PushError::Http(e.without_url()))?;
    let resp = client
        .put(group_url(base, job, instance))
        .header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT)
        .body(to_text_format(exposition))
        .send()
        .await
        .map_err(|e| PushError::Http(e.without_url()))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    Err(PushError::Status {
        status,
        body: body.chars().take(500).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_url_encodes_unsafe_values() {
        assert_eq!(
            group_url("http://pg:9091/", "gsdr", "glucosync-staging"),
            "http://pg:9091/metrics/job/gsdr/instance/glucosync-staging"
        );
        // The Pushgateway's own examples: `/var/tmp` and the empty value.
        assert_eq!(path_pair("path", "/var/tmp"), "path@base64/L3Zhci90bXA=");
        assert_eq!(path_pair("instance", ""), "instance@base64/=");
        assert_eq!(base64url(b"ab"), "YWI=");
        assert_eq!(base64url(b"abc"), "YWJj");
        assert_eq!(base64url(b"\xfb\xff"), "-_8=");
    }

    #[test]
    fn openmetrics_counters_become_text_format() {
        let om = "# HELP gsdr_backup_runs Finished runs.\n# TYPE gsdr_backup_runs counter\n\
                  gsdr_backup_runs_total{source=\"a\"} 2\n# HELP gsdr_x_seconds X.\n\
                  gsdr_job_ok{kind=\"gc\",name=\"gc\"} 1\n\
                  # TYPE gsdr_x_seconds gauge\n# UNIT gsdr_x_seconds seconds\ngsdr_x_seconds 1.5\n# EOF\n";
        assert_eq!(
            to_text_format(om),
            "# HELP gsdr_backup_runs_total Finished runs.\n# TYPE gsdr_backup_runs_total counter\n\
             gsdr_backup_runs_total{source=\"a\"} 2\n# HELP gsdr_x_seconds X.\n\
             gsdr_job_ok{kind=\"gc\",name=\"gc\"} 1\n\
             # TYPE gsdr_x_seconds gauge\ngsdr_x_seconds 1.5\n"
        );
    }
}
