//! HTTP routes and thin handlers: parse the request, call one interaction,
//! render the result. No SQL and no FHIR rules live here.

mod audit;
pub mod auth;
mod dashboard;
mod export;
mod history;
mod metadata;
mod metrics;
pub mod negotiate;
mod page;
mod render;
mod rest;
mod trail;
mod translate;
mod validate;

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::fhir::outcome::FhirError;
use crate::store::Store;
use negotiate::Output;

pub struct AppState {
    pub store: Store,
    /// Signs and checks access tokens.
    pub key: crate::auth::token::ServerKey,
    /// Clients' JWKS published at URLs.
    pub jwks: crate::auth::jwks_url::Fetcher,
    /// Seconds an access token lives.
    pub token_lifetime: i64,
    /// Requests a client may make a minute, on all replicas together
    /// (0: no limit).
    pub rate_limit: i64,
    /// This server's public base URL, when configured (else each request's
    /// own scheme and host): the token endpoint's URL, the assertions'
    /// `aud`, is derived from it.
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
    /// The CapabilityStatement, rendered once: it only changes with the code.
    pub capability_statement: String,
    /// When the notification worker last went round (`/readyz`).
    pub notify_heartbeat: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The PCN dashboard's settings (small-number suppression).
    pub dashboard: crate::dashboard::Settings,
}

/// Every route the server serves, with its methods. `configure` registers
/// exactly these, and a test checks openapi.yaml documents each of them.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["POST"]),
    ("/metadata", &["GET"]),
    // Before `/{type}`: probes for orchestrators.
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    // SMART backend services: discovery, token endpoint, public keys; open.
    ("/.well-known/smart-configuration", &["GET"]),
    ("/auth/token", &["POST"]),
    ("/auth/jwks", &["GET"]),
    // The dashboard page and its script: static, open (the data needs a
    // token); before `/{type}` and `/{type}/{id}`.
    ("/dashboard", &["GET"]),
    ("/dashboard/app.js", &["GET"]),
    ("/_history", &["GET"]),
    // Before `/{type}`, which would take `$audit` as a type.
    ("/$audit", &["GET"]),
    // Bulk Data export, before `/{type}` and `/{type}/{id}`, which would
    // take `$export` and `$export-status` as types: the kick-off, its
    // status URL (poll, cancel) and the output files.
    ("/$export", &["GET"]),
    ("/$export-status/{id}", &["GET", "DELETE"]),
    ("/$export-file/{id}/{type}", &["GET"]),
    ("/{type}", &["GET", "POST", "PUT", "DELETE"]),
    ("/{type}/_search", &["POST"]),
    ("/{type}/_history", &["GET"]),
    // Before `/{type}/{id}`, which would otherwise take `$validate` as an id.
    ("/{type}/$validate", &["POST"]),
    // Before `/{type}/{id}`, which would otherwise take `$translate` as an id.
    ("/ConceptMap/$translate", &["GET", "POST"]),
    // The PCN dashboard's figures; before `/{type}/{id}`, which would
    // take `dashboard` as a type.
    ("/dashboard/metrics", &["GET"]),
    ("/{type}/{id}", &["GET", "PUT", "PATCH", "DELETE"]),
    ("/{type}/{id}/$validate", &["POST"]),
    // A literal type and operation: no other three-segment route ends in
    // `$trail`, so its place in the table does not matter.
    ("/ServiceRequest/{id}/$trail", &["GET"]),
    ("/ConceptMap/{id}/$translate", &["GET", "POST"]),
    // A VCS organisation's Tasks as flat rows in its own shape, and back.
    ("/Organization/{id}/$records", &["GET", "POST"]),
    ("/Group/{id}/$export", &["GET"]),
    ("/{type}/{id}/_history", &["GET"]),
    ("/{type}/{id}/_history/{vid}", &["GET"]),
];

