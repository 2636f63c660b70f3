//! Synthetic social prescribing data at scale, for benchmarks
//! (`sp-hub load-synthetic`, `service/benches/`, the `sp-hub-bench` load
//! benchmark): PCNs, their practices (with list sizes), VCS organisations and
//! link workers, then `referrals` SP referrals spread evenly over the PCNs
//! and over 2025-2026, each with its Patient (an NHS number), the
//! ServiceRequest and its top-level Task in a status drawn from the whole
//! workflow (executionPeriod, status reasons, owners; about 5% still in the
//! open pool), up to three contacts, holding work for one in five, paired
//! ONS4 and SWEMWBS outcomes for one in three and an onward referral for one
//! in ten: about seven resources a referral.
//!
//! Everything is written through `Store::transaction` and `Tx::write`, the
//! server's own write path (current row, history row, index rows, change
//! feed ticks), 1,000 resources a transaction, so the stored rows are the
//! ones the server would store. Deterministic: the same options load the
//! same data. It touches nothing in the store but those two calls.

use std::time::Instant;

use serde_json::{json, Value};

use crate::store::{Decision, Store};

/// Resources per write transaction: large enough that commits are not the
/// cost, small enough that a transaction's rows stay in memory.
const BATCH: usize = 1000;
pub const PRACTICES_PER_PCN: usize = 5;
const SP: &str = "https://sp-hub.example/fhir";
pub const NHS_NUMBER: &str = "https://fhir.nhs.uk/Id/nhs-number";
pub const REFERRAL_ID: &str = "https://fhir.example.org/sp-hub/referral-id";

#[derive(Debug, Clone)]
pub struct Options {
    pub referrals: usize,
    pub pcns: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            referrals: 10_000,
            pcns: 10,
            seed: 42,
        }
    }
}

/// What a load wrote.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub referrals: usize,
    pub resources: usize,
    pub seconds: f64,
}

impl Loaded {
    pub fn per_second(&self) -> f64 {
        self.resources as f64 / self.seconds.max(1e-9)
    }
}

/// splitmix64: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A valid NHS number (modulus 11 check digit) made from `n` < 10^8 and a
/// leading digit: the eight digits after it are `n`, the ninth is the first
/// that gives a valid check digit, so distinct `n` give distinct numbers.
pub fn nhs_number(lead: u8, n: u64) -> String {
    // Nine digits before the check digit: the lead, seven from `n`, and
    // the one chosen below.
    let prefix = format!("{}{:07}", lead % 10, n % 10_000_000);
    for ninth in 0..10u32 {
        let digits: Vec<u32> = prefix
            .chars()
            .filter_map(|c| c.to_digit(10))
            .chain([ninth])
            .collect();
        let sum: u32 = digits
            .iter()
            .enumerate()
            .map(|(i, d)| d * (10 - i as u32))
            .sum();
        let check = (11 - sum % 11) % 11;
        if check != 10 {
            return format!("{prefix}{ninth}{check}");
        }
    }
    // Unreachable: the ninth digit moves the sum through every residue.
    format!("{prefix}00")
}

/// Day `d` (0 = 2025-01-01) at `minute` as a FHIR dateTime.
pub fn instant(d: u64, minute: u64) -> String {
    const MONTHS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let (year, mut day) = (2025 + d / 365, d % 365);
    let mut month = 0;
    while day >= MONTHS[month] {
        day -= MONTHS[month];
        month += 1;
        if month == 12 {
            return format!(
                "{}-12-31T{:02}:{:02}:00Z",
                year,
                minute / 60 % 24,
                minute % 60
            );
        }
    }
    format!(
        "{year}-{:02}-{:02}T{:02}:{:02}:00Z",
        month + 1,
        day + 1,
        minute / 60 % 24,
        minute % 60
    )
}

