//! The write path: one transaction per change.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde_json::Value;

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{
    feed_clock, resource_versions, resources, search_date, search_number, search_quantity,
    search_reference, search_string, search_token, search_uri,
};
use super::sql::{Bind, Sql};
use super::{Current, IndexRows};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::search::SearchQuery;

/// What the caller wants done, decided from the current row (if any).
pub enum Decision {
    /// Write a new version. `resource` is stamped with id and meta here,
    /// inside the transaction, once the version number is known.
    Put {
        method: &'static str,
        resource: Value,
    },
    Delete,
    /// Nothing to write (e.g. deleting what is already deleted).
    Unchanged,
}

pub struct WriteOutcome {
    pub current: Current,
    /// True when no live version existed before this write.
    pub created: bool,
    /// False when the decision was `Unchanged`.
    pub changed: bool,
}

/// Raised inside the transaction when another writer got there first.
enum Attempt {
    Lost,
    Failed(FhirError),
}

impl From<DieselError> for Attempt {
    fn from(e: DieselError) -> Self {
        match e {
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => Attempt::Lost,
            // PostgreSQL may abort a transaction that lost a race on a row
            // lock; it is the same situation as losing on the unique key.
            DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => Attempt::Lost,
            other => Attempt::Failed(db_error(other)),
        }
    }
}

impl From<FhirError> for Attempt {
    fn from(e: FhirError) -> Self {
        Attempt::Failed(e)
    }
}

const ATTEMPTS: usize = 5;

/// A transaction in progress, for interactions that must read and write
/// atomically (conditional create, update and delete).
pub struct Tx<'c> {
    c: &'c mut AnyConnection,
    /// Whose transaction it is (`Store::transaction_as`).
    access: crate::auth::access::Access,
    lost: bool,
    /// (type, id, version) of every version written, in order.
    written: Vec<(String, String, i32)>,
}

impl Tx<'_> {
    /// Holds `key` until the transaction ends, so two transactions with the
    /// same key (e.g. conditional creates with the same criteria) cannot
    /// interleave. PostgreSQL takes an advisory lock; on SQLite every write
    /// transaction already runs alone on the single writer connection.
    pub fn lock(&mut self, key: &str) -> FhirResult<()> {
        if let AnyConnection::Postgresql(pg) = self.c {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind::<diesel::sql_types::Text, _>(key)
                .execute(pg)
                .map_err(db_error)?;
        }
        Ok(())
    }

    pub fn search(&mut self, res_type: &str, q: &SearchQuery) -> FhirResult<super::Page<Current>> {
        super::query::search_in(self.c, res_type, q)
    }

    /// The current version, whoever the transaction is for (the hub's own
    /// rules read this way).
    pub fn read(&mut self, res_type: &str, res_id: &str) -> FhirResult<Option<Current>> {
        super::query::read_in(self.c, res_type, res_id)
    }

    /// One stored version, whoever the transaction is for (the hub's own
    /// rules compare a resource with what it was before the transaction).
    pub fn vread(
        &mut self,
        res_type: &str,
        res_id: &str,
        version: i32,
    ) -> FhirResult<Option<super::Version>> {
        super::query::vread_in(self.c, res_type, res_id, version)
    }

    pub(super) fn conn(&mut self) -> &mut AnyConnection {
        self.c
    }

    /// Whose transaction this is.
    pub fn access(&self) -> &crate::auth::access::Access {
        &self.access
    }

    /// The current version as the transaction's caller may see it.
    pub fn read_as(&mut self, res_type: &str, res_id: &str) -> FhirResult<Option<Current>> {
        super::query::read_as_in(self.c, &self.access, res_type, res_id)
    }

    /// Remembers which organisation created a resource (see
    /// `auth::access::creator_sees`).
    pub fn record_creator(&mut self, res_type: &str, res_id: &str, org: &str) -> FhirResult<()> {
        use super::schema::resource_creators as rc;
        diesel::delete(rc::table.find((res_type, res_id)))
            .execute(self.c)
            .map_err(db_error)?;
        diesel::insert_into(rc::table)
            .values((
                rc::res_type.eq(res_type),
                rc::res_id.eq(res_id),
                rc::organization.eq(org),
            ))
            .execute(self.c)
            .map(drop)
            .map_err(db_error)
    }

    /// The organisation whose client created a resource, if one did.
    pub fn creator(&mut self, res_type: &str, res_id: &str) -> FhirResult<Option<String>> {
        use super::schema::resource_creators as rc;
        rc::table
            .find((res_type, res_id))
            .select(rc::organization)
            .first(self.c)
            .optional()
            .map_err(db_error)
    }

    /// The live resources this transaction wrote that its caller could not
    /// see now: writes must stay inside the caller's view.
    pub fn written_out_of_view(&mut self) -> FhirResult<Vec<(String, String)>> {
        let Some(o) = self.access.org().cloned() else {
            return Ok(vec![]);
        };
        let mut out = vec![];
        let written: std::collections::BTreeSet<(String, String)> = self
            .written
            .iter()
            .map(|(t, id, _)| (t.clone(), id.clone()))
            .collect();
        for (t, id) in written {
            let live = super::query::read_in(self.c, &t, &id)?.is_some_and(|c| !c.deleted);
            if live && super::access_sql::visible_ids(self.c, &o, &t, &[id.as_str()])?.is_empty() {
                out.push((t, id));
            }
        }
        Ok(out)
    }

    pub fn matching_ids(
        &mut self,
        res_type: &str,
        q: &SearchQuery,
        limit: i64,
    ) -> FhirResult<Vec<String>> {
        super::query::matching_ids_in(self.c, res_type, q, limit)
    }

    /// (type, id, version) of every version this transaction has written,
    /// in order.
    pub fn written(&self) -> &[(String, String, i32)] {
        &self.written
    }

    pub fn write<F>(&mut self, res_type: &str, res_id: &str, decide: F) -> FhirResult<WriteOutcome>
    where
        F: Fn(Option<&Current>) -> FhirResult<Decision>,
    {
        let outcome = write_in(self.c, res_type, res_id, &decide).map_err(|e| match e {
            Attempt::Lost => {
                self.lost = true;
                FhirError::Conflict(format!("{res_type}/{res_id} was changed concurrently"))
            }
            Attempt::Failed(e) => e,
        })?;
        if outcome.changed {
            let c = &outcome.current;
            self.written
                .push((c.res_type.clone(), c.res_id.clone(), c.version));
        }
        Ok(outcome)
    }
}

