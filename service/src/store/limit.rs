//! A time limit on every SQL statement the server runs, so that one costly
//! search cannot hold a connection (on SQLite, perhaps the only writer) for
//! long, and the client learns so instead of waiting.
//!
//! PostgreSQL has `statement_timeout`, set on each pooled connection.
//! SQLite has no such setting, and diesel does not hand out the raw
//! connection handle. But SQLite calls every registered auto-extension with
//! the handle of each connection it opens, on the opening thread: ours
//! installs a trace hook that notes when each statement starts and a
//! progress handler that interrupts the statement once it has run past the
//! limit. Both run on the thread stepping the statement, so the start time
//! lives in a thread-local, and the limit travels as the handler's argument.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void};
use std::sync::Once;
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

/// Virtual-machine instructions between two looks at the clock: a few
/// microseconds of work, so the check costs nothing measurable.
const CHECK_EVERY: c_int = 1000;

thread_local! {
    /// The limit in ms for the connection this thread is opening (0: none).
    static OPENING: Cell<u64> = const { Cell::new(0) };
    /// When the statement this thread is stepping started.
    static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Set while this thread runs work the limit must not stop.
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

/// Opens a SQLite connection (through `open`) whose statements are stopped
/// after `limit`.
pub(crate) fn open_sqlite<T>(limit: Option<Duration>, open: impl FnOnce() -> T) -> T {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `install` has the signature SQLite expects of an
        // extension entry point and stays valid for the process.
        unsafe { ffi::sqlite3_auto_extension(Some(install)) };
    });
    let ms = limit.map_or(0, |d| d.as_millis().max(1) as u64);
    OPENING.with(|o| o.set(ms));
    let conn = open();
    OPENING.with(|o| o.set(0));
    conn
}

/// Runs `f` with no statement limit on this thread's SQLite connections
/// (migrations, backups: long by nature, and not a client's request).
pub(crate) fn exempt<T>(f: impl FnOnce() -> T) -> T {
    let before = EXEMPT.with(|e| e.replace(true));
    let out = f();
    EXEMPT.with(|e| e.set(before));
    out
}

/// The auto-extension: called by SQLite on the thread opening `db`.
unsafe extern "C" fn install(
    db: *mut ffi::sqlite3,
    _err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let ms = OPENING.with(|o| o.get());
    if ms > 0 {
        // SAFETY: `db` is the connection being opened; the callbacks are
        // plain functions, and the limit is passed by value as the pointer.
        unsafe {
            ffi::sqlite3_trace_v2(
                db,
                ffi::SQLITE_TRACE_STMT as c_uint,
                Some(started),
                std::ptr::null_mut(),
            );
            ffi::sqlite3_progress_handler(
                db,
                CHECK_EVERY,
                Some(past_limit),
                ms as usize as *mut c_void,
            );
        }
    }
    ffi::SQLITE_OK
}

/// Trace hook: a statement begins (also at each trigger it fires, which
/// only makes the limit more lenient).
unsafe extern "C" fn started(_: c_uint, _: *mut c_void, _: *mut c_void, _: *mut c_void) -> c_int {
    STARTED.with(|s| s.set(Some(Instant::now())));
    0
}

/// Progress handler: non-zero interrupts the statement (SQLITE_INTERRUPT).
unsafe extern "C" fn past_limit(limit_ms: *mut c_void) -> c_int {
    if EXEMPT.with(|e| e.get()) {
        return 0;
    }
    let limit = Duration::from_millis(limit_ms as usize as u64);
    STARTED
        .with(|s| s.get())
        .is_some_and(|t| t.elapsed() > limit) as c_int
}

