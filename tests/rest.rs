//! The REST interactions: create, read, vread, update, delete, patch,
//! versioning, If-Match, conditional create/update/delete, the CLI and
//! the CapabilityStatement.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

both!(
    create_returns_201_with_location_etag_last_modified_and_uuid_id,
    create_ignores_client_supplied_id_and_meta,
    read_returns_the_stored_resource_with_etag_and_last_modified,
    every_hub_resource_type_can_be_created_and_read,
    update_increments_version_and_vread_returns_each_version,
    update_of_unknown_client_id_creates_it_with_201,
    update_of_deleted_resource_brings_it_back_as_new_version,
    vread_of_unknown_version_is_404,
    vread_of_the_deletion_version_is_410,
    delete_returns_204_then_read_is_410_and_delete_again_is_204,
    delete_of_unknown_id_is_404,
    deleted_resource_is_gone_from_search_but_kept_in_history,
    delete_a_referral_leaves_other_resources_alone,
    referral_workflow_task_moves_through_statuses,
    if_match_matching_version_updates,
    if_match_mismatch_on_update_is_412_and_writes_nothing,
    if_match_mismatch_on_delete_is_412_and_keeps_the_resource,
    conditional_create_with_no_match_creates,
    conditional_create_with_one_match_returns_existing_without_new_version,
    conditional_create_with_several_matches_is_412,
    conditional_create_on_referral_identifier,
    conditional_update_with_no_match_creates,
    conditional_update_with_one_match_updates_it,
    conditional_update_with_several_matches_is_412_and_changes_nothing,
    conditional_delete_with_no_match_is_204,
    conditional_delete_with_one_match_deletes_it,
    conditional_delete_with_several_matches_is_412_and_deletes_nothing,
    conditional_delete_without_criteria_deletes_nothing,
    conditional_update_without_criteria_changes_nothing,
    conditional_writes_read_absolute_references_to_this_server_as_local,
    patch_replaces_a_field_and_makes_a_new_version,
    patch_respects_if_match,
    patch_changing_id_or_resource_type_is_refused,
    malformed_patch_document_is_400,
    patch_with_failing_test_op_is_422,
    patch_producing_an_invalid_resource_is_422,
    patch_of_unknown_resource_is_404,
    patch_with_wrong_content_type_is_415,
    data_survives_a_server_restart,
    migrate_subcommand_exits_zero_on_a_migrated_database,
    capability_statement_describes_the_server,
    capability_statement_is_available_as_xml,
    health_and_readiness_probes_answer,
    every_response_carries_a_request_id,
);

both_backends!(
    json_logs_name_each_request_and_keep_query_values_out,
    migrate_subcommand_prepares_a_fresh_database,
    database_url_forms_and_env_configuration_are_accepted,
);

async fn create_returns_201_with_location_etag_last_modified_and_uuid_id(s: Server) {
    let resp = s.post_json("/Patient", &patient("9434765919")).await;
    assert_eq!(resp.status(), 201);
    let location = header(&resp, "location").expect("Location header on create");
    let etag = header(&resp, "etag").expect("ETag header on create");
    let last_modified = header(&resp, "last-modified").expect("Last-Modified on create");
    let ct = content_type(&resp);
    assert!(ct.starts_with("application/fhir+json"), "Content-Type {ct}");
    let body = json(resp).await;
    let id = body["id"].as_str().unwrap();
    assert!(is_uuid(id), "server-assigned id should be a UUID, got {id}");
    assert_eq!(location, format!("{}/Patient/{id}/_history/1", s.base));
    assert_eq!(etag, "W/\"1\"");
    assert_eq!(body["meta"]["versionId"], "1");
    let last_updated = body["meta"]["lastUpdated"]
        .as_str()
        .expect("meta.lastUpdated");
    let lm = http_date_to_iso(&last_modified)
        .unwrap_or_else(|| panic!("Last-Modified is not an RFC 7231 date: {last_modified}"));
    assert!(
        last_updated.starts_with(&lm),
        "Last-Modified {last_modified} should be meta.lastUpdated {last_updated} (UTC, to the second)"
    );
    assert_eq!(content(&body), content(&patient("9434765919")));
}

async fn create_ignores_client_supplied_id_and_meta(s: Server) {
    let mut p = patient("9434765919");
    p["id"] = json!("chosen-by-client");
    p["meta"] = json!({"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z"});
    let body = s.create(&p).await;
    let id = body["id"].as_str().unwrap();
    assert_ne!(
        id, "chosen-by-client",
        "create must ignore the id in the body"
    );
    assert!(is_uuid(id));
    assert_eq!(body["meta"]["versionId"], "1");
    assert_ne!(body["meta"]["lastUpdated"], "2001-01-01T00:00:00Z");
    assert_eq!(s.status_of("/Patient/chosen-by-client").await, 404);
}

