//! The audit trail over HTTP: one hash-chained record for every request
//! (writes in their own transaction), served as AuditEvents to admin
//! clients, and `sp-hub audit verify` finding the first broken link.

mod common;

use common::*;
use serde_json::{json, Value};

/// Every AuditEvent of the trail, oldest first.
async fn audit_events(s: &Server) -> Vec<Value> {
    let mut out = vec![];
    let mut next = Some(s.url("/$audit?_count=500"));
    while let Some(url) = next {
        let page = s.get_ok(&url).await;
        out.extend(entries(&page).into_iter().map(|e| e["resource"].clone()));
        next = link(&page, "next");
    }
    out
}

fn path_of(e: &Value) -> String {
    e["entity"][0]["what"]["display"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn verify(s: &Server) -> (bool, String) {
    let out = tokio::process::Command::new(bin())
        .args(["audit", "verify", "--database-url", &s.database_url])
        .env_remove("SP_HUB_DATABASE_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn every_request_is_recorded_once_with_who_what_and_outcome(s: Server) {
    let created = s.create(&patient("9000000009")).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(s.status_of(&format!("/Patient/{id}")).await, 200);
    assert_eq!(s.status_of("/Patient/nope").await, 404);
    let bad = s
        .post_json("/Patient", &json!({"resourceType": "Patient", "nmae": []}))
        .await;
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(s.anonymous().status_of("/Patient").await, 401);
    let narrow = s
        .as_new_client(
            "narrow",
            "Organization/hub-operator",
            "admin",
            "system/Task.rs",
        )
        .await;
    assert_eq!(narrow.status_of("/Patient").await, 403);

    let events = audit_events(&s).await;
    let find = |path: &str, outcome: &str| {
        events
            .iter()
            .filter(|e| path_of(e) == path && e["outcome"] == outcome)
            .cloned()
            .collect::<Vec<_>>()
    };
    // The create: one record, made in its own transaction, naming the version.
    let creates = find("POST /Patient", "0");
    assert_eq!(creates.len(), 1, "{creates:?}");
    let c = &creates[0];
    assert_eq!(c["action"], "C");
    assert_eq!(c["subtype"][0]["code"], "create");
    assert_eq!(c["agent"][0]["who"]["identifier"]["value"], ADMIN_CLIENT);
    assert_eq!(c["agent"][1]["who"]["reference"], ADMIN_ORG);
    assert_eq!(
        c["entity"][1]["what"]["reference"],
        format!("Patient/{id}/_history/1")
    );
    // The read, the miss, the refused write, the anonymous and the forbidden.
    assert_eq!(find(&format!("GET /Patient/{id}"), "0").len(), 1);
    assert_eq!(find("GET /Patient/nope", "4")[0]["outcomeDesc"], "HTTP 404");
    assert_eq!(find("POST /Patient", "4")[0]["outcomeDesc"], "HTTP 400");
    let anon = find("GET /Patient", "4");
    assert!(
        anon.iter().any(|e| e["outcomeDesc"] == "HTTP 401"
            && e["agent"][0]["who"]["identifier"]["value"] == "-"),
        "{anon:?}"
    );
    assert!(
        anon.iter().any(|e| e["outcomeDesc"] == "HTTP 403"
            && e["agent"][0]["who"]["identifier"]["value"] == "narrow"),
        "{anon:?}"
    );
    // The token request of `narrow`, too.
    assert!(!find("POST /auth/token", "0").is_empty());
    // Each request id is the one the response carried.
    assert!(events.iter().all(|e| e["agent"][0]["altId"]
        .as_str()
        .is_some_and(|s| !s.is_empty())));
    // A chain: each record names the one before.
    let chain: Vec<(i64, String, String)> = events
        .iter()
        .map(|e| {
            let x = &e["extension"][0]["extension"];
            (
                x[0]["valueInteger"].as_i64().unwrap(),
                x[1]["valueString"].as_str().unwrap().to_string(),
                x[2]["valueString"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for w in chain.windows(2) {
        assert_eq!(w[1].0, w[0].0 + 1);
        assert_eq!(
            w[1].1, w[0].2,
            "record {} does not link to {}",
            w[1].0, w[0].0
        );
    }
    // Only admin clients read the trail.
    let gp = s
        .as_new_client("a-gp", "Organization/org-practice", "gp", "system/*.rs")
        .await;
    assert_eq!(gp.status_of("/$audit").await, 403);
}

async fn verify_finds_the_first_broken_link(s: Server) {
    for i in 0..5 {
        s.create(&patient(&format!("900000000{}", [9, 9, 9, 9, 9][i])))
            .await;
    }
    let (ok, out) = verify(&s).await;
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    // Someone with database access rewrites record 3's outcome.
    let sql = "UPDATE audit_log SET status = 299 WHERE seq = 3";
    let changed = match s.backend {
        Backend::Sqlite => std::process::Command::new("python3")
            .args(["-c", &format!("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute({sql:?}); c.commit()"), &s.database_url])
            .status()
            .unwrap()
            .success(),
        Backend::Postgres => std::process::Command::new("psql")
            .args([&s.database_url, "-c", sql])
            .status()
            .unwrap()
            .success(),
    };
    assert!(changed);
    let (ok, out) = verify(&s).await;
    assert!(!ok, "{out}");
    assert!(out.contains("broken at record 3"), "{out}");
}

/// Concurrent requests from many connections still make one chain.
async fn concurrent_requests_make_one_unbroken_chain(s: Server) {
    let mut tasks = vec![];
    for i in 0..24 {
        let s = s.with_token(&s.token);
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.create(&patient("9000000009")).await;
            } else {
                s.get("/Patient?_count=5").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, out) = verify(&s).await;
    assert!(ok, "{out}");
    assert!(audit_events(&s).await.len() >= 24);
}

/// Every write gets a Provenance in its own transaction: the versions it
/// made, the activity, who (the client) on behalf of which organisation.
async fn every_write_has_its_provenance(s: Server) {
    let gp = s
        .as_new_client(
            "gp-prov",
            "Organization/org-practice",
            "gp",
            "system/*.cruds",
        )
        .await;
    let prov_of = |target: String| {
        let s = &s;
        async move {
            let b = s
                .get_ok(&format!("/Provenance?target={}", enc(&target)))
                .await;
            entries(&b)
                .into_iter()
                .map(|e| e["resource"].clone())
                .collect::<Vec<_>>()
        }
    };
    // A create.
    let p = gp.create(&patient("9000000009")).await;
    let pid = p["id"].as_str().unwrap().to_string();
    let found = prov_of(format!("Patient/{pid}")).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let pr = &found[0];
    assert_eq!(
        pr["target"],
        json!([{"reference": format!("Patient/{pid}/_history/1")}])
    );
    assert_eq!(pr["activity"]["coding"][0]["code"], "CREATE");
    assert_eq!(pr["agent"][0]["who"]["identifier"]["value"], "gp-prov");
    assert_eq!(
        pr["agent"][0]["onBehalfOf"]["reference"],
        "Organization/org-practice"
    );
    assert!(pr["recorded"].is_string());
    // The client sees the Provenance of its own writes.
    assert_eq!(
        gp.status_of(&format!("/Provenance/{}", pr["id"].as_str().unwrap()))
            .await,
        200
    );

    // A transaction: one Provenance naming every version it made (the
    // referral, and the Task the hub adds for it).
    let mut sr = service_request(&pid, "REF-PROV-1");
    sr["requester"] = json!({"reference": "Organization/org-practice"});
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": sr, "request": {"method": "POST", "url": "ServiceRequest"}}]});
    let out: Value = gp.post_json("/", &b).await.json().await.unwrap();
    let loc = out["entry"][0]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let sid = loc
        .split('/')
        .nth(loc.split('/').position(|x| x == "ServiceRequest").unwrap() + 1)
        .unwrap()
        .to_string();
    let found = prov_of(format!("ServiceRequest/{sid}")).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let targets = found[0]["target"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert!(targets
        .iter()
        .any(|t| t["reference"].as_str().unwrap().starts_with("Task/")));

    // An update and a delete (as admin: trail resources are not deleted by
    // a GP).
    let mut p2 = p.clone();
    p2["active"] = json!(false);
    gp.update(&p2).await;
    s.delete(&format!("/Patient/{pid}")).await;
    let acts: Vec<String> = prov_of(format!("Patient/{pid}"))
        .await
        .iter()
        .map(|pr| {
            pr["activity"]["coding"][0]["code"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut acts = acts;
    acts.sort();
    assert_eq!(acts, ["CREATE", "DELETE", "UPDATE"]);

    // A refused write leaves none.
    let before = s.total("/Provenance").await;
    assert_eq!(
        gp.post_json("/Patient", &json!({"resourceType": "Patient", "nmae": []}))
            .await
            .status()
            .as_u16(),
        400
    );
    assert_eq!(s.total("/Provenance").await, before);
}

both!(
    every_write_has_its_provenance,
    every_request_is_recorded_once_with_who_what_and_outcome,
    verify_finds_the_first_broken_link,
    concurrent_requests_make_one_unbroken_chain,
);
