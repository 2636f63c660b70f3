//! A Subscription as a client writes it: checked (criteria the hub can
//! match, a rest-hook channel to an allowed endpoint, a status a client may
//! set), its signing secret taken out before it is stored, and its row of
//! `subscriptions` kept in step.
//!
//! Status is the R4 lifecycle: a client writes `requested` (or `off`);
//! the hub sends a handshake and makes it `active` once the endpoint
//! accepts it, and `error` after too many failed deliveries. A client
//! wanting deliveries again after `error` writes `requested` again.

use serde_json::Value;

use super::{config, criteria_pairs, TYPES};
use crate::auth::access::Access;
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::search::SearchQuery;
use crate::store::{Current, SubscriptionRow, Tx};

/// The extension that carries a subscription's signing secret when a
/// client writes it. It is never stored in the resource.
pub const SECRET_URL: &str =
    "https://sp-hub.example/fhir/StructureDefinition/sp-subscription-secret";

/// Payload MIME types that ask for the full resource.
const FULL_RESOURCE: [&str; 2] = ["application/fhir+json", "application/json"];

/// Headers of ours that a subscription may not set.
const RESERVED: [&str; 5] = [
    "content-type",
    "content-length",
    "host",
    "x-sp-hub-delivery",
    "x-sp-hub-signature",
];

/// What the write path learnt from a Subscription.
#[derive(Debug)]
pub struct Spec {
    res_type: String,
    criteria: String,
    endpoint: String,
    headers: Vec<String>,
    full_resource: bool,
    status: String,
    secret: Option<String>,
}

fn bad(message: impl Into<String>, at: &str) -> FhirError {
    FhirError::unprocessable_at(message, format!("Subscription.{at}"))
}

/// Checks a Subscription being written over `current` and takes its secret
/// out of `resource`.
pub fn accept(resource: &mut Value, current: Option<&Current>) -> FhirResult<Spec> {
    let secret = take_secret(resource)?;
    let before = current
        .filter(|c| !c.deleted)
        .and_then(|c| serde_json::from_str::<Value>(&c.body).ok());
    if secret.is_none() && before.is_none() {
        return Err(bad(
            format!("a new subscription needs a signing secret: an extension {SECRET_URL} with valueString of 32 to 256 characters"),
            "extension",
        ));
    }
    let status = resource["status"].as_str().unwrap_or_default().to_string();
    let unchanged = before
        .as_ref()
        .is_some_and(|b| b["status"].as_str() == Some(status.as_str()));
    if !matches!(status.as_str(), "requested" | "off") && !unchanged {
        return Err(bad(
            format!("a client sets status to requested or off, not '{status}': the hub makes a subscription active once its endpoint answers the handshake, and error when deliveries keep failing"),
            "status",
        ));
    }
    let (res_type, criteria) = check_criteria(resource["criteria"].as_str().unwrap_or_default())?;
    let channel = &resource["channel"];
    if channel["type"].as_str() != Some("rest-hook") {
        return Err(bad(
            format!(
                "channel.type '{}' is not supported: only rest-hook",
                channel["type"].as_str().unwrap_or_default()
            ),
            "channel.type",
        ));
    }
    let endpoint = channel["endpoint"]
        .as_str()
        .ok_or_else(|| bad("a rest-hook channel needs an endpoint", "channel.endpoint"))?;
    check_endpoint(endpoint)
        .map_err(|e| bad(format!("channel.endpoint {e}"), "channel.endpoint"))?;
    let full_resource = match channel["payload"].as_str() {
        None => false,
        Some(p) if FULL_RESOURCE.contains(&p) => true,
        Some(p) => {
            return Err(bad(
                format!("channel.payload '{p}' is not supported: application/fhir+json (the full resource), or none (id-only notifications)"),
                "channel.payload",
            ))
        }
    };
    let mut headers = vec![];
    for (i, h) in channel["header"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("channel.header[{i}]");
        let h = h.as_str().unwrap_or_default();
        check_header(h).map_err(|e| bad(e, &at))?;
        headers.push(h.to_string());
    }
    if headers.len() > 16 {
        return Err(bad("at most 16 headers", "channel.header"));
    }
    Ok(Spec {
        res_type,
        criteria,
        endpoint: endpoint.to_string(),
        headers,
        full_resource,
        status,
        secret,
    })
}

/// Removes the secret extension, returning its value.
fn take_secret(resource: &mut Value) -> FhirResult<Option<String>> {
    let Some(extensions) = resource.get_mut("extension").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let Some(i) = extensions.iter().position(|e| e["url"] == SECRET_URL) else {
        return Ok(None);
    };
    let secret = extensions.remove(i)["valueString"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if extensions.is_empty() {
        if let Some(o) = resource.as_object_mut() {
            o.remove("extension");
        }
    }
    if !(32..=256).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "the signing secret must be 32 to 256 visible ASCII characters",
            &format!("extension[{i}].valueString"),
        ));
    }
    Ok(Some(secret))
}

