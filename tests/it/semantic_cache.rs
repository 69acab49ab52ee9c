//! The semantic cache through HTTP, on the real embedding model: a paraphrase is answered from
//! the cache and a near miss is not; only with the same system prompt and tools; never across
//! workspaces or accounts, streamed or not; entries survive a restart; the tree shows them.

use serde_json::{json, Value};

use crate::harness::*;

/// The cache on, and a patient wait for vectors: a debug build on a busy 2-core machine may
/// take longer than the default 200 ms to embed, which would turn a hit into a miss.
fn cached() -> Options {
    Options::default().env("TOKAROO_CACHE_ENABLED", "true").env("TOKAROO_CACHE_SEMANTIC_WAIT_MS", "20000")
}

async fn cached_gateway() -> Gateway {
    Gateway::start_with(cached()).await
}

fn ask(text: &str, stream: bool) -> Value {
    json!({"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

async fn send(gw: &Gateway, key: &str, body: Value) -> Resp {
    if body["stream"] == true {
        gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(key).json(&body)).await
    } else {
        gw.post("/v1/chat/completions", key, body).await
    }
}

async fn cache_header(gw: &Gateway, key: &str, body: Value) -> String {
    let r = send(gw, key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.header("x-tokaroo-cache").expect("x-tokaroo-cache").to_owned()
}

fn streamed_text(r: &Resp) -> String {
    assert_eq!(r.header("content-type"), Some("text/event-stream"), "{}", r.text);
    r.text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

async fn semantic_snapshot(gw: &Gateway) -> Value {
    let tree = gw.actor_tree().await;
    find_actor(&tree, "cache").expect("the cache in the tree")["snapshot"]["semantic"].clone()
}

#[tokio::test]
async fn a_paraphrase_is_answered_from_the_cache_and_near_misses_are_not() {
    let gw = cached_gateway().await;
    let key = gw.first_key.clone().unwrap();
    // A priced model, so the hit's charge and saving are not zero.
    let priced = |text: &str| json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]});
    let first = gw.post("/v1/chat/completions", &key, priced("How do I reverse a list in Python?")).await;
    assert_eq!(first.header("x-tokaroo-cache"), Some("miss"), "{}", first.text);
    let savings = |stats: &Value| stats["savings_usd"].as_f64().expect("savings_usd");
    let before = gw.get("/v1/stats", &key).await.body;
    let paraphrase = gw.post("/v1/chat/completions", &key, priced("How can I reverse a Python list?")).await;
    assert_eq!(paraphrase.header("x-tokaroo-cache"), Some("hit"), "{}", paraphrase.text);
    // The hit is charged a share of the answer's cost; the rest of its baseline is saved.
    let paid: f64 = first.header("x-tokaroo-cost").unwrap().parse().unwrap();
    let hit_paid: f64 = paraphrase.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert!(hit_paid > 0.0 && hit_paid < paid, "first {paid}, hit {hit_paid}");
    let after = gw.get("/v1/stats", &key).await.body;
    assert!(savings(&after) - savings(&before) >= paid - hit_paid - 1e-9, "{before}\n{after}");
    assert_eq!(paraphrase.body["choices"][0]["message"], first.body["choices"][0]["message"]);
    let rows = gw.get("/admin/usage?limit=5", ADMIN_TOKEN).await.body["data"].as_array().unwrap().clone();
    assert_eq!(rows[0]["execution_source"], "cache", "{:#?}", rows[0]);
    let reason = rows[0]["routing_reason"].as_str().unwrap();
    assert!(reason.starts_with("semantic cache hit (similarity 0."), "{reason}");

    gw.post("/v1/chat/completions", &key, ask("Convert 30 USD to EUR.", false)).await;
    for near_miss in [
        "How do I reverse a list in Rust?",
        "How do I sort a list in Python?",
        "Convert 50 USD to EUR.",
        "Convert 30 EUR to USD.",
        "Convert 30 USD to GBP.",
    ] {
        assert_eq!(cache_header(&gw, &key, ask(near_miss, false)).await, "miss", "{near_miss}");
    }
    // Everything but the last user message must be identical: another system prompt misses.
    let with_system = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "How can I reverse a Python list?"}]});
    assert_eq!(cache_header(&gw, &key, with_system).await, "miss");
    let semantic = semantic_snapshot(&gw).await;
    assert_eq!(semantic["embedder"], "neural:all-MiniLM-L6-v2:384", "{semantic}");
    assert!(semantic["hits"].as_u64().unwrap() >= 1, "{semantic}");
    assert!(semantic["refused_by_guards"].as_u64().unwrap() >= 1, "{semantic}");
}

