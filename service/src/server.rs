//! Starting the HTTP server.

use std::io::Write as _;

use actix_web::{web, App, HttpServer};

use crate::api::{self, AppState};
use crate::store::Store;

pub struct ServeConfig {
    pub database_url: String,
    pub listen: String,
    pub max_body_bytes: usize,
    pub max_bundle_entries: usize,
    /// Seconds an access token lives.
    pub token_lifetime: i64,
    /// Requests a client may make a minute (0: no limit).
    pub rate_limit: i64,
    /// Fetch clients' JWKS over http and from private addresses too (a
    /// closed network, tests); else https to public addresses only.
    pub allow_private_jwks_urls: bool,
    /// The public base URL (see `AppState::public_url`).
    pub public_url: Option<String>,
    /// Load the example PCN (`fhir-profiles/examples/demo-pcn.json`) once
    /// the database is open.
    pub demo: bool,
    /// The longest one SQL statement may run (`--query-timeout-ms`).
    pub query_timeout: Option<std::time::Duration>,
    /// Dashboard small-number suppression (`--dashboard-min-group`).
    pub dashboard_min_group: i64,
    /// Subscriptions: endpoint guard and retry policy.
    pub notify: crate::notify::Config,
}

/// The synthetic PCN, one transaction Bundle of PUTs with fixed ids.
const DEMO_PCN: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../fhir-profiles/examples/demo-pcn.json"
));

/// Opens the database (migrating it), binds, announces the address on
/// stdout (tests and scripts read that line), and serves until stopped.
pub async fn serve(cfg: ServeConfig) -> Result<(), String> {
    crate::fhir::summary::load()?;
    crate::notify::configure(cfg.notify.clone());
    let registry = crate::search::registry::load()?;
    crate::profiles::load()?;
    let url = cfg.database_url.clone();
    let query_timeout = cfg.query_timeout;
    // A database from before the dashboard summary gets it before serving.
    let store = web::block(move || {
        let store = Store::open_limited(&url, query_timeout)?;
        store.summarise_if_missing().map_err(|e| e.to_string())?;
        Ok::<_, String>(store)
    })
    .await
    .map_err(|e| e.to_string())??;
    crate::search::set_cursor_key(store.secret("cursor-key")?.as_bytes());
    let key = crate::auth::token::ServerKey::load(&store)?;
    let started = crate::fhir::instant::now();
    if cfg.demo {
        let base = format!("http://{}", cfg.listen);
        let demo_store = store.clone();
        let loaded = web::block(move || load_demo(&demo_store, &base))
            .await
            .map_err(|e| e.to_string())??;
        match loaded {
            Some(n) => eprintln!("sp-hub: demo data loaded ({n} resources)"),
            None => eprintln!("sp-hub: demo data already present (0 resources loaded)"),
        }
        let dir = std::path::Path::new(DEMO_CLIENTS_DIR);
        demo_clients(&store, dir)?;
        eprintln!(
            "sp-hub: demo client keys written to {}/ (see README, \"Getting a token\")",
            dir.display()
        );
    }
    let worker_store = store.clone();
    let heartbeat = crate::notify::deliver::heartbeat();
    let state = web::Data::new(AppState {
        notify_heartbeat: heartbeat.clone(),
        store,
        key,
        token_lifetime: cfg.token_lifetime,
        rate_limit: cfg.rate_limit,
        jwks: crate::auth::jwks_url::Fetcher::new(cfg.allow_private_jwks_urls),
        public_url: cfg.public_url.clone(),
        max_body_bytes: cfg.max_body_bytes,
        max_bundle_entries: cfg.max_bundle_entries,
        capability_statement: api::capability_statement(&started, registry),
        dashboard: crate::dashboard::Settings {
            min_group: cfg.dashboard_min_group,
        },
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            // The last wrap runs first: every request gets its id, then
            // is authenticated, then routed.
            .wrap(actix_web::middleware::from_fn(api::auth::authenticate))
            .wrap_fn(api::request_id)
            .configure(api::configure)
    })
    .bind(&cfg.listen)
    .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    for addr in server.addrs() {
        println!("sp-hub listening on http://{addr}");
    }
    // Notifications name resources by this server's URL.
    let base = match (&cfg.public_url, server.addrs().first()) {
        (Some(url), _) => url.clone(),
        (None, Some(addr)) => format!("http://{addr}"),
        (None, None) => format!("http://{}", cfg.listen),
    };
    let worker = crate::notify::deliver::Worker::start(worker_store, base, heartbeat);
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let served = server.run().await.map_err(|e| e.to_string());
    // In-flight requests are done: the worker finishes its deliveries.
    worker.stop().await;
    served
}

