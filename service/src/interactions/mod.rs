//! The FHIR RESTful interactions (http.html) on top of the store, with no
//! HTTP in sight: the API layer parses requests, calls one function here and
//! renders what it returns.

use serde_json::Value;

use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource::{self, Format};
use crate::search::SearchQuery;
use crate::store::{
    Current, Decision, HistoryQuery, HistoryScope, Page, Store, Version, WriteOutcome,
};

/// Resource types the server serves: every R4 type fhirbolt models.
pub fn is_supported_type(res_type: &str) -> bool {
    sp_hub_codec::RESOURCE_TYPES.contains(&res_type)
}

pub fn check_type(res_type: &str) -> FhirResult<()> {
    if is_supported_type(res_type) {
        Ok(())
    } else {
        Err(FhirError::NotFound(format!(
            "resource type '{}' is not supported (not an R4 resource type)",
            res_type.chars().take(80).collect::<String>()
        )))
    }
}

/// A request body, still in its wire format.
pub struct Body<'a> {
    pub bytes: &'a [u8],
    pub format: Format,
}

impl Body<'_> {
    fn parse(&self, res_type: &str) -> FhirResult<Value> {
        resource::parse(self.bytes, self.format, res_type)
    }
}

/// Version precondition from `If-Match`.
fn check_version(current: Option<&Current>, if_match: Option<i32>) -> FhirResult<()> {
    match (if_match, current) {
        (None, _) => Ok(()),
        (Some(v), Some(cur)) if !cur.deleted && cur.version == v => Ok(()),
        (Some(v), Some(cur)) if !cur.deleted => Err(FhirError::PreconditionFailed(format!(
            "If-Match W/\"{v}\" does not match the current version W/\"{}\"",
            cur.version
        ))),
        (Some(v), _) => Err(FhirError::PreconditionFailed(format!(
            "If-Match W/\"{v}\" given, but the resource has no current version"
        ))),
    }
}

pub enum Created {
    New(WriteOutcome),
    /// Conditional create found exactly one match: nothing was written.
    Existing(Current),
}

/// create, or conditional create when `if_none_exist` holds criteria.
pub fn create(
    store: &Store,
    res_type: &str,
    body: Body,
    if_none_exist: Option<&[(String, String)]>,
) -> FhirResult<Created> {
    let resource = body.parse(res_type)?;
    // The server assigns the id on create; any id in the body is ignored
    // (http.html#create).
    let post = || Decision::Put {
        method: "POST",
        resource: resource.clone(),
    };
    let Some(criteria) = if_none_exist else {
        let id = uuid::Uuid::new_v4().to_string();
        return store.write(res_type, &id, |_| Ok(post())).map(Created::New);
    };
    let c = Criteria::parse(res_type, criteria, "If-None-Exist")?;
    store.serialized(&c.lock_key, |tx| {
        match tx.matching_ids(res_type, &c.query, 2)?.as_slice() {
            [] => {
                let id = uuid::Uuid::new_v4().to_string();
                tx.write(res_type, &id, |_| Ok(post())).map(Created::New)
            }
            [one] => tx
                .read(res_type, one)?
                .map(Created::Existing)
                .ok_or_else(|| FhirError::Internal("a matched resource vanished".into())),
            _ => Err(FhirError::PreconditionFailed(format!(
                "If-None-Exist matched more than one {res_type}; the criteria must select at most one"
            ))),
        }
    })
}
/// update (and update-as-create with a client-chosen id).
pub fn update(
    store: &Store,
    res_type: &str,
    id: &str,
    body: Body,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    let resource = body.parse(res_type)?;
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => {}
        Some(body_id) => {
            return Err(FhirError::invalid_at(
                format!(
                    "the id in the body ('{body_id}') does not match the id in the URL ('{id}')"
                ),
                format!("{res_type}.id"),
            ))
        }
        None => {
            return Err(FhirError::invalid_at(
                format!("an update must carry the id from the URL ('{id}') in the body"),
                format!("{res_type}.id"),
            ))
        }
    }
    store.write(res_type, id, put(&resource, if_match))
}

