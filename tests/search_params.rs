//! Search driven by the SearchParameter data in fhir-profiles/: every
//! parameter type, its modifiers and prefixes, OR (comma) and AND
//! (repeated parameter), strict handling, and reindexing.

mod common;

use common::*;
use serde_json::{json, Value};

both!(
    token_parameters_match_code_system_and_negation,
    string_parameters_ignore_case_and_accents_and_honour_exact_and_contains,
    reference_parameters_match_type_and_id_in_every_form,
    date_parameters_follow_each_prefix,
    quantity_and_number_parameters_follow_prefixes_and_units,
    missing_modifier_finds_resources_without_a_value,
    repeated_parameters_and_commas_combine_as_and_and_or,
    meta_tags_and_profiles_are_searchable_on_every_type,
    unknown_modifier_and_malformed_values_are_400,
    strict_handling_refuses_unknown_parameters,
    capability_statement_lists_the_registered_parameters,
    reindex_rebuilds_the_index_of_existing_data,
    chained_parameters_follow_references_two_levels_deep,
    reverse_chaining_finds_resources_by_what_refers_to_them,
    include_and_revinclude_add_related_resources_once,
    bad_include_is_400,
    total_none_leaves_out_the_count,
    totals_count_each_live_match_once,
    sort_orders_by_several_keys_and_pages_stably,
    text_of_type_and_identifier_modifiers_search_their_companion_index,
);

/// Creates `resources`, returning their ids in order.
async fn seed(s: &Server, resources: &[Value]) -> Vec<String> {
    let mut ids = vec![];
    for r in resources {
        ids.push(s.create(r).await["id"].as_str().unwrap().to_string());
    }
    ids
}

/// The sorted ids a search returns (all pages).
async fn found(s: &Server, path: &str) -> Vec<String> {
    let mut ids: Vec<String> = s.all_pages(path).await.iter().flat_map(entry_ids).collect();
    ids.sort();
    ids
}

fn ids(all: &[String], which: &[usize]) -> Vec<String> {
    sorted(which.iter().map(|i| all[*i].clone()).collect())
}

fn task_with(status: &str, owner: &str, code: &str) -> Value {
    json!({"resourceType": "Task", "status": status, "intent": "order",
           "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": code}]},
           "owner": {"reference": owner},
           "for": {"reference": "Patient/p1"}})
}

async fn token_parameters_match_code_system_and_negation(s: Server) {
    let t = seed(
        &s,
        &[
            task_with("requested", "Organization/vcs1", "fulfill"),
            task_with("accepted", "Organization/vcs1", "fulfill"),
            task_with("completed", "Organization/vcs2", "approve"),
        ],
    )
    .await;
    let system = "http://hl7.org/fhir/CodeSystem/task-code";
    for (query, expect) in [
        ("status=requested".to_string(), vec![0]),
        ("status=requested,accepted".to_string(), vec![0, 1]),
        ("status:not=completed".to_string(), vec![0, 1]),
        (
            format!("code={}", enc(&format!("{system}|fulfill"))),
            vec![0, 1],
        ),
        ("code=approve".to_string(), vec![2]),
        (format!("code={}", enc("|approve")), vec![]),
        (
            format!("code={}", enc(&format!("{system}|"))),
            vec![0, 1, 2],
        ),
        (format!("code={}", enc("urn:other|fulfill")), vec![]),
    ] {
        assert_eq!(
            found(&s, &format!("/Task?{query}")).await,
            ids(&t, &expect),
            "{query}"
        );
    }
}

async fn string_parameters_ignore_case_and_accents_and_honour_exact_and_contains(s: Server) {
    let mut a = patient("9434765870");
    a["name"] = json!([{"family": "Lefèvre", "given": ["Zoë"]}]);
    let mut b = patient("9434765871");
    b["name"] = json!([{"family": "Lee", "given": ["Sam"]}]);
    let p = seed(&s, &[a, b]).await;
    for (query, expect) in [
        ("family=le", vec![0, 1]),
        ("family=LEF", vec![0]),
        ("family=lefevre", vec![0]),
        ("family:exact=Lefèvre", vec![0]),
        ("family:exact=lefèvre", vec![]),
        ("family:contains=EVR", vec![0]),
        ("given=zoe", vec![0]),
        ("name=sam", vec![1]),
        ("address-postalcode=LS6", vec![0, 1]),
        ("family=le%25", vec![]),
    ] {
        assert_eq!(
            found(&s, &format!("/Patient?{query}")).await,
            ids(&p, &expect),
            "{query}"
        );
    }
}

