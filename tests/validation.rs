//! Validation against our profiles (fhir-profiles/StructureDefinition/) on
//! every write, and `$validate`: 422 with one issue per problem and nothing
//! written; `$validate` answers 200 and stores nothing.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

both!(
    a_valid_sp_referral_is_accepted,
    a_need_outside_sp_need_is_422_naming_reason_code_and_writes_nothing,
    a_rejected_task_without_status_reason_is_422_naming_the_invariant,
    a_claimed_profile_of_ours_that_does_not_exist_is_422,
    several_problems_are_all_listed,
    a_bad_entry_fails_the_transaction_and_is_named_in_it,
    validate_returns_the_issues_and_stores_nothing,
    every_example_in_the_demo_pcn_validates_clean,
);

const SD: &str = "https://sp-hub.example/fhir/StructureDefinition";

/// The `expression`s of every issue of an OperationOutcome.
fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["expression"][0].as_str().map(String::from))
        .collect()
}

/// Asserts a 422 whose issues are all errors coded processing or invariant
/// with diagnostics and an expression; returns the OperationOutcome.
async fn assert_422(resp: reqwest::Response) -> Value {
    let o = assert_outcome_any(resp, 422, &["processing", "invariant"]).await;
    for i in o["issue"].as_array().expect("issues") {
        assert_eq!(i["severity"], "error", "{o}");
        assert!(
            ["processing", "invariant"].contains(&i["code"].as_str().unwrap_or("")),
            "{o}"
        );
        assert!(
            i["diagnostics"].as_str().is_some_and(|d| !d.is_empty()),
            "{o}"
        );
        assert!(i["expression"][0].is_string(), "{o}");
    }
    o
}

fn bad_need(mut sr: Value) -> Value {
    sr["reasonCode"] = json!([{"coding": [{"system": SP_NEED, "code": "astrology"}]}]);
    sr
}

async fn a_valid_sp_referral_is_accepted(s: common::Server) {
    let sr = s.create(&service_request("p1", "REF-V-1")).await;
    assert_eq!(sr["reasonCode"][0]["coding"][0]["code"], "bereavement");
    // A referral that claims the profile is checked the same way.
    let mut claimed = service_request("p1", "REF-V-2");
    claimed["meta"] = json!({"profile": [format!("{SD}/sp-referral")]});
    s.create(&claimed).await;
    // A ServiceRequest that is not an SP referral is not held to the profile.
    s.create(
        &json!({"resourceType": "ServiceRequest", "status": "active",
        "intent": "order", "subject": {"reference": "Patient/p1"}}),
    )
    .await;
}

async fn a_need_outside_sp_need_is_422_naming_reason_code_and_writes_nothing(s: common::Server) {
    let before = s.versions_written().await;
    let o = assert_422(
        s.post_json("/ServiceRequest", &bad_need(service_request("p1", "R-2")))
            .await,
    )
    .await;
    let e = expressions(&o);
    assert!(
        e.iter().all(|e| e.starts_with("ServiceRequest.reasonCode")),
        "{o}"
    );
    assert!(o.to_string().contains("sp-need"), "{o}");

    // Update, conditional update and patch are refused the same way.
    let sr = s.create(&service_request("p1", "R-3")).await;
    let id = sr["id"].as_str().expect("id");
    let mut bad = bad_need(sr.clone());
    assert_422(s.put_json(&format!("/ServiceRequest/{id}"), &bad).await).await;
    bad.as_object_mut().map(|o| o.remove("id"));
    let criteria = format!(
        "/ServiceRequest?identifier={}",
        enc(&format!("{REFERRAL_ID}|R-3"))
    );
    assert_422(s.put_json(&criteria, &bad).await).await;
    let patch =
        json!([{"op": "replace", "path": "/reasonCode/0/coding/0/code", "value": "astrology"}]);
    let o = assert_422(s.patch_json(&format!("/ServiceRequest/{id}"), &patch).await).await;
    assert_eq!(expressions(&o)[0], "ServiceRequest.reasonCode[0]", "{o}");
    assert_eq!(
        s.versions_written().await,
        // The referral, and the Task sp-hub adds for it.
        before + 2,
        "only the valid create was written"
    );
    let stored = s.get_ok(&format!("/ServiceRequest/{id}")).await;
    assert_eq!(stored["reasonCode"][0]["coding"][0]["code"], "bereavement");
}

