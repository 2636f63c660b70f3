//! The write interactions as steps inside a store transaction, shared by
//! single requests and transaction/batch bundles. Every new version goes
//! through `put`, where the workflow rules apply.

use std::cell::RefCell;

use serde_json::Value;

use super::{live, not_found, Created, Criteria};
use crate::auth::access;
use crate::auth::Principal;
use crate::auth::Role;
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource::{self, Format};
use crate::store::{Current, Decision, Tx, WriteOutcome};
use crate::workflow;

/// A write the caller asked for: `step`, within the caller's view. What the
/// caller cannot see it cannot change (404, as for a resource that does
/// not exist), the role's property rules apply (`auth::access::check_write`),
/// and a new resource remembers the organisation that created it. That
/// every resource written ends inside the caller's view is checked once
/// the transaction's work is done (`super::transaction`).
pub(super) fn put(
    tx: &mut Tx,
    res_type: &str,
    id: &str,
    method: &'static str,
    next: &dyn Fn(Option<&Current>) -> FhirResult<Value>,
) -> FhirResult<WriteOutcome> {
    let Some(o) = tx.access().org().cloned() else {
        return step(tx, res_type, id, method, next);
    };
    let current = check_in_view(tx, res_type, id)?;
    let mut role = o.role;
    if o.role == Role::Vcs && res_type == "Task" {
        match current.filter(|c| !c.deleted) {
            // A VCS's new Task is checked as an onward referral before
            // anything else looks at it (the workflow's rules would name
            // the parent's state).
            None => onward_referral(tx, &o.org, &next(None)?)?,
            // A Task it sees but neither owns nor may claim is an onward
            // referral it made: on that one it is the requester side.
            Some(c) => {
                let task: Value = serde_json::from_str(&c.body)
                    .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?;
                let claimable = task.get("owner").is_none();
                if !claimable && owner_org(tx, &task)?.as_deref() != Some(o.org.as_str()) {
                    role = Role::Gp;
                }
            }
        }
    }
    let outcome = step(tx, res_type, id, method, &|current| {
        let resource = next(current)?;
        let before = current
            .filter(|c| !c.deleted)
            .and_then(|c| serde_json::from_str::<Value>(&c.body).ok());
        access::check_write(role, res_type, before.as_ref(), Some(&resource))
            .map_err(FhirError::Forbidden)?;
        Ok(resource)
    })?;
    if outcome.created {
        tx.record_creator(res_type, id, &o.org)?;
    }
    Ok(outcome)
}

/// A VCS's new Task is an onward referral: a sub-task of a Task the VCS
/// owns, about the same referral and person, so it reaches nothing the
/// VCS could not see already.
fn onward_referral(tx: &mut Tx, org: &str, sub: &Value) -> FhirResult<()> {
    let refused = |why: &str| FhirError::Forbidden(format!("Task.partOf: {why}"));
    let parent_id = sub["partOf"][0]["reference"]
        .as_str()
        .and_then(|r| r.strip_prefix("Task/"))
        .ok_or_else(|| refused("an onward referral names its parent Task"))?;
    let parent: Value = match tx.read("Task", parent_id)? {
        Some(c) if !c.deleted => serde_json::from_str(&c.body)
            .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?,
        _ => return Err(not_found("Task", parent_id)),
    };
    if owner_org(tx, &parent)?.as_deref() != Some(org) {
        // Not its Task: as if it were not there.
        return Err(not_found("Task", parent_id));
    }
    for e in ["focus", "for"] {
        if sub.get(e) != parent.get(e) {
            return Err(FhirError::Forbidden(format!(
                "Task.{e}: an onward referral is about the same {} as its parent Task",
                if e == "focus" { "referral" } else { "person" }
            )));
        }
    }
    Ok(())
}

/// The organisation a Task's owner is (an Organization, or the one a
/// PractitionerRole belongs to).
fn owner_org(tx: &mut Tx, task: &Value) -> FhirResult<Option<String>> {
    let owner = task["owner"]["reference"].as_str().unwrap_or("");
    Ok(match owner.split_once('/') {
        Some(("Organization", id)) => Some(id.to_string()),
        Some(("PractitionerRole", id)) => tx
            .read("PractitionerRole", id)?
            .filter(|c| !c.deleted)
            .and_then(|c| serde_json::from_str::<Value>(&c.body).ok())
            .and_then(|r| {
                r["organization"]["reference"]
                    .as_str()
                    .and_then(|o| o.strip_prefix("Organization/"))
                    .map(String::from)
            }),
        _ => None,
    })
}

/// A live resource outside the caller's view answers as if absent. So does
/// a deleted one the caller's organisation did not create: writing it again
/// would make its earlier versions, someone else's, part of the caller's
/// view. Returns the current row (as stored), for the caller's other checks.
fn check_in_view(tx: &mut Tx, res_type: &str, id: &str) -> FhirResult<Option<Current>> {
    let current = tx.read(res_type, id)?;
    let Some(o) = tx.access().org().cloned() else {
        return Ok(current);
    };
    let hidden = match &current {
        None => false,
        Some(c) if c.deleted => tx.creator(res_type, id)?.as_deref() != Some(o.org.as_str()),
        Some(_) => tx.read_as(res_type, id)?.is_none(),
    };
    if hidden {
        return Err(not_found(res_type, id));
    }
    Ok(current)
}

