//! The message back to the GP: the summary the referring practice files
//! when the work on one of its SP referrals ends, after the PRSB Social
//! Prescribing Information Standard's "message back to GP and referrer"
//! (sent at the conclusion of social prescribing): who saw the person,
//! contacts, holding work, services connected to, outcomes and how it
//! ended, with SNOMED CT 871711000000103 "Social prescribing declined"
//! when the person declined.
//!
//! It is a Communication (profile `sp-message-back`), one per referral,
//! written in the transaction that makes it due, before that transaction's
//! Provenance (which then names it):
//!
//! - a top-level Task (no `partOf`) whose `focus` is the referral enters
//!   completed, rejected, cancelled or failed (a status change, not a Task
//!   created in an end status: imports bring ended Tasks as they are);
//! - an outcome Observation (a category from `sp-outcome-timing`) based on
//!   a referral is written: while the work goes on the message says so and
//!   gives the scores so far; a follow-up score taken after the end reaches
//!   the GP too.
//!
//! The first makes the Communication, anything later a new version of that
//! same one, so a GP system files one record per referral and sees it
//! amended. The summary is read from the referral's trail inside the same
//! transaction, so it includes whatever the transaction itself wrote.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::fhir::outcome::{FhirError, FhirResult};
use crate::search::{SearchQuery, MAX_COUNT, MAX_OR_VALUES};
use crate::store::{Current, Tx};

const SP: &str = "https://sp-hub.example/fhir";
pub const PROFILE: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-message-back";
pub const CATEGORY_SYSTEM: &str =
    "https://sp-hub.example/fhir/CodeSystem/sp-communication-category";
pub const CATEGORY: &str = "message-back";
/// SNOMED CT "Social prescribing declined", the code a GP system records.
pub const DECLINED: (&str, &str, &str) = (
    "http://snomed.info/sct",
    "871711000000103",
    "Social prescribing declined",
);
/// The `sp-status-reason` code for the person's own refusal; its definition
/// in the CodeSystem names SNOMED CT 871711000000103.
const DECLINED_REASON: &str = "declined-by-person";

/// Statuses in which a Task's record on the trail no longer counts.
const VOID: &[&str] = &["entered-in-error", "cancelled", "not-done"];

/// A message back to write: a new Communication, or a new version of the
/// referral's existing one.
pub struct MessageBack {
    pub id: String,
    pub created: bool,
    pub resource: Value,
}

/// The message backs this transaction makes due, one per referral, each
/// checked against the profiles as a client's write would be.
pub fn due(tx: &mut Tx) -> FhirResult<Vec<MessageBack>> {
    let mut out = vec![];
    for referral in referrals_due(tx)? {
        // Two transactions on one referral (a Task ending, a late outcome)
        // would otherwise both find no message back and both create one.
        tx.lock(&format!("message-back:{referral}"))?;
        if let Some(m) = message_back(tx, &referral)? {
            crate::fhir::resource::check(&m.resource, "Communication").map_err(|e| {
                FhirError::Internal(format!(
                    "the message back for ServiceRequest/{referral} is not valid: {e}"
                ))
            })?;
            out.push(m);
        }
    }
    Ok(out)
}

/// The referrals whose work ended in this transaction, or that ended
/// before it and got an outcome in it.
fn referrals_due(tx: &mut Tx) -> FhirResult<BTreeSet<String>> {
    // The first version the transaction wrote of each resource: the one
    // before it is what the resource was when the transaction began.
    let mut first: BTreeMap<(String, String), i32> = BTreeMap::new();
    for (t, id, v) in tx.written() {
        first.entry((t.clone(), id.clone())).or_insert(*v);
    }
    // A referral written here either followed its Task's end here (found
    // through the Task) or came in with its whole story (an import).
    let referrals_written: BTreeSet<String> = first
        .keys()
        .filter(|(t, _)| t == "ServiceRequest")
        .map(|(_, id)| id.clone())
        .collect();
    let mut due = BTreeSet::new();
    for ((t, id), v) in &first {
        let referral = match t.as_str() {
            "Task" => ended_task(tx, id, *v)?,
            "Observation" => outcome_referral(tx, id)?.filter(|r| !referrals_written.contains(r)),
            _ => None,
        };
        due.extend(referral);
    }
    Ok(due)
}

