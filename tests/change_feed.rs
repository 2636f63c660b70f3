//! The change feed (`_feed`): a poller that follows it sees every change
//! exactly once, in commit order, even while many writers commit out of
//! the order they started in.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

both!(
    history_feed_sees_every_version_once_under_concurrent_writers,
    search_feed_sees_the_latest_version_of_each_change_once,
    feed_positions_must_be_whole_numbers,
);

const WRITERS: usize = 6;
const TASKS_PER_WRITER: usize = 5;
const UPDATES_PER_TASK: usize = 3;

fn owned_task(owner: usize) -> Value {
    json!({"resourceType": "Task", "status": "requested", "intent": "order",
           "owner": {"reference": format!("Organization/vcs{owner}")}})
}

/// Writers create Tasks for owners vcs0..vcs2 and update each a few times,
/// moving some between owners, all at once.
fn spawn_writers(s: &Server) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (client, base) = (s.client.clone(), s.base.clone());
            tokio::spawn(async move {
                for t in 0..TASKS_PER_WRITER {
                    let body = owned_task((w + t) % 3);
                    let resp = client
                        .post(format!("{base}/Task"))
                        .header("Content-Type", FHIR_JSON)
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status().as_u16(), 201);
                    let mut task: Value = resp.json().await.unwrap();
                    for u in 0..UPDATES_PER_TASK {
                        task["status"] = json!(["accepted", "in-progress", "completed"][u]);
                        if u == 1 {
                            task["owner"] = json!({"reference": format!("Organization/vcs{}", (w + t + 1) % 3)});
                        }
                        task.as_object_mut().unwrap().remove("meta");
                        let id = task["id"].as_str().unwrap().to_string();
                        let resp = client
                            .put(format!("{base}/Task/{id}"))
                            .header("Content-Type", FHIR_JSON)
                            .body(task.to_string())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status().as_u16(), 200);
                        task = resp.json().await.unwrap();
                    }
                }
            })
        })
        .collect()
}

/// Follows a feed from `start`: pages via `next`, then `poll` once caught
/// up, until `done` is set and one more round finds nothing new.
async fn follow(s: &Server, start: &str, done: &AtomicBool) -> Vec<Value> {
    let mut seen = vec![];
    let mut url = s.url(start);
    for _ in 0..5000 {
        let finished = done.load(Ordering::SeqCst);
        let page = s.get_ok(&url).await;
        let got = entries(&page);
        seen.extend(got.iter().cloned());
        match link(&page, "next") {
            Some(next) => url = next,
            None => {
                url = link(&page, "poll").expect("a feed page has a poll link");
                if finished && got.is_empty() {
                    return seen;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    panic!("the feed never came to rest");
}

fn owner_of(resource: &Value) -> &str {
    resource["owner"]["reference"].as_str().unwrap_or("")
}

fn version_key(resource: &Value) -> (String, String) {
    (
        resource["id"].as_str().unwrap().to_string(),
        resource["meta"]["versionId"].as_str().unwrap().to_string(),
    )
}

async fn history_feed_sees_every_version_once_under_concurrent_writers(s: Server) {
    let done = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&s);
    let poller = {
        let done = done.clone();
        let s = &s;
        async move { follow(s, "/Task/_history?_feed=0&_count=10", &done).await }
    };
    let finish = async {
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
    };
    let (seen, ()) = tokio::join!(poller, finish);
    let polled: Vec<(String, String)> = seen.iter().map(|e| version_key(&e["resource"])).collect();
    let unique: BTreeSet<_> = polled.iter().cloned().collect();
    assert_eq!(unique.len(), polled.len(), "a version was delivered twice");
    // Every version written was delivered.
    let total = WRITERS * TASKS_PER_WRITER * (1 + UPDATES_PER_TASK);
    assert_eq!(unique.len(), total, "the feed delivers every version");
    // A poller for one owner filters the same feed.
    assert!(seen
        .iter()
        .any(|e| owner_of(&e["resource"]) == "Organization/vcs1"));
    // Per resource the feed is in version order: commit order.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for e in &seen {
        let (id, v) = version_key(&e["resource"]);
        let v: u64 = v.parse().unwrap();
        let before = last.insert(id.clone(), v).unwrap_or(0);
        assert_eq!(v, before + 1, "{id}: version {v} after {before}");
    }
}

async fn search_feed_sees_the_latest_version_of_each_change_once(s: Server) {
    let done = Arc::new(AtomicBool::new(false));
    let writers = spawn_writers(&s);
    let poller = {
        let done = done.clone();
        let s = &s;
        async move { follow(s, "/Task?owner=Organization/vcs1&_feed=0&_count=5", &done).await }
    };
    let finish = async {
        for w in writers {
            w.await.unwrap();
        }
        done.store(true, Ordering::SeqCst);
    };
    let (seen, ()) = tokio::join!(poller, finish);
    let polled: Vec<(String, String)> = seen.iter().map(|e| version_key(&e["resource"])).collect();
    let unique: BTreeSet<_> = polled.iter().cloned().collect();
    assert_eq!(unique.len(), polled.len(), "a version was delivered twice");
    for e in &seen {
        assert_eq!(owner_of(&e["resource"]), "Organization/vcs1");
    }
    // Every Task that ends up with vcs1 was delivered in its final version.
    let now = s
        .all_pages("/Task?owner=Organization/vcs1&_count=100")
        .await;
    let finals: BTreeSet<(String, String)> = now
        .iter()
        .flat_map(entries)
        .map(|e| version_key(&e["resource"]))
        .collect();
    assert!(!finals.is_empty());
    let missing: Vec<_> = finals.difference(&unique).collect();
    assert!(
        missing.is_empty(),
        "final versions never delivered: {missing:?}"
    );
}

async fn feed_positions_must_be_whole_numbers(s: Server) {
    for q in [
        "/Task/_history?_feed=-1",
        "/Task?_feed=abc",
        "/_history?_feed=1.5",
    ] {
        let o = assert_outcome(s.get(q).await, 400, "invalid").await;
        assert_eq!(expression(&o), Some("_feed"));
    }
    let page = s.get_ok("/Task?_feed=0").await;
    assert!(link(&page, "poll").unwrap().contains("_feed=0"));
}
