//! Credentials: dashboard sessions that expire, and are listed, revoked and rotated; what
//! the server refuses at start (a short admin token, a readable `master.key`); runtime keys
//! on the usage read routes passing admission; embeddings answering the requested model.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    fakes::{openai::OpenAi, Fake},
    harness::*,
};

fn sessions_of(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sessions_are_listed_rotated_and_revoked_and_a_revocation_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let (_, tenant) = gw.create_account("acme").await;

    // The tenant sees its one session, marked current, and never a token or its hash.
    let list = sessions_of(&gw.get("/v1/sessions", &tenant).await);
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(s["current"], true);
    assert_eq!(s["label"], "initial");
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(s[field].as_str().is_some_and(|t| t.ends_with('Z')), "{field}: {s}");
    }
    let text = serde_json::to_string(s).unwrap();
    assert!(!text.contains("sha256") && !text.contains("tks_"), "{text}");
    let id = s["id"].as_str().unwrap().to_owned();

    // Rotation answers a new token once; the old one is refused from then on.
    let r = gw.post("/v1/sessions/rotate", &tenant, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], id.as_str(), "the session keeps its id");
    let rotated = r.body["session_token"].as_str().unwrap().to_owned();
    assert!(rotated.starts_with("tks_") && rotated != tenant);
    let old = gw.get("/v1/sessions", &tenant).await;
    assert_eq!(old.status, 401, "{}", old.text);
    assert_eq!(gw.get("/v1/sessions", &rotated).await.status, 200);
    assert_eq!(gw.get("/v1/keys", &rotated).await.status, 200, "the new token is a full session");

    // The operator's bootstrap session, revoked with the admin token; then kill -9 at once.
    let bootstrap = gw.first_session.clone().expect("bootstrap session printed");
    assert_eq!(gw.get("/v1/workspaces", &bootstrap).await.status, 200);
    let list = sessions_of(&gw.get("/v1/sessions", ADMIN_TOKEN).await);
    let stored: Vec<&Value> = list.iter().filter(|s| s["kind"] == "session").collect();
    assert_eq!(stored.len(), 1, "{list:?}");
    assert_eq!(stored[0]["current"], false);
    let admin = list.iter().find(|s| s["kind"] == "admin_token").expect("the admin token is listed");
    assert_eq!((&admin["current"], &admin["revocable"]), (&json!(true), &json!(false)));
    let bootstrap_id = stored[0]["id"].as_str().unwrap().to_owned();
    let r = gw.delete(&format!("/v1/sessions/{bootstrap_id}"), ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["revoked"], true);
    signal(gw.pid(), "-KILL");
    drop(gw);

    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    assert_eq!(gw.get("/v1/workspaces", &bootstrap).await.status, 401, "revocation is durable");
    assert_eq!(gw.get("/v1/sessions", &tenant).await.status, 401, "rotation is durable");
    let list = sessions_of(&gw.get("/v1/sessions", &rotated).await);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["current"], true);
    // Revoking one's own session logs it out.
    let r = gw.delete(&format!("/v1/sessions/{id}"), &rotated).await;
    assert_eq!((r.status.as_u16(), &r.body["current"]), (200, &json!(true)), "{}", r.text);
    assert_eq!(gw.get("/v1/sessions", &rotated).await.status, 401);
}

