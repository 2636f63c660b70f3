//! The audit trail: one record for every authenticated request (who, for
//! which organisation, what, with which outcome, when), in a hash chain —
//! each record carries the hash of the one before, so a record changed or
//! removed afterwards breaks the chain at that point (`sp-hub audit
//! verify`). Writes are recorded in their own database transaction; other
//! requests as they are answered. Records are served as FHIR AuditEvents.

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The request being served, as its audit record will name it; `recorded`
/// is set once a write's transaction has recorded it, so it is not
/// recorded twice.
#[derive(Debug, Default)]
pub struct Request {
    pub id: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub recorded: std::sync::atomic::AtomicBool,
}

/// The hash the first record chains from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One request, as recorded (everything but its place in the chain).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Record {
    pub recorded: String,
    pub request_id: String,
    pub client_id: String,
    pub organization: String,
    pub method: String,
    pub path: String,
    /// The query string: audits must say what was asked, identifiers and all.
    pub query: String,
    /// The versions a write made, `Type/id/_history/n`, space-separated.
    pub written: String,
    /// The HTTP status answered (0 when the response is not known yet: a
    /// write recorded inside its own transaction, which commits only on
    /// success).
    pub status: i32,
}

impl Record {
    /// The record of `request` by `client_id` for `organization` (both "-"
    /// when nobody could be identified).
    pub fn new(
        client_id: &str,
        organization: &str,
        request: &Request,
        written: String,
        status: i32,
    ) -> Record {
        Record {
            recorded: crate::fhir::instant::now(),
            request_id: request.id.clone(),
            client_id: client_id.to_string(),
            organization: organization.to_string(),
            method: request.method.clone(),
            path: request.path.clone(),
            query: request.query.clone(),
            written,
            status,
        }
    }
}

/// A record with its place in the chain.
#[derive(Debug, Clone)]
pub struct Chained {
    pub seq: i64,
    pub record: Record,
    pub prev_hash: String,
    pub hash: String,
}

/// The chain link: SHA-256 over the previous hash, the sequence number and
/// the record's fields in a fixed order.
pub fn link(prev_hash: &str, seq: i64, record: &Record) -> String {
    let body = serde_json::to_string(record).expect("a record serialises");
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The first record whose link does not hold, if any: its `prev_hash` is
/// not the hash of the record before, or its own hash does not match its
/// content, or a sequence number is missing.
pub fn first_broken(records: &[Chained], mut prev: (i64, String)) -> Option<(i64, String)> {
    for c in records {
        if c.seq != prev.0 + 1 {
            return Some((prev.0 + 1, format!("record {} is missing", prev.0 + 1)));
        }
        if c.prev_hash != prev.1 {
            return Some((
                c.seq,
                "its prev_hash is not the hash of the record before".into(),
            ));
        }
        if link(&c.prev_hash, c.seq, &c.record) != c.hash {
            return Some((c.seq, "its content does not match its hash".into()));
        }
        prev = (c.seq, c.hash.clone());
    }
    None
}

/// What the request was, in FHIR terms: (AuditEvent.subtype code of the
/// RESTful interaction, AuditEvent.action).
fn interaction(method: &str, path: &str) -> (&'static str, &'static str) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", [""]) => ("transaction", "E"),
        (_, ["auth", "token"]) => ("token", "E"),
        ("GET", ["_history"]) | ("GET", [_, "_history"]) | ("GET", [_, _, "_history"]) => {
            ("history", "R")
        }
        (_, [_, "_search"]) | ("GET", [_]) => ("search-type", "E"),
        ("GET", [_, _, "_history", _]) => ("vread", "R"),
        (_, segs) if segs.last().is_some_and(|s| s.starts_with('$')) => ("operation", "E"),
        ("GET", [_, _]) => ("read", "R"),
        ("POST", [_]) => ("create", "C"),
        ("PUT", _) => ("update", "U"),
        ("PATCH", _) => ("patch", "U"),
        ("DELETE", _) => ("delete", "D"),
        _ => ("operation", "E"),
    }
}

/// A record as a FHIR R4 AuditEvent (DICOM "RESTful Operation" type).
pub fn to_audit_event(c: &Chained) -> Value {
    let r = &c.record;
    let (subtype, action) = interaction(&r.method, &r.path);
    // AuditEvent.outcome: 0 success, 4 minor failure (the client's), 8
    // serious failure (the server's).
    let outcome = match r.status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    };
    let mut entity = vec![json!({
        "what": {"display": format!("{} {}", r.method, r.path)},
        "query": base64_of(&r.query),
    })];
    for w in r.written.split_whitespace() {
        entity.push(json!({"what": {"reference": w}}));
    }
    json!({
        "resourceType": "AuditEvent",
        "id": format!("audit-{}", c.seq),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "rest",
                 "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": subtype}],
        "action": action,
        "recorded": r.recorded,
        "outcome": outcome,
        "outcomeDesc": format!("HTTP {}", if r.status == 0 { 200 } else { r.status }),
        "agent": [{
            "requestor": true,
            "who": {"identifier": {"system": "https://sp-hub.example/fhir/Id/client", "value": r.client_id}},
            "altId": r.request_id,
        }, {
            "requestor": false,
            "who": {"reference": r.organization},
        }],
        "source": {"observer": {"display": "sp-hub"}},
        "entity": entity,
        "extension": [{
            "url": "https://sp-hub.example/fhir/StructureDefinition/sp-audit-chain",
            "extension": [
                {"url": "seq", "valueInteger": c.seq},
                {"url": "prevHash", "valueString": c.prev_hash},
                {"url": "hash", "valueString": c.hash},
            ]
        }]
    })
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<Chained> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let record = Record {
                    path: format!("/Task/{seq}"),
                    method: "GET".into(),
                    status: 200,
                    ..Default::default()
                };
                let hash = link(&prev, seq, &record);
                let c = Chained {
                    seq,
                    record,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                c
            })
            .collect()
    }

    #[test]
    fn a_changed_or_missing_record_breaks_the_chain_there() {
        let good = chain(5);
        assert_eq!(first_broken(&good, (0, GENESIS.into())), None);
        let mut changed = good.clone();
        changed[2].record.status = 404;
        assert_eq!(first_broken(&changed, (0, GENESIS.into())).unwrap().0, 3);
        let mut gone = good.clone();
        gone.remove(3);
        assert_eq!(first_broken(&gone, (0, GENESIS.into())).unwrap().0, 4);
        let mut rehashed = good.clone();
        rehashed[1].record.status = 500;
        rehashed[1].hash = link(&rehashed[1].prev_hash, 2, &rehashed[1].record);
        assert_eq!(first_broken(&rehashed, (0, GENESIS.into())).unwrap().0, 3);
    }

    #[test]
    fn interactions_are_named() {
        assert_eq!(interaction("GET", "/Task/1"), ("read", "R"));
        assert_eq!(interaction("GET", "/Task"), ("search-type", "E"));
        assert_eq!(interaction("POST", "/Task"), ("create", "C"));
        assert_eq!(interaction("GET", "/Task/1/_history/2"), ("vread", "R"));
        assert_eq!(
            interaction("GET", "/ServiceRequest/1/$trail"),
            ("operation", "E")
        );
        assert_eq!(interaction("POST", "/"), ("transaction", "E"));
    }
}
