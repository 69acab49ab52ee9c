//! API keys and workspaces: shapes as the spec gives them, lifecycle, and tenant isolation.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn keys_are_shown_once_listed_without_secrets_and_revoked_at_once() {
    let gw = Gateway::start().await;
    let r = gw
        .post(
            "/v1/keys",
            ADMIN_TOKEN,
            json!({"name": "production", "metadata": {"team": "core"}, "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let secret = r.body["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tok_") && secret.len() >= 40);
    assert_eq!(r.body["name"], "production");
    assert_eq!(r.body["prefix"], &secret[..12]);
    assert_eq!(r.body["metadata"], json!({"team": "core"}));
    assert_eq!(r.body["workspace_id"], "default");
    assert_eq!(r.body["workspace_name"], "Default");

    assert_eq!(gw.get("/v1/models", &secret).await.status, 200);
    let list = gw.get("/v1/keys", ADMIN_TOKEN).await;
    assert_eq!(list.body["object"], "list");
    assert!(!list.text.contains(&secret), "secrets are never listed");
    let row = list.body["data"].as_array().unwrap().iter().find(|k| k["id"] == id.as_str()).unwrap().clone();
    for field in ["id", "name", "metadata", "workspace_id", "workspace_name", "keyPrefix", "lastUsedAt", "createdAt"] {
        assert!(row.get(field).is_some(), "GET /v1/keys row lacks {field}: {row}");
    }
    assert_eq!(row["keyPrefix"], &secret[..12]);
    assert!(row["lastUsedAt"].is_string(), "lastUsedAt is set once the key was used: {row}");
    assert!(row["createdAt"].as_str().unwrap().ends_with('Z'));

    // A key with no workspace is allowed and reports null.
    let r = gw.post("/v1/keys", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.body["workspace_id"], serde_json::Value::Null);
    assert_eq!(gw.get("/v1/models", r.body["key"].as_str().unwrap()).await.status, 200);

    let del = gw.delete(&format!("/v1/keys/{id}"), ADMIN_TOKEN).await;
    assert_eq!(del.status, 200);
    assert_eq!(del.body, json!({"deleted": true, "id": id}));
    let after = gw.get("/v1/models", &secret).await;
    assert_eq!(after.status, 401, "revoked key is refused at once");
    assert_eq!(gw.delete(&format!("/v1/keys/{id}"), ADMIN_TOKEN).await.body["error"], "API key not found");
    // Its actor is gone from the tree.
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("apikey:{id}")).is_none());
}

#[tokio::test]
async fn keys_bind_to_existing_workspaces_only() {
    let gw = Gateway::start().await;
    let r = gw.post("/v1/keys", ADMIN_TOKEN, json!({"workspace_id": "ghost"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "Workspace not found");
    gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "acme-support", "name": "Acme Support"})).await;
    let r = gw.post("/v1/keys", ADMIN_TOKEN, json!({"workspace_name": "Acme Support"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["workspace_id"], "acme-support");
    let r = gw.post("/v1/keys", ADMIN_TOKEN, json!({"workspace_id": "acme-support", "workspace_name": "Other"})).await;
    assert_eq!(r.status, 400, "a mismatched workspace_name is a scope mismatch");
    let r = gw.post("/v1/keys", ADMIN_TOKEN, json!({"workspace_name": "Nobody"})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn workspaces_create_list_patch_and_disable() {
    let gw = Gateway::start().await;
    let r = gw
        .post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "acme-support", "name": "Acme Support", "monthly_budget_usd": 250, "metadata": {"tier": "gold"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for field in ["id", "workspace_id", "name", "status", "metadata", "monthly_budget_usd"] {
        assert!(r.body.get(field).is_some(), "create response lacks {field}");
    }
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["monthly_budget_usd"], 250.0);
    let dup = gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "acme-support", "name": "Again"})).await;
    assert_eq!(dup.status, 409);

    let list = gw.get("/v1/workspaces", ADMIN_TOKEN).await;
    assert_eq!(list.body["object"], "list");
    let slugs: Vec<&str> =
        list.body["data"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap()).collect();
    assert!(slugs.contains(&"default") && slugs.contains(&"acme-support"));
    let row = list.body["data"].as_array().unwrap().iter().find(|w| w["workspace_id"] == "acme-support").unwrap();
    assert!(row["created_at"].is_string() && row["updated_at"].is_string());

    let p = gw
        .patch("/v1/workspaces/acme-support", ADMIN_TOKEN, json!({"name": "Acme", "metadata": {"tier": "silver"}}))
        .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["name"], "Acme");
    assert_eq!(p.body["monthly_budget_usd"], 250.0, "absent field is left alone");
    let p = gw.patch("/v1/workspaces/acme-support", ADMIN_TOKEN, json!({"monthly_budget_usd": null})).await;
    assert_eq!(p.body["monthly_budget_usd"], serde_json::Value::Null, "null clears the budget");
    let sleepy = gw.patch("/v1/workspaces/acme-support", ADMIN_TOKEN, json!({"status": "sleepy"})).await;
    assert_eq!(sleepy.status, 400);
    assert_eq!(sleepy.body["message"], "status must be one of: active, disabled");
    let missing = gw.patch("/v1/workspaces/nope", ADMIN_TOKEN, json!({"name": "x"})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"], "Workspace not found");

    // A disabled workspace's keys are refused until it is active again.
    let (_, key) = gw.create_key(json!({"workspace_id": "acme-support"})).await;
    assert_eq!(gw.get("/v1/models", &key).await.status, 200);
    let disabled = gw.patch("/v1/workspaces/acme-support", ADMIN_TOKEN, json!({"status": "disabled"})).await;
    assert_eq!(disabled.body["status"], "disabled");
    let r = gw.get("/v1/models", &key).await;
    assert_eq!(r.status, 403, "{}", r.text);
    gw.patch("/v1/workspaces/acme-support", ADMIN_TOKEN, json!({"status": "active"})).await;
    assert_eq!(gw.get("/v1/models", &key).await.status, 200);
}

