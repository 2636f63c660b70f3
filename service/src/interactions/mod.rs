//! The FHIR RESTful interactions (http.html) on top of the store, with no
//! HTTP in sight: the API layer parses requests, calls one function here and
//! renders what it returns. Every write runs as one store transaction
//! through the cores in `write.rs`, which transaction bundles share.

mod bundle;
pub mod trail;
pub(crate) mod write;

pub use bundle::{bundle, BundleResult};

use serde_json::Value;

use crate::auth::access::Access;
use crate::auth::Principal;
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource::{self, Format};
use crate::search::SearchQuery;
use crate::store::{Current, HistoryQuery, HistoryScope, Page, Store, Tx, Version, WriteOutcome};

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

pub enum Created {
    New(WriteOutcome),
    /// Conditional create found exactly one match: nothing was written.
    Existing(Current),
}

/// The search criteria of a conditional interaction, and the lock that
/// keeps two requests with the same criteria from interleaving.
pub(crate) struct Criteria {
    query: SearchQuery,
    lock_key: String,
}

impl Criteria {
    /// `base` is this server's URL: absolute references to it are local
    /// ones, as in a search.
    pub(crate) fn parse(
        res_type: &str,
        criteria: &[(String, String)],
        what: &str,
        base: &str,
    ) -> FhirResult<Criteria> {
        // Criteria the server does not understand must not be ignored here: a
        // conditional write would then act on the wrong resources.
        let query = SearchQuery::parse(res_type, criteria, true)?.local_to(base);
        if !query.has_criteria() {
            return Err(FhirError::invalid(format!("{what} needs search criteria")));
        }
        let mut applied = query.applied.clone();
        applied.sort();
        // The same criteria written with absolute or local references take
        // the same lock.
        let ours = format!("{}/", base.trim_end_matches('/'));
        let pairs: Vec<String> = applied
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace(&ours, "")))
            .collect();
        Ok(Criteria {
            lock_key: format!("{res_type}?{}", pairs.join("&")),
            query,
        })
    }
}

/// create, or conditional create when `if_none_exist` holds criteria.
pub fn create(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    body: Body,
    if_none_exist: Option<&[(String, String)]>,
    base: &str,
) -> FhirResult<Created> {
    let resource = body.parse(res_type)?;
    let criteria = if_none_exist
        .map(|c| Criteria::parse(res_type, c, "If-None-Exist", base))
        .transpose()?;
    transaction(store, caller, |tx| {
        write::create(tx, res_type, &resource, criteria.as_ref(), None)
    })
}

/// update (and update-as-create with a client-chosen id).
pub fn update(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    id: &str,
    body: Body,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    let resource = body.parse(res_type)?;
    write::check_body_id(&resource, res_type, id)?;
    transaction(store, caller, |tx| {
        write::update(tx, res_type, id, &resource, if_match)
    })
}

/// conditional update: PUT /Type?criteria.
pub fn conditional_update(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    criteria: &[(String, String)],
    body: Body,
    if_match: Option<i32>,
    base: &str,
) -> FhirResult<WriteOutcome> {
    let resource = body.parse(res_type)?;
    let c = Criteria::parse(res_type, criteria, "conditional update", base)?;
    transaction(store, caller, |tx| {
        write::conditional_update(tx, res_type, &c, &resource, if_match)
    })
}

/// JSON Patch (RFC 6902) applied to the current version.
pub fn patch(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    id: &str,
    patch_doc: &[u8],
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    let patch = write::parse_patch(patch_doc)?;
    transaction(store, caller, |tx| {
        write::patch(tx, res_type, id, &patch, if_match)
    })
}

/// delete. Deleting what is already deleted changes nothing and succeeds.
pub fn delete(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    id: &str,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    resource::check_id(id)?;
    transaction(store, caller, |tx| {
        write::delete(tx, res_type, id, if_match)
    })
}

/// conditional delete: 0 matches is success, more than one is refused.
pub fn conditional_delete(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    criteria: &[(String, String)],
    base: &str,
) -> FhirResult<Option<WriteOutcome>> {
    let c = Criteria::parse(res_type, criteria, "conditional delete", base)?;
    transaction(store, caller, |tx| {
        write::conditional_delete(tx, res_type, &c)
    })
}

