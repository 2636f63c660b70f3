//! The HTTP side of authentication: the bearer-token check every request
//! passes (`authenticate`), SMART discovery, the token endpoint and the
//! server's public keys.

use actix_web::body::MessageBody;
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
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let need = need(req.method().as_str(), req.path());
    if need == Need::Open {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let checked = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| FhirError::Internal("no application state".into()))
        .and_then(|state| check(req.request(), state, &need));
    match checked {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
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
            Ok(req.into_response(resp).map_into_right_body())
        }
    }
}

fn check(req: &HttpRequest, state: &AppState, need: &Need) -> FhirResult<Principal> {
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
    let principal = token::verify_access(&state.key, token).map_err(FhirError::Unauthorized)?;
    principal.permits(need, &form_pairs(req.query_string().as_bytes()))?;
    Ok(principal)
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
            ))
        })
        .await;
    match issued {
        Ok(Ok(t)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(json!({
                "access_token": t.access_token,
                "token_type": "bearer",
                "expires_in": t.expires_in,
                "scope": t.scope,
            })),
        Ok(Err(e)) => oauth_error(&e),
        Err(e) => oauth_error(&OAuthError {
            error: "server_error",
            description: e.to_string(),
            status: 500,
        }),
    }
}

fn oauth_error(e: &OAuthError) -> HttpResponse {
    if e.status >= 500 {
        tracing::error!(error = %e.description, "token request failed");
    } else {
        tracing::info!(error = e.error, description = %e.description, "token refused");
    }
    HttpResponse::build(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"error": e.error, "error_description": e.description}))
}
