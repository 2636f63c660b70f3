//! FHIR Bulk Data export over HTTP (Bulk Data Access IG v2): the
//! asynchronous kick-off, status and cancel; manifests whose counts match
//! the API's searches; NDJSON files of the right type; `_type`, `_since`
//! and Group exports; organisation views; jobs private to their client and
//! answered by any replica; every bad request an OperationOutcome.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Kicks off an export at `path` (with `Prefer: respond-async`).
async fn kick_off(s: &Server, path: &str) -> reqwest::Response {
    s.send(
        s.req(Method::GET, path)
            .header("Prefer", "respond-async")
            .header("Accept", FHIR_JSON),
    )
    .await
}

/// Kicks off an export, asserts 202, returns the status URL.
async fn start(s: &Server, path: &str) -> String {
    let resp = kick_off(s, path).await;
    let location = header(&resp, "content-location");
    let body = expect_json(resp, 202).await;
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let location = location.expect("Content-Location on the 202");
    assert!(
        location.starts_with(&format!("{}/$export-status/", s.base)),
        "{location}"
    );
    location
}

/// Polls a status URL until it is 200; returns the manifest.
async fn finished(s: &Server, status_url: &str) -> Value {
    for _ in 0..300 {
        let resp = s.get(status_url).await;
        match resp.status().as_u16() {
            202 => {
                assert!(
                    header(&resp, "x-progress").is_some(),
                    "202 without X-Progress"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            200 => {
                assert!(content_type(&resp).starts_with("application/json"));
                return json(resp).await;
            }
            other => panic!("status {other}: {}", resp.text().await.unwrap_or_default()),
        }
    }
    panic!("the export did not finish within 15 s");
}

/// type → count from a manifest's output.
fn counts(manifest: &Value) -> BTreeMap<String, u64> {
    manifest["output"]
        .as_array()
        .expect("output")
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().to_string(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Downloads every output file; checks each line is one resource of the
/// file's type and the file has `count` lines. type → resources.
async fn download(s: &Server, manifest: &Value) -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for o in manifest["output"].as_array().unwrap() {
        let ty = o["type"].as_str().unwrap();
        let resp = s
            .send(
                s.req(Method::GET, o["url"].as_str().unwrap())
                    .header("Accept", "application/fhir+ndjson"),
            )
            .await;
        assert_eq!(resp.status(), 200, "{}", o["url"]);
        assert!(content_type(&resp).starts_with("application/fhir+ndjson"));
        let text = resp.text().await.unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{ty}: {e}: {l}")))
            .collect();
        assert!(text.is_empty() || text.ends_with('\n'));
        for r in &lines {
            assert_eq!(r["resourceType"], ty, "{r}");
        }
        let ids: BTreeSet<&str> = lines.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), lines.len(), "{ty}: a resource twice");
        assert_eq!(
            lines.len() as u64,
            o["count"].as_u64().unwrap(),
            "{ty}: lines vs count"
        );
        out.insert(ty.to_string(), lines);
    }
    out
}

fn ids(resources: &[Value]) -> BTreeSet<String> {
    resources
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every id a search finds, following `next`.
async fn search_ids(s: &Server, path: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for page in s.all_pages(path).await {
        out.extend(entry_ids(&page));
    }
    out
}

const TRAIL: &str = "Patient,ServiceRequest,Task,Encounter,Observation,Consent";

/// The IG's flow on the example PCN: 202 and X-Progress while counting,
/// then the manifest; counts equal the searches'; the files show the data
/// as at kick-off although it changes before they are read; another
/// replica answers the same job; files need the token.
async fn export_follows_the_async_flow_and_matches_search(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[("SP_HUB_EXPORT_PAUSE_MS", "150")]).await;
    let mut totals = BTreeMap::new();
    for t in TRAIL.split(',') {
        totals.insert(
            t.to_string(),
            s.total(&format!("/{t}?_summary=count")).await,
        );
    }
    let kick = format!("/$export?_type={TRAIL}&_outputFormat=application/fhir%2Bndjson");
    let status = start(&s, &kick).await;
    // Counting pauses before each type: the first poll finds it under way.
    let first = s.get(&status).await;
    assert_eq!(first.status(), 202);
    assert!(header(&first, "x-progress").is_some_and(|p| p.contains("of 6")));
    // Changed after the export's moment: neither shows in its files.
    let mut p1 = s.get_ok("/Patient/patient-001").await;
    p1["gender"] = json!("unknown");
    s.update(&p1).await;
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "Later"}]}))
        .await;

    let manifest = finished(&s, &status).await;
    assert_eq!(manifest["request"], s.url(&kick));
    assert_eq!(manifest["requiresAccessToken"], true);
    assert!(manifest["transactionTime"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(manifest["error"], json!([]));
    let want: BTreeMap<String, u64> = totals.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(counts(&manifest), want);
    let files = download(&s, &manifest).await;
    let patients = &files["Patient"];
    assert!(patients
        .iter()
        .all(|p| p["name"][0]["family"] != "Later" && p["meta"]["versionId"] == "1"));
    let before = patients.iter().find(|p| p["id"] == "patient-001").unwrap();
    assert_ne!(before["gender"], "unknown");
    assert_eq!(
        ids(&files["Task"]),
        search_ids(&s, "/Task?_count=100").await
    );

    // Any replica serves the job; the files need a token.
    let replica = s.replica().await;
    let on_replica = status.replace(&s.base, &replica.base);
    assert_eq!(counts(&finished(&replica, &on_replica).await), want);
    let file = manifest["output"][0]["url"].as_str().unwrap().to_string();
    assert_outcome(s.anonymous().get(&file).await, 401, "login").await;
}

/// `_type` and `_since` narrow an export; without `_type` every type the
/// token may read is exported.
async fn type_and_since_filter(s: Server) {
    let mut first = vec![];
    for family in ["A1", "A2"] {
        first.push(
            s.create(&json!({"resourceType": "Patient", "name": [{"family": family}]}))
                .await,
        );
    }
    s.create(&json!({"resourceType": "Organization", "name": "Org A"}))
        .await;
    let since = first[1]["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    let mut later = BTreeSet::new();
    for family in ["B1", "B2", "B3"] {
        let p = s
            .create(&json!({"resourceType": "Patient", "name": [{"family": family}]}))
            .await;
        later.insert(p["id"].as_str().unwrap().to_string());
    }
    let m = finished(
        &s,
        &start(
            &s,
            &format!("/$export?_type=Patient&_since={}", enc(&since)),
        )
        .await,
    )
    .await;
    assert_eq!(counts(&m), BTreeMap::from([("Patient".to_string(), 3)]));
    assert_eq!(ids(&download(&s, &m).await["Patient"]), later);

    let m = finished(&s, &start(&s, "/$export?_type=Organization,Patient").await).await;
    assert_eq!(
        counts(&m),
        BTreeMap::from([("Organization".to_string(), 1), ("Patient".to_string(), 5)])
    );
    // Every type: the Provenance of each write too.
    let m = finished(&s, &start(&s, "/$export").await).await;
    let all = counts(&m);
    assert_eq!(all["Patient"], 5);
    assert_eq!(
        all["Provenance"],
        s.total("/Provenance?_summary=count").await
    );
    assert_eq!(all.len(), 3, "{all:?}");
}

/// A file longer than a page (500) comes whole, each resource as it was
/// at kick-off: one deleted before is not in it, one deleted after is (an
/// admin's export: the version it had), one updated after is in its old
/// version, one created after is not.
async fn files_span_pages_and_keep_the_export_moment(s: Server) {
    for chunk in 0..3 {
        let entries: Vec<Value> = (0..400)
            .map(|i| {
                json!({"resource": {"resourceType": "Patient",
                                    "name": [{"family": format!("Page{chunk}-{i}")}]},
                       "request": {"method": "POST", "url": "Patient"}})
            })
            .collect();
        let resp = s
            .post_json(
                "/",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .await;
        assert_eq!(resp.status(), 200);
    }
    let all: Vec<String> = search_ids(&s, "/Patient?_count=1000")
        .await
        .into_iter()
        .collect();
    assert_eq!(all.len(), 1200);
    assert_eq!(
        s.delete(&format!("/Patient/{}", all[0])).await.status(),
        204
    );
    let status = start(&s, "/$export?_type=Patient").await;
    assert_eq!(
        s.delete(&format!("/Patient/{}", all[1])).await.status(),
        204
    );
    let mut changed = s.get_ok(&format!("/Patient/{}", all[2])).await;
    changed["gender"] = json!("other");
    s.update(&changed).await;
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "After"}]}))
        .await;

    let m = finished(&s, &status).await;
    assert_eq!(counts(&m)["Patient"], 1199);
    let patients = &download(&s, &m).await["Patient"];
    let got = ids(patients);
    assert_eq!(got, all[1..].iter().cloned().collect());
    let old = patients
        .iter()
        .find(|p| p["id"] == all[2].as_str())
        .unwrap();
    assert_eq!(old["meta"]["versionId"], "1");
    assert!(old.get("gender").is_none());
    // Now: the deletion and the update show.
    let m = finished(&s, &start(&s, "/$export?_type=Patient").await).await;
    assert_eq!(counts(&m)["Patient"], 1199);
}

