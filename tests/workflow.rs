//! The referral workflow the server enforces on writes: the Task state
//! machine (on update, conditional update, patch and Bundle entries), the
//! statusReason some statuses need, the referral that follows its Task's
//! end in the same transaction, and the parent Task that cannot complete
//! before its sub-tasks.

mod common;

use common::*;
use serde_json::{json, Value};

both!(
    a_referral_posted_alone_gets_its_task_in_the_open_pool_or_for_its_performer,
    every_pair_of_task_statuses_follows_the_state_machine,
    status_reason_is_required_on_create_and_update,
    patch_making_an_illegal_transition_is_409_and_writes_nothing,
    conditional_update_making_an_illegal_transition_is_409,
    transaction_entry_making_an_illegal_transition_fails_the_whole_bundle,
    batch_entry_making_an_illegal_transition_fails_alone,
    completing_a_task_completes_its_referral_in_the_same_transaction,
    rejecting_cancelling_or_failing_a_task_revokes_its_referral,
    a_referral_already_final_or_a_task_entered_in_error_leaves_the_referral_alone,
    a_transaction_entry_ending_a_task_ends_its_referral_too,
    a_sub_task_ending_leaves_the_referral_alone,
    parent_with_an_active_sub_task_cannot_complete_until_it_ends,
    a_completed_parent_takes_no_active_sub_task_even_in_a_race,
);

/// Every R4 Task.status code.
const STATUSES: [&str; 12] = [
    "draft",
    "requested",
    "received",
    "accepted",
    "ready",
    "in-progress",
    "on-hold",
    "completed",
    "failed",
    "rejected",
    "cancelled",
    "entered-in-error",
];

/// The state machine of DESIGN.md, written out here on its own so the test
/// does not take the server's table on trust.
const LEGAL: &[(&str, &[&str])] = &[
    ("draft", &["requested", "entered-in-error"]),
    ("requested", &["accepted", "rejected", "cancelled"]),
    (
        "accepted",
        &["in-progress", "on-hold", "cancelled", "completed", "failed"],
    ),
    (
        "in-progress",
        &["on-hold", "cancelled", "completed", "failed"],
    ),
    (
        "on-hold",
        &["in-progress", "cancelled", "completed", "failed"],
    ),
];

const NEEDS_REASON: [&str; 4] = ["rejected", "cancelled", "on-hold", "failed"];

fn legal(from: &str, to: &str) -> bool {
    from == to || LEGAL.iter().any(|(f, tos)| *f == from && tos.contains(&to))
}

/// `t` in `status`, with a statusReason exactly when the status needs one,
/// and without server-managed meta.
fn in_status(t: &Value, status: &str) -> Value {
    let mut t = t.clone();
    let o = t.as_object_mut().unwrap();
    o.remove("meta");
    o.insert("status".into(), json!(status));
    if NEEDS_REASON.contains(&status) {
        o.insert(
            "statusReason".into(),
            json!({"coding": [{"system": SP_STATUS_REASON, "code": "other"}],
                   "text": format!("Reason for {status}")}),
        );
    } else {
        o.remove("statusReason");
    }
    t
}

/// A Task about no referral (so nothing follows its status).
fn bare_task(status: &str) -> Value {
    let mut t = task("x", "x");
    t.as_object_mut().unwrap().remove("focus");
    t["for"] = json!({"display": "A patient"});
    in_status(&t, status)
}

async fn put_task(s: &Server, t: &Value) -> reqwest::Response {
    let id = t["id"].as_str().expect("task id");
    s.put_json(&format!("/Task/{id}"), t).await
}

/// Moves a stored Task to `status` and expects success; returns the new version.
async fn move_to(s: &Server, t: &Value, status: &str) -> Value {
    expect_json(put_task(s, &in_status(t, status)).await, 200).await
}

/// A patient, a referral in `referral_status` and its Task in `requested`.
async fn referral(s: &Server, nhs: &str, referral_status: &str) -> (String, Value) {
    let p = s.create(&patient(nhs)).await;
    let pid = p["id"].as_str().unwrap();
    let mut sr = service_request(pid, &format!("REF-{nhs}"));
    sr["status"] = json!(referral_status);
    let sr = s.create(&sr).await;
    let sid = sr["id"].as_str().unwrap().to_string();
    let t = s.create(&task(&sid, pid)).await;
    (sid, t)
}

