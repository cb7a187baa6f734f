//! The contiguous WAL chain: how far a cluster can really be recovered.
//!
//! A restore replays WAL from its base backup's first segment, one segment
//! after the other; the first segment missing ends recovery. So what counts
//! for every RPO and safe-point figure (`gsdr status`, the daemon's
//! `gsdr_wal_last_archived_timestamp_seconds`, `replicate`'s safe point,
//! the incident plan's implied RPO) is the end of the chain of complete
//! segments (data object and sidecar) that starts at the first segment of
//! the newest *restorable* base backup (one whose chain reaches its own last
//! segment) — never the newest object, which a hole may cut off.
//!
//! The chain follows positions (segment numbers). At each position it takes
//! the highest timeline, at or above the current one, that holds the
//! segment: a promoted restore's new timeline starts with a copy of the
//! switch segment, so that is where recovery (`recovery_target_timeline =
//! 'latest'`) goes on. `.history` files are encrypted, so the switch points
//! they record are not read; the position rule is what they would say for
//! one line of promotions.
//!
//! [`WalIndex::missing`] says why `wal-fetch` did not find a segment: the end
//! of the archive (exit 1, recovery ends there), or a broken archive — a
//! sidecar without its data object (or the reverse), or a hole before a
//! stored segment of the same timeline — which must stop recovery instead of
//! ending it silently one segment short.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::base::BaseDetails;
use super::walname::file_of_key;
use super::SegmentId;
use crate::catalog::Manifest;
use crate::layout;
use crate::storage::{ObjectMeta, StorageError, Store};

/// What the store holds of one WAL segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    /// The data object (`<name>.zst.age`) exists.
    data: bool,
    /// The sidecar (`<name>.json`) exists.
    sidecar: bool,
    /// When the data object (else the sidecar) was stored.
    at: Option<DateTime<Utc>>,
}

impl Held {
    fn complete(&self) -> bool {
        self.data && self.sidecar
    }
}

/// The WAL segments of one source on one store, by position then timeline.
#[derive(Debug, Clone)]
pub struct WalIndex {
    seg_bytes: u64,
    segs: BTreeMap<(u64, u32), Held>,
    /// Streamed partials (`<segment>.stream.zst.age`) by position then
    /// timeline, with when each was stored.
    partials: BTreeMap<(u64, u32), Option<DateTime<Utc>>>,
}

/// A run of complete segments, one per position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// First segment of the run.
    pub first: String,
    /// Last segment of the run: recovery can replay up to its end.
    pub last: String,
    /// When `last` was stored.
    pub last_stored_at: Option<DateTime<Utc>>,
    /// Segments in the run.
    pub segments: u64,
    /// The segment after `last` (on `last`'s timeline) when the archive
    /// holds later segments all the same: a hole cuts the chain there.
    pub hole_at: Option<String>,
    /// The next segment stored after the hole.
    pub resumes_at: Option<String>,
    /// The segment after `last` whose streamed partial is stored (`wal-fetch`
    /// serves it, so recovery replays into it): the chain's real end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    /// When that partial was stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partial_stored_at: Option<DateTime<Utc>>,
}

impl Chain {
    /// When the newest WAL recovery replays was stored: the partial after
    /// the chain when there is one, else `last`.
    pub fn reached_at(&self) -> Option<DateTime<Utc>> {
        match (self.last_stored_at, self.partial_stored_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => b.or(a),
        }
    }
}

/// How far the newest restorable base backup of a source can be recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recoverable {
    /// The base backup the chain starts from.
    pub backup: String,
    /// Its consistency time.
    pub backup_at: DateTime<Utc>,
    /// Its WAL chain, from its first segment on.
    pub chain: Chain,
    /// The newest point a restore reaches: the later of the backup's
    /// consistency time and the time the chain's last segment was stored.
    pub until: DateTime<Utc>,
}

/// Why a segment `wal-fetch` was asked for is not in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Nothing of it is stored, and nothing after it on its timeline: the
    /// end of the archived WAL, where recovery ends.
    End,
    /// Its sidecar is stored without its data object (or the reverse): a push
    /// that did not finish, or an object deleted from the store.
    Incomplete {
        /// Which object is there (`sidecar` or `data object`).
        present: &'static str,
        /// When it was stored.
        at: Option<DateTime<Utc>>,
    },
    /// Nothing of it is stored, but later segments of its timeline are.
    Hole {
        /// The next segment stored after it.
        next: String,
        /// When that one was stored.
        at: Option<DateTime<Utc>>,
        /// Later segments of the timeline stored.
        later: u64,
    },
}

