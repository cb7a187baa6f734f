//! The mongodump archive format (`mongodump --archive`), writer and reader.
//!
//! ```text
//! archive   = magic header *collection-metadata TERM *(segment | eof-block)
//! segment   = ns-header(EOF=false) *BSON-doc TERM
//! eof-block = ns-header(EOF=true, CRC=crc64/xz of every doc of the ns) TERM
//! ```
//!
//! The reader is a pull parser over [`std::io::Read`]: it holds one document
//! at a time (at most [`MAX_BSON_BYTES`]), checks every length before it
//! allocates, checks the CRC of every namespace at its EOF block, and refuses
//! anything the format (or mongorestore) refuses. The writer builds whole
//! blocks in memory (one segment at a time), so blocks of several namespaces
//! can be interleaved by whoever sends them. See `docs/mongo.md` and the
//! golden files in `tests/data/mongo-archives/`.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};

use mongodb::bson::{self, doc, Bson, Document, RawDocument, RawDocumentBuf};

/// The archive's magic number (written little-endian: `6D E2 99 81`).
pub const MAGIC: u32 = 0x8199_E26D;
/// Block terminator; can never be a BSON length.
pub const TERMINATOR: u32 = 0xFFFF_FFFF;
/// Largest BSON document the server (and so the format) allows: 16 MiB.
pub const MAX_BSON_BYTES: usize = 16 * 1024 * 1024;
/// Most namespaces a reader tracks (a bound on its memory for hostile input).
pub const MAX_NAMESPACES: usize = 1_000_000;
/// Archive format version written in the header.
pub const FORMAT_VERSION: &str = "0.1";

/// CRC-64/XZ (Go's `hash/crc64` with the ECMA table), as mongodump uses it.
pub static CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_XZ);

/// A `db.collection` pair; the oplog is `("", "oplog")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// Database name.
    pub db: String,
    /// Collection name.
    pub collection: String,
}

impl Namespace {
    /// A namespace.
    pub fn new(db: impl Into<String>, collection: impl Into<String>) -> Self {
        Namespace {
            db: db.into(),
            collection: collection.into(),
        }
    }

    /// The namespace mongodump uses for the captured oplog.
    pub fn oplog() -> Self {
        Namespace::new("", "oplog")
    }

    /// Whether this is the captured-oplog namespace.
    pub fn is_oplog(&self) -> bool {
        self.db.is_empty() && self.collection == "oplog"
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.collection)
    }
}

/// The archive header document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// Collections dumped at once (mongorestore's default parallelism).
    pub concurrent_collections: i32,
    /// Format version, `0.1`.
    pub version: String,
    /// Version of the server dumped.
    pub server_version: String,
    /// Version of the tool that wrote the archive.
    pub tool_version: String,
}

/// One entry of the prelude: a namespace and its metadata (Extended JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionMeta {
    /// The namespace.
    pub ns: Namespace,
    /// `<coll>.metadata.json` text: options, indexes, uuid, type. Empty for the oplog.
    pub metadata: String,
    /// Always 0 in practice.
    pub size: i64,
    /// `collection`, `view`, `timeseries`; absent in archives of old tools.
    pub kind: Option<String>,
}

/// The parsed metadata of a collection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    /// listCollections `options` (viewOn/pipeline for views, timeseries, capped...).
    pub options: Document,
    /// listIndexes documents, verbatim.
    pub indexes: Vec<Document>,
    /// Collection UUID, 32 lower-case hex digits.
    pub uuid: Option<String>,
    /// `collection`, `view` or `timeseries`.
    pub kind: Option<String>,
}

impl Metadata {
    /// The metadata as canonical Extended JSON v2, as mongodump writes it.
    pub fn to_json(&self, collection: &str) -> String {
        let mut d = Document::new();
        if !self.options.is_empty() {
            d.insert("options", self.options.clone());
        }
        d.insert(
            "indexes",
            Bson::Array(self.indexes.iter().cloned().map(Bson::Document).collect()),
        );
        if let Some(u) = &self.uuid {
            d.insert("uuid", u.clone());
        }
        d.insert("collectionName", collection);
        d.insert(
            "type",
            self.kind.clone().unwrap_or_else(|| "collection".into()),
        );
        Bson::Document(d).into_canonical_extjson().to_string()
    }