fn coding(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

/// One resource to write: type, id, body.
pub type Row = (&'static str, String, Value);

fn org(id: String, kind: &str, part_of: Option<&str>, list_size: Option<u64>) -> Row {
    let mut o = json!({"resourceType": "Organization", "active": true, "name": id,
        "type": [coding(&format!("{SP}/CodeSystem/sp-organisation-kind"), kind)]});
    if let Some(p) = part_of {
        o["partOf"] = json!({"reference": format!("Organization/{p}")});
    }
    if let Some(n) = list_size {
        o["extension"] = json!([{"url": format!("{SP}/StructureDefinition/sp-registered-list-size"), "valueInteger": n}]);
    }
    ("Organization", id, o)
}

/// The directory: PCNs, their practices, VCS organisations, link workers
/// (two PCN-employed, two subcontracted through the PCN's VCS organisations).
pub fn directory(pcns: usize) -> Vec<Row> {
    let mut rows = vec![];
    for p in 0..pcns {
        rows.push(org(format!("pcn{p}"), "pcn", None, None));
        for k in 0..PRACTICES_PER_PCN {
            rows.push(org(
                format!("pcn{p}-gp{k}"),
                "gp-practice",
                Some(&format!("pcn{p}")),
                Some(8000 + 500 * k as u64),
            ));
        }
        for v in 0..2 {
            rows.push(org(format!("pcn{p}-vcs{v}"), "vcs", None, None));
        }
        for w in 0..4 {
            let (employer, model) = if w < 2 {
                (format!("pcn{p}"), "pcn-employed")
            } else {
                (format!("pcn{p}-vcs{}", w - 2), "vcs-subcontracted")
            };
            rows.push((
                "PractitionerRole",
                format!("pcn{p}-lw{w}"),
                json!({"resourceType": "PractitionerRole", "active": true,
                    "extension": [
                        {"url": format!("{SP}/StructureDefinition/sp-employment-model"),
                         "valueCoding": {"system": format!("{SP}/CodeSystem/sp-employment-model"), "code": model}},
                        {"url": format!("{SP}/StructureDefinition/sp-serves-pcn"),
                         "valueReference": {"reference": format!("Organization/pcn{p}")}}],
                    "organization": {"reference": format!("Organization/{employer}")}}),
            ));
        }
    }
    rows
}

const NEEDS: [&str; 8] = [
    "loneliness",
    "debt-money",
    "housing",
    "bereavement",
    "mental-wellbeing",
    "employment",
    "carer-support",
    "benefits-welfare",
];
const STATUSES: [&str; 9] = [
    "requested",
    "accepted",
    "in-progress",
    "in-progress",
    "on-hold",
    "completed",
    "completed",
    "rejected",
    "failed",
];
const REASONS: [&str; 5] = [
    "no-suitable-service",
    "not-ready",
    "could-not-contact",
    "capacity-full",
    "declined-by-person",
];
const MODES: [&str; 4] = ["phone", "video", "face-to-face", "home-visit"];
const FAMILIES: [&str; 8] = [
    "Okafor", "Smith", "Hussain", "Jones", "Patel", "Williams", "Nowak", "Brown",
];
const GIVEN: [&str; 8] = [
    "Grace", "Jo", "Maria", "Tom", "Aisha", "Dylan", "Ewa", "Sam",
];

/// Referral `i` (of `pcns` PCNs) and its trail.
pub fn referral(i: usize, pcns: usize, rng: &mut Rng) -> Vec<Row> {
    let pcn = i % pcns.max(1);
    let practice = format!("pcn{pcn}-gp{}", rng.below(PRACTICES_PER_PCN as u64));
    let day = rng.below(730);
    let authored = instant(day, 8 * 60 + rng.below(9 * 60));
    let sr = format!("sr{i}");
    let patient = format!("Patient/pat{i}");
    let based_on = json!([{"reference": format!("ServiceRequest/{sr}")}]);
    let mut needs = vec![coding(
        &format!("{SP}/CodeSystem/sp-need"),
        rng.pick(&NEEDS),
    )];
    if rng.below(3) == 0 {
        needs.push(coding(
            &format!("{SP}/CodeSystem/sp-need"),
            rng.pick(&NEEDS),
        ));
    }
    let status = rng.pick(&STATUSES);
    let ended = ["completed", "rejected", "failed"].contains(&status);
    let mut rows = vec![
        (
            "Patient",
            format!("pat{i}"),
            json!({"resourceType": "Patient", "active": true,
                "identifier": [{"system": NHS_NUMBER, "value": nhs_number(4, i as u64)}],
                "name": [{"family": rng.pick(&FAMILIES), "given": [rng.pick(&GIVEN)]}],
                "gender": if i.is_multiple_of(2) { "female" } else { "male" },
                "birthDate": format!("{}-{:02}-{:02}", 1940 + rng.below(60), 1 + rng.below(12), 1 + rng.below(28)),
                "generalPractitioner": [{"reference": format!("Organization/{practice}")}]}),
        ),
        (
            "ServiceRequest",
            sr.clone(),
            json!({"resourceType": "ServiceRequest", "status": if ended { "completed" } else { "active" },
                "identifier": [{"system": REFERRAL_ID, "value": format!("SYN-{i}")}],
                "intent": "order", "code": coding("http://snomed.info/sct", "871731000000106"),
                "subject": {"reference": patient}, "authoredOn": authored,
                "requester": {"reference": format!("Organization/{practice}")}, "reasonCode": needs}),
        ),
    ];
    let worker = format!("PractitionerRole/pcn{pcn}-lw{}", rng.below(4));
    let mut task = json!({"resourceType": "Task", "status": status, "intent": "order",
        "code": coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": {"reference": format!("ServiceRequest/{sr}")}, "for": {"reference": patient},
        "authoredOn": authored, "requester": {"reference": format!("Organization/{practice}")}});
    let pooled = status == "requested" && rng.below(2) == 0;
    if !pooled {
        task["owner"] = json!({"reference": worker});
    }
    let accepted = !["requested", "rejected"].contains(&status);
    if accepted {
        task["executionPeriod"] = json!({"start": instant(day + 1 + rng.below(5), 9 * 60)});
    }
    if ["rejected", "failed", "on-hold"].contains(&status) {
        task["statusReason"] = coding(
            &format!("{SP}/CodeSystem/sp-status-reason"),
            rng.pick(&REASONS),
        );
    }
    rows.push(("Task", format!("t{i}"), task));
    if !accepted {
        return rows;
    }
    for c in 0..rng.below(4) {
        let at = instant(day + 3 + 10 * c, 10 * 60 + rng.below(6 * 60));
        rows.push((
            "Encounter",
            format!("c{i}-{c}"),
            json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "VR"},
                "type": [coding(&format!("{SP}/CodeSystem/sp-contact-mode"), rng.pick(&MODES))],
                "subject": {"reference": patient}, "basedOn": based_on,
                "participant": [{"individual": {"reference": worker}}],
                "period": {"start": at, "end": at}}),
        ));
    }
    if rng.below(5) == 0 {
        let start = instant(day + 5, 14 * 60);
        let end = instant(day + 5, 15 * 60);
        rows.push((
            "Procedure",
            format!("h{i}"),
            json!({"resourceType": "Procedure", "status": "completed", "basedOn": based_on,
                "category": coding(&format!("{SP}/CodeSystem/sp-holding-work"), "check-in-call"),
                "subject": {"reference": patient}, "performedPeriod": {"start": start, "end": end},
                "performer": [{"actor": {"reference": worker}}]}),
        ));
    }
    if rng.below(3) == 0 {
        for (timing, offset) in [("baseline", 3), ("follow-up", 60)] {
            for (measure, value) in [
                ("ons4-life-satisfaction", 3 + rng.below(6)),
                ("swemwbs-total", 12 + rng.below(15)),
            ] {
                rows.push((
                    "Observation",
                    format!("o{i}-{timing}-{measure}"),
                    json!({"resourceType": "Observation", "status": "final", "basedOn": based_on,
                        "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "survey"),
                                     coding(&format!("{SP}/CodeSystem/sp-outcome-timing"), timing)],
                        "code": coding(&format!("{SP}/CodeSystem/sp-outcome-measure"), measure),
                        "subject": {"reference": patient}, "effectiveDateTime": instant(day + offset, 12 * 60),
                        "performer": [{"reference": worker}], "valueInteger": value}),
                ));
            }
        }
    }
    if rng.below(10) == 0 {
        rows.push((
            "Task",
            format!("t{i}-onward"),
            json!({"resourceType": "Task", "status": "in-progress", "intent": "order",
                "code": coding("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
                "focus": {"reference": format!("ServiceRequest/{sr}")}, "for": {"reference": patient},
                "partOf": [{"reference": format!("Task/t{i}")}],
                "owner": {"reference": format!("Organization/pcn{pcn}-vcs0")}}),
        ));
    }
    rows
}

