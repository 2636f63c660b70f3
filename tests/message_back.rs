//! The message back to the GP: when the Task of an SP referral ends (or an
//! outcome is recorded after that), the hub writes a Communication for the
//! referring practice in the same transaction. Each organisation acts
//! through its own client: the GP practice refers and reads, the VCS works
//! the Task, a second VCS works an onward referral.

mod common;

use common::*;
use serde_json::{json, Value};

both!(
    a_completed_task_writes_one_message_back_the_gp_files,
    a_rejection_the_person_declined_carries_snomed_social_prescribing_declined,
    cancelled_and_failed_tasks_write_a_message_back,
    each_outcome_and_the_end_amend_the_same_message_back,
    a_refused_write_leaves_no_message_back,
    a_task_brought_in_already_ended_is_not_an_end,
);

const SP: &str = "https://sp-hub.example/fhir";
const DECLINED: &str = "871711000000103";
const ALL: &str = "system/*.cruds";

fn message_back_category() -> String {
    enc(&format!(
        "{SP}/CodeSystem/sp-communication-category|message-back"
    ))
}

/// The organisations, the link worker and the clients of one test.
struct World {
    admin: Server,
    gp: Server,
    vcs: Server,
    money: Server,
    practice: String,
    role: String,
    money_org: String,
}

/// A practice, a VCS organisation with a VCS-subcontracted link worker,
/// a money-advice VCS, and a client for each (the admin writes the
/// directory, as an operator would).
async fn world(s: Server) -> World {
    let org = |name: &str| json!({"resourceType": "Organization", "name": name, "active": true});
    let practice = s.create(&org("Mill Lane Surgery")).await;
    let vcs_org = s.create(&org("Riverside Community Wellbeing")).await;
    let money_org = s.create(&org("Riverside Money Advice")).await;
    let person = s
        .create(&json!({"resourceType": "Practitioner",
                        "name": [{"family": "Okafor", "given": ["Sam"]}]}))
        .await;
    let id = |r: &Value| r["id"].as_str().unwrap().to_string();
    let role = s
        .create(&json!({
            "resourceType": "PractitionerRole",
            "extension": [{"url": format!("{SP}/StructureDefinition/sp-employment-model"),
                           "valueCoding": {"system": format!("{SP}/CodeSystem/sp-employment-model"),
                                           "code": "vcs-subcontracted"}}],
            "active": true,
            "practitioner": {"reference": format!("Practitioner/{}", id(&person))},
            "organization": {"reference": format!("Organization/{}", id(&vcs_org))}
        }))
        .await;
    let practice = format!("Organization/{}", id(&practice));
    let money_ref = format!("Organization/{}", id(&money_org));
    World {
        gp: s.as_new_client("mb-gp", &practice, "gp", ALL).await,
        vcs: s
            .as_new_client(
                "mb-vcs",
                &format!("Organization/{}", id(&vcs_org)),
                "vcs",
                ALL,
            )
            .await,
        money: s.as_new_client("mb-money", &money_ref, "vcs", ALL).await,
        admin: s,
        practice,
        role: format!("PractitionerRole/{}", id(&role)),
        money_org: money_ref,
    }
}

/// A referral the GP posts (patient and referral in one transaction)
/// naming the link worker as performer, so its Task is the link worker's.
/// Returns (patient reference, referral reference, its Task).
async fn refer(w: &World, nhs_number: &str, tag: &str) -> (String, String, Value) {
    refer_from(w, &w.practice, nhs_number, tag).await
}

/// As `refer`, with `requester` (the practice or a GP's role in it).
async fn refer_from(
    w: &World,
    requester: &str,
    nhs_number: &str,
    tag: &str,
) -> (String, String, Value) {
    let patient_urn = "urn:uuid:5b0e7f2c-9f0e-4c55-8a1a-3c9d2f6e7b10";
    let mut sr = service_request("x", tag);
    sr["subject"] = json!({ "reference": patient_urn });
    sr["requester"] = json!({ "reference": requester });
    sr["performer"] = json!([{ "reference": w.role }]);
    sr["reasonCode"] = json!([{"coding": [{"system": SP_NEED, "code": "loneliness"}]}]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": patient_urn, "resource": patient(nhs_number),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}}
    ]});
    let out = expect_json(w.gp.post_json("/", &bundle).await, 200).await;
    let e = entries(&out);
    let patient = format!("Patient/{}", e[0]["resource"]["id"].as_str().unwrap());
    let referral = format!(
        "ServiceRequest/{}",
        e[1]["resource"]["id"].as_str().unwrap()
    );
    let tasks = w.vcs.get_ok(&format!("/Task?focus={referral}")).await;
    assert_eq!(tasks["total"], 1, "{tasks}");
    (patient, referral, tasks["entry"][0]["resource"].clone())
}

