//! The SQL of the PCN dashboard (`crate::dashboard`): the summary the
//! write path keeps (`replace_summary`, `dash_referrals` and `dash_facts`,
//! see `crate::dashboard::summary`), two small directory reads and one
//! aggregate statement over the summary, in one read transaction per
//! request, on both backends.
//!
//! The statement starts from the population, `pop`: the SP referrals
//! (`dash_referrals`: the SP code, not draft or entered in error) received
//! before the end of the period that pass the request's filters, inside the
//! caller's view by construction, one row each with its practice (the
//! requester, or the organisation of the requesting PractitionerRole),
//! patient, `authoredOn` and `inp`, whether it was received in the period.
//! Each figure then groups and counts over it and the referrals' facts in
//! the database; what comes back is a few rows a figure (groups, days, link
//! workers), never the resources.
//!
//! Values a client gives are always bound. The SQL text holds our own
//! column names, JSON paths and code-system constants only.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};

use super::pool::{db_error, AnyConnection, Store};
use super::sql::{load, Count, Sql};
use crate::auth::access::Access;
use crate::dashboard::summary::{self, Summary};
use crate::fhir::outcome::FhirResult;

/// What the population is and how the figures group it. Built by
/// `crate::dashboard` from the request, the caller and the directory.
#[derive(Debug, Clone, Default)]
pub struct DashboardScope {
    /// Whose view the counts take (`Access::All` for an admin).
    pub access: Access,
    /// Only referrals from practices `partOf` this PCN (an Organization id).
    pub pcn: Option<String>,
    /// Only referrals from these practices (Organization ids); empty: any.
    pub practices: Vec<String>,
    /// The practices whose referrals the population is read from (their
    /// `requester` index entries lead), when the PCN or practices are known;
    /// `None`: every SP referral is looked at (an admin over all PCNs).
    pub lead_practices: Option<Vec<String>>,
    /// Only referrals whose top-level Task is owned by one of these
    /// (`Type/id`); `None`: any.
    pub owners: Option<Vec<String>>,
    /// Only referrals some Task of which (top-level or onward) is owned by
    /// one of these (`Type/id`): a VCS caller's own work.
    pub any_task_owner: Option<Vec<String>>,
    /// Only referrals with one of these sp-need codes; empty: any.
    pub needs: Vec<String>,
    /// The period, `[from, to)`, as stored instants.
    pub from: String,
    pub to: String,
    /// The moment the figures are taken at (stored instant).
    pub now: String,
    /// Open cases of referrals received before this instant are "long open".
    pub open_before: String,
    /// GP consultations are counted this many months either side of the referral.
    pub gp_months: u32,
    /// Actors (`Type/id`) of each employment model, for the split.
    pub pcn_side: Vec<String>,
    pub vcs_side: Vec<String>,
    /// Status reasons that count as an unmet need.
    pub unmet_reasons: Vec<String>,
    /// SWEMWBS raw total → metric score.
    pub swemwbs: Vec<(i64, f64)>,
}

/// One row of the dashboard statement: the figure it is for, up to two
/// group keys, two counts and four sums; each `part_` documents what it
/// puts where.
#[derive(Debug, Clone, Default, QueryableByName)]
pub struct AggRow {
    /// Which figure's statement the row is from (`FIGURES`).
    #[diesel(sql_type = Text)]
    pub k: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub g1: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub g2: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    #[diesel(sql_type = BigInt)]
    pub m: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub x: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub y: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub z: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub w: Option<f64>,
}

/// The figures of `DashboardReader::figures`, by the name of their rows.
pub const FIGURES: [&str; 14] = [
    "referrals_by_day",
    "referrals_by_need",
    "task_outcomes",
    "open_pool",
    "waits",
    "caseload",
    "contacts",
    "holding_work",
    "outcomes",
    "gp_consultations",
    "continuity",
    "unmet_need",
    "unmet_practice",
    "embedding",
];

/// A directory entry: an id and its current JSON.
#[derive(Debug, Clone, QueryableByName)]
pub struct DirEntry {
    #[diesel(sql_type = Text)]
    pub res_id: String,
    #[diesel(sql_type = Text)]
    pub body: String,
}

/// The dashboard's reads, all inside one read transaction.
pub struct DashboardReader<'c> {
    c: &'c mut AnyConnection,
}

impl Store {
    /// Builds the dashboard summary (with the index, `Store::reindex`) when
    /// SP referrals are stored but none is summarised: a database from
    /// before the summary, whose figures would otherwise be empty. Returns
    /// how many resources were reindexed (0: the summary was there).
    pub fn summarise_if_missing(&self) -> FhirResult<u64> {
        let missing = self.in_snapshot(|c| {
            let mut sql = Sql::new(c);
            sql.push(
                "SELECT COUNT(*) AS n FROM (SELECT 1 FROM search_token t WHERE t.res_type = 'ServiceRequest' \
                 AND t.param = 'code' AND t.syscode = ",
            )
            .text(&format!("{}|{}", summary::SP_REFERRAL.0, summary::SP_REFERRAL.1))
            .push(" AND NOT EXISTS (SELECT 1 FROM dash_referrals) LIMIT 1) x");
            Ok(load!(c, sql, Count)?.first().is_some_and(|r| r.n > 0))
        })?;
        if !missing {
            return Ok(0);
        }
        tracing::warn!(
            "the dashboard summary is missing; rebuilding it with the index before serving"
        );
        self.reindex()
    }

    /// Runs `f` on reads that all see one state of the database (as
    /// `Store::snapshot`: REPEATABLE READ on PostgreSQL, a WAL read
    /// transaction on SQLite), so the figures of one answer agree.
    pub fn dashboard<T>(
        &self,
        f: impl FnOnce(&mut DashboardReader) -> FhirResult<T>,
    ) -> FhirResult<T> {
        self.in_snapshot(|c| f(&mut DashboardReader { c }))
    }
}

