//! Bundles built around stored JSON: entries embed the stored bytes as they
//! are, so a page of results is never re-serialised resource by resource.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::fhir::outcome::FhirResult;
use crate::search::{encode_cursor, SearchQuery};
use crate::store::{Current, Page};

#[derive(Serialize)]
pub struct Link {
    pub relation: &'static str,
    pub url: String,
}

#[derive(Serialize, Default)]
pub struct Entry {
    /// Extensions on the entry itself (`$trail` marks who did each step).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extension: Vec<serde_json::Value>,
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

#[derive(Serialize, Default)]
pub struct Response {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(rename = "lastModified", skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Box<RawValue>>,
}

#[derive(Serialize)]
pub struct Bundle {
    #[serde(rename = "resourceType")]
    pub resource_type: &'static str,
    pub id: String,
    pub meta: Meta,
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Only searchset and history Bundles carry a total (bdl-1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
    pub fn new(
        kind: &'static str,
        total: Option<i64>,
        link: Vec<Link>,
        entry: Vec<Entry>,
    ) -> Bundle {
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

/// `self` and (when another page follows) `next` links for a search or
/// history page at `url`: `params` are the parameters that were applied.
/// `next` carries the paging parameter and its value (`_cursor`, or
/// `_feed` for the change feed). A change feed also gets a `poll` link: the
/// URL to call next time, resuming after the last change this page holds.
pub fn page_links(
    url: &str,
    params: &[(&str, &str)],
    count: i64,
    next: Option<(&str, String)>,
    poll: Option<i64>,
) -> Vec<Link> {
    let with = |extra: Option<(&str, &str)>| {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            s.append_pair(k, v);
        }
        s.append_pair("_count", &count.to_string());
        if let Some((k, v)) = extra {
            s.append_pair(k, v);
        }
        format!("{url}?{}", s.finish())
    };
    let mut links = vec![Link {
        relation: "self",
        url: with(None),
    }];
    if let Some((k, v)) = &next {
        links.push(Link {
            relation: "next",
            url: with(Some((k, v))),
        });
    }
    if let Some(tick) = poll {
        links.push(Link {
            relation: "poll",
            url: with(Some(("_feed", &tick.to_string()))),
        });
    }
    links
}

/// The searchset Bundle for one page of results.
pub fn searchset(
    base: &str,
    res_type: &str,
    q: &SearchQuery,
    page: Page<Current>,
) -> FhirResult<String> {
    let kept: Vec<(&str, &str)> = q
        .applied
        .iter()
        .filter(|(k, _)| k != "_count")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let last = page.items.last();
    let (next, poll) = match q.feed {
        Some(from) => {
            let reached = last.map_or(from, |l| l.tick);
            (
                page.more.then(|| ("_feed", reached.to_string())),
                Some(reached),
            )
        }
        None => {
            let next = page.more.then_some(last).flatten();
            let cursor = |l: &Current| match &page.last_sort {
                Some(values) => {
                    encode_cursor("sort", &serde_json::to_string(values).unwrap_or_default())
                }
                None => encode_cursor("id", &l.res_id),
            };
            (next.map(|l| ("_cursor", cursor(l))), None)
        }
    };
    let links = page_links(&format!("{base}/{res_type}"), &kept, q.count, next, poll);
    let included = page.included.into_iter().map(|c| (c, "include"));
    let entries = page
        .items
        .into_iter()
        .map(|c| (c, "match"))
        .chain(included)
        .map(|(c, mode)| {
            let body = super::summary::apply_to_text(&c.body, q.summary, q.elements.as_deref())?;
            Ok(Entry {
                full_url: Some(format!("{base}/{}/{}", c.res_type, c.res_id)),
                resource: raw(body),
                search: Some(SearchInfo { mode }),
                ..Default::default()
            })
        })
        .collect::<FhirResult<Vec<_>>>()?;
    Ok(Bundle::new("searchset", page.total, links, entries).to_json())
}
