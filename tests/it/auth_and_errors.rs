//! Credential types per route family, and the error shapes for bad input.

use serde_json::json;

use crate::harness::*;

enum Cred {
    None,
    Raw(&'static str),
    ValidKey,
    Session,
}

#[tokio::test]
async fn credentials_are_checked_per_route_family() {
    let gw = Gateway::start().await;
    let (_, key) = gw.create_key(json!({"name": "k"})).await;
    let (_, session) = gw.create_account("tenant").await;
    // (credential, method, path, status, error string, OpenAI-shaped?)
    let cases: Vec<(Cred, HttpMethod, &str, u16, &str, bool)> = vec![
        (Cred::None, HttpMethod::GET, "/v1/models", 401, "Missing Authorization header", true),
        (Cred::Raw("tok_not-a-real-key"), HttpMethod::GET, "/v1/models", 401, "Invalid or expired credential", true),
        (Cred::Raw("garbage-session"), HttpMethod::GET, "/v1/models", 401, "Invalid or expired credential", true),
        (Cred::Session, HttpMethod::GET, "/v1/models", 403, "API key required", true),
        (Cred::ValidKey, HttpMethod::GET, "/v1/models", 200, "", true),
        (Cred::None, HttpMethod::GET, "/v1/keys", 401, "Missing Authorization header", false),
        (Cred::Raw("garbage-session"), HttpMethod::GET, "/v1/keys", 401, "Invalid or expired credential", false),
        (Cred::ValidKey, HttpMethod::GET, "/v1/keys", 403, "Session authentication required", false),
        (Cred::ValidKey, HttpMethod::POST, "/v1/keys", 403, "Session authentication required", false),
        (Cred::ValidKey, HttpMethod::GET, "/v1/workspaces", 403, "Session authentication required", false),
        (Cred::ValidKey, HttpMethod::PATCH, "/v1/workspaces/default", 403, "Session authentication required", false),
        (Cred::ValidKey, HttpMethod::GET, "/admin/actors", 403, "Session authentication required", false),
        (Cred::Session, HttpMethod::GET, "/admin/actors", 403, "Operator session required", false),
        (Cred::Session, HttpMethod::POST, "/admin/accounts", 403, "Operator session required", false),
        (Cred::Session, HttpMethod::GET, "/v1/keys", 200, "", false),
    ];
    for (cred, method, path, status, error, openai) in cases {
        let token = match &cred {
            Cred::None => None,
            Cred::Raw(t) => Some(t.to_string()),
            Cred::ValidKey => Some(key.clone()),
            Cred::Session => Some(session.clone()),
        };
        let body = matches!(method, HttpMethod::POST | HttpMethod::PATCH).then(|| json!({"name": "x"}));
        let r = gw.request(method.clone(), path, token.as_deref(), body).await;
        assert_eq!(r.status.as_u16(), status, "{method} {path}: {}", r.text);
        if status >= 400 {
            if openai {
                assert_eq!(r.body["error"]["code"], error, "{method} {path}: {}", r.text);
                assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
                assert!(r.body["error"]["type"].is_string());
            } else {
                assert_eq!(r.body["error"], error, "{method} {path}: {}", r.text);
                assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()));
            }
        }
    }
    // Other Authorization schemes are not credentials.
    let r = gw.raw(gw.client().get(gw.url("/v1/keys")).header("authorization", format!("Basic {key}"))).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn bad_input_gets_a_clear_400_and_never_breaks_the_server() {
    let gw = Gateway::start().await;
    let cases: Vec<(&str, &str, &str)> = vec![
        // (path, raw body, text the message must contain)
        ("/v1/workspaces", "{not json", "Malformed JSON"),
        ("/v1/workspaces", "", "empty"),
        ("/v1/workspaces", "[1,2]", "Invalid request body"),
        ("/v1/workspaces", r#"{"name": "x"}"#, "missing field `workspace_id`"),
        ("/v1/workspaces", r#"{"workspace_id": 5, "name": "x"}"#, "`workspace_id`"),
        ("/v1/workspaces", r#"{"workspace_id": "has space", "name": "x"}"#, "workspace_id must be"),
        ("/v1/workspaces", r#"{"workspace_id": "ok", "name": ""}"#, "name must be"),
        ("/v1/workspaces", r#"{"workspace_id": "ok", "name": "x", "monthly_budget_usd": -1}"#, "monthly_budget_usd"),
        (
            "/v1/workspaces",
            r#"{"workspace_id": "ok", "name": "x", "monthly_budget_usd": "ten"}"#,
            "`monthly_budget_usd`",
        ),
        ("/v1/keys", r#"{"rate_limit_rpm": 0}"#, "rate_limit_rpm must be"),
        ("/v1/keys", r#"{"rate_limit_rpm": -3}"#, "`rate_limit_rpm`"),
        ("/v1/keys", r#"{"metadata": "not an object"}"#, "`metadata`"),
        ("/admin/accounts", r#"{}"#, "missing field `name`"),
    ];
    for (path, body, needle) in cases {
        let r = gw
            .raw(
                gw.client()
                    .post(gw.url(path))
                    .bearer_auth(ADMIN_TOKEN)
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text);
        assert_eq!(r.body["error"], "invalid_request");
        let message = r.body["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path} {body}: message {message:?} should mention {needle:?}");
    }
    // A body sent without a JSON content type (curl -d) is still read as JSON.
    let r = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/workspaces"))
                .bearer_auth(ADMIN_TOKEN)
                .body(r#"{"workspace_id":"curl","name":"Curl"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(gw.request(HttpMethod::GET, "/livez", None, None).await.status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413_unknown_routes_404_wrong_methods_405() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_MAX_BODY_BYTES", "1024")).await;
    let big = format!(r#"{{"workspace_id":"big","name":"{}"}}"#, "x".repeat(4096));
    let r = gw.raw(gw.client().post(gw.url("/v1/workspaces")).bearer_auth(ADMIN_TOKEN).body(big)).await;
    assert_eq!(r.status, 413, "{}", r.text);
    assert_eq!(r.body["error"], "payload_too_large");
    assert!(r.body["message"].as_str().unwrap().contains("1024"));

    let r = gw.request(HttpMethod::GET, "/v1/does-not-exist", Some(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "not_found");
    assert!(r.body["message"].as_str().unwrap().contains("/v1/does-not-exist"));
    // Unknown paths under OpenAI-compatible prefixes answer in OpenAI's shape.
    let r = gw.request(HttpMethod::POST, "/v1/audio/unknown", None, Some(json!({}))).await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"]["message"].is_string(), "{}", r.text);

    let r = gw.request(HttpMethod::PUT, "/v1/keys", Some(ADMIN_TOKEN), Some(json!({}))).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"], "method_not_allowed");
    let r = gw.request(HttpMethod::DELETE, "/v1/models", Some(ADMIN_TOKEN), None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"]["code"], "method_not_allowed", "{}", r.text);
}
