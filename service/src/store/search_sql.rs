//! Search as SQL: each clause of a `SearchQuery` becomes a condition on the
//! resource row or a subquery over one index table (one drives as an `IN`
//! lookup, the others probe with `EXISTS`), with bound parameters.
//! Built as text because the set and shape of conditions is only known at
//! run time; every value goes in as a bind, never into the text.

use diesel::prelude::*;
use diesel::sql_types::Text;

use super::pool::{db_error, AnyConnection};
use super::sql::{load, Count, Id, Sql};
use super::{Current, Page};
use crate::fhir::outcome::FhirResult;
use std::collections::HashSet;

use crate::search::index::cap;
use crate::search::registry::Kind;
use crate::search::{
    Clause, DateBound, Include, Match, NumberBound, Prefix, SearchQuery, SortKey, StringMatch,
    Target, TokenFilter, MAX_SORT_KEYS,
};

pub(super) fn search(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
) -> FhirResult<Page<Current>> {
    let lead = lead(c, q)?;
    if q.count == 0 {
        let total = if q.skip_total {
            None
        } else {
            Some(count(c, res_type, q, lead)?)
        };
        return Ok(Page {
            items: vec![],
            total,
            more: false,
            included: vec![],
            last_sort: None,
        });
    }
    let (items, more, last_sort) = if q.sort.is_empty() {
        unsorted(c, res_type, q, lead)?
    } else {
        sorted(c, res_type, q, lead)?
    };
    // A first page that holds every match is its own count: a poll that
    // finds a few new Tasks (the usual case) runs one query, not two.
    let first = q.after_id.is_none() && q.after_sort.is_none();
    let total = match (q.skip_total, first && !more) {
        (true, _) => None,
        (false, true) => Some(items.len() as i64),
        (false, false) => Some(count(c, res_type, q, lead)?),
    };
    finish(c, q, items, total, more, last_sort)
}

fn count(c: &mut AnyConnection, res_type: &str, q: &SearchQuery, lead: Lead) -> FhirResult<i64> {
    let mut count = Sql::new(c);
    match index_only(q, lead) {
        // Only live resources have index entries, so the lead's distinct
        // ids are the matches: no probe of the resource rows per match
        // (at 1M referrals, a page fetch each on SQLite).
        Some((lead, probes)) => {
            count.access = q.access.org().cloned();
            count.push("SELECT COUNT(DISTINCT m.res_id) AS n FROM (");
            lookup(&mut count, lead, res_type, &probes);
            count.push(") m");
            if let Some(o) = count.access.clone() {
                count.push(" WHERE ").visible(&o, res_type, "m.res_id");
            }
        }
        None => {
            count.push("SELECT COUNT(*) AS n FROM resources r0 WHERE ");
            conditions(&mut count, res_type, q, lead);
        }
    }
    Ok(load!(c, count, Count)?.first().map_or(0, |c| c.n))
}

/// The lead clause and the index clauses it probes, when those are the
/// whole search: no condition on the resource row (`_id`, `_lastUpdated`,
/// the change feed) and a lead answered from index entries alone.
fn index_only(q: &SearchQuery, lead: Lead) -> Option<(&Clause, Vec<&Clause>)> {
    let Lead::Clause(lead) = lead else {
        return None;
    };
    let (on_row, probes) = split(q, lead);
    (on_row.is_empty() && q.feed.is_none() && is_lookup(&q.clauses[lead]))
        .then(|| (&q.clauses[lead], probes))
}

/// The clauses other than the lead: those on the resource row, and the
/// index clauses the lead probes on its own entries.
fn split(q: &SearchQuery, lead: usize) -> (Vec<&Clause>, Vec<&Clause>) {
    q.clauses
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead)
        .map(|(_, c)| c)
        .partition(|c| matches!(c.target, Target::Id | Target::LastUpdated))
}

/// A page's rows, whether more follow, and the last row's sort keys.
type Rows = (Vec<Current>, bool, Option<Vec<String>>);

