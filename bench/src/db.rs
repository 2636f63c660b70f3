//! The database without sp-hub: fresh databases, sampling request targets,
//! and the two raw limits sp-hub is measured against:
//!
//! - the rows one scenario-1 referral stores (captured from a real request:
//!   current rows, version rows, every index row, the audit record, the
//!   feed clock and audit head it moves, the rate count) inserted by direct
//!   SQL, one transaction per referral;
//! - the SQL the server issues for a VCS poll (captured in-process from the
//!   library running the same search), run as it is.
//!
//! Both use diesel, as the server does, with the server's own connection
//! settings (SQLite: WAL, synchronous=NORMAL), so the difference is what
//! sp-hub adds: HTTP, authentication, JSON, validation, the workflow rules.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::sql::with_database;
pub use crate::sql::Bind;
use crate::sql::{bound, parse_debug_query};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub enum Db {
    Sqlite(diesel::SqliteConnection),
    Postgres(diesel::PgConnection),
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = Text)]
    a: String,
}

#[derive(QueryableByName)]
struct PairRow {
    #[diesel(sql_type = Text)]
    a: String,
    #[diesel(sql_type = Text)]
    b: String,
}

#[derive(QueryableByName)]
struct CountRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Text)]
    hash: String,
}

#[derive(QueryableByName)]
struct ResIdRow {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    res_id: String,
}

/// `$1, $2, …` as SQLite's `?` (each placeholder used once, in order).
fn sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn text(s: &str) -> Bind {
    Bind::Text(Some(s.to_string()))
}

