//! Bad input: every refusal has the right status, an OperationOutcome that
//! says what is wrong, and leaves nothing behind. Hostile input never makes
//! the server fail (5xx) or fall over.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// The system history is empty: no resource and no version was written.
async fn assert_nothing_stored(s: &Server) {
    let h = s.get_ok("/_history").await;
    assert_eq!(h["total"], 0, "nothing should have been stored: {h}");
    assert!(
        entries(&h).is_empty(),
        "nothing should have been stored: {h}"
    );
}

both!(
    malformed_json_is_400_structure_and_stores_nothing,
    malformed_xml_is_400_structure_and_stores_nothing,
    unknown_element_is_400_naming_its_path,
    unknown_nested_element_is_400_naming_its_path,
    wrongly_typed_primitive_is_400_naming_its_path,
    unknown_element_in_xml_is_400,
    resource_type_not_matching_the_url_is_400,
    put_with_body_id_not_matching_url_is_400,
    put_without_id_in_body_is_400,
    invalid_ids_in_the_url_are_400,
    unknown_resource_type_is_404,
    unknown_resource_type_in_body_is_400,
    unknown_id_is_404,
    deleted_resource_is_410,
    wrong_method_is_405,
    body_over_default_limit_is_413,
    unsupported_accept_is_406,
    unsupported_accept_on_create_is_406_and_stores_nothing,
    unsupported_content_type_is_415_and_stores_nothing,
    search_post_with_wrong_content_type_is_415,
    bad_search_values_are_400,
    bad_history_parameters_are_400,
    hostile_bodies_never_cause_a_server_error,
    hostile_paths_and_queries_never_cause_a_server_error,
    hostile_headers_never_cause_a_server_error,
    hostile_patches_never_cause_a_server_error,
    malformed_http_never_causes_a_server_error,
);

both_backends!(body_over_configured_limit_is_413,);

async fn malformed_json_is_400_structure_and_stores_nothing(s: Server) {
    for body in [
        "{\"resourceType\": \"Patient\",",
        "{\"resourceType\": \"Patient\", \"active\": tru}",
        "{'resourceType': 'Patient'}",
        "{\"resourceType\": \"Patient\"} trailing",
    ] {
        let resp = s.send_body(Method::POST, "/Patient", FHIR_JSON, body).await;
        assert_outcome(resp, 400, "structure").await;
    }
    assert_nothing_stored(&s).await;
}

async fn malformed_xml_is_400_structure_and_stores_nothing(s: Server) {
    for body in [
        "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/>",
        "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"></Patient>",
        "not xml at all",
        "<Patient xmlns=\"http://example.org/not-fhir\"><active value=\"true\"/></Patient>",
    ] {
        let resp = s.send_body(Method::POST, "/Patient", FHIR_XML, body).await;
        assert_outcome(resp, 400, "structure").await;
    }
    assert_nothing_stored(&s).await;
}

async fn unknown_element_is_400_naming_its_path(s: Server) {
    let mut p = patient("9434765919");
    p["foo"] = json!(1);
    let oo = assert_outcome(s.post_json("/Patient", &p).await, 400, "structure").await;
    assert_eq!(expression(&oo), Some("Patient.foo"), "{oo}");
    assert!(
        diagnostics(&oo).contains("foo"),
        "diagnostics should name the element: {oo}"
    );
    assert_nothing_stored(&s).await;
}

async fn unknown_nested_element_is_400_naming_its_path(s: Server) {
    let mut t = task("sr-1", "p-1");
    t["input"] = json!([
        {"type": {"text": "Preferred contact"}, "valueString": "morning"},
        {"type": {"text": "Note"}, "valueFoo": "x"}
    ]);
    let oo = assert_outcome(s.post_json("/Task", &t).await, 400, "structure").await;
    assert_eq!(expression(&oo), Some("Task.input[1].valueFoo"), "{oo}");
    assert_nothing_stored(&s).await;
}

async fn wrongly_typed_primitive_is_400_naming_its_path(s: Server) {
    let mut p = patient("9434765919");
    p["active"] = json!("yes");
    let oo = assert_outcome_any(
        s.post_json("/Patient", &p).await,
        400,
        &["structure", "invalid"],
    )
    .await;
    assert_eq!(expression(&oo), Some("Patient.active"), "{oo}");
    assert_nothing_stored(&s).await;
}

