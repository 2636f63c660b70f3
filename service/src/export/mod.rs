//! FHIR Bulk Data export (Bulk Data Access IG v2): `$export` at system and
//! Group level, without HTTP. This module owns what an export request
//! means (its parameters, which types a caller gets, a Group's patients and
//! their compartment), the job's life (kick-off, the counting step that is
//! its progress, status, cancel, expiry) and the NDJSON stream of one
//! output file. The job rows and the SQL are in `store/export.rs`.
//!
//! An export shows the data at one moment: the change feed's position
//! (tick) when it was kicked off. Nothing is copied then. A background step
//! counts each type's resources as of that tick (the manifest's counts,
//! and the progress a status request reports); a file download reads the
//! resources from the database, page by page, each in its version at the
//! tick. So the output holds no more in memory than one page, needs no disk,
//! and any replica can serve any job.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::web::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::{json, Map, Value};

use crate::auth::access::{Access, OrgAccess};
use crate::auth::{Principal, Role};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::store::{ExportJob, ExportSlice, Store};

/// `_outputFormat` values meaning NDJSON (the IG's abbreviations included).
const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Parameters of the IG this server does not implement: refused rather
/// than ignored, since ignoring them would export more than was asked.
const UNSUPPORTED: &[&str] = &[
    "_typeFilter",
    "_elements",
    "patient",
    "includeAssociatedData",
];

/// A Group export's types (a patient's records on the referral trail) and
/// the reference parameter that ties each to its patient (`None`: the
/// Patient itself).
pub const COMPARTMENT: &[(&str, Option<&str>)] = &[
    ("Patient", None),
    ("ServiceRequest", Some("subject")),
    ("Task", Some("subject")),
    ("Encounter", Some("subject")),
    ("Procedure", Some("subject")),
    ("Observation", Some("subject")),
    ("Communication", Some("subject")),
    ("Consent", Some("patient")),
    ("QuestionnaireResponse", Some("subject")),
];

/// Resources a file download reads from the database at a time.
const PAGE: i64 = 500;

/// A job's counting step renews its lease each type; a status request that
/// finds the lease run out (the replica stopped) takes the job over, and
/// the step that held it stops at its next save.
const LEASE_SECS: i64 = 60;

/// How long a job (and its files) can be read after kick-off.
const KEEP_SECS: i64 = 24 * 3600;

/// Jobs one client may have counting at once; more is 429.
const MAX_COUNTING: i64 = 5;

/// An export request, checked.
#[derive(Debug, PartialEq)]
pub struct Request {
    /// The types to export, each readable by the caller's token.
    pub types: Vec<String>,
    /// Types `_type` asked for that the token may not read: left out, and
    /// said so in the kick-off response.
    pub left_out: Vec<String>,
    /// `_since` in the stored instant form.
    pub since: Option<String>,
}

/// Checks the parameters of a kick-off request. `group`: a Group export,
/// whose types are the patient compartment's.
pub fn parse(caller: &Principal, params: &[(String, String)], group: bool) -> FhirResult<Request> {
    let mut asked: Option<Vec<String>> = None;
    let mut since = None;
    for (name, value) in params {
        match name.as_str() {
            "_outputFormat" if !OUTPUT_FORMATS.contains(&value.trim()) => {
                return Err(FhirError::invalid_at(
                    format!(
                        "_outputFormat '{}' is not supported; use {}",
                        clip(value),
                        OUTPUT_FORMATS.join(", ")
                    ),
                    "_outputFormat",
                ));
            }
            "_type" => {
                let list = asked.get_or_insert_with(Vec::new);
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    check_type(t, group)?;
                    if !list.iter().any(|x| x == t) {
                        list.push(t.to_string());
                    }
                }
            }
            "_since" => since = Some(parse_instant(value)?),
            n if UNSUPPORTED.contains(&n) => {
                return Err(FhirError::invalid_at(
                    format!("the {n} parameter of $export is not supported by this server"),
                    n,
                ))
            }
            _ => {}
        }
    }
    let explicit = asked.is_some();
    let candidates: Vec<String> = match asked {
        Some(list) if !list.is_empty() => list,
        Some(_) => {
            return Err(FhirError::invalid_at(
                "_type names no resource type",
                "_type",
            ))
        }
        None if group => COMPARTMENT.iter().map(|(t, _)| t.to_string()).collect(),
        None => sp_hub_codec::RESOURCE_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect(),
    };
    let (types, unreadable): (Vec<String>, Vec<String>) = candidates
        .into_iter()
        .partition(|t| caller.may_read_type(t));
    if types.is_empty() {
        return Err(FhirError::Forbidden(if explicit {
            format!(
                "the token's scopes allow reading none of the types in _type ({})",
                unreadable.join(", ")
            )
        } else {
            "the token's scopes allow reading no resource type".into()
        }));
    }
    Ok(Request {
        types,
        // Without `_type` the unreadable types are simply not asked for.
        left_out: if explicit { unreadable } else { vec![] },
        since,
    })
}