impl Missing {
    /// When the evidence of a broken archive was stored (`None` for [`Missing::End`]).
    pub fn evidence_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Missing::End => None,
            Missing::Incomplete { at, .. } | Missing::Hole { at, .. } => *at,
        }
    }
}

impl WalIndex {
    /// Indexes a listing of `<source>/wal/` (other keys are ignored).
    pub fn from_listing(objects: &[ObjectMeta], source: &str, seg_bytes: u64) -> WalIndex {
        let mut segs: BTreeMap<(u64, u32), Held> = BTreeMap::new();
        let mut partials = BTreeMap::new();
        for o in objects {
            if let Some(s) = super::walname::partial_of_key(source, &o.key)
                .and_then(|n| SegmentId::parse(n, seg_bytes))
            {
                partials.insert((s.number, s.timeline), o.last_modified);
                continue;
            }
            let Some((name, is_data)) = file_of_key(source, &o.key) else {
                continue;
            };
            let Some(s) = SegmentId::parse(name, seg_bytes) else {
                continue; // .history, .backup, .partial: not part of the chain
            };
            let h = segs.entry((s.number, s.timeline)).or_default();
            if is_data {
                h.data = true;
                h.at = o.last_modified.or(h.at);
            } else {
                h.sidecar = true;
                if !h.data {
                    h.at = o.last_modified;
                }
            }
        }
        WalIndex {
            seg_bytes,
            segs,
            partials,
        }
    }

    /// Lists `<source>/wal/` (or one timeline's folder, `timeline` = `00000002`) on `store`.
    pub async fn read(
        store: &dyn Store,
        source: &str,
        timeline: Option<&str>,
        seg_bytes: u64,
    ) -> Result<WalIndex, StorageError> {
        let prefix = match timeline {
            Some(t) => layout::wal_timeline_prefix(source, t),
            None => layout::wal_prefix(source),
        };
        let objects = store.list(&prefix).await?;
        Ok(Self::from_listing(&objects, source, seg_bytes))
    }

    fn name(&self, s: SegmentId) -> String {
        s.name(self.seg_bytes)
    }

    fn held(&self, s: SegmentId) -> Option<&Held> {
        self.segs.get(&(s.number, s.timeline))
    }

    /// The newest complete segment of any timeline (the newest object, not
    /// what recovery reaches: see [`WalIndex::chain_from`]).
    pub fn newest(&self) -> Option<(String, Option<DateTime<Utc>>)> {
        self.segs
            .iter()
            .rev()
            .find(|(_, h)| h.complete())
            .map(|((number, timeline), h)| {
                (
                    self.name(SegmentId {
                        timeline: *timeline,
                        number: *number,
                    }),
                    h.at,
                )
            })
    }

    /// The run of complete segments that starts at `start`; `None` when
    /// `start` itself is not complete.
    pub fn chain_from(&self, start: SegmentId) -> Option<Chain> {
        if !self.held(start).is_some_and(Held::complete) {
            return None;
        }
        let mut cur = start;
        let mut segments = 1u64;
        loop {
            let p = cur.number + 1;
            // The highest timeline at or above the current one holding position p.
            let next = self
                .segs
                .range((p, cur.timeline)..=(p, u32::MAX))
                .rev()
                .find(|(_, h)| h.complete())
                .map(|((number, timeline), _)| SegmentId {
                    timeline: *timeline,
                    number: *number,
                });
            match next {
                Some(n) => {
                    cur = n;
                    segments += 1;
                }
                None => break,
            }
        }
        // Anything stored later, on this timeline or a newer one, means a hole.
        let resumes = self
            .segs
            .range((cur.number + 1, 0)..)
            .find(|((_, t), h)| *t >= cur.timeline && h.data)
            .map(|((number, timeline), _)| SegmentId {
                timeline: *timeline,
                number: *number,
            });
        // A streamed partial right after the chain (and no hole) is where recovery ends.
        let p = cur.number + 1;
        let partial = self
            .partials
            .range((p, cur.timeline)..=(p, u32::MAX))
            .next_back()
            .filter(|_| resumes.is_none())
            .map(|((number, timeline), at)| {
                (
                    self.name(SegmentId {
                        timeline: *timeline,
                        number: *number,
                    }),
                    *at,
                )
            });
        Some(Chain {
            first: self.name(start),
            last: self.name(cur),
            last_stored_at: self.held(cur).and_then(|h| h.at),
            segments,
            hole_at: resumes.map(|_| self.name(cur.next())),
            resumes_at: resumes.map(|r| self.name(r)),
            partial_stored_at: partial.as_ref().and_then(|p| p.1),
            partial: partial.map(|p| p.0),
        })
    }

