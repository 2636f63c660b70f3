//! `GET ServiceRequest/{id}/$trail`: the referral's whole story as one
//! `collection` Bundle (see `interactions::trail`).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::render::{self, base_url};
use super::{handle, AppState};
use crate::fhir::bundle::{self, Bundle, Entry};
use crate::interactions::trail;

pub async fn referral(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let id = path.into_inner();
    handle(&req.clone(), |out| async move {
        let base = base_url(&req);
        let b = base.clone();
        let caller = super::auth::principal(&req)?;
        let steps = state
            .store
            .run(move |s| trail::trail(&caller, s, &id, &b))
            .await?;
        let entries = steps
            .into_iter()
            .map(|step| {
                let v = step.version;
                Entry {
                    extension: step.extension,
                    // R4 Bundle.entry.fullUrl is version-independent; bdl-7
                    // lets entries share it when their versionIds differ.
                    full_url: Some(format!("{base}/{}/{}", v.res_type, v.res_id)),
                    resource: v.body.and_then(bundle::raw),
                    ..Default::default()
                }
            })
            .collect();
        let body = Bundle::new("collection", None, vec![], entries).to_json();
        render::body_response(StatusCode::OK, &out, &body)
    })
    .await
}
