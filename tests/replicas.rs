//! Two sp-hub processes on one database behave as one server: an If-Match
//! race across them has one winner, a client assertion used on one is
//! refused on the other, a token from one works on the other, and a paging
//! link from one is followed on the other (shared rate limits: tests/auth.rs);
//! and a SQLite backup taken while serving restores.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

async fn two_replicas_behave_as_one(b: Backend) {
    let a = Server::start(b).await;
    let other = a.replica().await;
    assert_ne!(a.base, other.base);

    // A token from one replica's endpoint is accepted by the other.
    let created = a.create(&patient("9000000009")).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(other.status_of(&format!("/Patient/{id}")).await, 200);

    // If-Match race: both replicas update version 1 at once; one wins.
    let mut body = created.clone();
    body["active"] = json!(false);
    let put = |s: &Server| {
        s.req(Method::PUT, &format!("/Patient/{id}"))
            .header("Content-Type", FHIR_JSON)
            .header("If-Match", "W/\"1\"")
            .body(body.to_string())
    };
    let (x, y) = tokio::join!(a.send(put(&a)), other.send(put(&other)));
    let mut statuses = vec![x.status().as_u16(), y.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, vec![200, 412]);
    assert_eq!(a.total(&format!("/Patient/{id}/_history")).await, 2);

    // A client assertion used at one replica is refused at the other.
    let c = a
        .register(
            "replayer",
            "Organization/hub-operator",
            "admin",
            "system/*.rs",
        )
        .await;
    // Both replicas listen on their own port; the assertion names the one
    // it is sent to.
    let claims = c.claims(&a.token_url());
    let assertion = c.sign(&claims);
    let (status, _) = a.request_token(&assertion, "system/*.rs").await;
    assert_eq!(status, 200);
    let mut replayed = claims.clone();
    replayed["aud"] = json!(other.token_url());
    let (status, body) = other.request_token(&c.sign(&replayed), "system/*.rs").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );

    // A paging link from one replica is followed on the other.
    for n in ["9000000017", "9000000025", "9000000033"] {
        a.create(&patient(n)).await;
    }
    let first = a.get_ok("/Patient?_count=2").await;
    let next = link(&first, "next").expect("a next link");
    let path = next
        .split_once("/Patient")
        .map(|(_, q)| format!("/Patient{q}"))
        .unwrap();
    let second = other.get_ok(&path).await;
    let mut seen = entry_ids(&first);
    seen.extend(entry_ids(&second));
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!((seen.len(), distinct.len()), (4, 4), "{seen:?}");
}

/// `sp-hub backup` copies a SQLite database while the server runs; a
/// server on the copy has the data, and the copy's audit chain holds.
/// On PostgreSQL the command points to pg_dump.
async fn backup_while_serving_and_restore(b: Backend) {
    let s = Server::start(b).await;
    let created = s.create(&patient("9000000009")).await;
    let id = created["id"].as_str().unwrap().to_string();
    let copy = s.workdir().join("backup.db");
    let out = tokio::process::Command::new(bin())
        .args(["backup", "--database-url", &s.database_url, "--to"])
        .arg(&copy)
        .env_remove("SP_HUB_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    if b == Backend::Postgres {
        assert!(!out.status.success());
        assert!(said.contains("pg_dump"), "{said}");
        return;
    }
    assert!(out.status.success(), "{said}");
    // Written after the backup: not in the copy.
    let later = s.create(&patient("9000000017")).await;
    let copy_url = copy.to_string_lossy().to_string();
    // The copy holds the signing key too: the same token works on it.
    let restored = s.serve_other(&copy_url).await;
    assert_eq!(
        restored.get_ok(&format!("/Patient/{id}")).await["id"],
        id.as_str()
    );
    let later_id = later["id"].as_str().unwrap();
    assert_eq!(
        restored.status_of(&format!("/Patient/{later_id}")).await,
        404
    );
    let out = tokio::process::Command::new(bin())
        .args(["audit", "verify", "--database-url", &copy_url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

both_backends!(two_replicas_behave_as_one, backup_while_serving_and_restore);
