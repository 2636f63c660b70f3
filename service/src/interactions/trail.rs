//! `GET ServiceRequest/{id}/$trail`: every version of a referral and of
//! everything on its trail, in time order, each marked with who did it.
//!
//! What belongs to the trail is found with ordinary searches (the same
//! `SearchQuery` a client's search would parse): Tasks whose `focus` is the
//! referral, their sub-tasks (`part-of`, level by level), Encounters,
//! Procedures, Observations and Communications `based-on` it, and
//! Provenance whose `target` is any of those. Their versions come from the
//! history of each.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::live;
use crate::auth::access::Access;
use crate::auth::Principal;
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource;
use crate::search::{SearchQuery, MAX_COUNT, MAX_OR_VALUES};
use crate::store::{HistoryQuery, HistoryScope, Snapshot, Store, Version};

/// Most versions one trail may hold; a larger one is refused (422).
pub const MAX_ENTRIES: usize = 10_000;
/// How many levels of sub-tasks below the referral's Tasks are followed.
pub const MAX_DEPTH: usize = 8;

pub const ACTOR_URL: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-trail-actor";
pub const EMPLOYMENT_MODEL_URL: &str =
    "https://sp-hub.example/fhir/StructureDefinition/sp-trail-employment-model";
/// The extension on a link worker's PractitionerRole (sp-employment-model.json).
const ROLE_EMPLOYMENT_MODEL: &str =
    "https://sp-hub.example/fhir/StructureDefinition/sp-employment-model";

/// Types whose `based-on` names the referral: contacts, holding work,
/// outcomes, communications.
const BASED_ON: &[&str] = &["Encounter", "Procedure", "Observation", "Communication"];

/// One version on the trail and the entry extensions saying who did it.
pub struct Step {
    pub version: Version,
    pub extension: Vec<Value>,
}

/// The trail of `ServiceRequest/{id}`: 404 when unknown, 410 when deleted.
/// `base` is this server's URL (absolute references to it are local).
/// Members of a type the caller's token may not read are left out.
/// Every read runs in one snapshot, so the trail is one moment's state even
/// while it is being written to.
pub fn trail(caller: &Principal, store: &Store, id: &str, base: &str) -> FhirResult<Vec<Step>> {
    store.snapshot(|snap| trail_in(caller, snap, id, base))
}

fn trail_in(
    caller: &Principal,
    store: &mut Snapshot,
    id: &str,
    base: &str,
) -> FhirResult<Vec<Step>> {
    resource::check_id(id)?;
    let access = Access::of(caller);
    let referral = store.read_as(&access, "ServiceRequest", id)?;
    live(referral.as_ref(), "ServiceRequest", id)?;
    let me = format!("ServiceRequest/{id}");

    let mut members: BTreeSet<(String, String)> = BTreeSet::new();
    members.insert(("ServiceRequest".into(), id.into()));
    let mut frontier = search_ids(
        store,
        &access,
        "Task",
        "focus",
        std::slice::from_ref(&me),
        base,
    )?;
    for depth in 0..=MAX_DEPTH {
        let fresh: Vec<String> = frontier
            .into_iter()
            .filter(|t| members.insert(("Task".into(), t.clone())))
            .collect();
        check_size(members.len())?;
        if fresh.is_empty() || depth == MAX_DEPTH {
            break;
        }
        let refs: Vec<String> = fresh.iter().map(|t| format!("Task/{t}")).collect();
        frontier = search_ids(store, &access, "Task", "part-of", &refs, base)?;
    }
    for t in BASED_ON {
        for rid in search_ids(
            store,
            &access,
            t,
            "based-on",
            std::slice::from_ref(&me),
            base,
        )? {
            members.insert((t.to_string(), rid));
        }
        check_size(members.len())?;
    }
    let targets: Vec<String> = members.iter().map(|(t, i)| format!("{t}/{i}")).collect();
    for rid in search_ids(store, &access, "Provenance", "target", &targets, base)? {
        members.insert(("Provenance".into(), rid));
    }
    check_size(members.len())?;
    members.retain(|(t, _)| caller.may_read_type(t));

    let mut versions = Vec::new();
    for (t, i) in &members {
        let page = store.history(&HistoryQuery {
            scope: HistoryScope::Instance(t.clone(), i.clone()),
            since: None,
            at: None,
            count: (MAX_ENTRIES + 1 - versions.len().min(MAX_ENTRIES)) as i64,
            before_seq: None,
            after_tick: None,
            access: access.clone(),
        })?;
        // A deletion has no resource to show, and a collection entry needs one.
        versions.extend(page.items.into_iter().filter(|v| v.body.is_some()));
        check_size(versions.len())?;
    }
    versions.sort_by(|a, b| {
        (&a.last_updated, &a.res_type, &a.res_id, a.version).cmp(&(
            &b.last_updated,
            &b.res_type,
            &b.res_id,
            b.version,
        ))
    });

    let mut models: HashMap<String, Option<Value>> = HashMap::new();
    versions
        .into_iter()
        .map(|version| {
            let body: Value = version
                .body
                .as_deref()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            let mut extension = vec![];
            if let Some(actor) = actor(&version.res_type, &body) {
                let model = match role_id(actor, base) {
                    Some(role) => match models.get(&role) {
                        Some(m) => m.clone(),
                        None => {
                            let m = employment_model(store, &role)?;
                            models.insert(role, m.clone());
                            m
                        }
                    },
                    None => None,
                };
                extension.push(json!({"url": ACTOR_URL, "valueReference": actor}));
                if let Some(coding) = model {
                    extension.push(json!({"url": EMPLOYMENT_MODEL_URL, "valueCoding": coding}));
                }
            }
            Ok(Step { version, extension })
        })
        .collect()
}

