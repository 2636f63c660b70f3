//! The rules of `auth::access` as SQL: a predicate "this resource is in the
//! organisation's view", written over the reference and token index and
//! `resource_creators`, and added to every read the store makes for a
//! caller (searches and what they include or chain through, reads, history).

use std::collections::HashSet;

use super::pool::{db_error, AnyConnection};
use super::sql::{load, Count, Id, Sql};
use super::{HistoryQuery, HistoryScope, Page, Version};
use crate::auth::access::{creator_sees, Access, OrgAccess, BASED_ON_TYPES, SHARED_TYPES};
use crate::auth::Role;
use crate::fhir::outcome::{FhirError, FhirResult};

/// Which organisations an actor reference may belong to.
#[derive(Clone, Copy)]
enum Orgs {
    /// The caller's organisation.
    Caller,
    /// The caller's organisation and those `partOf` it (a PCN's practices).
    CallerAndMembers,
    /// The practices of the PCNs the caller's link workers serve.
    ServedPractices,
}

/// Types whose visibility has a rule of their own (others: shared or
/// creator only).
const TRAIL_TYPES: &[&str] = &["ServiceRequest", "Task", "Patient", "Consent"];

impl Sql {
    /// ` {col} <in orgs>` as a condition on a column holding an Organization id.
    fn org_in(&mut self, o: &OrgAccess, col: &str, orgs: Orgs) -> &mut Self {
        match orgs {
            Orgs::Caller => self.push(&format!("{col} = ")).text(&o.org),
            Orgs::CallerAndMembers => {
                let m = self.alias("m");
                self.push(&format!("({col} = ")).text(&o.org).push(&format!(
                    " OR {col} IN (SELECT {m}.res_id FROM search_reference {m} WHERE {m}.res_type = 'Organization' \
                     AND {m}.param = 'partof' AND {m}.target_type = 'Organization' AND {m}.target_id = "
                ));
                self.text(&o.org).push("))")
            }
            Orgs::ServedPractices => {
                let (m, s, p) = (self.alias("m"), self.alias("s"), self.alias("p"));
                self.push(&format!(
                    "{col} IN (SELECT {m}.res_id FROM search_reference {m} WHERE {m}.res_type = 'Organization' \
                     AND {m}.param = 'partof' AND {m}.target_type = 'Organization' AND {m}.target_id IN \
                     (SELECT {s}.target_id FROM search_reference {s} WHERE {s}.res_type = 'PractitionerRole' \
                     AND {s}.param = 'serves-pcn' AND {s}.target_type = 'Organization' AND {s}.res_id IN \
                     (SELECT {p}.res_id FROM search_reference {p} WHERE {p}.res_type = 'PractitionerRole' \
                     AND {p}.param = 'organization' AND {p}.target_type = 'Organization' AND {p}.target_id = "
                ));
                self.text(&o.org).push(")))")
            }
        }
    }

    /// The reference entry `x` points at one of `orgs` or at a
    /// PractitionerRole of one of them.
    fn actor_in(&mut self, o: &OrgAccess, x: &str, orgs: Orgs) -> &mut Self {
        let p = self.alias("p");
        self.push(&format!("(({x}.target_type = 'Organization' AND "));
        self.org_in(o, &format!("{x}.target_id"), orgs);
        self.push(&format!(
            ") OR ({x}.target_type = 'PractitionerRole' AND {x}.target_id IN (SELECT {p}.res_id FROM search_reference {p} \
             WHERE {p}.res_type = 'PractitionerRole' AND {p}.param = 'organization' AND {p}.target_type = 'Organization' AND "
        ));
        self.org_in(o, &format!("{p}.target_id"), orgs);
        self.push(")))")
    }

    /// `EXISTS` a reference of `res_type` resource `id` through `param`
    /// whose entry satisfies `target`.
    fn refers(
        &mut self,
        res_type: &str,
        id: &str,
        param: &str,
        target: impl FnOnce(&mut Sql, &str),
    ) -> &mut Self {
        let x = self.alias("a");
        self.push(&format!(
            "EXISTS (SELECT 1 FROM search_reference {x} WHERE {x}.res_type = "
        ))
        .text(res_type)
        .push(&format!(" AND {x}.res_id = {id} AND {x}.param = "))
        .text(param)
        .push(" AND ");
        target(self, &x);
        self.push(")")
    }

