//! The PCN dashboard's figures (`GET /dashboard/metrics`): what a request's
//! filters mean (`Request`), who may ask for which population (`scope`),
//! how each figure is made from the store's aggregate rows, small-number
//! suppression and confidence intervals (`stats`), and the CSV form
//! (`csv`). Every figure's definition is in README.md, "PCN dashboard";
//! the SQL is in `store/dashboard.rs`, which returns grouped counts and
//! sums, never resources.

pub mod csv;
pub mod stats;
pub mod summary;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};
use time::{Date, Duration, OffsetDateTime};

use crate::auth::access::Access;
use crate::auth::{Principal, Role};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::store::{AggRow, DashboardReader, DashboardScope, DirEntry, Store};

const EMPLOYMENT_MODEL: &str =
    "https://sp-hub.example/fhir/StructureDefinition/sp-employment-model";
const LIST_SIZE: &str = "https://sp-hub.example/fhir/StructureDefinition/sp-registered-list-size";
const SP_NEED: &str = "https://sp-hub.example/fhir/CodeSystem/sp-need";
const STATUS_REASON: &str = "https://sp-hub.example/fhir/CodeSystem/sp-status-reason";
const SWEMWBS: &str = "https://sp-hub.example/fhir/CodeSystem/swemwbs-raw-score";
const MODELS: [&str; 2] = ["pcn-employed", "vcs-subcontracted"];

/// The longest period one request may cover.
const MAX_DAYS: i64 = 5 * 366;

/// Server settings (`serve --dashboard-min-group`).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Groups of fewer people than this show no figure.
    pub min_group: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Month,
    Week,
}

/// A request's parameters, checked.
#[derive(Debug, Clone)]
pub struct Request {
    pub pcn: Option<String>,
    pub practices: Vec<String>,
    pub link_workers: Vec<String>,
    pub employment_model: Option<String>,
    pub needs: Vec<String>,
    pub from: Date,
    /// Inclusive.
    pub to: Date,
    pub bucket: Bucket,
    pub min_group: Option<i64>,
    pub open_weeks: i64,
    pub gp_months: u32,
}

fn bad(param: &str, message: String) -> FhirError {
    FhirError::invalid_at(message, param.to_string())
}

/// `Type/id` → id, for a reference parameter.
fn reference(param: &str, value: &str, ty: &str) -> FhirResult<String> {
    value
        .strip_prefix(&format!("{ty}/"))
        .filter(|id| crate::fhir::resource::check_id(id).is_ok())
        .map(str::to_string)
        .ok_or_else(|| bad(param, format!("{param} '{value}' is not {ty}/ID")))
}

fn date(param: &str, value: &str) -> FhirResult<Date> {
    let f = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(value, &f).map_err(|_| {
        bad(
            param,
            format!("{param} '{value}' is not a date (YYYY-MM-DD)"),
        )
    })
}

