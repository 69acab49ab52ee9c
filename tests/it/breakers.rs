//! Issue 9: circuit breakers count failures where they belong. A managed connection is shared
//! by every tenant, so what one tenant can cause on its own (a model the operator's account
//! lacks, a timeout its own huge request explains) never cools it down for the others, while
//! a real outage still does. The upstream's words reach the operator, never a tenant. Each
//! test here failed on the code before its fix.

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::{
    fakes::{anthropic::Anthropic, openai::OpenAi, Behavior, Fake},
    harness::*,
};

const UPSTREAM_WORDS: &str = "The fake was told to fail";

/// A gateway whose only provider is a fake OpenAI, with a short provider timeout.
async fn gateway_on(fake: &Fake) -> Gateway {
    Gateway::start_with(Options::default().openai(fake).env("TOKAROO_OPENAI_TIMEOUT_SECS", "1")).await
}

/// A tenant funded with `usd`, and its key (rate limit out of the way).
async fn funded_tenant(gw: &Gateway, name: &str, usd: f64) -> (String, String) {
    let (account, session) = gw.create_account(name).await;
    let r = gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": usd})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"name": "k", "rate_limit_rpm": 100000})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (account, r.body["key"].as_str().unwrap().to_owned())
}

fn ask(model: &str, content: &str) -> Value {
    json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": content}]})
}

/// The managed OpenAI connection's node in the actor tree.
async fn openai_node(gw: &Gateway) -> Value {
    let tree = gw.actor_tree().await;
    find_actor(&tree, "provider:openai:managed").expect("the managed connection's actor").clone()
}

#[tokio::test]
async fn a_model_the_operators_account_lacks_cools_that_model_not_the_connection() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-lacks").await;
    fake.set_for_model("gpt-4o-mini", Behavior::Status { status: 404, retry_after: None });
    let gw = gateway_on(&fake).await;
    let (_, tenant_a) = funded_tenant(&gw, "tenant-a", 5.0).await;
    let (_, tenant_b) = funded_tenant(&gw, "tenant-b", 5.0).await;

    // Tenant B asks for the missing model, far more often than the breaker's threshold.
    for _ in 0..6 {
        let r = gw.post("/v1/chat/completions", &tenant_b, ask("gpt-4o-mini", "hi")).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(!r.text.contains(UPSTREAM_WORDS), "the upstream's words stay with the operator: {}", r.text);
    }
    let asked = fake.answer_requests().len();
    assert!(asked < 6, "the missing model cooled down and was no longer asked for ({asked} calls)");

    // Tenant A's next request, another model on the same connection, is served.
    let r = gw.post("/v1/chat/completions", &tenant_a, ask("gpt-4o", "hello")).await;
    assert_eq!(r.status, 200, "tenant B's failures turned tenant A's request into: {}", r.text);
    assert_eq!(fake.answer_requests().len(), asked + 1);

    // The operator's tree shows the model's breaker open and the connection's closed.
    let node = openai_node(&gw).await;
    let snapshot = &node["snapshot"];
    assert_eq!(snapshot["health"]["status"], "healthy", "{snapshot}");
    assert_eq!(snapshot["model_health"]["gpt-4o-mini"]["status"], "cooling_down", "{snapshot}");
    assert_eq!(snapshot["model_health"]["gpt-4o-mini"]["last_failure_code"], "404", "{snapshot}");
    assert!(snapshot["model_health"].get("gpt-4o").is_none(), "{snapshot}");
    assert!(gw.log().contains(UPSTREAM_WORDS), "the operator's log keeps the upstream's words");
}

