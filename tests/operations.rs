//! Running sp-hub: Prometheus metrics, and a graceful stop on SIGTERM that
//! finishes the request in flight.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

async fn metrics_count_requests_by_route_template(s: Server) {
    let created = s.create(&patient("9000000009")).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(s.status_of(&format!("/Patient/{id}")).await, 200);
    assert_eq!(s.status_of("/Patient/no-such-patient").await, 404);
    // Open, like the probes: a scraper holds no SMART token.
    let resp = s.anonymous().get("/metrics").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for line in [
        r#"sp_hub_http_requests_total{route="/{type}/{id}",method="GET",status="200"} 1"#,
        r#"sp_hub_http_requests_total{route="/{type}/{id}",method="GET",status="404"} 1"#,
        r#"sp_hub_http_requests_total{route="/{type}",method="POST",status="201"} 1"#,
        r#"sp_hub_http_request_duration_seconds_count{route="/{type}/{id}"} 2"#,
        r#"sp_hub_token_requests_total{outcome="issued"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(text.contains("sp_hub_db_connections{"), "{text}");
    // Route templates only: no id, no query reaches the metrics.
    assert!(
        !text.contains(id) && !text.contains("no-such-patient"),
        "{text}"
    );
}

/// SIGTERM: the server stops accepting, answers the request it is in the
/// middle of, and exits cleanly.
async fn sigterm_finishes_the_request_in_flight(s: Server) {
    let body = patient("9000000009").to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = std::net::TcpStream::connect(s.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /Patient HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: {FHIR_JSON}\r\nContent-Length: {}\r\n\r\n{head}",
        s.addr(),
        s.token,
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(tail.as_bytes()).unwrap();
    let mut response = String::new();
    let mut buf = [0u8; 4096];
    while !response.contains("\r\n\r\n{") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    drop(stream);
    let status = s
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("sp-hub exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        s.log()
    );
}

both!(
    metrics_count_requests_by_route_template,
    sigterm_finishes_the_request_in_flight,
);
