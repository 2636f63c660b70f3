//! `GET ServiceRequest/{id}/$trail` and `serve --demo`, on both databases.

mod common;

use common::*;
use serde_json::{json, Value};

const ACTOR: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-trail-actor";
const EMPLOYMENT: &str =
    "https://sp-hub.example/fhir/StructureDefinition/sp-trail-employment-model";
const EMPLOYMENT_MODEL: &str = "https://sp-hub.example/fhir/CodeSystem/sp-employment-model";

/// A referral and its Task posted together in one transaction, as a GP
/// system would; returns (referral id, Task as stored).
async fn referral_with_task(s: &Server, pid: &str, referral_id: &str) -> (String, Value) {
    let mut t = task("placeholder", pid);
    t["focus"] = json!({"reference": "urn:uuid:5b1a2c3d-0000-4000-8000-000000000001"});
    t["identifier"][0]["value"] = json!(format!("task-{referral_id}"));
    // The open pool: no owner yet.
    t.as_object_mut().unwrap().remove("owner");
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:5b1a2c3d-0000-4000-8000-000000000001",
             "resource": service_request(pid, referral_id),
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": t, "request": {"method": "POST", "url": "Task"}}
        ]
    });
    let resp = expect_json(s.post_json("/", &bundle).await, 200).await;
    let sid = resp["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no referral in {resp}"))
        .to_string();
    let tasks = s
        .get_ok(&format!(
            "/Task?focus=ServiceRequest/{sid}&identifier={REFERRAL_ID}|task-{referral_id}"
        ))
        .await;
    let task = entries(&tasks)
        .first()
        .map(|e| e["resource"].clone())
        .unwrap_or_else(|| panic!("the referral's Task was not found: {tasks}"));
    (sid, task)
}

/// A link worker's role with the employment-model extension.
fn link_worker_role(model: &str) -> Value {
    json!({
        "resourceType": "PractitionerRole",
        "active": true,
        "extension": [{
            "url": "https://sp-hub.example/fhir/StructureDefinition/sp-employment-model",
            "valueCoding": {"system": EMPLOYMENT_MODEL, "code": model}
        }],
        "code": [{"text": "Social prescribing link worker"}]
    })
}

fn contact(sid: &str, pid: &str, role: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "meta": {"profile": ["https://sp-hub.example/fhir/StructureDefinition/sp-contact"]},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR",
                  "display": "virtual"},
        "type": [{"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-contact-mode",
                              "code": "phone", "display": "Phone"}]}],
        "subject": {"reference": format!("Patient/{pid}")},
        "basedOn": [{"reference": format!("ServiceRequest/{sid}")}],
        "participant": [{"individual": {"reference": format!("PractitionerRole/{role}")}}],
        "period": {"start": "2026-01-14T13:00:00Z", "end": "2026-01-14T13:39:00Z"},
        "length": {"value": 39, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
    })
}

fn holding_work(sid: &str, pid: &str, role: &str) -> Value {
    json!({
        "resourceType": "Procedure",
        "meta": {"profile": ["https://sp-hub.example/fhir/StructureDefinition/sp-holding-work"]},
        "basedOn": [{"reference": format!("ServiceRequest/{sid}")}],
        "status": "completed",
        "category": {"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-holding-work",
                                 "code": "signposting"}]},
        "subject": {"reference": format!("Patient/{pid}")},
        "performedPeriod": {"start": "2026-01-17T14:00:00Z", "end": "2026-01-17T15:00:00Z"},
        "performer": [{"actor": {"reference": format!("PractitionerRole/{role}")}}]
    })
}

fn outcome(sid: &str, pid: &str, role: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "meta": {"profile": ["https://sp-hub.example/fhir/StructureDefinition/sp-outcome-ons4"]},
        "basedOn": [{"reference": format!("ServiceRequest/{sid}")}],
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "survey"}]},
            {"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-outcome-timing",
                         "code": "baseline"}]}
        ],
        "code": {"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-outcome-measure",
                             "code": "ons4-life-satisfaction"}]},
        "subject": {"reference": format!("Patient/{pid}")},
        "effectiveDateTime": "2026-01-14T13:00:00Z",
        "performer": [{"reference": format!("PractitionerRole/{role}")}],
        "valueInteger": 4
    })
}

/// `t` moved to `status` (no status in the trail below needs a reason).
async fn move_task(s: &Server, t: &Value, status: &str, owner: Option<&str>) -> Value {
    let mut t = t.clone();
    t.as_object_mut().unwrap().remove("meta");
    t["status"] = json!(status);
    if let Some(o) = owner {
        t["owner"] = json!({"reference": o});
    }
    s.update(&t).await
}

