//! Conformance tests from FORMAT.md and mongodump's own archives.

use std::io::Cursor;

use mongodb::bson::{doc, rawdoc, RawDocumentBuf};
use rstest::rstest;

use super::*;

fn golden(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mongo-archives")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn header() -> ArchiveHeader {
    ArchiveHeader {
        concurrent_collections: 2,
        version: FORMAT_VERSION.into(),
        server_version: "7.0.0".into(),
        tool_version: "gsdr-test".into(),
    }
}

fn meta(db: &str, coll: &str) -> CollectionMeta {
    CollectionMeta {
        ns: Namespace::new(db, coll),
        metadata: Metadata {
            indexes: vec![doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"}],
            kind: Some("collection".into()),
            ..Default::default()
        }
        .to_json(coll),
        size: 0,
        kind: Some("collection".into()),
    }
}

#[test]
fn crc_is_crc64_xz() {
    assert_eq!(CRC64.checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
}

#[rstest]
#[case("test.bar.archive", &[("admin.system.version", 1), ("test.bar", 1)])]
#[case("dump-w-oplog.archive", &[("admin.system.version", 1), ("test.foo", 25), (".oplog", 18)])]
#[case("timeseries-dump.archive", &[("admin.system.version", 1), ("admin.system.views", 0), ("timeseries_test.system.buckets.foo_ts", 10)])]
fn golden_archives_parse_with_every_crc_matching(
    #[case] file: &str,
    #[case] expect: &[(&str, u64)],
) {
    let ends = check_archive(Cursor::new(golden(file))).unwrap();
    let got: Vec<(String, u64)> = ends.iter().map(|(ns, n, _)| (ns.to_string(), *n)).collect();
    let want: Vec<(String, u64)> = expect.iter().map(|(n, c)| (n.to_string(), *c)).collect();
    assert_eq!(got, want);
    // Empty namespaces carry CRC 0; the others a real one, checked by the reader.
    for (ns, n, crc) in ends {
        assert_eq!(n == 0, crc == 0, "{ns}");
    }
}

#[test]
fn golden_prelude_and_metadata_are_read() {
    let rd = ArchiveReader::open(Cursor::new(golden("dump-w-oplog.archive"))).unwrap();
    assert_eq!(rd.header().version, "0.1");
    assert_eq!(rd.header().server_version, "4.0.2");
    let names: Vec<String> = rd.prelude().iter().map(|m| m.ns.to_string()).collect();
    assert_eq!(names, ["test.foo", ".oplog", "admin.system.version"]);
    assert_eq!(
        rd.metadata()[0].uuid.as_deref(),
        Some("d6b7b0bd5dce41c498aa03f115533254")
    );
    assert_eq!(rd.metadata()[0].indexes[0].get_str("name").unwrap(), "_id_");

    let rd = ArchiveReader::open(Cursor::new(golden("timeseries-dump.archive"))).unwrap();
    let ts = &rd.prelude()[1];
    assert_eq!(ts.kind.as_deref(), Some("timeseries"));
    let md = &rd.metadata()[1];
    assert_eq!(
        md.options
            .get_document("timeseries")
            .unwrap()
            .get_str("timeField")
            .unwrap(),
        "ts"
    );
}

#[test]
fn bad_format_archive_is_rejected() {
    let err = check_archive(Cursor::new(golden("bad-format.archive"))).unwrap_err();
    assert!(matches!(err, ArchiveError::Format { .. }), "{err}");
    assert!(err.to_string().contains("metadata"), "{err}");
}

fn sample(docs_a: &[RawDocumentBuf], docs_b: &[RawDocumentBuf]) -> Vec<u8> {
    let a = Namespace::new("db1", "a");
    let b = Namespace::new("db2", "b");
    let mut w =
        ArchiveWriter::new(Vec::new(), &header(), &[meta("db1", "a"), meta("db2", "b")]).unwrap();
    // Interleave: a, b, a, then the ends.
    let half = docs_a.len() / 2;
    w.segment(&a, &refs(&docs_a[..half])).unwrap();
    w.segment(&b, &refs(docs_b)).unwrap();
    w.segment(&a, &refs(&docs_a[half..])).unwrap();
    w.end(&b).unwrap();
    w.end(&a).unwrap();
    w.finish().unwrap()
}

fn refs(d: &[RawDocumentBuf]) -> Vec<&RawDocument> {
    d.iter().map(|d| d.as_ref()).collect()
}

fn docs(n: i32) -> Vec<RawDocumentBuf> {
    (0..n)
        .map(|i| rawdoc! {"_id": i, "v": format!("x{i}")})
        .collect()
}

#[test]
fn writer_output_reads_back_interleaved() {
    let (da, db) = (docs(7), docs(3));
    let bytes = sample(&da, &db);
    assert_eq!(&bytes[..4], &[0x6D, 0xE2, 0x99, 0x81]);
    let mut rd = ArchiveReader::open(Cursor::new(bytes)).unwrap();
    assert_eq!(rd.header(), &header());
    assert_eq!(rd.prelude(), &[meta("db1", "a"), meta("db2", "b")]);
    let (mut got_a, mut got_b, mut ends) = (vec![], vec![], vec![]);
    while let Some(ev) = rd.next_event().unwrap() {
        match ev {
            Event::Doc { ns, doc } if ns.db == "db1" => got_a.push(doc),
            Event::Doc { doc, .. } => got_b.push(doc),
            Event::End { ns, docs, crc } => ends.push((ns.to_string(), docs, crc)),
        }
    }
    assert_eq!(got_a, da);
    assert_eq!(got_b, db);
    let crc_a = {
        let mut d = CRC64.digest();
        da.iter().for_each(|x| d.update(x.as_bytes()));
        d.finalize()
    };
    assert_eq!(ends[1], ("db1.a".into(), 7, crc_a));
    assert_eq!(ends[0].0, "db2.b");
}

#[test]
fn namespace_header_has_exactly_the_four_fields() {
    let block = eof_block(&Namespace::new("d", "c"), 0xFFFF_FFFF_FFFF_FFFF);
    let d = RawDocument::from_bytes(&block[..block.len() - 4]).unwrap();
    let keys: Vec<&str> = d.iter().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, ["db", "collection", "EOF", "CRC"]);
    assert_eq!(d.get_i64("CRC").unwrap(), -1, "CRC is bit-cast into int64");
    assert_eq!(&block[block.len() - 4..], &[0xFF; 4]);
}

#[test]
fn metadata_round_trips_as_canonical_extjson_keeping_key_order() {
    let md = Metadata {
        options: doc! {"capped": true, "size": 4096_i64},
        indexes: vec![
            doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            doc! {"v": 2, "key": {"z": 1, "a": -1}, "name": "z_1_a_-1", "unique": true},
        ],
        uuid: Some("d6b7b0bd5dce41c498aa03f115533254".into()),
        kind: Some("collection".into()),
    };
    let text = md.to_json("c");
    assert!(text.contains(r#""$numberInt":"2""#), "{text}");
    let back = Metadata::parse(&text).unwrap();
    assert_eq!(back, md);
    let keys: Vec<&String> = back.indexes[1]
        .get_document("key")
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["z", "a"], "compound index key order must survive");
    // Legacy relaxed JSON of old tools is accepted too.
    let legacy = Metadata::parse(
        r#"{"options":{},"indexes":[{"v":2,"key":{"_id":1},"name":"_id_","ns":"test.bar"}]}"#,
    )
    .unwrap();
    assert_eq!(legacy.indexes[0].get_i32("v").unwrap(), 2);
}

fn read_all(bytes: Vec<u8>) -> Result<(), ArchiveError> {
    check_archive(Cursor::new(bytes)).map(|_| ())
}

#[test]
fn flipped_document_byte_is_a_crc_mismatch() {
    let mut bytes = sample(&docs(4), &docs(2));
    // The value of the first document's "v" string of db1.a: find "x0".
    let pos = bytes.windows(2).position(|w| w == b"x0").unwrap();
    bytes[pos + 1] = b'9';
    let err = read_all(bytes).unwrap_err();
    assert!(matches!(err, ArchiveError::CrcMismatch { .. }), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample(&docs(4), &docs(2));
    for cut in 0..bytes.len() {
        assert!(
            read_all(bytes[..cut].to_vec()).is_err(),
            "cut at {cut} read as complete"
        );
    }
    read_all(bytes).unwrap();
}

#[rstest]
#[case::bad_magic(|b: &mut Vec<u8>| b[0] = 0, "magic")]
#[case::double_terminator(|b: &mut Vec<u8>| b.extend_from_slice(&[0xFF; 4]), "headerless")]
#[case::huge_length(|b: &mut Vec<u8>| b.extend_from_slice(&(MAX_BSON_BYTES as u32 + 1).to_le_bytes()), "invalid BSON length")]
#[case::tiny_length(|b: &mut Vec<u8>| b.extend_from_slice(&4u32.to_le_bytes()), "invalid BSON length")]
#[case::reopened_namespace(|b: &mut Vec<u8>| {
    let seg = SegmentBuilder::new(&Namespace::new("db1", "a"), 64).finish();
    b.extend_from_slice(&seg);
}, "already opened")]
#[case::doc_in_eof_block(|b: &mut Vec<u8>| {
    let mut blk = eof_block(&Namespace::new("x", "y"), 0);
    blk.truncate(blk.len() - 4);
    blk.extend_from_slice(rawdoc! {"a": 1}.as_bytes());
    blk.extend_from_slice(&[0xFF; 4]);
    b.extend_from_slice(&blk);
}, "inside the EOF block")]
#[case::unknown_header_field(|b: &mut Vec<u8>| {
    let mut d = Vec::new();
    doc! {"db": "x", "collection": "y", "EOF": false, "CRC": 0_i64, "extra": 1}.to_writer(&mut d).unwrap();
    b.extend_from_slice(&d);
    b.extend_from_slice(&[0xFF; 4]);
}, "unexpected field")]
fn malformed_archives_are_rejected(#[case] damage: fn(&mut Vec<u8>), #[case] needle: &str) {
    let mut bytes = sample(&docs(2), &docs(2));
    damage(&mut bytes);
    let err = read_all(bytes).unwrap_err();
    assert!(err.to_string().contains(needle), "{err}");
}

