//! The social prescribing workflow rules the server enforces on every write
//! (single requests and transaction/batch Bundle entries alike): the Task
//! state machine of DESIGN.md, the statusReason a Task needs in some
//! statuses, the parent Task that cannot complete before its sub-tasks, and
//! the referral (ServiceRequest) whose status follows its Task's end.
//!
//! The rules are data (the tables below) and small functions over them.
//! `check` runs inside the store's write decision, before anything is
//! written; `after` runs once the Task's version is written, in the same
//! transaction, and says what must follow. An error from either rolls the
//! whole transaction back. Creating a Task (or an update that creates one)
//! is not a transition: imports bring Tasks in every status.
//! `message_back` says what the referring practice is told when a
//! referral's work ends.

pub mod message_back;

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::fhir::outcome::{FhirError, FhirResult};
use crate::search::SearchQuery;
use crate::store::{Current, Tx};

/// Every R4 Task.status code (http://hl7.org/fhir/task-status).
pub const TASK_STATUSES: [&str; 12] = [
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
];

/// The legal Task status changes, from → to (after the HL7 SDOH Clinical
/// Care IG referral workflow). Any other change is refused; `received` and
/// `ready` are R4 codes this workflow does not use, so no change leads to
/// or from them.
pub const TRANSITIONS: &[(&str, &[&str])] = &[
    ("draft", &["requested", "entered-in-error"]),
    ("requested", &["accepted", "rejected", "cancelled"]),
    (
        "accepted",
        &["in-progress", "on-hold", "cancelled", "completed", "failed"],
    ),
    (
        "in-progress",
        &["on-hold", "cancelled", "completed", "failed"],
    ),
    (
        "on-hold",
        &["in-progress", "cancelled", "completed", "failed"],
    ),
];

/// Statuses with no way out.
pub const TERMINAL: &[&str] = &[
    "rejected",
    "cancelled",
    "completed",
    "failed",
    "entered-in-error",
];

/// Statuses a Task may only be in with a `statusReason`.
pub const NEEDS_REASON: &[&str] = &["rejected", "cancelled", "on-hold", "failed"];

/// Statuses in which a sub-task keeps its parent from completing.
pub const ACTIVE: &[&str] = &[
    "draft",
    "requested",
    "received",
    "accepted",
    "ready",
    "in-progress",
    "on-hold",
];

/// When a top-level Task enters one of these statuses, its referral
/// (`Task.focus`, a ServiceRequest) takes the paired status.
pub const REFERRAL_FOLLOWS: &[(&str, &str)] = &[
    ("completed", "completed"),
    ("rejected", "revoked"),
    ("cancelled", "revoked"),
    ("failed", "revoked"),
];

/// ServiceRequest statuses that are final: a referral in one of them is
/// left as it is when its Task ends.
pub const REFERRAL_TERMINAL: &[&str] = &["completed", "revoked", "entered-in-error"];

/// Sub-tasks named in a refusal; more are counted, not listed.
const SUB_TASKS_NAMED: i64 = 10;

/// Whether a Task may change from `from` to a different status `to`.
pub fn allowed(from: &str, to: &str) -> bool {
    next_statuses(from).contains(&to)
}

/// The statuses a Task in `from` may change to.
pub fn next_statuses(from: &str) -> &'static [&'static str] {
    TRANSITIONS
        .iter()
        .find(|(f, _)| *f == from)
        .map_or(&[], |(_, to)| to)
}

/// A Task status change that has passed the rules, and what `after` needs
/// to know about the Task to decide what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub task_id: String,
    pub from: String,
    pub to: String,
    /// The referral's id, when `Task.focus` is a local ServiceRequest reference.
    pub referral: Option<String>,
    /// The Task is a sub-task (has `partOf`): its end does not end the referral.
    pub sub_task: bool,
}

/// What must be written after a transition, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    pub res_type: &'static str,
    pub id: String,
    pub status: &'static str,
}

/// Only the status of a stored version, read without building its tree.
#[derive(Deserialize)]
struct StoredStatus<'a> {
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
}

