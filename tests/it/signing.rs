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

/// `(store dir)/pg/wal/00000001/<name>.json`, parsed.
fn wal_sidecar(store: &Path, name: &str) -> serde_json::Value {
    let p = store.join(format!("pg/wal/00000001/{name}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

fn write_sidecar(store: &Path, name: &str, v: &serde_json::Value) {
    let p = store.join(format!("pg/wal/00000001/{name}.json"));
    std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// `gsdr wal-fetch NAME` into `dir`: exit code and stderr.
fn wal_fetch(policy: &Path, name: &str, dir: &Path, extra: &[&str]) -> (i32, String) {
    let dest = dir.join(name);
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["wal-fetch", "--source", "pg", name, dest.to_str().unwrap()]);
    let out = gsdr(policy, &args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// WAL sidecars (#15 item 3) against a real PostgreSQL 15 archive on a
/// folder target: `wal-push` signs each sidecar with the policy's key, and a
/// restore replays them; then a forged segment (another segment's valid
/// encrypted data under its name, with a sidecar signed by a key the policy
/// does not list), a sidecar changed after signing and an unsigned one are
/// each refused by `wal-fetch` (exit 255, their own message naming the key),
/// by a restore (recovery stops: the server does not start), by `wal-verify`
/// (exit 1, listed as untrusted) and by the off-site sweep (not copied);
/// `--allow-unsigned` lets the unsigned one through, not the others.
#[test]
fn pg_signed_wal_sidecars_restore_and_forged_changed_unsigned_ones_are_refused() {
    use crate::postgres::{ok, restore, scratch, setup, start_restored, WAIT};
    use crate::support::postgres::{give_to_pg_user, PgCluster};
    let (fx, mut a) = setup();
    let (key, vk) = signing_key(fx.dir.path(), "signing.key");
    let (other_key, _) = signing_key(fx.dir.path(), "other.key");
    let text = std::fs::read_to_string(&fx.policy).unwrap();
    std::fs::write(
        &fx.policy,
        format!(
            "{text}[signing]\nkey_file = \"{}\"\nverify_keys = [\"{vk}\"]\n",
            key.display()
        ),
    )
    .unwrap();
    // A second policy with an off-site target for the sweep (wal-push copies
    // nothing off-site with the first, so the sweep has everything to do).
    let swept = fx.dir.path().join("swept.toml");
    std::fs::write(
        &swept,
        std::fs::read_to_string(&fx.policy).unwrap().replacen(
            "target = \"local\"\n",
            "target = \"local\"\noffsite = \"off\"\n",
            1,
        ) + &format!(
            "[targets.off]\nkind = \"fs\"\npath = \"{}/off\"\n",
            fx.dir.path().display()
        ),
    )
    .unwrap();
    give_to_pg_user(fx.dir.path());
    a.start();
    a.psql("CREATE TABLE t (id int PRIMARY KEY, v text)");
    ok(&fx.gsdr(&["backup", "--source", "pg"]), "gsdr backup");
    for i in 0..4 {
        a.psql(&format!(
            "INSERT INTO t SELECT g, 'r{i}' FROM generate_series({}, {}) g",
            i * 100 + 1,
            i * 100 + 100
        ));
        a.switch_and_wait_archived(WAIT);
    }
    let want = a.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t");
    let store = fx.dir.path().join("store");
    let list = fx.gsdr_json(&["list", "--source", "pg"]);
    let first = list["backups"][0]["consistency"]["details"]["first_segment"]
        .as_str()
        .unwrap()
        .to_string();
    let mut segs: Vec<String> = std::fs::read_dir(store.join("pg/wal/00000001"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".json")
                .filter(|s| s.len() == 24)
                .map(str::to_string)
        })
        .filter(|s| s.as_str() >= first.as_str())
        .collect();
    segs.sort();
    assert!(segs.len() >= 5, "{segs:?}");

    // Signed by the policy's key, and a restore replays them.
    let key_id = wal_sidecar(&store, &first)["signature"]["key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}'s sidecar is not signed"))
        .to_string();
    for s in &segs {
        let sc = wal_sidecar(&store, s);
        assert_eq!(sc["signature"]["key_id"], key_id.as_str(), "{s}: {sc}");
        assert!(sc["stored_bytes"].is_u64(), "{s}: {sc}");
    }
    let v = fx.gsdr_json(&["wal-verify", "--source", "pg"]);
    assert_eq!(v["ok"], true, "{v}");
    let d1 = scratch(&fx, "restore-good");
    restore(&fx, &d1, &["--latest"]);
    let c1 = start_restored(&d1);
    assert_eq!(
        c1.psql("SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM t"),
        want
    );
    drop(c1);
    drop(a);

    // Forged: the last segment's data under the first's name, with its
    // sidecar renamed and signed by another key (valid encryption, matching
    // checksum: only the signature tells).
    let (forged, changed, unsigned) = (first.clone(), segs[1].clone(), segs[2].clone());
    let donor = segs.last().unwrap().clone();
    let wal_dir = store.join("pg/wal/00000001");
    std::fs::copy(
        wal_dir.join(format!("{donor}.zst.age")),
        wal_dir.join(format!("{forged}.zst.age")),
    )
    .unwrap();
    let mut sc: gsdr::source::postgres::wal::WalSidecar =
        serde_json::from_value(wal_sidecar(&store, &donor)).unwrap();
    sc.name = forged.clone();
    let other = gsdr::signing::Signer::read(&other_key).unwrap();
    sc.sign("pg", &other);
    let other_id = sc.signature.as_ref().unwrap().key_id.clone();
    write_sidecar(&store, &forged, &serde_json::to_value(&sc).unwrap());
    // Changed after signing: one field differs.
    let mut c = wal_sidecar(&store, &changed);
    c["gsdr_version"] = "0.0.0-forged".into();
    write_sidecar(&store, &changed, &c);
    // Unsigned: the signature taken away.
    let mut u = wal_sidecar(&store, &unsigned);
    u.as_object_mut().unwrap().remove("signature");
    write_sidecar(&store, &unsigned, &u);
    give_to_pg_user(&store);

    let fetched = fx.dir.path().join("fetched");
    std::fs::create_dir_all(&fetched).unwrap();
    let (code, err) = wal_fetch(&fx.policy, &forged, &fetched, &[]);
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains(&format!(
            "is signed by key {other_id}, which is not among the policy's signing.verify_keys"
        )),
        "{err}"
    );
    assert!(err.contains("--target-lsn below"), "{err}");
    let (code, err) = wal_fetch(&fx.policy, &changed, &fetched, &[]);
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains(&format!("the signature of key {key_id} over its sidecar"))
            && err.contains("does not verify"),
        "{err}"
    );
    let (code, err) = wal_fetch(&fx.policy, &unsigned, &fetched, &[]);
    assert_eq!(code, 255, "{err}");
    assert!(
        err.contains("is not signed") && err.contains("--allow-unsigned"),
        "{err}"
    );
    assert!(!fetched.join(&forged).exists() && !fetched.join(&unsigned).exists());
    // --allow-unsigned accepts the unsigned one (its content is genuine), not the others.
    let (code, err) = wal_fetch(&fx.policy, &unsigned, &fetched, &["--allow-unsigned"]);
    assert_eq!(code, 0, "{err}");
    let (code, err) = wal_fetch(&fx.policy, &forged, &fetched, &["--allow-unsigned"]);
    assert_eq!(code, 255, "{err}");
    let (code, err) = wal_fetch(&fx.policy, &segs[3], &fetched, &[]);
    assert_eq!(code, 0, "a genuine segment: {err}");

    // wal-verify lists all three and fails.
    let out = gsdr(&fx.policy, &["--json", "wal-verify", "--source", "pg"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v["untrusted"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [&forged, &changed, &unsigned], "{v}");
    assert_eq!(v["base_backups"][0]["restorable"], false, "{v}");

    // A restore: recovery stops at the forged segment (the server does not start).
    let d2 = scratch(&fx, "restore-forged");
    restore(&fx, &d2, &["--latest"]);
    let mut c2 = PgCluster::existing(&d2);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c2.start()));
    let log = std::fs::read_to_string(&c2.log).unwrap_or_default();
    assert!(started.is_err(), "the server started on forged WAL:\n{log}");
    assert!(
        log.contains("REFUSED") && log.contains(&format!("is signed by key {other_id}")),
        "{log}"
    );
    drop(c2);

    // The sweep copies the genuine files off-site, not the refused sidecars.
    let out = gsdr(&swept, &["--json", "replicate"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for n in [&forged, &changed, &unsigned] {
        assert!(
            !fx.dir
                .path()
                .join(format!("off/pg/wal/00000001/{n}.json"))
                .exists(),
            "{n}'s sidecar was copied off-site: {text}"
        );
        assert!(text.contains(&format!("WAL file `{n}`")), "{text}");
    }
    assert!(text.contains("is not copied off-site"), "{text}");
    assert!(fx
        .dir
        .path()
        .join(format!("off/pg/wal/00000001/{}.json", segs[3]))
        .exists());
}
