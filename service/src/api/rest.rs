//! Handlers for the instance and type interactions.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::{self, form_pairs, prefer_return, Output, Return};
use super::render::{self, base_url, resource_response, Versioned};
use super::{handle, read_body, AppState};
use crate::fhir::bundle;
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::summary;
use crate::interactions::{self as fhir, Body, Created};
use crate::search::{parse_elements, parse_summary};
use crate::store::WriteOutcome;

type TypePath = web::Path<String>;
type InstancePath = web::Path<(String, String)>;

/// The status a write earns: 201 when it brought a resource into being.
fn write_status(w: &WriteOutcome) -> StatusCode {
    if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    }
}

fn written(req: &HttpRequest, out: &Output, w: &WriteOutcome) -> FhirResult<HttpResponse> {
    resource_response(
        req,
        out,
        write_status(w),
        (&w.current).into(),
        true,
        prefer_return(req),
    )
}

pub async fn create(
    req: HttpRequest,
    path: TypePath,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let res_type = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let format = negotiate::input_format(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let criteria = negotiate::if_none_exist(&req);
        let t = res_type.clone();
        let base = base_url(&req);
        let created = state
            .store
            .run(move |s| {
                fhir::create(
                    &caller,
                    s,
                    &t,
                    Body {
                        bytes: &bytes,
                        format,
                    },
                    criteria.as_deref(),
                    &base,
                )
            })
            .await?;
        match created {
            Created::New(w) => written(&req, &out, &w),
            Created::Existing(c) => resource_response(
                &req,
                &out,
                StatusCode::OK,
                (&c).into(),
                false,
                prefer_return(&req),
            ),
        }
    })
    .await
}

/// `POST /`: a transaction or batch Bundle.
pub async fn transaction(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        let format = negotiate::input_format(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let base = base_url(&req);
        let max = state.max_bundle_entries;
        let result = state
            .store
            .run(move |s| {
                fhir::bundle(
                    &caller,
                    s,
                    Body {
                        bytes: &bytes,
                        format,
                    },
                    &base,
                    max,
                )
            })
            .await?;
        render::body_response(StatusCode::OK, &out, &result.0)
    })
    .await
}

pub async fn read(
    req: HttpRequest,
    path: InstancePath,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (res_type, id) = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let shape = Shape::from_request(&req)?;
        let current = state
            .store
            .run(move |s| fhir::read(&caller, s, &res_type, &id))
            .await?;
        let body = shape.apply(&current.body)?;
        let v = Versioned {
            body: &body,
            ..(&current).into()
        };
        resource_response(&req, &out, StatusCode::OK, v, false, Return::Representation)
    })
    .await
}

pub async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (res_type, id, vid) = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let shape = Shape::from_request(&req)?;
        let v = state
            .store
            .run(move |s| fhir::vread(&caller, s, &res_type, &id, &vid))
            .await?;
        let body = shape.apply(v.body.as_deref().unwrap_or_default())?;
        let versioned = Versioned {
            res_type: &v.res_type,
            id: &v.res_id,
            version: v.version,
            last_updated: &v.last_updated,
            body: &body,
        };
        resource_response(
            &req,
            &out,
            StatusCode::OK,
            versioned,
            false,
            Return::Representation,
        )
    })
    .await
}

pub async fn update(
    req: HttpRequest,
    path: InstancePath,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let (res_type, id) = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let format = negotiate::input_format(&req)?;
        let if_match = negotiate::if_match(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let w = state
            .store
            .run(move |s| {
                fhir::update(
                    &caller,
                    s,
                    &res_type,
                    &id,
                    Body {
                        bytes: &bytes,
                        format,
                    },
                    if_match,
                )
            })
            .await?;
        written(&req, &out, &w)
    })
    .await
}

pub async fn conditional_update(
    req: HttpRequest,
    path: TypePath,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let res_type = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let format = negotiate::input_format(&req)?;
        let if_match = negotiate::if_match(&req)?;
        let criteria = form_pairs(req.query_string().as_bytes());
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let base = base_url(&req);
        let w = state
            .store
            .run(move |s| {
                fhir::conditional_update(
                    &caller,
                    s,
                    &res_type,
                    &criteria,
                    Body {
                        bytes: &bytes,
                        format,
                    },
                    if_match,
                    &base,
                )
            })
            .await?;
        written(&req, &out, &w)
    })
    .await
}