async fn read_returns_the_stored_resource_with_etag_and_last_modified(s: Server) {
    let created = s.create(&patient("9434765919")).await;
    let id = created["id"].as_str().unwrap();
    let resp = s.get(&format!("/Patient/{id}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"1\"");
    assert!(header(&resp, "last-modified")
        .and_then(|d| http_date_to_iso(&d))
        .is_some());
    assert!(content_type(&resp).starts_with("application/fhir+json"));
    let body = json(resp).await;
    assert_eq!(
        body, created,
        "read should return exactly what create returned"
    );
}

async fn every_hub_resource_type_can_be_created_and_read(s: Server) {
    let resources = hub_resources();
    assert!(resources.len() >= 21);
    for r in &resources {
        let rt = r["resourceType"].as_str().unwrap();
        let resp = s.post_json(&format!("/{rt}"), r).await;
        let status = resp.status();
        let location = header(&resp, "location");
        let body = resp.text().await.unwrap();
        assert_eq!(status, 201, "create {rt}: {body}");
        let created: Value = serde_json::from_str(&body).unwrap();
        let id = created["id"].as_str().unwrap();
        assert_eq!(
            location.as_deref(),
            Some(format!("{}/{rt}/{id}/_history/1", s.base).as_str())
        );
        let read = s.get_ok(&format!("/{rt}/{id}")).await;
        assert_eq!(read["resourceType"], rt);
        let mut written = r.clone();
        if rt == "Subscription" {
            // Its signing secret is kept apart, never in the resource.
            written.as_object_mut().unwrap().remove("extension");
        }
        assert_eq!(
            content(&read),
            content(&written),
            "{rt} should read back as written"
        );
    }
    // And the Task sp-hub adds for the SP referral among them.
    assert_eq!(s.versions_written().await, resources.len() as u64 + 1);
}

async fn update_increments_version_and_vread_returns_each_version(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let sr = s
        .create(&service_request(p["id"].as_str().unwrap(), "REF-0001"))
        .await;
    let id = sr["id"].as_str().unwrap();
    let mut v2 = sr.clone();
    v2["status"] = json!("on-hold");
    v2["note"] = json!([{"text": "Patient in hospital; resume in June"}]);
    let resp = s.put_json(&format!("/ServiceRequest/{id}"), &v2).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"2\"");
    assert!(
        header(&resp, "last-modified").is_some(),
        "Last-Modified on update"
    );
    let updated = json(resp).await;
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(updated["status"], "on-hold");
    assert!(
        updated["meta"]["lastUpdated"].as_str().unwrap()
            >= sr["meta"]["lastUpdated"].as_str().unwrap()
    );

    let mut v3 = updated.clone();
    v3["status"] = json!("active");
    let third = s.update(&v3).await;
    assert_eq!(third["meta"]["versionId"], "3");

    let old = s.get_ok(&format!("/ServiceRequest/{id}/_history/1")).await;
    assert_eq!(old, sr, "vread of version 1 returns the original content");
    let resp = s.get(&format!("/ServiceRequest/{id}/_history/2")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"2\"");
    assert!(
        header(&resp, "last-modified").is_some(),
        "Last-Modified on vread"
    );
    assert_eq!(json(resp).await, updated);
    let current = s.get_ok(&format!("/ServiceRequest/{id}")).await;
    assert_eq!(current, third);
}

async fn update_of_unknown_client_id_creates_it_with_201(s: Server) {
    let mut p = patient("9434765919");
    p["id"] = json!("gp-B86030-pt-42");
    let resp = s.put_json("/Patient/gp-B86030-pt-42", &p).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(etag(&resp), "W/\"1\"");
    if let Some(loc) = header(&resp, "location") {
        assert_eq!(
            loc,
            format!("{}/Patient/gp-B86030-pt-42/_history/1", s.base)
        );
    }
    let body = json(resp).await;
    assert_eq!(body["id"], "gp-B86030-pt-42");
    assert_eq!(body["meta"]["versionId"], "1");
    let read = s.get_ok("/Patient/gp-B86030-pt-42").await;
    assert_eq!(read, body);
    // A second PUT is an ordinary update.
    let resp = s.put_json("/Patient/gp-B86030-pt-42", &p).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"2\"");
}