/// A page in id order, or in commit order for the change feed.
fn unsorted(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
    lead: Lead,
) -> FhirResult<Rows> {
    let mut page = Sql::new(c);
    page.push("SELECT r0.res_type, r0.res_id, r0.version, r0.last_updated, r0.deleted, r0.body, r0.tick FROM resources r0 WHERE ");
    conditions(&mut page, res_type, q, lead);
    match q.feed {
        // The change feed reads in commit order, resuming after a tick.
        Some(_) => {
            let tick = page.column(lead, "r0.tick");
            page.push(&format!(" ORDER BY {tick}"))
        }
        None => {
            if let Some(after) = &q.after_id {
                page.push(" AND r0.res_id > ").text(after);
            }
            page.push(" ORDER BY r0.res_id")
        }
    };
    page.push(&format!(" LIMIT {}", q.count + 1));
    let mut items = load!(c, page, Current)?;
    let more = items.len() as i64 > q.count;
    items.truncate(q.count as usize);
    Ok((items, more, None))
}

#[derive(QueryableByName)]
struct SortedRow {
    #[diesel(embed)]
    current: Current,
    #[diesel(sql_type = Text)]
    s0: String,
    #[diesel(sql_type = Text)]
    s1: String,
    #[diesel(sql_type = Text)]
    s2: String,
}

/// Sorts missing values after present ones in either direction.
const LAST_ASC: &str = "\u{10FFFF}";
const LAST_DESC: &str = "";

/// A `_sort`ed page: each key is the smallest (ascending) or largest
/// (descending) indexed value of the parameter, ties broken by id, paged
/// by keyset on (keys…, id) like the unsorted search.
fn sorted(c: &mut AnyConnection, res_type: &str, q: &SearchQuery, lead: Lead) -> FhirResult<Rows> {
    let mut sql = Sql::new(c);
    sql.push("SELECT * FROM (SELECT r0.res_type, r0.res_id, r0.version, r0.last_updated, r0.deleted, r0.body, r0.tick");
    for i in 0..MAX_SORT_KEYS {
        sql.push(", ");
        match q.sort.get(i) {
            Some(key) => sort_value(&mut sql, key, lead),
            None => {
                sql.text("");
            }
        }
        // Byte order, not the database's locale: the same order on both
        // backends, and the missing-value sentinels really sort last.
        if sql.numbered {
            sql.push(" COLLATE \"C\"");
        }
        sql.push(&format!(" AS s{i}"));
    }
    sql.push(" FROM resources r0 WHERE ");
    conditions(&mut sql, res_type, q, lead);
    sql.push(") t");
    if let Some(after) = &q.after_sort {
        // (k0, k1, …, id) strictly after the previous page's last row.
        sql.push(" WHERE (");
        let keys = q.sort.len();
        for upto in 0..=keys {
            if upto > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (i, value) in after.iter().enumerate().take(upto) {
                sql.push(&format!("t.s{i} = ")).text(value).push(" AND ");
            }
            let (column, descending) = match q.sort.get(upto) {
                Some(key) => (format!("t.s{upto}"), key.descending),
                None => ("t.res_id".to_string(), false),
            };
            sql.push(&format!("{column} {} ", if descending { "<" } else { ">" }))
                .text(&after[upto])
                .push(")");
        }
        sql.push(")");
    }
    sql.push(" ORDER BY ");
    for (i, key) in q.sort.iter().enumerate() {
        sql.push(&format!(
            "t.s{i} {}, ",
            if key.descending { "DESC" } else { "ASC" }
        ));
    }
    sql.push(&format!("t.res_id LIMIT {}", q.count + 1));
    let mut rows = load!(c, sql, SortedRow)?;
    let more = rows.len() as i64 > q.count;
    rows.truncate(q.count as usize);
    let last_sort = rows.last().map(|r| {
        let mut v: Vec<String> = [&r.s0, &r.s1, &r.s2]
            .into_iter()
            .take(q.sort.len())
            .cloned()
            .collect();
        v.push(r.current.res_id.clone());
        v
    });
    let items: Vec<Current> = rows.into_iter().map(|r| r.current).collect();
    Ok((items, more, last_sort))
}

