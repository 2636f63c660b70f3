//! SMART backend-services authorization over HTTP: discovery, the token
//! endpoint and its refusals of every attack the issue lists, the bearer
//! check on every non-open path, and scopes (v1, v2, constraints) on
//! requests, Bundle entries, `_include` and `$trail`.

mod common;

use common::*;
use serde_json::{json, Value};

/// Scope tests run as admin clients, whose view is everything.
const ORG: &str = "Organization/hub-operator";

async fn open_endpoints_need_no_token(s: Server) {
    let anon = s.anonymous();
    for path in ["/metadata", "/healthz", "/readyz", "/auth/jwks"] {
        assert_eq!(anon.status_of(path).await, 200, "{path} should be open");
    }
    let config = anon.get_ok("/.well-known/smart-configuration").await;
    assert_eq!(config["token_endpoint"], s.token_url());
    assert_eq!(
        config["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    let algs = config["token_endpoint_auth_signing_alg_values_supported"].clone();
    for alg in ["RS384", "ES384", "RS512"] {
        assert!(algs.as_array().unwrap().contains(&json!(alg)), "{algs}");
    }
    assert!(config["scopes_supported"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let jwks = anon.get_ok("/auth/jwks").await;
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "private key published: {jwks}"
    );
}

async fn every_other_path_needs_a_valid_token(s: Server) {
    let anon = s.anonymous();
    for (method, path) in [
        ("GET", "/Patient"),
        ("GET", "/Patient/p1"),
        ("POST", "/Patient"),
        ("POST", "/"),
        ("GET", "/_history"),
        ("GET", "/ServiceRequest/x/$trail"),
        ("GET", "/no-such-route/at/all/here"),
    ] {
        let resp = anon
            .send(
                anon.req(method.parse().unwrap(), path)
                    .header("Content-Type", FHIR_JSON)
                    .body("{}"),
            )
            .await;
        assert_eq!(resp.status().as_u16(), 401, "{method} {path}");
        assert!(
            header(&resp, "www-authenticate").is_some_and(|h| h.starts_with("Bearer")),
            "{method} {path}: no WWW-Authenticate"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "login");
    }
    // A token this server did not sign, and a mangled one of its own.
    let forged = TestClient::new("forger").assertion(&s.token_url());
    let mangled = format!("{}x", s.token);
    for token in [forged.as_str(), mangled.as_str(), "not-a-jwt"] {
        let status = s.with_token(token).status_of("/Patient").await;
        assert_eq!(status, 401, "token {token:.20}… should be refused");
    }
    assert_eq!(s.status_of("/Patient").await, 200);
}

/// Each attack on the token endpoint, and the RFC 6749 error it earns.
async fn token_attacks_are_refused(s: Server) {
    let c = s
        .register("attacked", ORG, "admin", "system/Task.rs system/Patient.r")
        .await;
    let aud = s.token_url();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let with = |k: &str, v: Value| {
        let mut claims = c.claims(&aud);
        claims[k] = v;
        c.sign(&claims)
    };
    let unsigned = |alg: &str| {
        use base64::Engine as _;
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let header = json!({"alg": alg, "typ": "JWT", "kid": c.kid});
        format!("{}.{}", b64(&header), b64(&c.claims(&aud)))
    };
    // HS256 "signed" with the client's public key as the HMAC secret.
    let hs256 = {
        let public = c.jwks()["keys"][0].to_string();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(c.kid.clone());
        jsonwebtoken::encode(
            &header,
            &c.claims(&aud),
            &jsonwebtoken::EncodingKey::from_secret(public.as_bytes()),
        )
        .unwrap()
    };
    let unknown_kid = {
        let other = TestClient::new("attacked");
        other.assertion(&aud)
    };
    let replayed = c.assertion(&aud);
    let (status, _) = s.request_token(&replayed, "system/Task.rs").await;
    assert_eq!(status, 200, "the first use of an assertion works");

    let cases: Vec<(&str, String, &str, u16, &str)> = vec![
        (
            "replayed jti",
            replayed,
            "system/Task.rs",
            400,
            "invalid_grant",
        ),
        (
            "exp 10 minutes ahead",
            with("exp", json!(now() + 600)),
            "system/Task.rs",
            400,
            "invalid_grant",
        ),
        (
            "expired",
            with("exp", json!(now() - 120)),
            "system/Task.rs",
            400,
            "invalid_grant",
        ),
        (
            "no exp",
            {
                let mut cl = c.claims(&aud);
                cl.as_object_mut().unwrap().remove("exp");
                c.sign(&cl)
            },
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "no jti",
            {
                let mut cl = c.claims(&aud);
                cl.as_object_mut().unwrap().remove("jti");
                c.sign(&cl)
            },
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "wrong aud",
            with("aud", json!("https://elsewhere.example/auth/token")),
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "wrong iss",
            with("iss", json!("someone-else")),
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "sub not iss",
            with("sub", json!("someone-else")),
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "alg none",
            format!("{}.", unsigned("none")),
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "HS256 with the public key",
            hs256,
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "unknown kid",
            unknown_kid,
            "system/Task.rs",
            401,
            "invalid_client",
        ),
        (
            "scope not registered",
            c.assertion(&aud),
            "system/Task.d system/Observation.rs",
            400,
            "invalid_scope",
        ),
        (
            "malformed scope",
            c.assertion(&aud),
            "patient/Task.rs",
            400,
            "invalid_scope",
        ),
    ];
    let mut table = String::from("\ncase | status | error\n");
    for (name, assertion, scope, want_status, want_error) in &cases {
        let (status, body) = s.request_token(assertion, scope).await;
        table.push_str(&format!("{name} | {status} | {}\n", body["error"]));
        assert_eq!(
            (status, body["error"].as_str().unwrap_or("")),
            (*want_status, *want_error),
            "{name}: {body}"
        );
        assert!(
            body.get("access_token").is_none(),
            "{name}: a token was issued"
        );
    }
    println!("{table}");

    // Disabled: `sp-hub client disable` stops new tokens at once.
    let out = tokio::process::Command::new(bin())
        .args([
            "client",
            "disable",
            "attacked",
            "--database-url",
            &s.database_url,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = s.request_token(&c.assertion(&aud), "system/Task.rs").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

async fn granted_scopes_are_requested_within_registered(s: Server) {
    let c = s
        .register(
            "narrow",
            ORG,
            "admin",
            "system/Task.rus system/Patient.read",
        )
        .await;
    let (status, body) = s
        .request_token(
            &c.assertion(&s.token_url()),
            "system/Task.rs system/Task.d system/Patient.r",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "system/Task.rs system/Patient.r");
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"]
        .as_i64()
        .is_some_and(|e| e > 0 && e <= 300));
}

async fn requests_outside_the_scopes_are_403(s: Server) {
    let pat = s.create(&patient("9000000009")).await;
    let pid = pat["id"].as_str().unwrap();
    let task = s.create(&task("sr-1", pid)).await;
    let tid = task["id"].as_str().unwrap().to_string();
    let t = s
        .as_new_client(
            "tasks-only",
            ORG,
            "admin",
            "system/Task.rus system/Patient.read",
        )
        .await;
    assert_eq!(t.status_of(&format!("/Task/{tid}")).await, 200);
    assert_eq!(t.status_of("/Task?status=requested").await, 200);
    assert_eq!(
        t.status_of(&format!("/Patient/{pid}")).await,
        200,
        "v1 read"
    );
    for (method, path, body) in [
        ("GET", "/Observation".to_string(), None),
        ("DELETE", format!("/Task/{tid}"), None),
        ("POST", "/Task".to_string(), Some(task.clone())),
        ("PUT", format!("/Patient/{pid}"), Some(pat.clone())),
        ("GET", "/_history".to_string(), None),
    ] {
        let mut rb = t.req(method.parse().unwrap(), &path);
        if let Some(b) = body {
            rb = rb.header("Content-Type", FHIR_JSON).body(b.to_string());
        }
        let resp = t.send(rb).await;
        assert_eq!(resp.status().as_u16(), 403, "{method} {path}");
        let oo: Value = resp.json().await.unwrap();
        assert_eq!(oo["issue"][0]["code"], "forbidden", "{oo}");
    }
    // Nothing was written by the refused requests.
    assert_eq!(s.status_of(&format!("/Task/{tid}/_history/2")).await, 404);
    assert_eq!(s.total("/Task").await, 1);
}

async fn a_constrained_scope_allows_only_searches_carrying_it(s: Server) {
    let t = s
        .as_new_client(
            "pool-watcher",
            ORG,
            "admin",
            "system/Task.rs?status=requested",
        )
        .await;
    assert_eq!(t.status_of("/Task?status=requested").await, 200);
    assert_eq!(t.status_of("/Task?status=completed").await, 403);
    assert_eq!(t.status_of("/Task").await, 403);
    // The same rule for POST _search, whose parameters are in the body.
    let search = |body: &'static str| {
        t.send(
            t.req(reqwest::Method::POST, "/Task/_search")
                .header("Content-Type", FORM)
                .body(body),
        )
    };
    assert_eq!(search("status=requested").await.status().as_u16(), 200);
    assert_eq!(search("status=accepted").await.status().as_u16(), 403);
    // Reads need an unconstrained scope.
    assert_eq!(t.status_of("/Task/any").await, 403);
}

async fn bundle_entries_include_and_trail_follow_the_scopes(s: Server) {
    let pat = s.create(&patient("9000000009")).await;
    let pid = pat["id"].as_str().unwrap();
    let sr = s.create(&service_request(pid, "REF-SCOPE-1")).await;
    let sid = sr["id"].as_str().unwrap();
    let t = s
        .as_new_client(
            "referrals-only",
            ORG,
            "admin",
            "system/ServiceRequest.cruds system/Task.cruds",
        )
        .await;
    // A transaction with one entry outside the scopes writes nothing.
    let before = s.versions_written().await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": service_request(pid, "REF-SCOPE-2"), "request": {"method": "POST", "url": "ServiceRequest"}},
        {"resource": patient("9000000017"), "request": {"method": "POST", "url": "Patient"}},
    ]});
    let resp = t.post_json("/", &bundle).await;
    assert_eq!(resp.status().as_u16(), 403);
    let oo: Value = resp.json().await.unwrap();
    assert_eq!(oo["issue"][0]["expression"][0], "Bundle.entry[1]", "{oo}");
    assert_eq!(s.versions_written().await, before);
    // In a batch only that entry fails.
    let mut batch = bundle.clone();
    batch["type"] = json!("batch");
    let out = t
        .post_json("/", &batch)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        out["entry"][0]["response"]["status"], "201 Created",
        "{out}"
    );
    assert!(
        out["entry"][1]["response"]["status"]
            .as_str()
            .unwrap()
            .starts_with("403"),
        "{out}"
    );
    // _include of a type the token may not read is left out.
    let page = t
        .get_ok(&format!(
            "/ServiceRequest?_id={sid}&_include=ServiceRequest:subject"
        ))
        .await;
    assert_eq!(entry_ids(&page), vec![sid.to_string()], "{page}");
    let page = s
        .get_ok(&format!(
            "/ServiceRequest?_id={sid}&_include=ServiceRequest:subject"
        ))
        .await;
    assert_eq!(
        sorted(entry_ids(&page)),
        sorted(vec![sid.to_string(), pid.to_string()])
    );
    // The trail shows the referral and its Task, which the token may read.
    let trail = t.get_ok(&format!("/ServiceRequest/{sid}/$trail")).await;
    let types: Vec<String> = entries(&trail)
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.iter().any(|t| t == "ServiceRequest") && types.iter().any(|t| t == "Task"),
        "{types:?}"
    );
}

