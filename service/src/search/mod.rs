//! Search parameters: parsing a query string into a `SearchQuery`, and the
//! index rows written with each resource (`index`).
//!
//! Which parameters exist is data: SearchParameter resources in
//! `fhir-profiles/search-parameters/` (see `registry`).

pub mod date;
pub mod fhirpath;
pub mod index;
pub mod registry;

use std::sync::OnceLock;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::fhir::outcome::{FhirError, FhirResult};
pub use date::{DateBound, Prefix};
use registry::{Kind, Param, Registry};

pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 1000;
/// Comma-separated values one parameter may carry: each is a condition in
/// the SQL, and databases bound how deep an expression may nest.
pub const MAX_OR_VALUES: usize = 100;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatch {
    StartsWith,
    Exact,
    Contains,
}

/// One value a parameter is compared with; a clause holds several (OR).
#[derive(Debug, Clone, PartialEq)]
pub enum Match {
    Id(String),
    Date(DateBound),
    Token(TokenFilter),
    String(String, StringMatch),
    /// `Type/id`, or a bare id (any type, or the `:Type` modifier's).
    Reference {
        target_type: Option<String>,
        id: String,
    },
    /// An absolute URL or canonical that is not one of ours.
    Url(String),
    Uri(String),
    Number(NumberBound),
    Quantity(NumberBound, Option<String>, Option<String>),
}

/// A number search value: a prefix and the range its precision implies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberBound {
    pub prefix: Prefix,
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// Where a clause looks.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The resource row's own id.
    Id,
    /// The resource row's own lastUpdated.
    LastUpdated,
    /// An index table, by the parameter's type, for parameter `code`.
    Index(Kind, String),
    /// Chaining: a resource this one refers to through `param` (of type
    /// `target_type`) matches `inner`.
    /// With no `:Type`, every target type that has the chained parameter
    /// is a branch (ORed).
    Chain {
        param: String,
        branches: Vec<(String, Clause)>,
    },
    /// Reverse chaining (`_has`): some `res_type` resource refers to this
    /// one through its parameter `via` and matches `inner`.
    Has {
        res_type: String,
        via: String,
        inner: Box<Clause>,
    },
}

/// One search parameter as given: all its values must not match (`negate`,
/// `:not`), or one of them must (OR). Clauses are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub target: Target,
    pub negate: bool,
    /// `:missing=true|false`: only whether the parameter has any value.
    pub missing: Option<bool>,
    pub any_of: Vec<Match>,
}

/// One `_sort` key. Only parameters whose index holds text sort (number
/// and quantity do not yet).
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub target: Target,
    pub descending: bool,
}

/// At most this many `_sort` keys.
pub const MAX_SORT_KEYS: usize = 3;

fn parse_sort(registry: &Registry, res_type: &str, value: &str) -> FhirResult<Vec<SortKey>> {
    let keys: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    if keys.len() > MAX_SORT_KEYS {
        return Err(FhirError::invalid_at(
            format!("_sort takes at most {MAX_SORT_KEYS} keys"),
            "_sort",
        ));
    }
    keys.into_iter()
        .map(|k| {
            let (descending, code) = match k.strip_prefix('-') {
                Some(c) => (true, c),
                None => (false, k),
            };
            let bad = |what: &str| FhirError::invalid_at(format!("_sort={value}: {what}"), "_sort");
            let target = match code {
                "_id" => Target::Id,
                "_lastUpdated" => Target::LastUpdated,
                _ => match registry.get(res_type, code) {
                    Some(p) if !matches!(p.kind, Kind::Number | Kind::Quantity) => {
                        Target::Index(p.kind, code.to_string())
                    }
                    Some(_) => {
                        return Err(bad(&format!(
                            "sorting by the {code} number is not supported yet"
                        )))
                    }
                    None => {
                        return Err(bad(&format!("{res_type} has no search parameter '{code}'")))
                    }
                },
            };
            Ok(SortKey { target, descending })
        })
        .collect()
}