/// Where `--demo` writes its clients' private keys (relative to the
/// working directory).
const DEMO_CLIENTS_DIR: &str = "demo-clients";

/// The demo clients, one for each role: id, organisation, role, scopes.
const DEMO_CLIENTS: &[(&str, &str, &str, &str)] = &[
    ("demo-admin", "Organization/org-icb", "admin", "system/*.*"),
    (
        "demo-gp",
        "Organization/org-practice-mill-lane",
        "gp",
        "system/*.cruds",
    ),
    ("demo-pcn", "Organization/org-pcn", "pcn", "system/*.cruds"),
    (
        "demo-vcs",
        "Organization/org-vcs-wellbeing",
        "vcs",
        "system/Task.rus system/ServiceRequest.rs system/Patient.rs system/Consent.rs \
         system/Encounter.crus system/Procedure.crus system/Observation.crus \
         system/Organization.rs system/Practitioner.rs system/PractitionerRole.rs \
         system/Basic.crus system/ConceptMap.crus",
    ),
];

/// Registers the demo clients with fresh ES384 keys (replacing any earlier
/// registration, whose private keys may be gone) and writes each private
/// key to `dir/<id>.key.pem`, readable by its owner only.
fn demo_clients(store: &Store, dir: &std::path::Path) -> Result<(), String> {
    use p384::pkcs8::{EncodePrivateKey as _, LineEnding};
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (id, org, role, scope) in DEMO_CLIENTS {
        let key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = key.verifying_key().to_encoded_point(false);
        let b64 = |b: &[u8]| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        let jwks = serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-384", "kid": format!("{id}-key-1"), "use": "sig", "alg": "ES384",
            "x": b64(point.x().expect("uncompressed")), "y": b64(point.y().expect("uncompressed")),
        }]});
        let jwks = jwks.to_string();
        let row = crate::auth::registration(id, org, role, scope, crate::auth::Keys::Jwks(&jwks))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the demo key: {e}"))?;
        let path = dir.join(format!("{id}.key.pem"));
        write_private(&path, pem.as_bytes())?;
        store.put_client(&row)?;
    }
    Ok(())
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Loads the demo PCN through the same code path as `POST /`, as one
/// transaction. An update writes a new version even when nothing changed,
/// so the Bundle is loaded only while its PCN Organization does not exist
/// yet: starting with `--demo` again changes nothing. Returns how many
/// resources were written, or `None` when the data was already there.
pub fn load_demo(store: &Store, base: &str) -> Result<Option<usize>, String> {
    let bundle: serde_json::Value =
        serde_json::from_str(DEMO_PCN).map_err(|e| format!("demo-pcn.json: {e}"))?;
    let entries = bundle["entry"].as_array().map_or(&[][..], Vec::as_slice);
    let pcn = entries
        .iter()
        .map(|e| &e["resource"])
        .find(|r| {
            r["resourceType"] == "Organization"
                && r["type"][0]["coding"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|c| c["code"] == "pcn"))
        })
        .and_then(|r| r["id"].as_str())
        .ok_or("demo-pcn.json: no PCN Organization")?;
    if store
        .read("Organization", pcn)
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(None);
    }
    let body = crate::interactions::Body {
        bytes: DEMO_PCN.as_bytes(),
        format: crate::fhir::resource::Format::Json,
    };
    crate::interactions::bundle(
        &crate::auth::Principal::hub(),
        store,
        body,
        base,
        usize::MAX,
    )
    .map_err(|e| format!("loading the demo data failed: {e}"))?;
    store.analyze()?;
    Ok(Some(entries.len()))
}