/// The text a resource sorts by for one key.
fn sort_value(sql: &mut Sql, key: &SortKey, lead: Lead) {
    let (agg, missing) = if key.descending {
        ("MAX", LAST_DESC)
    } else {
        ("MIN", LAST_ASC)
    };
    match &key.target {
        Target::Id => {
            sql.push("r0.res_id");
        }
        Target::LastUpdated => {
            let column = sql.column(lead, "r0.last_updated");
            sql.push(&column);
        }
        Target::Index(kind, param) => {
            let column = match kind {
                Kind::String => "norm",
                Kind::Token => "code",
                Kind::Date if key.descending => "high",
                Kind::Date => "low",
                Kind::Uri => "uri",
                Kind::Reference => "target_id",
                Kind::Number | Kind::Quantity => "value",
            };
            sql.push(&format!(
                "COALESCE((SELECT {agg}(s.{column}) FROM {} s \
                 WHERE s.res_type = r0.res_type AND s.res_id = r0.res_id AND s.param = ",
                table_of(*kind)
            ))
            .text(param)
            .push("), ")
            .text(missing)
            .push(")");
        }
        Target::Chain { .. } | Target::Has { .. } => {
            sql.text("");
        }
    }
}

/// At most this many resources are added to one page by includes.
pub const MAX_INCLUDED: usize = 1000;
/// Rounds of `:iterate`, each following the includes from what the last added.
const MAX_ITERATIONS: usize = 4;