/// What a PUT does to the current row: check If-Match, write a version.
fn put(
    resource: &Value,
    if_match: Option<i32>,
) -> impl Fn(Option<&Current>) -> FhirResult<Decision> + '_ {
    move |current| {
        check_version(current, if_match)?;
        Ok(Decision::Put {
            method: "PUT",
            resource: resource.clone(),
        })
    }
}
/// conditional update: PUT /Type?criteria.
pub fn conditional_update(
    store: &Store,
    res_type: &str,
    criteria: &[(String, String)],
    body: Body,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    let resource = body.parse(res_type)?;
    let body_id = resource.get("id").and_then(Value::as_str);
    let c = Criteria::parse(res_type, criteria, "conditional update")?;
    store.serialized(&c.lock_key, |tx| {
        let id = match (tx.matching_ids(res_type, &c.query, 2)?.as_slice(), body_id) {
            ([], Some(body_id)) => body_id.to_string(),
            ([], None) => uuid::Uuid::new_v4().to_string(),
            ([one], Some(body_id)) if one != body_id => {
                return Err(FhirError::invalid_at(
                    format!("the criteria match {res_type}/{one}, but the body has id '{body_id}'"),
                    format!("{res_type}.id"),
                ))
            }
            ([one], _) => one.clone(),
            _ => {
                return Err(FhirError::PreconditionFailed(format!(
                "the criteria match more than one {res_type}; conditional update needs at most one"
            )))
            }
        };
        tx.write(res_type, &id, put(&resource, if_match))
    })
}
/// JSON Patch (RFC 6902) applied to the current version.
pub fn patch(
    store: &Store,
    res_type: &str,
    id: &str,
    patch_doc: &[u8],
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    let patch: json_patch::Patch = serde_json::from_slice(patch_doc).map_err(|e| {
        FhirError::invalid(format!(
            "the body is not a JSON Patch document (RFC 6902): {e}"
        ))
    })?;
    store.write(res_type, id, |current| {
        let current = live(current, res_type, id)?;
        check_version(Some(current), if_match)?;
        let mut doc: Value = serde_json::from_str(&current.body)
            .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?;
        json_patch::patch(&mut doc, &patch).map_err(|e| FhirError::Unprocessable {
            message: format!("the patch cannot be applied: {e}"),
            expression: None,
        })?;
        // The patched document must still be a valid resource, of the same
        // type and id, as if it had been PUT.
        let bytes = serde_json::to_vec(&doc).map_err(|e| FhirError::Internal(e.to_string()))?;
        let patched = resource::parse(&bytes, Format::Json, res_type).map_err(unprocessable)?;
        if patched.get("id").and_then(Value::as_str) != Some(id) {
            return Err(FhirError::Unprocessable {
                message: "a patch may not change or remove the resource id".into(),
                expression: Some(format!("{res_type}.id")),
            });
        }
        Ok(Decision::Put {
            method: "PATCH",
            resource: patched,
        })
    })
}

fn unprocessable(e: FhirError) -> FhirError {
    match e {
        FhirError::Invalid {
            message,
            expression,
        }
        | FhirError::Structure {
            message,
            expression,
        } => FhirError::Unprocessable {
            message: format!("the patched resource is not valid: {message}"),
            expression,
        },
        other => other,
    }
}

/// delete. Deleting what is already deleted changes nothing and succeeds.
pub fn delete(
    store: &Store,
    res_type: &str,
    id: &str,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    store.write(res_type, id, remove(res_type, id, if_match))
}

/// What a DELETE does to the current row.
fn remove<'a>(
    res_type: &'a str,
    id: &'a str,
    if_match: Option<i32>,
) -> impl Fn(Option<&Current>) -> FhirResult<Decision> + 'a {
    move |current| match current {
        None => Err(not_found(res_type, id)),
        Some(cur) if cur.deleted && if_match.is_none() => Ok(Decision::Unchanged),
        Some(cur) => {
            check_version(Some(cur), if_match)?;
            Ok(Decision::Delete)
        }
    }
}
/// conditional delete: 0 matches is success, more than one is refused.
pub fn conditional_delete(
    store: &Store,
    res_type: &str,
    criteria: &[(String, String)],
) -> FhirResult<Option<WriteOutcome>> {
    let c = Criteria::parse(res_type, criteria, "conditional delete")?;
    store.serialized(&c.lock_key, |tx| {
        match tx.matching_ids(res_type, &c.query, 2)?.as_slice() {
            [] => Ok(None),
            [one] => tx.write(res_type, one, remove(res_type, one, None)).map(Some),
            _ => Err(FhirError::PreconditionFailed(format!(
                "the criteria match more than one {res_type}; conditional delete removes at most one"
            ))),
        }
    })
}
/// The search criteria of a conditional interaction, and the lock that
/// keeps two requests with the same criteria from interleaving.
struct Criteria {
    query: SearchQuery,
    lock_key: String,
}

