//! Organisation-scoped access over HTTP, on the example PCN (`--demo`):
//! what a GP practice, a PCN and two VCS organisations each see, checked
//! against a model of the rules computed here from the example data; a
//! BOLA matrix (every client tries every path on other organisations'
//! referrals, and every attempt must be refused); property-level rules;
//! and a consent withdrawal.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use serde_json::{json, Value};

const DEMO: &str = include_str!("../fhir-profiles/examples/demo-pcn.json");

/// The example PCN, reduced to what access depends on.
struct Demo {
    /// referral id → (requester reference, subject reference)
    referrals: BTreeMap<String, (String, String)>,
    /// task id → (focus referral id, owner reference, status)
    tasks: BTreeMap<String, (String, Option<String>, String)>,
    /// sub-task id → parent task id
    parents: BTreeMap<String, String>,
    /// PractitionerRole id → (organization id, PCN served)
    roles: BTreeMap<String, (String, Option<String>)>,
    /// organization id → partOf organization id
    part_of: BTreeMap<String, String>,
}

fn id_of(reference: &str) -> String {
    reference.rsplit('/').next().unwrap().to_string()
}

impl Demo {
    fn load() -> Demo {
        let bundle: Value = serde_json::from_str(DEMO).unwrap();
        let mut d = Demo {
            referrals: BTreeMap::new(),
            tasks: BTreeMap::new(),
            parents: BTreeMap::new(),
            roles: BTreeMap::new(),
            part_of: BTreeMap::new(),
        };
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            let id = r["id"].as_str().unwrap().to_string();
            let s = |v: &Value| v.as_str().map(String::from);
            match r["resourceType"].as_str().unwrap() {
                "ServiceRequest" => {
                    d.referrals.insert(
                        id,
                        (
                            s(&r["requester"]["reference"]).unwrap(),
                            s(&r["subject"]["reference"]).unwrap(),
                        ),
                    );
                }
                "Task" => {
                    if let Some(p) = r["partOf"][0]["reference"].as_str() {
                        d.parents.insert(id.clone(), id_of(p));
                    }
                    d.tasks.insert(
                        id,
                        (
                            id_of(r["focus"]["reference"].as_str().unwrap()),
                            s(&r["owner"]["reference"]),
                            s(&r["status"]).unwrap(),
                        ),
                    );
                }
                "PractitionerRole" => {
                    let serves = r["extension"].as_array().and_then(|exts| {
                        exts.iter()
                            .find(|x| x["url"].as_str().unwrap().ends_with("sp-serves-pcn"))
                            .map(|x| id_of(x["valueReference"]["reference"].as_str().unwrap()))
                    });
                    d.roles.insert(
                        id,
                        (
                            id_of(r["organization"]["reference"].as_str().unwrap()),
                            serves,
                        ),
                    );
                }
                "Organization" => {
                    if let Some(p) = r["partOf"]["reference"].as_str() {
                        d.part_of.insert(id, id_of(p));
                    }
                }
                _ => {}
            }
        }
        d
    }

    /// The organisation an actor reference (Organization or
    /// PractitionerRole) belongs to.
    fn org_of(&self, actor: &str) -> String {
        match actor.split_once('/') {
            Some(("PractitionerRole", id)) => self.roles[id].0.clone(),
            _ => id_of(actor),
        }
    }

    fn owned_by(&self, task: &str, org: &str) -> bool {
        self.tasks[task]
            .1
            .as_deref()
            .is_some_and(|o| self.org_of(o) == org)
    }

    fn in_pool_of(&self, task: &str, org: &str) -> bool {
        let (focus, owner, status) = &self.tasks[task];
        let served: BTreeSet<&String> = self
            .roles
            .values()
            .filter(|(o, _)| o == org)
            .filter_map(|(_, s)| s.as_ref())
            .collect();
        let practice = self.org_of(&self.referrals[focus].0);
        owner.is_none()
            && status == "requested"
            && self
                .part_of
                .get(&practice)
                .is_some_and(|p| served.contains(p))
    }

    /// (referrals, tasks, patients) the model says `org` in `role` sees.
    fn view(
        &self,
        role: &str,
        org: &str,
    ) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
        let practice_of = |sr: &str| self.org_of(&self.referrals[sr].0);
        let tasks: BTreeSet<String> = self
            .tasks
            .keys()
            .filter(|t| match role {
                "gp" => practice_of(&self.tasks[*t].0) == org,
                "pcn" => {
                    let sr = &self.tasks[*t].0;
                    self.part_of.get(&practice_of(sr)).is_some_and(|p| p == org)
                        || self
                            .tasks
                            .keys()
                            .any(|u| self.tasks[u].0 == *sr && self.owned_by(u, org))
                }
                _ => {
                    self.owned_by(t, org)
                        || self.in_pool_of(t, org)
                        || self.parents.get(*t).is_some_and(|p| self.owned_by(p, org))
                }
            })
            .cloned()
            .collect();
        // Every role sees the referrals of the Tasks it sees.
        let referrals: BTreeSet<String> = tasks.iter().map(|t| self.tasks[t].0.clone()).collect();
        let patients = referrals
            .iter()
            .map(|r| id_of(&self.referrals[r].1))
            .collect();
        (referrals, tasks, patients)
    }
}

