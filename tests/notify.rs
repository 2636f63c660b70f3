//! Push notifications (R4 Subscription, rest-hook) over HTTP, with a real
//! receiver on loopback: the handshake, signed notification Bundles,
//! full-resource and id-only payloads, the subscriber's view, an endpoint
//! that fails or is down (also across a restart of the hub and beyond the
//! subscription going to `error`), two replicas sharing the outbox, and
//! every subscription the hub must refuse.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SECRET_URL: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-subscription-secret";
const SECRET: &str = "a-test-secret-of-at-least-32-characters";

/// Fast retries, so outages in a test last seconds.
const FAST: &[&str] = &[
    "--allow-loopback-subscriptions",
    "--notify-retry-min-ms",
    "50",
    "--notify-retry-max-ms",
    "300",
];

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// The status the receiver answered.
    answered: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn bundle(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a notification is JSON")
    }

    /// The Parameters of the subscription status, first in the Bundle.
    fn status_param(&self, name: &str) -> Value {
        let b = self.bundle();
        b["entry"][0]["resource"]["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn kind(&self) -> String {
        self.status_param("type")["valueCode"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn event_number(&self) -> u64 {
        self.status_param("events-since-subscription-start")["valueString"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `Type/id` the event is about.
    fn focus(&self) -> String {
        let event = self.status_param("notification-event");
        let part = event["part"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "focus")
            .unwrap();
        let r = part["valueReference"]["reference"].as_str().unwrap();
        let tail: Vec<&str> = r.rsplit('/').take(4).collect();
        format!("{}/{}", tail[3], tail[2])
    }
}

/// A webhook receiver on loopback: records every request and answers
/// with the status set in `answer`; can be taken down and brought back
/// on the same port.
struct Receiver {
    port: u16,
    answer: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<Received>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut r = Receiver {
            port,
            answer: Arc::new(AtomicU16::new(200)),
            got: Arc::default(),
            task: None,
        };
        r.task = Some(r.serve(listener));
        r
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn serve(&self, listener: tokio::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let (answer, got) = (self.answer.clone(), self.got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (answer, got) = (answer.clone(), got.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let (head_end, length) = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                            break (i + 4, length);
                        }
                    };
                    while buf.len() < head_end + length {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                        .collect();
                    let status = answer.load(Ordering::SeqCst);
                    got.lock().unwrap().push(Received {
                        answered: status,
                        headers,
                        body: buf[head_end..head_end + length].to_vec(),
                    });
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        })
    }

    /// Stops listening: deliveries now fail to connect.
    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn up(&mut self) {
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.port),
            }
        };
        self.task = Some(self.serve(listener));
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The requests answered 2xx, that is, delivered.
    fn delivered(&self) -> Vec<Received> {
        self.all()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    /// Waits until `done` holds for what was received.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        for _ in 0..300 {
            if done(&self.all()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "timed out waiting for {what}; received: {:#?}",
            self.all().len()
        );
    }

    /// Waits until `n` event notifications have been delivered.
    async fn wait_events(&self, n: usize) -> Vec<Received> {
        self.wait_for(&format!("{n} delivered events"), |_| {
            events(&self.delivered()).len() >= n
        })
        .await;
        events(&self.delivered())
    }
}

/// Event notifications among `rs`, each event once (the first delivery
/// of a repeated one), in the order they arrived.
fn events(rs: &[Received]) -> Vec<Received> {
    let mut seen = BTreeSet::new();
    rs.iter()
        .filter(|r| r.kind() == "event-notification")
        .filter(|r| seen.insert(r.event_number()))
        .cloned()
        .collect()
}

fn signature_ok(r: &Received, secret: &str) -> bool {
    let mut mac = <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&r.body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    r.header("x-sp-hub-signature") == Some(format!("sha256={hex}").as_str())
}

fn subscription(criteria: &str, endpoint: &str, full: bool) -> Value {
    let mut s = json!({
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "tell the link workers",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint},
        "extension": [{"url": SECRET_URL, "valueString": SECRET}],
    });
    if full {
        s["channel"]["payload"] = json!("application/fhir+json");
    }
    s
}

fn task(status: &str, n: usize) -> Value {
    json!({
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "identifier": [{"system": REFERRAL_ID, "value": format!("notify-{n}")}],
    })
}

