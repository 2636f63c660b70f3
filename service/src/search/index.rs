//! Index rows extracted from a resource at write time: every registered
//! SearchParameter for its type, its FHIRPath expression evaluated, and each
//! selected value turned into rows of the table for the parameter's type.

use serde_json::Value;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use super::fhirpath::Node;
use super::registry::{self, Kind, Param};
use crate::fhir::instant;
use crate::store::{
    DateRow, IndexRows, NumberRow, QuantityRow, ReferenceRow, StringRow, TokenRow, UriRow,
};

/// Stand-ins for an open end of a Period: before and after every instant.
pub const MIN_INSTANT: &str = "0001-01-01T00:00:00.000000Z";
pub const MAX_INSTANT: &str = "9999-12-31T23:59:59.999999Z";

/// Indexed text is cut to this many characters: a B-tree key has a size
/// limit (about 2.7 kB in PostgreSQL), and nobody searches by a page of
/// text. Search values are cut the same way, so matching stays consistent.
pub const MAX_INDEXED_CHARS: usize = 256;

pub fn cap(s: &str) -> String {
    match s.char_indices().nth(MAX_INDEXED_CHARS) {
        Some((i, _)) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `_id` and `_lastUpdated` are columns of the resource row itself.
fn on_resource_row(code: &str) -> bool {
    matches!(code, "_id" | "_lastUpdated")
}

/// All index rows of `resource` (of type `res_type`).
pub fn rows(res_type: &str, resource: &Value) -> IndexRows {
    let mut out = IndexRows::default();
    let Ok(registry) = registry::load() else {
        return out;
    };
    for param in registry
        .for_type(res_type)
        .filter(|p| !on_resource_row(&p.code))
    {
        for node in param.expr.evaluate(resource) {
            add(&mut out, param, node);
        }
    }
    // One row per distinct value: a resource may repeat one.
    out.tokens.sort();
    out.tokens.dedup();
    out.strings.sort();
    out.strings.dedup();
    out.dates.sort();
    out.dates.dedup();
    out.references.sort();
    out.references.dedup();
    out.uris.sort();
    out.uris.dedup();
    out
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(String::from)
}

fn add(out: &mut IndexRows, param: &Param, node: Node) {
    let p = || param.code.clone();
    let v = node.value;
    match param.kind {
        Kind::Token => {
            let mut token = |system: Option<String>, code: Option<String>| {
                if let Some(code) = code {
                    out.tokens.push(TokenRow {
                        param: p(),
                        system: cap(&system.unwrap_or_default()),
                        code: cap(&code),
                    });
                }
            };
            // Words for `:text`: CodeableConcept.text, Coding.display,
            // Identifier.type.text.
            let mut words = vec![];
            match v {
                Value::String(s) => token(None, Some(s.clone())),
                Value::Bool(b) => token(None, Some(b.to_string())),
                Value::Number(n) => token(None, Some(n.to_string())),
                Value::Object(o) if o.contains_key("coding") => {
                    for c in v["coding"].as_array().into_iter().flatten() {
                        token(text(c, "system"), text(c, "code"));
                        words.extend(text(c, "display"));
                    }
                    words.extend(text(v, "text"));
                }
                // Identifier and ContactPoint: system|value.
                Value::Object(o) if o.contains_key("value") => {
                    token(text(v, "system"), text(v, "value"));
                    // `:of-type`: the Identifier's type codings with its value,
                    // kept under a parameter name of its own.
                    let value = text(v, "value").unwrap_or_default();
                    for c in v["type"]["coding"].as_array().into_iter().flatten() {
                        out.tokens.push(TokenRow {
                            param: format!("{}:of-type", param.code),
                            system: cap(&format!(
                                "{}|{}",
                                text(c, "system").unwrap_or_default(),
                                text(c, "code").unwrap_or_default()
                            )),
                            code: cap(&value),
                        });
                    }
                    words.extend(
                        v["type"]
                            .get("text")
                            .and_then(Value::as_str)
                            .map(String::from),
                    );
                }
                // Coding.
                Value::Object(_) => {
                    token(text(v, "system"), text(v, "code"));
                    words.extend(text(v, "display"));
                }
                _ => {}
            }
            for w in words {
                out.strings.push(StringRow {
                    param: format!("{}:text", param.code),
                    norm: cap(&normalize(&w)),
                    exact: cap(&w),
                });
            }
        }
        Kind::String => {
            let mut strings = vec![];
            match v {
                Value::String(s) => strings.push(s.clone()),
                Value::Object(_) => {
                    // HumanName and Address: every part a person may search by.
                    for key in [
                        "text",
                        "family",
                        "given",
                        "prefix",
                        "suffix",
                        "line",
                        "city",
                        "district",
                        "state",
                        "postalCode",
                        "country",
                    ] {
                        match v.get(key) {
                            Some(Value::String(s)) => strings.push(s.clone()),
                            Some(Value::Array(a)) => {
                                strings.extend(a.iter().filter_map(Value::as_str).map(String::from))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            for s in strings {
                out.strings.push(StringRow {
                    param: p(),
                    norm: cap(&normalize(&s)),
                    exact: cap(&s),
                });
            }
        }
        Kind::Date => {
            let range = match v {
                Value::String(s) => {
                    super::date::range(s).map(|(l, h)| (instant::format(l), instant::format(h)))
                }
                Value::Object(_) => {
                    let start = v
                        .get("start")
                        .and_then(Value::as_str)
                        .and_then(super::date::range);
                    let end = v
                        .get("end")
                        .and_then(Value::as_str)
                        .and_then(super::date::range);
                    (start.is_some() || end.is_some()).then(|| {
                        (
                            start.map_or(MIN_INSTANT.to_string(), |(l, _)| instant::format(l)),
                            end.map_or(MAX_INSTANT.to_string(), |(_, h)| instant::format(h)),
                        )
                    })
                }
                _ => None,
            };
            if let Some((low, high)) = range {
                out.dates.push(DateRow {
                    param: p(),
                    low,
                    high,
                });
            }
        }
        Kind::Reference => {
            let reference = match v {
                Value::Object(_) => text(v, "reference"),
                Value::String(s) => Some(s.clone()), // canonical
                _ => None,
            };
            // `:identifier`: a reference may name its target by identifier.
            if let Some(i) = v.get("identifier") {
                if let Some(value) = text(i, "value") {
                    out.tokens.push(TokenRow {
                        param: format!("{}:identifier", param.code),
                        system: cap(&text(i, "system").unwrap_or_default()),
                        code: cap(&value),
                    });
                }
            }
            if let Some(r) = reference {
                let (target_type, target_id) = split_reference(&r).unwrap_or_default();
                let url = if r.contains("://") || r.starts_with("urn:") {
                    cap(&r)
                } else {
                    String::new()
                };
                if !target_id.is_empty() || !url.is_empty() {
                    out.references.push(ReferenceRow {
                        param: p(),
                        target_type,
                        target_id,
                        url,
                    });
                }
            }
        }
        Kind::Uri => {
            if let Value::String(s) = v {
                out.uris.push(UriRow {
                    param: p(),
                    uri: cap(s),
                });
            }
        }
        Kind::Number => {
            if let Some(n) = v.as_f64() {
                out.numbers.push(NumberRow {
                    param: p(),
                    value: n,
                });
            }
        }
        Kind::Quantity => {
            if let Some(n) = v.get("value").and_then(Value::as_f64) {
                out.quantities.push(QuantityRow {
                    param: p(),
                    value: n,
                    system: cap(&text(v, "system").unwrap_or_default()),
                    code: cap(&text(v, "code")
                        .or_else(|| text(v, "unit"))
                        .unwrap_or_default()),
                });
            }
        }
    }
}

/// `Type/id`, `Type/id/_history/n`, or an absolute URL ending in one of
/// those: the type and id it points at.
pub fn split_reference(r: &str) -> Option<(String, String)> {
    let path = r.split(['?', '#']).next().unwrap_or(r);
    let parts: Vec<&str> = path.split('/').collect();
    let n = parts.len();
    let (t, id) = if n >= 4 && parts[n - 2] == "_history" {
        (parts[n - 4], parts[n - 3])
    } else if n >= 2 {
        (parts[n - 2], parts[n - 1])
    } else {
        return None;
    };
    (sp_hub_codec::RESOURCE_TYPES.contains(&t) && crate::fhir::resource::is_valid_id(id))
        .then(|| (t.to_string(), id.to_string()))
}

/// Case- and accent-insensitive form for string search (search.html#string).
pub fn normalize(s: &str) -> String {
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .collect::<String>()
        .to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_is_indexed_by_its_parameters() {
        let t = json!({"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
            "identifier": [{"system": "s", "value": "1"}, {"system": "s", "value": "1"}],
            "owner": {"reference": "Organization/vcs1"},
            "for": {"reference": "http://hub.example/fhir/Patient/p1"},
            "authoredOn": "2026-11-25",
            "executionPeriod": {"start": "2026-11-25T10:00:00Z"},
            "meta": {"tag": [{"system": "urn:t", "code": "x"}]}});
        let r = rows("Task", &t);
        let has_token = |p: &str, s: &str, c: &str| {
            r.tokens
                .iter()
                .any(|t| t.param == p && t.system == s && t.code == c)
        };
        assert!(has_token("status", "", "requested"));
        assert!(has_token("identifier", "s", "1"));
        assert!(has_token("_tag", "urn:t", "x"));
        assert_eq!(
            r.tokens.iter().filter(|t| t.param == "identifier").count(),
            1,
            "deduplicated"
        );
        let owner = r.references.iter().find(|x| x.param == "owner").unwrap();
        assert_eq!(
            (owner.target_type.as_str(), owner.target_id.as_str()),
            ("Organization", "vcs1")
        );
        assert!(r
            .references
            .iter()
            .any(|x| x.param == "patient" && x.target_id == "p1"));
        let authored = r.dates.iter().find(|d| d.param == "authored-on").unwrap();
        assert_eq!(authored.high, "2026-11-26T00:00:00.000000Z");
        let period = r.dates.iter().find(|d| d.param == "period").unwrap();
        assert_eq!(period.high, MAX_INSTANT);
    }

    #[test]
    fn names_are_indexed_without_case_or_accents() {
        let p =
            json!({"resourceType": "Patient", "name": [{"family": "Lefèvre", "given": ["Zoë"]}]});
        let r = rows("Patient", &p);
        assert!(r
            .strings
            .iter()
            .any(|s| s.param == "family" && s.norm == "lefevre" && s.exact == "Lefèvre"));
        assert!(r
            .strings
            .iter()
            .any(|s| s.param == "name" && s.norm == "zoe"));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_INDEXED_CHARS + 10);
        assert_eq!(cap(&long).chars().count(), MAX_INDEXED_CHARS);
        assert_eq!(cap("short"), "short");
    }

    #[test]
    fn references_split_into_type_and_id() {
        assert_eq!(
            split_reference("Patient/1"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(
            split_reference("https://x/fhir/Task/a/_history/3"),
            Some(("Task".into(), "a".into()))
        );
        assert_eq!(split_reference("urn:uuid:1234"), None);
        assert_eq!(split_reference("#contained"), None);
    }
}
