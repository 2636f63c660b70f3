//! Writing responses: stored JSON out as it is (or pretty, or as XML),
//! version headers, and every error as an OperationOutcome.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::Value;

use super::negotiate::{Output, Return};
use crate::fhir::instant;
use crate::fhir::outcome::{outcome, FhirError, FhirResult, IssueType};
use crate::fhir::resource::Format;

/// A stored version of a resource, whichever table it came from.
pub struct Versioned<'a> {
    pub res_type: &'a str,
    pub id: &'a str,
    pub version: i32,
    pub last_updated: &'a str,
    pub body: &'a str,
}

impl<'a> From<&'a crate::store::Current> for Versioned<'a> {
    fn from(c: &'a crate::store::Current) -> Self {
        Versioned {
            res_type: &c.res_type,
            id: &c.res_id,
            version: c.version,
            last_updated: &c.last_updated,
            body: &c.body,
        }
    }
}

pub use crate::fhir::resource::etag;

/// `http://host:port` as the client addressed us.
pub fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// Serialises JSON text in the negotiated format. Stored bytes go out
/// untouched unless the client asked for pretty JSON or for XML.
pub fn encode(out: &Output, json: &str) -> FhirResult<Vec<u8>> {
    match (out.format, out.pretty) {
        (Format::Json, false) => Ok(json.as_bytes().to_vec()),
        (Format::Json, true) => {
            let v: Value =
                serde_json::from_str(json).map_err(|e| FhirError::Internal(e.to_string()))?;
            serde_json::to_vec_pretty(&v).map_err(|e| FhirError::Internal(e.to_string()))
        }
        (Format::Xml, _) => sp_hub_codec::json_to_xml(json.as_bytes())
            .map_err(|e| FhirError::Internal(format!("XML conversion failed: {e}"))),
    }
}

pub fn body_response(status: StatusCode, out: &Output, json: &str) -> FhirResult<HttpResponse> {
    Ok(HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, format!("{}; charset=utf-8", out.mime)))
        .body(encode(out, json)?))
}

/// A resource response with ETag, Last-Modified and (for writes) Location,
/// its body shaped by `Prefer: return`.
pub fn resource_response(
    req: &HttpRequest,
    out: &Output,
    status: StatusCode,
    v: Versioned,
    with_location: bool,
    ret: Return,
) -> FhirResult<HttpResponse> {
    let mut builder = HttpResponse::build(status);
    builder.insert_header((header::ETAG, etag(v.version)));
    if let Some(date) = instant::http_date(v.last_updated) {
        builder.insert_header((header::LAST_MODIFIED, date));
    }
    if with_location {
        builder.insert_header((
            header::LOCATION,
            format!(
                "{}/{}/{}/_history/{}",
                base_url(req),
                v.res_type,
                v.id,
                v.version
            ),
        ));
    }
    let json = match ret {
        Return::Minimal => return Ok(builder.finish()),
        Return::Representation => v.body.to_string(),
        Return::OperationOutcome => outcome(
            "information",
            IssueType::Informational,
            &format!("{}/{} version {} stored", v.res_type, v.id, v.version),
            None,
        )
        .to_string(),
    };
    Ok(builder
        .insert_header((header::CONTENT_TYPE, format!("{}; charset=utf-8", out.mime)))
        .body(encode(out, &json)?))
}

/// The error as an OperationOutcome, in the client's format where possible.
pub fn error_response(err: &FhirError, out: &Output) -> HttpResponse {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
    }
    let json = err.to_outcome().to_string();
    let out = match out.format {
        Format::Xml if sp_hub_codec::json_to_xml(json.as_bytes()).is_ok() => *out,
        _ => Output {
            format: Format::Json,
            mime: super::negotiate::FHIR_JSON,
            pretty: out.pretty,
        },
    };
    let mut builder = HttpResponse::build(status);
    if let Some(seconds) = err.retry_after() {
        builder.insert_header((header::RETRY_AFTER, seconds));
    }
    let body = encode(&out, &json).unwrap_or_else(|_| json.into_bytes());
    builder
        .insert_header((header::CONTENT_TYPE, format!("{}; charset=utf-8", out.mime)))
        .body(body)
}
