//! Grounded replies through HTTP: `POST /v1/knowledge/reply` and the `tokaroo.context`
//! extension of chat completions. The provider (a fake OpenAI) must receive the context in a
//! system message; the answer carries citations; billing applies as for any chat.

use serde_json::{json, Value};

use crate::{
    fakes::{openai::OpenAi, Fake},
    harness::*,
};

async fn gateway_on(fake: &Fake) -> Gateway {
    Gateway::start_with(Options::default().openai(fake)).await
}

async fn ok(gw: &Gateway, path: &str, key: &str, body: Value) -> Value {
    let r = gw.post(path, key, body.clone()).await;
    assert_eq!(r.status, 200, "{path} {body}: {}", r.text);
    r.body
}

/// The system messages the provider received in its last answer request.
fn system_text(fake: &Fake) -> String {
    let last = fake.answer_requests().pop().expect("the provider was asked");
    last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_knowledge_reply_grounds_the_answer_and_cites_its_sources() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-kr").await;
    let gw = gateway_on(&fake).await;
    let key = gw.first_key.clone().unwrap();
    ok(&gw, "/v1/memory/notes", &key, json!({"content": "The customer prefers answers in Portuguese."})).await;
    let source = ok(
        &gw,
        "/v1/sources",
        &key,
        json!({
            "name": "Refund policy", "url": "https://help.example.com/refunds",
            "content": "# Refunds\n\nRefunds are issued within 14 days of a return reaching the warehouse.",
            "content_type": "text/markdown",
        }),
    )
    .await;

    let r = gw.post("/v1/knowledge/reply", &key, json!({"query": "How long do refunds take?", "mode": "auto"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "knowledge.reply");
    assert_eq!(r.body["answer"], "Hello from the fake");
    let citation = &r.body["citations"][0];
    assert_eq!(
        (citation["index"].clone(), citation["source_id"].clone()),
        (json!(1), source["id"].clone()),
        "{:#}",
        r.body
    );
    assert_eq!(citation["url"], "https://help.example.com/refunds");
    assert!(r.body["context"]["trace_id"].as_str().unwrap().starts_with("tr_"));
    assert_eq!(r.header("x-tokaroo-context-trace"), r.body["context"]["trace_id"].as_str());
    let cost: f64 = r.header("x-tokaroo-cost").expect("billed like chat").parse().unwrap();
    assert!(cost > 0.0 && (r.body["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9);
    let system = system_text(&fake);
    assert!(system.contains("within 14 days") && system.contains("[1]"), "the provider got the passage: {system}");
    assert!(system.contains("Portuguese"), "and the memory: {system}");
    // The usage row is there, as for any chat.
    let rows = gw.get("/v1/usage?limit=5", &key).await.body["data"].as_array().unwrap().clone();
    assert!(!rows.is_empty());

    // Streamed: the context first (with citations), then the answer's chunks.
    let r = gw
        .raw(
            gw.client()
                .post(gw.url("/v1/knowledge/reply"))
                .bearer_auth(&key)
                .json(&json!({"query": "How long do refunds take?", "stream": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let first: Value =
        serde_json::from_str(r.text.split("\n\n").next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(first["x_tokaroo"]["context"]["citations"][0]["source_id"], source["id"], "{first}");
    assert_eq!(
        first["choices"][0]["delta"]["role"], "assistant",
        "the context rides on a chunk with a choice: {first}"
    );
    assert!(r.text.contains("Hello") && r.text.trim_end().ends_with("data: [DONE]"), "{}", r.text);
}

/// OpenAI clients opt in with `tokaroo: {"context": ...}` on a chat request.
#[tokio::test]
async fn chat_completions_take_context_through_the_extension_field() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-ext").await;
    let gw = gateway_on(&fake).await;
    let key = gw.first_key.clone().unwrap();
    ok(&gw, "/v1/memory/notes", &key, json!({"content": "Standups are at 09:15 in the Lisbon office."})).await;
    let body = json!({
        "model": "auto",
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "When is standup?"}],
        "tokaroo": {"context": {"max_tokens": 300}},
    });
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "chat.completion");
    assert!(r.body["tokaroo"]["context"]["used_tokens"].as_u64().unwrap() <= 300, "{:#}", r.body);
    assert_eq!(r.body["tokaroo"]["context"]["memories"].as_array().unwrap().len(), 1);
    let last = fake.answer_requests().pop().unwrap();
    let messages = last.body["messages"].as_array().unwrap();
    // The caller's own system message stays first; the context follows it.
    assert!(messages[0]["content"].as_str().unwrap().contains("terse"), "{messages:?}");
    assert!(messages[1]["content"].as_str().unwrap().contains("09:15"), "{messages:?}");
    // Without the extension nothing is added.
    gw.post(
        "/v1/chat/completions",
        &key,
        json!({"model": "auto", "messages": [{"role": "user", "content": "When is standup?"}]}),
    )
    .await;
    assert!(!system_text(&fake).contains("09:15"));

    // Streamed with the extension: the first event carries the context.
    let stream = json!({"model": "auto", "stream": true, "messages": [{"role": "user", "content": "When is standup?"}], "tokaroo": {"context": true}});
    let r = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&stream)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.starts_with("data: {") && r.text.contains("\"x_tokaroo\":{\"context\""), "{}", r.text);
    assert!(system_text(&fake).contains("09:15"));
}

#[tokio::test]
async fn grounded_replies_refuse_bad_input_and_stay_in_their_scope() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-bad").await;
    let gw = gateway_on(&fake).await;
    let key = gw.first_key.clone().unwrap();
    let cases = [
        ("/v1/knowledge/reply", json!({}), "query or messages"),
        ("/v1/knowledge/reply", json!({"query": ""}), "query"),
        ("/v1/knowledge/reply", json!({"query": "x", "messages": []}), "not both"),
        ("/v1/knowledge/reply", json!({"query": "x", "mode": "turbo"}), "mode"),
        ("/v1/knowledge/reply", json!({"query": "x", "mode": "auto", "model": "gpt-4o"}), "not both"),
        ("/v1/knowledge/reply", json!({"query": "x", "max_context_tokens": -1}), "max_tokens"),
        ("/v1/knowledge/reply", json!({"query": "x", "workspace_id": "elsewhere"}), "works in workspace"),
        (
            "/v1/chat/completions",
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}], "tokaroo": "yes"}),
            "tokaroo",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}], "tokaroo": {"ctx": {}}}),
            "tokaroo.ctx",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "auto", "messages": [{"role": "user", "content": "x"}], "tokaroo": {"context": {"colour": 1}}}),
            "colour",
        ),
    ];
    for (path, body, needle) in cases {
        let r = gw.post(path, &key, body.clone()).await;
        assert!(r.status == 400 || r.status == 403, "{path} {body}: {} {}", r.status, r.text);
        assert!(r.text.contains(needle), "{needle}: {}", r.text);
    }
    assert!(fake.answer_requests().is_empty(), "nothing bad reached the provider");
    // Another account's memory never reaches this one's prompt.
    let tenant_key = gw.neighbours().await.other_account;
    ok(&gw, "/v1/memory/notes", &key, json!({"content": "The vault combination is 31-7-22."})).await;
    let r = gw.post("/v1/knowledge/reply", &tenant_key, json!({"query": "What is the vault combination?"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!system_text(&fake).contains("31-7-22"));
    // Sessions cannot run replies (a reply is billed to a key).
    assert_eq!(gw.post("/v1/knowledge/reply", ADMIN_TOKEN, json!({"query": "x"})).await.status, 403);
}
