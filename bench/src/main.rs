//! sp-hub's load benchmark. Never part of the test suite or CI; one command
//! runs it and prints the table:
//!
//!     cargo run --release -p sp-hub-bench -- [--backends sqlite,postgres] \
//!         [--postgres URL] [--sizes 10000,100000] [--concurrency 1,4,16,64] \
//!         [--seconds 10] [--report-only]
//!
//! For each backend and size it builds the release `sp-hub`, fills a fresh
//! database with `sp-hub load-synthetic`, registers a GP practice client and
//! a VCS client (keys made here, `sp-hub client add`), starts `sp-hub
//! serve` on loopback (cold start to /readyz, idle RSS), and runs five
//! scenarios, each closed-loop at every concurrency level and then open-loop
//! at half of its saturation throughput. Then, with the server stopped, the
//! raw limits on the same database: the rows a referral stores inserted by
//! direct SQL, and the poll's SQL (see `db.rs`). Results go to
//! `bench/results/<date>-<backend>-<size>.json`; BENCHMARKS.md at the
//! repository root is regenerated from all of them.
//!
//! `--peer-base URL --peer-token TOKEN` runs scenarios 1, 2, 3 and 5 and an
//! `_include`/`_revinclude` search in place of `$trail` against another FHIR
//! server, loading it first with the same number of referrals through
//! scenario 1; no raw limits there.
//!
//! Load generator: tokio + reqwest + hdrhistogram rather than goose. The
//! accept scenario is a read, a conditional update and retries on 412 with
//! per-operation latency; the open-loop run must time from when a request
//! was due; and reqwest, tokio and the JWT crates are already in the
//! workspace, so the benchmark adds one small crate (hdrhistogram) to the
//! build instead of goose's tree.

#[path = "../../service/benches/common/announce.rs"]
mod announce;
#[path = "../../service/benches/common/client_token.rs"]
mod client_token;
mod db;
mod load;
mod report;
#[path = "../../service/benches/common/sql.rs"]
mod sql;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use load::{closed_loop, open_loop, Op, Run};

const FHIR_JSON: &str = "application/fhir+json";
const SP: &str = "https://sp-hub.example/fhir";
const SNOMED: &str = "http://snomed.info/sct";
const WARM_UP: Duration = Duration::from_secs(1);
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);
/// Polls captured for the raw-query limit, each at its own feed position.
const POLL_SAMPLES: usize = 16;

struct Options {
    backends: Vec<String>,
    postgres: Option<String>,
    sizes: Vec<usize>,
    concurrency: Vec<usize>,
    seconds: f64,
    report_only: bool,
    peer_base: Option<String>,
    peer_token: Option<String>,
    command: String,
}

fn usage() -> &'static str {
    "usage: sp-hub-bench [--backends sqlite,postgres] [--postgres URL] [--sizes 10000,100000] \
     [--concurrency 1,4,16,64] [--seconds 10] [--report-only] [--peer-base URL --peer-token TOKEN]"
}