async fn unknown_element_in_xml_is_400(s: Server) {
    let xml = "<Patient xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/><foo value=\"1\"/></Patient>";
    let oo = assert_outcome(
        s.send_body(Method::POST, "/Patient", FHIR_XML, xml).await,
        400,
        "structure",
    )
    .await;
    assert!(diagnostics(&oo).contains("foo"), "{oo}");
    assert_nothing_stored(&s).await;
}

async fn resource_type_not_matching_the_url_is_400(s: Server) {
    let t = task("sr-1", "p-1");
    let resp = s.post_json("/ServiceRequest", &t).await;
    assert_outcome_any(resp, 400, &["invalid", "structure"]).await;
    let mut p = patient("9434765919");
    p["id"] = json!("p1");
    let resp = s.put_json("/Practitioner/p1", &p).await;
    assert_outcome_any(resp, 400, &["invalid", "structure"]).await;
    let xml = "<Practitioner xmlns=\"http://hl7.org/fhir\"><active value=\"true\"/></Practitioner>";
    let resp = s.send_body(Method::POST, "/Patient", FHIR_XML, xml).await;
    assert_outcome_any(resp, 400, &["invalid", "structure"]).await;
    assert_nothing_stored(&s).await;
    assert_eq!(s.status_of("/Practitioner/p1").await, 404);
    assert_eq!(s.status_of("/Patient/p1").await, 404);
}

async fn put_with_body_id_not_matching_url_is_400(s: Server) {
    let mut p = patient("9434765919");
    p["id"] = json!("patient-b");
    let oo = assert_outcome(s.put_json("/Patient/patient-a", &p).await, 400, "invalid").await;
    assert!(!diagnostics(&oo).is_empty());
    assert_eq!(s.status_of("/Patient/patient-a").await, 404);
    assert_eq!(s.status_of("/Patient/patient-b").await, 404);
    // And over an existing resource: it must stay as it was.
    let mut a = patient("9434765919");
    a["id"] = json!("patient-a");
    let created = s.update(&a).await;
    let resp = s.put_json("/Patient/patient-a", &p).await;
    assert_outcome(resp, 400, "invalid").await;
    assert_eq!(s.get_ok("/Patient/patient-a").await, created);
}

async fn put_without_id_in_body_is_400(s: Server) {
    let resp = s
        .put_json("/Patient/patient-a", &patient("9434765919"))
        .await;
    assert_outcome(resp, 400, "invalid").await;
    assert_nothing_stored(&s).await;
}

async fn invalid_ids_in_the_url_are_400(s: Server) {
    let too_long = "a".repeat(65);
    for id in [
        too_long.as_str(),
        "a_b",
        "a!b",
        "a%20b",
        "%C3%A9t%C3%A9",
        "a:b",
        "a%2Cb",
    ] {
        let oo = assert_outcome(s.get(&format!("/Patient/{id}")).await, 400, "invalid").await;
        assert!(!diagnostics(&oo).is_empty());
        let mut p = patient("9434765919");
        p["id"] = json!(id);
        assert_outcome(
            s.put_json(&format!("/Patient/{id}"), &p).await,
            400,
            "invalid",
        )
        .await;
        assert_outcome(s.delete(&format!("/Patient/{id}")).await, 400, "invalid").await;
    }
    // 64 characters of the allowed alphabet is a valid (unknown) id.
    let longest = format!("{}.-9", "A".repeat(61));
    assert_eq!(longest.len(), 64);
    assert_outcome(
        s.get(&format!("/Patient/{longest}")).await,
        404,
        "not-found",
    )
    .await;
    let mut p = patient("9434765919");
    p["id"] = json!(longest);
    assert_eq!(
        s.put_json(&format!("/Patient/{longest}"), &p)
            .await
            .status(),
        201
    );
    assert_eq!(s.versions_written().await, 1);
}

async fn unknown_resource_type_is_404(s: Server) {
    for path in [
        "/Referral/1",
        "/Referral",
        "/patient/1",
        "/Referral/1/_history",
        "/Referral/_history",
    ] {
        assert_outcome(s.get(path).await, 404, "not-found").await;
    }
    let body = json!({"resourceType": "Referral"});
    assert_outcome(s.post_json("/Referral", &body).await, 404, "not-found").await;
    assert_nothing_stored(&s).await;
}