    /// Parses metadata text (canonical or relaxed/legacy Extended JSON).
    pub fn parse(text: &str) -> Result<Metadata, String> {
        if text.is_empty() {
            return Ok(Metadata::default());
        }
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("metadata is not JSON: {e}"))?;
        let b = Bson::try_from(v).map_err(|e| format!("metadata is not Extended JSON: {e}"))?;
        let Bson::Document(d) = b else {
            return Err("metadata is not a JSON object".into());
        };
        let options = match d.get("options") {
            None | Some(Bson::Null) => Document::new(),
            Some(Bson::Document(o)) => o.clone(),
            Some(_) => return Err("metadata `options` is not an object".into()),
        };
        let indexes = match d.get("indexes") {
            None | Some(Bson::Null) => Vec::new(),
            Some(Bson::Array(a)) => a
                .iter()
                .map(|i| match i {
                    Bson::Document(d) => Ok(d.clone()),
                    _ => Err("metadata `indexes` holds a non-object".to_string()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("metadata `indexes` is not an array".into()),
        };
        let uuid = match d.get("uuid") {
            None => None,
            Some(Bson::String(s)) => Some(s.clone()),
            Some(_) => return Err("metadata `uuid` is not a string".into()),
        };
        let kind = d.get_str("type").ok().map(str::to_string);
        Ok(Metadata {
            options,
            indexes,
            uuid,
            kind,
        })
    }
}

/// Errors reading an archive. Offsets are byte offsets in the raw stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The underlying reader failed.
    #[error("reading the archive failed at byte {offset}: {source}")]
    Io {
        /// Where.
        offset: u64,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The bytes are not a valid archive.
    #[error("not a valid mongodump archive at byte {offset}: {message}")]
    Format {
        /// Where.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A namespace's documents do not match the CRC in its EOF block.
    #[error("CRC mismatch for namespace `{ns}`: the archive says {expected:#018x}, its documents give {actual:#018x}; the archive is corrupt")]
    CrcMismatch {
        /// Namespace.
        ns: Namespace,
        /// CRC in the EOF block.
        expected: u64,
        /// CRC computed.
        actual: u64,
    },
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A document of `ns`.
    Doc {
        /// Namespace.
        ns: Namespace,
        /// The raw document, exactly as stored.
        doc: RawDocumentBuf,
    },
    /// The EOF block of `ns`: its CRC matched.
    End {
        /// Namespace.
        ns: Namespace,
        /// Documents seen.
        docs: u64,
        /// Their CRC-64/XZ.
        crc: u64,
    },
}

// ---------------------------------------------------------------- writer

fn push_doc(out: &mut Vec<u8>, d: &Document) {
    d.to_writer(out)
        .expect("writing BSON into a Vec cannot fail");
}

/// Appends the magic, the header and the prelude (with its terminator).
pub fn write_prelude(out: &mut Vec<u8>, header: &ArchiveHeader, prelude: &[CollectionMeta]) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    push_doc(
        out,
        &doc! {
            "concurrent_collections": header.concurrent_collections,
            "version": &header.version,
            "server_version": &header.server_version,
            "tool_version": &header.tool_version,
        },
    );
    for m in prelude {
        let mut d = doc! {
            "db": &m.ns.db,
            "collection": &m.ns.collection,
            "metadata": &m.metadata,
        };
        match i32::try_from(m.size) {
            Ok(s) => d.insert("size", s),
            Err(_) => d.insert("size", m.size),
        };
        if let Some(k) = &m.kind {
            d.insert("type", k.as_str());
        }
        push_doc(out, &d);
    }
    out.extend_from_slice(&TERMINATOR.to_le_bytes());
}

fn ns_header(out: &mut Vec<u8>, ns: &Namespace, eof: bool, crc: u64) {
    push_doc(
        out,
        &doc! { "db": &ns.db, "collection": &ns.collection, "EOF": eof, "CRC": crc as i64 },
    );
}

/// Builds one segment of a namespace: header, documents, terminator.
#[derive(Debug)]
pub struct SegmentBuilder {
    buf: Vec<u8>,
    header_len: usize,
    docs: usize,
}

impl SegmentBuilder {
    /// A new, empty segment of `ns` with `capacity` bytes reserved.
    pub fn new(ns: &Namespace, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        ns_header(&mut buf, ns, false, 0);
        let header_len = buf.len();
        SegmentBuilder {
            buf,
            header_len,
            docs: 0,
        }
    }

    /// Appends one raw document.
    pub fn push(&mut self, doc: &[u8]) {
        self.buf.extend_from_slice(doc);
        self.docs += 1;
    }

    /// Bytes of documents held.
    pub fn doc_bytes(&self) -> usize {
        self.buf.len() - self.header_len
    }

    /// Documents held.
    pub fn docs(&self) -> usize {
        self.docs
    }

    /// The finished block.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&TERMINATOR.to_le_bytes());
        self.buf
    }
}

/// The EOF block of `ns` with the CRC of all its documents.
pub fn eof_block(ns: &Namespace, crc: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    ns_header(&mut out, ns, true, crc);
    out.extend_from_slice(&TERMINATOR.to_le_bytes());
    out
}

/// A whole-archive writer for code that has documents at hand (tests, tools):
/// tracks each namespace's CRC and refuses misuse the format forbids.
pub struct ArchiveWriter<W: Write> {
    out: W,
    open: HashMap<Namespace, crc::Digest<'static, u64>>,
    closed: Vec<Namespace>,
}

impl<W: Write> ArchiveWriter<W> {
    /// Writes the magic, header and prelude; every prelude namespace must be ended with [`Self::end`].
    pub fn new(mut out: W, header: &ArchiveHeader, prelude: &[CollectionMeta]) -> io::Result<Self> {
        let mut buf = Vec::new();
        write_prelude(&mut buf, header, prelude);
        out.write_all(&buf)?;
        Ok(ArchiveWriter {
            out,
            open: prelude
                .iter()
                .map(|m| (m.ns.clone(), CRC64.digest()))
                .collect(),
            closed: Vec::new(),
        })
    }