/// `_include` / `_revinclude`: follow `param` of `source` resources
/// (forward: from the matches to what they refer to; reverse: from
/// `source` resources that refer to the matches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    pub reverse: bool,
    pub iterate: bool,
    pub source: String,
    pub param: String,
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub clauses: Vec<Clause>,
    pub includes: Vec<Include>,
    pub count: i64,
    pub after_id: Option<String>,
    /// `_sort`: keys in order; results are then paged on (keys…, id).
    pub sort: Vec<SortKey>,
    /// The sort values and id of the last result of the previous page.
    pub after_sort: Option<Vec<String>>,
    /// Change feed: only resources whose current version was committed
    /// after this tick, in commit order.
    pub feed: Option<i64>,
    /// `_total=none` skips counting the matches (a second query).
    pub skip_total: bool,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    /// The parameters that were applied, in the order given, for self links.
    pub applied: Vec<(String, String)>,
    /// Whose view the search takes (`auth::access`); everything by default.
    pub access: crate::auth::access::Access,
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

/// Parameters that shape the response, or that this server ignores by
/// design, rather than select resources.
fn is_result_param(name: &str) -> bool {
    matches!(name, "_format" | "_pretty")
}

/// `Source:param[:Target]`, the value of `_include` and `_revinclude`.
fn parse_include(registry: &Registry, name: &str, value: &str) -> FhirResult<Include> {
    let (base, modifier) = match name.split_once(':') {
        Some((b, m)) => (b, Some(m)),
        None => (name, None),
    };
    let bad =
        |what: String| FhirError::invalid_at(format!("{name}={value}: {what}"), base.to_string());
    let iterate = match modifier {
        None => false,
        Some("iterate") | Some("recurse") => true,
        Some(m) => return Err(bad(format!("':{m}' is not a modifier of {base}"))),
    };
    let mut parts = value.split(':');
    let (Some(source), Some(param)) = (parts.next(), parts.next()) else {
        return Err(bad("expected SourceType:parameter[:TargetType]".into()));
    };
    let target = parts.next().map(String::from);
    if parts.next().is_some() {
        return Err(bad("expected SourceType:parameter[:TargetType]".into()));
    }
    match registry.get(source, param) {
        Some(p) if p.kind == Kind::Reference => {
            if let Some(t) = &target {
                if !p.targets.contains(t) {
                    return Err(bad(format!("{source}.{param} does not refer to {t}")));
                }
            }
        }
        _ => {
            return Err(bad(format!(
                "{source} has no reference parameter '{param}'"
            )))
        }
    }
    Ok(Include {
        reverse: base == "_revinclude",
        iterate,
        source: source.to_string(),
        param: param.to_string(),
        target,
    })
}