/// Writes the version `next` makes from the current row. The workflow
/// rules see the current and the new version before anything is written
/// (`workflow::check`); once it is, a Task's status change may refuse
/// (`workflow::after`, e.g. a parent with active sub-tasks) or make other
/// resources follow, written here in the same transaction, through this
/// same path. Any error rolls the whole transaction back.
fn step(
    tx: &mut Tx,
    res_type: &str,
    id: &str,
    method: &'static str,
    // `dyn`: `step` calls itself for what follows, with a closure of its own.
    next: &dyn Fn(Option<&Current>) -> FhirResult<Value>,
) -> FhirResult<WriteOutcome> {
    let transition = RefCell::new(None);
    let sub_task = RefCell::new(None);
    let subscription = RefCell::new(None);
    let outcome = tx.write(res_type, id, |current| {
        let mut resource = next(current)?;
        if res_type == "Subscription" {
            // Its signing secret comes out before anything is stored.
            *subscription.borrow_mut() =
                Some(crate::notify::subscription::accept(&mut resource, current)?);
        }
        *transition.borrow_mut() = workflow::check(res_type, id, current, &resource)?;
        if res_type == "Task" && resource.get("partOf").is_some() {
            *sub_task.borrow_mut() = Some(resource.clone());
        }
        Ok(Decision::Put { method, resource })
    })?;
    if let Some(spec) = subscription.into_inner() {
        crate::notify::subscription::register(tx, id, outcome.current.version, spec)?;
    }
    if let Some(task) = sub_task.into_inner() {
        workflow::guard_parent(tx, &task)?;
    }
    if let Some(t) = transition.into_inner() {
        for f in workflow::after(tx, &t)? {
            step(tx, f.res_type, &f.id, "PUT", &|current| {
                workflow::with_status(live(current, f.res_type, &f.id)?, f.status)
            })?;
        }
    }
    Ok(outcome)
}

/// The Provenance of a transaction's writes, written in it: every version
/// it made (with its version), when, which activity, and who — the client,
/// on behalf of its organisation. Versions of Provenance itself are not
/// targets (a Provenance is its own record).
pub(super) fn provenance(tx: &mut Tx, caller: &Principal) -> FhirResult<()> {
    let written: Vec<(String, String, i32)> = tx
        .written()
        .iter()
        .filter(|(t, _, _)| t != "Provenance")
        .cloned()
        .collect();
    if written.is_empty() {
        return Ok(());
    }
    let mut deleted = 0;
    for (t, id, _) in &written {
        if tx.read(t, id)?.is_some_and(|c| c.deleted) {
            deleted += 1;
        }
    }
    let activity = if deleted == written.len() {
        "DELETE"
    } else if deleted == 0 && written.iter().all(|(_, _, v)| *v == 1) {
        "CREATE"
    } else {
        "UPDATE"
    };
    let mut agent = serde_json::json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                             "code": "author"}]},
        "who": {"identifier": {"system": "https://sp-hub.example/fhir/Id/client", "value": caller.client_id},
                "display": caller.client_id},
    });
    if !caller.organization.is_empty() {
        agent["onBehalfOf"] = serde_json::json!({"reference": caller.organization});
    }
    let resource = serde_json::json!({
        "resourceType": "Provenance",
        "target": written.iter()
            .map(|(t, id, v)| serde_json::json!({"reference": format!("{t}/{id}/_history/{v}")}))
            .collect::<Vec<_>>(),
        "recorded": crate::fhir::instant::now(),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                                 "code": activity}]},
        "agent": [agent],
    });
    let id = uuid::Uuid::new_v4().to_string();
    step(tx, "Provenance", &id, "POST", &|_| Ok(resource.clone()))?;
    if let Some(o) = tx.access().org().cloned() {
        tx.record_creator("Provenance", &id, &o.org)?;
    }
    Ok(())
}

/// Adds the Task each SP referral created in this transaction still lacks
/// (`workflow::tasks_for_new_referrals`), through the same write step.
pub(super) fn add_referral_tasks(tx: &mut Tx) -> FhirResult<()> {
    for task in workflow::tasks_for_new_referrals(tx)? {
        let id = uuid::Uuid::new_v4().to_string();
        step(tx, "Task", &id, "POST", &|_| Ok(task.clone()))?;
    }
    Ok(())
}

