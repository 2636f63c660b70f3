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
    let fits = |v: &Value| {
        let Value::Object(obj) = v else { return false };
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

/// Finds the element an error is about by taking the resource apart:
/// removing a member whose absence makes `still_fails` false means the
/// error lies inside it, so descend there. Used for parser errors that name
/// no element (e.g. a boolean written as "yes"). At most `budget` checks.
pub fn narrow(
    resource: &Value,
    root: &str,
    still_fails: &dyn Fn(&Value) -> bool,
    mut budget: usize,
) -> Option<String> {
    let mut doc = resource.clone();
    let mut at: Vec<Seg> = vec![];
    'descend: loop {
        let keys: Vec<Seg> = match node(&doc, &at)? {
            Value::Object(o) => o
                .keys()
                .filter(|k| k.as_str() != "resourceType")
                .map(|k| Seg::Key(k.clone()))
                .collect(),
            Value::Array(a) => (0..a.len()).map(Seg::Index).collect(),
            _ => break,
        };
        for seg in keys {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            let parent = node_mut(&mut doc, &at)?;
            let (removed, fails) = match (&seg, parent) {
                (Seg::Key(k), Value::Object(o)) => {
                    let i = o.keys().position(|x| x == k)?;
                    let (k2, v) = o.shift_remove_entry(k)?;
                    let fails = still_fails(&doc);
                    if let Value::Object(o) = node_mut(&mut doc, &at)? {
                        o.shift_insert(i, k2, v);
                    }
                    (true, fails)
                }
                (Seg::Index(i), Value::Array(a)) => {
                    let v = a.remove(*i);
                    let fails = still_fails(&doc);
                    if let Value::Array(a) = node_mut(&mut doc, &at)? {
                        a.insert(*i, v);
                    }
                    (true, fails)
                }
                _ => (false, true),
            };
            if removed && !fails {
                at.push(seg);
                continue 'descend;
            }
        }
        break;
    }
    if at.is_empty() {
        return None;
    }
    let mut path = root.to_string();
    for seg in &at {
        match seg {
            Seg::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Seg::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    Some(path)
}

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn node<'a>(v: &'a Value, at: &[Seg]) -> Option<&'a Value> {
    at.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get(k.as_str()),
        Seg::Index(i) => v.get(*i),
    })
}

fn node_mut<'a>(v: &'a mut Value, at: &[Seg]) -> Option<&'a mut Value> {
    at.iter().try_fold(v, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

/// The path of the first string holding a control character, which FHIR
/// strings may not contain (only tab, CR and LF are allowed below U+0020).
pub fn control_character_path(resource: &Value, root: &str) -> Option<String> {
    let bad = |v: &Value| matches!(v, Value::String(s) if s.chars().any(|c| c < ' ' && !matches!(c, '\t' | '\r' | '\n')));
    let mut path = root.to_string();
    find(resource, &bad, &mut path).then_some(path)
}

/// The path of the first empty array, object or string: FHIR JSON has no
/// empty values (json.html), and fhirbolt mishandles empty arrays.
pub fn empty_value_path(resource: &Value, root: &str) -> Option<String> {
    let empty = |v: &Value| match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    let mut path = root.to_string();
    find(resource, &empty, &mut path).then_some(path)
}

/// Depth-first, in document order; `path` ends at the value found.
fn find(v: &Value, fits: &dyn Fn(&Value) -> bool, path: &mut String) -> bool {
    if fits(v) {
        return true;
    }
    let len = path.len();
    match v {
        Value::Object(obj) => {
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
    fn narrowing_finds_the_bad_member() {
        let r = json!({"resourceType": "Patient", "name": [{"family": "A"}], "contact": [{}, {"gender": 5}]});
        let fails = |v: &Value| {
            v["contact"]
                .as_array()
                .is_some_and(|c| c.iter().any(|x| x["gender"] == 5))
        };
        assert_eq!(
            narrow(&r, "Patient", &fails, 100).as_deref(),
            Some("Patient.contact[1].gender")
        );
        assert_eq!(
            narrow(&r, "Patient", &fails, 2),
            None,
            "budget is respected"
        );
    }

    #[test]
    fn finds_control_characters() {
        let r = json!({"resourceType": "Patient", "name": [{"given": ["ok", "a\u{0}b"]}]});
        assert_eq!(
            control_character_path(&r, "Patient").as_deref(),
            Some("Patient.name[0].given[1]")
        );
        let fine = json!({"resourceType": "Patient", "text": {"div": "a\n\tb\r"}});
        assert_eq!(control_character_path(&fine, "Patient"), None);
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
