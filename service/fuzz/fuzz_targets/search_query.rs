//! Any bytes as a search query string, and as a FHIRPath expression: the
//! search parser answers a query or a 4xx, the FHIRPath parser an
//! expression or an error; neither panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sp_hub::search::fhirpath::Expr;
use sp_hub::search::SearchQuery;

const TYPES: &[&str] = &["Task", "ServiceRequest", "Patient", "Provenance"];

fuzz_target!(|data: &[u8]| {
    let t = TYPES[data.first().map_or(0, |b| *b as usize) % TYPES.len()];
    let params: Vec<(String, String)> = url::form_urlencoded::parse(data)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for strict in [false, true] {
        if let Err(e) = SearchQuery::parse(t, &params, strict) {
            assert!((400..500).contains(&e.status()), "{e:?}");
        }
    }
    let _ = Expr::parse(&String::from_utf8_lossy(data));
});
