//! Reliability under load, on both databases, bounded in time so it runs
//! in CI: retried referral submissions are stored once, writes the server
//! acknowledged survive `kill -9` and no transaction is left half-written,
//! and 100 If-Match updates of one Task version have exactly one winner.
//! (tests/concurrency.rs has the same races at 8 writers, for every write
//! interaction; this file runs them at the scale.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

/// Referrals in the idempotency test; each is sent twice.
const SUBMISSIONS: usize = 2000;
/// Concurrent clients sending them.
const CLIENTS: usize = 16;

/// The load needs no rate limit in the way (4,000 requests from one client
/// are within a minute's default allowance, but the counter is a write per
/// request that would only slow the test down).
const NO_RATE_LIMIT: &[&str] = &["--rate-limit", "0"];

fn referral_id(n: usize) -> String {
    format!("REF-IDEM-{n:05}")
}

/// What one copy of a submission got back: the HTTP (or, in a Bundle, the
/// entry's) status and the referral's id.
#[derive(Debug)]
struct Answer {
    submission: usize,
    status: u16,
    id: String,
}

/// Sends copy `copy` (0 or 1) of referral `n`. Half of the referrals go
/// first as `POST /ServiceRequest` with `If-None-Exist` and are retried as a
/// transaction Bundle entry with `ifNoneExist`, the other half the other way
/// round, so both conditional creates race each other as well as themselves.
async fn submit(s: &Server, n: usize, copy: usize) -> Answer {
    let rid = referral_id(n);
    let criteria = format!("identifier={REFERRAL_ID}|{rid}");
    let sr = service_request(&format!("p-idem-{}", n % 97), &rid);
    if (n + copy).is_multiple_of(2) {
        let resp = s
            .send(
                s.req(Method::POST, "/ServiceRequest")
                    .header("Content-Type", FHIR_JSON)
                    .header("If-None-Exist", &criteria)
                    .body(sr.to_string()),
            )
            .await;
        let status = resp.status().as_u16();
        let location = header(&resp, "location").unwrap_or_default();
        let text = resp.text().await.unwrap_or_default();
        assert!(
            status == 200 || status == 201,
            "{rid} copy {copy}: POST If-None-Exist answered {status}: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let id = body["id"].as_str().map(String::from).unwrap_or_else(|| {
            id_from_location(&location)
                .unwrap_or_else(|| panic!("{rid}: no id in body or Location {location:?}: {text}"))
        });
        Answer {
            submission: n,
            status,
            id,
        }
    } else {
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{
                "fullUrl": "urn:uuid:6f1c2b5e-0d7a-4c38-9a51-3e2f8b7d9c10",
                "resource": sr,
                "request": {"method": "POST", "url": "ServiceRequest", "ifNoneExist": criteria}
            }]
        });
        let out = expect_json(s.post_json("/", &bundle).await, 200).await;
        let entry = &out["entry"][0];
        let status = entry["response"]["status"].as_str().unwrap_or("");
        let status: u16 = status
            .get(..3)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{rid} copy {copy}: entry status {status:?}: {out}"));
        assert!(
            status == 200 || status == 201,
            "{rid} copy {copy}: transaction entry answered {status}: {out}"
        );
        let id = entry["resource"]["id"]
            .as_str()
            .map(String::from)
            .or_else(|| id_from_location(entry["response"]["location"].as_str().unwrap_or("")))
            .unwrap_or_else(|| panic!("{rid}: no id in the entry: {out}"));
        Answer {
            submission: n,
            status,
            id,
        }
    }
}