/// Replaces one resource's summary rows (`crate::dashboard::summary`) with
/// `summary` (`None`: deleted), in the caller's transaction; `summarised`
/// says whether it may have rows to remove first. Types without a summary
/// cost nothing.
pub(super) fn replace_summary(
    c: &mut AnyConnection,
    res_type: &str,
    res_id: &str,
    summary: Option<&Summary>,
    summarised: bool,
) -> diesel::QueryResult<()> {
    if !summary::TYPES.contains(&res_type) {
        return Ok(());
    }
    if summarised {
        let mut sql = Sql::new(c);
        sql.push("DELETE FROM dash_facts WHERE res_type = ")
            .text(res_type)
            .push(" AND res_id = ")
            .text(res_id);
        sql.execute(c)?;
        if res_type == "ServiceRequest" {
            let mut sql = Sql::new(c);
            sql.push("DELETE FROM dash_referrals WHERE sr = ")
                .text(res_id);
            sql.execute(c)?;
        }
    }
    let Some(summary) = summary else {
        return Ok(());
    };
    if let Some(r) = &summary.referral {
        let mut sql = Sql::new(c);
        sql.push("INSERT INTO dash_referrals (sr, requester, patient, authored, status) VALUES (")
            .text(res_id)
            .push(", ")
            .opt_text(&r.requester)
            .push(", ")
            .opt_text(&r.patient)
            .push(", ")
            .text(&r.authored)
            .push(", ")
            .opt_text(&r.status)
            .push(")");
        sql.execute(c)?;
    }
    if summary.facts.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(c);
    sql.push(
        "INSERT INTO dash_facts (res_type, res_id, kind, sr, at, status, code, code2, actor, patient, flag, num) VALUES ",
    );
    for (i, f) in summary.facts.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" })
            .text(res_type)
            .push(", ")
            .text(res_id)
            .push(&format!(", '{}', ", f.kind))
            .text(&f.sr);
        for v in [&f.at, &f.status, &f.code, &f.code2, &f.actor, &f.patient] {
            sql.push(", ").opt_text(v);
        }
        sql.push(if f.flag { ", 1, " } else { ", 0, " });
        match f.num {
            Some(n) => sql.double(n),
            None => sql.push("NULL"),
        };
        sql.push(")");
    }
    sql.execute(c).map(drop)
}

impl Sql {
    fn pg(&self) -> bool {
        self.numbered
    }

    /// Pushes `s`, in which a probe for one resource's own index rows
    /// (`x.res_id = …`) is marked: `@x.param`, and `#ro` after a
    /// search_reference alias. SQLite, which has no statistics (the server
    /// never runs ANALYZE), would otherwise lead with a covering lookup
    /// index on `res_type` alone and scan every entry of the type on each
    /// probe; on SQLite the marks become a unary `+` (the param is no index
    /// key) and `INDEXED BY` the `(res_type, res_id)` owner index.
    /// PostgreSQL plans from its statistics: the marks go.
    fn push_probes(&mut self, s: &str) -> &mut Self {
        let s = if self.pg() {
            s.replace('@', "").replace(" #ro", "")
        } else {
            s.replace('@', "+")
                .replace(" #ro", " INDEXED BY search_reference_owner")
        };
        self.push(&s)
    }

    /// A JSON string (or number as text) at `path` of the JSON text `col`.
    fn json_text(&mut self, col: &str, path: &[&str]) -> &mut Self {
        if self.pg() {
            self.push(&format!(
                "(CAST({col} AS jsonb) #>> '{{{}}}')",
                path.join(",")
            ))
        } else {
            let mut p = String::from("$");
            for seg in path {
                if seg.bytes().all(|b| b.is_ascii_digit()) {
                    p.push_str(&format!("[{seg}]"));
                } else {
                    p.push('.');
                    p.push_str(seg);
                }
            }
            self.push(&format!("json_extract({col}, '{p}')"))
        }
    }

    /// A stored or FHIR instant as something both backends compare and
    /// subtract as time (SQLite: a Julian day number; PostgreSQL: timestamptz).
    fn instant(&mut self, expr: impl FnOnce(&mut Sql)) -> &mut Self {
        let pg = self.pg();
        self.push(if pg { "CAST(" } else { "julianday(" });
        expr(self);
        self.push(if pg { " AS timestamptz)" } else { ")" })
    }

    /// `instant(expr)` moved by `months` (negative: back).
    fn instant_months(&mut self, expr: &str, months: i64) -> &mut Self {
        if self.pg() {
            self.push(&format!("(CAST({expr} AS timestamptz) + CAST("))
                .text(&format!("{months} months"))
                .push(" AS interval))")
        } else {
            self.push(&format!("julianday({expr}, "))
                .text(&format!("{months:+} months"))
                .push(")")
        }
    }

    /// Days from instant `a` to instant `b`, as a double.
    fn days(&mut self, a: impl FnOnce(&mut Sql), b: impl FnOnce(&mut Sql)) -> &mut Self {
        if self.pg() {
            self.push("(EXTRACT(EPOCH FROM (");
            self.instant(b).push(" - ");
            self.instant(a).push(")) / 86400.0)")
        } else {
            self.push("(");
            self.instant(b).push(" - ");
            self.instant(a).push(")")
        }
    }

    fn days_cols(&mut self, a: &str, b: &str) -> &mut Self {
        let (a, b) = (a.to_string(), b.to_string());
        self.days(
            |s| {
                s.push(&a);
            },
            |s| {
                s.push(&b);
            },
        )
    }

