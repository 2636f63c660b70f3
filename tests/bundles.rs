//! Transaction and batch Bundles (`POST /`): all or nothing, reference
//! rewriting, processing order, conditional entries, per-entry results.

mod common;

use common::*;
use serde_json::{json, Value};

both!(
    gp_submission_creates_patient_referral_and_task_with_references_resolved,
    gp_submission_sent_twice_reuses_the_patient,
    failing_entry_rolls_back_the_whole_transaction_and_names_the_entry,
    unknown_element_in_an_entry_names_its_path,
    transaction_runs_deletes_before_creates_and_reads_last,
    conditional_reference_matching_nothing_fails_the_transaction,
    dangling_urn_reference_fails_the_transaction,
    put_and_patch_entries_respect_if_match,
    batch_reports_each_entry_on_its_own,
    bundle_of_another_type_is_400,
    too_many_entries_is_413,
    transaction_response_is_valid_in_xml_too,
);

const PATIENT_URN: &str = "urn:uuid:8d7a3c2e-0c4b-4a43-9d1e-6f1d8b8f3a01";
const REFERRAL_URN: &str = "urn:uuid:2f5c9e1a-7b7d-4e0f-8a52-1b4c0e9d6a77";

/// The typical GP submission: the patient, created only if their NHS number
/// is new, the referral, and the Task for the social prescribing service.
fn gp_submission(nhs: &str, referral_id: &str) -> Value {
    let mut sr = service_request("x", referral_id);
    sr["subject"] = json!({"reference": PATIENT_URN});
    let mut t = task("x", "x");
    t["identifier"][0]["value"] = json!(format!("task-{referral_id}"));
    t["focus"] = json!({"reference": REFERRAL_URN});
    t["for"] = json!({"reference": format!("Patient?identifier={NHS_NUMBER}|{nhs}")});
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": PATIENT_URN, "resource": patient(nhs),
             "request": {"method": "POST", "url": "Patient",
                         "ifNoneExist": format!("identifier={NHS_NUMBER}|{nhs}")}},
            {"fullUrl": REFERRAL_URN, "resource": sr,
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": t, "request": {"method": "POST", "url": "Task"}}
        ]
    })
}