/// `Type?query` with a type the hub notifies about and a query it can
/// match exactly (unknown parameters are an error, not ignored: a
/// subscriber would otherwise get more than it asked for).
fn check_criteria(criteria: &str) -> FhirResult<(String, String)> {
    let (res_type, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if !TYPES.contains(&res_type) {
        return Err(bad(
            format!(
                "criteria '{}' must search one of {}",
                criteria.chars().take(100).collect::<String>(),
                TYPES.join(", ")
            ),
            "criteria",
        ));
    }
    SearchQuery::parse(res_type, &criteria_pairs(query), true)
        .map_err(|e| bad(format!("criteria: {e}"), "criteria"))?;
    Ok((res_type.to_string(), query.to_string()))
}

/// An endpoint the hub may send to: https, or http to a loopback
/// receiver when the operator allows loopback; its host resolving to
/// allowed addresses only. Checked again before every delivery.
pub fn check_endpoint(endpoint: &str) -> Result<std::net::SocketAddr, String> {
    let u = url::Url::parse(endpoint).map_err(|e| format!("'{endpoint}' is not a URL: {e}"))?;
    endpoint_address(&u, |host, port| {
        crate::outbound::resolve_blocking(host, port, super::allow())
    })
}

/// The checks of `check_endpoint`, with the lookup given.
pub(super) fn endpoint_address(
    u: &url::Url,
    resolve: impl FnOnce(&str, u16) -> Result<std::net::SocketAddr, String>,
) -> Result<std::net::SocketAddr, String> {
    let (host, port) = crate::outbound::target(u, config().allow_loopback)?;
    let addr = resolve(&host, port)?;
    if u.scheme() == "http" && !addr.ip().is_loopback() {
        return Err("must be https (plain http only to a loopback receiver)".into());
    }
    Ok(addr)
}

fn check_header(h: &str) -> Result<(), String> {
    let (name, value) = h
        .split_once(':')
        .ok_or_else(|| format!("'{h}' is not 'Name: value'"))?;
    let name = name.trim();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(token) {
        return Err(format!("'{name}' is not a header name"));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("the header {name} is set by the hub"));
    }
    if !value
        .trim()
        .bytes()
        .all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(format!("the value of {name} must be visible ASCII"));
    }
    Ok(())
}

/// Keeps the subscription's row in step with the version just written, and
/// queues the handshake when it asks for deliveries to (re)start.
pub fn register(tx: &mut Tx, id: &str, version: i32, spec: Spec) -> FhirResult<()> {
    let existing = tx.subscription(id)?;
    let (organization, role) = match (&existing, tx.access()) {
        // The view stays the subscriber's, whoever edits it later.
        (Some(e), _) => (e.organization.clone(), e.role.clone()),
        (None, Access::All) => (String::new(), "admin".to_string()),
        (None, Access::Org(o)) => (o.org.clone(), o.role.as_str().to_string()),
    };
    let restart = spec.status == "requested";
    let secret = match (spec.secret, &existing) {
        (Some(s), _) => s,
        (None, Some(e)) => e.secret.clone(),
        (None, None) => {
            return Err(bad(
                "a new subscription needs a signing secret",
                "extension",
            ));
        }
    };
    let row = SubscriptionRow {
        id: id.to_string(),
        organization,
        role,
        res_type: spec.res_type,
        criteria: spec.criteria,
        endpoint: spec.endpoint,
        headers: serde_json::to_string(&spec.headers)
            .map_err(|e| FhirError::Internal(e.to_string()))?,
        full_resource: spec.full_resource,
        secret,
        status: spec.status.clone(),
        events: existing.as_ref().map_or(0, |e| e.events),
        failures: if restart {
            0
        } else {
            existing.as_ref().map_or(0, |e| e.failures)
        },
        // Due at once: an empty text sorts before every instant.
        next_attempt: if restart {
            String::new()
        } else {
            existing
                .as_ref()
                .map_or(String::new(), |e| e.next_attempt.clone())
        },
        leased_until: existing
            .as_ref()
            .map_or(String::new(), |e| e.leased_until.clone()),
        last_error: String::new(),
    };
    tx.put_subscription(&row)?;
    match spec.status.as_str() {
        // Off: what was not sent yet is dropped with the wish for it.
        "off" => tx.clear_outbox(id)?,
        "requested" if !tx.has_pending_handshake(id)? => {
            tx.enqueue(id, "handshake", ("Subscription", id, version))?
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value_and_not_ours() {
        assert!(check_header("Authorization: Bearer abc").is_ok());
        assert!(check_header("X-Api-Key:k").is_ok());
        assert!(check_header("no colon").is_err());
        assert!(check_header("Bad Name: v").is_err());
        assert!(check_header("X-SP-Hub-Signature: forged").is_err());
        assert!(check_header("Content-Type: text/plain").is_err());
        assert!(check_header("X-A: line\nbreak").is_err());
    }

    #[test]
    fn endpoints_are_checked_on_the_resolved_address() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        let at = |ip: &str| {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            move |_: &str, port: u16| {
                if crate::outbound::Allow::Public.permits(ip) {
                    Ok(std::net::SocketAddr::new(ip, port))
                } else {
                    Err(format!("{ip} refused"))
                }
            }
        };
        assert!(endpoint_address(&u("https://hooks.example/x"), at("8.8.8.8")).is_ok());
        // A public name that resolves to the metadata address is refused.
        assert!(endpoint_address(&u("https://hooks.example/x"), at("169.254.169.254")).is_err());
        assert!(endpoint_address(&u("http://hooks.example/x"), at("8.8.8.8")).is_err());
    }
}
