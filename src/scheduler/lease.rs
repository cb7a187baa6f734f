//! The run lease: at most one run per source at a time, across daemon replicas.
//!
//! One small JSON object per source, `<locks_prefix>/<source>.json`, on the
//! source's primary target. It is created with a create-only write
//! (`If-None-Match: *`) and changed only by compare-and-swap on its etag
//! (`If-Match`), so of two replicas racing for it exactly one wins (on a
//! server whose conditional writes are atomic). It records:
//!
//! - who holds it and until when (`expires_at`, pushed forward by renewals
//!   every `lease_renew`; an expired lease may be taken over: its holder
//!   died),
//! - the newest cron slot already handled (`done_slot`), so that a replica
//!   waking late for a slot another replica already ran skips it: every
//!   scheduled run happens once, not once per replica.
//!
//! Replicas compare `expires_at` with their own clocks: keep them in sync
//! (NTP) to well under `lease_ttl − lease_renew`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::storage::{PutCondition, StorageError, Store};

const LEASE_MAX_BYTES: u64 = 64 << 10;

/// The lease document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseDoc {
    /// Holder id (`<hostname>-<pid>-<random>`).
    pub holder: String,
    /// The slot being run.
    pub slot: DateTime<Utc>,
    /// Until when the holder owns it, unless renewed.
    pub expires_at: DateTime<Utc>,
    /// The holder let go.
    pub released: bool,
    /// Newest slot already handled (successfully or not).
    pub done_slot: Option<DateTime<Utc>>,
}

/// Outcome of [`acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// We hold it.
    Got(Lease),
    /// Another holder runs the source right now.
    Busy {
        /// Its id.
        holder: String,
    },
    /// The slot was already handled.
    Done {
        /// Who handled the newest slot.
        by: String,
    },
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    store: Arc<dyn Store>,
    key: String,
    etag: String,
    doc: LeaseDoc,
}

/// Key of the lease of `source`.
pub fn lease_key(locks_prefix: &str, source: &str) -> String {
    format!("{locks_prefix}/{source}.json")
}

/// Reads the lease at `key`; `None` if there is none. An unreadable one is an error.
pub async fn read(store: &dyn Store, key: &str) -> Result<Option<LeaseDoc>, StorageError> {
    match store.get_small(key, LEASE_MAX_BYTES).await {
        Ok((bytes, _)) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StorageError::Config {
                    store: store.describe(),
                    message: format!("lease `{key}` is not a gsdr lease: {e}"),
                })
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

fn ttl_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

async fn write(
    store: &Arc<dyn Store>,
    key: &str,
    doc: &LeaseDoc,
    cond: PutCondition,
) -> Result<String, StorageError> {
    let body = serde_json::to_vec(doc).expect("lease serialises");
    let put = store.put_small(key, body.into(), cond).await?;
    match put.etag {
        Some(e) => Ok(e),
        None => Ok(store
            .head(key)
            .await?
            .and_then(|m| m.etag)
            .unwrap_or_default()),
    }
}

/// Tries to take the lease of `key` to run `slot`.
pub async fn acquire(
    store: Arc<dyn Store>,
    key: &str,
    holder: &str,
    slot: DateTime<Utc>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Acquire, StorageError> {
    // A lost race re-reads once or twice: the winner's document tells why we lost.
    for _ in 0..3 {
        let current = match store.get_small(key, LEASE_MAX_BYTES).await {
            Ok((bytes, meta)) => match serde_json::from_slice::<LeaseDoc>(&bytes) {
                Ok(doc) => Some((doc, meta.etag.unwrap_or_default())),
                Err(e) => {
                    return Err(StorageError::Config {
                        store: store.describe(),
                        message: format!(
                        "lease `{key}` is unreadable ({e}); delete it if no gsdr runs this source"
                    ),
                    })
                }
            },
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let mut doc = LeaseDoc {
            holder: holder.to_string(),
            slot,
            expires_at: now + ttl_of(ttl),
            released: false,
            done_slot: None,
        };
        let cond = match current {
            None => PutCondition::IfAbsent,
            Some((cur, etag)) => {
                if cur.done_slot.is_some_and(|d| d >= slot) {
                    return Ok(Acquire::Done { by: cur.holder });
                }
                if !cur.released && cur.expires_at > now && cur.holder != holder {
                    return Ok(Acquire::Busy { holder: cur.holder });
                }
                if !cur.released && cur.expires_at > now && cur.slot >= slot {
                    // Our own live lease for this slot (e.g. a duplicate trigger).
                    return Ok(Acquire::Busy { holder: cur.holder });
                }
                doc.done_slot = cur.done_slot;
                PutCondition::IfMatch(etag)
            }
        };
        match write(&store, key, &doc, cond).await {
            Ok(etag) => {
                return Ok(Acquire::Got(Lease {
                    store,
                    key: key.to_string(),
                    etag,
                    doc,
                }))
            }
            Err(StorageError::PreconditionFailed { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Acquire::Busy {
        holder: "(another replica; lost the race)".into(),
    })
}

impl Lease {
    /// The document as last written.
    pub fn doc(&self) -> &LeaseDoc {
        &self.doc
    }

    /// Pushes the expiry to `now + ttl`. `PreconditionFailed` = the lease was lost.
    pub async fn renew(&mut self, now: DateTime<Utc>, ttl: Duration) -> Result<(), StorageError> {
        let mut doc = self.doc.clone();
        doc.expires_at = now + ttl_of(ttl);
        self.swap(doc).await
    }

    /// Compare-and-swap of the document. A 412 may only mean that our own
    /// write landed and its response was lost (the SDK retried it): the
    /// lease is still ours if it holds exactly what we wrote.
    async fn swap(&mut self, doc: LeaseDoc) -> Result<(), StorageError> {
        match write(
            &self.store,
            &self.key,
            &doc,
            PutCondition::IfMatch(self.etag.clone()),
        )
        .await
        {
            Ok(etag) => {
                self.etag = etag;
                self.doc = doc;
                Ok(())
            }
            Err(e @ StorageError::PreconditionFailed { .. }) => {
                let (bytes, meta) = match self.store.get_small(&self.key, LEASE_MAX_BYTES).await {
                    Ok(got) => got,
                    Err(_) => return Err(e),
                };
                match serde_json::from_slice::<LeaseDoc>(&bytes) {
                    Ok(current) if current == doc => {
                        tracing::info!(event = "lease_write_confirmed", key = %self.key, "a lost response: the lease holds our write");
                        self.etag = meta.etag.unwrap_or_default();
                        self.doc = doc;
                        Ok(())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Lets go, recording the slot as handled when `done`.
    pub async fn release(mut self, now: DateTime<Utc>, done: bool) -> Result<(), StorageError> {
        let mut doc = self.doc.clone();
        doc.released = true;
        doc.expires_at = now;
        if done {
            doc.done_slot = Some(doc.done_slot.map_or(doc.slot, |d| d.max(doc.slot)));
        }
        self.swap(doc).await
    }
}
