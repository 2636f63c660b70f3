//! `Organization/{id}/$records`: a VCS organisation's Tasks as flat rows in
//! its own shape (its record mapping, `mapping.rs`), and rows coming back
//! applied to the Tasks and the records of the work on them.
//!
//! Outbound reads only what the mapping names, for the Tasks the
//! organisation (or one of its PractitionerRoles) owns, in the caller's
//! view. Inbound runs each row as one writing transaction through
//! `interactions::transaction` and the ordinary write steps
//! (`interactions::write::update`), so a row gets the workflow rules, the
//! profiles, the role's property rules, the Provenance and the audit
//! record that a FHIR write gets; a row that fails anywhere is rolled back
//! whole and reported by column.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::concept_map::{self, Request};
use super::mapping::{self, cs, Field, Mapping};
use crate::auth::access::Access;
use crate::auth::scopes::Perms;
use crate::auth::{Need, Principal, Role};
use crate::fhir::outcome::{FhirError, FhirResult};
use crate::fhir::resource;
use crate::interactions::{self, live, write};
use crate::profiles::{self, CANONICAL_BASE};
use crate::search::{SearchQuery, MAX_COUNT, MAX_OR_VALUES};
use crate::store::{Store, Tx};

/// Most resources one listing reads of a type; more is refused (422)
/// rather than answered slowly.
const MAX_READ: usize = 10_000;
const SNOMED: &str = "http://snomed.info/sct";
const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// Rows in the organisation's shape: the column names, then one row of
/// cells a Task.
pub struct Records {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// An inbound row: (column, cell) pairs as the client sent them.
pub type Row = Vec<(String, String)>;

/// What happened to each row of an inbound request.
pub struct Report {
    pub dry_run: bool,
    pub rows: Vec<RowReport>,
}

pub struct RowReport {
    /// 1-based position among the data rows (a CSV header is not a row).
    pub row: usize,
    pub task: Option<String>,
    pub applied: bool,
    /// The versions the row wrote (or, in a dry run, would write).
    pub written: Vec<String>,
    pub errors: Vec<(String, String)>,
}

impl Report {
    pub fn applied(&self) -> usize {
        self.rows.iter().filter(|r| r.applied).count()
    }

    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = json!({"row": r.row, "applied": r.applied, "written": r.written});
                if let Some(t) = &r.task {
                    v["task"] = json!(t);
                }
                if !r.errors.is_empty() {
                    v["errors"] = r
                        .errors
                        .iter()
                        .map(|(c, m)| json!({"row": r.row, "column": c, "message": m}))
                        .collect();
                }
                v
            })
            .collect();
        json!({
            "dryRun": self.dry_run,
            "applied": self.applied(),
            "failed": self.rows.len() - self.applied(),
            "rows": rows,
        })
    }
}

/// What a request for one organisation's records works with.
struct Context {
    org: String,
    mapping: Mapping,
    categories: Option<Value>,
    /// `Organization/{id}` and its PractitionerRoles: the Task owners that
    /// make a Task the organisation's.
    owners: BTreeSet<String>,
}

/// Every live `res_type` matching `params` in `access`'s view, all pages.
fn search_all(
    store: &Store,
    access: &Access,
    res_type: &str,
    params: &[(String, String)],
) -> FhirResult<Vec<Value>> {
    let mut params = params.to_vec();
    params.push(("_count".into(), MAX_COUNT.to_string()));
    params.push(("_total".into(), "none".into()));
    let mut q = SearchQuery::parse(res_type, &params, true)?;
    q.access = access.clone();
    let mut out = vec![];
    loop {
        let page = store.search(res_type, &q)?;
        for c in &page.items {
            out.push(body(&c.body)?);
        }
        if out.len() > MAX_READ {
            return Err(FhirError::Unprocessable {
                message: format!("more than {MAX_READ} {res_type} resources to read at once"),
                expression: None,
            });
        }
        match page.items.last() {
            Some(last) if page.more => q.after_id = Some(last.res_id.clone()),
            _ => return Ok(out),
        }
    }
}

/// `search_all` for a reference parameter naming any of `refs`.
fn search_refs(
    store: &Store,
    access: &Access,
    res_type: &str,
    param: &str,
    refs: &[String],
) -> FhirResult<Vec<Value>> {
    let mut out = vec![];
    for chunk in refs.chunks(MAX_OR_VALUES) {
        out.extend(search_all(
            store,
            access,
            res_type,
            &[(param.to_string(), chunk.join(","))],
        )?);
    }
    Ok(out)
}

fn body(text: &str) -> FhirResult<Value> {
    serde_json::from_str(text)
        .map_err(|e| FhirError::Internal(format!("stored JSON unreadable: {e}")))
}

