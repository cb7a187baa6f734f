//! Velero backup records in gsdr's catalog: one small JSON object per Velero
//! backup, at [`record_key`] (`velero/<job>/<name>.json`), beside the database
//! backups' manifests (`<source>/<kind>/<id>/manifest.json`, which this layout
//! cannot be mistaken for).

use bytes::Bytes;

use super::{VeleroError, VeleroRecord};
use crate::storage::{PutCondition, Store};

/// Largest record read back (a record with a full log excerpt is about 0.3 MiB).
pub const RECORD_MAX_BYTES: u64 = 1 << 20;

/// Where gsdr's catalog keeps the record of backup `name` of `job`.
pub fn record_key(job: &str, name: &str) -> String {
    format!("velero/{job}/{name}.json")
}

/// Writes (or replaces: a later look at the same backup may know more) a record; returns its key.
pub async fn put_record(store: &dyn Store, rec: &VeleroRecord) -> Result<String, VeleroError> {
    let job = rec.job.as_deref().ok_or_else(|| {
        VeleroError::Invalid(format!(
            "Velero backup `{}` was not made by a gsdr job (no gsdr.io/job label): it has no place in the catalog",
            rec.name
        ))
    })?;
    let key = record_key(job, &rec.name);
    let body = serde_json::to_vec_pretty(rec).expect("a record serialises");
    store
        .put_small(&key, Bytes::from(body), PutCondition::Overwrite)
        .await
        .map_err(|e| VeleroError::Catalog {
            key: key.clone(),
            store: store.describe(),
            source: Box::new(e),
        })?;
    Ok(key)
}

/// Every Velero record (of `job` if given), oldest first.
pub async fn list_records(
    store: &dyn Store,
    job: Option<&str>,
) -> Result<Vec<VeleroRecord>, VeleroError> {
    let prefix = match job {
        Some(j) => format!("velero/{j}/"),
        None => "velero/".to_string(),
    };
    let cat = |key: &str, e| VeleroError::Catalog {
        key: key.to_string(),
        store: store.describe(),
        source: Box::new(e),
    };
    let objects = store.list(&prefix).await.map_err(|e| cat(&prefix, e))?;
    let mut out = Vec::new();
    for o in objects
        .iter()
        .filter(|o| o.key.ends_with(".json") && o.key.split('/').count() == 3)
    {
        let (bytes, _) = store
            .get_small(&o.key, RECORD_MAX_BYTES)
            .await
            .map_err(|e| cat(&o.key, e))?;
        let rec: VeleroRecord =
            serde_json::from_slice(&bytes).map_err(|e| VeleroError::Decode {
                what: format!("reading Velero record `{}` in {}", o.key, store.describe()),
                source: e,
            })?;
        out.push(rec);
    }
    out.sort_by(|a, b| (a.started, &a.name).cmp(&(b.started, &b.name)));
    Ok(out)
}
