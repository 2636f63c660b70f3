//! Reads: current versions, old versions, search and history.

use diesel::dsl::exists;
use diesel::prelude::*;

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{resource_versions, resources};
use super::{Current, Version};
use crate::auth::access::Access;
use crate::fhir::outcome::FhirResult;
use crate::search::SearchQuery;

type Db = <AnyConnection as Connection>::Backend;

/// One page of results, and whether another follows.
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many match in all; `None` when the client asked not to count.
    pub total: Option<i64>,
    pub more: bool,
    /// Resources brought in by `_include` / `_revinclude` (searches only).
    pub included: Vec<T>,
    /// For `_sort`ed searches: the sort values and id of the last item,
    /// where the next page starts after.
    pub last_sort: Option<Vec<String>>,
}

pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// Versions written at or after this instant.
    pub since: Option<String>,
    /// Versions current at some time in [low, high).
    pub at: Option<(String, String)>,
    pub count: i64,
    /// Keyset cursor: only versions with a smaller `seq`.
    pub before_seq: Option<i64>,
    /// Change feed: versions committed after this tick, oldest first.
    pub after_tick: Option<i64>,
    /// Whose view: versions of resources outside it are left out.
    pub access: crate::auth::access::Access,
}

impl Store {
    /// The current version, whoever asks (the hub's own rules).
    pub fn read(&self, res_type: &str, res_id: &str) -> FhirResult<Option<Current>> {
        let mut c = self.reader()?;
        read_in(&mut c, res_type, res_id)
    }

    /// The current version as `access` may see it: `None` when it is
    /// outside that view, as when it does not exist.
    pub fn read_as(
        &self,
        access: &Access,
        res_type: &str,
        res_id: &str,
    ) -> FhirResult<Option<Current>> {
        let mut c = self.reader()?;
        read_as_in(&mut c, access, res_type, res_id)
    }

    pub fn vread(&self, res_type: &str, res_id: &str, version: i32) -> FhirResult<Option<Version>> {
        let mut c = self.reader()?;
        vread_in(&mut c, res_type, res_id, version)
    }

    /// Current, non-deleted resources of one type matching `q`, ordered by id.
    pub fn search(&self, res_type: &str, q: &SearchQuery) -> FhirResult<Page<Current>> {
        let mut c = self.reader()?;
        search_in(&mut c, res_type, q)
    }

    pub fn history(&self, q: &HistoryQuery) -> FhirResult<Page<Version>> {
        let mut c = self.reader()?;
        history_in(&mut c, q)
    }

    /// Runs `f` on reads that all see one state of the database: one
    /// read-only transaction (REPEATABLE READ on PostgreSQL; on SQLite in
    /// WAL mode a read transaction is a snapshot already).
    pub fn snapshot<T>(&self, f: impl FnOnce(&mut Snapshot) -> FhirResult<T>) -> FhirResult<T> {
        self.in_snapshot(|c| f(&mut Snapshot { c }))
    }

    /// The read-only transaction of `snapshot`, on a reader connection
    /// (the dashboard's reads use it too).
    pub(super) fn in_snapshot<T>(
        &self,
        f: impl FnOnce(&mut AnyConnection) -> FhirResult<T>,
    ) -> FhirResult<T> {
        let mut c = self.reader()?;
        let mut result = None;
        c.transaction::<(), diesel::result::Error, _>(|c| {
            let c: &mut AnyConnection = c;
            if let AnyConnection::Postgresql(pg) = c {
                diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(pg)?;
            }
            result = Some(f(c));
            Ok(())
        })
        .map_err(db_error)?;
        result.unwrap_or_else(|| {
            Err(crate::fhir::outcome::FhirError::Internal(
                "the snapshot did not run".into(),
            ))
        })
    }
}

/// Reads inside `Store::snapshot`.
pub struct Snapshot<'c> {
    c: &'c mut AnyConnection,
}

impl Snapshot<'_> {
    pub fn read(&mut self, res_type: &str, res_id: &str) -> FhirResult<Option<Current>> {
        read_in(self.c, res_type, res_id)
    }

    pub fn read_as(
        &mut self,
        access: &Access,
        res_type: &str,
        res_id: &str,
    ) -> FhirResult<Option<Current>> {
        read_as_in(self.c, access, res_type, res_id)
    }

    pub fn search(&mut self, res_type: &str, q: &SearchQuery) -> FhirResult<Page<Current>> {
        search_in(self.c, res_type, q)
    }

    pub fn history(&mut self, q: &HistoryQuery) -> FhirResult<Page<Version>> {
        history_in(self.c, q)
    }
}

