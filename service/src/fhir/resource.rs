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
    accept(to_json(body, format)?, expected_type)
}

/// A resource as the hub keeps it, checked: an SP referral's SNOMED CT
/// reasons also carry the need they map to (`translate::reasons`), then
/// `check`. Every write's resource comes through here.
pub fn accept(mut value: Value, expected_type: &str) -> FhirResult<Value> {
    crate::translate::reasons::add_needs(&mut value);
    check(&value, expected_type)?;
    Ok(value)
}

/// Parses a Bundle, checking its envelope here and leaving each entry's
/// resource to be checked on its own (a batch reports a bad entry in that
/// entry's response, not by refusing the whole Bundle).
pub fn parse_bundle(body: &[u8], format: Format) -> FhirResult<Value> {
    let mut bundle = to_json(body, format)?;
    // FHIR JSON's own rules hold for the whole document.
    check_json_rules(&bundle, "Bundle")?;
    let mut resources = vec![];
    if let Some(Value::Array(entries)) = bundle.get_mut("entry") {
        for e in entries.iter_mut() {
            resources.push(e.as_object_mut().and_then(|e| e.shift_remove("resource")));
        }
    }
    check_model(&bundle, "Bundle")?;
    if let Some(Value::Array(entries)) = bundle.get_mut("entry") {
        for (e, r) in entries.iter_mut().zip(resources) {
            if let (Some(e), Some(r)) = (e.as_object_mut(), r) {
                e.insert("resource".into(), r);
            }
        }
    }
    Ok(bundle)
}

/// The body as JSON: XML goes through fhirbolt (strict) first.
pub fn to_json(body: &[u8], format: Format) -> FhirResult<Value> {
    let json_bytes;
    let json: &[u8] = match format {
        Format::Json => body,
        Format::Xml => {
            json_bytes = sp_hub_codec::xml_to_json(body)
                .map_err(|e| FhirError::structure(format!("invalid FHIR XML: {e}"), None))?;
            &json_bytes
        }
    };
    serde_json::from_slice(json)
        .map_err(|e| FhirError::structure(format!("malformed JSON: {e}"), None))
}

/// Checks that `value` is one valid resource of `expected_type`, and valid
/// against the profiles of ours that apply to it (422 otherwise). Every
/// write (create, update, patch, Bundle entry) comes through here.
pub fn check(value: &Value, expected_type: &str) -> FhirResult<()> {
    check_structure(value, expected_type)?;
    crate::profiles::check(expected_type, value)
}

/// The R4 model and FHIR JSON rules only, without profiles (`$validate`
/// reports profile problems instead of refusing them).
pub fn check_structure(value: &Value, expected_type: &str) -> FhirResult<()> {
    check_json_rules(value, expected_type)?;
    check_model(value, expected_type)
}

/// FHIR JSON rules fhirbolt does not enforce (json.html): no empty values,
/// no control characters in strings.
fn check_json_rules(value: &Value, root: &str) -> FhirResult<()> {
    if let Some(path) = position::control_character_path(value, root) {
        return Err(FhirError::structure(
            "a string holds a control character (FHIR strings allow only tab, CR and LF below U+0020)",
            Some(path),
        ));
    }
    if let Some(path) = position::empty_value_path(value, root) {
        return Err(FhirError::structure(
            "empty arrays, objects and strings are not allowed in FHIR JSON; leave the element out",
            Some(path),
        ));
    }
    Ok(())
}

