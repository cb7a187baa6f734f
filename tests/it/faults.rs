//! The fault suite: every operation under every fault it can meet unattended
//! ends within a bound, says it failed, lists nothing unrestorable, and loses
//! nothing that was already committed.
//!
//! Real servers only: moto behind [`FaultProxy`] (a server that stops
//! answering, answers 503, or cuts connections), a tmpfs for a full disk
//! (the suite runs as root, as CI does), real child processes killed or
//! stalled mid-stream, and the real `gsdr` binary. One test runs the cases
//! one after the other and prints `faults: N tried, N survived`.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::Fixture;
use crate::support::faults::{FaultProxy, Mode};
use crate::support::moto::Moto;
use crate::support::{gsdr_bin, tempdir};

/// A mounted tmpfs of `mib` MiB, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u32) -> Tmpfs {
        let dir = tempdir();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the full-disk faults failed (the suite needs root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn entries(&self) -> Vec<String> {
        walk(self.path())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn walk(p: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    out
}

/// Runs gsdr with `f`'s policy, killed after `limit`; returns the output and the time taken.
fn timed(f: &Fixture, args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Output, Duration) {
    let t0 = Instant::now();
    let mut cmd = Command::new(gsdr_bin());
    cmd.arg("--policy")
        .arg(&f.policy)
        .args(args)
        .env("GSDR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(limit);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    (out, t0.elapsed())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The backups `gsdr list` shows for `f`.
fn listed(f: &Fixture, extra: &[&str]) -> usize {
    let mut a = vec!["--json", "list"];
    a.extend_from_slice(extra);
    let out = f.gsdr(&a);
    assert!(out.status.success(), "list failed: {}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["backups"].as_array().map_or(0, |b| b.len())
}

/// One case: `Ok` when it survived, `Err(why)` otherwise.
type Case = Result<(), String>;

/// A named fault case.
type Named<'a> = (&'static str, Box<dyn Fn() -> Case + 'a>);

fn check(cond: bool, why: impl FnOnce() -> String) -> Case {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

/// A failed run that ended in time and said what failed.
fn failed_in_time(o: &Output, took: Duration, bound: Duration, needle: &str) -> Case {
    check(took < bound, || {
        format!("took {took:?} (bound {bound:?}): {}", text(o))
    })?;
    check(!o.status.success() && o.status.code().is_some(), || {
        format!(
            "expected a failure exit code, got {:?}: {}",
            o.status,
            text(o)
        )
    })?;
    check(text(o).contains(needle), || {
        format!("expected `{needle}` in: {}", text(o))
    })
}

const FS_SOURCE: &str =
    "[targets.local]\nkind = \"fs\"\npath = \"{dir}/t\"\n[defaults]\ntarget = \"local\"\n\
    [pipeline]\nstall_timeout = \"3s\"\n[compression]\nlevel = 1\n";

fn command_source(name: &str, script: &str) -> String {
    format!(
        "[sources.{name}]\nkind = \"command\"\n[sources.{name}.command]\nargv = [\"sh\", \"-c\", \"{script}\"]\n"
    )
}

/// The acceptance reproduction: 300 MB to a 20 MiB folder target.
fn backup_to_a_full_folder_target() -> Case {
    let disk = Tmpfs::new(20);
    let f = Fixture::new(&format!(
        "[targets.full]\nkind = \"fs\"\npath = \"{}\"\n[defaults]\ntarget = \"full\"\n{}",
        disk.path().display(),
        command_source("big", "head -c 300000000 /dev/urandom")
    ));
    let (o, took) = timed(
        &f,
        &["backup", "--source", "big"],
        &[],
        Duration::from_secs(60),
    );
    failed_in_time(&o, took, Duration::from_secs(10), "No space left on device")?;
    check(
        text(&o).contains(&disk.path().display().to_string()),
        || format!("the error must name the target: {}", text(&o)),
    )?;
    check(listed(&f, &[]) == 0, || "a failed backup is listed".into())?;
    check(disk.entries().is_empty(), || {
        format!("left behind: {:?}", disk.entries())
    })
}

fn backup_of_a_source_killed_mid_stream() -> Case {
    let f = Fixture::new(&format!(
        "{FS_SOURCE}{}",
        command_source("k", "head -c 5000000 /dev/urandom; kill -9 $$")
    ));
    let (o, took) = timed(
        &f,
        &["backup", "--source", "k"],
        &[],
        Duration::from_secs(60),
    );
    failed_in_time(&o, took, Duration::from_secs(15), "k")?;
    check(listed(&f, &[]) == 0, || {
        "a killed source's backup is listed".into()
    })
}

fn backup_of_a_source_that_stalls() -> Case {
    let f = Fixture::new(&format!(
        "{FS_SOURCE}{}",
        command_source("st", "head -c 1000000 /dev/urandom; exec sleep 600")
    ));
    let (o, took) = timed(
        &f,
        &["backup", "--source", "st"],
        &[],
        Duration::from_secs(60),
    );
    failed_in_time(
        &o,
        took,
        Duration::from_secs(20),
        "the source `st` made no progress for 3 s",
    )?;
    check(listed(&f, &[]) == 0, || "a stalled backup is listed".into())
}

fn restore_to_a_full_disk() -> Case {
    let disk = Tmpfs::new(5);
    let f = Fixture::new(&format!(
        "{FS_SOURCE}{}",
        command_source("r", "head -c 30000000 /dev/urandom")
    ));
    let o = f.gsdr(&["backup", "--source", "r"]);
    check(o.status.success(), || text(&o))?;
    let dest = disk.path().join("out.bin");
    let (o, took) = timed(
        &f,
        &[
            "restore",
            "--source",
            "r",
            "--to-file",
            dest.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(60),
    );
    failed_in_time(&o, took, Duration::from_secs(10), "No space left on device")?;
    check(disk.entries().is_empty(), || {
        format!("a partial restore was left: {:?}", disk.entries())
    })?;
    // The backup itself is intact.
    let o = f.gsdr(&["verify", "--source", "r"]);
    check(o.status.success(), || {
        format!("verify after the failed restore: {}", text(&o))
    })
}

/// A policy whose target goes through `proxy`, with short timeouts.
fn s3_fixture(moto: &Moto, proxy: &FaultProxy, prefix: &str, body: &str) -> Fixture {
    let dir = tempdir();
    let key = dir.path().join("s3-key");
    std::fs::write(&key, "test").unwrap();
    let f = Fixture::new(&format!(
        "[targets.s3]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\npart_size = \"5MiB\"\n\
         max_attempts = 2\nrequest_timeout = \"3s\"\npart_timeout = \"4s\"\nread_timeout = \"3s\"\n\
         [defaults]\ntarget = \"s3\"\n[pipeline]\nstall_timeout = \"5s\"\n[compression]\nlevel = 1\n{body}",
        proxy.endpoint(),
        moto.bucket,
        k = key.display(),
        prefix = prefix
    ));
    std::mem::forget(dir);
    f
}

/// A backup whose S3 server fails (`mode`) after about 8 MB went up.
fn backup_with_s3_fault(rt: &tokio::runtime::Runtime, moto: &Moto, mode: Mode, name: &str) -> Case {
    let proxy = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &proxy,
        name,
        &command_source(
            name,
            "head -c 8000000 /dev/urandom; sleep 1; head -c 30000000 /dev/urandom",
        ),
    );
    let t0 = Instant::now();
    let run = std::thread::spawn({
        let policy = f.policy.clone();
        let name = name.to_string();
        move || {
            Command::new(gsdr_bin())
                .arg("--policy")
                .arg(&policy)
                .args(["backup", "--source", &name])
                .env("GSDR_LOG", "warn")
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(700));
    proxy.set(mode);
    let o = run.join().unwrap();
    let took = t0.elapsed();
    failed_in_time(&o, took, Duration::from_secs(45), "s3://")?;
    proxy.set(Mode::Pass);
    check(listed(&f, &[]) == 0, || {
        format!("a backup cut by {mode:?} is listed")
    })?;
    // The next backup, with the server healthy again, commits.
    let o = f.gsdr(&["backup", "--source", name]);
    check(o.status.success(), || {
        format!("the next backup after {mode:?}: {}", text(&o))
    })?;
    check(listed(&f, &[]) == 1, || {
        "the next backup is not listed".into()
    })
}

fn restore_with_s3_stalled_mid_download(rt: &tokio::runtime::Runtime, moto: &Moto) -> Case {
    let proxy = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &proxy,
        "dl",
        &command_source("dl", "head -c 40000000 /dev/urandom"),
    );
    let o = f.gsdr(&["backup", "--source", "dl"]);
    check(o.status.success(), || text(&o))?;
    let dest = f.dir.path().join("restored.bin");
    let t0 = Instant::now();
    let run = std::thread::spawn({
        let policy = f.policy.clone();
        let dest = dest.clone();
        move || {
            Command::new(gsdr_bin())
                .arg("--policy")
                .arg(&policy)
                .args(["restore", "--source", "dl", "--to-file"])
                .arg(&dest)
                .env("GSDR_LOG", "warn")
                .output()
                .unwrap()
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    proxy.set(Mode::Stall);
    let o = run.join().unwrap();
    let took = t0.elapsed();
    proxy.set(Mode::Pass);
    if o.status.success() {
        // The download was quicker than the fault: nothing to judge, but nothing wrong either.
        return check(dest.exists(), || {
            "restore succeeded without its file".into()
        });
    }
    failed_in_time(&o, took, Duration::from_secs(30), "dl")?;
    check(!dest.exists(), || {
        "a partial restore has the final name".into()
    })
}

fn run_with_an_injected_panic() -> Case {
    let f = Fixture::new(&format!("{FS_SOURCE}{}", command_source("p", "echo data")));
    let flag = f.dir.path().join("panic-once");
    std::fs::write(&flag, b"").unwrap();
    let (o, took) = timed(
        &f,
        &["run", "--once", "--source", "p"],
        &[("GSDR_TEST_PANIC_ONCE", flag.to_str().unwrap())],
        Duration::from_secs(60),
    );
    failed_in_time(&o, took, Duration::from_secs(20), "panicked")?;
    check(listed(&f, &[]) == 0, || {
        "a panicked run listed a backup".into()
    })?;
    // The lease was released: the next run is not refused as busy, and commits.
    let (o, _) = timed(
        &f,
        &["run", "--once", "--source", "p"],
        &[("GSDR_TEST_PANIC_ONCE", flag.to_str().unwrap())],
        Duration::from_secs(60),
    );
    check(o.status.success(), || {
        format!("the run after the panic: {}", text(&o))
    })?;
    check(listed(&f, &[]) == 1, || {
        "the run after the panic committed nothing".into()
    })
}

fn run_past_its_deadline() -> Case {
    // Always making progress (no stall), never finishing.
    let f = Fixture::new(&format!(
        "{FS_SOURCE}[sources.slow]\nkind = \"command\"\ntimeout = \"2s\"\n[sources.slow.command]\n\
         argv = [\"sh\", \"-c\", \"while true; do head -c 1000 /dev/urandom; sleep 0.2; done\"]\n"
    ));
    let (o, took) = timed(
        &f,
        &["run", "--once", "--source", "slow"],
        &[],
        Duration::from_secs(60),
    );
    failed_in_time(
        &o,
        took,
        Duration::from_secs(25),
        "ran past its deadline of 2s",
    )?;
    check(listed(&f, &[]) == 0, || {
        "a cancelled run listed a backup".into()
    })?;
    // Its lease was released: another run starts at once (and fails the same way, not as busy).
    let (o, _) = timed(
        &f,
        &["run", "--once", "--source", "slow"],
        &[],
        Duration::from_secs(60),
    );
    check(text(&o).contains("ran past its deadline"), || {
        format!("the second run did not run: {}", text(&o))
    })
}

fn backup_when_gsdr_is_sigkilled() -> Case {
    let f = Fixture::new(&format!(
        "{FS_SOURCE}{}",
        command_source("sk", "head -c 5000000 /dev/urandom; exec sleep 600")
    ));
    let (o, _) = timed(
        &f,
        &["backup", "--source", "sk"],
        &[],
        Duration::from_millis(1500),
    );
    check(o.status.code().is_none(), || {
        format!("expected the backup to be killed: {}", text(&o))
    })?;
    check(listed(&f, &[]) == 0, || "a killed backup is listed".into())?;
    // What the kill left behind is garbage that gc removes, and nothing else.
    std::thread::sleep(Duration::from_millis(1100));
    let o = f.gsdr(&["storage", "gc", "--grace", "1s"]);
    check(o.status.success(), || format!("storage gc: {}", text(&o)))?;
    let left: Vec<String> = walk(&f.dir.path().join("t"))
        .into_iter()
        .filter(|p| p.contains(".tmp") || p.contains("data.zst.age"))
        .collect();
    check(left.is_empty(), || format!("gc left: {left:?}"))?;
    let o = f.gsdr(&["backup", "--source", "sk"]);
    // The source still stalls, so this one fails too, but cleanly and in time.
    check(!o.status.success(), || "a stalled source committed".into())
}

#[test]
fn fault_suite() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = rt.block_on(Moto::start_own(&[]));
    let cases: Vec<Named<'_>> = vec![
        (
            "backup / folder target full",
            Box::new(backup_to_a_full_folder_target),
        ),
        (
            "backup / source killed mid-stream",
            Box::new(backup_of_a_source_killed_mid_stream),
        ),
        (
            "backup / source stalls",
            Box::new(backup_of_a_source_that_stalls),
        ),
        (
            "backup / gsdr SIGKILLed",
            Box::new(backup_when_gsdr_is_sigkilled),
        ),
        (
            "restore to file / disk full",
            Box::new(restore_to_a_full_disk),
        ),
        (
            "backup / S3 stalled with no response",
            Box::new(|| backup_with_s3_fault(&rt, &moto, Mode::Stall, "stall")),
        ),
        (
            "backup / S3 503 after retries",
            Box::new(|| backup_with_s3_fault(&rt, &moto, Mode::Fail503, "fivexx")),
        ),
        (
            "backup / S3 cut mid-stream",
            Box::new(|| backup_with_s3_fault(&rt, &moto, Mode::Cut, "cut")),
        ),
        (
            "restore to file / S3 stalled mid-download",
            Box::new(|| restore_with_s3_stalled_mid_download(&rt, &moto)),
        ),
        ("run / injected panic", Box::new(run_with_an_injected_panic)),
        ("run / past its deadline", Box::new(run_past_its_deadline)),
    ];
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let t0 = Instant::now();
        match case() {
            Ok(()) => eprintln!(
                "fault survived: {name} ({:.1} s)",
                t0.elapsed().as_secs_f64()
            ),
            Err(why) => {
                eprintln!("fault NOT survived: {name}: {why}");
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    println!(
        "faults: {} tried, {} survived",
        cases.len(),
        cases.len() - failed.len()
    );
    assert!(
        failed.is_empty(),
        "faults not survived:\n{}",
        failed.join("\n")
    );
}