fn history_in(c: &mut AnyConnection, q: &HistoryQuery) -> FhirResult<Page<Version>> {
    if let Some(o) = q.access.org() {
        return super::access_sql::history(c, q, o);
    }
    let total = history_filtered(q)
        .count()
        .get_result::<i64>(c)
        .map_err(db_error)?;
    let mut page = history_filtered(q);
    if let Some(seq) = q.before_seq {
        page = page.filter(resource_versions::seq.lt(seq));
    }
    page = match (q.after_tick, &q.scope) {
        // The feed reads in commit order; plain history newest first.
        (Some(_), _) => page.order(resource_versions::tick.asc()),
        // One resource's versions by its key (see `access_sql::history`).
        (None, HistoryScope::Instance(..)) => page.order(resource_versions::version.desc()),
        (None, _) => page.order(resource_versions::seq.desc()),
    };
    let mut items = page
        .limit(q.count + 1)
        .select(Version::as_select())
        .load(c)
        .map_err(db_error)?;
    let more = items.len() as i64 > q.count;
    items.truncate(q.count as usize);
    Ok(Page {
        items,
        total: Some(total),
        more,
        included: vec![],
        last_sort: None,
    })
}

pub(super) fn search_in(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
) -> FhirResult<Page<Current>> {
    super::search_sql::search(c, res_type, q)
}

pub(super) fn read_as_in(
    c: &mut AnyConnection,
    access: &Access,
    res_type: &str,
    res_id: &str,
) -> FhirResult<Option<Current>> {
    let Some(mut current) = read_in(c, res_type, res_id)? else {
        return Ok(None);
    };
    if let Some(o) = access.org() {
        if super::access_sql::visible_ids(c, o, res_type, &[res_id])?.is_empty() {
            return Ok(None);
        }
        current.body = access.redact(res_type, current.body);
    }
    Ok(Some(current))
}

pub(super) fn read_in(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
) -> FhirResult<Option<Current>> {
    resources::table
        .find((res_type, res_id))
        .select(Current::as_select())
        .first(c)
        .optional()
        .map_err(db_error)
}

pub(super) fn vread_in(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
    version: i32,
) -> FhirResult<Option<Version>> {
    resource_versions::table
        .filter(resource_versions::res_type.eq(res_type))
        .filter(resource_versions::res_id.eq(res_id))
        .filter(resource_versions::version.eq(version))
        .select(Version::as_select())
        .first(c)
        .optional()
        .map_err(db_error)
}

/// Ids of current resources matching `q`, at most `limit` (conditional
/// interactions only care about 0, 1 or many).
pub(super) fn matching_ids_in(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
    limit: i64,
) -> FhirResult<Vec<String>> {
    super::search_sql::matching_ids(c, res_type, q, limit)
}

fn history_filtered(q: &HistoryQuery) -> resource_versions::BoxedQuery<'_, Db> {
    let mut query = resource_versions::table.into_boxed();
    match &q.scope {
        HistoryScope::System => {}
        HistoryScope::Type(t) => query = query.filter(resource_versions::res_type.eq(t)),
        HistoryScope::Instance(t, id) => {
            query = query
                .filter(resource_versions::res_type.eq(t))
                .filter(resource_versions::res_id.eq(id))
        }
    }
    if let Some(tick) = q.after_tick {
        query = query.filter(resource_versions::tick.gt(tick));
    }
    if let Some(since) = &q.since {
        query = query.filter(resource_versions::last_updated.ge(since));
    }
    if let Some((low, high)) = &q.at {
        // Current at some time in [low, high): written before `high`, and
        // not replaced by a later version at or before `low`.
        let later = diesel::alias!(resource_versions as later);
        query = query
            .filter(resource_versions::last_updated.lt(high))
            .filter(diesel::dsl::not(exists(
                later
                    .filter(
                        later
                            .field(resource_versions::res_type)
                            .eq(resource_versions::res_type),
                    )
                    .filter(
                        later
                            .field(resource_versions::res_id)
                            .eq(resource_versions::res_id),
                    )
                    .filter(
                        later
                            .field(resource_versions::version)
                            .gt(resource_versions::version),
                    )
                    .filter(later.field(resource_versions::last_updated).le(low)),
            )));
    }
    query
}
