//! Content negotiation (JSON, XML, Accept, _format), Prefer, _pretty,
//! _summary and _elements.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const PATIENT_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<Patient xmlns="http://hl7.org/fhir">
  <identifier>
    <system value="https://fhir.nhs.uk/Id/nhs-number"/>
    <value value="9434765919"/>
  </identifier>
  <active value="true"/>
  <name>
    <use value="official"/>
    <family value="Okafor"/>
    <given value="Grace"/>
    <given value="Adaeze"/>
  </name>
  <gender value="female"/>
  <birthDate value="1948-03-14"/>
  <address>
    <line value="12 Mill Lane"/>
    <city value="Leeds"/>
    <postalCode value="LS6 2AB"/>
  </address>
</Patient>
"#;

fn patient_xml_as_json() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": NHS_NUMBER, "value": "9434765919"}],
        "active": true,
        "name": [{"use": "official", "family": "Okafor", "given": ["Grace", "Adaeze"]}],
        "gender": "female",
        "birthDate": "1948-03-14",
        "address": [{"line": ["12 Mill Lane"], "city": "Leeds", "postalCode": "LS6 2AB"}]
    })
}

/// A referral that exercises the corners of the JSON/XML mapping: narrative,
/// extensions (also on primitives), contained resources, decimals.
fn rich_referral() -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "text": {
            "status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Referral to <b>social prescribing</b></p></div>"
        },
        "contained": [{
            "resourceType": "Practitioner", "id": "gp",
            "name": [{"family": "Shah", "given": ["Amara"], "prefix": ["Dr"]}]
        }],
        "extension": [{
            "url": "https://fhir.example.org/StructureDefinition/referral-urgency-score",
            "valueDecimal": 2.75
        }],
        "identifier": [{"system": REFERRAL_ID, "value": "REF-XML-1"}],
        "status": "active",
        "intent": "order",
        "code": {"coding": [{"system": SNOMED, "code": "871731000000106",
                             "display": "Referral to social prescribing service"}]},
        "subject": {"reference": "Patient/p1", "display": "Grace Okafor"},
        "authoredOn": "2024-05-01T09:30:00+01:00",
        "_authoredOn": {"extension": [{
            "url": "https://fhir.example.org/StructureDefinition/entered-by",
            "valueString": "reception"
        }]},
        "requester": {"reference": "#gp"},
        "reasonCode": [{"coding": [{"system": SP_NEED, "code": "loneliness"}]}],
        "quantityQuantity": {"value": 6, "unit": "sessions"},
        "note": [{"text": "Line one\nLine two with <angle> & \"quotes\""}]
    })
}

async fn text_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let ct = content_type(&resp);
    (status, ct, resp.text().await.unwrap())
}

