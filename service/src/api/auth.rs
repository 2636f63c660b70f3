//! The HTTP side of authentication: the bearer-token check every request
//! passes (`authenticate`), SMART discovery, the token endpoint and the
//! server's public keys.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse};
use serde_json::json;

use super::negotiate::{form_pairs, Output};
use super::render::{base_url, error_response};
use super::AppState;
use crate::auth::token::{self, OAuthError, TokenRequest};
use crate::auth::{need, Need, Principal};
use crate::fhir::outcome::{FhirError, FhirResult};

/// Runs before routing: an open path goes straight through; anything else
/// needs a valid access token whose scopes cover the request (401 and 403
/// with an OperationOutcome otherwise). The caller's `Principal` is left in
/// the request's extensions for the layers below.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let need = need(req.method().as_str(), req.path());
    // Probes and discovery are neither authenticated nor audited; token
    // requests are audited.
    if need == Need::Open && req.path() != "/auth/token" {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "no application state",
        ));
    };
    let request = std::sync::Arc::new(crate::audit::Request {
        id: req
            .extensions()
            .get::<super::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        ..Default::default()
    });
    let caller = match need {
        Need::Open => Ok(None),
        _ => bearer(req.request(), &state).map(Some),
    };
    let (who, org) = match &caller {
        Ok(Some(p)) => (p.client_id.clone(), p.organization.clone()),
        _ => ("-".to_string(), "-".to_string()),
    };
    let query = form_pairs(req.query_string().as_bytes());
    let mut checked = caller.and_then(|p| match p {
        Some(p) => p.permits(&need, &query).map(|()| Some(p)),
        None => Ok(None),
    });
    if let (Ok(Some(p)), true) = (&checked, state.rate_limit > 0) {
        if let Err(e) = within_rate(&state, &p.client_id).await {
            checked = Err(e);
        }
    }
    let resp = match checked {
        Ok(principal) => {
            if let Some(mut p) = principal {
                p.request = Some(request.clone());
                req.extensions_mut().insert(p);
            }
            next.call(req).await?.map_into_boxed_body()
        }
        Err(e) => {
            let out = Output::negotiate(req.request()).unwrap_or_default();
            let mut resp = error_response(&e, &out);
            if matches!(e, FhirError::Unauthorized(_)) {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"sp-hub\""),
                );
            }
            req.into_response(resp).map_into_boxed_body()
        }
    };
    // A write recorded itself in its own transaction; anything else is
    // recorded now, with the status it got. No record, no answer.
    if request.recorded.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(resp);
    }
    let record = crate::audit::Record::new(
        &who,
        &org,
        &request,
        String::new(),
        resp.status().as_u16().into(),
    );
    match state.store.run(move |s| s.audit(&record)).await {
        Ok(()) => Ok(resp),
        Err(e) => {
            tracing::error!(error = %e, "the request could not be audited");
            let (req, _) = resp.into_parts();
            let err = FhirError::Unavailable("the request could not be audited; try again".into());
            Ok(ServiceResponse::new(
                req,
                error_response(&err, &Output::default()),
            ))
        }
    }
}

/// Counts the request against the client's rate for this minute, which
/// every replica shares through the database.
async fn within_rate(state: &AppState, client_id: &str) -> FhirResult<()> {
    let now = token::now();
    let window = now - now.rem_euclid(60);
    let id = client_id.to_string();
    let count = state
        .store
        .run(move |s| s.count_request(&id, window).map_err(FhirError::Internal))
        .await?;
    if count > state.rate_limit {
        return Err(FhirError::TooManyRequests {
            message: format!(
                "client '{client_id}' has made more than {} requests this minute",
                state.rate_limit
            ),
            retry_after: window + 60 - now,
        });
    }
    Ok(())
}