    fn has_code(&mut self, res_type: &str, id: &str, param: &str, code: &str) -> &mut Self {
        let k = self.alias("k");
        self.push(&format!(
            "EXISTS (SELECT 1 FROM search_token {k} WHERE {k}.res_type = "
        ))
        .text(res_type)
        .push(&format!(" AND {k}.res_id = {id} AND {k}.param = "))
        .text(param)
        .push(&format!(" AND {k}.code = "))
        .text(code)
        .push(")")
    }

    /// Task `id` is owned by the caller (or one of its link workers).
    fn owned(&mut self, o: &OrgAccess, id: &str) -> &mut Self {
        self.refers("Task", id, "owner", |s, x| {
            s.actor_in(o, x, Orgs::Caller);
        })
    }

    /// The patient of referral `sr` has withdrawn consent: a Consent for
    /// them that is inactive or denies.
    fn withdrawn(&mut self, sr: &str) -> &mut Self {
        self.refers("ServiceRequest", sr, "subject", |s, x| {
            let c = s.alias("c");
            s.push(&format!(
                "{x}.target_type = 'Patient' AND EXISTS (SELECT 1 FROM search_reference {c} WHERE {c}.res_type = 'Consent' \
                 AND {c}.param = 'patient' AND {c}.target_type = 'Patient' AND {c}.target_id = {x}.target_id AND ("
            ));
            s.has_code("Consent", &format!("{c}.res_id"), "status", "inactive")
                .push(" OR ")
                .has_code("Consent", &format!("{c}.res_id"), "provision-type", "deny")
                .push("))");
        })
    }

    /// Some Task on referral `sr` satisfies `task`.
    fn task_on(&mut self, sr: &str, task: impl FnOnce(&mut Sql, &str)) -> &mut Self {
        let f = self.alias("f");
        self.push(&format!(
            "EXISTS (SELECT 1 FROM search_reference {f} WHERE {f}.res_type = 'Task' AND {f}.param = 'focus' \
             AND {f}.target_type = 'ServiceRequest' AND {f}.target_id = {sr} AND "
        ));
        task(self, &format!("{f}.res_id"));
        self.push(")")
    }

    /// Task `id` is in the open pool: no owner, still requested.
    fn in_pool(&mut self, id: &str) -> &mut Self {
        self.push("NOT ")
            .refers("Task", id, "owner", |s, _| {
                s.push("1 = 1");
            })
            .push(" AND ")
            .has_code("Task", id, "status", "requested")
    }

    /// Referral `sr` is in the caller's view. `pool`: a VCS also sees the
    /// referrals of the open pool it may claim from.
    fn referral(&mut self, o: &OrgAccess, sr: &str, pool: bool) -> &mut Self {
        match o.role {
            Role::Gp => self.refers("ServiceRequest", sr, "requester", |s, x| {
                s.actor_in(o, x, Orgs::Caller);
            }),
            Role::Pcn => self
                .push("(")
                .refers("ServiceRequest", sr, "requester", |s, x| {
                    s.actor_in(o, x, Orgs::CallerAndMembers);
                })
                .push(" OR ")
                .task_on(sr, |s, t| {
                    s.owned(o, t);
                })
                .push(")"),
            // Admin reads take no predicate (`Access::All`).
            Role::Admin => self.push("1 = 1"),
            Role::Vcs => {
                self.push("((").task_on(sr, |s, t| {
                    s.owned(o, t);
                });
                if pool {
                    self.push(") OR (").pool_referral(o, sr);
                }
                self.push(")) AND NOT ").withdrawn(sr)
            }
        }
    }

    /// Referral `sr` has an open-pool Task and comes from a practice of a
    /// PCN the caller serves.
    fn pool_referral(&mut self, o: &OrgAccess, sr: &str) -> &mut Self {
        self.task_on(sr, |s, t| {
            s.in_pool(t);
        })
        .push(" AND ")
        .refers("ServiceRequest", sr, "requester", |s, x| {
            s.actor_in(o, x, Orgs::ServedPractices);
        })
    }