async fn update_of_deleted_resource_brings_it_back_as_new_version(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("/Patient/{id}")).await.status(), 204);
    let resp = s.put_json(&format!("/Patient/{id}"), &p).await;
    assert_eq!(
        resp.status(),
        201,
        "an update that brings a deleted resource back is a create"
    );
    assert_eq!(etag(&resp), "W/\"3\"");
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "3");
}

async fn vread_of_unknown_version_is_404(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    assert_outcome(
        s.get(&format!("/Patient/{id}/_history/2")).await,
        404,
        "not-found",
    )
    .await;
    assert_outcome(
        s.get(&format!("/Patient/{id}/_history/999999")).await,
        404,
        "not-found",
    )
    .await;
    assert_outcome(
        s.get("/Patient/never-created/_history/1").await,
        404,
        "not-found",
    )
    .await;
}

async fn vread_of_the_deletion_version_is_410(s: Server) {
    // http.html#vread: a version where the resource was deleted is 410 Gone.
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("/Patient/{id}")).await.status(), 204);
    assert_outcome(
        s.get(&format!("/Patient/{id}/_history/2")).await,
        410,
        "deleted",
    )
    .await;
    // The version before the deletion is still there.
    let v1 = s.get_ok(&format!("/Patient/{id}/_history/1")).await;
    assert_eq!(v1, p);
}

async fn delete_returns_204_then_read_is_410_and_delete_again_is_204(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let resp = s.delete(&format!("/Patient/{id}")).await;
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "204 has no body");
    let gone = assert_outcome(s.get(&format!("/Patient/{id}")).await, 410, "deleted").await;
    assert!(!diagnostics(&gone).is_empty());
    assert_eq!(s.delete(&format!("/Patient/{id}")).await.status(), 204);
    assert_outcome(s.get(&format!("/Patient/{id}")).await, 410, "deleted").await;
}

async fn delete_of_unknown_id_is_404(s: Server) {
    assert_outcome(s.delete("/Patient/no-such-patient").await, 404, "not-found").await;
    assert_eq!(s.versions_written().await, 0);
}

