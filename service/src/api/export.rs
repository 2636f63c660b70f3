//! Bulk Data export over HTTP (`crate::export`): the kick-off
//! (`GET /$export`, `GET /Group/{id}/$export`), the status URL it hands
//! out (`GET` to poll, `DELETE` to cancel) and the output files.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::{form_pairs, Output};
use super::render::{self, base_url};
use super::{handle, AppState};
use crate::export::{self, Status};
use crate::fhir::outcome::{outcome, FhirError, FhirResult, IssueType};

/// `GET /$export`: everything the caller may read.
pub async fn system(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    kick_off(req, state, None).await
}

/// `GET /Group/{id}/$export`: the Group's patients and their records.
pub async fn group(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    kick_off(req, state, Some(path.into_inner())).await
}

async fn kick_off(
    req: HttpRequest,
    state: web::Data<AppState>,
    group: Option<String>,
) -> HttpResponse {
    let out = match Output::negotiate(&req) {
        Ok(out) => out,
        Err(e) => return render::error_response(&e, &Output::default()),
    };
    match started(&req, &state, group, &out).await {
        Ok(resp) => resp,
        Err(e) => render::error_response(&e, &out),
    }
}

async fn started(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    group: Option<String>,
    out: &Output,
) -> FhirResult<HttpResponse> {
    let caller = super::auth::principal(req)?;
    let respond_async = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim() == "respond-async");
    if !respond_async {
        return Err(FhirError::invalid(
            "$export runs asynchronously: send the header Prefer: respond-async",
        ));
    }
    let params = form_pairs(req.query_string().as_bytes());
    let request = export::parse(&caller, &params, group.is_some())?;
    let base = base_url(req);
    let url = format!(
        "{base}{}",
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let left_out = request.left_out.clone();
    let job = state
        .store
        .run(move |s| export::kick_off(&caller, s, &request, group.as_deref(), &url))
        .await?;
    export::start_counting(state.store.clone(), job.id.clone(), job.lease_until);
    let message = if left_out.is_empty() {
        "export started".to_string()
    } else {
        format!(
            "export started; left out (the token's scopes do not allow reading them): {}",
            left_out.join(", ")
        )
    };
    let body = outcome("information", IssueType::Informational, &message, None).to_string();
    let mut resp = render::body_response(StatusCode::ACCEPTED, out, &body)?;
    let location = format!("{base}/$export-status/{}", job.id);
    resp.headers_mut().insert(
        header::CONTENT_LOCATION,
        header::HeaderValue::from_str(&location)
            .map_err(|e| FhirError::Internal(format!("status URL: {e}")))?,
    );
    Ok(resp)
}

/// `GET /$export-status/{id}`: 202 with `X-Progress` while counting, 200
/// with the manifest when done, the error as an OperationOutcome if the
/// job failed.
pub async fn status(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    handle(&req.clone(), |_out| async move {
        let caller = super::auth::principal(&req)?;
        let i = id.clone();
        let (status, resume) = state
            .store
            .run(move |s| export::status(&caller, s, &i))
            .await?;
        if let Some(lease) = resume {
            export::start_counting(state.store.clone(), id, lease);
        }
        match status {
            Status::Counting(progress) => Ok(HttpResponse::Accepted()
                .insert_header(("X-Progress", progress))
                .insert_header((header::RETRY_AFTER, 1))
                .finish()),
            Status::Done(job) => Ok(HttpResponse::Ok()
                .content_type("application/json")
                .body(export::manifest(&job, &base_url(&req)).to_string())),
            Status::Failed(message) => Err(FhirError::Internal(message)),
        }
    })
    .await
}

/// `DELETE /$export-status/{id}`: cancels the job; its status and files
/// are gone (404) from then on.
pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        let i = id.clone();
        state
            .store
            .run(move |s| export::cancel(&caller, s, &i))
            .await?;
        let message = format!("export job {id} cancelled");
        let body = outcome("information", IssueType::Informational, &message, None);
        render::body_response(StatusCode::ACCEPTED, &out, &body.to_string())
    })
    .await
}

/// `GET /$export-file/{id}/{type}`: one output file, NDJSON, streamed.
/// Errors are JSON OperationOutcomes whatever the `Accept` (it asks for
/// NDJSON, which an error is not).
pub async fn file(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (id, res_type) = path.into_inner();
    let opened = async {
        let caller = super::auth::principal(&req)?;
        let access = crate::auth::access::Access::of(&caller);
        let t = res_type.clone();
        let job = state
            .store
            .run(move |s| export::open_file(&caller, s, &id, &t))
            .await?;
        Ok::<_, FhirError>(export::lines(state.store.clone(), access, job, res_type))
    };
    match opened.await {
        Ok(lines) => HttpResponse::Ok()
            .content_type("application/fhir+ndjson")
            .streaming(lines),
        Err(e) => render::error_response(&e, &Output::default()),
    }
}