/// Whether the database stopped a statement for running past the limit.
pub(crate) fn is_timeout(e: &diesel::result::Error) -> bool {
    match e {
        diesel::result::Error::DatabaseError(_, info) => {
            let m = info.message();
            // SQLite's text for SQLITE_INTERRUPT; PostgreSQL's for SQLSTATE
            // 57014 raised by statement_timeout (diesel exposes no code).
            m == "interrupted" || m.contains("statement timeout")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use diesel::prelude::*;

    use super::exempt;
    use crate::fhir::outcome::FhirError;
    use crate::store::pool::{db_error, AnyConnection};
    use crate::store::Store;

    /// A statement that runs for seconds on either backend, whatever the
    /// data: a million-row recursive count, or a sleep.
    fn slow(conn: &mut AnyConnection, rows: u64) -> QueryResult<usize> {
        match conn {
            AnyConnection::Sqlite(c) => diesel::sql_query(format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
                 SELECT count(*) FROM n"
            ))
            .execute(c),
            AnyConnection::Postgresql(c) => {
                diesel::sql_query(format!("SELECT pg_sleep({})", rows as f64 / 1e6)).execute(c)
            }
        }
    }

    fn quick(conn: &mut AnyConnection) -> QueryResult<usize> {
        match conn {
            AnyConnection::Sqlite(c) => diesel::sql_query("SELECT 1").execute(c),
            AnyConnection::Postgresql(c) => diesel::sql_query("SELECT 1").execute(c),
        }
    }

    fn stops_long_statements(url: &str) {
        let store = Store::open_limited(url, Some(Duration::from_millis(50))).expect("open");
        let mut reader = store.reader().expect("reader");
        let mut writer = store.writer().expect("writer");
        for conn in [&mut *reader, &mut *writer] {
            let began = Instant::now();
            let err = slow(conn, 100_000_000).expect_err("a long statement is stopped");
            assert!(
                began.elapsed() < Duration::from_secs(5),
                "stopped at about the limit"
            );
            let err = db_error(err);
            assert!(matches!(err, FhirError::QueryTimeout(_)), "{err:?}");
            assert_eq!((err.status(), err.retry_after()), (503, Some(5)));
            assert_eq!(err.to_outcome()["issue"][0]["code"], "too-costly");
            // The connection is fine afterwards, and short statements pass.
            quick(conn).expect("a short statement runs");
        }
        drop((reader, writer));
        // A write transaction stopped midway is rolled back, and the next
        // writer (on SQLite, the next to take the write turn) commits.
        let mut w = store.writer().expect("writer");
        let stopped = w.transaction(|c| {
            quick(c)?;
            slow(c, 100_000_000)
        });
        assert!(matches!(
            db_error(stopped.expect_err("stopped")),
            FhirError::QueryTimeout(_)
        ));
        drop(w);
        let mut w = store.writer().expect("writer");
        w.transaction(quick).expect("the next transaction commits");
        // A store opened without a limit lets the same statement finish.
        let unlimited = Store::open(url).expect("open");
        slow(&mut unlimited.reader().expect("reader"), 300_000).expect("no limit");
    }

    #[test]
    fn sqlite_statements_stop_at_the_limit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("limit.db").to_string_lossy().into_owned();
        stops_long_statements(&url);
        // Migrations and backups are exempt, however short the limit.
        let store = Store::open_limited(&url, Some(Duration::from_millis(1))).expect("open");
        exempt(|| slow(&mut store.reader().expect("reader"), 1_000_000)).expect("exempt");
        assert!(slow(&mut store.reader().expect("reader"), 1_000_000).is_err());
    }

    #[test]
    fn postgres_statements_stop_at_the_limit() {
        let admin = std::env::var("SP_HUB_TEST_PG_URL")
            .expect("SP_HUB_TEST_PG_URL names the PostgreSQL server (tests/run.sh sets it)");
        let name = format!("sp_hub_limit_{}", uuid::Uuid::new_v4().simple());
        let mut maint = diesel::PgConnection::establish(&admin).expect("connect");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut maint)
            .expect("create");
        let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
        stops_long_statements(&format!("{base}/{name}"));
        diesel::sql_query(format!("DROP DATABASE {name} WITH (FORCE)"))
            .execute(&mut maint)
            .expect("drop");
    }
}
