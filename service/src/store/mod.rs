//! Durable storage on SQLite (embedded default) or PostgreSQL, one code base.
//!
//! The store owns the schema, the migrations and every SQL statement. It
//! never sees HTTP. A write is one database transaction: current row,
//! history row and search-index rows commit together or not at all.

mod access_sql;
mod audit;
mod clients;
mod dashboard;
mod export;
mod limit;
mod notify;
mod pool;
mod query;
pub mod schema;
mod search_sql;
mod sql;
mod write;

pub use clients::ClientRow;
pub use dashboard::{AggRow, DashboardReader, DashboardScope, DirEntry};
pub use export::{ExportJob, ExportPage, ExportSlice};
pub use notify::{OutboxRow, SubscriptionRow};
pub use pool::{Backend, Store};
pub use query::{HistoryQuery, HistoryScope, Page, Snapshot};
pub use write::{Decision, Tx, WriteOutcome};

use diesel::prelude::*;

/// The current version of a resource as stored. `body` is the canonical
/// JSON text returned on read (empty when deleted).
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = schema::resources)]
pub struct Current {
    pub res_type: String,
    pub res_id: String,
    pub version: i32,
    pub last_updated: String,
    pub deleted: bool,
    pub body: String,
    /// Position in the change feed (commit order) of the current version.
    pub tick: i64,
}

/// One historical version; `body` is `None` for a delete.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = schema::resource_versions)]
pub struct Version {
    pub seq: i64,
    pub res_type: String,
    pub res_id: String,
    pub version: i32,
    pub last_updated: String,
    pub method: String,
    pub body: Option<String>,
    /// Position in the change feed; set as the writing transaction commits.
    pub tick: Option<i64>,
}

/// The index rows of one resource, produced by `search::index` and
/// written with it. One field per index table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexRows {
    pub tokens: Vec<TokenRow>,
    pub strings: Vec<StringRow>,
    pub dates: Vec<DateRow>,
    pub references: Vec<ReferenceRow>,
    pub uris: Vec<UriRow>,
    pub numbers: Vec<NumberRow>,
    pub quantities: Vec<QuantityRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenRow {
    pub param: String,
    pub system: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StringRow {
    pub param: String,
    pub norm: String,
    pub exact: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateRow {
    pub param: String,
    pub low: String,
    pub high: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReferenceRow {
    pub param: String,
    pub target_type: String,
    pub target_id: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UriRow {
    pub param: String,
    pub uri: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NumberRow {
    pub param: String,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuantityRow {
    pub param: String,
    pub value: f64,
    pub system: String,
    pub code: String,
}
