//! `GET /metadata`: the CapabilityStatement, generated from what the server
//! really registers (types, interactions, search parameters, formats, our
//! profiles, `$validate`, the Bulk Data `$export`).

use serde_json::{json, Value};

use crate::search::registry::{Param, Registry};

fn search_param(p: &Param) -> Value {
    json!({"name": p.code, "definition": p.url, "type": p.kind.name(), "documentation": p.description})
}

pub fn capability_statement(started: &str, registry: &Registry) -> Value {
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
            let params: Vec<Value> = registry.for_type(t).map(search_param).collect();
            let profiles: Vec<&str> = crate::profiles::load()
                .map(|p| p.profiles_of(t).collect())
                .unwrap_or_default();
            let mut r = json!({
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
            });
            if !profiles.is_empty() {
                r["supportedProfile"] = json!(profiles);
            }
            if *t == "Group" {
                r["operation"] = json!([{"name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"}]);
            }
            r
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
            "operation": [{"name": "validate",
                           "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"},
                          {"name": "export",
                           "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}],
            "searchParam": registry.for_type("Resource").map(search_param).collect::<Vec<_>>(),
        }]
    })
}
