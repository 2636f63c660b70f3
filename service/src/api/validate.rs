//! `$validate` on a type and on an instance: the resource in the body (or a
//! Parameters with `resource` and `profile`), or for an instance with no
//! body the stored one, checked against the R4 model and our profiles.
//! Always 200 with an OperationOutcome; nothing is stored.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use super::negotiate::{self, query_param};
use super::render;
use super::{handle, read_body, AppState};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource;
use crate::interactions as fhir;

pub async fn type_level(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    run(req, path.into_inner(), None, state, payload).await
}

pub async fn instance_level(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let (res_type, id) = path.into_inner();
    run(req, res_type, Some(id), state, payload).await
}

async fn run(
    req: HttpRequest,
    res_type: String,
    id: Option<String>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        fhir::check_type(&res_type)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let mut profile = query_param(&req, "profile");
        let resource = if bytes.is_empty() {
            let Some(id) = id else {
                return Err(FhirError::invalid(
                    "$validate needs the resource (or a Parameters holding it) in the body",
                ));
            };
            let t = res_type.clone();
            let caller = super::auth::principal(&req)?;
            let current = state
                .store
                .run(move |s| fhir::read(&caller, s, &t, &id))
                .await?;
            serde_json::from_str(&current.body)
                .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))?
        } else {
            let v = resource::to_json(&bytes, negotiate::input_format(&req)?)?;
            if v["resourceType"] == "Parameters" && res_type != "Parameters" {
                let (r, p) = from_parameters(&v)?;
                profile = p.or(profile);
                r
            } else {
                v
            }
        };
        let outcome = crate::profiles::validation_outcome(&res_type, &resource, profile.as_deref());
        render::body_response(StatusCode::OK, &out, &outcome.to_string())
    })
    .await
}

/// The `resource` and optional `profile` parameters of a `$validate`
/// Parameters body.
fn from_parameters(v: &Value) -> FhirResult<(Value, Option<String>)> {
    let mut resource = None;
    let mut profile = None;
    for p in v["parameter"].as_array().into_iter().flatten() {
        match p["name"].as_str() {
            Some("resource") => resource = p.get("resource").cloned(),
            Some("profile") => {
                profile = ["valueUri", "valueCanonical", "valueString"]
                    .iter()
                    .find_map(|k| p[*k].as_str())
                    .map(String::from)
            }
            _ => {}
        }
    }
    let resource = resource.ok_or_else(|| {
        FhirError::invalid_at(
            "the Parameters has no 'resource' parameter to validate",
            "Parameters.parameter",
        )
    })?;
    Ok((resource, profile))
}
