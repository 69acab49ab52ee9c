//! The exact response cache, through HTTP: hits, isolation between workspaces, streamed
//! replay, bypass, the usage row of a hit, clearing, and the tree's view.

use serde_json::{json, Value};

use crate::harness::*;

async fn cached_gateway() -> Gateway {
    Gateway::start_with(Options::default().env("TOKAROO_CACHE_ENABLED", "true")).await
}

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

/// The text of a streamed answer, and its chunks, checking the SSE framing.
fn sse_text(r: &Resp) -> (String, Vec<Value>) {
    assert_eq!(r.header("content-type"), Some("text/event-stream"), "{}", r.text);
    let events: Vec<&str> =
        r.text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").expect("data lines")).collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let text = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    (text, chunks)
}

async fn stream(gw: &Gateway, key: &str, body: Value) -> Resp {
    gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&body)).await
}

fn cost(r: &Resp) -> f64 {
    r.header("x-tokaroo-cost").expect("x-tokaroo-cost").parse().unwrap()
}

#[tokio::test]
async fn an_identical_request_is_answered_from_the_cache_and_charged_its_share() {
    let gw = cached_gateway().await;
    let key = gw.first_key.clone().unwrap();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Name three prime numbers."}]});
    let first = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(first.header("x-tokaroo-cache"), Some("miss"));
    let second = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(second.header("x-tokaroo-cache"), Some("hit"));
    assert_eq!(second.body["choices"][0]["message"], first.body["choices"][0]["message"]);
    assert_eq!(second.body["choices"][0]["finish_reason"], "stop");
    assert_eq!(second.body["usage"], first.body["usage"]);
    // The default policy charges a hit 10% of what it saved.
    let (paid, hit_paid) = (cost(&first), cost(&second));
    assert!(paid > 0.0 && (hit_paid - paid * 0.10).abs() < 1e-9, "first {paid}, hit {hit_paid}");
    // A changed sampling parameter is another request.
    let warmer = json!({"model": "gpt-4o", "temperature": 0.3, "messages": body["messages"]});
    assert_eq!(gw.post("/v1/chat/completions", &key, warmer).await.header("x-tokaroo-cache"), Some("miss"));

    let rows = gw.get("/v1/usage?limit=10", &key).await.body["data"].as_array().unwrap().clone();
    let hit = rows.iter().find(|r| r["cache"] == "hit").expect("the hit's usage row");
    assert_eq!(rows.iter().filter(|r| r["cache"] == "hit").count(), 1, "{rows:#?}");
    let admin = gw.get("/admin/usage?limit=10", ADMIN_TOKEN).await.body["data"].as_array().unwrap().clone();
    let admin_hit = admin.iter().find(|r| r["cache"] == "hit").expect("the hit, for the operator");
    assert_eq!(admin_hit["execution_source"], "cache", "{admin_hit}");
    assert!(admin_hit["baseline_usd"].as_f64().unwrap() > admin_hit["charged_usd"].as_f64().unwrap(), "{admin_hit}");
    assert_eq!(hit["cache"], "hit");
}

#[tokio::test]
async fn a_hit_in_one_workspace_is_never_served_to_another_streamed_or_not() {
    let gw = cached_gateway().await;
    let a = gw.first_key.clone().unwrap();
    let ws = gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "other", "name": "Other"})).await;
    assert!(ws.status.is_success(), "{}", ws.text);
    let (_, b) = gw.create_key(json!({"workspace_id": "other"})).await;
    // A funded tenant, so its request is served (and would show a leak) rather than refused.
    let (tenant_id, tenant) = gw.create_account("tenant").await;
    let credit = gw.post(&format!("/admin/accounts/{tenant_id}/credits"), ADMIN_TOKEN, json!({"amount_usd": 5})).await;
    assert!(credit.status.is_success(), "{}", credit.text);
    let tenant_key = {
        let r = gw.post("/v1/keys", &tenant, json!({"name": "k"})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["key"].as_str().unwrap().to_owned()
    };
    for streamed in [false, true] {
        let body = ask(&format!("What is the capital of Peru? ({streamed})"), streamed);
        let send = |key: String, body: Value| {
            let gw = &gw;
            async move {
                if streamed {
                    stream(gw, &key, body).await
                } else {
                    gw.post("/v1/chat/completions", &key, body).await
                }
            }
        };
        assert_eq!(send(a.clone(), body.clone()).await.header("x-tokaroo-cache"), Some("miss"));
        assert_eq!(send(a.clone(), body.clone()).await.header("x-tokaroo-cache"), Some("hit"), "same workspace");
        let other_workspace = send(b.clone(), body.clone()).await;
        assert_eq!(other_workspace.status, 200, "{}", other_workspace.text);
        assert_eq!(other_workspace.header("x-tokaroo-cache"), Some("miss"), "another workspace of the account");
        let other_account = send(tenant_key.clone(), body.clone()).await;
        assert_eq!(other_account.status, 200, "{}", other_account.text);
        assert_eq!(other_account.header("x-tokaroo-cache"), Some("miss"), "another account");
    }
}

