//! The social prescribing domain as FHIR data: our CodeSystems, ValueSets,
//! ConceptMaps and StructureDefinitions, embedded from `fhir-profiles/` at
//! build time and loaded once at start-up. A file that is not what its
//! folder and name say, or that names a code system, value set, code or
//! profile of ours that does not exist, stops start-up with a message
//! naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::Value;

use crate::fhir::outcome::{FhirError, FhirResult, IssueType, Problem};

pub mod invariant;
pub mod validate;

use invariant::Invariant;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/conformance.rs"));
}

/// The canonical base of every conformance resource of ours.
pub const CANONICAL_BASE: &str = "https://sp-hub.example/fhir";

/// A CodeSystem of ours: its codes and their displays.
#[derive(Debug)]
pub struct CodeSystem {
    pub codes: BTreeMap<String, String>,
}

/// A ValueSet of ours: (system, code) pairs it includes.
#[derive(Debug)]
pub struct ValueSet {
    pub codes: BTreeSet<(String, String)>,
}

pub struct Profiles {
    /// Canonical URL → resource, for every file.
    resources: BTreeMap<String, Value>,
    code_systems: BTreeMap<String, CodeSystem>,
    value_sets: BTreeMap<String, ValueSet>,
    /// (StructureDefinition url, constraint key) → the parsed invariant.
    invariants: BTreeMap<(String, String), Invariant>,
}

static PROFILES: LazyLock<Result<Profiles, String>> = LazyLock::new(|| {
    let files: Vec<(String, String)> = embedded::FILES
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
    Profiles::from_files(&files)
});

/// Loads the embedded profiles once; start-up calls this so a bad file
/// stops it.
pub fn load() -> Result<&'static Profiles, String> {
    PROFILES.as_ref().map_err(Clone::clone)
}

impl Profiles {
    /// Reads `(folder/file name, contents)` pairs and checks that they hold
    /// together.
    pub fn from_files(files: &[(String, String)]) -> Result<Profiles, String> {
        let mut p = Profiles {
            resources: BTreeMap::new(),
            code_systems: BTreeMap::new(),
            value_sets: BTreeMap::new(),
            invariants: BTreeMap::new(),
        };
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        for (name, text) in files {
            let at = |e: String| format!("fhir-profiles/{name}: {e}");
            let v: Value = serde_json::from_str(text).map_err(|e| at(e.to_string()))?;
            let (folder, file) = name.split_once('/').unwrap_or(("", name));
            let id = file.strip_suffix(".json").unwrap_or(file);
            let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default();
            if field("resourceType") != folder {
                return Err(at(format!(
                    "resourceType is '{}', not {folder}",
                    field("resourceType")
                )));
            }
            if field("id") != id {
                return Err(at(format!(
                    "id is '{}', not the file name '{id}'",
                    field("id")
                )));
            }
            let url = format!("{CANONICAL_BASE}/{folder}/{id}");
            if field("url") != url {
                return Err(at(format!("url is '{}', not {url}", field("url"))));
            }
            match folder {
                "CodeSystem" => {
                    let codes = concepts(&v);
                    if codes.is_empty() {
                        return Err(at("defines no concepts".into()));
                    }
                    p.code_systems.insert(url.clone(), CodeSystem { codes });
                }
                "ValueSet" => {}
                "ConceptMap" | "StructureDefinition" => {}
                _ => return Err(at(format!("unexpected folder '{folder}'"))),
            }
            origin.insert(url.clone(), name.clone());
            p.resources.insert(url, v);
        }
        // Value sets after every code system is known.
        for (url, v) in &p.resources {
            if v["resourceType"] == "ValueSet" {
                let vs = p
                    .value_set_codes(v)
                    .map_err(|e| format!("fhir-profiles/{}: {e}", origin[url]))?;
                p.value_sets.insert(url.clone(), vs);
            }
        }
        for (url, v) in &p.resources {
            let at = |e: String| format!("fhir-profiles/{}: {e}", origin[url]);
            match v["resourceType"].as_str() {
                Some("ConceptMap") => p.check_concept_map(v).map_err(at)?,
                Some("StructureDefinition") => p.check_structure(v).map_err(at)?,
                _ => {}
            }
        }
        // Every invariant parses now, so one outside the subset stops start-up.
        let mut invariants = BTreeMap::new();
        for (url, v) in &p.resources {
            if v["resourceType"] != "StructureDefinition" {
                continue;
            }
            for element in list(&v["differential"]["element"]) {
                for c in list(&element["constraint"]) {
                    let key = c["key"].as_str().unwrap_or_default();
                    let at = |e: String| {
                        format!("fhir-profiles/{}: constraint '{key}': {e}", origin[url])
                    };
                    let expr = c["expression"]
                        .as_str()
                        .ok_or_else(|| at("has no expression".into()))?;
                    let inv = Invariant::parse(expr).map_err(at)?;
                    if invariants
                        .insert((url.clone(), key.to_string()), inv)
                        .is_some()
                    {
                        return Err(at("the key is used twice".into()));
                    }
                }
            }
        }
        p.invariants = invariants;
        Ok(p)
    }