fn statuses(bundle: &Value) -> Vec<String> {
    entries(bundle)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn gp_submission_creates_patient_referral_and_task_with_references_resolved(s: Server) {
    let out = expect_json(
        s.post_json("/", &gp_submission("9434765870", "REF-1"))
            .await,
        200,
    )
    .await;
    assert_eq!(out["type"], "transaction-response");
    assert_eq!(
        statuses(&out),
        ["201 Created", "201 Created", "201 Created"]
    );
    let e = entries(&out);
    let pid = e[0]["resource"]["id"].as_str().unwrap().to_string();
    let sid = e[1]["resource"]["id"].as_str().unwrap().to_string();
    assert!(is_uuid(&pid) && is_uuid(&sid));
    assert_eq!(
        e[1]["response"]["location"],
        format!("ServiceRequest/{sid}/_history/1")
    );
    assert_eq!(e[1]["response"]["etag"], "W/\"1\"");
    // References are rewritten in what was stored, not only in the response.
    let sr = s.get_ok(&format!("/ServiceRequest/{sid}")).await;
    assert_eq!(sr["subject"]["reference"], format!("Patient/{pid}"));
    let tid = e[2]["resource"]["id"].as_str().unwrap();
    let t = s.get_ok(&format!("/Task/{tid}")).await;
    assert_eq!(t["focus"]["reference"], format!("ServiceRequest/{sid}"));
    assert_eq!(t["for"]["reference"], format!("Patient/{pid}"));
    // The referral came with its Task: sp-hub adds no second one.
    assert_eq!(
        s.total(&format!("/Task?focus=ServiceRequest/{sid}")).await,
        1
    );
}

async fn gp_submission_sent_twice_reuses_the_patient(s: Server) {
    expect_json(
        s.post_json("/", &gp_submission("9434765870", "REF-1"))
            .await,
        200,
    )
    .await;
    let again = expect_json(
        s.post_json("/", &gp_submission("9434765870", "REF-2"))
            .await,
        200,
    )
    .await;
    assert_eq!(statuses(&again), ["200 OK", "201 Created", "201 Created"]);
    assert_eq!(
        s.total(&format!(
            "/Patient?identifier={}",
            enc(&format!("{NHS_NUMBER}|9434765870"))
        ))
        .await,
        1
    );
    assert_eq!(s.total("/ServiceRequest").await, 2);
    let pid = entries(&again)[0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = entries(&again)[1]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sr = s.get_ok(&format!("/ServiceRequest/{sid}")).await;
    assert_eq!(sr["subject"]["reference"], format!("Patient/{pid}"));
}

async fn failing_entry_rolls_back_the_whole_transaction_and_names_the_entry(s: Server) {
    let before = s.versions_written().await;
    let mut b = gp_submission("9434765870", "REF-1");
    // The third entry updates a version that does not exist.
    b["entry"].as_array_mut().unwrap().push(json!({
        "resource": {"resourceType": "Patient", "id": "nobody", "active": true},
        "request": {"method": "PUT", "url": "Patient/nobody", "ifMatch": "W/\"4\""}
    }));
    let o = assert_outcome(s.post_json("/", &b).await, 412, "conflict").await;
    assert_eq!(expression(&o), Some("Bundle.entry[3]"));
    assert!(diagnostics(&o).contains("Bundle.entry[3]"), "{o}");
    assert_eq!(s.versions_written().await, before, "nothing may be written");
    assert_eq!(s.total("/Patient").await, 0);
}

async fn unknown_element_in_an_entry_names_its_path(s: Server) {
    let mut b = gp_submission("9434765870", "REF-1");
    b["entry"][1]["resource"]["sttaus"] = json!("active");
    let o = assert_outcome(s.post_json("/", &b).await, 400, "structure").await;
    assert_eq!(expression(&o), Some("Bundle.entry[1].resource.sttaus"));
    assert_eq!(s.versions_written().await, 0);
}

async fn transaction_runs_deletes_before_creates_and_reads_last(s: Server) {
    let old = s.create(&patient("9434765870")).await;
    let old_id = old["id"].as_str().unwrap();
    // Listed read-first, create, delete: processed delete, create, read.
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": format!("Patient?identifier={NHS_NUMBER}|9434765870")}},
        {"resource": patient("9434765870"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": format!("Patient/{old_id}")}}
    ]});
    let out = expect_json(s.post_json("/", &b).await, 200).await;
    assert_eq!(statuses(&out), ["200 OK", "201 Created", "204 No Content"]);
    let search = &entries(&out)[0]["resource"];
    assert_eq!(search["type"], "searchset");
    assert_eq!(
        search["total"], 1,
        "the read sees the create and not the deleted one"
    );
    assert_ne!(entry_ids(search)[0], old_id);
    assert_eq!(s.status_of(&format!("/Patient/{old_id}")).await, 410);
}

async fn conditional_reference_matching_nothing_fails_the_transaction(s: Server) {
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": task("x", "x"), "request": {"method": "POST", "url": "Task"}},
        {"resource": {"resourceType": "Task", "status": "requested", "intent": "order",
                      "for": {"reference": format!("Patient?identifier={NHS_NUMBER}|0000000000")}},
         "request": {"method": "POST", "url": "Task"}}
    ]});
    let o = assert_outcome(s.post_json("/", &b).await, 412, "conflict").await;
    assert_eq!(expression(&o), Some("Bundle.entry[1]"));
    assert_eq!(s.total("/Task").await, 0);
}