async fn referral_status_and_version(s: &Server, sid: &str) -> (String, String) {
    let sr = s.get_ok(&format!("/ServiceRequest/{sid}")).await;
    (
        sr["status"].as_str().unwrap_or_default().to_string(),
        sr["meta"]["versionId"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn assert_names_states(o: &Value, from: &str, to: &str) {
    let d = diagnostics(o);
    assert!(
        d.contains(&format!("from '{from}' to '{to}'")),
        "the outcome should name both states ({from} → {to}): {o}"
    );
}

async fn every_pair_of_task_statuses_follows_the_state_machine(s: Server) {
    let mut table = String::from("Task.status from \\ to (ok = 200, else the status code)\n");
    table.push_str(&format!("{:>17}", ""));
    for to in STATUSES {
        table.push_str(&format!(" {:>5}", &to[..to.len().min(5)]));
    }
    table.push('\n');
    let mut mismatches = vec![];
    for from in STATUSES {
        table.push_str(&format!("{from:>17}"));
        for to in STATUSES {
            let created = s.create(&bare_task(from)).await;
            let id = created["id"].as_str().unwrap();
            let resp = put_task(&s, &in_status(&created, to)).await;
            let got = resp.status().as_u16();
            let cell = if got == 200 {
                "ok".into()
            } else {
                got.to_string()
            };
            table.push_str(&format!(" {cell:>5}"));
            if legal(from, to) {
                let body = expect_json(resp, 200).await;
                if body["status"] != to || body["meta"]["versionId"] != "2" {
                    mismatches.push(format!("{from} → {to}: stored {body}"));
                }
                continue;
            }
            if got != 409 {
                mismatches.push(format!("{from} → {to}: expected 409, got {got}"));
                continue;
            }
            let o = assert_outcome(resp, 409, "business-rule").await;
            assert_names_states(&o, from, to);
            assert_eq!(expression(&o), Some("Task.status"), "{o}");
            let after = s.get_ok(&format!("/Task/{id}")).await;
            if after["meta"]["versionId"] != "1" || after["status"] != from {
                mismatches.push(format!("{from} → {to}: refused but changed: {after}"));
            }
        }
        table.push('\n');
    }
    println!("{table}");
    assert!(mismatches.is_empty(), "{table}\n{}", mismatches.join("\n"));
}

async fn status_reason_is_required_on_create_and_update(s: Server) {
    for status in NEEDS_REASON {
        let mut t = bare_task(status);
        t.as_object_mut().unwrap().remove("statusReason");
        let o = assert_outcome(s.post_json("/Task", &t).await, 422, "processing").await;
        assert_eq!(expression(&o), Some("Task.statusReason"), "{o}");
        assert!(diagnostics(&o).contains(status), "{o}");
        // Update-as-create of a new id is a create too.
        t["id"] = json!(format!("new-{status}"));
        let o = assert_outcome(put_task(&s, &t).await, 422, "processing").await;
        assert_eq!(expression(&o), Some("Task.statusReason"), "{o}");
        assert_eq!(s.status_of(&format!("/Task/new-{status}")).await, 404);
    }
    assert_eq!(s.versions_written().await, 0);

    let accepted = s.create(&bare_task("accepted")).await;
    let id = accepted["id"].as_str().unwrap();
    let mut held = in_status(&accepted, "on-hold");
    held.as_object_mut().unwrap().remove("statusReason");
    let o = assert_outcome(put_task(&s, &held).await, 422, "processing").await;
    assert_eq!(expression(&o), Some("Task.statusReason"), "{o}");
    let now = s.get_ok(&format!("/Task/{id}")).await;
    assert_eq!(
        (now["status"].clone(), now["meta"]["versionId"].clone()),
        (json!("accepted"), json!("1"))
    );
    // With a reason it is a legal change.
    let held = move_to(&s, &accepted, "on-hold").await;
    assert_eq!(held["statusReason"]["text"], "Reason for on-hold");
    // Dropping the reason while staying on hold is refused as well.
    let mut bare = held.clone();
    bare.as_object_mut().unwrap().remove("statusReason");
    bare.as_object_mut().unwrap().remove("meta");
    assert_outcome(put_task(&s, &bare).await, 422, "processing").await;
}

async fn patch_making_an_illegal_transition_is_409_and_writes_nothing(s: Server) {
    let done = s.create(&bare_task("completed")).await;
    let id = done["id"].as_str().unwrap();
    let reopen = json!([{"op": "replace", "path": "/status", "value": "in-progress"}]);
    let o = assert_outcome(
        s.patch_json(&format!("/Task/{id}"), &reopen).await,
        409,
        "business-rule",
    )
    .await;
    assert_names_states(&o, "completed", "in-progress");
    assert_eq!(expression(&o), Some("Task.status"));
    assert_eq!(
        s.get_ok(&format!("/Task/{id}")).await["meta"]["versionId"],
        "1"
    );

    // A legal change by patch, and the reason rule applies to patches too.
    let t = s.create(&bare_task("requested")).await;
    let tid = t["id"].as_str().unwrap();
    let accept = json!([{"op": "replace", "path": "/status", "value": "accepted"}]);
    let r = expect_json(s.patch_json(&format!("/Task/{tid}"), &accept).await, 200).await;
    assert_eq!(
        (r["status"].clone(), r["meta"]["versionId"].clone()),
        (json!("accepted"), json!("2"))
    );
    let fail = json!([{"op": "replace", "path": "/status", "value": "failed"}]);
    let o = assert_outcome(
        s.patch_json(&format!("/Task/{tid}"), &fail).await,
        422,
        "processing",
    )
    .await;
    assert_eq!(expression(&o), Some("Task.statusReason"));
}

async fn conditional_update_making_an_illegal_transition_is_409(s: Server) {
    let t = s.create(&bare_task("rejected")).await;
    let id = t["id"].as_str().unwrap();
    let value = t["identifier"][0]["value"].as_str().unwrap();
    let mut body = in_status(&t, "accepted");
    body.as_object_mut().unwrap().remove("id");
    let o = assert_outcome(
        s.put_json(
            &format!(
                "/Task?identifier={}",
                enc(&format!("{REFERRAL_ID}|{value}"))
            ),
            &body,
        )
        .await,
        409,
        "business-rule",
    )
    .await;
    assert_names_states(&o, "rejected", "accepted");
    assert_eq!(
        s.get_ok(&format!("/Task/{id}")).await["meta"]["versionId"],
        "1"
    );
}

async fn transaction_entry_making_an_illegal_transition_fails_the_whole_bundle(s: Server) {
    let done = s.create(&bare_task("completed")).await;
    let id = done["id"].as_str().unwrap();
    let before = s.versions_written().await;
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("9434765870"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": in_status(&done, "cancelled"),
         "request": {"method": "PUT", "url": format!("Task/{id}")}}
    ]});
    let o = assert_outcome(s.post_json("/", &b).await, 409, "business-rule").await;
    assert_eq!(
        expression(&o),
        Some("Bundle.entry[1].resource.status"),
        "{o}"
    );
    assert!(diagnostics(&o).contains("Bundle.entry[1]"), "{o}");
    assert_names_states(&o, "completed", "cancelled");
    assert_eq!(s.versions_written().await, before, "nothing is written");
    assert_eq!(s.total("/Patient").await, 0);
}

