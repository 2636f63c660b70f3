//! Organisation-scoped access: which stored resources a caller's
//! organisation may see and change (DESIGN.md, "who sees what"). The rules
//! are stated here; `store/access_sql.rs` turns them into SQL that every
//! read of the store applies, so no path (read, search, include, chain,
//! `_has`, history, Bundle entry, `$trail`) can go around them.
//!
//! Everything hangs off the referral (SP referral `ServiceRequest`):
//!
//! - a **GP** practice's referrals are those its practice requested
//!   (`requester` is the practice or one of its PractitionerRoles);
//! - a **PCN**'s are those of its member practices (`Organization.partOf`)
//!   and those with a Task owned by the PCN or its own link workers;
//! - a **VCS** organisation's are those with a Task it owns (the
//!   organisation or one of its PractitionerRoles), as long as the
//!   patient's consent stands; it also sees the open pool of the PCNs its
//!   link workers serve (`sp-serves-pcn`): unowned `requested` Tasks, their
//!   referral and a minimised Patient.
//!
//! From a caller's referrals follow its Tasks (`focus`; a VCS: only the
//! Tasks it owns, their sub-tasks, and those it can claim), Patients (`subject`), Consents (`patient`)
//! and the records based on them (Encounter, Procedure, Observation,
//! Communication, QuestionnaireResponse `basedOn`). Directory and
//! definition resources are readable by everyone. Anything else is seen by
//! the organisation that created it. A resource outside a caller's view
//! answers 404, as if it did not exist.

use serde_json::Value;

use super::{Principal, Role};

/// Whose view a store read takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// Everything: an admin client, or the hub acting on its own behalf.
    #[default]
    All,
    /// One organisation's view.
    Org(OrgAccess),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgAccess {
    pub role: Role,
    /// The organisation's id (`Organization/<id>`).
    pub org: String,
}

impl Access {
    pub fn of(caller: &Principal) -> Access {
        match caller.role {
            Role::Admin => Access::All,
            role => Access::Org(OrgAccess {
                role,
                org: caller
                    .organization
                    .strip_prefix("Organization/")
                    .unwrap_or(&caller.organization)
                    .to_string(),
            }),
        }
    }

    /// The organisation whose view this is, if any.
    pub fn org(&self) -> Option<&OrgAccess> {
        match self {
            Access::All => None,
            Access::Org(o) => Some(o),
        }
    }

    /// The body a caller sees: a VCS gets a Patient minimised to what a link
    /// worker needs to make contact (OWASP API3, property level), marked
    /// SUBSETTED.
    pub fn redact(&self, res_type: &str, body: String) -> String {
        match self {
            Access::Org(o) if o.role == Role::Vcs && res_type == "Patient" => {
                minimise_patient(&body)
            }
            _ => body,
        }
    }
}

/// Types anyone with a token may read: the directory and the definitions.
pub const SHARED_TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "HealthcareService",
    "Endpoint",
    "CodeSystem",
    "ValueSet",
    "ConceptMap",
    "StructureDefinition",
    "SearchParameter",
    "Questionnaire",
    "NamingSystem",
    "OperationDefinition",
    "CapabilityStatement",
];

/// Records of the work on a referral, found through `basedOn`.
pub const BASED_ON_TYPES: &[&str] = &[
    "Encounter",
    "Procedure",
    "Observation",
    "Communication",
    "QuestionnaireResponse",
];

/// Whether the organisation that created a resource of `res_type` keeps
/// seeing it by that alone. Not for referrals and Tasks, whose place on a
/// trail decides (a GP cannot make a referral for another practice by
/// creating it); not for a VCS on trail records, so that a withdrawn
/// consent hides them too.
pub fn creator_sees(role: Role, res_type: &str) -> bool {
    match res_type {
        "ServiceRequest" | "Task" => false,
        "Patient" | "Consent" => role != Role::Vcs,
        t if BASED_ON_TYPES.contains(&t) => role != Role::Vcs,
        _ => true,
    }
}

/// What a VCS sees of a Patient.
const PATIENT_FOR_VCS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "identifier",
    "active",
    "name",
    "telecom",
    "birthDate",
    "address",
    "communication",
];

fn minimise_patient(body: &str) -> String {
    let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(body) else {
        return body.to_string();
    };
    o.retain(|k, _| PATIENT_FOR_VCS.contains(&k.as_str()));
    let tag = serde_json::json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
        "display": "subsetted"
    });
    let meta = o
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(m) = meta.as_object_mut() {
        let tags = m.entry("tag").or_insert_with(|| Value::Array(vec![]));
        if let Some(a) = tags.as_array_mut() {
            if !a.iter().any(|t| t["code"] == "SUBSETTED") {
                a.push(tag);
            }
        }
    }
    Value::Object(o).to_string()
}

/// The property-level rules of a write by `role` of `res_type`, from
/// `before` (the current version; `None` for a create) to `after` (`None`
/// for a delete). `Err` says what is not the caller's to change.
pub fn check_write(
    role: Role,
    res_type: &str,
    before: Option<&Value>,
    after: Option<&Value>,
) -> Result<(), String> {
    if role == Role::Admin {
        return Ok(());
    }
    let Some(after) = after else {
        return match res_type {
            "ServiceRequest" | "Task" | "Patient" | "Consent" => Err(format!(
                "a {res_type} on a referral trail is not deleted; set its status to entered-in-error (or cancel it) instead"
            )),
            _ => Ok(()),
        };
    };
    match (role, res_type) {
        (Role::Vcs, "Patient" | "ServiceRequest" | "Consent") => Err(format!(
            "a {res_type} is the referrer's record; a VCS client may read it, not change it"
        )),
        (_, "Task") => task_write(role, before, after),
        _ => Ok(()),
    }
}