impl Store {
    /// Runs `f` as one database transaction. If a write in it loses a race
    /// to a concurrent writer (same resource, same next version), the whole
    /// attempt is rolled back and `f` runs again on what is now current, so
    /// an `If-Match` check always sees the truth.
    pub fn transaction<T, F>(&self, f: F) -> FhirResult<T>
    where
        F: Fn(&mut Tx) -> FhirResult<T>,
    {
        self.transaction_as(&crate::auth::access::Access::All, f)
    }

    /// As `transaction`, for a caller whose view `access` is.
    pub fn transaction_as<T, F>(&self, access: &crate::auth::access::Access, f: F) -> FhirResult<T>
    where
        F: Fn(&mut Tx) -> FhirResult<T>,
    {
        self.retrying(|c| {
            let mut tx = Tx {
                c,
                access: access.clone(),
                lost: false,
                written: vec![],
            };
            let result = f(&mut tx);
            let (lost, written) = (tx.lost, std::mem::take(&mut tx.written));
            let value = result.map_err(|e| {
                if lost {
                    Attempt::Lost
                } else {
                    Attempt::Failed(e)
                }
            })?;
            stamp_ticks(c, &written)?;
            Ok(value)
        })
        .map_err(|e| {
            e.unwrap_or_else(|| {
                FhirError::Conflict(
                    "the resources are being changed by other requests; try again".into(),
                )
            })
        })
    }

    /// Rebuilds every current resource's index rows from the registered
    /// parameters (after a parameter is added or changed), a page of
    /// resources per transaction. Returns how many resources were indexed.
    pub fn reindex(&self) -> FhirResult<u64> {
        const PAGE: i64 = 500;
        let mut conn = self.writer()?;
        let mut after: (String, String) = (String::new(), String::new());
        let mut done = 0u64;
        loop {
            let page: Vec<Current> = resources::table
                .filter(resources::deleted.eq(false))
                .filter(
                    resources::res_type.gt(&after.0).or(resources::res_type
                        .eq(&after.0)
                        .and(resources::res_id.gt(&after.1))),
                )
                .order((resources::res_type.asc(), resources::res_id.asc()))
                .limit(PAGE)
                .select(Current::as_select())
                .load(&mut conn)
                .map_err(db_error)?;
            let Some(last) = page.last() else {
                return Ok(done);
            };
            after = (last.res_type.clone(), last.res_id.clone());
            conn.transaction::<_, diesel::result::Error, _>(|c| {
                for r in &page {
                    let resource: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                    let index = crate::search::index::rows(&r.res_type, &resource);
                    replace_index(c, &r.res_type, &r.res_id, &index, true)?;
                }
                Ok(())
            })
            .map_err(db_error)?;
            done += page.len() as u64;
        }
    }