/// The resources `_include` / `_revinclude` add to a page of matches.
fn includes(
    c: &mut AnyConnection,
    matches: &[Current],
    specs: &[Include],
) -> FhirResult<Vec<Current>> {
    if specs.is_empty() || matches.is_empty() {
        return Ok(vec![]);
    }
    let mut seen: HashSet<(String, String)> = matches
        .iter()
        .map(|m| (m.res_type.clone(), m.res_id.clone()))
        .collect();
    let mut added: Vec<Current> = vec![];
    let mut frontier: Vec<Current> = matches.to_vec();
    for round in 0..MAX_ITERATIONS {
        let mut next = vec![];
        for spec in specs.iter().filter(|s| round == 0 || s.iterate) {
            for found in follow(c, &frontier, spec)? {
                if added.len() >= MAX_INCLUDED {
                    return Ok(added);
                }
                if seen.insert((found.res_type.clone(), found.res_id.clone())) {
                    next.push(found.clone());
                    added.push(found);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(added)
}

/// One include step from `from`: the live resources it reaches.
fn follow(c: &mut AnyConnection, from: &[Current], spec: &Include) -> FhirResult<Vec<Current>> {
    let sources: Vec<&Current> = from
        .iter()
        .filter(|r| spec.reverse || r.res_type == spec.source)
        .collect();
    if sources.is_empty() {
        return Ok(vec![]);
    }
    let mut sql = Sql::new(c);
    sql.push(
        "SELECT DISTINCT r.res_type, r.res_id, r.version, r.last_updated, r.deleted, r.body, r.tick \
              FROM search_reference x JOIN resources r ON ",
    );
    if spec.reverse {
        // Resources of `source` whose `param` points at one of `from`.
        sql.push("r.res_type = x.res_type AND r.res_id = x.res_id WHERE x.res_type = ")
            .text(&spec.source)
            .push(" AND x.param = ")
            .text(&spec.param)
            .push(" AND (");
        for (i, m) in sources.iter().enumerate() {
            sql.push(if i == 0 { "(" } else { " OR (" })
                .push("x.target_type = ")
                .text(&m.res_type)
                .push(" AND x.target_id = ")
                .text(&m.res_id)
                .push(")");
        }
        sql.push(")");
    } else {
        // What `param` of the `source` resources in `from` points at.
        sql.push("r.res_type = x.target_type AND r.res_id = x.target_id WHERE x.res_type = ")
            .text(&spec.source)
            .push(" AND x.param = ")
            .text(&spec.param)
            .push(" AND x.res_id IN (");
        for (i, m) in sources.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.text(&m.res_id);
        }
        sql.push(")");
        if let Some(t) = &spec.target {
            sql.push(" AND x.target_type = ").text(t);
        }
    }
    sql.push(&format!(
        " AND NOT r.deleted ORDER BY r.res_type, r.res_id LIMIT {}",
        MAX_INCLUDED + 1
    ));
    load!(c, sql, Current)
}

/// The page of `items`, with what `_include` adds, as the caller may see
/// it: the matches are in its view already (the WHERE clause says so);
/// included resources are kept only when they are too, and bodies are
/// shaped for the caller (`Access::redact`).
fn finish(
    c: &mut AnyConnection,
    q: &SearchQuery,
    items: Vec<Current>,
    total: Option<i64>,
    more: bool,
    last_sort: Option<Vec<String>>,
) -> FhirResult<Page<Current>> {
    let included = includes(c, &items, &q.includes)?;
    let mut page = Page {
        items,
        total,
        more,
        included,
        last_sort,
    };
    let access = &q.access;
    let Some(o) = access.org() else {
        return Ok(page);
    };
    let mut by_type: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in &page.included {
        by_type
            .entry(r.res_type.clone())
            .or_default()
            .push(r.res_id.clone());
    }
    let mut seen: HashSet<(String, String)> = HashSet::new();
    for (t, ids) in by_type {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for id in super::access_sql::visible_ids(c, o, &t, &ids)? {
            seen.insert((t.clone(), id));
        }
    }
    page.included
        .retain(|r| seen.contains(&(r.res_type.clone(), r.res_id.clone())));
    for r in page.items.iter_mut().chain(page.included.iter_mut()) {
        r.body = access.redact(&r.res_type, std::mem::take(&mut r.body));
    }
    Ok(page)
}

/// Ids of matching resources, at most `limit`.
pub(super) fn matching_ids(
    c: &mut AnyConnection,
    res_type: &str,
    q: &SearchQuery,
    limit: i64,
) -> FhirResult<Vec<String>> {
    let lead = lead(c, q)?;
    let mut sql = Sql::new(c);
    sql.push("SELECT r0.res_id FROM resources r0 WHERE ");
    conditions(&mut sql, res_type, q, lead);
    sql.push(&format!(" ORDER BY r0.res_id LIMIT {limit}"));
    Ok(load!(c, sql, Id)?.into_iter().map(|r| r.res_id).collect())
}

impl Sql {
    /// A resource-row column as a condition or sort key. When an index
    /// clause leads, SQLite gets it with the unary `+`, which keeps the
    /// planner off the column's index: without statistics (the server does
    /// not run ANALYZE) it would often walk the whole `last_updated` or
    /// `tick` index of the type, for a wide range like `ge2020` or for the
    /// ORDER BY, rather than the few entries of the leading lookup.
    /// PostgreSQL keeps statistics and weighs both itself.
    fn column(&self, lead: Lead, column: &str) -> String {
        match lead {
            Lead::Clause(_) => self.kept_off_index(column),
            Lead::Rows => column.to_string(),
        }
    }

    fn kept_off_index(&self, column: &str) -> String {
        if self.numbered {
            column.to_string()
        } else {
            format!("+{column}")
        }
    }
}

/// Where a search starts.
#[derive(Clone, Copy, PartialEq)]
enum Lead {
    /// From the index lookup of this clause, written as `res_id IN (…)`;
    /// every other index clause probes with a correlated `EXISTS`, so its
    /// cost follows the lead's matches, not its own (an `IN` list of every
    /// `status=requested` Task would be built in full on every search,
    /// however few Tasks the owner has).
    Clause(usize),
    /// From the resource rows (`_id`, `_lastUpdated`, the change feed's
    /// tick, or every resource of the type), with every index clause probing.
    Rows,
}

/// The change feed starts from its tick when at most this many changes
/// (of any type) were committed after it, whatever else the search asks.
const FEED_LEADS_WITHIN: i64 = 1_000;

/// Chooses where `q` starts: the most selective index clause, unless the
/// search follows the change feed from a recent tick (a poller keeping up
/// reads only the few changes since its last call, however many resources
/// its owner has), which the feed clock tells exactly.
fn lead(c: &mut AnyConnection, q: &SearchQuery) -> FhirResult<Lead> {
    let best = q
        .clauses
        .iter()
        .enumerate()
        .filter_map(|(i, c)| selectivity(c).map(|rank| (rank, i)))
        .min();
    let Some((_, i)) = best else {
        return Ok(Lead::Rows);
    };
    if let Some(tick) = q.feed {
        let mut clock = Sql::new(c);
        clock.push("SELECT last AS n FROM feed_clock WHERE id = 1");
        let last = load!(c, clock, Count)?.first().map_or(0, |c| c.n);
        if last - tick <= FEED_LEADS_WITHIN {
            return Ok(Lead::Rows);
        }
    }
    Ok(Lead::Clause(i))
}

/// The WHERE clause of `q` on the resource row `r0`.
fn conditions(sql: &mut Sql, res_type: &str, q: &SearchQuery, lead: Lead) {
    sql.access = q.access.org().cloned();
    clauses(sql, res_type, q, lead);
    if let Some(o) = sql.access.clone() {
        sql.push(" AND ").visible(&o, res_type, "r0.res_id");
    }
}

fn clauses(sql: &mut Sql, res_type: &str, q: &SearchQuery, lead: Lead) {
    let Lead::Clause(lead) = lead else {
        sql.push("r0.res_type = ")
            .text(res_type)
            .push(" AND NOT r0.deleted");
        if let Some(tick) = q.feed {
            sql.push(&format!(" AND r0.tick > {tick}"));
        }
        for clause in &q.clauses {
            sql.push(" AND ");
            condition(sql, clause, res_type, "r0", Role::Rows, &[]);
        }
        return;
    };
    // Conditions on the resource row stay on it; the other index clauses
    // go to the lead, which checks them on its own entries.
    let (on_row, probes) = split(q, lead);
    sql.push("r0.res_type = ")
        .text(res_type)
        .push(" AND NOT r0.deleted");
    if let Some(tick) = q.feed {
        let column = sql.column(Lead::Clause(lead), "r0.tick");
        sql.push(&format!(" AND {column} > {tick}"));
    }
    for clause in on_row {
        sql.push(" AND ");
        condition(sql, clause, res_type, "r0", Role::Probe, &[]);
    }
    sql.push(" AND ");
    condition(sql, &q.clauses[lead], res_type, "r0", Role::Drive, &probes);
}

/// A clause's part in its query (see `Lead`).
#[derive(Clone, Copy, PartialEq)]
enum Role {
    /// The lead: an `IN` lookup.
    Drive,
    /// Another clause leads: an index clause probes, and a resource column
    /// is kept off its index (`Sql::column`).
    Probe,
    /// The resource rows lead: an index clause probes, resource columns
    /// may use their indexes.
    Rows,
}

/// How few resources a condition is likely to match, lower is fewer;
/// `None` for conditions that should never drive (negations, `:missing`,
/// resource-row columns left to the planner). A rule of thumb rather than
/// statistics: ids, references and system-qualified codes pick out a few
/// resources, a bare code (a status) or a date range may pick out many.
fn selectivity(clause: &Clause) -> Option<u8> {
    if clause.negate || clause.missing.is_some() {
        return None;
    }
    let param = match &clause.target {
        Target::Id => return Some(0),
        Target::LastUpdated => return None,
        Target::Chain { .. } => return Some(1),
        Target::Has { .. } => return Some(2),
        Target::Index(_, param) => param,
    };
    clause
        .any_of
        .iter()
        .map(|m| match m {
            Match::Id(_) => 0,
            Match::Reference { .. } | Match::Url(_) | Match::Uri(_) => 1,
            Match::Token(TokenFilter::SystemAndCode(..) | TokenFilter::NoSystemCode(_)) => 1,
            Match::Token(TokenFilter::Code(_)) if param.ends_with("identifier") => 1,
            Match::Token(TokenFilter::Code(_)) => 2,
            Match::Token(TokenFilter::System(_)) => 3,
            Match::String(_, StringMatch::Exact) => 1,
            Match::String(_, StringMatch::Contains) => 3,
            Match::String(..) | Match::Date(_) | Match::Number(_) | Match::Quantity(..) => 2,
        })
        .max()
}

/// The condition for `clause` on the candidate `row` (an alias whose
/// `res_type` and `res_id` name it: a resource row, or the lead's index
/// entry), of type `res_type`. A leading clause checks `probes` on its own
/// index entries, so the resource rows it reads are only those that pass
/// every index condition. Chains and `_has` nest a query on another type,
/// where the one inner clause leads.
fn condition(
    sql: &mut Sql,
    clause: &Clause,
    res_type: &str,
    row: &str,
    role: Role,
    probes: &[&Clause],
) {
    let x = sql.alias("x");
    let (kind, param) = match &clause.target {
        Target::Id => {
            any_of(sql, clause.negate, &clause.any_of, |sql, m| {
                if let Match::Id(id) = m {
                    sql.push(&format!("{row}.res_id = ")).text(id);
                }
            });
            probe_each(sql, res_type, row, probes);
            return;
        }
        Target::LastUpdated => {
            let column = if role == Role::Probe {
                sql.kept_off_index(&format!("{row}.last_updated"))
            } else {
                format!("{row}.last_updated")
            };
            any_of(sql, clause.negate, &clause.any_of, |sql, m| {
                if let Match::Date(d) = m {
                    point_in_date(sql, &column, d);
                }
            });
            probe_each(sql, res_type, row, probes);
            return;
        }
        Target::Chain { .. } if role == Role::Drive => {
            sql.push(&format!("{row}.res_id IN ("));
            lookup(sql, clause, res_type, probes);
            sql.push(")");
            return;
        }
        Target::Chain { param, branches } => {
            // Resources whose `param` points at a target that matches.
            sql.push(&format!(
                "EXISTS (SELECT 1 FROM search_reference {x} WHERE {x}.res_type = {row}.res_type AND {x}.res_id = {row}.res_id"
            ));
            chain_targets(sql, &x, param, branches);
            sql.push(")");
            return;
        }
        Target::Has {
            res_type: other,
            via,
            inner,
        } => {
            // Resources that a matching `other` points at through `via`.
            if role == Role::Drive {
                sql.push(&format!("{row}.res_id IN (SELECT {x}.target_id FROM search_reference {x} WHERE {x}.target_type = "))
                    .text(res_type);
            } else {
                sql.push(&format!("EXISTS (SELECT 1 FROM search_reference {x} WHERE {x}.target_type = {row}.res_type AND {x}.target_id = {row}.res_id"));
            }
            let next = sql.alias("r");
            sql.push(&format!(" AND {x}.res_type = "))
                .text(other)
                .push(&format!(" AND {x}.param = "))
                .text(via)
                .push(&format!(" AND {x}.res_id IN (SELECT {next}.res_id FROM resources {next} WHERE {next}.res_type = "))
                .text(other)
                .push(&format!(" AND NOT {next}.deleted AND "));
            condition(sql, inner, other, &next, Role::Drive, &[]);
            sql.push(")");
            // No inferring what the caller may not see through `_has`.
            if let Some(o) = sql.access.clone() {
                sql.push(" AND ").visible(&o, other, &format!("{x}.res_id"));
            }
            sql.push(")");
            // Here the candidate is the entry's target, not the entry: the
            // other clauses check the resource row.
            probe_each(sql, res_type, row, probes);
            return;
        }
        Target::Index(kind, param) => (*kind, param),
    };
    let negate = clause.negate || clause.missing == Some(true);
    if role == Role::Drive && !negate {
        sql.push(&format!("{row}.res_id IN ("));
        lookup(sql, clause, res_type, probes);
        sql.push(")");
        return;
    }
    let not = if negate { "NOT " } else { "" };
    sql.push(&format!(
        "{not}EXISTS (SELECT 1 FROM {} {x} WHERE {x}.res_type = {row}.res_type AND {x}.res_id = {row}.res_id AND {x}.param = ",
        table_of(kind)
    ))
    .text(param);
    if clause.missing.is_none() {
        sql.push(" AND ");
        any_of(sql, false, &clause.any_of, |sql, m| index_match(sql, &x, m));
    }
    sql.push(")");
}

/// Whether `clause` can be answered from index entries alone, as `lookup`
/// writes it. Only live resources have index entries, so such a lookup
/// needs no visit to the resource rows to leave out deleted ones.
fn is_lookup(clause: &Clause) -> bool {
    match clause.target {
        Target::Index(..) => !clause.negate && clause.missing != Some(true),
        Target::Chain { .. } => true,
        _ => false,
    }
}

/// `SELECT x.res_id FROM <index> x WHERE …` for a clause that `is_lookup`,
/// checking `probes` on each entry.
fn lookup(sql: &mut Sql, clause: &Clause, res_type: &str, probes: &[&Clause]) {
    let x = sql.alias("x");
    match &clause.target {
        Target::Chain { param, branches } => {
            sql.push(&format!(
                "SELECT {x}.res_id FROM search_reference {x} WHERE {x}.res_type = "
            ))
            .text(res_type);
            chain_targets(sql, &x, param, branches);
        }
        Target::Index(kind, param) => {
            sql.push(&format!(
                "SELECT {x}.res_id FROM {} {x} WHERE {x}.res_type = ",
                table_of(*kind)
            ))
            .text(res_type)
            .push(&format!(" AND {x}.param = "))
            .text(param);
            if clause.missing.is_none() {
                sql.push(" AND ");
                any_of(sql, false, &clause.any_of, |sql, m| index_match(sql, &x, m));
            }
        }
        _ => {
            sql.push("SELECT NULL WHERE 1 = 0");
        }
    }
    probe_each(sql, res_type, &x, probes);
}

/// ` AND x.param = … AND (…)`: the reference entry `x` points through
/// `param` at a live target of one of the branches' types that matches
/// the branch's clause.
fn chain_targets(sql: &mut Sql, x: &str, param: &str, branches: &[(String, Clause)]) {
    sql.push(&format!(" AND {x}.param = "))
        .text(param)
        .push(" AND (");
    for (i, (target_type, inner)) in branches.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push(&format!("({x}.target_type = "))
            .text(target_type)
            .push(&format!(" AND {x}.target_id IN ("));
        if is_lookup(inner) {
            lookup(sql, inner, target_type, &[]);
        } else {
            // `_id`, `_lastUpdated`, `_has` or a negation: the target's
            // resource row decides.
            let next = sql.alias("r");
            sql.push(&format!(
                "SELECT {next}.res_id FROM resources {next} WHERE {next}.res_type = "
            ))
            .text(target_type)
            .push(&format!(" AND NOT {next}.deleted AND "));
            condition(sql, inner, target_type, &next, Role::Drive, &[]);
        }
        sql.push(")");
        // Nor through a chain.
        if let Some(o) = sql.access.clone() {
            sql.push(" AND ")
                .visible(&o, target_type, &format!("{x}.target_id"));
        }
        sql.push(")");
    }
    sql.push(")");
}

/// ` AND ` each of `probes` on the candidate `row`.
fn probe_each(sql: &mut Sql, res_type: &str, row: &str, probes: &[&Clause]) {
    for p in probes {
        sql.push(" AND ");
        condition(sql, p, res_type, row, Role::Probe, &[]);
    }
}

fn table_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Token => "search_token",
        Kind::String => "search_string",
        Kind::Date => "search_date",
        Kind::Reference => "search_reference",
        Kind::Uri => "search_uri",
        Kind::Number => "search_number",
        Kind::Quantity => "search_quantity",
    }
}

