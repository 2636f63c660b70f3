//! Search (GET and POST _search) and history (instance, type, system).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

const LOCAL_MRN: &str = "https://fhir.example.org/leeds-mrn";

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Searches and returns the set of matching ids, checking the searchset shape.
async fn search_ids(s: &Server, rt: &str, query: &str) -> BTreeSet<String> {
    let path = format!("/{rt}?{query}");
    let b = s.get_ok(&path).await;
    check_searchset(s, rt, &b, &path);
    let ids: Vec<String> = entry_ids(&b);
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "{path}: duplicate entries");
    assert_eq!(
        b["total"].as_u64(),
        Some(ids.len() as u64),
        "{path}: total counts all matches: {b}"
    );
    unique
}

fn check_searchset(s: &Server, rt: &str, b: &Value, path: &str) {
    assert_eq!(b["resourceType"], "Bundle", "{path}: {b}");
    assert_eq!(b["type"], "searchset", "{path}: {b}");
    assert!(b["total"].is_u64(), "{path}: searchset has a total: {b}");
    assert!(
        link(b, "self").is_some(),
        "{path}: searchset has a self link: {b}"
    );
    for e in entries(b) {
        let id = e["resource"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: entry without resource: {e}"));
        assert_eq!(e["resource"]["resourceType"], rt, "{path}: {e}");
        assert_eq!(
            e["fullUrl"],
            format!("{}/{rt}/{id}", s.base),
            "{path}: fullUrl: {e}"
        );
        assert_eq!(e["search"]["mode"], "match", "{path}: search.mode: {e}");
    }
}

/// (type, id, versionId) of each history entry, in order.
fn history_keys(b: &Value) -> Vec<(String, String, String)> {
    entries(b)
        .iter()
        .map(|e| {
            let etag = e["response"]["etag"]
                .as_str()
                .unwrap_or_else(|| panic!("history entry without response.etag: {e}"));
            let version = etag.trim_start_matches("W/").trim_matches('"').to_string();
            let url = e["request"]["url"]
                .as_str()
                .unwrap_or_else(|| panic!("history entry without request.url: {e}"));
            let (rt, id) = match &e["resource"] {
                Value::Object(r) => (
                    r["resourceType"].as_str().unwrap().to_string(),
                    r["id"].as_str().unwrap().to_string(),
                ),
                _ => {
                    let mut parts = url.trim_start_matches('/').split('/');
                    (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    )
                }
            };
            if let Some(v) = e["resource"]["meta"]["versionId"].as_str() {
                assert_eq!(v, version, "response.etag matches meta.versionId: {e}");
            }
            (rt, id, version)
        })
        .collect()
}

fn key(rt: &str, id: &str, v: u32) -> (String, String, String) {
    (rt.to_string(), id.to_string(), v.to_string())
}

fn check_history(b: &Value, path: &str) {
    assert_eq!(b["resourceType"], "Bundle", "{path}: {b}");
    assert_eq!(b["type"], "history", "{path}: {b}");
    assert!(b["total"].is_u64(), "{path}: history has a total: {b}");
    for e in entries(b) {
        let method = e["request"]["method"].as_str().unwrap_or("");
        assert!(
            ["POST", "PUT", "PATCH", "DELETE"].contains(&method),
            "{path}: request.method: {e}"
        );
        assert!(
            e["response"]["status"].is_string(),
            "{path}: response.status: {e}"
        );
        if method == "DELETE" {
            assert!(
                e.get("resource").is_none(),
                "{path}: a deletion has no resource: {e}"
            );
        } else {
            assert!(e["resource"].is_object(), "{path}: {e}");
        }
    }
}

/// Every entry of every page, following next links, checking each page.
/// History keys without the Provenance the server writes with each change.
fn without_provenance(keys: Vec<(String, String, String)>) -> Vec<(String, String, String)> {
    keys.into_iter()
        .filter(|(t, _, _)| t != "Provenance")
        .collect()
}

async fn history_pages(s: &Server, path: &str) -> (Vec<(String, String, String)>, Vec<Value>) {
    let pages = s.all_pages(path).await;
    let mut keys = vec![];
    for p in &pages {
        check_history(p, path);
        keys.extend(history_keys(p));
    }
    (keys, pages)
}

async fn create_with_id(s: &Server, rt_body: Value, id: &str) -> Value {
    let mut body = rt_body;
    body["id"] = json!(id);
    let rt = body["resourceType"].as_str().unwrap().to_string();
    let resp = s.put_json(&format!("/{rt}/{id}"), &body).await;
    assert_eq!(resp.status(), 201, "PUT /{rt}/{id}");
    json(resp).await
}

both!(
    search_by_id,
    search_is_scoped_to_the_resource_type,
    search_excludes_deleted_and_sees_updates,
    search_by_identifier_forms,
    search_referrals_and_tasks_by_identifier,
    unknown_search_parameters_are_ignored,
    search_by_last_updated_instant_with_prefixes,
    search_by_last_updated_day_month_and_year,
    paging_with_count_yields_every_match_once_in_id_order,
    paging_is_stable_while_resources_are_added,
    default_page_size_is_50,
    count_zero_and_summary_count_return_only_the_total,
    total_counts_every_match_whether_or_not_the_first_page_holds_them,
    post_search_with_form_body_matches_get,
    instance_history_lists_versions_newest_first,
    type_and_system_history_cover_their_scope,
    history_since_returns_versions_at_or_after_the_instant,
    history_at_returns_the_versions_current_then,
    history_paging_follows_next_links_to_the_end,
);

async fn search_by_id(s: Server) {
    let a = id_of(&s.create(&patient("9434765919")).await);
    let b = id_of(&s.create(&patient("9000000009")).await);
    let c = id_of(&s.create(&patient("9990000018")).await);
    assert_eq!(
        search_ids(&s, "Patient", &format!("_id={a}")).await,
        set(&[&a])
    );
    assert_eq!(
        search_ids(&s, "Patient", &format!("_id={a},{c}")).await,
        set(&[&a, &c])
    );
    assert_eq!(
        search_ids(&s, "Patient", &format!("_id={a}&_id={b}")).await,
        set(&[])
    );
    assert_eq!(search_ids(&s, "Patient", "_id=unknown-id").await, set(&[]));
    assert_eq!(search_ids(&s, "Patient", "").await, set(&[&a, &b, &c]));
    let one = s.get_ok(&format!("/Patient?_id={b}")).await;
    assert_eq!(
        entries(&one)[0]["resource"],
        s.get_ok(&format!("/Patient/{b}")).await
    );
}

async fn search_is_scoped_to_the_resource_type(s: Server) {
    create_with_id(&s, patient("9434765919"), "shared-1").await;
    create_with_id(&s, task("sr-1", "shared-1"), "shared-1").await;
    s.create(&service_request("shared-1", "REF-1")).await;
    assert_eq!(
        search_ids(&s, "Task", "_id=shared-1").await,
        set(&[&"shared-1".to_string()])
    );
    assert_eq!(search_ids(&s, "Patient", "").await.len(), 1);
    // The Task created here, and the one sp-hub adds for the referral.
    assert_eq!(search_ids(&s, "Task", "").await.len(), 2);
    assert_eq!(search_ids(&s, "ServiceRequest", "").await.len(), 1);
    assert_eq!(search_ids(&s, "Practitioner", "").await.len(), 0);
}

async fn search_excludes_deleted_and_sees_updates(s: Server) {
    let a = id_of(&s.create(&patient("9434765919")).await);
    let b = s.create(&patient("9000000009")).await;
    let bid = id_of(&b);
    assert_eq!(s.delete(&format!("/Patient/{a}")).await.status(), 204);
    let nhs = |v: &str| format!("identifier={}", enc(&format!("{NHS_NUMBER}|{v}")));
    assert_eq!(search_ids(&s, "Patient", "").await, set(&[&bid]));
    assert_eq!(
        search_ids(&s, "Patient", &nhs("9434765919")).await,
        set(&[])
    );
    assert_eq!(
        search_ids(&s, "Patient", &format!("_id={a}")).await,
        set(&[])
    );
    // Changing the identifier moves the resource between searches.
    let mut b2 = b.clone();
    b2["identifier"][0]["value"] = json!("9990000018");
    s.update(&b2).await;
    assert_eq!(
        search_ids(&s, "Patient", &nhs("9000000009")).await,
        set(&[])
    );
    assert_eq!(
        search_ids(&s, "Patient", &nhs("9990000018")).await,
        set(&[&bid])
    );
    // Bringing the deleted one back makes it findable again.
    let mut back = patient("9434765919");
    back["id"] = json!(a);
    s.update(&back).await;
    assert_eq!(
        search_ids(&s, "Patient", &nhs("9434765919")).await,
        set(&[&a])
    );
}

async fn search_by_identifier_forms(s: Server) {
    let p1 = id_of(&s.create(&patient("9434765919")).await);
    let p2 = id_of(&s.create(&patient("9000000009")).await);
    let mut local = patient("x");
    local["identifier"] = json!([{"system": LOCAL_MRN, "value": "9434765919"}]);
    let p3 = id_of(&s.create(&local).await);
    let mut no_system = patient("x");
    no_system["identifier"] = json!([{"value": "9434765919"}]);
    let p4 = id_of(&s.create(&no_system).await);
    let mut none = patient("x");
    none.as_object_mut().unwrap().remove("identifier");
    let _p5 = id_of(&s.create(&none).await);
    let mut two = patient("9990000018");
    two["identifier"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": LOCAL_MRN, "value": "MRN-6"}));
    let p6 = id_of(&s.create(&two).await);

    let q = |v: &str| format!("identifier={}", enc(v));
    let nhs = |v: &str| q(&format!("{NHS_NUMBER}|{v}"));
    assert_eq!(
        search_ids(&s, "Patient", &nhs("9434765919")).await,
        set(&[&p1])
    );
    assert_eq!(
        search_ids(&s, "Patient", &q("9434765919")).await,
        set(&[&p1, &p3, &p4])
    );
    assert_eq!(
        search_ids(&s, "Patient", &q("|9434765919")).await,
        set(&[&p4])
    );
    assert_eq!(
        search_ids(&s, "Patient", &nhs("")).await,
        set(&[&p1, &p2, &p6])
    );
    assert_eq!(
        search_ids(&s, "Patient", &q(&format!("{LOCAL_MRN}|MRN-6"))).await,
        set(&[&p6])
    );
    assert_eq!(
        search_ids(&s, "Patient", &nhs("0000000000")).await,
        set(&[])
    );
    let or = q(&format!("{NHS_NUMBER}|9434765919,{NHS_NUMBER}|9000000009"));
    assert_eq!(search_ids(&s, "Patient", &or).await, set(&[&p1, &p2]));
    let and = format!("{}&{}", nhs("9990000018"), q(&format!("{LOCAL_MRN}|MRN-6")));
    assert_eq!(search_ids(&s, "Patient", &and).await, set(&[&p6]));
    let none_both = format!("{}&{}", nhs("9434765919"), nhs("9000000009"));
    assert_eq!(search_ids(&s, "Patient", &none_both).await, set(&[]));
    // '|' need not be percent-encoded.
    let raw = s
        .get_ok(&format!("/Patient?identifier={NHS_NUMBER}|9434765919"))
        .await;
    assert_eq!(entry_ids(&raw), vec![p1.clone()]);
}

async fn search_referrals_and_tasks_by_identifier(s: Server) {
    let p = id_of(&s.create(&patient("9434765919")).await);
    let sr1 = id_of(&s.create(&service_request(&p, "REF-0001")).await);
    let sr2 = id_of(&s.create(&service_request(&p, "REF-0002")).await);
    let t1 = id_of(&s.create(&task(&sr1, &p)).await);
    let q = |v: &str| format!("identifier={}", enc(&format!("{REFERRAL_ID}|{v}")));
    assert_eq!(
        search_ids(&s, "ServiceRequest", &q("REF-0001")).await,
        set(&[&sr1])
    );
    assert_eq!(
        search_ids(&s, "ServiceRequest", &q("")).await,
        set(&[&sr1, &sr2])
    );
    assert_eq!(
        search_ids(&s, "Task", &q(&format!("task-{sr1}"))).await,
        set(&[&t1])
    );
    assert_eq!(search_ids(&s, "Task", &q("REF-0001")).await, set(&[]));
}

async fn unknown_search_parameters_are_ignored(s: Server) {
    let a = id_of(&s.create(&patient("9434765919")).await);
    let b = id_of(&s.create(&patient("9000000009")).await);
    assert_eq!(
        search_ids(&s, "Patient", "favourite-colour=blue").await,
        set(&[&a, &b])
    );
    assert_eq!(
        search_ids(&s, "Patient", &format!("favourite-colour=blue&_id={a}")).await,
        set(&[&a])
    );
}

async fn search_by_last_updated_instant_with_prefixes(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = s.create(&patient("9000000009")).await;
    let (ia, ib) = (id_of(&a), id_of(&b));
    let ta = a["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let tb = b["meta"]["lastUpdated"].as_str().unwrap().to_string();
    assert!(ta < tb, "lastUpdated should increase: {ta} then {tb}");
    let lu = |p: &str, t: &str| format!("_lastUpdated={}", enc(&format!("{p}{t}")));
    let both = set(&[&ia, &ib]);
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (lu("ge", &ta), both.clone()),
        (lu("gt", &ta), set(&[&ib])),
        (lu("le", &ta), set(&[&ia])),
        (lu("lt", &tb), set(&[&ia])),
        (lu("le", &tb), both.clone()),
        (lu("gt", &tb), set(&[])),
        (lu("eq", &ta), set(&[&ia])),
        (lu("", &tb), set(&[&ib])),
        (lu("ne", &ta), set(&[&ib])),
        (format!("{}&{}", lu("ge", &ta), lu("le", &ta)), set(&[&ia])),
        (format!("{}&{}", lu("gt", &ta), lu("lt", &tb)), set(&[])),
        // Seconds precision: the instant truncated to the second.
        (lu("ge", &format!("{}Z", &ta[..19])), both.clone()),
        (lu("lt", &format!("{}Z", &ta[..19])), set(&[])),
        // A time zone offset.
        (lu("ge", "2000-01-01T00:00:00+01:00"), both.clone()),
        (lu("lt", "2000-01-01T00:00:00-05:00"), set(&[])),
    ];
    for (query, expected) in cases {
        assert_eq!(
            search_ids(&s, "Patient", &query).await,
            expected,
            "{query} (a={ta}, b={tb})"
        );
    }
}

async fn search_by_last_updated_day_month_and_year(s: Server) {
    let a = s.create(&patient("9434765919")).await;
    let b = s.create(&patient("9000000009")).await;
    let (ia, ib) = (id_of(&a), id_of(&b));
    let ta = a["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let tb = b["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let both = set(&[&ia, &ib]);
    let none = set(&[]);
    let year: i32 = ta[..4].parse().unwrap();
    let month = &ta[..7];
    let day = &ta[..10];
    let hour: u32 = ta[11..13].parse().unwrap();
    let mut cases: Vec<(String, BTreeSet<String>)> = vec![
        (format!("eq{year}"), both.clone()),
        (format!("{year}"), both.clone()),
        (format!("gt{}", year - 1), both.clone()),
        (format!("lt{}", year + 1), both.clone()),
        (format!("ge{}", year + 1), none.clone()),
        (format!("le{}", year - 1), none.clone()),
        (format!("gt{year}"), none.clone()),
        (format!("lt{year}"), none.clone()),
        (format!("ge{year}"), both.clone()),
        (format!("le{year}"), both.clone()),
        (format!("ne{year}"), none.clone()),
        (format!("sa{}", year - 1), both.clone()),
        (format!("eb{}", year + 1), both.clone()),
        (format!("eq{month}"), both.clone()),
        (format!("lt{}-01-01", year + 1), both.clone()),
        (format!("gt{}-12-31", year - 1), both.clone()),
    ];
    // Day precision, unless the test runs so close to midnight UTC that
    // a server in another zone could disagree about the day.
    if (1..=22).contains(&hour) && ta[..10] == tb[..10] {
        cases.extend([
            (format!("eq{day}"), both.clone()),
            (day.to_string(), both.clone()),
            (format!("ge{day}"), both.clone()),
            (format!("le{day}"), both.clone()),
            (format!("gt{day}"), none.clone()),
            (format!("lt{day}"), none.clone()),
            (format!("ne{day}"), none.clone()),
            (format!("ge{day}T00:00:00Z"), both.clone()),
            (format!("lt{day}T00:00:00Z"), none.clone()),
        ]);
    }
    for (value, expected) in cases {
        let query = format!("_lastUpdated={}", enc(&value));
        assert_eq!(
            search_ids(&s, "Patient", &query).await,
            expected,
            "{query} (a={ta}, b={tb})"
        );
    }
}

async fn paging_with_count_yields_every_match_once_in_id_order(s: Server) {
    let mut expected = BTreeSet::new();
    for i in 0..11 {
        expected.insert(id_of(&s.create(&patient(&format!("94347659{i:02}"))).await));
    }
    // Noise that must not match.
    for _ in 0..2 {
        let mut p = patient("x");
        p["identifier"] = json!([{"system": LOCAL_MRN, "value": "1"}]);
        s.create(&p).await;
    }
    s.create(&json!({"resourceType": "Practitioner", "identifier": [{"system": NHS_NUMBER, "value": "1"}]})).await;

    let first = format!(
        "/Patient?identifier={}&_count=3",
        enc(&format!("{NHS_NUMBER}|"))
    );
    let pages = s.all_pages(&first).await;
    assert_eq!(pages.len(), 4, "11 matches at 3 a page is 4 pages");
    let mut seen = vec![];
    for (i, page) in pages.iter().enumerate() {
        check_searchset(&s, "Patient", page, &first);
        assert_eq!(page["total"], 11, "page {i}: total is all matches");
        let ids = entry_ids(page);
        assert_eq!(ids.len(), if i < 3 { 3 } else { 2 }, "page {i}");
        assert_eq!(
            link(page, "next").is_some(),
            i < 3,
            "page {i}: next link only while more"
        );
        seen.extend(ids);
    }
    assert_eq!(seen.len(), 11);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let mut ordered = seen.clone();
    ordered.sort();
    assert_eq!(seen, ordered, "results are in id order");

    let all = s.all_pages("/Patient?_count=4").await;
    let ids: Vec<String> = all.iter().flat_map(entry_ids).collect();
    assert_eq!(ids.len(), 13);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 13);
    assert!(all.iter().all(|p| p["total"] == 13));
}

async fn paging_is_stable_while_resources_are_added(s: Server) {
    for id in ["p-b", "p-d", "p-f", "p-h"] {
        create_with_id(&s, patient("9434765919"), id).await;
    }
    let page1 = s.get_ok("/Patient?_count=2").await;
    assert_eq!(
        entry_ids(&page1),
        vec!["p-b".to_string(), "p-d".to_string()]
    );
    create_with_id(&s, patient("9434765919"), "p-a").await;
    create_with_id(&s, patient("9434765919"), "p-z").await;
    let mut seen = entry_ids(&page1);
    let mut next = link(&page1, "next");
    while let Some(url) = next {
        let page = s.get_ok(&url).await;
        seen.extend(entry_ids(&page));
        next = link(&page, "next");
    }
    for id in ["p-b", "p-d", "p-f", "p-h"] {
        assert_eq!(
            seen.iter().filter(|s| *s == id).count(),
            1,
            "{id} exactly once in {seen:?}"
        );
    }
    assert!(
        !seen.contains(&"p-a".to_string()),
        "p-a sorts before the cursor: {seen:?}"
    );
}

async fn default_page_size_is_50(s: Server) {
    for i in 0..51 {
        create_with_id(
            &s,
            json!({"resourceType": "Organization", "name": format!("Group {i}")}),
            &format!("org-{i:03}"),
        )
        .await;
    }
    let page = s.get_ok("/Organization").await;
    assert_eq!(page["total"], 51);
    assert_eq!(entries(&page).len(), 50);
    let next = link(&page, "next").expect("a next link");
    let last = s.get_ok(&next).await;
    assert_eq!(entry_ids(&last), vec!["org-050".to_string()]);
    assert!(link(&last, "next").is_none());
}

async fn count_zero_and_summary_count_return_only_the_total(s: Server) {
    for n in ["9434765919", "9000000009", "9990000018"] {
        s.create(&patient(n)).await;
    }
    for q in ["_count=0", "_summary=count"] {
        let b = s.get_ok(&format!("/Patient?{q}")).await;
        assert_eq!(b["type"], "searchset");
        assert_eq!(b["total"], 3, "{q}: {b}");
        assert!(entries(&b).is_empty(), "{q}: no entries: {b}");
        assert!(link(&b, "next").is_none(), "{q}: no next link: {b}");
    }
    // Above the maximum (1000) is capped, not refused.
    let b = s.get_ok("/Patient?_count=5000").await;
    assert_eq!(entries(&b).len(), 3);
}

/// A first page that holds every match gives its own length as the total
/// (no count query); one that does not, and every later page, count. Both
/// must give the same figure, sorted or not, with included resources or not.
async fn total_counts_every_match_whether_or_not_the_first_page_holds_them(s: Server) {
    for i in 0..5 {
        s.create(&patient(&format!("94347659{i:02}"))).await;
    }
    s.create(&json!({"resourceType": "Practitioner", "identifier": [{"system": NHS_NUMBER, "value": "1"}]})).await;
    let matches = format!("/Patient?identifier={}", enc(&format!("{NHS_NUMBER}|")));
    for extra in ["", "&_sort=-_lastUpdated", "&_revinclude=Provenance:target"] {
        for count in [4, 5, 6, 50] {
            let q = format!("{matches}&_count={count}{extra}");
            let pages = s.all_pages(&q).await;
            assert_eq!(pages.len(), if count < 5 { 2 } else { 1 }, "{q}");
            for page in &pages {
                assert_eq!(page["total"], 5, "{q}: {page}");
            }
            let matched: usize = pages
                .iter()
                .map(|p| {
                    entries(p)
                        .iter()
                        .filter(|e| e["search"]["mode"] == "match")
                        .count()
                })
                .sum();
            assert_eq!(matched, 5, "{q}");
        }
    }
    let none = s.get_ok(&format!("{matches}&_count=5&_total=none")).await;
    assert!(none.get("total").is_none(), "{none}");
}

async fn post_search_with_form_body_matches_get(s: Server) {
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(id_of(&s.create(&patient(&format!("90000000{i:02}"))).await));
    }
    s.create(&patient("x")).await;
    let form = format!("identifier={}&_count=2", enc(&format!("{NHS_NUMBER}|")));
    let got = s.get_ok(&format!("/Patient?{form}")).await;
    let resp = s
        .send_body(Method::POST, "/Patient/_search", FORM, form.clone())
        .await;
    assert_eq!(resp.status(), 200);
    let posted = json(resp).await;
    check_searchset(&s, "Patient", &posted, "POST /Patient/_search");
    assert_eq!(posted["total"], 6);
    assert_eq!(posted["total"], got["total"]);
    assert_eq!(entry_ids(&posted), entry_ids(&got));
    // The next link of a POSTed search can be followed with GET.
    let mut all = entry_ids(&posted);
    let mut next = link(&posted, "next");
    while let Some(url) = next {
        let page = s.get_ok(&url).await;
        all.extend(entry_ids(&page));
        next = link(&page, "next");
    }
    assert_eq!(all.len(), 6);
    for id in &ids {
        assert!(all.contains(id));
    }
    // An exact identifier through POST.
    let resp = s
        .send_body(
            Method::POST,
            "/Patient/_search",
            FORM,
            format!("_id={}", ids[2]),
        )
        .await;
    assert_eq!(entry_ids(&json(resp).await), vec![ids[2].clone()]);
}

async fn instance_history_lists_versions_newest_first(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = id_of(&p);
    let mut v2 = p.clone();
    v2["active"] = json!(false);
    let v2 = s.update(&v2).await;
    assert_eq!(s.delete(&format!("/Patient/{id}")).await.status(), 204);
    let path = format!("/Patient/{id}/_history");
    let h = s.get_ok(&path).await;
    check_history(&h, &path);
    assert_eq!(h["total"], 3);
    assert_eq!(
        history_keys(&h),
        vec![
            key("Patient", &id, 3),
            key("Patient", &id, 2),
            key("Patient", &id, 1)
        ]
    );
    let e = entries(&h);
    let methods: Vec<&str> = e
        .iter()
        .map(|e| e["request"]["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, vec!["DELETE", "PUT", "POST"]);
    assert!(e[0]["request"]["url"]
        .as_str()
        .unwrap()
        .contains(&format!("Patient/{id}")));
    assert!(e[1]["request"]["url"]
        .as_str()
        .unwrap()
        .contains(&format!("Patient/{id}")));
    assert!(e[2]["request"]["url"]
        .as_str()
        .unwrap()
        .starts_with("Patient"));
    assert_eq!(e[1]["resource"], v2);
    assert_eq!(e[2]["resource"], p);
}

async fn type_and_system_history_cover_their_scope(s: Server) {
    let p1 = s.create(&patient("9434765919")).await;
    let p1id = id_of(&p1);
    let p2id = id_of(&s.create(&patient("9000000009")).await);
    let mut p1v2 = p1.clone();
    p1v2["active"] = json!(false);
    s.update(&p1v2).await;
    let tid = id_of(&s.create(&task("sr-1", &p1id)).await);
    assert_eq!(s.delete(&format!("/Patient/{p2id}")).await.status(), 204);

    let h = s.get_ok("/Patient/_history").await;
    check_history(&h, "/Patient/_history");
    assert_eq!(h["total"], 4);
    assert_eq!(
        history_keys(&h),
        vec![
            key("Patient", &p2id, 2),
            key("Patient", &p1id, 2),
            key("Patient", &p2id, 1),
            key("Patient", &p1id, 1)
        ]
    );
    let th = s.get_ok("/Task/_history").await;
    assert_eq!(history_keys(&th), vec![key("Task", &tid, 1)]);
    let sys = s.get_ok("/_history").await;
    check_history(&sys, "/_history");
    // Each of the five writes came with its Provenance.
    assert_eq!(sys["total"], 10);
    assert_eq!(
        without_provenance(history_keys(&sys)),
        vec![
            key("Patient", &p2id, 2),
            key("Task", &tid, 1),
            key("Patient", &p1id, 2),
            key("Patient", &p2id, 1),
            key("Patient", &p1id, 1),
        ]
    );
    // Newest first: the deletion's Provenance, then the deletion.
    assert_eq!(entries(&sys)[0]["resource"]["resourceType"], "Provenance");
    assert_eq!(entries(&sys)[1]["request"]["method"], "DELETE");
}

async fn history_since_returns_versions_at_or_after_the_instant(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = id_of(&p);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut v2 = p.clone();
    v2["active"] = json!(false);
    let v2 = s.update(&v2).await;
    let t2 = v2["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let other = id_of(&s.create(&task("sr-1", &id)).await);
    let since = enc(&t2);
    let h = s
        .get_ok(&format!("/Patient/{id}/_history?_since={since}"))
        .await;
    assert_eq!(history_keys(&h), vec![key("Patient", &id, 2)]);
    assert_eq!(h["total"], 1);
    let sys = s.get_ok(&format!("/_history?_since={since}")).await;
    assert_eq!(
        without_provenance(history_keys(&sys)),
        vec![key("Task", &other, 1), key("Patient", &id, 2)]
    );
    let ty = s.get_ok(&format!("/Patient/_history?_since={since}")).await;
    assert_eq!(history_keys(&ty), vec![key("Patient", &id, 2)]);
    let old = s.get_ok("/_history?_since=2000-01-01T00:00:00Z").await;
    assert_eq!(old["total"], 6, "three writes, each with its Provenance");
    let future = s.get_ok("/_history?_since=2999-01-01T00:00:00Z").await;
    assert_eq!(future["total"], 0);
    assert!(entries(&future).is_empty());
}

async fn history_at_returns_the_versions_current_then(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = id_of(&p);
    let t1 = p["meta"]["lastUpdated"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut v = p.clone();
    v["active"] = json!(false);
    let v2 = s.update(&v).await;
    let t2 = v2["meta"]["lastUpdated"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v["gender"] = json!("unknown");
    let v3 = s.update(&v).await;
    let t3 = v3["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let at = |t: &str| format!("/Patient/{id}/_history?_at={}", enc(t));
    for (t, version) in [(&t1, 1), (&t2, 2), (&t3, 3)] {
        let h = s.get_ok(&at(t)).await;
        assert_eq!(
            history_keys(&h),
            vec![key("Patient", &id, version)],
            "_at={t}"
        );
    }
    let year = &t1[..4];
    if t3.starts_with(year) {
        let h = s.get_ok(&at(year)).await;
        assert_eq!(
            h["total"], 3,
            "_at={year}: all three were current during the year"
        );
    }
    let before = s.get_ok(&at("2000-01-01")).await;
    assert_eq!(before["total"], 0);
    assert!(entries(&before).is_empty());
    let sys = s.get_ok(&format!("/_history?_at={}", enc(&t2))).await;
    assert_eq!(
        without_provenance(history_keys(&sys)),
        vec![key("Patient", &id, 2)]
    );
}

async fn history_paging_follows_next_links_to_the_end(s: Server) {
    let p = s.create(&patient("9434765919")).await;
    let id = id_of(&p);
    let mut v = p.clone();
    for i in 0..6 {
        v["name"][0]["text"] = json!(format!("revision {i}"));
        s.update(&v).await;
    }
    let path = format!("/Patient/{id}/_history?_count=2");
    let (keys, pages) = history_pages(&s, &path).await;
    assert_eq!(pages.len(), 4, "7 versions at 2 a page is 4 pages");
    for p in &pages {
        assert_eq!(p["total"], 7);
        assert!(entries(p).len() <= 2);
    }
    let expected: Vec<_> = (1..=7).rev().map(|n| key("Patient", &id, n)).collect();
    assert_eq!(keys, expected);
    assert!(link(pages.last().unwrap(), "next").is_none());

    // Writes made while paging do not disturb the pages still to come.
    let first = s.get_ok("/_history?_count=3").await;
    v["name"][0]["text"] = json!("late change");
    s.update(&v).await;
    let mut keys = history_keys(&first);
    let mut next = link(&first, "next");
    while let Some(url) = next {
        let page = s.get_ok(&url).await;
        keys.extend(history_keys(&page));
        next = link(&page, "next");
    }
    assert_eq!(
        without_provenance(keys),
        expected,
        "system history pages, each version exactly once"
    );

    let (tkeys, _) = history_pages(&s, "/Patient/_history?_count=5").await;
    assert_eq!(tkeys.len(), 8);
    assert_eq!(tkeys[0], key("Patient", &id, 8));
}
