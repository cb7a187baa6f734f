//! `gsdr policy check` on every shipped policy: `policies/*.toml` and
//! `deploy/overlays/*/policy.toml`. Their `recipients_file` (an operator's
//! `/etc/gsdr/…` or the demo's `.gsdr-demo/…`) is the one path the check
//! reads, so the test points it at a file of fresh recipients.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

use crate::support::{gsdr_bin, tempdir};

fn shipped() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
    for e in std::fs::read_dir(root.join("deploy/overlays")).unwrap() {
        let p = e.unwrap().path().join("policy.toml");
        if p.exists() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A fresh key pair in `dir`; the path of its recipients file.
fn fresh_recipients(dir: &Path) -> PathBuf {
    let k = Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(dir.join("identity.txt"))
        .output()
        .unwrap();
    assert!(k.status.success());
    let recipients = dir.join("recipients.txt");
    std::fs::write(&recipients, &k.stdout).unwrap();
    recipients
}

#[test]
fn every_shipped_policy_passes_policy_check() {
    let dir = tempdir();
    let recipients = fresh_recipients(dir.path());
    let files = shipped();
    assert!(files.len() >= 5, "policies/ and both overlays: {files:?}");
    let mut names = Vec::new();
    for (i, p) in files.iter().enumerate() {
        let text = std::fs::read_to_string(p).unwrap();
        let edited: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("recipients_file") {
                    format!("recipients_file = \"{}\"", recipients.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let copy = dir.path().join(format!("{i}.toml"));
        std::fs::write(&copy, edited).unwrap();
        let out = Command::new(gsdr_bin())
            .current_dir(dir.path())
            .arg("--policy")
            .arg(&copy)
            .args(["policy", "check"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("is valid"),
            "{}",
            p.display()
        );
        names.push(p.file_name().unwrap().to_owned());
    }
    assert!(names.iter().any(|n| n == "reference.toml"), "{names:?}");
}

/// `gsdr policy check` rejects, for every engine, a setting its run would
/// refuse, naming the setting's line and path, and a backup with the same
/// policy fails with the same words before it touches anything.
#[test]
fn policy_check_rejects_each_engines_invalid_settings() {
    let dir = tempdir();
    let recipients = fresh_recipients(dir.path());
    let cases = [
        (
            "command",
            "[sources.s.command]\nargv = [\"\"]\n",
            "sources.s.command: `argv[0]` is empty",
        ),
        (
            "mongo",
            "[sources.s.mongo]\nuri = { env = \"GSDR_TEST_UNSET\" }\nbatch_docs = 0\n",
            "sources.s.mongo.batch_docs: must be at least 1",
        ),
        (
            "redis",
            "[sources.s.redis]\nmaster_name = \"m\"\n",
            "sources.s.redis: `master_name` needs `sentinels`",
        ),
        (
            "postgres",
            "[sources.s.postgres]\nhost = \"127.0.0.1\"\nwal_segment_bytes = 0\n",
            "sources.s.postgres: wal_segment_bytes",
        ),
        (
            "postgres",
            "[sources.s.postgres]\nhost = \"127.0.0.1\"\narchive_wait = \"10m\"\n",
            "sources.s.postgres.archive_wait: must be below pipeline.stall_timeout",
        ),
    ];
    for (i, (kind, table, want)) in cases.iter().enumerate() {
        let policy = dir.path().join(format!("{kind}-{i}.toml"));
        std::fs::write(
            &policy,
            format!(
                "name = \"t\"\n[encryption]\nrecipients_file = \"{}\"\n\n[targets.local]\nkind = \"fs\"\npath = \"{}\"\n\n[sources.s]\nkind = \"{kind}\"\n{table}",
                recipients.display(),
                dir.path().join("store").display()
            ),
        )
        .unwrap();
        for args in [&["policy", "check"][..], &["backup", "--source", "s"][..]] {
            let out = Command::new(gsdr_bin())
                .current_dir(dir.path())
                .arg("--policy")
                .arg(&policy)
                .args(args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{kind} {args:?}: {err}");
            assert!(
                err.contains(want),
                "{kind} {args:?}: want `{want}` in: {err}"
            );
        }
        assert!(
            !dir.path().join("store").exists(),
            "{kind}: nothing is written for a rejected policy"
        );
    }
}
