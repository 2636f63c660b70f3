//! `GET /metrics`: Prometheus text format. Requests by route template (never
//! a concrete id), method and status; latency histograms by route; the
//! database pools; token requests by outcome. Kept in memory per process:
//! Prometheus scrapes each replica and adds them up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;

use actix_web::{web, HttpResponse};

use super::AppState;
use crate::notify::deliver::{DELIVERED, FAILED};

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Registry {
    /// (route, method, status) → requests
    requests: BTreeMap<(String, String, u16), u64>,
    /// route → latency
    latency: BTreeMap<String, Histogram>,
    /// outcome ("issued" or the OAuth error code) → token requests
    tokens: BTreeMap<String, u64>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Registry::default))
}

/// Counts one answered request.
pub fn observe(route: &str, method: &str, status: u16, seconds: f64) {
    with(|r| {
        *r.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let h = r.latency.entry(route.to_string()).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if seconds <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    })
}

/// Counts one token request by its outcome.
pub fn token_outcome(outcome: &str) {
    with(|r| *r.tokens.entry(outcome.to_string()).or_default() += 1)
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::new();
    with(|r| {
        out.push_str("# HELP sp_hub_http_requests_total Requests answered, by route template, method and status.\n");
        out.push_str("# TYPE sp_hub_http_requests_total counter\n");
        for ((route, method, status), n) in &r.requests {
            let _ = writeln!(
                out,
                "sp_hub_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                label(route),
                label(method)
            );
        }
        out.push_str(
            "# HELP sp_hub_http_request_duration_seconds Time to answer, by route template.\n",
        );
        out.push_str("# TYPE sp_hub_http_request_duration_seconds histogram\n");
        for (route, h) in &r.latency {
            let route = label(route);
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "sp_hub_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "sp_hub_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}\n\
                 sp_hub_http_request_duration_seconds_sum{{route=\"{route}\"}} {}\n\
                 sp_hub_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count, h.sum, h.count
            );
        }
        out.push_str("# HELP sp_hub_token_requests_total Token requests, by outcome (issued, or the OAuth error).\n");
        out.push_str("# TYPE sp_hub_token_requests_total counter\n");
        for (outcome, n) in &r.tokens {
            let _ = writeln!(
                out,
                "sp_hub_token_requests_total{{outcome=\"{}\"}} {n}",
                label(outcome)
            );
        }
    });
    out.push_str("# HELP sp_hub_db_connections Database pool connections, by pool and state.\n");
    out.push_str("# TYPE sp_hub_db_connections gauge\n");
    // One pool on either backend; the label stays for dashboards built on it.
    let (total, idle) = state.store.pool_state();
    let _ = writeln!(
        out,
        "sp_hub_db_connections{{pool=\"shared\",state=\"idle\"}} {idle}\n\
         sp_hub_db_connections{{pool=\"shared\",state=\"in_use\"}} {}",
        total - idle
    );
    let _ = writeln!(
        out,
        "# HELP sp_hub_notifications_total Notification deliveries by this replica, by outcome.\n\
         # TYPE sp_hub_notifications_total counter\n\
         sp_hub_notifications_total{{outcome=\"delivered\"}} {}\n\
         sp_hub_notifications_total{{outcome=\"failed\"}} {}",
        DELIVERED.load(Relaxed),
        FAILED.load(Relaxed)
    );
    // The outbox is shared: every replica reports the same backlog.
    if let Ok((waiting, oldest)) = state.store.run(|s| s.outbox_backlog()).await {
        let age = oldest
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or(0.0, |t| {
                (time::OffsetDateTime::now_utc() - t)
                    .as_seconds_f64()
                    .max(0.0)
            });
        let _ = writeln!(
            out,
            "# HELP sp_hub_outbox_notifications Notifications waiting for delivery.\n\
             # TYPE sp_hub_outbox_notifications gauge\n\
             sp_hub_outbox_notifications {waiting}\n\
             # HELP sp_hub_outbox_oldest_age_seconds Age of the oldest notification waiting.\n\
             # TYPE sp_hub_outbox_oldest_age_seconds gauge\n\
             sp_hub_outbox_oldest_age_seconds {age}"
        );
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
