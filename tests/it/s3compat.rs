//! gsdr on a second, real S3 server beside moto: Garage (issue 17).
//!
//! The `Store` conformance suite runs on Garage in `storage::garage::*`; here:
//! the capability tables of both servers as `gsdr policy check --connect
//! --json` reports them, the run leases, a backup → verify → restore round
//! trip and a replication run on Garage, the refusals of settings Garage
//! cannot serve, and the errors that name the server's answer (Garage checks
//! signatures and rights, which moto does not by default).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use gsdr::storage::s3::S3Store;
use gsdr::storage::{Denied, PutCondition, StorageError, Store};
use serde_json::Value;

use crate::cli::{sha256_file, stderr, Fixture};
use crate::support::moto::S3Server;

/// `capability → support` of one target in `policy check --json`.
fn table(report: &Value, target: &str) -> BTreeMap<String, String> {
    let t = report["capabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("no capabilities in {report}"))
        .iter()
        .find(|t| t["target"] == target)
        .unwrap_or_else(|| panic!("no capabilities of {target} in {report}"));
    t["capabilities"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["support"].as_str().unwrap().to_string()))
        .collect()
}

/// The failed checks of a `policy check --json` report: (what, error).
fn failed_checks(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| {
            (
                c["what"].as_str().unwrap().to_string(),
                c["error"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn expect(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What Garage 2.5.0 can do, as the probe finds it (docs/s3-compat.md): it
/// ignores `If-None-Match` and `If-Match` on PutObject.
pub(crate) const GARAGE_TABLE: &[(&str, &str)] = &[
    ("conditional_create", "no"),
    ("conditional_replace", "no"),
    ("multipart", "yes"),
    ("ranged_get", "yes"),
    ("versioning", "no"),
    ("object_lock", "no"),
    ("lifecycle", "yes"),
];

/// moto 5.1.22 has every capability gsdr probes.
pub(crate) const MOTO_TABLE: &[(&str, &str)] = &[
    ("conditional_create", "yes"),
    ("conditional_replace", "yes"),
    ("multipart", "yes"),
    ("ranged_get", "yes"),
    ("versioning", "yes"),
    ("object_lock", "yes"),
    ("lifecycle", "yes"),
];

#[tokio::test]
async fn policy_check_connect_lists_the_capabilities_of_moto_and_garage() {
    let moto = S3Server::start_own(&[]).await;
    let garage = S3Server::garage().await;
    let f = Fixture::new(&format!(
        "[targets.moto]\n{}\n[targets.garage]\n{}\n[defaults]\ntarget = \"garage\"\n\
         [sources.s]\nkind = \"command\"\nschedule = \"0 3 * * *\"\n[sources.s.command]\nargv = [\"true\"]\n",
        moto.target_toml("caps"),
        garage.target_toml("caps")
    ));
    let out = f.gsdr(&["--json", "policy", "check", "--connect"]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    assert_eq!(table(&report, "moto"), expect(MOTO_TABLE), "{report}");
    assert_eq!(table(&report, "garage"), expect(GARAGE_TABLE), "{report}");
    let garage_row = report["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "garage")
        .unwrap();
    assert_eq!(garage_row["run_leases"], true, "{report}");
    assert!(
        garage_row["capabilities"]["versioning"]["detail"]
            .as_str()
            .unwrap()
            .contains("NotImplemented"),
        "the detail names the server's answer: {report}"
    );
    assert!(
        garage_row["capabilities"]["conditional_replace"]["detail"]
            .as_str()
            .unwrap()
            .contains("ignores `If-Match`"),
        "{report}"
    );
    // The daemon keeps its run leases on garage (defaults.target): refused,
    // with the alternative; moto's target holds no lease and passes.
    assert_eq!(out.status.code(), Some(1), "{report}");
    let failed = failed_checks(&report);
    let names: Vec<&str> = failed.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        names,
        [
            "target garage conditional_create",
            "target garage conditional_replace"
        ],
        "{report}"
    );
    let why = &failed[1].1;
    assert!(
        why.contains("the server lacks conditional replace (`If-Match`)")
            && why.contains("the daemon's run leases")
            && why.contains("`gsdr run --once` from one CronJob"),
        "{why}"
    );
    // The probe leaves nothing behind.
    for server in [&moto, &garage] {
        let left = server
            .client()
            .list_objects_v2()
            .bucket(&server.bucket)
            .send()
            .await
            .unwrap();
        assert!(left.contents().is_empty(), "{}: {left:?}", server.name());
    }
    // The human table: one row per capability.
    let text = String::from_utf8(f.gsdr(&["policy", "check", "--connect"]).stdout).unwrap();
    assert!(
        text.contains("capabilities of target garage (holds the daemon's run leases):"),
        "{text}"
    );
    assert!(text.contains("  versioning           NO "), "{text}");
    assert!(text.contains("  conditional_replace  yes "), "{text}");
}

#[tokio::test]
async fn garage_refuses_versioning_and_object_lock_with_the_alternative() {
    let garage = S3Server::garage().await;
    let f = Fixture::new(&format!(
        "[targets.garage]\n{}\n[targets.garage.lifecycle]\nversioning = true\nobject_lock = {{ mode = \"compliance\", retention = \"7d\" }}\n",
        garage.target_toml("locked")
    ));
    let out = f.gsdr(&["--json", "policy", "check", "--connect"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = failed_checks(&report);
    let names: Vec<&str> = failed.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(
        names,
        [
            "target garage conditional_create",
            "target garage conditional_replace",
            "target garage versioning",
            "target garage object_lock"
        ],
        "{report}"
    );
    assert!(
        failed[3].1.contains("lacks Object Lock")
            && failed[3].1.contains("`lifecycle.object_lock`")
            && failed[3].1.contains("drop `object_lock`")
            && failed[3].1.contains("off-site replica"),
        "{}",
        failed[3].1
    );
    // `storage init` refuses before changing anything, with the same reason.
    let init = f.gsdr(&["storage", "init"]);
    assert_eq!(init.status.code(), Some(2), "{}", stderr(&init));
    let e = stderr(&init);
    assert!(
        e.contains("the server lacks object versioning") && e.contains("set `versioning = false`"),
        "{e}"
    );
}

#[tokio::test]
async fn garage_backup_verify_restore_and_replicate_to_moto() {
    let garage = S3Server::garage().await;
    let moto = S3Server::start().await;
    let pre = crate::support::tempdir();
    let input = pre.path().join("input.bin");
    // 12 MiB: a multipart upload with the targets' 5 MiB parts.
    let data: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &data).unwrap();
    let f = Fixture::new(&format!(
        "[targets.garage]\n{}\n[targets.offsite]\n{}\n[defaults]\ntarget = \"garage\"\noffsite = \"offsite\"\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n",
        garage.target_toml("rt"),
        moto.target_toml("rt-offsite"),
        input.display()
    ));
    let want = sha256_file(&input);
    let b = f.gsdr_json(&["backup"]);
    let id = b["backups"][0]["manifest"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = f.gsdr_json(&["verify", &id]);
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    let out = f.dir.path().join("restored.bin");
    let r = f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(sha256_file(&out), want);
    // The objects really are on Garage.
    let on_garage = garage
        .client()
        .list_objects_v2()
        .bucket(&garage.bucket)
        .prefix("rt/")
        .send()
        .await
        .unwrap();
    assert!(on_garage.contents().len() >= 2, "{on_garage:?}");

    // Replication Garage → moto, then the copy restores too.
    assert_eq!(f.gsdr(&["replicate", "--check"]).status.code(), Some(1));
    let rep = f.gsdr_json(&["replicate"]);
    assert_eq!(
        rep["sweeps"]["data"]["copied"].as_array().map(|a| a.len()),
        Some(1),
        "{rep}"
    );
    let check = f.gsdr(&["replicate", "--check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let off = f.gsdr_json(&["list", "--target", "offsite"]);
    assert_eq!(off["backups"][0]["id"], id.as_str(), "{off}");
}

#[tokio::test]
async fn garage_run_leases_hold_their_semantics() {
    let garage = S3Server::garage().await;
    let store: Arc<dyn Store> = Arc::new(S3Store::new(&garage.target("leases")).await.unwrap());
    crate::daemon::lease_busy_done_and_takeover(store).await;
}

/// Garage ignores `If-Match`, so replicas racing for a lease could both win:
/// the daemon refuses to start on it and says what to do; `gsdr run --once`
/// (one runner) runs and takes its leases there all the same.
#[tokio::test]
async fn garage_daemon_refuses_to_start_and_run_once_works() {
    let garage = S3Server::garage().await;
    let f = Fixture::new(&format!(
        "[targets.garage]\n{}\n[sources.s]\nkind = \"command\"\nschedule = \"0 3 * * *\"\n\
         [sources.s.command]\nargv = [\"head\", \"-c\", \"1000\", \"/dev/urandom\"]\n",
        garage.target_toml("daemon")
    ));
    let out = f.gsdr(&["daemon", "--metrics-addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("target `garage`")
            && e.contains("the server lacks conditional create (`If-None-Match: *`)")
            && e.contains("ignores `If-None-Match: *`")
            && e.contains("the daemon's run leases")
            && e.contains("concurrencyPolicy: Forbid"),
        "{e}"
    );
    let once = f.gsdr_json(&["run", "--once", "--source", "s"]);
    assert_eq!(once["runs"][0]["result"], "ok", "{once}");
    assert_eq!(
        f.gsdr_json(&["list"])["backups"].as_array().unwrap().len(),
        1
    );
}

// ---------------------------------------------------------------- errors that name the server's answer

#[tokio::test]
async fn garage_wrong_secret_and_unknown_key_say_credentials() {
    let garage = S3Server::garage().await;
    let dir = crate::support::tempdir();
    let wrong = dir.path().join("wrong-secret");
    std::fs::write(&wrong, "ff".repeat(32)).unwrap();
    let mut t = garage.target("creds");
    t.secret_access_key = Some(gsdr::secret::SecretRef::File(wrong.clone()));
    t.max_attempts = Some(1);
    let store = S3Store::new(&t).await.unwrap();
    let err = store
        .put_small("k", Bytes::from_static(b"x"), PutCondition::Overwrite)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::AccessDenied {
                reason: Denied::Credentials,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("does not accept gsdr's credentials")
            && msg.contains("the server answered AccessDenied"),
        "{msg}"
    );
    assert!(
        !msg.contains(&"ff".repeat(32)),
        "no secret in messages: {msg}"
    );
    // The connect check says the same, though HeadBucket's 403 has no body.
    let err = store.probe().await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::AccessDenied {
                reason: Denied::Credentials,
                ..
            }
        ),
        "{err:?}"
    );

    let unknown = dir.path().join("unknown-id");
    std::fs::write(&unknown, "GK00000000000000000000dead").unwrap();
    let mut t = garage.target("creds");
    t.access_key_id = Some(gsdr::secret::SecretRef::File(unknown));
    t.max_attempts = Some(1);
    let err = S3Store::new(&t).await.unwrap().list("").await.unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::AccessDenied {
                reason: Denied::Credentials,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn garage_read_only_key_names_the_missing_permission() {
    let garage = S3Server::garage().await;
    let (id, secret) = garage.garage_key("reader", "GK00000000000000000000beef", &"ab".repeat(32));
    garage.garage_admin(&[
        "bucket",
        "allow",
        "--read",
        &garage.bucket,
        "--key",
        "reader",
    ]);
    let mut t = garage.target("ro");
    t.access_key_id = Some(gsdr::secret::SecretRef::File(id));
    t.secret_access_key = Some(gsdr::secret::SecretRef::File(secret));
    t.max_attempts = Some(1);
    let store = S3Store::new(&t).await.unwrap();
    store
        .probe()
        .await
        .expect("a reader may look the bucket up");
    let err = store
        .put_small("k", Bytes::from_static(b"x"), PutCondition::Overwrite)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::AccessDenied {
                reason: Denied::Permission,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("lacks s3:PutObject on the bucket"), "{msg}");
    assert!(msg.contains("the server answered AccessDenied"), "{msg}");
    // The capability probe stops at its first write with the same error.
    let err = store.probe_capabilities().await.unwrap_err();
    assert!(err.to_string().contains("s3:PutObject"), "{err}");
}

#[tokio::test]
async fn garage_missing_bucket_is_named() {
    let garage = S3Server::garage().await;
    let mut t = garage.target("p");
    t.bucket = format!("{}-missing", garage.bucket);
    t.max_attempts = Some(1);
    let store = S3Store::new(&t).await.unwrap();
    let err = store.probe().await.unwrap_err();
    assert!(matches!(err, StorageError::Config { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("bucket `{}` does not exist", t.bucket)),
        "{err}"
    );
    let err = store
        .put_small("k", Bytes::from_static(b"x"), PutCondition::Overwrite)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

/// On a versioned bucket a delete leaves the probe's versions behind a
/// delete marker: the probe removes them too, so the bucket stays empty.
#[tokio::test]
async fn probe_leaves_no_version_on_a_versioned_bucket() {
    let moto = S3Server::start().await;
    moto.client()
        .put_bucket_versioning()
        .bucket(&moto.bucket)
        .versioning_configuration(
            aws_sdk_s3::types::VersioningConfiguration::builder()
                .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let store = S3Store::new(&moto.target("v")).await.unwrap();
    let caps = store.probe_capabilities().await.unwrap();
    assert_eq!(caps.versioning.detail, "enabled on the bucket", "{caps:?}");
    let left = moto
        .client()
        .list_object_versions()
        .bucket(&moto.bucket)
        .send()
        .await
        .unwrap();
    assert!(
        left.versions().is_empty() && left.delete_markers().is_empty(),
        "{left:?}"
    );
}