impl SearchQuery {
    /// Parses search parameters against the registry. Unknown parameters
    /// are ignored (lenient, FHIR's default) unless `strict`
    /// (`Prefer: handling=strict`); unknown modifiers and malformed values
    /// are always 400s.
    pub fn parse(
        res_type: &str,
        params: &[(String, String)],
        strict: bool,
    ) -> FhirResult<SearchQuery> {
        let registry = registry::load().map_err(FhirError::Internal)?;
        let mut q = SearchQuery {
            count: DEFAULT_COUNT,
            ..Default::default()
        };
        for (name, value) in params {
            check_text(name, value)?;
            let applied = match name.as_str() {
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
                    // Sorted searches page on their sort values, others on id.
                    match decode_cursor(value, "sort") {
                        Ok(json) => {
                            let values = serde_json::from_str(&json).map_err(|_| {
                                FhirError::invalid_at(
                                    "_cursor is not a paging link this server issued",
                                    "_cursor",
                                )
                            })?;
                            q.after_sort = Some(values);
                        }
                        Err(_) => q.after_id = Some(decode_cursor(value, "id")?),
                    }
                    false
                }
                "_sort" => {
                    q.sort = parse_sort(registry, res_type, value)?;
                    true
                }
                "_feed" => {
                    q.feed = Some(parse_feed(value)?);
                    false
                }
                "_total" => {
                    q.skip_total = match value.as_str() {
                        "none" => true,
                        // The count is exact and cheap on the index tables.
                        "estimate" | "accurate" => false,
                        other => {
                            return Err(FhirError::invalid_at(
                                format!("_total must be none, estimate or accurate; got '{other}'"),
                                "_total",
                            ))
                        }
                    };
                    true
                }
                n if n.starts_with("_include") || n.starts_with("_revinclude") => {
                    q.includes.push(parse_include(registry, n, value)?);
                    true
                }
                n if is_result_param(n) => false,
                _ => match parse_clause(registry, res_type, name, value, 0)? {
                    Some(c) => {
                        q.clauses.push(c);
                        true
                    }
                    None if strict => {
                        return Err(FhirError::invalid_at(
                            format!("{res_type} has no search parameter '{name}'"),
                            name.split([':', '.']).next().unwrap_or(name).to_string(),
                        ))
                    }
                    None => false,
                },
            };
            if applied {
                q.applied.push((name.clone(), value.clone()));
            }
        }
        if q.summary == Some(Summary::Count) {
            q.count = 0;
        }
        if q.feed.is_some() && !q.sort.is_empty() {
            return Err(FhirError::invalid_at(
                "the change feed is in commit order; it cannot be combined with _sort",
                "_sort",
            ));
        }
        let keys = q.sort.len() + 1;
        if q.after_sort.as_ref().is_some_and(|v| v.len() != keys) {
            return Err(FhirError::invalid_at(
                "_cursor does not belong to this _sort",
                "_cursor",
            ));
        }
        Ok(q)
    }

    /// Reads absolute references to this server (`{base}/Patient/1`) as
    /// the local references they are (search.html#reference).
    pub fn local_to(mut self, base: &str) -> SearchQuery {
        fn walk(clause: &mut Clause, prefix: &str) {
            for m in &mut clause.any_of {
                if let Match::Url(u) = m {
                    let local = u.strip_prefix(prefix).and_then(index::split_reference);
                    if let Some((t, id)) = local.filter(|_| u.len() > prefix.len()) {
                        *m = Match::Reference {
                            target_type: Some(t),
                            id,
                        };
                    }
                }
            }
            match &mut clause.target {
                Target::Chain { branches, .. } => {
                    branches.iter_mut().for_each(|(_, c)| walk(c, prefix))
                }
                Target::Has { inner, .. } => walk(inner, prefix),
                _ => {}
            }
        }
        let prefix = format!("{}/", base.trim_end_matches('/'));
        for clause in &mut self.clauses {
            walk(clause, &prefix);
        }
        self
    }

    /// True when something narrows the match: conditional interactions
    /// refuse criteria that select everything.
    pub fn has_criteria(&self) -> bool {
        !self.clauses.is_empty()
    }
}

/// How deep chains and `_has` may nest: each level is a join.
const MAX_CHAIN_DEPTH: usize = 3;