    /// The predicate: resource `res_type` with id `id` (an SQL expression)
    /// is in the view of `o`.
    pub(super) fn visible(&mut self, o: &OrgAccess, res_type: &str, id: &str) -> &mut Self {
        self.push("(");
        match res_type {
            "ServiceRequest" => {
                self.referral(o, id, true);
            }
            "Task" if o.role == Role::Vcs => {
                // Its own Tasks, the sub-tasks (onward referrals) of those,
                // and the open pool it may claim from.
                self.push("((")
                    .owned(o, id)
                    .push(" OR ")
                    .refers("Task", id, "part-of", |s, x| {
                        s.push(&format!("{x}.target_type = 'Task' AND "));
                        s.owned(o, &format!("{x}.target_id"));
                    })
                    .push(")")
                    .push(" AND NOT ")
                    .refers("Task", id, "focus", |s, x| {
                        s.push(&format!("{x}.target_type = 'ServiceRequest' AND "));
                        s.withdrawn(&format!("{x}.target_id"));
                    })
                    .push(") OR (")
                    .in_pool(id)
                    .push(" AND ")
                    .refers("Task", id, "focus", |s, x| {
                        s.push(&format!("{x}.target_type = 'ServiceRequest' AND "));
                        s.pool_referral(o, &format!("{x}.target_id"));
                        s.push(" AND NOT ");
                        s.withdrawn(&format!("{x}.target_id"));
                    })
                    .push(")");
            }
            "Task" => {
                self.refers("Task", id, "focus", |s, x| {
                    s.push(&format!("{x}.target_type = 'ServiceRequest' AND "));
                    s.referral(o, &format!("{x}.target_id"), false);
                });
            }
            "Patient" => {
                let s = self.alias("s");
                self.push(&format!(
                    "EXISTS (SELECT 1 FROM search_reference {s} WHERE {s}.res_type = 'ServiceRequest' AND {s}.param = 'subject' \
                     AND {s}.target_type = 'Patient' AND {s}.target_id = {id} AND "
                ));
                self.referral(o, &format!("{s}.res_id"), true).push(")");
            }
            "Consent" => {
                self.refers("Consent", id, "patient", |sql, x| {
                    sql.push(&format!("{x}.target_type = 'Patient' AND "));
                    let s = sql.alias("s");
                    sql.push(&format!(
                        "EXISTS (SELECT 1 FROM search_reference {s} WHERE {s}.res_type = 'ServiceRequest' AND {s}.param = 'subject' \
                         AND {s}.target_type = 'Patient' AND {s}.target_id = {x}.target_id AND "
                    ));
                    sql.referral(o, &format!("{s}.res_id"), false).push(")");
                });
            }
            t if BASED_ON_TYPES.contains(&t) => {
                self.refers(t, id, "based-on", |s, x| {
                    s.push(&format!("{x}.target_type = 'ServiceRequest' AND "));
                    s.referral(o, &format!("{x}.target_id"), false);
                });
            }
            // A Provenance is seen with the referral it is about, or the
            // referral of the Task it is about (kept this shallow: SQLite's
            // parser has a fixed depth, and every rule above nests).
            "Provenance" => {
                self.push("(")
                    .refers("Provenance", id, "target", |s, x| {
                        s.push(&format!("{x}.target_type = 'ServiceRequest' AND "));
                        s.referral(o, &format!("{x}.target_id"), false);
                    })
                    .push(" OR ")
                    .refers("Provenance", id, "target", |s, x| {
                        s.push(&format!("{x}.target_type = 'Task' AND "));
                        s.refers("Task", &format!("{x}.target_id"), "focus", |s, f| {
                            s.push(&format!("{f}.target_type = 'ServiceRequest' AND "));
                            s.referral(o, &format!("{f}.target_id"), false);
                        });
                    })
                    .push(")");
            }
            t if SHARED_TYPES.contains(&t) => {
                self.push("1 = 1");
            }
            _ => {
                self.push("1 = 0");
            }
        }
        if creator_sees(o.role, res_type) {
            let c = self.alias("c");
            self.push(&format!(
                " OR EXISTS (SELECT 1 FROM resource_creators {c} WHERE {c}.res_type = "
            ))
            .text(res_type)
            .push(&format!(" AND {c}.res_id = {id} AND {c}.organization = "))
            .text(&o.org)
            .push(")");
        }
        self.push(")")
    }
}

