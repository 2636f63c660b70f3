//! The whole social prescribing journey, as one test on each database, on
//! the example PCN (`serve --demo`): a GP practice sends the referral in a
//! transaction, its Task waits in the open pool, a VCS-subcontracted link
//! worker claims it, records contacts, holding work and baseline and
//! follow-up outcomes, refers on to a debt-advice service as a sub-task,
//! completes; the referral follows, and the GP reads the whole trail. Each
//! organisation acts through its own client, with its own view.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

both_backends!(a_referral_travels_from_gp_to_link_worker_and_back);

const PATIENT_URN: &str = "urn:uuid:5b0e7f2c-9f0e-4c55-8a1a-3c9d2f6e7b10";
const REFERRAL_URN: &str = "urn:uuid:a2c4e6f8-1b3d-4f5a-9c7e-0d2b4f6a8c90";
const PRACTICE: &str = "Organization/org-practice-mill-lane";
const LINK_WORKER: &str = "PractitionerRole/role-lw-3";
const VCS: &str = "Organization/org-vcs-wellbeing";
const DEBT_ADVICE: &str = "Organization/org-vcs-money-advice";
const SP: &str = "https://sp-hub.example/fhir";

fn profile(name: &str) -> Value {
    json!({"profile": [format!("{SP}/StructureDefinition/{name}")]})
}

/// Puts `t` in `status` with If-Match on the version it carries.
async fn move_task(s: &Server, t: &Value, status: &str) -> Value {
    let mut next = t.clone();
    next["status"] = json!(status);
    let version = t["meta"]["versionId"].as_str().unwrap();
    let resp = s
        .send(
            s.req(Method::PUT, &format!("/Task/{}", t["id"].as_str().unwrap()))
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", format!("W/\"{version}\""))
                .body(next.to_string()),
        )
        .await;
    expect_json(resp, 200).await
}

fn outcome(referral: &str, patient: &str, timing: &str, code: &str, value: i64) -> Value {
    let swemwbs = code == "swemwbs-total";
    let mut o = json!({
        "resourceType": "Observation",
        "meta": profile(if swemwbs { "sp-outcome-swemwbs" } else { "sp-outcome-ons4" }),
        "basedOn": [{"reference": referral}],
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                         "code": "survey"}]},
            {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-timing"), "code": timing}]}
        ],
        "code": {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-measure"), "code": code}]},
        "subject": {"reference": patient},
        "effectiveDateTime": if timing == "baseline" { "2026-02-02T10:00:00Z" } else { "2026-05-04T10:00:00Z" },
        "performer": [{"reference": LINK_WORKER}],
        "valueInteger": value
    });
    if swemwbs {
        // The published metric score for raw 18 and 24.
        let metric = if value == 18 { 17.43 } else { 21.54 };
        o["component"] = json!([{
            "code": {"coding": [{"system": format!("{SP}/CodeSystem/sp-outcome-measure"),
                                 "code": "swemwbs-metric"}]},
            "valueQuantity": {"value": metric, "unit": "score",
                              "system": "http://unitsofmeasure.org", "code": "{score}"}
        }]);
    }
    o
}