/// `…ServiceRequest/{id}/_history/{v}` or `…ServiceRequest/{id}` → id.
fn id_from_location(location: &str) -> Option<String> {
    let rest = location.split("ServiceRequest/").nth(1)?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// 2,000 GP referrals from 16 concurrent clients, every one sent twice (the
/// two copies one after the other in the queue, so usually in flight
/// together on two clients): each referral is created exactly once (one
/// 201, and the retry answered 200 with the same resource), and afterwards
/// there are exactly 2,000 referrals and 2,000 Tasks, one for each.
async fn referrals_sent_twice_by_16_clients_are_stored_exactly_once(b: Backend) {
    let s = Server::start_with(b, NO_RATE_LIMIT, &[]).await;
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = vec![];
    for _ in 0..CLIENTS {
        // A handle of its own: its own connection pool, like another client.
        let c = s.with_token(&s.token);
        let next = next.clone();
        clients.push(tokio::spawn(async move {
            let mut answers = vec![];
            loop {
                let job = next.fetch_add(1, Ordering::Relaxed);
                if job >= 2 * SUBMISSIONS {
                    return answers;
                }
                answers.push(submit(&c, job / 2, job % 2).await);
            }
        }));
    }
    let mut by_submission: BTreeMap<usize, Vec<Answer>> = BTreeMap::new();
    for c in clients {
        for a in c.await.expect("a client task panicked") {
            by_submission.entry(a.submission).or_default().push(a);
        }
    }
    let load = started.elapsed();
    assert_eq!(by_submission.len(), SUBMISSIONS);
    let mut ids = BTreeSet::new();
    for (n, answers) in &by_submission {
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 201],
            "{}: one copy creates, the retry finds it: {answers:?}",
            referral_id(*n)
        );
        assert_eq!(
            answers[0].id,
            answers[1].id,
            "{}: both copies name the same referral",
            referral_id(*n)
        );
        ids.insert(answers[0].id.clone());
    }
    assert_eq!(ids.len(), SUBMISSIONS, "distinct referrals");
    assert_eq!(
        s.total("/ServiceRequest?_summary=count").await,
        SUBMISSIONS as u64,
        "referrals stored"
    );
    assert_eq!(
        s.total("/Task?_summary=count").await,
        SUBMISSIONS as u64,
        "Tasks stored"
    );
    // One Task for each referral: none missing, none twice.
    let mut focus = BTreeMap::<String, usize>::new();
    for page in s.all_pages("/Task?_count=1000").await {
        for e in entries(&page) {
            let r = e["resource"]["focus"]["reference"].as_str().unwrap_or("");
            *focus
                .entry(r.trim_start_matches("ServiceRequest/").to_string())
                .or_default() += 1;
        }
    }
    let twice: Vec<_> = focus.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "referrals with more than one Task: {twice:?}"
    );
    assert_eq!(
        focus.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "the Tasks' referrals are exactly the referrals created"
    );
    eprintln!(
        "{b:?}: {} submissions x2 from {CLIENTS} clients in {load:.1?}; checked in {:.1?}",
        SUBMISSIONS,
        started.elapsed() - load
    );
}

/// One acknowledged write: the resource, its version, and for single
/// writes the body the server answered with.
#[derive(Debug, Clone)]
struct Ack {
    res_type: String,
    id: String,
    version: u32,
    body: Value,
}

/// Writers keep going until the server dies under them.
const WRITERS: usize = 8;
/// Acknowledged writes before the kill.
const KILL_AFTER: usize = 600;