    /// One transaction per attempt; an attempt that lost a race to another
    /// writer is rolled back and run again. `Err(None)`: every attempt lost.
    fn retrying<T>(
        &self,
        mut attempt: impl FnMut(&mut AnyConnection) -> Result<T, Attempt>,
    ) -> Result<T, Option<FhirError>> {
        let mut conn = self.writer().map_err(Some)?;
        for _ in 0..ATTEMPTS {
            match conn.transaction::<_, Attempt, _>(|c| {
                take_sqlite_write_lock(c)?;
                attempt(c)
            }) {
                Ok(v) => return Ok(v),
                Err(Attempt::Lost) => continue,
                Err(Attempt::Failed(e)) => return Err(Some(e)),
            }
        }
        Err(None)
    }
}

/// On SQLite, makes the transaction's first statement a write. A
/// transaction that reads first holds a snapshot; if another process
/// commits before it writes, SQLite refuses the write at once ("database is
/// locked", no busy wait), where a transaction that writes first simply
/// waits its turn. (The same as BEGIN IMMEDIATE; PostgreSQL needs nothing.)
fn take_sqlite_write_lock(c: &mut AnyConnection) -> Result<(), Attempt> {
    if let AnyConnection::Sqlite(c) = c {
        diesel::sql_query("UPDATE feed_clock SET last = last WHERE id = 1").execute(c)?;
    }
    Ok(())
}

/// Gives this transaction's versions their places in the change feed. The
/// clock row is updated last and stays locked until commit, so ticks are
/// handed out in commit order (see migration 2026-11-25-000003).
fn stamp_ticks(c: &mut AnyConnection, written: &[(String, String, i32)]) -> Result<(), Attempt> {
    if written.is_empty() {
        return Ok(());
    }
    let n = written.len() as i64;
    diesel::update(feed_clock::table.find(1))
        .set(feed_clock::last.eq(feed_clock::last + n))
        .execute(c)?;
    let last: i64 = feed_clock::table
        .find(1)
        .select(feed_clock::last)
        .first(c)?;
    for (i, (t, id, v)) in written.iter().enumerate() {
        let tick = last - n + 1 + i as i64;
        diesel::update(
            resource_versions::table
                .filter(resource_versions::res_type.eq(t))
                .filter(resource_versions::res_id.eq(id))
                .filter(resource_versions::version.eq(v)),
        )
        .set(resource_versions::tick.eq(tick))
        .execute(c)?;
        diesel::update(
            resources::table
                .find((t, id))
                .filter(resources::version.eq(v)),
        )
        .set(resources::tick.eq(tick))
        .execute(c)?;
    }
    Ok(())
}

fn write_in<F>(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
    decide: &F,
) -> Result<WriteOutcome, Attempt>
where
    F: Fn(Option<&Current>) -> FhirResult<Decision>,
{
    let current = super::query::read_in(c, res_type, res_id)?;
    let live_before = current.as_ref().is_some_and(|cur| !cur.deleted);
    let next = current.as_ref().map_or(1, |cur| cur.version + 1);
    let now = crate::fhir::resource::now_instant();
    let row = match decide(current.as_ref())? {
        Decision::Unchanged => {
            let current =
                current.ok_or_else(|| FhirError::Internal("nothing to leave unchanged".into()))?;
            return Ok(WriteOutcome {
                current,
                created: false,
                changed: false,
            });
        }
        Decision::Put {
            method,
            mut resource,
        } => {
            crate::fhir::resource::stamp(&mut resource, res_id, next, &now);
            let index = crate::search::index::rows(res_type, &resource);
            let body =
                serde_json::to_string(&resource).map_err(|e| FhirError::Internal(e.to_string()))?;
            let row = Current {
                res_type: res_type.to_string(),
                res_id: res_id.to_string(),
                version: next,
                last_updated: now,
                deleted: false,
                body,
                tick: 0,
            };
            save(c, current.as_ref(), &row, method, &index)?;
            row
        }
        Decision::Delete => {
            let row = Current {
                res_type: res_type.to_string(),
                res_id: res_id.to_string(),
                version: next,
                last_updated: now,
                deleted: true,
                body: String::new(),
                tick: 0,
            };
            save(c, current.as_ref(), &row, "DELETE", &IndexRows::default())?;
            row
        }
    };
    Ok(WriteOutcome {
        current: row,
        created: !live_before,
        changed: true,
    })
}