#[tokio::test]
async fn a_tenant_cannot_see_rotate_or_revoke_another_accounts_session() {
    let gw = Gateway::start().await;
    let (_, alice) = gw.create_account("alice").await;
    let (_, bob) = gw.create_account("bob").await;
    let alice_id = sessions_of(&gw.get("/v1/sessions", &alice).await)[0]["id"].as_str().unwrap().to_owned();
    let bobs = sessions_of(&gw.get("/v1/sessions", &bob).await);
    assert_eq!(bobs.len(), 1);
    assert_ne!(bobs[0]["id"], alice_id.as_str());
    let ops = sessions_of(&gw.get("/v1/sessions", ADMIN_TOKEN).await);
    assert!(ops.iter().all(|s| s["id"] != alice_id.as_str()), "not even the operator lists a tenant's sessions");

    let r = gw.delete(&format!("/v1/sessions/{alice_id}"), &bob).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["error"], "Session not found");
    let r = gw.post("/v1/sessions/rotate", &bob, json!({"id": alice_id})).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(gw.get("/v1/sessions", &alice).await.status, 200, "alice's session still works");

    // Bad input: 4xx with a message.
    let r = gw.delete("/v1/sessions/abc%00def", &bob).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("control character"), "{}", r.text);
    let r = gw.delete("/v1/sessions/abc%0Adef", &bob).await;
    assert_eq!(r.status, 400, "{}", r.text);
    // The same for every route with an id in its path.
    for path in ["/v1/keys/abc%00def", "/v1/workspaces/de%7Ffault", "/admin/accounts/x%00/credits"] {
        let r = gw.delete(path, &bob).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains("control character"), "{path}: {}", r.text);
    }
    let r = gw.post("/v1/embeddings/%00", &gw.first_key.clone().unwrap(), json!({})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.body["error"]["message"].as_str().is_some(), "OpenAI-shaped on OpenAI routes: {}", r.text);
    let r = gw.post("/v1/sessions/rotate", &bob, json!({"id": 7})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = gw.post("/v1/sessions/rotate", &bob, json!({"session": "x"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let key = gw.first_key.clone().unwrap();
    assert_eq!(gw.get("/v1/sessions", &key).await.status, 403, "a runtime key is the wrong credential");
    assert_eq!(gw.get("/v1/sessions", "tks_nonsense").await.status, 401);

    // The admin token is configuration: neither rotated nor revoked, with a message saying so.
    for r in [
        gw.delete("/v1/sessions/admin-token", ADMIN_TOKEN).await,
        gw.post("/v1/sessions/rotate", ADMIN_TOKEN, json!({})).await,
        gw.request(HttpMethod::POST, "/v1/sessions/rotate", Some(ADMIN_TOKEN), None).await,
    ] {
        assert_eq!(r.status, 400, "{}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains("TOKAROO_ADMIN_TOKEN"), "{}", r.text);
    }
    assert_eq!(gw.get("/v1/sessions", ADMIN_TOKEN).await.status, 200);
}

#[tokio::test]
async fn sessions_expire_when_unused_for_the_ttl_and_each_use_slides_it() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_SESSION_TTL_SECS", "2")).await;
    let (_, tenant) = gw.create_account("sleepy").await;
    let first = sessions_of(&gw.get("/v1/sessions", &tenant).await)[0].clone();
    // Used every 0.8 s for 3.2 s, well past the 2 s TTL: each use pushes expiry out.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let r = gw.get("/v1/workspaces", &tenant).await;
        assert_eq!(r.status, 200, "a session in use does not expire: {}", r.text);
    }
    let now = sessions_of(&gw.get("/v1/sessions", &tenant).await)[0].clone();
    assert!(now["expires_at"].as_str() > first["expires_at"].as_str(), "expiry slid: {first} -> {now}");
    assert!(now["last_used_at"].as_str() > first["last_used_at"].as_str());

    // Unused past the TTL: refused with a message that says why, and gone.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = gw.get("/v1/workspaces", &tenant).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.body["message"].as_str().unwrap().contains("expired"), "{}", r.text);
    let again = gw.get("/v1/workspaces", &tenant).await;
    assert_eq!(again.status, 401);
    // The admin token is configuration and does not expire.
    assert_eq!(gw.get("/v1/workspaces", ADMIN_TOKEN).await.status, 200);
}

/// Runs `serve` on `dir` with extra env and waits for it to exit; returns (code, its log).
async fn start_expecting_refusal(dir: &std::path::Path, options: Options) -> (Option<i32>, String) {
    let mut child = serve_command(dir, &options).spawn().expect("spawn tokaroo");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server refuses to start instead of running")
        .unwrap();
    (status.code(), std::fs::read_to_string(dir.join("server.log")).unwrap_or_default())
}

#[tokio::test]
async fn a_short_admin_token_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = start_expecting_refusal(
        dir.path(),
        Options::default().env("TOKAROO_ADMIN_TOKEN", "only-27-characters-long-tok"),
    )
    .await;
    assert_ne!(code, Some(0), "{log}");
    assert!(code.is_some(), "it exits, not killed: {log}");
    assert!(log.contains("TOKAROO_ADMIN_TOKEN") && log.contains("at least 32"), "{log}");
    assert!(!log.contains("only-27-characters-long-tok"), "the token itself is not printed: {log}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_master_key_readable_by_others_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    assert_eq!(gw.stop().await, Some(0));
    let key = dir.path().join("master.key");
    let mode = std::fs::metadata(&key).expect("master.key created").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, log) = start_expecting_refusal(dir.path(), Options::default()).await;
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains("master.key") && log.contains("chmod 600"), "{log}");
    // Fixed as the message says, the server starts again.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    assert_eq!(gw.get("/v1/workspaces", ADMIN_TOKEN).await.status, 200);
}