/// One store transaction running `f`; before it commits, every SP referral
/// it created gets a Task if none carries it out yet.
/// It runs in the caller's view: every resource it leaves written must be
/// one the caller can see (a GP's referral names its own practice, a VCS
/// keeps a Task it works inside its own organisation), else nothing is.
pub(crate) fn transaction<T>(
    store: &Store,
    caller: &Principal,
    f: impl Fn(&mut Tx) -> FhirResult<T>,
) -> FhirResult<T> {
    let out = store.transaction_as(&Access::of(caller), |tx| {
        let out = f(tx)?;
        write::add_referral_tasks(tx)?;
        // Before the view check and the Provenance: the message back must
        // be within the caller's view and is named with the writes.
        write::message_backs(tx)?;
        if let Some((t, id)) = tx.written_out_of_view()?.into_iter().next() {
            return Err(FhirError::Forbidden(format!(
                "{t}/{id} would be outside the records of {}: a write must stay within what the client's organisation can see",
                caller.organization
            )));
        }
        write::provenance(tx, caller)?;
        // Notifications commit with the changes they announce, or neither does.
        crate::notify::after_writes(tx)?;
        // The audit record commits with the write, or neither does.
        if let Some(request) = &caller.request {
            let written: Vec<String> = tx
                .written()
                .iter()
                .map(|(t, id, v)| format!("{t}/{id}/_history/{v}"))
                .collect();
            tx.audit(&crate::audit::Record::new(
                &caller.client_id,
                &caller.organization,
                request,
                written.join(" "),
                0,
            ))?;
        }
        Ok(out)
    })?;
    if let Some(request) = &caller.request {
        request
            .recorded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    crate::notify::wake();
    Ok(out)
}

pub(crate) fn not_found(res_type: &str, id: &str) -> FhirError {
    FhirError::NotFound(format!("{res_type}/{id} is not known"))
}

pub(crate) fn live<'a>(
    current: Option<&'a Current>,
    res_type: &str,
    id: &str,
) -> FhirResult<&'a Current> {
    match current {
        None => Err(not_found(res_type, id)),
        Some(cur) if cur.deleted => Err(FhirError::Gone(format!(
            "{res_type}/{id} was deleted (version {})",
            cur.version
        ))),
        Some(cur) => Ok(cur),
    }
}

pub fn read(caller: &Principal, store: &Store, res_type: &str, id: &str) -> FhirResult<Current> {
    resource::check_id(id)?;
    let current = store.read_as(&Access::of(caller), res_type, id)?;
    live(current.as_ref(), res_type, id).cloned()
}

/// Versions of a resource the caller cannot see now are not shown either.
pub fn vread(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    id: &str,
    vid: &str,
) -> FhirResult<Version> {
    resource::check_id(id)?;
    let access = Access::of(caller);
    if access.org().is_some() && store.read_as(&access, res_type, id)?.is_none() {
        return Err(not_found(res_type, id));
    }
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
        Some(mut v) => {
            v.body = v.body.map(|b| access.redact(res_type, b));
            Ok(v)
        }
    }
}

/// search; `strict` is `Prefer: handling=strict` (unknown parameters are
/// then an error rather than ignored); `base` is this server's URL, so
/// absolute references to it match local ones.
pub fn search(
    caller: &Principal,
    store: &Store,
    res_type: &str,
    params: &[(String, String)],
    strict: bool,
    base: &str,
) -> FhirResult<(SearchQuery, Page<Current>)> {
    caller.may_search(res_type, params)?;
    let mut q = SearchQuery::parse(res_type, params, strict)?.local_to(base);
    q.access = Access::of(caller);
    let mut page = store.search(res_type, &q)?;
    // Included resources of a type the token may not read are left out.
    page.included.retain(|c| caller.may_read_type(&c.res_type));
    Ok((q, page))
}

pub fn history(store: &Store, q: &HistoryQuery) -> FhirResult<Page<Version>> {
    if let HistoryScope::Instance(res_type, id) = &q.scope {
        // A deleted resource still has a history; one never written has none
        // (nor, for an organisation, one outside its view).
        let known = match q.access.org() {
            None => store.read(res_type, id)?.is_some(),
            Some(_) => store.read_as(&q.access, res_type, id)?.is_some(),
        };
        if !known {
            return Err(not_found(res_type, id));
        }
    }
    store.history(q)
}

/// Parses `_since`, `_at`, `_count` and the paging cursor of a history request.
pub fn history_query(
    caller: &Principal,
    scope: HistoryScope,
    params: &[(String, String)],
) -> FhirResult<HistoryQuery> {
    let mut q = HistoryQuery {
        access: Access::of(caller),
        scope,
        since: None,
        at: None,
        count: crate::search::DEFAULT_COUNT,
        before_seq: None,
        after_tick: None,
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
            "_feed" => q.after_tick = Some(crate::search::parse_feed(value)?),
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