/// `t` moved to `status` (with `reason` as its statusReason) by `by`;
/// answers the response.
async fn try_move(by: &Server, t: &Value, status: &str, reason: Option<&str>) -> reqwest::Response {
    let mut next = t.clone();
    next["status"] = json!(status);
    if let Some(code) = reason {
        next["statusReason"] = json!({"coding": [{"system": SP_STATUS_REASON, "code": code}]});
    }
    by.put_json(&format!("/Task/{}", t["id"].as_str().unwrap()), &next)
        .await
}

async fn move_task(by: &Server, t: &Value, status: &str, reason: Option<&str>) -> Value {
    expect_json(try_move(by, t, status, reason).await, 200).await
}

fn outcome(w: &World, referral: &str, patient: &str, timing: &str, value: i64) -> Value {
    json!({
        "resourceType": "Observation",
        "meta": {"profile": [format!("{SP}/StructureDefinition/sp-outcome-ons4")]},
        "basedOn": [{"reference": referral}],
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "survey"}]},
            {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-timing"), "code": timing}]}
        ],
        "code": {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-measure"),
                             "code": "ons4-life-satisfaction"}]},
        "subject": {"reference": patient},
        "effectiveDateTime": if timing == "baseline" { "2026-02-02T10:00:00Z" } else { "2026-05-04T10:00:00Z" },
        "performer": [{"reference": w.role}],
        "valueInteger": value
    })
}

fn contact(w: &World, referral: &str, patient: &str, mode: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "meta": {"profile": [format!("{SP}/StructureDefinition/sp-contact")]},
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
        "type": [{"coding": [{"system": format!("{SP}/CodeSystem/sp-contact-mode"), "code": mode}]}],
        "subject": {"reference": patient},
        "basedOn": [{"reference": referral}],
        "participant": [{"individual": {"reference": w.role}}],
        "period": {"start": "2026-02-02T10:00:00Z", "end": "2026-02-02T10:40:00Z"}
    })
}

fn holding_work(w: &World, referral: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Procedure",
        "meta": {"profile": [format!("{SP}/StructureDefinition/sp-holding-work")]},
        "status": "completed",
        "basedOn": [{"reference": referral}],
        "category": {"coding": [{"system": format!("{SP}/CodeSystem/sp-holding-work"),
                                 "code": "check-in-call"}]},
        "subject": {"reference": patient},
        "performedPeriod": {"start": "2026-02-20T09:00:00Z", "end": "2026-02-20T09:30:00Z"},
        "performer": [{"actor": {"reference": w.role}}]
    })
}

