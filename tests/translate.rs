//! Codes and VCS records in their own shape, over HTTP on both databases:
//! `ConceptMap/$translate` (type and instance level, GET and POST, our maps
//! and one created through the API, every bad input), and
//! `Organization/{id}/$records` with the Riverside Community Wellbeing
//! mapping shipped in fhir-profiles/examples/ (rows out with only the
//! mapped fields, rows in through the write path, per-row reports, dry
//! run, another organisation's Tasks, the round trip).

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const MAPPING: &str = include_str!("../fhir-profiles/examples/vcs-wellbeing-record-mapping.json");
const CATEGORIES: &str = include_str!("../fhir-profiles/examples/vcs-wellbeing-categories.json");
const DEMO: &str = include_str!("../fhir-profiles/examples/demo-pcn.json");

const NEED_TO_SNOMED: &str = "https://sp-hub.example/fhir/ConceptMap/sp-need-to-snomed";
const SNOMED_TO_NEED: &str = "https://sp-hub.example/fhir/ConceptMap/snomed-to-sp-need";
const RIVERSIDE_MAP: &str =
    "https://riverside-wellbeing.example/fhir/ConceptMap/needs-to-categories";
const RIVERSIDE_CATEGORIES: &str = "https://riverside-wellbeing.example/categories";
const RECORDS: &str = "/Organization/org-vcs-wellbeing/$records";
const CASE_NUMBER: &str = "https://riverside-wellbeing.example/case-number";

fn parsed(text: &str) -> Value {
    serde_json::from_str(text).expect("example JSON")
}

