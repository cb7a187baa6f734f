//! Order-independent content digest of a collection's raw documents.

use sha2::{Digest, Sha256};

/// Count and order-independent digest of a set of raw BSON documents: the sum
/// (mod 2¹²⁸) of the first 16 bytes of each document's SHA-256. Two sets have
/// the same digest when they hold the same documents byte for byte, in any order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentDigest {
    /// Documents added.
    pub count: u64,
    sum: u128,
}

impl ContentDigest {
    /// Adds one raw document.
    pub fn add(&mut self, doc: &[u8]) {
        let h = Sha256::digest(doc);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(b));
        self.count += 1;
    }

    /// Combines two digests (of disjoint sets).
    pub fn merge(&mut self, other: &ContentDigest) {
        self.sum = self.sum.wrapping_add(other.sum);
        self.count += other.count;
    }

    /// The digest as 32 hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_does_not_matter_but_content_does() {
        let docs: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
        let mut x = ContentDigest::default();
        docs.iter().for_each(|d| x.add(d));
        let mut y = ContentDigest::default();
        docs.iter().rev().for_each(|d| y.add(d));
        assert_eq!(x, y);
        assert_eq!(x.count, 3);
        let mut z = ContentDigest::default();
        [b"a" as &[u8], b"bb", b"ccd"].iter().for_each(|d| z.add(d));
        assert_ne!(x.hex(), z.hex());
        let mut dup = ContentDigest::default();
        [b"a" as &[u8], b"a"].iter().for_each(|d| dup.add(d));
        assert_ne!(
            dup.hex(),
            ContentDigest::default().hex(),
            "duplicates do not cancel"
        );
    }
}