    /// Writes one segment of `ns` holding `docs` (raw BSON documents).
    pub fn segment(&mut self, ns: &Namespace, docs: &[&RawDocument]) -> io::Result<()> {
        if self.closed.contains(ns) {
            return Err(io::Error::other(format!("namespace `{ns}` already ended")));
        }
        let crc = self
            .open
            .entry(ns.clone())
            .or_insert_with(|| CRC64.digest());
        let mut seg = SegmentBuilder::new(ns, 256);
        for d in docs {
            crc.update(d.as_bytes());
            seg.push(d.as_bytes());
        }
        self.out.write_all(&seg.finish())
    }

    /// Writes the EOF block of `ns`.
    pub fn end(&mut self, ns: &Namespace) -> io::Result<()> {
        let crc = self
            .open
            .remove(ns)
            .ok_or_else(|| io::Error::other(format!("namespace `{ns}` is not open")))?;
        self.closed.push(ns.clone());
        self.out.write_all(&eof_block(ns, crc.finalize()))
    }

    /// Checks that every namespace was ended and returns the output.
    pub fn finish(self) -> io::Result<W> {
        if let Some(ns) = self.open.keys().next() {
            return Err(io::Error::other(format!(
                "namespace `{ns}` was never ended"
            )));
        }
        Ok(self.out)
    }
}

// ---------------------------------------------------------------- reader

struct NsState {
    crc: crc::Digest<'static, u64>,
    docs: u64,
    ended: bool,
}

/// A pull parser for an archive; see the module doc.
pub struct ArchiveReader<R: Read> {
    r: R,
    offset: u64,
    header: ArchiveHeader,
    prelude: Vec<CollectionMeta>,
    metadata: Vec<Metadata>,
    namespaces: HashMap<Namespace, NsState>,
    /// The namespace of the block being read, and whether it is an EOF block.
    current: Option<(Namespace, bool)>,
    finished: bool,
}

impl<R: Read> ArchiveReader<R> {
    /// Reads the magic, header and prelude (parsing every metadata text).
    pub fn open(r: R) -> Result<Self, ArchiveError> {
        let mut me = ArchiveReader {
            r,
            offset: 0,
            header: ArchiveHeader {
                concurrent_collections: 0,
                version: String::new(),
                server_version: String::new(),
                tool_version: String::new(),
            },
            prelude: Vec::new(),
            metadata: Vec::new(),
            namespaces: HashMap::new(),
            current: None,
            finished: false,
        };
        let magic = match me.read_u32()? {
            Some(m) => m,
            None => return Err(me.format("empty input: no archive magic number")),
        };
        if magic != MAGIC {
            return Err(me.format(format!(
                "bad magic number {magic:#010x} (expected {MAGIC:#010x}): not a mongodump archive"
            )));
        }
        let h = me.read_block_doc_or_eof("the archive header")?;
        let Some(h) = h else {
            return Err(me.format("the archive header is missing"));
        };
        me.header = parse_header(&h).map_err(|m| me.format(m))?;
        while let Some(d) = me.read_block_doc_or_eof("the prelude")? {
            let cm = parse_collection_meta(&d).map_err(|m| me.format(m))?;
            let md = if cm.ns.is_oplog() {
                Metadata::default()
            } else {
                Metadata::parse(&cm.metadata)
                    .map_err(|m| me.format(format!("prelude entry `{}`: {m}", cm.ns)))?
            };
            if me.prelude.len() >= MAX_NAMESPACES {
                return Err(me.format("too many namespaces in the prelude"));
            }
            me.prelude.push(cm);
            me.metadata.push(md);
        }
        Ok(me)
    }