#[tokio::test]
async fn the_cli_lists_rotates_and_revokes_sessions() {
    let gw = Gateway::start().await;
    let cli = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("sessions").args(args).args(["--url", &gw.base]).env("TOKAROO_ADMIN_TOKEN", ADMIN_TOKEN);
        cmd
    };
    let out = cli(&["list"]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.contains("admin-token") && listed.contains("not revocable"), "{listed}");
    let id =
        listed.lines().find(|l| l.contains("initial")).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();

    let out = cli(&["rotate", "--id", &id]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let token = printed.split_whitespace().find(|w| w.starts_with("tks_")).expect("new token printed").to_owned();
    assert_eq!(gw.get("/v1/workspaces", &token).await.status, 200);
    assert_eq!(gw.get("/v1/workspaces", gw.first_session.as_deref().unwrap()).await.status, 401);

    let out = cli(&["revoke", &id]).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(gw.get("/v1/workspaces", &token).await.status, 401);
    let out = cli(&["revoke", &id]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Session not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The admin token itself cannot be rotated: the CLI says why.
    let out = cli(&["rotate"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration"), "{}", String::from_utf8_lossy(&out.stderr));
}

const READ_ROUTES: [&str; 4] = ["/v1/usage", "/v1/stats", "/v1/usage/breakdown", "/v1/balance"];

#[tokio::test]
async fn runtime_keys_on_the_read_routes_are_rate_limited_with_headers() {
    let gw = Gateway::start().await;
    for path in READ_ROUTES {
        let (_, key) = gw.create_key(json!({"rate_limit_rpm": 2})).await;
        for remaining in ["1", "0"] {
            let r = gw.get(path, &key).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            assert_eq!(r.header("x-ratelimit-limit"), Some("2"), "{path}");
            assert_eq!(r.header("x-ratelimit-remaining"), Some(remaining), "{path}");
        }
        let r = gw.get(path, &key).await;
        assert_eq!(r.status, 429, "{path}: {}", r.text);
        assert_eq!(r.body["error"], "Rate limit exceeded", "{path}: {}", r.text);
        assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok()), "{path}");
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"), "{path}");
        assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{path}");
        // The same limiter as chat and models: the key is out of permits everywhere.
        assert_eq!(gw.get("/v1/models", &key).await.status, 429);
    }
    // Dashboard sessions are not metered on these routes.
    for _ in 0..3 {
        for path in READ_ROUTES {
            let r = gw.get(path, ADMIN_TOKEN).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
            assert!(r.header("x-ratelimit-limit").is_none(), "{path}");
        }
    }
    // Unknown keys are still 401, and the operator routes still want a session.
    assert_eq!(gw.get("/v1/usage", "tok_unknown").await.status, 401);
    let key = gw.first_key.clone().unwrap();
    assert_eq!(gw.get("/admin/usage", &key).await.status, 403);
}

#[tokio::test]
async fn runtime_keys_of_a_disabled_workspace_cannot_read_usage() {
    let gw = Gateway::start().await;
    let ws = json!({"workspace_id": "paused", "name": "Paused"});
    assert_eq!(gw.post("/v1/workspaces", ADMIN_TOKEN, ws).await.status, 200);
    let (_, key) = gw.create_key(json!({"workspace_id": "paused"})).await;
    assert_eq!(gw.get("/v1/balance", &key).await.status, 200);
    let r = gw.patch("/v1/workspaces/paused", ADMIN_TOKEN, json!({"status": "disabled"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    for path in READ_ROUTES {
        let r = gw.get(path, &key).await;
        assert_eq!(r.status, 403, "{path}: {}", r.text);
        assert!(r.body["message"].as_str().unwrap().contains("disabled"), "{path}: {}", r.text);
    }
    // The account's session still reads the workspace's usage.
    assert_eq!(gw.get("/v1/usage?workspace_id=paused", ADMIN_TOKEN).await.status, 200);
}

#[tokio::test]
async fn embeddings_answer_with_the_requested_model_name() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    for (model, answered) in [
        (json!("auto"), "auto"),
        (json!("fast"), "fast"),
        (json!("max"), "max"),
        (json!("text-embedding-3-large"), "text-embedding-3-large"),
        (Value::Null, "text-embedding-3-small"),
    ] {
        let r = gw.post("/v1/embeddings", &key, json!({"input": "hello", "model": model})).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text);
        assert_eq!(r.body["model"], answered, "{model}: {}", r.text);
    }
}

/// A self-hosted endpoint serving the request: the answer names what the client asked for,
/// never the endpoint's model (nor the name the upstream reported).
#[tokio::test]
async fn embeddings_from_a_self_hosted_endpoint_do_not_name_its_model() {
    let local = Fake::start(OpenAi { models: vec!["nomic-embed-text"] }, "").await;
    let gw = Gateway::start().await;
    let body = json!({"url": local.root, "label": "desk", "workspace_id": "default"});
    let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = gw.first_key.clone().unwrap();
    for (model, answered) in [(json!("auto"), "auto"), (Value::Null, "text-embedding-3-small")] {
        let r = gw.post("/v1/embeddings", &key, json!({"input": ["a", "b"], "model": model})).await;
        assert_eq!(r.status, 200, "{model}: {}", r.text);
        assert_eq!(r.body["model"], answered, "{model}: {}", r.text);
        assert!(!r.text.contains("nomic") && !r.text.contains("upstream-build"), "{}", r.text);
        assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    }
    let served = local.answer_requests();
    assert_eq!(served.len(), 2, "the endpoint served both");
    assert!(served.iter().all(|r| r.body["model"] == "nomic-embed-text"));
}