/// Writes `batch` in one transaction through the server's write path.
pub fn write_batch(store: &Store, batch: &[Row]) -> Result<(), String> {
    store
        .transaction(|tx| {
            for (res_type, id, resource) in batch {
                tx.write(res_type, id, |_| {
                    Ok(Decision::Put {
                        method: "PUT",
                        resource: resource.clone(),
                    })
                })?;
            }
            Ok(())
        })
        .map_err(|e| format!("load failed: {e}"))
}

/// Writer threads: PostgreSQL spends a batch's time in round trips, so
/// several transactions at once fill the wait (distinct resources, no
/// conflicts); SQLite has one writer, so one thread writes while this one
/// builds the next batch.
fn writers(store: &Store) -> usize {
    match store.backend() {
        crate::store::Backend::Postgres => 6,
        crate::store::Backend::Sqlite => 1,
    }
}

/// Loads the directory and `o.referrals` referrals; `progress` is called
/// about ten times with what is written so far.
pub fn load(
    store: &Store,
    o: &Options,
    progress: impl Fn(&Loaded) + Sync,
) -> Result<Loaded, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Mutex};

    let started = Instant::now();
    let dir = directory(o.pcns);
    let directory_rows = dir.len();
    write_batch(store, &dir)?;
    let written = AtomicUsize::new(directory_rows);
    let done_referrals = AtomicUsize::new(0);
    let step = (o.referrals / 10).max(1);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let workers = writers(store);
    let (tx, rx) = mpsc::sync_channel::<(usize, Vec<Row>)>(workers * 2);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                // The lock is held only to take the next batch.
                let next = rx
                    .lock()
                    .map_err(|_| ())
                    .and_then(|r| r.recv().map_err(|_| ()));
                let Ok((referrals, batch)) = next else { return };
                if let Err(e) = write_batch(store, &batch) {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    return;
                }
                let resources = written.fetch_add(batch.len(), Ordering::Relaxed) + batch.len();
                let before = done_referrals.fetch_add(referrals, Ordering::Relaxed);
                let after = before + referrals;
                if after / step > before / step {
                    progress(&Loaded {
                        referrals: after,
                        resources,
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
            });
        }
        let mut rng = Rng(o.seed);
        let mut batch = Vec::with_capacity(BATCH + 16);
        let mut in_batch = 0;
        for i in 0..o.referrals {
            batch.extend(referral(i, o.pcns, &mut rng));
            in_batch += 1;
            if batch.len() >= BATCH || i + 1 == o.referrals {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH + 16));
                // A send fails only when every writer has stopped on an error.
                if tx.send((in_batch, full)).is_err() {
                    break;
                }
                in_batch = 0;
            }
        }
        drop(tx);
    });
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(Loaded {
        referrals: done_referrals.into_inner(),
        resources: written.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nhs_numbers_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for n in 0..2000 {
            let s = nhs_number(4, n);
            assert_eq!(s.len(), 10);
            let d: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
            let sum: u32 = (0..9).map(|i| d[i] * (10 - i as u32)).sum();
            assert_eq!((11 - sum % 11) % 11, d[9], "{s}");
            assert!(seen.insert(s));
        }
    }
}