fn stored_status(current: &Current) -> FhirResult<Option<String>> {
    serde_json::from_str::<StoredStatus>(&current.body)
        .map(|s| s.status.map(Cow::into_owned))
        .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))
}

/// The rules on a new version `next` of `res_type`/`id`, given the current
/// row: an illegal status change is 409, a missing statusReason 422.
/// Returns the transition when a live Task changes status.
pub fn check(
    res_type: &str,
    id: &str,
    current: Option<&Current>,
    next: &Value,
) -> FhirResult<Option<Transition>> {
    if res_type != "Task" {
        return Ok(None);
    }
    // The parser has already refused a Task without a status.
    let Some(to) = next.get("status").and_then(Value::as_str) else {
        return Ok(None);
    };
    let from = match current.filter(|c| !c.deleted) {
        Some(cur) => stored_status(cur)?.filter(|from| from != to),
        None => None,
    };
    if let Some(from) = &from {
        if !allowed(from, to) {
            return Err(FhirError::state_conflict(refusal(from, to), "Task.status"));
        }
    }
    if NEEDS_REASON.contains(&to) && next.get("statusReason").is_none() {
        return Err(FhirError::unprocessable_at(
            format!(
                "a Task with status '{to}' needs a statusReason (required for {})",
                NEEDS_REASON.join(", ")
            ),
            "Task.statusReason",
        ));
    }
    Ok(from.map(|from| Transition {
        task_id: id.to_string(),
        from,
        to: to.to_string(),
        referral: referral_id(next),
        sub_task: next.get("partOf").is_some(),
    }))
}

fn refusal(from: &str, to: &str) -> String {
    let why = if TERMINAL.contains(&from) {
        format!("'{from}' is a final status")
    } else {
        match next_statuses(from) {
            [] => format!("'{from}' is not a status of the referral workflow"),
            next => format!("from '{from}' a Task may move to {}", next.join(", ")),
        }
    };
    format!("Task status cannot change from '{from}' to '{to}': {why}")
}

/// `ServiceRequest/{id}` (optionally `/_history/{v}`) in `Task.focus`.
fn referral_id(task: &Value) -> Option<String> {
    let reference = task.get("focus")?.get("reference")?.as_str()?;
    let rest = reference.strip_prefix("ServiceRequest/")?;
    let id = rest.split_once("/_history/").map_or(rest, |(id, _)| id);
    crate::fhir::resource::check_id(id).ok()?;
    Some(id.to_string())
}

/// The rules that read other resources, run after the Task's new version
/// is written in `tx`: a parent cannot complete while a sub-task is
/// active (409). Returns what follows: the referral's new status when a
/// top-level Task ends and its referral is live and not yet final.
pub fn after(tx: &mut Tx, t: &Transition) -> FhirResult<Vec<Follow>> {
    if t.to == "completed" {
        // Taken by `guard_parent` too: a sub-task being added on another
        // connection waits, then sees the parent completed (and is refused),
        // or commits first and is seen here.
        tx.lock(&family_lock(&t.task_id))?;
        check_sub_tasks(tx, t)?;
    }
    let mut follows = vec![];
    let status = REFERRAL_FOLLOWS
        .iter()
        .find(|(task, _)| *task == t.to)
        .map(|(_, referral)| *referral);
    if let (Some(status), Some(id), false) = (status, &t.referral, t.sub_task) {
        let live_open = match tx.read("ServiceRequest", id)? {
            Some(cur) if !cur.deleted => {
                stored_status(&cur)?.is_none_or(|s| !REFERRAL_TERMINAL.contains(&s.as_str()))
            }
            _ => false,
        };
        if live_open {
            follows.push(Follow {
                res_type: "ServiceRequest",
                id: id.clone(),
                status,
            });
        }
    }
    Ok(follows)
}

fn family_lock(parent_id: &str) -> String {
    format!("task-family:{parent_id}")
}

