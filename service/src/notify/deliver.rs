//! The delivery worker: one tokio task per replica that leases
//! subscriptions with notifications due, sends each notification as a
//! Subscriptions Backport style notification Bundle, signed, and removes
//! it once the endpoint answers 2xx. A failure ends the lease and sets the
//! next attempt (exponential backoff with a cap); too many in a row make
//! the subscription `error`. The outbox is in the database, so a restart
//! or another replica carries on where this one stopped.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;

use super::config;
use crate::auth::{Principal, Role};
use crate::fhir::outcome::FhirError;
use crate::store::{Decision, OutboxRow, Store, SubscriptionRow};

/// How long a worker holds a subscription it is delivering for, renewed
/// before each send: longer than one delivery can take (`TIMEOUT`), so two
/// workers never send for one subscription at once, and short enough that
/// a replica that dies mid-delivery holds it up only briefly.
const LEASE: Duration = Duration::from_secs(30);
/// Notifications sent for one subscription per lease.
const BATCH: i64 = 20;
/// Subscriptions delivered for at once by one worker.
const PARALLEL: i64 = 8;
/// One delivery's time limit (connecting: five seconds).
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often an idle worker looks for work (sooner when a write on this
/// replica commits: `notify::wake`).
const IDLE: Duration = Duration::from_millis(200);

/// The header carrying the signature, and the one naming the delivery.
pub const SIGNATURE_HEADER: &str = "X-SP-Hub-Signature";
pub const DELIVERY_HEADER: &str = "X-SP-Hub-Delivery";

/// Deliveries accepted by endpoints, and deliveries that failed, by this
/// process (`/metrics`).
pub static DELIVERED: AtomicU64 = AtomicU64::new(0);
pub static FAILED: AtomicU64 = AtomicU64::new(0);

/// A running worker: `stop` lets its current deliveries finish.
pub struct Worker {
    stopping: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Worker {
    /// Starts the worker on the current (actix) runtime. `base` is the
    /// hub's public base URL, for the references in notifications; the
    /// worker stamps `heartbeat` (see `heartbeat()`) every round.
    pub fn start(store: Store, base: String, heartbeat: Arc<AtomicI64>) -> Worker {
        let stopping = Arc::new(AtomicBool::new(false));
        let task = actix_web::rt::spawn(run(store, base, stopping.clone(), heartbeat.clone()));
        Worker { stopping, task }
    }

    /// Stops after the deliveries in flight (bounded by their timeout).
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = tokio::time::timeout(TIMEOUT + Duration::from_secs(5), self.task).await;
    }
}

/// A worker's heartbeat, started now: `/readyz` reads it.
pub fn heartbeat() -> Arc<AtomicI64> {
    Arc::new(AtomicI64::new(unix_now()))
}

/// Whether a worker whose heartbeat is `beat` is still going round.
pub fn is_alive(beat: &AtomicI64) -> bool {
    unix_now() - beat.load(Ordering::Relaxed) < 30
}

async fn run(store: Store, base: String, stopping: Arc<AtomicBool>, heartbeat: Arc<AtomicI64>) {
    while !stopping.load(Ordering::SeqCst) {
        heartbeat.store(unix_now(), Ordering::Relaxed);
        let now = time::OffsetDateTime::now_utc();
        let (at, until) = (
            crate::fhir::instant::format(now),
            crate::fhir::instant::format(now + LEASE),
        );
        let claimed = store
            .run(move |s| {
                if s.notifications_due(&at)? {
                    s.claim_subscriptions(&at, &until, PARALLEL)
                } else {
                    Ok(vec![])
                }
            })
            .await;
        match claimed {
            Ok(subs) if !subs.is_empty() => {
                let rounds = subs
                    .into_iter()
                    .map(|sub| deliver_for(&store, &base, sub, &stopping));
                futures_util::future::join_all(rounds).await;
            }
            Ok(_) => {
                tokio::select! {
                    () = tokio::time::sleep(IDLE) => {}
                    () = super::WAKE.notified() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim notifications");
                tokio::time::sleep(IDLE * 5).await;
            }
        }
    }
}

/// Sends a leased subscription's next notifications in order, stopping at
/// the first failure, then ends the lease.
async fn deliver_for(store: &Store, base: &str, mut sub: SubscriptionRow, stopping: &AtomicBool) {
    let id = sub.id.clone();
    let pending = store
        .run(move |s| s.pending_notifications(&id, BATCH))
        .await;
    let rows = match pending {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return release(store, &sub.id).await;
        }
    };
    for (i, row) in rows.into_iter().enumerate() {
        // Events wait until the endpoint has answered the handshake.
        if sub.status == "requested" && row.kind != "handshake" {
            break;
        }
        if i > 0 {
            let id = sub.id.clone();
            let until = crate::fhir::instant::format(time::OffsetDateTime::now_utc() + LEASE);
            if store
                .run(move |s| s.renew_lease(&id, &until))
                .await
                .is_err()
            {
                break;
            }
        }
        match send(store, base, &sub, &row).await {
            Ok(()) => {
                DELIVERED.fetch_add(1, Ordering::Relaxed);
                let (id, seq) = (sub.id.clone(), row.seq);
                if let Err(e) = store.run(move |s| s.delivered(&id, seq)).await {
                    tracing::warn!(error = %e, "cannot record a delivery");
                    break;
                }
                if row.kind == "handshake" {
                    sub.status = "active".into();
                    set_status(store, &sub.id, "active", "").await;
                }
            }
            Err(e) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::info!(subscription = %sub.id, error = %e, "delivery failed");
                return failed(store, &sub, &e).await;
            }
        }
        if stopping.load(Ordering::SeqCst) {
            break;
        }
    }
    release(store, &sub.id).await
}