fn number(param: &str, value: &str, range: std::ops::RangeInclusive<i64>) -> FhirResult<i64> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            bad(
                param,
                format!(
                    "{param} '{value}' is not a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

impl Request {
    /// Reads the query's parameters; anything unknown or malformed is 400
    /// naming the parameter (an ignored filter would widen the figures).
    pub fn parse(pairs: &[(String, String)], today: Date) -> FhirResult<Request> {
        let profiles = crate::profiles::load().map_err(FhirError::Internal)?;
        let mut r = Request {
            pcn: None,
            practices: vec![],
            link_workers: vec![],
            employment_model: None,
            needs: vec![],
            from: today,
            to: today,
            bucket: Bucket::Month,
            min_group: None,
            open_weeks: 12,
            gp_months: 6,
        };
        let (mut from, mut to) = (None, None);
        for (k, v) in pairs {
            match k.as_str() {
                "pcn" => r.pcn = Some(reference(k, v, "Organization")?),
                "practice" => {
                    for p in list(v) {
                        r.practices.push(reference(k, p, "Organization")?);
                    }
                }
                "link-worker" => {
                    for p in list(v) {
                        r.link_workers.push(format!(
                            "PractitionerRole/{}",
                            reference(k, p, "PractitionerRole")?
                        ));
                    }
                }
                "employment-model" => {
                    if !MODELS.contains(&v.as_str()) {
                        return Err(bad(
                            k,
                            format!(
                                "employment-model '{v}' is not pcn-employed or vcs-subcontracted"
                            ),
                        ));
                    }
                    r.employment_model = Some(v.clone());
                }
                "need" => {
                    for n in list(v) {
                        if profiles.display(SP_NEED, n).is_none() {
                            return Err(bad(k, format!("need '{n}' is not a code of {SP_NEED}")));
                        }
                        r.needs.push(n.to_string());
                    }
                }
                "from" => from = Some(date(k, v)?),
                "to" => to = Some(date(k, v)?),
                "bucket" => {
                    r.bucket = match v.as_str() {
                        "month" => Bucket::Month,
                        "week" => Bucket::Week,
                        _ => return Err(bad(k, format!("bucket '{v}' is not month or week"))),
                    }
                }
                "min-group" => r.min_group = Some(number(k, v, 1..=1000)?),
                "open-weeks" => r.open_weeks = number(k, v, 1..=520)?,
                "gp-months" => r.gp_months = number(k, v, 1..=24)? as u32,
                // Output format, read by the handler.
                "_format" | "_pretty" => {}
                other => {
                    return Err(bad(other, format!("unknown parameter '{other}'")));
                }
            }
        }
        r.to = to.unwrap_or(today);
        r.from = from.unwrap_or(r.to - Duration::days(364));
        if r.from > r.to {
            return Err(bad("from", "from is after to".into()));
        }
        if (r.to - r.from).whole_days() >= MAX_DAYS {
            return Err(bad(
                "from",
                format!("the period is longer than {MAX_DAYS} days"),
            ));
        }
        Ok(r)
    }
}

/// One figure for one group (and bucket): what the JSON lists and the CSV
/// has a row for.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subgroup: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    pub value: Option<f64>,
    pub numerator: Option<f64>,
    pub denominator: Option<f64>,
    /// People the figure is derived from (what suppression counts).
    pub n: Option<i64>,
    pub suppressed: bool,
    /// Further numbers of the figure (p90, confidence interval, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Figure {
    pub fn new(group: &str, value: Option<f64>, n: i64) -> Figure {
        Figure {
            group: group.to_string(),
            subgroup: None,
            bucket: None,
            value: value.map(stats::round),
            numerator: None,
            denominator: None,
            n: Some(n),
            suppressed: false,
            extra: Map::new(),
        }
    }

    /// A count of `value` things about `n` people.
    pub fn count(group: &str, value: i64, n: i64) -> Figure {
        Figure::new(group, Some(value as f64), n)
    }

    /// `numerator / denominator` (none when the denominator is 0).
    pub fn share(group: &str, numerator: f64, denominator: f64, n: i64) -> Figure {
        let value = (denominator > 0.0).then(|| numerator / denominator);
        let mut f = Figure::new(group, value, n);
        f.numerator = Some(stats::round(numerator));
        f.denominator = Some(stats::round(denominator));
        f
    }

    fn sub(mut self, subgroup: &str) -> Figure {
        self.subgroup = Some(subgroup.to_string());
        self
    }

    fn in_bucket(mut self, bucket: &str) -> Figure {
        self.bucket = Some(bucket.to_string());
        self
    }

    fn with(mut self, key: &str, v: Option<f64>) -> Figure {
        self.extra.insert(
            key.to_string(),
            v.map(stats::round).map_or(Value::Null, Value::from),
        );
        self
    }
}

/// The answer: figures by family and name, in order.
pub struct Metrics {
    pub filters: Value,
    pub period: Value,
    pub suppression: i64,
    pub generated: String,
    pub figures: Vec<(&'static str, &'static str, Vec<Figure>)>,
}

impl Metrics {
    pub fn to_json(&self) -> Value {
        let mut figures = Map::new();
        for (family, name, rows) in &self.figures {
            let fam = figures
                .entry(family.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = fam {
                m.insert(name.to_string(), json!(rows));
            }
        }
        json!({
            "filters": self.filters,
            "period": self.period,
            "suppression": self.suppression,
            "generated": self.generated,
            "figures": figures,
        })
    }
}

/// The link workers and organisations the figures name.
struct Directory {
    /// PractitionerRole id → (organization id, employment model code).
    roles: BTreeMap<String, (String, Option<String>)>,
    /// Practice id → (name, registered list size).
    practices: BTreeMap<String, (String, Option<i64>)>,
    pcn_orgs: Vec<String>,
    vcs_orgs: Vec<String>,
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn extension<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    v.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
}

impl Directory {
    fn read(
        r: &mut DashboardReader,
        pcn: Option<&str>,
        practices: &[String],
    ) -> FhirResult<Directory> {
        let parse = |e: &DirEntry| serde_json::from_str::<Value>(&e.body).unwrap_or(Value::Null);
        let roles = r
            .link_worker_roles(pcn)?
            .iter()
            .map(|e| {
                let v = parse(e);
                let org = str_at(&v, "/organization/reference")
                    .and_then(|s| s.strip_prefix("Organization/"))
                    .unwrap_or_default()
                    .to_string();
                let model = extension(&v, EMPLOYMENT_MODEL)
                    .and_then(|x| str_at(x, "/valueCoding/code"))
                    .map(str::to_string);
                (e.res_id.clone(), (org, model))
            })
            .collect();
        let practices = r
            .organizations("gp-practice", pcn, practices)?
            .iter()
            .map(|e| {
                let v = parse(e);
                let name = str_at(&v, "/name").unwrap_or_default().to_string();
                let size = extension(&v, LIST_SIZE)
                    .and_then(|x| x.get("valueInteger"))
                    .and_then(Value::as_i64);
                (e.res_id.clone(), (name, size))
            })
            .collect();
        let ids = |v: Vec<DirEntry>| v.into_iter().map(|e| e.res_id).collect::<Vec<_>>();
        Ok(Directory {
            roles,
            practices,
            pcn_orgs: ids(r.organizations("pcn", None, &[])?),
            vcs_orgs: ids(r.organizations("vcs", None, &[])?),
        })
    }

    /// Actors (`Type/id`) of an employment model: link workers whose role
    /// says so, and the organisations of that side (a PCN's own cases are
    /// PCN-employed work, a VCS organisation's subcontracted).
    fn side(&self, model: &str) -> Vec<String> {
        let orgs = if model == "pcn-employed" {
            &self.pcn_orgs
        } else {
            &self.vcs_orgs
        };
        self.roles
            .iter()
            .filter(|(_, (_, m))| m.as_deref() == Some(model))
            .map(|(id, _)| format!("PractitionerRole/{id}"))
            .chain(orgs.iter().map(|o| format!("Organization/{o}")))
            .collect()
    }

    fn model_of(&self, actor: &str) -> &'static str {
        for m in MODELS {
            if self.side(m).iter().any(|a| a == actor) {
                return m;
            }
        }
        "unknown"
    }
}

/// The caller's population: which PCN, practices and (for a VCS) work.
/// A PCN sees its own PCN, a GP its own practice, a VCS the referrals it
/// (or one of its link workers) holds a Task on, an admin any.
fn scope_for(caller: &Principal, req: &Request) -> FhirResult<(Option<String>, Vec<String>, bool)> {
    let org = caller
        .organization
        .strip_prefix("Organization/")
        .unwrap_or(&caller.organization)
        .to_string();
    match caller.role {
        Role::Admin => Ok((req.pcn.clone(), req.practices.clone(), false)),
        Role::Pcn => match &req.pcn {
            Some(p) if *p != org => Err(FhirError::Forbidden(format!(
                "a PCN client sees its own PCN's figures only (Organization/{org})"
            ))),
            _ => Ok((Some(org), req.practices.clone(), false)),
        },
        Role::Gp => {
            if req.pcn.is_some() || req.practices.iter().any(|p| *p != org) {
                return Err(FhirError::Forbidden(format!(
                    "a GP practice sees its own practice's figures only (Organization/{org})"
                )));
            }
            Ok((None, vec![org], false))
        }
        Role::Vcs => Ok((req.pcn.clone(), req.practices.clone(), true)),
    }
}

/// Weekly buckets start on Monday; monthly ones are calendar months.
fn bucket_of(bucket: Bucket, day: Date) -> String {
    match bucket {
        Bucket::Month => format!("{:04}-{:02}", day.year(), day.month() as u8),
        Bucket::Week => {
            let monday = day - Duration::days(i64::from(day.weekday().number_days_from_monday()));
            monday.to_string()
        }
    }
}

fn buckets(req: &Request) -> Vec<String> {
    let mut out = Vec::<String>::new();
    let mut d = req.from;
    while d <= req.to {
        let b = bucket_of(req.bucket, d);
        if out.last() != Some(&b) {
            out.push(b);
        }
        d = match d.next_day() {
            Some(n) => n,
            None => break,
        };
    }
    out
}

fn instant(d: Date) -> String {
    crate::fhir::instant::format(d.midnight().assume_utc())
}

/// Status reasons that count as an unmet need, and SWEMWBS raw totals with
/// their metric scores.
type CodeTables = (Vec<String>, Vec<(i64, f64)>);

/// The code systems the figures read: reason groups and SWEMWBS metrics.
fn code_tables() -> FhirResult<CodeTables> {
    let profiles = crate::profiles::load().map_err(FhirError::Internal)?;
    let concepts = |url: &str| -> Vec<Value> {
        profiles
            .resource(url)
            .and_then(|cs| cs.get("concept"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let prop = |c: &Value, code: &str| -> Option<Value> {
        c.get("property")?
            .as_array()?
            .iter()
            .find(|p| p.get("code").and_then(Value::as_str) == Some(code))
            .cloned()
    };
    // Unmet need: the service was missing or full, or the person was not
    // ready for it.
    let unmet = concepts(STATUS_REASON)
        .iter()
        .filter(|c| {
            let group = prop(c, "reason-group").and_then(|p| {
                p.get("valueCode")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            matches!(group.as_deref(), Some("service-gap" | "capacity"))
                || c.get("code").and_then(Value::as_str) == Some("not-ready")
        })
        .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_string))
        .collect();
    let swemwbs = concepts(SWEMWBS)
        .iter()
        .filter_map(|c| {
            let raw = c.get("code")?.as_str()?.parse::<i64>().ok()?;
            let metric = prop(c, "metric")?.get("valueDecimal")?.as_f64()?;
            Some((raw, metric))
        })
        .collect();
    Ok((unmet, swemwbs))
}

/// Every figure for `req` as `caller` may see them.
pub fn metrics(
    caller: &Principal,
    store: &Store,
    req: &Request,
    settings: Settings,
) -> FhirResult<Metrics> {
    let (pcn, practices, vcs) = scope_for(caller, req)?;
    let min = req
        .min_group
        .map_or(settings.min_group, |m| m.max(settings.min_group));
    let (unmet_reasons, swemwbs) = code_tables()?;
    let now_t = OffsetDateTime::now_utc();
    let now = crate::fhir::instant::format(now_t);
    let open_before = crate::fhir::instant::format(now_t - Duration::weeks(req.open_weeks));
    let to_excl = req.to.next_day().unwrap_or(req.to);
    let caller_org = caller
        .organization
        .strip_prefix("Organization/")
        .unwrap_or(&caller.organization)
        .to_string();

    store.dashboard(|r| {
        let dir = Directory::read(r, pcn.as_deref(), &practices)?;
        let mut owners: Option<Vec<String>> = None;
        if !req.link_workers.is_empty() {
            owners = Some(req.link_workers.clone());
        }
        if let Some(m) = &req.employment_model {
            let side = dir.side(m);
            owners = Some(match owners {
                Some(o) => o.into_iter().filter(|a| side.contains(a)).collect(),
                None => side,
            });
        }
        let any_task_owner = vcs.then(|| {
            // A VCS's own work: its organisation and its link workers'
            // PractitionerRoles (those serving the PCN named, else any).
            let mut own = vec![format!("Organization/{caller_org}")];
            own.extend(
                dir.roles
                    .iter()
                    .filter(|(_, (o, _))| *o == caller_org)
                    .map(|(id, _)| format!("PractitionerRole/{id}")),
            );
            own
        });
        // Read the population from the practices' referrals when they are
        // known: the PCN's member practices, narrowed to those asked for.
        let lead_practices = match (&pcn, practices.is_empty()) {
            (_, false) => Some(practices.clone()),
            (Some(_), true) => Some(dir.practices.keys().cloned().collect()),
            (None, true) => None,
        };
        let scope = DashboardScope {
            access: Access::of(caller),
            pcn: pcn.clone(),
            practices: practices.clone(),
            lead_practices,
            owners,
            any_task_owner,
            needs: req.needs.clone(),
            from: instant(req.from),
            to: instant(to_excl),
            now: now.clone(),
            open_before: open_before.clone(),
            gp_months: req.gp_months,
            pcn_side: dir.side("pcn-employed"),
            vcs_side: dir.side("vcs-subcontracted"),
            unmet_reasons: unmet_reasons.clone(),
            swemwbs: swemwbs.clone(),
        };
        let rows = Rows(r.figures(&scope)?);
        let mut figures = vec![];
        referrals(&rows, &scope, req, &dir, &mut figures);
        funnel(&rows, &mut figures);
        waits(&rows, &mut figures);
        caseload(&rows, &dir, &mut figures);
        activity(&rows, &mut figures);
        outcomes(&rows, &mut figures);
        gp_contacts(&rows, req, &mut figures);
        continuity(&rows, &mut figures);
        unmet(&rows, &mut figures);
        embedding(&rows, &mut figures);
        for (_, _, rows) in figures.iter_mut() {
            for f in rows.iter_mut() {
                stats::suppress(f, min);
            }
        }
        Ok(Metrics {
            filters: json!({
                "pcn": pcn.as_ref().map(|p| format!("Organization/{p}")),
                "practice": practices.iter().map(|p| format!("Organization/{p}")).collect::<Vec<_>>(),
                "link-worker": req.link_workers,
                "employment-model": req.employment_model,
                "need": req.needs,
            }),
            period: json!({
                "from": req.from.to_string(),
                "to": req.to.to_string(),
                "bucket": req.bucket,
                "buckets": buckets(req),
                "open-weeks": req.open_weeks,
                "gp-months": req.gp_months,
            }),
            suppression: min,
            generated: now.clone(),
            figures,
        })
    })
}

type Out = Vec<(&'static str, &'static str, Vec<Figure>)>;

/// The rows of every figure, from `DashboardReader::figures`.
struct Rows(Vec<AggRow>);

impl Rows {
    fn of(&self, k: &str) -> Vec<AggRow> {
        self.0.iter().filter(|r| r.k == k).cloned().collect()
    }
}

fn practice_ref(id: &str) -> String {
    format!("Organization/{id}")
}

fn referrals(r: &Rows, s: &DashboardScope, req: &Request, dir: &Directory, out: &mut Out) {
    let rows = r.of("referrals_by_day");
    let bucket_list = buckets(req);
    let mut by_practice: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut by_bucket: BTreeMap<String, i64> = bucket_list.iter().map(|b| (b.clone(), 0)).collect();
    let mut by_pb: BTreeMap<(String, String), i64> = BTreeMap::new();
    for row in &rows {
        let practice = row.g1.clone().unwrap_or_default();
        let day = row.g2.as_deref().and_then(|d| date("from", d).ok());
        let e = by_practice.entry(practice.clone()).or_default();
        e.0 += row.n;
        e.1 += row.m;
        if let Some(day) = day {
            let b = bucket_of(req.bucket, day);
            *by_bucket.entry(b.clone()).or_default() += row.n;
            *by_pb.entry((practice, b)).or_default() += row.n;
        }
    }
    // Every practice in scope is listed, with none received as 0.
    for id in dir.practices.keys() {
        if s.practices.is_empty() || s.practices.contains(id) {
            by_practice.entry(id.clone()).or_default();
        }
    }
    let total: i64 = rows.iter().map(|x| x.n).sum();
    let people: i64 = by_practice.values().map(|v| v.1).sum();
    let (mut known_n, mut known_size) = (0i64, 0i64);
    let mut practice_figs = vec![];
    for (id, (n, m)) in &by_practice {
        let (name, size) = dir.practices.get(id).cloned().unwrap_or_default();
        let mut f = Figure::count(&practice_ref(id), *n, *m);
        f.numerator = Some(*n as f64);
        f.denominator = size.map(|x| x as f64);
        if let Some(size) = size.filter(|x| *x > 0) {
            known_n += n;
            known_size += size;
            f = f.with("per_1000", Some(*n as f64 * 1000.0 / size as f64));
        } else {
            f = f.with("per_1000", None);
        }
        f.extra.insert("name".into(), Value::from(name));
        practice_figs.push(f);
    }
    let mut t = Figure::count("all", total, people);
    t.numerator = Some(known_n as f64);
    t.denominator = Some(known_size as f64);
    t = t.with(
        "per_1000",
        (known_size > 0).then(|| known_n as f64 * 1000.0 / known_size as f64),
    );
    out.push(("referrals", "total", vec![t]));
    out.push(("referrals", "by_practice", practice_figs));
    let need_rows = r.of("referrals_by_need");
    out.push((
        "referrals",
        "by_need",
        need_rows
            .iter()
            .map(|x| Figure::count(x.g1.as_deref().unwrap_or("unknown"), x.n, x.m))
            .collect(),
    ));
    out.push((
        "referrals",
        "by_bucket",
        by_bucket
            .iter()
            .map(|(b, n)| Figure::count("all", *n, *n).in_bucket(b))
            .collect(),
    ));
    let mut pb = vec![];
    for (id, _) in by_practice.iter().filter(|(_, v)| v.0 > 0) {
        for b in &bucket_list {
            let n = by_pb.get(&(id.clone(), b.clone())).copied().unwrap_or(0);
            pb.push(Figure::count(&practice_ref(id), n, n).in_bucket(b));
        }
    }
    out.push(("referrals", "by_practice_bucket", pb));
}

fn funnel(r: &Rows, out: &mut Out) {
    let rows = r.of("task_outcomes");
    let sum = |f: &dyn Fn(&AggRow) -> bool| -> (i64, i64) {
        rows.iter()
            .filter(|x| f(x))
            .fold((0, 0), |a, x| (a.0 + x.n, a.1 + x.m))
    };
    let status = |x: &AggRow, st: &str| x.g1.as_deref() == Some(st);
    let declined = |x: &AggRow| x.g2.as_deref() == Some("declined-by-person");
    let (tasks, tasks_people) = sum(&|_| true);
    let accepted: i64 = rows.iter().map(|x| x.x.unwrap_or(0.0) as i64).sum();
    let accepted_people: i64 = rows
        .iter()
        .filter(|x| x.x.unwrap_or(0.0) > 0.0)
        .map(|x| x.m)
        .sum();
    let stage = |name: &str, (n, m): (i64, i64)| Figure::share(name, n as f64, tasks as f64, m);
    let mut stages = vec![
        stage("received", (tasks, tasks_people)),
        stage("accepted", (accepted, accepted_people)),
        stage("rejected", sum(&|x| status(x, "rejected"))),
        stage("declined_by_person", sum(&|x| declined(x))),
        stage("completed", sum(&|x| status(x, "completed"))),
        stage(
            "cancelled",
            sum(&|x| status(x, "cancelled") && !declined(x)),
        ),
        stage("failed", sum(&|x| status(x, "failed"))),
    ];
    for st in ["requested", "accepted", "in-progress", "on-hold"] {
        let name = match st {
            "requested" => "open_requested",
            "accepted" => "open_accepted",
            "in-progress" => "open_in_progress",
            _ => "open_on_hold",
        };
        stages.push(stage(name, sum(&|x| status(x, st))));
    }
    out.push(("funnel", "stages", stages));
    let mut by_reason: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for x in rows.iter().filter(|x| status(x, "rejected")) {
        let e = by_reason
            .entry(x.g2.clone().unwrap_or_else(|| "none".into()))
            .or_default();
        e.0 += x.n;
        e.1 += x.m;
    }
    out.push((
        "funnel",
        "rejected_by_reason",
        by_reason
            .iter()
            .map(|(k, (n, m))| Figure::count(k, *n, *m))
            .collect(),
    ));
    let pool = r.of("open_pool");
    let p = pool.first().cloned().unwrap_or_default();
    out.push((
        "funnel",
        "open_pool",
        vec![Figure::count("pool", p.n, p.m)
            .with("oldest_days", p.x)
            .with("mean_age_days", p.y)],
    ));
}

fn waits(r: &Rows, out: &mut Out) {
    let rows = r.of("waits");
    for (kind, name) in [
        ("first-contact", "first_contact"),
        ("acceptance", "acceptance"),
    ] {
        let pick = |stat: &str| {
            rows.iter()
                .find(|x| x.g1.as_deref() == Some(kind) && x.g2.as_deref() == Some(stat))
        };
        let n = pick("mean").map_or(0, |x| x.n);
        let f = Figure::new("all", pick("median").and_then(|x| x.x), n)
            .with("p90", pick("p90").and_then(|x| x.x))
            .with("mean", pick("mean").and_then(|x| x.x));
        out.push(("waits", name, vec![f]));
    }
}

fn caseload(r: &Rows, dir: &Directory, out: &mut Out) {
    let rows = r.of("caseload");
    let mut by_worker = vec![];
    let mut by_model: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for x in &rows {
        let owner = x.g1.clone().unwrap_or_else(|| "unowned".into());
        let model = dir.model_of(&owner);
        let e = by_model.entry(model).or_default();
        e.0 += x.n;
        e.1 += x.m;
        let mut f = Figure::count(&owner, x.n, x.m).with("open_longer", x.x);
        f.extra
            .insert("employment_model".into(), Value::from(model));
        by_worker.push(f);
    }
    out.push(("pressure", "by_link_worker", by_worker));
    let mut models = vec![];
    for m in MODELS {
        let workers = dir
            .roles
            .values()
            .filter(|(_, mm)| mm.as_deref() == Some(m))
            .count() as f64;
        let (n, people) = by_model.get(m).copied().unwrap_or_default();
        models.push(Figure::share(m, n as f64, workers, people));
    }
    out.push(("caseload", "per_link_worker", models));
}

fn model_label(g: Option<&str>) -> String {
    match g {
        Some("*") | None => "all".into(),
        Some(m) => m.to_string(),
    }
}

fn activity(r: &Rows, out: &mut Out) {
    let rows = r.of("contacts");
    let mut per_person = vec![];
    let mut by_mode = vec![];
    for x in &rows {
        let model = model_label(x.g1.as_deref());
        if x.g2.as_deref() == Some("*") {
            per_person.push(Figure::share(&model, x.n as f64, x.m as f64, x.m));
        } else {
            by_mode.push(Figure::count(&model, x.n, x.m).sub(x.g2.as_deref().unwrap_or("unknown")));
        }
    }
    if per_person.is_empty() {
        per_person.push(Figure::share("all", 0.0, 0.0, 0));
    }
    out.push(("activity", "contacts_per_person", per_person));
    out.push(("activity", "contacts_by_mode", by_mode));
    let rows = r.of("holding_work");
    let mut holding = vec![];
    let mut without = Figure::count("all", 0, 0).with("referrals", Some(0.0));
    for x in &rows {
        let model = model_label(x.g1.as_deref());
        if model == "all" {
            let refs = x.z.unwrap_or(0.0);
            without = Figure::count("all", x.y.unwrap_or(0.0) as i64, refs as i64)
                .with("referrals", Some(refs));
        }
        holding.push(Figure::count(&model, x.n, x.m).with("hours", x.x));
    }
    out.push(("activity", "holding_work", holding));
    out.push(("pressure", "holding_without_service", vec![without]));
}

fn outcomes(r: &Rows, out: &mut Out) {
    let rows = r.of("outcomes");
    let mut figs = vec![];
    for x in &rows {
        let measure = x.g1.as_deref().unwrap_or("unknown");
        let stats = stats::mean_ci(x.n, x.x.unwrap_or(0.0), x.y.unwrap_or(0.0));
        let nf = x.n.max(1) as f64;
        let f = Figure::new(measure, stats.as_ref().map(|m| m.mean), x.m)
            .with("pairs", Some(x.n as f64))
            .with("baseline_mean", x.z.map(|v| v / nf))
            .with("follow_up_mean", x.w.map(|v| v / nf))
            .with("sd", stats.as_ref().and_then(|m| m.sd))
            .with("ci_low", stats.as_ref().and_then(|m| m.ci.map(|c| c.0)))
            .with("ci_high", stats.as_ref().and_then(|m| m.ci.map(|c| c.1)));
        figs.push(f);
    }
    out.push(("outcomes", "paired", figs));
}

fn gp_contacts(r: &Rows, req: &Request, out: &mut Out) {
    let x = r
        .of("gp_consultations")
        .first()
        .cloned()
        .unwrap_or_default();
    let nf = x.n as f64;
    let before = (x.n > 0).then(|| x.x.unwrap_or(0.0) / nf);
    let after = (x.n > 0).then(|| x.y.unwrap_or(0.0) / nf);
    let change = before.zip(after).map(|(b, a)| a - b);
    let f = Figure::new("all", change, x.m)
        .with("referrals", Some(nf))
        .with("before_mean", before)
        .with("after_mean", after)
        .with("months", Some(f64::from(req.gp_months)));
    out.push(("gp_contacts", "before_after", vec![f]));
}

fn continuity(r: &Rows, out: &mut Out) {
    let x = r.of("continuity").first().cloned().unwrap_or_default();
    let (within, across) = (x.x.unwrap_or(0.0), x.y.unwrap_or(0.0));
    let f = Figure::share("all", x.m as f64, x.n as f64, x.n)
        .with("handovers_within_employer", Some(within))
        .with("handovers_across_employers", Some(across))
        .with(
            "handovers_per_trail",
            (x.n > 0).then(|| (within + across) / x.n as f64),
        );
    out.push(("continuity", "one_link_worker", vec![f]));
}

fn unmet(r: &Rows, out: &mut Out) {
    for (by_need, name) in [(true, "by_need"), (false, "by_practice")] {
        let rows = r.of(if by_need {
            "unmet_need"
        } else {
            "unmet_practice"
        });
        let mut figs = vec![];
        for x in &rows {
            let g = x.g1.clone().unwrap_or_else(|| "unknown".into());
            let g = if by_need { g } else { practice_ref(&g) };
            figs.push(Figure::count(&g, x.n, x.m).sub(x.g2.as_deref().unwrap_or("unknown")));
        }
        out.push(("unmet_needs", name, figs));
    }
}

fn embedding(r: &Rows, out: &mut Out) {
    let rows = r.of("embedding");
    let figs = rows
        .iter()
        .map(|x| {
            let id = x.g1.as_deref().unwrap_or_default();
            Figure::share(&practice_ref(id), x.x.unwrap_or(0.0), x.m as f64, x.n)
                .with("referrals", Some(x.n as f64))
                .with("gp_communications", x.y)
        })
        .collect();
    out.push(("embedding", "by_practice", figs));
}

/// Today's date (UTC), the default end of the period.
pub fn today() -> Date {
    OffsetDateTime::now_utc().date()
}