    /// The conformance resource with this canonical URL (any version).
    pub fn resource(&self, url: &str) -> Option<&Value> {
        self.resources.get(url.split('|').next().unwrap_or(url))
    }

    /// Every ConceptMap of ours (`$translate` reads them).
    pub fn concept_maps(&self) -> impl Iterator<Item = &Value> {
        self.resources
            .values()
            .filter(|v| v["resourceType"] == "ConceptMap")
    }

    /// Every StructureDefinition that constrains `res_type`, by URL.
    pub fn profiles_of<'a>(&'a self, res_type: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.resources.iter().filter_map(move |(url, v)| {
            (v["resourceType"] == "StructureDefinition"
                && v["derivation"] == "constraint"
                && v["kind"] == "resource"
                && v["type"] == res_type)
                .then_some(url.as_str())
        })
    }

    /// Whether `system|code` is in the ValueSet at `url`; `None` when the
    /// value set is not ours.
    pub fn in_value_set(&self, url: &str, system: &str, code: &str) -> Option<bool> {
        self.value_sets
            .get(url.split('|').next().unwrap_or(url))
            .map(|vs| vs.codes.contains(&(system.to_string(), code.to_string())))
    }

    /// The display of a code in a CodeSystem of ours.
    pub fn display(&self, system: &str, code: &str) -> Option<&str> {
        self.code_systems
            .get(system)
            .and_then(|cs| cs.codes.get(code))
            .map(String::as_str)
    }

    /// A system of ours must be known and hold the code.
    fn check_code(&self, system: &str, code: &str) -> Result<(), String> {
        if !system.starts_with(CANONICAL_BASE) {
            return Ok(());
        }
        let cs = self
            .code_systems
            .get(system)
            .ok_or_else(|| format!("names the code system {system}, which is not defined"))?;
        if cs.codes.contains_key(code) {
            Ok(())
        } else {
            Err(format!("code '{code}' is not defined in {system}"))
        }
    }

    fn value_set_codes(&self, v: &Value) -> Result<ValueSet, String> {
        let mut codes = BTreeSet::new();
        for include in list(&v["compose"]["include"]) {
            let system = include["system"].as_str().unwrap_or_default();
            let listed = list(&include["concept"]);
            if listed.is_empty() {
                // The whole code system: only ours can be listed out.
                let cs = self
                    .code_systems
                    .get(system)
                    .ok_or_else(|| format!("includes all of {system}, which is not one of ours"))?;
                codes.extend(cs.codes.keys().map(|c| (system.to_string(), c.clone())));
            }
            for c in listed {
                let code = c["code"].as_str().unwrap_or_default();
                self.check_code(system, code)?;
                codes.insert((system.to_string(), code.to_string()));
            }
        }
        if codes.is_empty() {
            return Err("includes no codes".into());
        }
        Ok(ValueSet { codes })
    }

    fn check_concept_map(&self, v: &Value) -> Result<(), String> {
        for group in list(&v["group"]) {
            let source = group["source"].as_str().unwrap_or_default();
            let target = group["target"].as_str().unwrap_or_default();
            for element in list(&group["element"]) {
                self.check_code(source, element["code"].as_str().unwrap_or_default())?;
                for t in list(&element["target"]) {
                    if let Some(code) = t["code"].as_str() {
                        self.check_code(target, code)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every value set a binding names, and every profile an element's type
    /// names, that is ours must exist.
    fn check_structure(&self, v: &Value) -> Result<(), String> {
        for element in list(&v["differential"]["element"]) {
            let path = element["path"].as_str().unwrap_or_default();
            if let Some(vs) = element["binding"]["valueSet"].as_str() {
                if vs.starts_with(CANONICAL_BASE) && !self.value_sets.contains_key(vs) {
                    return Err(format!("{path} is bound to {vs}, which is not defined"));
                }
            }
            for t in list(&element["type"]) {
                let named = list(&t["profile"])
                    .into_iter()
                    .chain(list(&t["targetProfile"]));
                for p in named.filter_map(Value::as_str) {
                    if p.starts_with(CANONICAL_BASE) && !self.resources.contains_key(p) {
                        return Err(format!(
                            "{path} names the profile {p}, which is not defined"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Validates a resource about to be written against the profiles of ours
/// that apply to it: 422 listing every error, or Ok.
pub fn check(_res_type: &str, resource: &Value) -> FhirResult<()> {
    let p = load().map_err(FhirError::Internal)?;
    let problems: Vec<Problem> = validate::validate(p, resource)
        .into_iter()
        .filter(|i| i.severity == validate::Severity::Error)
        .map(|i| Problem {
            code: if i.invariant {
                IssueType::Invariant
            } else {
                IssueType::Processing
            },
            diagnostics: i.message,
            expression: i.expression,
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FhirError::Invalidated(problems))
    }
}

/// The OperationOutcome `$validate` returns for `resource` as a
/// `res_type`: its structural error, or every profile issue (also against
/// `profile`), or one informational "no issues".
pub fn validation_outcome(res_type: &str, resource: &Value, profile: Option<&str>) -> Value {
    if let Err(e) = crate::fhir::resource::check_structure(resource, res_type) {
        return e.to_outcome();
    }
    let p = match load() {
        Ok(p) => p,
        Err(e) => return FhirError::Internal(e).to_outcome(),
    };
    let issues: Vec<Value> = validate::validate_with(p, resource, profile)
        .into_iter()
        .map(|i| {
            serde_json::json!({
                "severity": if i.severity == validate::Severity::Error { "error" } else { "warning" },
                "code": if i.invariant { "invariant" } else { "processing" },
                "diagnostics": i.message,
                "expression": [i.expression],
            })
        })
        .collect();
    if issues.is_empty() {
        return crate::fhir::outcome::outcome(
            "information",
            IssueType::Informational,
            "no issues",
            None,
        );
    }
    serde_json::json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// The elements of a JSON array, or none.
fn list(v: &Value) -> Vec<&Value> {
    v.as_array().map(|a| a.iter().collect()).unwrap_or_default()
}

/// code → display of a CodeSystem's concepts, nested ones included.
fn concepts(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<&Value> = list(&v["concept"]);
    while let Some(c) = stack.pop() {
        if let Some(code) = c["code"].as_str() {
            let display = c["display"].as_str().unwrap_or_default();
            out.insert(code.to_string(), display.to_string());
        }
        stack.extend(list(&c["concept"]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded() -> Vec<(String, String)> {
        embedded::FILES
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_profiles_load() {
        let p = load().expect("embedded profiles load");
        let need = format!("{CANONICAL_BASE}/CodeSystem/sp-need");
        assert_eq!(
            p.in_value_set(
                &format!("{CANONICAL_BASE}/ValueSet/sp-need"),
                &need,
                "housing"
            ),
            Some(true)
        );
        assert_eq!(
            p.in_value_set(
                &format!("{CANONICAL_BASE}/ValueSet/sp-need"),
                &need,
                "astrology"
            ),
            Some(false)
        );
        assert!(p
            .profiles_of("Task")
            .any(|u| u == format!("{CANONICAL_BASE}/StructureDefinition/sp-task")));
    }

    #[test]
    fn a_broken_file_is_named() {
        let mut files = embedded();
        let i = files
            .iter()
            .position(|(n, _)| n == "ValueSet/sp-need.json")
            .expect("sp-need value set");
        files[i].1 = files[i].1.replace("\"housing\"", "\"astrology\"");
        let err = Profiles::from_files(&files).err().expect("refused");
        assert!(err.contains("fhir-profiles/ValueSet/sp-need.json"), "{err}");
        assert!(err.contains("astrology"), "{err}");

        let mut files = embedded();
        files.push((
            "CodeSystem/wrong.json".into(),
            "{\"resourceType\": \"ValueSet\"}".into(),
        ));
        let err = Profiles::from_files(&files).err().expect("refused");
        assert!(err.contains("fhir-profiles/CodeSystem/wrong.json"), "{err}");

        let mut files = embedded();
        files.push(("StructureDefinition/x.json".into(), "not json".into()));
        let err = Profiles::from_files(&files).err().expect("refused");
        assert!(
            err.contains("fhir-profiles/StructureDefinition/x.json"),
            "{err}"
        );
    }

    #[test]
    fn an_invariant_outside_the_subset_stops_loading_naming_file_and_key() {
        let mut files = embedded();
        let i = files
            .iter()
            .position(|(n, _)| n == "StructureDefinition/sp-task.json")
            .expect("sp-task");
        files[i].1 = files[i]
            .1
            .replace("statusReason.exists()", "statusReason.first().exists()");
        let err = Profiles::from_files(&files).err().expect("refused");
        assert!(
            err.contains("fhir-profiles/StructureDefinition/sp-task.json"),
            "{err}"
        );
        assert!(
            err.contains("'sp-task-1'") && err.contains("'first'"),
            "{err}"
        );
    }

    #[test]
    fn a_binding_to_a_missing_value_set_is_named() {
        let mut files = embedded();
        let i = files
            .iter()
            .position(|(n, _)| n == "StructureDefinition/sp-referral.json")
            .expect("sp-referral");
        files[i].1 = files[i]
            .1
            .replace("ValueSet/sp-need\"", "ValueSet/sp-wants\"");
        let err = Profiles::from_files(&files).err().expect("refused");
        assert!(err.contains("sp-referral.json"), "{err}");
        assert!(err.contains("sp-wants"), "{err}");
    }
}
