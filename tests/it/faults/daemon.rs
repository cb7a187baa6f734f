//! The daemon's next slot after a fault: a real `gsdr daemon` on a schedule
//! of every second whose first job panics (the debug-build hook
//! `GSDR_TEST_PANIC_ONCE`). The panic is counted and reported as a failed
//! attempt, the lease is released, and a following slot commits a backup;
//! `/readyz` stays ready. Driven only through the policy and the CLI.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{check, listed, Case};
use crate::cli::Fixture;
use crate::support::free_port;

/// How long after the daemon started a committed backup must be listed.
const BOUND: Duration = Duration::from_secs(30);

/// The value of the first sample of `name` whose labels mention `"dp"`.
fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains("\"dp\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub(super) fn daemon_next_slot_after_a_panic() -> Case {
    let port = free_port();
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/t\"\n[defaults]\ntarget = \"local\"\n\
         [sources.dp]\nkind = \"command\"\nschedule = \"* * * * * *\"\n\
         [sources.dp.command]\nargv = [\"head\", \"-c\", \"100000\", \"/dev/urandom\"]\n\
         [daemon]\nmetrics_addr = \"127.0.0.1:{port}\"\ngrace_period = \"5s\"\n"
    ));
    let flag = f.dir.path().join("panic-once");
    std::fs::write(&flag, b"").unwrap();
    let mut child = std::process::Command::new(crate::support::gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .arg("daemon")
        .env("GSDR_LOG", "warn")
        .env("GSDR_TEST_PANIC_ONCE", &flag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let url = format!("http://127.0.0.1:{port}");
    let mut body = String::new();
    let mut committed = false;
    while t0.elapsed() < BOUND {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("the daemon exited ({st})"));
        }
        body = crate::daemon::http::blocking_get(&format!("{url}/metrics"));
        if metric(&body, "gsdr_backup_last_attempt_success") == Some(1.0) && !flag.exists() {
            committed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = t0.elapsed();
    let ready = crate::daemon::http::blocking_status(&format!("{url}/readyz"));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let out = super::wait_or_kill(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "  daemon: a backup committed {:.1} s after start, after the panic",
        took.as_secs_f64()
    );
    check(committed, || {
        format!("no slot committed within {BOUND:?} of the panic:\n{body}\n{stderr}")
    })?;
    check(!flag.exists(), || "the injected panic never ran".into())?;
    check(
        metric(&body, "gsdr_job_panics_total").is_some_and(|v| v >= 1.0),
        || format!("gsdr_job_panics_total does not count the panic:\n{body}"),
    )?;
    check(
        metric(&body, "gsdr_backup_failures_total").is_some_and(|v| v >= 1.0),
        || format!("gsdr_backup_failures_total does not count the panic:\n{body}"),
    )?;
    check(ready == 200, || format!("/readyz answered {ready}"))?;
    check(out.status.success(), || {
        format!(
            "the daemon did not stop cleanly on SIGTERM: {:?}: {stderr}",
            out.status
        )
    })?;
    check(listed(&f, &[]) >= 1, || "no backup listed".into())
}
