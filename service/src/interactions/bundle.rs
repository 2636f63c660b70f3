//! `POST /` with a transaction or batch Bundle (http.html#transaction).
//!
//! A transaction is one store transaction: ids for new resources are
//! assigned first, `urn:uuid:` and conditional references are rewritten in
//! every entry, then entries run in the order the spec fixes (DELETE, POST,
//! PUT/PATCH, GET). Any failure rolls everything back and names the entry.
//! A batch runs each entry in a transaction of its own and reports each.

use std::collections::HashMap;

use base64::Engine as _;
use serde_json::Value;

use super::write::{self, matches};
use super::{live, Body, Created, Criteria};
use crate::auth::scopes::Perms;
use crate::auth::{Need, Principal};
use crate::fhir::bundle::{self as fb, Bundle, Entry as OutEntry, Response};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource::{self, etag};
use crate::search::SearchQuery;
use crate::store::{Current, Store, Tx, WriteOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    // Declared in the order a transaction processes them.
    Delete,
    Post,
    Put,
    Patch,
    Get,
}

/// Where an entry's `request.url` points.
enum Target {
    Type(String),
    Instance(String, String),
    /// `Type?criteria`: conditional PUT/DELETE, or a search for GET.
    Query(String, Vec<(String, String)>),
}

struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    target: Target,
    resource: Option<Value>,
    patch: Option<json_patch::Patch>,
    if_match: Option<i32>,
    if_none_exist: Option<Criteria>,
}

/// Processes a transaction or batch Bundle; returns the response Bundle.
pub fn bundle(
    caller: &Principal,
    store: &Store,
    body: Body,
    base: &str,
    max_entries: usize,
) -> FhirResult<BundleResult> {
    let bundle = resource::parse_bundle(body.bytes, body.format)?;
    let kind = bundle.get("type").and_then(Value::as_str).unwrap_or("");
    let raw_entries = match bundle.get("entry") {
        Some(Value::Array(e)) => e.as_slice(),
        _ => &[],
    };
    if raw_entries.len() > max_entries {
        return Err(FhirError::PayloadTooLarge(format!(
            "the Bundle has {} entries; this server takes at most {max_entries}",
            raw_entries.len()
        )));
    }
    match kind {
        "transaction" => {
            let entries = raw_entries
                .iter()
                .enumerate()
                .map(|(i, e)| parse_entry(caller, i, e, base).map_err(|err| err.at_entry(i)))
                .collect::<FhirResult<Vec<_>>>()?;
            let responses =
                super::transaction(store, caller, |tx| transaction(tx, caller, &entries, base))?;
            Ok(BundleResult(response_bundle(
                "transaction-response",
                responses,
            )))
        }
        "batch" => {
            let responses = raw_entries
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    parse_entry(caller, i, e, base)
                        .and_then(|entry| {
                            super::transaction(store, caller, |tx| {
                                run(tx, caller, &entry, &HashMap::new(), base)
                            })
                        })
                        .unwrap_or_else(|err| failed(&err))
                })
                .collect();
            Ok(BundleResult(response_bundle("batch-response", responses)))
        }
        other => Err(FhirError::invalid_at(
            format!("POST / takes a Bundle of type transaction or batch, not '{other}'"),
            "Bundle.type",
        )),
    }
}

/// The response Bundle's JSON.
pub struct BundleResult(pub String);

fn response_bundle(kind: &'static str, entries: Vec<OutEntry>) -> String {
    Bundle::new(kind, None, vec![], entries).to_json()
}