/// A Group export holds the Group's patients and their trail records only.
async fn group_export_is_limited_to_its_members(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let members = ["patient-001", "patient-002"];
    let group = s
        .create(
            &json!({"resourceType": "Group", "type": "person", "actual": true,
            "member": [
                {"entity": {"reference": "Patient/patient-001"}},
                {"entity": {"reference": "Patient/patient-002"}},
                {"entity": {"reference": "Patient/patient-003"}, "inactive": true}]}),
        )
        .await;
    let gid = group["id"].as_str().unwrap();
    let m = finished(&s, &start(&s, &format!("/Group/{gid}/$export")).await).await;
    let files = download(&s, &m).await;
    assert_eq!(
        ids(&files["Patient"]),
        members.iter().map(|m| m.to_string()).collect()
    );
    let refs = "Patient/patient-001,Patient/patient-002";
    for (ty, param) in [
        ("ServiceRequest", "subject"),
        ("Task", "subject"),
        ("Encounter", "subject"),
        ("Observation", "subject"),
        ("Consent", "patient"),
    ] {
        let want = search_ids(&s, &format!("/{ty}?{param}={refs}&_count=100")).await;
        assert!(
            !want.is_empty() || !["ServiceRequest", "Task"].contains(&ty),
            "{ty}"
        );
        let got = files.get(ty).map(|f| ids(f)).unwrap_or_default();
        assert_eq!(got, want, "{ty}");
    }
    assert!(!files.contains_key("Organization"));
    // Only the compartment's types, and only a Group that exists.
    assert_outcome(
        kick_off(&s, &format!("/Group/{gid}/$export?_type=Organization")).await,
        400,
        "invalid",
    )
    .await;
    assert_outcome(
        kick_off(&s, "/Group/no-such-group/$export").await,
        404,
        "not-found",
    )
    .await;
}

