//! The PCN dashboard (`GET /dashboard/metrics`) over HTTP, on the example
//! PCN (`--demo`): every figure family is compared with a table of
//! expected values computed here, independently, from
//! `fhir-profiles/examples/demo-pcn.json` (the definitions of README.md,
//! "PCN dashboard", applied to the bundle's entries in plain Rust), in JSON
//! and in CSV; filters, buckets, small-number suppression, who may ask for
//! what, and malformed requests.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};

const DEMO: &str = include_str!("../fhir-profiles/examples/demo-pcn.json");
const SWEMWBS: &str = include_str!("../fhir-profiles/CodeSystem/swemwbs-raw-score.json");
const PERIOD: &str = "from=2026-01-01&to=2026-12-31";

// ---------------------------------------------------------------- the model

/// Seconds since 1970 of an ISO date-time with `Z` (as the demo writes them).
fn secs(s: &str) -> f64 {
    let (y, mo, d) = (
        s[0..4].parse::<i64>().unwrap(),
        s[5..7].parse::<i64>().unwrap(),
        s[8..10].parse::<i64>().unwrap(),
    );
    // Days from civil (H. Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let (h, mi, se) = if s.len() >= 19 {
        (
            s[11..13].parse::<i64>().unwrap(),
            s[14..16].parse::<i64>().unwrap(),
            s[17..19].parse::<i64>().unwrap(),
        )
    } else {
        (0, 0, 0)
    };
    (days * 86400 + h * 3600 + mi * 60 + se) as f64
}

fn days_between(a: &str, b: &str) -> f64 {
    (secs(b) - secs(a)) / 86400.0
}

fn id_of(reference: &str) -> String {
    reference.rsplit('/').next().unwrap().to_string()
}

struct Referral {
    practice: String,
    patient: String,
    authored: String,
    status: String,
    needs: Vec<String>,
}

struct Task {
    focus: String,
    owner: Option<String>,
    status: String,
    reason: Option<String>,
    start: Option<String>,
    part_of: bool,
}

struct Contact {
    sr: String,
    start: String,
    mode: String,
    worker: String,
}

struct Holding {
    sr: String,
    start: String,
    end: String,
    performer: String,
}

struct Outcome {
    sr: String,
    measure: String,
    timing: String,
    at: String,
    value: f64,
}

struct Demo {
    referrals: BTreeMap<String, Referral>,
    tasks: BTreeMap<String, Task>,
    /// PractitionerRole id → (organisation id, employment model)
    roles: BTreeMap<String, (String, String)>,
    /// practice id → list size
    list_sizes: BTreeMap<String, i64>,
    /// organisation id → kind code
    kinds: BTreeMap<String, String>,
    contacts: Vec<Contact>,
    holding: Vec<Holding>,
    outcomes: Vec<Outcome>,
}

fn code_of(v: &Value) -> Option<String> {
    v["coding"][0]["code"].as_str().map(String::from)
}

impl Demo {
    fn load() -> Demo {
        let bundle: Value = serde_json::from_str(DEMO).unwrap();
        let mut d = Demo {
            referrals: BTreeMap::new(),
            tasks: BTreeMap::new(),
            roles: BTreeMap::new(),
            list_sizes: BTreeMap::new(),
            kinds: BTreeMap::new(),
            contacts: vec![],
            holding: vec![],
            outcomes: vec![],
        };
        let s = |v: &Value| v.as_str().unwrap().to_string();
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            let id = s(&r["id"]);
            match r["resourceType"].as_str().unwrap() {
                "Organization" => {
                    d.kinds.insert(id.clone(), code_of(&r["type"][0]).unwrap());
                    if let Some(x) = r["extension"].as_array() {
                        for x in x {
                            if s(&x["url"]).ends_with("sp-registered-list-size") {
                                d.list_sizes
                                    .insert(id.clone(), x["valueInteger"].as_i64().unwrap());
                            }
                        }
                    }
                }
                "PractitionerRole" => {
                    let model = r["extension"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|x| s(&x["url"]).ends_with("sp-employment-model"))
                        .map(|x| s(&x["valueCoding"]["code"]))
                        .unwrap();
                    d.roles
                        .insert(id, (id_of(&s(&r["organization"]["reference"])), model));
                }
                "ServiceRequest" => {
                    // The demo's referrals are requested by practices.
                    d.referrals.insert(
                        id,
                        Referral {
                            practice: id_of(&s(&r["requester"]["reference"])),
                            patient: id_of(&s(&r["subject"]["reference"])),
                            authored: s(&r["authoredOn"]),
                            status: s(&r["status"]),
                            needs: r["reasonCode"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .filter_map(code_of)
                                .collect(),
                        },
                    );
                }
                "Task" => {
                    d.tasks.insert(
                        id,
                        Task {
                            focus: id_of(&s(&r["focus"]["reference"])),
                            owner: r["owner"]["reference"].as_str().map(String::from),
                            status: s(&r["status"]),
                            reason: code_of(&r["statusReason"]),
                            start: r["executionPeriod"]["start"].as_str().map(String::from),
                            part_of: r.get("partOf").is_some(),
                        },
                    );
                }
                "Encounter" => d.contacts.push(Contact {
                    sr: id_of(&s(&r["basedOn"][0]["reference"])),
                    start: s(&r["period"]["start"]),
                    mode: code_of(&r["type"][0]).unwrap(),
                    worker: id_of(&s(&r["participant"][0]["individual"]["reference"])),
                }),
                "Procedure" => d.holding.push(Holding {
                    sr: id_of(&s(&r["basedOn"][0]["reference"])),
                    start: s(&r["performedPeriod"]["start"]),
                    end: s(&r["performedPeriod"]["end"]),
                    performer: s(&r["performer"][0]["actor"]["reference"]),
                }),
                "Observation" => d.outcomes.push(Outcome {
                    sr: id_of(&s(&r["basedOn"][0]["reference"])),
                    measure: code_of(&r["code"]).unwrap(),
                    timing: r["category"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|c| {
                            let c = &c["coding"][0];
                            s(&c["system"])
                                .ends_with("sp-outcome-timing")
                                .then(|| s(&c["code"]))
                        })
                        .next()
                        .unwrap(),
                    at: s(&r["effectiveDateTime"]),
                    value: r["valueInteger"].as_f64().unwrap(),
                }),
                _ => {}
            }
        }
        d
    }

