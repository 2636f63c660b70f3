//! Statements built as text at run time (searches, multi-row inserts),
//! every value bound, never spliced into the text, on either backend.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Mutex;

use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Double, Text, Untyped};
use diesel::{QueryResult, RunQueryDsl};

use super::pool::AnyConnection;

/// A row of `SELECT COUNT(*) AS n` (or any `… AS n` number).
#[derive(diesel::QueryableByName)]
pub(super) struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) n: i64,
}

/// A row of `SELECT … res_id`.
#[derive(diesel::QueryableByName)]
pub(super) struct Id {
    #[diesel(sql_type = Text)]
    pub(super) res_id: String,
}

#[derive(Clone)]
pub(super) enum Bind {
    Text(String),
    Double(f64),
}

pub(super) struct Sql {
    /// The statement so far. Only `push` and `bind` change it, so each
    /// placeholder stays where `marks` says.
    text: String,
    binds: Vec<Bind>,
    /// Where in `text` each bind's placeholder is.
    marks: Vec<Range<usize>>,
    /// PostgreSQL numbers its placeholders (`$1`), SQLite does not (`?`).
    pub(super) numbered: bool,
    /// Table aliases handed out so far (`alias`).
    aliases: usize,
    /// Whose view a search statement takes: every resource it reaches
    /// through a chain or `_has` must be in it too.
    pub(super) access: Option<crate::auth::access::OrgAccess>,
}

impl Sql {
    pub(super) fn new(conn: &AnyConnection) -> Sql {
        Sql {
            text: String::new(),
            binds: vec![],
            marks: vec![],
            numbered: matches!(conn, AnyConnection::Postgresql(_)),
            aliases: 0,
            access: None,
        }
    }

    /// A table alias not used before in this statement (`r0` is the
    /// outermost resource row, taken by the caller).
    pub(super) fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    pub(super) fn push(&mut self, s: &str) -> &mut Self {
        self.text.push_str(s);
        self
    }

    pub(super) fn bind(&mut self, b: Bind) -> &mut Self {
        self.binds.push(b);
        let start = self.text.len();
        if self.numbered {
            let n = self.binds.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self.marks.push(start..self.text.len());
        self
    }

    pub(super) fn text(&mut self, s: &str) -> &mut Self {
        self.bind(Bind::Text(s.to_string()))
    }

    pub(super) fn double(&mut self, v: f64) -> &mut Self {
        self.bind(Bind::Double(v))
    }

    /// A bound text, or `NULL`.
    pub(super) fn opt_text(&mut self, s: &Option<String>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.push("NULL"),
        }
    }

    /// Runs a statement that returns no rows.
    pub(super) fn execute(&self, conn: &mut AnyConnection) -> diesel::QueryResult<usize> {
        let q = self.statement();
        match conn {
            AnyConnection::Postgresql(c) => q.execute(c),
            AnyConnection::Sqlite(c) => q.execute(c),
        }
    }

    /// The statement to run, prepared once per connection when its text
    /// may be (`reusable`).
    pub(super) fn statement(&self) -> Statement<'_> {
        Statement {
            sql: self,
            reuse: self.binds.len() <= MAX_REUSED_BINDS && reusable(&self.text),
        }
    }
}

/// Distinct statement texts prepared once per connection and reused.
/// SQLite then compiles a statement once, PostgreSQL parses it once (and
/// still plans each run for its values; see `pool.rs`). diesel's statement
/// cache never forgets, each prepared statement holds memory in every
/// connection, and clients can make any number of distinct search texts:
/// so only the first `MAX_REUSED` texts the server sees are reused, the
/// hot ones (the poll, reads, access checks) come early and recur, and long
/// statements (id lists, whose length varies, multi-row inserts) are left
/// out, since compiling them is a small part of their cost.
const MAX_REUSED: usize = 500;
const MAX_REUSED_BINDS: usize = 64;

fn reusable(text: &str) -> bool {
    static TEXTS: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
    let key = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    };
    let Ok(mut texts) = TEXTS.lock() else {
        return false;
    };
    let texts = texts.get_or_insert_with(HashSet::new);
    texts.contains(&key) || (texts.len() < MAX_REUSED && texts.insert(key))
}

/// A `Sql` as a diesel query. Unlike `sql_query`, it lets diesel prepare
/// the statement once per connection (`Sql::statement` decides).
pub(super) struct Statement<'a> {
    sql: &'a Sql,
    reuse: bool,
}

impl QueryId for Statement<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement<'_> {
    type SqlType = Untyped;
}

impl<C: diesel::Connection> RunQueryDsl<C> for Statement<'_> {}

macro_rules! fragment {
    ($db:ty) => {
        impl QueryFragment<$db> for Statement<'_> {
            fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $db>) -> QueryResult<()> {
                if !self.reuse {
                    out.unsafe_to_cache_prepared();
                }
                // diesel writes each placeholder itself as the bind goes in.
                let mut at = 0;
                for (mark, bind) in self.sql.marks.iter().zip(&self.sql.binds) {
                    out.push_sql(&self.sql.text[at..mark.start]);
                    match bind {
                        Bind::Text(s) => out.push_bind_param::<Text, _>(s)?,
                        Bind::Double(v) => out.push_bind_param::<Double, _>(v)?,
                    }
                    at = mark.end;
                }
                out.push_sql(&self.sql.text[at..]);
                Ok(())
            }
        }
    };
}
fragment!(diesel::pg::Pg);
fragment!(diesel::sqlite::Sqlite);

/// Runs `sql` on whichever backend `conn` is, loading rows of type `$row`.
macro_rules! load {
    ($conn:expr, $sql:expr, $row:ty) => {
        match $conn {
            AnyConnection::Postgresql(c) => load!(@run c, $sql, $row, diesel::pg::Pg),
            AnyConnection::Sqlite(c) => load!(@run c, $sql, $row, diesel::sqlite::Sqlite),
        }
    };
    (@run $c:expr, $sql:expr, $row:ty, $db:ty) => {{
        use diesel::RunQueryDsl as _;
        $sql.statement().load::<$row>($c).map_err(db_error)
    }};
}
pub(super) use load;
