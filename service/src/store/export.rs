//! Bulk export (`crate::export`): the job rows every replica shares, and the
//! reads that count and page a job's resources as they were at its moment
//! (a change-feed tick), in the caller's view.

use diesel::prelude::*;
use diesel::sql_types::{Nullable, Text};

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{export_jobs, export_members, feed_clock};
use super::sql::{load, Count, Sql};
use crate::auth::access::Access;
use crate::fhir::outcome::FhirResult;

/// One export job as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = export_jobs)]
pub struct ExportJob {
    pub id: String,
    pub client_id: String,
    pub organization: String,
    pub role: String,
    pub request: String,
    pub transaction_time: String,
    /// The change-feed position the export shows the data at.
    pub tick: i64,
    pub since: Option<String>,
    pub group_id: Option<String>,
    /// Comma-separated resource types.
    pub types: String,
    /// JSON object, type → count, as far as the counting step has got.
    pub counts: String,
    pub state: String,
    pub error: Option<String>,
    pub lease_until: i64,
    pub expires: i64,
}

/// The resources of one type in one export: what a count or a page reads.
pub struct ExportSlice<'a> {
    pub res_type: &'a str,
    /// Each resource in its version at this tick; those that did not exist
    /// then, or were deleted, are not in it.
    pub tick: i64,
    /// Only versions last updated after this stored instant.
    pub since: Option<&'a str>,
    /// A Group export: the job whose `export_members` hold the Patients,
    /// and the reference parameter that ties a resource of this type to its
    /// patient (`None`: the type is Patient itself).
    pub members: Option<(&'a str, Option<&'a str>)>,
    pub access: &'a Access,
}

/// One page of an export file.
pub struct ExportPage {
    /// The resources' JSON as the caller may see them, in id order.
    pub lines: Vec<String>,
    /// The id the next page starts after (`None`: this was the last).
    pub next: Option<String>,
}

/// A resource row of a slice with its version at the tick.
#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    res_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    body: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_updated: Option<String>,
}

/// How many member rows one INSERT carries (SQLite binds at most 32,766).
const MEMBER_CHUNK: usize = 1000;

impl Store {
    /// The change feed's position: every tick at or below it is committed
    /// (the clock row is updated as a writer's last step and stays locked
    /// until it commits, so a committed value never runs ahead of data).
    pub fn feed_position(&self) -> FhirResult<i64> {
        let mut c = self.reader()?;
        feed_clock::table
            .find(1)
            .select(feed_clock::last)
            .first(&mut c)
            .map_err(db_error)
    }

    /// Stores a new job and its Group members in one transaction.
    pub fn insert_export(&self, job: &ExportJob, members: &[String]) -> FhirResult<()> {
        let mut c = self.writer()?;
        c.transaction(|c| {
            diesel::insert_into(export_jobs::table)
                .values(job)
                .execute(c)?;
            for chunk in members.chunks(MEMBER_CHUNK) {
                let mut sql = Sql::new(c);
                sql.push("INSERT INTO export_members (job_id, patient_id) VALUES ");
                for (i, p) in chunk.iter().enumerate() {
                    sql.push(if i == 0 { "(" } else { ", (" })
                        .text(&job.id)
                        .push(", ")
                        .text(p)
                        .push(")");
                }
                sql.execute(c)?;
            }
            Ok(())
        })
        .map_err(db_error)
    }

    /// A job of `client_id` that has not expired at `now` (unix seconds).
    pub fn export_job(&self, id: &str, client_id: &str, now: i64) -> FhirResult<Option<ExportJob>> {
        let mut c = self.reader()?;
        export_jobs::table
            .find(id)
            .filter(export_jobs::client_id.eq(client_id))
            .filter(export_jobs::expires.gt(now))
            .select(ExportJob::as_select())
            .first(&mut c)
            .optional()
            .map_err(db_error)
    }

