//! Connection pools and migrations for both backends.
//!
//! Work runs on blocking threads (`Store::run`), never on actix workers.
//! SQLite allows one writer at a time; rather than let writers fight over
//! the file lock ("database is locked"), a writer first takes this
//! process's write turn (a mutex), then any connection of the one pool
//! (WAL lets reads run beside it). Any connection rather than a dedicated
//! one: SQLite empties a connection's page cache when it begins a read after
//! another connection's commit, and every request commits (its audit
//! record). With one pool handing out the connection returned last, a
//! request's read and its audit run on the same connection, whose cache
//! then survives to the next request. PostgreSQL uses one pool for both and
//! lets row locks and the unique (type, id, version) key arbitrate.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use parking_lot::{Mutex, RawMutex};

use crate::fhir::outcome::{FhirError, FhirResult};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// Opens connections of the backend the URL names, and only that one.
#[derive(Debug)]
pub(crate) struct Manager {
    url: String,
    backend: Backend,
    /// The longest a statement may run (`limit.rs`); `None`: no limit.
    query_timeout: Option<Duration>,
}

impl ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<AnyConnection, r2d2::Error> {
        match self.backend {
            Backend::Postgres => {
                let mut c = diesel::PgConnection::establish(&self.url)
                    .map_err(r2d2::Error::ConnectionError)?;
                c.batch_execute(&statement_timeout(self.query_timeout))
                    .map_err(r2d2::Error::QueryError)?;
                // Statements are prepared once per connection (`sql.rs`), but
                // each run is planned for its values: a generic plan cannot
                // tell how selective a search's resource type, parameter and
                // values are, and measured fifty times slower on the access
                // checks than the plan for the values at hand.
                c.batch_execute("SET plan_cache_mode = force_custom_plan")
                    .map_err(r2d2::Error::QueryError)?;
                Ok(AnyConnection::Postgresql(c))
            }
            Backend::Sqlite => {
                let path = self.url.strip_prefix("sqlite://").unwrap_or(&self.url);
                let mut c = super::limit::open_sqlite(self.query_timeout, || {
                    diesel::SqliteConnection::establish(path)
                })
                .map_err(r2d2::Error::ConnectionError)?;
                // The busy timeout comes first: it covers other connections
                // and processes (e.g. `sp-hub migrate`) on the file, and the
                // journal-mode statement after it must wait for their locks
                // too, not fail with "database is locked". WAL: readers never
                // block the writer; NORMAL sync is durable across
                // application crashes in WAL mode.
                // No memory map: a connection that starts a read after
                // another connection's commit (under load, nearly every
                // request: each commits its audit record) unmaps the whole
                // file and faults it back in. Measured: 35-40% of a search's
                // CPU at 500 MB with a dedicated writer; with this pool,
                // 10-15% fewer concurrent reads at 10k referrals for 0.2 ms
                // off a sequential poll at 1M. pread from the OS cache plus
                // a 32 MiB page cache per connection (SQLite's default is
                // 2 MiB; 256 MiB measured no faster) is the better trade.
                c.batch_execute(
                    "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
                     PRAGMA mmap_size = 0; PRAGMA cache_size = -32768;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(AnyConnection::Sqlite(c))
            }
        }
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), r2d2::Error> {
        conn.batch_execute("SELECT 1")
            .map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, _conn: &mut AnyConnection) -> bool {
        false
    }
}

type AnyPool = Pool<Manager>;
pub(crate) type Conn = PooledConnection<Manager>;

/// A connection that may write. On SQLite it holds the write turn for as
/// long as it lives; the connection goes back to the pool first (fields drop
/// in order), then the turn.
pub(crate) struct Writer {
    conn: Conn,
    _turn: Option<parking_lot::lock_api::ArcMutexGuard<RawMutex, ()>>,
}

impl Deref for Writer {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite only: one writer at a time in this process.
    write_turn: Option<Arc<Mutex<()>>>,
    backend: Backend,
}

impl Store {
    /// Opens the database, running pending migrations first, with no
    /// limit on how long a statement may run (command-line tools).
    pub fn open(url: &str) -> Result<Store, String> {
        Store::open_limited(url, None)
    }