async fn reference_parameters_match_type_and_id_in_every_form(s: Server) {
    let t = seed(
        &s,
        &[
            task_with("requested", "Organization/vcs1", "fulfill"),
            task_with("requested", "PractitionerRole/lw1", "fulfill"),
            task_with(
                "requested",
                &format!("{}/Organization/vcs2", "https://elsewhere.example/fhir"),
                "fulfill",
            ),
        ],
    )
    .await;
    for (query, expect) in [
        ("owner=Organization/vcs1", vec![0]),
        ("owner=vcs1", vec![0]),
        ("owner:Organization=vcs1", vec![0]),
        ("owner:PractitionerRole=vcs1", vec![]),
        ("owner=PractitionerRole/lw1", vec![1]),
        ("patient=Patient/p1", vec![0, 1, 2]),
        ("subject=Patient/p1", vec![0, 1, 2]),
        (
            "owner=https://elsewhere.example/fhir/Organization/vcs2",
            vec![2],
        ),
        (
            "owner=https://elsewhere.example/fhir/Organization/vcs1",
            vec![],
        ),
    ] {
        assert_eq!(
            found(&s, &format!("/Task?{query}")).await,
            ids(&t, &expect),
            "{query}"
        );
    }
    // An absolute URL to this server is the local reference.
    let ours = format!("owner={}", enc(&format!("{}/Organization/vcs1", s.base)));
    assert_eq!(
        found(&s, &format!("/Task?{ours}")).await,
        ids(&t, &[0]),
        "{ours}"
    );
}

async fn date_parameters_follow_each_prefix(s: Server) {
    let with = |authored: &str| {
        let mut sr = service_request("p1", authored);
        sr["authoredOn"] = json!(authored);
        sr
    };
    let r = seed(
        &s,
        &[
            with("2026-03-01"),
            with("2026-03-15T10:00:00Z"),
            with("2026-04"),
        ],
    )
    .await;
    for (query, expect) in [
        ("authored=2026-03", vec![0, 1]),
        ("authored=2026-03-15", vec![1]),
        ("authored=eq2026", vec![0, 1, 2]),
        ("authored=gt2026-03-01", vec![1, 2]),
        ("authored=ge2026-03-01", vec![0, 1, 2]),
        ("authored=lt2026-03-15", vec![0]),
        ("authored=le2026-03-15", vec![0, 1]),
        ("authored=sa2026-03-10", vec![1, 2]),
        ("authored=eb2026-03-10", vec![0]),
        ("authored=ne2026-03-01", vec![1, 2]),
        ("authored=ap2026-04-10", vec![2]),
        ("authored=2026-03-15T11:00:00%2B01:00", vec![1]),
    ] {
        assert_eq!(
            found(&s, &format!("/ServiceRequest?{query}")).await,
            ids(&r, &expect),
            "{query}"
        );
    }
    // A Period with no end runs on for ever.
    let mut open = task_with("in-progress", "Organization/vcs1", "fulfill");
    open["executionPeriod"] = json!({"start": "2026-01-10"});
    let t = seed(&s, &[open]).await;
    assert_eq!(found(&s, "/Task?period=gt2030-01-01").await, t);
    assert_eq!(
        found(&s, "/Task?period=lt2026-01-01").await,
        Vec::<String>::new()
    );
}

