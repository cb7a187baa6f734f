//! The per-source catalog index (`<source>/index.json`, #16) on a folder
//! target and a moto bucket: written on commit, used by a listing (requests
//! counted by `CountedStore`), rebuilt when deleted, repaired when a manifest
//! is added or removed behind its back, and never a way around signatures.
//! Manifests are committed through the catalog directly (the engine does not
//! matter here).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use gsdr::catalog::{Catalog, Manifest};
use gsdr::signing::{Signer, Trust, VerifyKey};
use gsdr::storage::counted::{CountedStore, RequestCounts};
use gsdr::storage::fs::FsStore;
use gsdr::storage::s3::S3Store;
use gsdr::storage::{PutCondition, Store};

use crate::support::moto::Moto;

const SOURCE: &str = "app";

/// A store under test, and what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _keep: Box<dyn std::any::Any>,
}

async fn fs_subject() -> Subject {
    let dir = crate::support::tempdir();
    let store = Arc::new(FsStore::new(dir.path().join("target")).unwrap());
    Subject {
        store,
        _keep: Box::new(dir),
    }
}

async fn s3_subject() -> Subject {
    let moto = Moto::start().await;
    let store = Arc::new(S3Store::new(&moto.target("cat")).await.unwrap());
    Subject {
        store,
        _keep: Box::new(moto),
    }
}

/// Backup `n` of `source` (ids sort by `n`), signed by `signer` if given.
fn manifest(source: &str, n: u32, signer: Option<&Signer>) -> Manifest {
    let id = format!("20261129T{:06}Z-{n:06x}", n % 240_000);
    let mut m: Manifest = serde_json::from_value(serde_json::json!({
        "schema_version": 1, "id": id, "source": source, "engine": "command", "kind": "stdout",
        "started_at": "2026-11-29T00:00:00Z", "finished_at": "2026-11-29T00:00:01Z",
        "consistency": {"consistency_time": format!("2026-11-29T{:02}:{:02}:00Z", n / 60 % 24, n % 60)},
        "raw_bytes": n, "raw_sha256": "00", "stored_bytes": 3, "stored_sha256": "11",
        "data_key": format!("{source}/stdout/{id}/data.zst.age"), "zstd_level": 3,
        "recipients": ["age1example"], "gsdr_version": "test"
    }))
    .unwrap();
    if let Some(s) = signer {
        m.sign(s);
    }
    m
}

/// A catalog over `store` whose requests are counted.
fn counted(store: &Arc<dyn Store>) -> (Catalog, Arc<RequestCounts>) {
    let counts = Arc::new(RequestCounts::default());
    let c = CountedStore::new(store.clone(), counts.clone());
    (Catalog::new(Arc::new(c)), counts)
}

fn gets(c: &RequestCounts) -> u64 {
    c.get.load(Ordering::Relaxed)
}

fn puts(c: &RequestCounts) -> u64 {
    c.put.load(Ordering::Relaxed)
}

