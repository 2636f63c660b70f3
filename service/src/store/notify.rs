//! The delivery state of subscriptions and the outbox of notifications
//! (`notify/`): written inside the transaction of the change they follow,
//! claimed and cleared by the delivery workers of every replica.

use diesel::prelude::*;

use super::pool::{db_error, AnyConnection, Store};
use super::schema::{outbox, subscriptions};
use super::Tx;
use crate::fhir::outcome::FhirResult;

/// One subscription's delivery state.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = subscriptions)]
pub struct SubscriptionRow {
    pub id: String,
    pub organization: String,
    pub role: String,
    pub res_type: String,
    pub criteria: String,
    pub endpoint: String,
    pub headers: String,
    pub full_resource: bool,
    pub secret: String,
    pub status: String,
    pub events: i64,
    pub failures: i32,
    pub next_attempt: String,
    pub leased_until: String,
    pub last_error: String,
}

/// One notification waiting for delivery.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub seq: i64,
    pub subscription_id: String,
    pub delivery_id: String,
    pub kind: String,
    pub event_number: i64,
    pub res_type: String,
    pub res_id: String,
    pub version: i32,
    pub created: String,
}

/// Statuses whose subscriptions still collect notifications: an `error`
/// one keeps them until it is requested again, so an outage loses nothing.
pub const COLLECTING: [&str; 3] = ["requested", "active", "error"];

impl Tx<'_> {
    pub fn subscription(&mut self, id: &str) -> FhirResult<Option<SubscriptionRow>> {
        subscriptions::table
            .find(id)
            .select(SubscriptionRow::as_select())
            .first(self.conn())
            .optional()
            .map_err(db_error)
    }

    /// Inserts or replaces a subscription's row.
    pub fn put_subscription(&mut self, row: &SubscriptionRow) -> FhirResult<()> {
        diesel::delete(subscriptions::table.find(&row.id))
            .execute(self.conn())
            .map_err(db_error)?;
        diesel::insert_into(subscriptions::table)
            .values(row)
            .execute(self.conn())
            .map(drop)
            .map_err(db_error)
    }

    /// Forgets a subscription and what it had not been sent yet.
    pub fn drop_subscription(&mut self, id: &str) -> FhirResult<()> {
        self.clear_outbox(id)?;
        diesel::delete(subscriptions::table.find(id))
            .execute(self.conn())
            .map(drop)
            .map_err(db_error)
    }

    pub fn clear_outbox(&mut self, id: &str) -> FhirResult<()> {
        diesel::delete(outbox::table.filter(outbox::subscription_id.eq(id)))
            .execute(self.conn())
            .map(drop)
            .map_err(db_error)
    }

    /// Subscriptions on `res_type` that collect notifications.
    pub fn subscriptions_on(&mut self, res_type: &str) -> FhirResult<Vec<SubscriptionRow>> {
        subscriptions::table
            .filter(subscriptions::res_type.eq(res_type))
            .filter(subscriptions::status.eq_any(COLLECTING))
            .order(subscriptions::id)
            .select(SubscriptionRow::as_select())
            .load(self.conn())
            .map_err(db_error)
    }

    pub fn has_pending_handshake(&mut self, id: &str) -> FhirResult<bool> {
        diesel::select(diesel::dsl::exists(
            outbox::table
                .filter(outbox::subscription_id.eq(id))
                .filter(outbox::kind.eq("handshake")),
        ))
        .get_result(self.conn())
        .map_err(db_error)
    }

    /// Puts a notification in the outbox. An event takes the subscription's
    /// next event number (the row update also orders concurrent writers
    /// notifying one subscription); a handshake carries the current count.
    pub fn enqueue(
        &mut self,
        subscription_id: &str,
        kind: &str,
        target: (&str, &str, i32),
    ) -> FhirResult<()> {
        if kind != "handshake" {
            diesel::update(subscriptions::table.find(subscription_id))
                .set(subscriptions::events.eq(subscriptions::events + 1))
                .execute(self.conn())
                .map_err(db_error)?;
        }
        let event_number: i64 = subscriptions::table
            .find(subscription_id)
            .select(subscriptions::events)
            .first(self.conn())
            .map_err(db_error)?;
        let (res_type, res_id, version) = target;
        diesel::insert_into(outbox::table)
            .values((
                outbox::subscription_id.eq(subscription_id),
                outbox::delivery_id.eq(uuid::Uuid::new_v4().to_string()),
                outbox::kind.eq(kind),
                outbox::event_number.eq(event_number),
                outbox::res_type.eq(res_type),
                outbox::res_id.eq(res_id),
                outbox::version.eq(version),
                outbox::created.eq(crate::fhir::instant::now()),
            ))
            .execute(self.conn())
            .map(drop)
            .map_err(db_error)
    }

    /// Records a subscription's new status (with the reason for `error`).
    pub fn set_subscription_status(
        &mut self,
        id: &str,
        status: &str,
        error: &str,
    ) -> FhirResult<()> {
        diesel::update(subscriptions::table.find(id))
            .set((
                subscriptions::status.eq(status),
                subscriptions::last_error.eq(error),
            ))
            .execute(self.conn())
            .map(drop)
            .map_err(db_error)
    }
}

