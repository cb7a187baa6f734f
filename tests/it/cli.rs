//! End-to-end runs of the real `gsdr` binary against a local folder target:
//! backup → list → verify → restore, and every way the data can be damaged.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use sha2::{Digest, Sha256};

use crate::support::{gsdr_bin, tempdir};

/// A temp dir with an identity, a policy and a folder target.
pub struct Fixture {
    /// Keeps the temp dir alive.
    pub dir: tempfile::TempDir,
    /// Policy path.
    pub policy: PathBuf,
    /// Identity file.
    pub identity: PathBuf,
    /// Recipient (public key).
    pub recipient: String,
}

impl Fixture {
    /// A policy with the given `[targets…]`/`[sources…]` TOML appended (use `{dir}` for the temp dir).
    pub fn new(body: &str) -> Fixture {
        let dir = tempdir();
        let identity = dir.path().join("identity.txt");
        let out = Command::new(gsdr_bin())
            .args(["keygen", "-o"])
            .arg(&identity)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let policy = dir.path().join("policy.toml");
        let text = format!(
            "name = \"test\"\n[encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{}\"\n{}",
            identity.display(),
            body.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&policy, text).unwrap();
        Fixture {
            dir,
            policy,
            identity,
            recipient,
        }
    }

    /// Runs gsdr with this policy.
    pub fn gsdr(&self, args: &[&str]) -> Output {
        Command::new(gsdr_bin())
            .arg("--policy")
            .arg(&self.policy)
            .args(args)
            .env("GSDR_LOG", "warn")
            .output()
            .unwrap()
    }

    /// Runs gsdr and returns its stdout parsed as JSON, asserting success.
    pub fn gsdr_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.gsdr(&a);
        assert!(
            out.status.success(),
            "gsdr {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

pub(crate) fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(p).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes ~24 MiB of JSON-like data, returns its path and SHA-256.
fn input_file(dir: &Path) -> (PathBuf, String) {
    let p = dir.join("input.jsonl");
    let mut s = String::new();
    let mut x: u64 = 42;
    while s.len() < 24 << 20 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s += &format!(
            "{{\"patient\":\"p{}\",\"mg_dl\":{},\"ts\":{}}}\n",
            x >> 48,
            (x >> 20) % 400,
            x >> 30
        );
    }
    std::fs::write(&p, s).unwrap();
    let h = sha256_file(&p);
    (p, h)
}

const FS_TARGET: &str = "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n";

fn cat_source(path: &Path) -> String {
    format!(
        "[sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n",
        path.display()
    )
}

pub(crate) fn fixture_with_backup() -> (Fixture, String, String) {
    let pre = tempdir();
    let (input, _) = input_file(pre.path());
    let f = Fixture::new(&format!("{FS_TARGET}{}", cat_source(&input)));
    // Move the input into the fixture dir so it outlives `pre`.
    let kept = f.dir.path().join("input.jsonl");
    std::fs::copy(&input, &kept).unwrap();
    let text = std::fs::read_to_string(&f.policy)
        .unwrap()
        .replace(&input.display().to_string(), &kept.display().to_string());
    std::fs::write(&f.policy, text).unwrap();
    let want = sha256_file(&kept);
    let j = f.gsdr_json(&["backup"]);
    let id = j["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (f, id, want)
}

pub(crate) fn data_object(f: &Fixture, id: &str) -> PathBuf {
    f.dir
        .path()
        .join("store/data/stdout")
        .join(id)
        .join("data.zst.age")
}

#[test]
fn backup_list_verify_restore_round_trip() {
    let (f, id, want) = fixture_with_backup();
    let list = f.gsdr_json(&["list"]);
    assert_eq!(list["schema_version"], 1);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0]["id"], id.as_str());
    assert_eq!(backups[0]["raw_sha256"], want.as_str());
    assert!(
        backups[0]["stored_bytes"].as_u64().unwrap()
            < backups[0]["raw_bytes"].as_u64().unwrap() / 2,
        "JSON-like data compresses"
    );
    // The stored object holds no plaintext.
    let stored = std::fs::read(data_object(&f, &id)).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    assert!(!stored.windows(8).any(|w| w == b"\"patient"));

