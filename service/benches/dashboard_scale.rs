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
//! index rows), 1,000 resources a transaction. Then it starts the real
//! `sp-hub serve` on that database and times `--runs` requests (after two
//! untimed ones) of each of:
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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sp_hub::store::{Decision, Store};

const BATCH: usize = 1000;
const PRACTICES_PER_PCN: usize = 5;
const SP: &str = "https://sp-hub.example/fhir";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

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

/// splitmix64: every run loads the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Day `d` (0 = 2025-01-01) at `minute` as a FHIR dateTime.
fn instant(d: u64, minute: u64) -> String {
    const MONTHS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let (year, mut day) = (2025 + d / 365, d % 365);
    let mut month = 0;
    while day >= MONTHS[month] {
        day -= MONTHS[month];
        month += 1;
        if month == 12 {
            return format!(
                "{}-12-31T{:02}:{:02}:00Z",
                year,
                minute / 60 % 24,
                minute % 60
            );
        }
    }
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:00Z",
        month + 1,
        day + 1,
        minute / 60 % 24,
        minute % 60
    )
}

fn coding(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

type Row = (&'static str, String, Value);

fn org(id: String, kind: &str, part_of: Option<&str>, list_size: Option<u64>) -> Row {
    let mut o = json!({"resourceType": "Organization", "active": true, "name": id,
        "type": [coding(&format!("{SP}/CodeSystem/sp-organisation-kind"), kind)]});
    if let Some(p) = part_of {
        o["partOf"] = json!({"reference": format!("Organization/{p}")});
    }
    if let Some(n) = list_size {
        o["extension"] = json!([{"url": format!("{SP}/StructureDefinition/sp-registered-list-size"), "valueInteger": n}]);
    }
    ("Organization", id, o)
}

/// The directory: PCNs, their practices, VCS organisations, link workers.
fn directory(pcns: usize) -> Vec<Row> {
    let mut rows = vec![];
    for p in 0..pcns {
        rows.push(org(format!("pcn{p}"), "pcn", None, None));
        for k in 0..PRACTICES_PER_PCN {
            rows.push(org(
                format!("pcn{p}-gp{k}"),
                "gp-practice",
                Some(&format!("pcn{p}")),
                Some(8000 + 500 * k as u64),
            ));
        }
        for v in 0..2 {
            rows.push(org(format!("pcn{p}-vcs{v}"), "vcs", None, None));
        }
        for w in 0..4 {
            let (employer, model) = if w < 2 {
                (format!("pcn{p}"), "pcn-employed")
            } else {
                (format!("pcn{p}-vcs{}", w - 2), "vcs-subcontracted")
            };
            rows.push((
                "PractitionerRole",
                format!("pcn{p}-lw{w}"),
                json!({"resourceType": "PractitionerRole", "active": true,
                    "extension": [
                        {"url": format!("{SP}/StructureDefinition/sp-employment-model"),
                         "valueCoding": {"system": format!("{SP}/CodeSystem/sp-employment-model"), "code": model}},
                        {"url": format!("{SP}/StructureDefinition/sp-serves-pcn"),
                         "valueReference": {"reference": format!("Organization/pcn{p}")}}],
                    "organization": {"reference": format!("Organization/{employer}")}}),
            ));
        }
    }
    rows
}

const NEEDS: [&str; 8] = [
    "loneliness",
    "debt-money",
    "housing",
    "bereavement",
    "mental-wellbeing",
    "employment",
    "carer-support",
    "benefits-welfare",
];
const STATUSES: [&str; 9] = [
    "requested",
    "accepted",
    "in-progress",
    "in-progress",
    "on-hold",
    "completed",
    "completed",
    "rejected",
    "failed",
];
const REASONS: [&str; 5] = [
    "no-suitable-service",
    "not-ready",
    "could-not-contact",
    "capacity-full",
    "declined-by-person",
];
const MODES: [&str; 4] = ["phone", "video", "face-to-face", "home-visit"];

/// Referral `i` and its trail.
fn referral(i: usize, o: &Options, rng: &mut Rng) -> Vec<Row> {
    let pcn = i % o.pcns;
    let practice = format!("pcn{pcn}-gp{}", rng.below(PRACTICES_PER_PCN as u64));
    let day = rng.below(730);
    let authored = instant(day, 8 * 60 + rng.below(9 * 60));
    let sr = format!("sr{i}");
    let patient = format!("Patient/pat{i}");
    let based_on = json!([{"reference": format!("ServiceRequest/{sr}")}]);
    let mut needs = vec![coding(
        &format!("{SP}/CodeSystem/sp-need"),
        rng.pick(&NEEDS),
    )];
    if rng.below(3) == 0 {
        needs.push(coding(
            &format!("{SP}/CodeSystem/sp-need"),
            rng.pick(&NEEDS),
        ));
    }
    let status = rng.pick(&STATUSES);
    let ended = ["completed", "rejected", "failed"].contains(&status);
    let mut rows = vec![(
        "ServiceRequest",
        sr.clone(),
        json!({"resourceType": "ServiceRequest", "status": if ended { "completed" } else { "active" },
            "intent": "order", "code": coding("http://snomed.info/sct", "871731000000106"),
            "subject": {"reference": patient}, "authoredOn": authored,
            "requester": {"reference": format!("Organization/{practice}")}, "reasonCode": needs}),
    )];
    let worker = format!("PractitionerRole/pcn{pcn}-lw{}", rng.below(4));
    let mut task = json!({"resourceType": "Task", "status": status, "intent": "order",
        "code": coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": format!("ServiceRequest/{sr}")}, "for": {"reference": patient},
        "authoredOn": authored, "requester": {"reference": format!("Organization/{practice}")}});
    let pooled = status == "requested" && rng.below(2) == 0;
    if !pooled {
        task["owner"] = json!({"reference": worker});
    }
    let accepted = !["requested", "rejected"].contains(&status);
    if accepted {
        task["executionPeriod"] = json!({"start": instant(day + 1 + rng.below(5), 9 * 60)});
    }
    if ["rejected", "failed", "on-hold"].contains(&status) {
        task["statusReason"] = coding(
            &format!("{SP}/CodeSystem/sp-status-reason"),
            rng.pick(&REASONS),
        );
    }
    rows.push(("Task", format!("t{i}"), task));
    if !accepted {
        return rows;
    }
    for c in 0..rng.below(4) {
        let at = instant(day + 3 + 10 * c, 10 * 60 + rng.below(6 * 60));
        rows.push((
            "Encounter",
            format!("c{i}-{c}"),
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
                "type": [coding(&format!("{SP}/CodeSystem/sp-contact-mode"), rng.pick(&MODES))],
                "subject": {"reference": patient}, "basedOn": based_on,
                "participant": [{"individual": {"reference": worker}}],
                "period": {"start": at, "end": at}}),
        ));
    }
    if rng.below(5) == 0 {
        let start = instant(day + 5, 14 * 60);
        let end = instant(day + 5, 15 * 60);
        rows.push((
            "Procedure",
            format!("h{i}"),
            json!({"resourceType": "Procedure", "status": "completed", "basedOn": based_on,
                "category": coding(&format!("{SP}/CodeSystem/sp-holding-work"), "check-in-call"),
                "subject": {"reference": patient}, "performedPeriod": {"start": start, "end": end},
                "performer": [{"actor": {"reference": worker}}]}),
        ));
    }
    if rng.below(3) == 0 {
        for (timing, offset) in [("baseline", 3), ("follow-up", 60)] {
            for (measure, value) in [
                ("ons4-life-satisfaction", 3 + rng.below(6)),
                ("swemwbs-total", 12 + rng.below(15)),
            ] {
                rows.push((
                    "Observation",
                    format!("o{i}-{timing}-{measure}"),
                    json!({"resourceType": "Observation", "status": "final", "basedOn": based_on,
                        "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey"),
                                     coding(&format!("{SP}/CodeSystem/sp-outcome-timing"), timing)],
                        "code": coding(&format!("{SP}/CodeSystem/sp-outcome-measure"), measure),
                        "subject": {"reference": patient}, "effectiveDateTime": instant(day + offset, 12 * 60),
                        "performer": [{"reference": worker}], "valueInteger": value}),
                ));
            }
        }
    }
    if rng.below(10) == 0 {
        rows.push((
            "Task",
            format!("t{i}-onward"),
            json!({"resourceType": "Task", "status": "in-progress", "intent": "order",
                "code": coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
                "focus": {"reference": format!("ServiceRequest/{sr}")}, "for": {"reference": patient},
                "partOf": [{"reference": format!("Task/t{i}")}],
                "owner": {"reference": format!("Organization/pcn{pcn}-vcs0")}}),
        ));
    }
    rows
}