/// A key of a new funded tenant account, so its request is served (and would show a leak).
async fn tenant_key(gw: &Gateway, name: &str) -> String {
    let (tenant_id, tenant) = gw.create_account(name).await;
    let credit = gw.post(&format!("/admin/accounts/{tenant_id}/credits"), ADMIN_TOKEN, json!({"amount_usd": 5})).await;
    assert!(credit.status.is_success(), "{}", credit.text);
    let r = gw.post("/v1/keys", &tenant, json!({"name": "k"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["key"].as_str().unwrap().to_owned()
}

async fn workspace_key(gw: &Gateway, slug: &str) -> String {
    let ws = gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": slug, "name": slug})).await;
    assert!(ws.status.is_success(), "{}", ws.text);
    gw.create_key(json!({"workspace_id": slug})).await.1
}

#[tokio::test]
async fn a_semantic_hit_never_crosses_a_workspace_or_an_account_streamed_or_not() {
    let gw = cached_gateway().await;
    let a = gw.first_key.clone().unwrap();
    let cached = gw.post("/v1/chat/completions", &a, ask("How do I check disk usage in Linux?", false)).await;
    assert_eq!(cached.header("x-tokaroo-cache"), Some("miss"));
    let paraphrase = "What command shows disk usage on Linux?";
    // Each asker is fresh: a miss stores the asker's own answer, which it may then reuse.
    let askers = [
        ("another workspace", workspace_key(&gw, "other").await, false),
        ("another workspace, streamed", workspace_key(&gw, "third").await, true),
        ("another account", tenant_key(&gw, "tenant-1").await, false),
        ("another account, streamed", tenant_key(&gw, "tenant-2").await, true),
    ];
    for (who, key, streamed) in &askers {
        assert_eq!(cache_header(&gw, key, ask(paraphrase, *streamed)).await, "miss", "{who}");
    }
    // In its own workspace the paraphrase hits, replayed as SSE when streamed.
    let streamed = send(&gw, &a, ask(paraphrase, true)).await;
    assert_eq!(streamed.header("x-tokaroo-cache"), Some("hit"), "{}", streamed.text);
    assert_eq!(streamed_text(&streamed), cached.body["choices"][0]["message"]["content"].as_str().unwrap());
    assert_eq!(cache_header(&gw, &a, ask(paraphrase, false)).await, "hit");
}

#[tokio::test]
async fn semantic_entries_survive_a_restart_and_an_operator_can_clear_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = cached();
    let gw = Gateway::start_in(dir.path(), options.clone()).await;
    let key = gw.first_key.clone().unwrap();
    let cached = gw.post("/v1/chat/completions", &key, ask("What is the capital of Canada?", true)).await;
    assert_eq!(cached.header("x-tokaroo-cache"), Some("miss"));
    assert_eq!(semantic_snapshot(&gw).await["entries"], 1);
    assert_eq!(gw.stop().await, Some(0));

    let gw = Gateway::start_in(dir.path(), options).await;
    let key = gw.first_key.clone().unwrap_or(key);
    // The graph is rebuilt from disk by `task:semantic-load`, off the request path.
    let mut entries = Value::Null;
    for _ in 0..100 {
        entries = semantic_snapshot(&gw).await["entries"].clone();
        if entries == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(entries, 1, "the entry is indexed again after the restart");
    assert_eq!(cache_header(&gw, &key, ask("Which city is the capital of Canada?", false)).await, "hit");
    let cleared = gw.delete("/admin/cache?workspace_id=default", ADMIN_TOKEN).await;
    assert_eq!(cleared.status, 200, "{}", cleared.text);
    assert_eq!(semantic_snapshot(&gw).await["entries"], 0);
    assert_eq!(cache_header(&gw, &key, ask("Which city is the capital of Canada?", false)).await, "miss");
}

#[tokio::test]
async fn the_lexical_fallback_never_answers_by_similarity() {
    let missing = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with(
        Options::default()
            .env("TOKAROO_CACHE_ENABLED", "true")
            .env("TOKAROO_EMBED_MODEL_DIR", missing.path().join("none").to_str().unwrap())
            .env("TOKAROO_EMBED_AUTO_PULL", "false"),
    )
    .await;
    let key = gw.first_key.clone().unwrap();
    assert_eq!(cache_header(&gw, &key, ask("How do I reverse a list in Python?", false)).await, "miss");
    assert_eq!(cache_header(&gw, &key, ask("How can I reverse a Python list?", false)).await, "miss");
    assert_eq!(cache_header(&gw, &key, ask("How do I reverse a list in Python?", false)).await, "hit", "exact still");
    assert_eq!(semantic_snapshot(&gw).await, Value::Null, "no semantic cache under the lexical embedder");
}