#[tokio::test]
async fn a_streamed_answer_is_cached_and_replayed_as_the_same_sse_chunks() {
    let gw = cached_gateway().await;
    let key = gw.first_key.clone().unwrap();
    let body = json!({"model": "fast", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "Stream me a short story about a cat."}]});
    let first = stream(&gw, &key, body.clone()).await;
    assert_eq!(first.header("x-tokaroo-cache"), Some("miss"));
    let (text, _) = sse_text(&first);
    let again = stream(&gw, &key, body.clone()).await;
    assert_eq!(again.header("x-tokaroo-cache"), Some("hit"));
    let (replayed, chunks) = sse_text(&again);
    assert_eq!(replayed, text, "the same answer");
    assert!(chunks.len() >= 3, "replayed in several chunks");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks.last().unwrap();
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0, "{usage}");
    // The key ignores how the answer is delivered: the non-streamed request hits too.
    let plain = json!({"model": "fast", "messages": body["messages"]});
    let whole = gw.post("/v1/chat/completions", &key, plain).await;
    assert_eq!(whole.header("x-tokaroo-cache"), Some("hit"));
    assert_eq!(whole.body["choices"][0]["message"]["content"], text.as_str());
}

#[tokio::test]
async fn no_cache_and_skip_bypass_it_and_an_operator_can_clear_a_workspace() {
    let gw = cached_gateway().await;
    let key = gw.first_key.clone().unwrap();
    let body = ask("Define entropy in one sentence.", false);
    gw.post("/v1/chat/completions", &key, body.clone()).await;
    for (header, value) in
        [("cache-control", "no-cache"), ("x-tokaroo-cache", "skip"), ("cache-control", "max-age=0, no-store")]
    {
        let r = gw
            .raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).header(header, value).json(&body))
            .await;
        assert_eq!(r.header("x-tokaroo-cache"), Some("miss"), "{header}: {value}");
    }
    assert_eq!(gw.post("/v1/chat/completions", &key, body.clone()).await.header("x-tokaroo-cache"), Some("hit"));

    let tree = gw.actor_tree().await;
    let cache = find_actor(&tree, "cache").expect("the cache in the tree");
    let snapshot = &cache["snapshot"];
    assert_eq!(snapshot["entries"], 1, "{snapshot}");
    assert!(snapshot["hits"].as_u64().unwrap() >= 1 && snapshot["hit_rate"].as_f64().unwrap() > 0.0, "{snapshot}");
    assert!(find_actor(cache, "task:cache-sweep").is_some());

    // Only the operator clears; a tenant's session is refused.
    let (_, tenant) = gw.create_account("tenant").await;
    assert_eq!(gw.delete("/admin/cache?workspace_id=default", &tenant).await.status, 403);
    let other = gw.delete("/admin/cache?workspace_id=other", ADMIN_TOKEN).await;
    assert_eq!((other.status.as_u16(), other.body["removed"].clone()), (200, json!(0)), "{}", other.text);
    let cleared = gw.delete("/admin/cache?workspace_id=default", ADMIN_TOKEN).await;
    assert_eq!((cleared.status.as_u16(), cleared.body["removed"].clone()), (200, json!(1)), "{}", cleared.text);
    assert_eq!(gw.post("/v1/chat/completions", &key, body).await.header("x-tokaroo-cache"), Some("miss"));
    assert_eq!(gw.delete("/admin/cache?nope=1", ADMIN_TOKEN).await.status, 400);
}

#[tokio::test]
async fn answers_with_tool_calls_are_not_cached_and_hits_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().env("TOKAROO_CACHE_ENABLED", "true");
    let gw = Gateway::start_in(dir.path(), options.clone()).await;
    let key = gw.first_key.clone().unwrap();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let with_tools =
        json!({"model": "auto", "tools": tools, "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    for _ in 0..2 {
        let r = gw.post("/v1/chat/completions", &key, with_tools.clone()).await;
        assert_eq!(r.body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(r.header("x-tokaroo-cache"), Some("miss"), "a tool call is never replayed");
    }
    let body = ask("What is the boiling point of water at sea level?", false);
    assert_eq!(gw.post("/v1/chat/completions", &key, body.clone()).await.header("x-tokaroo-cache"), Some("miss"));
    assert_eq!(gw.stop().await, Some(0));
    let gw = Gateway::start_in(dir.path(), options).await;
    let key = gw.first_key.clone().unwrap_or(key);
    assert_eq!(gw.post("/v1/chat/completions", &key, body).await.header("x-tokaroo-cache"), Some("hit"));
}
