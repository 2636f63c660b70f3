//! HTTP content negotiation and the request headers FHIR gives meaning to:
//! `_format`/`Accept`, `Content-Type`, `Prefer`, `If-Match`, `_pretty`.

use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpRequest;

use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource::Format;

/// How the response body is written.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
    pub mime: &'static str,
    pub pretty: bool,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            format: Format::Json,
            mime: FHIR_JSON,
            pretty: false,
        }
    }
}

pub const FHIR_JSON: &str = "application/fhir+json";
pub const FHIR_XML: &str = "application/fhir+xml";

/// Maps a media type (or `_format` short name) to what we write back.
fn output_for(mime: &str) -> Option<(Format, &'static str)> {
    Some(match mime {
        "json" | FHIR_JSON => (Format::Json, FHIR_JSON),
        "application/json" => (Format::Json, "application/json"),
        "*/*" | "application/*" => (Format::Json, FHIR_JSON),
        "xml" | FHIR_XML => (Format::Xml, FHIR_XML),
        "application/xml" => (Format::Xml, "application/xml"),
        "text/xml" => (Format::Xml, "text/xml"),
        _ => return None,
    })
}

fn essence(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A query parameter's value (first occurrence), percent-decoded.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Output {
    /// `_format` wins over `Accept` (http.html#mime-type).
    pub fn negotiate(req: &HttpRequest) -> FhirResult<Output> {
        let pretty = query_param(req, "_pretty").as_deref() == Some("true");
        if let Some(f) = query_param(req, "_format") {
            let (format, mime) = output_for(&essence(&f)).ok_or_else(|| {
                FhirError::NotAcceptable(format!(
                    "_format '{f}' is not supported; use json, xml, {FHIR_JSON} or {FHIR_XML}"
                ))
            })?;
            return Ok(Output {
                format,
                mime,
                pretty,
            });
        }
        let accept = header_str(req.headers(), header::ACCEPT).unwrap_or("");
        if accept.trim().is_empty() {
            return Ok(Output {
                pretty,
                ..Output::default()
            });
        }
        // Take the first acceptable type in the client's order of preference.
        let mut ranges: Vec<(f32, usize, String)> = accept
            .split(',')
            .enumerate()
            .map(|(i, part)| {
                let q = part
                    .split(';')
                    .skip(1)
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                (q, i, essence(part))
            })
            .filter(|(q, _, _)| *q > 0.0)
            .collect();
        ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranges
            .iter()
            .find_map(|(_, _, m)| output_for(m))
            .map(|(format, mime)| Output { format, mime, pretty })
            .ok_or_else(|| {
                FhirError::NotAcceptable(format!(
                    "none of the Accept types '{accept}' is supported; use {FHIR_JSON} or {FHIR_XML}"
                ))
            })
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The format of a request body from `Content-Type` (missing means JSON).
pub fn input_format(req: &HttpRequest) -> FhirResult<Format> {
    let Some(raw) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(Format::Json);
    };
    let value = raw.to_str().unwrap_or("");
    match essence(value).as_str() {
        FHIR_JSON | "application/json" => Ok(Format::Json),
        FHIR_XML | "application/xml" | "text/xml" => Ok(Format::Xml),
        other => Err(FhirError::UnsupportedMediaType(format!(
            "Content-Type '{other}' is not supported; send {FHIR_JSON} or {FHIR_XML}"
        ))),
    }
}

/// True when the request body is `application/json-patch+json`.
pub fn is_json_patch(req: &HttpRequest) -> bool {
    header_str(req.headers(), header::CONTENT_TYPE)
        .is_some_and(|v| essence(v) == "application/json-patch+json")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

/// `Prefer: return=...` (representation when absent or unknown).
pub fn prefer_return(req: &HttpRequest) -> Return {
    let prefer = req
        .headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("return=").map(str::to_string));
    match prefer.as_deref().map(|s| s.trim_matches('"')) {
        Some("minimal") => Return::Minimal,
        Some("OperationOutcome") => Return::OperationOutcome,
        _ => Return::Representation,
    }
}

/// `Prefer: handling=strict` (search.html#errors): unknown search
/// parameters are an error instead of being ignored.
pub fn handling_strict(req: &HttpRequest) -> bool {
    req.headers()
        .get_all("prefer")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim() == "handling=strict")
}

/// `If-Match: W/"3"` (the weak form FHIR uses; a strong "3" is accepted).
pub fn if_match(req: &HttpRequest) -> FhirResult<Option<i32>> {
    let Some(raw) = header_str(req.headers(), header::IF_MATCH) else {
        return Ok(None);
    };
    let tag = raw.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
    tag.parse::<i32>().map(Some).map_err(|_| {
        FhirError::PreconditionFailed(format!(
            "If-Match '{raw}' names no version of this resource (expected W/\"<versionId>\")"
        ))
    })
}

/// `If-None-Exist: identifier=sys|val` as search parameters.
pub fn if_none_exist(req: &HttpRequest) -> Option<Vec<(String, String)>> {
    let raw = header_str(
        req.headers(),
        header::HeaderName::from_static("if-none-exist"),
    )?;
    // Clients send either "a=b" or a URL tail "Patient?a=b".
    let query = raw.split_once('?').map_or(raw, |(_, q)| q);
    Some(form_pairs(query.as_bytes()))
}

pub fn form_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub const CSV: &str = "text/csv";

/// Whether the client asked for CSV (`_format=csv` or `Accept: text/csv`):
/// the dashboard's figures and a VCS's flat records.
pub fn wants_csv(req: &HttpRequest) -> bool {
    match query_param(req, "_format") {
        Some(f) => f == "csv" || f == CSV,
        None => req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains(CSV)),
    }
}