    /// The archive header.
    pub fn header(&self) -> &ArchiveHeader {
        &self.header
    }

    /// The prelude entries, in order.
    pub fn prelude(&self) -> &[CollectionMeta] {
        &self.prelude
    }

    /// The parsed metadata of each prelude entry (same order as [`Self::prelude`]).
    pub fn metadata(&self) -> &[Metadata] {
        &self.metadata
    }

    /// Raw bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn format(&self, message: impl Into<String>) -> ArchiveError {
        ArchiveError::Format {
            offset: self.offset,
            message: message.into(),
        }
    }

    /// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the first byte.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool, ArchiveError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) if n == 0 => return Ok(false),
                Ok(0) => {
                    return Err(self.format(format!(
                        "the archive ends in the middle of a value ({n} of {} bytes)",
                        buf.len()
                    )))
                }
                Ok(k) => {
                    n += k;
                    self.offset += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ArchiveError::Io {
                        offset: self.offset,
                        source,
                    })
                }
            }
        }
        Ok(true)
    }

    fn read_u32(&mut self) -> Result<Option<u32>, ArchiveError> {
        let mut b = [0u8; 4];
        Ok(self
            .read_exact_or_eof(&mut b)?
            .then(|| u32::from_le_bytes(b)))
    }

    /// Reads the rest of a BSON document whose length word was `len`.
    fn read_doc_body(&mut self, len: u32) -> Result<RawDocumentBuf, ArchiveError> {
        let len = len as usize;
        if !(5..=MAX_BSON_BYTES).contains(&len) {
            return Err(self.format(format!(
                "invalid BSON length {len} (must be between 5 and {MAX_BSON_BYTES})"
            )));
        }
        let mut buf = vec![0u8; len];
        buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
        if !self.read_exact_or_eof(&mut buf[4..])? {
            return Err(self.format("the archive ends in the middle of a document"));
        }
        if buf[len - 1] != 0 {
            return Err(self.format("a BSON document does not end with a 0x00 byte"));
        }
        RawDocumentBuf::from_bytes(buf).map_err(|e| self.format(format!("invalid BSON: {e}")))
    }

    /// A whole BSON document, or `None` at a terminator. EOF is an error.
    fn read_block_doc_or_eof(
        &mut self,
        what: &str,
    ) -> Result<Option<RawDocumentBuf>, ArchiveError> {
        match self.read_u32()? {
            None => Err(self.format(format!("the archive ends inside {what}"))),
            Some(TERMINATOR) => Ok(None),
            Some(len) => self.read_doc_body(len).map(Some),
        }
    }

    /// The next document or namespace end; `None` at the (checked) end of the archive.
    pub fn next_event(&mut self) -> Result<Option<Event>, ArchiveError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let word = match self.read_u32()? {
                Some(w) => w,
                None if self.current.is_some() => {
                    return Err(self.format("the archive ends inside a block (no terminator)"))
                }
                None => {
                    self.check_complete()?;
                    self.finished = true;
                    return Ok(None);
                }
            };
            if word == TERMINATOR {
                if self.current.take().is_none() {
                    return Err(self.format("headerless block: two terminators in a row"));
                }
                continue;
            }
            let doc = self.read_doc_body(word)?;
            match self.current.clone() {
                None => {
                    let (ns, eof, crc) = parse_ns_header(&doc).map_err(|m| self.format(m))?;
                    if self.namespaces.len() >= MAX_NAMESPACES && !self.namespaces.contains_key(&ns)
                    {
                        return Err(self.format("too many namespaces"));
                    }
                    let st = self
                        .namespaces
                        .entry(ns.clone())
                        .or_insert_with(|| NsState {
                            crc: CRC64.digest(),
                            docs: 0,
                            ended: false,
                        });
                    if st.ended {
                        return Err(self.format(format!(
                            "namespace header for already opened namespace `{ns}` (it had ended)"
                        )));
                    }
                    self.current = Some((ns.clone(), eof));
                    if eof {
                        st.ended = true;
                        let actual = st.crc.clone().finalize();
                        let docs = st.docs;
                        if actual != crc {
                            return Err(ArchiveError::CrcMismatch {
                                ns,
                                expected: crc,
                                actual,
                            });
                        }
                        return Ok(Some(Event::End { ns, docs, crc }));
                    }
                }
                Some((ns, false)) => {
                    let st = self
                        .namespaces
                        .get_mut(&ns)
                        .expect("current namespace is tracked");
                    st.crc.update(doc.as_bytes());
                    st.docs += 1;
                    return Ok(Some(Event::Doc { ns, doc }));
                }
                Some((ns, true)) => {
                    return Err(self.format(format!("a document inside the EOF block of `{ns}`")))
                }
            }
        }
    }

    fn check_complete(&self) -> Result<(), ArchiveError> {
        for m in &self.prelude {
            let ended = |ns: &Namespace| self.namespaces.get(ns).is_some_and(|s| s.ended);
            let buckets = Namespace::new(&m.ns.db, format!("system.buckets.{}", m.ns.collection));
            let ok = ended(&m.ns) || (m.kind.as_deref() == Some("timeseries") && ended(&buckets));
            if !ok {
                return Err(self.format(format!(
                    "archive finished before all collections were seen: `{}` never reached its EOF block",
                    m.ns
                )));
            }
        }
        Ok(())
    }
}