/// (type, id, versionId) of each entry, in Bundle order.
fn steps(trail: &Value) -> Vec<(String, String, String)> {
    entries(trail)
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                r["resourceType"].as_str().unwrap_or_default().to_string(),
                r["id"].as_str().unwrap_or_default().to_string(),
                r["meta"]["versionId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The entry extensions' values: (actor reference, employment model code).
fn marks(entry: &Value) -> (Option<Value>, Option<String>) {
    let ext = entry["extension"].as_array().cloned().unwrap_or_default();
    let actor = ext
        .iter()
        .find(|e| e["url"] == ACTOR)
        .map(|e| e["valueReference"].clone());
    let model = ext
        .iter()
        .find(|e| e["url"] == EMPLOYMENT)
        .and_then(|e| e["valueCoding"]["code"].as_str().map(String::from));
    (actor, model)
}

fn entry_of<'a>(trail: &'a [Value], t: &str, id: &str, version: &str) -> &'a Value {
    trail
        .iter()
        .find(|e| {
            e["resource"]["resourceType"] == t
                && e["resource"]["id"] == id
                && e["resource"]["meta"]["versionId"] == version
        })
        .unwrap_or_else(|| panic!("{t}/{id} version {version} is not on the trail"))
}

fn assert_time_order(trail: &Value) {
    let keys: Vec<(String, String, String, u64)> = entries(trail)
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                r["meta"]["lastUpdated"].as_str().unwrap().to_string(),
                r["resourceType"].as_str().unwrap().to_string(),
                r["id"].as_str().unwrap().to_string(),
                r["meta"]["versionId"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "entries are not in time order");
}

async fn trail_holds_every_version_of_everything_on_the_referral_in_time_order(s: Server) {
    let p = s.create(&patient("9000000009")).await;
    let pid = p["id"].as_str().unwrap();
    let role = s.create(&link_worker_role("vcs-subcontracted")).await;
    let rid = role["id"].as_str().unwrap();
    let role_ref = format!("PractitionerRole/{rid}");

    let (sid, t1) = referral_with_task(&s, pid, "TRAIL-1").await;
    let tid = t1["id"].as_str().unwrap().to_string();
    let t2 = move_task(&s, &t1, "accepted", Some(&role_ref)).await;

    // An onward referral: a sub-task of the Task, found through partOf only.
    let mut sub = task("x", pid);
    let o = sub.as_object_mut().unwrap();
    o.remove("focus");
    o.remove("owner");
    sub["identifier"][0]["value"] = json!("debt-advice-TRAIL-1");
    sub["partOf"] = json!([{"reference": format!("Task/{tid}")}]);
    let sub = s.create(&sub).await;
    let sub_id = sub["id"].as_str().unwrap().to_string();

    let t3 = move_task(&s, &t2, "in-progress", None).await;
    assert_eq!(t3["meta"]["versionId"], "3");
    let enc = s.create(&contact(&sid, pid, rid)).await;
    let proc_ = s.create(&holding_work(&sid, pid, rid)).await;
    let obs = s.create(&outcome(&sid, pid, rid)).await;
    let comm = s
        .create(&json!({
            "resourceType": "Communication",
            "status": "completed",
            "basedOn": [{"reference": format!("ServiceRequest/{sid}")}],
            "subject": {"reference": format!("Patient/{pid}")},
            "sender": {"reference": role_ref},
            "payload": [{"contentString": "Referred on to debt advice."}]
        }))
        .await;
    // Who accepted the Task, recorded against that version.
    let prov = s
        .create(&json!({
            "resourceType": "Provenance",
            "target": [{"reference": format!("Task/{tid}/_history/2")}],
            "recorded": "2026-01-14T12:00:00Z",
            "agent": [{"who": {"reference": role_ref}}]
        }))
        .await;

    // Another referral's story must stay out of this one's trail.
    let (other_sid, _) = referral_with_task(&s, pid, "TRAIL-2").await;
    let other_enc = s.create(&contact(&other_sid, pid, rid)).await;

    let resp = s.get(&format!("/ServiceRequest/{sid}/$trail")).await;
    let trail = expect_json(resp, 200).await;
    assert_eq!(trail["resourceType"], "Bundle");
    assert_eq!(trail["type"], "collection");
    assert!(trail.get("total").is_none(), "a collection has no total");
    let all = entries(&trail);
    let got = steps(&trail);

    let task_versions: Vec<&str> = got
        .iter()
        .filter(|(t, i, _)| t == "Task" && *i == tid)
        .map(|(_, _, v)| v.as_str())
        .collect();
    assert_eq!(
        task_versions,
        ["1", "2", "3"],
        "every Task version: {got:?}"
    );
    for (t, id) in [
        ("ServiceRequest", sid.as_str()),
        ("Task", sub_id.as_str()),
        ("Encounter", enc["id"].as_str().unwrap()),
        ("Procedure", proc_["id"].as_str().unwrap()),
        ("Observation", obs["id"].as_str().unwrap()),
        ("Communication", comm["id"].as_str().unwrap()),
        ("Provenance", prov["id"].as_str().unwrap()),
    ] {
        assert!(
            got.iter().any(|(gt, gi, _)| gt == t && gi == id),
            "{t}/{id} is not on the trail: {got:?}"
        );
    }
    let other_task = format!("task-{}", "TRAIL-2");
    for e in &all {
        let r = &e["resource"];
        let text = r.to_string();
        assert!(
            !text.contains(&format!("ServiceRequest/{other_sid}")),
            "another referral's resource is on the trail: {r}"
        );
        assert_ne!(r["id"], other_enc["id"]);
        assert!(!text.contains(&other_task));
        assert_eq!(
            e["fullUrl"],
            json!(format!(
                "{}/{}/{}",
                s.base,
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ))
        );
        assert!(
            [
                "ServiceRequest",
                "Task",
                "Encounter",
                "Procedure",
                "Observation",
                "Communication",
                "Provenance"
            ]
            .contains(&r["resourceType"].as_str().unwrap()),
            "unexpected type on the trail: {r}"
        );
    }
    assert_time_order(&trail);

    // Who did each step: the requester before anyone owns the Task, then
    // the link worker's role, with its employment model.
    let (actor, model) = marks(entry_of(&all, "Task", &tid, "1"));
    assert_eq!(actor, Some(task("x", pid)["requester"].clone()));
    assert_eq!(model, None);
    for v in ["2", "3"] {
        let (actor, model) = marks(entry_of(&all, "Task", &tid, v));
        assert_eq!(actor, Some(json!({"reference": role_ref})));
        assert_eq!(model.as_deref(), Some("vcs-subcontracted"));
    }
    for (t, r) in [
        ("Encounter", &enc),
        ("Procedure", &proc_),
        ("Observation", &obs),
        ("Communication", &comm),
        ("Provenance", &prov),
    ] {
        let (actor, model) = marks(entry_of(&all, t, r["id"].as_str().unwrap(), "1"));
        assert_eq!(actor, Some(json!({"reference": role_ref})), "{t}");
        assert_eq!(model.as_deref(), Some("vcs-subcontracted"), "{t}");
    }
    let (actor, _) = marks(entry_of(&all, "ServiceRequest", &sid, "1"));
    assert_eq!(actor, Some(service_request(pid, "x")["requester"].clone()));
}