async fn a_rejected_task_without_status_reason_is_422_naming_the_invariant(s: common::Server) {
    let mut t = task("sr1", "p1");
    t["status"] = json!("rejected");
    let before = s.versions_written().await;
    let o = assert_422(s.post_json("/Task", &t).await).await;
    let issue = o["issue"]
        .as_array()
        .and_then(|i| i.iter().find(|i| i["code"] == "invariant"))
        .unwrap_or_else(|| panic!("no invariant issue: {o}"));
    assert!(
        diagnostics(&json!({"issue": [issue]})).starts_with("sp-task-1"),
        "{o}"
    );
    assert_eq!(issue["expression"][0], "Task", "{o}");
    assert_eq!(s.versions_written().await, before);

    // With a reason from sp-status-reason the invariant holds.
    t["statusReason"] = json!({"coding": [{"system":
        "https://sp-hub.example/fhir/CodeSystem/sp-status-reason", "code": "not-ready"}]});
    let resp = s.post_json("/Task/$validate", &t).await;
    let o = expect_json(resp, 200).await;
    assert_eq!(o["issue"][0]["severity"], "information", "{o}");
}

async fn a_claimed_profile_of_ours_that_does_not_exist_is_422(s: common::Server) {
    let mut p = patient("9000000009");
    p["meta"] = json!({"profile": [format!("{SD}/sp-nobody"), "http://example.org/other"]});
    let o = assert_422(s.post_json("/Patient", &p).await).await;
    assert_eq!(expressions(&o), vec!["Patient.meta.profile[0]"], "{o}");
    assert!(diagnostics(&o).contains("sp-nobody"), "{o}");
    // A profile of ours for another type is refused too.
    p["meta"] = json!({"profile": [format!("{SD}/sp-task")]});
    assert_422(s.post_json("/Patient", &p).await).await;
    assert_eq!(s.total("/Patient").await, 0);
}

async fn several_problems_are_all_listed(s: common::Server) {
    let mut sr = bad_need(service_request("p1", "R-4"));
    sr.as_object_mut().map(|o| o.remove("authoredOn"));
    sr["requester"] = json!({"reference": "Patient/p1"});
    let o = assert_422(s.post_json("/ServiceRequest", &sr).await).await;
    let e = expressions(&o);
    for want in [
        "ServiceRequest.authoredOn",
        "ServiceRequest.requester.reference",
        "ServiceRequest.reasonCode[0]",
        "ServiceRequest.reasonCode[0].coding[0]",
    ] {
        assert!(e.iter().any(|e| e == want), "{want} missing: {o}");
    }
    // A task with a wrong intent, no focus target and no status reason.
    let mut t = task("sr1", "p1");
    t["status"] = json!("cancelled");
    t["intent"] = json!("plan");
    t["for"] = json!({"reference": "Group/g1"});
    let o = assert_422(s.post_json("/Task", &t).await).await;
    let e = expressions(&o);
    for want in ["Task.intent", "Task.for.reference", "Task"] {
        assert!(e.iter().any(|e| e == want), "{want} missing: {o}");
    }
}

async fn a_bad_entry_fails_the_transaction_and_is_named_in_it(s: common::Server) {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5e0c0f3a-3c1a-4f4e-9a51-1f0c2b7e0001",
         "resource": service_request("p1", "R-5"),
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": bad_need(service_request("p1", "R-6")),
         "request": {"method": "POST", "url": "ServiceRequest"}}]});
    let before = s.versions_written().await;
    let o = assert_422(s.post_json("/", &bundle).await).await;
    let e = expressions(&o);
    assert!(
        e.iter()
            .all(|e| e.starts_with("Bundle.entry[1].resource.reasonCode")),
        "{o}"
    );
    assert_eq!(s.versions_written().await, before);

    // In a batch, only the bad entry fails.
    let mut batch = bundle.clone();
    batch["type"] = json!("batch");
    let b = expect_json(s.post_json("/", &batch).await, 200).await;
    assert!(
        b["entry"][0]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("201"),
        "{b}"
    );
    assert!(
        b["entry"][1]["response"]["status"]
            .as_str()
            .unwrap_or("")
            .starts_with("422"),
        "{b}"
    );
    // The referral entry, and the Task sp-hub adds for it.
    assert_eq!(s.versions_written().await, before + 2);
}

