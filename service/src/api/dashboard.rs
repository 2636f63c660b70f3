//! `GET /dashboard/metrics`: the PCN dashboard's figures as JSON, or CSV
//! for `Accept: text/csv` (or `_format=csv`). The figures are made in
//! `crate::dashboard`; errors are OperationOutcomes in FHIR JSON.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::{form_pairs, Output};
use super::{render, AppState};
use crate::dashboard::{self, Request};
use crate::fhir::outcome::FhirResult;

pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let result: FhirResult<HttpResponse> = async {
        let caller = super::auth::principal(&req)?;
        let request = Request::parse(
            &form_pairs(req.query_string().as_bytes()),
            dashboard::today(),
        )?;
        let settings = state.dashboard;
        let m = state
            .store
            .run(move |s| dashboard::metrics(&caller, s, &request, settings))
            .await?;
        Ok(if super::negotiate::wants_csv(&req) {
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "text/csv; charset=utf-8"))
                .body(dashboard::csv::to_csv(&m)?)
        } else {
            HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
                .body(m.to_json().to_string())
        })
    }
    .await;
    result.unwrap_or_else(|e| render::error_response(&e, &Output::default()))
}
