//! Does search stay fast as the database grows? Not part of the test suite
//! or CI; run it by hand:
//!
//!     cargo bench -p sp-hub --bench search_scale -- \
//!         [--postgres URL] [--sizes 10000,100000,1000000] [--queries 200] [--analyze] [--keep]
//!
//! For each size N it
//!
//! 1. loads N/100 GP practices (Organizations `p{n}` with an ODS code
//!    `P{n}`) and N/200 VCS organisations `vcs{k}`, N ServiceRequests `sr{i}`
//!    (requester one of the practices, subject a Patient) and N Tasks `t{i}`
//!    (focus `sr{i}`, owner one of the VCS organisations or none for 10%,
//!    status requested / accepted / in-progress / completed, authoredOn in
//!    2025-2026) into a fresh database, in-process through the library:
//!    `Store::transaction` and `Tx::write`, the server's own write path
//!    (current row, history row, index rows, change-feed ticks), about 1000
//!    resources per transaction;
//! 2. starts the real `sp-hub serve` on that database.
//!
//! With every size served, it times `--queries` sequential HTTP requests of
//! each search below, with random owners and practices, and prints p50, p99
//! and throughput. Each set of requests runs twice, "first" (at the larger
//! sizes most pages are new to the server process) and "repeat" (the same
//! requests again). Within a pass the sizes take turns, a tenth of the
//! requests at a time, so that the machine's changing speed cannot favour
//! one size. Then, for each size, it
//!
//! 3. prints the plan the database chooses for the SQL those searches run
//!    (captured from the library as it runs the same search in-process):
//!    `EXPLAIN QUERY PLAN` on SQLite, `EXPLAIN (ANALYZE, BUFFERS)` on
//!    PostgreSQL, flagging full scans.
//!
//! At the end it prints p50(largest size) / p50(smallest size) per search.
//!
//! Without `--postgres` every size gets a fresh SQLite file in a temporary
//! directory (removed afterwards). With `--postgres URL` (a user allowed to
//! create databases) every size gets a fresh database made with
//! `createdb --maintenance-db=URL` and removed with `dropdb` afterwards, so
//! `createdb` and `dropdb` must be on PATH. PostgreSQL gets `VACUUM ANALYZE`
//! after the load (what autovacuum does to a table that just grew); SQLite
//! gets `ANALYZE` only with `--analyze`, since the server never runs it.
//! `--keep` gives each size a fixed database (`sp-hub-bench/sqlite-N.db` in
//! the temporary directory, or `sp_hub_bench_N` on PostgreSQL), leaves it in
//! place for trying plans by hand, and reuses it without loading when a
//! later run with `--keep` finds it.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::sql::{bound, inline, parse_debug_query, Bind};
use common::{percentile, Fresh, Server};
use diesel::connection::{Instrumentation, InstrumentationEvent, SimpleConnection};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use serde_json::{json, Value};
use sp_hub::store::{Decision, Store};
use sp_hub::synthetic::Rng;