    /// Referrals received in [from, to] (dates), not draft or in error,
    /// passing `keep`.
    fn cohort(
        &self,
        from: &str,
        to: &str,
        keep: &dyn Fn(&str, &Referral) -> bool,
    ) -> BTreeSet<String> {
        self.referrals
            .iter()
            .filter(|(_, r)| !["draft", "entered-in-error"].contains(&r.status.as_str()))
            .filter(|(_, r)| &r.authored[..10] >= from && &r.authored[..10] <= to)
            .filter(|(id, r)| keep(id, r))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn top_tasks<'a>(
        &'a self,
        cohort: &'a BTreeSet<String>,
    ) -> impl Iterator<Item = (&'a String, &'a Task)> {
        self.tasks
            .iter()
            .filter(move |(_, t)| !t.part_of && cohort.contains(&t.focus))
    }

    /// The employment model of an actor reference.
    fn model(&self, actor: &str) -> String {
        let id = id_of(actor);
        if actor.starts_with("PractitionerRole/") {
            return self
                .roles
                .get(&id)
                .map_or("unknown".into(), |r| r.1.clone());
        }
        match self.kinds.get(&id).map(String::as_str) {
            Some("pcn") => "pcn-employed".into(),
            Some("vcs") => "vcs-subcontracted".into(),
            _ => "unknown".into(),
        }
    }
}

/// The value at rank ⌈p·n⌉ of the sorted values.
fn nearest_rank(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.max(1) - 1]
}

// ------------------------------------------------------------ the answers

async fn metrics(s: &Server, query: &str) -> Value {
    expect_json(s.get(&format!("/dashboard/metrics?{query}")).await, 200).await
}

fn rows<'a>(m: &'a Value, family: &str, name: &str) -> &'a Vec<Value> {
    m["figures"][family][name]
        .as_array()
        .unwrap_or_else(|| panic!("no figure {family}.{name} in {m}"))
}

fn row<'a>(m: &'a Value, family: &str, name: &str, group: &str) -> &'a Value {
    row_sub(m, family, name, group, None)
}

fn row_sub<'a>(
    m: &'a Value,
    family: &str,
    name: &str,
    group: &str,
    sub: Option<&str>,
) -> &'a Value {
    rows(m, family, name)
        .iter()
        .find(|r| r["group"] == group && r["subgroup"].as_str() == sub)
        .unwrap_or_else(|| {
            panic!(
                "no {family}.{name} row for {group} {sub:?}: {}",
                m["figures"][family][name]
            )
        })
}

#[track_caller]
fn close(got: &Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {got} is not a number (want {want})"));
    assert!((g - want).abs() < 1e-3, "{what}: got {g}, want {want}");
}

async fn demo_server(b: Backend, min_group: &str) -> Server {
    Server::start_with(b, &["--demo", "--dashboard-min-group", min_group], &[]).await
}

async fn pcn_client(s: &Server) -> Server {
    s.as_new_client(
        "pcn-dash",
        "Organization/org-pcn",
        "pcn",
        "system/ServiceRequest.rs",
    )
    .await
}

// ----------------------------------------------------------------- tests