impl Db {
    /// A connection with the server's settings.
    pub fn open(url: &str) -> Result<Db, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            diesel::PgConnection::establish(url)
                .map(Db::Postgres)
                .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))
        } else {
            let mut c = diesel::SqliteConnection::establish(url)
                .map_err(|e| format!("cannot open {url}: {e}"))?;
            c.batch_execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA busy_timeout = 10000; PRAGMA mmap_size = 0; \
                 PRAGMA cache_size = -32768;",
            )
            .map_err(|e| e.to_string())?;
            Ok(Db::Sqlite(c))
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Db::Postgres(_))
    }

    pub fn execute(&mut self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite(c) => c.batch_execute(sql),
            Db::Postgres(c) => c.batch_execute(sql),
        }
        .map_err(|e| format!("{e}: {sql}"))
    }

    fn rows<T>(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<T>, String>
    where
        T: QueryableByName<diesel::sqlite::Sqlite> + QueryableByName<diesel::pg::Pg> + 'static,
    {
        match self {
            Db::Sqlite(c) => {
                bound!(diesel::sqlite::Sqlite, sqlite_placeholders(sql), binds).load::<T>(c)
            }
            Db::Postgres(c) => bound!(diesel::pg::Pg, sql.to_string(), binds).load::<T>(c),
        }
        .map_err(|e| format!("{e}: {sql}"))
    }

    fn run(&mut self, sql: &str, binds: &[Bind]) -> Result<usize, String> {
        match self {
            Db::Sqlite(c) => {
                bound!(diesel::sqlite::Sqlite, sqlite_placeholders(sql), binds).execute(c)
            }
            Db::Postgres(c) => bound!(diesel::pg::Pg, sql.to_string(), binds).execute(c),
        }
        .map_err(|e| format!("{e}: {sql}"))
    }

    pub fn strings(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<String>, String> {
        Ok(self
            .rows::<TextRow>(sql, binds)?
            .into_iter()
            .map(|r| r.a)
            .collect())
    }

    fn pairs(&mut self, sql: &str, binds: &[Bind]) -> Result<Vec<(String, String)>, String> {
        Ok(self
            .rows::<PairRow>(sql, binds)?
            .into_iter()
            .map(|r| (r.a, r.b))
            .collect())
    }

    pub fn count(&mut self, sql: &str, binds: &[Bind]) -> Result<i64, String> {
        Ok(self
            .rows::<CountRow>(sql, binds)?
            .first()
            .map(|r| r.n)
            .unwrap_or(0))
    }

    pub fn tables(&mut self) -> Result<Vec<String>, String> {
        let sql = if self.is_postgres() {
            "SELECT tablename AS a FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        } else {
            "SELECT name AS a FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        };
        Ok(self
            .strings(sql, &[])?
            .into_iter()
            .filter(|t| !t.starts_with("__diesel"))
            .collect())
    }

    /// Rows in every table.
    pub fn counts(&mut self) -> Result<BTreeMap<String, i64>, String> {
        let mut out = BTreeMap::new();
        for t in self.tables()? {
            let n = self.count(&format!("SELECT COUNT(*) AS n FROM {t}"), &[])?;
            out.insert(t, n);
        }
        Ok(out)
    }

    /// Column names and declared types, in order.
    fn columns(&mut self, table: &str) -> Result<Vec<(String, String)>, String> {
        if self.is_postgres() {
            self.pairs(
                "SELECT column_name::text AS a, data_type::text AS b FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[text(table)],
            )
        } else {
            self.pairs(
                "SELECT name AS a, type AS b FROM pragma_table_info($1) ORDER BY cid",
                &[text(table)],
            )
        }
    }

    /// Rows of `table` matching `filter` (SQL with `$n` binds) as JSON
    /// objects, whatever their columns.
    fn json_rows(
        &mut self,
        table: &str,
        columns: &[(String, String)],
        filter: &str,
        binds: &[Bind],
    ) -> Result<Vec<serde_json::Map<String, Value>>, String> {
        let sql = if self.is_postgres() {
            format!("SELECT row_to_json(x)::text AS a FROM {table} x WHERE {filter}")
        } else {
            let pairs: Vec<String> = columns
                .iter()
                .map(|(c, _)| format!("'{c}', \"{c}\""))
                .collect();
            format!(
                "SELECT json_object({}) AS a FROM {table} WHERE {filter}",
                pairs.join(", ")
            )
        };
        self.strings(&sql, binds)?
            .iter()
            .map(|s| match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(format!("not a JSON object: {s}")),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Fresh databases
// ---------------------------------------------------------------------------

pub fn create_database(admin_url: &str, name: &str) -> Result<String, String> {
    let mut db = Db::open(admin_url)?;
    db.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    db.execute(&format!("CREATE DATABASE {name}"))?;
    Ok(with_database(admin_url, name))
}

pub fn drop_database(admin_url: &str, name: &str) -> Result<(), String> {
    Db::open(admin_url)?.execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
}

/// The PostgreSQL settings a run used, for the record.
pub fn postgres_settings(url: &str) -> Result<BTreeMap<String, String>, String> {
    let mut db = Db::open(url)?;
    let names = [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_level",
        "shared_buffers",
        "effective_cache_size",
        "work_mem",
        "max_wal_size",
        "checkpoint_timeout",
        "max_connections",
    ];
    let mut out = BTreeMap::new();
    for n in names {
        let v = db.strings(&format!("SELECT current_setting('{n}') AS a"), &[])?;
        out.insert(n.to_string(), v.into_iter().next().unwrap_or_default());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Sampling request targets from what is stored
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Targets {
    /// `Organization/…`: the practice the GP client acts for.
    pub practice: String,
    /// `Organization/…`: the VCS organisation the VCS client acts for.
    pub vcs: String,
    /// `PractitionerRole/…`: its link worker with the most Tasks, the owner
    /// polled for and of the referrals' Tasks.
    pub link_worker: String,
    /// The practice's referrals (ids).
    #[serde(skip)]
    pub referrals: Vec<String>,
    /// Live Tasks the link worker owns (ids).
    #[serde(skip)]
    pub tasks: Vec<String>,
    /// The change feed's position after the load.
    pub feed_position: i64,
}

pub fn sample(db: &mut Db) -> Result<Targets, String> {
    let vcs_orgs: Vec<String> = db.strings(
        "SELECT res_id AS a FROM search_token WHERE res_type = 'Organization' AND param = 'type' AND code = 'vcs'",
        &[],
    )?;
    let employers: HashMap<String, String> = db
        .pairs(
            "SELECT res_id AS a, target_id AS b FROM search_reference \
             WHERE res_type = 'PractitionerRole' AND param = 'organization' AND target_type = 'Organization'",
            &[],
        )?
        .into_iter()
        .collect();
    // Link workers employed by a VCS organisation, by Tasks owned.
    let owners = db.pairs(
        "SELECT target_id AS a, CAST(COUNT(*) AS TEXT) AS b FROM search_reference \
         WHERE res_type = 'Task' AND param = 'owner' AND target_type = 'PractitionerRole' \
         GROUP BY target_id",
        &[],
    )?;
    let (worker, org) = owners
        .iter()
        .filter_map(|(w, n)| {
            let org = employers.get(w)?;
            vcs_orgs
                .contains(org)
                .then(|| (n.parse::<i64>().unwrap_or(0), w.clone(), org.clone()))
        })
        .max()
        .map(|(_, w, o)| (w, o))
        .ok_or("no Task is owned by a VCS organisation's link worker: load synthetic data first")?;
    let practice = db
        .pairs(
            "SELECT q.target_id AS a, CAST(COUNT(*) AS TEXT) AS b FROM search_reference o \
             JOIN search_reference q ON q.res_type = 'Task' AND q.res_id = o.res_id AND q.param = 'requester' \
             WHERE o.res_type = 'Task' AND o.param = 'owner' AND o.target_type = 'PractitionerRole' \
             AND o.target_id = $1 AND q.target_type = 'Organization' GROUP BY q.target_id",
            &[text(&worker)],
        )?
        .into_iter()
        .max_by_key(|(_, n)| n.parse::<i64>().unwrap_or(0))
        .map(|(p, _)| p)
        .ok_or("the link worker's Tasks name no requesting practice")?;
    let mut targets = Targets {
        practice: format!("Organization/{practice}"),
        vcs: format!("Organization/{org}"),
        link_worker: format!("PractitionerRole/{worker}"),
        referrals: vec![],
        tasks: vec![],
        feed_position: 0,
    };
    refresh(db, &mut targets)?;
    Ok(targets)
}

/// Re-reads the referrals, Tasks and feed position (after writes).
pub fn refresh(db: &mut Db, t: &mut Targets) -> Result<(), String> {
    let practice = t.practice.trim_start_matches("Organization/").to_string();
    let worker = t
        .link_worker
        .trim_start_matches("PractitionerRole/")
        .to_string();
    t.referrals = db.strings(
        "SELECT res_id AS a FROM search_reference WHERE res_type = 'ServiceRequest' \
         AND param = 'requester' AND target_type = 'Organization' AND target_id = $1 LIMIT 20000",
        &[text(&practice)],
    )?;
    t.tasks = db.strings(
        "SELECT o.res_id AS a FROM search_reference o WHERE o.res_type = 'Task' AND o.param = 'owner' \
         AND o.target_type = 'PractitionerRole' AND o.target_id = $1 AND EXISTS (\
           SELECT 1 FROM search_token s WHERE s.res_type = 'Task' AND s.res_id = o.res_id \
           AND s.param = 'status' AND s.code IN ('requested', 'accepted', 'in-progress', 'on-hold')) \
         LIMIT 20000",
        &[text(&worker)],
    )?;
    t.feed_position = db.count("SELECT last AS n FROM feed_clock WHERE id = 1", &[])?;
    if t.referrals.is_empty() || t.tasks.is_empty() {
        return Err(format!(
            "nothing to request: {} referrals of {}, {} live Tasks of {}",
            t.referrals.len(),
            t.practice,
            t.tasks.len(),
            t.link_worker
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Raw limit (a): the rows of one referral, by direct SQL
// ---------------------------------------------------------------------------

/// Where the server's counters and sequences stand, before a probe.
pub struct Mark {
    counts: BTreeMap<String, i64>,
    version_seq: i64,
    audit_seq: i64,
}

pub fn mark(db: &mut Db) -> Result<Mark, String> {
    Ok(Mark {
        counts: db.counts()?,
        version_seq: db.count(
            "SELECT COALESCE(MAX(seq), 0) AS n FROM resource_versions",
            &[],
        )?,
        audit_seq: db.count("SELECT COALESCE(MAX(seq), 0) AS n FROM audit_log", &[])?,
    })
}

/// A captured row, ready to insert again.
#[derive(Debug, Clone)]
struct RowTemplate {
    table: String,
    columns: Vec<(String, String)>,
    values: serde_json::Map<String, Value>,
}

/// What one scenario-1 request stored, and how the copy compares.
#[derive(Debug, Clone)]
pub struct ReferralRows {
    rows: Vec<RowTemplate>,
    audit: Vec<RowTemplate>,
    /// The ids the request gave its resources, replaced in every copy.
    ids: Vec<String>,
    /// Resources (type/id) the request wrote.
    pub resources: Vec<String>,
    /// Rows per table the request added (the counts before and after).
    pub added: BTreeMap<String, i64>,
    /// Rows per table one copy inserts.
    pub copied: BTreeMap<String, i64>,
}

/// Captures what the request made between `before` and now (nothing else
/// may write meanwhile).
pub fn capture_referral(db: &mut Db, before: &Mark) -> Result<ReferralRows, String> {
    let after = db.counts()?;
    let added: BTreeMap<String, i64> = after
        .iter()
        .filter_map(|(t, n)| {
            let d = n - before.counts.get(t).copied().unwrap_or(0);
            (d != 0).then(|| (t.clone(), d))
        })
        .collect();
    let written = db.pairs(
        "SELECT res_type AS a, res_id AS b FROM resource_versions WHERE seq > $1 ORDER BY seq",
        &[Bind::Int(Some(before.version_seq))],
    )?;
    if written.is_empty() {
        return Err("the probe referral wrote no resource".into());
    }
    let mut keyed = vec![];
    for t in db.tables()? {
        let cols = db.columns(&t)?;
        let has = |c: &str| cols.iter().any(|(n, _)| n == c);
        if has("res_type") && has("res_id") {
            keyed.push((t, cols));
        }
    }
    let mut rows = vec![];
    for (table, columns) in &keyed {
        for (res_type, res_id) in &written {
            let mut filter = "res_type = $1 AND res_id = $2".to_string();
            let mut binds = vec![text(res_type), text(res_id)];
            if table == "resource_versions" {
                filter.push_str(" AND seq > $3");
                binds.push(Bind::Int(Some(before.version_seq)));
            }
            for values in db.json_rows(table, columns, &filter, &binds)? {
                rows.push(RowTemplate {
                    table: table.clone(),
                    columns: columns.clone(),
                    values,
                });
            }
        }
    }
    let audit_columns = db.columns("audit_log")?;
    let audit = db
        .json_rows(
            "audit_log",
            &audit_columns,
            "seq > $1",
            &[Bind::Int(Some(before.audit_seq))],
        )?
        .into_iter()
        .map(|values| RowTemplate {
            table: "audit_log".into(),
            columns: audit_columns.clone(),
            values,
        })
        .collect::<Vec<_>>();
    let mut copied: BTreeMap<String, i64> = BTreeMap::new();
    for r in rows.iter().chain(&audit) {
        *copied.entry(r.table.clone()).or_default() += 1;
    }
    let mut ids: Vec<String> = written.iter().map(|(_, id)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    // Longest first, so an id that contains another is replaced whole.
    ids.sort_by_key(|i| std::cmp::Reverse(i.len()));
    Ok(ReferralRows {
        rows,
        audit,
        ids,
        resources: written.iter().map(|(t, i)| format!("{t}/{i}")).collect(),
        added,
        copied,
    })
}

fn bind_of(ty: &str, v: Option<&Value>) -> Bind {
    let ty = ty.to_ascii_lowercase();
    let v = v.filter(|v| !v.is_null());
    if ty.contains("int") {
        Bind::Int(v.and_then(Value::as_i64))
    } else if ty.contains("bool") {
        Bind::Bool(v.map(|v| v.as_bool().unwrap_or_else(|| v.as_i64() == Some(1))))
    } else if ty.contains("double") || ty.contains("real") || ty.contains("float") {
        Bind::Real(v.and_then(Value::as_f64))
    } else {
        Bind::Text(v.map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }
}

impl ReferralRows {
    /// Inserts one copy in one transaction, with new ids; the feed clock
    /// (stamped after the rows, as `Store::transaction` does), the audit
    /// head and the rate count move as a request moves them.
    pub fn insert_copy(&self, db: &mut Db, client: &str) -> Result<(), String> {
        let fresh: Vec<(String, String)> = self
            .ids
            .iter()
            .map(|id| (id.clone(), uuid::Uuid::new_v4().to_string()))
            .collect();
        let renamed = |s: &str| {
            let mut s = s.to_string();
            for (old, new) in &fresh {
                if s.contains(old.as_str()) {
                    s = s.replace(old.as_str(), new);
                }
            }
            s
        };
        let body = |db: &mut Db| -> Result<(), String> {
            // As the server does: rows first, the feed clock last, so the
            // clock's row lock is held only until the commit.
            // One multi-row INSERT per table (in the order the tables were
            // first written), as the server's write path batches its rows.
            let mut stamped: Vec<(String, String, i64)> = vec![];
            // (table, columns, each row's values)
            type Batch<'a> = (&'a str, Vec<&'a str>, Vec<Vec<Bind>>);
            let mut tables: Vec<Batch> = vec![];
            for r in &self.rows {
                let cols: Vec<&(String, String)> = r
                    .columns
                    .iter()
                    // resource_versions.seq is the database's own sequence.
                    .filter(|(c, _)| !(r.table == "resource_versions" && c == "seq"))
                    .collect();
                let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
                let binds: Vec<Bind> = cols
                    .iter()
                    .map(|(c, ty)| match bind_of(ty, r.values.get(c.as_str())) {
                        Bind::Text(Some(s)) => Bind::Text(Some(renamed(&s))),
                        other => other,
                    })
                    .collect();
                if r.table == "resources" {
                    let res_type = r
                        .values
                        .get("res_type")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let res_id = r.values.get("res_id").and_then(Value::as_str).unwrap_or("");
                    let version = r.values.get("version").and_then(Value::as_i64).unwrap_or(1);
                    stamped.push((res_type.to_string(), renamed(res_id), version));
                }
                match tables
                    .iter_mut()
                    .find(|(t, n, _)| *t == r.table.as_str() && *n == names)
                {
                    Some((_, _, rows)) => rows.push(binds),
                    None => tables.push((r.table.as_str(), names, vec![binds])),
                }
            }
            for (table, names, rows) in &tables {
                let mut next = 0;
                let values: Vec<String> = rows
                    .iter()
                    .map(|row| {
                        let marks: Vec<String> = row
                            .iter()
                            .map(|_| {
                                next += 1;
                                format!("${next}")
                            })
                            .collect();
                        format!("({})", marks.join(", "))
                    })
                    .collect();
                db.run(
                    &format!(
                        "INSERT INTO {table} ({}) VALUES {}",
                        names.join(", "),
                        values.join(", ")
                    ),
                    &rows.concat(),
                )?;
            }
            let last = db.count(
                "UPDATE feed_clock SET last = last + $1 WHERE id = 1 RETURNING last AS n",
                &[Bind::Int(Some(stamped.len() as i64))],
            )?;
            let first = last - stamped.len() as i64 + 1;
            let ticks: Vec<[Bind; 4]> = stamped
                .iter()
                .enumerate()
                .map(|(i, (res_type, res_id, version))| {
                    [
                        Bind::Int(Some(first + i as i64)),
                        text(res_type),
                        text(res_id),
                        Bind::Int(Some(*version)),
                    ]
                })
                .collect();
            for table in ["resource_versions", "resources"] {
                if db.is_postgres() {
                    // One statement a table: a round trip each is what
                    // PostgreSQL's time would go to.
                    let values: Vec<String> = (0..ticks.len())
                        .map(|i| {
                            let k = 4 * i;
                            format!(
                                "(${}::bigint, ${}::text, ${}::text, ${}::int)",
                                k + 1,
                                k + 2,
                                k + 3,
                                k + 4
                            )
                        })
                        .collect();
                    db.run(
                        &format!(
                            "UPDATE {table} t SET tick = v.tick FROM (VALUES {}) AS v(tick, res_type, res_id, version) \
                             WHERE t.res_type = v.res_type AND t.res_id = v.res_id AND t.version = v.version",
                            values.join(", ")
                        ),
                        &ticks.concat(),
                    )?;
                } else {
                    for key in &ticks {
                        db.run(
                            &format!(
                                "UPDATE {table} SET tick = $1 WHERE res_type = $2 AND res_id = $3 AND version = $4"
                            ),
                            key,
                        )?;
                    }
                }
            }
            for a in &self.audit {
                let head = {
                    let sql =
                        "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash";
                    match db {
                        Db::Sqlite(c) => diesel::sql_query(sql).load::<HeadRow>(c),
                        Db::Postgres(c) => diesel::sql_query(sql).load::<HeadRow>(c),
                    }
                    .map_err(|e| e.to_string())?
                };
                let head = head.first().ok_or("no audit head")?;
                let hash = format!("{:064x}", head.seq as u128 * 0x9E37_79B9_7F4A_7C15);
                let mut binds = vec![];
                let names: Vec<&str> = a.columns.iter().map(|(c, _)| c.as_str()).collect();
                for (c, ty) in &a.columns {
                    binds.push(match c.as_str() {
                        "seq" => Bind::Int(Some(head.seq)),
                        "prev_hash" => text(&head.hash),
                        "hash" => text(&hash),
                        _ => match bind_of(ty, a.values.get(c.as_str())) {
                            Bind::Text(Some(s)) => Bind::Text(Some(renamed(&s))),
                            other => other,
                        },
                    });
                }
                let marks: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
                db.run(
                    &format!(
                        "INSERT INTO audit_log ({}) VALUES ({})",
                        names.join(", "),
                        marks.join(", ")
                    ),
                    &binds,
                )?;
                db.run(
                    "UPDATE audit_head SET hash = $1 WHERE id = 1",
                    &[text(&hash)],
                )?;
            }
            let window = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                / 60
                * 60) as i64;
            db.run(
                "INSERT INTO rate_counts (client_id, window_start, count) VALUES ($1, $2, 1) \
                 ON CONFLICT (client_id, window_start) DO UPDATE SET count = rate_counts.count + 1",
                &[text(client), Bind::Int(Some(window))],
            )?;
            Ok(())
        };
        in_transaction(db, body)
    }
}

/// Runs `f` in one transaction: BEGIN IMMEDIATE on SQLite (the writer lock
/// up front, as the server's writes take it), BEGIN on PostgreSQL.
fn in_transaction(
    db: &mut Db,
    f: impl FnOnce(&mut Db) -> Result<(), String>,
) -> Result<(), String> {
    let begin = if db.is_postgres() {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    };
    db.execute(begin)?;
    match f(db) {
        Ok(()) => db.execute("COMMIT"),
        Err(e) => {
            let _ = db.execute("ROLLBACK");
            Err(e)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawRun {
    pub concurrency: usize,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    /// Transactions (or polls) a second.
    pub rate: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub first_error: Option<String>,
}

/// `concurrency` threads, each on its own connection, run `work` back to
/// back for `seconds`.
pub fn raw_run<W>(url: &str, concurrency: usize, seconds: f64, work: W) -> Result<RawRun, String>
where
    W: Fn(&mut Db, u64) -> Result<(), String> + Sync,
{
    let stop = AtomicBool::new(false);
    let first_error = Mutex::new(None::<String>);
    let mut conns = vec![];
    for _ in 0..concurrency {
        conns.push(Db::open(url)?);
    }
    let started = Instant::now();
    let (ok, errors) = std::thread::scope(|s| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(w, mut db)| {
                let (stop, work, first_error) = (&stop, &work, &first_error);
                s.spawn(move || {
                    let (mut ok, mut errors, mut n) = (0u64, 0u64, w as u64);
                    while !stop.load(Ordering::Relaxed) {
                        match work(&mut db, n) {
                            Ok(()) => ok += 1,
                            Err(e) => {
                                errors += 1;
                                if let Ok(mut f) = first_error.lock() {
                                    f.get_or_insert(e);
                                }
                            }
                        }
                        n += concurrency as u64;
                    }
                    (ok, errors)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    let span = started.elapsed().as_secs_f64();
    Ok(RawRun {
        concurrency,
        seconds: span,
        ok,
        errors,
        rate: ok as f64 / span,
        first_error: first_error.into_inner().ok().flatten(),
    })
}

// ---------------------------------------------------------------------------
// Raw limit (b): the poll's SQL, captured from the library
// ---------------------------------------------------------------------------

static CAPTURE: AtomicBool = AtomicBool::new(false);
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installed as diesel's default instrumentation before any connection
/// opens, so the library's connections report the statements they start.
pub fn install_capture() -> Result<(), String> {
    fn instrumentation() -> Option<Box<dyn Instrumentation>> {
        Some(Box::new(|event: InstrumentationEvent<'_>| {
            if CAPTURE.load(Ordering::Relaxed) {
                if let InstrumentationEvent::StartQuery { query, .. } = event {
                    if let Ok(mut c) = CAPTURED.lock() {
                        c.push(query.to_string());
                    }
                }
            }
        }))
    }
    diesel::connection::set_default_instrumentation(instrumentation).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `… AS n`: one number.
    Count,
    /// Resource rows (res_type … tick).
    Resources,
    /// A list of ids.
    Ids,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub kind: Kind,
    pub sql: String,
    pub binds: Vec<Bind>,
}

/// The statements of one poll, as the library ran them.
pub type Poll = Vec<Statement>;

/// Runs the VCS poll `params` in-process as `principal` (the server's own
/// search function) and returns the SELECTs it ran.
pub fn capture_poll(
    store: &sp_hub::store::Store,
    principal: &sp_hub::auth::Principal,
    params: &[(String, String)],
) -> Result<Poll, String> {
    if let Ok(mut c) = CAPTURED.lock() {
        c.clear();
    }
    CAPTURE.store(true, Ordering::SeqCst);
    let result =
        sp_hub::interactions::search(principal, store, "Task", params, true, "http://bench");
    CAPTURE.store(false, Ordering::SeqCst);
    result.map_err(|e| format!("the poll failed in-process: {e}"))?;
    let captured = CAPTURED
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    let mut out = vec![];
    for s in captured {
        let Some((sql, binds)) = parse_debug_query(&s) else {
            continue;
        };
        let upper = sql.trim_start().to_ascii_uppercase();
        if !(upper.starts_with("SELECT") || upper.starts_with("WITH")) {
            continue;
        }
        let kind = if sql.contains(" AS n ")
            || sql.contains(" AS n\n")
            || upper.starts_with("SELECT COUNT(*)")
        {
            Kind::Count
        } else if sql.contains(".body") {
            Kind::Resources
        } else if sql.contains("res_id FROM") {
            Kind::Ids
        } else {
            continue;
        };
        out.push(Statement { kind, sql, binds });
    }
    if out.is_empty() {
        return Err("captured no SELECT of the poll".into());
    }
    Ok(out)
}

/// A statement with its binds written in, for reading and for the record.
pub fn inline(st: &Statement) -> String {
    crate::sql::inline(&st.sql, &st.binds)
}

/// Runs one poll's statements, reading every row as the server does.
pub fn run_poll(db: &mut Db, poll: &Poll) -> Result<(), String> {
    for st in poll {
        match st.kind {
            Kind::Count => {
                db.rows::<CountRow>(&st.sql, &st.binds)?;
            }
            Kind::Resources => {
                db.rows::<sp_hub::store::Current>(&st.sql, &st.binds)?;
            }
            Kind::Ids => {
                db.rows::<ResIdRow>(&st.sql, &st.binds)?;
            }
        }
    }
    Ok(())
}
