//! The search parameters the server knows: FHIR SearchParameter resources
//! embedded from `fhir-profiles/search-parameters/`, each with its FHIRPath
//! expression parsed once at start-up. A file that is not a usable
//! SearchParameter stops start-up with a message naming it.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use super::fhirpath::Expr;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/search_parameters.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Token,
    String,
    Reference,
    Date,
    Uri,
    Number,
    Quantity,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "token" => Kind::Token,
            "string" => Kind::String,
            "reference" => Kind::Reference,
            "date" => Kind::Date,
            "uri" => Kind::Uri,
            "number" => Kind::Number,
            "quantity" => Kind::Quantity,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Token => "token",
            Kind::String => "string",
            Kind::Reference => "reference",
            Kind::Date => "date",
            Kind::Uri => "uri",
            Kind::Number => "number",
            Kind::Quantity => "quantity",
        }
    }
}

#[derive(Debug)]
pub struct Param {
    pub code: String,
    pub url: String,
    pub kind: Kind,
    pub expr: Expr,
    pub description: String,
    /// For reference parameters: the resource types they may point at.
    pub targets: Vec<String>,
}

pub struct Registry {
    /// Resource type (or "Resource" for every type) → code → parameter.
    by_type: BTreeMap<String, BTreeMap<String, Param>>,
}

static REGISTRY: LazyLock<Result<Registry, String>> = LazyLock::new(|| {
    let files: Vec<(String, String)> = embedded::FILES
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
    Registry::from_files(&files)
});

/// Loads the registry once; start-up calls this so a bad file stops it.
pub fn load() -> Result<&'static Registry, String> {
    REGISTRY.as_ref().map_err(Clone::clone)
}

impl Registry {
    pub fn from_files(files: &[(String, String)]) -> Result<Registry, String> {
        let mut by_type: BTreeMap<String, BTreeMap<String, Param>> = BTreeMap::new();
        for (name, text) in files {
            let at = |e: String| format!("fhir-profiles/search-parameters/{name}: {e}");
            let sp: Value = serde_json::from_str(text).map_err(|e| at(e.to_string()))?;
            let field = |k: &str| {
                sp.get(k)
                    .and_then(Value::as_str)
                    .ok_or_else(|| at(format!("no {k}")))
            };
            if field("resourceType")? != "SearchParameter" {
                return Err(at("not a SearchParameter".into()));
            }
            let code = field("code")?;
            let kind_text = field("type")?;
            let kind = Kind::parse(kind_text).ok_or_else(|| {
                at(format!(
                    "search parameter type '{kind_text}' is not supported"
                ))
            })?;
            let expr_text = field("expression")?;
            let expr = Expr::parse(expr_text).map_err(at)?;
            let bases: Vec<&str> = sp
                .get("base")
                .and_then(Value::as_array)
                .map(|b| b.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if bases.is_empty() {
                return Err(at("no base".into()));
            }
            for base in bases {
                let base = if base == "DomainResource" {
                    "Resource"
                } else {
                    base
                };
                if base != "Resource" && !sp_hub_codec::RESOURCE_TYPES.contains(&base) {
                    return Err(at(format!("base '{base}' is not an R4 resource type")));
                }
                let targets = sp
                    .get("target")
                    .and_then(Value::as_array)
                    .map(|t| {
                        t.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                let param = Param {
                    targets,
                    code: code.to_string(),
                    url: field("url")?.to_string(),
                    kind,
                    expr: expr.clone(),
                    description: sp
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                };
                let codes = by_type.entry(base.to_string()).or_default();
                if codes.insert(code.to_string(), param).is_some() {
                    return Err(at(format!("a second parameter '{code}' for {base}")));
                }
            }
        }
        Ok(Registry { by_type })
    }

    /// The parameter `code` as it applies to `res_type`.
    pub fn get(&self, res_type: &str, code: &str) -> Option<&Param> {
        self.by_type
            .get(res_type)
            .and_then(|m| m.get(code))
            .or_else(|| self.by_type.get("Resource").and_then(|m| m.get(code)))
    }

    /// Every parameter that applies to `res_type`, common ones first.
    pub fn for_type<'a>(&'a self, res_type: &str) -> impl Iterator<Item = &'a Param> + 'a {
        let common = self
            .by_type
            .get("Resource")
            .into_iter()
            .flat_map(|m| m.values());
        let own = self
            .by_type
            .get(res_type)
            .into_iter()
            .flat_map(|m| m.values());
        common.chain(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_parameters_load() {
        let r = load().unwrap();
        assert_eq!(r.get("Task", "owner").unwrap().kind, Kind::Reference);
        assert_eq!(r.get("Patient", "_lastUpdated").unwrap().kind, Kind::Date);
        assert!(r.get("Task", "nonsense").is_none());
        assert!(r.for_type("ServiceRequest").any(|p| p.code == "authored"));
    }

    #[test]
    fn a_parameter_outside_the_subset_is_refused_with_its_file() {
        let file = r#"{"resourceType":"SearchParameter","url":"urn:x","code":"x","type":"token",
            "base":["Patient"],"expression":"Patient.name.iif(true, 1, 2)"}"#;
        let e = Registry::from_files(&[("x.json".into(), file.into())])
            .err()
            .unwrap();
        assert!(e.contains("x.json"), "{e}");
    }
}