/// One parameter as written (`owner`, `owner:Organization`,
/// `focus:ServiceRequest.requester.identifier`, `_has:Task:focus:status`)
/// as a clause on `res_type`; `None` when `res_type` has no such parameter.
fn parse_clause(
    registry: &Registry,
    res_type: &str,
    name: &str,
    value: &str,
    depth: usize,
) -> FhirResult<Option<Clause>> {
    let too_deep = || {
        FhirError::invalid_at(
            format!("'{name}' chains more than {MAX_CHAIN_DEPTH} levels"),
            name.to_string(),
        )
    };
    if depth > MAX_CHAIN_DEPTH {
        return Err(too_deep());
    }
    // Reverse chaining: _has:Type:reference-parameter:rest.
    if let Some(rest) = name.strip_prefix("_has:") {
        let mut parts = rest.splitn(3, ':');
        let (Some(other), Some(via), Some(inner)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(FhirError::invalid_at(
                format!("'{name}' is not _has:Type:reference-parameter:parameter"),
                "_has",
            ));
        };
        let unknown = |what: String| FhirError::invalid_at(what, name.to_string());
        if !sp_hub_codec::RESOURCE_TYPES.contains(&other) {
            return Err(unknown(format!(
                "_has names '{other}', which is not a resource type"
            )));
        }
        match registry.get(other, via) {
            Some(p) if p.kind == Kind::Reference => {}
            _ => {
                return Err(unknown(format!(
                    "{other} has no reference parameter '{via}'"
                )))
            }
        }
        let inner = parse_clause(registry, other, inner, value, depth + 1)?
            .ok_or_else(|| unknown(format!("{other} has no search parameter '{inner}'")))?;
        return Ok(Some(Clause::nested(Target::Has {
            res_type: other.to_string(),
            via: via.to_string(),
            inner: Box::new(inner),
        })));
    }
    // Chaining: reference-parameter[:Type].rest.
    if let Some((head, rest)) = name.split_once('.') {
        let (code, of_type) = match head.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (head, None),
        };
        let Some(param) = registry.get(res_type, code) else {
            return Ok(None);
        };
        let bad = |what: String| FhirError::invalid_at(what, code.to_string());
        if param.kind != Kind::Reference {
            return Err(bad(format!(
                "'{code}' is not a reference parameter, so it cannot be chained"
            )));
        }
        let types: Vec<&str> = match of_type {
            Some(t) if param.targets.iter().any(|x| x == t) => vec![t],
            Some(t) => return Err(bad(format!("'{code}' does not refer to {t}"))),
            None => param.targets.iter().map(String::as_str).collect(),
        };
        let mut branches = vec![];
        for t in types {
            if let Some(inner) = parse_clause(registry, t, rest, value, depth + 1)? {
                branches.push((t.to_string(), inner));
            }
        }
        if branches.is_empty() {
            return Err(bad(format!(
                "no resource '{code}' refers to has a search parameter '{rest}'"
            )));
        }
        return Ok(Some(Clause::nested(Target::Chain {
            param: code.to_string(),
            branches,
        })));
    }
    let (code, modifier) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    match registry.get(res_type, code) {
        Some(param) => clause(param, code, modifier, value).map(Some),
        None => Ok(None),
    }
}

impl Clause {
    fn nested(target: Target) -> Clause {
        Clause {
            target,
            negate: false,
            missing: None,
            any_of: vec![],
        }
    }
}