fn write_batch(store: &Store, batch: &[Row]) -> Result<(), String> {
    store
        .transaction(|tx| {
            for (res_type, id, resource) in batch {
                tx.write(res_type, id, |_| {
                    Ok(Decision::Put {
                        method: "PUT",
                        resource: resource.clone(),
                    })
                })?;
            }
            Ok(())
        })
        .map_err(|e| format!("load failed: {e}"))
}

fn load(store: &Store, o: &Options) -> Result<(), String> {
    let started = Instant::now();
    write_batch(store, &directory(o.pcns))?;
    let mut rng = Rng(42);
    let (mut batch, mut written) = (vec![], 0usize);
    for i in 0..o.referrals {
        batch.extend(referral(i, o, &mut rng));
        if batch.len() >= BATCH || i + 1 == o.referrals {
            written += batch.len();
            write_batch(store, &batch)?;
            batch.clear();
        }
        if (i + 1) % (o.referrals / 10).max(1) == 0 {
            let secs = started.elapsed().as_secs_f64();
            eprintln!("  {} referrals, {written} resources in {secs:.0} s", i + 1);
        }
    }
    println!(
        "loaded {} referrals ({written} resources) in {:.0} s",
        o.referrals,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A database for the run: a temporary SQLite file, or a fresh PostgreSQL
/// database dropped on drop.
struct Fresh {
    url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Fresh {
    fn new(postgres: Option<&str>) -> Result<Fresh, String> {
        match postgres {
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("sp-hub-dashboard-bench-")
                    .tempdir()
                    .map_err(|e| e.to_string())?;
                let url = dir.path().join("bench.db").to_string_lossy().into_owned();
                Ok(Fresh {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                })
            }
            Some(admin) => {
                let name = format!("sp_hub_dashboard_bench_{}", std::process::id());
                let out = Command::new("createdb")
                    .arg(format!("--maintenance-db={admin}"))
                    .arg(&name)
                    .output()
                    .map_err(|e| format!("cannot run createdb (is it on PATH?): {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "createdb failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let scheme_end = admin.find("://").map_or(0, |i| i + 3);
                let (head, tail) = admin.split_at(scheme_end);
                let authority_end = tail.find(['/', '?']).unwrap_or(tail.len());
                Ok(Fresh {
                    url: format!("{head}{}/{name}", &tail[..authority_end]),
                    postgres: Some((admin.to_string(), name)),
                    _dir: None,
                })
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            let ok = Command::new("dropdb")
                .arg(format!("--maintenance-db={admin}"))
                .arg("--force")
                .arg(name)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("warning: could not drop database {name}");
            }
        }
    }
}

/// `sp-hub serve` on the database; killed and reaped on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(database_url: &str) -> Result<Server, String> {
        let bin = env!("CARGO_BIN_EXE_sp-hub");
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
            ])
            .env_remove("SP_HUB_LISTEN")
            .env_remove("SP_HUB_DATABASE_URL")
            .env("SP_HUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            for _ in lines.by_ref() {}
        });
        let mut server = Server {
            child,
            base: String::new(),
        };
        let line = rx
            .recv_timeout(STARTUP_TIMEOUT)
            .ok()
            .flatten()
            .unwrap_or_default();
        server.base = line
            .strip_prefix("sp-hub listening on ")
            .ok_or_else(|| format!("sp-hub did not announce its address (got '{line}')"))?
            .to_string();
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers a client of `role` for `org` and returns an access token.
async fn token(
    store_url: &str,
    base: &str,
    id: &str,
    org: &str,
    role: &str,
) -> Result<String, String> {
    use base64::Engine as _;
    use p384::pkcs8::EncodePrivateKey as _;
    let key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": "bench",
        "x": b64(point.x().ok_or("no x")?), "y": b64(point.y().ok_or("no y")?)}]})
    .to_string();
    let row = sp_hub::auth::registration(
        id,
        org,
        role,
        "system/*.rs",
        sp_hub::auth::Keys::Jwks(&jwks),
    )?;
    Store::open(store_url)?.put_client(&row)?;
    let aud = format!("{base}/auth/token");
    let claims = json!({"iss": id, "sub": id, "aud": aud, "exp": sp_hub::auth::token::now() + 240,
                        "jti": uuid::Uuid::new_v4().to_string()});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
    header.kid = Some("bench".into());
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    let assertion = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(der.as_bytes()),
    )
    .map_err(|e| e.to_string())?;
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
            ("scope", "system/*.rs"),
        ])
        .finish();
    let v: Value = reqwest::Client::new()
        .post(&aud)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    v["access_token"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| format!("no token: {v}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
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
    let fresh = Fresh::new(o.postgres.as_deref())?;
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
    ))?;
    let admin = runtime.block_on(token(
        &fresh.url,
        &server.base,
        "bench-admin",
        "Organization/icb",
        "admin",
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