/// Writes the message back to the GP that each referral whose work ended
/// in this transaction is due (`workflow::message_back`), through the same
/// write step as the hub's other writes. The hub writes it, not the caller:
/// the caller's property rules are for what it asks to change (a VCS may not
/// write most of a referral's records, yet its Task ending is what makes the
/// message due), so `step`, not `put`, and no creator is recorded: who sees
/// the Communication follows its referral (`basedOn`).
pub(super) fn message_backs(tx: &mut Tx) -> FhirResult<()> {
    for m in workflow::message_back::due(tx)? {
        let method = if m.created { "POST" } else { "PUT" };
        step(tx, "Communication", &m.id, method, &|_| {
            Ok(m.resource.clone())
        })?;
    }
    Ok(())
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

/// An update must carry the URL's id in its body (http.html#update).
pub fn check_body_id(resource: &Value, res_type: &str, id: &str) -> FhirResult<()> {
    match resource.get("id").and_then(Value::as_str) {
        Some(body_id) if body_id == id => Ok(()),
        Some(body_id) => Err(FhirError::invalid_at(
            format!("the id in the body ('{body_id}') does not match the id in the URL ('{id}')"),
            format!("{res_type}.id"),
        )),
        None => Err(FhirError::invalid_at(
            format!("an update must carry the id from the URL ('{id}') in the body"),
            format!("{res_type}.id"),
        )),
    }
}

/// Ids of the resources matching a conditional interaction's criteria,
/// holding the criteria's lock for the rest of the transaction.
/// Only resources in the caller's view match.
pub(super) fn matches(tx: &mut Tx, res_type: &str, c: &Criteria) -> FhirResult<Vec<String>> {
    tx.lock(&c.lock_key)?;
    let mut q = c.query.clone();
    q.access = tx.access().clone();
    tx.matching_ids(res_type, &q, 2)
}

/// create; `id` is the id to use (a transaction assigns ids up front so
/// references can point at them), else a new UUID. The server assigns the
/// id on create: any id in the body is ignored (http.html#create).
pub fn create(
    tx: &mut Tx,
    res_type: &str,
    resource: &Value,
    criteria: Option<&Criteria>,
    id: Option<&str>,
) -> FhirResult<Created> {
    if let Some(c) = criteria {
        match matches(tx, res_type, c)?.as_slice() {
            [] => {}
            [one] => {
                return tx
                    .read_as(res_type, one)?
                    .map(Created::Existing)
                    .ok_or_else(|| FhirError::Internal("a matched resource vanished".into()))
            }
            _ => {
                return Err(FhirError::PreconditionFailed(format!(
                    "If-None-Exist matched more than one {res_type}; the criteria must select at most one"
                )))
            }
        }
    }
    let id = id.map_or_else(|| uuid::Uuid::new_v4().to_string(), String::from);
    put(tx, res_type, &id, "POST", &|_| Ok(resource.clone())).map(Created::New)
}

pub fn update(
    tx: &mut Tx,
    res_type: &str,
    id: &str,
    resource: &Value,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    put(tx, res_type, id, "PUT", &|current| {
        check_version(current, if_match)?;
        Ok(resource.clone())
    })
}

/// The id a conditional update writes to: the one match, else the body's
/// id, else a new one.
pub fn conditional_update_target(
    tx: &mut Tx,
    res_type: &str,
    c: &Criteria,
    resource: &Value,
) -> FhirResult<String> {
    let body_id = resource.get("id").and_then(Value::as_str);
    Ok(match (matches(tx, res_type, c)?.as_slice(), body_id) {
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
    })
}

pub fn conditional_update(
    tx: &mut Tx,
    res_type: &str,
    c: &Criteria,
    resource: &Value,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    let id = conditional_update_target(tx, res_type, c, resource)?;
    update(tx, res_type, &id, resource, if_match)
}

pub fn parse_patch(doc: &[u8]) -> FhirResult<json_patch::Patch> {
    serde_json::from_slice(doc).map_err(|e| {
        FhirError::invalid(format!(
            "the body is not a JSON Patch document (RFC 6902): {e}"
        ))
    })
}

pub fn patch(
    tx: &mut Tx,
    res_type: &str,
    id: &str,
    patch: &json_patch::Patch,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    put(tx, res_type, id, "PATCH", &|current| {
        let current = live(current, res_type, id)?;
        check_version(Some(current), if_match)?;
        let mut doc: Value = serde_json::from_str(&current.body)
            .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?;
        json_patch::patch(&mut doc, patch).map_err(|e| FhirError::Unprocessable {
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
        Ok(patched)
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

pub fn delete(
    tx: &mut Tx,
    res_type: &str,
    id: &str,
    if_match: Option<i32>,
) -> FhirResult<WriteOutcome> {
    check_in_view(tx, res_type, id)?;
    let role = tx.access().org().map(|o| o.role);
    tx.write(res_type, id, |current| match current {
        None => Err(not_found(res_type, id)),
        Some(cur) if cur.deleted && if_match.is_none() => Ok(Decision::Unchanged),
        Some(cur) => {
            check_version(Some(cur), if_match)?;
            if let Some(role) = role {
                access::check_write(role, res_type, None, None).map_err(FhirError::Forbidden)?;
            }
            Ok(Decision::Delete)
        }
    })
}

pub fn conditional_delete(
    tx: &mut Tx,
    res_type: &str,
    c: &Criteria,
) -> FhirResult<Option<WriteOutcome>> {
    match matches(tx, res_type, c)?.as_slice() {
        [] => Ok(None),
        [one] => delete(tx, res_type, one, None).map(Some),
        _ => Err(FhirError::PreconditionFailed(format!(
            "the criteria match more than one {res_type}; conditional delete removes at most one"
        ))),
    }
}
