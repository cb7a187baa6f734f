//! Any input to the archive reader yields `Ok` or an error: never a panic,
//! never an allocation beyond one 16 MiB document.
#![no_main]

#[allow(dead_code, missing_docs)]
#[path = "../../src/source/mongo/archive.rs"]
mod archive;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rd = match archive::ArchiveReader::open(std::io::Cursor::new(data)) {
        Ok(r) => r,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = rd.header();
    for m in rd.prelude() {
        let _ = archive::Metadata::parse(&m.metadata);
    }
    loop {
        match rd.next_event() {
            Ok(Some(archive::Event::Doc { doc, .. })) => {
                // Walking the document must not panic either.
                for el in doc.iter() {
                    if el.is_err() {
                        break;
                    }
                }
            }
            Ok(Some(archive::Event::End { .. })) => {}
            Ok(None) => break,
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
});