async fn deleted_resource_is_gone_from_search_but_kept_in_history(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("/Patient/{id}")).await.status(), 204);
    assert_eq!(s.total(&format!("/Patient?_id={id}")).await, 0);
    let h = s.get_ok(&format!("/Patient/{id}/_history")).await;
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 2);
    let e = entries(&h);
    assert_eq!(e.len(), 2);
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0]["request"]["url"]
        .as_str()
        .unwrap()
        .contains(&format!("Patient/{id}")));
    assert!(
        e[0].get("resource").is_none(),
        "a deleted version has no resource: {}",
        e[0]
    );
    assert_eq!(e[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(e[1]["request"]["method"], "POST");
    assert_eq!(e[1]["resource"], p);
}

async fn delete_a_referral_leaves_other_resources_alone(s: Server) {
    let pat = s.create(&patient("9434765919")).await;
    let pid = pat["id"].as_str().unwrap();
    let sr = s.create(&service_request(pid, "REF-0001")).await;
    let sid = sr["id"].as_str().unwrap();
    let t = s.create(&task(sid, pid)).await;
    assert_eq!(
        s.delete(&format!("/ServiceRequest/{sid}")).await.status(),
        204
    );
    assert_eq!(s.status_of(&format!("/ServiceRequest/{sid}")).await, 410);
    assert_eq!(s.status_of(&format!("/Patient/{pid}")).await, 200);
    assert_eq!(
        s.status_of(&format!("/Task/{}", t["id"].as_str().unwrap()))
            .await,
        200
    );
}

async fn referral_workflow_task_moves_through_statuses(s: Server) {
    let pat = s.create(&patient("9434765919")).await;
    let pid = pat["id"].as_str().unwrap();
    let sr = s.create(&service_request(pid, "REF-0001")).await;
    let sid = sr["id"].as_str().unwrap();
    let t = s.create(&task(sid, pid)).await;
    let tid = t["id"].as_str().unwrap();
    assert_eq!(t["focus"]["reference"], format!("ServiceRequest/{sid}"));
    assert_eq!(t["code"]["coding"][0]["code"], "fulfill");

    let mut accepted = t.clone();
    accepted["status"] = json!("accepted");
    accepted["businessStatus"] = json!({"coding": [{"system": SP_BUSINESS_STATUS,
                                       "code": "first-contact-made"}],
                                       "text": "First contact booked"});
    let resp = s
        .send(
            s.req(Method::PUT, &format!("/Task/{tid}"))
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", "W/\"1\"")
                .body(accepted.to_string()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let accepted = json(resp).await;

    let mut done = accepted.clone();
    done["status"] = json!("completed");
    // The SP task profile: outputs are outcome measures, as Observations.
    done["output"] = json!([{
        "type": {"coding": [{"system": "https://sp-hub.example/fhir/CodeSystem/sp-outcome-measure",
                             "code": "swemwbs-total"}], "text": "Outcome"},
        "valueReference": {"reference": "Observation/swemwbs-1",
                           "display": "Joined weekly walking group"}
    }]);
    let resp = s
        .send(
            s.req(Method::PUT, &format!("/Task/{tid}"))
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", "W/\"2\"")
                .body(done.to_string()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let done = json(resp).await;
    assert_eq!(done["meta"]["versionId"], "3");
    assert_eq!(
        done["output"][0]["valueReference"]["display"],
        "Joined weekly walking group"
    );

    let h = s.get_ok(&format!("/Task/{tid}/_history")).await;
    assert_eq!(h["total"], 3);
    let methods: Vec<Value> = entries(&h)
        .iter()
        .map(|e| e["request"]["method"].clone())
        .collect();
    assert_eq!(methods, vec![json!("PUT"), json!("PUT"), json!("POST")]);
    let versions: Vec<Value> = entries(&h)
        .iter()
        .map(|e| e["resource"]["status"].clone())
        .collect();
    assert_eq!(
        versions,
        vec![json!("completed"), json!("accepted"), json!("requested")]
    );
}

async fn if_match_matching_version_updates(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let mut v2 = p.clone();
    v2["active"] = json!(false);
    for (if_match, expected_version) in [("W/\"1\"", "2"), ("\"2\"", "3")] {
        let resp = s
            .send(
                s.req(Method::PUT, &format!("/Patient/{id}"))
                    .header("Content-Type", FHIR_JSON)
                    .header("If-Match", if_match)
                    .body(v2.to_string()),
            )
            .await;
        assert_eq!(resp.status(), 200, "If-Match {if_match}");
        assert_eq!(json(resp).await["meta"]["versionId"], expected_version);
    }
}

async fn if_match_mismatch_on_update_is_412_and_writes_nothing(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let mut changed = p.clone();
    changed["active"] = json!(false);
    for stale in ["W/\"2\"", "W/\"0\"", "\"7\""] {
        let resp = s
            .send(
                s.req(Method::PUT, &format!("/Patient/{id}"))
                    .header("Content-Type", FHIR_JSON)
                    .header("If-Match", stale)
                    .body(changed.to_string()),
            )
            .await;
        assert_outcome(resp, 412, "conflict").await;
    }
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(read, p, "a refused update must not change the resource");
    assert_eq!(s.total(&format!("/Patient/{id}/_history")).await, 1);
}

async fn if_match_mismatch_on_delete_is_412_and_keeps_the_resource(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let resp = s
        .send(
            s.req(Method::DELETE, &format!("/Patient/{id}"))
                .header("If-Match", "W/\"3\""),
        )
        .await;
    assert_outcome(resp, 412, "conflict").await;
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
    let resp = s
        .send(
            s.req(Method::DELETE, &format!("/Patient/{id}"))
                .header("If-Match", "W/\"1\""),
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(s.status_of(&format!("/Patient/{id}")).await, 410);
}

async fn conditional_create_with_no_match_creates(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header(
                    "If-None-Exist",
                    format!("identifier={NHS_NUMBER}|9434765919"),
                )
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "location").is_some());
    assert_eq!(
        s.total(&format!(
            "/Patient?identifier={}",
            enc(&format!("{NHS_NUMBER}|9434765919"))
        ))
        .await,
        1
    );
}

async fn conditional_create_with_one_match_returns_existing_without_new_version(s: Server) {
    let existing = s.create(&patient("9434765919")).await;
    let mut other = patient("9434765919");
    other["name"] = json!([{"family": "Duplicate"}]);
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header(
                    "If-None-Exist",
                    format!("identifier={}", enc(&format!("{NHS_NUMBER}|9434765919"))),
                )
                .body(other.to_string()),
        )
        .await;
    assert_eq!(
        resp.status(),
        200,
        "one match: 200 with the existing resource"
    );
    let body = json(resp).await;
    assert_eq!(
        body, existing,
        "the existing resource is returned unchanged"
    );
    assert_eq!(s.versions_written().await, 1, "no new resource or version");
}

async fn conditional_create_with_several_matches_is_412(s: Server) {
    s.create(&patient("9434765919")).await;
    s.create(&patient("9434765919")).await;
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header(
                    "If-None-Exist",
                    format!("identifier={NHS_NUMBER}|9434765919"),
                )
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_outcome(resp, 412, "conflict").await;
    assert_eq!(s.versions_written().await, 2);
}

async fn conditional_create_on_referral_identifier(s: Server) {
    let first = s
        .send(
            s.req(Method::POST, "/ServiceRequest")
                .header("Content-Type", FHIR_JSON)
                .header("If-None-Exist", format!("identifier={REFERRAL_ID}|REF-77"))
                .body(service_request("p1", "REF-77").to_string()),
        )
        .await;
    assert_eq!(first.status(), 201);
    let first = json(first).await;
    let again = s
        .send(
            s.req(Method::POST, "/ServiceRequest")
                .header("Content-Type", FHIR_JSON)
                .header("If-None-Exist", format!("identifier={REFERRAL_ID}|REF-77"))
                .body(service_request("p1", "REF-77").to_string()),
        )
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(json(again).await["id"], first["id"]);
    // A Task with the same identifier is another type: no match.
    let mut t = task("x", "p1");
    t["identifier"] = json!([{"system": REFERRAL_ID, "value": "REF-77"}]);
    let resp = s
        .send(
            s.req(Method::POST, "/Task")
                .header("Content-Type", FHIR_JSON)
                .header("If-None-Exist", format!("identifier={REFERRAL_ID}|REF-77"))
                .body(t.to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
}

async fn conditional_writes_read_absolute_references_to_this_server_as_local(s: Server) {
    let existing = s.create(&service_request("p1", "REF-9")).await;
    let ours = enc(&format!("{}/Patient/p1", s.base));
    let resp = s
        .send(
            s.req(Method::POST, "/ServiceRequest")
                .header("Content-Type", FHIR_JSON)
                .header("If-None-Exist", format!("subject={ours}"))
                .body(service_request("p1", "REF-9").to_string()),
        )
        .await;
    assert_eq!(
        resp.status(),
        200,
        "the absolute reference finds Patient/p1's referral"
    );
    assert_eq!(json(resp).await["id"], existing["id"]);
    // Someone else's server is not ours: no match, nothing deleted.
    let theirs = enc("https://elsewhere.example.org/fhir/Patient/p1");
    let resp = s.delete(&format!("/ServiceRequest?subject={theirs}")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(s.total("/ServiceRequest").await, 1);
    let resp = s.delete(&format!("/ServiceRequest?subject={ours}")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        s.total("/ServiceRequest").await,
        0,
        "the referral is deleted"
    );
}

async fn conditional_update_with_no_match_creates(s: Server) {
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s
        .put_json(&format!("/Patient?identifier={q}"), &patient("9434765919"))
        .await;
    assert_eq!(resp.status(), 201);
    let body = json(resp).await;
    assert_eq!(body["meta"]["versionId"], "1");
    let id = body["id"].as_str().unwrap();
    let found = s.get_ok(&format!("/Patient?identifier={q}")).await;
    assert_eq!(entry_ids(&found), vec![id.to_string()]);
}

async fn conditional_update_with_one_match_updates_it(s: Server) {
    let existing = s.create(&patient("9434765919")).await;
    s.create(&patient("9000000009")).await;
    let mut changed = patient("9434765919");
    changed["telecom"] = json!([{"system": "phone", "value": "0113 496 0000", "use": "home"}]);
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s
        .put_json(&format!("/Patient?identifier={q}"), &changed)
        .await;
    assert_eq!(resp.status(), 200);
    let body = json(resp).await;
    assert_eq!(body["id"], existing["id"]);
    assert_eq!(body["meta"]["versionId"], "2");
    let read = s
        .get_ok(&format!("/Patient/{}", existing["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["telecom"][0]["value"], "0113 496 0000");
    assert_eq!(s.total("/Patient").await, 2);
}

async fn conditional_update_with_several_matches_is_412_and_changes_nothing(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    let b = s.create(&patient("9434765919")).await;
    let mut changed = patient("9434765919");
    changed["active"] = json!(false);
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s
        .put_json(&format!("/Patient?identifier={q}"), &changed)
        .await;
    assert_outcome(resp, 412, "conflict").await;
    for p in [a, b] {
        let read = s
            .get_ok(&format!("/Patient/{}", p["id"].as_str().unwrap()))
            .await;
        assert_eq!(read, p);
    }
    assert_eq!(s.versions_written().await, 2);
}

async fn conditional_delete_with_no_match_is_204(s: Server) {
    let keep = s.create(&patient("9000000009")).await;
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s.delete(&format!("/Patient?identifier={q}")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        s.get_ok(&format!("/Patient/{}", keep["id"].as_str().unwrap()))
            .await,
        keep
    );
    assert_eq!(s.versions_written().await, 1);
}

async fn conditional_delete_with_one_match_deletes_it(s: Server) {
    let gone = s.create(&patient("9434765919")).await;
    let keep = s.create(&patient("9000000009")).await;
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s.delete(&format!("/Patient?identifier={q}")).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        s.status_of(&format!("/Patient/{}", gone["id"].as_str().unwrap()))
            .await,
        410
    );
    assert_eq!(
        s.status_of(&format!("/Patient/{}", keep["id"].as_str().unwrap()))
            .await,
        200
    );
}

async fn conditional_delete_with_several_matches_is_412_and_deletes_nothing(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    let b = s.create(&patient("9434765919")).await;
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    assert_outcome(
        s.delete(&format!("/Patient?identifier={q}")).await,
        412,
        "conflict",
    )
    .await;
    for p in [a, b] {
        assert_eq!(
            s.status_of(&format!("/Patient/{}", p["id"].as_str().unwrap()))
                .await,
            200
        );
    }
    assert_eq!(s.versions_written().await, 2);
}

async fn conditional_delete_without_criteria_deletes_nothing(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    let resp = s.delete("/Patient").await;
    let status = resp.status().as_u16();
    assert!(
        (400..500).contains(&status),
        "DELETE /Patient with no criteria: {status}"
    );
    let resp = s.delete("/Patient?unknown-param=1").await;
    let status = resp.status().as_u16();
    assert!(
        (400..500).contains(&status),
        "DELETE /Patient with only unknown parameters must not match everything: {status}"
    );
    assert_eq!(
        s.status_of(&format!("/Patient/{}", a["id"].as_str().unwrap()))
            .await,
        200
    );
}

async fn conditional_update_without_criteria_changes_nothing(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    let mut changed = patient("9434765919");
    changed["active"] = json!(false);
    for path in ["/Patient", "/Patient?unknown-param=1"] {
        let resp = s.put_json(path, &changed).await;
        let status = resp.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "PUT {path} without supported criteria must be refused: {status}"
        );
    }
    assert_eq!(
        s.get_ok(&format!("/Patient/{}", a["id"].as_str().unwrap()))
            .await,
        a
    );
    assert_eq!(s.versions_written().await, 1);
}

async fn patch_replaces_a_field_and_makes_a_new_version(s: Server) {
    let pat = s.create(&patient("9434765919")).await;
    let sr = s
        .create(&service_request(pat["id"].as_str().unwrap(), "REF-0001"))
        .await;
    let id = sr["id"].as_str().unwrap();
    let patch = json!([
        {"op": "replace", "path": "/status", "value": "completed"},
        {"op": "add", "path": "/note/-", "value": {"text": "Discharged from service"}}
    ]);
    let resp = s.patch_json(&format!("/ServiceRequest/{id}"), &patch).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"2\"");
    let body = json(resp).await;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["note"][1]["text"], "Discharged from service");
    assert_eq!(body["meta"]["versionId"], "2");
    let read = s.get_ok(&format!("/ServiceRequest/{id}")).await;
    assert_eq!(read, body);
    let mut expected = content(&sr);
    expected["status"] = json!("completed");
    expected["note"]
        .as_array_mut()
        .unwrap()
        .push(json!({"text": "Discharged from service"}));
    assert_eq!(content(&read), expected, "only the patched elements change");
}

async fn patch_respects_if_match(s: Server) {
    let t = s.create(&task("sr-1", "p-1")).await;
    let id = t["id"].as_str().unwrap();
    let patch = json!([{"op": "replace", "path": "/status", "value": "accepted"}]);
    let stale = s
        .send(
            s.req(Method::PATCH, &format!("/Task/{id}"))
                .header("Content-Type", JSON_PATCH)
                .header("If-Match", "W/\"2\"")
                .body(patch.to_string()),
        )
        .await;
    assert_outcome(stale, 412, "conflict").await;
    assert_eq!(s.get_ok(&format!("/Task/{id}")).await, t);
    let ok = s
        .send(
            s.req(Method::PATCH, &format!("/Task/{id}"))
                .header("Content-Type", JSON_PATCH)
                .header("If-Match", "W/\"1\"")
                .body(patch.to_string()),
        )
        .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(json(ok).await["status"], "accepted");
}

async fn patch_changing_id_or_resource_type_is_refused(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for patch in [
        json!([{"op": "replace", "path": "/id", "value": "another-id"}]),
        json!([{"op": "remove", "path": "/id"}]),
        json!([{"op": "replace", "path": "/resourceType", "value": "Practitioner"}]),
        json!([{"op": "remove", "path": "/resourceType"}]),
    ] {
        let resp = s.patch_json(&format!("/Patient/{id}"), &patch).await;
        let status = resp.status().as_u16();
        assert!(
            status == 400 || status == 422,
            "{patch}: expected 400 or 422, got {status}"
        );
        assert_outcome_any(resp, status, &["invalid", "structure", "processing"]).await;
    }
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
    assert_eq!(s.status_of("/Patient/another-id").await, 404);
    assert_eq!(s.versions_written().await, 1);
}

async fn malformed_patch_document_is_400(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for body in [
        "not json",
        "{\"op\": \"replace\", \"path\": \"/active\", \"value\": false}",
        "[{\"op\": \"frobnicate\", \"path\": \"/active\"}]",
        "[{\"op\": \"replace\", \"value\": false}]",
        "[{\"path\": \"/active\", \"value\": false}]",
    ] {
        let resp = s
            .send_body(Method::PATCH, &format!("/Patient/{id}"), JSON_PATCH, body)
            .await;
        assert_outcome_any(resp, 400, &["invalid", "structure"]).await;
    }
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
}

async fn patch_with_failing_test_op_is_422(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let patch = json!([
        {"op": "test", "path": "/gender", "value": "male"},
        {"op": "replace", "path": "/active", "value": false}
    ]);
    assert_outcome(
        s.patch_json(&format!("/Patient/{id}"), &patch).await,
        422,
        "processing",
    )
    .await;
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
    let passing = json!([
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/active", "value": false}
    ]);
    let resp = s.patch_json(&format!("/Patient/{id}"), &passing).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(json(resp).await["active"], false);
}

async fn patch_producing_an_invalid_resource_is_422(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for patch in [
        json!([{"op": "add", "path": "/favouriteColour", "value": "blue"}]),
        json!([{"op": "replace", "path": "/active", "value": "very"}]),
        json!([{"op": "replace", "path": "/path/that/does/not/exist", "value": 1}]),
    ] {
        let resp = s.patch_json(&format!("/Patient/{id}"), &patch).await;
        assert_outcome(resp, 422, "processing").await;
    }
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
    assert_eq!(s.versions_written().await, 1);
}

async fn patch_of_unknown_resource_is_404(s: Server) {
    let patch = json!([{"op": "replace", "path": "/active", "value": false}]);
    assert_outcome(
        s.patch_json("/Patient/nobody", &patch).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(s.versions_written().await, 0);
}

async fn patch_with_wrong_content_type_is_415(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let patch = json!([{"op": "replace", "path": "/active", "value": false}]).to_string();
    let resp = s
        .send_body(
            Method::PATCH,
            &format!("/Patient/{id}"),
            "text/plain",
            patch,
        )
        .await;
    assert_outcome(resp, 415, "not-supported").await;
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
}

async fn data_survives_a_server_restart(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap().to_string();
    let mut v2 = p.clone();
    v2["active"] = json!(false);
    s.update(&v2).await;
    let s = s.restart().await;
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["active"], false);
    assert_eq!(s.get_ok(&format!("/Patient/{id}/_history/1")).await, p);
    assert_eq!(s.total(&format!("/Patient?_id={id}")).await, 1);
}

async fn migrate_subcommand_exits_zero_on_a_migrated_database(s: Server) {
    for _ in 0..2 {
        let out = tokio::process::Command::new(bin())
            .arg("migrate")
            .arg("--database-url")
            .arg(&s.database_url)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "sp-hub migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(s.status_of("/metadata").await, 200);
}

async fn migrate_subcommand_prepares_a_fresh_database(b: Backend) {
    let db = Database::fresh(b).await;
    let out = tokio::process::Command::new(bin())
        .arg("migrate")
        .env("SP_HUB_DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if b == Backend::Sqlite {
        assert!(
            std::path::Path::new(&db.url).exists(),
            "migrate should create the SQLite file"
        );
    }
}

async fn database_url_forms_and_env_configuration_are_accepted(b: Backend) {
    if b == Backend::Sqlite {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("x.db").display());
        let s = Server::start_with(b, &["--database-url", &url], &[]).await;
        s.create(&patient("9434765919")).await;
    }
    let s = Server::start_with(b, &[], &[("SP_HUB_MAX_BODY_BYTES", "1024")]).await;
    let mut big = patient("9434765919");
    big["name"][0]["text"] = json!("x".repeat(2000));
    let resp = s.post_json("/Patient", &big).await;
    assert_outcome(resp, 413, "too-costly").await;
}

async fn capability_statement_describes_the_server(s: Server) {
    let resp = s.get("/metadata").await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("application/fhir+json"));
    let cs = json(resp).await;
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["kind"], "instance");
    assert!(
        cs["status"].is_string() && cs["date"].is_string(),
        "status and date are required"
    );
    let formats: Vec<&str> = cs["format"]
        .as_array()
        .expect("format")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        formats.iter().any(|f| f.contains("json")),
        "format lists json: {formats:?}"
    );
    assert!(
        formats.iter().any(|f| f.contains("xml")),
        "format lists xml: {formats:?}"
    );
    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    let system: Vec<&str> = rest["interaction"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        system.contains(&"history-system"),
        "rest.interaction lists history-system: {system:?}"
    );
    let resources = rest["resource"].as_array().expect("rest[0].resource");
    let mut types: Vec<&str> = resources
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    for r in hub_resources() {
        let t = r["resourceType"].as_str().unwrap();
        assert!(types.contains(&t), "CapabilityStatement lists {t}");
    }
    let n = types.len();
    types.dedup();
    assert_eq!(types.len(), n, "each type listed once");
    for t in ["ServiceRequest", "Task"] {
        let r = resources.iter().find(|r| r["type"] == t).unwrap();
        let interactions: Vec<&str> = r["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["code"].as_str())
            .collect();
        for i in [
            "read",
            "vread",
            "update",
            "patch",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        ] {
            assert!(
                interactions.contains(&i),
                "{t} supports {i}: {interactions:?}"
            );
        }
        let params: Vec<(&str, &str)> = r["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or(""),
                    p["type"].as_str().unwrap_or(""),
                )
            })
            .collect();
        for p in [
            ("_id", "token"),
            ("_lastUpdated", "date"),
            ("identifier", "token"),
        ] {
            assert!(params.contains(&p), "{t} searchParam {p:?}: {params:?}");
        }
    }
}

