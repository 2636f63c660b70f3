//! What the scale benches share: a fresh database, the real server, a
//! client's access token, percentiles. Each bench does `mod common;` and
//! uses part of it.
#![allow(dead_code)]

pub mod announce;
pub mod client_token;
pub mod sql;

use sql::with_database;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sp_hub::store::Store;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(300);

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A database for a run: a SQLite file in a temporary directory, or a
/// fresh PostgreSQL database (`createdb --maintenance-db=URL`), removed on
/// drop unless kept.
pub struct Fresh {
    pub url: String,
    /// PostgreSQL: the maintenance URL and the database name, for dropdb.
    pub postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
    keep: bool,
}

impl Fresh {
    /// A new database named after `prefix`; with `keep = Some(n)` a fixed
    /// one for size `n` (`<tmp>/sp-hub-bench/sqlite-N.db` or `<prefix>_N`)
    /// that is left in place, and whether it was there already (loaded).
    pub fn new(
        postgres: Option<&str>,
        prefix: &str,
        keep: Option<usize>,
    ) -> Result<(Fresh, bool), String> {
        match (postgres, keep) {
            (None, Some(n)) => {
                let dir = std::env::temp_dir().join("sp-hub-bench");
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let path = dir.join(format!("sqlite-{n}.db"));
                let loaded = path.exists();
                let fresh = Fresh {
                    url: path.to_string_lossy().into_owned(),
                    postgres: None,
                    _dir: None,
                    keep: true,
                };
                Ok((fresh, loaded))
            }
            (None, None) => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{}-", prefix.replace('_', "-")))
                    .tempdir()
                    .map_err(|e| e.to_string())?;
                let url = dir.path().join("bench.db").to_string_lossy().into_owned();
                let fresh = Fresh {
                    url,
                    postgres: None,
                    _dir: Some(dir),
                    keep: false,
                };
                Ok((fresh, false))
            }
            (Some(admin), keep) => {
                let name = match keep {
                    Some(n) => format!("{prefix}_{n}"),
                    None => format!("{prefix}_{}", std::process::id()),
                };
                let out = Command::new("createdb")
                    .arg(format!("--maintenance-db={admin}"))
                    .arg(&name)
                    .output()
                    .map_err(|e| format!("cannot run createdb (is it on PATH?): {e}"))?;
                let stderr = String::from_utf8_lossy(&out.stderr);
                let loaded = keep.is_some() && stderr.contains("already exists");
                if !out.status.success() && !loaded {
                    return Err(format!("createdb {name} failed: {stderr}"));
                }
                let fresh = Fresh {
                    url: with_database(admin, &name),
                    postgres: Some((admin.to_string(), name)),
                    _dir: None,
                    keep: keep.is_some(),
                };
                Ok((fresh, loaded))
            }
        }
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if self.keep {
            println!("kept the database: {}", self.url);
            return;
        }
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

/// `sp-hub serve` on a database; killed and reaped on drop.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    pub fn start(database_url: &str) -> Result<Server, String> {
        let bin = env!("CARGO_BIN_EXE_sp-hub");
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                database_url,
                // Far above any bench's pace; the count is still written.
                "--rate-limit",
                "1000000000",
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
        // Built first, so that a server that never announces itself is
        // killed when this returns early.
        let mut server = Server {
            child,
            base: String::new(),
        };
        server.base = announce::base_url(stdout, STARTUP_TIMEOUT)?;
        Ok(server)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers a client of `role` for `org` with a key made here (in the
/// database at `store_url`) and returns an access token for `scope` from
/// the server at `base`.
pub async fn token(
    store_url: &str,
    base: &str,
    id: &str,
    org: &str,
    role: &str,
    scope: &str,
) -> Result<String, String> {
    let key = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let jwks = client_token::jwks("bench", &key)?;
    let row = sp_hub::auth::registration(id, org, role, scope, sp_hub::auth::Keys::Jwks(&jwks))?;
    Store::open(store_url)?.put_client(&row)?;
    client_token::request_token(&reqwest::Client::new(), base, id, "bench", &key, scope).await
}