    /// Why `seg` is not in the archive (as `wal-fetch` found it absent).
    pub fn missing(&self, seg: SegmentId) -> Missing {
        if let Some(h) = self.held(seg) {
            if h.data != h.sidecar {
                return Missing::Incomplete {
                    present: if h.sidecar { "sidecar" } else { "data object" },
                    at: h.at,
                };
            }
        }
        let mut later = self
            .segs
            .range((seg.number + 1, seg.timeline)..)
            .filter(|((_, t), h)| *t == seg.timeline && h.data);
        match later.next() {
            None => Missing::End,
            Some(((number, timeline), h)) => Missing::Hole {
                next: self.name(SegmentId {
                    timeline: *timeline,
                    number: *number,
                }),
                at: h.at,
                later: 1 + later.count() as u64,
            },
        }
    }
}

/// The base backups among `manifests`, newest first, with their details.
fn bases_newest_first(manifests: &[Manifest]) -> Vec<(&Manifest, BaseDetails)> {
    let mut out: Vec<(&Manifest, BaseDetails)> = manifests
        .iter()
        .filter(|m| m.kind == "base")
        .filter_map(|m| {
            serde_json::from_value::<BaseDetails>(m.consistency.details.clone())
                .ok()
                .map(|d| (m, d))
        })
        .collect();
    out.sort_by(|a, b| (b.0.recovery_point(), &b.0.id).cmp(&(a.0.recovery_point(), &a.0.id)));
    out
}

/// The WAL segment size the base backups among `manifests` record (the newest's), if any.
pub fn segment_bytes_of(manifests: &[Manifest]) -> Option<u64> {
    bases_newest_first(manifests)
        .first()
        .map(|(_, d)| d.wal_segment_bytes)
        .filter(|b| b.is_power_of_two())
}

/// The newest base backup among `manifests` whose WAL chain reaches its own
/// last segment in `index`, and how far that chain goes. `None`: no base
/// backup there can be restored.
pub fn recoverable(index: &WalIndex, manifests: &[Manifest]) -> Option<Recoverable> {
    for (m, d) in bases_newest_first(manifests) {
        let (Some(first), Some(last)) = (
            SegmentId::parse(&d.first_segment, index.seg_bytes),
            SegmentId::parse(&d.last_segment, index.seg_bytes),
        ) else {
            continue;
        };
        let Some(chain) = index.chain_from(first) else {
            continue;
        };
        let end = SegmentId::parse(&chain.last, index.seg_bytes).expect("a segment name");
        if end.number < last.number {
            continue; // its own WAL is incomplete: not restorable
        }
        let backup_at = m.recovery_point();
        let until = chain.reached_at().map_or(backup_at, |t| t.max(backup_at));
        return Some(Recoverable {
            backup: m.id.clone(),
            backup_at,
            chain,
            until,
        });
    }
    None
}

/// [`recoverable`] for `source` on `store`, whose catalog holds `manifests`
/// (the segment size comes from their details). Lists `<source>/wal/` once.
pub async fn recoverable_on(
    store: &Arc<dyn Store>,
    source: &str,
    manifests: &[Manifest],
) -> Result<Option<Recoverable>, StorageError> {
    let Some(seg_bytes) = segment_bytes_of(manifests) else {
        return Ok(None);
    };
    let index = WalIndex::read(store.as_ref(), source, None, seg_bytes).await?;
    Ok(recoverable(&index, manifests))
}

/// The newest point a restore of `m` (a backup on `store`) with every WAL
/// there reaches: for a PostgreSQL base backup the end of its contiguous
/// WAL chain (when later than the backup), for anything else its own
/// recovery point. `Ok(None)` when `m`'s WAL does not even reach its stop.
pub async fn restore_reaches(
    store: &Arc<dyn Store>,
    m: &Manifest,
) -> Result<Option<DateTime<Utc>>, StorageError> {
    let one = std::slice::from_ref(m);
    // Not a base backup with readable details: its own recovery point.
    let Some(seg_bytes) = segment_bytes_of(one) else {
        return Ok(Some(m.recovery_point()));
    };
    // Its own timeline and any later one count: list the whole WAL prefix.
    let index = WalIndex::read(store.as_ref(), &m.source, None, seg_bytes).await?;
    Ok(recoverable(&index, one).map(|r| r.until))
}

