//! Streaming checks of an RDB payload: the `REDIS00xx` header, the `0xFF`
//! end-of-file opcode and, where the server computed it, the CRC-64 trailer.
//!
//! The checksum is CRC-64/Jones as Redis uses it (`CRC_64_REDIS`, stored
//! little-endian in the last 8 bytes; all zeros when `rdbchecksum no`). The
//! validator keeps only the last 9 bytes back, so memory stays constant
//! whatever the snapshot size.

use crc::{Crc, Digest, Table, CRC_64_REDIS};

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Length of `REDIS` + four version digits.
const HEADER_LEN: usize = 9;
/// `0xFF` opcode + 8 checksum bytes, held back from the digest.
const TRAILER_LEN: usize = 9;
/// RDB versions from this one on end with a checksum.
const FIRST_CHECKSUM_VERSION: u32 = 5;

/// What a valid payload revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdbSummary {
    /// RDB format version from the header (10 for Redis 7.0, 11 for 7.2, 12 for 7.4).
    pub version: u32,
    /// The checksum that was verified; `None` when the server does not compute one.
    pub checksum: Option<u64>,
    /// Payload bytes.
    pub bytes: u64,
}

/// Checks an RDB payload fed in pieces of any size.
pub struct RdbValidator {
    header: Vec<u8>,
    version: Option<u32>,
    digest: Digest<'static, u64, Table<16>>,
    tail: Vec<u8>,
    bytes: u64,
}

impl Default for RdbValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RdbValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdbValidator")
            .field("version", &self.version)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl RdbValidator {
    /// A validator at the start of a payload.
    pub fn new() -> Self {
        RdbValidator {
            header: Vec::with_capacity(HEADER_LEN),
            version: None,
            digest: CRC64.digest(),
            tail: Vec::with_capacity(2 * TRAILER_LEN),
            bytes: 0,
        }
    }

    /// Feeds the next bytes; fails as soon as the header is known to be wrong.
    pub fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.bytes += data.len() as u64;
        if self.version.is_none() {
            let need = HEADER_LEN - self.header.len();
            self.header.extend_from_slice(&data[..need.min(data.len())]);
            if self.header.len() == HEADER_LEN {
                self.version = Some(parse_header(&self.header)?);
            }
        }
        if data.len() >= TRAILER_LEN {
            self.digest.update(&self.tail);
            let cut = data.len() - TRAILER_LEN;
            self.digest.update(&data[..cut]);
            self.tail.clear();
            self.tail.extend_from_slice(&data[cut..]);
        } else {
            self.tail.extend_from_slice(data);
            if self.tail.len() > TRAILER_LEN {
                let cut = self.tail.len() - TRAILER_LEN;
                self.digest.update(&self.tail[..cut]);
                self.tail.drain(..cut);
            }
        }
        Ok(())
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Checks the end of the payload: the EOF opcode and the checksum.
    pub fn finish(mut self) -> Result<RdbSummary, String> {
        let version = self.version.ok_or_else(|| {
            format!(
                "the payload is {} bytes long, shorter than the RDB header: truncated",
                self.bytes
            )
        })?;
        if self.tail.len() < TRAILER_LEN || self.bytes < (HEADER_LEN + TRAILER_LEN) as u64 {
            return Err(format!("the payload ({} bytes) is truncated", self.bytes));
        }
        if version < FIRST_CHECKSUM_VERSION {
            return if self.tail[TRAILER_LEN - 1] == 0xFF {
                Ok(RdbSummary {
                    version,
                    checksum: None,
                    bytes: self.bytes,
                })
            } else {
                Err("the payload does not end with the RDB EOF opcode: truncated".into())
            };
        }
        if self.tail[0] != 0xFF {
            return Err(format!(
                "the payload ({} bytes) does not end with the RDB EOF opcode and checksum: truncated or corrupt",
                self.bytes
            ));
        }
        self.digest.update(&self.tail[..1]);
        let stored = u64::from_le_bytes(self.tail[1..].try_into().expect("8 bytes"));
        if stored == 0 {
            return Ok(RdbSummary {
                version,
                checksum: None,
                bytes: self.bytes,
            });
        }
        let computed = self.digest.finalize();
        if computed != stored {
            return Err(format!(
                "CRC-64 mismatch: the payload says {stored:016x}, its bytes give {computed:016x}: corrupt"
            ));
        }
        Ok(RdbSummary {
            version,
            checksum: Some(stored),
            bytes: self.bytes,
        })
    }
}

fn parse_header(h: &[u8]) -> Result<u32, String> {
    if &h[..5] != b"REDIS" || !h[5..].iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "the payload does not start with an RDB header (`REDIS00xx`) but with {:?}",
            String::from_utf8_lossy(h)
        ));
    }
    Ok(std::str::from_utf8(&h[5..])
        .expect("digits")
        .parse()
        .expect("digits"))
}

/// The Redis CRC-64 of `data` (for tests and tools).
pub fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid RDB: header, EOF opcode, checksum.
    fn rdb(version: &str, body: &[u8], checksum: bool) -> Vec<u8> {
        let mut v = format!("REDIS{version}").into_bytes();
        v.extend_from_slice(body);
        v.push(0xFF);
        let c = if checksum { crc64(&v) } else { 0 };
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    fn check(data: &[u8], chunk: usize) -> Result<RdbSummary, String> {
        let mut v = RdbValidator::new();
        for c in data.chunks(chunk.max(1)) {
            v.update(c)?;
        }
        v.finish()
    }

    #[test]
    fn crc_matches_redis_check_value() {
        // From Redis's crc64.c self-test.
        assert_eq!(crc64(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn valid_payloads_pass_in_any_chunking() {
        let body: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = rdb("0010", &body, true);
        for chunk in [1, 2, 8, 9, 10, 17, 4096, data.len()] {
            let s = check(&data, chunk).unwrap();
            assert_eq!(s.version, 10);
            assert!(s.checksum.is_some());
            assert_eq!(s.bytes, data.len() as u64);
        }
        let s = check(&rdb("0011", b"", false), 3).unwrap();
        assert_eq!((s.version, s.checksum), (11, None));
    }

    #[test]
    fn corruption_and_truncation_fail() {
        let data = rdb("0010", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], true);
        let mut bad = data.clone();
        bad[12] ^= 1;
        assert!(check(&bad, 4).unwrap_err().contains("CRC-64 mismatch"));
        assert!(check(&data[..data.len() - 3], 4).is_err());
        assert!(check(&data[..5], 4).unwrap_err().contains("truncated"));
        assert!(check(b"HELLO0010\xff\0\0\0\0\0\0\0\0", 4)
            .unwrap_err()
            .contains("RDB header"));
    }
}