/// The caller its bearer token names (401 without a valid one).
fn bearer(req: &HttpRequest, state: &AppState) -> FhirResult<Principal> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(|| {
        FhirError::Unauthorized(
            "this request needs an access token (Authorization: Bearer …); get one at /auth/token"
                .into(),
        )
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or_else(|| {
            FhirError::Unauthorized("the Authorization header is not 'Bearer <token>'".into())
        })?;
    token::verify_access(&state.key, token).map_err(FhirError::Unauthorized)
}

/// The caller, as `authenticate` found it.
pub fn principal(req: &HttpRequest) -> FhirResult<Principal> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| FhirError::Unauthorized("this request needs an access token".into()))
}

fn token_url(req: &HttpRequest, state: &AppState) -> String {
    let base = state.public_url.clone().unwrap_or_else(|| base_url(req));
    format!("{}/auth/token", base.trim_end_matches('/'))
}

/// `GET /.well-known/smart-configuration` (SMART App Launch v2, for
/// backend services).
pub async fn smart_configuration(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let token_endpoint = token_url(&req, &state);
    let base = token_endpoint.trim_end_matches("/auth/token");
    HttpResponse::Ok().json(json!({
        "token_endpoint": token_endpoint,
        "jwks_uri": format!("{base}/auth/jwks"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS512"],
        "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"]
    }))
}

/// `GET /auth/jwks`: the public key access tokens are signed with.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.key.jwks())
}

/// `POST /auth/token` (form-encoded): client credentials with a signed
/// client assertion in, an access token out; RFC 6749 errors otherwise.
pub async fn token(req: HttpRequest, state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let form_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_type {
        return oauth_error(&token::invalid_request(
            "the token request must be application/x-www-form-urlencoded",
        ));
    }
    let pairs = form_pairs(&body);
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let (grant_type, assertion_type, assertion, scope) = (
        field("grant_type"),
        field("client_assertion_type"),
        field("client_assertion"),
        field("scope"),
    );
    let url = token_url(&req, &state);
    let lifetime = state.token_lifetime;
    // A client that publishes its keys at a URL: fetch them (cached) first,
    // outside the database work.
    let fetched = match assertion.as_deref().and_then(token::peek) {
        Some((client_id, kid)) => {
            let jwks_url = state
                .store
                .run(move |s| s.client(&client_id).map_err(FhirError::Internal))
                .await
                .ok()
                .flatten()
                .and_then(|c| c.jwks_url);
            match jwks_url {
                Some(u) => match state.jwks.get(&u, kid.as_deref()).await {
                    Ok(jwks) => Some(jwks),
                    Err(why) => return oauth_error(&token::unusable_keys(why)),
                },
                None => None,
            }
        }
        None => None,
    };
    let state2 = state.clone();
    let issued = state
        .store
        .run(move |store| {
            Ok(token::issue(
                store,
                &state2.key,
                &TokenRequest {
                    grant_type: grant_type.as_deref(),
                    assertion_type: assertion_type.as_deref(),
                    assertion: assertion.as_deref(),
                    scope: scope.as_deref(),
                },
                &url,
                lifetime,
                fetched.as_deref(),
            ))
        })
        .await;
    match issued {
        Ok(Ok(t)) => {
            super::metrics::token_outcome("issued");
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .insert_header((header::PRAGMA, "no-cache"))
                .json(json!({
                    "access_token": t.access_token,
                    "token_type": "bearer",
                    "expires_in": t.expires_in,
                    "scope": t.scope,
                }))
        }
        Ok(Err(e)) => oauth_error(&e),
        Err(e) => oauth_error(&OAuthError {
            error: "server_error",
            description: e.to_string(),
            status: 500,
        }),
    }
}

fn oauth_error(e: &OAuthError) -> HttpResponse {
    super::metrics::token_outcome(e.error);
    if e.status >= 500 {
        tracing::error!(error = %e.description, "token request failed");
    } else {
        tracing::info!(error = e.error, description = %e.description, "token refused");
    }
    HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": e.error, "error_description": e.description}))
}
