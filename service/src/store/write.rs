//! The write path: one transaction per change.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use serde_json::Value;

use super::dashboard::replace_summary;
use super::pool::{db_error, AnyConnection, Store};
use super::schema::{
    feed_clock, resource_versions, resources, search_date, search_number, search_quantity,
    search_reference, search_string, search_token, search_uri,
};
use super::sql::{load, Bind, Sql};
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
    /// parameters (after a parameter is added or changed) and its dashboard
    /// summary, a page of resources per transaction. Returns how many
    /// resources were indexed. Safe while the server writes: a page is read
    /// inside its transaction, its rows locked on PostgreSQL (SQLite has one
    /// writer at a time), so a concurrent write is never undone.
    pub fn reindex(&self) -> FhirResult<u64> {
        let mut conn = self.writer()?;
        let mut after: (String, String) = (String::new(), String::new());
        let mut done = 0u64;
        loop {
            let page = conn
                .transaction::<_, Attempt, _>(|c| {
                    take_sqlite_write_lock(c)?;
                    let page = reindex_page(c, &after)?;
                    for r in &page {
                        let resource: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                        let index = crate::search::index::rows(&r.res_type, &resource);
                        replace_index(c, &r.res_type, &r.res_id, &index, true)?;
                        let summary = crate::dashboard::summary::of(
                            &r.res_type,
                            &r.res_id,
                            &resource,
                            &index,
                        );
                        replace_summary(c, &r.res_type, &r.res_id, Some(&summary), true)?;
                    }
                    Ok(page)
                })
                .map_err(|e| match e {
                    Attempt::Lost => {
                        FhirError::Conflict("reindexing lost a race; run it again".into())
                    }
                    Attempt::Failed(e) => e,
                })?;
            let Some(last) = page.last() else {
                return Ok(done);
            };
            after = (last.res_type.clone(), last.res_id.clone());
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

/// The next page of live resources after `after` (type, id) for
/// `Store::reindex`, locked until the transaction ends on PostgreSQL.
fn reindex_page(c: &mut AnyConnection, after: &(String, String)) -> FhirResult<Vec<Current>> {
    let mut sql = Sql::new(c);
    sql.push(
        "SELECT res_type, res_id, version, last_updated, deleted, body, tick FROM resources \
         WHERE NOT deleted AND (res_type > ",
    )
    .text(&after.0)
    .push(" OR (res_type = ")
    .text(&after.0)
    .push(" AND res_id > ")
    .text(&after.1)
    .push(")) ORDER BY res_type, res_id LIMIT 500");
    if sql.numbered {
        sql.push(" FOR UPDATE");
    }
    load!(c, sql, Current)
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
    let first = last - n + 1;
    if let AnyConnection::Postgresql(_) = c {
        // Each statement is a round trip: stamp a batch of versions (and
        // the current rows that are those versions) per statement.
        for (k, chunk) in written.chunks(TICKS_PER_STATEMENT).enumerate() {
            let mut sql = Sql::new(c);
            sql.push("WITH x (t, id, ver, tick) AS (VALUES ");
            for (i, (t, id, v)) in chunk.iter().enumerate() {
                let tick = first + (k * TICKS_PER_STATEMENT + i) as i64;
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.text(t).push(", ").text(id).push(", ");
                sql.text(&v.to_string()).push("::integer, ");
                sql.text(&tick.to_string()).push("::bigint)");
            }
            sql.push(
                "), v AS (UPDATE resource_versions rv SET tick = x.tick FROM x \
                 WHERE rv.res_type = x.t AND rv.res_id = x.id AND rv.version = x.ver) \
                 UPDATE resources r SET tick = x.tick FROM x \
                 WHERE r.res_type = x.t AND r.res_id = x.id AND r.version = x.ver",
            );
            sql.execute(c)?;
        }
        return Ok(());
    }
    for (i, (t, id, v)) in written.iter().enumerate() {
        let tick = first + i as i64;
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

/// Versions stamped per statement on PostgreSQL (four binds each, well
/// under its 65,535).
const TICKS_PER_STATEMENT: usize = 2000;

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
            let summary = crate::dashboard::summary::of(res_type, res_id, &resource, &index);
            replace_summary(c, res_type, res_id, Some(&summary), live_before)?;
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
            replace_summary(c, res_type, res_id, None, live_before)?;
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
    // A new resource, or one deleted before, has no index rows to clear.
    let indexed = previous.is_some_and(|p| !p.deleted);
    let tables = index_tables(index);
    if let AnyConnection::Postgresql(_) = c {
        if tables.iter().map(|t| t.rows.len()).sum::<usize>() <= MAX_INLINE_ROWS {
            return save_pg(c, previous, row, method, indexed, &tables);
        }
    }
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
    if indexed {
        clear_index(c, &row.res_type, &row.res_id)?;
    }
    insert_index(c, &row.res_type, &row.res_id, &tables)?;
    Ok(())
}

/// Index rows a PostgreSQL write puts in its one or two statements; a
/// resource with more (a large Group, say) takes the statement-per-table
/// path, which keeps every statement under the bind limit.
const MAX_INLINE_ROWS: usize = 2000;

/// PostgreSQL: the history row, the current row and the index as one or two
/// statements (data-modifying CTEs), since there each statement is a round
/// trip and most of a small write's time. A new resource's index rows go in
/// the same statement; a changed one's old rows are deleted in it and the
/// new ones inserted by a second statement, because the parts of one
/// statement run on one snapshot in no set order, so deleting and
/// re-inserting the same key there could collide on a primary key. The
/// history insert still decides a race: its unique key fails the statement.
fn save_pg(
    c: &mut AnyConnection,
    previous: Option<&Current>,
    row: &Current,
    method: &str,
    indexed: bool,
    tables: &[IndexTable],
) -> Result<(), Attempt> {
    let (t, id) = (row.res_type.as_str(), row.res_id.as_str());
    let version = row.version.to_string();
    let mut sql = Sql::new(c);
    sql.push(
        "WITH v AS (INSERT INTO resource_versions \
         (res_type, res_id, version, last_updated, method, body) VALUES (",
    );
    sql.text(t).push(", ").text(id).push(", ");
    sql.text(&version).push("::integer, ");
    sql.text(&row.last_updated)
        .push(", ")
        .text(method)
        .push(", ");
    if row.deleted {
        sql.push("NULL))");
    } else {
        sql.text(&row.body).push("))");
    }
    if indexed {
        for table in INDEX_TABLES {
            sql.push(&format!(
                ", d_{table} AS (DELETE FROM {table} WHERE res_type = "
            ));
            sql.text(t).push(" AND res_id = ").text(id).push(")");
        }
    } else {
        for table in tables {
            sql.push(&format!(", i_{} AS (", table.name));
            push_insert(&mut sql, table, t, id, &table.rows);
            sql.push(")");
        }
    }
    match previous {
        None => {
            sql.push(
                " INSERT INTO resources (res_type, res_id, version, last_updated, deleted, body) \
                 VALUES (",
            );
            sql.text(t).push(", ").text(id).push(", ");
            sql.text(&version)
                .push("::integer, ")
                .text(&row.last_updated);
            sql.push(", ")
                .text(&row.deleted.to_string())
                .push("::boolean, ");
            sql.text(&row.body).push(")");
        }
        Some(prev) => {
            sql.push(" UPDATE resources SET version = ").text(&version);
            sql.push("::integer, last_updated = ")
                .text(&row.last_updated);
            sql.push(", deleted = ").text(&row.deleted.to_string());
            sql.push("::boolean, body = ").text(&row.body);
            sql.push(" WHERE res_type = ")
                .text(t)
                .push(" AND res_id = ")
                .text(id);
            sql.push(" AND version = ")
                .text(&prev.version.to_string())
                .push("::integer");
        }
    }
    if sql.execute(c)? != 1 {
        return Err(Attempt::Lost);
    }
    if let (true, Some((last, rest))) = (indexed, tables.split_last()) {
        let mut sql = Sql::new(c);
        for (n, table) in rest.iter().enumerate() {
            sql.push(if n == 0 { "WITH " } else { ", " });
            sql.push(&format!("i_{} AS (", table.name));
            push_insert(&mut sql, table, t, id, &table.rows);
            sql.push(")");
        }
        sql.push(" ");
        push_insert(&mut sql, last, t, id, &last.rows);
        sql.execute(c)?;
    }
    Ok(())
}

const INDEX_TABLES: [&str; 7] = [
    "search_token",
    "search_string",
    "search_date",
    "search_reference",
    "search_uri",
    "search_number",
    "search_quantity",
];

/// One index table's new rows for a resource: each row is its parameter's
/// name and the values of `columns`.
struct IndexTable {
    name: &'static str,
    columns: &'static [&'static str],
    rows: Vec<(String, Vec<Bind>)>,
}

/// The tables `index` has rows for, with those rows as binds.
fn index_tables(index: &IndexRows) -> Vec<IndexTable> {
    let text = |s: &str| Bind::Text(s.to_string());
    let table = |name, columns, rows: Vec<(String, Vec<Bind>)>| IndexTable {
        name,
        columns,
        rows,
    };
    let tables = [
        table(
            "search_token",
            &["system", "code", "syscode"],
            index
                .tokens
                .iter()
                .map(|r| {
                    let syscode = Bind::Text(format!("{}|{}", r.system, r.code));
                    (
                        r.param.clone(),
                        vec![text(&r.system), text(&r.code), syscode],
                    )
                })
                .collect(),
        ),
        table(
            "search_string",
            &["norm", "exact"],
            index
                .strings
                .iter()
                .map(|r| (r.param.clone(), vec![text(&r.norm), text(&r.exact)]))
                .collect(),
        ),
        table(
            "search_date",
            &["low", "high"],
            index
                .dates
                .iter()
                .map(|r| (r.param.clone(), vec![text(&r.low), text(&r.high)]))
                .collect(),
        ),
        table(
            "search_reference",
            &["target_type", "target_id", "url"],
            index
                .references
                .iter()
                .map(|r| {
                    let values = vec![text(&r.target_type), text(&r.target_id), text(&r.url)];
                    (r.param.clone(), values)
                })
                .collect(),
        ),
        table(
            "search_uri",
            &["uri"],
            index
                .uris
                .iter()
                .map(|r| (r.param.clone(), vec![text(&r.uri)]))
                .collect(),
        ),
        table(
            "search_number",
            &["value"],
            index
                .numbers
                .iter()
                .map(|r| (r.param.clone(), vec![Bind::Double(r.value)]))
                .collect(),
        ),
        table(
            "search_quantity",
            &["value", "system", "code"],
            index
                .quantities
                .iter()
                .map(|r| {
                    let values = vec![Bind::Double(r.value), text(&r.system), text(&r.code)];
                    (r.param.clone(), values)
                })
                .collect(),
        ),
    ];
    tables.into_iter().filter(|t| !t.rows.is_empty()).collect()
}

/// Appends `INSERT INTO table (res_type, res_id, param, columns…) VALUES …`.
fn push_insert(
    sql: &mut Sql,
    table: &IndexTable,
    res_type: &str,
    res_id: &str,
    rows: &[(String, Vec<Bind>)],
) {
    sql.push(&format!(
        "INSERT INTO {} (res_type, res_id, param, {}) VALUES ",
        table.name,
        table.columns.join(", ")
    ));
    for (n, (param, values)) in rows.iter().enumerate() {
        sql.push(if n == 0 { "(" } else { ", (" });
        sql.text(res_type)
            .push(", ")
            .text(res_id)
            .push(", ")
            .text(param);
        for v in values {
            sql.push(", ");
            sql.bind(v.clone());
        }
        sql.push(")");
    }
}

/// Deletes every index row of one resource.
fn clear_index(c: &mut AnyConnection, res_type: &str, res_id: &str) -> diesel::QueryResult<()> {
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
    clear!(
        search_token,
        search_string,
        search_date,
        search_reference,
        search_uri,
        search_number,
        search_quantity
    );
    Ok(())
}

/// Rows per INSERT statement, well under both backends' bind limits.
const ROWS_PER_INSERT: usize = 100;

/// Inserts the index rows, one multi-row INSERT per table and chunk
/// (diesel's batch insert is not available through MultiConnection).
fn insert_index(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
    tables: &[IndexTable],
) -> diesel::QueryResult<()> {
    for table in tables {
        for chunk in table.rows.chunks(ROWS_PER_INSERT) {
            let mut sql = Sql::new(c);
            push_insert(&mut sql, table, res_type, res_id, chunk);
            sql.execute(c)?;
        }
    }
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
    if indexed {
        clear_index(c, res_type, res_id)?;
    }
    insert_index(c, res_type, res_id, &index_tables(index))
}