/// Every ConceptMap with canonical `url` (any, when `None`) the caller can
/// read: ours from `fhir-profiles/`, then those stored through the API.
pub fn concept_maps(
    caller: &Principal,
    store: &Store,
    url: Option<&str>,
) -> FhirResult<Vec<Value>> {
    let p = profiles::load().map_err(FhirError::Internal)?;
    let wanted = |m: &Value| url.is_none_or(|u| m["url"].as_str() == u.split('|').next());
    let mut maps: Vec<Value> = p.concept_maps().filter(|m| wanted(m)).cloned().collect();
    // ConceptMap has no search parameters loaded: the stored ones are few
    // and are filtered here.
    maps.extend(
        search_all(store, &Access::of(caller), "ConceptMap", &[])?
            .into_iter()
            .filter(|m| wanted(m)),
    );
    Ok(maps)
}

/// The ConceptMap `ConceptMap/{id}`: the stored one, else ours.
pub fn concept_map_by_id(caller: &Principal, store: &Store, id: &str) -> FhirResult<Value> {
    resource::check_id(id)?;
    if let Some(c) = store.read_as(&Access::of(caller), "ConceptMap", id)? {
        return body(&live(Some(&c), "ConceptMap", id)?.body);
    }
    let p = profiles::load().map_err(FhirError::Internal)?;
    p.resource(&format!("{CANONICAL_BASE}/ConceptMap/{id}"))
        .cloned()
        .ok_or_else(|| interactions::not_found("ConceptMap", id))
}

/// `$translate`: the Parameters answer for `req`, over the map with `id`
/// (instance level), the map given inline, the maps with `url`, or every
/// map that can answer.
pub fn translate(
    caller: &Principal,
    store: &Store,
    id: Option<&str>,
    req: &Request,
) -> FhirResult<Value> {
    let codings = req.codings()?;
    let maps = match (id, &req.concept_map, &req.url) {
        (Some(id), _, _) => vec![concept_map_by_id(caller, store, id)?],
        (None, Some(map), _) => vec![map.clone()],
        (None, None, Some(url)) => {
            let maps = concept_maps(caller, store, Some(url))?;
            if maps.is_empty() {
                return Err(FhirError::NotFound(format!(
                    "no ConceptMap with url '{url}' is known"
                )));
            }
            maps
        }
        (None, None, None) => concept_maps(caller, store, None)?,
    };
    let mut matches = vec![];
    for map in maps.iter().filter(|m| concept_map::serves_target(m, req)) {
        for (system, code) in &codings {
            matches.extend(concept_map::translate(map, req, system, code));
        }
    }
    Ok(concept_map::parameters(&codings, &matches))
}

/// The request's organisation, its mapping and its category map. A VCS
/// may only name its own organisation (anything else is 404, as for
/// what is outside its view); an admin any.
fn context(caller: &Principal, store: &Store, org: &str) -> FhirResult<Context> {
    resource::check_id(org)?;
    let me = format!("Organization/{org}");
    if caller.role != Role::Admin && caller.organization != me {
        return Err(interactions::not_found("Organization", org));
    }
    let access = Access::of(caller);
    let current = store.read_as(&access, "Organization", org)?;
    live(current.as_ref(), "Organization", org)?;
    // Basic has no search parameters loaded: the caller's Basics are
    // filtered here (a VCS sees those it wrote).
    let found: Vec<Value> = search_all(store, &access, "Basic", &[])?
        .into_iter()
        .filter(|b| {
            b["subject"]["reference"] == me.as_str()
                && b["code"]["coding"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["system"] == mapping::KIND_SYSTEM && c["code"] == mapping::KIND_CODE
                    })
                })
        })
        .collect();
    let basic = match found.as_slice() {
        [one] => one,
        [] => {
            return Err(FhirError::NotFound(format!(
                "{me} has no record mapping: a Basic with code {}|{} and subject {me}",
                mapping::KIND_SYSTEM,
                mapping::KIND_CODE
            )))
        }
        _ => {
            return Err(FhirError::Unprocessable {
                message: format!("{me} has more than one record mapping; keep one"),
                expression: None,
            })
        }
    };
    let basic_id = basic["id"].as_str().unwrap_or_default();
    let unusable = |why: String| FhirError::Unprocessable {
        message: format!("the record mapping Basic/{basic_id} is not usable: {why}"),
        expression: Some("Basic.extension".into()),
    };
    let text = basic["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == mapping::EXTENSION)
        .and_then(|e| e["valueString"].as_str())
        .ok_or_else(|| unusable(format!("it has no {} extension", mapping::EXTENSION)))?;
    let mapping = Mapping::parse(text).map_err(unusable)?;
    let categories = match &mapping.category_map {
        None => None,
        Some(url) => Some(
            concept_maps(caller, store, Some(url))?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    unusable(format!("its categoryMap '{url}' is not a known ConceptMap"))
                })?,
        ),
    };
    let mut owners: BTreeSet<String> = search_all(
        store,
        &Access::All,
        "PractitionerRole",
        &[("organization".into(), me.clone())],
    )?
    .iter()
    .filter_map(|r| r["id"].as_str().map(|id| format!("PractitionerRole/{id}")))
    .collect();
    owners.insert(me);
    Ok(Context {
        org: org.to_string(),
        mapping,
        categories,
        owners,
    })
}