#[tokio::test]
async fn one_account_can_never_touch_anothers_keys_or_workspaces() {
    let gw = Gateway::start().await;
    let (_, alice) = gw.create_account("alice").await;
    let (_, bob) = gw.create_account("bob").await;
    let a_ws = gw.post("/v1/workspaces", &alice, json!({"workspace_id": "secret-ws", "name": "Alice WS"})).await;
    assert_eq!(a_ws.status, 200);
    let a_key = gw.post("/v1/keys", &alice, json!({"name": "alice-key", "workspace_id": "secret-ws"})).await;
    let a_key_id = a_key.body["id"].as_str().unwrap().to_owned();
    let a_secret = a_key.body["key"].as_str().unwrap().to_owned();

    // Bob sees none of Alice's things...
    let keys = gw.get("/v1/keys", &bob).await;
    assert_eq!(keys.body["data"], json!([]));
    let wss = gw.get("/v1/workspaces", &bob).await;
    let names: Vec<&str> =
        wss.body["data"].as_array().unwrap().iter().map(|w| w["workspace_id"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["default"], "bob has only his own default workspace");
    assert_eq!(gw.get("/v1/workspaces/secret-ws", &bob).await.status, 404);
    // ...cannot change or revoke them...
    assert_eq!(gw.patch("/v1/workspaces/secret-ws", &bob, json!({"status": "disabled"})).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/keys/{a_key_id}"), &bob).await.status, 404);
    assert_eq!(gw.patch(&format!("/v1/keys/{a_key_id}"), &bob, json!({"rate_limit_rpm": 1})).await.status, 404);
    // ...nor bind his keys to her workspace.
    assert_eq!(gw.post("/v1/keys", &bob, json!({"workspace_id": "secret-ws"})).await.status, 404);
    // The same slug in Bob's account is his own, separate workspace.
    assert_eq!(
        gw.post("/v1/workspaces", &bob, json!({"workspace_id": "secret-ws", "name": "Bob WS"})).await.status,
        200
    );
    assert_eq!(gw.get("/v1/workspaces/secret-ws", &alice).await.body["name"], "Alice WS");
    // Alice's key still works and is still hers.
    assert_eq!(gw.get("/v1/models", &a_secret).await.status, 200);
    let keys = gw.get("/v1/keys", &alice).await;
    assert_eq!(keys.body["data"].as_array().unwrap().len(), 1);
    // The operator's own lists do not include tenants' keys either.
    let op_keys = gw.get("/v1/keys", ADMIN_TOKEN).await;
    assert!(!op_keys.text.contains(&a_key_id));
}

/// What a tenant writes into records kept for good (and some held in memory) has ceilings:
/// a 400 that names the field, never a record that fills the server.
#[tokio::test]
async fn kept_records_refuse_oversized_metadata_labels_secrets_and_headers() {
    let gw = Gateway::start().await;
    let (_, session) = gw.create_account("hoarder").await;
    let big = json!({"blob": "x".repeat(20_000)});
    let r = gw.post("/v1/workspaces", &session, json!({"workspace_id": "w1", "name": "W", "metadata": big})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("metadata"), "{}", r.text);
    let r = gw.post("/v1/workspaces", &session, json!({"workspace_id": "w1", "name": "W"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.patch("/v1/workspaces/w1", &session, json!({"metadata": big})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"name": "k", "metadata": big})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await;
    let id = key.body["id"].as_str().unwrap();
    let r = gw.patch(&format!("/v1/keys/{id}"), &session, json!({"metadata": big})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(gw.patch(&format!("/v1/keys/{id}"), &session, json!({"metadata": {"team": "a"}})).await.status, 200);

    let secret = "s".repeat(5000);
    let r = gw.post("/v1/provider-keys", &session, json!({"provider": "openai", "secret": secret})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("secret"), "{}", r.text);
    let r = gw
        .post("/v1/provider-keys", &session, json!({"provider": "openai", "secret": "sk-x", "label": "l".repeat(201)}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let headers: serde_json::Map<String, serde_json::Value> =
        (0..33).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let r = gw.post("/v1/local-endpoints", &session, json!({"url": "http://example.com", "headers": headers})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("at most 32 headers"), "{}", r.text);
    let long_url = format!("http://example.com/{}", "a".repeat(3000));
    let r = gw.post("/v1/local-endpoints", &session, json!({"url": long_url})).await;
    assert_eq!(r.status, 400, "{}", r.text);
}
