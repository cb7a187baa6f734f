//! Signed manifests (#15, tamper-evident catalog), end to end through the
//! CLI: backups signed with the policy's key; a forged backup (valid age
//! encryption to the policy's recipients, signed by another key), a changed
//! manifest, an unsigned one and a swapped data object are each refused by
//! restore, verify and drill with exit 1 and a message of their own; the
//! off-site sweep does not copy a forged manifest. The engine does not
//! matter (signing is the catalog's), so a command source on a folder target
//! is used: no server is needed.

use std::path::{Path, PathBuf};

use crate::cli::Fixture;
use crate::support::gsdr_bin;

const BODY: &str = "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n\
[targets.off]\nkind = \"fs\"\npath = \"{dir}/off\"\n\
[defaults]\ntarget = \"local\"\n\
[sources.cfg]\nkind = \"command\"\n[sources.cfg.command]\nargv = [\"cat\", \"{dir}/input.txt\"]\n\
[drills]\nrunbooks_dir = \"{dir}/runbooks\"\nscratch_dir = \"{dir}/scratch\"\n";

const SCENARIO: &str =
    "name = \"cfg-loss\"\ntitle = \"cfg is lost\"\ndescription = \"Restore cfg and check it.\"\n\
[[steps]]\nname = \"restore\"\nkind = \"restore_command_source\"\nsource = \"cfg\"\n\
[[steps]]\nname = \"sha\"\nkind = \"sha256\"\nsource = \"cfg\"\nafter = [\"restore\"]\n";

fn signing_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let p = dir.join(name);
    let out = std::process::Command::new(gsdr_bin())
        .args(["keygen", "--signing", "-o"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vk = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(vk.starts_with("gsdr-ed25519:"), "{vk}");
    (p, vk)
}

/// The policy of `f` with `[signing]` signing with `key` and trusting `verify`.
fn with_signing(f: &Fixture, key: &Path, verify: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(&f.policy).unwrap();
    let p = f.dir.path().join(name);
    std::fs::write(
        &p,
        format!(
            "{text}[signing]\nkey_file = \"{}\"\nverify_keys = [\"{verify}\"]\n",
            key.display()
        ),
    )
    .unwrap();
    p
}

fn gsdr(policy: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(gsdr_bin())
        .arg("--policy")
        .arg(policy)
        .args(args)
        .env("GSDR_LOG", "warn")
        .output()
        .unwrap()
}

fn backup(policy: &Path) -> String {
    let out = gsdr(policy, &["--json", "backup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn object(f: &Fixture, id: &str, file: &str) -> PathBuf {
    f.dir.path().join("store/cfg/stdout").join(id).join(file)
}

/// Runs `args`, asserts exit 1 and that stderr (or the drill's JSON) says `words`.
fn refused(policy: &Path, args: &[&str], words: &str) {
    let out = gsdr(policy, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
    assert!(
        text.contains(words),
        "{args:?} does not say `{words}`: {text}"
    );
}

#[test]
fn forged_changed_unsigned_and_swapped_backups_are_refused_each_with_its_own_message() {
    let f = Fixture::new(BODY);
    let d = f.dir.path();
    std::fs::write(d.join("input.txt"), "glucose=112\n".repeat(1000)).unwrap();
    std::fs::create_dir_all(d.join("runbooks")).unwrap();
    std::fs::write(d.join("runbooks/cfg-loss.toml"), SCENARIO).unwrap();
    let (key_a, vk_a) = signing_key(d, "sign-a.key");
    let (key_b, _) = signing_key(d, "sign-b.key");
    let pa = with_signing(&f, &key_a, &vk_a, "a.toml");
    // Whoever holds key B (not trusted) writes backups as well as A does.
    let pb = with_signing(&f, &key_b, &vk_a, "b.toml");
    let restored = d.join("restored.txt");
    let to = restored.to_str().unwrap();

    // Signed, and restorable, verifiable, drillable.
    let good = backup(&pa);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(object(&f, &good, "manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["signature"]["key_id"].as_str().unwrap().len(), 16, "{m}");
    assert!(gsdr(&pa, &["verify", &good]).status.success());
    let out = gsdr(&pa, &["restore", &good, "--to-file", to, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drill = gsdr(
        &pa,
        &["--json", "drill", "--scenario", "cfg-loss", "--no-store"],
    );
    assert!(
        drill.status.success(),
        "{}",
        String::from_utf8_lossy(&drill.stdout)
    );

    // A data object swapped for another valid one (another backup's: same
    // size, encrypted to the same recipients): the signed digest refuses it.
    let second = backup(&pa);
    let third = backup(&pa);
    std::fs::copy(
        object(&f, &second, "data.zst.age"),
        object(&f, &third, "data.zst.age"),
    )
    .unwrap();
    for args in [
        vec!["restore", third.as_str(), "--to-file", to, "--force"],
        vec!["verify", third.as_str()],
        vec!["drill", "--scenario", "cfg-loss", "--no-store"],
    ] {
        // Size or checksum, whichever differs first: the object is not the one signed.
        refused(&pa, &args, "the stored object");
    }

    // Forged: encrypted to the same recipients, signed by a key the policy does not trust.
    let forged = backup(&pb);
    let unknown = "which is not among the policy's signing.verify_keys";
    for args in [
        vec!["restore", forged.as_str(), "--to-file", to, "--force"],
        vec!["verify", forged.as_str()],
        vec!["drill", "--scenario", "cfg-loss", "--no-store"],
    ] {
        refused(&pa, &args, unknown);
    }
    // The off-site sweep copies the trusted backups, never the forged one.
    let text = std::fs::read_to_string(&pa).unwrap();
    let pa_off = d.join("a-off.toml");
    std::fs::write(
        &pa_off,
        text.replace(
            "target = \"local\"\n",
            "target = \"local\"\noffsite = \"off\"\n",
        ),
    )
    .unwrap();
    let out = gsdr(&pa_off, &["replicate"]);
    assert!(
        !out.status.success(),
        "a sweep that refused a manifest is not a success"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(unknown)
            || String::from_utf8_lossy(&out.stdout).contains(unknown),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d
        .join("off/cfg/stdout")
        .join(&good)
        .join("manifest.json")
        .exists());
    assert!(
        !d.join("off/cfg/stdout").join(&forged).exists(),
        "the forged backup was copied off-site"
    );

    // Changed after signing: the signature does not verify.
    let mp = object(&f, &good, "manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    m["consistency"]["consistency_time"] = serde_json::json!("2030-01-01T00:00:00Z");
    std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    for args in [
        vec!["restore", good.as_str(), "--to-file", to, "--force"],
        vec!["verify", good.as_str()],
    ] {
        refused(&pa, &args, "does not verify");
    }

    // Unsigned (as before signing was set up): refused, unless --allow-unsigned.
    let mp = object(&f, &second, "manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    m.as_object_mut().unwrap().remove("signature");
    std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    refused(
        &pa,
        &["restore", &second, "--to-file", to, "--force"],
        "is not signed",
    );
    let out = gsdr(
        &pa,
        &[
            "--allow-unsigned",
            "restore",
            &second,
            "--to-file",
            to,
            "--force",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&restored).unwrap(),
        "glucose=112\n".repeat(1000)
    );
}