/// The referral of a top-level Task that entered an end status in this
/// transaction (`first_written` is the first version it wrote).
fn ended_task(tx: &mut Tx, id: &str, first_written: i32) -> FhirResult<Option<String>> {
    let Some(task) = live(tx, "Task", id)? else {
        return Ok(None);
    };
    let status = task["status"].as_str().unwrap_or_default();
    if !ended(status) || task.get("partOf").is_some() || first_written <= 1 {
        return Ok(None);
    }
    let before = tx
        .vread("Task", id, first_written - 1)?
        .and_then(|v| v.body)
        .map(|b| parse(&b, "Task", id))
        .transpose()?;
    // A deleted Task written again is created anew, not changed.
    let changed = before.is_some_and(|b| b["status"].as_str() != Some(status));
    Ok(changed.then(|| super::referral_id(&task)).flatten())
}

/// The referral an outcome Observation is based on.
fn outcome_referral(tx: &mut Tx, id: &str) -> FhirResult<Option<String>> {
    let Some(obs) = live(tx, "Observation", id)? else {
        return Ok(None);
    };
    if !is_outcome(&obs) {
        return Ok(None);
    }
    Ok(based_on_referral(&obs))
}

fn ended(task_status: &str) -> bool {
    super::REFERRAL_FOLLOWS
        .iter()
        .any(|(end, _)| *end == task_status)
}

fn is_outcome(obs: &Value) -> bool {
    list(&obs["category"])
        .iter()
        .any(|c| code_in(c, &format!("{SP}/CodeSystem/sp-outcome-timing")).is_some())
}

/// The id in the first local `ServiceRequest/{id}` of `basedOn`.
fn based_on_referral(resource: &Value) -> Option<String> {
    list(&resource["basedOn"])
        .iter()
        .find_map(|r| local_id(r, "ServiceRequest"))
}

/// The id a Reference names locally as `res_type/{id}` (a version suffix
/// dropped).
fn local_id(reference: &Value, res_type: &str) -> Option<String> {
    let rest = reference["reference"]
        .as_str()?
        .strip_prefix(res_type)?
        .strip_prefix('/')?;
    let id = rest.split_once("/_history/").map_or(rest, |(id, _)| id);
    crate::fhir::resource::check_id(id).ok()?;
    Some(id.to_string())
}

