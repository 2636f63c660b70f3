//! Names the element a parser complaint is about. fhirbolt reports an
//! unknown element as "unknown field `x`, expected one of `a`, `b`" with no
//! position, so we find the object that holds `x` and whose other members
//! are all among the expected ones, and give its FHIRPath.

use serde_json::Value;

/// `Patient.name[0].foo` for fhirbolt's message about `foo` in `resource`.
pub fn unknown_element_path(resource: &Value, message: &str, root: &str) -> Option<String> {
    let mut quoted = message.split('`').skip(1).step_by(2);
    let field = quoted.next()?;
    let expected: Vec<&str> = quoted.collect();
    let fits = |obj: &serde_json::Map<String, Value>| {
        obj.contains_key(field)
            && (expected.is_empty()
                || obj.keys().all(|k| {
                    k == field
                        || k == "resourceType"
                        || expected.contains(&k.trim_start_matches('_'))
                }))
    };
    let mut path = root.to_string();
    find(resource, &fits, &mut path).then(|| format!("{path}.{field}"))
}

/// For "missing field `status`": the path when the resource itself lacks
/// one of its own mandatory elements by that name (fhirbolt does not say
/// which object it was, so a nested miss stays unnamed rather than wrong).
pub fn missing_element_path(resource: &Value, message: &str, root: &str) -> Option<String> {
    let field = message.strip_prefix("missing field `")?.split('`').next()?;
    (resource.get(field).is_none() && super::summary::is_mandatory(root, field))
        .then(|| format!("{root}.{field}"))
}

/// Depth-first, in document order; `path` ends at the object found.
fn find(
    v: &Value,
    fits: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
    path: &mut String,
) -> bool {
    let len = path.len();
    match v {
        Value::Object(obj) => {
            if fits(obj) {
                return true;
            }
            for (k, child) in obj {
                path.push('.');
                path.push_str(k);
                if find(child, fits, path) {
                    return true;
                }
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                if find(child, fits, path) {
                    return true;
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_a_top_level_member() {
        let r = json!({"resourceType": "Patient", "foo": 1});
        let msg = "unknown field `foo`, expected one of `id`, `meta`";
        assert_eq!(
            unknown_element_path(&r, msg, "Patient").as_deref(),
            Some("Patient.foo")
        );
    }

    #[test]
    fn names_nested_members_with_indices() {
        let r =
            json!({"resourceType": "Task", "input": [{"type": {}}, {"type": {}, "valueFoo": 2}]});
        let msg =
            "unknown field `valueFoo`, expected one of `id`, `extension`, `type`, `valueString`";
        assert_eq!(
            unknown_element_path(&r, msg, "Task").as_deref(),
            Some("Task.input[1].valueFoo")
        );
    }

    #[test]
    fn skips_objects_where_the_name_is_legal() {
        // `code` is fine inside the coding, unknown at the top.
        let r = json!({"resourceType": "Basic", "x": {"code": "a", "system": "s"}, "code": 1});
        let msg = "unknown field `code`, expected one of `id`, `meta`, `x`";
        assert_eq!(
            unknown_element_path(&r, msg, "Basic").as_deref(),
            Some("Basic.code")
        );
    }
}