async fn validate_returns_the_issues_and_stores_nothing(s: common::Server) {
    let before = s.versions_written().await;
    let bad = bad_need(service_request("p1", "R-7"));
    let o = expect_json(s.post_json("/ServiceRequest/$validate", &bad).await, 200).await;
    assert_eq!(o["resourceType"], "OperationOutcome");
    assert!(!expressions(&o).is_empty(), "{o}");
    assert!(
        expressions(&o)
            .iter()
            .all(|e| e.starts_with("ServiceRequest.reasonCode")),
        "{o}"
    );
    assert_eq!(o["issue"][0]["severity"], "error", "{o}");

    // A Parameters with a profile: a plain Patient checked as an SP patient.
    let mut p = patient("9000000009");
    p["identifier"] = json!([{"system": "https://example.org/mrn", "value": "1"}]);
    let params = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": p},
        {"name": "profile", "valueUri": format!("{SD}/sp-patient")}]});
    let o = expect_json(s.post_json("/Patient/$validate", &params).await, 200).await;
    let text = o.to_string();
    assert!(
        text.contains("nhsNumber") && text.contains("sp-patient-1"),
        "{o}"
    );
    // Without the profile, the same Patient has no issues.
    let o = expect_json(s.post_json("/Patient/$validate", &p).await, 200).await;
    assert_eq!(o["issue"][0]["severity"], "information", "{o}");
    assert_eq!(o["issue"][0]["diagnostics"], "no issues", "{o}");

    // Instance level: the body, or the stored resource when there is none.
    let sr = s.create(&service_request("p1", "R-8")).await;
    let id = sr["id"].as_str().expect("id");
    let after_create = s.versions_written().await;
    let o = expect_json(
        s.post_json(&format!("/ServiceRequest/{id}/$validate"), &bad)
            .await,
        200,
    )
    .await;
    assert_eq!(o["issue"][0]["severity"], "error", "{o}");
    let resp = s
        .send(s.req(Method::POST, &format!("/ServiceRequest/{id}/$validate")))
        .await;
    let o = expect_json(resp, 200).await;
    assert_eq!(o["issue"][0]["diagnostics"], "no issues", "{o}");
    // The referral, and the Task sp-hub adds for it.
    assert_eq!(after_create, before + 2);
    assert_eq!(
        s.versions_written().await,
        after_create,
        "$validate stored nothing"
    );
    assert_eq!(s.total("/ServiceRequest").await, 1);

    // The CapabilityStatement says so.
    let cs = s.get_ok("/metadata").await;
    assert_eq!(cs["rest"][0]["operation"][0]["name"], "validate", "{cs}");
    let sr_caps = cs["rest"][0]["resource"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["type"] == "ServiceRequest"))
        .expect("ServiceRequest");
    assert_eq!(
        sr_caps["supportedProfile"],
        json!([format!("{SD}/sp-referral")])
    );

    // No resource in a Parameters is the client's error.
    let empty = json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "create"}]});
    assert_outcome(
        s.post_json("/ServiceRequest/$validate", &empty).await,
        400,
        "invalid",
    )
    .await;
    let resp = s
        .send(s.req(Method::POST, "/ServiceRequest/$validate"))
        .await;
    assert_outcome(resp, 400, "invalid").await;
}

async fn every_example_in_the_demo_pcn_validates_clean(s: common::Server) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fhir-profiles/examples/demo-pcn.json"
    ))
    .expect("demo-pcn.json");
    let resp = s
        .send_body(Method::POST, "/", FHIR_JSON, text.clone())
        .await;
    let b = expect_json(resp, 200).await;
    let n = serde_json::from_str::<Value>(&text).expect("json")["entry"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(
        b["entry"].as_array().map_or(0, Vec::len),
        n,
        "every entry written"
    );
}