/// Subscriptions being delivered for with notifications due at `p` (the
/// bound time): their next attempt has come, nobody holds them, and the
/// outbox has something for them.
fn due_sql(p: &str, limit: i64, lock: &str) -> String {
    format!(
        "SELECT s.id AS res_id FROM subscriptions s \
         WHERE s.status IN ('requested', 'active') AND s.next_attempt <= {p} \
         AND s.leased_until < {p} \
         AND EXISTS (SELECT 1 FROM outbox o WHERE o.subscription_id = s.id) \
         ORDER BY s.next_attempt LIMIT {limit}{lock}"
    )
}

impl Store {
    /// Leases up to `limit` subscriptions that have notifications due
    /// (`next_attempt` passed, no live lease) until `lease_until`, so no
    /// other worker delivers for them meanwhile: deliveries to one endpoint
    /// stay in order. On PostgreSQL the candidates are locked with
    /// `FOR UPDATE SKIP LOCKED`, so replicas claiming at once take
    /// different ones instead of waiting for each other.
    pub fn claim_subscriptions(
        &self,
        now: &str,
        lease_until: &str,
        limit: i64,
    ) -> FhirResult<Vec<SubscriptionRow>> {
        use diesel::sql_types::Text;
        let mut conn = self.writer()?;
        conn.transaction(|c| {
            let ids: Vec<super::sql::Id> = match &mut *c {
                AnyConnection::Postgresql(pg) => {
                    diesel::sql_query(due_sql("$1", limit, " FOR UPDATE SKIP LOCKED"))
                        .bind::<Text, _>(now)
                        .load(pg)?
                }
                AnyConnection::Sqlite(lite) => {
                    // A write first: the transaction holds the write lock
                    // from its start, so another process cannot claim the
                    // same rows between this read and the update.
                    diesel::sql_query("UPDATE subscriptions SET id = id WHERE 1 = 0")
                        .execute(lite)?;
                    diesel::sql_query(due_sql("?1", limit, ""))
                        .bind::<Text, _>(now)
                        .load(lite)?
                }
            };
            let ids: Vec<String> = ids.into_iter().map(|r| r.res_id).collect();
            diesel::update(subscriptions::table.filter(subscriptions::id.eq_any(&ids)))
                .set(subscriptions::leased_until.eq(lease_until))
                .execute(c)?;
            subscriptions::table
                .filter(subscriptions::id.eq_any(&ids))
                .select(SubscriptionRow::as_select())
                .load(c)
        })
        .map_err(db_error)
    }