async fn release(store: &Store, id: &str) {
    let id = id.to_string();
    if let Err(e) = store.run(move |s| s.release_subscription(&id)).await {
        tracing::warn!(error = %e, "cannot release a subscription");
    }
}

/// Records a failure: the next attempt after a delay doubling with each
/// failure in a row, up to the cap; `error` after too many.
async fn failed(store: &Store, sub: &SubscriptionRow, error: &str) {
    let cfg = config();
    let shift = sub.failures.clamp(0, 20) as u32;
    let delay = cfg.retry_min.saturating_mul(1 << shift).min(cfg.retry_max);
    let next = crate::fhir::instant::format(time::OffsetDateTime::now_utc() + delay);
    let (id, err) = (sub.id.clone(), error.to_string());
    match store
        .run(move |s| s.delivery_failed(&id, &next, &err))
        .await
    {
        Ok(n) if n >= cfg.max_failures => {
            let why = format!("{n} deliveries in a row failed; the last: {error}");
            set_status(store, &sub.id, "error", &why).await;
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot record a failed delivery"),
    }
}

/// The hub acting on its own behalf (its Provenance names it).
fn hub() -> Principal {
    Principal {
        client_id: "sp-hub".into(),
        organization: String::new(),
        role: Role::Admin,
        scopes: Default::default(),
        request: None,
    }
}

/// Writes the subscription's new status as a new version (with `error`
/// saying why, for `error`), unless a client changed it meanwhile: only
/// `requested` becomes `active`, and only a live delivery becomes `error`.
async fn set_status(store: &Store, id: &str, status: &'static str, error: &str) {
    let (id, error) = (id.to_string(), error.to_string());
    let done = store
        .run(move |s| {
            crate::interactions::transaction(s, &hub(), |tx| {
                let Some(cur) = tx.read("Subscription", &id)?.filter(|c| !c.deleted) else {
                    return Ok(());
                };
                let mut body: Value = serde_json::from_str(&cur.body)
                    .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?;
                let from = body["status"].as_str().unwrap_or_default();
                let allowed = match status {
                    "active" => from == "requested",
                    _ => matches!(from, "requested" | "active"),
                };
                if !allowed {
                    return Ok(());
                }
                body["status"] = json!(status);
                match error.as_str() {
                    "" => {
                        body.as_object_mut().map(|o| o.remove("error"));
                    }
                    e => body["error"] = json!(e),
                }
                tx.write("Subscription", &id, |_| {
                    Ok(Decision::Put {
                        method: "PUT",
                        resource: body.clone(),
                    })
                })?;
                tx.set_subscription_status(&id, status, &error)
            })
        })
        .await;
    if let Err(e) = done {
        tracing::warn!(error = %e, "cannot change a subscription's status");
    }
}

/// Builds, signs and posts one notification.
async fn send(
    store: &Store,
    base: &str,
    sub: &SubscriptionRow,
    row: &OutboxRow,
) -> Result<(), String> {
    let resource = if sub.full_resource && row.kind != "handshake" {
        let (t, id, v) = (row.res_type.clone(), row.res_id.clone(), row.version);
        store
            .run(move |s| s.vread(&t, &id, v))
            .await
            .map_err(|e| format!("cannot read the notified version: {e}"))?
            .and_then(|v| v.body)
    } else {
        None
    };
    let body = notification(base, sub, row, resource.as_deref()).to_string();
    let u = url::Url::parse(&sub.endpoint).map_err(|e| format!("endpoint: {e}"))?;
    let (host, port) = crate::outbound::target(&u, config().allow_loopback)?;
    let resolved = crate::outbound::resolve(&host, port, super::allow()).await;
    let addr = super::subscription::endpoint_address(&u, |_, _| resolved)?;
    let client = crate::outbound::client(&host, addr, TIMEOUT)?;
    let mut req = client
        .post(u)
        .header("Content-Type", "application/fhir+json")
        .header(DELIVERY_HEADER, &row.delivery_id)
        .header(
            SIGNATURE_HEADER,
            format!("sha256={}", sign(&sub.secret, body.as_bytes())),
        );
    let headers: Vec<String> = serde_json::from_str(&sub.headers).unwrap_or_default();
    for h in &headers {
        if let Some((name, value)) = h.split_once(':') {
            req = req.header(name.trim(), value.trim());
        }
    }
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|e| format!("cannot reach the endpoint: {e}"))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the endpoint answered {}", resp.status()))
    }
}