/// The message back for one referral: `None` when it is not a live SP
/// referral or no top-level Task on it has ended.
fn message_back(tx: &mut Tx, referral_id: &str) -> FhirResult<Option<MessageBack>> {
    let Some(sr) = live(tx, "ServiceRequest", referral_id)? else {
        return Ok(None);
    };
    if !super::is_sp_referral(&sr) {
        return Ok(None);
    }
    let me = format!("ServiceRequest/{referral_id}");
    let on_referral = search_all(tx, "Task", "focus", std::slice::from_ref(&me))?;
    let (top, mut subs): (Vec<Value>, Vec<Value>) = on_referral
        .into_iter()
        .partition(|t| t.get("partOf").is_none());
    // The Task the message is about: the top-level one that ended last,
    // else (an outcome recorded while the work goes on) the one changed last.
    let latest = |ended_only: bool| {
        top.iter()
            .filter(|t| !ended_only || ended(t["status"].as_str().unwrap_or_default()))
            .max_by(|a, b| {
                a["meta"]["lastUpdated"]
                    .as_str()
                    .cmp(&b["meta"]["lastUpdated"].as_str())
            })
            .cloned()
    };
    let Some(task) = latest(true).or_else(|| latest(false)) else {
        return Ok(None);
    };
    // Onward referrals: sub-tasks of the referral's Tasks (they need not
    // name the referral themselves).
    let parents: Vec<String> = top
        .iter()
        .filter_map(|t| t["id"].as_str().map(|id| format!("Task/{id}")))
        .collect();
    let known: BTreeSet<String> = subs
        .iter()
        .filter_map(|t| t["id"].as_str().map(String::from))
        .collect();
    for t in search_all(tx, "Task", "part-of", &parents)? {
        if t["id"].as_str().is_some_and(|id| !known.contains(id)) {
            subs.push(t);
        }
    }
    let contacts = search_all(tx, "Encounter", "based-on", std::slice::from_ref(&me))?;
    let holding = search_all(tx, "Procedure", "based-on", std::slice::from_ref(&me))?;
    let outcomes: Vec<Value> =
        search_all(tx, "Observation", "based-on", std::slice::from_ref(&me))?
            .into_iter()
            .filter(|o| is_outcome(o) && !void(o))
            .collect();

    let declined = list(&task["statusReason"]["coding"]).iter().any(|c| {
        c["system"] == format!("{SP}/CodeSystem/sp-status-reason") && c["code"] == DECLINED_REASON
    });
    let summary = Summary {
        referral: &sr,
        task: &task,
        worked_by: match task.get("owner") {
            Some(owner) => Some(actor(tx, owner)?),
            None => None,
        },
        contacts: &contacts,
        holding: &holding,
        services: subs
            .iter()
            .filter(|s| !void(s))
            .map(|s| {
                let who = match s.get("owner") {
                    Some(owner) => actor(tx, owner)?,
                    None => "an organisation not yet chosen".to_string(),
                };
                Ok(format!(
                    "{who} ({})",
                    s["status"].as_str().unwrap_or("unknown")
                ))
            })
            .collect::<FhirResult<Vec<_>>>()?,
        outcomes: &outcomes,
        declined,
    }
    .text();

    let existing = existing(tx, &me)?;
    let (id, created) = match existing {
        Some(id) => (id, false),
        None => (uuid::Uuid::new_v4().to_string(), true),
    };
    let mut payload = vec![json!({ "contentString": summary })];
    payload.extend(outcomes.iter().filter_map(|o| {
        o["id"]
            .as_str()
            .map(|id| json!({"contentReference": {"reference": format!("Observation/{id}")}}))
    }));
    let mut resource = json!({
        "resourceType": "Communication",
        "id": id,
        "meta": {"profile": [PROFILE]},
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": CATEGORY,
                                  "display": "Message back to GP"}]}],
        "basedOn": [{"reference": me}],
        "subject": sr["subject"],
        "sent": crate::fhir::instant::now(),
        "recipient": recipients(tx, &sr["requester"])?,
        "payload": payload,
    });
    if let Some(task_id) = task["id"].as_str() {
        resource["about"] = json!([{ "reference": format!("Task/{task_id}") }]);
    }
    // Only an owner the profile allows (a local PractitionerRole or
    // Organization, or one named by display or identifier alone): an SP
    // Task's owner is one already, and a Task outside that profile must not
    // have its own update fail on the message back, which then has no
    // sender.
    if let Some(owner) = task.get("owner").filter(|o| {
        o["reference"].as_str().is_none_or(|r| {
            local_id(o, "PractitionerRole").is_some()
                || local_id(o, "Organization").is_some()
                || !r.contains('/')
        })
    }) {
        resource["sender"] = owner.clone();
    }
    if declined {
        resource["reasonCode"] = json!([{"coding": [{"system": DECLINED.0, "code": DECLINED.1,
                                                      "display": DECLINED.2}]}]);
    }
    Ok(Some(MessageBack {
        id,
        created,
        resource,
    }))
}

/// The id of the referral's message back, if it has one.
fn existing(tx: &mut Tx, referral: &str) -> FhirResult<Option<String>> {
    let q = SearchQuery::parse(
        "Communication",
        &[
            ("based-on".into(), referral.to_string()),
            ("category".into(), format!("{CATEGORY_SYSTEM}|{CATEGORY}")),
            ("_count".into(), "1".into()),
            ("_total".into(), "none".into()),
        ],
        true,
    )?;
    Ok(tx
        .search("Communication", &q)?
        .items
        .first()
        .map(|c| c.res_id.clone()))
}

/// Who receives it: the referring practice, and the referring GP's role
/// too when the referral names one (its organisation is the practice).
fn recipients(tx: &mut Tx, requester: &Value) -> FhirResult<Vec<Value>> {
    let Some(role) = local_id(requester, "PractitionerRole") else {
        return Ok(vec![requester.clone()]);
    };
    let practice = live(tx, "PractitionerRole", &role)?
        .map(|r| r["organization"].clone())
        .filter(Value::is_object);
    Ok(practice.into_iter().chain([requester.clone()]).collect())
}