    let v = f.gsdr_json(&["verify", &id]);
    assert_eq!(v["results"][0]["ok"], true);

    let out = f.dir.path().join("restored.jsonl");
    let r = f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(sha256_file(&out), want);

    // Restoring again over the file is refused unless --force.
    let again = f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again).contains("refusing to overwrite"),
        "{}",
        stderr(&again)
    );

    // To stdout as well.
    let r = f.gsdr(&["restore", "--source", "data", "--to-file", "-"]);
    assert!(r.status.success());
    assert_eq!(hex::encode(Sha256::digest(&r.stdout)), want);
}

#[test]
fn flipped_byte_fails_verify_and_restore_leaves_nothing() {
    let (f, id, _) = fixture_with_backup();
    let obj = data_object(&f, &id);
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&obj, bytes).unwrap();

    let v = f.gsdr(&["verify", &id]);
    assert_eq!(v.status.code(), Some(1), "a failed check exits 1");
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("FAILED") && text.contains("corrupt"),
        "{text}"
    );

    let out = f.dir.path().join("restored.jsonl");
    let r = f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "damage found exits 1 from every command"
    );
    assert!(stderr(&r).contains("corrupt"), "{}", stderr(&r));
    assert!(
        !out.exists(),
        "a failed restore must not leave a file that looks complete"
    );
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial file left behind");
}

#[test]
fn truncated_object_is_a_distinct_error() {
    let (f, id, _) = fixture_with_backup();
    let obj = data_object(&f, &id);
    let bytes = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let out = f.dir.path().join("restored.jsonl");
    let r = f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "damage found exits 1 from every command"
    );
    assert!(stderr(&r).contains("truncated"), "{}", stderr(&r));
    let v = f.gsdr(&["verify", &id]);
    assert_eq!(v.status.code(), Some(1), "verify reports it as damage");
    assert!(String::from_utf8_lossy(&v.stdout).contains("truncated"));
    assert!(!out.exists());
}