/// Referrals per GP practice and Tasks per VCS organisation: the number of
/// organisations grows with N, as it does when a hub serves more areas, so
/// one practice's or one organisation's searches match about as many
/// resources at every size and the figures show what the table size costs.
const REFERRALS_PER_PRACTICE: u64 = 100;
const TASKS_PER_VCS: u64 = 200;
fn practices(n: usize) -> u64 {
    (n as u64 / REFERRALS_PER_PRACTICE).max(1)
}
fn vcs_orgs(n: usize) -> u64 {
    (n as u64 / TASKS_PER_VCS).max(1)
}
/// Resources per write transaction: half ServiceRequests, half Tasks.
const BATCH: usize = 1000;
const ODS: &str = "https://fhir.nhs.uk/Id/ods-organization-code";
const VCS_SYSTEM: &str = "https://fhir.example.org/sp-hub/vcs-id";
const STATUSES: [&str; 4] = ["requested", "accepted", "in-progress", "completed"];
/// Untimed requests before each timed run (connection set-up, caches).
const WARM_UP: usize = 5;
/// Slices of each pass per size; the sizes take turns slice by slice.
const ROUNDS: usize = 10;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The values the plans are shown for.
const PLAN_VCS: u64 = 7;
const PLAN_PRACTICE: u64 = 42;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct Options {
    postgres: Option<String>,
    sizes: Vec<usize>,
    queries: usize,
    analyze: bool,
    keep: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        postgres: None,
        sizes: vec![10_000, 100_000, 1_000_000],
        queries: 200,
        analyze: false,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    // Bounded by the number of arguments: each turn consumes at least one.
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--postgres" => o.postgres = Some(value("--postgres")?),
            "--sizes" => {
                o.sizes = value("--sizes")?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse::<usize>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--sizes: {e}"))?;
            }
            "--queries" => {
                o.queries = value("--queries")?
                    .parse()
                    .map_err(|e| format!("--queries: {e}"))?
            }
            "--analyze" => o.analyze = true,
            "--keep" => o.keep = true,
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument '{other}'; usage: search_scale [--postgres URL] \
                     [--sizes 10000,100000,1000000] [--queries 200] [--analyze] [--keep]"
                ))
            }
        }
    }
    if o.sizes.is_empty() || o.sizes.contains(&0) || o.queries == 0 {
        return Err("--sizes and --queries must be positive".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------

/// A random instant in 2025-2026 (both 365 days).
fn instant_in_2025_2026(rng: &mut Rng) -> String {
    const MONTHS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let day = rng.below(730);
    let (year, mut day_of_year) = (2025 + day / 365, day % 365);
    let mut month = 0;
    while day_of_year >= MONTHS[month] {
        day_of_year -= MONTHS[month];
        month += 1;
    }
    let minute = rng.below(24 * 60);
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:00Z",
        month + 1,
        day_of_year + 1,
        minute / 60,
        minute % 60
    )
}

fn organizations(n: usize) -> Vec<(&'static str, String, Value)> {
    let practices = (0..practices(n)).map(|n| {
        let org = json!({"resourceType": "Organization", "active": true,
            "identifier": [{"system": ODS, "value": format!("P{n}")}],
            "name": format!("Practice {n}")});
        ("Organization", format!("p{n}"), org)
    });
    let vcs = (0..vcs_orgs(n)).map(|k| {
        let org = json!({"resourceType": "Organization", "active": true,
            "identifier": [{"system": VCS_SYSTEM, "value": format!("VCS{k}")}],
            "name": format!("Voluntary service {k}")});
        ("Organization", format!("vcs{k}"), org)
    });
    practices.chain(vcs).collect()
}

/// ServiceRequest `sr{i}` and the Task `t{i}` that carries it out.
fn referral(i: usize, n: usize, rng: &mut Rng) -> [(&'static str, String, Value); 2] {
    let authored = instant_in_2025_2026(rng);
    let request = json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "subject": {"reference": format!("Patient/pat{i}")},
        "requester": {"reference": format!("Organization/p{}", rng.below(practices(n)))},
        "authoredOn": authored});
    let mut task = json!({"resourceType": "Task", "intent": "order",
        "status": STATUSES[rng.below(STATUSES.len() as u64) as usize],
        "focus": {"reference": format!("ServiceRequest/sr{i}")},
        "for": {"reference": format!("Patient/pat{i}")},
        "authoredOn": authored});
    // 10% are not owned by anyone yet.
    if rng.below(10) != 0 {
        task["owner"] = json!({"reference": format!("Organization/vcs{}", rng.below(vcs_orgs(n)))});
    }
    [
        ("ServiceRequest", format!("sr{i}"), request),
        ("Task", format!("t{i}"), task),
    ]
}