/// A readable name for who a Reference names: a link worker with their
/// employer and employment model, or an organisation's name.
fn actor(tx: &mut Tx, reference: &Value) -> FhirResult<String> {
    let fallback = reference["display"]
        .as_str()
        .or(reference["reference"].as_str())
        .unwrap_or("someone not named")
        .to_string();
    if let Some(org) = local_id(reference, "Organization") {
        return Ok(organisation_name(tx, &org)?.unwrap_or(fallback));
    }
    let Some(role_id) = local_id(reference, "PractitionerRole") else {
        return Ok(fallback);
    };
    let Some(role) = live(tx, "PractitionerRole", &role_id)? else {
        return Ok(fallback);
    };
    let person = match local_id(&role["practitioner"], "Practitioner") {
        Some(p) => live(tx, "Practitioner", &p)?.and_then(|p| person_name(&p["name"])),
        None => None,
    };
    let employer = match local_id(&role["organization"], "Organization") {
        Some(o) => organisation_name(tx, &o)?,
        None => None,
    };
    let model = list(&role["extension"])
        .iter()
        .find(|e| e["url"] == format!("{SP}/StructureDefinition/sp-employment-model"))
        .and_then(|e| {
            let system = e["valueCoding"]["system"].as_str()?;
            let code = e["valueCoding"]["code"].as_str()?;
            Some(display(system, code))
        });
    let mut text = format!("link worker {}", person.unwrap_or(fallback));
    let details: Vec<String> = employer.into_iter().chain(model).collect();
    if !details.is_empty() {
        text.push_str(&format!(" ({})", details.join(", ")));
    }
    Ok(text)
}

fn organisation_name(tx: &mut Tx, id: &str) -> FhirResult<Option<String>> {
    Ok(live(tx, "Organization", id)?.and_then(|o| o["name"].as_str().map(String::from)))
}

fn person_name(names: &Value) -> Option<String> {
    let name = list(names).first()?;
    if let Some(text) = name["text"].as_str() {
        return Some(text.to_string());
    }
    let parts: Vec<&str> = list(&name["given"])
        .iter()
        .filter_map(|g| g.as_str())
        .chain(name["family"].as_str())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// What the text summary says, from the trail.
struct Summary<'a> {
    referral: &'a Value,
    task: &'a Value,
    worked_by: Option<String>,
    contacts: &'a [Value],
    holding: &'a [Value],
    /// Onward referrals: who, and where each stands.
    services: Vec<String>,
    outcomes: &'a [Value],
    declined: bool,
}

