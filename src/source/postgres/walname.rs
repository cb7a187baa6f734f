//! PostgreSQL's WAL file names, and which WAL object of the bucket layout
//! ([`crate::layout`]) a key is. The lowest of the WAL files: every other
//! one may use it, it uses none of them.

use crate::layout::{WalKey, WalObject};

/// Whether `name` is a file name PostgreSQL hands to archive/restore
/// commands: a segment, a `.history`, `.backup` or `.partial` file.
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (name.len() == 24 && hex(name))
        || name
            .strip_suffix(".history")
            .is_some_and(|t| t.len() == 8 && hex(t))
        || name
            .strip_suffix(".partial")
            .is_some_and(|t| t.len() == 24 && hex(t))
        || name.strip_suffix(".backup").is_some_and(|t| {
            t.len() == 33 && hex(&t[..24]) && t.as_bytes()[24] == b'.' && hex(&t[25..])
        })
}

/// The WAL file an object of `source`'s archive belongs to, and whether it
/// is the data object (else the sidecar); `None` for any key outside the
/// layout (`cluster.json`, stray objects, another source's objects).
pub fn file_of_key<'k>(source: &str, key: &'k str) -> Option<(&'k str, bool)> {
    let k = WalKey::parse(key)?;
    (k.source == source && is_wal_name(k.name)).then_some((k.name, k.object == WalObject::Data))
}

/// The segment whose streamed partial object `key` is, if it is one of
/// `source`'s (`<source>/wal/<timeline>/<segment>.stream.zst.age`).
pub fn partial_of_key<'k>(source: &str, key: &'k str) -> Option<&'k str> {
    let rest = key.strip_prefix(source)?.strip_prefix('/')?;
    let rest = rest.strip_prefix(crate::layout::WAL_FOLDER)?.strip_prefix('/')?;
    let (folder, file) = rest.split_once('/')?;
    let name = file.strip_suffix(crate::layout::WAL_STREAM_PARTIAL_SUFFIX)?;
    let hex = name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && &name[..8] == folder).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_keys_name_their_segment_and_nothing_else() {
        let k = crate::layout::wal_stream_partial("pg", "000000010000000000000003");
        assert_eq!(partial_of_key("pg", &k), Some("000000010000000000000003"));
        assert_eq!(partial_of_key("other", &k), None);
        assert!(file_of_key("pg", &k).is_none(), "not a WAL file of the chain");
        let data = crate::layout::wal_data("pg", "000000010000000000000003");
        assert_eq!(partial_of_key("pg", &data), None);
        assert_eq!(
            partial_of_key("pg", "pg/wal/00000002/000000010000000000000003.stream.zst.age"),
            None
        );
    }
}