async fn trail_of_an_unknown_referral_is_404(s: Server) {
    let resp = s.get("/ServiceRequest/no-such-referral/$trail").await;
    let o = assert_outcome(resp, 404, "not-found").await;
    assert!(diagnostics(&o).contains("no-such-referral"), "{o}");
}

async fn trail_of_a_deleted_referral_is_410(s: Server) {
    let p = s.create(&patient("9000000009")).await;
    let (sid, _) = referral_with_task(&s, p["id"].as_str().unwrap(), "TRAIL-DEL").await;
    let resp = s.delete(&format!("/ServiceRequest/{sid}")).await;
    assert!(resp.status().is_success(), "delete: {}", resp.status());
    let resp = s.get(&format!("/ServiceRequest/{sid}/$trail")).await;
    assert_outcome(resp, 410, "deleted").await;
}

async fn demo_loads_the_example_pcn_once(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    assert!(
        s.log().contains("demo data loaded (484 resources)"),
        "log: {}",
        s.log()
    );
    assert_eq!(s.total("/Organization").await, 7);
    assert_eq!(s.total("/Task?_count=0").await, 53);
    let pcn = s.get_ok("/Organization/org-pcn").await;
    assert_eq!(pcn["type"][0]["coding"][0]["code"], "pcn");
    assert!(s.total("/Task?owner:missing=true&status=requested").await > 0);

    // The trail of a demo referral: its Task, contacts and outcomes, done by
    // a PCN-employed link worker.
    let trail = s.get_ok("/ServiceRequest/referral-001/$trail").await;
    let all = entries(&trail);
    let got = steps(&trail);
    assert!(
        got.contains(&("Task".into(), "task-001".into(), "1".into())),
        "{got:?}"
    );
    assert!(got.iter().any(|(t, _, _)| t == "Encounter"), "{got:?}");
    assert!(got.iter().any(|(t, _, _)| t == "Observation"), "{got:?}");
    let (actor, model) = marks(entry_of(&all, "Task", "task-001", "1"));
    assert_eq!(
        actor,
        Some(json!({"reference": "PractitionerRole/role-lw-1"}))
    );
    assert_eq!(model.as_deref(), Some("pcn-employed"));
    assert_time_order(&trail);

    // Starting again with --demo changes nothing.
    let s = s.restart().await;
    assert!(
        s.log().contains("demo data already present"),
        "log: {}",
        s.log()
    );
    assert_eq!(s.total("/Organization/org-pcn/_history").await, 1);
    assert_eq!(s.total("/Task?_count=0").await, 53);
}

both!(
    trail_holds_every_version_of_everything_on_the_referral_in_time_order,
    trail_of_an_unknown_referral_is_404,
    trail_of_a_deleted_referral_is_410,
);
both_backends!(demo_loads_the_example_pcn_once);
