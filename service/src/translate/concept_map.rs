//! `$translate` over one ConceptMap, with R4 semantics, as pure functions
//! over its JSON: the request's parameters (from a query string or a
//! Parameters body), the matches one map gives, and the Parameters answer.
//!
//! R4 reads `target.equivalence` from target to source ("the target is
//! wider than the source"). A reverse translation swaps source and target,
//! so it swaps `wider`/`narrower` and `subsumes`/`specializes` too.
//! `group.unmapped` is not used: our maps list what has no match as a
//! target with equivalence `unmatched`.

use serde_json::{json, Value};

use crate::fhir::outcome::{FhirError, FhirResult};

/// The input parameters of `$translate` the hub uses.
#[derive(Debug, Default, Clone)]
pub struct Request {
    /// The map's canonical URL (`url`).
    pub url: Option<String>,
    /// A map given inline (`conceptMap`, POST only).
    pub concept_map: Option<Value>,
    code: Option<String>,
    system: Option<String>,
    coding: Option<(String, String)>,
    codeable: Option<Vec<(String, String)>>,
    /// The value set the answer should be in (`target`).
    pub target: Option<String>,
    /// The code system the answer should be in (`targetsystem`).
    pub target_system: Option<String>,
    /// Target code → source code (`reverse`).
    pub reverse: bool,
}

/// One translation of a code.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    pub equivalence: String,
    /// `None` for `unmatched` (a map saying there is no match).
    pub concept: Option<Coding>,
    /// The canonical URL of the map the match came from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// Equivalences that are not a usable translation.
const NO_MATCH: &[&str] = &["unmatched", "disjoint"];

fn bad(message: impl Into<String>, parameter: &str) -> FhirError {
    FhirError::invalid_at(message, parameter)
}

impl Request {
    /// A reverse translation whose answers are in `system`.
    pub fn back_to(system: &str) -> Request {
        Request {
            reverse: true,
            target_system: Some(system.to_string()),
            ..Request::default()
        }
    }

    /// From a query string (GET). A `coding` is written `system|code`.
    pub fn from_query(pairs: &[(String, String)]) -> FhirResult<Request> {
        let mut r = Request::default();
        for (name, value) in pairs {
            crate::search::check_text(name, value)?;
            match name.as_str() {
                "url" => r.url = Some(value.clone()),
                "code" => r.code = Some(value.clone()),
                "system" => r.system = Some(value.clone()),
                "coding" => {
                    let (s, c) = value.split_once('|').ok_or_else(|| {
                        bad(
                            format!("coding '{value}' is not written system|code"),
                            "coding",
                        )
                    })?;
                    r.coding = Some((s.to_string(), c.to_string()));
                }
                "target" => r.target = Some(value.clone()),
                "targetsystem" => r.target_system = Some(value.clone()),
                "reverse" => r.reverse = parse_bool(value)?,
                _ => {}
            }
        }
        Ok(r)
    }