/// The resource's type and id, then fhirbolt's strict reading of the R4 model.
fn check_model(value: &Value, expected_type: &str) -> FhirResult<()> {
    let Value::Object(map) = value else {
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
                "resourceType '{declared}' does not match the expected type ('{expected_type}')"
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
    let json = serde_json::to_vec(value).map_err(|e| FhirError::Internal(e.to_string()))?;
    sp_hub_codec::check_json(&json).map_err(|e| {
        let expression = position::unknown_element_path(value, &e.message, expected_type)
            .or_else(|| position::missing_element_path(value, &e.message, expected_type))
            .or_else(|| narrow_by_parsing(value, &e.message, expected_type, json.len()));
        let message = match &expression {
            Some(path) => format!("{path}: {}", readable(&e.message)),
            None => readable(&e.message),
        };
        FhirError::structure(message, expression)
    })
}

/// Bodies up to this size get their bad element searched for by re-parsing
/// parts of them; past it the cost is not worth a better message.
const NARROW_LIMIT: usize = 64 * 1024;

fn narrow_by_parsing(value: &Value, message: &str, res_type: &str, size: usize) -> Option<String> {
    if size > NARROW_LIMIT {
        return None;
    }
    let still_fails = |doc: &Value| {
        serde_json::to_vec(doc)
            .ok()
            .and_then(|bytes| sp_hub_codec::check_json(&bytes).err())
            .is_some_and(|e| e.message == message)
    };
    position::narrow(value, res_type, &still_fails, 256)
}

/// fhirbolt lists every allowed field after an unknown one, and names Rust
/// parse errors for bad primitives; say it in FHIR's terms.
fn readable(message: &str) -> String {
    let short = message.split(", expected").next().unwrap_or(message);
    match short {
        "ParseBoolError" => "not a valid boolean (expected true or false)".into(),
        m if m.starts_with("ParseIntError") => "not a valid integer".into(),
        m if m.starts_with("ParseFloatError") => "not a valid decimal".into(),
        m => m
            .replace("unknown field", "unknown element")
            .replace("missing field", "missing required element"),
    }
}

/// Sets id, meta.versionId and meta.lastUpdated, and orders the top of the
/// object as people expect to read it: resourceType, id, meta, the rest.
pub fn stamp(resource: &mut Value, id: &str, version: i32, last_updated: &str) {
    let Value::Object(old) = std::mem::take(resource) else {
        return;
    };
    let mut old = old;
    let mut meta = match old.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.into()));
    let mut out = Map::with_capacity(old.len() + 2);
    if let Some(rt) = old.shift_remove("resourceType") {
        out.insert("resourceType".into(), rt);
    }
    old.shift_remove("id");
    out.insert("id".into(), Value::String(id.into()));
    out.insert("meta".into(), Value::Object(meta));
    out.extend(old);
    *resource = Value::Object(out);
}

