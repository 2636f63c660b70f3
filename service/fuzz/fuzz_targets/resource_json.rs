//! Any bytes as a JSON resource body or Bundle: accepted, or refused with a
//! 4xx; never a panic or a 5xx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sp_hub::fhir::resource::{parse, parse_bundle, Format};

const TYPES: &[&str] = &["Patient", "Task", "ServiceRequest", "Observation"];

fuzz_target!(|data: &[u8]| {
    let t = TYPES[data.first().map_or(0, |b| *b as usize) % TYPES.len()];
    if let Err(e) = parse(data, Format::Json, t) {
        assert!((400..500).contains(&e.status()), "{e:?}");
    }
    if let Err(e) = parse_bundle(data, Format::Json) {
        assert!((400..500).contains(&e.status()), "{e:?}");
    }
});