    /// As `open`, with every statement stopped after `query_timeout`
    /// (`FhirError::QueryTimeout`), migrations and backups excepted.
    pub fn open_limited(url: &str, query_timeout: Option<Duration>) -> Result<Store, String> {
        let backend = Backend::of_url(url);
        let manager = |url: &str| Manager {
            url: url.to_string(),
            backend,
            query_timeout,
        };
        // A checkout runs `SELECT 1` to find a dead connection, which only
        // a network can make: PostgreSQL keeps the check, SQLite (a file)
        // skips it. On SQLite a writer checks out inside the write turn, so
        // the check would lengthen every writer's turn.
        let build = |size: u32| {
            Pool::builder()
                .max_size(size)
                .test_on_check_out(backend == Backend::Postgres)
                .connection_timeout(Duration::from_secs(30))
                .build(manager(url))
                .map_err(|e| format!("cannot open database: {e}"))
        };
        let (pool, write_turn) = match backend {
            Backend::Sqlite => {
                if url.contains(":memory:") || url.contains("mode=memory") {
                    return Err(
                        "an in-memory SQLite database is private to one connection, \
                         and the server uses several; give a file path"
                            .into(),
                    );
                }
                // Create the file, its WAL mode and schema through one
                // connection before the pool opens the others at once.
                let mut conn = manager(url).connect().map_err(|e| e.to_string())?;
                run_migrations(&mut conn, None)?;
                drop(conn);
                // Eight readers at a time, plus the writer.
                (build(9)?, Some(Arc::new(Mutex::new(()))))
            }
            Backend::Postgres => {
                let pool = build(16)?;
                let mut conn = pool.get().map_err(|e| e.to_string())?;
                run_migrations(&mut conn, query_timeout)?;
                (pool, None)
            }
        };
        Ok(Store {
            pool,
            write_turn,
            backend,
        })
    }

    /// The secret named `name`, created (random) by whichever replica asks
    /// first; every replica then reads the same one.
    pub fn secret(&self, name: &str) -> Result<String, String> {
        self.secret_or(name, || {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        })
    }

