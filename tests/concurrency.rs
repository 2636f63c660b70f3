//! Concurrent writers: If-Match is a real compare-and-swap, no update is
//! lost, and readers never see a half-written change.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

/// Sends `n` requests at once; `build(i)` makes the i-th. Returns
/// (status, body) per request, in order.
async fn at_once<F>(s: &Server, n: usize, build: F) -> Vec<(u16, Value)>
where
    F: Fn(&Client, usize) -> reqwest::RequestBuilder,
{
    // Built first, then spawned together: none runs before all are spawned
    // (the test runtime is single-threaded), so they reach the server at once.
    let mut handles = vec![];
    for i in 0..n {
        let rb = build(&s.client, i);
        handles.push(tokio::spawn(async move {
            let resp = rb.send().await.expect("request");
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }));
    }
    let mut out = vec![];
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn count(results: &[(u16, Value)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

fn statuses(results: &[(u16, Value)]) -> Vec<u16> {
    results.iter().map(|(s, _)| *s).collect()
}

both!(
    concurrent_updates_with_the_same_if_match_exactly_one_wins,
    concurrent_patches_with_the_same_if_match_exactly_one_wins,
    concurrent_updates_without_if_match_lose_nothing,
    concurrent_creates_get_distinct_ids,
    concurrent_update_as_create_of_one_id_creates_once,
    concurrent_conditional_creates_make_one_resource,
    concurrent_deletes_all_succeed,
    readers_never_see_a_half_written_update,
    organisations_claiming_one_pool_task_at_once_get_one_winner,
);

async fn concurrent_updates_with_the_same_if_match_exactly_one_wins(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap().to_string();
    for round in 1..=3u32 {
        let url = s.url(&format!("/Patient/{id}"));
        let p = p.clone();
        let results = at_once(&s, 8, |c, i| {
            let mut body = p.clone();
            body["name"][0]["text"] = json!(format!("round {round} writer {i}"));
            c.request(Method::PUT, &url)
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", format!("W/\"{round}\""))
                .body(body.to_string())
        })
        .await;
        assert_eq!(
            count(&results, 200),
            1,
            "round {round}: exactly one winner: {:?}",
            statuses(&results)
        );
        assert_eq!(
            count(&results, 412),
            7,
            "round {round}: the rest 412: {:?}",
            statuses(&results)
        );
        for (status, body) in &results {
            if *status == 412 {
                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                assert_eq!(body["issue"][0]["code"], "conflict", "{body}");
            }
        }
        let winner = &results.iter().find(|(s, _)| *s == 200).unwrap().1;
        let read = s.get_ok(&format!("/Patient/{id}")).await;
        assert_eq!(read["meta"]["versionId"], (round + 1).to_string());
        assert_eq!(
            read["name"][0]["text"], winner["name"][0]["text"],
            "the winner's content is stored"
        );
        assert_eq!(&read, winner);
    }
    assert_eq!(s.total(&format!("/Patient/{id}/_history")).await, 4);
}

async fn concurrent_patches_with_the_same_if_match_exactly_one_wins(s: Server) {
    let t = s.create(&task("sr-1", "p-1")).await;
    let id = t["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/Task/{id}"));
    let results = at_once(&s, 8, |c, i| {
        c.request(Method::PATCH, &url)
            .header("Content-Type", JSON_PATCH)
            .header("If-Match", "W/\"1\"")
            .body(json!([{"op": "replace", "path": "/businessStatus/text", "value": format!("triaged by {i}")}]).to_string())
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{:?}", statuses(&results));
    assert_eq!(count(&results, 412), 7, "{:?}", statuses(&results));
    let read = s.get_ok(&format!("/Task/{id}")).await;
    assert_eq!(read["meta"]["versionId"], "2");
}

async fn concurrent_updates_without_if_match_lose_nothing(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/Patient/{id}"));
    let results = at_once(&s, 10, |c, i| {
        let mut body = p.clone();
        body["name"][0]["text"] = json!(format!("writer {i}"));
        c.request(Method::PUT, &url)
            .header("Content-Type", FHIR_JSON)
            .body(body.to_string())
    })
    .await;
    for (status, body) in &results {
        assert!(
            *status == 200 || *status == 409,
            "each update succeeds or reports a conflict: {status} {body}"
        );
    }
    let ok = count(&results, 200);
    assert!(ok >= 1);
    let versions: BTreeSet<String> = results
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b["meta"]["versionId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        versions.len(),
        ok,
        "every successful update got its own version"
    );
    let read = s.get_ok(&format!("/Patient/{id}")).await;
    assert_eq!(
        read["meta"]["versionId"],
        (ok + 1).to_string(),
        "no lost or phantom versions"
    );
    let h = s
        .all_pages(&format!("/Patient/{id}/_history?_count=100"))
        .await;
    let hv: BTreeSet<String> = h
        .iter()
        .flat_map(entries)
        .map(|e| {
            e["resource"]["meta"]["versionId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: BTreeSet<String> = (1..=ok + 1).map(|v| v.to_string()).collect();
    assert_eq!(hv, expected);
}

async fn concurrent_creates_get_distinct_ids(s: Server) {
    let url = s.url("/ServiceRequest");
    let results = at_once(&s, 20, |c, i| {
        c.request(Method::POST, &url)
            .header("Content-Type", FHIR_JSON)
            .body(service_request("p1", &format!("REF-{i:04}")).to_string())
    })
    .await;
    assert_eq!(count(&results, 201), 20, "{:?}", statuses(&results));
    let ids: BTreeSet<String> = results
        .iter()
        .map(|(_, b)| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(s.total("/ServiceRequest").await, 20);
    // Each referral comes with the Task sp-hub adds for it.
    assert_eq!(s.total("/Task").await, 20);
    assert_eq!(s.versions_written().await, 40);
}

async fn concurrent_update_as_create_of_one_id_creates_once(s: Server) {
    let url = s.url("/Patient/gp-pt-1");
    let results = at_once(&s, 8, |c, i| {
        let mut body = patient("9434765919");
        body["id"] = json!("gp-pt-1");
        body["name"][0]["text"] = json!(format!("writer {i}"));
        c.request(Method::PUT, &url)
            .header("Content-Type", FHIR_JSON)
            .body(body.to_string())
    })
    .await;
    assert_eq!(
        count(&results, 201),
        1,
        "exactly one creates: {:?}",
        statuses(&results)
    );
    for (status, _) in &results {
        assert!([200, 201, 409].contains(status), "{:?}", statuses(&results));
    }
    let ok = count(&results, 200) + 1;
    let read = s.get_ok("/Patient/gp-pt-1").await;
    assert_eq!(read["meta"]["versionId"], ok.to_string());
    assert_eq!(s.total("/Patient/gp-pt-1/_history").await, ok as u64);
}

async fn concurrent_conditional_creates_make_one_resource(s: Server) {
    // Duplicate referrals from a retrying GP system must not become two.
    let url = s.url("/ServiceRequest");
    let results = at_once(&s, 8, |c, _| {
        c.request(Method::POST, &url)
            .header("Content-Type", FHIR_JSON)
            .header(
                "If-None-Exist",
                format!("identifier={REFERRAL_ID}|REF-RETRY-1"),
            )
            .body(service_request("p1", "REF-RETRY-1").to_string())
    })
    .await;
    for (status, body) in &results {
        assert!([200, 201, 409, 412].contains(status), "{status}: {body}");
    }
    assert_eq!(
        s.total(&format!(
            "/ServiceRequest?identifier={}",
            enc(&format!("{REFERRAL_ID}|REF-RETRY-1"))
        ))
        .await,
        1,
        "statuses {:?}",
        statuses(&results)
    );
    assert_eq!(count(&results, 201), 1, "{:?}", statuses(&results));
}

async fn concurrent_deletes_all_succeed(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let url = s.url(&format!("/Patient/{}", p["id"].as_str().unwrap()));
    let results = at_once(&s, 8, |c, _| c.request(Method::DELETE, &url)).await;
    assert_eq!(count(&results, 204), 8, "{:?}", statuses(&results));
    assert_eq!(
        s.client.get(&url).send().await.unwrap().status(),
        StatusCode::GONE
    );
}

async fn readers_never_see_a_half_written_update(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = p["id"].as_str().unwrap().to_string();
    let writer = {
        let client = s.client.clone();
        let url = s.url(&format!("/Patient/{id}"));
        let p = p.clone();
        tokio::spawn(async move {
            for rev in 1..=15 {
                let mut body = p.clone();
                body["name"][0]["text"] = json!(format!("rev {rev}"));
                let resp = client
                    .put(&url)
                    .header("Content-Type", FHIR_JSON)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
            }
        })
    };
    let mut readers = vec![];
    for _ in 0..4 {
        let client = s.client.clone();
        let read_url = s.url(&format!("/Patient/{id}"));
        let search_url = s.url(&format!(
            "/Patient?identifier={}",
            enc(&format!("{NHS_NUMBER}|9434765919"))
        ));
        readers.push(tokio::spawn(async move {
            let mut last = 0u32;
            for _ in 0..25 {
                let resp = client.get(&read_url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let etag = header(&resp, "etag").unwrap();
                let body: Value = resp.json().await.unwrap();
                let v: u32 = body["meta"]["versionId"].as_str().unwrap().parse().unwrap();
                assert_eq!(etag, format!("W/\"{v}\""), "ETag and body agree");
                assert!(v >= last, "versions never go backwards: {v} after {last}");
                if v > 1 {
                    assert_eq!(body["name"][0]["text"], format!("rev {}", v - 1));
                }
                last = v;
                let b: Value = client
                    .get(&search_url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    b["total"], 1,
                    "the resource is always findable while it changes: {b}"
                );
            }
        }));
    }
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        s.get_ok(&format!("/Patient/{id}")).await["meta"]["versionId"],
        "16"
    );
}

/// The open pool: a referral posted alone waits as an unowned requested
/// Task; a VCS organisation claims it by setting itself as owner and
/// accepting, with If-Match on the version it saw. Eight claim at once:
/// exactly one wins, the others get 412 and can see who did.
async fn organisations_claiming_one_pool_task_at_once_get_one_winner(s: Server) {
    let sr = s.create(&service_request("p1", "REF-POOL")).await;
    let pool = s
        .get_ok(&format!(
            "/Task?focus=ServiceRequest/{}&owner:missing=true&status=requested",
            sr["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(pool["total"], 1, "{pool}");
    let task = pool["entry"][0]["resource"].clone();
    let url = s.url(&format!("/Task/{}", task["id"].as_str().unwrap()));
    let results = at_once(&s, 8, |c, i| {
        let mut claim = task.clone();
        claim["owner"] = json!({"reference": format!("Organization/vcs-{i}")});
        claim["status"] = json!("accepted");
        c.request(Method::PUT, &url)
            .header("Content-Type", FHIR_JSON)
            .header("If-Match", "W/\"1\"")
            .body(claim.to_string())
    })
    .await;
    assert_eq!(count(&results, 200), 1, "{:?}", statuses(&results));
    assert_eq!(count(&results, 412), 7, "{:?}", statuses(&results));
    let winner = &results.iter().find(|(st, _)| *st == 200).unwrap().1;
    let now = s.get_ok(&url).await;
    assert_eq!(now["meta"]["versionId"], "2");
    assert_eq!(now["status"], "accepted");
    assert_eq!(now["owner"], winner["owner"]);
}

/// A server on a new SQLite file opens its connections several at once
/// just after the one that created the schema closed. Each must wait for
/// the locks of the others, not fail with "database is locked" and be
/// retried after a pause. (Before the busy timeout was set first, a few
/// starts in forty logged it.)
#[tokio::test]
async fn a_server_on_a_new_sqlite_file_opens_its_pool_without_lock_errors() {
    let s = Server::start(Backend::Sqlite).await;
    for i in 0..40 {
        let file = s.workdir().join(format!("new-{i}.db"));
        let other = s.serve_other(&file.to_string_lossy()).await;
        assert_eq!(other.status_of("/metadata").await, 200);
        let log = other.log();
        assert!(!log.contains("database is locked"), "{log}");
    }
}