fn clause(param: &Param, code: &str, modifier: Option<&str>, value: &str) -> FhirResult<Clause> {
    let bad = |what: String| FhirError::invalid_at(format!("{code}: {what}"), code.to_string());
    let target = match code {
        "_id" => Target::Id,
        "_lastUpdated" => Target::LastUpdated,
        _ => Target::Index(param.kind, code.to_string()),
    };
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(bad(format!(":missing takes true or false, not '{value}'"))),
        };
        if !matches!(target, Target::Index(..)) {
            return Err(bad(
                "every resource has this; :missing does not apply".into()
            ));
        }
        return Ok(Clause {
            target,
            negate: false,
            missing: Some(missing),
            any_of: vec![],
        });
    }
    // Modifiers that search a companion index the write path keeps under
    // `code:modifier` (see search::index).
    let companion =
        |kind: Kind| Target::Index(kind, format!("{code}:{}", modifier.unwrap_or_default()));
    let (target, kind) = match (param.kind, modifier) {
        (Kind::Token, Some("text")) => (companion(Kind::String), Kind::String),
        (Kind::Token, Some("of-type")) => (companion(Kind::Token), Kind::Token),
        (Kind::Reference, Some("identifier")) => (companion(Kind::Token), Kind::Token),
        (kind, _) => (target, kind),
    };
    let mut negate = false;
    let mut string_match = StringMatch::StartsWith;
    let mut reference_type = None;
    match (param.kind, modifier) {
        (_, None) => {}
        (Kind::Token, Some("text" | "of-type")) | (Kind::Reference, Some("identifier")) => {}
        (Kind::Token, Some("not")) => negate = true,
        (Kind::String, Some("exact")) => string_match = StringMatch::Exact,
        (Kind::String, Some("contains")) => string_match = StringMatch::Contains,
        (Kind::Reference, Some(t)) if sp_hub_codec::RESOURCE_TYPES.contains(&t) => {
            reference_type = Some(t.to_string())
        }
        (kind, Some(m)) => {
            return Err(bad(format!(
                "the modifier ':{m}' is not supported on this {} parameter",
                kind.name()
            )))
        }
    }
    let values = split_or(value);
    if values.len() > MAX_OR_VALUES {
        return Err(bad(format!(
            "{} values given; at most {MAX_OR_VALUES} may be ORed in one parameter",
            values.len()
        )));
    }
    let any_of = values
        .into_iter()
        .map(|v| -> FhirResult<Match> {
            Ok(match (&target, kind) {
                (Target::Id, _) => Match::Id(v),
                (Target::LastUpdated, _) | (_, Kind::Date) => {
                    Match::Date(DateBound::parse(&v).map_err(bad)?)
                }
                // `type-system|type-code|value`: the type is the system.
                (_, Kind::Token) if modifier == Some("of-type") => match v.rsplit_once('|') {
                    Some((of_type, value)) => Match::Token(TokenFilter::SystemAndCode(
                        of_type.to_string(),
                        value.to_string(),
                    )),
                    None => {
                        return Err(bad(format!(
                            ":of-type takes type-system|type-code|value, not '{v}'"
                        )))
                    }
                },
                (_, Kind::Token) => Match::Token(token(&v)),
                (_, Kind::String) => Match::String(v, string_match),
                (_, Kind::Uri) => Match::Uri(v),
                (_, Kind::Reference) => reference(&v, reference_type.clone()),
                (_, Kind::Number) => Match::Number(NumberBound::parse(&v).map_err(bad)?),
                (_, Kind::Quantity) => {
                    let mut parts = v.splitn(3, '|');
                    let number =
                        NumberBound::parse(parts.next().unwrap_or_default()).map_err(bad)?;
                    let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(String::from);
                    let system = non_empty(parts.next());
                    let unit = non_empty(parts.next());
                    Match::Quantity(number, system, unit)
                }
            })
        })
        .collect::<FhirResult<Vec<_>>>()?;
    Ok(Clause {
        target,
        negate,
        missing: None,
        any_of,
    })
}

fn reference(value: &str, of_type: Option<String>) -> Match {
    if let Some((t, id)) = index::split_reference(value) {
        if !value.contains("://") {
            return Match::Reference {
                target_type: Some(t),
                id,
            };
        }
    }
    if value.contains(':') {
        return Match::Url(value.to_string());
    }
    Match::Reference {
        target_type: of_type,
        id: value.to_string(),
    }
}

impl NumberBound {
    /// `[prefix]number`; the range is the precision the number was given
    /// with (search.html#number: 100 means [99.5, 100.5)).
    pub fn parse(value: &str) -> Result<NumberBound, String> {
        let (prefix, rest) = date::split_prefix(value);
        let n: f64 = rest
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite())
            .ok_or_else(|| format!("'{value}' is not a number"))?;
        let mantissa = rest.split(['e', 'E']).next().unwrap_or(rest);
        let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
        let half = 0.5 * 10f64.powi(-decimals);
        Ok(NumberBound {
            prefix,
            value: n,
            low: n - half,
            high: n + half,
        })
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

/// `_feed=<tick>`: a position in the change feed (0 is the beginning).
pub fn parse_feed(value: &str) -> FhirResult<i64> {
    value.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
        FhirError::invalid_at(
            format!("_feed must be a position in the change feed (a whole number, 0 to start); got '{value}'"),
            "_feed",
        )
    })
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
static CURSOR_KEY: OnceLock<Vec<u8>> = OnceLock::new();