async fn quantity_and_number_parameters_follow_prefixes_and_units(s: Server) {
    let score = |value: f64, code: &str| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
            "subject": {"reference": "Patient/p1"},
            "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": code}
        })
    };
    let o = seed(
        &s,
        &[
            score(5.4, "{score}"),
            score(7.0, "{score}"),
            score(100.0, "mg"),
        ],
    )
    .await;
    let ucum = "http://unitsofmeasure.org";
    for (query, expect) in [
        ("value-quantity=5.4".to_string(), vec![0]),
        ("value-quantity=5".to_string(), vec![0]),
        ("value-quantity=gt5.4".to_string(), vec![1, 2]),
        ("value-quantity=le7".to_string(), vec![0, 1]),
        ("value-quantity=ne7".to_string(), vec![0, 2]),
        ("value-quantity=ap95".to_string(), vec![2]),
        (
            format!("value-quantity={}", enc(&format!("gt1|{ucum}|mg"))),
            vec![2],
        ),
        (
            format!("value-quantity={}", enc("gt1||{score}")),
            vec![0, 1],
        ),
    ] {
        assert_eq!(
            found(&s, &format!("/Observation?{query}")).await,
            ids(&o, &expect),
            "{query}"
        );
    }
}

async fn missing_modifier_finds_resources_without_a_value(s: Server) {
    let mut pooled = task_with("requested", "Organization/x", "fulfill");
    pooled.as_object_mut().unwrap().remove("owner");
    let t = seed(
        &s,
        &[
            task_with("requested", "Organization/vcs1", "fulfill"),
            pooled,
        ],
    )
    .await;
    assert_eq!(found(&s, "/Task?owner:missing=true").await, ids(&t, &[1]));
    assert_eq!(found(&s, "/Task?owner:missing=false").await, ids(&t, &[0]));
    // The open pool a VCS polls: requested and unowned.
    assert_eq!(
        found(&s, "/Task?status=requested&owner:missing=true").await,
        ids(&t, &[1])
    );
}

async fn repeated_parameters_and_commas_combine_as_and_and_or(s: Server) {
    let t = seed(
        &s,
        &[
            task_with("requested", "Organization/vcs1", "fulfill"),
            task_with("accepted", "Organization/vcs1", "fulfill"),
            task_with("accepted", "Organization/vcs2", "fulfill"),
        ],
    )
    .await;
    assert_eq!(
        found(&s, "/Task?owner=Organization/vcs1&status=accepted").await,
        ids(&t, &[1])
    );
    assert_eq!(
        found(&s, "/Task?status=requested,accepted&status:not=requested").await,
        ids(&t, &[1, 2])
    );
    assert_eq!(
        found(
            &s,
            "/Task?owner=Organization/vcs1,Organization/vcs2&status=requested"
        )
        .await,
        ids(&t, &[0])
    );
}

async fn meta_tags_and_profiles_are_searchable_on_every_type(s: Server) {
    let mut tagged = patient("9434765870");
    tagged["meta"] = json!({"tag": [{"system": "urn:sp-hub:test", "code": "pilot"}],
                            "profile": ["urn:sp-hub:StructureDefinition:sp-patient"]});
    let p = seed(&s, &[tagged, patient("9434765871")]).await;
    assert_eq!(
        found(
            &s,
            &format!("/Patient?_tag={}", enc("urn:sp-hub:test|pilot"))
        )
        .await,
        ids(&p, &[0])
    );
    assert_eq!(
        found(
            &s,
            "/Patient?_profile=urn:sp-hub:StructureDefinition:sp-patient"
        )
        .await,
        ids(&p, &[0])
    );
}

async fn unknown_modifier_and_malformed_values_are_400(s: Server) {
    for (query, at) in [
        ("/Task?status:exact=requested", "status"),
        ("/Task?owner:nonsense=x", "owner"),
        ("/Task?authored-on=yesterday", "authored-on"),
        ("/Task?authored-on=xx2026", "authored-on"),
        ("/Observation?value-quantity=lots", "value-quantity"),
        ("/Task?owner:missing=perhaps", "owner"),
    ] {
        let o = assert_outcome(s.get(query).await, 400, "invalid").await;
        assert_eq!(expression(&o), Some(at), "{query}");
    }
    let many = (0..101)
        .map(|i| format!("id{i}"))
        .collect::<Vec<_>>()
        .join(",");
    assert_outcome(s.get(&format!("/Task?_id={many}")).await, 400, "invalid").await;
}