/// The other half of the parent rule: a Task written with `partOf` a parent
/// and an active status may not join (or come back to) a parent that has
/// completed, which would then have an active sub-task (409).
pub fn guard_parent(tx: &mut Tx, task: &Value) -> FhirResult<()> {
    let active = task
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| ACTIVE.contains(&s));
    let parents: Vec<String> = task
        .get("partOf")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter_map(|p| p.get("reference")?.as_str()?.strip_prefix("Task/"))
        .map(|id| {
            id.split_once("/_history/")
                .map_or(id, |(id, _)| id)
                .to_string()
        })
        .collect();
    if !active {
        return Ok(());
    }
    for parent in parents {
        tx.lock(&family_lock(&parent))?;
        let completed = match tx.read("Task", &parent)? {
            Some(cur) if !cur.deleted => stored_status(&cur)?.as_deref() == Some("completed"),
            _ => false,
        };
        if completed {
            return Err(FhirError::state_conflict(
                format!("Task/{parent} is completed: it cannot have an active sub-task"),
                "Task.partOf",
            ));
        }
    }
    Ok(())
}

fn check_sub_tasks(tx: &mut Tx, t: &Transition) -> FhirResult<()> {
    let q = SearchQuery::parse(
        "Task",
        &[
            ("part-of".into(), format!("Task/{}", t.task_id)),
            ("status".into(), ACTIVE.join(",")),
            ("_count".into(), SUB_TASKS_NAMED.to_string()),
        ],
        true,
    )?;
    let page = tx.search("Task", &q)?;
    if page.items.is_empty() {
        return Ok(());
    }
    let mut named = page
        .items
        .iter()
        .map(|c| {
            let status = stored_status(c)?.unwrap_or_default();
            Ok(format!("Task/{} ({status})", c.res_id))
        })
        .collect::<FhirResult<Vec<_>>>()?;
    let total = page.total.unwrap_or(page.items.len() as i64);
    if total > page.items.len() as i64 {
        named.push(format!("and {} more", total - page.items.len() as i64));
    }
    Err(FhirError::state_conflict(
        format!(
            "Task status cannot change from '{}' to 'completed' while sub-tasks (partOf Task/{}) are active: {}",
            t.from,
            t.task_id,
            named.join(", ")
        ),
        "Task.status",
    ))
}

/// The current version of a resource with `status` set: the body of the
/// version that follows a transition.
pub fn with_status(current: &Current, status: &str) -> FhirResult<Value> {
    let mut body: Value = serde_json::from_str(&current.body)
        .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?;
    let obj = body
        .as_object_mut()
        .ok_or_else(|| FhirError::Internal("stored resource is not an object".into()))?;
    obj.insert("status".into(), Value::String(status.into()));
    Ok(body)
}

/// SNOMED CT "Referral to social prescribing service": a ServiceRequest
/// with this code is an SP referral.
const SP_REFERRAL: (&str, &str) = ("http://snomed.info/sct", "871731000000106");
const SP_BUSINESS_STATUS: &str = "https://sp-hub.example/fhir/CodeSystem/sp-business-status";

fn is_sp_referral(sr: &Value) -> bool {
    sr["code"]["coding"].as_array().is_some_and(|codings| {
        codings
            .iter()
            .any(|c| c["system"] == SP_REFERRAL.0 && c["code"] == SP_REFERRAL.1)
    })
}