fn parse_header(d: &RawDocument) -> Result<ArchiveHeader, String> {
    let d = Document::try_from(d).map_err(|e| format!("archive header: {e}"))?;
    let s = |k: &str| d.get_str(k).map(str::to_string).unwrap_or_default();
    let version = d
        .get_str("version")
        .map_err(|_| "archive header has no `version` string".to_string())?
        .to_string();
    Ok(ArchiveHeader {
        concurrent_collections: match d.get("concurrent_collections") {
            Some(Bson::Int32(n)) => *n,
            Some(Bson::Int64(n)) => i32::try_from(*n).unwrap_or(i32::MAX),
            _ => 1,
        },
        version,
        server_version: s("server_version"),
        tool_version: s("tool_version"),
    })
}

fn parse_collection_meta(d: &RawDocument) -> Result<CollectionMeta, String> {
    let d = Document::try_from(d).map_err(|e| format!("prelude entry: {e}"))?;
    let db = d
        .get_str("db")
        .map_err(|_| "prelude entry has no `db` string".to_string())?;
    let collection = d
        .get_str("collection")
        .map_err(|_| "prelude entry has no `collection` string".to_string())?;
    let metadata = d
        .get_str("metadata")
        .map_err(|_| format!("prelude entry `{db}.{collection}` has no `metadata` string"))?;
    let size = match d.get("size") {
        None => 0,
        Some(Bson::Int32(n)) => *n as i64,
        Some(Bson::Int64(n)) => *n,
        Some(_) => {
            return Err(format!(
                "prelude entry `{db}.{collection}`: `size` is not an integer"
            ))
        }
    };
    Ok(CollectionMeta {
        ns: Namespace::new(db, collection),
        metadata: metadata.to_string(),
        size,
        kind: d.get_str("type").ok().map(str::to_string),
    })
}

fn parse_ns_header(d: &RawDocument) -> Result<(Namespace, bool, u64), String> {
    let (mut db, mut coll, mut eof, mut crc) = (None, None, None, None);
    for el in d.iter() {
        let (k, v) = el.map_err(|e| format!("namespace header: invalid BSON: {e}"))?;
        match (k, v) {
            ("db", bson::RawBsonRef::String(s)) => db = Some(s.to_string()),
            ("collection", bson::RawBsonRef::String(s)) => coll = Some(s.to_string()),
            ("EOF", bson::RawBsonRef::Boolean(b)) => eof = Some(b),
            ("CRC", bson::RawBsonRef::Int64(n)) => crc = Some(n as u64),
            ("CRC", bson::RawBsonRef::Int32(n)) => crc = Some(n as i64 as u64),
            (k, _) => {
                return Err(format!(
                    "namespace header has an unexpected field `{k}` (or a field of the wrong type)"
                ))
            }
        }
    }
    match (db, coll, eof, crc) {
        (Some(db), Some(c), Some(eof), Some(crc)) => {
            if !eof && crc != 0 {
                return Err(format!(
                    "namespace header of `{db}.{c}`: CRC must be 0 when EOF is false"
                ));
            }
            Ok((Namespace::new(db, c), eof, crc))
        }
        _ => Err("namespace header lacks one of `db`, `collection`, `EOF`, `CRC`".into()),
    }
}

/// Reads a whole archive, checking it, and returns each namespace's document
/// count and CRC (tools, tests, the fuzz target).
pub fn check_archive<R: Read>(r: R) -> Result<Vec<(Namespace, u64, u64)>, ArchiveError> {
    let mut rd = ArchiveReader::open(r)?;
    let mut out = Vec::new();
    while let Some(ev) = rd.next_event()? {
        if let Event::End { ns, docs, crc } = ev {
            out.push((ns, docs, crc));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