pub async fn patch(
    req: HttpRequest,
    path: InstancePath,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let (res_type, id) = path.into_inner();
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        if !negotiate::is_json_patch(&req) {
            return Err(FhirError::UnsupportedMediaType(
                "PATCH takes a JSON Patch document (Content-Type application/json-patch+json)"
                    .into(),
            ));
        }
        let if_match = negotiate::if_match(&req)?;
        let bytes = read_body(&req, payload, state.max_body_bytes).await?;
        let w = state
            .store
            .run(move |s| fhir::patch(&caller, s, &res_type, &id, &bytes, if_match))
            .await?;
        written(&req, &out, &w)
    })
    .await
}

pub async fn delete(
    req: HttpRequest,
    path: InstancePath,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (res_type, id) = path.into_inner();
    handle(&req.clone(), |_out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let if_match = negotiate::if_match(&req)?;
        let w = state
            .store
            .run(move |s| fhir::delete(&caller, s, &res_type, &id, if_match))
            .await?;
        Ok(deleted(Some(&w)))
    })
    .await
}

pub async fn conditional_delete(
    req: HttpRequest,
    path: TypePath,
    state: web::Data<AppState>,
) -> HttpResponse {
    let res_type = path.into_inner();
    handle(&req.clone(), |_out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let criteria = form_pairs(req.query_string().as_bytes());
        let base = base_url(&req);
        let w = state
            .store
            .run(move |s| fhir::conditional_delete(&caller, s, &res_type, &criteria, &base))
            .await?;
        Ok(deleted(w.as_ref()))
    })
    .await
}

fn deleted(w: Option<&WriteOutcome>) -> HttpResponse {
    let mut resp = HttpResponse::NoContent();
    if let Some(w) = w {
        resp.insert_header((
            actix_web::http::header::ETAG,
            render::etag(w.current.version),
        ));
    }
    resp.finish()
}

pub async fn search_get(
    req: HttpRequest,
    path: TypePath,
    state: web::Data<AppState>,
) -> HttpResponse {
    let params = form_pairs(req.query_string().as_bytes());
    search(req, path.into_inner(), params, state).await
}

/// `POST /{type}/_search`: form parameters in the body, joined to any in the URL.
pub async fn search_post(
    req: HttpRequest,
    path: TypePath,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_string();
    let body = if content_type.starts_with("application/x-www-form-urlencoded") {
        read_body(&req, payload, state.max_body_bytes).await
    } else {
        Err(FhirError::UnsupportedMediaType(format!(
            "_search takes application/x-www-form-urlencoded, not '{content_type}'"
        )))
    };
    match body {
        Ok(body) => {
            let mut params = form_pairs(req.query_string().as_bytes());
            params.extend(form_pairs(&body));
            search(req, path.into_inner(), params, state).await
        }
        Err(e) => handle(&req.clone(), |_| async move { Err(e) }).await,
    }
}

async fn search(
    req: HttpRequest,
    res_type: String,
    params: Vec<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        let caller = super::auth::principal(&req)?;
        fhir::check_type(&res_type)?;
        let t = res_type.clone();
        let strict = negotiate::handling_strict(&req);
        let base = base_url(&req);
        let (q, page) = state
            .store
            .run(move |s| fhir::search(&caller, s, &t, &params, strict, &base))
            .await?;
        let body = bundle::searchset(&base_url(&req), &res_type, &q, page)?;
        render::body_response(StatusCode::OK, &out, &body)
    })
    .await
}

/// `_summary` / `_elements` on read and vread.
struct Shape {
    summary: Option<crate::search::Summary>,
    elements: Option<Vec<String>>,
}

impl Shape {
    fn from_request(req: &HttpRequest) -> FhirResult<Shape> {
        let summary = negotiate::query_param(req, "_summary")
            .map(|v| parse_summary(&v))
            .transpose()?;
        let elements = negotiate::query_param(req, "_elements").map(|v| parse_elements(&v));
        Ok(Shape { summary, elements })
    }

    fn apply(&self, body: &str) -> FhirResult<String> {
        if self.summary.is_none() && self.elements.is_none() {
            return Ok(body.to_string());
        }
        summary::apply_to_text(body, self.summary, self.elements.as_deref())
    }
}
