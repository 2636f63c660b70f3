//! Push notifications: R4 `Subscription`s with a `rest-hook` channel.
//!
//! A Subscription is stored like any resource; what delivering it needs
//! (the subscriber's view, the parsed channel, its signing secret, event
//! count, failures, lease) is a row of `subscriptions`, kept in step by the
//! write path (`subscription.rs`). Every writing transaction, before it
//! commits, puts a notification in the `outbox` table for each subscription
//! whose criteria the versions it wrote match in the subscriber's view
//! (`after_writes`), so a notification exists if and only if its change
//! committed. Delivery workers (`deliver.rs`, one per replica) lease
//! subscriptions with notifications due, send them in order, and delete
//! each once the endpoint accepts it: at least once, in order per
//! subscription, across restarts and replicas.

pub mod deliver;
pub mod subscription;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::auth::access::{Access, OrgAccess};
use crate::auth::Role;
use crate::fhir::outcome::FhirResult;
use crate::search::SearchQuery;
use crate::store::Tx;

/// Types a subscription's criteria may search.
pub const TYPES: [&str; 3] = ["Task", "ServiceRequest", "Communication"];

#[derive(Debug, Clone)]
pub struct Config {
    /// Endpoints on loopback addresses (and plain http to them) are
    /// allowed: tests, or a receiver running beside the hub.
    pub allow_loopback: bool,
    /// The first retry's delay; each further failure doubles it, up to
    /// `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Failures in a row after which a subscription goes to `error`.
    pub max_failures: i32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            allow_loopback: false,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_failures: 20,
        }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Wakes this process's idle worker when a write commits, so a
/// notification goes out at once rather than at the next look (other
/// replicas find it when they next look).
static WAKE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Called after a writing transaction commits.
pub fn wake() {
    WAKE.notify_one();
}

/// Sets the configuration once, at start-up.
pub fn configure(cfg: Config) {
    let _ = CONFIG.set(cfg);
}

pub fn config() -> Config {
    CONFIG.get().cloned().unwrap_or_default()
}

fn allow() -> crate::outbound::Allow {
    if config().allow_loopback {
        crate::outbound::Allow::Loopback
    } else {
        crate::outbound::Allow::Public
    }
}

/// The view a subscription's criteria are matched in: its subscriber's
/// (none for a role this binary does not know: such a row matches nothing).
fn access_of(row: &crate::store::SubscriptionRow) -> Option<Access> {
    match Role::parse(&row.role).ok()? {
        Role::Admin => Some(Access::All),
        role => Some(Access::Org(OrgAccess {
            role,
            org: row.organization.clone(),
        })),
    }
}

/// The criteria's query as name/value pairs.
fn criteria_pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Whether `res_type/id`, as the transaction now has it, matches the
/// subscription's criteria in its subscriber's view: the search itself,
/// narrowed to the one id.
fn matches(tx: &mut Tx, row: &crate::store::SubscriptionRow, id: &str) -> FhirResult<bool> {
    let mut pairs = criteria_pairs(&row.criteria);
    pairs.push(("_id".into(), id.into()));
    let Some(access) = access_of(row) else {
        return Ok(false);
    };
    let mut q = SearchQuery::parse(&row.res_type, &pairs, true)?;
    q.access = access;
    Ok(!tx.matching_ids(&row.res_type, &q, 1)?.is_empty())
}

/// The last step of every writing transaction: queue a notification for
/// each subscription the transaction's changes match (each resource once,
/// in its latest version; deletions match no search and notify no one),
/// and forget subscriptions it deleted.
pub fn after_writes(tx: &mut Tx) -> FhirResult<()> {
    let mut latest: BTreeMap<(String, String), i32> = BTreeMap::new();
    for (t, id, v) in tx.written() {
        let e = latest.entry((t.clone(), id.clone())).or_default();
        *e = (*e).max(*v);
    }
    let mut by_type: BTreeMap<String, Vec<crate::store::SubscriptionRow>> = BTreeMap::new();
    for ((t, id), version) in latest {
        let live = tx.read(&t, &id)?.is_some_and(|c| !c.deleted);
        if t == "Subscription" && !live {
            tx.drop_subscription(&id)?;
        }
        if !live || !TYPES.contains(&t.as_str()) {
            continue;
        }
        if !by_type.contains_key(&t) {
            let subs = tx.subscriptions_on(&t)?;
            by_type.insert(t.clone(), subs);
        }
        for row in by_type[&t].clone() {
            if matches(tx, &row, &id)? {
                tx.enqueue(&row.id, "event-notification", (&t, &id, version))?;
            }
        }
    }
    Ok(())
}