fn parse_entry(caller: &Principal, index: usize, e: &Value, base: &str) -> FhirResult<Entry> {
    let request = e
        .get("request")
        .ok_or_else(|| FhirError::invalid("the entry has no request"))?;
    let method = match request.get("method").and_then(Value::as_str) {
        Some("GET") | Some("HEAD") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("PATCH") => Method::Patch,
        Some("DELETE") => Method::Delete,
        other => {
            return Err(FhirError::invalid(format!(
                "request.method {} is not one of GET, HEAD, POST, PUT, PATCH, DELETE",
                other.unwrap_or("(missing)")
            )))
        }
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| FhirError::invalid("the entry has no request.url"))?;
    let target = parse_target(url, base)?;
    let res_type = match &target {
        Target::Type(t) | Target::Instance(t, _) | Target::Query(t, _) => t.clone(),
    };
    super::check_type(&res_type)?;
    // Each entry needs what the same request on its own would.
    let (perm, query) = match (&method, &target) {
        (Method::Get, Target::Instance(..)) => (Perms::READ, &[][..]),
        (Method::Get, Target::Query(_, q)) => (Perms::SEARCH, q.as_slice()),
        (Method::Get, Target::Type(_)) => (Perms::SEARCH, &[][..]),
        (Method::Post, _) => (Perms::CREATE, &[][..]),
        (Method::Put | Method::Patch, _) => (Perms::UPDATE, &[][..]),
        (Method::Delete, _) => (Perms::DELETE, &[][..]),
    };
    caller.permits(&Need::Type(res_type.clone(), perm), query)?;
    let resource = match (method, e.get("resource")) {
        (Method::Post | Method::Put, Some(r)) => {
            // The same checks as a single create or update, per entry.
            Some(resource::accept(r.clone(), &res_type)?)
        }
        (Method::Post | Method::Put, None) => {
            return Err(FhirError::invalid("a POST or PUT entry needs a resource"))
        }
        _ => None,
    };
    let patch = match method {
        Method::Patch => Some(patch_of(e.get("resource"))?),
        _ => None,
    };
    match (&method, &target, &resource) {
        (Method::Post, Target::Type(_), _) | (Method::Get, _, _) => {}
        (Method::Put, Target::Instance(t, id), Some(r)) => write::check_body_id(r, t, id)?,
        (Method::Put | Method::Delete, Target::Query(..), _) => {}
        (Method::Delete | Method::Patch, Target::Instance(..), _) => {}
        _ => {
            return Err(FhirError::invalid(format!(
                "request.url '{url}' does not fit method {method:?}"
            )))
        }
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(tag) => Some(parse_etag(tag)?),
        None => None,
    };
    let if_none_exist = match request.get("ifNoneExist").and_then(Value::as_str) {
        Some(q) => Some(Criteria::parse(
            &res_type,
            &form_pairs(q),
            "ifNoneExist",
            base,
        )?),
        None => None,
    };
    Ok(Entry {
        index,
        full_url: e.get("fullUrl").and_then(Value::as_str).map(String::from),
        method,
        target,
        resource,
        patch,
        if_match,
        if_none_exist,
    })
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_etag(tag: &str) -> FhirResult<i32> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
    t.parse()
        .map_err(|_| FhirError::PreconditionFailed(format!("ifMatch '{tag}' names no version")))
}

/// `Type`, `Type/id` or `Type?query`, relative or under our own base URL.
fn parse_target(url: &str, base: &str) -> FhirResult<Target> {
    let rel = url
        .strip_prefix(base)
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rel, None),
    };
    let parts: Vec<&str> = path.split('/').collect();
    match (parts.as_slice(), query) {
        ([t], None) if !t.is_empty() => Ok(Target::Type(t.to_string())),
        ([t], Some(q)) => Ok(Target::Query(t.to_string(), form_pairs(q))),
        ([t, id], None) => {
            resource::check_id(id)?;
            Ok(Target::Instance(t.to_string(), id.to_string()))
        }
        _ => Err(FhirError::invalid(format!(
            "request.url '{url}' is not Type, Type/id or Type?criteria"
        ))),
    }
}