/// A GP's and a VCS organisation's exports hold exactly what their own
/// searches find; a token's unreadable types are left out.
async fn organisation_exports_hold_only_their_view(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let all = "system/*.rs";
    let gp = s
        .as_new_client("gp-mill", "Organization/org-practice-mill-lane", "gp", all)
        .await;
    let vcs = s
        .as_new_client(
            "vcs-wellbeing",
            "Organization/org-vcs-wellbeing",
            "vcs",
            all,
        )
        .await;
    let everyone = search_ids(&s, "/ServiceRequest?_count=100").await;
    for (name, client) in [("gp", &gp), ("vcs", &vcs)] {
        let m = finished(
            client,
            &start(client, &format!("/$export?_type={TRAIL}")).await,
        )
        .await;
        let files = download(client, &m).await;
        for t in TRAIL.split(',') {
            let own = search_ids(client, &format!("/{t}?_count=100")).await;
            let got = files.get(t).map(|f| ids(f)).unwrap_or_default();
            assert_eq!(got, own, "{name}: {t}");
        }
        let seen = ids(&files["ServiceRequest"]);
        assert!(seen.len() < everyone.len(), "{name} sees every referral");
        if name == "gp" {
            // Castle Street's referral.
            assert!(everyone.contains("referral-002") && !seen.contains("referral-002"));
        } else {
            assert!(files["Patient"].iter().all(has_subsetted_tag));
        }
    }
    // A token that reads two types gets those two; asking only for others
    // is refused.
    let narrow = s
        .as_new_client(
            "vcs-narrow",
            "Organization/org-vcs-wellbeing",
            "vcs",
            "system/Task.rs system/Patient.rs",
        )
        .await;
    let resp = kick_off(&narrow, "/$export?_type=Patient,Observation").await;
    let status = header(&resp, "content-location").expect("Content-Location");
    let said = expect_json(resp, 202).await;
    assert!(diagnostics(&said).contains("Observation"), "{said}");
    let m = finished(&narrow, &status).await;
    let types: BTreeSet<String> = counts(&m).into_keys().collect();
    assert_eq!(types, BTreeSet::from(["Patient".into()]));
    let m = finished(&narrow, &start(&narrow, "/$export").await).await;
    let types: BTreeSet<String> = counts(&m).into_keys().collect();
    assert_eq!(types, BTreeSet::from(["Patient".into(), "Task".into()]));
    assert_outcome(
        kick_off(&narrow, "/$export?_type=Observation").await,
        403,
        "forbidden",
    )
    .await;
    // A file of a type the token may not read: 403 before anything else.
    let file = format!(
        "{}/Observation",
        status.replace("$export-status", "$export-file")
    );
    // (The job exists but has no Observation file; the scope check comes
    // first.)
    assert_outcome(narrow.get(&file).await, 403, "forbidden").await;
}