async fn batch_entry_making_an_illegal_transition_fails_alone(s: Server) {
    let done = s.create(&bare_task("completed")).await;
    let id = done["id"].as_str().unwrap();
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": in_status(&done, "draft"),
         "request": {"method": "PUT", "url": format!("Task/{id}")}},
        {"resource": patient("9434765870"), "request": {"method": "POST", "url": "Patient"}}
    ]});
    let out = expect_json(s.post_json("/", &b).await, 200).await;
    let e = entries(&out);
    assert_eq!(e[0]["response"]["status"], "409 Conflict", "{out}");
    let o = &e[0]["response"]["outcome"];
    assert_eq!(o["issue"][0]["code"], "business-rule", "{o}");
    assert_names_states(o, "completed", "draft");
    assert_eq!(e[1]["response"]["status"], "201 Created");
    assert_eq!(
        s.get_ok(&format!("/Task/{id}")).await["meta"]["versionId"],
        "1"
    );
}

async fn completing_a_task_completes_its_referral_in_the_same_transaction(s: Server) {
    let (sid, t) = referral(&s, "9434765919", "active").await;
    let t = move_to(&s, &t, "accepted").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("active".into(), "1".into()),
        "accepting does not end the referral"
    );
    let t = move_to(&s, &t, "in-progress").await;
    move_to(&s, &t, "completed").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("completed".into(), "2".into())
    );
    // A new version like any other: in history, in the index, in the feed.
    let h = s.get_ok(&format!("/ServiceRequest/{sid}/_history")).await;
    assert_eq!(h["total"], 2);
    assert_eq!(entries(&h)[0]["resource"]["status"], "completed");
    assert_eq!(
        entry_ids(&s.get_ok("/ServiceRequest?status=completed").await),
        vec![sid.clone()]
    );
    assert_eq!(s.total("/ServiceRequest?status=active").await, 0);
    let feed = s.get_ok("/ServiceRequest?_feed=0").await;
    assert_eq!(
        entries(&feed)[0]["resource"]["meta"]["versionId"],
        "2",
        "{feed}"
    );
}