/// Waits until the subscription's status is `status`.
async fn wait_status(s: &Server, id: &str, status: &str) -> Value {
    for _ in 0..300 {
        let sub = s.get_ok(&format!("/Subscription/{id}")).await;
        if sub["status"] == status {
            return sub;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "Subscription/{id} never became {status}: {}",
        s.get_ok(&format!("/Subscription/{id}")).await
    );
}

/// Handshake first, then one signed notification Bundle per matching
/// change, numbered in order, carrying the full resource; nothing for
/// changes that do not match; none after the subscription is off.
async fn handshake_then_signed_notifications_in_order(b: Backend) {
    let s = Server::start_with(b, FAST, &[]).await;
    let rx = Receiver::start().await;
    let mut sub = subscription("Task?status=requested", &rx.url(), true);
    sub["channel"]["header"] = json!(["Authorization: Bearer receiver-token"]);
    let created = s.create(&sub).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "requested");
    assert!(
        created.get("extension").is_none(),
        "the secret is never stored or returned: {created}"
    );
    rx.wait_for("the handshake", |r| {
        r.iter().any(|r| r.kind() == "handshake")
    })
    .await;
    let active = wait_status(&s, &id, "active").await;
    assert!(active.get("extension").is_none());
    let handshake = &rx.all()[0];
    assert_eq!(handshake.kind(), "handshake");
    assert_eq!(handshake.event_number(), 0);
    assert!(signature_ok(handshake, SECRET));

    let mut ids = vec![];
    for n in 0..3 {
        ids.push(
            s.create(&task("requested", n)).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Not matching: no notification.
        s.create(&task("draft", 100 + n)).await;
    }
    let got = rx.wait_events(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events(&rx.delivered()).len(),
        3,
        "only the matching changes"
    );
    for (i, r) in got.iter().enumerate() {
        assert!(signature_ok(r, SECRET), "signed with the secret");
        assert!(!signature_ok(r, "another-secret-another-secret-xx"));
        assert_eq!(r.header("authorization"), Some("Bearer receiver-token"));
        assert!(r
            .header("content-type")
            .unwrap()
            .starts_with("application/fhir+json"));
        assert!(is_uuid(r.header("x-sp-hub-delivery").unwrap()));
        assert_eq!(r.event_number(), i as u64 + 1, "numbered in order");
        assert_eq!(r.focus(), format!("Task/{}", ids[i]));
        let b = r.bundle();
        assert_eq!(b["type"], "history");
        assert_eq!(b["entry"][1]["resource"]["id"], ids[i].as_str());
        assert_eq!(b["entry"][1]["resource"]["status"], "requested");
        assert_eq!(
            r.status_param("subscription")["valueReference"]["reference"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next(),
            Some(id.as_str())
        );
    }
    let deliveries: BTreeSet<&str> = got
        .iter()
        .map(|r| r.header("x-sp-hub-delivery").unwrap())
        .collect();
    assert_eq!(deliveries.len(), 3, "each delivery has its own id");

    // The deliveries are counted, and nothing waits in the outbox.
    let metrics = s.get("/metrics").await.text().await.unwrap();
    let delivered: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sp_hub_notifications_total{outcome=\"delivered\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delivery counter: {metrics}"));
    assert_eq!(delivered, 4, "a handshake and three events");
    assert!(
        metrics.contains("\nsp_hub_outbox_notifications 0\n"),
        "{metrics}"
    );

    // Off: no more deliveries.
    let mut off = s.get_ok(&format!("/Subscription/{id}")).await;
    off["status"] = json!("off");
    s.update(&off).await;
    s.create(&task("requested", 9)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(events(&rx.delivered()).len(), 3, "nothing after off");
}

/// The endpoint answers 500, then is down while the hub restarts, then
/// recovers: every notification arrives, in order, none lost.
async fn outage_and_restart_lose_nothing(b: Backend) {
    let s = Server::start_with(b, FAST, &[]).await;
    let mut rx = Receiver::start().await;
    let id = s
        .create(&subscription("Task?status=requested", &rx.url(), false))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(&s, &id, "active").await;
    rx.answer.store(500, Ordering::SeqCst);
    for n in 0..5 {
        s.create(&task("requested", n)).await;
    }
    rx.wait_for("failed attempts", |r| {
        r.iter().filter(|r| r.answered == 500).count() >= 3
    })
    .await;
    rx.down();
    let s = s.restart().await;
    for n in 5..10 {
        s.create(&task("requested", n)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    rx.answer.store(200, Ordering::SeqCst);
    rx.up().await;
    let got = rx.wait_events(10).await;
    let numbers: Vec<u64> = got.iter().map(Received::event_number).collect();
    assert_eq!(numbers, (1..=10).collect::<Vec<_>>(), "in order, none lost");
    for r in &got {
        assert!(signature_ok(r, SECRET));
        assert_eq!(r.bundle()["entry"].as_array().unwrap().len(), 1, "id-only");
    }
    // The failures were retried, not dropped.
    assert!(rx.all().iter().filter(|r| r.answered == 500).count() >= 3);
}

/// Failing beyond the limit makes the subscription `error`, with the
/// reason; its notifications wait, and asking for it again delivers them.
async fn error_after_repeated_failures_keeps_notifications(b: Backend) {
    let mut args = FAST.to_vec();
    args.extend(["--notify-max-failures", "3"]);
    let s = Server::start_with(b, &args, &[]).await;
    let rx = Receiver::start().await;
    let id = s
        .create(&subscription("Task?status=requested", &rx.url(), false))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(&s, &id, "active").await;
    rx.answer.store(503, Ordering::SeqCst);
    s.create(&task("requested", 1)).await;
    let errored = wait_status(&s, &id, "error").await;
    assert!(
        errored["error"][0]["text"].as_str().is_some() || errored["error"].as_str().is_some(),
        "says why: {errored}"
    );
    let attempts = rx.all().len();
    // While in error, changes are still kept for it, but nothing is sent.
    s.create(&task("requested", 2)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.all().len(), attempts, "no deliveries while in error");
    rx.answer.store(200, Ordering::SeqCst);
    let mut again = errored.clone();
    again["status"] = json!("requested");
    again.as_object_mut().unwrap().remove("error");
    s.update(&again).await;
    wait_status(&s, &id, "active").await;
    let got = rx.wait_events(2).await;
    assert_eq!(
        got.iter().map(Received::event_number).collect::<Vec<_>>(),
        vec![1, 2]
    );
    // The handshake came before the waiting events.
    let delivered = rx.delivered();
    assert_eq!(delivered[0].kind(), "handshake");
    assert_eq!(delivered[1].kind(), "handshake");
}

/// A VCS's subscription matches only what the VCS may read; an id-only
/// notification carries no resource.
async fn notifications_stay_within_the_subscribers_view(b: Backend) {
    let mut args = FAST.to_vec();
    args.push("--demo");
    let s = Server::start_with(b, &args, &[]).await;
    let vcs = s
        .as_new_client(
            "vcs-wellbeing",
            "Organization/org-vcs-wellbeing",
            "vcs",
            "system/Task.rs system/Subscription.cruds",
        )
        .await;
    let rx = Receiver::start().await;
    let id = vcs.create(&subscription("Task", &rx.url(), false)).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(&vcs, &id, "active").await;
    // Another organisation cannot see the subscription.
    let other = s
        .as_new_client(
            "gp-mill",
            "Organization/org-practice-mill-lane",
            "gp",
            "system/*.cruds",
        )
        .await;
    assert_eq!(other.status_of(&format!("/Subscription/{id}")).await, 404);
    // One Task the VCS sees, one it does not: the hub changes both.
    let all: Vec<String> = entries(&s.get_ok("/Task?_count=200&_elements=id").await)
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    let mut seen = None;
    let mut hidden = None;
    for t in &all {
        let visible = vcs.status_of(&format!("/Task/{t}")).await == 200;
        match (visible, &seen, &hidden) {
            (true, None, _) => seen = Some(t.clone()),
            (false, _, None) => hidden = Some(t.clone()),
            _ => {}
        }
    }
    let (seen, hidden) = (seen.unwrap(), hidden.unwrap());
    for t in [&hidden, &seen] {
        let task = s.get_ok(&format!("/Task/{t}")).await;
        s.update(&task).await;
    }
    let got = rx.wait_events(1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got_all = events(&rx.delivered());
    assert_eq!(got_all.len(), 1, "only the Task in its view: {got:?}");
    assert_eq!(got[0].focus(), format!("Task/{seen}"));
    assert_eq!(
        got[0].bundle()["entry"].as_array().unwrap().len(),
        1,
        "id-only"
    );
}

/// Two replicas on one database share the outbox: every notification is
/// delivered, in order, whichever replica's worker sends it.
async fn replicas_share_the_outbox(b: Backend) {
    let s = Server::start_with(b, FAST, &[]).await;
    let other = s.replica().await;
    let rx = Receiver::start().await;
    let id = s
        .create(&subscription("Task?status=requested", &rx.url(), false))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_status(&s, &id, "active").await;
    let writes = (0..20).map(|n| {
        let server = if n % 2 == 0 { &s } else { &other };
        async move { server.create(&task("requested", n)).await }
    });
    futures_util::future::join_all(writes).await;
    let got = rx.wait_events(20).await;
    let numbers: Vec<u64> = got.iter().map(Received::event_number).collect();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    // At least once, and here exactly once: no event was sent twice.
    let all_events = rx
        .delivered()
        .iter()
        .filter(|r| r.kind() == "event-notification")
        .count();
    assert_eq!(all_events, 20);
}

/// Every subscription the hub cannot or must not serve is 422 naming the
/// element, and nothing is stored.
async fn unsafe_or_unsupported_subscriptions_are_refused(s: Server) {
    let ok = || subscription("Task?status=requested", "https://8.8.8.8/hook", false);
    let with = |path: &[&str], v: Value| {
        let mut sub = ok();
        let mut at = &mut sub;
        for p in &path[..path.len() - 1] {
            at = &mut at[*p];
        }
        at[path[path.len() - 1]] = v;
        sub
    };
    let cases = [
        (
            with(&["channel", "endpoint"], json!("http://8.8.8.8/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "endpoint"], json!("http://127.0.0.1:9/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "endpoint"], json!("https://127.0.0.1/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "endpoint"], json!("https://10.0.0.7/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            with(
                &["channel", "endpoint"],
                json!("https://169.254.169.254/latest/meta-data"),
            ),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "endpoint"], json!("https://[::1]/hook")),
            "Subscription.channel.endpoint",
        ),
        (
            with(
                &["channel", "endpoint"],
                json!("https://user:pw@8.8.8.8/hook"),
            ),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "endpoint"], json!("not a url")),
            "Subscription.channel.endpoint",
        ),
        (
            with(&["channel", "type"], json!("email")),
            "Subscription.channel.type",
        ),
        (
            with(&["channel", "payload"], json!("application/fhir+xml")),
            "Subscription.channel.payload",
        ),
        (
            with(
                &["channel", "header"],
                json!(["X-SP-Hub-Signature: forged"]),
            ),
            "Subscription.channel.header[0]",
        ),
        (
            with(&["channel", "header"], json!(["no colon here"])),
            "Subscription.channel.header[0]",
        ),
        (
            with(&["criteria"], json!("Patient?name=smith")),
            "Subscription.criteria",
        ),
        (
            with(&["criteria"], json!("Task?no-such-parameter=1")),
            "Subscription.criteria",
        ),
        (
            with(&["criteria"], json!("Task?status:nonsense=x")),
            "Subscription.criteria",
        ),
        (with(&["status"], json!("active")), "Subscription.status"),
        (
            with(
                &["extension"],
                json!([{"url": SECRET_URL, "valueString": "short"}]),
            ),
            "Subscription.extension[0].valueString",
        ),
    ];
    // The endpoint must be public; its host is a literal address here, so
    // no name is looked up.
    let fine = with(&["channel", "endpoint"], json!("https://8.8.8.8/hook"));
    for (sub, expression_) in cases {
        let resp = s.post_json("/Subscription", &sub).await;
        let oo = assert_outcome(resp, 422, "processing").await;
        assert_eq!(expression(&oo), Some(expression_), "{sub}: {oo}");
    }
    let mut no_secret = fine.clone();
    no_secret.as_object_mut().unwrap().remove("extension");
    let oo = assert_outcome(
        s.post_json("/Subscription", &no_secret).await,
        422,
        "processing",
    )
    .await;
    assert!(diagnostics(&oo).contains("secret"), "{oo}");
    assert_eq!(s.total("/Subscription").await, 0, "nothing stored");
    // The same resource with a public endpoint is accepted.
    let created = s.create(&fine).await;
    assert_eq!(created["status"], "requested");
    assert_eq!(s.total("/Subscription").await, 1);
}

both!(unsafe_or_unsupported_subscriptions_are_refused);
both_backends!(
    handshake_then_signed_notifications_in_order,
    outage_and_restart_lose_nothing,
    error_after_repeated_failures_keeps_notifications,
    notifications_stay_within_the_subscribers_view,
    replicas_share_the_outbox
);