/// A client's requests a minute are counted in the database, so two
/// replicas share one limit; past it, 429 with Retry-After.
async fn the_request_rate_is_limited_per_client_across_replicas(b: Backend) {
    let a = Server::start_with(b, &["--rate-limit", "5"], &[]).await;
    let other = a.replica().await;
    let minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 60
    };
    // The count starts again each minute: a run that crosses a minute
    // boundary proves nothing and is tried again.
    for attempt in 0..3 {
        let started = minute();
        // Use up what is left of this minute's five (earlier attempts may
        // have used some), alternating replicas.
        let mut statuses = vec![];
        for i in 0..6 {
            let s = if i % 2 == 0 { &a } else { &other };
            statuses.push(s.get("/Patient").await);
        }
        if minute() != started {
            assert!(attempt < 2, "three runs crossed a minute boundary");
            continue;
        }
        let last = statuses.pop().unwrap();
        if attempt == 0 {
            let first: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
            assert_eq!(
                first,
                vec![200; 5],
                "the first five of the minute, on both replicas"
            );
        }
        assert_eq!(
            last.status().as_u16(),
            429,
            "the sixth request of the minute"
        );
        let retry: u64 = header(&last, "retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        let oo: Value = last.json().await.unwrap();
        assert_eq!(oo["issue"][0]["code"], "throttled");
        // Another client has its own count.
        let fresh = a.as_new_client("fresh", ORG, "admin", "system/*.rs").await;
        if minute() == started {
            assert_eq!(fresh.status_of("/Patient").await, 200);
        }
        return;
    }
}

