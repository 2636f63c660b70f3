//! Appending to the audit chain and reading it back.

use diesel::prelude::*;

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{audit_head, audit_log};
use super::write::Tx;
use crate::audit::{first_broken, link, Chained, Record};
use crate::fhir::outcome::FhirResult;

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_log)]
struct Row {
    seq: i64,
    recorded: String,
    request_id: String,
    client_id: String,
    organization: String,
    method: String,
    path: String,
    query: String,
    written: String,
    status: i32,
    prev_hash: String,
    hash: String,
}

impl From<Row> for Chained {
    fn from(r: Row) -> Chained {
        Chained {
            seq: r.seq,
            record: Record {
                recorded: r.recorded,
                request_id: r.request_id,
                client_id: r.client_id,
                organization: r.organization,
                method: r.method,
                path: r.path,
                query: r.query,
                written: r.written,
                status: r.status,
            },
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Appends `record` in the caller's transaction: the head row is updated
/// first (on PostgreSQL that row lock makes concurrent appends take turns).
fn append_in(c: &mut AnyConnection, record: &Record) -> QueryResult<()> {
    diesel::update(audit_head::table.find(1))
        .set(audit_head::seq.eq(audit_head::seq + 1))
        .execute(c)?;
    let (seq, prev): (i64, String) = audit_head::table
        .find(1)
        .select((audit_head::seq, audit_head::hash))
        .first(c)?;
    let hash = link(&prev, seq, record);
    let r = record.clone();
    diesel::insert_into(audit_log::table)
        .values(Row {
            seq,
            recorded: r.recorded,
            request_id: r.request_id,
            client_id: r.client_id,
            organization: r.organization,
            method: r.method,
            path: r.path,
            query: r.query,
            written: r.written,
            status: r.status,
            prev_hash: prev,
            hash: hash.clone(),
        })
        .execute(c)?;
    diesel::update(audit_head::table.find(1))
        .set(audit_head::hash.eq(hash))
        .execute(c)
        .map(drop)
}

impl Tx<'_> {
    /// Records a write in its own transaction: both commit or neither.
    pub fn audit(&mut self, record: &Record) -> FhirResult<()> {
        append_in(self.conn(), record).map_err(db_error)
    }
}

impl Store {
    /// Records a request on its own.
    pub fn audit(&self, record: &Record) -> FhirResult<()> {
        let mut c = self.writer()?;
        c.transaction(|c| append_in(c, record)).map_err(db_error)
    }

    /// Up to `count` records after `after_seq`, oldest first.
    pub fn audit_records(&self, after_seq: i64, count: i64) -> FhirResult<Vec<Chained>> {
        let mut c = self.reader()?;
        audit_log::table
            .filter(audit_log::seq.gt(after_seq))
            .order(audit_log::seq)
            .limit(count)
            .select(Row::as_select())
            .load(&mut c)
            .map(|rows| rows.into_iter().map(Chained::from).collect())
            .map_err(db_error)
    }

    /// Walks the whole chain: `Ok(None)` when every link holds (and the
    /// head names the last record), else the first broken record and why.
    /// Returns how many records were checked too.
    pub fn audit_verify(&self) -> FhirResult<(u64, Option<(i64, String)>)> {
        const PAGE: i64 = 1000;
        let mut prev = (0i64, crate::audit::GENESIS.to_string());
        let mut checked = 0u64;
        loop {
            let page = self.audit_records(prev.0, PAGE)?;
            if let Some(broken) = first_broken(&page, prev.clone()) {
                return Ok((checked, Some(broken)));
            }
            checked += page.len() as u64;
            match page.last() {
                Some(last) => prev = (last.seq, last.hash.clone()),
                None => break,
            }
        }
        let mut c = self.reader()?;
        let head: (i64, String) = audit_head::table
            .find(1)
            .select((audit_head::seq, audit_head::hash))
            .first(&mut c)
            .map_err(db_error)?;
        if head != prev {
            return Ok((
                checked,
                Some((
                    prev.0 + 1,
                    format!(
                        "the chain ends at record {}, but its head names record {}",
                        prev.0, head.0
                    ),
                )),
            ));
        }
        Ok((checked, None))
    }
}
