//! Accounts' own connections: BYOK provider keys and self-hosted endpoints — management
//! routes, secrecy at rest and in answers, and tenant isolation.

use serde_json::json;

use crate::harness::*;

/// Every file under the data directory, concatenated (to look for leaked plaintext).
fn data_dir_bytes(gw: &Gateway) -> Vec<u8> {
    fn walk(dir: &std::path::Path, out: &mut Vec<u8>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "server.log") {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = Vec::new();
    walk(&gw.data_dir, &mut out);
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn provider_keys_are_sealed_never_returned_and_scoped_to_their_account() {
    let gw = Gateway::start().await;
    let secret = "sk-ant-super-secret-value-123456";
    let r = gw
        .post(
            "/v1/provider-keys",
            ADMIN_TOKEN,
            json!({"provider": "anthropic", "label": "my-anthropic-key", "secret": secret, "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], true);
    assert_eq!(r.body["provider"], "anthropic");
    assert_eq!(r.body["label"], "my-anthropic-key");
    assert_eq!(r.body["workspace_id"], "default");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(!r.text.contains(secret));

    let list = gw.get("/v1/provider-keys", ADMIN_TOKEN).await;
    assert!(!list.text.contains(secret) && !list.text.contains("sk-ant"), "{}", list.text);
    let row = &list.body["data"][0];
    for field in [
        "id",
        "provider",
        "label",
        "workspace_id",
        "workspace_name",
        "status",
        "last_success_at",
        "last_failure_at",
        "last_failure_code",
        "estimated_reset_at",
    ] {
        assert!(row.get(field).is_some(), "{field} in {row}");
    }
    assert_eq!(row["workspace_name"], "Default");
    assert_eq!(gw.get("/v1/provider-keys?workspace_id=other", ADMIN_TOKEN).await.body["data"], json!([]));
    assert_eq!(
        gw.get("/v1/provider-keys?workspace_id=default", ADMIN_TOKEN).await.body["data"].as_array().unwrap().len(),
        1
    );

    // Sealed at rest: the plaintext is nowhere in the data directory, and not in the log.
    let stored = data_dir_bytes(&gw);
    assert!(!contains(&stored, secret), "the secret is stored encrypted");
    assert!(!gw.log().contains(secret), "the secret is never logged");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(gw.data_dir.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The key's connection is a live actor.
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("provider:anthropic:{id}")).is_some());

    // Another account sees nothing and cannot delete it.
    let (_, other) = gw.create_account("other").await;
    assert_eq!(gw.get("/v1/provider-keys", &other).await.body["data"], json!([]));
    assert_eq!(gw.delete(&format!("/v1/provider-keys/{id}"), &other).await.status, 404);

    let del = gw.delete(&format!("/v1/provider-keys/{id}"), ADMIN_TOKEN).await;
    assert_eq!(del.body, json!({"deleted": true, "id": id}));
    assert_eq!(gw.delete(&format!("/v1/provider-keys/{id}"), ADMIN_TOKEN).await.status, 404);
    assert!(find_actor(&gw.actor_tree().await, &format!("provider:anthropic:{id}")).is_none());
}

#[tokio::test]
async fn provider_key_input_is_validated_and_runtime_keys_are_refused() {
    let gw = Gateway::start().await;
    let cases = [
        (json!({"provider": "mistral", "secret": "x"}), 400),
        (json!({"provider": "openai", "secret": "  "}), 400),
        (json!({"provider": "openai"}), 400),
        (json!({"provider": "openai", "secret": "x", "workspace_id": "nope"}), 404),
    ];
    for (body, status) in cases {
        let r = gw.post("/v1/provider-keys", ADMIN_TOKEN, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
    }
    let key = gw.first_key.clone().unwrap();
    let r = gw.post("/v1/provider-keys", &key, json!({"provider": "openai", "secret": "x"})).await;
    assert_eq!(r.status, 403);
    assert_eq!(gw.get("/v1/local-endpoints", &key).await.status, 403);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_saved_as_unreachable_with_headers_sealed() {
    let gw = Gateway::start().await;
    let header_secret = "Bearer internal-token-987654321";
    let r = gw
        .post(
            "/v1/local-endpoints",
            ADMIN_TOKEN,
            json!({"url": "http://127.0.0.1:9", "label": "home-ollama", "default_model": "llama3.2", "headers": {"Authorization": header_secret}, "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "unreachable");
    assert_eq!(r.body["has_headers"], true);
    assert!(!r.text.contains(header_secret));
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(!contains(&data_dir_bytes(&gw), header_secret), "headers are sealed at rest");

    let list = gw.get("/v1/local-endpoints", ADMIN_TOKEN).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains(header_secret));
    assert_eq!(gw.get("/v1/local-endpoints?workspace_id=elsewhere", ADMIN_TOKEN).await.body["data"], json!([]));
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}/models"), ADMIN_TOKEN).await.body["data"], json!([]));
    let re = gw.post(&format!("/v1/local-endpoints/{id}/recheck"), ADMIN_TOKEN, json!({})).await;
    assert_eq!(re.body["status"], "unreachable");
    let p =
        gw.patch(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN, json!({"label": "renamed", "headers": null})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["label"], "renamed");
    assert_eq!(p.body["has_headers"], false);
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("endpoint:{id}")).is_some(), "{tree:#}\n{}", gw.log());

    // Requests still work: they fall back to managed routing while the endpoint is down.
    let key = gw.first_key.clone().unwrap();
    let chat = gw
        .post("/v1/chat/completions", &key, json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text);

    let (_, other) = gw.create_account("other").await;
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}"), &other).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/local-endpoints/{id}"), &other).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN).await.status, 200);
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN).await.status, 404);
    assert!(find_actor(&gw.actor_tree().await, &format!("endpoint:{id}")).is_none());

    for bad in [
        json!({"url": "ftp://x"}),
        json!({"url": "not a url"}),
        json!({"url": "http://x", "headers": {"Bad Header": "v"}}),
        json!({"label": "no url"}),
    ] {
        assert_eq!(gw.post("/v1/local-endpoints", ADMIN_TOKEN, bad.clone()).await.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn embeddings_answer_in_openai_shape_and_bad_input_is_400() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let r = gw.post("/v1/embeddings", &key, json!({"input": "The quick brown fox"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["model"], "text-embedding-3-small");
    assert_eq!(r.body["data"][0]["embedding"].as_array().unwrap().len(), 1536);
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(r.header("x-tokaroo-cost").is_some());
    let r = gw.post("/v1/embeddings", &key, json!({"input": ["a", "b", "c"], "dimensions": 256})).await;
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 256);
    for (body, needle) in [
        (json!({}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": [1, 2]}), "input"),
        (json!({"input": "x", "dimensions": 0}), "dimensions"),
        (json!({"input": "x", "model": "gpt-4o"}), "not an embedding model"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
    ] {
        let r = gw.post("/v1/embeddings", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(needle), "{body}: {}", r.text);
    }
}