fn list<T: std::str::FromStr>(v: &str, name: &str) -> Result<Vec<T>, String> {
    v.split(',')
        .map(|s| s.trim().replace('_', "").parse::<T>())
        .collect::<Result<Vec<T>, _>>()
        .map_err(|_| format!("{name}: not a list of numbers: {v}"))
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        backends: vec!["sqlite".into(), "postgres".into()],
        postgres: std::env::var("SP_HUB_BENCH_PG_URL").ok(),
        sizes: vec![10_000, 100_000],
        concurrency: vec![1, 4, 16, 64],
        seconds: 10.0,
        report_only: false,
        peer_base: None,
        peer_token: None,
        command: String::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Recorded without URLs or tokens: they may name hosts or hold secrets.
    let mut shown = vec!["cargo run --release -p sp-hub-bench --".to_string()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--backends" => {
                let v = value(a)?;
                o.backends = v.split(',').map(|s| s.trim().to_string()).collect();
                if o.backends.iter().any(|b| b != "sqlite" && b != "postgres") {
                    return Err("--backends: sqlite and/or postgres".into());
                }
                shown.push(format!("--backends {v}"));
            }
            "--postgres" => {
                o.postgres = Some(value(a)?);
                shown.push("--postgres URL".into());
            }
            "--sizes" => {
                let v = value(a)?;
                o.sizes = list(&v, a)?;
                shown.push(format!("--sizes {v}"));
            }
            "--concurrency" => {
                let v = value(a)?;
                o.concurrency = list(&v, a)?;
                shown.push(format!("--concurrency {v}"));
            }
            "--seconds" => {
                let v = value(a)?;
                o.seconds = v.parse().map_err(|_| "--seconds: a number")?;
                shown.push(format!("--seconds {v}"));
            }
            "--report-only" => o.report_only = true,
            "--peer-base" => {
                o.peer_base = Some(value(a)?.trim_end_matches('/').to_string());
                shown.push("--peer-base URL".into());
            }
            "--peer-token" => {
                o.peer_token = Some(value(a)?);
                shown.push("--peer-token TOKEN".into());
            }
            "-h" | "--help" => return Err(usage().into()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    if o.sizes.is_empty()
        || o.sizes.contains(&0)
        || o.concurrency.is_empty()
        || o.concurrency.contains(&0)
    {
        return Err("--sizes and --concurrency must be positive".into());
    }
    if o.peer_base.is_some() != o.peer_token.is_some() {
        return Err("--peer-base and --peer-token go together".into());
    }
    if o.peer_base.is_none()
        && !o.report_only
        && o.backends.iter().any(|b| b == "postgres")
        && o.postgres.is_none()
    {
        return Err(
            "the postgres backend needs --postgres URL (a user who may create databases)".into(),
        );
    }
    o.command = shown.join(" ");
    Ok(o)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn today() -> String {
    time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| "unknown-date".into())
}

/// Resident set size (`VmRSS`) or its peak (`VmHWM`) of a process, MiB.
fn rss_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

struct Server {
    child: Child,
    base: String,
    cold_start_ms: f64,
}

impl Server {
    fn start(bin: &Path, url: &str) -> Result<Server, String> {
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
            // A limit no client reaches, so its bookkeeping (one upsert a
            // request) is measured but never answers 429.
            .args(["--rate-limit", "1000000000", "--token-lifetime", "3600"])
            .env_remove("SP_HUB_LISTEN")
            .env_remove("SP_HUB_DATABASE_URL")
            .env("SP_HUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Built first, so that a server that never announces itself is
        // killed when this returns early.
        let mut server = Server {
            child,
            base: String::new(),
            cold_start_ms: 0.0,
        };
        server.base = announce::base_url(stdout, STARTUP_TIMEOUT)?;
        let ready = format!("{}/readyz", server.base);
        loop {
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err("sp-hub never became ready".into());
            }
            if http_status(&ready) == Some(200) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        server.cold_start_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of a plain GET, over a raw socket (no runtime needed).
fn http_status(url: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}")))?;
    let mut s = std::net::TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .get(9..12)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// Clients and tokens
// ---------------------------------------------------------------------------

struct BenchClient {
    id: String,
    kid: String,
    key: p384::ecdsa::SigningKey,
}

impl BenchClient {
    fn new(id: &str) -> BenchClient {
        BenchClient {
            id: id.to_string(),
            kid: format!("{id}-key-1"),
            key: p384::ecdsa::SigningKey::random(&mut rand_core::OsRng),
        }
    }

    fn jwks(&self) -> Result<String, String> {
        client_token::jwks(&self.kid, &self.key)
    }

    /// `sp-hub client add`, as an operator registers a client.
    fn register(
        &self,
        bin: &Path,
        url: &str,
        dir: &Path,
        org: &str,
        role: &str,
    ) -> Result<(), String> {
        let file = dir.join(format!("{}.jwks.json", self.id));
        std::fs::write(&file, self.jwks()?).map_err(|e| e.to_string())?;
        let out = Command::new(bin)
            .args(["client", "add", "--database-url", url, "--id", &self.id])
            .args([
                "--organization",
                org,
                "--role",
                role,
                "--scope",
                "system/*.cruds",
            ])
            .arg("--jwks")
            .arg(&file)
            .env_remove("SP_HUB_DATABASE_URL")
            .env("SP_HUB_LOG", "warn")
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "sp-hub client add {}: {}",
                self.id,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// An access token (SMART backend services, ES384 assertion).
    async fn token(&self, http: &reqwest::Client, base: &str) -> Result<String, String> {
        client_token::request_token(http, base, &self.id, &self.kid, &self.key, "system/*.cruds")
            .await
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// What the scenarios need to know about the server they drive.
#[derive(Clone)]
struct Target {
    http: reqwest::Client,
    base: String,
    gp_token: String,
    vcs_token: String,
    practice: String,
    link_worker: String,
    referrals: Rc<Vec<String>>,
    tasks: Rc<Vec<String>>,
    feed_position: i64,
    /// A peer server: standard FHIR only.
    peer: bool,
    /// Makes each run's NHS numbers new.
    nhs_base: u64,
    counter: Rc<Cell<u64>>,
}

/// Sends, reads the whole answer, and checks its status is one of `want`.
async fn send(
    rb: reqwest::RequestBuilder,
    want: &[u16],
) -> Result<(u16, Option<String>, impl AsRef<[u8]>), String> {
    let resp = rb.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.bytes().await.map_err(|e| e.to_string())?;
    if !want.contains(&status) {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(400)])
        ));
    }
    Ok((status, etag, body))
}

/// A small, fast mixer for picking targets.
fn mix(n: u64) -> u64 {
    sp_hub::synthetic::Rng(n ^ 0x5EED).next_u64()
}

fn pick(xs: &[String], n: u64) -> &str {
    &xs[(mix(n) % xs.len().max(1) as u64) as usize]
}

const NEEDS: [&str; 4] = ["loneliness", "debt-money", "housing", "bereavement"];

/// Scenario 1: the GP system's standard submission.
fn referral_bundle(t: &Target, n: u64) -> Value {
    let k = t.counter.get();
    t.counter.set(k + 1);
    let nhs = sp_hub::synthetic::nhs_number(6, t.nhs_base + k);
    let (p, s, task) = (
        format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        format!("urn:uuid:{}", uuid::Uuid::new_v4()),
    );
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "2026-01-01T09:00:00Z".into());
    let need = NEEDS[(n % NEEDS.len() as u64) as usize];
    json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p, "resource": {"resourceType": "Patient",
            "identifier": [{"system": sp_hub::synthetic::NHS_NUMBER, "value": nhs}],
            "active": true, "name": [{"use": "official", "family": "Bench", "given": ["Load"]}],
            "gender": "female", "birthDate": "1950-04-01",
            "address": [{"line": ["1 Mill Lane"], "city": "Leeds", "postalCode": "LS6 2AB"}]},
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": format!("identifier={}|{nhs}", sp_hub::synthetic::NHS_NUMBER)}},
        {"fullUrl": s, "resource": {"resourceType": "ServiceRequest",
            "identifier": [{"system": sp_hub::synthetic::REFERRAL_ID, "value": format!("BENCH-{}", &s[9..])}],
            "status": "active", "intent": "order", "priority": "routine",
            "code": {"coding": [{"system": SNOMED, "code": "871731000000106",
                                 "display": "Referral to social prescribing service"}]},
            "subject": {"reference": p}, "authoredOn": now,
            "requester": {"reference": t.practice},
            "reasonCode": [{"coding": [{"system": format!("{SP}/CodeSystem/sp-need"), "code": need}]}],
            "note": [{"text": "Would like to join a walking group; prefers morning contact."}]},
         "request": {"method": "POST", "url": "ServiceRequest"}},
        {"fullUrl": task, "resource": {"resourceType": "Task",
            "status": "requested", "intent": "order",
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
            "focus": {"reference": s}, "for": {"reference": p}, "authoredOn": now,
            "requester": {"reference": t.practice}, "owner": {"reference": t.link_worker}},
         "request": {"method": "POST", "url": "Task"}}
    ]})
}