#[test]
fn a_prelude_namespace_without_eof_is_an_error() {
    let mut w =
        ArchiveWriter::new(Vec::new(), &header(), &[meta("d", "a"), meta("d", "b")]).unwrap();
    w.end(&Namespace::new("d", "a")).unwrap();
    let bytes = w.out;
    let err = read_all(bytes).unwrap_err();
    assert!(
        err.to_string().contains("before all collections were seen"),
        "{err}"
    );
}

mod property {
    //! Any raw BSON document, of every type (including the ones nx-27017
    //! rejects), survives writer → zstd+age pipeline → reader byte for byte.

    use std::sync::Arc;

    use mongodb::bson::{
        oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Decimal128, Document,
        JavaScriptCodeWithScope, Regex, Timestamp,
    };
    use proptest::prelude::*;
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::pipeline::keys::Identities;
    use crate::pipeline::{decode, encode, DecodeExpect, EncodeOptions};
    use crate::source::{SourceMeta, SourceStream};

    fn cstr() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.$ é]{0,10}"
    }

    fn leaf() -> impl Strategy<Value = Bson> {
        prop_oneof![
            any::<f64>().prop_map(Bson::Double),
            Just(Bson::Double(f64::NAN)),
            Just(Bson::Double(f64::INFINITY)),
            ".{0,40}".prop_map(Bson::String),
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)).prop_map(|(s, bytes)| {
                let subtype = match s % 8 {
                    0 => BinarySubtype::Generic,
                    1 => BinarySubtype::Function,
                    2 => BinarySubtype::BinaryOld,
                    3 => BinarySubtype::UuidOld,
                    4 => BinarySubtype::Uuid,
                    5 => BinarySubtype::Md5,
                    6 => BinarySubtype::Encrypted,
                    _ => BinarySubtype::UserDefined(0x80 | s),
                };
                let bytes = if matches!(subtype, BinarySubtype::BinaryOld) {
                    vec![]
                } else {
                    bytes
                };
                Bson::Binary(Binary { subtype, bytes })
            }),
            any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i64>().prop_map(|t| Bson::DateTime(DateTime::from_millis(t))),
            Just(Bson::Null),
            Just(Bson::Undefined),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            (cstr(), "[imsux]{0,4}")
                .prop_map(|(pattern, options)| Bson::RegularExpression(Regex { pattern, options })),
            ".{0,20}".prop_map(Bson::JavaScriptCode),
            ".{0,20}".prop_map(Bson::Symbol),
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            (any::<u32>(), any::<u32>())
                .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
            any::<[u8; 16]>().prop_map(|b| Bson::Decimal128(Decimal128::from_bytes(b))),
        ]
    }

    fn value() -> impl Strategy<Value = Bson> {
        leaf().prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Bson::Array),
                proptest::collection::vec((cstr(), inner.clone()), 0..6)
                    .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
                (".{0,10}", proptest::collection::vec((cstr(), inner), 0..3)).prop_map(
                    |(code, kv)| {
                        Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                            code,
                            scope: kv.into_iter().collect(),
                        })
                    }
                ),
            ]
        })
    }

    fn document() -> impl Strategy<Value = Document> {
        proptest::collection::vec((cstr(), value()), 0..8).prop_map(|kv| kv.into_iter().collect())
    }

    async fn through_pipeline(raw: Vec<u8>) -> Vec<u8> {
        let id = age::x25519::Identity::generate();
        let enc = encode(
            SourceStream {
                reader: Box::pin(std::io::Cursor::new(raw)),
                done: Box::pin(async { Ok(SourceMeta::default()) }),
            },
            EncodeOptions {
                level: 3,
                workers: 0,
                recipients: vec![id.to_public()],
                stall_timeout: crate::pipeline::DEFAULT_STALL_TIMEOUT,
                signer: None,
            },
        );
        let mut stored = Vec::new();
        let mut r = enc.reader;
        r.read_to_end(&mut stored).await.unwrap();
        enc.stats.await.unwrap().unwrap();
        let dec = decode(
            Box::pin(std::io::Cursor::new(stored)),
            Arc::new(Identities::from_x25519(vec![id])),
            DecodeExpect::default(),
        );
        let mut out = Vec::new();
        let mut r = dec.reader;
        r.read_to_end(&mut out).await.unwrap();
        dec.stats.await.unwrap().unwrap();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_bson_document_survives_writer_pipeline_reader(
            docs_a in proptest::collection::vec(document(), 0..12),
            docs_b in proptest::collection::vec(document(), 0..12),
        ) {
            let raw_a: Vec<RawDocumentBuf> = docs_a.iter().map(|d| RawDocumentBuf::from_document(d).unwrap()).collect();
            let raw_b: Vec<RawDocumentBuf> = docs_b.iter().map(|d| RawDocumentBuf::from_document(d).unwrap()).collect();
            let archive = super::sample(&raw_a, &raw_b);
            let rt = tokio::runtime::Runtime::new().unwrap();
            let back = rt.block_on(through_pipeline(archive.clone()));
            prop_assert!(back == archive);
            let mut rd = ArchiveReader::open(std::io::Cursor::new(back)).unwrap();
            let (mut a, mut b) = (vec![], vec![]);
            while let Some(ev) = rd.next_event().unwrap() {
                if let Event::Doc { ns, doc } = ev {
                    if ns.db == "db1" { a.push(doc) } else { b.push(doc) }
                }
            }
            prop_assert!(a == raw_a);
            prop_assert!(b == raw_b);
            // Every document is still valid BSON with the same values.
            for (got, want) in a.iter().zip(&docs_a) {
                let d = got.to_document().unwrap();
                prop_assert_eq!(RawDocumentBuf::from_document(&d).unwrap().into_bytes(), RawDocumentBuf::from_document(want).unwrap().into_bytes());
            }
        }
    }
}
