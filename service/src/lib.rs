//! sp-hub: a FHIR R4 referral hub for social prescribing.
//!
//! Request flow: `api` (HTTP, negotiation) → `interactions` (FHIR REST
//! semantics) → `fhir` (parsing, checks, bundles) and `search` (parameters,
//! index rows) → `store` (one transaction per write, SQLite or PostgreSQL).
//! `workflow` holds the social prescribing rules the write path enforces;
//! `profiles` the domain's code systems, value sets and profiles.

pub mod api;
pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod export;
pub mod fhir;
pub mod interactions;
pub mod notify;
pub mod outbound;
pub mod profiles;
pub mod search;
pub mod server;
pub mod store;
pub mod synthetic;
pub mod translate;
pub mod workflow;
