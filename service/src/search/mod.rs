//! Search parameters: parsing a query string into a `SearchQuery`, and the
//! index rows written with each resource (`index`).
//!
//! This is the foundation set (`_id`, `_lastUpdated`, `identifier`, and the
//! result parameters); the search-engine issue replaces the fixed set with
//! SearchParameter resources loaded as data.

pub mod date;
pub mod index;

use base64::Engine as _;

use crate::fhir::outcome::{FhirError, FhirResult};
pub use date::{DateBound, Prefix};

pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 1000;

/// The search parameters the server understands for every type (the
/// CapabilityStatement lists exactly these).
pub const COMMON_PARAMS: &[(&str, &str, &str)] = &[
    ("_id", "token", "Logical id of this artifact"),
    (
        "_lastUpdated",
        "date",
        "When the resource version last changed",
    ),
];
pub const IDENTIFIER_PARAM: (&str, &str, &str) =
    ("identifier", "token", "Business identifier (system|value)");

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFilter {
    SystemAndCode(String, String),
    Code(String),
    NoSystemCode(String),
    System(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    False,
    Text,
    Data,
    Count,
}

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Each inner list is OR (comma), the outer list AND (repeated parameter).
    pub ids: Vec<Vec<String>>,
    pub last_updated: Vec<DateBound>,
    pub tokens: Vec<(String, Vec<TokenFilter>)>,
    pub count: i64,
    pub after_id: Option<String>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    /// The parameters that were applied, in the order given, for self links.
    pub applied: Vec<(String, String)>,
}

/// Result-shaping parameters valid on read as well as search.
pub fn parse_summary(value: &str) -> FhirResult<Summary> {
    Ok(match value {
        "true" => Summary::True,
        "false" => Summary::False,
        "text" => Summary::Text,
        "data" => Summary::Data,
        "count" => Summary::Count,
        other => {
            return Err(FhirError::invalid_at(
                format!("_summary must be one of true, false, text, data, count; got '{other}'"),
                "_summary",
            ))
        }
    })
}

pub fn parse_elements(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Parameters that shape the response rather than select resources.
fn is_format_param(name: &str) -> bool {
    matches!(name, "_format" | "_pretty")
}

impl SearchQuery {
    /// Parses search parameters. Unknown parameters are ignored (lenient
    /// handling, FHIR's default); malformed values of known ones are 400s.
    pub fn parse(params: &[(String, String)], has_identifier: bool) -> FhirResult<SearchQuery> {
        let mut q = SearchQuery {
            count: DEFAULT_COUNT,
            ..Default::default()
        };
        for (name, value) in params {
            check_text(name, value)?;
            let applied = match name.as_str() {
                "_id" => {
                    q.ids.push(split_or(value));
                    true
                }
                "_lastUpdated" => {
                    q.last_updated.push(DateBound::parse(value).map_err(|e| {
                        FhirError::invalid_at(format!("_lastUpdated: {e}"), "_lastUpdated")
                    })?);
                    true
                }
                "identifier" if has_identifier => {
                    let filters = split_or(value).iter().map(|v| token(v)).collect();
                    q.tokens.push(("identifier".into(), filters));
                    true
                }
                "_count" => {
                    q.count = parse_count(value)?;
                    true
                }
                "_summary" => {
                    q.summary = Some(parse_summary(value)?);
                    true
                }
                "_elements" => {
                    q.elements = Some(parse_elements(value));
                    true
                }
                "_cursor" => {
                    q.after_id = Some(decode_cursor(value, "id")?);
                    false
                }
                n if is_format_param(n) => false,
                _ => false,
            };
            if applied {
                q.applied.push((name.clone(), value.clone()));
            }
        }
        if q.summary == Some(Summary::Count) {
            q.count = 0;
        }
        Ok(q)
    }

    /// True when nothing narrows the match: conditional interactions refuse it.
    pub fn has_criteria(&self) -> bool {
        !(self.ids.is_empty() && self.last_updated.is_empty() && self.tokens.is_empty())
    }
}

/// Parameter names and values are text; a NUL or other control character
/// is a client error here rather than a database error later.
pub fn check_text(name: &str, value: &str) -> FhirResult<()> {
    let bad = |s: &str| s.chars().any(char::is_control);
    if bad(name) || bad(value) {
        let shown: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
        return Err(FhirError::invalid_at(
            format!("search parameter '{shown}' contains a control character"),
            shown,
        ));
    }
    Ok(())
}

pub fn parse_count(value: &str) -> FhirResult<i64> {
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n.min(MAX_COUNT)),
        _ => Err(FhirError::invalid_at(
            format!("_count must be a non-negative integer; got '{value}'"),
            "_count",
        )),
    }
}

fn split_or(value: &str) -> Vec<String> {
    // A backslash escapes a comma inside a value (search.html#escaping).
    let mut out = vec![];
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
            }
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn token(value: &str) -> TokenFilter {
    match value.split_once('|') {
        None => TokenFilter::Code(value.to_string()),
        Some(("", code)) => TokenFilter::NoSystemCode(code.to_string()),
        Some((system, "")) => TokenFilter::System(system.to_string()),
        Some((system, code)) => TokenFilter::SystemAndCode(system.to_string(), code.to_string()),
    }
}

/// Paging cursors are opaque to clients: `kind:value`, base64url-encoded.
pub fn encode_cursor(kind: &str, value: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{value}"))
}

pub fn decode_cursor(token: &str, kind: &str) -> FhirResult<String> {
    let bad =
        || FhirError::invalid_at("_cursor is not a paging link this server issued", "_cursor");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(String::from)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn identifier_forms_become_token_filters() {
        let q = SearchQuery::parse(&p(&[("identifier", "s|v,|w,x,s|")]), true).unwrap();
        assert_eq!(
            q.tokens[0].1,
            vec![
                TokenFilter::SystemAndCode("s".into(), "v".into()),
                TokenFilter::NoSystemCode("w".into()),
                TokenFilter::Code("x".into()),
                TokenFilter::System("s".into()),
            ]
        );
    }

    #[test]
    fn escaped_comma_stays_in_the_value() {
        assert_eq!(split_or(r"a\,b,c"), vec!["a,b", "c"]);
    }

    #[test]
    fn cursor_round_trips_and_rejects_other_kinds() {
        let c = encode_cursor("id", "abc");
        assert_eq!(decode_cursor(&c, "id").unwrap(), "abc");
        assert!(decode_cursor(&c, "seq").is_err());
        assert!(decode_cursor("!!", "id").is_err());
    }

    #[test]
    fn control_characters_in_parameters_are_refused() {
        assert!(SearchQuery::parse(&p(&[("identifier", "a\u{0}b")]), true).is_err());
        assert!(SearchQuery::parse(&p(&[("_id\u{0}", "a")]), true).is_err());
    }

    #[test]
    fn count_is_capped_and_negative_refused() {
        assert_eq!(parse_count("5000").unwrap(), MAX_COUNT);
        assert!(parse_count("-1").is_err());
        assert!(parse_count("x").is_err());
    }
}
