//! Turning a request body into a checked resource, and stamping it for storage.

use serde_json::{Map, Value};

use super::outcome::{FhirError, FhirResult};
use super::position;

/// The wire formats a resource can arrive or leave in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// FHIR ids: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

pub fn check_id(id: &str) -> FhirResult<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::invalid(format!(
            "'{}' is not a valid FHIR id (1-64 characters of A-Z, a-z, 0-9, '-' and '.')",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Parses `body` as one resource of `expected_type`, checked by fhirbolt in
/// strict mode, and returns its JSON object.
pub fn parse(body: &[u8], format: Format, expected_type: &str) -> FhirResult<Value> {
    let json_bytes;
    let json: &[u8] = match format {
        Format::Json => body,
        Format::Xml => {
            json_bytes = sp_hub_codec::xml_to_json(body)
                .map_err(|e| FhirError::structure(format!("invalid FHIR XML: {e}"), None))?;
            &json_bytes
        }
    };
    let value: Value = serde_json::from_slice(json)
        .map_err(|e| FhirError::structure(format!("malformed JSON: {e}"), None))?;
    let Value::Object(map) = &value else {
        return Err(FhirError::structure(
            "the body must be a JSON object holding one FHIR resource",
            None,
        ));
    };
    let declared = match map.get("resourceType") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            return Err(FhirError::structure(
                "resourceType must be a string",
                Some("resourceType".into()),
            ))
        }
        None => {
            return Err(FhirError::structure(
                "the resource has no resourceType",
                Some("resourceType".into()),
            ))
        }
    };
    if declared != expected_type {
        return Err(FhirError::invalid_at(
            format!(
                "resourceType '{declared}' does not match the type in the URL ('{expected_type}')"
            ),
            format!("{expected_type}.resourceType"),
        ));
    }
    match map.get("id") {
        None => {}
        Some(Value::String(id)) if is_valid_id(id) => {}
        Some(_) => {
            return Err(FhirError::invalid_at(
                "id must be a string of 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
                format!("{expected_type}.id"),
            ))
        }
    }
    if format == Format::Json {
        sp_hub_codec::check_json(json).map_err(|e| {
            let expression = position::unknown_element_path(&value, &e.message, expected_type)
                .or_else(|| position::missing_element_path(&value, &e.message, expected_type));
            FhirError::structure(readable(&e.message), expression)
        })?;
    }
    Ok(value)
}

/// fhirbolt lists every allowed field after an unknown one; the element
/// name is what a person needs.
fn readable(message: &str) -> String {
    let short = message.split(", expected").next().unwrap_or(message);
    short
        .replace("unknown field", "unknown element")
        .replace("missing field", "missing required element")
}

/// Sets id, meta.versionId and meta.lastUpdated, and orders the top of the
/// object as people expect to read it: resourceType, id, meta, the rest.
pub fn stamp(resource: &mut Value, id: &str, version: i32, last_updated: &str) {
    let Value::Object(old) = std::mem::take(resource) else {
        return;
    };
    let mut old = old;
    let mut meta = match old.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.into()));
    let mut out = Map::with_capacity(old.len() + 2);
    if let Some(rt) = old.remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    old.remove("id");
    out.insert("id".into(), Value::String(id.into()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(old);
    *resource = Value::Object(out);
}

pub fn now_instant() -> String {
    super::instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_fhir_rule() {
        assert!(is_valid_id("a-B.9"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        for bad in ["", "a_b", "a/b", "é", "a b"] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn stamp_sets_meta_and_orders_the_top() {
        let mut r = json!({"status": "active", "resourceType": "Task", "meta": {"profile": ["p"]}, "id": "old"});
        stamp(&mut r, "t1", 3, "2026-01-01T00:00:00.000000Z");
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.starts_with(
                r#"{"resourceType":"Task","id":"t1","meta":{"profile":["p"],"versionId":"3""#
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_element_is_named_with_its_path() {
        let e = parse(
            br#"{"resourceType":"Patient","name":[{"family":"X","foo":1}]}"#,
            Format::Json,
            "Patient",
        )
        .unwrap_err();
        match e {
            FhirError::Structure {
                message,
                expression,
            } => {
                assert!(message.contains("unknown element `foo`"), "{message}");
                assert_eq!(expression.as_deref(), Some("Patient.name[0].foo"));
            }
            other => panic!("{other:?}"),
        }
    }
}