async fn unknown_resource_type_in_body_is_400(s: Server) {
    let body = json!({"resourceType": "Referral", "status": "active"});
    assert_outcome_any(
        s.post_json("/Patient", &body).await,
        400,
        &["invalid", "structure"],
    )
    .await;
    assert_nothing_stored(&s).await;
}

async fn unknown_id_is_404(s: Server) {
    let oo = assert_outcome(
        s.get("/ServiceRequest/does-not-exist").await,
        404,
        "not-found",
    )
    .await;
    assert!(!diagnostics(&oo).is_empty());
    assert_outcome(
        s.get("/ServiceRequest/does-not-exist/_history/1").await,
        404,
        "not-found",
    )
    .await;
}

async fn deleted_resource_is_410(s: Server) {
    let t = s.create(&task("sr-1", "p-1")).await;
    let id = t["id"].as_str().unwrap();
    assert_eq!(s.delete(&format!("/Task/{id}")).await.status(), 204);
    assert_outcome(s.get(&format!("/Task/{id}")).await, 410, "deleted").await;
}

async fn wrong_method_is_405(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let cases: Vec<(Method, String)> = vec![
        (Method::PATCH, "/Patient".into()),
        (Method::DELETE, "/metadata".into()),
        (Method::POST, "/metadata".into()),
        (Method::PUT, "/metadata".into()),
        (Method::POST, format!("/Patient/{id}")),
        (Method::DELETE, "/_history".into()),
        (Method::POST, "/_history".into()),
        (Method::POST, format!("/Patient/{id}/_history")),
        (Method::PUT, format!("/Patient/{id}/_history/1")),
    ];
    for (method, path) in cases {
        let resp = s
            .send(
                s.req(method.clone(), &path)
                    .header("Content-Type", FHIR_JSON)
                    .body(p.to_string()),
            )
            .await;
        // RFC 9110 15.5.6: a 405 names the methods that are allowed.
        let allow = header(&resp, "allow").unwrap_or_default();
        assert!(
            !allow.is_empty() && !allow.split(',').any(|m| m.trim() == method.as_str()),
            "{method} {path}: Allow header {allow:?}"
        );
        let oo = assert_outcome(resp, 405, "not-supported").await;
        assert!(!diagnostics(&oo).is_empty(), "{method} {path}");
    }
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, p);
    assert_eq!(s.versions_written().await, 1);
}

async fn body_over_default_limit_is_413(s: Server) {
    let mut p = patient("9434765919");
    p["name"][0]["text"] = json!("x".repeat(2 * 1024 * 1024 + 10));
    let resp = s.post_json("/Patient", &p).await;
    assert_outcome(resp, 413, "too-costly").await;
    assert_nothing_stored(&s).await;
    // Just under the limit is accepted.
    let mut p = patient("9434765919");
    p["name"][0]["text"] = json!("");
    let base_len = p.to_string().len();
    p["name"][0]["text"] = json!("x".repeat(2_097_152 - base_len - 100));
    let body = p.to_string();
    assert!(body.len() <= 2_097_152);
    assert_eq!(
        s.send_body(Method::POST, "/Patient", FHIR_JSON, body)
            .await
            .status(),
        201
    );
}

async fn body_over_configured_limit_is_413(b: Backend) {
    let s = Server::start_with(b, &["--max-body-bytes", "1024"], &[]).await;
    let mut p = patient("9434765919");
    p["name"][0]["text"] = json!("x".repeat(1500));
    assert_outcome(s.post_json("/Patient", &p).await, 413, "too-costly").await;
    p["id"] = json!("big");
    assert_outcome(s.put_json("/Patient/big", &p).await, 413, "too-costly").await;
    // Without a Content-Length the limit holds too.
    let payload = p.to_string();
    let mut req = format!(
        "POST /Patient HTTP/1.1\r\nHost: {}\r\nContent-Type: application/fhir+json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        s.addr()
    )
    .into_bytes();
    for chunk in payload.as_bytes().chunks(200) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, text) = s.raw(req).await;
    assert_eq!(status, 413, "chunked body over the limit: {text}");
    assert_nothing_stored(&s).await;
    // Small bodies still work.
    let small = json!({"resourceType": "Patient", "active": true});
    assert_eq!(s.post_json("/Patient", &small).await.status(), 201);
}