/// The `match` parameters of a $translate answer, as
/// (equivalence, concept code or "", source).
fn matches(p: &Value) -> Vec<(String, String, String)> {
    p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "match")
        .map(|m| {
            let part = |n: &str| {
                m["part"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == n)
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            (
                part("equivalence")["valueCode"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                part("concept")["valueCoding"]["code"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                part("source")["valueUri"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn result(p: &Value) -> bool {
    p["parameter"][0]["name"] == "result" && p["parameter"][0]["valueBoolean"] == true
}

async fn translate(s: &Server, query: &str) -> Value {
    s.get_ok(&format!("/ConceptMap/$translate?{query}")).await
}

async fn translate_codes_through_our_maps_and_api_maps(s: Server) {
    // A hit: SNOMED CT loneliness to our need.
    let p = translate(
        &s,
        &format!(
            "url={}&system={}&code=267076002",
            enc(SNOMED_TO_NEED),
            enc(SNOMED)
        ),
    )
    .await;
    assert!(result(&p), "{p}");
    assert_eq!(
        matches(&p),
        vec![(
            "equivalent".into(),
            "loneliness".into(),
            SNOMED_TO_NEED.into()
        )]
    );
    assert_eq!(
        p["parameter"][1]["part"][1]["valueCoding"]["system"],
        SP_NEED
    );

    // A miss: no map knows the code.
    let p = translate(
        &s,
        &format!(
            "url={}&system={}&code=999999",
            enc(SNOMED_TO_NEED),
            enc(SNOMED)
        ),
    )
    .await;
    assert!(!result(&p));
    assert_eq!(p["parameter"][1]["name"], "message");
    assert!(matches(&p).is_empty());

    // Unmapped: the map says there is no match.
    let p = translate(
        &s,
        &format!(
            "url={}&system={}&code=mental-wellbeing",
            enc(NEED_TO_SNOMED),
            enc(SP_NEED)
        ),
    )
    .await;
    assert!(!result(&p));
    assert_eq!(
        matches(&p),
        vec![("unmatched".into(), "".into(), NEED_TO_SNOMED.into())]
    );

    // Reverse: a SNOMED CT code back to the need, equivalence read the
    // other way round (sp-need-to-snomed says housing is narrower).
    let p = translate(
        &s,
        &format!(
            "url={}&system={}&code=105531004&reverse=true",
            enc(NEED_TO_SNOMED),
            enc(SNOMED)
        ),
    )
    .await;
    assert!(result(&p));
    assert_eq!(
        matches(&p),
        vec![("wider".into(), "housing".into(), NEED_TO_SNOMED.into())]
    );

    // No url: every map that can answer, narrowed by target value set.
    let p = translate(
        &s,
        &format!(
            "system={}&code=81877007&target={}",
            enc(SNOMED),
            enc("https://sp-hub.example/fhir/ValueSet/sp-need")
        ),
    )
    .await;
    assert_eq!(
        matches(&p),
        vec![("equivalent".into(), "housing".into(), SNOMED_TO_NEED.into())]
    );

    // Instance level, GET and POST with a coding.
    let p = s
        .get_ok(&format!(
            "/ConceptMap/sp-need-to-snomed/$translate?system={}&code=loneliness",
            enc(SP_NEED)
        ))
        .await;
    assert_eq!(matches(&p)[0].1, "267076002");
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": SNOMED, "code": "733423003"}}]});
    let p = expect_json(
        s.post_json("/ConceptMap/snomed-to-sp-need/$translate", &body)
            .await,
        200,
    )
    .await;
    assert_eq!(matches(&p)[0].1, "food-poverty");

    // A ConceptMap created through the API, found by url and by id; a
    // SNOMED CT reason reaches the charity's own words through two maps.
    s.update(&parsed(CATEGORIES)).await;
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "url", "valueUri": RIVERSIDE_MAP},
        {"name": "system", "valueUri": SP_NEED},
        {"name": "code", "valueCode": "debt-money"}]});
    let p = expect_json(s.post_json("/ConceptMap/$translate", &body).await, 200).await;
    assert_eq!(
        matches(&p),
        vec![("wider".into(), "Money worries".into(), RIVERSIDE_MAP.into())]
    );
    let p = s
        .get_ok(&format!(
            "/ConceptMap/riverside-needs-to-categories/$translate?system={}&code={}&reverse=true",
            enc(RIVERSIDE_CATEGORIES),
            enc("Money worries")
        ))
        .await;
    let needs: BTreeSet<(String, String)> =
        matches(&p).into_iter().map(|(e, c, _)| (e, c)).collect();
    assert_eq!(
        needs,
        BTreeSet::from([
            ("narrower".into(), "benefits-welfare".into()),
            ("narrower".into(), "debt-money".into())
        ])
    );
    let need = translate(
        &s,
        &format!(
            "url={}&system={}&code=160932005",
            enc(SNOMED_TO_NEED),
            enc(SNOMED)
        ),
    )
    .await;
    assert_eq!(matches(&need)[0].1, "debt-money");

    // Every bad input: 400 naming the parameter, 404 for an unknown map.
    let bad = [
        ("/ConceptMap/$translate", "code"),
        ("/ConceptMap/$translate?code=267076002", "system"),
        ("/ConceptMap/$translate?coding=267076002", "coding"),
        (
            "/ConceptMap/$translate?system=a&code=1&reverse=maybe",
            "reverse",
        ),
        ("/ConceptMap/$translate?system=a&code=1&coding=a|1", "code"),
        ("/ConceptMap/snomed-to-sp-need/$translate", "code"),
    ];
    for (path, parameter) in bad {
        let o = assert_outcome(s.get(path).await, 400, "invalid").await;
        assert_eq!(expression(&o), Some(parameter), "{path}: {o}");
    }
    let not_parameters = json!({"resourceType": "Patient"});
    assert_outcome(
        s.post_json("/ConceptMap/$translate", &not_parameters).await,
        400,
        "invalid",
    )
    .await;
    let no_code = json!({"resourceType": "Parameters", "parameter": [
        {"name": "coding", "valueCoding": {"system": SNOMED}}]});
    let o = assert_outcome(
        s.post_json("/ConceptMap/$translate", &no_code).await,
        400,
        "invalid",
    )
    .await;
    assert_eq!(expression(&o), Some("coding"));
    let o = assert_outcome(
        s.get(&format!(
            "/ConceptMap/$translate?url={}&system=a&code=1",
            enc("https://nowhere.example/cm")
        ))
        .await,
        404,
        "not-found",
    )
    .await;
    assert!(diagnostics(&o).contains("nowhere.example"), "{o}");
    assert_outcome(
        s.get("/ConceptMap/no-such-map/$translate?system=a&code=1")
            .await,
        404,
        "not-found",
    )
    .await;
}

/// The demo PCN's Tasks that Riverside (the organisation or one of its
/// link workers' roles) owns, with their status.
fn riverside_tasks() -> Vec<(String, String)> {
    let demo = parsed(DEMO);
    let resources: Vec<&Value> = demo["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    let mut owners: BTreeSet<String> = resources
        .iter()
        .filter(|r| {
            r["resourceType"] == "PractitionerRole"
                && r["organization"]["reference"] == "Organization/org-vcs-wellbeing"
        })
        .map(|r| format!("PractitionerRole/{}", r["id"].as_str().unwrap()))
        .collect();
    owners.insert("Organization/org-vcs-wellbeing".into());
    let mut out: Vec<(String, String)> = resources
        .iter()
        .filter(|r| r["resourceType"] == "Task")
        .filter(|t| owners.contains(t["owner"]["reference"].as_str().unwrap_or("")))
        .map(|t| {
            (
                t["id"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The demo PCN and Riverside's client, with the mapping and category
/// map it wrote itself.
async fn riverside(s: &Server) -> Server {
    let vcs = s
        .as_new_client(
            "vcs-riverside",
            "Organization/org-vcs-wellbeing",
            "vcs",
            "system/*.cruds",
        )
        .await;
    vcs.update(&parsed(CATEGORIES)).await;
    vcs.update(&parsed(MAPPING)).await;
    vcs
}

async fn demo(b: Backend) -> Server {
    Server::start_with(b, &["--demo"], &[]).await
}

async fn rows_json(vcs: &Server, query: &str) -> Vec<Value> {
    let resp = vcs
        .get_accept(&format!("{RECORDS}{query}"), "application/json")
        .await;
    assert!(content_type(&resp).starts_with("application/json"));
    expect_json(resp, 200).await.as_array().unwrap().clone()
}

async fn post_rows(vcs: &Server, query: &str, content_type: &str, body: String) -> (u16, Value) {
    let resp = vcs
        .send_body(
            Method::POST,
            &format!("{RECORDS}{query}"),
            content_type,
            body,
        )
        .await;
    let status = resp.status().as_u16();
    (status, json(resp).await)
}

fn column_names() -> Vec<String> {
    let basic = parsed(MAPPING);
    let mapping: Value =
        serde_json::from_str(basic["extension"][0]["valueString"].as_str().unwrap()).unwrap();
    mapping["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["column"].as_str().unwrap().to_string())
        .collect()
}

async fn outbound_rows_hold_only_the_mapped_fields(b: Backend) {
    let s = demo(b).await;
    let vcs = riverside(&s).await;

    let resp = vcs.get_accept(RECORDS, "text/csv").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(content_type(&resp).starts_with("text/csv"));
    let csv = resp.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap().split(',').collect::<Vec<_>>(),
        column_names()
    );
    assert_eq!(lines.count(), riverside_tasks().len(), "{csv}");
    // Data minimisation: no NHS number, no phone, no address, no birth date.
    for absent in ["9990", "07700", "Meadow View", "1971-"] {
        assert!(!csv.contains(absent), "{absent} leaked into {csv}");
    }

    let rows = rows_json(&vcs, "").await;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["Hub ref"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = riverside_tasks().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, expected);
    for r in &rows {
        let keys: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, column_names());
    }
    let row = |id: &str| rows.iter().find(|r| r["Hub ref"] == id).unwrap().clone();
    let t23 = row("task-023");
    assert_eq!(t23["Stage"], "First chat done");
    assert_eq!(t23["Need"], "Work and learning");
    assert_eq!(t23["Referred"], "22/02/2026");
    assert_eq!(t23["Client"].as_str().map(|c| !c.is_empty()), Some(true));
    // A status word for the status alone when businessStatus has none.
    assert_eq!(row("task-024")["Stage"], "Working with");
    assert_eq!(row("task-016")["Stage"], "Not for us");

    let done = rows_json(&vcs, "?status=completed").await;
    let completed: Vec<String> = riverside_tasks()
        .into_iter()
        .filter(|(_, st)| st == "completed")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        done.iter()
            .map(|r| r["Hub ref"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        completed
    );

    // Another organisation's records: 404, as if absent; an organisation
    // without a mapping: 404 saying so.
    assert_outcome(
        vcs.get("/Organization/org-vcs-money-advice/$records").await,
        404,
        "not-found",
    )
    .await;
    let o = assert_outcome(
        s.get("/Organization/org-vcs-money-advice/$records").await,
        404,
        "not-found",
    )
    .await;
    assert!(diagnostics(&o).contains("record mapping"), "{o}");
    // Rows read Patients, referrals and the records of the work: a token
    // for Tasks alone may not read them that way (nor write them).
    let tasks_only = s
        .as_new_client(
            "vcs-riverside-tasks",
            "Organization/org-vcs-wellbeing",
            "vcs",
            "system/Task.rus",
        )
        .await;
    assert_outcome(tasks_only.get(RECORDS).await, 403, "forbidden").await;
    let resp = tasks_only
        .send_body(Method::POST, RECORDS, "application/json", "[]".to_string())
        .await;
    assert_outcome(resp, 403, "forbidden").await;

    // An admin may ask for any organisation's rows: the same ones.
    assert_eq!(
        expect_json(s.get_accept(RECORDS, "application/json").await, 200)
            .await
            .as_array()
            .unwrap()
            .len(),
        rows.len()
    );
}

fn csv_of(header: &[&str], rows: &[Vec<&str>]) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    let mut out = header
        .iter()
        .map(|h| quote(h))
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for r in rows {
        out += &(r.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",") + "\n");
    }
    out
}

const IN_HEADER: &[&str] = &[
    "Case No",
    "Hub ref",
    "Need",
    "Stage",
    "Last contact",
    "How",
    "Support while waiting",
    "Support date",
    "WEMWBS start",
    "WEMWBS start date",
];

async fn inbound_rows_apply_through_the_write_path(b: Backend) {
    let s = demo(b).await;
    let vcs = riverside(&s).await;
    let body = csv_of(
        IN_HEADER,
        &[
            // task-039: accepted → in-progress after a home visit.
            vec![
                "RCW-0039",
                "task-039",
                "",
                "First chat done",
                "05/03/2026",
                "Home visit",
                "",
                "",
                "",
                "",
            ],
            // task-036 (owned by the organisation: the mapping's link worker
            // records the holding work).
            vec![
                "RCW-0036",
                "task-036",
                "",
                "",
                "",
                "",
                "Listening ear",
                "06/03/2026",
                "",
                "",
            ],
            // task-024: a baseline SWEMWBS score.
            vec!["", "task-024", "", "", "", "", "", "", "18", "02/03/2026"],
        ],
    );
    let (status, report) = post_rows(&vcs, "", "text/csv", body).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"], 3);
    assert_eq!(report["dryRun"], false);

    let task = s.get_ok("/Task/task-039").await;
    assert_eq!(task["status"], "in-progress");
    assert_eq!(
        task["businessStatus"]["coding"][0]["code"],
        "first-contact-made"
    );
    assert!(task["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["system"] == CASE_NUMBER && i["value"] == "RCW-0039"));
    // The Provenance names the Task's new version, on behalf of Riverside.
    let version = task["meta"]["versionId"].as_str().unwrap();
    let prov = s
        .get_ok(&format!(
            "/Provenance?target={}",
            enc(&format!("Task/task-039/_history/{version}"))
        ))
        .await;
    let target = format!("Task/task-039/_history/{version}");
    let prov = &entries(&prov)
        .into_iter()
        .find(|e| {
            e["resource"]["target"]
                .as_array()
                .is_some_and(|t| t.iter().any(|r| r["reference"] == target.as_str()))
        })
        .unwrap_or_else(|| panic!("no Provenance names {target}: {prov}"))["resource"];
    assert_eq!(
        prov["agent"][0]["onBehalfOf"]["reference"], "Organization/org-vcs-wellbeing",
        "{prov}"
    );
    let written: Vec<String> = report["rows"][0]["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert!(written.contains(&format!("Task/task-039/_history/{version}")));

    // Each new record is there and meets its profile.
    for (type_, row) in [("Encounter", 0), ("Procedure", 1), ("Observation", 2)] {
        let w: Vec<&str> = report["rows"][row]["written"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| w.as_str())
            .filter(|w| w.starts_with(type_))
            .collect();
        assert_eq!(w.len(), 1, "{type_}: {report}");
        let id = w[0].split('/').nth(1).unwrap();
        let r = s.get_ok(&format!("/{type_}/{id}")).await;
        assert!(
            r["meta"]["profile"][0].as_str().unwrap().contains("/sp-"),
            "{r}"
        );
        let o = expect_json(
            s.send(s.req(Method::POST, &format!("/{type_}/{id}/$validate")))
                .await,
            200,
        )
        .await;
        assert_eq!(o["issue"][0]["severity"], "information", "{type_}: {o}");
        if type_ == "Encounter" {
            assert_eq!(r["type"][0]["coding"][0]["code"], "home-visit");
            assert_eq!(r["period"]["start"], "2026-03-05");
        }
        if type_ == "Procedure" {
            assert_eq!(
                r["performer"][0]["actor"]["reference"],
                "PractitionerRole/role-lw-3"
            );
        }
        if type_ == "Observation" {
            assert_eq!(r["valueInteger"], 18);
        }
    }
    // The rows come back out as they went in.
    let rows = rows_json(&vcs, "").await;
    let r39 = rows.iter().find(|r| r["Hub ref"] == "task-039").unwrap();
    assert_eq!(r39["Case No"], "RCW-0039");
    assert_eq!(r39["Last contact"], "05/03/2026");
    assert_eq!(r39["How"], "Home visit");
    let r24 = rows.iter().find(|r| r["Hub ref"] == "task-024").unwrap();
    assert_eq!(r24["WEMWBS start"], "18");
    assert_eq!(r24["WEMWBS start date"], "02/03/2026");
}

/// Every version the server holds (all types, Provenance included).
async fn all_versions(s: &Server) -> u64 {
    s.total("/_history?_summary=count").await
}

async fn bad_rows_are_reported_by_column_and_write_nothing(b: Backend) {
    let s = demo(b).await;
    let vcs = riverside(&s).await;
    let before = all_versions(&s).await;
    let bad = csv_of(
        IN_HEADER,
        &[
            vec!["", "task-039", "Astrology", "", "", "", "", "", "", ""],
            // completed → in-progress is not a legal change.
            vec!["", "task-002", "", "Working with", "", "", "", "", "", ""],
            // A good status change, but an impossible date: nothing of it.
            vec![
                "",
                "task-039",
                "",
                "First chat done",
                "31/02/2026",
                "",
                "",
                "",
                "",
                "",
            ],
            vec![
                "",
                "task-039",
                "",
                "Gone fishing",
                "",
                "Carrier pigeon",
                "",
                "",
                "",
                "",
            ],
            // Another organisation's Tasks: a sub-task Riverside can see
            // but does not own, and one it cannot see at all.
            vec![
                "",
                "task-003-money-advice",
                "",
                "Finished",
                "",
                "",
                "",
                "",
                "",
                "",
            ],
            vec!["", "task-001", "", "Finished", "", "", "", "", "", ""],
        ],
    );
    let (status, report) = post_rows(&vcs, "", "text/csv", bad).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["applied"], 0);
    assert_eq!(report["failed"], 6);
    let errors = |row: usize| -> Vec<(String, String)> {
        let r = &report["rows"][row];
        assert_eq!(r["applied"], false, "{r}");
        assert_eq!(r["row"], row + 1);
        r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e["row"], row + 1);
                (
                    e["column"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let e = errors(0);
    assert_eq!(e[0].0, "Need");
    assert!(e[0].1.contains("unknown category 'Astrology'"), "{e:?}");
    let e = errors(1);
    assert_eq!(e[0].0, "Stage");
    assert!(
        e[0].1.contains("completed") && e[0].1.contains("in-progress"),
        "{e:?}"
    );
    let e = errors(2);
    assert_eq!(e[0].0, "Last contact");
    assert!(
        e[0].1.contains("31/02/2026") && e[0].1.contains("DD/MM/YYYY"),
        "{e:?}"
    );
    let e = errors(3);
    let columns: Vec<&str> = e.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(columns, vec!["Stage", "How"]);
    for row in [4, 5] {
        let e = errors(row);
        assert_eq!(e[0].0, "Hub ref");
        assert!(e[0].1.contains("task-00"), "{e:?}");
    }
    assert_eq!(
        all_versions(&s).await,
        before,
        "a refused row wrote something"
    );
    assert_eq!(s.get_ok("/Task/task-039").await["status"], "accepted");

    // One good row among bad ones: 207, and only it is written.
    let mixed = csv_of(
        IN_HEADER,
        &[
            vec!["", "task-002", "", "Working with", "", "", "", "", "", ""],
            vec![
                "",
                "task-039",
                "",
                "First chat done",
                "",
                "",
                "",
                "",
                "",
                "",
            ],
        ],
    );
    let (status, report) = post_rows(&vcs, "", "text/csv", mixed).await;
    assert_eq!(status, 207, "{report}");
    assert_eq!(report["rows"][0]["applied"], false);
    assert_eq!(report["rows"][1]["applied"], true);
    assert_eq!(s.get_ok("/Task/task-039").await["status"], "in-progress");

    // Rows for another organisation's records: 404, nothing read.
    let (status, o) = post_rows(&vcs, "", "application/json", "[]".into()).await;
    assert_eq!(status, 200, "{o}");
    let resp = vcs
        .send_body(
            Method::POST,
            "/Organization/org-vcs-money-advice/$records",
            "application/json",
            json!([{"Hub ref": "task-027-money-advice", "Stage": "Finished"}]).to_string(),
        )
        .await;
    assert_outcome(resp, 404, "not-found").await;

    // A malformed body as a whole: 400; another media type: 415; a bad
    // dry-run flag: 400.
    for (ct, body) in [
        ("text/csv", "Hub ref,Stage\ntask-039,Finished,extra\n"),
        ("application/json", "{\"Hub ref\": \"task-039\"}"),
        ("application/json", "[{\"Hub ref\": [1]}]"),
        ("application/json", "not json"),
    ] {
        let resp = vcs
            .send_body(Method::POST, RECORDS, ct, body.to_string())
            .await;
        assert_outcome(resp, 400, "invalid").await;
    }
    let resp = vcs
        .send_body(Method::POST, RECORDS, "text/plain", "x".to_string())
        .await;
    assert_outcome(resp, 415, "not-supported").await;
    let resp = vcs
        .send_body(
            Method::POST,
            &format!("{RECORDS}?dry-run=perhaps"),
            "text/csv",
            "a\n".to_string(),
        )
        .await;
    let o = assert_outcome(resp, 400, "invalid").await;
    assert_eq!(expression(&o), Some("dry-run"));

    // A mapping that does not hold together: 422 naming the element.
    let mut broken = parsed(MAPPING);
    let text = broken["extension"][0]["valueString"]
        .as_str()
        .unwrap()
        .replace("\"status\": \"requested\"", "\"status\": \"pending\"");
    broken["extension"][0]["valueString"] = json!(text);
    vcs.update(&broken).await;
    let o = assert_outcome(vcs.get(RECORDS).await, 422, "processing").await;
    assert!(diagnostics(&o).contains("statuses[0].status"), "{o}");
}

async fn dry_run_reports_the_same_and_writes_nothing(b: Backend) {
    let s = demo(b).await;
    let vcs = riverside(&s).await;
    let rows = json!([
        {"Hub ref": "task-039", "Stage": "First chat done", "Last contact": "05/03/2026", "How": "Phone",
         "Need": "Housing"},
        {"Hub ref": "task-002", "Stage": "Working with"},
        {"Hub ref": "task-041", "Stage": "Taken on", "Case No": "RCW-0041"}
    ])
    .to_string();
    let before = all_versions(&s).await;
    let (status, rehearsal) =
        post_rows(&vcs, "?dry-run=true", "application/json", rows.clone()).await;
    assert_eq!(status, 207, "{rehearsal}");
    assert_eq!(rehearsal["dryRun"], true);
    assert_eq!(all_versions(&s).await, before, "a dry run wrote");
    assert_eq!(s.get_ok("/Task/task-039").await["status"], "accepted");

    let (status, real) = post_rows(&vcs, "", "application/json", rows).await;
    assert_eq!(status, 207, "{real}");
    assert_eq!(real["dryRun"], false);
    assert_eq!(
        real["rows"], rehearsal["rows"],
        "the dry run said otherwise"
    );
    assert!(all_versions(&s).await > before);
    assert_eq!(s.get_ok("/Task/task-041").await["status"], "accepted");
}

async fn round_trip_fhir_flat_fhir_preserves_every_mapped_field(b: Backend) {
    let s = demo(b).await;
    let vcs = riverside(&s).await;
    // Give some Tasks a contact, holding work and both scores first.
    let setup = json!([
        {"Hub ref": "task-039", "Stage": "Plan agreed", "Case No": "RCW-1", "Last contact": "05/03/2026",
         "How": "Video call", "WEMWBS start": "15", "WEMWBS start date": "05/03/2026"},
        {"Hub ref": "task-036", "Support while waiting": "Welfare check", "Support date": "07/03/2026",
         "WEMWBS start": "12", "WEMWBS start date": "01/03/2026",
         "WEMWBS end": "21", "WEMWBS end date": "01/06/2026"}
    ]);
    let (status, report) = post_rows(&vcs, "", "application/json", setup.to_string()).await;
    assert_eq!(status, 200, "{report}");

    let flat = rows_json(&vcs, "").await;
    let versions = all_versions(&s).await;
    // JSON back in: every row applies and nothing changes.
    let (status, report) = post_rows(
        &vcs,
        "",
        "application/json",
        Value::Array(flat.clone()).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    for r in report["rows"].as_array().unwrap() {
        assert_eq!(r["applied"], true, "{r}");
        assert_eq!(r["written"], json!([]), "{r}");
    }
    assert_eq!(all_versions(&s).await, versions);
    assert_eq!(rows_json(&vcs, "").await, flat);
    // CSV the same way.
    let csv = vcs
        .get_accept(RECORDS, "text/csv")
        .await
        .text()
        .await
        .unwrap();
    let (status, report) = post_rows(&vcs, "", "text/csv", csv).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(all_versions(&s).await, versions);

    let row = |id: &str| flat.iter().find(|r| r["Hub ref"] == id).unwrap().clone();
    let r36 = row("task-036");
    assert_eq!(r36["Support while waiting"], "Welfare check");
    assert_eq!(r36["Support date"], "07/03/2026");
    assert_eq!(r36["WEMWBS start"], "12");
    assert_eq!(r36["WEMWBS end"], "21");
    assert_eq!(r36["WEMWBS end date"], "01/06/2026");
    let r39 = row("task-039");
    assert_eq!(r39["Stage"], "Plan agreed");
    assert_eq!(r39["Case No"], "RCW-1");
    assert_eq!(r39["How"], "Video call");

    // Flat → FHIR → flat after a change: the new word is the Task's state.
    let mut changed = r39.clone();
    changed["Stage"] = json!("Finished");
    let (status, report) =
        post_rows(&vcs, "", "application/json", json!([changed]).to_string()).await;
    assert_eq!(status, 200, "{report}");
    let task = s.get_ok("/Task/task-039").await;
    assert_eq!(task["status"], "completed");
    assert_eq!(task["businessStatus"]["coding"][0]["code"], "closed");
    assert_eq!(
        rows_json(&vcs, "")
            .await
            .iter()
            .find(|r| r["Hub ref"] == "task-039")
            .unwrap()["Stage"],
        "Finished"
    );
}

/// A GP system codes the reason in SNOMED CT only: the hub adds the need
/// our map gives beside it, on a single create and in a transaction alike;
/// a code the map cannot place is refused, naming the reason.
async fn snomed_coded_referrals_get_our_needs_as_they_arrive(s: Server) {
    let snomed_only = |code: &str, id: &str| {
        let mut sr = service_request("example", id);
        sr["reasonCode"] = json!([{"coding": [{"system": SNOMED, "code": code}],
                                   "text": "recently bereaved"}]);
        sr
    };
    // 105441003: bereavement in our snomed-to-sp-need map.
    let created = s.create(&snomed_only("105441003", "SNOMED-1")).await;
    let codings = created["reasonCode"][0]["coding"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(codings[0]["system"], SNOMED, "the GP's code stays first");
    assert_eq!(codings[1]["system"], SP_NEED);
    assert_eq!(codings[1]["code"], "bereavement");
    assert_eq!(created["reasonCode"][0]["text"], "recently bereaved");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        s.total(&format!(
            "/ServiceRequest?_id={id}&reason-code={SP_NEED}|bereavement"
        ))
        .await,
        1,
        "found by our need"
    );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": snomed_only("105441003", "SNOMED-2"),
         "request": {"method": "POST", "url": "ServiceRequest"}}]});
    expect_json(s.post_json("/", &bundle).await, 200).await;
    let found = s
        .get_ok(&format!(
            "/ServiceRequest?identifier={REFERRAL_ID}|SNOMED-2"
        ))
        .await;
    assert_eq!(
        found["entry"][0]["resource"]["reasonCode"][0]["coding"][1]["code"],
        "bereavement"
    );
    // A SNOMED CT code the map does not hold: no need, so the profile
    // refuses it, naming the reason.
    let resp = s
        .post_json("/ServiceRequest", &snomed_only("999999999", "SNOMED-3"))
        .await;
    let oo = assert_outcome_any(resp, 422, &["invariant", "processing"]).await;
    assert!(
        oo["issue"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["expression"][0]
                .as_str()
                .is_some_and(|e| e.starts_with("ServiceRequest.reasonCode"))),
        "{oo}"
    );
}

both!(
    translate_codes_through_our_maps_and_api_maps,
    snomed_coded_referrals_get_our_needs_as_they_arrive
);
both_backends!(
    outbound_rows_hold_only_the_mapped_fields,
    inbound_rows_apply_through_the_write_path,
    bad_rows_are_reported_by_column_and_write_nothing,
    dry_run_reports_the_same_and_writes_nothing,
    round_trip_fhir_flat_fhir_preserves_every_mapped_field,
);
