//! Validates a resource against the StructureDefinitions of ours that apply
//! to it, walking each one's differential: cardinality (per instance of the
//! parent element), fixed and pattern values, choice types, required
//! bindings to our value sets, reference target types, slices (by value or
//! pattern discriminator), extension profiles and invariants. Every problem
//! is reported, each with the FHIRPath of the element.

use serde_json::Value;

use super::{list, Profiles, CANONICAL_BASE};

const SNOMED: &str = "http://snomed.info/sct";
const SP_REFERRAL_CODE: &str = "871731000000106";
const TASK_CODE: &str = "http://hl7.org/fhir/CodeSystem/task-code";
const CORE_SD: &str = "http://hl7.org/fhir/StructureDefinition/";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem: `invariant` is true when a profile's constraint failed
/// (OperationOutcome code `invariant`), otherwise it is `processing`.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    pub invariant: bool,
    pub expression: String,
    pub message: String,
}

/// The profiles of ours that apply to `resource`, and problems with its
/// `meta.profile` claims.
fn applicable(p: &Profiles, resource: &Value) -> (Vec<String>, Vec<Issue>) {
    let res_type = resource["resourceType"].as_str().unwrap_or_default();
    let mut urls: Vec<String> = vec![];
    let mut issues = vec![];
    for (i, claimed) in list(&resource["meta"]["profile"]).into_iter().enumerate() {
        let Some(url) = claimed.as_str() else {
            continue;
        };
        if !url.starts_with(CANONICAL_BASE) {
            continue;
        }
        let url = url.split('|').next().unwrap_or(url);
        match p.resource(url) {
            Some(sd) if sd["resourceType"] == "StructureDefinition" && sd["type"] == res_type => {
                urls.push(url.to_string())
            }
            Some(_) => issues.push(error(
                format!("{res_type}.meta.profile[{i}]"),
                format!("the profile {url} is not a profile of {res_type}"),
            )),
            None => issues.push(error(
                format!("{res_type}.meta.profile[{i}]"),
                format!("the profile {url} is not defined on this server"),
            )),
        }
    }
    let coded = |system: &str, code: &str| {
        list(&resource["code"]["coding"])
            .iter()
            .any(|c| c["system"] == system && c["code"] == code)
    };
    let implied = match res_type {
        "ServiceRequest" if coded(SNOMED, SP_REFERRAL_CODE) => Some("sp-referral"),
        "Task" if coded(TASK_CODE, "fulfill") && focus_is_service_request(resource) => {
            Some("sp-task")
        }
        _ => None,
    };
    if let Some(id) = implied {
        let url = format!("{CANONICAL_BASE}/StructureDefinition/{id}");
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    (urls, issues)
}

/// `Task.focus` names a ServiceRequest: `ServiceRequest/id` (also at the end
/// of an absolute URL) or a Reference whose `type` says so (a `urn:uuid:`
/// in a transaction).
fn focus_is_service_request(task: &Value) -> bool {
    let focus = &task["focus"];
    focus["type"] == "ServiceRequest"
        || focus["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("ServiceRequest/") || r.contains("/ServiceRequest/"))
}

/// Every problem `resource` has against the profiles of ours that apply.
pub fn validate(p: &Profiles, resource: &Value) -> Vec<Issue> {
    validate_with(p, resource, None)
}

/// As `validate`, also against `profile` (a `$validate` request's).
pub fn validate_with(p: &Profiles, resource: &Value, profile: Option<&str>) -> Vec<Issue> {
    let res_type = resource["resourceType"].as_str().unwrap_or_default();
    let (mut urls, mut issues) = applicable(p, resource);
    if let Some(url) = profile {
        let url = url.split('|').next().unwrap_or(url);
        match p.resource(url) {
            Some(sd) if sd["resourceType"] == "StructureDefinition" && sd["type"] == res_type => {
                if !urls.iter().any(|u| u == url) {
                    urls.push(url.to_string());
                }
            }
            _ => issues.push(error(
                res_type.to_string(),
                format!("the profile {url} is not a profile of {res_type} defined on this server"),
            )),
        }
    }
    for url in &urls {
        if let Some(sd) = p.resource(url) {
            let root = Inst {
                value: resource,
                expr: res_type.to_string(),
                choice: None,
            };
            structure(p, url, sd, &root, &mut issues);
        }
    }
    issues
}

fn error(expression: String, message: String) -> Issue {
    Issue {
        severity: Severity::Error,
        invariant: false,
        expression,
        message,
    }
}

/// A value an element selects, with its FHIRPath and, for a choice
/// element, the type suffix of its JSON name (`Integer` in `valueInteger`).
struct Inst<'a> {
    value: &'a Value,
    expr: String,
    choice: Option<&'a str>,
}

/// The short name of a profile for messages: `sp-referral`.
fn short(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// Checks `root` (a resource, or an extension for an extension profile)
/// against the differential of `sd`.
fn structure(p: &Profiles, url: &str, sd: &Value, root: &Inst, issues: &mut Vec<Issue>) {
    let elements = list(&sd["differential"]["element"]);
    let name = short(url);
    for e in &elements {
        let Some(id) = e["id"].as_str() else { continue };
        let segs: Vec<&str> = id.split('.').collect();
        let instances =
            if let Some((last, parent)) = segs.split_last().filter(|(_, p)| !p.is_empty()) {
                let parents = select(&elements, parent, root);
                let mut out = vec![];
                for parent_inst in &parents {
                    let found = children(&elements, &segs, parent_inst);
                    cardinality(e, last, parent_inst, found.len(), name, issues);
                    out.extend(found);
                }
                out
            } else {
                vec![Inst {
                    value: root.value,
                    expr: root.expr.clone(),
                    choice: None,
                }]
            };
        for inst in &instances {
            check_value(p, e, inst, name, issues);
            for t in list(&e["type"]) {
                for prof in list(&t["profile"]).into_iter().filter_map(Value::as_str) {
                    if let Some(ext) = p
                        .resource(prof)
                        .filter(|_| prof.starts_with(CANONICAL_BASE))
                    {
                        structure(p, prof, ext, inst, issues);
                    }
                }
            }
            for c in list(&e["constraint"]) {
                let key = c["key"].as_str().unwrap_or_default();
                let Some(inv) = p.invariants.get(&(url.to_string(), key.to_string())) else {
                    continue;
                };
                if inv.holds(inst.value) {
                    continue;
                }
                let severity = if c["severity"] == "error" {
                    Severity::Error
                } else {
                    Severity::Warning
                };
                issues.push(Issue {
                    severity,
                    invariant: true,
                    expression: inst.expr.clone(),
                    message: format!(
                        "{key}: {} (profile {name})",
                        c["human"].as_str().unwrap_or("invariant failed")
                    ),
                });
            }
        }
    }
}

/// The instances of the element whose id is `segs` (root first).
fn select<'a>(elements: &[&Value], segs: &[&str], root: &Inst<'a>) -> Vec<Inst<'a>> {
    match segs.split_last() {
        None => vec![],
        Some((_, [])) => vec![Inst {
            value: root.value,
            expr: root.expr.clone(),
            choice: None,
        }],
        Some((_, parent)) => select(elements, parent, root)
            .iter()
            .flat_map(|pi| children(elements, segs, pi))
            .collect(),
    }
}