async fn referral(t: Target, n: u64) -> Result<u32, String> {
    let bundle = referral_bundle(&t, n);
    send(
        t.http
            .post(format!("{}/", t.base))
            .bearer_auth(&t.gp_token)
            .header("Content-Type", FHIR_JSON)
            .header("Accept", FHIR_JSON)
            .body(bundle.to_string()),
        &[200],
    )
    .await
    .map(|_| 0)
}

/// Scenario 2: one page of the documented poll, at a random position.
fn poll_path(t: &Target, n: u64) -> String {
    if t.peer {
        // No change feed on a peer: the _lastUpdated form.
        format!(
            "/Task?owner={}&_lastUpdated=gt2020-01-01&_sort=_lastUpdated&_count=100",
            t.link_worker
        )
    } else {
        let pos = mix(n) % (t.feed_position.max(1) as u64);
        format!("/Task?owner={}&_feed={pos}&_count=100", t.link_worker)
    }
}

async fn poll(t: Target, n: u64) -> Result<u32, String> {
    send(
        t.http
            .get(format!("{}{}", t.base, poll_path(&t, n)))
            .bearer_auth(&t.vcs_token)
            .header("Accept", FHIR_JSON),
        &[200],
    )
    .await
    .map(|_| 0)
}

/// The next status a VCS moves a live Task to; on-hold and in-progress
/// alternate, so the scenario never runs out of Tasks.
fn next_status(task: &mut Value) -> Result<(), String> {
    let status = task["status"].as_str().unwrap_or("").to_string();
    let obj = task.as_object_mut().ok_or("not an object")?;
    match status.as_str() {
        "requested" => {
            obj.insert("status".into(), json!("accepted"));
        }
        "accepted" | "on-hold" => {
            obj.insert("status".into(), json!("in-progress"));
            obj.remove("statusReason");
        }
        "in-progress" => {
            obj.insert("status".into(), json!("on-hold"));
            obj.insert(
                "statusReason".into(),
                json!({"coding": [{"system": format!("{SP}/CodeSystem/sp-status-reason"), "code": "not-ready"}]}),
            );
        }
        other => return Err(format!("Task is {other}, not live")),
    }
    Ok(())
}