/// Sets the key paging cursors are signed with; every replica must use the
/// same one (the server reads it from the database at start-up). Without
/// it a random key for this process is used.
pub fn set_cursor_key(key: &[u8]) {
    let _ = CURSOR_KEY.set(key.to_vec());
}

fn cursor_mac(payload: &[u8]) -> Hmac<Sha256> {
    let key = CURSOR_KEY.get_or_init(|| uuid::Uuid::new_v4().as_bytes().to_vec());
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(payload);
    mac
}

/// Paging cursors are opaque and tamper-evident: `kind:value`, then a
/// truncated HMAC of it, both base64url-encoded. A client cannot forge one
/// to start a page somewhere the server did not send it.
pub fn encode_cursor(kind: &str, value: &str) -> String {
    let payload = format!("{kind}:{value}");
    let tag = cursor_mac(payload.as_bytes()).finalize().into_bytes();
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}", b64.encode(&payload), b64.encode(&tag[..16]))
}

pub fn decode_cursor(token: &str, kind: &str) -> FhirResult<String> {
    let bad =
        || FhirError::invalid_at("_cursor is not a paging link this server issued", "_cursor");
    let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (payload, tag) = token.split_once('.').ok_or_else(bad)?;
    let payload = b64.decode(payload).map_err(|_| bad())?;
    let tag = b64.decode(tag).map_err(|_| bad())?;
    // A shorter tag would be easier to guess: only the full 16 bytes count.
    if tag.len() != 16 {
        return Err(bad());
    }
    cursor_mac(&payload)
        .verify_truncated_left(&tag)
        .map_err(|_| bad())?;
    let text = String::from_utf8(payload).map_err(|_| bad())?;
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
        let q = SearchQuery::parse("Task", &p(&[("identifier", "s|v,|w,x,s|")]), true).unwrap();
        assert_eq!(
            q.clauses[0].any_of,
            vec![
                Match::Token(TokenFilter::SystemAndCode("s".into(), "v".into())),
                Match::Token(TokenFilter::NoSystemCode("w".into())),
                Match::Token(TokenFilter::Code("x".into())),
                Match::Token(TokenFilter::System("s".into())),
            ]
        );
    }

    #[test]
    fn modifiers_are_checked_against_the_parameter_type() {
        let q = SearchQuery::parse(
            "Task",
            &p(&[("status:not", "completed"), ("owner:Organization", "o1")]),
            true,
        )
        .unwrap();
        assert!(q.clauses[0].negate);
        assert_eq!(
            q.clauses[1].any_of,
            vec![Match::Reference {
                target_type: Some("Organization".into()),
                id: "o1".into()
            }]
        );
        assert!(SearchQuery::parse("Task", &p(&[("status:exact", "x")]), false).is_err());
        assert!(SearchQuery::parse("Patient", &p(&[("family:missing", "maybe")]), false).is_err());
    }

    #[test]
    fn unknown_parameters_are_ignored_unless_strict() {
        let q = SearchQuery::parse("Task", &p(&[("colour", "red")]), false).unwrap();
        assert!(q.clauses.is_empty() && q.applied.is_empty());
        assert!(SearchQuery::parse("Task", &p(&[("colour", "red")]), true).is_err());
    }

    #[test]
    fn chains_and_has_nest_clauses_on_the_other_type() {
        let q = SearchQuery::parse(
            "Task",
            &p(&[("focus:ServiceRequest.requester.identifier", "x")]),
            true,
        )
        .unwrap();
        let Target::Chain { param, branches } = &q.clauses[0].target else {
            panic!()
        };
        assert_eq!(
            (param.as_str(), branches[0].0.as_str()),
            ("focus", "ServiceRequest")
        );
        let Target::Chain {
            branches: second, ..
        } = &branches[0].1.target
        else {
            panic!("two levels")
        };
        assert!(second.iter().any(|(t, _)| t == "Organization") && second.len() > 1);
        let q = SearchQuery::parse(
            "Patient",
            &p(&[("_has:ServiceRequest:subject:status", "active")]),
            true,
        )
        .unwrap();
        assert!(
            matches!(&q.clauses[0].target, Target::Has { res_type, via, .. } if res_type == "ServiceRequest" && via == "subject")
        );
        assert!(SearchQuery::parse("Task", &p(&[("owner:Observation.code", "x")]), false).is_err());
        assert!(SearchQuery::parse("Task", &p(&[("status.name", "x")]), false).is_err());
        assert!(
            SearchQuery::parse("Patient", &p(&[("_has:Nope:subject:status", "x")]), false).is_err()
        );
    }

    #[test]
    fn numbers_carry_their_precision() {
        let n = NumberBound::parse("gt100").unwrap();
        assert_eq!((n.prefix, n.low, n.high), (Prefix::Gt, 99.5, 100.5));
        let n = NumberBound::parse("5.40").unwrap();
        assert!((n.high - 5.405).abs() < 1e-9);
        assert!(NumberBound::parse("abc").is_err());
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
        // Changing the payload, or dropping the signature, is caught.
        let b64 = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (_, tag) = c.split_once('.').unwrap();
        let forged = format!("{}.{tag}", b64.encode("id:zzz"));
        assert!(decode_cursor(&forged, "id").is_err());
        assert!(decode_cursor(&b64.encode("id:abc"), "id").is_err());
    }

    #[test]
    fn control_characters_in_parameters_are_refused() {
        assert!(SearchQuery::parse("Task", &p(&[("identifier", "a\u{0}b")]), true).is_err());
        assert!(SearchQuery::parse("Task", &p(&[("_id\u{0}", "a")]), false).is_err());
    }

    #[test]
    fn count_is_capped_and_negative_refused() {
        assert_eq!(parse_count("5000").unwrap(), MAX_COUNT);
        assert!(parse_count("-1").is_err());
        assert!(parse_count("x").is_err());
    }
}