/// The sentence an operator reads about a broken archive at `seg`.
pub(crate) fn describe(
    missing: &Missing,
    when: impl Fn(Option<DateTime<Utc>>) -> String,
) -> String {
    match missing {
        Missing::End => "not in the archive".into(),
        Missing::Incomplete { present, at } => format!(
            "only its {present} is stored ({}), not {}: a push that never finished, or an object deleted from the store",
            when(*at),
            if *present == "sidecar" {
                "its data object"
            } else {
                "its sidecar (SHA-256 and size)"
            }
        ),
        Missing::Hole { next, at, later } => format!(
            "it is missing from the archive while {later} later segment(s) of its timeline are stored (the next: `{next}`, {}): a hole",
            when(*at)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{wal_data as data_key, wal_sidecar as sidecar_key};
    use crate::source::postgres::DEFAULT_SEGMENT_BYTES as SEG;

    fn at(s: i64) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(1_800_000_000 + s, 0)
    }

    /// A listing: for each name, `d` (data), `s` (sidecar) or `ds` (both), stored at `t`.
    fn listing(files: &[(&str, &str, i64)]) -> Vec<ObjectMeta> {
        let mut out = Vec::new();
        for (name, what, t) in files {
            for (flag, key) in [('d', data_key("pg", name)), ('s', sidecar_key("pg", name))] {
                if what.contains(flag) {
                    out.push(ObjectMeta {
                        key,
                        size: 10,
                        etag: None,
                        last_modified: at(*t),
                    });
                }
            }
        }
        out
    }

    fn seg(name: &str) -> SegmentId {
        SegmentId::parse(name, SEG).unwrap()
    }

    const S1: &str = "000000010000000000000001";
    const S2: &str = "000000010000000000000002";
    const S3: &str = "000000010000000000000003";
    const S4: &str = "000000010000000000000004";
    const S5: &str = "000000010000000000000005";

    #[test]
    fn the_chain_ends_at_the_first_hole_not_at_the_newest_object() {
        let idx = WalIndex::from_listing(
            &listing(&[(S1, "ds", 1), (S2, "ds", 2), (S4, "ds", 4), (S5, "ds", 5)]),
            "pg",
            SEG,
        );
        assert_eq!(idx.newest().unwrap().0, S5);
        let c = idx.chain_from(seg(S1)).unwrap();
        assert_eq!((c.first.as_str(), c.last.as_str()), (S1, S2));
        assert_eq!(c.segments, 2);
        assert_eq!(c.last_stored_at, at(2));
        assert_eq!(c.hole_at.as_deref(), Some(S3));
        assert_eq!(c.resumes_at.as_deref(), Some(S4));
        assert!(idx.chain_from(seg(S3)).is_none());
        let tail = idx.chain_from(seg(S4)).unwrap();
        assert_eq!((tail.last.as_str(), tail.hole_at), (S5, None));
    }

    #[test]
    fn a_streamed_partial_after_the_chain_is_its_end_but_not_after_a_hole() {
        let part = |name: &str, t: i64| ObjectMeta {
            key: crate::layout::wal_stream_partial("pg", name),
            size: 10,
            etag: None,
            last_modified: at(t),
        };
        let mut l = listing(&[(S1, "ds", 1), (S2, "ds", 2)]);
        l.push(part(S3, 9));
        let idx = WalIndex::from_listing(&l, "pg", SEG);
        let c = idx.chain_from(seg(S1)).unwrap();
        assert_eq!(c.last, S2, "a partial is not a complete segment");
        assert_eq!(c.partial.as_deref(), Some(S3));
        assert_eq!(c.reached_at(), at(9));
        assert_eq!(idx.missing(seg(S3)), Missing::End, "wal-fetch serves the partial");
        // A partial beyond a hole does not extend the chain.
        let mut l = listing(&[(S1, "ds", 1), (S2, "ds", 2), (S4, "ds", 4)]);
        l.push(part(S5, 9));
        let c = WalIndex::from_listing(&l, "pg", SEG).chain_from(seg(S1)).unwrap();
        assert_eq!((c.partial.clone(), c.reached_at()), (None, at(2)));
    }

    #[test]
    fn an_incomplete_segment_cuts_the_chain() {
        // S3 has only its sidecar (a push that never finished).
        let idx = WalIndex::from_listing(
            &listing(&[(S1, "ds", 1), (S2, "ds", 2), (S3, "s", 3), (S4, "ds", 4)]),
            "pg",
            SEG,
        );
        let c = idx.chain_from(seg(S1)).unwrap();
        assert_eq!(c.last, S2);
        assert_eq!(c.hole_at.as_deref(), Some(S3));
        assert_eq!(
            idx.missing(seg(S3)),
            Missing::Incomplete {
                present: "sidecar",
                at: at(3)
            }
        );
    }

    #[test]
    fn the_chain_follows_a_newer_timeline_from_its_switch_segment() {
        // Timeline 2 starts at position 3 (a copy of the switch segment).
        let t2_3 = "000000020000000000000003";
        let t2_4 = "000000020000000000000004";
        let idx = WalIndex::from_listing(
            &listing(&[
                (S1, "ds", 1),
                (S2, "ds", 2),
                (S3, "ds", 3),
                (S4, "ds", 4),
                (t2_3, "ds", 10),
                (t2_4, "ds", 11),
            ]),
            "pg",
            SEG,
        );
        let c = idx.chain_from(seg(S1)).unwrap();
        assert_eq!((c.last.as_str(), c.segments, c.hole_at), (t2_4, 4, None));
        assert_eq!(c.last_stored_at, at(11));
    }

    #[test]
    fn missing_tells_the_end_from_a_hole() {
        let idx = WalIndex::from_listing(
            &listing(&[
                (S1, "ds", 1),
                (S3, "ds", 3),
                (S4, "ds", 4),
                (S5, "d", 5),
                ("000000020000000000000009", "ds", 9),
            ]),
            "pg",
            SEG,
        );
        assert_eq!(
            idx.missing(seg(S2)),
            Missing::Hole {
                next: S3.into(),
                at: at(3),
                later: 3
            }
        );
        assert_eq!(
            idx.missing(seg(S5)),
            Missing::Incomplete {
                present: "data object",
                at: at(5)
            }
        );
        // After the last segment of timeline 1: the end (timeline 2 does not count).
        assert_eq!(idx.missing(seg("000000010000000000000006")), Missing::End);
        assert_eq!(idx.missing(seg("00000002000000000000000A")), Missing::End);
    }

    fn base(id: &str, first: &str, last: &str, t: i64) -> Manifest {
        let d = BaseDetails {
            start_lsn: "0/1000028".into(),
            stop_lsn: "0/1000100".into(),
            timeline: 1,
            system_identifier: "7".into(),
            first_segment: first.into(),
            last_segment: last.into(),
            start_time: at(t).unwrap(),
            stop_time: at(t).unwrap(),
            server_version: "15".into(),
            wal_segment_bytes: SEG,
        };
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "id": id, "source": "pg", "engine": "postgres", "kind": "base",
            "started_at": at(t).unwrap(), "finished_at": at(t).unwrap(),
            "consistency": {"consistency_time": at(t).unwrap(), "details": {}},
            "raw_bytes": 1, "raw_sha256": "", "stored_bytes": 1, "stored_sha256": "",
            "data_key": format!("pg/base/{id}/data.zst.age"), "zstd_level": 3,
            "recipients": [], "gsdr_version": "0"
        }))
        .expect("a manifest");
        m.consistency.details = serde_json::to_value(d).unwrap();
        m
    }

    #[test]
    fn the_newest_restorable_base_backup_sets_the_recovery_point() {
        let files = [(S1, "ds", 1), (S2, "ds", 2), (S4, "ds", 40), (S5, "ds", 50)];
        let idx = WalIndex::from_listing(&listing(&files), "pg", SEG);
        // b2 needs S4..S5 (complete), b1 S1..S1: b2 is newest and restorable.
        let (b1, b2) = (base("b1", S1, S1, 1), base("b2", S4, S5, 45));
        let r = recoverable(&idx, &[b1.clone(), b2.clone()]).unwrap();
        assert_eq!((r.backup.as_str(), r.chain.last.as_str()), ("b2", S5));
        assert_eq!(r.until, at(50).unwrap());
        // b3 needs S2..S3 but S3 is missing: not restorable; b1's chain ends at S2.
        let b3 = base("b3", S2, S3, 3);
        let r = recoverable(&idx, &[b1.clone(), b3]).unwrap();
        assert_eq!((r.backup.as_str(), r.chain.last.as_str()), ("b1", S2));
        assert_eq!(r.chain.hole_at.as_deref(), Some(S3));
        assert_eq!(r.until, at(2).unwrap());
        // Nothing restorable: none.
        assert!(recoverable(&idx, &[base("b4", S3, S4, 4)]).is_none());
        assert!(recoverable(&idx, &[]).is_none());
    }
}
