//! Counting the keys of an RDB file: per database, how many keys it holds,
//! how many carry an expiry, and how many expire before given instants.
//!
//! Deep verify needs counts taken *at the fork*, which only the RDB itself
//! has: `INFO keyspace` is read before the sync starts, and a server loading
//! the snapshot as a master drops every key whose expiry has passed. The
//! reader walks the file opcode by opcode and skips every value without
//! decoding it (strings are length-prefixed; the compact encodings —
//! ziplist, listpack, intset — are single strings), so memory is one small
//! buffer whatever the file size.
//!
//! Formats: RDB 1–12 (Redis up to 7.4): every value type of those versions,
//! module values in the self-describing module v2 encoding, functions,
//! stream consumer groups, hash field expiry (7.4). The pre-release
//! encodings of 7.0 release candidates (module type 6, function opcode 246)
//! cannot be skipped and are reported as errors.

use std::collections::BTreeMap;
use std::io::Read;

/// Counts of one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DbCounts {
    /// Keys in the file.
    pub keys: u64,
    /// Keys with an expiry.
    pub expires: u64,
    /// For each instant asked for (same order), keys whose expiry is strictly before it.
    pub expired_before: Vec<u64>,
}

/// Why an RDB could not be walked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RdbKeysError {
    /// Reading the file failed (or it ended early).
    #[error("reading the RDB at byte {offset}: {source}")]
    Io {
        /// Bytes consumed before the failure.
        offset: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something the reader does not know or that is malformed.
    #[error("RDB byte {offset}: {message}")]
    Format {
        /// Where.
        offset: u64,
        /// What.
        message: String,
    },
}

struct Reader<R> {
    inner: R,
    offset: u64,
    scratch: Vec<u8>,
}

const RDB_6BITLEN: u8 = 0;
const RDB_14BITLEN: u8 = 1;
const RDB_ENCVAL: u8 = 3;

impl<R: Read> Reader<R> {
    fn io(&self, source: std::io::Error) -> RdbKeysError {
        RdbKeysError::Io {
            offset: self.offset,
            source,
        }
    }