/// The Tasks this transaction must add before it commits: one for each SP
/// referral it created that no Task carries out yet (a GP may post the
/// referral alone). The Task is owned by the referral's first performer
/// when it names one, else it waits unowned in the open pool (found by
/// `Task?owner:missing=true&status=requested`, narrowed to a PCN through
/// the requesting practice, e.g. `requester:Organization.partof=…`).
/// Looked for after every other entry of a Bundle, so a referral posted
/// with its own Task gets no second one.
pub fn tasks_for_new_referrals(tx: &mut Tx) -> FhirResult<Vec<Value>> {
    let created: Vec<String> = tx
        .written()
        .iter()
        .filter(|(t, _, v)| t == "ServiceRequest" && *v == 1)
        .map(|(_, id, _)| id.clone())
        .collect();
    let mut tasks = vec![];
    for id in created {
        let Some(current) = tx.read("ServiceRequest", &id)? else {
            continue;
        };
        if current.deleted {
            continue;
        }
        let sr: Value = serde_json::from_str(&current.body)
            .map_err(|e| FhirError::Internal(format!("stored ServiceRequest/{id}: {e}")))?;
        if !is_sp_referral(&sr) {
            continue;
        }
        let q = SearchQuery::parse(
            "Task",
            &[
                ("focus".into(), format!("ServiceRequest/{id}")),
                ("_count".into(), "1".into()),
                ("_total".into(), "none".into()),
            ],
            true,
        )?;
        if !tx.search("Task", &q)?.items.is_empty() {
            continue;
        }
        let mut task = serde_json::json!({
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill", "display": "Fulfill the focal request"}]},
            "businessStatus": {"coding": [{"system": SP_BUSINESS_STATUS,
                                           "code": "awaiting-contact"}]},
            "focus": {"reference": format!("ServiceRequest/{id}")},
            "for": sr["subject"],
            "requester": sr["requester"],
            "authoredOn": sr.get("authoredOn").cloned().unwrap_or(Value::String(current.last_updated.clone())),
        });
        if let Some(performer) = sr["performer"].get(0) {
            task["owner"] = performer.clone();
        }
        tasks.push(task);
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(body: Value, deleted: bool) -> Current {
        Current {
            res_type: "Task".into(),
            res_id: "t1".into(),
            version: 1,
            last_updated: String::new(),
            deleted,
            body: body.to_string(),
            tick: 0,
        }
    }

    #[test]
    fn the_table_names_only_r4_statuses_and_terminal_ones_have_no_way_out() {
        for (from, to) in TRANSITIONS {
            assert!(TASK_STATUSES.contains(from), "{from}");
            assert!(!TERMINAL.contains(from), "{from} is terminal");
            for t in *to {
                assert!(TASK_STATUSES.contains(t), "{t}");
            }
        }
        for s in TERMINAL.iter().chain(NEEDS_REASON).chain(ACTIVE) {
            assert!(TASK_STATUSES.contains(s), "{s}");
        }
        assert!(allowed("in-progress", "on-hold") && allowed("on-hold", "in-progress"));
        assert!(!allowed("completed", "in-progress"));
        assert!(!allowed("requested", "received") && !allowed("ready", "in-progress"));
    }

    #[test]
    fn creating_is_not_a_transition_but_needs_a_reason_where_the_status_does() {
        let done = json!({"resourceType": "Task", "status": "completed"});
        assert_eq!(check("Task", "t1", None, &done).unwrap(), None);
        let deleted = row(json!({"status": "requested"}), true);
        assert_eq!(check("Task", "t1", Some(&deleted), &done).unwrap(), None);
        let held = json!({"resourceType": "Task", "status": "on-hold"});
        let err = check("Task", "t1", None, &held).unwrap_err();
        assert_eq!(err.status(), 422);
        assert_eq!(
            err.to_outcome()["issue"][0]["expression"][0],
            "Task.statusReason"
        );
    }

    #[test]
    fn an_illegal_change_is_409_naming_both_statuses() {
        let cur = row(json!({"status": "completed"}), false);
        let next = json!({"resourceType": "Task", "status": "in-progress"});
        let err = check("Task", "t1", Some(&cur), &next).unwrap_err();
        assert_eq!(err.status(), 409);
        let outcome = err.to_outcome();
        let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diagnostics.contains("from 'completed' to 'in-progress'"),
            "{diagnostics}"
        );
        assert_eq!(outcome["issue"][0]["code"], "business-rule");
        assert_eq!(outcome["issue"][0]["expression"][0], "Task.status");
    }

    #[test]
    fn a_legal_change_reports_the_referral_and_whether_it_is_a_sub_task() {
        let cur = row(json!({"status": "in-progress"}), false);
        let next = json!({"resourceType": "Task", "status": "completed",
                          "focus": {"reference": "ServiceRequest/sr-1/_history/2"}});
        let t = check("Task", "t1", Some(&cur), &next).unwrap().unwrap();
        assert_eq!(
            (t.from.as_str(), t.to.as_str()),
            ("in-progress", "completed")
        );
        assert_eq!(t.referral.as_deref(), Some("sr-1"));
        assert!(!t.sub_task);
        let same = json!({"resourceType": "Task", "status": "in-progress"});
        assert_eq!(check("Task", "t1", Some(&cur), &same).unwrap(), None);
        assert_eq!(check("Patient", "p1", Some(&cur), &same).unwrap(), None);
    }
}