fn version_of(v: &Value) -> u32 {
    v["meta"]["versionId"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no meta.versionId: {v}"))
}

/// One writer's loop: a GP submission (transaction Bundle: Patient,
/// referral, Task), then the Task accepted and started with If-Match.
/// Every 2xx is recorded once its whole body has arrived; the loop ends at
/// the first request that gets no answer (the server was killed). An
/// answer other than 2xx from the living server is returned as an error.
async fn write_until_killed(
    s: Server,
    writer: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
    acked: Arc<AtomicUsize>,
) -> Result<(), String> {
    let record = |list: Vec<Ack>| {
        acked.fetch_add(list.len(), Ordering::SeqCst);
        acks.lock().unwrap().extend(list);
    };
    for i in 0.. {
        let rid = format!("REF-CRASH-{writer}-{i}");
        let nhs = format!("crash-{writer}-{i}");
        let mut pt = patient("9434765919");
        pt["identifier"] = json!([{"system": "urn:test", "value": nhs}]);
        let mut sr = service_request("x", &rid);
        sr["subject"] = json!({"reference": "urn:uuid:0b6f3a52-5f7e-4a41-9d0e-2c3b7e1a9f01"});
        let mut t = task("x", "x");
        t["focus"] = json!({"reference": "urn:uuid:0b6f3a52-5f7e-4a41-9d0e-2c3b7e1a9f02"});
        t["for"] = json!({"reference": "urn:uuid:0b6f3a52-5f7e-4a41-9d0e-2c3b7e1a9f01"});
        t["identifier"][0]["value"] = json!(format!("task-{rid}"));
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0b6f3a52-5f7e-4a41-9d0e-2c3b7e1a9f01", "resource": pt,
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:test|{nhs}")}},
            {"fullUrl": "urn:uuid:0b6f3a52-5f7e-4a41-9d0e-2c3b7e1a9f02", "resource": sr,
             "request": {"method": "POST", "url": "ServiceRequest"}},
            {"resource": t, "request": {"method": "POST", "url": "Task"}}
        ]});
        let Some((status, out)) = send(&s, Method::POST, "/", None, &bundle).await else {
            return Ok(());
        };
        if status != 200 {
            return Err(format!("transaction answered {status}: {out}"));
        }
        let written: Vec<Ack> = entries(&out)
            .iter()
            .map(|e| Ack {
                res_type: e["resource"]["resourceType"].as_str().unwrap().to_string(),
                id: e["resource"]["id"].as_str().unwrap().to_string(),
                version: version_of(&e["resource"]),
                body: e["resource"].clone(),
            })
            .collect();
        let mut task = written[2].body.clone();
        record(written);
        for (status, v) in [("accepted", 1), ("in-progress", 2)] {
            task["status"] = json!(status);
            let path = format!("/Task/{}", task["id"].as_str().unwrap());
            let Some((code, body)) = send(&s, Method::PUT, &path, Some(v), &task).await else {
                return Ok(());
            };
            if code != 200 {
                return Err(format!("PUT {path} ({status}) answered {code}: {body}"));
            }
            record(vec![Ack {
                res_type: "Task".into(),
                id: body["id"].as_str().unwrap().to_string(),
                version: version_of(&body),
                body: body.clone(),
            }]);
            task = body;
        }
    }
    Ok(())
}