/// `(a OR b OR …)`, or `NOT (…)`.
fn any_of(sql: &mut Sql, negate: bool, matches: &[Match], each: impl Fn(&mut Sql, &Match)) {
    sql.push(if negate { "NOT (" } else { "(" });
    for (i, m) in matches.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        each(sql, m);
        sql.push(")");
    }
    if matches.is_empty() {
        sql.push("1 = 0");
    }
    sql.push(")");
}

fn index_match(sql: &mut Sql, x: &str, m: &Match) {
    match m {
        Match::Token(TokenFilter::SystemAndCode(s, c)) => {
            sql.push(&format!("{x}.syscode = "))
                .text(&format!("{}|{}", cap(s), cap(c)));
        }
        Match::Token(TokenFilter::NoSystemCode(c)) => {
            sql.push(&format!("{x}.syscode = "))
                .text(&format!("|{}", cap(c)));
        }
        Match::Token(TokenFilter::Code(c)) => {
            sql.push(&format!("{x}.code = ")).text(&cap(c));
        }
        Match::Token(TokenFilter::System(s)) => {
            sql.push(&format!("{x}.system = ")).text(&cap(s));
        }
        Match::String(v, StringMatch::Exact) => {
            sql.push(&format!("{x}.exact = ")).text(&cap(v));
        }
        Match::String(v, how) => {
            let norm = like_escape(&cap(&crate::search::index::normalize(v)));
            let pattern = match how {
                StringMatch::Contains => format!("%{norm}%"),
                _ => format!("{norm}%"),
            };
            sql.push(&format!("{x}.norm LIKE "))
                .text(&pattern)
                .push(" ESCAPE '\\'");
        }
        Match::Date(d) => range_vs_date(sql, x, d),
        Match::Reference { target_type, id } => {
            sql.push(&format!("{x}.target_id = ")).text(id);
            if let Some(t) = target_type {
                sql.push(&format!(" AND {x}.target_type = ")).text(t);
            }
        }
        Match::Url(u) => {
            sql.push(&format!("{x}.url = ")).text(&cap(u));
        }
        Match::Uri(u) => {
            sql.push(&format!("{x}.uri = ")).text(&cap(u));
        }
        Match::Number(n) => number(sql, x, n),
        Match::Quantity(n, system, code) => {
            number(sql, x, n);
            if let Some(s) = system {
                sql.push(&format!(" AND {x}.system = ")).text(&cap(s));
            }
            if let Some(c) = code {
                sql.push(&format!(" AND {x}.code = ")).text(&cap(c));
            }
        }
        Match::Id(_) => {
            sql.push("1 = 0");
        }
    }
}