async fn unsupported_accept_is_406(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for accept in ["text/plain", "image/png", "application/pdf"] {
        let resp = s.get_accept(&format!("/Patient/{id}"), accept).await;
        assert_outcome(resp, 406, "not-supported").await;
    }
    for format in ["html", "text/turtle", "yaml"] {
        let resp = s
            .get(&format!("/Patient/{id}?_format={}", enc(format)))
            .await;
        assert_outcome(resp, 406, "not-supported").await;
    }
    assert_outcome(
        s.get_accept("/Patient", "text/plain").await,
        406,
        "not-supported",
    )
    .await;
    assert_outcome(
        s.get_accept("/metadata", "text/plain").await,
        406,
        "not-supported",
    )
    .await;
}

async fn unsupported_accept_on_create_is_406_and_stores_nothing(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header("Accept", "text/plain")
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_outcome(resp, 406, "not-supported").await;
    assert_nothing_stored(&s).await;
}

async fn unsupported_content_type_is_415_and_stores_nothing(s: Server) {
    let body = patient("9434765919").to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/turtle",
    ] {
        let resp = s
            .send_body(Method::POST, "/Patient", ct, body.clone())
            .await;
        assert_outcome(resp, 415, "not-supported").await;
    }
    let mut p = patient("9434765919");
    p["id"] = json!("p1");
    let resp = s
        .send_body(Method::PUT, "/Patient/p1", "text/plain", p.to_string())
        .await;
    assert_outcome(resp, 415, "not-supported").await;
    assert_nothing_stored(&s).await;
}

async fn search_post_with_wrong_content_type_is_415(s: Server) {
    s.create(&patient("9434765919")).await;
    let resp = s
        .send_body(
            Method::POST,
            "/Patient/_search",
            "application/json",
            "{\"_id\":\"x\"}",
        )
        .await;
    assert_outcome(resp, 415, "not-supported").await;
}

async fn bad_search_values_are_400(s: Server) {
    s.create(&patient("9434765919")).await;
    for (query, param) in [
        ("_lastUpdated=notadate", "_lastUpdated"),
        ("_lastUpdated=gt2024-13-45", "_lastUpdated"),
        ("_lastUpdated=xx2024-01-01", "_lastUpdated"),
        ("_lastUpdated=2024-01-01T25:00:00Z", "_lastUpdated"),
        ("_count=-1", "_count"),
        ("_count=many", "_count"),
        ("_summary=everything", "_summary"),
    ] {
        let oo = assert_outcome(s.get(&format!("/Patient?{query}")).await, 400, "invalid").await;
        assert!(
            diagnostics(&oo).contains(param) || expression(&oo) == Some(param),
            "{query}: the outcome should name {param}: {oo}"
        );
        let resp = s
            .send_body(Method::POST, "/Patient/_search", FORM, query)
            .await;
        assert_outcome(resp, 400, "invalid").await;
    }
}

async fn bad_history_parameters_are_400(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for path in [
        format!("/Patient/{id}/_history?_since=yesterday"),
        "/Patient/_history?_since=2024-99-01T00:00:00Z".to_string(),
        "/_history?_at=notadate".to_string(),
        "/_history?_count=-5".to_string(),
    ] {
        assert_outcome(s.get(&path).await, 400, "invalid").await;
    }
}