/// The ids a search returns (all of them: one page of up to 1000).
async fn ids_of(s: &Server, path: &str) -> BTreeSet<String> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let b = s.get_ok(&format!("{path}{sep}_count=1000")).await;
    assert!(link(&b, "next").is_none(), "{path}: more than one page");
    entry_ids(&b).into_iter().collect()
}

struct Clients {
    gp_mill: Server,
    gp_castle: Server,
    gp_outside: Server,
    pcn: Server,
    vcs_wellbeing: Server,
    vcs_money: Server,
}

async fn clients(s: &Server) -> Clients {
    let all = "system/*.cruds";
    Clients {
        gp_mill: s
            .as_new_client("gp-mill", "Organization/org-practice-mill-lane", "gp", all)
            .await,
        gp_castle: s
            .as_new_client(
                "gp-castle",
                "Organization/org-practice-castle-street",
                "gp",
                all,
            )
            .await,
        gp_outside: s
            .as_new_client("gp-outside", "Organization/org-elsewhere", "gp", all)
            .await,
        pcn: s
            .as_new_client("pcn", "Organization/org-pcn", "pcn", all)
            .await,
        vcs_wellbeing: s
            .as_new_client(
                "vcs-wellbeing",
                "Organization/org-vcs-wellbeing",
                "vcs",
                all,
            )
            .await,
        vcs_money: s
            .as_new_client("vcs-money", "Organization/org-vcs-money-advice", "vcs", all)
            .await,
    }
}

impl Clients {
    fn each(&self) -> Vec<(&'static str, &'static str, &'static str, &Server)> {
        vec![
            ("gp-mill", "gp", "org-practice-mill-lane", &self.gp_mill),
            (
                "gp-castle",
                "gp",
                "org-practice-castle-street",
                &self.gp_castle,
            ),
            ("gp-outside", "gp", "org-elsewhere", &self.gp_outside),
            ("pcn", "pcn", "org-pcn", &self.pcn),
            (
                "vcs-wellbeing",
                "vcs",
                "org-vcs-wellbeing",
                &self.vcs_wellbeing,
            ),
            ("vcs-money", "vcs", "org-vcs-money-advice", &self.vcs_money),
        ]
    }
}

/// Each organisation sees exactly its own referrals, Tasks and Patients.
async fn each_organisation_sees_exactly_its_own_trails(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let demo = Demo::load();
    let c = clients(&s).await;
    let mut table = String::from("\nclient | referrals | tasks | patients\n");
    for (name, role, org, client) in c.each() {
        let (referrals, tasks, patients) = demo.view(role, org);
        assert_eq!(
            ids_of(client, "/ServiceRequest").await,
            referrals,
            "{name}: referrals"
        );
        assert_eq!(ids_of(client, "/Task").await, tasks, "{name}: tasks");
        assert_eq!(
            ids_of(client, "/Patient").await,
            patients,
            "{name}: patients"
        );
        // Directory data is shared.
        assert_eq!(client.total("/Organization").await, 7, "{name}");
        // A count from index entries alone (no resource row read) counts
        // only what the caller may see, like the search it counts.
        for q in [
            "/Task?intent=order",
            "/ServiceRequest?intent=order",
            "/Patient?gender=female,male,other,unknown",
            "/Task?focus:ServiceRequest.intent=order",
        ] {
            let seen = ids_of(client, q).await.len() as u64;
            assert_eq!(
                client.total(&format!("{q}&_summary=count")).await,
                seen,
                "{name} {q}"
            );
            assert_eq!(
                client.total(&format!("{q}&_count=1")).await,
                seen,
                "{name} {q}"
            );
        }
        table.push_str(&format!(
            "{name} | {} | {} | {}\n",
            referrals.len(),
            tasks.len(),
            patients.len()
        ));
    }
    println!("{table}");
    // The model is not trivial: every client sees something but gp-outside,
    // and nobody but the PCN sees everything.
    assert!(c
        .each()
        .iter()
        .all(|(n, r, o, _)| *n == "gp-outside" || !demo.view(r, o).0.is_empty()));
    assert_eq!(demo.view("pcn", "org-pcn").0.len(), 50);
    assert!(demo.view("vcs", "org-vcs-wellbeing").0.len() < 50);
}

