//! The dashboard's summary of one resource: the few values the figures
//! count, taken from its index rows (so a value means what the search
//! parameter means) and, where no search parameter holds it, from its JSON.
//! Pure: the write path stores it with the index rows, in the same
//! transaction (`store/dashboard.rs`, `replace_summary`), so it always
//! agrees with the resources; `sp-hub reindex` rebuilds it. The columns are
//! described in migration `2026-11-26-000013_dashboard_summary`.

use std::collections::BTreeSet;

use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::IndexRows;

pub const SP_REFERRAL: (&str, &str) = ("http://snomed.info/sct", "871731000000106");
const SP_NEED: &str = "https://sp-hub.example/fhir/CodeSystem/sp-need";
const CONTACT_MODE: &str = "https://sp-hub.example/fhir/CodeSystem/sp-contact-mode";
const HOLDING_WORK: &str = "https://sp-hub.example/fhir/CodeSystem/sp-holding-work";
const OUTCOME_MEASURE: &str = "https://sp-hub.example/fhir/CodeSystem/sp-outcome-measure";
const OUTCOME_TIMING: &str = "https://sp-hub.example/fhir/CodeSystem/sp-outcome-timing";
const MESSAGE_BACK: (&str, &str) = (
    "https://sp-hub.example/fhir/CodeSystem/sp-communication-category",
    "message-back",
);
/// The index's low end of a date it could not read; not a real start.
const NO_DATE: &str = "0001-01-01T23:59:59.999999Z";

/// The resource types that have a summary; writes of others skip it.
pub const TYPES: [&str; 6] = [
    "ServiceRequest",
    "Task",
    "Encounter",
    "Procedure",
    "Observation",
    "Communication",
];

/// A `dash_referrals` row.
#[derive(Debug, Clone, PartialEq)]
pub struct Referral {
    pub requester: Option<String>,
    pub patient: Option<String>,
    pub authored: String,
    pub status: Option<String>,
}

/// A `dash_facts` row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fact {
    pub kind: &'static str,
    pub sr: String,
    pub at: Option<String>,
    pub status: Option<String>,
    pub code: Option<String>,
    pub code2: Option<String>,
    pub actor: Option<String>,
    pub patient: Option<String>,
    pub flag: bool,
    pub num: Option<f64>,
}

/// Everything one resource contributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub referral: Option<Referral>,
    pub facts: Vec<Fact>,
}

/// The summary of `resource` (`res_type/res_id`, with its index rows `index`).
pub fn of(res_type: &str, res_id: &str, resource: &Value, index: &IndexRows) -> Summary {
    let ix = Ix(index);
    match res_type {
        "ServiceRequest" => referral(res_id, resource, &ix),
        "Task" => Summary {
            referral: None,
            facts: task(resource, &ix).into_iter().collect(),
        },
        "Encounter" => encounter(&ix),
        "Procedure" => on_referrals(&ix, holding(resource, &ix)),
        "Observation" => on_referrals(&ix, outcome(resource, &ix)),
        "Communication" => communication(&ix),
        _ => Summary::default(),
    }
}

/// An SP referral's row and its needs (reasonCode has no search parameter).
fn referral(sr: &str, resource: &Value, ix: &Ix) -> Summary {
    let status = ix.min_token("status", None);
    let live = !matches!(status.as_deref(), Some("draft" | "entered-in-error"));
    let sp = ix.has_token("code", SP_REFERRAL.0, SP_REFERRAL.1);
    let (true, true, Some(authored)) = (live, sp, ix.min_date("authored")) else {
        return Summary::default();
    };
    let needs: BTreeSet<&str> = list(resource, "reasonCode")
        .flat_map(|r| list(r, "coding"))
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(SP_NEED))
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .collect();
    Summary {
        referral: Some(Referral {
            requester: ix.min_ref("requester"),
            patient: ix.refs("subject").map(|r| r.target_id.clone()).min(),
            authored,
            status,
        }),
        facts: needs
            .into_iter()
            .map(|need| Fact {
                kind: "need",
                sr: sr.to_string(),
                code: Some(need.to_string()),
                ..Fact::default()
            })
            .collect(),
    }
}

/// A Task on a referral (its `focus`).
fn task(resource: &Value, ix: &Ix) -> Option<Fact> {
    let sr = ix.ref_ids("focus", "ServiceRequest").next()?;
    let reason = resource
        .pointer("/statusReason/coding/0/code")
        .and_then(Value::as_str);
    Some(Fact {
        kind: "task",
        sr,
        at: ix
            .dates("period")
            .filter(|low| low.as_str() > NO_DATE)
            .min()
            .cloned(),
        status: ix.min_token("status", None),
        code: reason.map(String::from),
        actor: ix.min_ref("owner"),
        flag: ix.refs("part-of").next().is_some(),
        ..Fact::default()
    })
}