/// Task statuses the requester side (a GP) may set; the owner side (a VCS)
/// may set any other. A PCN is both (its link workers own Tasks; it also
/// refers).
const REQUESTER_STATUSES: &[&str] = &["draft", "requested", "cancelled", "entered-in-error"];

/// Elements of a Task that only the requester side may change: what is
/// asked, for whom, by whom.
const REQUESTER_ELEMENTS: &[&str] = &["focus", "for", "requester", "basedOn", "partOf", "intent"];

/// The property-level rules of a Task write by `role` (`before` is the
/// current version, `None` for a create). `Err` names what is not theirs
/// to change.
pub fn task_write(role: Role, before: Option<&Value>, after: &Value) -> Result<(), String> {
    let status = |v: &Value| v["status"].as_str().unwrap_or("").to_string();
    let new_status = status(after);
    let changed = before.is_none_or(|b| status(b) != new_status);
    let requester_side = REQUESTER_STATUSES.contains(&new_status.as_str());
    match role {
        Role::Admin => Ok(()),
        // A PCN refers and (through its link workers) works Tasks: either
        // side, but an owner-side change still leaves the request alone.
        Role::Pcn => match before {
            Some(before) if changed && !requester_side => unchanged_request(before, after),
            _ => Ok(()),
        },
        Role::Gp => {
            if changed && !requester_side {
                return Err(format!(
                    "Task.status: a GP client is the requester side and may set only {}; '{new_status}' is for the organisation that owns the Task",
                    REQUESTER_STATUSES.join(", ")
                ));
            }
            Ok(())
        }
        Role::Vcs => {
            let Some(before) = before else {
                // An onward referral: a sub-task of a Task it works. (That
                // the parent is its own is checked with the view: a VCS
                // sees sub-tasks of the Tasks it owns.)
                return if after.get("partOf").is_some() {
                    Ok(())
                } else {
                    Err("a VCS client works Tasks it is given; it creates only sub-tasks (partOf) of those".into())
                };
            };
            if changed && ["cancelled", "entered-in-error"].contains(&new_status.as_str()) {
                return Err(format!(
                    "Task.status: '{new_status}' is for the requester side; the owner may reject or fail the Task instead"
                ));
            }
            unchanged_request(before, after)
        }
    }
}

/// The requester's elements of a Task are the same in both versions.
fn unchanged_request(before: &Value, after: &Value) -> Result<(), String> {
    for e in REQUESTER_ELEMENTS {
        if before.get(*e) != after.get(*e) {
            return Err(format!("Task.{e}: only the requester side may change it"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_vcs_sees_a_minimised_patient() {
        let vcs = Access::Org(OrgAccess {
            role: Role::Vcs,
            org: "v".into(),
        });
        let body = json!({"resourceType": "Patient", "id": "p", "name": [{"family": "X"}],
                          "maritalStatus": {"text": "W"}, "photo": [{"data": "AA=="}],
                          "birthDate": "1950-01-01"})
        .to_string();
        let seen: Value = serde_json::from_str(&vcs.redact("Patient", body.clone())).unwrap();
        assert!(seen.get("maritalStatus").is_none() && seen.get("photo").is_none());
        assert_eq!(seen["birthDate"], "1950-01-01");
        assert_eq!(seen["meta"]["tag"][0]["code"], "SUBSETTED");
        let gp = Access::Org(OrgAccess {
            role: Role::Gp,
            org: "g".into(),
        });
        assert_eq!(gp.redact("Patient", body.clone()), body);
    }

    #[test]
    fn task_sides() {
        let t = |status: &str, owner: &str| {
            json!({"resourceType": "Task", "status": status,
            "focus": {"reference": "ServiceRequest/1"}, "owner": {"reference": owner}})
        };
        let before = t("requested", "Organization/v");
        assert!(task_write(Role::Vcs, Some(&before), &t("accepted", "Organization/v")).is_ok());
        assert!(task_write(Role::Vcs, Some(&before), &t("cancelled", "Organization/v")).is_err());
        let mut moved = t("accepted", "Organization/v");
        moved["focus"] = json!({"reference": "ServiceRequest/2"});
        assert!(task_write(Role::Vcs, Some(&before), &moved).is_err());
        assert!(task_write(Role::Vcs, None, &before).is_err());
        let mut sub = before.clone();
        sub["partOf"] = json!([{"reference": "Task/parent"}]);
        assert!(task_write(Role::Vcs, None, &sub).is_ok());
        assert!(task_write(Role::Gp, Some(&before), &t("accepted", "Organization/v")).is_err());
        assert!(task_write(Role::Gp, Some(&before), &t("cancelled", "Organization/v")).is_ok());
        assert!(task_write(Role::Gp, None, &before).is_ok());
        // A PCN may do either side's changes, but accepting does not move
        // the request.
        assert!(task_write(Role::Pcn, Some(&before), &t("cancelled", "Organization/v")).is_ok());
        assert!(task_write(Role::Pcn, Some(&before), &t("accepted", "Organization/v")).is_ok());
        assert!(task_write(Role::Pcn, Some(&before), &moved).is_err());
    }
}