/// Every path a client could take to another organisation's referral,
/// refused (404 or left out). The table is printed.
async fn bola_matrix_every_path_is_refused(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let mut demo = Demo::load();
    // A referral from a practice outside the PCN, so the PCN has something
    // it may not see; its Task is made by the hub.
    s.update(&json!({"resourceType": "Organization", "id": "org-elsewhere", "name": "Elsewhere Surgery"}))
        .await;
    let pat = s.create(&patient("9000000009")).await;
    let pid = pat["id"].as_str().unwrap();
    let mut sr = service_request(pid, "REF-ELSEWHERE-1");
    sr["requester"] = json!({"reference": "Organization/org-elsewhere"});
    let sr = s.create(&sr).await;
    let sid = sr["id"].as_str().unwrap().to_string();
    let task = ids_of(&s, &format!("/Task?focus=ServiceRequest/{sid}")).await;
    let tid = task
        .into_iter()
        .next()
        .expect("the hub made the referral's Task");
    demo.referrals.insert(
        sid.clone(),
        (
            "Organization/org-elsewhere".into(),
            format!("Patient/{pid}"),
        ),
    );
    demo.tasks.insert(tid, (sid, None, "requested".into()));
    let c = clients(&s).await;
    let mut refused: BTreeMap<(String, &str), (usize, usize)> = BTreeMap::new();
    let mut note = |client: &str, path: &'static str, ok: bool, what: String| {
        let e = refused.entry((client.to_string(), path)).or_default();
        e.1 += 1;
        if ok {
            e.0 += 1;
        } else {
            panic!("{client}: {path} was not refused: {what}");
        }
    };
    for (name, role, org, client) in c.each() {
        let (mine, _, _) = demo.view(role, org);
        let others: Vec<&String> = demo
            .referrals
            .keys()
            .filter(|r| !mine.contains(*r))
            .collect();
        // A spread of at most five referrals outside the view.
        let step = (others.len() / 5).max(1);
        let system: BTreeSet<String> = {
            let h = client.get_ok("/_history?_count=1000").await;
            entries(&h)
                .iter()
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or("?"),
                        e["resource"]["id"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        };
        let type_history: BTreeSet<String> =
            entry_ids(&client.get_ok("/ServiceRequest/_history?_count=1000").await)
                .into_iter()
                .collect();
        for r in others.iter().step_by(step).take(5) {
            let r = r.as_str();
            let task = demo
                .tasks
                .iter()
                .find(|(_, t)| t.0 == r)
                .map(|(id, _)| id.clone())
                .unwrap();
            let (requester, subject) = &demo.referrals[r];
            let practice = id_of(requester);
            let patient = id_of(subject);
            for (label, path) in [
                ("read", format!("/ServiceRequest/{r}")),
                ("vread", format!("/ServiceRequest/{r}/_history/1")),
                (
                    "history (instance)",
                    format!("/ServiceRequest/{r}/_history"),
                ),
                ("$trail", format!("/ServiceRequest/{r}/$trail")),
                ("read Task", format!("/Task/{task}")),
                ("read Patient", format!("/Patient/{patient}")),
            ] {
                let status = client.status_of(&path).await;
                note(name, label, status == 404, format!("GET {path} → {status}"));
            }
            for (label, path) in [
                ("search _id", format!("/ServiceRequest?_id={r}")),
                (
                    "search reference",
                    format!("/Task?focus=ServiceRequest/{r}"),
                ),
                (
                    "chain",
                    format!("/Task?focus:ServiceRequest.subject=Patient/{patient}"),
                ),
                (
                    "_has",
                    format!("/Organization?_has:ServiceRequest:requester:_id={r}"),
                ),
                (
                    "_has (Patient)",
                    format!("/Patient?_has:ServiceRequest:subject:_id={r}"),
                ),
            ] {
                let found = ids_of(client, &path).await;
                note(
                    name,
                    label,
                    found.is_empty(),
                    format!("GET {path} → {found:?}"),
                );
            }
            let with_includes = ids_of(
                client,
                &format!("/Organization?_id={practice}&_revinclude=ServiceRequest:requester"),
            )
            .await;
            note(
                name,
                "_revinclude",
                !with_includes.contains(r),
                format!("{with_includes:?}"),
            );
            note(
                name,
                "history (type)",
                !type_history.contains(r),
                r.to_string(),
            );
            note(
                name,
                "history (system)",
                !system.contains(&format!("ServiceRequest/{r}")),
                r.to_string(),
            );
            let resp = client
                .send(
                    client
                        .req(
                            reqwest::Method::POST,
                            &format!("/ServiceRequest/{r}/$validate"),
                        )
                        .header("Content-Type", FHIR_JSON),
                )
                .await;
            note(
                name,
                "$validate (instance)",
                resp.status().as_u16() == 404,
                format!("{}", resp.status()),
            );
            let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": format!("ServiceRequest/{r}")}},
                {"request": {"method": "GET", "url": format!("Task?focus=ServiceRequest/{r}")}},
            ]});
            let out: Value = client.post_json("/", &batch).await.json().await.unwrap();
            let first = out["entry"][0]["response"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string();
            note(name, "batch GET", first.starts_with("404"), first);
            let total = out["entry"][1]["resource"]["total"].as_u64();
            note(name, "batch search", total == Some(0), format!("{total:?}"));
            // Writes answer as if the resource were not there.
            let patch = json!([{"op": "add", "path": "/priority", "value": "urgent"}]);
            let status = client
                .patch_json(&format!("/ServiceRequest/{r}"), &patch)
                .await
                .status();
            note(name, "patch", status == 404, format!("{status}"));
            let status = client.delete(&format!("/Task/{task}")).await.status();
            note(name, "delete", status == 404, format!("{status}"));
            let mut body = s.get_ok(&format!("/Task/{task}")).await;
            body["note"] = json!([{"text": "written by another organisation"}]);
            let status = client
                .put_json(&format!("/Task/{task}"), &body)
                .await
                .status();
            note(name, "update", status == 404, format!("{status}"));
        }
    }
    // Nothing was changed by any of it.
    assert_eq!(s.total("/ServiceRequest/referral-001/_history").await, 1);
    let mut table = String::from("\nclient | path | refused / tried\n");
    for ((client, path), (ok, n)) in &refused {
        table.push_str(&format!("{client} | {path} | {ok}/{n}\n"));
    }
    let (ok, n) = refused.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    table.push_str(&format!("all | all | {ok}/{n} refused\n"));
    println!("{table}");
    assert_eq!(ok, n);
    assert!(n >= 500, "the matrix is too small: {n}");
}