/// Scenario 3: read the Task, update its status with If-Match; on 412
/// (someone else changed it) read again and retry.
async fn accept(t: Target, n: u64) -> Result<u32, String> {
    let id = pick(&t.tasks, n).to_string();
    let url = format!("{}/Task/{id}", t.base);
    for retry in 0..10u32 {
        let resp = send(
            t.http
                .get(&url)
                .bearer_auth(&t.vcs_token)
                .header("Accept", FHIR_JSON),
            &[200],
        )
        .await?;
        let etag = resp.1.ok_or("no ETag")?;
        let mut task: Value = serde_json::from_slice(resp.2.as_ref()).map_err(|e| e.to_string())?;
        next_status(&mut task)?;
        let (status, _, _) = send(
            t.http
                .put(&url)
                .bearer_auth(&t.vcs_token)
                .header("Content-Type", FHIR_JSON)
                .header("Accept", FHIR_JSON)
                .header("If-Match", etag)
                .body(task.to_string()),
            &[200, 412],
        )
        .await?;
        if status == 200 {
            return Ok(retry);
        }
    }
    Err("412 ten times in a row".into())
}

/// Scenario 4: the referral's trail (`$trail`; a peer: the referral with
/// its patient and Tasks through _include/_revinclude).
async fn trail(t: Target, n: u64) -> Result<u32, String> {
    let id = pick(&t.referrals, n);
    let path = if t.peer {
        format!("/ServiceRequest?_id={id}&_include=ServiceRequest:subject&_revinclude=Task:focus")
    } else {
        format!("/ServiceRequest/{id}/$trail")
    };
    send(
        t.http
            .get(format!("{}{path}", t.base))
            .bearer_auth(&t.gp_token)
            .header("Accept", FHIR_JSON),
        &[200],
    )
    .await
    .map(|_| 0)
}

/// Scenario 5: read by id.
async fn read(t: Target, n: u64) -> Result<u32, String> {
    let id = pick(&t.referrals, n);
    send(
        t.http
            .get(format!("{}/ServiceRequest/{id}", t.base))
            .bearer_auth(&t.gp_token)
            .header("Accept", FHIR_JSON),
        &[200],
    )
    .await
    .map(|_| 0)
}