fn check_size(n: usize) -> FhirResult<()> {
    if n > MAX_ENTRIES {
        return Err(FhirError::Unprocessable {
            message: format!(
                "the trail holds more than {MAX_ENTRIES} versions, more than this server \
                 returns in one Bundle"
            ),
            expression: None,
        });
    }
    Ok(())
}

/// Ids of live `res_type` resources whose reference parameter `param`
/// names any of `refs`, every page of them.
fn search_ids(
    store: &mut Snapshot,
    access: &Access,
    res_type: &str,
    param: &str,
    refs: &[String],
    base: &str,
) -> FhirResult<Vec<String>> {
    let mut ids = vec![];
    for chunk in refs.chunks(MAX_OR_VALUES) {
        let params = vec![
            (param.to_string(), chunk.join(",")),
            ("_count".to_string(), MAX_COUNT.to_string()),
            ("_total".to_string(), "none".to_string()),
        ];
        let mut q = SearchQuery::parse(res_type, &params, true)?.local_to(base);
        q.access = access.clone();
        loop {
            let page = store.search(res_type, &q)?;
            ids.extend(page.items.iter().map(|c| c.res_id.clone()));
            check_size(ids.len())?;
            match page.items.last() {
                Some(last) if page.more => q.after_id = Some(last.res_id.clone()),
                _ => break,
            }
        }
    }
    Ok(ids)
}

/// Who made this version: the Reference naming them, if the version has one.
fn actor<'a>(res_type: &str, body: &'a Value) -> Option<&'a Value> {
    let found = match res_type {
        "Task" => Some(&body["owner"])
            .filter(|r| r.is_object())
            .or(Some(&body["requester"])),
        "ServiceRequest" => Some(&body["requester"]),
        "Encounter" => Some(&body["participant"][0]["individual"]),
        "Procedure" => Some(&body["performer"][0]["actor"]),
        "Observation" => Some(&body["performer"][0]),
        "Communication" => Some(&body["sender"]),
        "Provenance" => Some(&body["agent"][0]["who"]),
        _ => None,
    };
    found.filter(|r| r.is_object())
}

/// The id of the PractitionerRole a Reference names on this server.
fn role_id(reference: &Value, base: &str) -> Option<String> {
    let r = reference["reference"].as_str()?;
    let ours = format!("{}/", base.trim_end_matches('/'));
    let local = r.strip_prefix(ours.as_str()).unwrap_or(r);
    let id = local.strip_prefix("PractitionerRole/")?;
    let id = id.split('/').next()?;
    resource::check_id(id).ok()?;
    Some(id.to_string())
}

/// The employment model coding on a link worker's role, if it has one.
fn employment_model(store: &mut Snapshot, role: &str) -> FhirResult<Option<Value>> {
    let Some(current) = store.read("PractitionerRole", role)? else {
        return Ok(None);
    };
    if current.deleted {
        return Ok(None);
    }
    let body: Value = serde_json::from_str(&current.body).unwrap_or(Value::Null);
    Ok(body["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == ROLE_EMPLOYMENT_MODEL)
        .and_then(|e| e.get("valueCoding").cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_done_by_its_owner_else_its_requester() {
        let owned = json!({"owner": {"reference": "PractitionerRole/a"},
                           "requester": {"display": "GP"}});
        assert_eq!(actor("Task", &owned), Some(&owned["owner"]));
        let pooled = json!({"requester": {"display": "GP"}});
        assert_eq!(actor("Task", &pooled), Some(&pooled["requester"]));
        assert_eq!(actor("Task", &json!({})), None);
        let p = json!({"agent": [{"who": {"reference": "Organization/o"}}]});
        assert_eq!(actor("Provenance", &p), Some(&p["agent"][0]["who"]));
    }

    #[test]
    fn only_practitioner_roles_here_are_looked_up() {
        let base = "http://h:1";
        let r = |s: &str| json!({ "reference": s });
        assert_eq!(
            role_id(&r("PractitionerRole/lw-1"), base).as_deref(),
            Some("lw-1")
        );
        assert_eq!(
            role_id(&r("http://h:1/PractitionerRole/lw-1/_history/2"), base).as_deref(),
            Some("lw-1")
        );
        assert_eq!(
            role_id(&r("http://elsewhere/PractitionerRole/lw-1"), base),
            None
        );
        assert_eq!(role_id(&r("Organization/o"), base), None);
        assert_eq!(role_id(&json!({"display": "someone"}), base), None);
    }

    #[test]
    fn a_trail_past_the_bound_is_refused() {
        assert!(check_size(MAX_ENTRIES).is_ok());
        let err = check_size(MAX_ENTRIES + 1).unwrap_err();
        assert_eq!(err.status(), 422);
    }
}
