//! Retention's floor against the bucket lifecycle, on moto: `gsdr storage
//! init` installs no rule that expires a current object (it removes the
//! prefix-wide `Expiration` an older gsdr installed) and warns about other
//! rules of the bucket that could; `gsdr policy check` refuses an
//! expiration on a target sources keep backups on, naming the rule it
//! contradicts with file, line and field.

use aws_sdk_s3::types::{
    BucketLifecycleConfiguration, ExpirationStatus, LifecycleExpiration, LifecycleRule,
    LifecycleRuleFilter,
};

use crate::cli::Fixture;
use crate::support::moto::Moto;

/// A policy with S3 target `m` on `moto` (prefix `gs`), `lifecycle` as its
/// lifecycle table, and a command source `s` with `retention`.
fn policy(moto: &Moto, lifecycle: &str, retention: &str) -> Fixture {
    let f = Fixture::new(&format!(
        "[targets.m]\nkind = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nprefix = \"gs\"\n\
         access_key_id = {{ file = \"{{dir}}/k\" }}\nsecret_access_key = {{ file = \"{{dir}}/k\" }}\n\
         [targets.m.lifecycle]\n{lifecycle}\
         [sources.s]\nkind = \"command\"\n{retention}[sources.s.command]\nargv = [\"echo\", \"x\"]\n",
        moto.endpoint, moto.bucket
    ));
    std::fs::write(f.dir.path().join("k"), "gsdr-test-key\n").unwrap();
    f
}

fn rule(id: &str, prefix: &str, days: i32) -> LifecycleRule {
    LifecycleRule::builder()
        .id(id)
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
        .expiration(LifecycleExpiration::builder().days(days).build())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_init_installs_no_expiration_of_current_objects_and_warns_of_foreign_ones() {
    let moto = Moto::start_own(&[]).await;
    let s3 = moto.client();
    // What an older gsdr installed (a prefix-wide Expiration), plus two
    // rules of others: one on the whole bucket (covers gsdr's prefix), one elsewhere.
    s3.put_bucket_lifecycle_configuration()
        .bucket(&moto.bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule("gsdr:gs", "gs/", 35))
                .rules(rule("everything", "", 90))
                .rules(rule("logs", "logs/", 10))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let f = policy(
        &moto,
        "versioning = true\nnoncurrent_expire_after = \"7d\"\n",
        "retention = { keep_within = \"30d\", keep_last = 4 }\n",
    );
    let out = f.gsdr(&["--json", "storage", "init"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a foreign rule over gsdr's prefix fails the check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &r["targets"][0];
    assert_eq!(t["applied"], true, "{r}");
    let change = |setting: &str| {
        t["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["setting"] == setting)
            .cloned()
            .unwrap_or_else(|| panic!("no change of {setting}: {r}"))
    };
    let exp = change("lifecycle.expiration");
    assert_eq!(
        (exp["current"].as_str(), exp["desired"].as_str()),
        (Some("35 days"), Some("none"))
    );
    assert_eq!(
        change("lifecycle.noncurrent_version_expiration")["desired"],
        "7 days"
    );
    let warnings = t["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.contains("`everything`") && w.contains("90 days") && w.contains("newest backup"),
        "{w}"
    );

    // The rules actually on the bucket: gsdr's expires no current object; the others are kept.
    let rules = s3
        .get_bucket_lifecycle_configuration()
        .bucket(&moto.bucket)
        .send()
        .await
        .unwrap()
        .rules()
        .to_vec();
    let mut ids: Vec<&str> = rules.iter().filter_map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(ids, ["everything", "gsdr:gs", "logs"]);
    let ours = rules.iter().find(|r| r.id() == Some("gsdr:gs")).unwrap();
    assert_eq!(ours.filter().and_then(|f| f.prefix()), Some("gs/"));
    let e = ours.expiration();
    assert_eq!(e.and_then(|e| e.days()), None, "{ours:?}");
    assert_eq!(e.and_then(|e| e.date()), None, "{ours:?}");
    assert_eq!(
        e.and_then(|e| e.expired_object_delete_marker()),
        Some(true),
        "{ours:?}"
    );
    assert_eq!(
        ours.noncurrent_version_expiration()
            .and_then(|n| n.noncurrent_days()),
        Some(7)
    );
    assert_eq!(
        ours.abort_incomplete_multipart_upload()
            .and_then(|a| a.days_after_initiation()),
        Some(1)
    );

    // Idempotent; the warning stays until the foreign rule is fixed.
    let again: serde_json::Value =
        serde_json::from_slice(&f.gsdr(&["--json", "storage", "init"]).stdout).unwrap();
    assert_eq!(
        again["targets"][0]["changes"],
        serde_json::json!([]),
        "{again}"
    );
    assert_eq!(again["targets"][0]["warnings"].as_array().unwrap().len(), 1);
    s3.put_bucket_lifecycle_configuration()
        .bucket(&moto.bucket)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .set_rules(Some(
                    rules
                        .iter()
                        .filter(|r| r.id() != Some("everything"))
                        .cloned()
                        .collect(),
                ))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let out = f.gsdr(&["storage", "init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "m: up to date\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_refuses_an_expiration_over_kept_backups_with_file_line_and_field() {
    let moto = Moto::start_own(&[]).await;
    let cases = [
        (
            "retention = { keep_within = \"7d\", keep_monthly = 12 }\n",
            "keep_monthly = 12",
        ),
        ("retention = { keep_last = 1 }\n", "keep_last = 1"),
        (
            "",
            "always keeps the newest restorable backup of source `s`",
        ),
    ];
    for (retention, says) in cases {
        let f = policy(
            &moto,
            "expire_after = \"35d\"\nversioning = true\n",
            retention,
        );
        let text = std::fs::read_to_string(&f.policy).unwrap();
        let line = text
            .lines()
            .position(|l| l.starts_with("expire_after"))
            .unwrap()
            + 1;
        for args in [&["policy", "check"][..], &["storage", "init", "--dry-run"]] {
            let out = f.gsdr(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!(
                    "{}:{line}: targets.m.lifecycle.expire_after: an Expiration after 35d",
                    f.policy.display()
                )) && err.contains(says)
                    && err.contains("Remove expire_after"),
                "{args:?} {retention}: {err}"
            );
        }
    }
    // Nothing was put on the bucket by the refused runs.
    let r = moto
        .client()
        .get_bucket_lifecycle_configuration()
        .bucket(&moto.bucket)
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().rules().is_empty());
}