/// A job is its client's alone; DELETE cancels it and it is gone.
async fn jobs_are_private_and_cancellable(s: Server) {
    s.create(&json!({"resourceType": "Patient", "name": [{"family": "P"}]}))
        .await;
    let status = start(&s, "/$export?_type=Patient").await;
    let manifest = finished(&s, &status).await;
    let file = manifest["output"][0]["url"].as_str().unwrap().to_string();
    let other = s
        .as_new_client(
            "other-admin",
            "Organization/org-other",
            "admin",
            "system/*.*",
        )
        .await;
    assert_outcome(other.get(&status).await, 404, "not-found").await;
    assert_outcome(other.get(&file).await, 404, "not-found").await;
    assert_outcome(other.delete(&status).await, 404, "not-found").await;
    // Still there for its owner.
    assert_eq!(s.status_of(&file).await, 200);
    let resp = s.delete(&status).await;
    let said = expect_json(resp, 202).await;
    assert_eq!(said["resourceType"], "OperationOutcome");
    assert_outcome(s.get(&status).await, 404, "not-found").await;
    assert_outcome(s.get(&file).await, 404, "not-found").await;
    assert_outcome(s.delete(&status).await, 404, "not-found").await;
}

/// A client has at most five exports counting at once; a cancelled one
/// frees its place, and other clients are not held back.
async fn a_client_has_at_most_five_exports_counting(b: Backend) {
    let s = Server::start_with(b, &[], &[("SP_HUB_EXPORT_PAUSE_MS", "5000")]).await;
    let mut started = vec![];
    for _ in 0..5 {
        started.push(start(&s, "/$export?_type=Patient").await);
    }
    let resp = kick_off(&s, "/$export?_type=Patient").await;
    assert_eq!(header(&resp, "retry-after").as_deref(), Some("5"));
    assert_outcome(resp, 429, "throttled").await;
    let other = s
        .as_new_client("other", "Organization/org-other", "admin", "system/*.*")
        .await;
    start(&other, "/$export?_type=Patient").await;
    assert_eq!(s.delete(&started[0]).await.status(), 202);
    start(&s, "/$export?_type=Patient").await;
}