type ScenarioFn =
    fn(Target, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, String>>>>;

/// The scenarios in the order they run: reads first, so the referrals the
/// write scenario adds do not change the size the reads see.
fn scenarios() -> Vec<(&'static str, &'static str, ScenarioFn)> {
    vec![
        ("read", "GP reads a ServiceRequest by id", |t, n| {
            Box::pin(read(t, n))
        }),
        ("trail", "GP reads a referral's $trail", |t, n| {
            Box::pin(trail(t, n))
        }),
        (
            "poll",
            "VCS polls its link worker's Tasks, one page of 100",
            |t, n| Box::pin(poll(t, n)),
        ),
        (
            "accept",
            "VCS reads a Task and updates its status with If-Match",
            |t, n| Box::pin(accept(t, n)),
        ),
        (
            "referral",
            "GP posts Patient (conditional) + ServiceRequest + Task",
            |t, n| Box::pin(referral(t, n)),
        ),
    ]
}

fn op_of(t: &Target, f: ScenarioFn) -> Op {
    let t = t.clone();
    Rc::new(move |n| f(t.clone(), n))
}

/// Samples the server's RSS every 50 ms into `peak` (KiB) until `stop`.
fn rss_sampler(
    pid: u32,
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let kib = (rss_mib(pid, "VmRSS:") * 1024.0) as u64;
            peak.fetch_max(kib, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Every scenario at every level, then at half of its saturation.
async fn run_scenarios(
    t: &Target,
    o: &Options,
    pid: Option<u32>,
    only: &[&str],
) -> Vec<report::Scenario> {
    let mut out = vec![];
    for (name, description, f) in scenarios() {
        if !only.contains(&name) {
            continue;
        }
        let op = op_of(t, f);
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = pid.map(|p| rss_sampler(p, peak.clone(), stop.clone()));
        let mut runs: Vec<Run> = vec![];
        for &c in &o.concurrency {
            let r = closed_loop(&op, c, WARM_UP, o.seconds).await;
            println!(
                "  {name:<9} c={c:<3} {:>8.1}/s  p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2} ms  errors {} retries {}{}",
                r.throughput,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.errors,
                r.retries,
                r.first_error.as_deref().map(|e| format!("  first error: {}", &e[..e.len().min(200)])).unwrap_or_default()
            );
            runs.push(r);
        }
        let saturation = runs.iter().map(|r| r.throughput).fold(0.0, f64::max);
        let half = if saturation > 0.0 {
            let r = open_loop(&op, saturation / 2.0, o.seconds, 256).await;
            println!(
                "  {name:<9} open {:>6.1}/s -> {:>8.1}/s  p50 {:>7.2}  p95 {:>7.2}  p99 {:>7.2} ms  errors {}",
                saturation / 2.0,
                r.throughput,
                r.p50_ms,
                r.p95_ms,
                r.p99_ms,
                r.errors
            );
            Some(r)
        } else {
            None
        };
        stop.store(true, Ordering::Relaxed);
        if let Some(s) = sampler {
            let _ = s.join();
        }
        out.push(report::Scenario {
            name: name.into(),
            description: description.into(),
            runs,
            saturation,
            half_saturation: half,
            rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
        });
    }
    out
}

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// One backend and size against sp-hub
// ---------------------------------------------------------------------------

fn build(root: &Path) -> Result<PathBuf, String> {
    println!("building the release sp-hub ...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "sp-hub", "--bin", "sp-hub"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p sp-hub failed".into());
    }
    let bin = root.join("target/release/sp-hub");
    bin.exists()
        .then_some(bin)
        .ok_or_else(|| "no target/release/sp-hub".into())
}

fn pcns_for(n: usize) -> usize {
    // About a thousand referrals a PCN over the two years, as England's
    // ~1,250 PCNs make at 1M: one owner's or practice's share stays the same
    // as the hub grows.
    (n / 1000).max(1)
}

fn run_one(
    o: &Options,
    bin: &Path,
    work: &Path,
    backend: &str,
    n: usize,
    rt: &tokio::runtime::Runtime,
) -> Result<report::Result, String> {
    println!("\n=== sp-hub on {backend}, {n} referrals ===");
    let (url, pg_name) = match backend {
        "postgres" => {
            let admin = o.postgres.as_deref().ok_or("--postgres URL")?;
            let name = format!("sp_hub_bench_{n}");
            (db::create_database(admin, &name)?, Some(name))
        }
        _ => {
            let path = work.join(format!("sqlite-{n}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
            (path.to_string_lossy().into_owned(), None)
        }
    };
    let pcns = pcns_for(n);
    let out = Command::new(bin)
        .args(["load-synthetic", "--database-url", &url])
        .args(["--referrals", &n.to_string(), "--pcns", &pcns.to_string()])
        .env("SP_HUB_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    print!("{said}");
    if !out.status.success() {
        return Err("sp-hub load-synthetic failed".into());
    }
    // "loaded N referrals (R resources) in S s: X resources/s"
    let number_after = |key: &str| -> f64 {
        said.split(key)
            .nth(1)
            .and_then(|r| {
                r.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                    .find(|s| !s.is_empty())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let (load_resources, load_seconds, load_rate) = (
        number_after("referrals (") as usize,
        number_after("resources) in "),
        number_after("s: "),
    );
    let mut raw_db = db::Db::open(&url)?;
    if raw_db.is_postgres() {
        // What autovacuum does to tables that just grew, before the plans.
        raw_db.execute("VACUUM ANALYZE")?;
    }
    let targets = db::sample(&mut raw_db)?;
    println!(
        "targets: GP {} ({} referrals), VCS {} (link worker {}, {} live Tasks), feed at {}",
        targets.practice,
        targets.referrals.len(),
        targets.vcs,
        targets.link_worker,
        targets.tasks.len(),
        targets.feed_position
    );
    let gp = BenchClient::new("bench-gp");
    let vcs = BenchClient::new("bench-vcs");
    gp.register(bin, &url, work, &targets.practice, "gp")?;
    vcs.register(bin, &url, work, &targets.vcs, "vcs")?;

    let server = Server::start(bin, &url)?;
    println!(
        "server {} ready in {:.0} ms",
        server.base, server.cold_start_ms
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = rss_mib(server.pid(), "VmRSS:");
    let http = http_client()?;
    let (gp_token, vcs_token) = rt.block_on(async {
        Ok::<_, String>((
            gp.token(&http, &server.base).await?,
            vcs.token(&http, &server.base).await?,
        ))
    })?;
    let target = Target {
        http,
        base: server.base.clone(),
        gp_token,
        vcs_token,
        practice: targets.practice.clone(),
        link_worker: targets.link_worker.clone(),
        referrals: Rc::new(targets.referrals.clone()),
        tasks: Rc::new(targets.tasks.clone()),
        feed_position: targets.feed_position,
        peer: false,
        nhs_base: 0,
        counter: Rc::new(Cell::new(0)),
    };

    // The probe: one referral on a quiet server, to see what it stores.
    let before = db::mark(&mut raw_db)?;
    let probe = rt.block_on(referral(target.clone(), 0));
    probe.map_err(|e| format!("the probe referral failed: {e}"))?;
    let rows = db::capture_referral(&mut raw_db, &before)?;
    println!(
        "one referral wrote {} ({} rows; per table {:?})",
        rows.resources.join(", "),
        rows.added.values().sum::<i64>(),
        rows.added
    );

    // The poll's SQL, captured from the library at several positions.
    let polls = {
        let store = sp_hub::store::Store::open(&url)?;
        let principal = sp_hub::auth::Principal {
            client_id: "bench-vcs".into(),
            organization: targets.vcs.clone(),
            role: sp_hub::auth::Role::Vcs,
            scopes: sp_hub::auth::scopes::Scopes::parse("system/*.cruds")
                .map_err(|e| e.to_string())?,
            request: None,
        };
        let mut polls = vec![];
        for k in 0..POLL_SAMPLES as u64 {
            let path = poll_path(&target, k * 7919);
            let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
            let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
                .map(|(a, b)| (a.into_owned(), b.into_owned()))
                .collect();
            polls.push(db::capture_poll(&store, &principal, &params)?);
        }
        polls
    };
    let poll_sql: Vec<String> = polls[0].iter().map(db::inline).collect();
    println!("the poll runs {} statement(s):", poll_sql.len());
    for s in &poll_sql {
        println!("  {s}");
    }

    // Reads first; the raw poll next, on the same data the poll scenario
    // saw (the write scenarios add Tasks to the polled owner, and a poll's
    // cost grows with them); then the writes.
    let local = tokio::task::LocalSet::new();
    let mut scenario_results = local.block_on(
        rt,
        run_scenarios(&target, o, Some(server.pid()), &["read", "trail", "poll"]),
    );
    println!("raw poll SQL (server idle):");
    let mut poll_runs = vec![];
    for &c in &o.concurrency {
        let r = db::raw_run(&url, c, o.seconds, |db, k| {
            db::run_poll(db, &polls[(k as usize) % polls.len()])
        })?;
        println!(
            "  poll SQL      c={c:<3} {:>9.1}/s errors {}",
            r.rate, r.errors
        );
        poll_runs.push(r);
    }
    scenario_results.extend(local.block_on(
        rt,
        run_scenarios(&target, o, Some(server.pid()), &["accept", "referral"]),
    ));
    let rss_peak = rss_mib(server.pid(), "VmHWM:").max(
        scenario_results
            .iter()
            .map(|s| s.rss_peak_mib)
            .fold(0.0, f64::max),
    );
    let cold_start_ms = server.cold_start_ms;
    drop(server);

    // The raw commit limit, with the server stopped.
    println!("raw referral rows (server stopped):");
    let mut commit_runs = vec![];
    for &c in &o.concurrency {
        let r = db::raw_run(&url, c, o.seconds, |db, _| {
            rows.insert_copy(db, "bench-raw")
        })?;
        println!(
            "  referral rows c={c:<3} {:>9.1}/s errors {}{}",
            r.rate,
            r.errors,
            r.first_error
                .as_deref()
                .map(|e| format!("  first error: {e}"))
                .unwrap_or_default()
        );
        commit_runs.push(r);
    }
    let best = |runs: &[db::RawRun]| runs.iter().map(|r| r.rate).fold(0.0, f64::max);
    let raw_commit = report::Raw {
        description: "the rows one referral stores (captured), direct SQL, one transaction each"
            .into(),
        best: best(&commit_runs),
        runs: commit_runs,
    };
    let raw_poll = report::Raw {
        description: "the SQL the server runs for one poll page (captured), as it is".into(),
        best: best(&poll_runs),
        runs: poll_runs,
    };
    let sat = |name: &str| {
        scenario_results
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.saturation)
    };
    let referral_ratio = sat("referral").map(|s| s / raw_commit.best.max(1e-9));
    let poll_ratio = sat("poll").map(|s| s / raw_poll.best.max(1e-9));
    let database_bytes = if raw_db.is_postgres() {
        raw_db
            .count("SELECT pg_database_size(current_database()) AS n", &[])
            .ok()
            .map(|n| n as u64)
    } else {
        std::fs::metadata(&url).ok().map(|m| m.len())
    };
    drop(raw_db);
    let postgres_settings = if backend == "postgres" {
        db::postgres_settings(&url).unwrap_or_default()
    } else {
        Default::default()
    };
    let mut referral_rows = std::collections::BTreeMap::new();
    for t in rows.added.keys().chain(rows.copied.keys()) {
        referral_rows.insert(
            t.clone(),
            (
                rows.added.get(t).copied().unwrap_or(0),
                rows.copied.get(t).copied().unwrap_or(0),
            ),
        );
    }
    let notes = vec![
        "sp-hub serves with SP_HUB_LOG=warn (no per-request log line) and a rate limit no client reaches (its per-request count is still written).".to_string(),
        format!("Each size is loaded with `sp-hub load-synthetic --referrals N --pcns N/1000` (about seven resources a referral); the referral scenario adds referrals as it runs, so later scenarios and the raw limits see a slightly larger database."),
        "The raw referral copy inserts the captured rows with new ids in one transaction (BEGIN IMMEDIATE on SQLite), one multi-row INSERT per table, then moves the feed clock, stamps the ticks (one UPDATE per table on PostgreSQL), moves the audit head and upserts the rate count as a request does; sp-hub's own request may use more than one transaction.".to_string(),
        "Raw limits run one connection per thread with the server's SQLite settings (WAL, synchronous=NORMAL): the poll SQL right after the poll scenario (server idle, same data), the referral rows after the write scenarios with the server stopped.".to_string(),
    ];
    let result = report::Result {
        date: today(),
        target: "sp-hub".into(),
        backend: backend.into(),
        referrals: n,
        pcns,
        machine: report::machine(),
        postgres_settings,
        binary_bytes: std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0),
        load_resources,
        load_seconds,
        load_rate,
        database_bytes,
        cold_start_ms,
        rss_idle_mib: rss_idle,
        rss_peak_mib: rss_peak,
        seconds_per_run: o.seconds,
        notes,
        scenarios: scenario_results,
        raw_commit: Some(raw_commit),
        raw_poll: Some(raw_poll),
        referral_rows,
        referral_ratio,
        poll_ratio,
        poll_sql,
    };
    if let (Some(admin), Some(name)) = (o.postgres.as_deref(), pg_name) {
        if let Err(e) = db::drop_database(admin, &name) {
            eprintln!("warning: could not drop {name}: {e}");
        }
    } else {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{url}{suffix}"));
        }
    }
    Ok(result)
}

// ---------------------------------------------------------------------------
// A peer FHIR server
// ---------------------------------------------------------------------------

async fn create(t: &Target, resource: Value) -> Result<String, String> {
    let ty = resource["resourceType"].as_str().unwrap_or("").to_string();
    let resp = send(
        t.http
            .post(format!("{}/{ty}", t.base))
            .bearer_auth(&t.gp_token)
            .header("Content-Type", FHIR_JSON)
            .body(resource.to_string()),
        &[200, 201],
    )
    .await?;
    let v: Value = serde_json::from_slice(resp.2.as_ref()).map_err(|e| e.to_string())?;
    v["id"]
        .as_str()
        .map(|id| format!("{ty}/{id}"))
        .ok_or_else(|| "no id in the answer".into())
}

fn run_peer(o: &Options, n: usize, rt: &tokio::runtime::Runtime) -> Result<report::Result, String> {
    let base = o.peer_base.clone().ok_or("--peer-base")?;
    let token = o.peer_token.clone().ok_or("--peer-token")?;
    println!("\n=== peer {base}, {n} referrals ===");
    let local = tokio::task::LocalSet::new();
    local.block_on(rt, async {
        let mut t = Target {
            http: http_client()?,
            base,
            gp_token: token.clone(),
            vcs_token: token,
            practice: String::new(),
            link_worker: String::new(),
            referrals: Rc::new(vec![]),
            tasks: Rc::new(vec![]),
            feed_position: 0,
            peer: true,
            nhs_base: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() % 10_000_000 * 7)
                .unwrap_or(0),
            counter: Rc::new(Cell::new(0)),
        };
        t.practice = create(&t, json!({"resourceType": "Organization", "name": "Bench practice", "active": true})).await?;
        let vcs = create(&t, json!({"resourceType": "Organization", "name": "Bench VCS", "active": true})).await?;
        t.link_worker = create(&t, json!({"resourceType": "PractitionerRole", "active": true,
            "organization": {"reference": vcs}})).await?;
        // Load through scenario 1, keeping the ids the peer gives.
        let started = Instant::now();
        let (referrals, tasks) = (Rc::new(std::cell::RefCell::new(vec![])), Rc::new(std::cell::RefCell::new(vec![])));
        let next = Rc::new(Cell::new(0usize));
        let mut workers = vec![];
        for _ in 0..16 {
            let (t, referrals, tasks, next) = (t.clone(), referrals.clone(), tasks.clone(), next.clone());
            workers.push(tokio::task::spawn_local(async move {
                loop {
                    let i = next.get();
                    if i >= n {
                        return Ok::<(), String>(());
                    }
                    next.set(i + 1);
                    let bundle = referral_bundle(&t, i as u64);
                    let resp = send(
                        t.http
                            .post(format!("{}/", t.base))
                            .bearer_auth(&t.gp_token)
                            .header("Content-Type", FHIR_JSON)
                            .body(bundle.to_string()),
                        &[200],
                    )
                    .await?;
                    let v: Value = serde_json::from_slice(resp.2.as_ref()).map_err(|e| e.to_string())?;
                    for e in v["entry"].as_array().into_iter().flatten() {
                        let loc = e["response"]["location"].as_str().unwrap_or("");
                        let mut parts = loc.split('/');
                        match (parts.next(), parts.next()) {
                            (Some("ServiceRequest"), Some(id)) => referrals.borrow_mut().push(id.to_string()),
                            (Some("Task"), Some(id)) => tasks.borrow_mut().push(id.to_string()),
                            _ => {}
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.await.map_err(|e| e.to_string())??;
        }
        let load_seconds = started.elapsed().as_secs_f64();
        t.referrals = Rc::new(referrals.borrow().clone());
        t.tasks = Rc::new(tasks.borrow().clone());
        println!("loaded {n} referrals through scenario 1 in {load_seconds:.0} s");
        let only = ["read", "trail", "poll", "accept", "referral"];
        let scenarios = run_scenarios(&t, o, None, &only).await;
        Ok(report::Result {
            date: today(),
            target: "peer".into(),
            backend: "peer".into(),
            referrals: n,
            pcns: 1,
            machine: report::machine(),
            postgres_settings: Default::default(),
            binary_bytes: 0,
            load_resources: n * 3,
            load_seconds,
            load_rate: (n * 3) as f64 / load_seconds.max(1e-9),
            database_bytes: None,
            cold_start_ms: 0.0,
            rss_idle_mib: 0.0,
            rss_peak_mib: 0.0,
            seconds_per_run: o.seconds,
            notes: vec!["The peer answers standard FHIR: the trail is `ServiceRequest?_id=…&_include=ServiceRequest:subject&_revinclude=Task:focus`, the poll `_lastUpdated` based.".into()],
            scenarios,
            raw_commit: None,
            raw_poll: None,
            referral_rows: Default::default(),
            referral_ratio: None,
            poll_ratio: None,
            poll_sql: vec![],
        })
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("sp-hub-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let o = options()?;
    let root = repo_root();
    let results_dir = root.join("bench/results");
    if !o.report_only {
        // Before any connection opens, so the library's report their SQL.
        db::install_capture()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        if o.peer_base.is_some() {
            for &n in &o.sizes {
                let r = run_peer(&o, n, &rt)?;
                println!("wrote {}", report::write(&results_dir, &r)?.display());
            }
        } else {
            let bin = build(&root)?;
            let work = std::env::temp_dir().join(format!("sp-hub-bench-{}", std::process::id()));
            std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
            for backend in &o.backends {
                for &n in &o.sizes {
                    let r = run_one(&o, &bin, &work, backend, n, &rt)?;
                    println!("wrote {}", report::write(&results_dir, &r)?.display());
                }
            }
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    let results = report::all(&results_dir);
    let md = report::markdown(&results, &o.command);
    std::fs::write(root.join("BENCHMARKS.md"), &md).map_err(|e| e.to_string())?;
    println!("\n{md}");
    Ok(())
}