async fn strict_handling_refuses_unknown_parameters(s: Server) {
    seed(
        &s,
        &[task_with("requested", "Organization/vcs1", "fulfill")],
    )
    .await;
    let lenient = s.get_ok("/Task?colour=red&status=requested").await;
    assert_eq!(lenient["total"], 1);
    let self_link = link(&lenient, "self").unwrap();
    assert!(!self_link.contains("colour"), "{self_link}");
    let strict = s
        .send(
            s.req(reqwest::Method::GET, "/Task?colour=red")
                .header("Prefer", "handling=strict"),
        )
        .await;
    let o = assert_outcome(strict, 400, "invalid").await;
    assert_eq!(expression(&o), Some("colour"));
}

async fn capability_statement_lists_the_registered_parameters(s: Server) {
    let cs = s.get_ok("/metadata").await;
    let task = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Task")
        .unwrap()
        .clone();
    let params: Vec<(String, String)> = task["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, kind) in [
        ("owner", "reference"),
        ("status", "token"),
        ("authored-on", "date"),
        ("business-status", "token"),
        ("_lastUpdated", "date"),
        ("_id", "token"),
    ] {
        assert!(
            params.contains(&(name.to_string(), kind.to_string())),
            "{name} missing: {params:?}"
        );
    }
    let owner = task["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "owner")
        .unwrap();
    assert_eq!(
        owner["definition"],
        "http://hl7.org/fhir/SearchParameter/Task-owner"
    );
}

async fn reindex_rebuilds_the_index_of_existing_data(s: Server) {
    let t = seed(
        &s,
        &[task_with("requested", "Organization/vcs1", "fulfill")],
    )
    .await;
    let db = s.database_url.clone();
    let out = std::process::Command::new(bin())
        .args(["reindex", "--database-url", &db])
        .output()
        .expect("run sp-hub reindex");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        // The resource and the Provenance of its write.
        "reindexed 2 resources"
    );
    assert_eq!(found(&s, "/Task?owner=Organization/vcs1").await, t);
}

/// A GP practice, a referral it requested, and the Task for that referral.
async fn referral_chain(
    s: &Server,
    ods: &str,
    referral_id: &str,
    status: &str,
) -> (String, String, String) {
    let org = s
        .create(&json!({"resourceType": "Organization", "name": format!("Practice {ods}"),
                        "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": ods}]}))
        .await;
    let org_id = org["id"].as_str().unwrap().to_string();
    let mut sr = service_request("p1", referral_id);
    sr["requester"] = json!({"reference": format!("Organization/{org_id}")});
    sr["status"] = json!(status);
    let sr_id = s.create(&sr).await["id"].as_str().unwrap().to_string();
    // The GP posts the referral alone; sp-hub adds its Task.
    let tasks = s
        .get_ok(&format!("/Task?focus=ServiceRequest/{sr_id}"))
        .await;
    assert_eq!(tasks["total"], 1, "{tasks}");
    let t = tasks["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (org_id, sr_id, t)
}

async fn chained_parameters_follow_references_two_levels_deep(s: Server) {
    let (_, sr_a, task_a) = referral_chain(&s, "B86030", "REF-A", "active").await;
    let (_, _, task_b) = referral_chain(&s, "B86031", "REF-B", "active").await;
    let ods = "https://fhir.nhs.uk/Id/ods-organization-code";
    for (query, expect) in [
        (
            format!(
                "focus:ServiceRequest.requester:Organization.identifier={}",
                enc(&format!("{ods}|B86030"))
            ),
            vec![task_a.clone()],
        ),
        (
            format!(
                "focus:ServiceRequest.requester.identifier={}",
                enc(&format!("{ods}|B86031"))
            ),
            vec![task_b.clone()],
        ),
        (
            "focus:ServiceRequest.requester.name=practice".to_string(),
            sorted(vec![task_a.clone(), task_b.clone()]),
        ),
        (
            format!(
                "focus:ServiceRequest.identifier={}",
                enc(&format!("{REFERRAL_ID}|REF-A"))
            ),
            vec![task_a.clone()],
        ),
        ("focus:ServiceRequest.status=revoked".to_string(), vec![]),
    ] {
        assert_eq!(
            found(&s, &format!("/Task?{query}")).await,
            expect,
            "{query}"
        );
    }
    // A deleted link in the chain breaks it.
    assert_eq!(
        s.delete(&format!("/ServiceRequest/{sr_a}"))
            .await
            .status()
            .as_u16(),
        204
    );
    let q = format!(
        "/Task?focus:ServiceRequest.requester.identifier={}",
        enc(&format!("{ods}|B86030"))
    );
    assert_eq!(found(&s, &q).await, Vec::<String>::new());
    // Chaining through a parameter that is not a reference is refused.
    assert_outcome(s.get("/Task?status.name=x").await, 400, "invalid").await;
}