/// Runs one SQL statement on the server's database (as tests/audit.rs
/// does), to make a state HTTP cannot: a job whose replica stopped.
fn tamper(s: &Server, sql: &str) {
    let ok = match s.backend {
        Backend::Sqlite => std::process::Command::new("python3")
            .args([
                "-c",
                &format!(
                    "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute({sql:?}); c.commit()"
                ),
                &s.database_url,
            ])
            .status(),
        Backend::Postgres => std::process::Command::new("psql")
            .args([&s.database_url, "-q", "-c", sql])
            .status(),
    };
    assert!(ok.is_ok_and(|st| st.success()), "{sql}");
}

/// A job still counting whose lease ran out (its replica stopped) is taken
/// over by the next status request, on any replica, which counts only the
/// types not yet counted.
async fn a_stalled_job_is_taken_over(s: Server) {
    for r in [
        json!({"resourceType": "Patient", "name": [{"family": "One"}]}),
        json!({"resourceType": "Patient", "name": [{"family": "Two"}]}),
        json!({"resourceType": "Organization", "name": "Org"}),
    ] {
        s.create(&r).await;
    }
    let status = start(&s, "/$export?_type=Patient,Organization").await;
    finished(&s, &status).await;
    let id = status.rsplit('/').next().unwrap();
    // As if the replica had counted Patients (7, to tell it apart) and
    // stopped before Organizations.
    tamper(
        &s,
        &format!(
            "UPDATE export_jobs SET state = 'counting', counts = '{{\"Patient\": 7}}', lease_until = 0 WHERE id = '{id}'"
        ),
    );
    let replica = s.replica().await;
    let on_replica = status.replace(&s.base, &replica.base);
    let first = replica.get(&on_replica).await;
    assert_eq!(first.status(), 202);
    assert_eq!(
        header(&first, "x-progress").as_deref(),
        Some("counted 1 of 2 resource types")
    );
    let m = finished(&replica, &on_replica).await;
    assert_eq!(
        counts(&m),
        BTreeMap::from([("Organization".to_string(), 1), ("Patient".to_string(), 7)])
    );
}

/// Every malformed kick-off is a 4xx OperationOutcome.
async fn bad_requests_are_refused(s: Server) {
    let no_prefer = s.get("/$export").await;
    assert_outcome(no_prefer, 400, "invalid").await;
    for query in [
        "_outputFormat=text/csv",
        "_type=Nonsense",
        "_type=Patient,Nonsense",
        "_since=yesterday",
        "_since=2026-11-26",
        "_since=2026-11-26T10:00:00",
        "_typeFilter=Task%3Fstatus%3Drequested",
    ] {
        let resp = kick_off(&s, &format!("/$export?{query}")).await;
        let o = assert_outcome(resp, 400, "invalid").await;
        assert!(expression(&o).is_some(), "{query}: {o}");
    }
    for status in [
        "/$export-status/no-such-job",
        "/$export-file/no-such-job/Patient",
    ] {
        assert_outcome(s.get(status).await, 404, "not-found").await;
    }
    // The CapabilityStatement says the operation is there.
    let cs = s.get_ok("/metadata").await;
    assert!(cs["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "export"));
}

both_backends!(
    export_follows_the_async_flow_and_matches_search,
    group_export_is_limited_to_its_members,
    organisation_exports_hold_only_their_view,
    a_client_has_at_most_five_exports_counting,
);

both!(
    type_and_since_filter,
    files_span_pages_and_keep_the_export_moment,
    a_stalled_job_is_taken_over,
    jobs_are_private_and_cancellable,
    bad_requests_are_refused,
);