/// HMAC-SHA256 of `body` with the subscription's secret, in hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The notification Bundle (type `history`, as the Subscriptions R5
/// Backport IG has it for R4): first a Parameters with the subscription
/// status, the event count and, for an event, the event's number, time and
/// focus (the version that matched); then, for a full-resource
/// subscription, that version itself.
fn notification(
    base: &str,
    sub: &SubscriptionRow,
    row: &OutboxRow,
    resource: Option<&str>,
) -> Value {
    let base = base.trim_end_matches('/');
    let subscription = format!("{base}/Subscription/{}", sub.id);
    let mut parameter = vec![
        json!({"name": "subscription", "valueReference": {"reference": subscription}}),
        json!({"name": "status", "valueCode": sub.status}),
        json!({"name": "type", "valueCode": row.kind}),
        json!({"name": "events-since-subscription-start", "valueString": row.event_number.to_string()}),
    ];
    if row.kind != "handshake" {
        parameter.push(json!({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": row.event_number.to_string()},
            {"name": "timestamp", "valueInstant": row.created},
            {"name": "focus", "valueReference": {"reference": format!(
                "{base}/{}/{}/_history/{}", row.res_type, row.res_id, row.version)}},
        ]}));
    }
    let mut entries = vec![json!({
        "fullUrl": format!("urn:uuid:{}", row.delivery_id),
        "resource": {"resourceType": "Parameters", "id": row.delivery_id, "parameter": parameter},
        "request": {"method": "GET", "url": format!("{subscription}/$status")},
        "response": {"status": "200"},
    })];
    if let Some(body) = resource.and_then(|b| serde_json::from_str::<Value>(b).ok()) {
        let created = row.version == 1;
        entries.push(json!({
            "fullUrl": format!("{base}/{}/{}", row.res_type, row.res_id),
            "resource": body,
            "request": {
                "method": if created { "POST" } else { "PUT" },
                "url": if created { row.res_type.clone() } else { format!("{}/{}", row.res_type, row.res_id) },
            },
            "response": {"status": if created { "201" } else { "200" }},
        }));
    }
    json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "history",
        "timestamp": crate::fhir::instant::now(),
        "entry": entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