/// A chain or `_has` through a resource the caller cannot see tells
/// nothing, even from one it can see.
async fn chains_do_not_infer_through_hidden_resources(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let c = clients(&s).await;
    // vcs-money owns the debt-advice sub-task of referral-003, whose parent
    // Task is owned by a wellbeing link worker.
    assert_eq!(
        c.vcs_money.status_of("/Task/task-003-money-advice").await,
        200
    );
    assert_eq!(c.vcs_money.status_of("/Task/task-003").await, 404);
    let through_parent = ids_of(
        &c.vcs_money,
        "/Task?part-of:Task.owner=PractitionerRole/role-lw-3",
    )
    .await;
    assert!(through_parent.is_empty(), "{through_parent:?}");
    let admin_sees = ids_of(&s, "/Task?part-of:Task.owner=PractitionerRole/role-lw-3").await;
    assert!(
        admin_sees.contains("task-003-money-advice"),
        "{admin_sees:?}"
    );
    // _include of the hidden parent is left out.
    let page = ids_of(
        &c.vcs_money,
        "/Task?_id=task-003-money-advice&_include=Task:part-of",
    )
    .await;
    assert_eq!(page, BTreeSet::from(["task-003-money-advice".to_string()]));
}

/// Property level: what each side may change of a Task, and what a VCS
/// sees of a Patient.
async fn each_side_changes_only_its_part(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let c = clients(&s).await;
    let vcs = &c.vcs_wellbeing;
    // task-041: requested, owned by org-vcs-wellbeing.
    let task = vcs.get_ok("/Task/task-041").await;
    for (element, value) in [
        ("focus", json!({"reference": "ServiceRequest/referral-001"})),
        ("for", json!({"reference": "Patient/patient-001"})),
        (
            "requester",
            json!({"reference": "Organization/org-practice-orchard"}),
        ),
    ] {
        let mut t = task.clone();
        t[element] = value;
        let resp = vcs.put_json("/Task/task-041", &t).await;
        assert_eq!(resp.status().as_u16(), 403, "changing Task.{element}");
        let oo: Value = resp.json().await.unwrap();
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(element),
            "{oo}"
        );
    }
    // Onward referrals: a sub-task of a Task it owns, about the same
    // referral and person; not a way into someone else's referral.
    let onward = |parent: &str, focus: &str, owner: &str| {
        let mut t = task.clone();
        let o = t.as_object_mut().unwrap();
        o.remove("id");
        o.remove("meta");
        t["partOf"] = json!([{"reference": format!("Task/{parent}")}]);
        t["focus"] = json!({"reference": format!("ServiceRequest/{focus}")});
        t["owner"] = json!({"reference": owner});
        t["status"] = json!("requested");
        t["identifier"] =
            json!([{"system": REFERRAL_ID, "value": format!("onward-{parent}-{focus}")}]);
        t
    };
    let wellbeing = "Organization/org-vcs-wellbeing";
    let resp = vcs
        .post_json("/Task", &onward("task-001", "referral-001", wellbeing))
        .await;
    assert_eq!(resp.status().as_u16(), 404, "a sub-task of another's Task");
    let resp = vcs
        .post_json("/Task", &onward("task-041", "referral-001", wellbeing))
        .await;
    assert_eq!(
        resp.status().as_u16(),
        403,
        "a sub-task about another referral"
    );
    assert_eq!(vcs.status_of("/ServiceRequest/referral-001").await, 404);
    let sub = vcs
        .create(&onward(
            "task-041",
            "referral-041",
            "Organization/org-vcs-money-advice",
        ))
        .await;
    let sub_path = format!("/Task/{}", sub["id"].as_str().unwrap());
    assert_eq!(
        vcs.status_of(&sub_path).await,
        200,
        "it sees the onward referral it made"
    );
    assert_eq!(
        c.vcs_money.status_of(&sub_path).await,
        200,
        "and so does its owner"
    );
    // On its onward referral the VCS is the requester side: it may cancel
    // it, not accept it for the service it referred to.
    let mut accept = vcs.get_ok(&sub_path).await;
    accept["status"] = json!("accepted");
    assert_eq!(
        vcs.put_json(&sub_path, &accept).await.status().as_u16(),
        403
    );
    let mut cancel = vcs.get_ok(&sub_path).await;
    cancel["status"] = json!("cancelled");
    cancel["statusReason"] = json!({"coding": [{"system": SP_STATUS_REASON, "code": "other"}]});
    let resp = vcs.put_json(&sub_path, &cancel).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );

    // Moving the Task to an organisation it is not: out of its view.
    let mut t = task.clone();
    t["owner"] = json!({"reference": "Organization/org-vcs-money-advice"});
    assert_eq!(
        vcs.put_json("/Task/task-041", &t).await.status().as_u16(),
        403
    );
    // Cancelling is the requester's.
    let mut t = task.clone();
    t["status"] = json!("cancelled");
    t["statusReason"] = json!({"coding": [{"system": SP_STATUS_REASON, "code": "other"}]});
    assert_eq!(
        vcs.put_json("/Task/task-041", &t).await.status().as_u16(),
        403
    );
    // Accepting is the owner's: allowed.
    let mut t = task.clone();
    t["status"] = json!("accepted");
    t["businessStatus"] =
        json!({"coding": [{"system": SP_BUSINESS_STATUS, "code": "awaiting-contact"}]});
    let resp = vcs.put_json("/Task/task-041", &t).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(s.get_ok("/Task/task-041").await["_history"], Value::Null);
    assert_eq!(s.total("/Task/task-041/_history").await, 2);

    // Claiming from the pool it serves: owner and status in one update.
    let mut pool = vcs.get_ok("/Task/task-043").await;
    pool["owner"] = json!({"reference": "Organization/org-vcs-wellbeing"});
    pool["status"] = json!("accepted");
    let resp = vcs.put_json("/Task/task-043", &pool).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    // vcs-money serves no PCN: the pool is not its to see or claim.
    assert_eq!(c.vcs_money.status_of("/Task/task-044").await, 404);

    // A GP may not accept its own referral's Task.
    let gp = &c.gp_mill;
    let mut own = gp.get_ok("/Task/task-046").await;
    own["status"] = json!("accepted");
    own["owner"] = json!({"reference": "Organization/org-practice-mill-lane"});
    assert_eq!(
        gp.put_json("/Task/task-046", &own).await.status().as_u16(),
        403
    );
    // A GP refers only as its own practice.
    let patient = gp.get_ok("/Patient/patient-001").await;
    let mut sr = service_request("patient-001", "REF-ACCESS-1");
    sr["requester"] = json!({"reference": "Organization/org-practice-castle-street"});
    assert_eq!(
        gp.post_json("/ServiceRequest", &sr).await.status().as_u16(),
        403
    );
    sr["requester"] = json!({"reference": "Organization/org-practice-mill-lane"});
    let created = gp.create(&sr).await;
    assert_eq!(created["subject"]["reference"], "Patient/patient-001");
    // ... and the castle-street practice cannot see it.
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        c.gp_castle
            .status_of(&format!("/ServiceRequest/{id}"))
            .await,
        404
    );
    // A Patient it posts stays visible to it before any referral.
    let mine = gp.create(&common::patient("9000000017")).await;
    assert_eq!(
        gp.status_of(&format!("/Patient/{}", mine["id"].as_str().unwrap()))
            .await,
        200
    );
    assert_eq!(
        c.gp_castle
            .status_of(&format!("/Patient/{}", mine["id"].as_str().unwrap()))
            .await,
        404
    );

    // A VCS sees a minimised Patient and may not change it.
    assert!(patient.get("gender").is_some());
    let seen = vcs.get_ok("/Patient/patient-041").await;
    assert!(has_subsetted_tag(&seen), "{seen}");
    for kept in ["name", "birthDate"] {
        assert!(seen.get(kept).is_some(), "{kept} missing: {seen}");
    }
    let full = s.get_ok("/Patient/patient-041").await;
    for dropped in [
        "gender",
        "maritalStatus",
        "generalPractitioner",
        "extension",
    ] {
        assert!(
            seen.get(dropped).is_none(),
            "{dropped} shown to a VCS: {seen}"
        );
    }
    assert!(full.get("gender").is_some());
    assert_eq!(
        vcs.put_json("/Patient/patient-041", &full)
            .await
            .status()
            .as_u16(),
        403
    );
    // Trail records are not deleted, by anyone but an admin.
    assert_eq!(gp.delete("/Task/task-046").await.status().as_u16(), 403);
    // Nor is a deleted resource of another organisation written again
    // (its old versions would come into the writer's view).
    let mut enc = s.get_ok("/Encounter/contact-001-1").await;
    assert!(s
        .delete("/Encounter/contact-001-1")
        .await
        .status()
        .is_success());
    enc["basedOn"] = json!([{"reference": "ServiceRequest/referral-041"}]);
    enc["subject"] = json!({"reference": "Patient/patient-041"});
    let resp = vcs.put_json("/Encounter/contact-001-1", &enc).await;
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        vcs.status_of("/Encounter/contact-001-1/_history/1").await,
        404
    );
}