/// `%`, `_` and `\` in a value match only themselves.
fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// A stored range [x.low, x.high) against the search value's range
/// [lo, hi), as search.html#prefix defines each prefix.
fn range_vs_date(sql: &mut Sql, x: &str, d: &DateBound) {
    let (lo, hi) = (d.low.as_str(), d.high.as_str());
    match d.prefix {
        Prefix::Eq => sql
            .push(&format!("{x}.low >= "))
            .text(lo)
            .push(&format!(" AND {x}.high <= "))
            .text(hi),
        Prefix::Ne => sql
            .push(&format!("NOT ({x}.low >= "))
            .text(lo)
            .push(&format!(" AND {x}.high <= "))
            .text(hi)
            .push(")"),
        Prefix::Gt => sql.push(&format!("{x}.high > ")).text(hi),
        Prefix::Lt => sql.push(&format!("{x}.low < ")).text(lo),
        Prefix::Ge => sql.push(&format!("{x}.high > ")).text(lo),
        Prefix::Le => sql.push(&format!("{x}.low < ")).text(hi),
        Prefix::Sa => sql.push(&format!("{x}.low >= ")).text(hi),
        Prefix::Eb => sql.push(&format!("{x}.high <= ")).text(lo),
        Prefix::Ap => sql
            .push(&format!("{x}.low < "))
            .text(hi)
            .push(&format!(" AND {x}.high > "))
            .text(lo),
    };
}