/// The values under `parent` of the element whose id is `segs`: by name
/// (a choice by any type suffix), filtered to the slice if it is one.
fn children<'a>(elements: &[&Value], segs: &[&str], parent: &Inst<'a>) -> Vec<Inst<'a>> {
    let Some(last) = segs.last() else {
        return vec![];
    };
    let (name, slice) = match last.split_once(':') {
        Some((n, s)) => (n, Some(s)),
        None => (*last, None),
    };
    let Some(obj) = parent.value.as_object() else {
        return vec![];
    };
    let (bare, found) = match name.strip_suffix("[x]") {
        Some(base) => (
            base,
            obj.iter().find_map(|(k, v)| {
                let suffix = k.strip_prefix(base)?;
                suffix
                    .starts_with(|c: char| c.is_ascii_uppercase())
                    .then_some((v, Some(suffix)))
            }),
        ),
        None => (name, obj.get(name).map(|v| (v, None))),
    };
    let Some((value, choice)) = found else {
        return vec![];
    };
    let at = |i: Option<usize>| match i {
        Some(i) => format!("{}.{bare}[{i}]", parent.expr),
        None => format!("{}.{bare}", parent.expr),
    };
    let mut out: Vec<Inst<'a>> = match value {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_null())
            .map(|(i, v)| Inst {
                value: v,
                expr: at(Some(i)),
                choice,
            })
            .collect(),
        Value::Null => vec![],
        v => vec![Inst {
            value: v,
            expr: at(None),
            choice,
        }],
    };
    if slice.is_some() {
        let slice_id = segs.join(".");
        let base_id = format!("{}.{name}", segs[..segs.len() - 1].join("."));
        out.retain(|inst| in_slice(elements, &base_id, &slice_id, inst.value));
    }
    out
}

fn by_id<'e>(elements: &[&'e Value], id: &str) -> Option<&'e Value> {
    elements.iter().copied().find(|e| e["id"] == id)
}

