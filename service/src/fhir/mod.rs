//! FHIR data handling that is independent of HTTP: parsing and checking
//! resources, OperationOutcome errors, Bundles, summaries, instants.

pub mod bundle;
pub mod instant;
pub mod outcome;
mod position;
pub mod resource;
pub mod summary;
