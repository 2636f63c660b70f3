//! Index rows extracted from a resource at write time.

use serde_json::Value;

use crate::store::TokenRow;

/// Token rows for `identifier` (a list in most types, a single Identifier
/// in a few such as Bundle and QuestionnaireResponse).
pub fn tokens(resource: &Value) -> Vec<TokenRow> {
    let identifiers: Vec<&Value> = match resource.get("identifier") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::Object(_)) => vec![one],
        _ => vec![],
    };
    let mut rows: Vec<TokenRow> = identifiers
        .into_iter()
        .filter_map(|i| {
            let code = i.get("value")?.as_str()?;
            let system = i.get("system").and_then(Value::as_str).unwrap_or("");
            Some(TokenRow {
                param: "identifier".into(),
                system: system.into(),
                code: code.into(),
            })
        })
        .collect();
    // One row per distinct token: a resource may repeat an identifier.
    rows.sort();
    rows.dedup();
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_become_distinct_token_rows() {
        let r = json!({"identifier": [
            {"system": "s", "value": "1"}, {"value": "2"}, {"system": "s", "value": "1"}, {"system": "s"}
        ]});
        let rows = tokens(&r);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].system.as_str(), rows[0].code.as_str()), ("", "2"));
    }

    #[test]
    fn a_single_identifier_is_indexed_too() {
        let r = json!({"identifier": {"system": "s", "value": "b1"}});
        assert_eq!(tokens(&r)[0].code, "b1");
    }
}
