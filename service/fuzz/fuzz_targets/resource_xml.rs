//! Any UTF-8 text as an XML resource body or Bundle: accepted, or refused
//! with a 4xx; never a panic or a 5xx.
//!
//! Only UTF-8: fhirbolt 0.4's XML reader panics on a name that is not
//! UTF-8 (`String::from_utf8(..).unwrap()` in fhirbolt-serde's
//! `xml/read.rs`). In the server that panic is caught by the codec's
//! `guarded` (catch_unwind) and answered 400, which the proptest fuzz of
//! `fhir::resource` checks with arbitrary bytes; under libFuzzer every
//! panic aborts, caught or not, so such inputs would hide everything else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sp_hub::fhir::resource::{parse, parse_bundle, Format};

const TYPES: &[&str] = &["Patient", "Task", "ServiceRequest", "Observation"];

fuzz_target!(|data: &[u8]| {
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let t = TYPES[data.first().map_or(0, |b| *b as usize) % TYPES.len()];
    if let Err(e) = parse(data, Format::Xml, t) {
        assert!((400..500).contains(&e.status()), "{e:?}");
    }
    if let Err(e) = parse_bundle(data, Format::Xml) {
        assert!((400..500).contains(&e.status()), "{e:?}");
    }
});