/// `n` backups of `SOURCE` committed (data objects too), plus backups of
/// another source and WAL files of `SOURCE`, none of which a listing of
/// `SOURCE` may read.
async fn fill(store: &Arc<dyn Store>, n: u32, signer: Option<&Signer>) -> Vec<Manifest> {
    let cat = Catalog::new(store.clone());
    let mut out = Vec::new();
    for i in 0..n {
        let m = manifest(SOURCE, i, signer);
        store
            .put_small(
                &m.data_key,
                Bytes::from_static(b"abc"),
                PutCondition::IfAbsent,
            )
            .await
            .unwrap();
        cat.commit(&m).await.unwrap();
        out.push(m);
    }
    for i in 0..5 {
        cat.commit(&manifest("other", i, signer)).await.unwrap();
    }
    for i in 0..30 {
        let name = format!("0000000100000000000000{i:02X}");
        store
            .put_small(
                &gsdr::layout::wal_data(SOURCE, &name),
                Bytes::from_static(b"w"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap();
    }
    out
}

fn ids(ms: &[Manifest]) -> Vec<&str> {
    ms.iter().map(|m| m.id.as_str()).collect()
}

async fn index_doc(store: &Arc<dyn Store>) -> serde_json::Value {
    let (b, _) = store
        .get_small(&gsdr::layout::source_index(SOURCE), 1 << 24)
        .await
        .expect("the index exists");
    serde_json::from_slice(&b).unwrap()
}

/// Commits write the index; a listing then reads the index and no manifest:
/// one GET whatever the number of backups, WAL files or other sources.
async fn index_is_written_on_commit_and_used_by_list(s: Subject) {
    let want = fill(&s.store, 12, None).await;
    let doc = index_doc(&s.store).await;
    assert_eq!(doc["entries"].as_array().unwrap().len(), 12);
    assert_eq!(doc["source"], SOURCE);

    let (cat, counts) = counted(&s.store);
    let got = cat.list(Some(SOURCE)).await.unwrap();
    assert_eq!(ids(&got), ids(&want));
    assert_eq!(got, want, "the index gives the manifests as committed");
    assert_eq!(
        gets(&counts),
        1,
        "only the index is read: {}",
        counts.summary()
    );
    assert_eq!(puts(&counts), 0, "an index up to date is not rewritten");
    // The folder listing and the one kind folder: never the WAL folder.
    assert_eq!(
        counts.list.load(Ordering::Relaxed),
        2,
        "{}",
        counts.summary()
    );

    // Every source: one listing of the target, one index GET per source.
    let (cat, all) = counted(&s.store);
    assert_eq!(cat.list(None).await.unwrap().len(), 12 + 5);
    assert_eq!(gets(&all), 2, "{}", all.summary());

    // Other sources' backups do not change the cost.
    let cat2 = Catalog::new(s.store.clone());
    for i in 100..140 {
        cat2.commit(&manifest("other", i, None)).await.unwrap();
    }
    let (cat, counts2) = counted(&s.store);
    cat.list(Some(SOURCE)).await.unwrap();
    assert_eq!(counts2.total(), counts.total(), "{}", counts2.summary());
}

/// A deleted index is rebuilt from the manifests by the next listing, which
/// reads each; the one after reads the index only.
async fn index_is_rebuilt_when_deleted(s: Subject) {
    let want = fill(&s.store, 10, None).await;
    s.store
        .delete(&gsdr::layout::source_index(SOURCE))
        .await
        .unwrap();
    let (cat, counts) = counted(&s.store);
    assert_eq!(ids(&cat.list(Some(SOURCE)).await.unwrap()), ids(&want));
    // The index (absent) and the ten manifests.
    assert_eq!(gets(&counts), 11, "{}", counts.summary());
    assert_eq!(puts(&counts), 1, "the index is written again");
    assert_eq!(
        index_doc(&s.store).await["entries"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    let (cat, counts) = counted(&s.store);
    assert_eq!(ids(&cat.list(Some(SOURCE)).await.unwrap()), ids(&want));
    assert_eq!(gets(&counts), 1, "{}", counts.summary());
}

/// A manifest written without the index (an older gsdr) is read, and only
/// it; one deleted behind its back (pruned by hand) drops out without a read.
async fn index_follows_manifests_changed_behind_its_back(s: Subject) {
    let mut want = fill(&s.store, 8, None).await;
    let newer = manifest(SOURCE, 50, None);
    s.store
        .put_small(
            &newer.manifest_key(),
            serde_json::to_vec_pretty(&newer).unwrap().into(),
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    want.push(newer.clone());
    let (cat, counts) = counted(&s.store);
    assert_eq!(ids(&cat.list(Some(SOURCE)).await.unwrap()), ids(&want));
    assert_eq!(
        gets(&counts),
        2,
        "the index and the new manifest: {}",
        counts.summary()
    );
    assert_eq!(puts(&counts), 1);
    let doc = index_doc(&s.store).await;
    assert!(doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["manifest"]["id"] == newer.id.as_str()));

    let gone = want.remove(3);
    s.store.delete(&gone.manifest_key()).await.unwrap();
    let (cat, counts) = counted(&s.store);
    assert_eq!(ids(&cat.list(Some(SOURCE)).await.unwrap()), ids(&want));
    assert_eq!(gets(&counts), 1, "{}", counts.summary());
    assert_eq!(puts(&counts), 1, "the index drops it");
    assert_eq!(
        index_doc(&s.store).await["entries"]
            .as_array()
            .unwrap()
            .len(),
        want.len()
    );

    // A manifest replaced in place (same key, new content): read again.
    let mut changed = want[0].clone();
    changed.raw_bytes = 999;
    s.store
        .put_small(
            &changed.manifest_key(),
            serde_json::to_vec_pretty(&changed).unwrap().into(),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    let (cat, counts) = counted(&s.store);
    let got = cat.list(Some(SOURCE)).await.unwrap();
    assert_eq!(got[0].raw_bytes, 999);
    assert_eq!(gets(&counts), 2, "{}", counts.summary());
}

/// An edited index entry keeps the signature of the manifest it was made
/// from, so it no longer verifies; the choice of what to restore reads the
/// manifest itself and gets the genuine one.
async fn tampered_index_cannot_bypass_signatures(s: Subject) {
    let dir = crate::support::tempdir();
    let key = dir.path().join("signing.key");
    let vk = Signer::create(&key).unwrap();
    let signer = Signer::read(&key).unwrap();
    let trust = Trust {
        keys: vec![VerifyKey::parse(&vk).unwrap()],
        allow_unsigned: false,
    };
    let want = fill(&s.store, 4, Some(&signer)).await;
    let newest = want.last().unwrap().clone();
    // The attacker points the newest entry at other data, keeping its etag
    // (so a listing takes the entry) and its signature.
    let mut doc = index_doc(&s.store).await;
    for e in doc["entries"].as_array_mut().unwrap() {
        if e["manifest"]["id"] == newest.id.as_str() {
            e["manifest"]["stored_sha256"] = "feedface".into();
        }
    }
    s.store
        .put_small(
            &gsdr::layout::source_index(SOURCE),
            serde_json::to_vec(&doc).unwrap().into(),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    let cat = Catalog::new(s.store.clone());
    let listed = cat.list(Some(SOURCE)).await.unwrap();
    let forged = listed.iter().find(|m| m.id == newest.id).unwrap();
    assert_eq!(
        forged.stored_sha256, "feedface",
        "the listing took the entry"
    );
    let err = forged.authenticate(&trust).unwrap_err();
    assert!(
        err.to_string().contains("signature") || err.to_string().contains("forged"),
        "{err}"
    );
    for m in listed.iter().filter(|m| m.id != newest.id) {
        m.authenticate(&trust).unwrap();
    }
    // What a restore picks is the manifest itself, which verifies.
    let chosen = cat.newest_before(SOURCE, None, None).await.unwrap();
    assert_eq!(chosen, newest);
    chosen.authenticate(&trust).unwrap();
    let by_id = cat.find_of(SOURCE, &newest.id).await.unwrap();
    assert_eq!(by_id, newest);

    // An entry for a manifest that is not there (a forged backup) is ignored.
    let mut doc = index_doc(&s.store).await;
    let mut ghost = serde_json::to_value(manifest(SOURCE, 77, Some(&signer))).unwrap();
    ghost["id"] = "20261201T000000Z-666666".into();
    doc["entries"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"etag": "x", "manifest": ghost}));
    s.store
        .put_small(
            &gsdr::layout::source_index(SOURCE),
            serde_json::to_vec(&doc).unwrap().into(),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    let listed = cat.list(Some(SOURCE)).await.unwrap();
    assert_eq!(listed.len(), want.len());
    assert!(listed.iter().all(|m| m.id != "20261201T000000Z-666666"));
}

/// A prune (retention) drops the deleted backups from the index, so the
/// next listing reads nothing but the index.
async fn prune_updates_the_index(s: Subject) {
    let want = fill(&s.store, 6, None).await;
    let cat = Catalog::new(s.store.clone());
    let rules = gsdr::retention::Retention {
        keep_last: Some(2),
        ..Default::default()
    };
    let done = gsdr::retention::prune_source(&cat, "t", SOURCE, &rules, chrono::Utc::now(), false)
        .await
        .unwrap();
    assert_eq!(done.remaining.len(), 2, "{:?}", done.actions);
    assert_eq!(
        index_doc(&s.store).await["entries"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (cat, counts) = counted(&s.store);
    let got = cat.list(Some(SOURCE)).await.unwrap();
    assert_eq!(ids(&got), ids(&want[4..]));
    assert_eq!(gets(&counts), 1, "{}", counts.summary());
    assert_eq!(puts(&counts), 0, "{}", counts.summary());
}

macro_rules! both {
    ($($check:ident),* $(,)?) => {
        mod fs {
            $(#[tokio::test]
            async fn $check() {
                super::$check(super::fs_subject().await).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $check() {
                super::$check(super::s3_subject().await).await
            })*
        }
    };
}

both!(
    index_is_written_on_commit_and_used_by_list,
    index_is_rebuilt_when_deleted,
    index_follows_manifests_changed_behind_its_back,
    tampered_index_cannot_bypass_signatures,
    prune_updates_the_index,
);

/// End to end through the binary, signed backups on a folder target: an
/// index entry edited to give the newest backup the old one's hashes does
/// not make `gsdr restore --source` fail or restore something else (the
/// chosen manifest is read again and the genuine backup restored); a deleted
/// index is rebuilt by `gsdr list` from the manifests.
#[test]
fn cli_restore_ignores_a_tampered_index() {
    use crate::support::gsdr_bin;
    let f = crate::cli::Fixture::new(
        "[targets.local]\nkind = \"fs\"\npath = \"{dir}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.cfg]\nkind = \"command\"\n[sources.cfg.command]\nargv = [\"cat\", \"{dir}/input.txt\"]\n",
    );
    let d = f.dir.path();
    let key = d.join("sign.key");
    let out = std::process::Command::new(gsdr_bin())
        .args(["keygen", "--signing", "-o"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let vk = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let text = std::fs::read_to_string(&f.policy).unwrap();
    std::fs::write(
        &f.policy,
        format!(
            "{text}[signing]\nkey_file = \"{}\"\nverify_keys = [\"{vk}\"]\n",
            key.display()
        ),
    )
    .unwrap();
    let backup = |content: &str| {
        std::fs::write(d.join("input.txt"), content).unwrap();
        let j = f.gsdr_json(&["backup"]);
        j["backups"][0]["manifest"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let old = backup("old\n");
    let new = backup("new\n");
    let index = d.join("store/cfg/index.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index).expect("commit wrote the index")).unwrap();
    assert_eq!(doc["entries"].as_array().unwrap().len(), 2, "{doc}");
    // The attacker makes the newest entry name the old backup's data.
    let old_entry = doc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manifest"]["id"] == old.as_str())
        .unwrap()
        .clone();
    for e in doc["entries"].as_array_mut().unwrap() {
        if e["manifest"]["id"] == new.as_str() {
            for field in ["stored_sha256", "stored_bytes", "raw_sha256", "raw_bytes"] {
                e["manifest"][field] = old_entry["manifest"][field].clone();
            }
        }
    }
    std::fs::write(&index, serde_json::to_vec(&doc).unwrap()).unwrap();

    let to = d.join("restored.txt");
    let out = f.gsdr(&[
        "restore",
        "--source",
        "cfg",
        "--to-file",
        to.to_str().unwrap(),
        "--force",
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&to).unwrap(), "new\n");
    let listed = f.gsdr_json(&["list", "--source", "cfg"]);
    assert!(listed.to_string().contains(&new), "{listed}");

    std::fs::remove_file(&index).unwrap();
    f.gsdr_json(&["list", "--source", "cfg"]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    let entries = doc["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let rebuilt = entries
        .iter()
        .find(|e| e["manifest"]["id"] == new.as_str())
        .unwrap();
    assert_ne!(
        rebuilt["manifest"]["stored_sha256"], old_entry["manifest"]["stored_sha256"],
        "rebuilt from the manifests, not the tampered index"
    );
}
