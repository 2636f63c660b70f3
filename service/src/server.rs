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
    /// Load the example PCN (`fhir-profiles/examples/demo-pcn.json`) once
    /// the database is open.
    pub demo: bool,
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
    let registry = crate::search::registry::load()?;
    crate::profiles::load()?;
    let url = cfg.database_url.clone();
    let store = web::block(move || Store::open(&url))
        .await
        .map_err(|e| e.to_string())??;
    crate::search::set_cursor_key(store.secret("cursor-key")?.as_bytes());
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
    }
    let state = web::Data::new(AppState {
        store,
        max_body_bytes: cfg.max_body_bytes,
        max_bundle_entries: cfg.max_bundle_entries,
        capability_statement: api::capability_statement(&started, registry),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(api::request_id)
            .configure(api::configure)
    })
    .bind(&cfg.listen)
    .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    for addr in server.addrs() {
        println!("sp-hub listening on http://{addr}");
    }
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    server.run().await.map_err(|e| e.to_string())
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
    crate::interactions::bundle(store, body, base, usize::MAX)
        .map_err(|e| format!("loading the demo data failed: {e}"))?;
    Ok(Some(entries.len()))
}