/// Property tests: the parser takes any query a client can send and either
/// understands it or answers 4xx; it never panics and never fails inside.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TYPES: &[&str] = &[
        "Task",
        "ServiceRequest",
        "Patient",
        "Observation",
        "Provenance",
        "Consent",
        "NoSuchType",
    ];

    /// Names the registry knows, result parameters, and the shapes chains,
    /// `_has` and modifiers take, to be mangled further by the strategies.
    const KNOWN: &[&str] = &[
        "_id",
        "_lastUpdated",
        "identifier",
        "status",
        "owner",
        "focus",
        "subject",
        "patient",
        "requester",
        "authored-on",
        "code",
        "part-of",
        "value-quantity",
        "date",
        "name",
        "target",
        "_count",
        "_summary",
        "_elements",
        "_cursor",
        "_sort",
        "_feed",
        "_total",
        "_include",
        "_revinclude",
        "_include:iterate",
        "_has:Task:focus:status",
        "_has:Task:focus:_has:Provenance:target:agent",
        "focus:ServiceRequest.requester.identifier",
        "focus.subject.name",
        "owner:missing",
        "status:not",
        "name:contains",
        "name:exact",
        "code:text",
        "identifier:of-type",
        "focus:identifier",
    ];

    const TASK_PARAMS: &[&str] = &[
        "_id",
        "_lastUpdated",
        "status",
        "status:not",
        "owner",
        "owner:missing",
        "owner:Organization",
        "owner:identifier",
        "focus",
        "focus:ServiceRequest.status",
        "focus:ServiceRequest.requester.identifier",
        "identifier",
        "identifier:of-type",
        "authored-on",
        "modified",
        "part-of",
        "code",
        "code:text",
        "business-status",
        "period",
        "_has:Provenance:target:agent",
        "_sort",
        "_count",
        "_feed",
    ];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => ".{0,40}",
            1 => "\\PC{0,20}",
            1 => "[a-z_\\-]{1,12}(:[A-Za-z\\-]{0,12})?",
            6 => prop::sample::select(KNOWN).prop_map(String::from),
            2 => (
                prop::sample::select(KNOWN),
                "(:[A-Za-z\\-]{0,12})?(\\.[a-z_\\-]{1,10}){0,4}"
            )
                .prop_map(|(n, rest)| format!("{n}{rest}")),
            1 => "_has(:[A-Za-z_\\-]{0,10}){0,6}",
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            1 => ".{0,60}",
            2 => "\\PC{0,30}",
            2 => "(eq|ne|gt|lt|ge|le|sa|eb|ap)?[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9:.]{0,12}(Z|[+-][0-9:]{0,5})?)?)?)?",
            3 => "[A-Za-z0-9|,\\\\:/.?=&%\\-]{0,40}",
            2 => "-?[0-9]{0,20}(\\.[0-9]{0,5})?(e[+-]?[0-9]{1,4})?(\\|[a-z:/.]{0,10}\\|[a-z]{0,5})?",
            1 => ("[A-Za-z0-9]{0,6}", 0usize..=110).prop_map(|(v, n)| vec![v; n].join(",")),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn any_query_parses_or_is_a_client_error(
            res_type in prop::sample::select(TYPES),
            params in prop::collection::vec((name(), value()), 0..4),
            strict in any::<bool>(),
        ) {
            if let Err(e) = SearchQuery::parse(res_type, &params, strict) {
                prop_assert!(
                    (400..500).contains(&e.status()),
                    "{res_type}?{params:?} is a {} error: {e:?}", e.status()
                );
            }
        }

        /// Raw query strings, as bytes off the wire.
        #[test]
        fn arbitrary_query_strings_parse_or_are_client_errors(
            res_type in prop::sample::select(TYPES),
            bytes in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let params: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if let Err(e) = SearchQuery::parse(res_type, &params, false) {
                prop_assert!((400..500).contains(&e.status()), "{params:?}: {e:?}");
            }
        }

        /// Task's own parameters (the ones pollers use) with any value:
        /// most of these reach the value parsers of every parameter type.
        #[test]
        fn any_value_of_a_task_parameter_parses_or_is_a_client_error(
            params in prop::collection::vec((prop::sample::select(TASK_PARAMS), value()), 1..4),
        ) {
            let params: Vec<(String, String)> =
                params.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
            if let Err(e) = SearchQuery::parse("Task", &params, true) {
                prop_assert!(
                    (400..500).contains(&e.status()),
                    "Task?{params:?} is a {} error: {e:?}", e.status()
                );
            }
        }

        #[test]
        fn comma_separated_tokens_are_ored_up_to_the_limit(
            tokens in prop::collection::vec(("[a-z:/.]{1,12}", "[A-Za-z0-9\\-]{1,12}"), 1..=110)
        ) {
            let value = tokens
                .iter()
                .map(|(s, c)| format!("{s}|{c}"))
                .collect::<Vec<_>>()
                .join(",");
            let params = vec![("identifier".to_string(), value)];
            match SearchQuery::parse("Task", &params, true) {
                Ok(q) if tokens.len() <= MAX_OR_VALUES => {
                    let want: Vec<Match> = tokens
                        .iter()
                        .map(|(s, c)| Match::Token(TokenFilter::SystemAndCode(s.clone(), c.clone())))
                        .collect();
                    prop_assert_eq!(&q.clauses[0].any_of, &want);
                }
                Err(e) if tokens.len() > MAX_OR_VALUES => prop_assert_eq!(e.status(), 400),
                other => prop_assert!(false, "{} values: {other:?}", tokens.len()),
            }
        }
    }
}