async fn dangling_urn_reference_fails_the_transaction(s: Server) {
    let mut t = task("x", "x");
    t["focus"] = json!({"reference": "urn:uuid:00000000-0000-4000-8000-000000000000"});
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": t, "request": {"method": "POST", "url": "Task"}}
    ]});
    let o = assert_outcome(s.post_json("/", &b).await, 400, "invalid").await;
    assert_eq!(expression(&o), Some("Bundle.entry[0]"));
    assert_eq!(s.total("/Task").await, 0);
}

async fn put_and_patch_entries_respect_if_match(s: Server) {
    let p = s.create(&patient("9434765870")).await;
    let id = p["id"].as_str().unwrap().to_string();
    let mut changed = p.clone();
    changed["active"] = json!(false);
    let patch = json!([{"op": "replace", "path": "/gender", "value": "other"}]);
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"1\""}},
        {"resource": {"resourceType": "Binary", "contentType": "application/json-patch+json",
                      "data": base64_of(&patch.to_string())},
         "request": {"method": "PATCH", "url": format!("Patient/{id}"), "ifMatch": "W/\"2\""}}
    ]});
    let out = expect_json(s.post_json("/", &b).await, 200).await;
    assert_eq!(statuses(&out), ["200 OK", "200 OK"]);
    let now = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(
        (
            now["active"].clone(),
            now["gender"].clone(),
            now["meta"]["versionId"].clone()
        ),
        (json!(false), json!("other"), json!("3"))
    );
    // The same bundle again: version 1 is long gone.
    assert_outcome(s.post_json("/", &b).await, 412, "conflict").await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

async fn batch_reports_each_entry_on_its_own(s: Server) {
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("9434765870"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/nobody"}},
        {"resource": {"resourceType": "Patient", "id": "p2", "active": true},
         "request": {"method": "PUT", "url": "Patient/p2"}},
        {"resource": {"resourceType": "Task", "status": "requested"},
         "request": {"method": "POST", "url": "Task"}}
    ]});
    let out = expect_json(s.post_json("/", &b).await, 200).await;
    assert_eq!(out["type"], "batch-response");
    let st = statuses(&out);
    assert_eq!(
        st,
        [
            "201 Created",
            "404 Not Found",
            "201 Created",
            "400 Bad Request"
        ]
    );
    let bad = &entries(&out)[3]["response"]["outcome"];
    assert_eq!(bad["resourceType"], "OperationOutcome");
    assert_eq!(bad["issue"][0]["expression"][0], "Task.intent");
    // The good entries stand although others failed.
    assert_eq!(s.total("/Patient").await, 2);
    assert_eq!(s.total("/Task").await, 0);
}

async fn bundle_of_another_type_is_400(s: Server) {
    let b = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": patient("9434765870")}
    ]});
    let o = assert_outcome(s.post_json("/", &b).await, 400, "invalid").await;
    assert_eq!(expression(&o), Some("Bundle.type"));
    let o = assert_outcome(
        s.post_json("/", &patient("9434765870")).await,
        400,
        "invalid",
    )
    .await;
    assert_eq!(expression(&o), Some("Bundle.resourceType"));
    assert_eq!(s.versions_written().await, 0);
}

async fn too_many_entries_is_413(s: Server) {
    let entry = json!({"request": {"method": "GET", "url": "Patient"}});
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": vec![entry; 501]});
    assert_outcome(s.post_json("/", &b).await, 413, "too-costly").await;
}

async fn transaction_response_is_valid_in_xml_too(s: Server) {
    let resp = s
        .send(
            s.req(reqwest::Method::POST, "/")
                .header("Content-Type", FHIR_JSON)
                .header("Accept", FHIR_XML)
                .body(gp_submission("9434765870", "REF-1").to_string()),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{text}"
    );
    assert!(
        text.contains("<type value=\"transaction-response\"/>"),
        "{text}"
    );
    assert_eq!(s.total("/Task").await, 1);
}