/// Sends a JSON body; `None` when no whole answer came back.
async fn send(
    s: &Server,
    method: Method,
    path: &str,
    if_match: Option<u32>,
    body: &Value,
) -> Option<(u16, Value)> {
    let mut rb = s
        .req(method, path)
        .header("Content-Type", FHIR_JSON)
        .body(body.to_string());
    if let Some(v) = if_match {
        rb = rb.header("If-Match", format!("W/\"{v}\""));
    }
    let resp = rb.send().await.ok()?;
    let status = resp.status().as_u16();
    let text = resp.text().await.ok()?;
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Every version in system history, as `Type/id` → versions.
async fn all_versions(s: &Server) -> BTreeMap<String, BTreeSet<u32>> {
    let mut out = BTreeMap::<String, BTreeSet<u32>>::new();
    for page in s.all_pages("/_history?_count=1000").await {
        for e in entries(&page) {
            // A deletion's entry has no resource; its request names it.
            let (key, v) = match e["resource"]["id"].as_str() {
                Some(id) => (
                    format!("{}/{id}", e["resource"]["resourceType"].as_str().unwrap()),
                    version_of(&e["resource"]),
                ),
                None => continue,
            };
            assert!(
                out.entry(key.clone()).or_default().insert(v),
                "{key} version {v} appears twice in history"
            );
        }
    }
    out
}

/// Under write load from 8 clients, the server is killed with SIGKILL, then
/// started again on the same database. Every write it had acknowledged is
/// there at its exact version with the content it answered with; and
/// nothing is half-written: every current resource has its history row,
/// every version 1..n of each resource exists, every version (Task ones
/// included) is named by a Provenance, each referral has its Task, and the
/// audit chain verifies. The restarted server takes writes again.
async fn acknowledged_writes_survive_kill_9_and_nothing_is_half_written(b: Backend) {
    let s = Server::start_with(b, NO_RATE_LIMIT, &[]).await;
    let started = Instant::now();
    let acks = Arc::new(Mutex::new(Vec::<Ack>::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(write_until_killed(
                s.with_token(&s.token),
                w,
                acks.clone(),
                acked.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} writes acknowledged in 60 s; server log:\n{}",
            acked.load(Ordering::SeqCst),
            s.log()
        );
        assert!(
            writers.iter().all(|w| !w.is_finished()),
            "a writer stopped before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-9", &s.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -9 failed");
    for w in writers {
        w.await.expect("writer panicked").expect("a write failed");
    }
    let acks = acks.lock().unwrap().clone();
    let load = started.elapsed();

    let s = s.restart().await;
    // 1. Every acknowledged write, at its exact version, as answered.
    for a in &acks {
        let path = format!("/{}/{}/_history/{}", a.res_type, a.id, a.version);
        assert_eq!(
            s.get_ok(&path).await,
            a.body,
            "{path}: the stored version differs from the one acknowledged"
        );
    }
    // 2. Nothing half-written.
    let versions = all_versions(&s).await;
    for (key, vs) in &versions {
        let max = *vs.iter().next_back().unwrap();
        assert_eq!(
            vs.iter().copied().collect::<Vec<_>>(),
            (1..=max).collect::<Vec<_>>(),
            "{key}: versions with a gap"
        );
    }
    for a in &acks {
        let key = format!("{}/{}", a.res_type, a.id);
        assert!(
            versions.get(&key).is_some_and(|v| v.contains(&a.version)),
            "{key} version {} is not in system history",
            a.version
        );
    }
    let mut referrals = BTreeSet::new();
    let mut task_focus = BTreeMap::<String, usize>::new();
    for t in ["Patient", "ServiceRequest", "Task"] {
        for page in s.all_pages(&format!("/{t}?_count=1000")).await {
            for e in entries(&page) {
                let r = &e["resource"];
                let key = format!("{t}/{}", r["id"].as_str().unwrap());
                assert!(
                    versions
                        .get(&key)
                        .is_some_and(|v| v.contains(&version_of(r))),
                    "{key}: current version {} has no history row",
                    version_of(r)
                );
                match t {
                    "ServiceRequest" => {
                        referrals.insert(key);
                    }
                    "Task" => {
                        let f = r["focus"]["reference"].as_str().unwrap_or("").to_string();
                        *task_focus.entry(f).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        task_focus.keys().cloned().collect::<BTreeSet<_>>(),
        referrals,
        "each referral has its Task and each Task its referral"
    );
    assert!(
        task_focus.values().all(|n| *n == 1),
        "one Task a referral: {task_focus:?}"
    );
    let mut provenance_targets = BTreeSet::new();
    for page in s.all_pages("/Provenance?_count=1000").await {
        for e in entries(&page) {
            for t in e["resource"]["target"].as_array().into_iter().flatten() {
                provenance_targets.insert(t["reference"].as_str().unwrap_or("").to_string());
            }
        }
    }
    for (key, vs) in &versions {
        if key.starts_with("Provenance/") {
            continue;
        }
        for v in vs {
            assert!(
                provenance_targets.contains(&format!("{key}/_history/{v}")),
                "{key} version {v} has no Provenance"
            );
        }
    }
    let out = tokio::process::Command::new(bin())
        .args(["audit", "verify", "--database-url", &s.database_url])
        .env_remove("SP_HUB_DATABASE_URL")
        .output()
        .await
        .expect("run sp-hub audit verify");
    assert!(
        out.status.success(),
        "the audit chain does not verify after the kill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 3. The restarted server carries on from where the data is.
    let last = acks
        .iter()
        .rev()
        .find(|a| a.res_type == "Task")
        .expect("a Task was acknowledged");
    let current = s.get_ok(&format!("/Task/{}", last.id)).await;
    let mut next = current.clone();
    next["note"] = json!([{"text": "after the restart"}]);
    let (code, body) = send(
        &s,
        Method::PUT,
        &format!("/Task/{}", last.id),
        Some(version_of(&current)),
        &next,
    )
    .await
    .expect("the restarted server answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(version_of(&body), version_of(&current) + 1);
    eprintln!(
        "{b:?}: {} writes acknowledged before kill -9 ({load:.1?}); {} resources checked in {:.1?}",
        acks.len(),
        versions.len(),
        started.elapsed() - load
    );
}

/// Concurrent If-Match updates of one version.
const RACERS: usize = 100;

/// 100 clients update the same Task version at once, three rounds (the
/// first claims the open-pool Task and accepts it, the others change its
/// note): each round exactly
/// one 200 and 99 412s with an OperationOutcome; the winner's body is what
/// is stored; history is versions 1..4 with no gap and each has its
/// Provenance.
async fn hundred_if_match_updates_of_one_task_version_have_one_winner(s: Server) {
    let sr = s.create(&service_request("p-race", "REF-RACE")).await;
    let sid = sr["id"].as_str().unwrap();
    let found = s.get_ok(&format!("/Task?focus=ServiceRequest/{sid}")).await;
    assert_eq!(found["total"], 1, "the referral's Task: {found}");
    let mut current = found["entry"][0]["resource"].clone();
    let id = current["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/Task/{id}"));
    for round in 1..=3u32 {
        let mut handles = vec![];
        for i in 0..RACERS {
            let mut body = current.clone();
            // Round 1 is 100 organisations claiming the pool Task.
            body["status"] = json!("accepted");
            if round == 1 {
                body["owner"] = json!({"reference": format!("Organization/vcs-{i}")});
            }
            body["note"] = json!([{"text": format!("round {round} writer {i}")}]);
            let rb = s
                .client
                .request(Method::PUT, &url)
                .header("Content-Type", FHIR_JSON)
                .header("If-Match", format!("W/\"{round}\""))
                .body(body.to_string());
            // Spawned together on the single-threaded test runtime: none
            // is sent before all are ready to go.
            handles.push(tokio::spawn(async move {
                let resp = rb.send().await.expect("request");
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                (
                    status,
                    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                )
            }));
        }
        let mut results = vec![];
        for h in handles {
            results.push(h.await.unwrap());
        }
        let statuses: BTreeMap<u16, usize> = results.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.0).or_default() += 1;
            m
        });
        assert_eq!(
            statuses,
            BTreeMap::from([(200, 1), (412, RACERS - 1)]),
            "round {round}; first answer: {}",
            results[0].1
        );
        for (status, body) in &results {
            if *status == 412 {
                assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
                assert_eq!(body["issue"][0]["code"], "conflict", "{body}");
            }
        }
        let winner = results.into_iter().find(|r| r.0 == 200).unwrap().1;
        assert_eq!(version_of(&winner), round + 1);
        current = s.get_ok(&format!("/Task/{id}")).await;
        assert_eq!(
            current, winner,
            "round {round}: the winner's version is stored"
        );
    }
    let history: Vec<u32> = s
        .all_pages(&format!("/Task/{id}/_history?_count=1000"))
        .await
        .iter()
        .flat_map(entries)
        .map(|e| version_of(&e["resource"]))
        .collect();
    assert_eq!(
        sorted(history.iter().map(u32::to_string).collect()),
        ["1", "2", "3", "4"],
        "history has every version once, no gaps"
    );
    // Provenance targets name versions; the search matches the resource.
    let provenances = s.get_ok(&format!("/Provenance?target=Task/{id}")).await;
    let mut named: Vec<String> = entries(&provenances)
        .iter()
        .flat_map(|e| {
            e["resource"]["target"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t["reference"].as_str().map(String::from))
        .filter(|r| r.starts_with(&format!("Task/{id}/")))
        .collect();
    named.sort();
    assert_eq!(
        named,
        (1..=4)
            .map(|v| format!("Task/{id}/_history/{v}"))
            .collect::<Vec<_>>(),
        "each version has exactly one Provenance"
    );
}

both_backends!(
    referrals_sent_twice_by_16_clients_are_stored_exactly_once,
    acknowledged_writes_survive_kill_9_and_nothing_is_half_written,
);

both!(hundred_if_match_updates_of_one_task_version_have_one_winner);