fn write_batch(store: &Store, batch: &[(&'static str, String, Value)]) -> Result<(), String> {
    store
        .transaction(|tx| {
            for (res_type, id, resource) in batch {
                tx.write(res_type, id, |_| {
                    Ok(Decision::Put {
                        method: "POST",
                        resource: resource.clone(),
                    })
                })?;
            }
            Ok(())
        })
        .map_err(|e| format!("load failed: {e}"))
}

/// Loads the organisations and `n` referrals; returns resources per second.
fn load(store: &Store, n: usize) -> Result<f64, String> {
    let started = Instant::now();
    let orgs = organizations(n);
    let org_count = orgs.len();
    write_batch(store, &orgs)?;
    let mut rng = Rng(n as u64);
    let per_batch = BATCH / 2;
    let batches = n.div_ceil(per_batch);
    let mut next_report = 0.1;
    for b in 0..batches {
        let batch: Vec<_> = (b * per_batch..((b + 1) * per_batch).min(n))
            .flat_map(|i| referral(i, n, &mut rng))
            .collect();
        write_batch(store, &batch)?;
        let done = (b + 1) as f64 / batches as f64;
        if done >= next_report || b + 1 == batches {
            let written = org_count + 2 * ((b + 1) * per_batch).min(n);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "  loaded {written} resources in {secs:.0} s ({:.0}/s, {:.0}%)",
                written as f64 / secs,
                done * 100.0
            );
            next_report += 0.1;
        }
    }
    Ok((org_count + 2 * n) as f64 / started.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------
// The searches
// ---------------------------------------------------------------------------

struct Search {
    name: &'static str,
    /// Path and query for random values (`%7C` is `|`).
    path: fn(&mut Rng, usize, i64) -> String,
}

fn poll(rng: &mut Rng, n: usize, _: i64) -> String {
    poll_for(rng.below(vcs_orgs(n)))
}
fn poll_for(k: u64) -> String {
    format!("/Task?owner=Organization/vcs{k}&status=requested&_lastUpdated=ge2020-01-01&_sort=_lastUpdated&_count=50")
}
fn feed(rng: &mut Rng, n: usize, tick: i64) -> String {
    feed_for(rng.below(vcs_orgs(n)), tick)
}
fn feed_for(k: u64, tick: i64) -> String {
    format!("/Task?owner=Organization/vcs{k}&_feed={tick}&_count=50")
}
fn chain(rng: &mut Rng, n: usize, _: i64) -> String {
    chain_for(rng.below(practices(n)))
}
fn chain_for(n: u64) -> String {
    format!("/Task?focus:ServiceRequest.requester:Organization.identifier={ODS}%7CP{n}&_count=50")
}
// The same without the count query (`_total=none`), to tell the cost of
// finding a page from the cost of counting every match.
fn poll_nt(rng: &mut Rng, n: usize, t: i64) -> String {
    poll(rng, n, t) + "&_total=none"
}
fn feed_nt(rng: &mut Rng, n: usize, t: i64) -> String {
    feed(rng, n, t) + "&_total=none"
}
fn chain_nt(rng: &mut Rng, n: usize, t: i64) -> String {
    chain(rng, n, t) + "&_total=none"
}

const SEARCHES: [Search; 6] = [
    Search {
        name: "poll",
        path: poll,
    },
    Search {
        name: "feed",
        path: feed,
    },
    Search {
        name: "chain",
        path: chain,
    },
    Search {
        name: "poll _total=none",
        path: poll_nt,
    },
    Search {
        name: "feed _total=none",
        path: feed_nt,
    },
    Search {
        name: "chain _total=none",
        path: chain_nt,
    },
];

/// `/Type?a=b&c=d` as the type and decoded pairs.
fn split_path(path: &str) -> (String, Vec<(String, String)>) {
    let (res_type, query) = path
        .trim_start_matches('/')
        .split_once('?')
        .unwrap_or((path, ""));
    let params = query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%7C", "|")))
        .collect();
    (res_type.to_string(), params)
}

// ---------------------------------------------------------------------------
// Capturing the SQL a search runs
// ---------------------------------------------------------------------------

static CAPTURE: AtomicBool = AtomicBool::new(false);
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installed as diesel's default instrumentation before the store opens, so
/// every connection the library makes reports the statements it starts.
fn instrumentation() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        if CAPTURE.load(Ordering::Relaxed) {
            if let InstrumentationEvent::StartQuery { query, .. } = event {
                CAPTURED.lock().unwrap().push(query.to_string());
            }
        }
    }))
}