/// A stored instant (`_lastUpdated`) against a date value's range.
fn point_in_date(sql: &mut Sql, column: &str, d: &DateBound) {
    let (lo, hi) = (d.low.as_str(), d.high.as_str());
    sql.push(column);
    match d.prefix {
        Prefix::Eq | Prefix::Ap => sql
            .push(" >= ")
            .text(lo)
            .push(" AND ")
            .push(column)
            .push(" < ")
            .text(hi),
        Prefix::Ne => sql
            .push(" < ")
            .text(lo)
            .push(" OR ")
            .push(column)
            .push(" >= ")
            .text(hi),
        Prefix::Gt | Prefix::Sa => sql.push(" >= ").text(hi),
        Prefix::Lt | Prefix::Eb => sql.push(" < ").text(lo),
        Prefix::Ge => sql.push(" >= ").text(lo),
        Prefix::Le => sql.push(" < ").text(hi),
    };
}

fn number(sql: &mut Sql, x: &str, n: &NumberBound) {
    match n.prefix {
        Prefix::Eq => sql
            .push(&format!("{x}.value >= "))
            .double(n.low)
            .push(&format!(" AND {x}.value < "))
            .double(n.high),
        Prefix::Ne => sql
            .push(&format!("NOT ({x}.value >= "))
            .double(n.low)
            .push(&format!(" AND {x}.value < "))
            .double(n.high)
            .push(")"),
        Prefix::Gt | Prefix::Sa => sql.push(&format!("{x}.value > ")).double(n.value),
        Prefix::Lt | Prefix::Eb => sql.push(&format!("{x}.value < ")).double(n.value),
        Prefix::Ge => sql.push(&format!("{x}.value >= ")).double(n.value),
        Prefix::Le => sql.push(&format!("{x}.value <= ")).double(n.value),
        // "Approximately": within 10% of the value (search.html#prefix).
        Prefix::Ap => {
            let margin = (n.value * 0.1).abs();
            sql.push(&format!("{x}.value >= "))
                .double(n.value - margin)
                .push(&format!(" AND {x}.value <= "))
                .double(n.value + margin)
        }
    };
}