    /// `expr IN (…)` over bound values; false for an empty list.
    fn in_list(&mut self, expr: &str, values: &[String]) -> &mut Self {
        if values.is_empty() {
            return self.push("1 = 0");
        }
        self.push(&format!("{expr} IN ("));
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(v);
        }
        self.push(")")
    }

    /// The employment model of the actor reference `expr` (`Type/id`).
    fn model_of(&mut self, expr: &str, s: &DashboardScope) -> &mut Self {
        self.push("CASE WHEN ")
            .in_list(expr, &s.pcn_side)
            .push(" THEN 'pcn-employed' WHEN ")
            .in_list(expr, &s.vcs_side)
            .push(" THEN 'vcs-subcontracted' ELSE 'unknown' END")
    }

    /// `WITH pop AS (…)`: the population (see the module doc), from the
    /// summary's referral rows: a practice's lead through its requester
    /// index.
    fn with_pop(&mut self, s: &DashboardScope) -> &mut Self {
        self.push("WITH ");
        if let Some(practices) = &s.lead_practices {
            // The requesters of the practices' referrals: the practices and
            // their PractitionerRoles.
            self.push(
                "lead AS MATERIALIZED (SELECT 'PractitionerRole/' || l.res_id AS requester \
                 FROM search_reference l WHERE l.res_type = 'PractitionerRole' AND l.param = 'organization' AND ",
            )
            .in_list("l.target_id", practices)
            .push(
                " UNION SELECT 'Organization/' || o.res_id AS requester FROM resources o \
                 WHERE o.res_type = 'Organization' AND ",
            )
            .in_list("o.res_id", practices)
            .push("), ");
        }
        self.push(
            "pop AS MATERIALIZED (SELECT p.sr, p.practice, p.authored, p.patient, p.status, \
             CASE WHEN p.authored >= ",
        )
        .text(&s.from)
        .push(" AND p.authored < ")
        .text(&s.to)
        .push_probes(
            " THEN 1 ELSE 0 END AS inp FROM (SELECT r.sr, r.authored, r.patient, r.status, \
             CASE WHEN r.requester LIKE 'Organization/%' THEN substr(r.requester, 14) ELSE \
             (SELECT MIN(o.target_id) FROM search_reference o #ro WHERE o.res_type = 'PractitionerRole' \
             AND o.res_id = substr(r.requester, 18) AND @o.param = 'organization' \
             AND o.target_type = 'Organization') END AS practice FROM ",
        );
        self.push(if s.lead_practices.is_some() {
            "lead CROSS JOIN dash_referrals r WHERE r.requester = lead.requester AND "
        } else {
            "dash_referrals r WHERE "
        });
        // Nothing received after the period counts, not even in the
        // figures of open work "now".
        self.push("r.authored < ").text(&s.to);
        // The population lies inside the caller's view by construction (see
        // `crate::dashboard::scope_for`); what is left of a VCS's rule is
        // that a withdrawn consent hides the referral.
        if s.access
            .org()
            .is_some_and(|o| o.role == crate::auth::Role::Vcs)
        {
            self.push_probes(
                " AND NOT EXISTS (SELECT 1 FROM search_reference wc \
                 WHERE wc.res_type = 'Consent' AND wc.param = 'patient' AND wc.target_type = 'Patient' \
                 AND wc.target_id = r.patient AND EXISTS (SELECT 1 FROM search_token wt \
                 WHERE wt.res_type = 'Consent' AND wt.res_id = wc.res_id AND ((@wt.param = 'status' \
                 AND wt.code = 'inactive') OR (@wt.param = 'provision-type' AND wt.code = 'deny'))))",
            );
        }
        if let Some(owners) = &s.any_task_owner {
            self.push(
                " AND EXISTS (SELECT 1 FROM dash_facts af WHERE af.sr = r.sr AND af.kind = 'task' AND ",
            )
            .in_list("af.actor", owners)
            .push(")");
        }
        if !s.needs.is_empty() {
            self.push(
                " AND EXISTS (SELECT 1 FROM dash_facts nf WHERE nf.sr = r.sr AND nf.kind = 'need' AND ",
            )
            .in_list("nf.code", &s.needs)
            .push(")");
        }
        if let Some(owners) = &s.owners {
            self.push(
                " AND EXISTS (SELECT 1 FROM dash_facts tf WHERE tf.sr = r.sr AND tf.kind = 'task' \
                 AND tf.flag = 0 AND ",
            )
            .in_list("tf.actor", owners)
            .push(")");
        }
        self.push(") p WHERE 1 = 1");
        if let Some(pcn) = &s.pcn {
            self.push(
                " AND p.practice IN (SELECT m.res_id FROM search_reference m WHERE m.res_type = 'Organization' \
                 AND m.param = 'partof' AND m.target_type = 'Organization' AND m.target_id = ",
            )
            .text(pcn)
            .push(")");
        }
        if !s.practices.is_empty() {
            self.push(" AND ").in_list("p.practice", &s.practices);
        }
        self.push(")")
    }

    /// `, tk AS (…)`: the top-level Tasks (no `partOf`) of the population,
    /// with their status, owner (`Type/id`), first status reason code and
    /// acceptance time: `executionPeriod.start`, else the time of the first
    /// version whose status was accepted or later.
    fn with_tasks(&mut self, s: &DashboardScope) -> &mut Self {
        self.push(
            ", tk0 AS MATERIALIZED (SELECT f.res_id AS task, pop.sr, pop.practice, pop.patient, pop.authored, \
             pop.inp, f.status, f.actor AS owner, f.at AS started, f.code AS reason \
             FROM pop CROSS JOIN dash_facts f WHERE f.sr = pop.sr AND f.kind = 'task' AND f.flag = 0",
        );
        // A VCS sees only its own Tasks of a referral (for the other roles
        // a referral's Tasks follow it).
        if let Some(owners) = &s.any_task_owner {
            self.push(" AND ").in_list("f.actor", owners);
        }
        // The history is read only for a Task that may have been accepted
        // but has no executionPeriod.start (a Task still requested, or
        // rejected, never was); the status reason counts only for the
        // statuses that carry one.
        self.push(
            "), tk AS MATERIALIZED (SELECT tk0.task, tk0.sr, tk0.practice, tk0.patient, tk0.authored, tk0.inp, \
             tk0.status, tk0.owner, CASE WHEN tk0.started IS NOT NULL THEN tk0.started \
             WHEN tk0.status IN ('requested', 'rejected', 'draft', 'entered-in-error') THEN NULL ELSE \
             (SELECT MIN(v.last_updated) FROM resource_versions v WHERE v.res_type = 'Task' AND v.res_id = tk0.task \
             AND v.body IS NOT NULL AND ",
        )
        .json_text("v.body", &["status"])
        .push(
            " IN ('accepted', 'in-progress', 'on-hold', 'completed', 'failed')) END AS accepted_at, \
             CASE WHEN tk0.status IN ('rejected', 'cancelled', 'failed', 'on-hold') THEN tk0.reason END AS reason \
             FROM tk0)",
        )
    }

    /// `, ct0 AS (…), ct AS (…)`: the contacts of the population with their
    /// start, mode, link worker and its organisation (looked up once a
    /// link worker).
    fn with_contacts(&mut self) -> &mut Self {
        self.push_probes(
            ", ct0 AS MATERIALIZED (SELECT b.res_id AS enc, pop.sr, pop.patient, pop.authored, pop.inp, b.at, b.code AS mode, \
             b.actor AS worker FROM pop CROSS JOIN dash_facts b WHERE b.sr = pop.sr AND b.kind = 'contact'), \
             wk AS MATERIALIZED (SELECT w.worker, (SELECT MIN(wo.target_id) FROM search_reference wo #ro \
             WHERE wo.res_type = 'PractitionerRole' AND wo.res_id = w.worker AND @wo.param = 'organization') AS org \
             FROM (SELECT DISTINCT ct0.worker FROM ct0 WHERE ct0.worker IS NOT NULL) w), \
             ct AS MATERIALIZED (SELECT ct0.*, wk.org AS worker_org FROM ct0 LEFT JOIN wk ON wk.worker = ct0.worker)",
        )
    }

    /// The SELECT list of an `AggRow`.
    fn select_row(
        &mut self,
        g1: &str,
        g2: &str,
        n: &str,
        m: &str,
        doubles: [&str; 4],
    ) -> &mut Self {
        self.push(&format!(
            " SELECT CAST({g1} AS TEXT) AS g1, CAST({g2} AS TEXT) AS g2, CAST({n} AS BIGINT) AS n, \
             CAST({m} AS BIGINT) AS m, CAST({} AS DOUBLE PRECISION) AS x, CAST({} AS DOUBLE PRECISION) AS y, \
             CAST({} AS DOUBLE PRECISION) AS z, CAST({} AS DOUBLE PRECISION) AS w",
            doubles[0], doubles[1], doubles[2], doubles[3]
        ))
    }
}