async fn reverse_chaining_finds_resources_by_what_refers_to_them(s: Server) {
    let (_, sr_active, _) = referral_chain(&s, "B86030", "REF-A", "active").await;
    let (_, sr_revoked, _) = referral_chain(&s, "B86031", "REF-B", "revoked").await;
    assert_eq!(
        found(&s, "/ServiceRequest?_has:Task:focus:status=requested").await,
        sorted(vec![sr_active.clone(), sr_revoked.clone()])
    );
    let mut done = s
        .get_ok(&format!("/Task?focus=ServiceRequest/{sr_revoked}"))
        .await["entry"][0]["resource"]
        .clone();
    done["status"] = json!("cancelled");
    done["statusReason"] = json!({"coding": [{"system": SP_STATUS_REASON, "code": "other"}],
                                  "text": "Referral withdrawn"});
    s.update(&done).await;
    assert_eq!(
        found(&s, "/ServiceRequest?_has:Task:focus:status=requested").await,
        vec![sr_active.clone()]
    );
    // _has then chain: referrals whose Task points at a referral from practice B86030.
    let q = format!(
        "/ServiceRequest?_has:Task:focus:focus:ServiceRequest.requester.identifier={}",
        enc("https://fhir.nhs.uk/Id/ods-organization-code|B86030")
    );
    assert_eq!(found(&s, &q).await, vec![sr_active]);
    assert_outcome(
        s.get("/ServiceRequest?_has:Task:nonsense:status=x").await,
        400,
        "invalid",
    )
    .await;
}

/// (mode, "Type/id") of every entry of a searchset.
fn sorted_pairs(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

fn modes(bundle: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = entries(bundle)
        .iter()
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap_or("").to_string(),
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                ),
            )
        })
        .collect();
    out.sort();
    out
}

async fn include_and_revinclude_add_related_resources_once(s: Server) {
    let (org, sr_a, task_a) = referral_chain(&s, "B86030", "REF-A", "active").await;
    // A second Task for the same referral: the referral is included once.
    let task_a2 = s.create(&task(&sr_a, "p1")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, sr_b, task_b) = referral_chain(&s, "B86031", "REF-B", "active").await;
    let m = |t: &str, id: &str| ("match".to_string(), format!("{t}/{id}"));
    let i = |t: &str, id: &str| ("include".to_string(), format!("{t}/{id}"));

    let b = s
        .get_ok(&format!(
            "/Task?focus=ServiceRequest/{sr_a}&_include=Task:focus"
        ))
        .await;
    assert_eq!(b["total"], 2, "includes do not count towards total");
    let mut want = vec![
        m("Task", &task_a),
        m("Task", &task_a2),
        i("ServiceRequest", &sr_a),
    ];
    want.sort();
    assert_eq!(modes(&b), want);

    // :iterate goes on from what was included: Task -> referral -> practice.
    let b = s
        .get_ok(&format!(
            "/Task?_id={task_a}&_include=Task:focus&_include:iterate=ServiceRequest:requester"
        ))
        .await;
    let mut want = vec![
        m("Task", &task_a),
        i("ServiceRequest", &sr_a),
        i("Organization", &org),
    ];
    want.sort();
    assert_eq!(modes(&b), want);
    // Without :iterate the second step does not happen.
    let b = s
        .get_ok(&format!(
            "/Task?_id={task_a}&_include=Task:focus&_include=ServiceRequest:requester"
        ))
        .await;
    assert_eq!(modes(&b).len(), 2);

    let b = s
        .get_ok(&format!(
            "/ServiceRequest?_id={sr_b}&_revinclude=Task:focus"
        ))
        .await;
    assert_eq!(
        modes(&b),
        sorted_pairs(vec![m("ServiceRequest", &sr_b), i("Task", &task_b)])
    );

    // The include's target type narrows it.
    let b = s
        .get_ok(&format!("/Task?_id={task_a}&_include=Task:focus:Patient"))
        .await;
    assert_eq!(modes(&b), vec![m("Task", &task_a)]);
    // Deleted resources are not included.
    assert_eq!(
        s.delete(&format!("/ServiceRequest/{sr_a}"))
            .await
            .status()
            .as_u16(),
        204
    );
    let b = s
        .get_ok(&format!("/Task?_id={task_a}&_include=Task:focus"))
        .await;
    assert_eq!(modes(&b), vec![m("Task", &task_a)]);
}

