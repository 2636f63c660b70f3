//! `_summary` and `_elements`: cutting a resource down to what was asked.
//!
//! Which top-level elements are "summary" or mandatory comes from the R4
//! StructureDefinitions, kept as data in `fhir-profiles/r4/top-level-elements.json`.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::search::Summary;

#[derive(Deserialize)]
struct TypeElements {
    summary: Vec<String>,
    mandatory: Vec<String>,
}

#[derive(Deserialize)]
struct Table {
    types: HashMap<String, TypeElements>,
}

static TABLE: LazyLock<Result<Table, String>> = LazyLock::new(|| {
    serde_json::from_str(include_str!(
        "../../../fhir-profiles/r4/top-level-elements.json"
    ))
    .map_err(|e| format!("fhir-profiles/r4/top-level-elements.json: {e}"))
});

/// Checks the embedded table once at start-up, so a broken file stops the
/// server with its name rather than failing requests later.
pub fn load() -> Result<(), String> {
    TABLE.as_ref().map(drop).map_err(Clone::clone)
}

fn elements(res_type: &str) -> Option<&'static TypeElements> {
    TABLE.as_ref().ok()?.types.get(res_type)
}

/// Whether `element` is a mandatory (min 1) top-level element of the type.
pub fn is_mandatory(res_type: &str, element: &str) -> bool {
    elements(res_type).is_some_and(|e| e.mandatory.iter().any(|m| m == element))
}

/// Does JSON key `key` belong to element `name` (`value[x]` covers
/// `valueQuantity`; `_birthDate` carries `birthDate`'s extensions)?
fn key_is(key: &str, name: &str) -> bool {
    let key = key.strip_prefix('_').unwrap_or(key);
    match name.strip_suffix("[x]") {
        Some(stem) => key
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
        None => key == name,
    }
}

const ALWAYS: &[&str] = &["resourceType", "id", "meta"];

fn keep(resource: &mut Value, wanted: impl Fn(&str) -> bool) {
    if let Value::Object(map) = resource {
        map.retain(|k, _| ALWAYS.contains(&k.as_str()) || wanted(k));
    }
}

/// Marks a resource as a subset, as search.html#summary requires.
fn mark_subsetted(resource: &mut Value) {
    let Value::Object(map) = resource else { return };
    let meta = map
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(tags) = tags {
            tags.push(json!({
                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                "code": "SUBSETTED",
                "display": "subsetted"
            }));
        }
    }
}

/// Applies `_summary` / `_elements` to one resource. Returns `false` when
/// nothing needed cutting (the stored bytes can be sent as they are).
pub fn apply(resource: &mut Value, summary: Option<Summary>, wanted: Option<&[String]>) -> bool {
    let res_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(table) = elements(&res_type) else {
        return false;
    };
    match (summary, wanted) {
        (Some(Summary::True), _) => keep(resource, |k| table.summary.iter().any(|n| key_is(k, n))),
        (Some(Summary::Text), _) => keep(resource, |k| {
            k == "text" || table.mandatory.iter().any(|n| key_is(k, n))
        }),
        (Some(Summary::Data), _) => {
            if let Value::Object(map) = resource {
                map.shift_remove("text");
            }
        }
        (_, Some(names)) => keep(resource, |k| {
            table.mandatory.iter().chain(names).any(|n| key_is(k, n))
                || names.iter().any(|n| key_is(k, &format!("{n}[x]")))
        }),
        _ => return false,
    }
    mark_subsetted(resource);
    true
}

/// `apply` on stored JSON text; the text itself when nothing is cut.
pub fn apply_to_text(
    body: &str,
    summary: Option<Summary>,
    wanted: Option<&[String]>,
) -> crate::fhir::outcome::FhirResult<String> {
    let mut v: Value = serde_json::from_str(body)
        .map_err(|e| crate::fhir::outcome::FhirError::Internal(e.to_string()))?;
    Ok(if apply(&mut v, summary, wanted) {
        v.to_string()
    } else {
        body.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_loads_and_knows_patient() {
        load().unwrap();
        assert!(is_mandatory("Task", "status"));
    }

    #[test]
    fn summary_true_keeps_summary_elements_only() {
        let mut p = json!({"resourceType":"Patient","id":"1","name":[{"family":"A"}],
            "photo":[{}],"deceasedBoolean":false,"_gender":{"extension":[]},"gender":"other"});
        assert!(apply(&mut p, Some(Summary::True), None));
        assert!(p.get("photo").is_none());
        for k in ["name", "deceasedBoolean", "gender", "_gender", "id"] {
            assert!(p.get(k).is_some(), "{k}");
        }
        assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    }

    #[test]
    fn elements_keep_what_was_named_and_mandatory_ones() {
        let mut t = json!({"resourceType":"Task","id":"1","status":"requested","intent":"order",
            "identifier":[{"value":"x"}],"description":"d"});
        apply(&mut t, None, Some(&["identifier".to_string()]));
        assert!(t.get("identifier").is_some());
        assert!(t.get("status").is_some(), "mandatory elements stay");
        assert!(t.get("description").is_none());
    }
}