    /// As `secret`, with the first value made by `fresh` (e.g. a key pair).
    pub fn secret_or(&self, name: &str, fresh: impl FnOnce() -> String) -> Result<String, String> {
        use super::schema::server_secrets;
        use diesel::sql_types::Text;
        let fresh = fresh();
        let mut conn = self.writer().map_err(|e| e.to_string())?;
        let inserted = match &mut *conn {
            AnyConnection::Postgresql(c) => diesel::sql_query(
                "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind::<Text, _>(name)
            .bind::<Text, _>(&fresh)
            .execute(c),
            AnyConnection::Sqlite(c) => diesel::sql_query(
                "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            )
            .bind::<Text, _>(name)
            .bind::<Text, _>(&fresh)
            .execute(c),
        };
        inserted.map_err(|e| format!("cannot store the {name} secret: {e}"))?;
        server_secrets::table
            .find(name)
            .select(server_secrets::value)
            .first(&mut *conn)
            .map_err(|e| format!("cannot read the {name} secret: {e}"))
    }

    /// Ready to serve: a connection answers and no migration is pending
    /// (a replica started by an older binary must not serve a newer schema's
    /// traffic, nor the reverse).
    pub fn ready(&self) -> FhirResult<()> {
        let mut conn = self.reader()?;
        let pending = match &mut *conn {
            AnyConnection::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
            AnyConnection::Postgresql(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
        }
        .map_err(|e| FhirError::Unavailable(format!("the database is not available: {e}")))?;
        if pending {
            return Err(FhirError::Unavailable(
                "the database schema has migrations this server has not applied".into(),
            ));
        }
        Ok(())
    }

    /// Refreshes PostgreSQL's planner statistics (`ANALYZE`) after a bulk
    /// load. Until autovacuum reaches freshly filled tables (a minute or
    /// more), PostgreSQL plans the access predicates blind: seconds where
    /// milliseconds would do. SQLite's plans do not rest on statistics (the
    /// server never gathers them), so there it does nothing.
    pub fn analyze(&self) -> Result<(), String> {
        let mut conn = self.writer().map_err(|e| e.to_string())?;
        match &mut *conn {
            AnyConnection::Postgresql(c) => c
                .transaction(|c| c.batch_execute("SET LOCAL statement_timeout = 0; ANALYZE"))
                .map_err(|e| format!("ANALYZE failed: {e}")),
            AnyConnection::Sqlite(_) => Ok(()),
        }
    }

    /// Copies a SQLite database, consistently, while it is in use
    /// (`VACUUM INTO`: one read transaction, a compact new file). The file
    /// must not exist yet. PostgreSQL has pg_dump for this.
    pub fn backup_to(&self, path: &str) -> Result<(), String> {
        if std::path::Path::new(path).exists() {
            return Err(format!("{path} exists already; back up to a new file"));
        }
        let mut conn = self.reader().map_err(|e| e.to_string())?;
        match &mut *conn {
            AnyConnection::Sqlite(c) => super::limit::exempt(|| {
                diesel::sql_query("VACUUM INTO ?")
                    .bind::<diesel::sql_types::Text, _>(path)
                    .execute(c)
            })
            .map(drop)
            .map_err(|e| format!("the backup failed: {e}")),
            AnyConnection::Postgresql(_) => Err(
                "sp-hub backup is for SQLite; back up PostgreSQL with pg_dump (deploy/README.md, \"Backups\")"
                    .into(),
            ),
        }
    }

    /// (connections, idle ones) of the pool.
    pub fn pool_state(&self) -> (u32, u32) {
        let s = self.pool.state();
        (s.connections, s.idle_connections)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn reader(&self) -> FhirResult<Conn> {
        self.pool.get().map_err(unavailable)
    }

    /// A connection for a write transaction; on SQLite, once this process's
    /// other writer (if any) is done. Never ask for a second one while
    /// holding one.
    pub(crate) fn writer(&self) -> FhirResult<Writer> {
        let turn = self.write_turn.as_ref().map(Mutex::lock_arc);
        Ok(Writer {
            conn: self.pool.get().map_err(unavailable)?,
            _turn: turn,
        })
    }

    /// Runs blocking store work off the async workers.
    pub async fn run<T, F>(&self, f: F) -> FhirResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> FhirResult<T> + Send + 'static,
    {
        let store = self.clone();
        actix_web::web::block(move || f(&store))
            .await
            .map_err(|e| FhirError::Internal(format!("blocking task failed: {e}")))?
    }
}

fn unavailable(e: r2d2::PoolError) -> FhirError {
    tracing::error!(error = %e, "database connection unavailable");
    FhirError::Unavailable("the database is not available; try again".into())
}

/// Applies pending migrations without the statement limit (a migration
/// may rewrite a large table), restoring `query_timeout` afterwards on the
/// PostgreSQL connection, which returns to the pool.
fn run_migrations(conn: &mut AnyConnection, query_timeout: Option<Duration>) -> Result<(), String> {
    let done = match conn {
        AnyConnection::Sqlite(c) => {
            super::limit::exempt(|| c.run_pending_migrations(SQLITE_MIGRATIONS).map(|v| v.len()))
        }
        AnyConnection::Postgresql(c) => (|| {
            c.batch_execute(&statement_timeout(None))?;
            let n = c.run_pending_migrations(POSTGRES_MIGRATIONS)?.len();
            c.batch_execute(&statement_timeout(query_timeout))?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(n)
        })(),
    }
    .map_err(|e| format!("migration failed: {e}"))?;
    if done > 0 {
        tracing::info!(applied = done, "database migrations applied");
    }
    Ok(())
}

/// `SET statement_timeout` for a PostgreSQL session (0: no limit).
fn statement_timeout(limit: Option<Duration>) -> String {
    format!(
        "SET statement_timeout = {}",
        limit.map_or(0, |d| d.as_millis().max(1))
    )
}

/// Maps a database error to what the client may see; details are logged.
pub(crate) fn db_error(e: diesel::result::Error) -> FhirError {
    if super::limit::is_timeout(&e) {
        tracing::warn!(error = %e, "statement stopped at the time limit");
        return FhirError::QueryTimeout(
            "the query ran longer than this server allows; narrow the search (fewer \
             parameters matching many resources, a smaller _count or fewer _include) or try later"
                .into(),
        );
    }
    tracing::error!(error = %e, "database error");
    FhirError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::Store;

    #[test]
    fn an_in_memory_sqlite_database_is_refused_by_name() {
        for url in [":memory:", "file:hub?mode=memory&cache=shared"] {
            let err = Store::open(url).err().expect("refused");
            assert!(
                err.contains("in-memory") && err.contains("file path"),
                "{err}"
            );
        }
    }
}