/// Property tests: `check` applies exactly the transition table, for any
/// pair of statuses (R4 codes or anything else a client sends).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// DESIGN.md's Task status table, written out again as pairs, so the
    /// code's table is checked against the agreed one rather than itself.
    const DESIGN: &[(&str, &str)] = &[
        ("draft", "requested"),
        ("draft", "entered-in-error"),
        ("requested", "accepted"),
        ("requested", "rejected"),
        ("requested", "cancelled"),
        ("accepted", "in-progress"),
        ("accepted", "on-hold"),
        ("accepted", "cancelled"),
        ("accepted", "completed"),
        ("accepted", "failed"),
        ("in-progress", "on-hold"),
        ("in-progress", "cancelled"),
        ("in-progress", "completed"),
        ("in-progress", "failed"),
        ("on-hold", "in-progress"),
        ("on-hold", "cancelled"),
        ("on-hold", "completed"),
        ("on-hold", "failed"),
    ];

    fn stored(status: &str, deleted: bool) -> Current {
        Current {
            res_type: "Task".into(),
            res_id: "t1".into(),
            version: 1,
            last_updated: String::new(),
            deleted,
            body: json!({"resourceType": "Task", "id": "t1", "status": status}).to_string(),
            tick: 0,
        }
    }

    fn status() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(&TASK_STATUSES[..]).prop_map(String::from),
            1 => "[a-z\\-]{0,12}",
        ]
    }

    #[test]
    fn the_table_is_the_design_table() {
        for from in TASK_STATUSES {
            for to in TASK_STATUSES {
                assert_eq!(
                    allowed(from, to),
                    DESIGN.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn check_agrees_with_the_table(
            from in status(),
            to in status(),
            reason in any::<bool>(),
            partof in any::<bool>(),
            deleted in any::<bool>(),
        ) {
            let mut next = json!({"resourceType": "Task", "status": to,
                                  "focus": {"reference": "ServiceRequest/sr1"}});
            if reason {
                next["statusReason"] = json!({"text": "why"});
            }
            if partof {
                next["partOf"] = json!([{"reference": "Task/parent"}]);
            }
            let current = stored(&from, deleted);
            let got = check("Task", "t1", Some(&current), &next);
            let changes = !deleted && from != to;
            let legal = !changes || DESIGN.contains(&(from.as_str(), to.as_str()));
            let needs_reason = NEEDS_REASON.contains(&to.as_str()) && !reason;
            match got {
                Err(e) if !legal => {
                    prop_assert_eq!(e.status(), 409);
                }
                Err(e) if needs_reason => {
                    prop_assert_eq!(e.status(), 422);
                }
                Ok(Some(t)) if changes && legal && !needs_reason => {
                    prop_assert_eq!(
                        t,
                        Transition {
                            task_id: "t1".into(),
                            from: from.clone(),
                            to: to.clone(),
                            referral: Some("sr1".into()),
                            sub_task: partof,
                        }
                    );
                }
                Ok(None) if !changes && !needs_reason => {}
                other => prop_assert!(
                    false,
                    "{from} -> {to} (reason {reason}, deleted {deleted}): {other:?}"
                ),
            }
            // A Task being created is not a transition, whatever its status.
            let created = check("Task", "t1", None, &next);
            prop_assert_eq!(created.is_ok(), !needs_reason);
            prop_assert!(created.map_or(true, |t| t.is_none()));
        }
    }
}
