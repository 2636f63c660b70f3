//! History handlers: system, type and instance level.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::negotiate::form_pairs;
use super::render::{self, base_url, etag};
use super::{handle, AppState};
use crate::fhir::bundle::{self, Bundle, Entry, Request, Response};
use crate::interactions::{self as fhir};
use crate::search::encode_cursor;
use crate::store::{HistoryQuery, HistoryScope, Page, Version};

pub async fn system(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    history(req, HistoryScope::System, state).await
}

pub async fn of_type(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    history(req, HistoryScope::Type(path.into_inner()), state).await
}

pub async fn of_instance(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (t, id) = path.into_inner();
    history(req, HistoryScope::Instance(t, id), state).await
}

async fn history(
    req: HttpRequest,
    scope: HistoryScope,
    state: web::Data<AppState>,
) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        let path = match &scope {
            HistoryScope::System => "_history".to_string(),
            HistoryScope::Type(t) => {
                fhir::check_type(t)?;
                format!("{t}/_history")
            }
            HistoryScope::Instance(t, id) => {
                fhir::check_type(t)?;
                crate::fhir::resource::check_id(id)?;
                format!("{t}/{id}/_history")
            }
        };
        let params = form_pairs(req.query_string().as_bytes());
        let caller = super::auth::principal(&req)?;
        let q = fhir::history_query(&caller, scope, &params)?;
        let (q, page) = state
            .store
            .run(move |s| fhir::history(s, &q).map(|p| (q, p)))
            .await?;
        let body = bundle_of(&req, &path, &params, &q, page);
        render::body_response(StatusCode::OK, &out, &body)
    })
    .await
}

fn bundle_of(
    req: &HttpRequest,
    path: &str,
    params: &[(String, String)],
    q: &HistoryQuery,
    page: Page<Version>,
) -> String {
    let base = base_url(req);
    let kept: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "_since" | "_at"))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let last = page.items.last();
    let (next, poll) = match q.after_tick {
        Some(from) => {
            let reached = last.and_then(|l| l.tick).unwrap_or(from);
            (
                page.more.then(|| ("_feed", reached.to_string())),
                Some(reached),
            )
        }
        None => {
            let next = page.more.then_some(last).flatten();
            (
                next.map(|l| ("_cursor", encode_cursor("seq", &l.seq.to_string()))),
                None,
            )
        }
    };
    let links = bundle::page_links(&format!("{base}/{path}"), &kept, q.count, next, poll);
    let entries = page
        .items
        .into_iter()
        .map(|v| {
            let (url, status) = match (v.method.as_str(), v.version) {
                ("POST", _) => (v.res_type.clone(), "201 Created"),
                ("DELETE", _) => (format!("{}/{}", v.res_type, v.res_id), "204 No Content"),
                (_, 1) => (format!("{}/{}", v.res_type, v.res_id), "201 Created"),
                _ => (format!("{}/{}", v.res_type, v.res_id), "200 OK"),
            };
            Entry {
                full_url: Some(format!("{base}/{}/{}", v.res_type, v.res_id)),
                resource: v.body.and_then(bundle::raw),
                request: Some(Request {
                    method: v.method.clone(),
                    url,
                }),
                response: Some(Response {
                    status: status.into(),
                    etag: Some(etag(v.version)),
                    last_modified: Some(v.last_updated),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    Bundle::new("history", page.total, links, entries).to_json()
}