    /// Deletes a job of `client_id` and its members; false when there was
    /// none (or it was another client's).
    pub fn delete_export(&self, id: &str, client_id: &str) -> FhirResult<bool> {
        let mut c = self.writer()?;
        c.transaction(|c| {
            let n = diesel::delete(
                export_jobs::table
                    .find(id)
                    .filter(export_jobs::client_id.eq(client_id)),
            )
            .execute(c)?;
            if n > 0 {
                diesel::delete(export_members::table.filter(export_members::job_id.eq(id)))
                    .execute(c)?;
            }
            Ok(n > 0)
        })
        .map_err(db_error)
    }

    /// Drops every job expired at `now`, with its members.
    pub fn drop_expired_exports(&self, now: i64) -> FhirResult<()> {
        let mut c = self.writer()?;
        c.transaction(|c| {
            let mut sql = Sql::new(c);
            sql.push(&format!(
                "DELETE FROM export_members WHERE job_id IN (SELECT id FROM export_jobs WHERE expires <= {now})"
            ));
            sql.execute(c)?;
            diesel::delete(export_jobs::table.filter(export_jobs::expires.le(now))).execute(c)
        })
        .map(drop)
        .map_err(db_error)
    }

    /// How many jobs of `client_id` are still counting.
    pub fn counting_exports(&self, client_id: &str, now: i64) -> FhirResult<i64> {
        let mut c = self.reader()?;
        export_jobs::table
            .filter(export_jobs::client_id.eq(client_id))
            .filter(export_jobs::state.eq("counting"))
            .filter(export_jobs::expires.gt(now))
            .count()
            .get_result(&mut c)
            .map_err(db_error)
    }

    /// Any job by id, whoever started it (the counting step's own reads).
    pub fn export_job_any(&self, id: &str) -> FhirResult<Option<ExportJob>> {
        let mut c = self.reader()?;
        export_jobs::table
            .find(id)
            .select(ExportJob::as_select())
            .first(&mut c)
            .optional()
            .map_err(db_error)
    }

    /// Records the counts so far and renews the counting lease `held`;
    /// false when the job is gone (cancelled), no longer counting, or its
    /// lease was taken over.
    pub fn export_progress(
        &self,
        id: &str,
        counts: &str,
        held: i64,
        lease_until: i64,
    ) -> FhirResult<bool> {
        let mut c = self.writer()?;
        diesel::update(
            export_jobs::table
                .find(id)
                .filter(export_jobs::state.eq("counting"))
                .filter(export_jobs::lease_until.eq(held)),
        )
        .set((
            export_jobs::counts.eq(counts),
            export_jobs::lease_until.eq(lease_until),
        ))
        .execute(&mut *c)
        .map(|n| n > 0)
        .map_err(db_error)
    }

    /// Ends the counting under lease `held`: `done`, or `failed` with what
    /// went wrong.
    pub fn end_export(
        &self,
        id: &str,
        held: i64,
        state: &str,
        error: Option<&str>,
    ) -> FhirResult<()> {
        let mut c = self.writer()?;
        diesel::update(
            export_jobs::table
                .find(id)
                .filter(export_jobs::state.eq("counting"))
                .filter(export_jobs::lease_until.eq(held)),
        )
        .set((export_jobs::state.eq(state), export_jobs::error.eq(error)))
        .execute(&mut *c)
        .map(drop)
        .map_err(db_error)
    }

    /// Takes over a counting job whose lease has run out: only the replica
    /// whose update still sees the lease it read wins.
    pub fn claim_export(&self, id: &str, seen_lease: i64, lease_until: i64) -> FhirResult<bool> {
        let mut c = self.writer()?;
        diesel::update(
            export_jobs::table
                .find(id)
                .filter(export_jobs::state.eq("counting"))
                .filter(export_jobs::lease_until.eq(seen_lease)),
        )
        .set(export_jobs::lease_until.eq(lease_until))
        .execute(&mut *c)
        .map(|n| n > 0)
        .map_err(db_error)
    }

