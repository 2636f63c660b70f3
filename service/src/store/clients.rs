//! The client registry and the record of client assertions already used.

use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::pool::Store;
use super::schema::{assertion_jti, clients};

/// One registered client, as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = clients)]
pub struct ClientRow {
    pub id: String,
    /// `Organization/ID`: who the client acts for.
    pub organization: String,
    pub role: String,
    /// Space-separated SMART scopes the client may be granted.
    pub scopes: String,
    /// The client's JSON Web Key Set (public keys only).
    pub jwks: String,
    pub disabled: bool,
    pub created: String,
    /// Where the client publishes its JWKS, instead of `jwks`.
    pub jwks_url: Option<String>,
}

impl Store {
    /// Registers a client; an id already taken is refused.
    pub fn add_client(&self, row: &ClientRow) -> Result<(), String> {
        let mut c = self.writer().map_err(|e| e.to_string())?;
        diesel::insert_into(clients::table)
            .values(row)
            .execute(&mut *c)
            .map(drop)
            .map_err(|e| match e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    format!("a client with id '{}' is already registered", row.id)
                }
                e => format!("cannot register the client: {e}"),
            })
    }

    /// Registers a client, or replaces the registration under its id.
    pub fn put_client(&self, row: &ClientRow) -> Result<(), String> {
        let mut c = self.writer().map_err(|e| e.to_string())?;
        c.transaction(|c| {
            diesel::delete(clients::table.find(&row.id)).execute(c)?;
            diesel::insert_into(clients::table).values(row).execute(c)
        })
        .map(drop)
        .map_err(|e| format!("cannot register the client: {e}"))
    }

    pub fn client(&self, id: &str) -> Result<Option<ClientRow>, String> {
        let mut c = self.reader().map_err(|e| e.to_string())?;
        clients::table
            .find(id)
            .select(ClientRow::as_select())
            .first(&mut c)
            .optional()
            .map_err(|e| e.to_string())
    }

    pub fn clients(&self) -> Result<Vec<ClientRow>, String> {
        let mut c = self.reader().map_err(|e| e.to_string())?;
        clients::table
            .order(clients::id)
            .select(ClientRow::as_select())
            .load(&mut c)
            .map_err(|e| e.to_string())
    }

    /// Disables a client: it gets no new token. Returns false when there is
    /// no such client.
    pub fn disable_client(&self, id: &str) -> Result<bool, String> {
        let mut c = self.writer().map_err(|e| e.to_string())?;
        diesel::update(clients::table.find(id))
            .set(clients::disabled.eq(true))
            .execute(&mut *c)
            .map(|n| n > 0)
            .map_err(|e| e.to_string())
    }

    /// Records a client assertion's `jti` until `expires` (Unix seconds).
    /// Returns false when the same client already used it: a replay.
    /// Expired records are dropped on the way, so the table stays small.
    pub fn use_jti(
        &self,
        client_id: &str,
        jti: &str,
        expires: i64,
        now: i64,
    ) -> Result<bool, String> {
        let mut c = self.writer().map_err(|e| e.to_string())?;
        diesel::delete(assertion_jti::table.filter(assertion_jti::expires.lt(now)))
            .execute(&mut *c)
            .map_err(|e| e.to_string())?;
        let inserted = diesel::insert_into(assertion_jti::table)
            .values((
                assertion_jti::client_id.eq(client_id),
                assertion_jti::jti.eq(jti),
                assertion_jti::expires.eq(expires),
            ))
            .execute(&mut *c);
        match inserted {
            Ok(_) => Ok(true),
            Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Store {
    /// Counts one request of `client_id` in the window starting at
    /// `window_start` (Unix seconds) and returns the window's count so far.
    /// A client's first request of a window also drops windows that ended
    /// long ago.
    pub fn count_request(&self, client_id: &str, window_start: i64) -> Result<i64, String> {
        use diesel::sql_types::{BigInt, Text};
        let mut conn = self.writer().map_err(|e| e.to_string())?;
        let sql = |numbered: bool| {
            let p = |n: usize| {
                if numbered {
                    format!("${n}")
                } else {
                    "?".into()
                }
            };
            format!(
                "INSERT INTO rate_counts (client_id, window_start, count) VALUES ({}, {}, 1) \
                 ON CONFLICT (client_id, window_start) DO UPDATE SET count = rate_counts.count + 1 \
                 RETURNING count AS n",
                p(1),
                p(2)
            )
        };
        let counted: Vec<super::sql::Count> = match &mut *conn {
            super::pool::AnyConnection::Postgresql(c) => diesel::sql_query(sql(true))
                .bind::<Text, _>(client_id)
                .bind::<BigInt, _>(window_start)
                .load(c),
            super::pool::AnyConnection::Sqlite(c) => diesel::sql_query(sql(false))
                .bind::<Text, _>(client_id)
                .bind::<BigInt, _>(window_start)
                .load(c),
        }
        .map_err(|e| e.to_string())?;
        let count = counted.first().map_or(1, |c| c.n);
        if count == 1 {
            use super::schema::rate_counts;
            diesel::delete(
                rate_counts::table.filter(rate_counts::window_start.lt(window_start - 600)),
            )
            .execute(&mut *conn)
            .map_err(|e| e.to_string())?;
        }
        Ok(count)
    }
}