    fn bad(&self, message: impl Into<String>) -> RdbKeysError {
        RdbKeysError::Format {
            offset: self.offset,
            message: message.into(),
        }
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], RdbKeysError> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b).map_err(|e| self.io(e))?;
        self.offset += N as u64;
        Ok(b)
    }

    fn byte(&mut self) -> Result<u8, RdbKeysError> {
        Ok(self.exact::<1>()?[0])
    }

    fn skip(&mut self, mut n: u64) -> Result<(), RdbKeysError> {
        if self.scratch.is_empty() {
            self.scratch = vec![0u8; 64 << 10];
        }
        while n > 0 {
            let take = n.min(self.scratch.len() as u64) as usize;
            self.inner
                .read_exact(&mut self.scratch[..take])
                .map_err(|e| RdbKeysError::Io {
                    offset: self.offset,
                    source: e,
                })?;
            self.offset += take as u64;
            n -= take as u64;
        }
        Ok(())
    }

    /// A length, or (true, encoding) for a specially encoded string.
    fn len_or_enc(&mut self) -> Result<(bool, u64), RdbKeysError> {
        let b = self.byte()?;
        match b >> 6 {
            RDB_ENCVAL => Ok((true, (b & 0x3F) as u64)),
            RDB_6BITLEN => Ok((false, (b & 0x3F) as u64)),
            RDB_14BITLEN => Ok((false, (((b & 0x3F) as u64) << 8) | self.byte()? as u64)),
            _ => match b {
                0x80 => Ok((false, u32::from_be_bytes(self.exact::<4>()?) as u64)),
                0x81 => Ok((false, u64::from_be_bytes(self.exact::<8>()?))),
                _ => Err(self.bad(format!("unknown length encoding 0x{b:02x}"))),
            },
        }
    }

    fn len(&mut self) -> Result<u64, RdbKeysError> {
        match self.len_or_enc()? {
            (false, n) => Ok(n),
            (true, e) => Err(self.bad(format!(
                "an encoded value (type {e}) where a length belongs"
            ))),
        }
    }

    /// Skips one string (raw, integer-encoded or LZF-compressed).
    fn skip_string(&mut self) -> Result<(), RdbKeysError> {
        match self.len_or_enc()? {
            (false, n) => self.skip(n),
            (true, 0) => self.skip(1),
            (true, 1) => self.skip(2),
            (true, 2) => self.skip(4),
            (true, 3) => {
                let compressed = self.len()?;
                let _uncompressed = self.len()?;
                self.skip(compressed)
            }
            (true, e) => Err(self.bad(format!("unknown string encoding {e}"))),
        }
    }

    /// Reads a short string (AUX field names); longer ones are skipped.
    fn small_string(&mut self) -> Result<Option<Vec<u8>>, RdbKeysError> {
        match self.len_or_enc()? {
            (false, n) if n <= 256 => {
                let mut v = vec![0u8; n as usize];
                self.inner.read_exact(&mut v).map_err(|e| self.io(e))?;
                self.offset += n;
                Ok(Some(v))
            }
            (false, n) => self.skip(n).map(|_| None),
            (true, 0) => self.skip(1).map(|_| None),
            (true, 1) => self.skip(2).map(|_| None),
            (true, 2) => self.skip(4).map(|_| None),
            (true, 3) => {
                let c = self.len()?;
                let _ = self.len()?;
                self.skip(c).map(|_| None)
            }
            (true, e) => Err(self.bad(format!("unknown string encoding {e}"))),
        }
    }

    fn skip_strings(&mut self, n: u64) -> Result<(), RdbKeysError> {
        for _ in 0..n {
            self.skip_string()?;
        }
        Ok(())
    }

    /// A double in the old text form: one length byte (253 NaN, 254 +inf, 255 -inf).
    fn skip_text_double(&mut self) -> Result<(), RdbKeysError> {
        match self.byte()? {
            253..=255 => Ok(()),
            n => self.skip(n as u64),
        }
    }

    /// A module value in the module v2 encoding: typed opcodes up to EOF (0).
    fn skip_module_v2(&mut self) -> Result<(), RdbKeysError> {
        loop {
            match self.len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.len()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.skip_string()?,
                o => return Err(self.bad(format!("unknown module value opcode {o}"))),
            }
        }
    }

    fn skip_stream(&mut self, rdb_type: u8) -> Result<(), RdbKeysError> {
        let listpacks = self.len()?;
        self.skip_strings(listpacks * 2)?;
        // length, last id (ms, seq)
        for _ in 0..3 {
            self.len()?;
        }
        if rdb_type >= TYPE_STREAM_LISTPACKS_2 {
            // first id, max deleted id, entries added
            for _ in 0..5 {
                self.len()?;
            }
        }
        let groups = self.len()?;
        for _ in 0..groups {
            self.skip_string()?;
            self.len()?;
            self.len()?;
            if rdb_type >= TYPE_STREAM_LISTPACKS_2 {
                self.len()?; // entries read
            }
            let pel = self.len()?;
            for _ in 0..pel {
                self.skip(16 + 8)?; // raw id, delivery time
                self.len()?; // delivery count
            }
            let consumers = self.len()?;
            for _ in 0..consumers {
                self.skip_string()?;
                self.skip(8)?; // seen time
                if rdb_type >= TYPE_STREAM_LISTPACKS_3 {
                    self.skip(8)?; // active time
                }
                let pel = self.len()?;
                self.skip(pel * 16)?;
            }
        }
        Ok(())
    }

    /// Skips the value of a key of `rdb_type`.
    fn skip_value(&mut self, rdb_type: u8) -> Result<(), RdbKeysError> {
        match rdb_type {
            0 => self.skip_string(),
            // list, set: n strings
            1 | 2 => {
                let n = self.len()?;
                self.skip_strings(n)
            }
            3 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip_text_double()?;
                }
                Ok(())
            }
            4 => {
                let n = self.len()?;
                self.skip_strings(n * 2)
            }
            5 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_string()?;
                    self.skip(8)?;
                }
                Ok(())
            }
            7 => {
                let _module_id = self.len()?;
                self.skip_module_v2()
            }
            // zipmap, ziplist, intset, listpack encodings: one blob each
            9..=13 | 16 | 17 | 20 => self.skip_string(),
            14 => {
                let n = self.len()?;
                self.skip_strings(n)
            }
            18 => {
                let n = self.len()?;
                for _ in 0..n {
                    self.len()?; // container: plain or packed
                    self.skip_string()?;
                }
                Ok(())
            }
            TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
                self.skip_stream(rdb_type)
            }
            // hash with field expiry (7.4): [min expire], n × (ttl, field, value)
            22 | 24 => {
                if rdb_type == 24 {
                    self.skip(8)?;
                }
                let n = self.len()?;
                for _ in 0..n {
                    self.len()?;
                    self.skip_strings(2)?;
                }
                Ok(())
            }
            // listpack hash with field expiry (7.4): [min expire], listpack
            23 | 25 => {
                if rdb_type == 25 {
                    self.skip(8)?;
                }
                self.skip_string()
            }
            6 => Err(self.bad(
                "a module value in the pre-release encoding of Redis 4.0 RCs cannot be skipped",
            )),
            t => Err(self.bad(format!("unknown value type {t}"))),
        }
    }
}