async fn every_figure_matches_the_demo_data(b: Backend) {
    let s = demo_server(b, "1").await;
    let pcn = pcn_client(&s).await;
    let m = metrics(&pcn, PERIOD).await;
    let d = Demo::load();
    let cohort = d.cohort("2026-01-01", "2026-12-31", &|_, _| true);

    assert_eq!(m["suppression"], 1);
    assert_eq!(m["filters"]["pcn"], "Organization/org-pcn");
    assert_eq!(m["period"]["buckets"].as_array().unwrap().len(), 12);

    // Referrals: total, by practice with the rate per 1,000, by need, by month.
    close(
        &row(&m, "referrals", "total", "all")["value"],
        cohort.len() as f64,
        "total",
    );
    let total_size: i64 = d.list_sizes.values().sum();
    close(
        &row(&m, "referrals", "total", "all")["per_1000"],
        cohort.len() as f64 * 1000.0 / total_size as f64,
        "total per 1000",
    );
    for (practice, size) in &d.list_sizes {
        let n = cohort
            .iter()
            .filter(|r| d.referrals[*r].practice == *practice)
            .count() as f64;
        let f = row(
            &m,
            "referrals",
            "by_practice",
            &format!("Organization/{practice}"),
        );
        close(&f["value"], n, "by practice");
        close(&f["denominator"], *size as f64, "list size");
        close(&f["per_1000"], n * 1000.0 / *size as f64, "per 1000");
    }
    let mut by_need: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &cohort {
        for n in d.referrals[r].needs.iter().collect::<BTreeSet<_>>() {
            *by_need.entry(n).or_default() += 1.0;
        }
    }
    assert_eq!(rows(&m, "referrals", "by_need").len(), by_need.len());
    for (need, n) in &by_need {
        close(&row(&m, "referrals", "by_need", need)["value"], *n, need);
    }
    for f in rows(&m, "referrals", "by_bucket") {
        let month = f["bucket"].as_str().unwrap();
        let n = cohort
            .iter()
            .filter(|r| d.referrals[*r].authored.starts_with(month))
            .count();
        close(&f["value"], n as f64, month);
    }

    // Funnel: the top-level Tasks of the cohort by status and reason.
    let tasks: Vec<&Task> = d.top_tasks(&cohort).map(|(_, t)| t).collect();
    let count = |f: &dyn Fn(&Task) -> bool| tasks.iter().filter(|t| f(t)).count() as f64;
    let declined = |t: &Task| t.reason.as_deref() == Some("declined-by-person");
    let expect = [
        ("received", count(&|_| true)),
        ("accepted", count(&|t| t.start.is_some())),
        ("rejected", count(&|t| t.status == "rejected")),
        ("declined_by_person", count(&|t| declined(t))),
        ("completed", count(&|t| t.status == "completed")),
        (
            "cancelled",
            count(&|t| t.status == "cancelled" && !declined(t)),
        ),
        ("failed", count(&|t| t.status == "failed")),
        ("open_requested", count(&|t| t.status == "requested")),
        ("open_accepted", count(&|t| t.status == "accepted")),
        ("open_in_progress", count(&|t| t.status == "in-progress")),
        ("open_on_hold", count(&|t| t.status == "on-hold")),
    ];
    for (stage, n) in expect {
        let f = row(&m, "funnel", "stages", stage);
        close(&f["numerator"], n, stage);
        close(&f["value"], n / tasks.len() as f64, stage);
    }
    for t in tasks.iter().filter(|t| t.status == "rejected") {
        let reason = t.reason.as_deref().unwrap();
        let n = count(&|u| u.status == "rejected" && u.reason.as_deref() == Some(reason));
        close(
            &row(&m, "funnel", "rejected_by_reason", reason)["value"],
            n,
            reason,
        );
    }
    let pool = count(&|t| t.status == "requested" && t.owner.is_none());
    close(
        &row(&m, "funnel", "open_pool", "pool")["value"],
        pool,
        "open pool",
    );

    // Waits: nearest-rank median and 90th percentile, in days.
    let acceptance: Vec<f64> = d
        .top_tasks(&cohort)
        .filter_map(|(_, t)| {
            t.start
                .as_ref()
                .map(|s| days_between(&d.referrals[&t.focus].authored, s))
        })
        .collect();
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for c in &d.contacts {
        let e = first.entry(&c.sr).or_insert(&c.start);
        if secs(&c.start) < secs(e) {
            *e = &c.start;
        }
    }
    let first_contact: Vec<f64> = first
        .iter()
        .filter(|(sr, _)| cohort.contains(**sr))
        .map(|(sr, at)| days_between(&d.referrals[*sr].authored, at))
        .collect();
    for (name, waits) in [("acceptance", acceptance), ("first_contact", first_contact)] {
        let f = row(&m, "waits", name, "all");
        assert_eq!(f["n"], waits.len(), "{name} n");
        close(&f["value"], nearest_rank(waits.clone(), 0.5), name);
        close(&f["p90"], nearest_rank(waits.clone(), 0.9), name);
        close(
            &f["mean"],
            waits.iter().sum::<f64>() / waits.len() as f64,
            name,
        );
    }

    // Caseload and pressure: open Tasks by owner and by employment model.
    let open = |t: &Task| ["accepted", "in-progress", "on-hold"].contains(&t.status.as_str());
    let mut by_owner: BTreeMap<String, f64> = BTreeMap::new();
    for t in tasks.iter().filter(|t| open(t)) {
        *by_owner.entry(t.owner.clone().unwrap()).or_default() += 1.0;
    }
    for (owner, n) in &by_owner {
        let f = row(&m, "pressure", "by_link_worker", owner);
        close(&f["value"], *n, owner);
        // Every demo referral is older than twelve weeks.
        close(&f["open_longer"], *n, owner);
        assert_eq!(f["employment_model"], d.model(owner).as_str());
    }
    for model in ["pcn-employed", "vcs-subcontracted"] {
        let cases: f64 = by_owner
            .iter()
            .filter(|(o, _)| d.model(o) == model)
            .map(|(_, n)| n)
            .sum();
        let workers = d.roles.values().filter(|r| r.1 == model).count() as f64;
        let f = row(&m, "caseload", "per_link_worker", model);
        close(&f["value"], cases / workers, model);
    }

    // Contacts per person and by mode, holding work and hours, by model.
    let mut contacts: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut people: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in &d.contacts {
        let model = d.model(&format!("PractitionerRole/{}", c.worker));
        *contacts.entry((model.clone(), c.mode.clone())).or_default() += 1.0;
        let patient = d.referrals[&c.sr].patient.clone();
        people.entry(model).or_default().insert(patient.clone());
        people.entry("all".into()).or_default().insert(patient);
    }
    for ((model, mode), n) in &contacts {
        close(
            &row_sub(&m, "activity", "contacts_by_mode", model, Some(mode))["value"],
            *n,
            mode,
        );
    }
    for (model, who) in &people {
        let n: f64 = contacts
            .iter()
            .filter(|((m, _), _)| model == "all" || m == model)
            .map(|(_, n)| n)
            .sum();
        let f = row(&m, "activity", "contacts_per_person", model);
        close(&f["value"], n / who.len() as f64, model);
        close(&f["denominator"], who.len() as f64, model);
    }
    let with_service: BTreeSet<&str> = d
        .tasks
        .values()
        .filter(|t| t.part_of)
        .map(|t| t.focus.as_str())
        .collect();
    let mut episodes: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let (mut without, mut without_refs) = (0.0, BTreeSet::new());
    for h in &d.holding {
        let hours = (secs(&h.end) - secs(&h.start)) / 3600.0;
        for key in [d.model(&h.performer), "all".into()] {
            let e = episodes.entry(key).or_default();
            e.0 += 1.0;
            e.1 += hours;
        }
        if !with_service.contains(h.sr.as_str()) {
            without += 1.0;
            without_refs.insert(h.sr.clone());
        }
    }
    for (model, (n, hours)) in &episodes {
        let f = row(&m, "activity", "holding_work", model);
        close(&f["value"], *n, model);
        close(&f["hours"], *hours, model);
    }
    let f = row(&m, "pressure", "holding_without_service", "all");
    close(&f["value"], without, "holding without service");
    close(
        &f["referrals"],
        without_refs.len() as f64,
        "holding without service",
    );

    // Outcomes: paired baseline and follow-up, mean change, 95% CI.
    let metric: BTreeMap<i64, f64> = serde_json::from_str::<Value>(SWEMWBS).unwrap()["concept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().parse().unwrap(),
                c["property"][0]["valueDecimal"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut pairs: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let srs: BTreeSet<&str> = d.outcomes.iter().map(|o| o.sr.as_str()).collect();
    let measures: BTreeSet<&str> = d.outcomes.iter().map(|o| o.measure.as_str()).collect();
    for sr in srs.iter().filter(|sr| cohort.contains(**sr)) {
        for measure in &measures {
            let of = |timing: &str| {
                d.outcomes
                    .iter()
                    .filter(|o| o.sr == *sr && o.measure == *measure && o.timing == timing)
                    .collect::<Vec<_>>()
            };
            let base = of("baseline")
                .into_iter()
                .min_by(|a, b| secs(&a.at).total_cmp(&secs(&b.at)));
            let follow = of("follow-up")
                .into_iter()
                .max_by(|a, b| secs(&a.at).total_cmp(&secs(&b.at)));
            if let (Some(b), Some(f)) = (base, follow) {
                pairs
                    .entry(measure.to_string())
                    .or_default()
                    .push((b.value, f.value));
                if *measure == "swemwbs-total" {
                    pairs
                        .entry("swemwbs-metric".into())
                        .or_default()
                        .push((metric[&(b.value as i64)], metric[&(f.value as i64)]));
                }
            }
        }
    }
    assert_eq!(rows(&m, "outcomes", "paired").len(), pairs.len());
    for (measure, p) in &pairs {
        let n = p.len() as f64;
        let diffs: Vec<f64> = p.iter().map(|(b, f)| f - b).collect();
        let mean = diffs.iter().sum::<f64>() / n;
        let sd = (diffs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        // Student's t, 97.5%, 9 degrees of freedom (ten pairs in the demo).
        assert_eq!(p.len(), 10);
        let half = 2.262 * sd / n.sqrt();
        let f = row(&m, "outcomes", "paired", measure);
        close(&f["value"], mean, measure);
        close(&f["pairs"], n, measure);
        close(&f["ci_low"], mean - half, measure);
        close(&f["ci_high"], mean + half, measure);
        close(
            &f["baseline_mean"],
            p.iter().map(|x| x.0).sum::<f64>() / n,
            measure,
        );
    }

    // Continuity: one link worker throughout, handovers across employers.
    let mut trails: BTreeMap<&str, Vec<&Contact>> = BTreeMap::new();
    for c in &d.contacts {
        trails.entry(&c.sr).or_default().push(c);
    }
    let (mut one, mut within, mut across) = (0.0, 0.0, 0.0);
    for t in trails.values_mut() {
        t.sort_by(|a, b| secs(&a.start).total_cmp(&secs(&b.start)));
        let workers: BTreeSet<&str> = t.iter().map(|c| c.worker.as_str()).collect();
        if workers.len() == 1 {
            one += 1.0;
        }
        for w in t.windows(2) {
            if w[0].worker != w[1].worker {
                if d.roles[&w[0].worker].0 == d.roles[&w[1].worker].0 {
                    within += 1.0;
                } else {
                    across += 1.0;
                }
            }
        }
    }
    let f = row(&m, "continuity", "one_link_worker", "all");
    close(&f["value"], one / trails.len() as f64, "one link worker");
    close(&f["handovers_within_employer"], within, "within");
    close(&f["handovers_across_employers"], across, "across");

    // Unmet needs: ended or on hold because no service, capacity, not ready.
    let unmet_reasons = ["no-suitable-service", "capacity-full", "not-ready"];
    let mut by_practice: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut by_need: BTreeMap<(String, String), f64> = BTreeMap::new();
    for t in tasks.iter().filter(|t| {
        ["rejected", "cancelled", "failed", "on-hold"].contains(&t.status.as_str())
            && t.reason
                .as_deref()
                .is_some_and(|r| unmet_reasons.contains(&r))
    }) {
        let reason = t.reason.clone().unwrap();
        let r = &d.referrals[&t.focus];
        *by_practice
            .entry((format!("Organization/{}", r.practice), reason.clone()))
            .or_default() += 1.0;
        for need in &r.needs {
            *by_need.entry((need.clone(), reason.clone())).or_default() += 1.0;
        }
    }
    assert_eq!(
        rows(&m, "unmet_needs", "by_practice").len(),
        by_practice.len()
    );
    assert_eq!(rows(&m, "unmet_needs", "by_need").len(), by_need.len());
    for ((g, reason), n) in &by_practice {
        close(
            &row_sub(&m, "unmet_needs", "by_practice", g, Some(reason))["value"],
            *n,
            g,
        );
    }
    for ((g, reason), n) in &by_need {
        close(
            &row_sub(&m, "unmet_needs", "by_need", g, Some(reason))["value"],
            *n,
            g,
        );
    }

    // Embedding: the demo loads ended referrals as they are, so no message
    // back was written; ended referrals are the denominator.
    for practice in d.list_sizes.keys() {
        let ended = cohort
            .iter()
            .filter(|r| d.referrals[*r].practice == *practice)
            .filter(|r| ["completed", "revoked"].contains(&d.referrals[*r].status.as_str()))
            .count();
        let f = row(
            &m,
            "embedding",
            "by_practice",
            &format!("Organization/{practice}"),
        );
        close(&f["denominator"], ended as f64, "ended referrals");
        close(&f["value"], 0.0, "message back share");
        close(&f["gp_communications"], 0.0, "gp communications");
    }

    // The CSV has the same figures, one row each.
    let resp = pcn
        .get_accept(&format!("/dashboard/metrics?{PERIOD}"), "text/csv")
        .await;
    assert_eq!(resp.status(), 200);
    assert!(content_type(&resp).starts_with("text/csv"));
    let text = resp.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "figure,group,subgroup,bucket,value,numerator,denominator,n,suppressed,extra"
    );
    let csv: Vec<Vec<String>> = lines.map(split_csv).collect();
    let json_rows: usize = m["figures"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|f| f.as_object().unwrap().values())
        .map(|r| r.as_array().unwrap().len())
        .sum();
    assert_eq!(csv.len(), json_rows);
    let find = |figure: &str, group: &str| {
        csv.iter()
            .find(|r| r[0] == figure && r[1] == group)
            .unwrap()
    };
    assert_eq!(find("referrals.total", "all")[4], cohort.len().to_string());
    let anxiety = find("outcomes.paired", "ons4-anxiety");
    close(
        &json!(anxiety[4].parse::<f64>().unwrap()),
        row(&m, "outcomes", "paired", "ons4-anxiety")["value"]
            .as_f64()
            .unwrap(),
        "csv",
    );
    assert!(anxiety[9].contains("ci_low="));
}

/// A CSV line's fields (quoted fields may hold commas).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for ch in line.chars() {
        match ch {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

async fn filters_and_buckets_narrow_the_figures(b: Backend) {
    let s = demo_server(b, "1").await;
    let pcn = pcn_client(&s).await;
    let d = Demo::load();

    // One practice.
    let m = metrics(
        &pcn,
        &format!("{PERIOD}&practice=Organization/org-practice-mill-lane"),
    )
    .await;
    let want = d.cohort("2026-01-01", "2026-12-31", &|_, r| {
        r.practice == "org-practice-mill-lane"
    });
    close(
        &row(&m, "referrals", "total", "all")["value"],
        want.len() as f64,
        "practice",
    );
    assert_eq!(rows(&m, "referrals", "by_practice").len(), 1);

    // One need.
    let m = metrics(&pcn, &format!("{PERIOD}&need=housing")).await;
    let want = d.cohort("2026-01-01", "2026-12-31", &|_, r| {
        r.needs.iter().any(|n| n == "housing")
    });
    close(
        &row(&m, "referrals", "total", "all")["value"],
        want.len() as f64,
        "need",
    );

    // One employment model: referrals whose top-level Task a VCS-subcontracted
    // link worker (or a VCS organisation) owns.
    let m = metrics(
        &pcn,
        &format!("{PERIOD}&employment-model=vcs-subcontracted"),
    )
    .await;
    let want = d.cohort("2026-01-01", "2026-12-31", &|id, _| {
        d.tasks.values().any(|t| {
            t.focus == id
                && !t.part_of
                && t.owner
                    .as_deref()
                    .is_some_and(|o| d.model(o) == "vcs-subcontracted")
        })
    });
    close(
        &row(&m, "referrals", "total", "all")["value"],
        want.len() as f64,
        "employment model",
    );
    let m = metrics(
        &pcn,
        &format!("{PERIOD}&link-worker=PractitionerRole/role-lw-1"),
    )
    .await;
    let want = d.cohort("2026-01-01", "2026-12-31", &|id, _| {
        d.tasks.values().any(|t| {
            t.focus == id && !t.part_of && t.owner.as_deref() == Some("PractitionerRole/role-lw-1")
        })
    });
    close(
        &row(&m, "referrals", "total", "all")["value"],
        want.len() as f64,
        "link worker",
    );

    // One month, in weekly buckets starting on Mondays.
    let m = metrics(&pcn, "from=2026-02-01&to=2026-02-28&bucket=week").await;
    let want = d.cohort("2026-02-01", "2026-02-28", &|_, _| true);
    close(
        &row(&m, "referrals", "total", "all")["value"],
        want.len() as f64,
        "february",
    );
    let weeks: Vec<&str> = m["period"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(
        weeks,
        [
            "2026-01-26",
            "2026-02-02",
            "2026-02-09",
            "2026-02-16",
            "2026-02-23"
        ]
    );
    let mut per_week: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &want {
        // The Monday on or before the day.
        let day = &d.referrals[r].authored[..10];
        let monday = weeks.iter().rev().find(|w| **w <= day).unwrap();
        *per_week.entry(monday).or_default() += 1.0;
    }
    for f in rows(&m, "referrals", "by_bucket") {
        let w = f["bucket"].as_str().unwrap();
        close(&f["value"], per_week.get(w).copied().unwrap_or(0.0), w);
    }
    let sum: f64 = rows(&m, "referrals", "by_practice_bucket")
        .iter()
        .map(|f| f["value"].as_f64().unwrap())
        .sum();
    close(&json!(sum), want.len() as f64, "practice buckets add up");
}

async fn small_groups_are_suppressed(b: Backend) {
    let s = demo_server(b, "1").await;
    let pcn = pcn_client(&s).await;
    // Mill Lane has four paired outcomes: fewer than five people.
    let m = metrics(
        &pcn,
        &format!("{PERIOD}&practice=Organization/org-practice-mill-lane&min-group=5"),
    )
    .await;
    assert_eq!(m["suppression"], 5);
    let f = row(&m, "outcomes", "paired", "ons4-anxiety");
    assert_eq!(f["suppressed"], true);
    assert!(f["value"].is_null() && f["n"].is_null() && f.get("ci_low").is_none());
    // Sixteen referrals are shown.
    let t = row(&m, "referrals", "total", "all");
    assert_eq!(t["suppressed"], false);
    close(&t["value"], 16.0, "mill lane");
    // Every unmet-need group has fewer than five.
    for f in rows(&m, "unmet_needs", "by_need") {
        assert_eq!(f["suppressed"], true, "{f}");
    }
    // In CSV: the row is there, its numbers are not.
    let text = pcn
        .get_accept(&format!("/dashboard/metrics?{PERIOD}&practice=Organization/org-practice-mill-lane&min-group=5"), "text/csv")
        .await
        .text()
        .await
        .unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("outcomes.paired,ons4-anxiety,"))
        .unwrap();
    assert_eq!(line, "outcomes.paired,ons4-anxiety,,,,,,,true,");
    // A request cannot lower the server's threshold.
    let strict = demo_server(b, "5").await;
    let m = metrics(&pcn_client(&strict).await, &format!("{PERIOD}&min-group=1")).await;
    assert_eq!(m["suppression"], 5);
    // Ten pairs in all: shown.
    assert_eq!(
        row(&m, "outcomes", "paired", "ons4-anxiety")["suppressed"],
        false
    );
}

async fn each_caller_sees_its_own_organisation(b: Backend) {
    let s = demo_server(b, "1").await;
    let d = Demo::load();
    let scope = "system/ServiceRequest.rs";
    let total = |m: &Value| {
        row(m, "referrals", "total", "all")["value"]
            .as_f64()
            .unwrap()
    };

    // Admin: any PCN by parameter, the same figures as the PCN's own.
    let admin = metrics(&s, &format!("{PERIOD}&pcn=Organization/org-pcn")).await;
    let pcn = pcn_client(&s).await;
    let own = metrics(&pcn, PERIOD).await;
    assert_eq!(admin["figures"]["referrals"], own["figures"]["referrals"]);
    // The PCN naming itself is fine; naming another PCN is 403.
    metrics(&pcn, &format!("{PERIOD}&pcn=Organization/org-pcn")).await;
    let resp = pcn
        .get(&format!(
            "/dashboard/metrics?{PERIOD}&pcn=Organization/org-other-pcn"
        ))
        .await;
    assert_outcome(resp, 403, "forbidden").await;
    // Another PCN sees none of this one's referrals.
    let other = s
        .as_new_client("pcn-other", "Organization/org-other-pcn", "pcn", scope)
        .await;
    assert_eq!(total(&metrics(&other, PERIOD).await), 0.0);

    // A GP: its own practice only, whatever else it asks.
    let gp = s
        .as_new_client(
            "gp-dash",
            "Organization/org-practice-mill-lane",
            "gp",
            scope,
        )
        .await;
    let m = metrics(&gp, PERIOD).await;
    let want = d.cohort("2026-01-01", "2026-12-31", &|_, r| {
        r.practice == "org-practice-mill-lane"
    });
    assert_eq!(total(&m), want.len() as f64);
    for q in [
        "pcn=Organization/org-pcn",
        "practice=Organization/org-practice-orchard",
    ] {
        let resp = gp.get(&format!("/dashboard/metrics?{PERIOD}&{q}")).await;
        assert_outcome(resp, 403, "forbidden").await;
    }

    // A VCS: the referrals it, or one of its link workers, holds a Task on.
    for vcs in ["org-vcs-wellbeing", "org-vcs-money-advice"] {
        let c = s
            .as_new_client(
                &format!("vcs-{vcs}"),
                &format!("Organization/{vcs}"),
                "vcs",
                scope,
            )
            .await;
        let own: BTreeSet<String> = std::iter::once(format!("Organization/{vcs}"))
            .chain(
                d.roles
                    .iter()
                    .filter(|(_, r)| r.0 == vcs)
                    .map(|(id, _)| format!("PractitionerRole/{id}")),
            )
            .collect();
        let want = d.cohort("2026-01-01", "2026-12-31", &|id, _| {
            d.tasks
                .values()
                .any(|t| t.focus == id && t.owner.as_ref().is_some_and(|o| own.contains(o)))
        });
        assert_eq!(
            total(&metrics(&c, PERIOD).await),
            want.len() as f64,
            "{vcs}"
        );
    }

    // A token without a referral search scope: 403 before any figure.
    let tasks_only = s
        .as_new_client("pcn-tasks", "Organization/org-pcn", "pcn", "system/Task.rs")
        .await;
    assert_outcome(tasks_only.get("/dashboard/metrics").await, 403, "forbidden").await;
    // No token: 401.
    assert_eq!(s.anonymous().get("/dashboard/metrics").await.status(), 401);
}

async fn malformed_requests_are_400_naming_the_parameter(b: Backend) {
    let s = demo_server(b, "1").await;
    let pcn = pcn_client(&s).await;
    for (query, param) in [
        ("from=2026-13-01", "from"),
        ("to=yesterday", "to"),
        ("from=2026-03-01&to=2026-02-01", "from"),
        ("from=2000-01-01&to=2026-01-01", "from"),
        ("bucket=day", "bucket"),
        ("need=boredom", "need"),
        ("employment-model=freelance", "employment-model"),
        ("practice=Patient/p1", "practice"),
        ("link-worker=org-pcn", "link-worker"),
        ("pcn=Organization/", "pcn"),
        ("min-group=0", "min-group"),
        ("gp-months=100", "gp-months"),
        ("colour=red", "colour"),
    ] {
        let resp = pcn.get(&format!("/dashboard/metrics?{query}")).await;
        let outcome = assert_outcome(resp, 400, "invalid").await;
        assert_eq!(expression(&outcome), Some(param), "{query}");
    }
}

async fn gp_consultations_before_and_after_referral(b: Backend) {
    let s = demo_server(b, "1").await;
    let d = Demo::load();
    let cohort = d.cohort("2026-01-01", "2026-12-31", &|_, _| true);
    // GP consultations sent by the practices, on the referral's trail so
    // that the PCN may see them: (referral, days from the referral, at the
    // referring practice or another one).
    let plan: [(&str, f64, bool); 9] = [
        ("referral-001", -150.0, true),
        ("referral-001", -20.0, true),
        ("referral-001", -1.0, true),
        ("referral-001", 10.0, true),
        ("referral-002", -200.0, true), // more than six months before: not counted
        ("referral-002", 30.0, true),
        ("referral-003", -5.0, false), // another practice: not counted
        ("referral-004", 100.0, true),
        ("referral-004", 170.0, true),
    ];
    let (mut before, mut after) = (0.0, 0.0);
    let encounter = |sr: &str, offset: f64, provider: &str, on_trail: bool| {
        let r = &d.referrals[sr];
        let when = iso(secs(&r.authored) + offset * 86400.0);
        let mut e = json!({
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{}", r.patient)},
            "serviceProvider": {"reference": format!("Organization/{provider}")},
            "period": {"start": when, "end": when}
        });
        if on_trail {
            e["basedOn"] = json!([{"reference": format!("ServiceRequest/{sr}")}]);
        }
        e
    };
    for (sr, offset, own) in plan {
        let practice = d.referrals[sr].practice.clone();
        let provider = if own {
            practice
        } else {
            "org-practice-mill-lane".to_string()
        };
        if own && offset.abs() < 181.0 {
            if offset < 0.0 {
                before += 1.0;
            } else {
                after += 1.0;
            }
        }
        s.create(&encounter(sr, offset, &provider, true)).await;
    }
    // One more, off the trail: only its creator (here the admin) sees it.
    s.create(&encounter(
        "referral-005",
        -3.0,
        "org-practice-castle-street",
        false,
    ))
    .await;

    let n = cohort.len() as f64;
    let pcn = pcn_client(&s).await;
    let m = metrics(&pcn, PERIOD).await;
    let f = row(&m, "gp_contacts", "before_after", "all");
    // Every demo referral is more than six months old: all have follow-up.
    close(&f["referrals"], n, "referrals with follow-up");
    close(&f["before_mean"], before / n, "before");
    close(&f["after_mean"], after / n, "after");
    close(&f["value"], (after - before) / n, "change");
    let m = metrics(&s, &format!("{PERIOD}&pcn=Organization/org-pcn")).await;
    let f = row(&m, "gp_contacts", "before_after", "all");
    close(
        &f["before_mean"],
        (before + 1.0) / n,
        "before, as the admin",
    );
}

/// A figure's value, 0 when it has no row (nothing to count).
fn value_or_zero(m: &Value, family: &str, name: &str, group: &str, key: &str) -> f64 {
    rows(m, family, name)
        .iter()
        .find(|r| r["group"] == group && r["subgroup"].is_null())
        .map_or(0.0, |r| r[key].as_f64().unwrap())
}

/// Resource as stored, changed by `f`, written back.
async fn change(s: &Server, path: &str, f: impl FnOnce(&mut Value)) {
    let mut r = s.get_ok(path).await;
    f(&mut r);
    s.update(&r).await;
}

/// The dashboard summary (`dash_referrals`, `dash_facts`) follows every
/// kind of write: a Task reassigned, a Task's status changing, a contact
/// deleted, a referral's needs changed; `sp-hub reindex` rebuilds it to
/// the same figures.
async fn the_summary_follows_writes_and_rebuilds_the_same(b: Backend) {
    let s = demo_server(b, "1").await;
    let q = format!("{PERIOD}&pcn=Organization/org-pcn");
    let open =
        |m: &Value, owner: &str| value_or_zero(m, "pressure", "by_link_worker", owner, "value");
    let m0 = metrics(&s, &q).await;

    // Reassigned: the open case moves from one link worker to another.
    change(&s, "/Task/task-024", |t| {
        t["owner"] = json!({"reference": "PractitionerRole/role-lw-1"});
    })
    .await;
    let m1 = metrics(&s, &q).await;
    let (lw1, lw3) = ("PractitionerRole/role-lw-1", "PractitionerRole/role-lw-3");
    assert_eq!(open(&m1, lw1), open(&m0, lw1) + 1.0, "reassigned to");
    assert_eq!(open(&m1, lw3), open(&m0, lw3) - 1.0, "reassigned from");

    // Completed: one more in the funnel's stage, one fewer open case.
    change(&s, "/Task/task-023", |t| {
        t["status"] = json!("completed");
        t["executionPeriod"]["end"] = json!("2026-04-01T16:00:00Z");
    })
    .await;
    let m2 = metrics(&s, &q).await;
    let completed = |m: &Value| value_or_zero(m, "funnel", "stages", "completed", "numerator");
    assert_eq!(completed(&m2), completed(&m1) + 1.0, "completed");
    assert_eq!(
        open(&m2, lw3),
        open(&m1, lw3) - 1.0,
        "completed case closed"
    );

    // Deleted: a contact no longer counts.
    let contacts =
        |m: &Value| value_or_zero(m, "activity", "contacts_per_person", "all", "numerator");
    assert_eq!(s.delete("/Encounter/contact-030-1").await.status(), 204);
    let m3 = metrics(&s, &q).await;
    assert_eq!(contacts(&m3), contacts(&m2) - 1.0, "contact deleted");

    // A referral's needs changed: it leaves one need's count.
    change(&s, "/ServiceRequest/referral-030", |r| {
        r["reasonCode"].as_array_mut().unwrap().remove(0);
    })
    .await;
    let m4 = metrics(&s, &q).await;
    let need = |m: &Value| value_or_zero(m, "referrals", "by_need", "carer-support", "value");
    assert_eq!(need(&m4), need(&m3) - 1.0, "need removed");

    // Rebuilt from the resources: the same figures.
    let out = std::process::Command::new(bin())
        .args(["reindex", "--database-url", &s.database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A new client: the old one's idle connection may have timed out.
    let mut m5 = metrics(&s.with_token(&s.token), &q).await;
    // The open pool's ages run on with the clock.
    let mut m4 = m4;
    for m in [&mut m4, &mut m5] {
        m["figures"]["funnel"]["open_pool"] = Value::Null;
    }
    assert_eq!(m5["figures"], m4["figures"]);
}

/// A FHIR dateTime (UTC, seconds) for seconds since 1970.
fn iso(secs: f64) -> String {
    let s = secs as i64;
    let (days, rem) = (s.div_euclid(86400), s.rem_euclid(86400));
    // Civil from days (H. Hinnant).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

both_backends!(
    every_figure_matches_the_demo_data,
    filters_and_buckets_narrow_the_figures,
    small_groups_are_suppressed,
    each_caller_sees_its_own_organisation,
    malformed_requests_are_400_naming_the_parameter,
    gp_consultations_before_and_after_referral,
    the_summary_follows_writes_and_rebuilds_the_same,
);
