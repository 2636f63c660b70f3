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
}

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
    let state = web::Data::new(AppState {
        store,
        max_body_bytes: cfg.max_body_bytes,
        max_bundle_entries: cfg.max_bundle_entries,
        capability_statement: api::capability_statement(&started, registry),
    });
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(api::configure))
            .bind(&cfg.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    for addr in server.addrs() {
        println!("sp-hub listening on http://{addr}");
    }
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    server.run().await.map_err(|e| e.to_string())
}
