//! Serving, bootstrap, persistence across restarts, the data-dir lock, shutdown, the CLI.

use std::time::Duration;

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn health_routes_answer_and_every_response_has_a_request_id() {
    let gw = Gateway::start().await;
    for path in ["/livez", "/readyz"] {
        let r = gw.request(HttpMethod::GET, path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("x-request-id").is_some_and(|v| v.len() >= 32), "{path} lacks x-request-id");
    }
    assert_eq!(gw.request(HttpMethod::GET, "/readyz", None, None).await.body["status"], "ready");
    // Errors carry one too, and a caller's own id is propagated.
    let r = gw.request(HttpMethod::GET, "/nope", None, None).await;
    assert_eq!(r.status, 404);
    assert!(r.header("x-request-id").is_some());
    let r = gw.raw(gw.client().get(gw.url("/livez")).header("x-request-id", "my-trace-1")).await;
    assert_eq!(r.header("x-request-id"), Some("my-trace-1"));
}

#[tokio::test]
async fn first_start_prints_credentials_once_and_restarts_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let key = gw.first_key.clone().expect("first start prints an API key");
    let session = gw.first_session.clone().expect("first start prints a session token");
    assert!(key.starts_with("tok_"));
    // Both printed credentials work.
    assert_eq!(gw.get("/v1/models", &key).await.status, 200);
    assert_eq!(gw.get("/v1/keys", &session).await.status, 200);
    // Create state that must survive a restart.
    let ws = gw
        .post("/v1/workspaces", &session, json!({"workspace_id": "acme", "name": "Acme", "monthly_budget_usd": 25}))
        .await;
    assert_eq!(ws.status, 200, "{}", ws.text);
    let (tenant_id, tenant_session) = gw.create_account("tenant-a").await;
    let (_, tenant_key) = {
        let r = gw.post("/v1/keys", &tenant_session, json!({"name": "t"})).await;
        (r.body["id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned())
    };
    assert_eq!(gw.get("/v1/models", &tenant_key).await.status, 200);
    assert_eq!(gw.stop().await, Some(0), "SIGTERM exits cleanly");

    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    assert!(gw.first_key.is_none() && gw.first_session.is_none(), "later starts print no credentials");
    let printed = gw.stdout.lock().unwrap().join("\n");
    assert!(!printed.contains("tok_") && !printed.contains("tks_"), "no secret printed on restart: {printed}");
    assert_eq!(gw.get("/v1/models", &key).await.status, 200, "API key survives restart");
    assert_eq!(gw.get("/v1/models", &tenant_key).await.status, 200, "tenant key survives restart");
    let ws = gw.get("/v1/workspaces/acme", &session).await;
    assert_eq!(ws.status, 200, "session and workspace survive restart: {}", ws.text);
    assert_eq!(ws.body["monthly_budget_usd"], 25.0);
    let accounts = gw.get("/admin/accounts", ADMIN_TOKEN).await;
    assert!(accounts.body["data"].as_array().unwrap().iter().any(|a| a["id"] == tenant_id.as_str()));
    assert_eq!(gw.get("/v1/keys", &tenant_session).await.body["data"].as_array().unwrap().len(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_fails_at_once() {
    let gw = Gateway::start().await;
    let started = std::time::Instant::now();
    let out = serve_command(&gw.data_dir, &Options::default()).stderr(std::process::Stdio::piped()).output();
    let out = tokio::time::timeout(Duration::from_secs(10), out).await.expect("second server exits at once").unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("locked by another process"), "clear message, got: {stderr}");
    // The first server is unaffected.
    assert_eq!(gw.request(HttpMethod::GET, "/livez", None, None).await.status, 200);
}

#[tokio::test]
async fn config_file_and_flags_are_read_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("custom.toml");
    std::fs::write(&config, "[rate_limit]\ndefault_rpm = 7\n").unwrap();
    let gw =
        Gateway::start_in(&dir.path().join("data"), Options::default().env("TOKAROO_CONFIG", config.to_str().unwrap()))
            .await;
    let (_, key) = gw.create_key(json!({})).await;
    assert_eq!(gw.get("/v1/models", &key).await.header("x-ratelimit-limit"), Some("7"));
    drop(gw);

    std::fs::write(&config, "[server]\nlisten_adress = \"x\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap(), "--data-dir"])
        .arg(dir.path().join("data2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listen_adress"), "names the bad key: {stderr}");
}

#[tokio::test]
async fn json_logs_on_request() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_LOG_FORMAT", "json")).await;
    let log = gw.log();
    let first = log.lines().find(|l| !l.trim().is_empty()).expect("some log line");
    let parsed: serde_json::Value = serde_json::from_str(first).expect("log lines are JSON");
    assert!(parsed.get("level").is_some(), "{first}");
}

#[tokio::test]
async fn cli_creates_accounts_and_prints_the_actor_tree() {
    let gw = Gateway::start().await;
    let out = tokio::process::Command::new(BIN)
        .args(["accounts", "create", "--name", "cli-tenant", "--url", &gw.base])
        .env("TOKAROO_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard session token:"))
        .map(|t| t.split_whitespace().next().unwrap().to_owned())
        .expect("prints a session token");
    // The new account's session works and sees only its own (empty) key list.
    let keys = gw.get("/v1/keys", &token).await;
    assert_eq!(keys.status, 200);
    assert_eq!(keys.body["data"], json!([]));

    let out = tokio::process::Command::new(BIN)
        .args(["actors", "--url", &gw.base, "--token", ADMIN_TOKEN])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let tree = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = tree.lines().collect();
    assert!(lines[0].starts_with("root [running]"), "{tree}");
    assert!(lines.iter().any(|l| l.starts_with("  accounts [running]")), "{tree}");
    assert!(lines.iter().any(|l| l.starts_with("    workspace:")), "{tree}");
    assert!(lines.iter().any(|l| l.starts_with("      apikey:")), "{tree}");

    // Without a token the CLI says what is missing.
    let out = tokio::process::Command::new(BIN)
        .args(["actors", "--url", &gw.base])
        .env_remove("TOKAROO_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOKAROO_ADMIN_TOKEN"));
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let gw = Gateway::start().await;
    let url = gw.url("/admin/debug/sleep");
    let in_flight = tokio::spawn(async move {
        let r = tokaroo_actors::routing::client::client()
            .post(url)
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"ms": 800}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = gw.pid();
    let base = gw.base.clone();
    let exit = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(150)).await;
    // New connections are no longer accepted while the old request drains.
    assert!(
        tokaroo_actors::routing::client::client().get(format!("{base}/livez")).send().await.is_err(),
        "listener closed after SIGTERM (pid {pid})"
    );
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body["slept_ms"].as_u64()), (200, Some(800)), "the in-flight request finished");
    assert_eq!(exit.await.unwrap(), Some(0));
}
