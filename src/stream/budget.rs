//! One memory budget per stream, from which the codec's worker count and the
//! S3 upload's buffers in flight are derived, whatever the core count and the
//! stream's size.
//!
//! Memory of one stream ≈ [`FIXED_BYTES`] (chunk channels, zstd window, age
//! buffers) + `workers × ZSTD_WORKER_BYTES` + `part_size × (parts_in_flight + 1)`.
//! A quarter of the budget goes to zstd workers, the rest (less the fixed
//! part) to upload buffers. `part_size` doubles every 1,000 parts (S3 allows
//! 10,000), so the parts in flight shrink as a long stream's parts grow; a
//! part that does not fit twice in the upload share is still uploaded, one at
//! a time, and the budget check (`gsdr policy check`) says from which stream
//! size on that happens.

use super::{CHANNEL_CHUNKS, CHUNK_BYTES, ZSTD_JOB_BYTES};

/// Buffers every stream holds whatever the settings: two chunk channels with
/// their in-flight chunks, the zstd window (8 MiB at most at level ≤ 19) and age's buffers.
pub const FIXED_BYTES: u64 = (2 * (CHANNEL_CHUNKS as u64 + 2) * CHUNK_BYTES as u64) + (8 << 20);
/// What one zstd worker holds: a job's input, its output and its match state.
pub const ZSTD_WORKER_BYTES: u64 = 3 * ZSTD_JOB_BYTES as u64;

/// The share of `budget` for zstd workers.
pub fn codec_share(budget: u64) -> u64 {
    budget / 4
}

/// The share of `budget` for S3 part buffers.
pub fn upload_share(budget: u64) -> u64 {
    budget
        .saturating_sub(codec_share(budget))
        .saturating_sub(FIXED_BYTES)
}

/// zstd workers for a stream: `configured` (0 = one per CPU), capped by what
/// the budget holds; 0 (compress on the pipeline thread) when not even one fits.
pub fn zstd_workers(configured: u32, budget: u64) -> u32 {
    let want = if configured == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1)
    } else {
        configured
    };
    let fit = (codec_share(budget) / ZSTD_WORKER_BYTES).min(u32::MAX as u64) as u32;
    want.min(fit)
}

/// Parts an upload keeps in flight at `part_size` (one more is being filled):
/// as many as the upload share holds, between 1 and `configured`.
pub fn parts_in_flight(upload_budget: u64, part_size: u64, configured: usize) -> usize {
    let fit = (upload_budget / part_size.max(1)).saturating_sub(1);
    (fit.min(configured as u64) as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn workers_follow_the_budget_not_the_core_count() {
        // 256 MiB: 64 MiB for zstd = 5 workers of 12 MiB, even on a 64-core node.
        assert_eq!(zstd_workers(64, 256 * MIB), 5);
        assert_eq!(zstd_workers(2, 256 * MIB), 2);
        // Too small for one worker: single-threaded compression.
        assert_eq!(zstd_workers(8, 32 * MIB), 0);
    }

    #[test]
    fn parts_in_flight_shrink_as_parts_grow() {
        let up = upload_share(256 * MIB);
        assert_eq!(up, 256 * MIB - 64 * MIB - FIXED_BYTES);
        assert_eq!(parts_in_flight(up, 16 * MIB, 4), 4);
        assert_eq!(parts_in_flight(up, 64 * MIB, 4), 1);
        // Never zero: the upload still moves, one part at a time.
        assert_eq!(parts_in_flight(up, 1024 * MIB, 4), 1);
        // The stream's total stays within the share while two parts fit.
        for part in [16 * MIB, 32 * MIB, 64 * MIB] {
            let n = parts_in_flight(up, part, 8) as u64;
            assert!(part * (n + 1) <= up, "{part}: {n}");
        }
    }
}
