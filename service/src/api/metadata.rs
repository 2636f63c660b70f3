//! `GET /metadata`: the CapabilityStatement, generated from what the server
//! really registers (types, interactions, search parameters, formats).

use serde_json::{json, Value};

use crate::fhir::summary::has_identifier;
use crate::search::{COMMON_PARAMS, IDENTIFIER_PARAM};

fn search_param((name, kind, doc): (&str, &str, &str)) -> Value {
    json!({"name": name, "type": kind, "documentation": doc})
}

pub fn capability_statement(started: &str) -> Value {
    let interactions: Vec<Value> = [
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "history-instance",
        "history-type",
        "create",
        "search-type",
    ]
    .iter()
    .map(|code| json!({"code": code}))
    .collect();
    let resources: Vec<Value> = sp_hub_codec::RESOURCE_TYPES
        .iter()
        .map(|t| {
            let mut params: Vec<Value> = COMMON_PARAMS.iter().copied().map(search_param).collect();
            if has_identifier(t) {
                params.push(search_param(IDENTIFIER_PARAM));
            }
            json!({
                "type": t,
                "interaction": interactions,
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": params,
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": started,
        "publisher": "sp-hub",
        "kind": "instance",
        "software": {"name": "sp-hub", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "sp-hub: FHIR R4 referral hub for social prescribing"},
        "fhirVersion": "4.0.1",
        "format": ["json", "xml", "application/fhir+json", "application/fhir+xml"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "searchParam": COMMON_PARAMS.iter().copied().map(search_param).collect::<Vec<_>>(),
        }]
    })
}