/// Serves `body` at every path over plain HTTP on loopback, counting hits.
async fn serve_jwks(body: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (url, hits)
}

async fn add_with_jwks_url(s: &Server, id: &str, url: &str) {
    let out = tokio::process::Command::new(bin())
        .args([
            "client",
            "add",
            "--database-url",
            &s.database_url,
            "--id",
            id,
        ])
        .args([
            "--organization",
            ORG,
            "--role",
            "admin",
            "--scope",
            "system/*.rs",
        ])
        .args(["--jwks-url", url])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A client may publish its keys at a URL: the hub fetches them when the
/// client asks for a token, and keeps them a while. By default only https
/// to public addresses is fetched (a guard against request forgery).
async fn a_jwks_url_is_fetched_cached_and_guarded(b: Backend) {
    let c = TestClient::new("published");
    let (url, hits) = serve_jwks(c.jwks().to_string()).await;

    let open = Server::start_with(b, &["--allow-private-jwks-urls"], &[]).await;
    add_with_jwks_url(&open, "published", &url).await;
    let token = open.token_for(&c, "system/*.rs").await;
    assert_eq!(open.with_token(&token).status_of("/Patient").await, 200);
    open.token_for(&c, "system/*.rs").await;
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the JWKS is cached"
    );

    // The default guard: this loopback http URL is not fetched.
    let guarded = Server::start(b).await;
    add_with_jwks_url(&guarded, "published", &url).await;
    let (status, body) = guarded
        .request_token(&c.assertion(&guarded.token_url()), "system/*.rs")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("https"),
        "{body}"
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "nothing was fetched"
    );
}