impl Summary<'_> {
    fn text(&self) -> String {
        let mut lines = vec!["Social prescribing: message back to the GP practice.".to_string()];
        let sr = self.referral;
        let mut referral = "Referral".to_string();
        if let Some(id) = sr["identifier"][0]["value"].as_str() {
            referral.push_str(&format!(" {id}"));
        }
        if let Some(date) = sr["authoredOn"].as_str() {
            referral.push_str(&format!(" of {}", date.get(..10).unwrap_or(date)));
        }
        let needs: Vec<String> = list(&sr["reasonCode"])
            .iter()
            .filter_map(|c| {
                let system = format!("{SP}/CodeSystem/sp-need");
                code_in(c, &system).map(|code| display(&system, code).to_lowercase())
            })
            .collect();
        if !needs.is_empty() {
            referral.push_str(&format!(" for {}", needs.join(", ")));
        }
        lines.push(format!("{referral}."));

        let status = self.task["status"].as_str().unwrap_or_default();
        if ended(status) {
            let mut end = format!("Ended: {status}");
            let reason = &self.task["statusReason"];
            let why = code_in(reason, &format!("{SP}/CodeSystem/sp-status-reason"))
                .map(|code| display(&format!("{SP}/CodeSystem/sp-status-reason"), code))
                .or(reason["text"].as_str().map(String::from));
            if let Some(why) = why {
                end.push_str(&format!(" ({why})"));
            }
            if let Some(date) = self.task["meta"]["lastUpdated"].as_str() {
                end.push_str(&format!(" on {}", date.get(..10).unwrap_or(date)));
            }
            lines.push(format!("{end}."));
        } else {
            // An outcome recorded while the work goes on.
            lines.push(format!(
                "Under way: {status}; this summary is amended when the work ends."
            ));
        }
        if self.declined {
            lines.push(format!(
                "The person declined social prescribing (SNOMED CT {} {}).",
                DECLINED.1, DECLINED.2
            ));
        }
        lines.push(format!(
            "Worked by: {}.",
            self.worked_by
                .as_deref()
                .unwrap_or("nobody; no link worker took the referral up")
        ));
        lines.push(format!("Contacts: {}.", self.contacts()));
        lines.push(format!("Holding work: {}.", self.holding()));
        lines.push(format!(
            "Connected to: {}.",
            if self.services.is_empty() {
                "no onward referral".to_string()
            } else {
                self.services.join("; ")
            }
        ));
        lines.push(format!("Outcomes: {}.", self.outcomes()));
        lines.join("\n")
    }

    fn contacts(&self) -> String {
        let system = format!("{SP}/CodeSystem/sp-contact-mode");
        let held: Vec<&Value> = self.contacts.iter().filter(|e| !void(e)).collect();
        let mut modes: BTreeMap<String, usize> = BTreeMap::new();
        for e in &held {
            let mode = list(&e["type"])
                .iter()
                .find_map(|t| code_in(t, &system))
                .map_or("other".to_string(), |code| {
                    display(&system, code).to_lowercase()
                });
            *modes.entry(mode).or_default() += 1;
        }
        if held.is_empty() {
            return "none recorded".into();
        }
        let modes: Vec<String> = modes.iter().map(|(m, n)| format!("{n} {m}")).collect();
        format!("{} ({})", held.len(), modes.join(", "))
    }

    fn holding(&self) -> String {
        let system = format!("{SP}/CodeSystem/sp-holding-work");
        let done: Vec<&Value> = self.holding.iter().filter(|p| !void(p)).collect();
        if done.is_empty() {
            return "none recorded".into();
        }
        let mut kinds: BTreeSet<String> = BTreeSet::new();
        let mut minutes = 0i64;
        for p in &done {
            if let Some(code) = code_in(&p["category"], &system) {
                kinds.insert(display(&system, code).to_lowercase());
            }
            let period = &p["performedPeriod"];
            let at = |k: &str| {
                period[k]
                    .as_str()
                    .and_then(crate::search::date::range)
                    .map(|(low, _)| low)
            };
            if let (Some(start), Some(end)) = (at("start"), at("end")) {
                minutes += (end - start).whole_minutes().max(0);
            }
        }
        let kinds: Vec<String> = kinds.into_iter().collect();
        format!(
            "{} episode{}, {:.1} hours ({})",
            done.len(),
            if done.len() == 1 { "" } else { "s" },
            minutes as f64 / 60.0,
            kinds.join(", ")
        )
    }

    fn outcomes(&self) -> String {
        let timing = format!("{SP}/CodeSystem/sp-outcome-timing");
        let measure = format!("{SP}/CodeSystem/sp-outcome-measure");
        // measure → timing → (when, value): the latest score of each timing.
        let mut scores: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
        for o in self.outcomes {
            let Some(when) = list(&o["category"])
                .iter()
                .find_map(|c| code_in(c, &timing))
            else {
                continue;
            };
            let name = code_in(&o["code"], &measure)
                .map(|code| display(&measure, code))
                .or(o["code"]["text"].as_str().map(String::from))
                .unwrap_or_else(|| "score".into());
            let value = o
                .get("valueInteger")
                .or(o["valueQuantity"].get("value"))
                .map_or("(no value)".to_string(), Value::to_string);
            let at = o["effectiveDateTime"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let slot = scores.entry(name).or_default();
            if slot.get(when).is_none_or(|(seen, _)| *seen <= at) {
                slot.insert(when.to_string(), (at, value));
            }
        }
        if scores.is_empty() {
            return "none recorded".into();
        }
        scores
            .iter()
            .map(|(name, by_timing)| {
                let parts: Vec<String> = ["baseline", "follow-up"]
                    .iter()
                    .filter_map(|t| by_timing.get(*t).map(|(_, v)| format!("{t} {v}")))
                    .collect();
                format!("{name} {}", parts.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A record withdrawn from the trail (entered in error, cancelled, not done).
fn void(resource: &Value) -> bool {
    resource["status"]
        .as_str()
        .is_some_and(|s| VOID.contains(&s))
}

/// The display of a code of ours, else the code.
fn display(system: &str, code: &str) -> String {
    crate::profiles::load()
        .ok()
        .and_then(|p| p.display(system, code))
        .unwrap_or(code)
        .to_string()
}

/// The code of the first coding from `system` in a CodeableConcept.
fn code_in<'a>(concept: &'a Value, system: &str) -> Option<&'a str> {
    list(&concept["coding"])
        .iter()
        .find(|c| c["system"] == system)
        .and_then(|c| c["code"].as_str())
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn parse(body: &str, res_type: &str, id: &str) -> FhirResult<Value> {
    serde_json::from_str(body)
        .map_err(|e| FhirError::Internal(format!("stored {res_type}/{id} unreadable: {e}")))
}

/// The current version of a live resource, parsed.
fn live(tx: &mut Tx, res_type: &str, id: &str) -> FhirResult<Option<Value>> {
    match tx.read(res_type, id)? {
        Some(c) if !c.deleted => parse(&c.body, res_type, id).map(Some),
        _ => Ok(None),
    }
}

/// Every live `res_type` whose reference parameter `param` names any of
/// `refs`, every page of them, whoever the transaction is for.
fn search_all(tx: &mut Tx, res_type: &str, param: &str, refs: &[String]) -> FhirResult<Vec<Value>> {
    let mut found = vec![];
    for chunk in refs.chunks(MAX_OR_VALUES) {
        let params = vec![
            (param.to_string(), chunk.join(",")),
            ("_count".to_string(), MAX_COUNT.to_string()),
            ("_total".to_string(), "none".to_string()),
        ];
        let mut q = SearchQuery::parse(res_type, &params, true)?;
        loop {
            let page = tx.search(res_type, &q)?;
            for c in &page.items {
                found.push(parse_current(c)?);
            }
            match page.items.last() {
                Some(last) if page.more => q.after_id = Some(last.res_id.clone()),
                _ => break,
            }
        }
    }
    Ok(found)
}

fn parse_current(c: &Current) -> FhirResult<Value> {
    parse(&c.body, &c.res_type, &c.res_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_references_of_the_type_name_an_id() {
        let r = |s: &str| json!({ "reference": s });
        assert_eq!(
            local_id(&r("ServiceRequest/sr-1/_history/2"), "ServiceRequest").as_deref(),
            Some("sr-1")
        );
        assert_eq!(local_id(&r("ServiceRequestX/sr-1"), "ServiceRequest"), None);
        assert_eq!(local_id(&r("urn:uuid:1"), "ServiceRequest"), None);
        assert_eq!(local_id(&json!({"display": "GP"}), "Organization"), None);
    }

    #[test]
    fn the_summary_names_contacts_holding_work_services_and_outcomes() {
        let sr = json!({"identifier": [{"value": "REF-1"}], "authoredOn": "2026-01-10",
                        "reasonCode": [{"coding": [{"system": format!("{SP}/CodeSystem/sp-need"),
                                                    "code": "loneliness"}]}]});
        let task = json!({"status": "rejected", "meta": {"lastUpdated": "2026-03-01T10:00:00Z"},
                          "statusReason": {"coding": [{"system": format!("{SP}/CodeSystem/sp-status-reason"),
                                                       "code": DECLINED_REASON}]}});
        let contact = |mode: &str| {
            json!({"status": "finished", "type": [{"coding": [
                {"system": format!("{SP}/CodeSystem/sp-contact-mode"), "code": mode}]}]})
        };
        let contacts = [contact("phone"), contact("phone"), contact("home-visit")];
        let holding = [json!({"status": "completed",
            "category": {"coding": [{"system": format!("{SP}/CodeSystem/sp-holding-work"), "code": "check-in-call"}]},
            "performedPeriod": {"start": "2026-02-01T09:00:00Z", "end": "2026-02-01T09:30:00Z"}})];
        let score = |timing: &str, value: i64| {
            json!({"status": "final", "valueInteger": value, "effectiveDateTime": "2026-02-01",
                   "category": [{"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-timing"), "code": timing}]}],
                   "code": {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-measure"),
                                        "code": "ons4-worthwhile"}]}})
        };
        let outcomes = [score("follow-up", 7), score("baseline", 4)];
        let text = Summary {
            referral: &sr,
            task: &task,
            worked_by: Some("link worker A".into()),
            contacts: &contacts,
            holding: &holding,
            services: vec!["Money Advice (completed)".into()],
            outcomes: &outcomes,
            declined: true,
        }
        .text();
        for part in [
            "Referral REF-1 of 2026-01-10",
            "Ended: rejected",
            "on 2026-03-01",
            "871711000000103",
            "Worked by: link worker A.",
            "Contacts: 3 (",
            "2 phone",
            "Holding work: 1 episode, 0.5 hours",
            "Connected to: Money Advice (completed).",
            "baseline 4, follow-up 7",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
    }
}
