//! Bundles built around stored JSON: entries embed the stored bytes as they
//! are, so a page of results is never re-serialised resource by resource.

use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
pub struct Link {
    pub relation: &'static str,
    pub url: String,
}

#[derive(Serialize, Default)]
pub struct Entry {
    #[serde(rename = "fullUrl", skip_serializing_if = "Option::is_none")]
    pub full_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Response>,
}

#[derive(Serialize)]
pub struct SearchInfo {
    pub mode: &'static str,
}

#[derive(Serialize)]
pub struct Request {
    pub method: String,
    pub url: String,
}

#[derive(Serialize)]
pub struct Response {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "lastModified")]
    pub last_modified: String,
}

#[derive(Serialize)]
pub struct Bundle {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub id: String,
    pub meta: Meta,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub total: i64,
    pub link: Vec<Link>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entry: Vec<Entry>,
}

#[derive(Serialize)]
pub struct Meta {
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
}

impl Bundle {
    pub fn new(kind: &'static str, total: i64, link: Vec<Link>, entry: Vec<Entry>) -> Bundle {
        Bundle {
            resource_type: "Bundle",
            id: uuid::Uuid::new_v4().to_string(),
            meta: Meta {
                last_updated: super::instant::now(),
            },
            kind,
            total,
            link,
            entry,
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain structs and already-valid raw JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Embeds JSON text known to be valid (it came from our own store).
pub fn raw(json: String) -> Option<Box<RawValue>> {
    RawValue::from_string(json).ok()
}
