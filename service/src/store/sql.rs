//! Statements built as text at run time (searches, multi-row inserts),
//! every value bound, never spliced into the text, on either backend.

use diesel::sql_types::{Double, Text};
use diesel::RunQueryDsl;

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

pub(super) enum Bind {
    Text(String),
    Double(f64),
}

pub(super) struct Sql {
    pub(super) text: String,
    pub(super) binds: Vec<Bind>,
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
        if self.numbered {
            let n = self.binds.len();
            self.text.push_str(&format!("${n}"));
        } else {
            self.text.push('?');
        }
        self
    }

    pub(super) fn text(&mut self, s: &str) -> &mut Self {
        self.bind(Bind::Text(s.to_string()))
    }

    pub(super) fn double(&mut self, v: f64) -> &mut Self {
        self.bind(Bind::Double(v))
    }

    /// Runs a statement that returns no rows.
    pub(super) fn execute(&self, conn: &mut AnyConnection) -> diesel::QueryResult<usize> {
        macro_rules! run {
            ($c:expr, $db:ty) => {{
                let mut q = diesel::sql_query(self.text.clone()).into_boxed::<$db>();
                for b in &self.binds {
                    q = match b {
                        Bind::Text(s) => q.bind::<Text, _>(s.clone()),
                        Bind::Double(v) => q.bind::<Double, _>(*v),
                    };
                }
                q.execute($c)
            }};
        }
        match conn {
            AnyConnection::Postgresql(c) => run!(c, diesel::pg::Pg),
            AnyConnection::Sqlite(c) => run!(c, diesel::sqlite::Sqlite),
        }
    }
}

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
        let mut q = diesel::sql_query($sql.text.clone()).into_boxed::<$db>();
        for b in &$sql.binds {
            q = match b {
                Bind::Text(s) => q.bind::<diesel::sql_types::Text, _>(s.clone()),
                Bind::Double(v) => q.bind::<diesel::sql_types::Double, _>(*v),
            };
        }
        q.load::<$row>($c).map_err(db_error)
    }};
}
pub(super) use load;
