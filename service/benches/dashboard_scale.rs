//! How fast is `GET /dashboard/metrics` when the hub holds many referrals?
//! Not part of the test suite or CI; run it by hand:
//!
//!     cargo bench -p sp-hub --bench dashboard_scale -- \
//!         [--postgres URL] [--referrals 100000] [--pcns 10] [--runs 20]
//!
//! It loads `--referrals` SP referrals spread evenly over `--pcns` PCNs
//! (five practices each, with list sizes; four link workers each, two
//! PCN-employed and two subcontracted through one of the PCN's two VCS
//! organisations) and over 2025-2026, each with its top-level Task in a
//! status drawn from the whole workflow (with executionPeriod, status
//! reasons, owners; 10% still in the open pool), up to three contacts,
//! holding work for one in five, paired ONS4 and SWEMWBS outcomes for
//! one in three and an onward referral for one in ten: about six resources a
//! referral, written in-process through `Store::transaction` and
//! `Tx::write` (the server's own write path: current row, history row,
//! index rows, dashboard summary), 1,000 resources a transaction. Then it
//! starts the real `sp-hub serve` on that database and times `--runs`
//! requests (after two untimed ones) of each of:
//!
//! - `pcn, 2026`: one PCN's client, one year (the target: p50 < 200 ms);
//! - `pcn, 2026, weekly`: the same in weekly buckets;
//! - `pcn, 2025-2026, one practice`: two years of one practice;
//! - `admin, 2026, one PCN`: an admin naming the PCN.
//!
//! printing p50 and p99 in milliseconds. Without `--postgres` the database
//! is a SQLite file in a temporary directory; with `--postgres URL` (a user
//! who may create databases; `createdb` and `dropdb` on PATH) a fresh
//! database, `VACUUM ANALYZE`d after the load, dropped at the end.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{percentile, token, Fresh, Server};
use serde_json::Value;
use sp_hub::store::Store;

struct Options {
    postgres: Option<String>,
    referrals: usize,
    pcns: usize,
    runs: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        postgres: None,
        referrals: 100_000,
        pcns: 10,
        runs: 20,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |v: String, name: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(format!("{name} must be a positive number"))
        };
        match a.as_str() {
            "--postgres" => o.postgres = Some(value("--postgres")?),
            "--referrals" => o.referrals = number(value("--referrals")?, "--referrals")?,
            "--pcns" => o.pcns = number(value("--pcns")?, "--pcns")?,
            "--runs" => o.runs = number(value("--runs")?, "--runs")?,
            // cargo bench passes --bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn load(store: &Store, o: &Options) -> Result<(), String> {
    let options = sp_hub::synthetic::Options {
        referrals: o.referrals,
        pcns: o.pcns,
        seed: 42,
    };
    let done = sp_hub::synthetic::load(store, &options, |l| {
        eprintln!(
            "  {} referrals, {} resources in {:.0} s",
            l.referrals, l.resources, l.seconds
        )
    })?;
    println!(
        "loaded {} referrals ({} resources) in {:.0} s",
        done.referrals, done.resources, done.seconds
    );
    Ok(())
}

/// p50 and p99 in milliseconds of `runs` requests (after two untimed).
async fn time(
    base: &str,
    token: &str,
    query: &str,
    runs: usize,
) -> Result<(f64, f64, Value), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("{base}/dashboard/metrics?{query}");
    let mut times = vec![];
    let mut last = Value::Null;
    for i in 0..runs + 2 {
        let t = Instant::now();
        let resp = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("GET {url}: {status}: {body}"));
        }
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        last = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    }
    times.sort_by(f64::total_cmp);
    Ok((percentile(&times, 0.5), percentile(&times, 0.99), last))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("dashboard_scale: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    let backend = if o.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    println!(
        "=== {backend}: {} referrals, {} PCNs ({} referrals a PCN a year) ===",
        o.referrals,
        o.pcns,
        o.referrals / o.pcns / 2
    );
    let (fresh, _) = Fresh::new(o.postgres.as_deref(), "sp_hub_dashboard_bench", None)?;
    {
        let store = Store::open(&fresh.url)?;
        load(&store, &o)?;
    }
    if let Some((admin, name)) = &fresh.postgres {
        let _ = (admin, name);
        let status = Command::new("psql")
            .arg(&fresh.url)
            .args(["-q", "-c", "VACUUM ANALYZE"])
            .status()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if status.success() {
            println!("ran VACUUM ANALYZE");
        }
    }
    let server = Server::start(&fresh.url)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let pcn = runtime.block_on(token(
        &fresh.url,
        &server.base,
        "bench-pcn",
        "Organization/pcn0",
        "pcn",
        "system/*.rs",
    ))?;
    let admin = runtime.block_on(token(
        &fresh.url,
        &server.base,
        "bench-admin",
        "Organization/icb",
        "admin",
        "system/*.rs",
    ))?;
    println!(
        "{:<34} {:>9} {:>9} {:>10}",
        "request", "p50 ms", "p99 ms", "referrals"
    );
    for (label, tok, query) in [
        ("pcn, 2026", &pcn, "from=2026-01-01&to=2026-12-31"),
        (
            "pcn, 2026, weekly",
            &pcn,
            "from=2026-01-01&to=2026-12-31&bucket=week",
        ),
        (
            "pcn, 2025-2026, one practice",
            &pcn,
            "from=2025-01-01&to=2026-12-31&practice=Organization/pcn0-gp0",
        ),
        (
            "admin, 2026, one PCN",
            &admin,
            "from=2026-01-01&to=2026-12-31&pcn=Organization/pcn0",
        ),
    ] {
        let (p50, p99, body) = runtime.block_on(time(&server.base, tok, query, o.runs))?;
        let n = &body["figures"]["referrals"]["total"][0]["value"];
        println!("{label:<34} {p50:>9.1} {p99:>9.1} {n:>10}");
    }
    Ok(())
}