    /// Whether any subscription has notifications due: a read, so idle
    /// workers poll without taking the write lock.
    pub fn notifications_due(&self, now: &str) -> FhirResult<bool> {
        use diesel::sql_types::Text;
        let mut conn = self.reader()?;
        let found: Vec<super::sql::Id> = match &mut *conn {
            AnyConnection::Postgresql(pg) => diesel::sql_query(due_sql("$1", 1, ""))
                .bind::<Text, _>(now)
                .load(pg),
            AnyConnection::Sqlite(lite) => diesel::sql_query(due_sql("?1", 1, ""))
                .bind::<Text, _>(now)
                .load(lite),
        }
        .map_err(db_error)?;
        Ok(!found.is_empty())
    }

    /// Extends a worker's lease before it sends another notification.
    pub fn renew_lease(&self, id: &str, until: &str) -> FhirResult<()> {
        let mut conn = self.writer()?;
        diesel::update(subscriptions::table.find(id))
            .set(subscriptions::leased_until.eq(until))
            .execute(&mut *conn)
            .map(drop)
            .map_err(db_error)
    }

    /// The next notifications of a subscription: a handshake first, then
    /// events in the order they were written.
    pub fn pending_notifications(&self, id: &str, limit: i64) -> FhirResult<Vec<OutboxRow>> {
        let mut conn = self.reader()?;
        let mut rows: Vec<OutboxRow> = outbox::table
            .filter(outbox::subscription_id.eq(id))
            .order(outbox::seq)
            .limit(limit)
            .select(OutboxRow::as_select())
            .load(&mut conn)
            .map_err(db_error)?;
        if rows.first().is_none_or(|r| r.kind != "handshake") {
            let handshake: Option<OutboxRow> = outbox::table
                .filter(outbox::subscription_id.eq(id))
                .filter(outbox::kind.eq("handshake"))
                .select(OutboxRow::as_select())
                .first(&mut conn)
                .optional()
                .map_err(db_error)?;
            if let Some(h) = handshake {
                rows.retain(|r| r.seq != h.seq);
                rows.insert(0, h);
            }
        }
        Ok(rows)
    }

    /// A notification the endpoint accepted.
    pub fn delivered(&self, subscription_id: &str, seq: i64) -> FhirResult<()> {
        let mut conn = self.writer()?;
        conn.transaction(|c| {
            diesel::delete(outbox::table.find(seq)).execute(c)?;
            diesel::update(subscriptions::table.find(subscription_id))
                .set(subscriptions::failures.eq(0))
                .execute(c)
        })
        .map(drop)
        .map_err(db_error)
    }

    /// A delivery that failed: try again at `next_attempt`; the lease ends.
    /// Returns the number of failures in a row.
    pub fn delivery_failed(&self, id: &str, next_attempt: &str, error: &str) -> FhirResult<i32> {
        let mut conn = self.writer()?;
        conn.transaction(|c| {
            diesel::update(subscriptions::table.find(id))
                .set((
                    subscriptions::failures.eq(subscriptions::failures + 1),
                    subscriptions::next_attempt.eq(next_attempt),
                    subscriptions::leased_until.eq(""),
                    subscriptions::last_error.eq(error),
                ))
                .execute(c)?;
            subscriptions::table
                .find(id)
                .select(subscriptions::failures)
                .first(c)
        })
        .map_err(db_error)
    }

    /// Ends a worker's lease on a subscription.
    pub fn release_subscription(&self, id: &str) -> FhirResult<()> {
        let mut conn = self.writer()?;
        diesel::update(subscriptions::table.find(id))
            .set(subscriptions::leased_until.eq(""))
            .execute(&mut *conn)
            .map(drop)
            .map_err(db_error)
    }

    /// Notifications waiting, and when the oldest was written.
    pub fn outbox_backlog(&self) -> FhirResult<(i64, Option<String>)> {
        let mut conn = self.reader()?;
        outbox::table
            .select((diesel::dsl::count_star(), diesel::dsl::min(outbox::created)))
            .first(&mut conn)
            .map_err(db_error)
    }
}
