//! Translation between the hub's FHIR records and the codes and shapes
//! others keep them in (ARCHITECTURE.md, "Translation"):
//!
//! - `concept_map`: `$translate` over one ConceptMap (R4), pure functions;
//! - `mapping`: a VCS organisation's record mapping (columns, case
//!   reference, category map, status words, date format), parsed and
//!   checked, and its cells read and written;
//! - `records`: finding maps and mappings in the store, `$translate`
//!   across them, and a VCS's Tasks out as flat rows and rows back in
//!   through the ordinary write path;
//! - `csv`: rows as CSV and as JSON;
//! - `reasons`: an SP referral's SNOMED CT reasons given our needs as they
//!   arrive.

pub mod concept_map;
pub mod csv;
pub mod mapping;
pub mod reasons;
pub mod records;
