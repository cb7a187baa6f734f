//! Cutting a stream into multipart-upload parts within S3's limits.

const MIB: u64 = 1 << 20;
/// Parts per multipart upload allowed by S3.
pub const MAX_PARTS: u64 = 10_000;
/// Smallest part S3 accepts (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Parts uploaded at one size before the part size doubles.
const PARTS_PER_TIER: u64 = 1_000;

/// [`PARTS_PER_TIER`], or `GSDR_BENCH_PARTS_PER_TIER` when set: the memory
/// benchmark lowers it so a stream of a few hundred MiB crosses several
/// doublings (S3 would need tens of GiB).
fn parts_per_tier() -> u64 {
    static TIER: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TIER.get_or_init(|| {
        std::env::var("GSDR_BENCH_PARTS_PER_TIER")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(PARTS_PER_TIER)
    })
}

/// How a stream is cut into parts: `first` bytes per part for the first 1,000
/// parts, doubling every 1,000 parts, never above 5 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    /// Size of the first parts, a whole number of MiB.
    pub first: u64,
}

impl PartPlan {
    /// The plan for a target whose configured part size is `configured`, for a
    /// stream expected to be at most `expected` bytes.
    pub fn new(configured: u64, expected: u64) -> PartPlan {
        let mut first = configured.clamp(MIN_PART_SIZE, MAX_PART_SIZE).div_ceil(MIB) * MIB;
        while first < MAX_PART_SIZE && (PartPlan { first }).capacity() < expected {
            first = (first + first / 4).div_ceil(MIB) * MIB;
        }
        PartPlan {
            first: first.min(MAX_PART_SIZE),
        }
    }

    /// Size of part `number` (1-based).
    pub fn size_of(&self, number: u64) -> u64 {
        let tier = (number.saturating_sub(1) / parts_per_tier()).min(32) as u32;
        self.first.saturating_mul(1u64 << tier).min(MAX_PART_SIZE)
    }

    /// Bytes that 10,000 parts of this plan hold.
    pub fn capacity(&self) -> u64 {
        let per = parts_per_tier();
        (0..MAX_PARTS / per)
            .map(|t| self.size_of(t * per + 1).saturating_mul(per))
            .fold(0u64, u64::saturating_add)
    }

    /// Parts needed for a stream of `total` bytes (at least 1).
    pub fn parts_for(&self, total: u64) -> u64 {
        let (mut n, mut left) = (0u64, total);
        loop {
            n += 1;
            let s = self.size_of(n);
            if left <= s {
                return n;
            }
            left -= s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    #[test]
    fn two_tib_fits_in_ten_thousand_parts() {
        for configured in [5 * MIB, 16 * MIB, 64 * MIB] {
            let plan = PartPlan::new(configured, 2 * TIB);
            assert!(
                plan.parts_for(2 * TIB) <= MAX_PARTS,
                "{plan:?}: {} parts",
                plan.parts_for(2 * TIB)
            );
            assert!(plan.capacity() >= 2 * TIB);
            assert_eq!(plan.first % MIB, 0);
        }
        // S3's own maximum object size, 5 TiB, fits too.
        let plan = PartPlan::new(5 * MIB, 5 * TIB);
        assert!(plan.parts_for(5 * TIB) <= MAX_PARTS);
    }

    #[test]
    fn small_streams_keep_the_configured_part_size() {
        let plan = PartPlan::new(16 * MIB, 2 * TIB);
        assert_eq!(plan.first, 16 * MIB);
        assert_eq!(plan.size_of(1), 16 * MIB);
        assert_eq!(plan.size_of(1000), 16 * MIB);
        assert_eq!(plan.size_of(1001), 32 * MIB);
        assert_eq!(plan.parts_for(12 * MIB), 1);
        // 1,000 parts of 16 MiB, 1,000 of 32 MiB, then 64 MiB parts.
        assert_eq!(
            plan.parts_for(100 * GIB),
            2000 + (100 * GIB - 1000 * 48 * MIB).div_ceil(64 * MIB)
        );
    }

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        let plan = PartPlan::new(MIB, 2 * TIB);
        assert_eq!(plan.first, MIN_PART_SIZE);
        let huge = PartPlan::new(5 * MIB, 1 << 50);
        assert!(huge.first <= MAX_PART_SIZE);
        for n in [1, 1000, 5000, 9999, 10_000] {
            assert!(huge.size_of(n) <= MAX_PART_SIZE);
            assert!(PartPlan::new(5 * MIB, 2 * TIB).size_of(n) >= MIN_PART_SIZE);
        }
    }
}