/// The message backs on a referral, as `client` finds them.
async fn message_backs(client: &Server, referral: &str) -> Vec<Value> {
    let b = client
        .get_ok(&format!(
            "/Communication?based-on={referral}&category={}",
            message_back_category()
        ))
        .await;
    entries(&b)
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

async fn the_message_back(client: &Server, referral: &str) -> Value {
    let found = message_backs(client, referral).await;
    assert_eq!(found.len(), 1, "one message back: {found:?}");
    found[0].clone()
}

fn summary(c: &Value) -> String {
    c["payload"][0]["contentString"]
        .as_str()
        .unwrap_or_else(|| panic!("no text summary first: {c}"))
        .to_string()
}

fn references(c: &Value) -> Vec<String> {
    c["payload"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            p["contentReference"]["reference"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

async fn a_completed_task_writes_one_message_back_the_gp_files(s: Server) {
    let w = world(s).await;
    let (patient, referral, task) = refer(&w, "9434765870", "MB-DONE").await;
    let task = move_task(&w.vcs, &task, "accepted", None).await;
    let task = move_task(&w.vcs, &task, "in-progress", None).await;
    for mode in ["phone", "face-to-face"] {
        w.vcs.create(&contact(&w, &referral, &patient, mode)).await;
    }
    w.vcs.create(&holding_work(&w, &referral, &patient)).await;
    let mut outcomes = vec![];
    for (timing, value) in [("baseline", 4), ("follow-up", 7)] {
        let o = w
            .vcs
            .create(&outcome(&w, &referral, &patient, timing, value))
            .await;
        outcomes.push(format!("Observation/{}", o["id"].as_str().unwrap()));
    }
    // An outcome recorded while the work goes on already reaches the GP,
    // saying the work is under way; one record, amended.
    let interim = the_message_back(&w.gp, &referral).await;
    assert_eq!(interim["meta"]["versionId"], "2", "one record, amended");
    let text = summary(&interim);
    assert!(text.contains("Under way: in-progress"), "{text}");
    assert!(text.contains("baseline 4, follow-up 7"), "{text}");
    assert_eq!(sorted(references(&interim)), sorted(outcomes.clone()));

    // An onward referral to money advice; its end is not the referral's.
    let mut sub = task.clone();
    for k in ["id", "meta", "businessStatus"] {
        sub.as_object_mut().unwrap().remove(k);
    }
    sub["status"] = json!("requested");
    sub["partOf"] = json!([{"reference": format!("Task/{}", task["id"].as_str().unwrap())}]);
    sub["owner"] = json!({ "reference": w.money_org });
    let sub = w.vcs.create(&sub).await;
    let sub = move_task(&w.money, &sub, "accepted", None).await;
    move_task(&w.money, &sub, "completed", None).await;
    assert_eq!(
        the_message_back(&w.gp, &referral).await["meta"]["versionId"],
        "2",
        "a sub-task ending writes no message back"
    );

    let done = move_task(&w.vcs, &task, "completed", None).await;
    let c = the_message_back(&w.gp, &referral).await;
    assert_eq!(c["status"], "completed");
    assert_eq!(
        c["meta"]["profile"][0],
        format!("{SP}/StructureDefinition/sp-message-back")
    );
    assert_eq!(c["basedOn"][0]["reference"], referral);
    assert_eq!(c["subject"]["reference"], patient);
    assert_eq!(c["recipient"][0]["reference"], w.practice);
    assert_eq!(c["sender"]["reference"], w.role);
    assert_eq!(
        c["about"][0]["reference"],
        format!("Task/{}", done["id"].as_str().unwrap())
    );
    assert!(
        c["sent"].is_string() && c.get("reasonCode").is_none(),
        "{c}"
    );
    let text = summary(&c);
    for part in [
        "Referral MB-DONE",
        "for loneliness",
        "Ended: completed",
        "Worked by: link worker Sam Okafor (Riverside Community Wellbeing, VCS-subcontracted).",
        "Contacts: 2 (1 face to face, 1 phone).",
        "Holding work: 1 episode, 0.5 hours (check-in call).",
        "Connected to: Riverside Money Advice (completed).",
        "ONS4 life satisfaction baseline 4, follow-up 7",
    ] {
        assert!(text.contains(part), "{part:?} not in the summary:\n{text}");
    }
    assert_eq!(sorted(references(&c)), sorted(outcomes.clone()));

    // Written in the Task's transaction: one Provenance names both (the
    // two before it name the interim versions, with their outcomes).
    let comm = format!("Communication/{}", c["id"].as_str().unwrap());
    let version = c["meta"]["versionId"].as_str().unwrap();
    assert_eq!(version, "3", "made with the first outcome, amended since");
    let prov = w.admin.get_ok(&format!("/Provenance?target={comm}")).await;
    assert_eq!(prov["total"], 3, "one a version: {prov}");
    let this_version = format!("{comm}/_history/{version}");
    let provs = entries(&prov);
    let naming: Vec<&Value> = provs
        .iter()
        .filter(|e| {
            e["resource"]["target"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["reference"] == this_version.as_str())
        })
        .collect();
    assert_eq!(naming.len(), 1, "{prov}");
    let targets: Vec<&str> = naming[0]["resource"]["target"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["reference"].as_str())
        .collect();
    let task_version = format!(
        "Task/{}/_history/{}",
        done["id"].as_str().unwrap(),
        done["meta"]["versionId"].as_str().unwrap()
    );
    for expected in [task_version.as_str(), &format!("{comm}/_history/{version}")] {
        assert!(targets.contains(&expected), "{expected} not in {targets:?}");
    }

    // The GP finds it on the change feed and on the trail; the VCS whose
    // Task ended sees it too.
    let feed =
        w.gp.get_ok(&format!(
            "/Communication?category={}&_feed=0",
            message_back_category()
        ))
        .await;
    assert_eq!(
        entry_ids(&feed),
        vec![c["id"].as_str().unwrap().to_string()]
    );
    let trail = w.gp.get_ok(&format!("/{referral}/$trail")).await;
    assert!(
        entries(&trail)
            .iter()
            .any(|e| e["resource"]["resourceType"] == "Communication"
                && e["resource"]["id"] == c["id"]),
        "the message back is on the trail"
    );
    assert_eq!(w.vcs.status_of(&format!("/{comm}")).await, 200);

    // It meets its own profile, as checked by $validate.
    let resp = w
        .admin
        .post_json(
            "/Communication/$validate",
            &json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": c}]}),
        )
        .await;
    let outcome = expect_json(resp, 200).await;
    let errors: Vec<&Value> = outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "{outcome}");
}

async fn a_rejection_the_person_declined_carries_snomed_social_prescribing_declined(s: Server) {
    let w = world(s).await;
    let (_, referral, task) = refer(&w, "9000000009", "MB-DECLINED").await;
    move_task(&w.vcs, &task, "rejected", Some("declined-by-person")).await;
    let c = the_message_back(&w.gp, &referral).await;
    assert_eq!(c["reasonCode"][0]["coding"][0]["code"], DECLINED, "{c}");
    assert_eq!(
        c["reasonCode"][0]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    let text = summary(&c);
    assert!(
        text.contains("Ended: rejected (Declined by the person)") && text.contains(DECLINED),
        "{text}"
    );
    assert!(text.contains("Contacts: none recorded."), "{text}");
    assert!(references(&c).is_empty());
    // Any other reason is not a decline.
    let (_, other, task) = refer(&w, "9434765919", "MB-FULL").await;
    move_task(&w.vcs, &task, "rejected", Some("capacity-full")).await;
    let c = the_message_back(&w.gp, &other).await;
    assert!(c.get("reasonCode").is_none(), "{c}");
    assert!(summary(&c).contains("(Capacity full)"), "{c}");
}

async fn cancelled_and_failed_tasks_write_a_message_back(s: Server) {
    let w = world(s).await;
    // The GP withdraws a referral before anyone started.
    let (_, cancelled, task) = refer(&w, "9000000009", "MB-CANCEL").await;
    move_task(&w.gp, &task, "cancelled", Some("duplicate")).await;
    let c = the_message_back(&w.gp, &cancelled).await;
    assert!(summary(&c).contains("Ended: cancelled (Duplicate referral)"));
    assert_eq!(c["recipient"][0]["reference"], w.practice);
    assert_eq!(
        w.gp.get_ok(&format!("/{cancelled}")).await["status"],
        "revoked"
    );
    // The link worker cannot reach the person.
    // A referral from a GP in the practice goes back to the practice and
    // to that GP.
    let gp_role = w
        .admin
        .create(&json!({"resourceType": "PractitionerRole", "active": true,
                        "organization": {"reference": w.practice}}))
        .await;
    let gp_role = format!("PractitionerRole/{}", gp_role["id"].as_str().unwrap());
    let (_, failed, task) = refer_from(&w, &gp_role, "9434765870", "MB-FAIL").await;
    let task = move_task(&w.vcs, &task, "accepted", None).await;
    move_task(&w.vcs, &task, "failed", Some("could-not-contact")).await;
    let c = the_message_back(&w.gp, &failed).await;
    assert!(
        summary(&c).contains("Ended: failed (Could not contact)"),
        "{c}"
    );
    let recipients: Vec<&str> = c["recipient"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reference"].as_str())
        .collect();
    assert_eq!(recipients, [w.practice.as_str(), gp_role.as_str()]);
    assert_eq!(c["sender"]["reference"], w.role);
}

async fn each_outcome_and_the_end_amend_the_same_message_back(s: Server) {
    let w = world(s).await;
    let (patient, referral, task) = refer(&w, "9434765870", "MB-LATE").await;
    move_task(&w.vcs, &task, "accepted", None).await;
    assert!(
        message_backs(&w.gp, &referral).await.is_empty(),
        "accepting is not an end"
    );
    // The baseline score reaches the GP at once, the work under way.
    w.vcs
        .create(&outcome(&w, &referral, &patient, "baseline", 3))
        .await;
    let interim = the_message_back(&w.gp, &referral).await;
    assert_eq!(interim["meta"]["versionId"], "1");
    assert!(
        summary(&interim).contains("Under way: accepted"),
        "{interim}"
    );
    assert!(summary(&interim).contains("ONS4 life satisfaction baseline 3."));
    let task = w
        .vcs
        .get_ok(&format!("/Task/{}", task["id"].as_str().unwrap()))
        .await;
    move_task(&w.vcs, &task, "completed", None).await;
    let first = the_message_back(&w.gp, &referral).await;
    assert_eq!(first["id"], interim["id"]);
    assert_eq!(first["meta"]["versionId"], "2");
    assert!(summary(&first).contains("Ended: completed"));
    assert!(!summary(&first).contains("Under way"));

    // The follow-up score taken after the end amends the same record.
    let late = w
        .vcs
        .create(&outcome(&w, &referral, &patient, "follow-up", 8))
        .await;
    let second = the_message_back(&w.gp, &referral).await;
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["meta"]["versionId"], "3");
    assert!(
        summary(&second).contains("ONS4 life satisfaction baseline 3, follow-up 8."),
        "{second}"
    );
    assert!(references(&second).contains(&format!("Observation/{}", late["id"].as_str().unwrap())));
    let history =
        w.gp.get_ok(&format!(
            "/Communication/{}/_history",
            first["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(history["total"], 3);
}

async fn a_refused_write_leaves_no_message_back(s: Server) {
    let w = world(s).await;
    let (_, referral, task) = refer(&w, "9434765870", "MB-REFUSED").await;
    let task = move_task(&w.vcs, &task, "accepted", None).await;
    // Failing needs a reason; without one nothing is written.
    let resp = try_move(&w.vcs, &task, "failed", None).await;
    assert_outcome(resp, 422, "invariant").await;
    // A Task with an active sub-task cannot complete.
    let mut sub = task.clone();
    for k in ["id", "meta", "businessStatus"] {
        sub.as_object_mut().unwrap().remove(k);
    }
    sub["status"] = json!("requested");
    sub["partOf"] = json!([{"reference": format!("Task/{}", task["id"].as_str().unwrap())}]);
    sub["owner"] = json!({ "reference": w.money_org });
    let sub = w.vcs.create(&sub).await;
    let resp = try_move(&w.vcs, &task, "completed", None).await;
    assert_outcome(resp, 409, "business-rule").await;
    // A transaction Bundle that ends the Task, then fails on a later entry
    // (the onward referral cannot jump to completed), rolls back whole.
    let mut ended = task.clone();
    ended["status"] = json!("failed");
    ended["statusReason"] = json!({"coding": [{"system": SP_STATUS_REASON, "code": "other"}]});
    let mut jumped = sub.clone();
    jumped["status"] = json!("completed");
    let put = |t: &Value| {
        json!({"resource": t, "request": {"method": "PUT",
                                          "url": format!("Task/{}", t["id"].as_str().unwrap())}})
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction",
                        "entry": [put(&ended), put(&jumped)]});
    let resp = w.vcs.post_json("/", &bundle).await;
    assert!(
        [403, 409].contains(&resp.status().as_u16()),
        "{}",
        resp.text().await.unwrap_or_default()
    );
    let task_now =
        w.gp.get_ok(&format!("/Task/{}", task["id"].as_str().unwrap()))
            .await;
    assert_eq!(task_now["status"], "accepted");
    assert!(message_backs(&w.gp, &referral).await.is_empty());
    assert!(message_backs(&w.admin, &referral).await.is_empty());
    assert_eq!(
        w.gp.get_ok(&format!("/{referral}")).await["status"],
        "active"
    );
}

async fn a_task_brought_in_already_ended_is_not_an_end(s: Server) {
    let w = world(s).await;
    let (_, referral, task) = refer(&w, "9434765870", "MB-IMPORT").await;
    // An import brings a second Task of the referral in its end status: it
    // was not ended here, so nothing is due. (The referral's own Task is
    // still open.)
    let mut imported = task.clone();
    for k in ["id", "meta"] {
        imported.as_object_mut().unwrap().remove(k);
    }
    imported["status"] = json!("completed");
    w.admin.create(&imported).await;
    assert!(message_backs(&w.admin, &referral).await.is_empty());
    // An update that leaves an ended Task ended is no new end either.
    let task = move_task(&w.vcs, &task, "rejected", Some("out-of-area")).await;
    assert_eq!(message_backs(&w.gp, &referral).await.len(), 1);
    let mut noted = task.clone();
    noted["note"] = json!([{"text": "Passed to the neighbouring PCN."}]);
    expect_json(
        w.vcs
            .put_json(&format!("/Task/{}", task["id"].as_str().unwrap()), &noted)
            .await,
        200,
    )
    .await;
    let c = the_message_back(&w.gp, &referral).await;
    assert_eq!(c["meta"]["versionId"], "1", "{c}");
}
