//! The one crate that instantiates fhirbolt's R4 model.
//!
//! fhirbolt's generated (de)serialisers are very large; every crate that
//! monomorphises them pays minutes of compile time. Everything here is a
//! plain, non-generic function over bytes, so the rest of sp-hub depends on
//! this crate's compiled code and rebuilds in seconds.

mod xml_check;

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode};

/// Why fhirbolt would not accept a resource. fhirbolt buffers the input
/// before it maps it to the model, so errors carry no position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

fn message(e: impl std::fmt::Display) -> Error {
    Error {
        message: e.to_string(),
    }
}

/// Checks that `json` is one R4 resource that fhirbolt accepts in strict
/// mode: no unknown elements, primitives of the right type, known resourceType.
pub fn check_json(json: &[u8]) -> Result<(), Error> {
    guarded(|| {
        fhirbolt::json::from_slice::<Resource>(json, strict())
            .map(drop)
            .map_err(message)
    })
}

/// fhirbolt panics on some inputs (an empty JSON array, for one). Callers
/// refuse such inputs first; this turns any we have not met into an error
/// instead of a crashed request.
fn guarded<T>(f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error {
            message: "the resource could not be read as FHIR R4".into(),
        })
    })
}

/// Converts one R4 resource from XML to JSON (strict: unknown elements fail).
/// Narratives keep the client's exact XHTML.
pub fn xml_to_json(xml: &[u8]) -> Result<Vec<u8>, Error> {
    let spans = xml_check::scan(xml)?;
    let json = guarded(|| {
        let resource: Resource = fhirbolt::xml::from_slice(xml, strict()).map_err(message)?;
        fhirbolt::json::to_vec(&resource, None).map_err(message)
    })?;
    Ok(xml_check::restore_divs_in_json(json, xml, &spans))
}

/// Converts one R4 resource from JSON to XML.
/// Converts one R4 resource from JSON to XML; narratives are written as
/// the JSON holds them.
pub fn json_to_xml(json: &[u8]) -> Result<Vec<u8>, Error> {
    let xml = guarded(|| {
        let resource: Resource = fhirbolt::json::from_slice(json, strict()).map_err(message)?;
        fhirbolt::xml::to_vec(&resource, None).map_err(message)
    })?;
    Ok(xml_check::restore_divs_in_xml(xml, json))
}

/// Every R4 resource type fhirbolt models, in its own order (alphabetical).
pub const RESOURCE_TYPES: &[&str] = &[
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_type_is_one_fhirbolt_parses() {
        for t in RESOURCE_TYPES {
            // Known types parse, or fail only on a missing required element.
            let json = format!(r#"{{"resourceType":"{t}","id":"x"}}"#);
            if let Err(e) = check_json(json.as_bytes()) {
                assert!(e.message.starts_with("missing field"), "{t}: {e}");
            }
        }
        assert_eq!(RESOURCE_TYPES.len(), 146);
    }

    #[test]
    fn unclosed_xml_is_refused() {
        let e = xml_to_json(br#"<Patient xmlns="http://hl7.org/fhir"><active value="true"/>"#)
            .unwrap_err();
        assert!(e.message.contains("malformed XML"), "{}", e.message);
        assert!(xml_to_json(br#"<Patient xmlns="http://hl7.org/fhir"></Patient><x/>"#).is_err());
    }

    #[test]
    fn narrative_whitespace_survives_both_ways() {
        let div = r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Referral to <b>social</b> prescribing</p></div>"#;
        let json = format!(
            r#"{{"resourceType":"Patient","text":{{"status":"generated","div":{}}},"active":true}}"#,
            serde_json::Value::String(div.into())
        );
        let xml = String::from_utf8(json_to_xml(json.as_bytes()).unwrap()).unwrap();
        assert!(xml.contains(div), "{xml}");
        let back: serde_json::Value =
            serde_json::from_slice(&xml_to_json(xml.as_bytes()).unwrap()).unwrap();
        assert_eq!(back["text"]["div"], div);
        assert_eq!(back["active"], true);
    }

    #[test]
    fn a_panic_inside_fhirbolt_becomes_an_error() {
        // fhirbolt 0.4 panics on an empty array.
        let e = check_json(br#"{"resourceType":"Patient","name":[]}"#).unwrap_err();
        assert!(e.message.contains("could not be read"), "{}", e.message);
    }

    #[test]
    fn unknown_type_is_refused() {
        assert!(check_json(br#"{"resourceType":"Nonsense"}"#).is_err());
    }

    #[test]
    fn unknown_element_is_refused_by_name() {
        let e = check_json(br#"{"resourceType":"Patient","foo":1}"#).unwrap_err();
        assert!(e.message.contains("unknown field `foo`"), "{}", e.message);
    }

    #[test]
    fn xml_round_trips_through_json() {
        let json = br#"{"resourceType":"Patient","id":"p1","active":true}"#;
        let xml = json_to_xml(json).unwrap();
        let text = String::from_utf8(xml.clone()).unwrap();
        assert!(text.contains("<active value=\"true\"/>"), "{text}");
        let back: serde_json::Value = serde_json::from_slice(&xml_to_json(&xml).unwrap()).unwrap();
        assert_eq!(back["active"], true);
        assert_eq!(back["id"], "p1");
    }
}
