//! The results: one JSON file per backend and size under bench/results/,
//! and BENCHMARKS.md generated from all of them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::db::RawRun;
use crate::load::Run;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub ram_gib: f64,
    pub os: String,
    pub kernel: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// From /proc and /etc/os-release; never the host name.
pub fn machine() -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let ram_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    Machine {
        cpu,
        cores,
        ram_gib: (ram_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        os,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub runs: Vec<Run>,
    /// Best throughput over the closed-loop levels.
    pub saturation: f64,
    /// Open loop at half of `saturation`.
    pub half_saturation: Option<Run>,
    /// Peak RSS sampled while the scenario ran, MiB.
    pub rss_peak_mib: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Raw {
    pub description: String,
    pub runs: Vec<RawRun>,
    pub best: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Result {
    pub date: String,
    pub target: String,
    pub backend: String,
    pub referrals: usize,
    pub pcns: usize,
    pub machine: Machine,
    #[serde(default)]
    pub postgres_settings: BTreeMap<String, String>,
    pub binary_bytes: u64,
    pub load_resources: usize,
    pub load_seconds: f64,
    pub load_rate: f64,
    pub database_bytes: Option<u64>,
    pub cold_start_ms: f64,
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub seconds_per_run: f64,
    pub notes: Vec<String>,
    pub scenarios: Vec<Scenario>,
    pub raw_commit: Option<Raw>,
    pub raw_poll: Option<Raw>,
    /// Rows per table one scenario-1 referral added, and one raw copy.
    #[serde(default)]
    pub referral_rows: BTreeMap<String, (i64, i64)>,
    pub referral_ratio: Option<f64>,
    pub poll_ratio: Option<f64>,
    /// The statements of one poll page as the server runs them (binds
    /// written in), which the raw poll limit runs.
    #[serde(default)]
    pub poll_sql: Vec<String>,
}

impl Result {
    pub fn scenario(&self, name: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.json", self.date, self.backend, self.referrals)
    }
}

pub fn write(dir: &Path, r: &Result) -> std::result::Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join(r.file_name());
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(&path, json + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Every result in `dir`, the latest per target, backend and size.
pub fn all(dir: &Path) -> Vec<Result> {
    let mut latest: BTreeMap<(String, String, usize), Result> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        match serde_json::from_str::<Result>(&text) {
            Ok(r) => {
                latest.insert((r.target.clone(), r.backend.clone(), r.referrals), r);
            }
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    let mut out: Vec<Result> = latest.into_values().collect();
    out.sort_by(|a, b| {
        (&a.target, &a.backend, a.referrals).cmp(&(&b.target, &b.backend, b.referrals))
    });
    out
}

fn ok(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "**no**"
    }
}

fn size(n: usize) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// BENCHMARKS.md from `results`.
pub fn markdown(results: &[Result], command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks\n\n<!-- Generated by `cargo run --release -p sp-hub-bench` from bench/results/*.json; \
         do not edit by hand. -->\n"
    );
    // The command that gives these results, from the results themselves
    // (each run may have covered only some backends or sizes).
    let mut backends: Vec<&str> = results
        .iter()
        .filter(|r| r.target == "sp-hub")
        .map(|r| r.backend.as_str())
        .collect();
    backends.sort();
    backends.dedup();
    let mut sizes: Vec<usize> = results.iter().map(|r| r.referrals).collect();
    sizes.sort();
    sizes.dedup();
    let mut levels: Vec<usize> = results
        .iter()
        .flat_map(|r| {
            r.scenarios
                .iter()
                .flat_map(|s| s.runs.iter().map(|x| x.concurrency))
        })
        .collect();
    levels.sort();
    levels.dedup();
    let join = |v: Vec<String>| v.join(",");
    let command = if results.is_empty() {
        command.to_string()
    } else {
        format!(
            "cargo run --release -p sp-hub-bench -- --backends {}{} --sizes {} --concurrency {} --seconds {}",
            backends.join(","),
            if backends.contains(&"postgres") { " --postgres URL" } else { "" },
            join(sizes.iter().map(|n| n.to_string()).collect()),
            join(levels.iter().map(|n| n.to_string()).collect()),
            results.first().map(|r| r.seconds_per_run).unwrap_or(10.0)
        )
    };
    let _ = writeln!(
        s,
        "The load benchmark (`bench/`, never part of CI) drives a running `sp-hub serve` over \
         loopback and measures the same database without sp-hub: the rows one referral stores, \
         inserted by direct SQL one transaction per referral, and the SQL of the VCS poll run \
         as it is. sp-hub is reported as a ratio of that limit.\n\nCommand (one JSON file in \
         bench/results/ per backend and size; this file is regenerated from all of them after \
         every run, or with `--report-only`):\n\n    {command}\n"
    );
    if let Some(first) = results.first() {
        let m = &first.machine;
        let _ = writeln!(
            s,
            "Machine: {} ({} cores), {} GiB RAM, {}, Linux {}. The load generator (one \
             thread) runs on the same machine as the server and the database.\n",
            m.cpu, m.cores, m.ram_gib, m.os, m.kernel
        );
        let dates: Vec<&str> = {
            let mut d: Vec<&str> = results.iter().map(|r| r.date.as_str()).collect();
            d.sort();
            d.dedup();
            d
        };
        let _ = writeln!(s, "Date of the runs: {}.\n", dates.join(", "));
    }
    // The peer's results have no sp-hub binary to measure.
    if let Some(bytes) = results.iter().map(|r| r.binary_bytes).find(|&b| b > 0) {
        let _ = writeln!(
            s,
            "Release binary (`target/release/sp-hub`, stripped): {:.1} MB.\n",
            bytes as f64 / 1e6
        );
    }
    if let Some(pg) = results.iter().find(|r| !r.postgres_settings.is_empty()) {
        let settings: Vec<String> = pg
            .postgres_settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "PostgreSQL settings: {}.\n", settings.join(", "));
    }
    let _ = writeln!(
        s,
        "Scenarios: **referral** (GP: transaction Bundle with a conditional Patient by NHS \
         number, the ServiceRequest and its Task), **poll** (VCS: `Task?owner=…&_feed=…&_count=100`, \
         one page at a random feed position), **accept** (VCS: read a Task, update its status \
         with If-Match, re-read and retry on 412), **trail** (GP: `ServiceRequest/{{id}}/$trail`), \
         **read** (GP: `ServiceRequest/{{id}}`). Closed loop: that many requests in flight, \
         each sent when the last answered. Latencies in ms (HDR histogram).\n"
    );

    let _ = writeln!(s, "## Summary\n");
    let _ = writeln!(
        s,
        "| target | backend | referrals | load (resources/s) | cold start (ms) | RSS idle (MiB) | RSS peak (MiB) | referral sat. (/s) | raw commit (/s) | ratio | poll sat. (/s) | raw poll (/s) | ratio |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let sat = |n: &str| r.scenario(n).map(|x| x.saturation).unwrap_or(0.0);
        let raw = |x: &Option<Raw>| {
            x.as_ref()
                .map(|x| format!("{:.0}", x.best))
                .unwrap_or("–".into())
        };
        let ratio = |x: Option<f64>| {
            x.map(|x| format!("{:.0}%", x * 100.0))
                .unwrap_or("–".into())
        };
        // The peer's process figures are not measured (it is Node.js,
        // PostgreSQL and Redis, started by its own scripts).
        let process = |v: f64| {
            if r.target == "peer" {
                "–".to_string()
            } else {
                format!("{v:.0}")
            }
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} |",
            r.target,
            r.backend,
            size(r.referrals),
            r.load_rate,
            process(r.cold_start_ms),
            process(r.rss_idle_mib),
            process(r.rss_peak_mib),
            sat("referral"),
            raw(&r.raw_commit),
            ratio(r.referral_ratio),
            sat("poll"),
            raw(&r.raw_poll),
            ratio(r.poll_ratio),
        );
    }

    let _ = writeln!(
        s,
        "\nRSS is the server's resident set (/proc): idle one second after /readyz, peak the \
         high-water mark over the run (on SQLite it includes each connection's page cache of up to \
         32 MiB). Ratios: sp-hub's saturation throughput \
         over the best raw rate at the same concurrency levels."
    );
    let _ = writeln!(s, "\n## Targets met?\n");
    let _ = writeln!(s, "| target | backend | referrals | referral ≥ 50% of raw commits | poll ≥ 50% of raw queries | p99 < 10 ms at half saturation |");
    let _ = writeln!(s, "|---|---|---:|---|---|---|");
    for r in results {
        let half: Vec<String> = r
            .scenarios
            .iter()
            .filter_map(|sc| {
                let h = sc.half_saturation.as_ref()?;
                Some(format!(
                    "{} {:.1} ms {}",
                    sc.name,
                    h.p99_ms,
                    if h.p99_ms < 10.0 { "✓" } else { "✗" }
                ))
            })
            .collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            r.target,
            r.backend,
            size(r.referrals),
            r.referral_ratio
                .map(|x| format!("{} ({:.0}%)", ok(x >= 0.5), x * 100.0))
                .unwrap_or("–".into()),
            r.poll_ratio
                .map(|x| format!("{} ({:.0}%)", ok(x >= 0.5), x * 100.0))
                .unwrap_or("–".into()),
            half.join("; ")
        );
    }
    // Latency growth with size: p50 at concurrency 1, largest over smallest.
    let _ = writeln!(
        s,
        "\nLatency at the largest size within 1.5× of the smallest (p50 at concurrency 1):\n"
    );
    let _ = writeln!(
        s,
        "| target | backend | sizes | scenario | p50 small (ms) | p50 large (ms) | ratio | met |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---|");
    let mut groups: BTreeMap<(String, String), Vec<&Result>> = BTreeMap::new();
    for r in results {
        groups
            .entry((r.target.clone(), r.backend.clone()))
            .or_default()
            .push(r);
    }
    for ((target, backend), rs) in &groups {
        let (Some(small), Some(large)) = (
            rs.iter().min_by_key(|r| r.referrals),
            rs.iter().max_by_key(|r| r.referrals),
        ) else {
            continue;
        };
        if small.referrals == large.referrals {
            continue;
        }
        for sc in &small.scenarios {
            let p50 = |r: &Result| {
                r.scenario(&sc.name)?
                    .runs
                    .iter()
                    .find(|x| x.concurrency == 1)
                    .map(|x| x.p50_ms)
            };
            if let (Some(a), Some(b)) = (p50(small), p50(large)) {
                let ratio = b / a.max(1e-9);
                let _ = writeln!(
                    s,
                    "| {target} | {backend} | {} → {} | {} | {a:.2} | {b:.2} | {ratio:.2}× | {} |",
                    size(small.referrals),
                    size(large.referrals),
                    sc.name,
                    ok(ratio <= 1.5)
                );
            }
        }
    }

    peer_table(&mut s, results);

    let _ = writeln!(s, "\n## Every run\n");
    let _ = writeln!(s, "| target | backend | referrals | scenario | concurrency | throughput (/s) | p50 | p95 | p99 | errors | retries |");
    let _ = writeln!(s, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        for sc in &r.scenarios {
            let rows = sc
                .runs
                .iter()
                .map(|x| (x.concurrency.to_string(), x))
                .chain(
                    sc.half_saturation
                        .iter()
                        .map(|x| (format!("open {:.0}/s", x.target_rate.unwrap_or(0.0)), x)),
                );
            for (c, x) in rows {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                    r.target,
                    r.backend,
                    size(r.referrals),
                    sc.name,
                    c,
                    x.throughput,
                    x.p50_ms,
                    x.p95_ms,
                    x.p99_ms,
                    x.errors,
                    x.retries
                );
            }
        }
    }
    let _ = writeln!(s, "\n## Raw database limits\n");
    let _ = writeln!(
        s,
        "| backend | referrals | limit | concurrency | per second | errors |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|");
    for r in results {
        for (name, raw) in [
            ("referral rows, one transaction each", &r.raw_commit),
            ("poll SQL", &r.raw_poll),
        ] {
            if let Some(raw) = raw {
                for x in &raw.runs {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {name} | {} | {:.0} | {} |",
                        r.backend,
                        size(r.referrals),
                        x.concurrency,
                        x.rate,
                        x.errors
                    );
                }
            }
        }
    }
    if let Some(r) = results.iter().find(|r| !r.referral_rows.is_empty()) {
        let _ = writeln!(
            s,
            "\nRows one referral (scenario 1) stores, per table, as counted around a probe \
             request ({} {}), and what one raw copy inserts:\n",
            r.backend,
            size(r.referrals)
        );
        let _ = writeln!(s, "| table | sp-hub | raw copy |");
        let _ = writeln!(s, "|---|---:|---:|");
        for (t, (a, b)) in &r.referral_rows {
            let _ = writeln!(s, "| {t} | {a} | {b} |");
        }
    }
    let notes: Vec<&String> = {
        let mut n: Vec<&String> = results.iter().flat_map(|r| &r.notes).collect();
        n.sort();
        n.dedup();
        n
    };
    if !notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// sp-hub beside the peer at each size both ran: throughput and p50 per
/// scenario and concurrency, and sp-hub's throughput as a multiple of the
/// peer's.
fn peer_table(s: &mut String, results: &[Result]) {
    let peers: Vec<&Result> = results.iter().filter(|r| r.target == "peer").collect();
    if peers.is_empty() {
        return;
    }
    let sizes: Vec<String> = peers.iter().map(|r| r.referrals.to_string()).collect();
    let _ = writeln!(
        s,
        "\n## sp-hub beside the peer\n\nThe same scenarios against the peer (see \
         bench/peer/medplum/README.md), loaded through scenario 1 with as many referrals, \
         on the same machine in the same session:\n\n    \
         cargo run --release -p sp-hub-bench -- --peer-base \"$(bench/peer/medplum/start.sh)\" \
         --peer-token \"$(bench/peer/medplum/token.sh)\" --sizes {}\n\n\
         Throughput per second and p50 in ms; ×: sp-hub's throughput over the peer's. The peer \
         answers the poll in its `_lastUpdated` form and the trail as one `_include`/`_revinclude` \
         search, holds one practice and one VCS with no per-organisation access rules, and keeps \
         no audit record per request; sp-hub does all of that.\n",
        sizes.join(",")
    );
    for peer in peers {
        let ours: Vec<&Result> = results
            .iter()
            .filter(|r| r.target == "sp-hub" && r.referrals == peer.referrals)
            .collect();
        let mut head = "| referrals | scenario | concurrency | peer (/s) | peer p50 |".to_string();
        let mut rule = "|---:|---|---:|---:|---:|".to_string();
        for r in &ours {
            let _ = write!(head, " {b} (/s) | × | {b} p50 |", b = r.backend);
            rule.push_str("---:|---:|---:|");
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for sc in &peer.scenarios {
            for run in &sc.runs {
                let mut row = format!(
                    "| {} | {} | {} | {:.0} | {:.2} |",
                    size(peer.referrals),
                    sc.name,
                    run.concurrency,
                    run.throughput,
                    run.p50_ms
                );
                for r in &ours {
                    match r
                        .scenario(&sc.name)
                        .and_then(|x| x.runs.iter().find(|x| x.concurrency == run.concurrency))
                    {
                        Some(x) => {
                            let _ = write!(
                                row,
                                " {:.0} | {:.2}× | {:.2} |",
                                x.throughput,
                                x.throughput / run.throughput.max(1e-9),
                                x.p50_ms
                            );
                        }
                        None => row.push_str(" – | – | – |"),
                    }
                }
                let _ = writeln!(s, "{row}");
            }
        }
    }
}
