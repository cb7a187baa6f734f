//! Secrets never leave their reference (issue #15): the identity file's
//! permissions, the incident state file, the scratch servers' passwords,
//! command stderr, restore targets' credentials.

use std::os::unix::fs::PermissionsExt;

use crate::cli::{fixture_with_backup, stderr};

#[test]
fn a_readable_identity_file_is_refused_with_the_chmod_to_run() {
    let (f, id, want) = fixture_with_backup();
    let out = f.dir.path().join("restored.jsonl");
    let restore = || f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    std::fs::set_permissions(&f.identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = restore();
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let e = stderr(&r);
    assert!(
        e.contains(&format!("run `chmod 600 {}`", f.identity.display())),
        "names the chmod to run: {e}"
    );
    assert!(!e.contains("AGE-SECRET-KEY"), "{e}");
    assert!(!out.exists(), "nothing restored");
    // Verify reads the identity too.
    let v = f.gsdr(&["verify", &id]);
    assert_eq!(v.status.code(), Some(2), "{}", stderr(&v));
    let text = format!("{}{}", String::from_utf8_lossy(&v.stdout), stderr(&v));
    assert!(text.contains("chmod 600"), "{text}");

    std::fs::set_permissions(&f.identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = restore();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(crate::cli::sha256_file(&out), want);
}