async fn rejecting_cancelling_or_failing_a_task_revokes_its_referral(s: Server) {
    for (i, path) in [
        &["rejected"][..],
        &["cancelled"][..],
        &["accepted", "in-progress", "on-hold", "failed"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let (sid, mut t) = referral(&s, &format!("943476590{i}"), "active").await;
        for status in path {
            t = move_to(&s, &t, status).await;
        }
        assert_eq!(
            referral_status_and_version(&s, &sid).await,
            ("revoked".into(), "2".into()),
            "after {path:?}"
        );
    }
}

async fn a_referral_already_final_or_a_task_entered_in_error_leaves_the_referral_alone(s: Server) {
    let (sid, t) = referral(&s, "9434765919", "revoked").await;
    move_to(&s, &t, "cancelled").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("revoked".into(), "1".into())
    );
    // entered-in-error ends the Task but says nothing of the referral.
    let (sid, t) = referral(&s, "9434765920", "active").await;
    let mut draft = in_status(&t, "draft");
    draft.as_object_mut().unwrap().remove("id");
    draft["identifier"][0]["value"] = json!("drafted-in-error");
    let draft = s.create(&draft).await;
    move_to(&s, &draft, "entered-in-error").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("active".into(), "1".into())
    );
}

async fn a_transaction_entry_ending_a_task_ends_its_referral_too(s: Server) {
    let (sid, t) = referral(&s, "9434765919", "active").await;
    let t = move_to(&s, &t, "accepted").await;
    let id = t["id"].as_str().unwrap();
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": in_status(&t, "completed"),
         "request": {"method": "PUT", "url": format!("Task/{id}"), "ifMatch": "W/\"2\""}}
    ]});
    let out = expect_json(s.post_json("/", &b).await, 200).await;
    assert_eq!(entries(&out)[0]["response"]["status"], "200 OK", "{out}");
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("completed".into(), "2".into())
    );
}

async fn a_sub_task_ending_leaves_the_referral_alone(s: Server) {
    let (sid, parent) = referral(&s, "9434765919", "active").await;
    let parent = move_to(&s, &parent, "accepted").await;
    let pid = parent["id"].as_str().unwrap();
    let mut sub = in_status(&parent, "requested");
    sub.as_object_mut().unwrap().remove("id");
    sub["identifier"][0]["value"] = json!("debt-advice-1");
    sub["partOf"] = json!([{"reference": format!("Task/{pid}")}]);
    sub["owner"] = json!({"display": "Debt advice service"});
    let sub = s.create(&sub).await;
    let sub = move_to(&s, &sub, "accepted").await;
    move_to(&s, &sub, "completed").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("active".into(), "1".into()),
        "a sub-task ending does not end the referral"
    );
    move_to(&s, &parent, "completed").await;
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("completed".into(), "2".into())
    );
}

async fn parent_with_an_active_sub_task_cannot_complete_until_it_ends(s: Server) {
    let (sid, parent) = referral(&s, "9434765919", "active").await;
    let parent = move_to(&s, &parent, "accepted").await;
    let parent = move_to(&s, &parent, "in-progress").await;
    let pid = parent["id"].as_str().unwrap().to_string();
    let sub_of = |status: &str, n: u32| {
        let mut sub = bare_task(status);
        sub["identifier"][0]["value"] = json!(format!("onward-{n}"));
        sub["partOf"] = json!([{"reference": format!("Task/{pid}")}]);
        sub
    };
    // An ended sub-task does not hold the parent back; an active one does.
    s.create(&sub_of("cancelled", 1)).await;
    let active = s.create(&sub_of("requested", 2)).await;
    let aid = active["id"].as_str().unwrap();

    let before = s.versions_written().await;
    let o = assert_outcome(
        put_task(&s, &in_status(&parent, "completed")).await,
        409,
        "business-rule",
    )
    .await;
    assert_eq!(expression(&o), Some("Task.status"), "{o}");
    assert!(
        diagnostics(&o).contains(&format!("Task/{aid} (requested)")),
        "{o}"
    );
    assert_names_states(&o, "in-progress", "completed");
    assert_eq!(s.versions_written().await, before, "nothing is written");
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("active".into(), "1".into())
    );

    let active = move_to(&s, &active, "accepted").await;
    move_to(&s, &active, "completed").await;
    let done = move_to(&s, &parent, "completed").await;
    assert_eq!(done["meta"]["versionId"], "4");
    assert_eq!(
        referral_status_and_version(&s, &sid).await,
        ("completed".into(), "2".into())
    );
}

