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

mod daemon;
mod drill;
mod engines;
mod live;
mod replicate;

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
    (wait_or_kill(child, limit), t0.elapsed())
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

/// Fault cases run together on one setup, each with its name.
type Group<'a> = Box<dyn Fn() -> Vec<(String, Case)> + 'a>;

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

/// The `[targets.s3]` table of a target that goes through `proxy`, with
/// short timeouts; its credentials are read from `{dir}/s3-key` (see [`s3_fixture`]).
fn s3_target_toml(moto: &Moto, proxy: &FaultProxy, prefix: &str) -> String {
    format!(
        "[targets.s3]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"{prefix}\"\n\
         access_key_id = {{ file = \"{{dir}}/s3-key\" }}\nsecret_access_key = {{ file = \"{{dir}}/s3-key\" }}\npart_size = \"5MiB\"\n\
         max_attempts = 2\nrequest_timeout = \"3s\"\npart_timeout = \"4s\"\nread_timeout = \"3s\"\n",
        proxy.endpoint(),
        moto.bucket,
    )
}

/// A policy whose target goes through `proxy`, with short timeouts.
fn s3_fixture(moto: &Moto, proxy: &FaultProxy, prefix: &str, body: &str) -> Fixture {
    let f = Fixture::new(&format!(
        "{}[defaults]\ntarget = \"s3\"\n[pipeline]\nstall_timeout = \"5s\"\n[compression]\nlevel = 1\n{body}",
        s3_target_toml(moto, proxy, prefix)
    ));
    std::fs::write(f.dir.path().join("s3-key"), "test").unwrap();
    f
}

/// What an interrupted run can leave under `prefix` of `moto`'s bucket that
/// no manifest covers: open multipart uploads and data objects without a
/// manifest beside them.
fn s3_leftovers(rt: &tokio::runtime::Runtime, moto: &Moto, prefix: &str) -> Vec<String> {
    rt.block_on(async {
        let c = moto.client();
        let mut out = Vec::new();
        let ups = c
            .list_multipart_uploads()
            .bucket(&moto.bucket)
            .prefix(format!("{prefix}/"))
            .send()
            .await
            .unwrap();
        for u in ups.uploads() {
            out.push(format!("open upload of {}", u.key().unwrap_or_default()));
        }
        let mut keys = std::collections::BTreeSet::new();
        let mut token = None;
        loop {
            let page = c
                .list_objects_v2()
                .bucket(&moto.bucket)
                .prefix(format!("{prefix}/"))
                .set_continuation_token(token.take())
                .send()
                .await
                .unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match page.next_continuation_token() {
                Some(t) => token = Some(t.to_string()),
                None => break,
            }
        }
        for k in &keys {
            if let Some(dir) = k.strip_suffix("data.zst.age") {
                if !keys.contains(&format!("{dir}manifest.json")) {
                    out.push(format!("data without a manifest: {k}"));
                }
            }
        }
        out
    })
}

/// `storage gc --grace 0s` succeeds and leaves nothing orphaned under `prefix`.
fn gc_leaves_nothing(f: &Fixture, rt: &tokio::runtime::Runtime, moto: &Moto, prefix: &str) -> Case {
    let o = f.gsdr(&["storage", "gc", "--grace", "0s"]);
    check(o.status.success(), || format!("storage gc: {}", text(&o)))?;
    let left = s3_leftovers(rt, moto, prefix);
    check(left.is_empty(), || format!("after storage gc: {left:?}"))
}

