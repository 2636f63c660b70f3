//! An SP referral's reasons in our needs (`sp-need`), whatever GP system
//! coded them: GP systems send SNOMED CT, and the hub adds to each reason
//! the sp-need coding our `snomed-to-sp-need` ConceptMap gives for it, as a
//! translation beside the original coding (a CodeableConcept may carry the
//! same concept in several code systems). The referral then meets the
//! sp-referral profile, a VCS sees its own categories through its own map
//! from sp-need, and a dashboard counts one set of needs.

use serde_json::{json, Value};

use super::concept_map::{self, Request};

const SNOMED: &str = "http://snomed.info/sct";
const SP_NEED: &str = "https://sp-hub.example/fhir/CodeSystem/sp-need";
const SNOMED_TO_NEED: &str = "https://sp-hub.example/fhir/ConceptMap/snomed-to-sp-need";
/// SNOMED CT 871731000000106 "Referral to social prescribing service".
const SP_REFERRAL: &str = "871731000000106";

/// The sp-need codes (with displays) a SNOMED CT code maps to.
pub fn needs_of_snomed(code: &str) -> Vec<(String, Option<String>)> {
    let Some(map) = crate::profiles::load()
        .ok()
        .and_then(|p| p.resource(SNOMED_TO_NEED))
    else {
        return vec![];
    };
    concept_map::translate(map, &Request::default(), SNOMED, code)
        .into_iter()
        .filter(concept_map::acceptable)
        .filter_map(|m| m.concept)
        .filter(|c| c.system == SP_NEED)
        .map(|c| (c.code, c.display))
        .collect()
}

fn is_sp_referral(resource: &Value) -> bool {
    resource["resourceType"] == "ServiceRequest"
        && resource["code"]["coding"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["system"] == SNOMED && c["code"] == SP_REFERRAL)
        })
}

/// Adds the sp-need translation to each reason of an SP referral that has
/// none but a SNOMED CT code the map knows. A reason the map cannot place
/// is left as it came: the profile then names it.
pub fn add_needs(resource: &mut Value) {
    if !is_sp_referral(resource) {
        return;
    }
    let Some(reasons) = resource.get_mut("reasonCode").and_then(Value::as_array_mut) else {
        return;
    };
    for reason in reasons {
        let Some(codings) = reason.get_mut("coding").and_then(Value::as_array_mut) else {
            continue;
        };
        if codings.iter().any(|c| c["system"] == SP_NEED) {
            continue;
        }
        let mut added: Vec<Value> = vec![];
        for c in codings.iter().filter(|c| c["system"] == SNOMED) {
            for (code, display) in needs_of_snomed(c["code"].as_str().unwrap_or_default()) {
                let mut coding = json!({"system": SP_NEED, "code": code});
                if let Some(d) = display {
                    coding["display"] = json!(d);
                }
                if !added.contains(&coding) {
                    added.push(coding);
                }
            }
        }
        codings.extend(added);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referral(reasons: Value) -> Value {
        json!({"resourceType": "ServiceRequest",
               "code": {"coding": [{"system": SNOMED, "code": SP_REFERRAL}]},
               "reasonCode": reasons})
    }

    #[test]
    fn snomed_reasons_get_their_need_beside_them() {
        crate::profiles::load().unwrap();
        let mut r = referral(json!([
            {"coding": [{"system": SNOMED, "code": "105441003"}], "text": "bereaved"},
            {"coding": [{"system": SNOMED, "code": "999999999"}]},
            {"coding": [{"system": SP_NEED, "code": "loneliness"}]}
        ]));
        add_needs(&mut r);
        let reasons = r["reasonCode"].as_array().unwrap();
        assert_eq!(
            reasons[0]["coding"][0]["code"], "105441003",
            "the original stays first"
        );
        assert_eq!(reasons[0]["coding"][1]["system"], SP_NEED);
        assert_eq!(reasons[0]["coding"][1]["code"], "bereavement");
        assert_eq!(
            reasons[1]["coding"].as_array().unwrap().len(),
            1,
            "unknown code untouched"
        );
        assert_eq!(
            reasons[2]["coding"].as_array().unwrap().len(),
            1,
            "already ours"
        );
    }

    #[test]
    fn other_resources_are_left_alone() {
        let mut sr = json!({"resourceType": "ServiceRequest",
                            "reasonCode": [{"coding": [{"system": SNOMED, "code": "105441003"}]}]});
        let before = sr.clone();
        add_needs(&mut sr);
        assert_eq!(sr, before);
    }
}