async fn a_referral_posted_alone_gets_its_task_in_the_open_pool_or_for_its_performer(s: Server) {
    // No performer: the Task waits unowned in the open pool.
    let sr = s.create(&service_request("p1", "REF-POOL")).await;
    let id = sr["id"].as_str().unwrap();
    let found = s.get_ok(&format!("/Task?focus=ServiceRequest/{id}")).await;
    assert_eq!(found["total"], 1, "{found}");
    let t = &found["entry"][0]["resource"];
    assert_eq!(t["status"], "requested");
    assert_eq!(t["intent"], "order");
    assert_eq!(t["code"]["coding"][0]["code"], "fulfill");
    assert_eq!(t["for"], sr["subject"]);
    assert_eq!(t["requester"], sr["requester"]);
    assert!(t.get("owner").is_none(), "{t}");
    assert_eq!(t["meta"]["versionId"], "1");
    let pool = s.get_ok("/Task?owner:missing=true&status=requested").await;
    assert!(
        entry_ids(&pool).contains(&t["id"].as_str().unwrap().to_string()),
        "{pool}"
    );
    // A performer named: the Task is theirs.
    let mut sr = service_request("p1", "REF-OWNED");
    sr["performer"] = json!([{"reference": "Organization/vcs-1"}]);
    let id = s.create(&sr).await["id"].as_str().unwrap().to_string();
    let found = s.get_ok(&format!("/Task?focus=ServiceRequest/{id}")).await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["owner"]["reference"],
        "Organization/vcs-1"
    );
    // An update of the referral adds nothing.
    let mut again = s.get_ok(&format!("/ServiceRequest/{id}")).await;
    again["priority"] = json!("urgent");
    s.update(&again).await;
    assert_eq!(
        s.total(&format!("/Task?focus=ServiceRequest/{id}")).await,
        1
    );
    // Something that is not an SP referral gets no Task.
    let mut other = service_request("p1", "REF-OTHER");
    other["code"] = json!({"coding": [{"system": "http://snomed.info/sct", "code": "306206005",
                                          "display": "Referral to service"}]});
    let id = s.create(&other).await["id"].as_str().unwrap().to_string();
    assert_eq!(
        s.total(&format!("/Task?focus=ServiceRequest/{id}")).await,
        0
    );
}

/// The other half of the parent rule, also under concurrency: completing a
/// parent and adding an active sub-task at the same moment never both
/// succeed (on PostgreSQL both take the parent's lock).
async fn a_completed_parent_takes_no_active_sub_task_even_in_a_race(s: Server) {
    let sub_of = |pid: &str, n: u32| {
        let mut sub = bare_task("requested");
        sub["identifier"][0]["value"] = json!(format!("race-{pid}-{n}"));
        sub["partOf"] = json!([{"reference": format!("Task/{pid}")}]);
        sub
    };
    // In turn: refused with 409 naming the parent, nothing written.
    let parent = s.create(&bare_task("accepted")).await;
    let parent = move_to(&s, &parent, "completed").await;
    let pid = parent["id"].as_str().unwrap().to_string();
    let before = s.versions_written().await;
    let o = assert_outcome(
        s.post_json("/Task", &sub_of(&pid, 0)).await,
        409,
        "business-rule",
    )
    .await;
    assert_eq!(expression(&o), Some("Task.partOf"), "{o}");
    assert!(diagnostics(&o).contains(&format!("Task/{pid}")), "{o}");
    assert_eq!(s.versions_written().await, before);
    // An ended sub-task may still be recorded against it.
    let mut ended = sub_of(&pid, 1);
    ended = in_status(&ended, "cancelled");
    s.create(&ended).await;

    // At the same moment, ten times over.
    for round in 0..10 {
        let parent = s.create(&bare_task("accepted")).await;
        let pid = parent["id"].as_str().unwrap().to_string();
        let (completed_body, sub) = (in_status(&parent, "completed"), sub_of(&pid, 100 + round));
        let (done, added) = tokio::join!(put_task(&s, &completed_body), s.post_json("/Task", &sub));
        let (done, added) = (done.status().as_u16(), added.status().as_u16());
        assert!(
            !(done == 200 && added == 201),
            "round {round}: the parent completed and an active sub-task was added"
        );
        let active = s
            .total(&format!("/Task?part-of=Task/{pid}&status=requested"))
            .await;
        let completed = s.get_ok(&format!("/Task/{pid}")).await["status"] == "completed";
        assert!(!(completed && active > 0), "round {round}: {done} {added}");
    }
}