/// Runs `gsdr args` in the background, calls `fault` after `delay`, and
/// returns the output and the time from the fault to the end. Fails if the
/// run ended before the fault (the fault would not have landed mid-stream).
fn with_fault_after(
    f: &Fixture,
    args: &[&str],
    delay: Duration,
    fault: impl FnOnce(),
) -> Result<(Output, Duration), String> {
    let mut cmd = Command::new(gsdr_bin());
    cmd.arg("--policy")
        .arg(&f.policy)
        .args(args)
        .env("GSDR_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    std::thread::sleep(delay);
    if let Ok(Some(st)) = child.try_wait() {
        let o = child.wait_with_output().unwrap();
        return Err(format!(
            "`gsdr {}` ended ({st}) before the fault: the stream is too short: {}",
            args.join(" "),
            text(&o)
        ));
    }
    fault();
    let t0 = Instant::now();
    Ok((wait_or_kill(child, Duration::from_secs(120)), t0.elapsed()))
}

/// Waits for `child`; SIGKILLs it (a hang) if it runs longer than `limit`.
fn wait_or_kill(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o,
        Err(_) => {
            // Not reaped yet, so the pid is still the child's.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            rx.recv().unwrap()
        }
    }
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

/// `wal-push` and `wal-fetch` (PostgreSQL's archive and restore commands)
/// against a server that stops answering: each exits with its failure code
/// within the request timeout (PostgreSQL's archiver then retries), and the
/// segment pushed before the stall is still fetched whole afterwards.
fn wal_commands_with_s3_stalled(rt: &tokio::runtime::Runtime, moto: &Moto) -> Case {
    let proxy = rt.block_on(FaultProxy::start(moto.port()));
    let f = s3_fixture(
        moto,
        &proxy,
        "walfault",
        "[sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = 1\nuser = \"postgres\"\narchive_wait = \"2s\"\n",
    );
    let wal = f.dir.path().join("pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    let first = wal.join("00000002.history");
    std::fs::write(&first, b"1\t0/3000000\tno recovery target specified\n").unwrap();
    let o = f.gsdr(&["wal-push", "--source", "pg", first.to_str().unwrap()]);
    check(o.status.success(), || {
        format!("wal-push before the fault: {}", text(&o))
    })?;
    proxy.set(Mode::Stall);
    let second = wal.join("00000003.history");
    std::fs::write(
        &second,
        b"1\t0/3000000\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n",
    )
    .unwrap();
    let (o, took) = timed(
        &f,
        &["wal-push", "--source", "pg", second.to_str().unwrap()],
        &[],
        Duration::from_secs(90),
    );
    check(o.status.code() == Some(1), || {
        format!(
            "wal-push must exit 1 (the archiver retries), got {:?}: {}",
            o.status,
            text(&o)
        )
    })?;
    check(took < Duration::from_secs(30), || {
        format!("wal-push took {took:?}")
    })?;
    let dest = f.dir.path().join("fetched.history");
    let (o, took) = timed(
        &f,
        &[
            "wal-fetch",
            "--source",
            "pg",
            "00000002.history",
            dest.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(90),
    );
    check(
        !o.status.success() && took < Duration::from_secs(30),
        || {
            format!(
                "wal-fetch against a stalled server: {:?} after {took:?}: {}",
                o.status,
                text(&o)
            )
        },
    )?;
    check(!dest.exists(), || "a failed wal-fetch left its file".into())?;
    proxy.set(Mode::Pass);
    let o = f.gsdr(&[
        "wal-fetch",
        "--source",
        "pg",
        "00000002.history",
        dest.to_str().unwrap(),
    ]);
    check(o.status.success(), || {
        format!("wal-fetch after the fault: {}", text(&o))
    })?;
    check(
        std::fs::read(&dest).unwrap() == std::fs::read(&first).unwrap(),
        || "the fetched segment differs from the pushed one".into(),
    )
}

/// Replication to an off-site server that stops answering, then prune
/// against a primary whose connections are cut: both fail in time and
/// nothing committed is lost; with the servers back, the copy completes.
fn replicate_and_prune_under_s3_faults(rt: &tokio::runtime::Runtime, moto: &Moto) -> Case {
    let proxy = rt.block_on(FaultProxy::start(moto.port()));
    let dir = tempdir();
    let key = dir.path().join("s3-key");
    std::fs::write(&key, "test").unwrap();
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/primary\"\n\
         [targets.off]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"replfault\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\npart_size = \"5MiB\"\n\
         max_attempts = 2\nrequest_timeout = \"3s\"\npart_timeout = \"4s\"\nread_timeout = \"3s\"\n\
         [defaults]\ntarget = \"local\"\noffsite = \"off\"\nretention = {{ keep_last = 1 }}\n\
         [pipeline]\nstall_timeout = \"5s\"\n[compression]\nlevel = 1\n{}",
        proxy.endpoint(),
        moto.bucket,
        command_source("rp", "head -c 12000000 /dev/urandom"),
        k = key.display()
    ));
    for _ in 0..2 {
        let o = f.gsdr(&["backup", "--source", "rp"]);
        check(o.status.success(), || text(&o))?;
    }
    proxy.set(Mode::Stall);
    let (o, took) = timed(&f, &["replicate"], &[], Duration::from_secs(120));
    check(
        !o.status.success() && took < Duration::from_secs(60),
        || {
            format!(
                "replicate to a stalled server: {:?} after {took:?}: {}",
                o.status,
                text(&o)
            )
        },
    )?;
    proxy.set(Mode::Cut);
    let (o, took) = timed(&f, &["prune"], &[], Duration::from_secs(120));
    check(took < Duration::from_secs(60), || {
        format!("prune took {took:?}: {}", text(&o))
    })?;
    // Nothing was lost on the primary, whatever prune managed.
    check(listed(&f, &[]) >= 1, || {
        "the primary lost every backup".into()
    })?;
    proxy.set(Mode::Pass);
    let o = f.gsdr(&["replicate"]);
    check(o.status.success(), || {
        format!("replicate after the fault: {}", text(&o))
    })?;
    let o = f.gsdr(&["replicate", "--check"]);
    check(o.status.success(), || {
        format!("replicate --check after the fault: {}", text(&o))
    })?;
    let o = f.gsdr(&["verify", "--source", "rp", "--target", "off"]);
    check(o.status.success(), || {
        format!("verify of the off-site copy: {}", text(&o))
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
        (
            "wal-push, wal-fetch / S3 stalled",
            Box::new(|| wal_commands_with_s3_stalled(&rt, &moto)),
        ),
        (
            "replicate / off-site stalled; prune / primary cut",
            Box::new(|| replicate_and_prune_under_s3_faults(&rt, &moto)),
        ),
        ("run / injected panic", Box::new(run_with_an_injected_panic)),
        ("run / past its deadline", Box::new(run_past_its_deadline)),
    ];
    let cases: Vec<Named<'_>> = cases
        .into_iter()
        .chain([
            (
                "replicate / primary stalled mid-copy",
                Box::new(|| replicate::replicate_with_the_primary_stalled(&rt, &moto))
                    as Box<dyn Fn() -> Case>,
            ),
            (
                "daemon / next slot after a panic",
                Box::new(daemon::daemon_next_slot_after_a_panic),
            ),
            (
                "drill / S3 cut mid-download",
                Box::new(|| drill::drill_with_s3_cut(&rt, &moto)),
            ),
        ])
        .collect();
    // Groups of cases that share one (slow to start) server.
    let groups: Vec<(&str, Group<'_>)> = vec![
        (
            "backup of redis",
            Box::new(|| engines::both_faults(&rt, &moto, engines::redis_rig(&rt, &moto))),
        ),
        (
            "backup of pg",
            Box::new(|| engines::both_faults(&rt, &moto, engines::pg_rig(&rt, &moto))),
        ),
        (
            "backup of mongo",
            Box::new(|| engines::both_faults(&rt, &moto, engines::mongo_rig(&rt, &moto))),
        ),
        (
            "restore into live redis",
            Box::new(|| live::redis_restore_over_live(&rt, &moto)),
        ),
        (
            "restore over live postgres",
            Box::new(|| live::pg_restore_over_live(&rt, &moto)),
        ),
    ];
    // `GSDR_FAULTS=text` runs only the cases (or groups) whose name contains it.
    let only = std::env::var("GSDR_FAULTS").unwrap_or_default();
    let mut tried = 0;
    let mut failed = Vec::new();
    let mut record = |name: &str, r: Case, secs: f64| {
        tried += 1;
        match r {
            Ok(()) => eprintln!("fault survived: {name} ({secs:.1} s)"),
            Err(why) => {
                eprintln!("fault NOT survived: {name}: {why}");
                failed.push(format!("{name}: {why}"));
            }
        }
    };
    for (name, case) in cases.iter().filter(|(n, _)| n.contains(&only)) {
        let t0 = Instant::now();
        let r = case();
        record(name, r, t0.elapsed().as_secs_f64());
    }
    for (_, group) in groups.iter().filter(|(n, _)| n.contains(&only)) {
        let t0 = Instant::now();
        let results = group();
        // The group's time, shared by its cases.
        let secs = t0.elapsed().as_secs_f64() / results.len().max(1) as f64;
        for (name, r) in results {
            record(&name, r, secs);
        }
    }
    println!("faults: {tried} tried, {} survived", tried - failed.len());
    assert!(
        failed.is_empty(),
        "faults not survived:\n{}",
        failed.join("\n")
    );
}