#[test]
fn wrong_identity_is_a_distinct_error() {
    let (f, id, _) = fixture_with_backup();
    let other = f.dir.path().join("other.txt");
    assert!(Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success());
    let out = f.dir.path().join("restored.jsonl");
    let r = f.gsdr(&[
        "--identity",
        other.to_str().unwrap(),
        "restore",
        &id,
        "--to-file",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(2));
    let e = stderr(&r);
    assert!(e.contains("wrong key"), "{e}");
    assert!(
        e.contains(&f.recipient),
        "names the recipients the backup was encrypted to: {e}"
    );
    assert!(!e.contains("AGE-SECRET-KEY"), "never prints a private key");
    assert!(!out.exists());
}

#[test]
fn failing_command_leaves_no_backup() {
    let f = Fixture::new(&format!(
        "{FS_TARGET}[sources.bad]\nkind = \"command\"\n[sources.bad.command]\nargv = [\"sh\", \"-c\", \"head -c 3000000 /dev/urandom; echo oops >&2; exit 3\"]\n"
    ));
    let r = f.gsdr(&["backup"]);
    assert_eq!(r.status.code(), Some(2));
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("exited with exit status: 3") && out.contains("oops"),
        "{out}"
    );
    let list = f.gsdr_json(&["list"]);
    assert_eq!(list["backups"].as_array().unwrap().len(), 0);
    // No data object either: the upload was abandoned, not committed.
    let files: Vec<_> = walk(&f.dir.path().join("store"));
    assert!(files.is_empty(), "left behind: {files:?}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn keygen_writes_a_private_file_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let p = dir.path().join("id.txt");
    let out = Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("age1"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("AGE-SECRET-KEY"));
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let again = Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
}

#[test]
fn policy_errors_name_file_line_and_field() {
    let f = Fixture::new(&format!("{FS_TARGET}[sources.x]\nkind = \"command\"\nschedul = \"0 * * * *\"\n[sources.x.command]\nargv = [\"true\"]\n"));
    let r = f.gsdr(&["policy", "check"]);
    assert_eq!(r.status.code(), Some(2));
    let e = stderr(&r);
    // The unknown key's own line (7: after name, 4 lines of encryption and target) and dotted path.
    assert!(e.contains("policy.toml:"), "{e}");
    assert!(e.contains(": sources.x.schedul: unknown field"), "{e}");

    let f = Fixture::new(&format!("{FS_TARGET}[sources.x]\nkind = \"command\"\nschedule = \"0 */6 * *\"\n[sources.x.command]\nargv = [\"true\"]\n"));
    let e = stderr(&f.gsdr(&["policy", "check"]));
    assert!(e.contains("schedule") && e.contains("cron"), "{e}");

    let f = Fixture::new(&format!("{FS_TARGET}[sources.x]\nkind = \"command\"\ntarget = \"nowhere\"\n[sources.x.command]\nargv = [\"true\"]\n"));
    let e = stderr(&f.gsdr(&["policy", "check"]));
    assert!(
        e.contains("sources.x.target") && e.contains("nowhere") && e.contains(":"),
        "{e}"
    );

    // A secret written inline is refused.
    let f = Fixture::new("[targets.s3]\nkind = \"s3\"\nbucket = \"b\"\naccess_key_id = { env = \"K\" }\nsecret_access_key = \"hunter2\"\n");
    let e = stderr(&f.gsdr(&["policy", "check"]));
    assert!(e.contains("never written in the policy"), "{e}");
    assert!(
        e.contains("policy.toml:9: targets.s3.secret_access_key:"),
        "the inline secret, at its own line: {e}"
    );
    assert!(!e.contains("hunter2"), "the secret must not be echoed: {e}");
}

#[test]
fn not_built_engines_say_so_with_exit_2() {
    let f = Fixture::new(&format!(
        "{FS_TARGET}[sources.m]\nkind = \"mongo\"\n[sources.m.mongo]\n"
    ));
    let r = f.gsdr(&["backup"]);
    if r.status.code() == Some(2) && stdout_or_err(&r).contains("not supported yet") {
        return;
    }
    // Once the engine exists, the same policy must fail for its missing settings, not succeed.
    assert_ne!(
        r.status.code(),
        Some(0),
        "an unconfigured engine must not report success"
    );
}

fn stdout_or_err(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `gsdr completions SHELL` and `gsdr man` need no policy, exit 0 and print
/// what each shell (or `man`) reads: the subcommands are in it.
#[test]
fn completions_and_man_page_are_generated() {
    let run = |args: &[&str]| {
        let o = Command::new(gsdr_bin())
            .args(args)
            .env_remove("GSDR_POLICY")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "gsdr {args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("restore"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(
        zsh.starts_with("#compdef gsdr") && zsh.contains("restore"),
        "{zsh}"
    );
    let fish = run(&["completions", "fish"]);
    assert!(
        fish.contains("complete -c gsdr") && fish.contains("restore"),
        "{fish}"
    );
    let man = run(&["man"]);
    assert!(man.contains(".TH gsdr") && man.contains("restore"), "{man}");
}

/// Issue 18: a PostgreSQL that does not answer is named once with the root
/// cause once (`connection refused`) and the fix, in `policy check --connect`
/// and in the backup.
#[test]
fn an_unreachable_postgres_names_the_server_and_the_root_cause_once() {
    let port = crate::support::free_port();
    let f = Fixture::new(&format!(
        "{FS_TARGET}[sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {port}\nuser = \"postgres\"\n"
    ));
    for args in [&["policy", "check", "--connect"][..], &["backup"][..]] {
        let out = f.gsdr(args);
        assert!(!out.status.success(), "{args:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let want = format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} as `postgres`: connection refused; check host, port and pg_hba.conf"
        );
        assert!(text.contains(&want), "{args:?}: {text}");
        assert_eq!(
            text.to_lowercase().matches("refused").count(),
            1,
            "{args:?}: {text}"
        );
    }
}

/// Issue 18: a restore into a folder that does not exist says so once (the
/// OS error is not repeated by the cause chain) and exits 2.
#[test]
fn a_restore_into_a_missing_folder_prints_the_os_error_once() {
    let (f, id, _) = fixture_with_backup();
    let out = f.gsdr(&["restore", &id, "--to-file", "/nonexistent/gsdr-dir/x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("`/nonexistent/gsdr-dir/x`"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