    /// From a Parameters body (POST).
    pub fn from_parameters(v: &Value) -> FhirResult<Request> {
        if v["resourceType"] != "Parameters" {
            return Err(bad(
                "the body of POST $translate is a Parameters resource",
                "Parameters",
            ));
        }
        let mut r = Request::default();
        for (i, p) in v["parameter"].as_array().into_iter().flatten().enumerate() {
            let at = format!("Parameters.parameter[{i}]");
            let text = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| p[*k].as_str())
                    .map(String::from)
                    .ok_or_else(|| bad(format!("{at} has no value of the expected type"), &at))
            };
            match p["name"].as_str() {
                Some("url") => r.url = Some(text(&["valueUri", "valueCanonical", "valueString"])?),
                Some("code") => r.code = Some(text(&["valueCode", "valueString"])?),
                Some("system") => r.system = Some(text(&["valueUri", "valueString"])?),
                Some("target") => {
                    r.target = Some(text(&["valueUri", "valueCanonical", "valueString"])?)
                }
                Some("targetsystem") => r.target_system = Some(text(&["valueUri", "valueString"])?),
                Some("reverse") => {
                    r.reverse = p["valueBoolean"]
                        .as_bool()
                        .ok_or_else(|| bad(format!("{at} (reverse) needs valueBoolean"), &at))?
                }
                Some("coding") => {
                    r.coding = Some(coding(&p["valueCoding"]).ok_or_else(|| {
                        bad(
                            format!("{at} (coding) needs a valueCoding with system and code"),
                            "coding",
                        )
                    })?)
                }
                Some("codeableConcept") => {
                    let codings: Vec<(String, String)> = p["valueCodeableConcept"]["coding"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(coding)
                        .collect();
                    if codings.is_empty() {
                        return Err(bad(
                            format!("{at} (codeableConcept) has no coding with system and code"),
                            "codeableConcept",
                        ));
                    }
                    r.codeable = Some(codings);
                }
                Some("conceptMap") => {
                    let map = p
                        .get("resource")
                        .filter(|m| m["resourceType"] == "ConceptMap");
                    r.concept_map = Some(map.cloned().ok_or_else(|| {
                        bad(
                            format!("{at} (conceptMap) needs a ConceptMap resource"),
                            "conceptMap",
                        )
                    })?);
                }
                _ => {}
            }
        }
        Ok(r)
    }

    /// The (system, code) pairs to translate: exactly one of `code` (with
    /// `system`), `coding` or `codeableConcept`.
    pub fn codings(&self) -> FhirResult<Vec<(String, String)>> {
        let given = [
            self.code.is_some(),
            self.coding.is_some(),
            self.codeable.is_some(),
        ];
        match given.iter().filter(|g| **g).count() {
            0 => Err(bad(
                "$translate needs the code to translate: code and system, coding, or codeableConcept",
                "code",
            )),
            1 => Ok(match (&self.code, &self.coding, &self.codeable) {
                (Some(code), _, _) => {
                    let system = self.system.clone().ok_or_else(|| {
                        bad(
                            format!("code '{code}' is given without the system it is from"),
                            "system",
                        )
                    })?;
                    vec![(system, code.clone())]
                }
                (_, Some(c), _) => vec![c.clone()],
                (_, _, Some(cc)) => cc.clone(),
                _ => vec![],
            }),
            _ => Err(bad(
                "give only one of code, coding and codeableConcept",
                "code",
            )),
        }
    }
}

fn parse_bool(v: &str) -> FhirResult<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(
            format!("reverse '{v}' is not true or false"),
            "reverse",
        )),
    }
}

