//! `ConceptMap/$translate` (type and instance level, GET and POST) and a
//! VCS organisation's flat records, `Organization/{id}/$records` (GET rows
//! out as CSV or JSON, POST rows in). The work is in `crate::translate`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::CSV;
use super::negotiate::{self, form_pairs, query_param, Output};
use super::render;
use super::{handle, read_body, AppState};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource;
use crate::translate::concept_map::Request;
use crate::translate::{csv, records};

pub async fn type_level(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    translate(req, None, state, payload).await
}

pub async fn instance_level(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    translate(req, Some(path.into_inner()), state, payload).await
}

/// GET takes the parameters from the query; POST from a Parameters body.
async fn translate(
    req: HttpRequest,
    id: Option<String>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let request = if bytes.is_empty() {
            Request::from_query(&form_pairs(req.query_string().as_bytes()))?
        } else {
            let v = resource::to_json(&bytes, negotiate::input_format(&req)?)?;
            Request::from_parameters(&v)?
        };
        let parameters = state
            .store
            .run(move |s| records::translate(&caller, s, id.as_deref(), &request))
            .await?;
        render::body_response(StatusCode::OK, &out, &parameters.to_string())
    })
    .await
}

/// Errors of `$records` are OperationOutcomes in FHIR JSON, whatever the
/// rows' format.
fn or_outcome(result: FhirResult<HttpResponse>) -> HttpResponse {
    result.unwrap_or_else(|e| render::error_response(&e, &Output::default()))
}

pub async fn records_get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let org = path.into_inner();
    or_outcome(
        async {
            let caller = super::auth::principal(&req)?;
            let status = query_param(&req, "status");
            let rows = state
                .store
                .run(move |s| records::outbound(&caller, s, &org, status.as_deref()))
                .await?;
            Ok(if super::negotiate::wants_csv(&req) {
                HttpResponse::Ok()
                    .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
                    .body(csv::to_csv(&rows)?)
            } else {
                HttpResponse::Ok()
                    .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
                    .body(csv::to_json(&rows).to_string())
            })
        }
        .await,
    )
}

/// 200 when every row applied (or there were none), 207 when some did,
/// 422 when none did; the body is the per-row report either way.
pub async fn records_post(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let org = path.into_inner();
    or_outcome(
        async {
            let caller = super::auth::principal(&req)?;
            let content_type = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
            let dry_run = match query_param(&req, "dry-run").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(FhirError::invalid_at(
                        format!("dry-run '{other}' is not true or false"),
                        "dry-run",
                    ))
                }
            };
            let bytes = read_body(&req, payload, state.max_body_bytes).await?;
            let rows = match content_type.as_deref() {
                Some(CSV) => csv::from_csv(&bytes)?,
                None | Some("application/json") | Some(negotiate::FHIR_JSON) => {
                    csv::from_json(&bytes)?
                }
                Some(other) => {
                    return Err(FhirError::UnsupportedMediaType(format!(
                        "Content-Type '{other}' is not supported here; send {CSV} or application/json rows"
                    )))
                }
            };
            let report = state
                .store
                .run(move |s| records::inbound(&caller, s, &org, &rows, dry_run))
                .await?;
            let status = match (report.applied(), report.rows.len()) {
                (a, n) if a == n => StatusCode::OK,
                (0, _) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::MULTI_STATUS,
            };
            Ok(HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
                .body(report.to_json().to_string()))
        }
        .await,
    )
}