const TYPE_STREAM_LISTPACKS: u8 = 15;
const TYPE_STREAM_LISTPACKS_2: u8 = 19;
const TYPE_STREAM_LISTPACKS_3: u8 = 21;

const OP_SLOT_INFO: u8 = 244;
const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// Walks the RDB read from `r` and counts its keys per database; for each of
/// `instants_ms` (Unix milliseconds), the keys whose expiry is before it.
pub fn count_keys<R: Read>(
    r: R,
    instants_ms: &[i64],
) -> Result<BTreeMap<u32, DbCounts>, RdbKeysError> {
    let mut rd = Reader {
        inner: r,
        offset: 0,
        scratch: Vec::new(),
    };
    let header = rd.exact::<9>()?;
    if &header[..5] != b"REDIS" || !header[5..].iter().all(u8::is_ascii_digit) {
        return Err(rd.bad("not an RDB file (no `REDIS00xx` header)"));
    }
    let mut out: BTreeMap<u32, DbCounts> = BTreeMap::new();
    let mut db: u32 = 0;
    let mut expire: Option<i64> = None;
    loop {
        let op = rd.byte()?;
        match op {
            OP_EOF => return Ok(out),
            OP_SELECTDB => {
                let n = rd.len()?;
                db = u32::try_from(n).map_err(|_| rd.bad(format!("database number {n}")))?;
            }
            OP_RESIZEDB => {
                rd.len()?;
                rd.len()?;
            }
            OP_AUX => {
                rd.small_string()?;
                rd.skip_string()?;
            }
            OP_EXPIRETIME_MS => expire = Some(i64::from_le_bytes(rd.exact::<8>()?)),
            OP_EXPIRETIME => {
                expire = Some(i32::from_le_bytes(rd.exact::<4>()?) as i64 * 1000);
            }
            OP_IDLE => {
                rd.len()?;
            }
            OP_FREQ => {
                rd.byte()?;
            }
            OP_SLOT_INFO => {
                for _ in 0..3 {
                    rd.len()?;
                }
            }
            OP_FUNCTION2 => rd.skip_string()?,
            OP_FUNCTION_PRE_GA => {
                return Err(rd.bad(
                    "functions in the pre-release encoding of Redis 7.0 RCs cannot be skipped",
                ))
            }
            OP_MODULE_AUX => {
                let _module_id = rd.len()?;
                let when_opcode = rd.len()?;
                if when_opcode != 2 {
                    return Err(rd.bad(format!(
                        "module aux data with `when` opcode {when_opcode}, expected 2"
                    )));
                }
                rd.len()?;
                rd.skip_module_v2()?;
            }
            t => {
                rd.skip_string()?; // the key
                rd.skip_value(t)?;
                let c = out.entry(db).or_insert_with(|| DbCounts {
                    expired_before: vec![0; instants_ms.len()],
                    ..Default::default()
                });
                c.keys += 1;
                if let Some(at) = expire.take() {
                    c.expires += 1;
                    for (n, t) in c.expired_before.iter_mut().zip(instants_ms) {
                        if at < *t {
                            *n += 1;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &[u8]) -> Vec<u8> {
        assert!(s.len() < 64);
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s);
        v
    }

    /// A hand-made RDB: two databases, strings, a list, an integer-encoded
    /// value, an LZF string, a zset with text doubles, expiries in ms and s.
    fn sample() -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.push(OP_AUX);
        v.extend(string(b"redis-ver"));
        v.extend(string(b"7.0.15"));
        v.push(OP_SELECTDB);
        v.push(0);
        v.push(OP_RESIZEDB);
        v.extend([4, 2]);
        v.push(0);
        v.extend(string(b"a"));
        v.extend(string(b"hello"));
        v.push(OP_EXPIRETIME_MS);
        v.extend(1_000i64.to_le_bytes());
        v.push(0);
        v.extend(string(b"gone"));
        v.extend([0xC0, 7]); // int8-encoded value
        v.push(OP_EXPIRETIME_MS);
        v.extend(5_000i64.to_le_bytes());
        v.push(OP_IDLE);
        v.push(3);
        v.push(1); // list
        v.extend(string(b"l"));
        v.push(2);
        v.extend(string(b"x"));
        v.extend([0xC3, 2, 4, 1, 2]); // LZF: clen 2, ulen 4, 2 bytes
        v.push(3); // zset, text doubles
        v.extend(string(b"z"));
        v.push(2);
        v.extend(string(b"m1"));
        v.extend([3, b'1', b'.', b'5']);
        v.extend(string(b"m2"));
        v.push(254);
        v.push(OP_SELECTDB);
        v.push(3);
        v.push(OP_EXPIRETIME);
        v.extend(9i32.to_le_bytes());
        v.push(0);
        v.extend(string(b"b"));
        v.extend([0x40, 3, b'x', b'y', b'z']); // 14-bit length
        v.push(OP_EOF);
        v.extend([0u8; 8]);
        v
    }

    #[test]
    fn counts_keys_expiries_and_expired_per_database() {
        let c = count_keys(&sample()[..], &[2_000, 6_000, 10_000]).unwrap();
        assert_eq!(
            c[&0],
            DbCounts {
                keys: 4,
                expires: 2,
                expired_before: vec![1, 2, 2]
            }
        );
        assert_eq!(
            c[&3],
            DbCounts {
                keys: 1,
                expires: 1,
                expired_before: vec![0, 0, 1]
            }
        );
    }

    #[test]
    fn truncated_or_unknown_input_is_an_error() {
        let s = sample();
        for cut in [5, 20, s.len() - 10] {
            assert!(count_keys(&s[..cut], &[]).is_err(), "cut at {cut}");
        }
        let mut bad = b"REDIS0010".to_vec();
        bad.extend([OP_SELECTDB, 0, 99]);
        bad.extend(string(b"k"));
        let e = count_keys(&bad[..], &[]).unwrap_err().to_string();
        assert!(e.contains("unknown value type 99"), "{e}");
        assert!(count_keys(&b"HELLO0010\xff"[..], &[]).is_err());
    }
}