/// Which of `ids` (of `res_type`) are in the view of `o`.
pub(super) fn visible_ids(
    c: &mut AnyConnection,
    o: &OrgAccess,
    res_type: &str,
    ids: &[&str],
) -> FhirResult<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sql = Sql::new(c);
    sql.push("SELECT r0.res_id FROM resources r0 WHERE r0.res_type = ")
        .text(res_type)
        .push(" AND r0.res_id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.text(id);
    }
    sql.push(") AND ").visible(o, res_type, "r0.res_id");
    Ok(load!(c, sql, Id)?.into_iter().map(|r| r.res_id).collect())
}

/// History as `o` may see it: versions of resources in its view now.
pub(super) fn history(
    c: &mut AnyConnection,
    q: &HistoryQuery,
    o: &OrgAccess,
) -> FhirResult<Page<Version>> {
    if q.at.is_some() {
        return Err(FhirError::invalid_at(
            "_at is not available to organisation-scoped clients; use _since",
            "_at",
        ));
    }
    // The versions in view, as a row source `v`. System-wide, one branch
    // per type, each with its own type's rule: a single predicate over all
    // types makes PostgreSQL hash every rule's subqueries in full.
    let filter = |sql: &mut Sql| {
        match &q.scope {
            HistoryScope::System => {
                sql.push(" FROM (");
                let ruled: Vec<&str> = TRAIL_TYPES
                    .iter()
                    .chain(BASED_ON_TYPES)
                    .chain(&["Provenance"])
                    .chain(SHARED_TYPES)
                    .copied()
                    .collect();
                for t in &ruled {
                    sql.push("SELECT * FROM resource_versions v WHERE v.res_type = ")
                        .text(t)
                        .push(" AND ");
                    sql.visible(o, t, "v.res_id").push(" UNION ALL ");
                }
                // Any other type: its creator's.
                let c = sql.alias("c");
                sql.push("SELECT * FROM resource_versions v WHERE v.res_type NOT IN (");
                for (i, t) in ruled.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.text(t);
                }
                sql.push(&format!(
                    ") AND EXISTS (SELECT 1 FROM resource_creators {c} WHERE {c}.res_type = v.res_type AND {c}.res_id = v.res_id AND {c}.organization = "
                ))
                .text(&o.org)
                .push(")) v WHERE 1 = 1");
            }
            HistoryScope::Type(t) => {
                sql.push(" FROM resource_versions v WHERE v.res_type = ")
                    .text(t)
                    .push(" AND ");
                sql.visible(o, t, "v.res_id");
            }
            HistoryScope::Instance(t, id) => {
                sql.push(" FROM resource_versions v WHERE v.res_type = ")
                    .text(t)
                    .push(" AND v.res_id = ")
                    .text(id)
                    .push(" AND ");
                sql.visible(o, t, "v.res_id");
            }
        }
        if let Some(tick) = q.after_tick {
            sql.push(&format!(" AND v.tick > {tick}"));
        }
        if let Some(since) = &q.since {
            sql.push(" AND v.last_updated >= ").text(since);
        }
    };
    let mut count = Sql::new(c);
    count.push("SELECT COUNT(*) AS n");
    filter(&mut count);
    let total = load!(c, count, Count)?.first().map_or(0, |r| r.n);
    let mut page = Sql::new(c);
    page.push(
        "SELECT v.seq, v.res_type, v.res_id, v.version, v.last_updated, v.method, v.body, v.tick",
    );
    filter(&mut page);
    if let Some(seq) = q.before_seq {
        page.push(&format!(" AND v.seq < {seq}"));
    }
    page.push(match (q.after_tick, &q.scope) {
        (Some(_), _) => " ORDER BY v.tick",
        // Same order as `seq` for one resource, and its (type, id, version)
        // key yields it: ordered by `seq`, SQLite walks the (type, seq)
        // index through every version of the type.
        (None, HistoryScope::Instance(..)) => " ORDER BY v.version DESC",
        (None, _) => " ORDER BY v.seq DESC",
    });
    page.push(&format!(" LIMIT {}", q.count + 1));
    let mut items = load!(c, page, Version)?;
    let more = items.len() as i64 > q.count;
    items.truncate(q.count as usize);
    let access = Access::Org(o.clone());
    for v in &mut items {
        v.body = v.body.take().map(|b| access.redact(&v.res_type, b));
    }
    Ok(Page {
        items,
        total: Some(total),
        more,
        included: vec![],
        last_sort: None,
    })
}
