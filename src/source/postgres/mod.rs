//! The `postgres` engine: continuous WAL archiving, base backups and
//! point-in-time restore.
//!
//! - [`wal`]: `wal-push` (PostgreSQL's `archive_command`) and `wal-fetch`
//!   (`restore_command`). WAL objects live at
//!   `<source>/wal/<timeline>/<name>.zst.age`, each with a small sidecar
//!   `<name>.json` (SHA-256 and size of the raw file) that makes a repeated
//!   push of the same file recognisable without the private key.
//! - [`base`]: a [`crate::source::BackupSource`] of kind `base` streaming
//!   `pg_basebackup -D - -Ft -X none` through the pipeline.
//! - [`archiver`]: refuses a base backup of a cluster whose archiving is off
//!   or failing, and bounds PostgreSQL's wait for the backup's WAL.
//! - [`restore`]: unpacks the newest base backup before the target into a
//!   data directory and writes the recovery settings.
//! - [`walverify`]: gaps in the archived WAL chain per timeline, the end of
//!   the contiguous chain (the cluster's current RPO), and the retention helper.
//! - [`walchain`]: the contiguous chain from a base backup's first segment,
//!   and why a segment `wal-fetch` did not find is missing (end or hole).
//! - [`walname`]: WAL file names and the keys of their objects; [`walfloor`]:
//!   from which segment on the retained base backups need WAL (both pure,
//!   below the other WAL files).
//! - [`walprune`]: after `gsdr prune` decided which base backups stay, deletes
//!   the archived WAL none of them needs.

pub mod archiver;
pub mod base;
pub mod config;
pub mod restore;
pub mod wal;
pub mod walchain;
pub mod walfloor;
pub mod walname;
pub mod walprune;
pub mod walverify;

pub use config::PostgresConfig;

/// Default WAL segment size (PostgreSQL's `--wal-segsize` default).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// A WAL segment position: timeline, and segment number counted from LSN 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    /// Timeline id.
    pub timeline: u32,
    /// Segment number (`LSN / segment size`).
    pub number: u64,
}

impl SegmentId {
    /// Parses a 24-hex-digit segment file name.
    pub fn parse(name: &str, seg_bytes: u64) -> Option<SegmentId> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
        let per_log = segments_per_log(seg_bytes);
        if seg >= per_log {
            return None;
        }
        Some(SegmentId {
            timeline: tli,
            number: log * per_log + seg,
        })
    }

    /// The segment holding `lsn` on `timeline`.
    pub fn of_lsn(timeline: u32, lsn: u64, seg_bytes: u64) -> SegmentId {
        SegmentId {
            timeline,
            number: lsn / seg_bytes,
        }
    }

    /// The file name (`TTTTTTTTLLLLLLLLSSSSSSSS`).
    pub fn name(&self, seg_bytes: u64) -> String {
        let per_log = segments_per_log(seg_bytes);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    /// The next segment on the same timeline.
    pub fn next(&self) -> SegmentId {
        SegmentId {
            timeline: self.timeline,
            number: self.number + 1,
        }
    }
}

fn segments_per_log(seg_bytes: u64) -> u64 {
    0x1_0000_0000 / seg_bytes
}

/// Parses an LSN written as `16/B374D848`.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

/// Formats an LSN as `16/B374D848`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// The timeline directory a WAL file belongs to (first 8 hex digits), if it is a WAL file name.
pub fn timeline_of(name: &str) -> Option<&str> {
    let ok = name.len() >= 8 && name.as_bytes()[..8].iter().all(|b| b.is_ascii_hexdigit());
    ok.then(|| &name[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let s = SegmentId::parse("000000010000000A000000FF", DEFAULT_SEGMENT_BYTES).unwrap();
        assert_eq!(s.timeline, 1);
        assert_eq!(s.name(DEFAULT_SEGMENT_BYTES), "000000010000000A000000FF");
        assert_eq!(
            s.next().name(DEFAULT_SEGMENT_BYTES),
            "000000010000000B00000000"
        );
        assert!(SegmentId::parse("000000010000000A00000100", DEFAULT_SEGMENT_BYTES).is_none());
        assert!(SegmentId::parse("00000002.history", DEFAULT_SEGMENT_BYTES).is_none());
    }

    #[test]
    fn lsn_maps_to_its_segment() {
        let lsn = parse_lsn("0/2000028").unwrap();
        assert_eq!(format_lsn(lsn), "0/2000028");
        let s = SegmentId::of_lsn(1, lsn, DEFAULT_SEGMENT_BYTES);
        assert_eq!(s.name(DEFAULT_SEGMENT_BYTES), "000000010000000000000002");
        assert_eq!(
            SegmentId::of_lsn(3, parse_lsn("1/FF000000").unwrap(), DEFAULT_SEGMENT_BYTES)
                .name(DEFAULT_SEGMENT_BYTES),
            "0000000300000001000000FF"
        );
    }
}