async fn bad_include_is_400(s: Server) {
    for q in [
        "/Task?_include=Task",
        "/Task?_include=Task:status",
        "/Task?_include=Nope:focus",
        "/Task?_include:deep=Task:focus",
        "/Task?_include=Task:owner:Observation",
    ] {
        assert_outcome(s.get(q).await, 400, "invalid").await;
    }
}

async fn total_none_leaves_out_the_count(s: Server) {
    seed(
        &s,
        &[task_with("requested", "Organization/vcs1", "fulfill")],
    )
    .await;
    let b = s.get_ok("/Task?_total=none").await;
    assert!(b.get("total").is_none(), "{b}");
    assert_eq!(entry_ids(&b).len(), 1);
    assert_eq!(s.get_ok("/Task?_total=accurate").await["total"], 1);
    assert_outcome(s.get("/Task?_total=some").await, 400, "invalid").await;
}

/// A count answered from index entries alone (no condition on the
/// resource row) still counts a resource once however many of its values
/// match, and never a deleted one; so does a chain's.
async fn totals_count_each_live_match_once(s: Server) {
    let patient = |given: &[&str]| json!({"resourceType": "Patient", "name": [{"family": "Count", "given": given}]});
    let p = seed(
        &s,
        &[
            patient(&["Joan", "Josephine"]),
            patient(&["John"]),
            patient(&["Jo"]),
            patient(&["Mary"]),
        ],
    )
    .await;
    assert_eq!(
        s.delete(&format!("/Patient/{}", p[2]))
            .await
            .status()
            .as_u16(),
        204
    );
    for q in [
        "/Patient?given=jo&_count=1",
        "/Patient?given=jo&_summary=count",
    ] {
        assert_eq!(s.total(q).await, 2, "{q}");
    }
    assert_eq!(found(&s, "/Patient?given=jo").await, ids(&p, &[0, 1]));

    let sr = |patient: &str| {
        json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order",
               "subject": {"reference": format!("Patient/{patient}")}})
    };
    let r = seed(&s, &[sr(&p[0]), sr(&p[1])]).await;
    // One Task is based on both referrals, so two of its entries match.
    let task = |focus: &[&String]| {
        json!({"resourceType": "Task", "status": "requested", "intent": "order",
               "focus": {"reference": format!("ServiceRequest/{}", focus[0])},
               "basedOn": focus.iter().map(|f| json!({"reference": format!("ServiceRequest/{f}")})).collect::<Vec<_>>()})
    };
    seed(&s, &[task(&[&r[0], &r[1]]), task(&[&r[1]])]).await;
    let chain = "/Task?based-on:ServiceRequest.subject:Patient.given=jo";
    assert_eq!(s.total(&format!("{chain}&_count=1")).await, 2);
    assert_eq!(s.total(&format!("{chain}&_summary=count")).await, 2);
    assert_eq!(
        s.all_pages(chain).await.iter().flat_map(entry_ids).count(),
        2
    );
}