/// The sp-need codes of a referral: its sp-need reasons, and its SNOMED CT
/// reasons through our `snomed-to-sp-need` map.
fn needs(referral: &Value) -> Vec<String> {
    let need = cs("sp-need");
    let mut out: Vec<String> = vec![];
    let codings = referral["reasonCode"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rc| rc["coding"].as_array().into_iter().flatten());
    for c in codings {
        let (system, code) = (c["system"].as_str(), c["code"].as_str().unwrap_or_default());
        let found: Vec<String> = match system {
            Some(s) if s == need => vec![code.to_string()],
            Some(SNOMED) => super::reasons::needs_of_snomed(code)
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
            _ => vec![],
        };
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    out
}

/// The organisation's words for sp-need codes (the codes themselves
/// without a category map, or for a need the map does not translate).
fn category_words(ctx: &Context, needs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for n in needs {
        let words: Vec<String> = match &ctx.categories {
            None => vec![],
            Some(map) => concept_map::translate(map, &Request::default(), &cs("sp-need"), n)
                .into_iter()
                .filter(concept_map::acceptable)
                .filter_map(|m| m.concept.map(|c| c.code))
                .collect(),
        };
        let words = if words.is_empty() {
            vec![n.clone()]
        } else {
            words
        };
        for w in words {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// The sp-need codes an organisation's category word stands for.
fn category_needs(ctx: &Context, word: &str) -> Option<Vec<String>> {
    let need = cs("sp-need");
    let Some(map) = &ctx.categories else {
        return mapping::code_for(&[], "sp-need", word).map(|c| vec![c]);
    };
    let reverse = Request::back_to(&need);
    let found: Vec<String> = map["group"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["source"] == need.as_str())
        .filter_map(|g| g["target"].as_str())
        .flat_map(|system| concept_map::translate(map, &reverse, system, word.trim()))
        .filter(concept_map::acceptable)
        .filter_map(|m| m.concept.map(|c| c.code))
        .collect();
    if found.is_empty() {
        // A need the map gives no category for goes out as its sp-need
        // code (`category_words`), so it comes back in as one.
        return mapping::code_for(&[], "sp-need", word).map(|c| vec![c]);
    }
    Some(found)
}

fn reference(v: &Value) -> &str {
    v["reference"].as_str().unwrap_or_default()
}

fn coded<'a>(v: &'a Value, system: &str) -> Option<&'a str> {
    let codings = |cc: &'a Value| cc["coding"].as_array().into_iter().flatten();
    let ccs: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    ccs.into_iter()
        .flat_map(codings)
        .find(|c| c["system"] == system)
        .and_then(|c| c["code"].as_str())
}

/// The resource of `list` whose `start` (a date or dateTime) is latest.
fn latest<'a>(
    list: impl IntoIterator<Item = &'a Value>,
    start: impl Fn(&Value) -> Option<&str>,
) -> Option<&'a Value> {
    list.into_iter()
        .filter(|v| start(v).is_some())
        .max_by(|a, b| start(a).cmp(&start(b)))
}

fn outcome_of<'a>(list: &'a [Value], measure: &str, timing: &str) -> Option<&'a Value> {
    let of = list.iter().filter(|o| {
        coded(&o["code"], &cs("sp-outcome-measure")) == Some(measure)
            && coded(&o["category"], &cs("sp-outcome-timing")) == Some(timing)
    });
    latest(of, |o| o["effectiveDateTime"].as_str())
}

fn by_based_on(list: Vec<Value>) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for v in list {
        if let Some(r) = v["basedOn"][0]["reference"].as_str() {
            out.entry(r.to_string()).or_default().push(v);
        }
    }
    out
}