async fn hostile_bodies_never_cause_a_server_error(s: Server) {
    let seed = s.create(&patient("9434765919")).await;
    let id = seed["id"].as_str().unwrap().to_string();
    let deep_array = format!(
        "{{\"resourceType\":\"Patient\",\"name\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_object = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let bare_deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    // lol0 = "lol", lolN = ten lol(N-1): lol9 expands to 10^9 "lol"s.
    let mut entities = String::from("<!ENTITY lol0 \"lol\">");
    for i in 1..10 {
        let refs = format!("&lol{};", i - 1).repeat(10);
        entities.push_str(&format!("<!ENTITY lol{i} \"{refs}\">"));
    }
    let billion_laughs = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE lolz [{entities}]>\
         <Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"&lol9;\"/></Patient>"
    );
    let xxe = "<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\
               <Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"&xxe;\"/></Patient>";
    let mut invalid_utf8 = b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"".to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
    invalid_utf8.extend_from_slice(b"\"}]}");

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (FHIR_JSON, b"".to_vec()),
        (FHIR_JSON, b"null".to_vec()),
        (FHIR_JSON, b"[]".to_vec()),
        (FHIR_JSON, b"\"Patient\"".to_vec()),
        (FHIR_JSON, b"42".to_vec()),
        (FHIR_JSON, b"{}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":5}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":null}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":[\"Patient\"]}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Patient\",\"id\":5}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Patient\",\"active\":true,\"active\":false}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\\u0000b\"}]}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"urn:x\\u0000\",\"value\":\"a\\u0000b\"}]}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\\ud800\"}]}".to_vec()),
        (FHIR_JSON, deep_array.into_bytes()),
        (FHIR_JSON, deep_object.into_bytes()),
        (FHIR_JSON, bare_deep.into_bytes()),
        (FHIR_JSON, b"{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"valueQuantity\":{\"value\":1e999999}}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"valueInteger\":99999999999999999999999999}".to_vec()),
        (FHIR_JSON, b"{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},\"valueDecimal\":-0.000000000000000000000000000001e-400}".to_vec()),
        (FHIR_JSON, invalid_utf8),
        (FHIR_JSON, vec![0u8; 512]),
        (FHIR_JSON, b"\xef\xbb\xbf{\"resourceType\":\"Patient\"}".to_vec()),
        (FHIR_XML, billion_laughs.into_bytes()),
        (FHIR_XML, xxe.as_bytes().to_vec()),
        (FHIR_XML, b"".to_vec()),
        (FHIR_XML, b"<Patient xmlns=\"http://hl7.org/fhir\">".repeat(5000)),
        (FHIR_XML, b"<?xml version=\"1.0\" encoding=\"EBCDIC\"?><Patient xmlns=\"http://hl7.org/fhir\"/>".to_vec()),
        (FHIR_XML, b"<Patient xmlns=\"http://hl7.org/fhir\"><identifier><value value=\"a&#0;b\"/></identifier></Patient>".to_vec()),
        ("application/fhir+json; charset=latin1", b"{\"resourceType\":\"Patient\"}".to_vec()),
        (";;;", b"{\"resourceType\":\"Patient\"}".to_vec()),
    ];
    let mut failures = vec![];
    for (ct, body) in bodies {
        let preview = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
        for (method, path) in [
            (Method::POST, "/Patient".to_string()),
            (Method::PUT, format!("/Patient/{id}")),
        ] {
            let resp = s.send_body(method.clone(), &path, ct, body.clone()).await;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let what = format!(
                "{method} {path} [{ct}] {preview:?} -> {status}: {}",
                &text[..text.len().min(300)]
            );
            if status >= 500 {
                failures.push(what);
            } else if text.contains("root:x:0") {
                failures.push(format!("XXE: the server read a local file: {what}"));
            } else if status >= 400
                && serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)["resourceType"]
                    != "OperationOutcome"
            {
                failures.push(format!("error without an OperationOutcome: {what}"));
            }
        }
    }
    assert_eq!(
        s.status_of("/metadata").await,
        200,
        "the server is still up"
    );
    assert!(
        failures.is_empty(),
        "{} hostile bodies misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn hostile_paths_and_queries_never_cause_a_server_error(s: Server) {
    let seed = s.create(&patient("9434765919")).await;
    let id = seed["id"].as_str().unwrap().to_string();
    let long_query = (0..2000)
        .map(|i| format!("p{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("&");
    let many_ids = (0..2000)
        .map(|i| format!("id{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let paths: Vec<String> = vec![
        format!("/Patient/{id}/_history/-1"),
        format!("/Patient/{id}/_history/abc"),
        format!("/Patient/{id}/_history/99999999999999999999999"),
        format!("/Patient/{id}/_history/1.5"),
        format!("/Patient/{id}/_history/%00"),
        "/Patient/..%2F..%2Fetc%2Fpasswd".into(),
        "/Patient/%2e%2e".into(),
        "/Patient/%00".into(),
        "/Patient/a%2Fb".into(),
        "/Patient/%ZZ".into(),
        "/%E2%82%AC".into(),
        "/%E2%82%AC/1".into(),
        "/Patient%00".into(),
        "/Patient?_count=99999999999999999999".into(),
        "/Patient?_count=1e3".into(),
        "/Patient?_lastUpdated=gt".into(),
        "/Patient?_lastUpdated=".into(),
        "/Patient?_lastUpdated=ge99999-01-01".into(),
        "/Patient?_lastUpdated=ge0000-01-01".into(),
        "/Patient?_lastUpdated=ge2024-01-01T00:00:00%2B99:99".into(),
        "/Patient?_lastUpdated=ge2024-02-30".into(),
        "/Patient?_lastUpdated=%00".into(),
        "/Patient?_id=".into(),
        "/Patient?_id=,,,".into(),
        "/Patient?_id=%00".into(),
        "/Patient?identifier=|".into(),
        "/Patient?identifier=||||".into(),
        "/Patient?identifier=%00|%00".into(),
        "/Patient?identifier=%00".into(),
        "/Patient?identifier=%27%3B%20DROP%20TABLE%20resources%3B--".into(),
        "/Patient?_id=%27%20OR%20%271%27%3D%271".into(),
        "/Patient?identifier=%25".into(),
        "/Patient?identifier=_".into(),
        format!("/Patient?{long_query}"),
        format!("/Patient?_id={many_ids}"),
        "/Patient?_summary=count&_elements=%00".into(),
        "/Patient?_elements=,,,,".into(),
        "/Patient?_elements=name.given,..,%24".into(),
        "/Patient?_format=".into(),
        "/Patient?_pretty=maybe".into(),
        "/Patient?%ff=%fe".into(),
        "/Patient?_cursor=%25%25%25".into(),
        "/Patient?_cursor=AAAA".into(),
        "/Patient?_count=1&_cursor=ZGlmZmVyZW50OmtpbmQ".into(),
        "/_history?_since=".into(),
        "/_history?_since=%00".into(),
        "/_history?_at=%00".into(),
        "/_history?_count=99999999999999999999".into(),
        format!("/Patient/{id}/_history?_since=0000-01-01T00:00:00Z"),
        format!("/Patient/{id}?_summary=%00"),
        format!("/Patient/{id}?_elements=%00"),
    ];
    let mut failures = vec![];
    for path in &paths {
        let resp = s.get(path).await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status >= 500 {
            failures.push(format!("GET {path} -> {status}: {text}"));
        }
    }
    // The injection attempts did not hurt the data.
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, seed);
    assert!(
        failures.is_empty(),
        "{} hostile paths misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn hostile_headers_never_cause_a_server_error(s: Server) {
    let seed = s.create(&patient("9434765919")).await;
    let id = seed["id"].as_str().unwrap().to_string();
    let header_cases: Vec<(Method, String, &str, &str)> = vec![
        (Method::PUT, format!("/Patient/{id}"), "If-Match", "garbage"),
        (
            Method::PUT,
            format!("/Patient/{id}"),
            "If-Match",
            "W/\"99999999999999999999\"",
        ),
        (
            Method::PUT,
            format!("/Patient/{id}"),
            "If-Match",
            "W/\"-1\"",
        ),
        (Method::PUT, format!("/Patient/{id}"), "If-Match", "W/\"\""),
        (Method::PUT, format!("/Patient/{id}"), "If-Match", ""),
        (
            Method::DELETE,
            format!("/Patient/{id}"),
            "If-Match",
            "*, W/\"1\"",
        ),
        (Method::POST, "/Patient".into(), "If-None-Exist", "garbage"),
        (
            Method::POST,
            "/Patient".into(),
            "If-None-Exist",
            "unknown=1",
        ),
        (
            Method::POST,
            "/Patient".into(),
            "If-None-Exist",
            "_lastUpdated=notadate",
        ),
        (
            Method::POST,
            "/Patient".into(),
            "If-None-Exist",
            "identifier=%00",
        ),
        (
            Method::POST,
            "/Patient".into(),
            "If-None-Exist",
            "identifier=%ZZ",
        ),
        (Method::POST, "/Patient".into(), "If-None-Exist", ""),
        (Method::POST, "/Patient".into(), "Prefer", "return=nonsense"),
        (Method::POST, "/Patient".into(), "Prefer", ";;;=;"),
        (Method::GET, format!("/Patient/{id}"), "Accept", ";;;"),
        (
            Method::GET,
            format!("/Patient/{id}"),
            "Accept",
            "application/fhir+json;q=abc",
        ),
        (Method::GET, format!("/Patient/{id}"), "Accept", "*/*;q=0"),
        (
            Method::GET,
            "/Patient".into(),
            "Accept",
            "application/fhir+xml;q=2",
        ),
    ];
    let mut body = seed.clone();
    body["active"] = json!(false);
    let mut failures = vec![];
    for (method, path, name, value) in header_cases {
        let resp = s
            .send(
                s.req(method.clone(), &path)
                    .header("Content-Type", FHIR_JSON)
                    .header(name, value)
                    .body(body.to_string()),
            )
            .await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status >= 500 {
            failures.push(format!(
                "{method} {path} {name}: {value:?} -> {status}: {text}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} hostile headers misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn hostile_patches_never_cause_a_server_error(s: Server) {
    let seed = s.create(&patient("9434765919")).await;
    let id = seed["id"].as_str().unwrap().to_string();
    let patches = [
        "{}",
        "[]",
        "null",
        "[{\"op\":\"nope\"}]",
        "[{\"op\":\"remove\",\"path\":\"\"}]",
        "[{\"op\":\"replace\",\"path\":\"\",\"value\":5}]",
        "[{\"op\":\"replace\",\"path\":\"\",\"value\":{\"resourceType\":\"Patient\"}}]",
        "[{\"op\":\"move\",\"from\":\"/name\",\"path\":\"/name/0\"}]",
        "[{\"op\":\"copy\",\"from\":\"/meta\",\"path\":\"/meta/versionId\"}]",
        "[{\"op\":\"add\",\"path\":\"/meta/versionId\",\"value\":\"99\"}]",
        "[{\"op\":\"add\",\"path\":\"/name/99999999999\",\"value\":{}}]",
        "[{\"op\":\"add\",\"path\":\"/identifier/0/value\",\"value\":\"a\\u0000b\"}]",
        "[{\"op\":\"replace\",\"path\":\"/name/-\",\"value\":{}}]",
        "[{\"op\":\"add\",\"path\":\"/~2\",\"value\":1}]",
    ];
    let mut failures = vec![];
    for patch in patches {
        let resp = s
            .send_body(Method::PATCH, &format!("/Patient/{id}"), JSON_PATCH, patch)
            .await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        if status >= 500 {
            failures.push(format!("PATCH {patch} -> {status}: {text}"));
        }
    }
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(read["id"], id.as_str());
    assert!(
        failures.is_empty(),
        "{} hostile patches misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn malformed_http_never_causes_a_server_error(s: Server) {
    let seed = s.create(&patient("9434765919")).await;
    let id = seed["id"].as_str().unwrap().to_string();
    let host = s.addr();
    let raw_requests: Vec<Vec<u8>> = vec![
        format!("GET /Patient/../../etc/passwd HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET /Patient/{id}/../../../metadata HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        [b"GET /Patient/\xff\xfe HTTP/1.1\r\nHost: ".as_slice(), host.as_bytes(), b"\r\nConnection: close\r\n\r\n"].concat(),
        [b"GET /Patient?identifier=\xff\xfe HTTP/1.1\r\nHost: ".as_slice(), host.as_bytes(), b"\r\nConnection: close\r\n\r\n"].concat(),
        format!("GET /Patient?_id=a b HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET * HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("BREW /Patient HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("POST /Patient HTTP/1.1\r\nHost: {host}\r\nContent-Length: 26\r\nConnection: close\r\n\r\n{{\"resourceType\":\"Patient\"}}").into_bytes(),
        format!("PUT /Patient/{id} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\nContent-Length: -5\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("POST /Patient HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n").into_bytes(),
        // A body that never arrives: the server may wait, but must not fail.
        format!("POST /Patient HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"resourceType\"").into_bytes(),
    ];
    let mut failures = vec![];
    for req in raw_requests {
        let (status, text) = s.raw(req.clone()).await;
        if status >= 500 || text.contains("root:x:0") {
            failures.push(format!(
                "{:?} -> {status}: {text}",
                String::from_utf8_lossy(&req)
            ));
        }
    }
    assert_eq!(
        s.status_of("/metadata").await,
        200,
        "the server is still up"
    );
    assert_eq!(s.get_ok(&format!("/Patient/{id}")).await, seed);
    assert!(
        failures.is_empty(),
        "{} raw requests misbehaved:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