/// Writes `row` as the new current version, its history row and its index.
fn save(
    c: &mut AnyConnection,
    previous: Option<&Current>,
    row: &Current,
    method: &str,
    index: &IndexRows,
) -> Result<(), Attempt> {
    // The history insert comes first: its unique key is where two writers of
    // the same version collide, on both backends.
    diesel::insert_into(resource_versions::table)
        .values((
            resource_versions::res_type.eq(&row.res_type),
            resource_versions::res_id.eq(&row.res_id),
            resource_versions::version.eq(row.version),
            resource_versions::last_updated.eq(&row.last_updated),
            resource_versions::method.eq(method),
            resource_versions::body.eq((!row.deleted).then_some(&row.body)),
        ))
        .execute(c)?;
    match previous {
        None => {
            diesel::insert_into(resources::table)
                .values((
                    resources::res_type.eq(&row.res_type),
                    resources::res_id.eq(&row.res_id),
                    resources::version.eq(row.version),
                    resources::last_updated.eq(&row.last_updated),
                    resources::deleted.eq(row.deleted),
                    resources::body.eq(&row.body),
                ))
                .execute(c)?;
        }
        Some(prev) => {
            let n = diesel::update(
                resources::table
                    .find((&row.res_type, &row.res_id))
                    .filter(resources::version.eq(prev.version)),
            )
            .set((
                resources::version.eq(row.version),
                resources::last_updated.eq(&row.last_updated),
                resources::deleted.eq(row.deleted),
                resources::body.eq(&row.body),
            ))
            .execute(c)?;
            if n != 1 {
                return Err(Attempt::Lost);
            }
        }
    }
    // A new resource, or one deleted before, has no index rows to clear.
    let indexed = previous.is_some_and(|p| !p.deleted);
    replace_index(c, &row.res_type, &row.res_id, index, indexed)?;
    Ok(())
}

/// Replaces every index row of one resource with `index`; `indexed` says
/// whether it may have rows to remove first.
pub(super) fn replace_index(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
    index: &IndexRows,
    indexed: bool,
) -> diesel::QueryResult<()> {
    macro_rules! clear {
        ($($table:ident),*) => {$(
            diesel::delete(
                $table::table
                    .filter($table::res_type.eq(res_type))
                    .filter($table::res_id.eq(res_id)),
            )
            .execute(c)?;
        )*};
    }
    if indexed {
        clear!(
            search_token,
            search_string,
            search_date,
            search_reference,
            search_uri,
            search_number,
            search_quantity
        );
    }
    // One multi-row INSERT per table (diesel's batch insert is not
    // available through MultiConnection): a resource has tens of rows, and
    // on PostgreSQL each statement is a round trip.
    let (t, i) = (res_type, res_id);
    let text = |s: &str| Bind::Text(s.to_string());
    insert(
        c,
        "search_token",
        &["system", "code", "syscode"],
        t,
        i,
        &index.tokens,
        |r| {
            (
                &r.param,
                vec![
                    text(&r.system),
                    text(&r.code),
                    Bind::Text(format!("{}|{}", r.system, r.code)),
                ],
            )
        },
    )?;
    insert(
        c,
        "search_string",
        &["norm", "exact"],
        t,
        i,
        &index.strings,
        |r| (&r.param, vec![text(&r.norm), text(&r.exact)]),
    )?;
    insert(
        c,
        "search_date",
        &["low", "high"],
        t,
        i,
        &index.dates,
        |r| (&r.param, vec![text(&r.low), text(&r.high)]),
    )?;
    insert(
        c,
        "search_reference",
        &["target_type", "target_id", "url"],
        t,
        i,
        &index.references,
        |r| {
            (
                &r.param,
                vec![text(&r.target_type), text(&r.target_id), text(&r.url)],
            )
        },
    )?;
    insert(c, "search_uri", &["uri"], t, i, &index.uris, |r| {
        (&r.param, vec![text(&r.uri)])
    })?;
    insert(c, "search_number", &["value"], t, i, &index.numbers, |r| {
        (&r.param, vec![Bind::Double(r.value)])
    })?;
    insert(
        c,
        "search_quantity",
        &["value", "system", "code"],
        t,
        i,
        &index.quantities,
        |r| {
            (
                &r.param,
                vec![Bind::Double(r.value), text(&r.system), text(&r.code)],
            )
        },
    )?;
    Ok(())
}

/// Rows per INSERT statement, well under both backends' bind limits.
const ROWS_PER_INSERT: usize = 100;

/// Inserts `rows` into index `table`: (res_type, res_id, param, columns…).
fn insert<R>(
    c: &mut AnyConnection,
    table: &str,
    columns: &[&str],
    res_type: &str,
    res_id: &str,
    rows: &[R],
    values: impl Fn(&R) -> (&String, Vec<Bind>),
) -> diesel::QueryResult<()> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = Sql::new(c);
        sql.push(&format!(
            "INSERT INTO {table} (res_type, res_id, param, {}) VALUES ",
            columns.join(", ")
        ));
        for (n, row) in chunk.iter().enumerate() {
            let (param, rest) = values(row);
            sql.push(if n == 0 { "(" } else { ", (" });
            sql.text(res_type)
                .push(", ")
                .text(res_id)
                .push(", ")
                .text(param);
            for v in rest {
                sql.push(", ");
                sql.bind(v);
            }
            sql.push(")");
        }
        sql.execute(c)?;
    }
    Ok(())
}
