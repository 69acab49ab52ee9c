//! The actor tree: shape, inspection, and restart-with-backoff after injected failures.

use serde_json::{json, Value};

use crate::harness::*;

async fn restarts_of(gw: &Gateway, name: &str) -> Option<(u64, String)> {
    let tree = gw.actor_tree().await;
    find_actor(&tree, name).map(|n| (n["restarts"].as_u64().unwrap(), n["status"].as_str().unwrap().to_owned()))
}

async fn wait_running_with_restarts(gw: &Gateway, name: &str, restarts: u64) -> Value {
    eventually(&format!("{name} restarted {restarts} time(s)"), || async {
        let tree = gw.actor_tree().await;
        let node = find_actor(&tree, name)?.clone();
        (node["restarts"] == restarts && node["status"] == "running").then_some(node)
    })
    .await
}

#[tokio::test]
async fn the_tree_has_root_accounts_workspaces_and_keys_with_snapshots() {
    let gw = Gateway::start().await;
    let ws = gw
        .post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "acme", "name": "Acme", "monthly_budget_usd": 10}))
        .await;
    let ws_uuid = ws.body["id"].as_str().unwrap().to_owned();
    let (key_id, key) = gw.create_key(json!({"workspace_id": "acme", "rate_limit_rpm": 5})).await;
    gw.get("/v1/models", &key).await;
    let tree = gw.actor_tree().await;
    assert_eq!(tree["name"], "root");
    assert_eq!(tree["kind"], "root");
    let accounts = find_actor(&tree, "accounts").expect("accounts supervisor");
    assert_eq!(accounts["kind"], "accounts");
    let ws_node = accounts["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("workspace:{ws_uuid}"))
        .expect("workspace actor under accounts");
    assert_eq!(ws_node["snapshot"]["monthly_budget_usd"], 10.0);
    let key_node = ws_node["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == format!("apikey:{key_id}"))
        .expect("key actor under its workspace");
    for node in [&tree, accounts, ws_node, key_node] {
        for field in ["name", "kind", "status", "restarts", "snapshot", "children"] {
            assert!(node.get(field).is_some(), "{} lacks {field}", node["name"]);
        }
        assert_eq!(node["status"], "running");
    }
    assert_eq!(key_node["snapshot"]["rate_limit_rpm"], 5);
    assert_eq!(key_node["snapshot"]["admitted"], 1);
    assert!(!serde_json::to_string(&tree).unwrap().contains(&key), "no secret in the tree");
    // Background work is in the tree too, every node answering its inspection.
    let tasks = find_actor(&tree, "tasks").expect("the tasks supervisor");
    let persister = find_actor(tasks, "task:last-used").expect("the use-time persister under tasks");
    assert_eq!((persister["kind"].as_str(), persister["status"].as_str()), (Some("task"), Some("running")));
    assert!(persister["snapshot"]["schedule"].as_str().unwrap().starts_with("every"), "{persister}");
    for group in ["ledger", "providers", "endpoints"] {
        assert_eq!(find_actor(&tree, group).expect(group)["status"], "running", "{group}");
    }
}

#[tokio::test]
async fn a_failed_background_task_is_restarted_by_its_supervisor() {
    let gw = Gateway::start().await;
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "task:last-used"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let node = wait_running_with_restarts(&gw, "task:last-used", 1).await;
    assert!(node["last_error"].as_str().unwrap().contains("injected"), "{node}");
    let root = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "root"})).await;
    assert_eq!(root.status, 400, "the root has no supervisor: {}", root.body);
}

#[tokio::test]
async fn a_failed_key_actor_is_restarted_from_storage() {
    let gw = Gateway::start().await;
    let (key_id, key) = gw.create_key(json!({"rate_limit_rpm": 7})).await;
    let name = format!("apikey:{key_id}");
    assert_eq!(restarts_of(&gw, &name).await, Some((0, "running".into())));
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": name})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let node = wait_running_with_restarts(&gw, &name, 1).await;
    assert!(node["last_error"].as_str().unwrap().contains("injected failure"));
    // Rebuilt from storage: the key's own limit is back.
    assert_eq!(node["snapshot"]["rate_limit_rpm"], 7);
    let r = gw.get("/v1/models", &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("7"));
    // A second failure is counted too.
    gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": name})).await;
    wait_running_with_restarts(&gw, &name, 2).await;
}

#[tokio::test]
async fn a_failed_supervisor_comes_back_with_its_children() {
    let gw = Gateway::start().await;
    let ws = gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "team", "name": "Team"})).await;
    let ws_name = format!("workspace:{}", ws.body["id"].as_str().unwrap());
    let (key_id, key) = gw.create_key(json!({"workspace_id": "team"})).await;
    let key_name = format!("apikey:{key_id}");

    gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": ws_name})).await;
    let node = wait_running_with_restarts(&gw, &ws_name, 1).await;
    assert!(
        node["children"].as_array().unwrap().iter().any(|c| c["name"] == key_name.as_str()),
        "key actor restored under its workspace"
    );
    assert_eq!(gw.get("/v1/models", &key).await.status, 200);

    gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "accounts"})).await;
    let accounts = wait_running_with_restarts(&gw, "accounts", 1).await;
    let ws_node = accounts["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == ws_name.as_str())
        .expect("workspace restored");
    assert!(ws_node["children"].as_array().unwrap().iter().any(|c| c["name"] == key_name.as_str()));
    assert_eq!(gw.get("/v1/models", &key).await.status, 200);
}

#[tokio::test]
async fn fault_injection_is_off_unless_enabled_and_unknown_actors_are_404() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_FAULT_INJECTION", "0")).await;
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "accounts"})).await;
    assert_eq!(r.status, 404);
    drop(gw);
    let gw = Gateway::start().await;
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": "apikey:nope"})).await;
    assert_eq!(r.status, 404);
    let (_, tenant) = gw.create_account("t").await;
    assert_eq!(gw.post("/admin/actors/fail", &tenant, json!({"name": "accounts"})).await.status, 403);
}