impl DashboardReader<'_> {
    fn rows(&mut self, sql: Sql) -> FhirResult<Vec<AggRow>> {
        let c: &mut AnyConnection = self.c;
        load!(c, sql, AggRow)
    }

    fn sql(&self) -> Sql {
        Sql::new(self.c)
    }

    /// PractitionerRoles serving `pcn` (any PCN when `None`): link workers.
    pub fn link_worker_roles(&mut self, pcn: Option<&str>) -> FhirResult<Vec<DirEntry>> {
        let mut sql = self.sql();
        sql.push(
            "SELECT r.res_id, r.body FROM resources r WHERE r.res_type = 'PractitionerRole' AND NOT r.deleted \
             AND r.res_id IN (SELECT s.res_id FROM search_reference s WHERE s.res_type = 'PractitionerRole' \
             AND s.param = 'serves-pcn'",
        );
        if let Some(pcn) = pcn {
            sql.push(" AND s.target_id = ").text(pcn);
        }
        sql.push(") ORDER BY r.res_id");
        let c: &mut AnyConnection = self.c;
        load!(c, sql, DirEntry)
    }

    /// Organizations of one sp-organisation-kind code, with their JSON;
    /// only those `partOf` `pcn` when given, and only `only` when not empty.
    pub fn organizations(
        &mut self,
        kind: &str,
        pcn: Option<&str>,
        only: &[String],
    ) -> FhirResult<Vec<DirEntry>> {
        let mut sql = self.sql();
        sql.push(
            "SELECT r.res_id, r.body FROM resources r WHERE r.res_type = 'Organization' AND NOT r.deleted \
             AND r.res_id IN (SELECT k.res_id FROM search_token k WHERE k.res_type = 'Organization' \
             AND k.param = 'type' AND k.code = ",
        )
        .text(kind)
        .push(")");
        if let Some(pcn) = pcn {
            sql.push(
                " AND r.res_id IN (SELECT m.res_id FROM search_reference m WHERE m.res_type = 'Organization' \
                 AND m.param = 'partof' AND m.target_id = ",
            )
            .text(pcn)
            .push(")");
        }
        if !only.is_empty() {
            sql.push(" AND ").in_list("r.res_id", only);
        }
        sql.push(" ORDER BY r.res_id");
        let c: &mut AnyConnection = self.c;
        load!(c, sql, DirEntry)
    }

    /// Referrals received in the period by (practice, day): g1 practice,
    /// g2 `YYYY-MM-DD` (UTC), n referrals, m distinct patients.
    /// Every figure's rows, from one statement: the population, its Tasks
    /// and contacts are worked out once (materialised common table
    /// expressions), then each figure is one more expression over them and
    /// the answer is their `UNION ALL`, each row tagged with its figure.
    pub fn figures(&mut self, s: &DashboardScope) -> FhirResult<Vec<AggRow>> {
        let mut sql = self.sql();
        sql.with_pop(s).with_tasks(s).with_contacts();
        Self::part_referrals_by_day(&mut sql);
        Self::part_referrals_by_need(&mut sql);
        Self::part_task_outcomes(&mut sql);
        Self::part_open_pool(&mut sql, s);
        Self::part_waits(&mut sql);
        Self::part_caseload(&mut sql, s);
        Self::part_contacts(&mut sql, s);
        Self::part_holding_work(&mut sql, s);
        Self::part_outcomes(&mut sql, s);
        Self::part_gp_consultations(&mut sql, s);
        Self::part_continuity(&mut sql);
        Self::part_unmet(&mut sql, s);
        Self::part_embedding(&mut sql);
        for (i, k) in FIGURES.iter().enumerate() {
            sql.push(if i == 0 { " " } else { " UNION ALL " }).push(&format!(
                "SELECT CAST('{k}' AS TEXT) AS k, f.g1, f.g2, f.n, f.m, f.x, f.y, f.z, f.w FROM f_{k} f"
            ));
        }
        self.rows(sql)
    }

    fn part_referrals_by_day(sql: &mut Sql) {
        sql.push(", f_referrals_by_day AS MATERIALIZED (")
            .select_row(
                "pop.practice",
                "substr(pop.authored, 1, 10)",
                "COUNT(*)",
                "COUNT(DISTINCT pop.patient)",
                ["NULL"; 4],
            )
            .push(" FROM pop WHERE pop.inp = 1 GROUP BY pop.practice, substr(pop.authored, 1, 10)");
        sql.push(")");
    }

    /// Referrals received in the period by need: g1 the sp-need code, n
    /// referrals, m distinct patients.
    fn part_referrals_by_need(sql: &mut Sql) {
        sql.push(
            ", rnd AS MATERIALIZED (SELECT nf.sr, nf.code AS need, pop.patient FROM pop CROSS JOIN dash_facts nf \
             WHERE pop.inp = 1 AND nf.sr = pop.sr AND nf.kind = 'need')",
        )
        .push(", f_referrals_by_need AS MATERIALIZED (")
            .select_row(
                "rnd.need",
                "NULL",
                "COUNT(*)",
                "COUNT(DISTINCT rnd.patient)",
                ["NULL"; 4],
            )
            .push(" FROM rnd GROUP BY rnd.need");
        sql.push(")");
    }

    /// Top-level Tasks of referrals received in the period by (status,
    /// status reason): n Tasks, m distinct patients, x Tasks with an
    /// acceptance time.
    fn part_task_outcomes(sql: &mut Sql) {
        sql.push(", f_task_outcomes AS MATERIALIZED (")
            .select_row(
                "tk.status",
                "tk.reason",
                "COUNT(*)",
                "COUNT(DISTINCT tk.patient)",
                [
                    "SUM(CASE WHEN tk.accepted_at IS NOT NULL THEN 1 ELSE 0 END)",
                    "NULL",
                    "NULL",
                    "NULL",
                ],
            )
            .push(" FROM tk WHERE tk.inp = 1 GROUP BY tk.status, tk.reason");
        sql.push(")");
    }

    /// The open pool now (top-level Tasks `requested` without an owner, of
    /// referrals received at any time): n Tasks, m patients, x the oldest
    /// referral's age in days, y the mean age.
    fn part_open_pool(sql: &mut Sql, s: &DashboardScope) {
        sql.push(", pool AS MATERIALIZED (SELECT tk.patient, ");
        let now = s.now.clone();
        sql.days(
            |q| {
                q.push("tk.authored");
            },
            |q| {
                q.text(&now);
            },
        )
        .push(" AS age FROM tk WHERE tk.status = 'requested' AND tk.owner IS NULL)")
        .push(", f_open_pool AS MATERIALIZED (")
        .select_row(
            "NULL",
            "NULL",
            "COUNT(*)",
            "COUNT(DISTINCT pool.patient)",
            ["MAX(pool.age)", "AVG(pool.age)", "NULL", "NULL"],
        )
        .push(" FROM pool");
        sql.push(")");
    }

    /// Waits of referrals received in the period, in days: g1 `acceptance`
    /// (referral to the top-level Task's acceptance) or `first-contact`
    /// (referral to the first contact); g2 `median` and `p90` (nearest
    /// rank: the value at rank ⌈p·n⌉ of the n waits in ascending order,
    /// found with ROW_NUMBER and COUNT windows, the same SQL on both
    /// backends) or `mean`; n the number of waits, x the value.
    fn part_waits(sql: &mut Sql) {
        sql.push(", w AS MATERIALIZED (SELECT 'acceptance' AS kind, ")
            .days_cols("tk.authored", "tk.accepted_at")
            .push(
                " AS d FROM tk WHERE tk.inp = 1 AND tk.accepted_at IS NOT NULL \
                 UNION ALL SELECT 'first-contact' AS kind, ",
            )
            .days_cols("fc.authored", "fc.first")
            .push(
                " AS d FROM (SELECT ct.sr, MIN(ct.authored) AS authored, MIN(ct.at) AS first FROM ct \
                 WHERE ct.inp = 1 GROUP BY ct.sr) fc), \
                 r AS MATERIALIZED (SELECT w.kind, w.d, ROW_NUMBER() OVER (PARTITION BY w.kind ORDER BY w.d) AS rn, \
                 COUNT(*) OVER (PARTITION BY w.kind) AS cnt FROM w)",
            )
            .push(", f_waits AS MATERIALIZED (").select_row("r.kind", "'median'", "r.cnt", "0", ["r.d", "NULL", "NULL", "NULL"])
            .push(" FROM r WHERE r.rn = (r.cnt + 1) / 2 UNION ALL")
            .select_row("r.kind", "'p90'", "r.cnt", "0", ["r.d", "NULL", "NULL", "NULL"])
            .push(" FROM r WHERE r.rn = (9 * r.cnt + 9) / 10 UNION ALL")
            .select_row("w.kind", "'mean'", "COUNT(*)", "0", ["AVG(w.d)", "NULL", "NULL", "NULL"])
            .push(" FROM w GROUP BY w.kind");
        sql.push(")");
    }

    /// Open cases now (top-level Tasks accepted, in progress or on hold) by
    /// owner: g1 the owner (`Type/id`, NULL when none), n cases, m distinct
    /// patients, x cases whose referral came before `open_before`.
    fn part_caseload(sql: &mut Sql, s: &DashboardScope) {
        sql.push(", cl AS MATERIALIZED (SELECT tk.owner, tk.patient, CASE WHEN tk.authored < ")
            .text(&s.open_before)
            .push(
                " THEN 1 ELSE 0 END AS long_open FROM tk \
                 WHERE tk.status IN ('accepted', 'in-progress', 'on-hold'))",
            )
            .push(", f_caseload AS MATERIALIZED (")
            .select_row(
                "cl.owner",
                "NULL",
                "COUNT(*)",
                "COUNT(DISTINCT cl.patient)",
                ["SUM(cl.long_open)", "NULL", "NULL", "NULL"],
            )
            .push(" FROM cl GROUP BY cl.owner");
        sql.push(")");
    }

    /// Contacts dated in the period (on referrals received at any time) by
    /// (employment model of the link worker, mode), with `*` rows for each
    /// model's total and the grand total: n contacts, m distinct patients.
    fn part_contacts(sql: &mut Sql, s: &DashboardScope) {
        sql.push(", cm AS MATERIALIZED (SELECT ct.patient, ct.mode, ");
        sql.model_of("('PractitionerRole/' || ct.worker)", s)
            .push(" AS model FROM ct WHERE ct.at >= ")
            .text(&s.from)
            .push(" AND ct.at < ")
            .text(&s.to)
            .push(")")
            .push(", f_contacts AS MATERIALIZED (")
            .select_row(
                "cm.model",
                "cm.mode",
                "COUNT(*)",
                "COUNT(DISTINCT cm.patient)",
                ["NULL"; 4],
            )
            .push(" FROM cm GROUP BY cm.model, cm.mode UNION ALL")
            .select_row(
                "cm.model",
                "'*'",
                "COUNT(*)",
                "COUNT(DISTINCT cm.patient)",
                ["NULL"; 4],
            )
            .push(" FROM cm GROUP BY cm.model UNION ALL")
            .select_row(
                "'*'",
                "'*'",
                "COUNT(*)",
                "COUNT(DISTINCT cm.patient)",
                ["NULL"; 4],
            )
            .push(" FROM cm");
        sql.push(")");
    }

    /// Holding work (sp-holding-work Procedures, not entered in error or
    /// not done) started in the period, by the performer's employment
    /// model (`*`: all): n episodes, m distinct patients, x hours (from
    /// `performedPeriod`), y episodes on referrals with no onward referral
    /// (no sub-task), z distinct referrals among those.
    fn part_holding_work(sql: &mut Sql, s: &DashboardScope) {
        sql.push(
            ", hw AS MATERIALIZED (SELECT b.res_id AS proc, pop.sr, pop.patient, b.at, b.actor AS worker, \
             b.num AS hours, CASE WHEN EXISTS (SELECT 1 FROM dash_facts sf WHERE sf.sr = pop.sr \
             AND sf.kind = 'task' AND sf.flag = 1) THEN 0 ELSE 1 END AS no_service \
             FROM pop CROSS JOIN dash_facts b WHERE b.sr = pop.sr AND b.kind = 'holding' AND b.at >= ",
        )
        .text(&s.from)
        .push(" AND b.at < ")
        .text(&s.to)
        .push("), hm AS MATERIALIZED (SELECT hw.*, ")
        .model_of("hw.worker", s)
        .push(" AS model FROM hw)");
        let sums = [
            "SUM(hm.hours)",
            "SUM(hm.no_service)",
            "COUNT(DISTINCT CASE WHEN hm.no_service = 1 THEN hm.sr END)",
            "NULL",
        ];
        sql.push(", f_holding_work AS MATERIALIZED (")
            .select_row(
                "hm.model",
                "NULL",
                "COUNT(*)",
                "COUNT(DISTINCT hm.patient)",
                sums,
            )
            .push(" FROM hm GROUP BY hm.model UNION ALL")
            .select_row(
                "'*'",
                "NULL",
                "COUNT(*)",
                "COUNT(DISTINCT hm.patient)",
                sums,
            )
            .push(" FROM hm");
        sql.push(")");
    }

    /// Paired outcomes of referrals received in the period: per measure
    /// (and `swemwbs-metric`, the raw SWEMWBS totals converted), the
    /// earliest baseline and the latest follow-up Observation of each
    /// referral (not entered in error or cancelled). g1 the measure, n
    /// pairs, m distinct patients, x Σ(follow-up − baseline), y Σ of its
    /// squares, z Σ baseline, w Σ follow-up.
    fn part_outcomes(sql: &mut Sql, s: &DashboardScope) {
        sql.push(
            ", obm AS MATERIALIZED (SELECT b.res_id AS id, pop.sr, pop.patient, b.code AS measure, \
             b.code2 AS timing, b.at, b.num AS v FROM pop CROSS JOIN dash_facts b \
             WHERE pop.inp = 1 AND b.sr = pop.sr AND b.kind = 'outcome'), \
             ranked AS MATERIALIZED (SELECT obm.*, ROW_NUMBER() OVER (PARTITION BY obm.sr, obm.measure, obm.timing \
             ORDER BY CASE WHEN obm.timing = 'baseline' THEN obm.at END ASC, obm.at DESC, obm.id) AS rn FROM obm), \
             pairs AS MATERIALIZED (SELECT p.* FROM (SELECT ranked.sr, ranked.patient, ranked.measure, \
             MAX(CASE WHEN ranked.timing = 'baseline' THEN ranked.v END) AS bv, \
             MAX(CASE WHEN ranked.timing = 'follow-up' THEN ranked.v END) AS fv FROM ranked WHERE ranked.rn = 1 \
             GROUP BY ranked.sr, ranked.patient, ranked.measure) p WHERE p.bv IS NOT NULL AND p.fv IS NOT NULL), \
             allp AS MATERIALIZED (SELECT pairs.* FROM pairs UNION ALL SELECT pairs.sr, pairs.patient, 'swemwbs-metric' AS measure, ",
        );
        for (i, col) in ["pairs.bv", "pairs.fv"].into_iter().enumerate() {
            sql.push(if i == 0 { "CASE CAST(" } else { ", CASE CAST(" });
            sql.push(&format!("{col} AS INTEGER)"));
            for (raw, metric) in &s.swemwbs {
                sql.push(&format!(" WHEN {raw} THEN {metric:?}"));
            }
            sql.push(" END");
        }
        sql.push(" FROM pairs WHERE pairs.measure = 'swemwbs-total')")
            .push(", f_outcomes AS MATERIALIZED (").select_row(
                "allp.measure",
                "NULL",
                "COUNT(*)",
                "COUNT(DISTINCT allp.patient)",
                [
                    "SUM(allp.fv - allp.bv)",
                    "SUM((allp.fv - allp.bv) * (allp.fv - allp.bv))",
                    "SUM(allp.bv)",
                    "SUM(allp.fv)",
                ],
            )
            .push(" FROM allp WHERE allp.bv IS NOT NULL AND allp.fv IS NOT NULL GROUP BY allp.measure");
        sql.push(")");
    }

    /// GP consultations either side of the referral, for referrals received
    /// in the period whose follow-up window has passed (`authoredOn` +
    /// `gp_months` ≤ now): Encounters of class AMB that are not link-worker
    /// contacts (no sp-contact-mode `type`), in the caller's view, for the
    /// referral's patient, whose `serviceProvider` is the referring practice, starting in [authored − N months, authored) and
    /// [authored, authored + N months). n referrals, m distinct patients,
    /// x Σ before, y Σ after.
    fn part_gp_consultations(sql: &mut Sql, s: &DashboardScope) {
        let months = i64::from(s.gp_months);
        sql.push(
            ", gp AS MATERIALIZED (SELECT DISTINCT pop.sr, g.res_id, g.at FROM pop CROSS JOIN dash_facts g \
             WHERE pop.inp = 1 AND g.kind = 'gp' AND g.patient = pop.patient AND g.actor = pop.practice",
        );
        // Only consultations in the caller's view count: on the trail of a
        // referral of the population (which is inside the view), or created
        // by the caller's organisation (a GP's or PCN's own; a VCS does not
        // see trail records by creation alone).
        if let Some(o) = s.access.org() {
            sql.push(
                " AND (EXISTS (SELECT 1 FROM dash_facts gb JOIN pop gp2 ON gp2.sr = gb.sr \
                 WHERE gb.res_type = 'Encounter' AND gb.res_id = g.res_id AND gb.kind = 'gp')",
            );
            if o.role != crate::auth::Role::Vcs {
                sql.push(
                    " OR EXISTS (SELECT 1 FROM resource_creators gk WHERE gk.res_type = 'Encounter' \
                     AND gk.res_id = g.res_id AND gk.organization = ",
                )
                .text(&o.org)
                .push(")");
            }
            sql.push(")");
        }
        sql.push(
            "), eligible AS MATERIALIZED (SELECT pop.sr, pop.patient, pop.authored FROM pop WHERE pop.inp = 1 AND ",
        )
        .instant_months("pop.authored", months)
        .push(" <= ")
        .instant(|q| {
            q.text(&s.now);
        })
        .push(
            "), counted AS MATERIALIZED (SELECT e.sr, e.patient, \
             SUM(CASE WHEN gp.at IS NOT NULL AND ",
        )
        .instant(|q| {
            q.push("gp.at");
        })
        .push(" >= ")
        .instant_months("e.authored", -months)
        .push(" AND ")
        .instant(|q| {
            q.push("gp.at");
        })
        .push(" < ")
        .instant(|q| {
            q.push("e.authored");
        })
        .push(" THEN 1 ELSE 0 END) AS before_n, SUM(CASE WHEN gp.at IS NOT NULL AND ")
        .instant(|q| {
            q.push("gp.at");
        })
        .push(" >= ")
        .instant(|q| {
            q.push("e.authored");
        })
        .push(" AND ")
        .instant(|q| {
            q.push("gp.at");
        })
        .push(" < ")
        .instant_months("e.authored", months)
        .push(
            " THEN 1 ELSE 0 END) AS after_n FROM eligible e LEFT JOIN gp ON gp.sr = e.sr \
             GROUP BY e.sr, e.patient)",
        )
        .push(", f_gp_consultations AS MATERIALIZED (").select_row(
            "NULL",
            "NULL",
            "COUNT(*)",
            "COUNT(DISTINCT counted.patient)",
            ["SUM(counted.before_n)", "SUM(counted.after_n)", "NULL", "NULL"],
        )
        .push(" FROM counted");
        sql.push(")");
    }

    /// Continuity over the contacts of referrals received in the period:
    /// n referrals with a contact by a link worker, m of them seen by one
    /// link worker only, x handovers (consecutive contacts, in time order,
    /// by different link workers) within one employer, y across employers.
    fn part_continuity(sql: &mut Sql) {
        sql.push(
            ", seq AS MATERIALIZED (SELECT ct.sr, ct.worker, ct.worker_org, \
             LAG(ct.worker) OVER (PARTITION BY ct.sr ORDER BY ct.at, ct.enc) AS pw, \
             LAG(ct.worker_org) OVER (PARTITION BY ct.sr ORDER BY ct.at, ct.enc) AS po \
             FROM ct WHERE ct.inp = 1 AND ct.worker IS NOT NULL)",
        );
        sql.push(", f_continuity AS MATERIALIZED (").select_row(
            "NULL",
            "NULL",
            "COUNT(DISTINCT seq.sr)",
            "(SELECT COUNT(*) FROM (SELECT seq.sr FROM seq GROUP BY seq.sr HAVING COUNT(DISTINCT seq.worker) = 1) one)",
            [
                "SUM(CASE WHEN seq.pw IS NOT NULL AND seq.pw <> seq.worker AND seq.po = seq.worker_org THEN 1 ELSE 0 END)",
                "SUM(CASE WHEN seq.pw IS NOT NULL AND seq.pw <> seq.worker AND (seq.po IS NULL OR seq.worker_org IS NULL OR seq.po <> seq.worker_org) THEN 1 ELSE 0 END)",
                "NULL",
                "NULL",
            ],
        )
        .push(" FROM seq");
        sql.push(")");
    }

    /// Unmet needs: referrals received in the period whose top-level Task
    /// ended (rejected, cancelled, failed) or is on hold with one of
    /// `unmet_reasons`. `unmet_practice`: g1 the practice; `unmet_need`:
    /// g1 the sp-need code; g2 the reason, n referrals, m distinct patients.
    fn part_unmet(sql: &mut Sql, s: &DashboardScope) {
        sql.push(
            ", um AS MATERIALIZED (SELECT DISTINCT tk.sr, tk.patient, tk.practice, tk.reason FROM tk WHERE tk.inp = 1 \
             AND tk.status IN ('rejected', 'cancelled', 'failed', 'on-hold') AND ",
        );
        sql.in_list("tk.reason", &s.unmet_reasons)
            .push(
                "), und AS MATERIALIZED (SELECT DISTINCT um.sr, um.patient, um.reason, nf.code AS need FROM um \
                 CROSS JOIN dash_facts nf WHERE nf.sr = um.sr AND nf.kind = 'need')",
            )
            .push(", f_unmet_need AS MATERIALIZED (")
            .select_row(
                "und.need",
                "und.reason",
                "COUNT(DISTINCT und.sr)",
                "COUNT(DISTINCT und.patient)",
                ["NULL"; 4],
            )
            .push(" FROM und GROUP BY und.need, und.reason)")
            .push(", f_unmet_practice AS MATERIALIZED (")
            .select_row(
                "um.practice",
                "um.reason",
                "COUNT(DISTINCT um.sr)",
                "COUNT(DISTINCT um.patient)",
                ["NULL"; 4],
            )
            .push(" FROM um GROUP BY um.practice, um.reason)");
    }

    /// How embedded the service is, by practice, over referrals received in
    /// the period: n referrals, m of them ended (referral completed or
    /// revoked), x ended ones with a message back (a Communication based on
    /// the referral, category message-back), y Communications based on the
    /// referral sent by the practice or one of its PractitionerRoles
    /// (other than messages back).
    fn part_embedding(sql: &mut Sql) {
        sql.push(
            ", em AS MATERIALIZED (SELECT pop.practice, \
             CASE WHEN pop.status IN ('completed', 'revoked') THEN 1 ELSE 0 END AS ended, \
             CASE WHEN EXISTS (SELECT 1 FROM dash_facts mb WHERE mb.sr = pop.sr AND mb.kind = 'message-back') \
             THEN 1 ELSE 0 END AS mback, \
             (SELECT COUNT(DISTINCT cb.res_id) FROM dash_facts cb WHERE cb.sr = pop.sr AND cb.kind = 'communication' \
             AND (cb.actor = 'Organization/' || pop.practice OR cb.actor IN (SELECT 'PractitionerRole/' || cr.res_id \
             FROM search_reference cr WHERE cr.res_type = 'PractitionerRole' AND cr.param = 'organization' \
             AND cr.target_id = pop.practice))) AS gp_comms \
             FROM pop WHERE pop.inp = 1)",
        );
        sql.push(", f_embedding AS MATERIALIZED (")
            .select_row(
                "em.practice",
                "NULL",
                "COUNT(*)",
                "SUM(em.ended)",
                [
                    "SUM(em.ended * em.mback)",
                    "SUM(em.gp_comms)",
                    "NULL",
                    "NULL",
                ],
            )
            .push(" FROM em GROUP BY em.practice");
        sql.push(")");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every figure's rows over everything stored, as text.
    fn all_figures(store: &Store) -> String {
        let scope = DashboardScope {
            from: "2000-01-01T00:00:00.000000Z".into(),
            to: "2100-01-01T00:00:00.000000Z".into(),
            now: "2026-12-31T00:00:00.000000Z".into(),
            open_before: "2026-01-01T00:00:00.000000Z".into(),
            gp_months: 6,
            swemwbs: vec![(14, 7.0)],
            ..DashboardScope::default()
        };
        format!(
            "{:?}",
            store.dashboard(|r| r.figures(&scope)).expect("figures")
        )
    }

    /// A database whose summary is missing (as before its migration) gets
    /// it back at start, and the figures are those the write path's
    /// summary gave.
    #[test]
    fn a_missing_summary_is_rebuilt_to_the_same_figures() {
        crate::fhir::summary::load().expect("summary elements");
        crate::search::registry::load().expect("search parameters");
        crate::profiles::load().expect("profiles");
        let dir = tempfile::tempdir().expect("temp dir");
        let url = dir.path().join("summary.db").to_string_lossy().into_owned();
        let store = Store::open(&url).expect("open");
        crate::server::load_demo(&store, "http://localhost").expect("demo");
        let written = all_figures(&store);
        assert!(written.contains("referrals_by_need"), "{written}");
        assert_eq!(store.summarise_if_missing().expect("check"), 0);

        let mut w = store.writer().expect("writer");
        for table in ["dash_facts", "dash_referrals"] {
            diesel::sql_query(format!("DELETE FROM {table}"))
                .execute(&mut *w)
                .expect("empty the summary");
        }
        drop(w);
        assert_ne!(all_figures(&store), written);
        assert!(store.summarise_if_missing().expect("rebuild") > 0);
        assert_eq!(all_figures(&store), written);
    }
}