/// A withdrawn consent stops the VCS's access to the trail at once; the
/// practice keeps its record.
async fn withdrawn_consent_stops_vcs_access(b: Backend) {
    let s = Server::start_with(b, &["--demo"], &[]).await;
    let c = clients(&s).await;
    // referral-019 (Mill Lane) is worked by a wellbeing link worker.
    for path in [
        "/ServiceRequest/referral-019",
        "/Task/task-019",
        "/Patient/patient-019",
    ] {
        assert_eq!(c.vcs_wellbeing.status_of(path).await, 200, "{path}");
    }
    let mut consent = s.get_ok("/Consent/consent-019").await;
    consent["provision"]["type"] = json!("deny");
    let resp = c.gp_mill.put_json("/Consent/consent-019", &consent).await;
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    for path in [
        "/ServiceRequest/referral-019",
        "/Task/task-019",
        "/Patient/patient-019",
        "/ServiceRequest/referral-019/$trail",
    ] {
        assert_eq!(c.vcs_wellbeing.status_of(path).await, 404, "{path}");
        assert_eq!(c.gp_mill.status_of(path).await, 200, "{path}");
    }
    assert!(!ids_of(&c.vcs_wellbeing, "/Task").await.contains("task-019"));
}

both_backends!(
    each_organisation_sees_exactly_its_own_trails,
    bola_matrix_every_path_is_refused,
    chains_do_not_infer_through_hidden_resources,
    each_side_changes_only_its_part,
    withdrawn_consent_stops_vcs_access,
);