fn coding(v: &Value) -> Option<(String, String)> {
    Some((
        v["system"].as_str()?.to_string(),
        v["code"].as_str()?.to_string(),
    ))
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Whether `map` translates into the `target` value set asked for (none
/// asked: any map). Reversed, the map's source scope is where the answer is.
pub fn serves_target(map: &Value, req: &Request) -> bool {
    let Some(target) = &req.target else {
        return true;
    };
    let scope = if req.reverse { "source" } else { "target" };
    ["Canonical", "Uri"]
        .iter()
        .any(|k| map[format!("{scope}{k}")].as_str() == Some(target.as_str()))
}

/// The matches `map` gives for `system|code`.
pub fn translate(map: &Value, req: &Request, system: &str, code: &str) -> Vec<Match> {
    let source = text(&map["url"]);
    let mut out = vec![];
    for group in list(&map["group"]) {
        let (from, to) = if req.reverse {
            (text(&group["target"]), text(&group["source"]))
        } else {
            (text(&group["source"]), text(&group["target"]))
        };
        if from != system || req.target_system.as_ref().is_some_and(|t| *t != to) {
            continue;
        }
        for element in list(&group["element"]) {
            for target in list(&element["target"]) {
                let equivalence = target["equivalence"].as_str().unwrap_or("equivalent");
                let (hit, concept_code, display) = if req.reverse {
                    (
                        target["code"] == code,
                        element["code"].as_str(),
                        element["display"].as_str(),
                    )
                } else {
                    (
                        element["code"] == code,
                        target["code"].as_str(),
                        target["display"].as_str(),
                    )
                };
                if !hit {
                    continue;
                }
                out.push(Match {
                    equivalence: if req.reverse {
                        reversed(equivalence)
                    } else {
                        equivalence
                    }
                    .to_string(),
                    concept: concept_code.map(|c| Coding {
                        system: to.clone(),
                        code: c.to_string(),
                        display: display.map(String::from),
                    }),
                    source: source.clone(),
                });
            }
        }
    }
    out
}

fn reversed(equivalence: &str) -> &str {
    match equivalence {
        "wider" => "narrower",
        "narrower" => "wider",
        "subsumes" => "specializes",
        "specializes" => "subsumes",
        other => other,
    }
}

/// Whether a match is a usable translation (R4 `result`).
pub fn acceptable(m: &Match) -> bool {
    m.concept.is_some() && !NO_MATCH.contains(&m.equivalence.as_str())
}

/// The R4 output: `result`, a `message` when there is no usable match,
/// and one `match` per translation found.
pub fn parameters(codings: &[(String, String)], matches: &[Match]) -> Value {
    let result = matches.iter().any(acceptable);
    let mut parameter = vec![json!({"name": "result", "valueBoolean": result})];
    if !result {
        let asked: Vec<String> = codings.iter().map(|(s, c)| format!("{s}|{c}")).collect();
        parameter.push(json!({
            "name": "message",
            "valueString": if matches.is_empty() {
                format!("no mapping found for {}", asked.join(", "))
            } else {
                format!("the maps say {} has no match", asked.join(", "))
            },
        }));
    }
    for m in matches {
        let mut part = vec![json!({"name": "equivalence", "valueCode": m.equivalence})];
        if let Some(c) = &m.concept {
            let mut coding = json!({"system": c.system, "code": c.code});
            if let Some(d) = &c.display {
                coding["display"] = json!(d);
            }
            part.push(json!({"name": "concept", "valueCoding": coding}));
        }
        part.push(json!({"name": "source", "valueUri": m.source}));
        parameter.push(json!({"name": "match", "part": part}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Value {
        json!({
            "resourceType": "ConceptMap", "url": "https://x/cm",
            "sourceCanonical": "https://x/vs-a", "targetCanonical": "https://x/vs-b",
            "group": [{"source": "a", "target": "b", "element": [
                {"code": "1", "display": "One", "target": [{"code": "x", "display": "Ex", "equivalence": "wider"}]},
                {"code": "2", "target": [{"equivalence": "unmatched"}]}
            ]}]
        })
    }

    fn ask(pairs: &[(&str, &str)]) -> Request {
        let p: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Request::from_query(&p).unwrap()
    }

    #[test]
    fn forward_reverse_and_unmatched() {
        let r = ask(&[("system", "a"), ("code", "1")]);
        let m = translate(&map(), &r, "a", "1");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].equivalence, "wider");
        assert_eq!(m[0].concept.as_ref().unwrap().code, "x");
        assert!(acceptable(&m[0]));

        let r = ask(&[("system", "b"), ("code", "x"), ("reverse", "true")]);
        let m = translate(&map(), &r, "b", "x");
        assert_eq!(m[0].equivalence, "narrower");
        assert_eq!(m[0].concept.as_ref().unwrap().code, "1");

        let r = ask(&[("system", "a"), ("code", "2")]);
        let m = translate(&map(), &r, "a", "2");
        assert_eq!(m[0].equivalence, "unmatched");
        assert!(!acceptable(&m[0]));
        let p = parameters(&[("a".into(), "2".into())], &m);
        assert_eq!(p["parameter"][0]["valueBoolean"], false);
        assert_eq!(p["parameter"][1]["name"], "message");
    }

    #[test]
    fn target_filters_maps_and_systems() {
        assert!(serves_target(&map(), &ask(&[("target", "https://x/vs-b")])));
        assert!(!serves_target(
            &map(),
            &ask(&[("target", "https://x/vs-a")])
        ));
        assert!(serves_target(
            &map(),
            &ask(&[("target", "https://x/vs-a"), ("reverse", "true")])
        ));
        let r = ask(&[("targetsystem", "c")]);
        assert!(translate(&map(), &r, "a", "1").is_empty());
    }

    #[test]
    fn the_code_must_be_named_once_with_its_system() {
        let at = |e: FhirError| e.to_outcome()["issue"][0]["expression"][0].clone();
        assert_eq!(at(ask(&[("code", "1")]).codings().unwrap_err()), "system");
        assert_eq!(at(ask(&[]).codings().unwrap_err()), "code");
        assert!(ask(&[("coding", "a|1"), ("code", "1"), ("system", "a")])
            .codings()
            .is_err());
        assert!(Request::from_query(&[("coding".into(), "nobar".into())]).is_err());
        assert!(Request::from_query(&[("reverse".into(), "yes".into())]).is_err());
    }
}
