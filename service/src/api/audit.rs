//! `GET /$audit`: the audit trail as FHIR AuditEvents, oldest first, for
//! admin clients (`auth::need` says so).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::negotiate::query_param;
use super::render::{self, base_url};
use super::{handle, AppState};
use crate::fhir::outcome::FhirError;

pub async fn trail(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    handle(&req.clone(), |out| async move {
        let count = match query_param(&req, "_count") {
            Some(v) => crate::search::parse_count(&v)?,
            None => crate::search::DEFAULT_COUNT,
        };
        let after: i64 = match query_param(&req, "_after") {
            Some(v) => v.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                FhirError::invalid_at("_after must be an audit record number", "_after")
            })?,
            None => 0,
        };
        let records = state
            .store
            .run(move |s| s.audit_records(after, count + 1))
            .await?;
        let more = records.len() as i64 > count;
        let records = &records[..records.len().min(count as usize)];
        let base = base_url(&req);
        let mut link = vec![json!({"relation": "self",
            "url": format!("{base}/$audit?_after={after}&_count={count}")})];
        if let (true, Some(last)) = (more, records.last()) {
            link.push(json!({"relation": "next",
                "url": format!("{base}/$audit?_after={}&_count={count}", last.seq)}));
        }
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "collection",
            "link": link,
            "entry": records.iter().map(|c| json!({
                "fullUrl": format!("{base}/$audit?_after={}&_count=1", c.seq - 1),
                "resource": crate::audit::to_audit_event(c),
            })).collect::<Vec<_>>(),
        });
        render::body_response(StatusCode::OK, &out, &bundle.to_string())
    })
    .await
}