async fn a_referral_travels_from_gp_to_link_worker_and_back(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    // Each organisation acts as itself, with its own client and view.
    let all = "system/*.cruds";
    let gp = s.as_new_client("journey-gp", PRACTICE, "gp", all).await;
    let vcs = s.as_new_client("journey-vcs", VCS, "vcs", all).await;
    let money = s
        .as_new_client("journey-money", DEBT_ADVICE, "vcs", all)
        .await;

    // 1. The GP system sends patient and referral as one transaction.
    let mut sr = service_request("x", "REF-JOURNEY");
    sr["subject"] = json!({"reference": PATIENT_URN});
    sr["requester"] = json!({"reference": PRACTICE});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": PATIENT_URN, "resource": patient("9434765870"),
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": format!("identifier={NHS_NUMBER}|9434765870")}},
        {"fullUrl": REFERRAL_URN, "resource": sr,
         "request": {"method": "POST", "url": "ServiceRequest"}}
    ]});
    let out = expect_json(gp.post_json("/", &bundle).await, 200).await;
    let e = entries(&out);
    let patient_ref = format!("Patient/{}", e[0]["resource"]["id"].as_str().unwrap());
    let referral_id = e[1]["resource"]["id"].as_str().unwrap().to_string();
    let referral = format!("ServiceRequest/{referral_id}");

    // 2. Its Task waits in the open pool, found by the documented query.
    let pool = vcs
        .get_ok(&format!(
            "/Task?owner:missing=true&status=requested&focus={referral}"
        ))
        .await;
    assert_eq!(pool["total"], 1, "{pool}");
    let task = pool["entry"][0]["resource"].clone();
    let task_ref = format!("Task/{}", task["id"].as_str().unwrap());

    // 3. A VCS-subcontracted link worker claims it (owner + accepted).
    let mut claim = task.clone();
    claim["owner"] = json!({"reference": LINK_WORKER});
    let task = move_task(&vcs, &claim, "accepted").await;
    let task = move_task(&vcs, &task, "in-progress").await;

    // 4. Contacts and holding work on the trail.
    let contact = vcs
        .create(&json!({
            "resourceType": "Encounter", "meta": profile("sp-contact"),
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
            "type": [{"coding": [{"system": format!("{SP}/CodeSystem/sp-contact-mode"), "code": "phone"}]}],
            "subject": {"reference": patient_ref},
            "basedOn": [{"reference": referral}],
            "participant": [{"individual": {"reference": LINK_WORKER}}],
            "period": {"start": "2026-02-02T10:00:00Z", "end": "2026-02-02T10:40:00Z"},
            "length": {"value": 40, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"}
        }))
        .await;
    let holding = vcs
        .create(&json!({
            "resourceType": "Procedure", "meta": profile("sp-holding-work"),
            "status": "completed",
            "basedOn": [{"reference": referral}],
            "category": {"coding": [{"system": format!("{SP}/CodeSystem/sp-holding-work"),
                                     "code": "check-in-call"}]},
            "subject": {"reference": patient_ref},
            "performedPeriod": {"start": "2026-02-20T09:00:00Z", "end": "2026-02-20T09:30:00Z"},
            "performer": [{"actor": {"reference": LINK_WORKER}, "onBehalfOf": {"reference": VCS}}]
        }))
        .await;

    // 5. Baseline and follow-up outcomes.
    let mut outcomes = vec![];
    for (timing, ons4, swemwbs) in [("baseline", 4, 18), ("follow-up", 7, 24)] {
        for (code, value) in [("ons4-life-satisfaction", ons4), ("swemwbs-total", swemwbs)] {
            outcomes.push(
                vcs.create(&outcome(&referral, &patient_ref, timing, code, value))
                    .await,
            );
        }
    }
    // An impossible score is refused and written nowhere.
    let resp = vcs
        .post_json(
            "/Observation",
            &outcome(
                &referral,
                &patient_ref,
                "follow-up",
                "ons4-life-satisfaction",
                11,
            ),
        )
        .await;
    assert_outcome(resp, 422, "invariant").await;

    // 6. Onward referral to debt advice: a sub-task the parent waits for.
    let mut sub = task.clone();
    for k in ["id", "meta", "owner", "businessStatus"] {
        sub.as_object_mut().unwrap().remove(k);
    }
    sub["status"] = json!("requested");
    sub["partOf"] = json!([{"reference": task_ref}]);
    sub["owner"] = json!({"reference": DEBT_ADVICE});
    let sub = vcs.create(&sub).await;
    let mut early = task.clone();
    early["status"] = json!("completed");
    let resp = vcs.put_json(&task_ref, &early).await;
    assert_outcome(resp, 409, "business-rule").await;
    // The debt-advice service works its sub-task; it sees no more of the
    // trail than that.
    assert_eq!(money.status_of(&task_ref).await, 404);
    let sub = move_task(&money, &sub, "accepted").await;
    let sub = move_task(&money, &sub, "completed").await;
    assert_eq!(
        gp.get_ok(&format!("/{referral}")).await["status"],
        "active",
        "a sub-task ending leaves the referral open"
    );

    // 7. The link worker completes; the referral follows.
    let task = move_task(&vcs, &task, "completed").await;
    let sr = gp.get_ok(&format!("/{referral}")).await;
    assert_eq!(sr["status"], "completed");
    assert_eq!(sr["meta"]["versionId"], "2");

    // 8. The GP reads the trail: every step, in time order, with who did it.
    let trail = gp.get_ok(&format!("/{referral}/$trail")).await;
    let steps: Vec<(String, String)> = entries(&trail)
        .iter()
        .map(|e| {
            let r = &e["resource"];
            (
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                r["meta"]["versionId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |r: &Value, v: &str| {
        let key = (
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ),
            v.to_string(),
        );
        assert!(
            steps.contains(&key),
            "{key:?} missing from the trail: {steps:?}"
        );
    };
    for v in ["1", "2"] {
        has(&sr, v);
    }
    for v in ["1", "2", "3", "4"] {
        has(&task, v);
    }
    for v in ["1", "2", "3"] {
        has(&sub, v);
    }
    has(&contact, "1");
    has(&holding, "1");
    // Each organisation's writes carry their Provenance, which the GP sees
    // on its trail: who acted, for which organisation.
    let authors: std::collections::BTreeSet<(String, String)> = entries(&trail)
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == "Provenance")
        .map(|r| {
            let a = &r["agent"][0];
            (
                a["who"]["identifier"]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                a["onBehalfOf"]["reference"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    for who in [
        ("journey-gp", PRACTICE),
        ("journey-vcs", VCS),
        ("journey-money", DEBT_ADVICE),
    ] {
        assert!(
            authors.contains(&(who.0.to_string(), who.1.to_string())),
            "{who:?} not among the trail's Provenance: {authors:?}"
        );
    }
    for o in &outcomes {
        has(o, "1");
    }
    let times: Vec<String> = entries(&trail)
        .iter()
        .map(|e| {
            e["resource"]["meta"]["lastUpdated"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "the trail is in time order");
    // Who did the claim: the link worker, a VCS-subcontracted one.
    let claimed = entries(&trail)
        .iter()
        .find(|e| {
            e["resource"]["resourceType"] == "Task"
                && e["resource"]["id"] == task["id"]
                && e["resource"]["meta"]["versionId"] == "2"
        })
        .cloned()
        .unwrap();
    let ext = |url: &str| {
        claimed["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["url"] == format!("{SP}/StructureDefinition/{url}"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        ext("sp-trail-actor")["valueReference"]["reference"],
        LINK_WORKER,
        "{claimed}"
    );
    assert_eq!(
        ext("sp-trail-employment-model")["valueCoding"]["code"],
        "vcs-subcontracted",
        "{claimed}"
    );
}