pub fn configure(cfg: &mut web::ServiceConfig) {
    for (path, methods) in ROUTES {
        let mut resource = web::resource(*path);
        for m in *methods {
            resource = match (*path, *m) {
                ("/", _) => resource.route(web::post().to(rest::transaction)),
                ("/metadata", _) => resource.route(web::get().to(metadata)),
                ("/healthz", _) => resource.route(web::get().to(healthz)),
                ("/readyz", _) => resource.route(web::get().to(readyz)),
                ("/metrics", _) => resource.route(web::get().to(metrics::metrics)),
                ("/.well-known/smart-configuration", _) => {
                    resource.route(web::get().to(auth::smart_configuration))
                }
                ("/auth/token", _) => resource.route(web::post().to(auth::token)),
                ("/auth/jwks", _) => resource.route(web::get().to(auth::jwks)),
                ("/dashboard", _) => resource.route(web::get().to(page::dashboard)),
                ("/dashboard/app.js", _) => resource.route(web::get().to(page::script)),
                ("/_history", _) => resource.route(web::get().to(history::system)),
                ("/$audit", _) => resource.route(web::get().to(audit::trail)),
                ("/$export", _) => resource.route(web::get().to(export::system)),
                ("/$export-status/{id}", "GET") => resource.route(web::get().to(export::status)),
                ("/$export-status/{id}", "DELETE") => {
                    resource.route(web::delete().to(export::cancel))
                }
                ("/$export-file/{id}/{type}", _) => resource.route(web::get().to(export::file)),
                ("/Group/{id}/$export", _) => resource.route(web::get().to(export::group)),
                ("/{type}", "GET") => resource.route(web::get().to(rest::search_get)),
                ("/{type}", "POST") => resource.route(web::post().to(rest::create)),
                ("/{type}", "PUT") => resource.route(web::put().to(rest::conditional_update)),
                ("/{type}", "DELETE") => resource.route(web::delete().to(rest::conditional_delete)),
                ("/{type}/_search", _) => resource.route(web::post().to(rest::search_post)),
                ("/{type}/_history", _) => resource.route(web::get().to(history::of_type)),
                ("/{type}/$validate", _) => resource.route(web::post().to(validate::type_level)),
                ("/{type}/{id}/$validate", _) => {
                    resource.route(web::post().to(validate::instance_level))
                }
                ("/ServiceRequest/{id}/$trail", _) => {
                    resource.route(web::get().to(trail::referral))
                }
                ("/ConceptMap/$translate", "GET") => {
                    resource.route(web::get().to(translate::type_level))
                }
                ("/ConceptMap/$translate", "POST") => {
                    resource.route(web::post().to(translate::type_level))
                }
                ("/ConceptMap/{id}/$translate", "GET") => {
                    resource.route(web::get().to(translate::instance_level))
                }
                ("/ConceptMap/{id}/$translate", "POST") => {
                    resource.route(web::post().to(translate::instance_level))
                }
                ("/Organization/{id}/$records", "GET") => {
                    resource.route(web::get().to(translate::records_get))
                }
                ("/Organization/{id}/$records", "POST") => {
                    resource.route(web::post().to(translate::records_post))
                }
                ("/dashboard/metrics", _) => resource.route(web::get().to(dashboard::metrics)),
                ("/{type}/{id}", "GET") => resource.route(web::get().to(rest::read)),
                ("/{type}/{id}", "PUT") => resource.route(web::put().to(rest::update)),
                ("/{type}/{id}", "PATCH") => resource.route(web::patch().to(rest::patch)),
                ("/{type}/{id}", "DELETE") => resource.route(web::delete().to(rest::delete)),
                ("/{type}/{id}/_history", _) => resource.route(web::get().to(history::of_instance)),
                ("/{type}/{id}/_history/{vid}", _) => resource.route(web::get().to(rest::vread)),
                _ => unreachable!("route {m} {path} has no handler"),
            };
        }
        let allow = methods.join(", ");
        resource = resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { method_not_allowed(&req, &allow) }
        }));
        cfg.service(resource);
    }
    cfg.default_service(web::to(no_route));
}

async fn metadata(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        render::body_response(StatusCode::OK, &out, &state.capability_statement)
    })
    .await
}

/// The request's id, for the layers below (`request_id`).
#[derive(Clone)]
pub struct RequestId(pub String);

/// The header that names a request end to end.
const REQUEST_ID: &str = "x-request-id";