/// `sp-hub client add` refuses what it cannot use safely, naming why.
async fn registration_refuses_bad_clients(s: Server) {
    let c = TestClient::new("bad");
    let public = c.jwks();
    let mut private = public.clone();
    private["keys"][0]["d"] = json!("c2VjcmV0");
    let oct = json!({"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]});
    let p256 = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
    let cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        (
            "Organization/o",
            "nurse",
            "system/*.rs",
            public.clone(),
            "role",
        ),
        ("o", "gp", "system/*.rs", public.clone(), "Organization/ID"),
        (
            "Organization/o",
            "gp",
            "user/*.rs",
            public.clone(),
            "system/",
        ),
        ("Organization/o", "gp", "system/*.rs", private, "private"),
        ("Organization/o", "gp", "system/*.rs", oct, "private"),
        ("Organization/o", "gp", "system/*.rs", p256, "P-384"),
    ];
    for (i, (org, role, scope, jwks, why)) in cases.into_iter().enumerate() {
        let file = s.workdir().join(format!("bad-{i}.json"));
        std::fs::write(&file, jwks.to_string()).unwrap();
        let out = tokio::process::Command::new(bin())
            .args([
                "client",
                "add",
                "--database-url",
                &s.database_url,
                "--id",
                "bad",
            ])
            .args([
                "--organization",
                org,
                "--role",
                role,
                "--scope",
                scope,
                "--jwks",
            ])
            .arg(&file)
            .output()
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} registered");
        assert!(err.contains(why), "case {i}: {err}");
    }
}

/// `serve --demo` registers its clients and leaves their private keys in
/// `demo-clients/`, readable by the owner only; they get tokens.
async fn demo_clients_get_tokens_with_the_keys_written(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let pem = s.workdir().join("demo-clients/demo-admin.key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&pem).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the key file is readable by others: {mode:o}"
        );
    }
    let demo = TestClient::from_pem_file("demo-admin", &pem);
    let token = s.token_for(&demo, "system/*.read").await;
    let as_demo = s.with_token(&token);
    assert_eq!(as_demo.total("/Organization").await, 7);
    assert_eq!(as_demo.status_of("/Organization/org-pcn").await, 200);
    // One client for each role, each with its organisation's view: the
    // Mill Lane practice sees its referrals, not Castle Street's.
    for id in ["demo-gp", "demo-pcn", "demo-vcs"] {
        let pem = s.workdir().join(format!("demo-clients/{id}.key.pem"));
        TestClient::from_pem_file(id, &pem);
    }
    let gp =
        TestClient::from_pem_file("demo-gp", &s.workdir().join("demo-clients/demo-gp.key.pem"));
    let gp = s.with_token(&s.token_for(&gp, "system/*.rs").await);
    assert_eq!(gp.status_of("/ServiceRequest/referral-001").await, 200);
    assert_eq!(gp.status_of("/ServiceRequest/referral-002").await, 404);
}

both!(
    open_endpoints_need_no_token,
    every_other_path_needs_a_valid_token,
    token_attacks_are_refused,
    granted_scopes_are_requested_within_registered,
    requests_outside_the_scopes_are_403,
    a_constrained_scope_allows_only_searches_carrying_it,
    bundle_entries_include_and_trail_follow_the_scopes,
    registration_refuses_bad_clients,
);
both_backends!(
    a_jwks_url_is_fetched_cached_and_guarded,
    demo_clients_get_tokens_with_the_keys_written,
    the_request_rate_is_limited_per_client_across_replicas,
);
