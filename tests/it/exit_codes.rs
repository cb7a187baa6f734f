//! The exit-code contract (0 ok; 1 damage found or a target missed; 2 bad
//! input, unreachable server, wrong key, no such backup), the same from every
//! command, and the `--json` error document.

use std::process::Output;

use assert_cmd::Command;

use crate::cli::{data_object, fixture_with_backup, Fixture};
use crate::support::gsdr_bin;

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Asserts `--json` printed an error document of `kind`, with the text on stderr too.
fn assert_error_doc(o: &Output, kind: &str) {
    let j = json(o);
    assert_eq!(j["schema_version"], 1, "{j}");
    assert_eq!(j["error"]["kind"], kind, "{j}");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(!msg.is_empty());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(msg),
        "the same message is on stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// (what, fixture, args, exit code, error kind of the `--json` document if one is printed).
type Case<'a> = (&'a str, &'a Fixture, Vec<&'a str>, i32, Option<&'a str>);

#[test]
fn every_class_has_its_exit_code_and_json_error_kind() {
    let (f, good, _) = fixture_with_backup();
    let j = f.gsdr_json(&["backup"]);
    let flipped = j["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let obj = data_object(&f, &flipped);
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&obj, bytes).unwrap();
    let other = f.dir.path().join("other.txt");
    assert!(Command::new(gsdr_bin())
        .args(["keygen", "-o"])
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success());
    let other = other.to_str().unwrap();
    let out = f.dir.path().join("restored.jsonl");
    let out = out.to_str().unwrap();
    let bad_policy =
        Fixture::new("[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\nbogus = 1\n");
    let key = f.dir.path().join("key");
    std::fs::write(&key, "test").unwrap();
    let unreachable = Fixture::new(&format!(
        "[targets.m]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\n\
         access_key_id = {{ file = \"{k}\" }}\nsecret_access_key = {{ file = \"{k}\" }}\n",
        k = key.display()
    ));

    // (what, fixture, args, exit code, error kind of the --json document if one is printed)
    let cases: Vec<Case> = vec![
        ("ok verify", &f, vec!["verify", &good], 0, None),
        (
            "ok restore",
            &f,
            vec!["restore", &good, "--to-file", out, "--force"],
            0,
            None,
        ),
        (
            "damage found by verify",
            &f,
            vec!["verify", &flipped],
            1,
            None,
        ),
        (
            "damage found by restore",
            &f,
            vec!["restore", &flipped, "--to-file", out, "--force"],
            1,
            Some("damaged"),
        ),
        (
            "wrong key, verify",
            &f,
            vec!["--identity", other, "verify", &good],
            2,
            None,
        ),
        (
            "wrong key, restore",
            &f,
            vec![
                "--identity",
                other,
                "restore",
                &good,
                "--to-file",
                out,
                "--force",
            ],
            2,
            Some("wrong_key"),
        ),
        (
            "missing backup, verify",
            &f,
            vec!["verify", "20200101T000000Z-000000"],
            2,
            None,
        ),
        (
            "missing backup, restore",
            &f,
            vec![
                "restore",
                "20200101T000000Z-000000",
                "--to-file",
                out,
                "--force",
            ],
            2,
            Some("not_found"),
        ),
        (
            "bad policy",
            &bad_policy,
            vec!["policy", "check"],
            2,
            Some("invalid_input"),
        ),
        (
            "bad argument",
            &f,
            vec!["list", "--no-such-flag"],
            2,
            Some("invalid_input"),
        ),
        (
            "unreachable S3",
            &unreachable,
            vec!["list", "--target", "m"],
            2,
            Some("unreachable"),
        ),
    ];
    for (what, fx, args, code, kind) in cases {
        let o = fx.gsdr(&args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{what}: gsdr {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut a = vec!["--json"];
        a.extend_from_slice(&args);
        let o = fx.gsdr(&a);
        assert_eq!(o.status.code(), Some(code), "{what} with --json");
        match kind {
            Some(k) => assert_error_doc(&o, k),
            // Commands that report per backup print their report, with a kind on each failure.
            None if code != 0 => {
                let j = json(&o);
                let r = &j["results"][0];
                assert_eq!(r["ok"], false, "{what}: {j}");
                let want = match code {
                    1 => "damaged",
                    _ if what.starts_with("wrong key") => "wrong_key",
                    _ => "not_found",
                };
                assert_eq!(r["error_kind"], want, "{what}: {j}");
            }
            None => {
                json(&o);
            }
        }
    }
}

#[test]
fn multi_id_verify_reports_every_id_and_exits_with_the_worst_class() {
    let (f, truncated, _) = fixture_with_backup();
    let j = f.gsdr_json(&["backup"]);
    let flipped = j["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let obj = data_object(&f, &truncated);
    let bytes = std::fs::read(&obj).unwrap();
    std::fs::write(&obj, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let obj = data_object(&f, &flipped);
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&obj, bytes).unwrap();

    let o = f.gsdr(&["--json", "verify", &truncated, &flipped]);
    assert_eq!(o.status.code(), Some(1), "damage in both: exit 1");
    let j = json(&o);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{j}");
    for (r, id, says) in [
        (&results[0], &truncated, "truncated"),
        (&results[1], &flipped, ""),
    ] {
        assert_eq!(r["id"], id.as_str());
        assert_eq!(r["ok"], false);
        assert_eq!(r["error_kind"], "damaged");
        assert!(r["error"].as_str().unwrap().contains(says), "{r}");
    }

    // A missing id is reported beside the others, and its class (2) wins.
    let o = f.gsdr(&["--json", "verify", &truncated, "20200101T000000Z-000000"]);
    assert_eq!(o.status.code(), Some(2));
    let j = json(&o);
    let kinds: Vec<_> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error_kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds.len(), 2, "{j}");
    assert!(
        kinds.contains(&"damaged".into()) && kinds.contains(&"not_found".into()),
        "{j}"
    );
}