/// GET: the organisation's Tasks (optionally only those with a status in
/// `status`, comma-separated) as rows of the mapped columns only.
pub fn outbound(
    caller: &Principal,
    store: &Store,
    org: &str,
    status: Option<&str>,
) -> FhirResult<Records> {
    let ctx = context(caller, store, org)?;
    let access = Access::of(caller);
    let m = &ctx.mapping;
    let owners: Vec<String> = ctx.owners.iter().cloned().collect();
    let mut tasks = vec![];
    for chunk in owners.chunks(MAX_OR_VALUES) {
        let mut params = vec![("owner".to_string(), chunk.join(","))];
        if let Some(s) = status {
            params.push(("status".into(), s.to_string()));
        }
        tasks.extend(search_all(store, &access, "Task", &params)?);
    }
    tasks.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let focus: Vec<String> = tasks
        .iter()
        .map(|t| reference(&t["focus"]).to_string())
        .filter(|r| r.starts_with("ServiceRequest/"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let wants = |fs: &[Field]| fs.iter().any(|f| m.has(f));
    let wants_outcomes = m
        .columns
        .iter()
        .any(|c| matches!(c.field, Field::Outcome { .. } | Field::OutcomeDate { .. }));
    // Reading rows reads these types: the token must allow each, as a
    // search of it would.
    let read = [
        ("ServiceRequest", wants(&[Field::Category])),
        ("Patient", wants(&[Field::NhsNumber, Field::PatientName])),
        (
            "Encounter",
            wants(&[Field::ContactDate, Field::ContactMode]),
        ),
        (
            "Procedure",
            wants(&[Field::HoldingWork, Field::HoldingDate]),
        ),
        ("Observation", wants_outcomes),
    ];
    for (t, _) in read.iter().filter(|(_, wanted)| *wanted) {
        caller.may_search(t, &[])?;
    }
    let referrals = if wants(&[Field::Category]) {
        let ids: Vec<String> = focus
            .iter()
            .map(|r| r.replace("ServiceRequest/", ""))
            .collect();
        search_refs(store, &access, "ServiceRequest", "_id", &ids)?
    } else {
        vec![]
    };
    let patients = if wants(&[Field::NhsNumber, Field::PatientName]) {
        let ids: BTreeSet<String> = tasks
            .iter()
            .filter_map(|t| {
                reference(&t["for"])
                    .strip_prefix("Patient/")
                    .map(String::from)
            })
            .collect();
        let ids: Vec<String> = ids.into_iter().collect();
        search_refs(store, &access, "Patient", "_id", &ids)?
    } else {
        vec![]
    };
    let based = |t: &str, on: bool| -> FhirResult<BTreeMap<String, Vec<Value>>> {
        Ok(if on {
            by_based_on(search_refs(store, &access, t, "based-on", &focus)?)
        } else {
            BTreeMap::new()
        })
    };
    let contacts = based(
        "Encounter",
        wants(&[Field::ContactDate, Field::ContactMode]),
    )?;
    let holding = based(
        "Procedure",
        wants(&[Field::HoldingWork, Field::HoldingDate]),
    )?;
    let outcomes = based("Observation", wants_outcomes)?;
    let none: Vec<Value> = vec![];
    let date = |v: Option<&str>| v.and_then(|d| m.date_format.write(d)).unwrap_or_default();

    let mut rows = vec![];
    for t in &tasks {
        let sr = reference(&t["focus"]);
        let referral = referrals.iter().find(|r| {
            r["id"]
                .as_str()
                .is_some_and(|id| sr == format!("ServiceRequest/{id}"))
        });
        let patient = patients.iter().find(|p| {
            p["id"]
                .as_str()
                .is_some_and(|id| reference(&t["for"]) == format!("Patient/{id}"))
        });
        let contact = latest(contacts.get(sr).unwrap_or(&none), |e| {
            e["period"]["start"].as_str()
        });
        let held = latest(holding.get(sr).unwrap_or(&none), |p| {
            p["performedPeriod"]["start"].as_str()
        });
        let observed = outcomes.get(sr).unwrap_or(&none);
        let row = m
            .columns
            .iter()
            .map(|c| match &c.field {
                Field::Task => t["id"].as_str().unwrap_or_default().to_string(),
                Field::CaseReference => t["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["system"].as_str() == m.case_system.as_deref())
                    .and_then(|i| i["value"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                Field::NhsNumber => patient
                    .and_then(|p| {
                        p["identifier"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|i| i["system"] == NHS_NUMBER)
                    })
                    .and_then(|i| i["value"].as_str())
                    .unwrap_or_default()
                    .to_string(),
                Field::PatientName => patient.map(|p| name(&p["name"][0])).unwrap_or_default(),
                Field::Category => referral
                    .map(|r| category_words(&ctx, &needs(r)).join("; "))
                    .unwrap_or_default(),
                Field::Status => m
                    .status_word(
                        t["status"].as_str().unwrap_or_default(),
                        coded(&t["businessStatus"], &cs("sp-business-status")),
                    )
                    .unwrap_or_default()
                    .to_string(),
                Field::ReferredDate => date(t["authoredOn"].as_str()),
                Field::ContactDate => date(contact.and_then(|e| e["period"]["start"].as_str())),
                Field::ContactMode => contact
                    .and_then(|e| coded(&e["type"], &cs("sp-contact-mode")))
                    .map(|code| mapping::word_for(&m.contact_modes, code).to_string())
                    .unwrap_or_default(),
                Field::HoldingWork => held
                    .and_then(|p| coded(&p["category"], &cs("sp-holding-work")))
                    .map(|code| mapping::word_for(&m.holding_work, code).to_string())
                    .unwrap_or_default(),
                Field::HoldingDate => {
                    date(held.and_then(|p| p["performedPeriod"]["start"].as_str()))
                }
                Field::Outcome { measure, timing } => outcome_of(observed, measure, timing)
                    .and_then(|o| o["valueInteger"].as_i64())
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
                Field::OutcomeDate { measure, timing } => date(
                    outcome_of(observed, measure, timing)
                        .and_then(|o| o["effectiveDateTime"].as_str()),
                ),
            })
            .collect();
        rows.push(row);
    }
    Ok(Records {
        header: m.columns.iter().map(|c| c.name.clone()).collect(),
        rows,
    })
}

fn name(n: &Value) -> String {
    let mut parts: Vec<&str> = n["given"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    parts.extend(n["family"].as_str());
    parts.join(" ")
}

/// What one inbound row asks for, read from its cells.
struct Plan {
    task: String,
    case_reference: Option<String>,
    status: Option<mapping::StatusWord>,
    needs: Vec<String>,
    contact: Option<(String, Option<String>)>,
    holding: Option<(String, String)>,
    /// (measure, timing, value, date)
    outcomes: Vec<(String, String, i64, String)>,
}

/// Reads a row's cells; every bad cell is one (column, message).
fn plan(ctx: &Context, row: &Row) -> Result<Plan, Vec<(String, String)>> {
    let m = &ctx.mapping;
    let mut errors = vec![];
    let cell = |f: &Field| -> Option<(String, String)> {
        let col = m.column(f)?;
        row.iter()
            .find(|(c, _)| c == col)
            .map(|(_, v)| (col.to_string(), v.trim().to_string()))
            .filter(|(_, v)| !v.is_empty())
    };
    let date = |f: &Field, errors: &mut Vec<(String, String)>| -> Option<String> {
        let (col, v) = cell(f)?;
        let d = m.date_format.read(&v);
        if d.is_none() {
            errors.push((
                col,
                format!("'{v}' is not a date written {}", m.date_format.pattern),
            ));
        }
        d
    };
    let task_col = m.column(&Field::Task).unwrap_or_default().to_string();
    let task = match cell(&Field::Task) {
        Some((_, v)) if resource::check_id(&v).is_ok() => v,
        Some((c, v)) => {
            errors.push((c, format!("'{v}' is not a Task id")));
            String::new()
        }
        None => {
            errors.push((task_col.clone(), "the row names no Task".into()));
            String::new()
        }
    };
    let status = cell(&Field::Status).and_then(|(col, v)| {
        let w = m.status_of(&v).cloned();
        if w.is_none() {
            let known: Vec<&str> = m.statuses.iter().map(|s| s.word.as_str()).collect();
            errors.push((
                col,
                format!(
                    "unknown status '{v}'; the mapping's words are: {}",
                    known.join(", ")
                ),
            ));
        }
        w
    });
    let mut needs = vec![];
    if let Some((col, v)) = cell(&Field::Category) {
        for word in v.split(';').map(str::trim).filter(|w| !w.is_empty()) {
            match category_needs(ctx, word) {
                Some(n) => needs.extend(n),
                None => errors.push((col.clone(), format!("unknown category '{word}'"))),
            }
        }
    }
    let contact_date = date(&Field::ContactDate, &mut errors);
    let mode = cell(&Field::ContactMode).and_then(|(col, v)| {
        let code = mapping::code_for(&m.contact_modes, "sp-contact-mode", &v);
        if code.is_none() {
            errors.push((col, format!("unknown contact mode '{v}'")));
        }
        code
    });
    if mode.is_some() && contact_date.is_none() && cell(&Field::ContactDate).is_none() {
        errors.push((
            m.column(&Field::ContactDate)
                .unwrap_or(&task_col)
                .to_string(),
            "a contact mode needs the contact's date".into(),
        ));
    }
    let holding_date = date(&Field::HoldingDate, &mut errors);
    let holding_code = cell(&Field::HoldingWork).and_then(|(col, v)| {
        let code = mapping::code_for(&m.holding_work, "sp-holding-work", &v);
        if code.is_none() {
            errors.push((col, format!("unknown holding work '{v}'")));
        }
        code
    });
    let holding = match (holding_code, holding_date) {
        (Some(code), Some(d)) => Some((d, code)),
        (Some(_), None) if cell(&Field::HoldingDate).is_none() => {
            errors.push((
                m.column(&Field::HoldingDate)
                    .unwrap_or(&task_col)
                    .to_string(),
                "holding work needs its date".into(),
            ));
            None
        }
        _ => None,
    };
    let mut outcomes = vec![];
    for c in &m.columns {
        let Field::Outcome { measure, timing } = &c.field else {
            continue;
        };
        let Some((col, v)) = cell(&c.field) else {
            continue;
        };
        let Ok(value) = v.parse::<i64>() else {
            errors.push((col, format!("'{v}' is not a whole-number score")));
            continue;
        };
        let date_field = Field::OutcomeDate {
            measure: measure.clone(),
            timing: timing.clone(),
        };
        let when = if m.has(&date_field) {
            date(&date_field, &mut errors)
        } else {
            contact_date.clone()
        };
        match when {
            Some(d) => outcomes.push((measure.clone(), timing.clone(), value, d)),
            None if cell(&date_field).is_none() => errors.push((
                m.column(&date_field).unwrap_or(&col).to_string(),
                format!("the {measure} {timing} score needs its date"),
            )),
            None => {}
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Plan {
        task,
        case_reference: cell(&Field::CaseReference).map(|(_, v)| v),
        status,
        needs,
        contact: contact_date.map(|d| (d, mode)),
        holding,
        outcomes,
    })
}

/// A stable id for a record a row makes, so the same row sent again finds
/// it rather than making another.
fn record_id(kind: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("vcs-{kind}-{hex}")
}

/// Versions compare without their meta (version, time, profile stamps).
fn same(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("meta");
        }
        v
    };
    strip(a) == strip(b)
}

/// Writes `resource` as `res_type/id` unless it is already so.
fn upsert(tx: &mut Tx, res_type: &str, id: &str, resource: &Value) -> FhirResult<()> {
    if let Some(c) = tx.read(res_type, id)?.filter(|c| !c.deleted) {
        if same(&body(&c.body)?, resource) {
            return Ok(());
        }
    }
    write::update(tx, res_type, id, resource, None).map(|_| ())
}

fn search_tx(tx: &mut Tx, res_type: &str, params: &[(String, String)]) -> FhirResult<Vec<Value>> {
    let mut q = SearchQuery::parse(res_type, params, true)?;
    q.access = tx.access().clone();
    q.count = MAX_COUNT;
    tx.search(res_type, &q)?
        .items
        .iter()
        .map(|c| body(&c.body))
        .collect()
}

/// The Task as the row would leave it.
fn next_task(ctx: &Context, task: &Value, p: &Plan) -> Value {
    let mut t = task.clone();
    if let (Some(system), Some(value)) = (&ctx.mapping.case_system, &p.case_reference) {
        let mut ids: Vec<Value> = t["identifier"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|i| i["system"].as_str() != Some(system))
            .collect();
        ids.push(json!({"system": system, "value": value}));
        t["identifier"] = json!(ids);
    }
    if let Some(w) = &p.status {
        let changed = t["status"] != w.status.as_str();
        t["status"] = json!(w.status);
        if let Some(b) = &w.business_status {
            t["businessStatus"] = codeable("sp-business-status", b);
        }
        match &w.status_reason {
            Some(r) if changed || t.get("statusReason").is_none() => {
                t["statusReason"] = codeable("sp-status-reason", r)
            }
            None if changed => {
                if let Some(o) = t.as_object_mut() {
                    o.remove("statusReason");
                }
            }
            _ => {}
        }
    }
    t
}

fn codeable(system_id: &str, code: &str) -> Value {
    let system = cs(system_id);
    let mut coding = json!({"system": system, "code": code});
    if let Some(d) = profiles::load().ok().and_then(|p| p.display(&system, code)) {
        coding["display"] = json!(d);
    }
    json!({"coding": [coding]})
}

fn ours_meta(profile: &str) -> Value {
    json!({"profile": [format!("{CANONICAL_BASE}/StructureDefinition/{profile}")]})
}

/// One row's writes inside its transaction; `column` follows the step
/// running, so an error is reported against the column that caused it.
fn apply(tx: &mut Tx, ctx: &Context, p: &Plan, column: &RefCell<String>) -> FhirResult<()> {
    let m = &ctx.mapping;
    let col = |f: &Field| {
        *column.borrow_mut() = m
            .column(f)
            .or(m.column(&Field::Task))
            .unwrap_or_default()
            .to_string();
    };
    col(&Field::Task);
    let current = tx.read_as("Task", &p.task)?;
    let task = body(&live(current.as_ref(), "Task", &p.task)?.body)?;
    if !ctx.owners.contains(reference(&task["owner"])) {
        // Seen (e.g. in the open pool) but not the organisation's to work.
        return Err(FhirError::NotFound(format!(
            "Task/{} is not one of Organization/{}'s Tasks",
            p.task, ctx.org
        )));
    }
    col(&Field::Status);
    let next = next_task(ctx, &task, p);
    if !same(&next, &task) {
        write::update(tx, "Task", &p.task, &next, None)?;
    }
    let referral = reference(&task["focus"]).to_string();
    let subject = task["for"].clone();
    let owner = reference(&task["owner"]);
    let worker = if owner.starts_with("PractitionerRole/") {
        Some(owner.to_string())
    } else {
        m.link_worker.clone()
    };
    let org_ref = json!({"reference": format!("Organization/{}", ctx.org)});
    if let Some((day, mode)) = &p.contact {
        col(&Field::ContactDate);
        let worker = worker.clone().ok_or_else(|| {
            FhirError::invalid("a contact needs a link worker: the Task's owner is the organisation and the mapping names no linkWorker")
        })?;
        let existing = search_tx(tx, "Encounter", &[("based-on".into(), referral.clone())])?;
        let on_day = existing.iter().any(|e| {
            e["period"]["start"]
                .as_str()
                .is_some_and(|s| s.starts_with(day.as_str()))
        });
        if !on_day {
            let mode = mode.clone().unwrap_or_else(|| "phone".into());
            let class = match mode.as_str() {
                "face-to-face" => ("AMB", "ambulatory"),
                "home-visit" => ("HH", "home health"),
                _ => ("VR", "virtual"),
            };
            let mut e = json!({
                "resourceType": "Encounter",
                "meta": ours_meta("sp-contact"),
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": class.0, "display": class.1},
                "type": [codeable("sp-contact-mode", &mode)],
                "subject": subject,
                "basedOn": [{"reference": referral}],
                "participant": [{"individual": {"reference": worker}}],
                "period": {"start": day, "end": day},
                "serviceProvider": org_ref,
            });
            if !p.needs.is_empty() {
                e["reasonCode"] = json!(p
                    .needs
                    .iter()
                    .map(|n| codeable("sp-need", n))
                    .collect::<Vec<_>>());
            }
            let id = record_id("contact", &format!("{}|{day}", p.task));
            e["id"] = json!(id);
            upsert(tx, "Encounter", &id, &e)?;
        }
    }
    if let Some((day, code)) = &p.holding {
        col(&Field::HoldingWork);
        let worker = worker.clone().ok_or_else(|| {
            FhirError::invalid("holding work needs a link worker: the Task's owner is the organisation and the mapping names no linkWorker")
        })?;
        let existing = search_tx(tx, "Procedure", &[("based-on".into(), referral.clone())])?;
        let done = existing.iter().any(|h| {
            h["performedPeriod"]["start"]
                .as_str()
                .is_some_and(|s| s.starts_with(day.as_str()))
                && coded(&h["category"], &cs("sp-holding-work")) == Some(code.as_str())
        });
        if !done {
            let id = record_id("holding", &format!("{}|{day}|{code}", p.task));
            let h = json!({
                "resourceType": "Procedure",
                "id": id,
                "meta": ours_meta("sp-holding-work"),
                "basedOn": [{"reference": referral}],
                "status": "completed",
                "category": codeable("sp-holding-work", code),
                "subject": subject,
                "performedPeriod": {"start": day, "end": day},
                "performer": [{"actor": {"reference": worker}, "onBehalfOf": org_ref}],
            });
            upsert(tx, "Procedure", &id, &h)?;
        }
    }
    let observed = if p.outcomes.is_empty() {
        vec![]
    } else {
        search_tx(tx, "Observation", &[("based-on".into(), referral.clone())])?
    };
    for (measure, timing, value, day) in &p.outcomes {
        *column.borrow_mut() = m
            .columns
            .iter()
            .find(|c| {
                c.field
                    == Field::Outcome {
                        measure: measure.clone(),
                        timing: timing.clone(),
                    }
            })
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let found = outcome_of(&observed, measure, timing);
        if found.is_some_and(|o| {
            o["valueInteger"].as_i64() == Some(*value)
                && o["effectiveDateTime"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(day.as_str()))
        }) {
            continue;
        }
        let performer = worker
            .clone()
            .map_or_else(|| subject.clone(), |w| json!({"reference": w}));
        let profile = if measure.starts_with("ons4-") {
            "sp-outcome-ons4"
        } else {
            "sp-outcome-swemwbs"
        };
        let id = match found.and_then(|o| o["id"].as_str()) {
            Some(id) => id.to_string(),
            None => record_id("outcome", &format!("{}|{measure}|{timing}", p.task)),
        };
        let o = json!({
            "resourceType": "Observation",
            "id": id,
            "meta": ours_meta(profile),
            "basedOn": [{"reference": referral}],
            "status": "final",
            "category": [
                {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                             "code": "survey", "display": "Survey"}]},
                codeable("sp-outcome-timing", timing),
            ],
            "code": codeable("sp-outcome-measure", measure),
            "subject": subject,
            "effectiveDateTime": day,
            "performer": [performer],
            "valueInteger": value,
        });
        upsert(tx, "Observation", &id, &o)?;
    }
    Ok(())
}

/// POST: applies each row in its own transaction (or, with `dry_run`,
/// runs it and rolls it back) and reports every row.
pub fn inbound(
    caller: &Principal,
    store: &Store,
    org: &str,
    rows: &[Row],
    dry_run: bool,
) -> FhirResult<Report> {
    let ctx = context(caller, store, org)?;
    // The scopes a row may need, checked once for the whole request.
    let m = &ctx.mapping;
    let mut types = vec!["Task"];
    if m.has(&Field::ContactDate) {
        types.push("Encounter");
    }
    if m.has(&Field::HoldingWork) {
        types.push("Procedure");
    }
    if m.columns
        .iter()
        .any(|c| matches!(c.field, Field::Outcome { .. }))
    {
        types.push("Observation");
    }
    for t in types {
        for p in [Perms::CREATE, Perms::UPDATE] {
            if t == "Task" && p == Perms::CREATE {
                continue;
            }
            caller.permits(&Need::Type(t.to_string(), p), &[])?;
        }
    }
    let mut report = Report {
        dry_run,
        rows: vec![],
    };
    for (i, row) in rows.iter().enumerate() {
        let task = m
            .column(&Field::Task)
            .and_then(|c| row.iter().find(|(k, _)| k == c))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let mut r = RowReport {
            row: i + 1,
            task,
            applied: false,
            written: vec![],
            errors: vec![],
        };
        match plan(&ctx, row) {
            Err(errors) => r.errors = errors,
            Ok(p) => {
                let column = RefCell::new(String::new());
                match run_row(caller, store, &ctx, &p, &column, dry_run) {
                    Ok(written) => {
                        r.applied = true;
                        r.written = written;
                    }
                    Err(e) => r.errors = vec![(column.into_inner(), e.to_string())],
                }
            }
        }
        report.rows.push(r);
    }
    Ok(report)
}

/// Reported when a dry run rolls its row back; never reaches a client.
const REHEARSED: &str = "dry run: rolled back";

fn run_row(
    caller: &Principal,
    store: &Store,
    ctx: &Context,
    p: &Plan,
    column: &RefCell<String>,
    dry_run: bool,
) -> FhirResult<Vec<String>> {
    let written = RefCell::new(vec![]);
    let result = interactions::transaction(store, caller, |tx| {
        apply(tx, ctx, p, column)?;
        *written.borrow_mut() = tx
            .written()
            .iter()
            .map(|(t, id, v)| format!("{t}/{id}/_history/{v}"))
            .collect();
        if dry_run {
            // The same view check a real run makes before it commits; then
            // nothing is kept.
            if let Some((t, id)) = tx.written_out_of_view()?.into_iter().next() {
                return Err(FhirError::Forbidden(format!(
                    "{t}/{id} would be outside the records of {}",
                    caller.organization
                )));
            }
            return Err(FhirError::Internal(REHEARSED.into()));
        }
        Ok(())
    });
    match result {
        Err(FhirError::Internal(m)) if dry_run && m == REHEARSED => Ok(written.into_inner()),
        Err(e) => Err(e),
        Ok(()) => Ok(written.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snomed_reasons_reach_our_needs_through_the_concept_map() {
        let referral = json!({"reasonCode": [
            {"coding": [{"system": SNOMED, "code": "160932005"}]},
            {"coding": [{"system": SNOMED, "code": "267076002"},
                        {"system": cs("sp-need"), "code": "loneliness"}]},
            {"coding": [{"system": SNOMED, "code": "999999"}]}
        ]});
        assert_eq!(needs(&referral), vec!["debt-money", "loneliness"]);
    }
}