fn check_type(t: &str, group: bool) -> FhirResult<()> {
    if !crate::interactions::is_supported_type(t) {
        return Err(FhirError::invalid_at(
            format!("_type '{}' is not an R4 resource type", clip(t)),
            "_type",
        ));
    }
    if group && !COMPARTMENT.iter().any(|(c, _)| *c == t) {
        return Err(FhirError::invalid_at(
            format!(
                "_type '{t}' is not exported for a Group; a Group export has {}",
                COMPARTMENT
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "_type",
        ));
    }
    Ok(())
}

/// `_since` is a FHIR instant: a date, a time to the second and a zone.
fn parse_instant(value: &str) -> FhirResult<String> {
    let bad = || {
        FhirError::invalid_at(
            format!(
                "_since '{}' is not a FHIR instant (e.g. 2026-11-26T09:30:00Z)",
                clip(value)
            ),
            "_since",
        )
    };
    // RFC 3339 also allows a lower-case 't' and 'z' and leap seconds past
    // what FHIR's pattern does; the shape check keeps to FHIR's.
    let b = value.as_bytes();
    if b.len() < 20
        || b[10] != b'T'
        || !(value.ends_with('Z') || b[b.len() - 6] == b'+' || b[b.len() - 6] == b'-')
    {
        return Err(bad());
    }
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok(crate::fhir::instant::format(t))
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Starts a job: fixes its moment (the feed position, then the time, so
/// every version at or before the tick was written before
/// `transactionTime`), resolves a Group's patients, stores the job. The
/// counting step is started by `start_counting`.
pub fn kick_off(
    caller: &Principal,
    store: &Store,
    request: &Request,
    group: Option<&str>,
    request_url: &str,
) -> FhirResult<ExportJob> {
    let now = unix_now();
    store.drop_expired_exports(now)?;
    if store.counting_exports(&caller.client_id, now)? >= MAX_COUNTING {
        return Err(FhirError::TooManyRequests {
            message: format!(
                "this client has {MAX_COUNTING} exports in progress; wait for one to finish or cancel one"
            ),
            retry_after: 5,
        });
    }
    let members = match group {
        Some(id) => members(&crate::interactions::read(caller, store, "Group", id)?.body),
        None => vec![],
    };
    let tick = store.feed_position()?;
    let job = ExportJob {
        id: uuid::Uuid::new_v4().to_string(),
        client_id: caller.client_id.clone(),
        organization: caller.organization.clone(),
        role: caller.role.as_str().to_string(),
        request: request_url.to_string(),
        transaction_time: crate::fhir::instant::now(),
        tick,
        since: request.since.clone(),
        group_id: group.map(str::to_string),
        types: request.types.join(","),
        counts: "{}".into(),
        state: "counting".into(),
        error: None,
        lease_until: lease_from(now),
        expires: now + KEEP_SECS,
    };
    store.insert_export(&job, &members)?;
    Ok(job)
}

/// The Patient ids of a Group's active members (`member.entity` as a
/// local `Patient/id` reference; other member types are not patients).
fn members(group_body: &str) -> Vec<String> {
    let Ok(group) = serde_json::from_str::<Value>(group_body) else {
        return vec![];
    };
    let mut ids: Vec<String> = group["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["inactive"] != Value::Bool(true))
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Patient/"))
        .filter(|id| crate::fhir::resource::check_id(id).is_ok())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Where a job is, for its status request.
pub enum Status {
    /// Still counting: how far, for `X-Progress`.
    Counting(String),
    Done(Box<ExportJob>),
    Failed(String),
}

/// The status of the caller's job `id` (another client's is not found).
/// A counting job whose replica stopped is taken over here (`Some(lease)`:
/// the caller should `start_counting` it under that lease).
pub fn status(caller: &Principal, store: &Store, id: &str) -> FhirResult<(Status, Option<i64>)> {
    let job = own_job(caller, store, id)?;
    let now = unix_now();
    match job.state.as_str() {
        "done" => Ok((Status::Done(Box::new(job)), None)),
        "failed" => Ok((
            Status::Failed(job.error.unwrap_or_else(|| "the export failed".into())),
            None,
        )),
        _ => {
            let lease = lease_from(now);
            let resume = (job.lease_until < now
                && store.claim_export(id, job.lease_until, lease)?)
            .then_some(lease);
            let total = job.types.split(',').count();
            let done = counts(&job).len();
            Ok((
                Status::Counting(format!("counted {done} of {total} resource types")),
                resume,
            ))
        }
    }
}

/// Cancels (deletes) the caller's job `id`.
pub fn cancel(caller: &Principal, store: &Store, id: &str) -> FhirResult<()> {
    if store.delete_export(id, &caller.client_id)? {
        Ok(())
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: &str) -> FhirError {
    FhirError::NotFound(format!(
        "there is no export job '{}' of this client (it may have been cancelled or have expired)",
        clip(id)
    ))
}

fn own_job(caller: &Principal, store: &Store, id: &str) -> FhirResult<ExportJob> {
    store
        .export_job(id, &caller.client_id, unix_now())?
        .ok_or_else(|| not_found(id))
}

/// The counts a job has so far, type → number.
fn counts(job: &ExportJob) -> Map<String, Value> {
    serde_json::from_str(&job.counts).unwrap_or_default()
}

/// The complete-status manifest of a finished job; `base` is the server's
/// URL as the client addresses it. Types with no resources have no file.
pub fn manifest(job: &ExportJob, base: &str) -> Value {
    let counts = counts(job);
    let output: Vec<Value> = job
        .types
        .split(',')
        .filter_map(|t| {
            let n = counts.get(t)?.as_i64().filter(|n| *n > 0)?;
            Some(json!({"type": t, "url": format!("{base}/$export-file/{}/{t}", job.id), "count": n}))
        })
        .collect();
    json!({
        "transactionTime": job.transaction_time,
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
    })
}

/// Whose view a job's counts take: its client's at kick-off.
fn access_of(job: &ExportJob) -> Access {
    match Role::parse(&job.role) {
        Ok(Role::Admin) => Access::All,
        Ok(role) => Access::Org(OrgAccess {
            role,
            org: job
                .organization
                .strip_prefix("Organization/")
                .unwrap_or(&job.organization)
                .to_string(),
        }),
        // A role this binary does not know sees nothing rather than all.
        Err(_) => Access::Org(OrgAccess {
            role: Role::Gp,
            org: String::new(),
        }),
    }
}

fn slice<'a>(job: &'a ExportJob, res_type: &'a str, access: &'a Access) -> ExportSlice<'a> {
    let members = job.group_id.as_ref().map(|_| {
        let param = COMPARTMENT
            .iter()
            .find(|(t, _)| *t == res_type)
            .and_then(|(_, p)| *p);
        (job.id.as_str(), param)
    });
    ExportSlice {
        res_type,
        tick: job.tick,
        since: job.since.as_deref(),
        members,
        access,
    }
}

/// A pause before each type is counted (`SP_HUB_EXPORT_PAUSE_MS`, default
/// none): spreads a large export's counting so it does not crowd out
/// interactive requests on a busy database.
fn pause() -> Duration {
    static PAUSE: OnceLock<Duration> = OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var("SP_HUB_EXPORT_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis)
    })
}

/// A counting lease taken at `now`: long enough for one type's count after
/// the pause.
fn lease_from(now: i64) -> i64 {
    now + LEASE_SECS + pause().as_secs() as i64
}

/// Runs the counting step of job `id`, under its lease `held`, in the
/// background of this replica.
pub fn start_counting(store: Store, id: String, held: i64) {
    actix_web::rt::spawn(async move {
        let mut held = held;
        if let Err(e) = count(&store, &id, &mut held).await {
            tracing::error!(job = %id, error = %e, "export counting failed");
            let message = format!("the export could not be counted: {e}");
            let ended = store
                .run(move |s| s.end_export(&id, held, "failed", Some(&message)))
                .await;
            if let Err(e) = ended {
                tracing::error!(error = %e, "could not mark the export failed");
            }
        }
    });
}

/// Counts each type not counted yet (a job taken over keeps what the
/// stopped replica counted), saving and renewing the lease `held` after
/// each; stops if the job is gone or was taken over.
async fn count(store: &Store, id: &str, held: &mut i64) -> FhirResult<()> {
    let id = id.to_string();
    let i = id.clone();
    let Some(job) = store.run(move |s| s.export_job_any(&i)).await? else {
        return Ok(());
    };
    let mut counts = counts(&job);
    let types: Vec<String> = job.types.split(',').map(str::to_string).collect();
    for t in types {
        if counts.contains_key(&t) {
            continue;
        }
        if !pause().is_zero() {
            actix_web::rt::time::sleep(pause()).await;
        }
        let (j, ty) = (job.clone(), t.clone());
        let n = store
            .run(move |s| {
                let access = access_of(&j);
                s.export_count(&slice(&j, &ty, &access))
            })
            .await?;
        counts.insert(t, n.into());
        let (i, text) = (id.clone(), Value::Object(counts.clone()).to_string());
        let (was, lease) = (*held, lease_from(unix_now()));
        if !store
            .run(move |s| s.export_progress(&i, &text, was, lease))
            .await?
        {
            return Ok(());
        }
        *held = lease;
    }
    let was = *held;
    store
        .run(move |s| s.end_export(&id, was, "done", None))
        .await
}

/// The caller's finished job `id`, if it has a `res_type` file (else 404).
pub fn open_file(
    caller: &Principal,
    store: &Store,
    id: &str,
    res_type: &str,
) -> FhirResult<ExportJob> {
    let job = own_job(caller, store, id)?;
    let has_file = job.state == "done"
        && counts(&job)
            .get(res_type)
            .and_then(Value::as_i64)
            .is_some_and(|n| n > 0);
    if !has_file {
        return Err(FhirError::NotFound(format!(
            "export job '{}' has no {} file",
            clip(id),
            clip(res_type)
        )));
    }
    Ok(job)
}

/// The NDJSON of one output file (one resource a line), read from the
/// database a page at a time as the client takes it, each page on the
/// blocking pool. The view is the caller's now (`access`): a resource that
/// left it since kick-off is not sent, so a file can hold fewer lines than
/// its count.
pub fn lines(
    store: Store,
    access: Access,
    job: ExportJob,
    res_type: String,
) -> impl Stream<Item = FhirResult<Bytes>> {
    // State: the id the next page starts after (`Some(None)`: the start);
    // `None` once done.
    let start: Option<Option<String>> = Some(None);
    futures_util::stream::unfold(start, move |state| {
        let (store, job, access, res_type) =
            (store.clone(), job.clone(), access.clone(), res_type.clone());
        async move {
            let mut after = state?;
            // A page can hold no resource and still not be the last (all
            // its rows deleted or older than `_since`): read on to one
            // that has some, so no empty chunk is sent.
            loop {
                let (job, access, res_type) = (job.clone(), access.clone(), res_type.clone());
                let page = store
                    .run(move |s| {
                        s.export_page(&slice(&job, &res_type, &access), after.as_deref(), PAGE)
                    })
                    .await;
                let page = match page {
                    Err(e) => return Some((Err(e), None)),
                    Ok(page) => page,
                };
                if page.lines.is_empty() {
                    after = Some(page.next?);
                    continue;
                }
                let mut buf = BytesMut::new();
                for body in &page.lines {
                    buf.extend_from_slice(body.as_bytes());
                    buf.extend_from_slice(b"\n");
                }
                return Some((Ok(buf.freeze()), page.next.map(Some)));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scopes::Scopes;

    fn caller(scopes: &str) -> Principal {
        Principal {
            client_id: "c".into(),
            organization: "Organization/o".into(),
            role: Role::Pcn,
            scopes: Scopes::parse(scopes).unwrap(),
            request: None,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn types_follow_the_request_and_the_scopes() {
        let c = caller("system/Patient.rs system/Task.rs");
        let r = parse(&c, &params(&[("_type", "Task,Patient,Observation")]), false).unwrap();
        assert_eq!(r.types, vec!["Task", "Patient"]);
        assert_eq!(r.left_out, vec!["Observation"]);
        assert!(parse(&c, &params(&[("_type", "Observation")]), false).is_err());
        let all = parse(&c, &[], false).unwrap();
        assert_eq!(all.types, vec!["Patient", "Task"]);
        assert!(all.left_out.is_empty());
        let group = parse(&caller("system/*.rs"), &[], true).unwrap();
        assert_eq!(group.types.len(), COMPARTMENT.len());
        assert!(parse(
            &caller("system/*.rs"),
            &params(&[("_type", "Organization")]),
            true
        )
        .is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let c = caller("system/*.rs");
        for (k, v) in [
            ("_outputFormat", "text/csv"),
            ("_type", "Nonsense"),
            ("_type", ","),
            ("_since", "2026-11-26"),
            ("_since", "2026-11-26T10:00:00"),
            ("_since", "yesterday"),
            ("_typeFilter", "Task?status=requested"),
        ] {
            assert!(parse(&c, &params(&[(k, v)]), false).is_err(), "{k}={v}");
        }
        for f in OUTPUT_FORMATS {
            assert!(parse(&c, &params(&[("_outputFormat", f)]), false).is_ok());
        }
        let r = parse(
            &c,
            &params(&[("_since", "2026-11-26T10:00:00+01:00")]),
            false,
        )
        .unwrap();
        assert_eq!(r.since.as_deref(), Some("2026-11-26T09:00:00.000000Z"));
    }

    #[test]
    fn group_members_are_its_active_patients() {
        let g = json!({"resourceType": "Group", "member": [
            {"entity": {"reference": "Patient/b"}},
            {"entity": {"reference": "Patient/a"}},
            {"entity": {"reference": "Patient/c"}, "inactive": true},
            {"entity": {"reference": "Practitioner/p"}},
            {"entity": {"reference": "Patient/a"}}]});
        assert_eq!(members(&g.to_string()), vec!["a", "b"]);
    }
}
