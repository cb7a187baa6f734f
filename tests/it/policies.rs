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

#[test]
fn every_shipped_policy_passes_policy_check() {
    let dir = tempdir();
    let key = dir.path().join("identity.txt");
    let k = Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(k.status.success());
    let recipients = dir.path().join("recipients.txt");
    std::fs::write(&recipients, &k.stdout).unwrap();
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