fn assert_patient_xml(text: &str, id: &str) {
    assert!(
        text.contains("<Patient xmlns=\"http://hl7.org/fhir\">"),
        "XML root should be <Patient xmlns=\"http://hl7.org/fhir\">: {text}"
    );
    assert!(text.contains(&format!("<id value=\"{id}\"/>")), "{text}");
    assert!(text.contains("<family value=\"Okafor\"/>"), "{text}");
    assert!(!text.trim_start().starts_with('{'), "{text}");
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn key_set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

both!(
    default_response_is_fhir_json,
    accept_application_json_gets_application_json,
    xml_by_accept_header_and_by_format_parameter,
    format_parameter_overrides_accept,
    accept_quality_values_are_respected,
    search_and_history_bundles_in_xml,
    xml_create_reads_back_as_the_same_json,
    json_survives_a_round_trip_through_xml,
    pretty_output_is_indented,
    prefer_return_minimal_gives_an_empty_body,
    prefer_return_representation_gives_the_resource,
    prefer_return_operation_outcome_gives_an_outcome,
    summary_true_keeps_only_summary_elements,
    summary_false_returns_everything,
    summary_text_keeps_text_id_meta_and_mandatory_elements,
    summary_data_drops_only_the_narrative,
    summary_applies_to_search_entries,
    elements_keeps_only_the_named_elements,
    content_type_parameters_are_accepted_on_writes,
    xml_response_to_a_json_create_when_asked,
);

async fn default_response_is_fhir_json(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for accept in [
        None,
        Some("*/*"),
        Some("application/fhir+json"),
        Some("application/fhir+json; fhirVersion=4.0"),
        Some("application/*"),
    ] {
        let mut rb = s.req(Method::GET, &format!("/Patient/{id}"));
        if let Some(a) = accept {
            rb = rb.header("Accept", a);
        }
        let resp = s.send(rb).await;
        assert_eq!(resp.status(), 200, "Accept {accept:?}");
        let ct = content_type(&resp);
        assert!(
            ct.starts_with("application/fhir+json"),
            "Accept {accept:?}: Content-Type {ct}"
        );
        assert_eq!(json(resp).await, p);
    }
    let resp = s.get("/Patient").await;
    assert!(content_type(&resp).starts_with("application/fhir+json"));
    let resp = s.get("/_history").await;
    assert!(content_type(&resp).starts_with("application/fhir+json"));
}

async fn accept_application_json_gets_application_json(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    for path in [
        format!("/Patient/{id}"),
        "/Patient".to_string(),
        "/metadata".to_string(),
    ] {
        let resp = s.get_accept(&path, "application/json").await;
        assert_eq!(resp.status(), 200);
        let ct = content_type(&resp);
        assert!(
            ct.starts_with("application/json"),
            "{path}: Content-Type {ct}"
        );
        json(resp).await;
    }
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(patient("9000000009").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert!(content_type(&resp).starts_with("application/json"));
}

async fn xml_by_accept_header_and_by_format_parameter(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let path = format!("/Patient/{id}");
    for accept in ["application/fhir+xml", "application/xml", "text/xml"] {
        let resp = s.get_accept(&path, accept).await;
        assert_eq!(etag(&resp), "W/\"1\"");
        let (status, ct, text) = text_of(resp).await;
        assert_eq!(status, 200, "Accept {accept}");
        assert!(ct.contains("xml"), "Accept {accept}: Content-Type {ct}");
        assert_patient_xml(&text, id);
    }
    for format in ["xml", "application/fhir+xml"] {
        let (status, ct, text) =
            text_of(s.get(&format!("{path}?_format={}", enc(format))).await).await;
        assert_eq!(status, 200, "_format={format}");
        assert!(
            ct.starts_with("application/fhir+xml"),
            "_format={format}: {ct}"
        );
        assert_patient_xml(&text, id);
    }
    let (_, ct, text) = text_of(s.get_accept(&path, "application/fhir+xml").await).await;
    assert!(ct.starts_with("application/fhir+xml"), "{ct}");
    assert_patient_xml(&text, id);
}

async fn format_parameter_overrides_accept(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let (_, ct, text) = text_of(
        s.get_accept(&format!("/Patient/{id}?_format=xml"), FHIR_JSON)
            .await,
    )
    .await;
    assert!(ct.starts_with("application/fhir+xml"), "{ct}");
    assert_patient_xml(&text, id);
    for format in ["json", "application/fhir+json"] {
        let resp = s
            .get_accept(&format!("/Patient/{id}?_format={}", enc(format)), FHIR_XML)
            .await;
        assert!(
            content_type(&resp).starts_with("application/fhir+json"),
            "_format={format}"
        );
        assert_eq!(json(resp).await, p);
    }
    // _format also overrides an Accept the server cannot satisfy.
    let resp = s
        .get_accept(&format!("/Patient/{id}?_format=json"), "text/plain")
        .await;
    assert_eq!(resp.status(), 200);
}

async fn accept_quality_values_are_respected(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let resp = s
        .get_accept(
            &format!("/Patient/{id}"),
            "application/fhir+xml;q=0.5, application/fhir+json;q=0.9",
        )
        .await;
    assert!(
        content_type(&resp).starts_with("application/fhir+json"),
        "{}",
        content_type(&resp)
    );
    let resp = s
        .get_accept(
            &format!("/Patient/{id}"),
            "application/fhir+json;q=0.2, application/fhir+xml",
        )
        .await;
    assert!(
        content_type(&resp).starts_with("application/fhir+xml"),
        "{}",
        content_type(&resp)
    );
    let resp = s
        .get_accept(
            &format!("/Patient/{id}"),
            "text/plain, application/fhir+json;q=0.1",
        )
        .await;
    assert_eq!(resp.status(), 200, "one acceptable type is enough");
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let resp = s.get_accept(&format!("/Patient/{id}"), browser).await;
    assert_eq!(resp.status(), 200, "a browser's Accept gets a FHIR format");
}

async fn search_and_history_bundles_in_xml(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let (status, ct, text) = text_of(s.get("/Patient?_format=xml").await).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/fhir+xml"));
    assert!(
        text.contains("<Bundle xmlns=\"http://hl7.org/fhir\">"),
        "{text}"
    );
    assert!(text.contains("<type value=\"searchset\"/>"), "{text}");
    assert!(
        text.contains("<Patient xmlns=\"http://hl7.org/fhir\">") || text.contains("<Patient>"),
        "{text}"
    );
    let (status, _, text) = text_of(
        s.get_accept(&format!("/Patient/{id}/_history"), FHIR_XML)
            .await,
    )
    .await;
    assert_eq!(status, 200);
    assert!(text.contains("<type value=\"history\"/>"), "{text}");
}

async fn xml_create_reads_back_as_the_same_json(s: Server) {
    for ct in [
        "application/fhir+xml",
        "application/xml",
        "text/xml",
        "application/fhir+xml; charset=utf-8",
    ] {
        let resp = s.send_body(Method::POST, "/Patient", ct, PATIENT_XML).await;
        let status = resp.status();
        let location = header(&resp, "location");
        let text = resp.text().await.unwrap();
        assert_eq!(status, 201, "POST as {ct}: {text}");
        let location = location.expect("Location");
        let id = location
            .split("/Patient/")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let read = s.get_ok(&format!("/Patient/{id}")).await;
        assert_eq!(content(&read), patient_xml_as_json(), "POST as {ct}");
        assert_eq!(read["meta"]["versionId"], "1");
    }
    // Update in XML.
    let xml = PATIENT_XML
        .replace(
            "<Patient xmlns=\"http://hl7.org/fhir\">",
            "<Patient xmlns=\"http://hl7.org/fhir\"><id value=\"xml-1\"/>",
        )
        .replace("<active value=\"true\"/>", "<active value=\"false\"/>");
    let resp = s
        .send_body(Method::PUT, "/Patient/xml-1", FHIR_XML, xml)
        .await;
    assert_eq!(resp.status(), 201);
    let read = s.get_ok("/Patient/xml-1").await;
    assert_eq!(read["active"], false);
    assert_eq!(read["id"], "xml-1");
}

async fn json_survives_a_round_trip_through_xml(s: Server) {
    let original = rich_referral();
    let created = s.create(&original).await;
    assert_eq!(content(&created), original, "JSON is stored as given");
    let id = created["id"].as_str().unwrap();
    let (status, _, xml) = text_of(s.get(&format!("/ServiceRequest/{id}?_format=xml")).await).await;
    assert_eq!(status, 200);
    assert!(
        xml.contains("<ServiceRequest xmlns=\"http://hl7.org/fhir\">"),
        "{xml}"
    );
    // Post the XML back as a new resource; id and meta are ignored on create.
    let resp = s
        .send_body(Method::POST, "/ServiceRequest", FHIR_XML, xml.clone())
        .await;
    let status = resp.status();
    let location = header(&resp, "location");
    let body = resp.text().await.unwrap();
    assert_eq!(
        status, 201,
        "re-posting the server's own XML: {body}\n{xml}"
    );
    let location = location.unwrap();
    let id2 = location
        .split("/ServiceRequest/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_ne!(id2, id);
    let back = s.get_ok(&format!("/ServiceRequest/{id2}")).await;
    assert_eq!(
        content(&back),
        original,
        "JSON -> XML -> JSON keeps everything"
    );
}

async fn pretty_output_is_indented(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let (_, ct, pretty) = text_of(s.get(&format!("/Patient/{id}?_pretty=true")).await).await;
    assert!(ct.starts_with("application/fhir+json"));
    assert!(
        pretty.contains("\n  \""),
        "_pretty=true should indent: {pretty}"
    );
    assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), p);
    let (_, _, plain) = text_of(s.get(&format!("/Patient/{id}?_pretty=false")).await).await;
    assert_eq!(serde_json::from_str::<Value>(&plain).unwrap(), p);
    let (_, _, bundle) = text_of(s.get("/Patient?_pretty=true").await).await;
    assert!(bundle.contains("\n  \""), "{bundle}");
}

async fn prefer_return_minimal_gives_an_empty_body(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header("Prefer", "return=minimal")
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let location = header(&resp, "location").expect("Location with return=minimal");
    assert_eq!(etag(&resp), "W/\"1\"");
    assert!(
        resp.bytes().await.unwrap().is_empty(),
        "return=minimal: no body"
    );
    let id = location
        .split("/Patient/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    let mut changed = read.clone();
    changed["active"] = json!(false);
    let resp = s
        .send(
            s.req(Method::PUT, &format!("/Patient/{id}"))
                .header("Content-Type", FHIR_JSON)
                .header("Prefer", "return=minimal")
                .body(changed.to_string()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(etag(&resp), "W/\"2\"");
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = s
        .send(
            s.req(Method::PATCH, &format!("/Patient/{id}"))
                .header("Content-Type", JSON_PATCH)
                .header("Prefer", "return=minimal")
                .body(json!([{"op": "replace", "path": "/active", "value": true}]).to_string()),
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(
        s.get_ok(&format!("/Patient/{id}")).await["meta"]["versionId"],
        "3"
    );
}

async fn prefer_return_representation_gives_the_resource(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header("Prefer", "return=representation")
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body = json(resp).await;
    assert_eq!(content(&body), patient("9434765919"));
    assert_eq!(body["meta"]["versionId"], "1");
}

async fn prefer_return_operation_outcome_gives_an_outcome(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header("Prefer", "return=OperationOutcome")
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert!(header(&resp, "location").is_some());
    assert!(content_type(&resp).starts_with("application/fhir+json"));
    let body = json(resp).await;
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["severity"], "information", "{body}");
    assert_eq!(s.total("/Patient").await, 1);
}

async fn summary_true_keeps_only_summary_elements(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let sum = s.get_ok(&format!("/Patient/{id}?_summary=true")).await;
    for kept in [
        "id",
        "identifier",
        "active",
        "name",
        "telecom",
        "gender",
        "birthDate",
        "address",
    ] {
        assert_eq!(sum[kept], p[kept], "_summary=true keeps {kept}");
    }
    assert_eq!(sum["meta"]["lastUpdated"], p["meta"]["lastUpdated"]);
    for dropped in ["photo", "contact", "maritalStatus", "communication"] {
        assert!(
            sum.get(dropped).is_none(),
            "_summary=true drops {dropped}: {sum}"
        );
    }
    assert!(
        has_subsetted_tag(&sum),
        "_summary=true marks the resource SUBSETTED: {sum}"
    );
    assert_eq!(sum["meta"]["versionId"], "1");
    // The stored resource is untouched.
    let full = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(full, p);
    assert!(!has_subsetted_tag(&full));
}

async fn summary_false_returns_everything(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let full = s.get_ok(&format!("/Patient/{id}?_summary=false")).await;
    assert_eq!(full, p);
    assert!(!has_subsetted_tag(&full));
}

async fn summary_text_keeps_text_id_meta_and_mandatory_elements(s: Server) {
    let sr = s.create(&service_request("p1", "REF-0001")).await;
    let id = sr["id"].as_str().unwrap();
    let t = s
        .get_ok(&format!("/ServiceRequest/{id}?_summary=text"))
        .await;
    assert_eq!(t["text"], sr["text"]);
    assert_eq!(t["id"], sr["id"]);
    // Top-level mandatory elements of ServiceRequest: status, intent, subject.
    for kept in ["status", "intent", "subject"] {
        assert_eq!(
            t[kept], sr[kept],
            "_summary=text keeps mandatory {kept}: {t}"
        );
    }
    for dropped in [
        "code",
        "note",
        "category",
        "authoredOn",
        "identifier",
        "requester",
        "reasonCode",
    ] {
        assert!(
            t.get(dropped).is_none(),
            "_summary=text drops {dropped}: {t}"
        );
    }
    assert!(has_subsetted_tag(&t), "{t}");
}

async fn summary_data_drops_only_the_narrative(s: Server) {
    let sr = s.create(&service_request("p1", "REF-0001")).await;
    let id = sr["id"].as_str().unwrap();
    let d = s
        .get_ok(&format!("/ServiceRequest/{id}?_summary=data"))
        .await;
    assert!(d.get("text").is_none(), "{d}");
    let mut expected = content(&sr);
    expected.as_object_mut().unwrap().remove("text");
    assert_eq!(content(&d), expected);
    assert!(has_subsetted_tag(&d), "{d}");
}

async fn summary_applies_to_search_entries(s: Server) {
    s.create(&patient("9434765919")).await;
    s.create(&patient("9000000009")).await;
    let b = s.get_ok("/Patient?_summary=true").await;
    assert_eq!(b["total"], 2);
    let e = entries(&b);
    assert_eq!(e.len(), 2);
    for entry in e {
        let r = &entry["resource"];
        assert!(
            r.get("photo").is_none() && r.get("contact").is_none(),
            "{r}"
        );
        assert!(r["name"].is_array() && r["identifier"].is_array(), "{r}");
        assert!(has_subsetted_tag(r), "{r}");
    }
}

async fn elements_keeps_only_the_named_elements(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap();
    let e = s
        .get_ok(&format!("/Patient/{id}?_elements=identifier"))
        .await;
    assert_eq!(
        keys(&e),
        key_set(&["resourceType", "id", "meta", "identifier"]),
        "{e}"
    );
    assert_eq!(e["identifier"], p["identifier"]);
    assert!(has_subsetted_tag(&e), "{e}");
    assert_eq!(e["meta"]["versionId"], "1");
    let e2 = s
        .get_ok(&format!(
            "/Patient/{id}?_elements={}",
            enc("identifier,name")
        ))
        .await;
    assert_eq!(
        keys(&e2),
        key_set(&["resourceType", "id", "meta", "identifier", "name"]),
        "{e2}"
    );
    assert_eq!(e2["name"], p["name"]);
    let b = s.get_ok("/Patient?_elements=identifier").await;
    let r = &entries(&b)[0]["resource"];
    assert_eq!(
        keys(r),
        key_set(&["resourceType", "id", "meta", "identifier"]),
        "{r}"
    );
    assert!(has_subsetted_tag(r));
    assert_eq!(
        s.get_ok(&format!("/Patient/{id}")).await,
        p,
        "stored resource untouched"
    );
}

async fn content_type_parameters_are_accepted_on_writes(s: Server) {
    let body = patient("9434765919").to_string();
    for ct in [
        "application/fhir+json; charset=utf-8",
        "application/fhir+json;fhirVersion=4.0",
        "application/json",
        "application/json; charset=UTF-8",
    ] {
        let resp = s
            .send_body(Method::POST, "/Patient", ct, body.clone())
            .await;
        assert_eq!(resp.status(), 201, "Content-Type {ct}");
    }
    assert_eq!(s.total("/Patient").await, 4);
}

async fn xml_response_to_a_json_create_when_asked(s: Server) {
    let resp = s
        .send(
            s.req(Method::POST, "/Patient")
                .header("Content-Type", FHIR_JSON)
                .header("Accept", FHIR_XML)
                .body(patient("9434765919").to_string()),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let location = header(&resp, "location").unwrap();
    let id = location
        .split("/Patient/")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let (_, ct, text) = text_of(resp).await;
    assert!(ct.starts_with("application/fhir+xml"), "{ct}");
    assert_patient_xml(&text, &id);
}