async fn capability_statement_is_available_as_xml(s: Server) {
    let resp = s.get("/metadata?_format=xml").await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).contains("xml"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("<CapabilityStatement xmlns=\"http://hl7.org/fhir\">"),
        "{}",
        &text[..text.len().min(300)]
    );
    assert!(text.contains("<fhirVersion value=\"4.0.1\"/>"));
}

async fn health_and_readiness_probes_answer(s: Server) {
    let live = expect_json(s.get("/healthz").await, 200).await;
    assert_eq!(live["status"], "ok");
    let ready = expect_json(s.get("/readyz").await, 200).await;
    assert_eq!(ready["status"], "ready");
    assert_outcome(
        s.send(s.req(Method::POST, "/readyz")).await,
        405,
        "not-supported",
    )
    .await;
}

async fn every_response_carries_a_request_id(s: Server) {
    let resp = s.get("/metadata").await;
    let made = header(&resp, "x-request-id").expect("an id is made");
    assert!(is_uuid(&made), "{made}");
    let resp = s
        .send(
            s.req(Method::GET, "/Patient/nobody")
                .header("X-Request-Id", "gp-system-42"),
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        header(&resp, "x-request-id").as_deref(),
        Some("gp-system-42")
    );
    let resp = s
        .send(
            s.req(Method::GET, "/metadata")
                .header("X-Request-Id", "x".repeat(200)),
        )
        .await;
    let replaced = header(&resp, "x-request-id").unwrap();
    assert!(
        is_uuid(&replaced),
        "an unreasonable id is replaced: {replaced}"
    );
}

async fn json_logs_name_each_request_and_keep_query_values_out(b: Backend) {
    let s = Server::start_with(
        b,
        &[],
        &[("SP_HUB_LOG_FORMAT", "json"), ("SP_HUB_LOG", "info")],
    )
    .await;
    let q = enc(&format!("{NHS_NUMBER}|9434765919"));
    let resp = s
        .send(
            s.req(Method::GET, &format!("/Patient?identifier={q}"))
                .header("X-Request-Id", "trace-me-1"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    // The line is written as the response goes out; give it a moment.
    let mut served = None;
    for _ in 0..50 {
        served = s
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| {
                l["fields"]["message"] == "served" && l["span"]["request_id"] == "trace-me-1"
            });
        if served.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let served = served.unwrap_or_else(|| panic!("no JSON 'served' line in:\n{}", s.log()));
    assert_eq!(served["fields"]["status"], 200, "{served}");
    assert_eq!(served["span"]["path"], "/Patient", "{served}");
    assert!(
        !s.log().contains("9434765919"),
        "an NHS number reached the log"
    );
}