/// A PATCH entry carries its JSON Patch as a Binary resource.
fn patch_of(resource: Option<&Value>) -> FhirResult<json_patch::Patch> {
    let r = resource.ok_or_else(|| FhirError::invalid("a PATCH entry needs a Binary resource"))?;
    let is_patch = r.get("resourceType").and_then(Value::as_str) == Some("Binary")
        && r.get("contentType").and_then(Value::as_str) == Some("application/json-patch+json");
    let data = r.get("data").and_then(Value::as_str).filter(|_| is_patch).ok_or_else(|| {
        FhirError::invalid("a PATCH entry's resource must be a Binary of contentType application/json-patch+json")
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| FhirError::invalid("the PATCH entry's Binary.data is not base64"))?;
    write::parse_patch(&bytes)
}

fn transaction(
    tx: &mut Tx,
    caller: &Principal,
    entries: &[Entry],
    base: &str,
) -> FhirResult<Vec<OutEntry>> {
    // 1. Decide every identity first, so references can be rewritten.
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut existing: HashMap<usize, Current> = HashMap::new();
    let mut assigned: HashMap<usize, String> = HashMap::new();
    for e in entries {
        let id = match (&e.method, &e.target) {
            (Method::Post, Target::Type(t)) => {
                let found = match &e.if_none_exist {
                    Some(c) => one_match(tx, t, c).map_err(|err| err.at_entry(e.index))?,
                    None => None,
                };
                match found {
                    Some(current) => {
                        let id = current.res_id.clone();
                        existing.insert(e.index, current);
                        format!("{t}/{id}")
                    }
                    None => {
                        let id = uuid::Uuid::new_v4().to_string();
                        assigned.insert(e.index, id.clone());
                        format!("{t}/{id}")
                    }
                }
            }
            (Method::Put, Target::Instance(t, id)) => format!("{t}/{id}"),
            (Method::Put, Target::Query(t, q)) => {
                let c = Criteria::parse(t, q, "conditional update", base)
                    .map_err(|err| err.at_entry(e.index))?;
                let resource = e
                    .resource
                    .as_ref()
                    .ok_or_else(|| FhirError::invalid("no resource"))?;
                let id = write::conditional_update_target(tx, t, &c, resource)
                    .map_err(|err| err.at_entry(e.index))?;
                assigned.insert(e.index, id.clone());
                format!("{t}/{id}")
            }
            _ => continue,
        };
        if let Some(full_url) = &e.full_url {
            ids.insert(full_url.clone(), id);
        }
    }
    // 2. Run the entries in the order the spec fixes, rewriting references.
    let mut order: Vec<&Entry> = entries.iter().collect();
    order.sort_by_key(|e| (e.method, e.index));
    let mut out: Vec<Option<OutEntry>> = entries.iter().map(|_| None).collect();
    for e in order {
        let response = match existing.get(&e.index) {
            Some(current) => Ok(written(current, "200 OK", false)),
            None => {
                let prepared = prepare(tx, e, &ids, assigned.get(&e.index), base)?;
                run_prepared(tx, caller, &prepared, base)
            }
        };
        out[e.index] = Some(response.map_err(|err| err.at_entry(e.index))?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The entry with references resolved and, for creates, the id assigned.
struct Prepared<'a> {
    entry: &'a Entry,
    resource: Option<Value>,
    id: Option<&'a str>,
}

fn prepare<'a>(
    tx: &mut Tx,
    e: &'a Entry,
    ids: &HashMap<String, String>,
    id: Option<&'a String>,
    base: &str,
) -> FhirResult<Prepared<'a>> {
    let mut resource = e.resource.clone();
    if let Some(r) = resource.as_mut() {
        rewrite_references(tx, r, ids, base).map_err(|err| err.at_entry(e.index))?;
    }
    Ok(Prepared {
        entry: e,
        resource,
        id: id.map(String::as_str),
    })
}

/// Replaces `urn:uuid:` references to other entries with their `Type/id`,
/// and conditional references (`Patient?identifier=…`) with the one match.
fn rewrite_references(
    tx: &mut Tx,
    v: &mut Value,
    ids: &HashMap<String, String>,
    base: &str,
) -> FhirResult<()> {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                match child {
                    Value::String(r) if k == "reference" => {
                        if let Some(id) = ids.get(r.as_str()) {
                            *r = id.clone();
                        } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
                            return Err(FhirError::invalid(format!(
                                "reference '{r}' names no entry's fullUrl in this Bundle"
                            )));
                        } else if let Some((t, q)) =
                            r.split_once('?').filter(|(t, _)| !t.contains('/'))
                        {
                            super::check_type(t)?;
                            let c = Criteria::parse(
                                t,
                                &form_pairs(q),
                                "a conditional reference",
                                base,
                            )?;
                            let found = one_match(tx, t, &c)?.ok_or_else(|| {
                                FhirError::PreconditionFailed(format!(
                                    "conditional reference '{r}' matches nothing"
                                ))
                            })?;
                            *r = format!("{t}/{}", found.res_id);
                        }
                    }
                    _ => rewrite_references(tx, child, ids, base)?,
                }
            }
        }
        Value::Array(a) => {
            for child in a {
                rewrite_references(tx, child, ids, base)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The single resource a criteria selects: none is `None`, more is 412.
fn one_match(tx: &mut Tx, res_type: &str, c: &Criteria) -> FhirResult<Option<Current>> {
    match matches(tx, res_type, c)?.as_slice() {
        [] => Ok(None),
        [one] => tx.read(res_type, one),
        _ => Err(FhirError::PreconditionFailed(format!(
            "the criteria match more than one {res_type}"
        ))),
    }
}

/// One entry of a batch, or of a transaction without identities to share.
fn run(
    tx: &mut Tx,
    caller: &Principal,
    e: &Entry,
    ids: &HashMap<String, String>,
    base: &str,
) -> FhirResult<OutEntry> {
    let prepared = prepare(tx, e, ids, None, base)?;
    run_prepared(tx, caller, &prepared, base)
}

fn run_prepared(tx: &mut Tx, caller: &Principal, p: &Prepared, base: &str) -> FhirResult<OutEntry> {
    let e = p.entry;
    let resource = || {
        p.resource
            .as_ref()
            .ok_or_else(|| FhirError::invalid("the entry needs a resource"))
    };
    match (&e.method, &e.target) {
        (Method::Post, Target::Type(t)) => {
            // In a transaction the criteria were settled with the ids.
            let criteria = e.if_none_exist.as_ref().filter(|_| p.id.is_none());
            match write::create(tx, t, resource()?, criteria, p.id)? {
                Created::New(w) => Ok(from_write(&w)),
                Created::Existing(c) => Ok(written(&c, "200 OK", false)),
            }
        }
        (Method::Put, Target::Instance(t, id)) => {
            write::update(tx, t, id, resource()?, e.if_match).map(|w| from_write(&w))
        }
        (Method::Put, Target::Query(t, q)) => match p.id {
            Some(id) => write::update(tx, t, id, resource()?, e.if_match).map(|w| from_write(&w)),
            None => {
                let c = Criteria::parse(t, q, "conditional update", base)?;
                write::conditional_update(tx, t, &c, resource()?, e.if_match)
                    .map(|w| from_write(&w))
            }
        },
        (Method::Patch, Target::Instance(t, id)) => {
            let patch = e
                .patch
                .as_ref()
                .ok_or_else(|| FhirError::invalid("no patch"))?;
            write::patch(tx, t, id, patch, e.if_match).map(|w| from_write(&w))
        }
        (Method::Delete, Target::Instance(t, id)) => {
            write::delete(tx, t, id, e.if_match).map(|w| deleted(Some(&w)))
        }
        (Method::Delete, Target::Query(t, q)) => {
            let c = Criteria::parse(t, q, "conditional delete", base)?;
            write::conditional_delete(tx, t, &c).map(|w| deleted(w.as_ref()))
        }
        (Method::Get, Target::Instance(t, id)) => {
            let current = tx.read_as(t, id)?;
            live(current.as_ref(), t, id).map(|c| written(c, "200 OK", true))
        }
        (Method::Get, Target::Query(t, q)) => search(tx, caller, base, t, q),
        (Method::Get, Target::Type(t)) => search(tx, caller, base, t, &[]),
        _ => Err(FhirError::invalid(
            "this request.method and request.url do not go together",
        )),
    }
}

fn search(
    tx: &mut Tx,
    caller: &Principal,
    base: &str,
    res_type: &str,
    params: &[(String, String)],
) -> FhirResult<OutEntry> {
    let mut q = SearchQuery::parse(res_type, params, false)?.local_to(base);
    q.access = tx.access().clone();
    let mut page = tx.search(res_type, &q)?;
    page.included.retain(|c| caller.may_read_type(&c.res_type));
    Ok(OutEntry {
        resource: fb::raw(fb::searchset(base, res_type, &q, page)?),
        response: Some(Response {
            status: "200 OK".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn from_write(w: &WriteOutcome) -> OutEntry {
    let status = if w.created { "201 Created" } else { "200 OK" };
    written(&w.current, status, false)
}

/// A response entry for a stored version: status, location, etag, and the
/// resource itself.
fn written(c: &Current, status: &str, is_read: bool) -> OutEntry {
    OutEntry {
        full_url: None,
        resource: fb::raw(c.body.clone()),
        response: Some(Response {
            status: status.into(),
            location: (!is_read)
                .then(|| format!("{}/{}/_history/{}", c.res_type, c.res_id, c.version)),
            etag: Some(etag(c.version)),
            last_modified: Some(c.last_updated.clone()),
            outcome: None,
        }),
        ..Default::default()
    }
}

fn deleted(w: Option<&WriteOutcome>) -> OutEntry {
    OutEntry {
        response: Some(Response {
            status: "204 No Content".into(),
            etag: w.map(|w| etag(w.current.version)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A failed batch entry: its status and OperationOutcome.
fn failed(err: &FhirError) -> OutEntry {
    OutEntry {
        response: Some(Response {
            status: format!("{} {}", err.status(), reason(err.status())),
            outcome: fb::raw(err.to_outcome().to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Property tests of `urn:uuid:` reference rewriting: whatever the entries'
/// fullUrls and however deep their references sit, every reference to an
/// entry becomes that entry's `Type/id`, nothing else changes, and a
/// reference to a fullUrl the Bundle does not have fails the Bundle.
#[cfg(test)]
mod properties {
    use super::*;
    use crate::store::Store;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::OnceLock;

    /// Rewriting reads the database only for conditional references; a
    /// transaction on an empty SQLite store is all it needs here. A file,
    /// not `:memory:`: every connection of the pool must see one database.
    fn store() -> &'static Store {
        static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
        &STORE
            .get_or_init(|| {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = dir.path().join("rewrite.db").to_string_lossy().into_owned();
                (dir, Store::open(&url).expect("store"))
            })
            .1
    }

    fn rewrite(v: &Value, ids: &HashMap<String, String>) -> FhirResult<Value> {
        store().transaction(|tx| {
            let mut out = v.clone();
            rewrite_references(tx, &mut out, ids, "http://hub.example/fhir")?;
            Ok(out)
        })
    }

    /// A resource-like tree whose `{"reference": …}` objects name entries
    /// by a placeholder `#entry:N` (resolved once the fullUrls are known),
    /// or other things: local and absolute references, left as they are.
    fn tree() -> impl Strategy<Value = Value> {
        let reference = prop_oneof![
            6 => (0usize..8).prop_map(|n| format!("#entry:{n}")),
            2 => "(Patient|Task|ServiceRequest)/[a-z0-9\\-]{1,12}",
            1 => "https://elsewhere\\.example/fhir/Patient/[0-9]{1,4}",
        ]
        .prop_map(|r| json!({"reference": r, "display": "x"}));
        let leaf = prop_oneof![
            reference,
            "[a-z ]{0,8}".prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            // A string that looks like a urn but is not a reference.
            Just(json!("urn:uuid:00000000-0000-4000-8000-000000000000")),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,8}", inner), 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The entries' fullUrls (distinct) and the ids they were given.
    fn identities() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_set(any::<u128>(), 1..8).prop_map(|set| {
            set.into_iter()
                .enumerate()
                .map(|(i, n)| {
                    let urn = format!("urn:uuid:{}", uuid::Uuid::from_u128(n));
                    let t = ["Patient", "ServiceRequest", "Task"][i % 3];
                    (
                        urn,
                        format!("{t}/{}", uuid::Uuid::from_u128(n.rotate_left(7))),
                    )
                })
                .collect()
        })
    }

    /// Turns the placeholders into real references: `(input, expected)`.
    fn resolve(v: &Value, ids: &[(String, String)], dangling: Option<u128>) -> (Value, Value) {
        match v {
            Value::Object(o) => {
                let mut input = serde_json::Map::new();
                let mut want = serde_json::Map::new();
                for (k, child) in o {
                    match (k.as_str(), child.as_str()) {
                        ("reference", Some(placeholder)) => {
                            let (i, w) = placeholder_to(placeholder, ids, dangling);
                            input.insert(k.clone(), json!(i));
                            want.insert(k.clone(), json!(w));
                        }
                        _ => {
                            let (i, w) = resolve(child, ids, dangling);
                            input.insert(k.clone(), i);
                            want.insert(k.clone(), w);
                        }
                    }
                }
                (Value::Object(input), Value::Object(want))
            }
            Value::Array(a) => {
                let (i, w) = a.iter().map(|c| resolve(c, ids, dangling)).unzip();
                (Value::Array(i), Value::Array(w))
            }
            other => (other.clone(), other.clone()),
        }
    }

    fn placeholder_to(
        p: &str,
        ids: &[(String, String)],
        dangling: Option<u128>,
    ) -> (String, String) {
        let Some(n) = p.strip_prefix("#entry:") else {
            return (p.to_string(), p.to_string());
        };
        let n: usize = n.parse().unwrap();
        match dangling {
            // Entry 7, where the tree has it, names no entry.
            Some(d) if n == 7 => {
                let urn = format!("urn:uuid:{}", uuid::Uuid::from_u128(d));
                (urn.clone(), urn)
            }
            _ => {
                let (urn, id) = &ids[n % ids.len()];
                (urn.clone(), id.clone())
            }
        }
    }

    fn references(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, c) in o {
                    match c {
                        Value::String(s) if k == "reference" => out.push(s.clone()),
                        _ => references(c, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| references(c, out)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_entry_reference_is_rewritten_and_nothing_else(
            ids in identities(),
            resource in tree(),
        ) {
            let (input, want) = resolve(&resource, &ids, None);
            let map: HashMap<String, String> = ids.iter().cloned().collect();
            let got = rewrite(&input, &map).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(&got, &want);
            let mut refs = vec![];
            references(&got, &mut refs);
            prop_assert!(refs.iter().all(|r| !r.starts_with("urn:")), "{refs:?}");
            // Rewritten references stay as they are when rewritten again.
            prop_assert_eq!(rewrite(&got, &map).ok(), Some(got));
        }

        #[test]
        fn a_reference_to_no_entry_fails(
            ids in identities(),
            resource in tree(),
            dangling in any::<u128>(),
        ) {
            prop_assume!(!ids.iter().any(|(u, _)| *u == format!("urn:uuid:{}", uuid::Uuid::from_u128(dangling))));
            let (input, _) = resolve(&resource, &ids, Some(dangling));
            let map: HashMap<String, String> = ids.iter().cloned().collect();
            let mut refs = vec![];
            references(&input, &mut refs);
            let has_dangling = refs.iter().any(|r| r.starts_with("urn:") && !map.contains_key(r));
            match rewrite(&input, &map) {
                Err(e) => {
                    prop_assert!(has_dangling, "{e:?}");
                    prop_assert_eq!(e.status(), 400);
                }
                Ok(_) => prop_assert!(!has_dangling),
            }
        }
    }
}