    /// How many resources `slice` holds.
    pub fn export_count(&self, slice: &ExportSlice) -> FhirResult<i64> {
        let mut c = self.reader()?;
        let mut sql = Sql::new(&c);
        sql.push("SELECT COUNT(*) AS n FROM (");
        slice_rows(&mut sql, slice);
        sql.push(") x WHERE x.body IS NOT NULL");
        if let Some(since) = slice.since {
            sql.push(" AND x.last_updated > ").text(since);
        }
        let c: &mut AnyConnection = &mut c;
        Ok(load!(c, sql, Count)?.first().map_or(0, |r| r.n))
    }

    /// One page of `slice`: the resources among the next `limit` resource
    /// rows after id `after` (in id order). A page can hold fewer than `limit` resources, even none, and still
    /// have a next: rows whose version at the tick is a deletion, or not
    /// after `_since`, are read and dropped here.
    pub fn export_page(
        &self,
        slice: &ExportSlice,
        after: Option<&str>,
        limit: i64,
    ) -> FhirResult<ExportPage> {
        let mut c = self.reader()?;
        let mut sql = Sql::new(&c);
        slice_rows(&mut sql, slice);
        if let Some(after) = after {
            sql.push(" AND r.res_id > ").text(after);
        }
        sql.push(&format!(" ORDER BY r.res_id LIMIT {limit}"));
        let c: &mut AnyConnection = &mut c;
        let rows = load!(c, sql, Row)?;
        let next = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|r| r.res_id.clone()))
            .flatten();
        let lines = rows
            .into_iter()
            .filter(|r| match (slice.since, &r.last_updated) {
                (Some(since), Some(lu)) => lu.as_str() > since,
                _ => true,
            })
            .filter_map(|r| Some(slice.access.redact(slice.res_type, r.body?)))
            .collect();
        Ok(ExportPage { lines, next })
    }
}

/// `SELECT id, body, last_updated FROM resources … WHERE …` of a slice:
/// one row per resource row in it, with the version at the tick. That is
/// the current row itself when its tick is not newer (almost always: no
/// other table is read), else the newest version at or before the tick,
/// one index probe into `resource_versions`. The body is NULL when that
/// version is a deletion or there is none (created later). Written so
/// that the planner walks `resources` by id and probes, never joins the
/// whole versions table (a page stays one index range whatever the size).
fn slice_rows(sql: &mut Sql, s: &ExportSlice) {
    let t = s.tick;
    let at = |col: &str| {
        format!(
            "CASE WHEN r.tick <= {t} THEN r.{col} ELSE (SELECT v.{col} FROM resource_versions v \
             WHERE v.res_type = r.res_type AND v.res_id = r.res_id AND v.tick <= {t} \
             ORDER BY v.version DESC LIMIT 1) END"
        )
    };
    sql.push(&format!(
        "SELECT r.res_id, CASE WHEN r.tick <= {t} AND r.deleted THEN NULL ELSE {} END AS body, {} AS last_updated \
         FROM resources r WHERE r.res_type = ",
        at("body"),
        at("last_updated")
    ))
    .text(s.res_type);
    // What the current row already rules out.
    sql.push(&format!(" AND (r.tick > {t} OR NOT r.deleted)"));
    if let Some(since) = s.since {
        sql.push(&format!(" AND (r.tick > {t} OR r.last_updated > "))
            .text(since)
            .push(")");
    }
    match s.members {
        None => {}
        Some((job, None)) => {
            sql.push(
                " AND r.res_id IN (SELECT m.patient_id FROM export_members m WHERE m.job_id = ",
            )
            .text(job)
            .push(")");
        }
        Some((job, Some(param))) => {
            sql.push(
                " AND EXISTS (SELECT 1 FROM search_reference g JOIN export_members m ON m.patient_id = g.target_id \
                 WHERE g.res_type = r.res_type AND g.res_id = r.res_id AND g.target_type = 'Patient' AND g.param = ",
            )
            .text(param)
            .push(" AND m.job_id = ")
            .text(job)
            .push(")");
        }
    }
    if let Some(o) = s.access.org() {
        sql.push(" AND ").visible(o, s.res_type, "r.res_id");
    }
}
