//! Per-key rate limits: headers on every runtime response, 429 with Retry-After, changes
//! and revocation taking effect at once.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn default_limit_is_60_per_minute_and_headers_count_down() {
    let gw = Gateway::start().await;
    let (_, key) = gw.create_key(json!({})).await;
    let first = gw.get("/v1/models", &key).await;
    assert_eq!(first.header("x-ratelimit-limit"), Some("60"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("59"));
    let second = gw.get("/v1/models", &key).await;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("58"));
}

#[tokio::test]
async fn over_the_limit_is_429_with_retry_after_and_limits_are_per_key() {
    let gw = Gateway::start().await;
    let (id, key) = gw.create_key(json!({"rate_limit_rpm": 3})).await;
    let (_, other) = gw.create_key(json!({"rate_limit_rpm": 3})).await;
    for expected_remaining in ["2", "1", "0"] {
        let r = gw.get("/v1/models", &key).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining"), Some(expected_remaining));
    }
    let limited = gw.get("/v1/models", &key).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["code"], "Rate limit exceeded", "{}", limited.text);
    assert!(limited.body["error"]["message"].as_str().unwrap().starts_with("Rate limit exceeded"));
    let retry: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    // Another key is not affected.
    assert_eq!(gw.get("/v1/models", &other).await.status, 200);

    // Raising the limit applies to the very next request.
    let p = gw.patch(&format!("/v1/keys/{id}"), ADMIN_TOKEN, json!({"rate_limit_rpm": 100})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["rate_limit_rpm"], 100);
    let r = gw.get("/v1/models", &key).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    // Back to the server default with null.
    let p = gw.patch(&format!("/v1/keys/{id}"), ADMIN_TOKEN, json!({"rate_limit_rpm": null})).await;
    assert_eq!(p.body["rate_limit_rpm"], serde_json::Value::Null);
    assert_eq!(gw.get("/v1/models", &key).await.header("x-ratelimit-limit"), Some("60"));
}

#[tokio::test]
async fn concurrent_requests_never_exceed_the_limit() {
    let gw = std::sync::Arc::new(Gateway::start().await);
    let (_, key) = gw.create_key(json!({"rate_limit_rpm": 10})).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let gw = gw.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move { gw.get("/v1/models", &key).await.status.as_u16() }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (10, 30));
}
