//! Reads: current versions, old versions, search and history.

use diesel::dsl::exists;
use diesel::prelude::*;

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{resource_versions, resources, search_token};
use super::{Current, Version};
use crate::fhir::outcome::FhirResult;
use crate::search::{DateBound, Prefix, SearchQuery, TokenFilter};

type Db = <AnyConnection as Connection>::Backend;

/// One page of results, and whether another follows.
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub more: bool,
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
}

type BoxedResources<'a> = resources::BoxedQuery<'a, Db>;

impl Store {
    pub fn read(&self, res_type: &str, res_id: &str) -> FhirResult<Option<Current>> {
        let mut c = self.reader()?;
        read_in(&mut c, res_type, res_id)
    }

    pub fn vread(&self, res_type: &str, res_id: &str, version: i32) -> FhirResult<Option<Version>> {
        let mut c = self.reader()?;
        resource_versions::table
            .filter(resource_versions::res_type.eq(res_type))
            .filter(resource_versions::res_id.eq(res_id))
            .filter(resource_versions::version.eq(version))
            .select(Version::as_select())
            .first(&mut c)
            .optional()
            .map_err(db_error)
    }

    /// Current, non-deleted resources of one type matching `q`, ordered by id.
    pub fn search(&self, res_type: &str, q: &SearchQuery) -> FhirResult<Page<Current>> {
        let mut c = self.reader()?;
        search_in(&mut c, res_type, q)
    }

    pub fn history(&self, q: &HistoryQuery) -> FhirResult<Page<Version>> {
        let mut c = self.reader()?;
        let total = history_filtered(q)
            .count()
            .get_result::<i64>(&mut c)
            .map_err(db_error)?;
        let mut page = history_filtered(q);
        if let Some(seq) = q.before_seq {
            page = page.filter(resource_versions::seq.lt(seq));
        }
        let mut items = page
            .order(resource_versions::seq.desc())
            .limit(q.count + 1)
            .select(Version::as_select())
            .load(&mut c)
            .map_err(db_error)?;
        let more = items.len() as i64 > q.count;
        items.truncate(q.count as usize);
        Ok(Page { items, total, more })
    }
}

pub(super) fn search_in(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
) -> FhirResult<Page<Current>> {
    let total = filtered(res_type, q)
        .count()
        .get_result::<i64>(c)
        .map_err(db_error)?;
    if q.count == 0 {
        return Ok(Page {
            items: vec![],
            total,
            more: false,
        });
    }
    let mut page = filtered(res_type, q);
    if let Some(after) = &q.after_id {
        page = page.filter(resources::res_id.gt(after.clone()));
    }
    let mut items = page
        .order(resources::res_id.asc())
        .limit(q.count + 1)
        .select(Current::as_select())
        .load(c)
        .map_err(db_error)?;
    let more = items.len() as i64 > q.count;
    items.truncate(q.count as usize);
    Ok(Page { items, total, more })
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

/// Ids of current resources matching `q`, at most `limit` (conditional
/// interactions only care about 0, 1 or many).
pub(super) fn matching_ids_in(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
    limit: i64,
) -> FhirResult<Vec<String>> {
    filtered(res_type, q)
        .order(resources::res_id.asc())
        .limit(limit)
        .select(resources::res_id)
        .load(c)
        .map_err(db_error)
}

fn filtered<'a>(res_type: &'a str, q: &'a SearchQuery) -> BoxedResources<'a> {
    let mut query = resources::table
        .filter(resources::res_type.eq(res_type))
        .filter(resources::deleted.eq(false))
        .into_boxed();
    for ids in &q.ids {
        query = query.filter(resources::res_id.eq_any(ids));
    }
    for d in &q.last_updated {
        query = match date_condition(d) {
            DateCondition::Ge(v) => query.filter(resources::last_updated.ge(v)),
            DateCondition::Lt(v) => query.filter(resources::last_updated.lt(v)),
            DateCondition::Within(lo, hi) => query
                .filter(resources::last_updated.ge(lo))
                .filter(resources::last_updated.lt(hi)),
            DateCondition::Outside(lo, hi) => query.filter(
                resources::last_updated
                    .lt(lo)
                    .or(resources::last_updated.ge(hi)),
            ),
        };
    }
    for (param, any_of) in &q.tokens {
        // Every token form reduces to one of three IN-lists (OR'd).
        let (mut syscodes, mut codes, mut systems) = (vec![], vec![], vec![]);
        for t in any_of {
            match t {
                TokenFilter::SystemAndCode(s, v) => syscodes.push(format!("{s}|{v}")),
                TokenFilter::NoSystemCode(v) => syscodes.push(format!("|{v}")),
                TokenFilter::Code(v) => codes.push(v.clone()),
                TokenFilter::System(s) => systems.push(s.clone()),
            }
        }
        query = query.filter(exists(
            search_token::table
                .filter(search_token::res_type.eq(resources::res_type))
                .filter(search_token::res_id.eq(resources::res_id))
                .filter(search_token::param.eq(param.clone()))
                .filter(
                    search_token::syscode
                        .eq_any(syscodes)
                        .or(search_token::code.eq_any(codes))
                        .or(search_token::system.eq_any(systems)),
                ),
        ));
    }
    query
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

enum DateCondition {
    Ge(String),
    Lt(String),
    Within(String, String),
    Outside(String, String),
}

/// FHIR date comparison against a stored instant: the parameter value
/// stands for the range [low, high) its precision implies.
fn date_condition(d: &DateBound) -> DateCondition {
    let (lo, hi) = (d.low.clone(), d.high.clone());
    match d.prefix {
        Prefix::Eq | Prefix::Ap => DateCondition::Within(lo, hi),
        Prefix::Ne => DateCondition::Outside(lo, hi),
        Prefix::Gt | Prefix::Sa => DateCondition::Ge(hi),
        Prefix::Lt | Prefix::Eb => DateCondition::Lt(lo),
        Prefix::Ge => DateCondition::Ge(lo),
        Prefix::Le => DateCondition::Lt(hi),
    }
}