/// A link worker's contact (a `type` from sp-contact-mode) on each referral
/// it is based on, or a GP consultation (class AMB, no such type).
fn encounter(ix: &Ix) -> Summary {
    if ix.has_status(&["cancelled", "entered-in-error"]) {
        return Summary::default();
    }
    let at = ix.min_date("date");
    if let Some(mode) = ix.min_token("type", Some(CONTACT_MODE)) {
        let worker = ix.ref_ids("participant", "PractitionerRole").min();
        return on_referrals(
            ix,
            Some(Fact {
                kind: "contact",
                at,
                code: Some(mode),
                actor: worker,
                ..Fact::default()
            }),
        );
    }
    let amb = ix.tokens("class").any(|t| t.code == "AMB");
    let Some(patient) = ix.ref_ids("subject", "Patient").min().filter(|_| amb) else {
        return Summary::default();
    };
    let gp = Fact {
        kind: "gp",
        at,
        patient: Some(patient),
        actor: ix.ref_ids("service-provider", "Organization").min(),
        ..Fact::default()
    };
    let mut facts = on_referrals(ix, Some(gp.clone())).facts;
    if facts.is_empty() {
        facts.push(gp);
    }
    Summary {
        referral: None,
        facts,
    }
}

/// Holding work: a category from sp-holding-work, not entered in error or
/// not done; its length from `performedPeriod`.
fn holding(resource: &Value, ix: &Ix) -> Option<Fact> {
    if ix.min_token("category", Some(HOLDING_WORK)).is_none()
        || ix.has_status(&["entered-in-error", "not-done"])
    {
        return None;
    }
    let instant = |k: &str| {
        resource
            .pointer(&format!("/performedPeriod/{k}"))
            .and_then(Value::as_str)
            .and_then(parse_instant)
    };
    let hours = match (instant("start"), instant("end")) {
        (Some(a), Some(b)) => Some((b - a).as_seconds_f64() / 3600.0),
        _ => None,
    };
    Some(Fact {
        kind: "holding",
        at: ix.min_date("date"),
        actor: ix.min_ref("performer"),
        num: hours,
        ..Fact::default()
    })
}

/// An outcome measure: a measure and a timing, not entered in error or
/// cancelled.
fn outcome(resource: &Value, ix: &Ix) -> Option<Fact> {
    if ix.has_status(&["entered-in-error", "cancelled"]) {
        return None;
    }
    Some(Fact {
        kind: "outcome",
        at: ix.min_date("date"),
        code: Some(ix.min_token("code", Some(OUTCOME_MEASURE))?),
        code2: Some(ix.min_token("category", Some(OUTCOME_TIMING))?),
        num: resource.get("valueInteger").and_then(Value::as_f64),
        ..Fact::default()
    })
}

/// A message back, or another Communication with each of its senders.
fn communication(ix: &Ix) -> Summary {
    if ix.has_token("category", MESSAGE_BACK.0, MESSAGE_BACK.1) {
        return on_referrals(
            ix,
            Some(Fact {
                kind: "message-back",
                ..Fact::default()
            }),
        );
    }
    let facts = ix
        .refs("sender")
        .flat_map(|s| {
            let sender = format!("{}/{}", s.target_type, s.target_id);
            on_referrals(
                ix,
                Some(Fact {
                    kind: "communication",
                    actor: Some(sender),
                    ..Fact::default()
                }),
            )
            .facts
        })
        .collect();
    Summary {
        referral: None,
        facts,
    }
}

/// `fact` once for each referral the resource is based on.
fn on_referrals(ix: &Ix, fact: Option<Fact>) -> Summary {
    let facts = match fact {
        Some(fact) => ix
            .ref_ids("based-on", "ServiceRequest")
            .map(|sr| Fact { sr, ..fact.clone() })
            .collect(),
        None => vec![],
    };
    Summary {
        referral: None,
        facts,
    }
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// A FHIR instant or dateTime to the second, or a date (its midnight UTC).
fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339).ok())
}

/// Reads of one resource's index rows, as the SQL over them read them
/// (`MIN` of a parameter's values).
struct Ix<'a>(&'a IndexRows);

impl Ix<'_> {
    fn tokens<'b>(&'b self, param: &'b str) -> impl Iterator<Item = &'b crate::store::TokenRow> {
        self.0.tokens.iter().filter(move |t| t.param == param)
    }

    fn has_token(&self, param: &str, system: &str, code: &str) -> bool {
        self.tokens(param)
            .any(|t| t.system == system && t.code == code)
    }

    fn has_status(&self, codes: &[&str]) -> bool {
        self.tokens("status")
            .any(|t| codes.contains(&t.code.as_str()))
    }

    /// The least code of `param`, of `system` when given.
    fn min_token(&self, param: &str, system: Option<&str>) -> Option<String> {
        self.tokens(param)
            .filter(|t| system.is_none_or(|s| t.system == s))
            .map(|t| t.code.clone())
            .min()
    }

    fn dates<'b>(&'b self, param: &'b str) -> impl Iterator<Item = &'b String> {
        self.0
            .dates
            .iter()
            .filter(move |d| d.param == param)
            .map(|d| &d.low)
    }

    fn min_date(&self, param: &str) -> Option<String> {
        self.dates(param).min().cloned()
    }

    fn refs<'b>(&'b self, param: &'b str) -> impl Iterator<Item = &'b crate::store::ReferenceRow> {
        self.0.references.iter().filter(move |r| r.param == param)
    }

    /// The ids `param` refers to among resources of `target_type`.
    fn ref_ids<'b>(
        &'b self,
        param: &'b str,
        target_type: &'b str,
    ) -> impl Iterator<Item = String> + 'b {
        self.refs(param)
            .filter(move |r| r.target_type == target_type)
            .map(|r| r.target_id.clone())
    }

    /// The least `Type/id` `param` refers to.
    fn min_ref(&self, param: &str) -> Option<String> {
        self.refs(param)
            .map(|r| format!("{}/{}", r.target_type, r.target_id))
            .min()
    }
}