/// Ids in the order the search returns them, across all pages.
async fn in_order(s: &Server, path: &str) -> Vec<String> {
    s.all_pages(path).await.iter().flat_map(entry_ids).collect()
}

async fn sort_orders_by_several_keys_and_pages_stably(s: Server) {
    let person = |family: Option<&str>, born: &str| {
        let mut p = patient("9434765870");
        match family {
            Some(f) => p["name"] = json!([{"family": f}]),
            None => {
                p.as_object_mut().unwrap().remove("name");
            }
        }
        p["birthDate"] = json!(born);
        p
    };
    let p = seed(
        &s,
        &[
            person(Some("Brown"), "1950-01-01"),
            person(Some("adams"), "1960-01-01"),
            person(Some("Brown"), "1940-01-01"),
            person(None, "1970-01-01"),
            person(Some("Cole"), "1930-01-01"),
        ],
    )
    .await;
    let order = |idx: &[usize]| idx.iter().map(|i| p[*i].clone()).collect::<Vec<_>>();
    // Case-insensitive, missing last, ties broken by the second key.
    assert_eq!(
        in_order(&s, "/Patient?_sort=family,birthdate&_count=2").await,
        order(&[1, 2, 0, 4, 3])
    );
    assert_eq!(
        in_order(&s, "/Patient?_sort=-family,-birthdate&_count=2").await,
        order(&[4, 0, 2, 1, 3])
    );
    assert_eq!(
        in_order(&s, "/Patient?_sort=birthdate&_count=3").await,
        order(&[4, 2, 0, 1, 3])
    );
    assert_eq!(
        in_order(&s, "/Patient?_sort=-birthdate").await,
        order(&[3, 1, 0, 2, 4])
    );
    // Ties on every key fall back to id order.
    let mut browns = vec![p[0].clone(), p[2].clone()];
    browns.sort();
    assert_eq!(
        in_order(&s, "/Patient?family=brown&_sort=family&_count=1").await,
        browns
    );
    assert_outcome(
        s.get("/Observation?_sort=value-quantity").await,
        400,
        "invalid",
    )
    .await;
    assert_outcome(s.get("/Patient?_sort=nonsense").await, 400, "invalid").await;
    assert_outcome(s.get("/Patient?_sort=family&_feed=0").await, 400, "invalid").await;
}

async fn text_of_type_and_identifier_modifiers_search_their_companion_index(s: Server) {
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    let mut a = patient("9434765870");
    a["identifier"] = json!([{"type": {"coding": [{"system": v2, "code": "MR"}], "text": "Hospital number"},
                              "system": "urn:trust", "value": "H123"}]);
    a["maritalStatus"] =
        json!({"coding": [{"system": "urn:ms", "code": "W", "display": "Widowed"}]});
    let p = seed(&s, &[a, patient("9434765871")]).await;
    assert_eq!(
        found(
            &s,
            &format!(
                "/Patient?identifier:of-type={}",
                enc(&format!("{v2}|MR|H123"))
            )
        )
        .await,
        ids(&p, &[0])
    );
    assert_eq!(
        found(
            &s,
            &format!(
                "/Patient?identifier:of-type={}",
                enc(&format!("{v2}|MR|nope"))
            )
        )
        .await,
        ids(&p, &[])
    );
    assert_eq!(
        found(&s, "/Patient?identifier:text=hospital").await,
        ids(&p, &[0])
    );
    assert_outcome(
        s.get("/Patient?identifier:of-type=H123").await,
        400,
        "invalid",
    )
    .await;

    let mut t = task_with("requested", "Organization/vcs1", "fulfill");
    t["code"]["text"] = json!("Fulfil the referral");
    t["requester"] = json!({"identifier": {"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "B86030"}});
    let tasks = seed(
        &s,
        &[t, task_with("requested", "Organization/vcs1", "fulfill")],
    )
    .await;
    assert_eq!(found(&s, "/Task?code:text=fulfil").await, ids(&tasks, &[0]));
    let q = format!(
        "/Task?requester:identifier={}",
        enc("https://fhir.nhs.uk/Id/ods-organization-code|B86030")
    );
    assert_eq!(found(&s, &q).await, ids(&tasks, &[0]));
}