#[tokio::test]
async fn a_huge_requests_timeouts_do_not_cool_the_connection_but_small_ones_still_do() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-huge").await;
    let gw = gateway_on(&fake).await;
    let (_, tenant_a) = funded_tenant(&gw, "tenant-a", 5.0).await;
    let (_, tenant_b) = funded_tenant(&gw, "tenant-b", 50.0).await;

    // Tenant B's requests carry some 45k prompt tokens; the upstream never answers them in
    // time. Four of them (one streamed), more than the breaker's threshold.
    let huge = "hello ".repeat(45_000);
    fake.queue(std::iter::repeat_n(Behavior::Hang, 4));
    let requests = (0..4).map(|i| {
        let mut body = ask("gpt-4o", &huge);
        if i == 3 {
            body["stream"] = json!(true);
        }
        let (gw, key) = (&gw, &tenant_b);
        async move { gw.post("/v1/chat/completions", key, body).await }
    });
    for r in join_all(requests).await {
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(r.text.contains("timeout"), "the failure's code only: {}", r.text);
    }
    assert_eq!(fake.answer_requests().len(), 4);
    let node = openai_node(&gw).await;
    assert_eq!(node["snapshot"]["health"]["status"], "healthy", "{node}");
    assert_eq!(node["snapshot"]["health"]["last_failure_code"], "timeout", "noted for the operator: {node}");

    // Tenant A's next request, the same model on the same connection, is served.
    let r = gw.post("/v1/chat/completions", &tenant_a, ask("gpt-4o", "hello")).await;
    assert_eq!(r.status, 200, "tenant B's huge requests turned tenant A's request into: {}", r.text);

    // Ordinary requests timing out still say the connection is unwell: it cools down for all.
    fake.queue(std::iter::repeat_n(Behavior::Hang, 3));
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", &tenant_a, ask("gpt-4o", "hello")).await;
        assert_eq!(r.status, 503, "{}", r.text);
    }
    let asked = fake.answer_requests().len();
    let r = gw.post("/v1/chat/completions", &tenant_b, ask("gpt-4o", "hello")).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(fake.answer_requests().len(), asked, "the cooling connection was not asked");
    assert_eq!(openai_node(&gw).await["snapshot"]["health"]["status"], "cooling_down");
}

#[tokio::test]
async fn repeated_server_errors_still_cool_the_connection_for_every_tenant() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-down").await;
    fake.set(Behavior::Status { status: 500, retry_after: None });
    let gw = gateway_on(&fake).await;
    let (_, tenant_a) = funded_tenant(&gw, "tenant-a", 5.0).await;
    let (_, tenant_b) = funded_tenant(&gw, "tenant-b", 5.0).await;
    for _ in 0..3 {
        let r = gw.post("/v1/chat/completions", &tenant_b, ask("gpt-4o-mini", "hi")).await;
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(!r.text.contains(UPSTREAM_WORDS), "{}", r.text);
    }
    fake.set(Behavior::Text("fine again"));
    let r = gw.post("/v1/chat/completions", &tenant_a, ask("gpt-4o", "hello")).await;
    assert_eq!(r.status, 503, "a connection answering 500s cools down for everyone: {}", r.text);
    assert_eq!(fake.answer_requests().len(), 3, "and is not asked while it cools");
}

#[tokio::test]
async fn a_failed_routes_words_reach_admin_usage_never_the_tenant() {
    let openai = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-words").await;
    let anthropic = Fake::start(Anthropic, "sk-fake-anthropic-words").await;
    let gw = Gateway::start_with(
        Options::default()
            .env("OPENAI_API_KEY", &openai.key)
            .env("TOKAROO_OPENAI_BASE_URL", &format!("{}/v1", openai.root))
            .env("ANTHROPIC_API_KEY", &anthropic.key)
            .env("TOKAROO_ANTHROPIC_BASE_URL", &anthropic.root),
    )
    .await;
    let (account, key) = funded_tenant(&gw, "tenant", 5.0).await;
    let body = ask("max", "hello");
    // Find which provider `max` prefers, then make it fail.
    assert_eq!(gw.post("/v1/chat/completions", &key, body.clone()).await.status, 200);
    let first = if openai.answer_requests().len() == 1 { &openai } else { &anthropic };
    first.set(Behavior::Status { status: 500, retry_after: None });
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.text.contains(UPSTREAM_WORDS), "{}", r.text);

    let admin = gw.get(&format!("/admin/usage?account_id={account}"), ADMIN_TOKEN).await;
    let failed = admin.body["data"][0]["failed_attempts"].clone();
    let failed = failed.as_array().unwrap_or_else(|| panic!("{}", admin.text));
    assert_eq!(failed.len(), 1, "{}", admin.text);
    let failure = failed[0].as_str().unwrap();
    assert!(failure.contains(": 500 (") && failure.contains(UPSTREAM_WORDS), "{failure}");
    let mine = gw.get("/v1/usage", &key).await;
    assert_eq!(mine.status, 200, "{}", mine.text);
    assert!(!mine.text.contains(UPSTREAM_WORDS) && !mine.text.contains("failed_attempts"), "{}", mine.text);
}