impl Criteria {
    fn parse(res_type: &str, criteria: &[(String, String)], what: &str) -> FhirResult<Criteria> {
        let query = SearchQuery::parse(criteria, crate::fhir::summary::has_identifier(res_type))?;
        if !query.has_criteria() {
            return Err(FhirError::invalid(format!(
                "{what} needs search criteria this server supports (_id, _lastUpdated, identifier)"
            )));
        }
        let mut applied = query.applied.clone();
        applied.sort();
        let pairs: Vec<String> = applied.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(Criteria {
            lock_key: format!("{res_type}?{}", pairs.join("&")),
            query,
        })
    }
}
fn not_found(res_type: &str, id: &str) -> FhirError {
    FhirError::NotFound(format!("{res_type}/{id} is not known"))
}

fn live<'a>(current: Option<&'a Current>, res_type: &str, id: &str) -> FhirResult<&'a Current> {
    match current {
        None => Err(not_found(res_type, id)),
        Some(cur) if cur.deleted => Err(FhirError::Gone(format!(
            "{res_type}/{id} was deleted (version {})",
            cur.version
        ))),
        Some(cur) => Ok(cur),
    }
}

pub fn read(store: &Store, res_type: &str, id: &str) -> FhirResult<Current> {
    resource::check_id(id)?;
    let current = store.read(res_type, id)?;
    live(current.as_ref(), res_type, id).cloned()
}

pub fn vread(store: &Store, res_type: &str, id: &str, vid: &str) -> FhirResult<Version> {
    resource::check_id(id)?;
    let version: i32 =
        vid.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
            FhirError::NotFound(format!("{res_type}/{id} has no version '{vid}'"))
        })?;
    match store.vread(res_type, id, version)? {
        None => Err(FhirError::NotFound(format!(
            "{res_type}/{id} has no version {version}"
        ))),
        Some(v) if v.body.is_none() => Err(FhirError::Gone(format!(
            "version {version} of {res_type}/{id} is its deletion"
        ))),
        Some(v) => Ok(v),
    }
}

pub fn search(
    store: &Store,
    res_type: &str,
    params: &[(String, String)],
) -> FhirResult<(SearchQuery, Page<Current>)> {
    let q = SearchQuery::parse(params, crate::fhir::summary::has_identifier(res_type))?;
    let page = store.search(res_type, &q)?;
    Ok((q, page))
}

pub fn history(store: &Store, q: &HistoryQuery) -> FhirResult<Page<Version>> {
    if let HistoryScope::Instance(res_type, id) = &q.scope {
        // A deleted resource still has a history; one never written has none.
        if store.read(res_type, id)?.is_none() {
            return Err(not_found(res_type, id));
        }
    }
    store.history(q)
}

/// Parses `_since`, `_at`, `_count` and the paging cursor of a history request.
pub fn history_query(scope: HistoryScope, params: &[(String, String)]) -> FhirResult<HistoryQuery> {
    let mut q = HistoryQuery {
        scope,
        since: None,
        at: None,
        count: crate::search::DEFAULT_COUNT,
        before_seq: None,
    };
    let bad_date = |name: &str, value: &str| {
        FhirError::invalid_at(
            format!("{name} '{value}' is not a FHIR instant or date"),
            name,
        )
    };
    for (name, value) in params {
        crate::search::check_text(name, value)?;
        match name.as_str() {
            "_since" => {
                let (low, _) =
                    crate::search::date::range(value).ok_or_else(|| bad_date("_since", value))?;
                q.since = Some(crate::fhir::instant::format(low));
            }
            "_at" => {
                let (low, high) =
                    crate::search::date::range(value).ok_or_else(|| bad_date("_at", value))?;
                q.at = Some((
                    crate::fhir::instant::format(low),
                    crate::fhir::instant::format(high),
                ));
            }
            "_count" => q.count = crate::search::parse_count(value)?,
            "_cursor" => {
                let seq = crate::search::decode_cursor(value, "seq")?;
                q.before_seq = Some(seq.parse().map_err(|_| {
                    FhirError::invalid_at(
                        "_cursor is not a paging link this server issued",
                        "_cursor",
                    )
                })?);
            }
            _ => {}
        }
    }
    Ok(q)
}