/// The fixed[x] or pattern[x] value an element states.
fn fixed_or_pattern(e: &Value) -> Option<(&Value, bool)> {
    e.as_object()?.iter().find_map(|(k, v)| {
        if k.starts_with("fixed") {
            Some((v, true))
        } else if k.starts_with("pattern") {
            Some((v, false))
        } else {
            None
        }
    })
}

/// Whether `value` belongs to the slice `slice_id` of the element sliced at
/// `base_id`, by the slicing's discriminators (value and pattern).
fn in_slice(elements: &[&Value], base_id: &str, slice_id: &str, value: &Value) -> bool {
    let Some(slicing) = by_id(elements, base_id).map(|e| &e["slicing"]) else {
        return true;
    };
    let Some(slice) = by_id(elements, slice_id) else {
        return true;
    };
    list(&slicing["discriminator"]).into_iter().all(|d| {
        let path = d["path"].as_str().unwrap_or("$this");
        let expected = if path == "$this" {
            fixed_or_pattern(slice).map(|(v, _)| v.clone())
        } else if let Some(url) = (path == "url")
            .then(|| {
                list(&slice["type"])
                    .first()
                    .map(|t| t["profile"][0].clone())
            })
            .flatten()
            .filter(Value::is_string)
        {
            Some(url)
        } else {
            by_id(elements, &format!("{slice_id}.{path}"))
                .and_then(fixed_or_pattern)
                .map(|(v, _)| v.clone())
        };
        let Some(expected) = expected else {
            return true;
        };
        let mut actual = vec![value];
        if path != "$this" {
            for step in path.split('.') {
                actual = actual.into_iter().filter_map(|v| v.get(step)).collect();
            }
        }
        actual.iter().any(|a| contains(a, &expected))
    })
}

/// Pattern matching: every member of `pattern` is in `value`; each item of
/// a pattern array matches some item of the value's array.
fn contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| contains(vv, pv))),
        (Value::Array(v), Value::Array(p)) => {
            p.iter().all(|pi| v.iter().any(|vi| contains(vi, pi)))
        }
        (v, p) => v == p,
    }
}

fn cardinality(
    e: &Value,
    seg: &str,
    parent: &Inst,
    n: usize,
    profile: &str,
    issues: &mut Vec<Issue>,
) {
    let (name, slice) = match seg.split_once(':') {
        Some((n, s)) => (n.trim_end_matches("[x]"), Some(s)),
        None => (seg.trim_end_matches("[x]"), None),
    };
    let what = match slice {
        Some(s) => format!("slice '{s}' of {name}"),
        None => name.to_string(),
    };
    let expr = format!("{}.{name}", parent.expr);
    let min = e["min"].as_u64().unwrap_or(0);
    if (n as u64) < min {
        issues.push(error(
            expr.clone(),
            format!("{what}: at least {min} required by profile {profile}, found {n}"),
        ));
    }
    if let Some(max) = e["max"].as_str().and_then(|m| m.parse::<u64>().ok()) {
        if n as u64 > max {
            issues.push(error(
                expr,
                format!("{what}: at most {max} allowed by profile {profile}, found {n}"),
            ));
        }
    }
}

/// fixed/pattern, choice type, binding and reference target of one value.
fn check_value(p: &Profiles, e: &Value, inst: &Inst, profile: &str, issues: &mut Vec<Issue>) {
    if e["id"].as_str().is_some_and(|id| !id.contains('.')) {
        return;
    }
    if let Some((want, fixed)) = fixed_or_pattern(e) {
        let ok = if fixed {
            inst.value == want
        } else {
            contains(inst.value, want)
        };
        if !ok {
            issues.push(error(
                inst.expr.clone(),
                format!(
                    "must {} {want} (profile {profile})",
                    if fixed { "be" } else { "match the pattern" }
                ),
            ));
        }
    }
    let types: Vec<&str> = list(&e["type"])
        .into_iter()
        .filter_map(|t| t["code"].as_str())
        .collect();
    if let Some(suffix) = inst.choice {
        let matches = |t: &&str| {
            let mut c = t.chars();
            c.next()
                .is_some_and(|f| suffix.starts_with(f.to_ascii_uppercase()))
                && suffix.get(1..) == Some(c.as_str())
        };
        if !types.is_empty() && !types.iter().any(matches) {
            issues.push(error(
                inst.expr.clone(),
                format!(
                    "must be of type {} (profile {profile}), not {suffix}",
                    types.join(" or ")
                ),
            ));
        }
    }
    if e["binding"]["strength"] == "required" {
        if let Some(vs) = e["binding"]["valueSet"].as_str() {
            binding(p, vs, inst, issues);
        }
    }
    let targets: Vec<String> = list(&e["type"])
        .into_iter()
        .flat_map(|t| list(&t["targetProfile"]))
        .filter_map(Value::as_str)
        .filter_map(|u| match u.strip_prefix(CORE_SD) {
            Some(t) => Some(t.to_string()),
            None => p
                .resource(u)
                .and_then(|sd| sd["type"].as_str())
                .map(String::from),
        })
        .collect();
    if !targets.is_empty() {
        if let Some(found) = inst.value["reference"].as_str().and_then(local_type) {
            if !targets.iter().any(|t| t == found) {
                issues.push(error(
                    format!("{}.reference", inst.expr),
                    format!(
                        "must refer to {} (profile {profile}), not {found}",
                        targets.join(" or ")
                    ),
                ));
            }
        }
    }
}