/// Gives every request an id: the caller's `X-Request-Id` when it is a
/// sensible one (1–128 visible ASCII characters), else a new UUID. The id
/// comes back on the response and names the request's log span, so one
/// request can be followed from the client through the server's logs.
pub fn request_id<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    use tracing::Instrument as _;
    let given = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let id = given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    actix_web::HttpMessage::extensions_mut(&req).insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let fut = {
        let _in = span.enter();
        srv.call(req)
    };
    let started = std::time::Instant::now();
    async move {
        let mut resp = fut.await?;
        let route = resp
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        metrics::observe(
            &route,
            resp.request().method().as_str(),
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        // The path only: query strings can hold identifiers such as NHS numbers.
        tracing::info!(
            status = resp.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "served"
        );
        if let Ok(v) = header::HeaderValue::from_str(&id) {
            resp.headers_mut()
                .insert(header::HeaderName::from_static(REQUEST_ID), v);
        }
        Ok(resp)
    }
    .instrument(span)
}

/// The process is alive and serving HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Ready for traffic: the database answers, its schema is this binary's,
/// and the notification worker is going round. 503 with an
/// OperationOutcome otherwise.
async fn readyz(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    handle(&req.clone(), |_out| async move {
        state.store.run(|s| s.ready()).await?;
        if !crate::notify::deliver::is_alive(&state.notify_heartbeat) {
            return Err(FhirError::Unavailable(
                "the notification worker has stopped going round".into(),
            ));
        }
        Ok(HttpResponse::Ok().json(serde_json::json!({"status": "ready"})))
    })
    .await
}

fn method_not_allowed(req: &HttpRequest, allow: &str) -> HttpResponse {
    let err = FhirError::MethodNotAllowed(format!(
        "{} is not allowed on {}; allowed: {allow}",
        req.method(),
        req.path()
    ));
    let mut resp = render::error_response(&err, &Output::default());
    if let Ok(v) = header::HeaderValue::from_str(allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    let err = if req.method() == Method::GET || req.method() == Method::POST {
        FhirError::NotFound(format!("there is no endpoint at {}", req.path()))
    } else {
        FhirError::MethodNotAllowed(format!("{} is not allowed on {}", req.method(), req.path()))
    };
    render::error_response(&err, &Output::default())
}

/// Negotiates the output format, runs the handler body, and renders any
/// error as an OperationOutcome in that format.
async fn handle<F, Fut>(req: &HttpRequest, f: F) -> HttpResponse
where
    F: FnOnce(Output) -> Fut,
    Fut: std::future::Future<Output = crate::fhir::outcome::FhirResult<HttpResponse>>,
{
    match Output::negotiate(req) {
        Err(e) => render::error_response(&e, &Output::default()),
        Ok(out) => match f(out).await {
            Ok(resp) => resp,
            Err(e) => render::error_response(&e, &out),
        },
    }
}

/// How long a client may take to send its body once the headers are in.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the whole body, refusing it once it passes the configured limit
/// or when the client stops sending before it is complete.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> crate::fhir::outcome::FhirResult<web::Bytes> {
    actix_web::rt::time::timeout(BODY_TIMEOUT, read_body_within(req, payload, limit))
        .await
        .unwrap_or_else(|_| {
            Err(FhirError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            )))
        })
}

async fn read_body_within(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> crate::fhir::outcome::FhirResult<web::Bytes> {
    use futures_util::StreamExt as _;
    let too_large = || {
        FhirError::PayloadTooLarge(format!(
            "the request body is larger than the limit of {limit} bytes"
        ))
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|e| FhirError::invalid(format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

pub fn capability_statement(started: &str, registry: &crate::search::registry::Registry) -> String {
    metadata::capability_statement(started, registry).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (METHOD, path) pairs under `paths:` in openapi.yaml. The file keeps
    /// paths at two spaces and operations at four, so lines suffice.
    fn documented() -> BTreeSet<(String, String)> {
        let yaml = include_str!("../../../openapi.yaml");
        let mut out = BTreeSet::new();
        let mut in_paths = false;
        let mut path = String::new();
        for line in yaml.lines() {
            if !line.starts_with(' ') && !line.is_empty() {
                in_paths = line.trim_end() == "paths:";
                continue;
            }
            if !in_paths {
                continue;
            }
            if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
                path = format!("/{p}");
            } else if let Some(m) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
                if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&m) {
                    out.insert((m.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn openapi_documents_exactly_the_served_routes() {
        let served: BTreeSet<(String, String)> = super::ROUTES
            .iter()
            .flat_map(|(p, ms)| ms.iter().map(|m| (m.to_string(), p.to_string())))
            .collect();
        let documented = documented();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "served but not in openapi.yaml: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "in openapi.yaml but not served: {extra:?}"
        );
    }
}