/// The weak ETag FHIR uses for a version: `W/"3"`.
pub fn etag(version: i32) -> String {
    format!("W/\"{version}\"")
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
        let mut r = json!({"status": "active", "resourceType": "Task", "meta": {"profile": ["p"]}, "id": "old", "intent": "order", "code": {}});
        stamp(&mut r, "t1", 3, "2026-01-01T00:00:00.000000Z");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"resourceType":"Task","id":"t1","meta":{"profile":["p"],"versionId":"3","lastUpdated":"2026-01-01T00:00:00.000000Z"},"status":"active","intent":"order","code":{}}"#
        );
    }

    #[test]
    fn wrongly_typed_primitive_is_named_with_its_path() {
        for (body, path) in [
            (
                r#"{"resourceType":"Patient","active":"yes"}"#,
                "Patient.active",
            ),
            (
                r#"{"resourceType":"Patient","name":[{"family":5}]}"#,
                "Patient.name[0].family",
            ),
            (
                r#"{"resourceType":"Patient","multipleBirthInteger":"x"}"#,
                "Patient.multipleBirthInteger",
            ),
        ] {
            match parse(body.as_bytes(), Format::Json, "Patient").unwrap_err() {
                FhirError::Structure {
                    message,
                    expression,
                } => {
                    assert_eq!(expression.as_deref(), Some(path), "{message}");
                    assert!(message.starts_with(path), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
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

/// Fuzzing the resource parser with proptest (no nightly toolchain for
/// cargo-fuzz in CI): arbitrary bytes, and mutated resources in JSON and
/// XML, as single resources and as Bundles. The parser either accepts the
/// body or refuses it with a client error; it never panics and never
/// answers 5xx.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const TYPES: &[&str] = &["Patient", "Task", "ServiceRequest", "Observation", "Bundle"];

    fn valid() -> Vec<Value> {
        vec![
            json!({"resourceType": "Patient", "id": "p1", "active": true,
                   "name": [{"family": "Okafor", "given": ["Grace"]}], "birthDate": "1948-03-14",
                   "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": "9434765919"}]}),
            json!({"resourceType": "Task", "status": "requested", "intent": "order",
                   "focus": {"reference": "ServiceRequest/s1"}, "for": {"reference": "Patient/p1"},
                   "requester": {"reference": "Organization/o1"},
                   "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
                   "note": [{"text": "<b>&amp;</b>"}]}),
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "valueQuantity": {"value": 1.5, "unit": "kg"}, "effectiveDateTime": "2026-01-01"}),
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:6f1c2b5e-0d7a-4c38-9a51-3e2f8b7d9c10",
                 "resource": {"resourceType": "Patient", "active": false},
                 "request": {"method": "POST", "url": "Patient"}}]}),
        ]
    }

    const XML: &[&str] = &[
        r#"<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><active value="true"/><name><family value="Okafor"/><given value="Grace"/></name><birthDate value="1948-03-14"/></Patient>"#,
        r#"<Task xmlns="http://hl7.org/fhir"><status value="requested"/><intent value="order"/><focus><reference value="ServiceRequest/s1"/></focus></Task>"#,
        r#"<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Hi &amp; <b>bye</b></p></div></text><active value="false"/></Patient>"#,
        r#"<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/><entry><resource><Patient><active value="true"/></Patient></resource><request><method value="POST"/><url value="Patient"/></request></entry></Bundle>"#,
    ];

    /// A body changed in the ways a broken client or an attacker would:
    /// cut short, a byte range replaced, bytes inserted, a part repeated.
    fn mutate(body: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = body.len();
        (
            0..=len,
            0..=len,
            prop::collection::vec(any::<u8>(), 0..8),
            0u8..4,
        )
            .prop_map(move |(a, b, bytes, how)| {
                let (a, b) = (a.min(b), a.max(b));
                let mut out = body.clone();
                match how {
                    0 => out.truncate(a),
                    1 => {
                        out.splice(a..b, bytes);
                    }
                    2 => {
                        out.splice(a..a, bytes);
                    }
                    _ => {
                        let part = out[a..b].to_vec();
                        out.splice(b..b, part);
                    }
                }
                out
            })
    }

    fn json_body() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(valid()).prop_flat_map(|v| mutate(v.to_string().into_bytes()))
    }

    fn xml_body() -> impl Strategy<Value = Vec<u8>> {
        prop::sample::select(XML).prop_flat_map(|x| mutate(x.as_bytes().to_vec()))
    }

    fn client_error(r: &FhirResult<Value>) -> Result<(), TestCaseError> {
        if let Err(e) = r {
            prop_assert!(
                (400..500).contains(&e.status()),
                "{} error: {e:?}",
                e.status()
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn arbitrary_bytes_never_panic(
            body in prop::collection::vec(any::<u8>(), 0..300),
            t in prop::sample::select(TYPES),
        ) {
            client_error(&parse(&body, Format::Json, t))?;
            client_error(&parse(&body, Format::Xml, t))?;
            client_error(&parse_bundle(&body, Format::Json))?;
            client_error(&parse_bundle(&body, Format::Xml))?;
        }

        #[test]
        fn mutated_json_resources_never_panic(
            body in json_body(),
            t in prop::sample::select(TYPES),
        ) {
            client_error(&parse(&body, Format::Json, t))?;
            client_error(&parse_bundle(&body, Format::Json))?;
        }

        #[test]
        fn mutated_xml_resources_never_panic(
            body in xml_body(),
            t in prop::sample::select(TYPES),
        ) {
            client_error(&parse(&body, Format::Xml, t))?;
            client_error(&parse_bundle(&body, Format::Xml))?;
        }
    }

    #[test]
    fn the_unmutated_bodies_parse() {
        for v in valid() {
            let t = v["resourceType"].as_str().unwrap();
            parse(v.to_string().as_bytes(), Format::Json, t)
                .unwrap_or_else(|e| panic!("{v}: {e:?}"));
        }
        for (x, t) in XML.iter().zip(["Patient", "Task", "Patient", "Bundle"]) {
            to_json(x.as_bytes(), Format::Xml).unwrap_or_else(|e| panic!("{x}: {e:?}"));
            if t != "Bundle" {
                parse(x.as_bytes(), Format::Xml, t).unwrap_or_else(|e| panic!("{x}: {e:?}"));
            }
        }
    }
}