/// The type of a local reference `Type/id` or `Type/id/_history/v`.
fn local_type(reference: &str) -> Option<&str> {
    let segs: Vec<&str> = reference.split('/').collect();
    let ok = match segs.as_slice() {
        [_, _] => true,
        [_, _, h, _] => *h == "_history",
        _ => false,
    };
    let t = segs[0];
    (ok && t.starts_with(|c: char| c.is_ascii_uppercase())
        && t.chars().all(|c| c.is_ascii_alphanumeric()))
    .then_some(t)
}

/// A required binding to one of our value sets: a code must be in it; a
/// Coding must be in it; a CodeableConcept needs at least one coding in
/// it, and none of the value set's systems with a code outside it.
fn binding(p: &Profiles, vs_url: &str, inst: &Inst, issues: &mut Vec<Issue>) {
    let Some(vs) = p.value_sets.get(vs_url) else {
        return;
    };
    let vs_name = short(vs_url);
    let in_vs = |s: &str, c: &str| vs.codes.contains(&(s.to_string(), c.to_string()));
    let ours = |s: &str| vs.codes.iter().any(|(sys, _)| sys == s);
    let v = inst.value;
    if let Some(code) = v.as_str() {
        if !vs.codes.iter().any(|(_, c)| c == code) {
            issues.push(error(
                inst.expr.clone(),
                format!("code '{code}' is not in the value set {vs_name} (required binding)"),
            ));
        }
        return;
    }
    let coding_of = |c: &Value| {
        (
            c["system"].as_str().unwrap_or_default().to_string(),
            c["code"].as_str().unwrap_or_default().to_string(),
        )
    };
    if v.get("coding").is_none() && v.get("code").is_some() {
        let (s, c) = coding_of(v);
        if !in_vs(&s, &c) {
            issues.push(error(
                inst.expr.clone(),
                format!("{s}#{c} is not in the value set {vs_name} (required binding)"),
            ));
        }
        return;
    }
    let codings = list(&v["coding"]);
    if !codings.iter().any(|c| {
        let (s, code) = coding_of(c);
        in_vs(&s, &code)
    }) {
        issues.push(error(
            inst.expr.clone(),
            format!("no coding is in the value set {vs_name} (required binding)"),
        ));
    }
    for (i, c) in codings.iter().enumerate() {
        let (s, code) = coding_of(c);
        if ours(&s) && !in_vs(&s, &code) {
            issues.push(error(
                format!("{}.coding[{i}]", inst.expr),
                format!("code '{code}' of {s} is not in the value set {vs_name}"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn referral() -> Value {
        json!({"resourceType": "ServiceRequest", "identifier": [{"value": "r1"}],
            "status": "active", "intent": "order",
            "code": {"coding": [{"system": SNOMED, "code": SP_REFERRAL_CODE}]},
            "subject": {"reference": "Patient/p1"}, "authoredOn": "2026-01-01",
            "requester": {"reference": "Organization/o1"},
            "reasonCode": [{"coding": [{"system": format!("{CANONICAL_BASE}/CodeSystem/sp-need"),
                "code": "housing"}]}]})
    }

    fn exprs(issues: &[Issue]) -> Vec<&str> {
        issues.iter().map(|i| i.expression.as_str()).collect()
    }

    #[test]
    fn a_valid_referral_has_no_issues_and_each_problem_is_named() {
        let p = super::super::load().expect("profiles");
        assert_eq!(validate(p, &referral()), vec![]);

        let mut r = referral();
        r["reasonCode"][0]["coding"][0]["code"] = json!("astrology");
        r["requester"] = json!({"reference": "Patient/p1"});
        r.as_object_mut().map(|o| o.remove("authoredOn"));
        let issues = validate(p, &r);
        let e = exprs(&issues);
        assert!(e.contains(&"ServiceRequest.reasonCode[0]"), "{issues:?}");
        assert!(
            e.contains(&"ServiceRequest.reasonCode[0].coding[0]"),
            "{issues:?}"
        );
        assert!(
            e.contains(&"ServiceRequest.requester.reference"),
            "{issues:?}"
        );
        assert!(e.contains(&"ServiceRequest.authoredOn"), "{issues:?}");
    }

    #[test]
    fn slices_extensions_and_invariants() {
        let p = super::super::load().expect("profiles");
        let sd = |id: &str| format!("{CANONICAL_BASE}/StructureDefinition/{id}");
        let role = json!({"resourceType": "PractitionerRole",
            "meta": {"profile": [sd("sp-link-worker-role")]},
            "extension": [{"url": sd("sp-employment-model"),
                "valueCoding": {"system": format!("{CANONICAL_BASE}/CodeSystem/sp-employment-model"),
                    "code": "nope"}}],
            "practitioner": {"reference": "Practitioner/x"},
            "organization": {"reference": "Organization/o"},
            "code": [{"coding": [{"system": format!("{CANONICAL_BASE}/CodeSystem/sp-role"), "code": "bad"}]}]});
        let issues = validate(p, &role);
        let msgs: Vec<String> = issues
            .iter()
            .map(|i| format!("{} {}", i.expression, i.message))
            .collect();
        let has = |s: &str| msgs.iter().any(|m| m.contains(s));
        assert!(
            has("PractitionerRole.extension slice 'servesPcn'"),
            "{msgs:#?}"
        );
        assert!(has("sp-link-worker-role-2"), "{msgs:#?}");
        assert!(has("PractitionerRole.extension[0].value"), "{msgs:#?}");
        assert!(has("PractitionerRole.code[0].coding[0]"), "{msgs:#?}");

        let task = json!({"resourceType": "Task", "status": "rejected", "intent": "plan",
            "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
            "focus": {"reference": "ServiceRequest/s"}, "for": {"reference": "Patient/p"},
            "requester": {"reference": "Organization/o"}, "owner": {"reference": "Organization/v"}});
        let issues = validate(p, &task);
        assert!(
            issues
                .iter()
                .any(|i| i.invariant && i.message.starts_with("sp-task-1")),
            "{issues:?}"
        );
        assert!(exprs(&issues).contains(&"Task.intent"), "{issues:?}");

        let unknown = json!({"resourceType": "Task", "meta": {"profile": [sd("sp-nothing")]}});
        assert_eq!(exprs(&validate(p, &unknown)), vec!["Task.meta.profile[0]"]);
    }

    #[test]
    fn a_warning_invariant_does_not_block_a_write() {
        let p = super::super::load().expect("profiles");
        let org = json!({"resourceType": "Organization",
            "meta": {"profile": [format!("{CANONICAL_BASE}/StructureDefinition/sp-organisation")]},
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "A1"}],
            "type": [{"coding": [{"system": format!("{CANONICAL_BASE}/CodeSystem/sp-organisation-kind"),
                "code": "gp-practice"}]}],
            "name": "Practice"});
        let issues = validate(p, &org);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].severity, Severity::Warning);
        assert!(
            issues[0].message.starts_with("sp-organisation-3"),
            "{issues:?}"
        );
        assert!(super::super::check("Organization", &org).is_ok());

        // Without its ODS code, the error invariant and the slice's value fire.
        let mut no_ods = org.clone();
        no_ods["identifier"][0]
            .as_object_mut()
            .map(|o| o.remove("value"));
        let issues = validate(p, &no_ods);
        let msgs: Vec<String> = issues
            .iter()
            .map(|i| format!("{} {}", i.expression, i.message))
            .collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("Organization.identifier[0].value ")),
            "{msgs:#?}"
        );
        assert!(super::super::check("Organization", &no_ods).is_err());
        let mut no_id = org.clone();
        no_id.as_object_mut().map(|o| o.remove("identifier"));
        let issues = validate(p, &no_id);
        assert!(
            issues
                .iter()
                .any(|i| i.invariant && i.message.starts_with("sp-organisation-2")),
            "{issues:?}"
        );
    }

    #[test]
    fn every_example_validates_clean() {
        let p = super::super::load().expect("profiles");
        let bundle: Value = serde_json::from_str(include_str!(
            "../../../fhir-profiles/examples/demo-pcn.json"
        ))
        .expect("demo bundle");
        for e in list(&bundle["entry"]) {
            let issues = validate(p, &e["resource"]);
            assert!(issues.is_empty(), "{}: {issues:#?}", e["fullUrl"]);
        }
    }
}