struct Statement {
    label: String,
    sql: String,
    binds: Vec<Bind>,
}

/// Runs the search in-process (as the server's handler does) and returns
/// the search statements it ran: the page, then the count when it ran one.
fn capture(store: &Store, label: &str, path: &str) -> Result<Vec<Statement>, String> {
    let (res_type, params) = split_path(path);
    CAPTURED.lock().unwrap().clear();
    CAPTURE.store(true, Ordering::SeqCst);
    let result = sp_hub::interactions::search(
        &sp_hub::auth::Principal::hub(),
        store,
        &res_type,
        &params,
        true,
        "http://bench",
    );
    CAPTURE.store(false, Ordering::SeqCst);
    result.map_err(|e| format!("{label}: {e}"))?;
    let captured = std::mem::take(&mut *CAPTURED.lock().unwrap());
    captured
        .iter()
        .filter(|s| s.contains("FROM resources r0") || s.starts_with("SELECT COUNT("))
        .map(|s| {
            let (sql, binds) = parse_debug_query(s)
                .ok_or_else(|| format!("cannot read the captured statement: {s}"))?;
            let kind = if sql.starts_with("SELECT COUNT(") {
                "count"
            } else {
                "page"
            };
            Ok(Statement {
                label: format!("{label} ({kind})"),
                sql,
                binds,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Plans
// ---------------------------------------------------------------------------

#[derive(QueryableByName)]
struct SqlitePlanRow {
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(sql_type = Integer)]
    parent: i32,
    #[diesel(sql_type = Text)]
    detail: String,
}

#[derive(QueryableByName)]
struct PgPlanRow {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    line: String,
}

macro_rules! load_bound {
    ($conn:expr, $db:ty, $sql:expr, $binds:expr, $row:ty) => {
        bound!($db, $sql, $binds)
            .load::<$row>($conn)
            .map_err(|e| e.to_string())
    };
}

enum Db {
    Sqlite(diesel::SqliteConnection),
    Postgres(diesel::PgConnection),
}

impl Db {
    fn open(url: &str) -> Result<Db, String> {
        if url.starts_with("postgres") {
            diesel::PgConnection::establish(url).map(Db::Postgres)
        } else {
            diesel::SqliteConnection::establish(url).map(Db::Sqlite)
        }
        .map_err(|e| e.to_string())
    }

    fn execute(&mut self, sql: &str) -> Result<(), String> {
        match self {
            Db::Sqlite(c) => c.batch_execute(sql),
            Db::Postgres(c) => c.batch_execute(sql),
        }
        .map_err(|e| e.to_string())
    }

    /// The plan as indented lines.
    fn plan(&mut self, st: &Statement) -> Result<Vec<String>, String> {
        match self {
            Db::Sqlite(c) => {
                let sql = format!("EXPLAIN QUERY PLAN {}", st.sql);
                let rows = load_bound!(c, diesel::sqlite::Sqlite, sql, &st.binds, SqlitePlanRow)?;
                let mut depth: HashMap<i32, usize> = HashMap::new();
                Ok(rows
                    .iter()
                    .map(|r| {
                        let d = depth.get(&r.parent).map_or(0, |d| d + 1);
                        depth.insert(r.id, d);
                        format!("{}{}", "  ".repeat(d), r.detail)
                    })
                    .collect())
            }
            Db::Postgres(c) => {
                let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {}", st.sql);
                let rows = load_bound!(c, diesel::pg::Pg, sql, &st.binds, PgPlanRow)?;
                Ok(rows.into_iter().map(|r| r.line).collect())
            }
        }
    }

    fn size(&mut self) -> Option<i64> {
        #[derive(QueryableByName)]
        struct Size {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let sql = match self {
            Db::Sqlite(_) => {
                "SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()"
            }
            Db::Postgres(_) => "SELECT pg_database_size(current_database()) AS n",
        };
        let rows = match self {
            Db::Sqlite(c) => diesel::sql_query(sql).load::<Size>(c),
            Db::Postgres(c) => diesel::sql_query(sql).load::<Size>(c),
        };
        rows.ok()?.first().map(|s| s.n)
    }
}

/// What in a plan line reads more than the matches: full scans, and on
/// SQLite a search that only narrows the resource rows to their type.
fn scan_warning(line: &str) -> Option<&'static str> {
    let l = line.trim_start();
    if l.contains("Seq Scan") {
        Some("SEQUENTIAL SCAN")
    } else if l.starts_with("SCAN ") && !l.contains(" USING ") {
        Some("FULL TABLE SCAN")
    } else if l.starts_with("SCAN ") {
        Some("FULL INDEX SCAN")
    } else if l.starts_with("SEARCH ") && l.ends_with("(res_type=?)") {
        Some("EVERY ROW OF THE TYPE")
    } else if l.starts_with("USE TEMP B-TREE FOR ORDER BY") {
        // ("... FOR RIGHT PART OF ORDER BY" only orders ties of the index.)
        Some("SORTS ALL MATCHES")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------

struct Timing {
    size: usize,
    search: &'static str,
    /// "first": each request's pages are new to the server process;
    /// "repeat": the same requests again, their pages in memory.
    pass: &'static str,
    p50: f64,
    p99: f64,
    per_second: f64,
    /// Mean Bundle.total (or entries, without a total) per response.
    hits: f64,
}

async fn get(client: &reqwest::Client, url: &str) -> Result<impl AsRef<[u8]>, String> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "GET {url}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

/// The `requests` URLs of one search at one size (random owners and
/// practices, the same at every run), after a few untimed warm-up requests.
async fn urls_for(
    client: &reqwest::Client,
    base: &str,
    search: &Search,
    size: usize,
    requests: usize,
    tick: i64,
) -> Result<Vec<String>, String> {
    let mut rng = Rng(0x5EA2C4 ^ size as u64);
    for _ in 0..WARM_UP {
        get(
            client,
            &format!("{base}{}", (search.path)(&mut rng, size, tick)),
        )
        .await?;
    }
    Ok((0..requests)
        .map(|_| format!("{base}{}", (search.path)(&mut rng, size, tick)))
        .collect())
}

/// What one pass of one search at one size measured so far.
#[derive(Default)]
struct Samples {
    latencies: Vec<f64>,
    seconds: f64,
    hits: f64,
}

/// Sends `urls` one after another, adding each latency and hit count.
async fn time_urls(
    client: &reqwest::Client,
    urls: &[String],
    into: &mut Samples,
) -> Result<(), String> {
    let started = Instant::now();
    for url in urls {
        let t = Instant::now();
        let body = get(client, url).await?;
        into.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let bundle: Value = serde_json::from_slice(body.as_ref()).map_err(|e| e.to_string())?;
        into.hits += bundle["total"]
            .as_f64()
            .unwrap_or_else(|| bundle["entry"].as_array().map_or(0.0, |e| e.len() as f64));
    }
    into.seconds += started.elapsed().as_secs_f64();
    Ok(())
}

impl Samples {
    fn timing(mut self, size: usize, search: &'static str, pass: &'static str) -> Timing {
        let n = self.latencies.len() as f64;
        self.latencies.sort_by(f64::total_cmp);
        Timing {
            size,
            search,
            pass,
            p50: percentile(&self.latencies, 0.50),
            p99: percentile(&self.latencies, 0.99),
            per_second: n / self.seconds,
            hits: self.hits / n,
        }
    }
}

/// Times every search at every size. Each search's requests run twice
/// over: the first pass meets pages the server has not read yet (at the
/// larger sizes most of them), the repeat shows the same work with those
/// pages in memory. Within a pass the sizes take turns, `ROUNDS` slices
/// each, so that a change in the machine's speed during the run (other
/// load, clock scaling) falls on every size alike instead of on whichever
/// ran at the time; the ratios between sizes are what the target is about.
async fn time_all(
    sizes: &[Ready],
    searches: &[Search],
    requests: usize,
) -> Result<Vec<Timing>, String> {
    let mut timings = vec![];
    for search in searches {
        let mut urls = vec![];
        for r in sizes {
            urls.push(urls_for(&r.client, &r.base, search, r.n, requests, r.tick).await?);
        }
        for pass in ["first", "repeat"] {
            let mut samples: Vec<Samples> = sizes.iter().map(|_| Samples::default()).collect();
            let slice = requests.div_ceil(ROUNDS);
            for round in 0..ROUNDS {
                for (i, r) in sizes.iter().enumerate() {
                    let urls = urls[i].chunks(slice).nth(round).unwrap_or(&[]);
                    time_urls(&r.client, urls, &mut samples[i]).await?;
                }
            }
            for (r, samples) in sizes.iter().zip(samples) {
                let t = samples.timing(r.n, search.name, pass);
                println!("{}", row(&t));
                timings.push(t);
            }
        }
    }
    Ok(timings)
}

fn header() -> String {
    format!(
        "{:>9}  {:<18} {:<7} {:>9} {:>9} {:>8} {:>9}",
        "size", "search", "pass", "p50 ms", "p99 ms", "req/s", "hits"
    )
}

fn row(t: &Timing) -> String {
    format!(
        "{:>9}  {:<18} {:<7} {:>9.2} {:>9.2} {:>8.1} {:>9.1}",
        t.size, t.search, t.pass, t.p50, t.p99, t.per_second, t.hits
    )
}

// ---------------------------------------------------------------------------
// One size
// ---------------------------------------------------------------------------

/// One size, loaded and served.
struct Ready {
    n: usize,
    /// Stopped (`None`) before the plans are taken, and in any case before
    /// `fresh` drops.
    server: Option<Server>,
    base: String,
    /// Holds the database (a fresh one is removed when this drops).
    fresh: Fresh,
    client: reqwest::Client,
    /// The feed resumes after this tick.
    tick: i64,
    statements: Vec<Statement>,
}

/// Loads (or reuses) the database of size `n`, captures the SQL of the
/// searches, and starts the server on it with an admin client.
fn prepare(o: &Options, n: usize, runtime: &tokio::runtime::Runtime) -> Result<Ready, String> {
    let backend = if o.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "\n=== {backend}, N = {n}: {n} Tasks, {n} ServiceRequests, {} practices, {} VCS organisations ===",
        practices(n),
        vcs_orgs(n)
    );
    let (fresh, loaded) = Fresh::new(o.postgres.as_deref(), "sp_hub_bench", o.keep.then_some(n))?;

    // Load through the library, then capture the SQL of each search.
    let (tick, statements) = {
        let store = Store::open(&fresh.url)?;
        if loaded {
            let last = store
                .read("Task", &format!("t{}", n - 1))
                .map_err(|e| e.to_string())?;
            if last.is_none() {
                return Err(format!(
                    "the kept database {} was not loaded to the end; remove it",
                    fresh.url
                ));
            }
            println!("reusing the kept database {}", fresh.url);
        } else {
            let rate = load(&store, n)?;
            println!("load: {:.0} resources/s", rate);
        }
        let mut db = Db::open(&fresh.url)?;
        if o.postgres.is_some() && !loaded {
            db.execute("VACUUM ANALYZE")?;
            println!("ran VACUUM ANALYZE");
        } else if o.analyze && !loaded {
            db.execute("ANALYZE")?;
            println!("ran ANALYZE");
        }
        if let Some(bytes) = db.size() {
            println!("database size: {:.0} MB", bytes as f64 / 1e6);
        }
        // The feed resumes from the middle: half the Tasks are newer.
        let tick = store
            .read("Task", &format!("t{}", n / 2))
            .map_err(|e| e.to_string())?
            .ok_or("the middle Task is missing")?
            .tick;
        let mut statements = vec![];
        for (label, path) in [
            ("poll", poll_for(PLAN_VCS)),
            ("feed", feed_for(PLAN_VCS, tick)),
            ("chain", chain_for(PLAN_PRACTICE)),
        ] {
            statements.extend(capture(&store, label, &path)?);
        }
        (tick, statements)
    };

    // The real server, called as an admin client with a key made here.
    let client_id = format!("bench-{}", std::process::id());
    let server = Server::start(&fresh.url)?;
    let token = runtime.block_on(common::token(
        &fresh.url,
        &server.base,
        &client_id,
        "Organization/bench",
        "admin",
        "system/*.read",
    ))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().map_err(|_| "bad token")?,
    );
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .default_headers(headers)
        .build()
        .map_err(|e| e.to_string())?;
    println!("server: {} (feed resumes after tick {tick})", server.base);
    Ok(Ready {
        n,
        base: server.base.clone(),
        server: Some(server),
        fresh,
        client,
        tick,
        statements,
    })
}

/// Prints the plans of the searches' SQL (values: vcs7, P42) at one size,
/// flagging full scans.
fn print_plans(r: &Ready, with_sql: bool) -> Result<(), String> {
    let mut db = Db::open(&r.fresh.url)?;
    for st in &r.statements {
        println!("\n--- plan: {} at N = {} ---", st.label, r.n);
        if with_sql {
            println!("SQL: {}", inline(&st.sql, &st.binds));
        }
        let mut warnings = vec![];
        for line in db.plan(st)? {
            match scan_warning(&line) {
                Some(w) => {
                    println!("{line}    <== {w}");
                    warnings.push(w);
                }
                None => println!("{line}"),
            }
        }
        if warnings.is_empty() {
            println!("(no full scans)");
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("search_scale: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    diesel::connection::set_default_instrumentation(instrumentation).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut ready = vec![];
    for &n in &o.sizes {
        ready.push(prepare(&o, n, &runtime)?);
    }
    println!("\n=== timings (sizes take turns; {ROUNDS} rounds a pass) ===");
    println!("{}", header());
    let all = runtime.block_on(time_all(&ready, &SEARCHES, o.queries))?;
    for r in &mut ready {
        // Stop the servers first: the plans (EXPLAIN ANALYZE on PostgreSQL)
        // should not compete with them.
        r.server = None;
    }
    for (i, r) in ready.iter().enumerate() {
        print_plans(r, i == 0)?;
    }
    drop(ready);

    let backend = if o.postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "\n=== summary ({backend}, {} sequential requests each) ===",
        o.queries
    );
    println!("{}", header());
    for t in &all {
        println!("{}", row(t));
    }
    let (small, large) = (o.sizes.iter().min(), o.sizes.iter().max());
    if let (Some(&small), Some(&large)) = (small, large) {
        if small != large {
            println!("\np50 at N = {large} / p50 at N = {small} (target: at most 1.5x)");
            for search in &SEARCHES {
                for pass in ["first", "repeat"] {
                    let p50 = |size: usize| {
                        all.iter()
                            .find(|t| t.size == size && t.search == search.name && t.pass == pass)
                            .map(|t| t.p50)
                    };
                    if let (Some(a), Some(b)) = (p50(large), p50(small)) {
                        let ratio = a / b;
                        let verdict = if ratio <= 1.5 { "ok" } else { "OVER" };
                        println!(
                            "  {:<18} {:<7} {:>7.2}x  {verdict}",
                            search.name, pass, ratio
                        );
                    }
                }
            }
        }
    }
    Ok(())
}
