//! Issue 9: a hostile tenant against the money. Each test here failed on the code before
//! its fix.

use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use tokaroo_actors::test_support::png_data_url;

use crate::{
    fakes::{openai::OpenAi, Behavior, Fake},
    harness::*,
};

/// A gateway whose only provider is a fake OpenAI.
async fn gateway_on(fake: &Fake) -> Gateway {
    Gateway::start_with(Options::default().openai(fake)).await
}

/// A tenant funded with `usd`, and a key whose rate limit is out of the way.
async fn funded_tenant(gw: &Gateway, name: &str, usd: f64) -> (String, String, String) {
    let (account, session) = gw.create_account(name).await;
    let r = gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": usd})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"name": "k", "rate_limit_rpm": 100000})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (account, session, r.body["key"].as_str().unwrap().to_owned())
}

async fn usage_rows(gw: &Gateway, account: &str) -> Vec<Value> {
    let r = gw.get(&format!("/admin/usage?account_id={account}&limit=1000"), ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_upstream_that_reports_huge_usage_cannot_overdraw_a_prepaid_balance() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-overdraw").await;
    fake.set(Behavior::TextReporting { text: "fine", completion_tokens: 100_000 });
    let gw = gateway_on(&fake).await;
    let (account, session, key) = funded_tenant(&gw, "overdrawer", 1.0).await;

    // 100 requests without max_tokens, 50 at a time; every fourth one streamed.
    let outcomes: Vec<u16> = stream::iter(0..100)
        .map(|i| {
            let (gw, key) = (&gw, &key);
            async move {
                let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Write a novel."}]});
                if i % 4 == 0 {
                    body["stream"] = json!(true);
                    body["stream_options"] = json!({"include_usage": true});
                }
                gw.post("/v1/chat/completions", key, body).await.status.as_u16()
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let served = outcomes.iter().filter(|s| **s == 200).count();
    let refused = outcomes.iter().filter(|s| **s == 402).count();
    assert_eq!(served + refused, 100, "only answers and 402s: {outcomes:?}");
    assert!(served > 0 && refused > 0, "served {served}, refused {refused}");

    let r = gw.get("/v1/balance", &session).await;
    let balance = r.body["balance_usd"].as_f64().unwrap();
    assert!(balance >= 0.0, "the balance went below zero: {balance}");
    let rows = usage_rows(&gw, &account).await;
    assert_eq!(rows.len(), served);
    let charged: f64 = rows.iter().map(|r| r["charged_usd"].as_f64().unwrap()).sum();
    assert!((1.0 - charged - balance).abs() < 1e-6, "balance {balance} = 1.00 - charges {charged}");
    for row in &rows {
        assert_eq!(row["output_tokens"], 4096, "billed at the bound it was sent: {row}");
    }
    // The bound the hold assumed went upstream with every request.
    let upstream = fake.answer_requests();
    assert!(!upstream.is_empty());
    for req in &upstream {
        assert_eq!(req.body["max_completion_tokens"], 4096, "{}", req.body);
    }
    let r = gw.post("/admin/ledger/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.body["ok"], true, "drift: {}", r.text);
}

#[tokio::test]
async fn the_clients_own_max_tokens_is_sent_and_bounds_the_charge() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-bound").await;
    fake.set(Behavior::TextReporting { text: "fine", completion_tokens: 100_000 });
    let gw = gateway_on(&fake).await;
    let (account, _, key) = funded_tenant(&gw, "bounded", 5.0).await;
    let body = json!({"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.answer_requests()[0].body["max_completion_tokens"], 50);
    assert_eq!(usage_rows(&gw, &account).await[0]["output_tokens"], 50);
}

/// The account's only usage row, once it is there.
async fn the_row(gw: &Gateway, account: &str) -> Value {
    eventually("the request's usage row", || async {
        let rows = usage_rows(gw, account).await;
        assert!(rows.len() <= 1, "one row per request: {rows:?}");
        rows.into_iter().next()
    })
    .await
}

const LONG_ANSWER: &str = "one two three four five six seven eight nine ten eleven twelve";

#[tokio::test]
async fn a_client_that_leaves_mid_stream_pays_the_providers_final_usage() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-leaver").await;
    fake.set(Behavior::Slow { text: LONG_ANSWER, completion_tokens: 777, gap_ms: 150 });
    let gw = gateway_on(&fake).await;
    let (account, _, key) = funded_tenant(&gw, "leaver", 5.0).await;
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Count"}]});
    let mut response =
        gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    drop(response); // the client goes away mid-answer
    let row = the_row(&gw, &account).await;
    assert_eq!(row["output_tokens"], 777, "the provider's final usage, read after the client left: {row}");
    assert_eq!(row["streamed"], true);
}

#[tokio::test]
async fn a_client_that_leaves_before_the_first_chunk_still_pays_for_the_accepted_stream() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-early").await;
    fake.set(Behavior::Slow { text: LONG_ANSWER, completion_tokens: 555, gap_ms: 400 });
    let gw = gateway_on(&fake).await;
    let (account, _, key) = funded_tenant(&gw, "early-leaver", 5.0).await;
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Count"}]});
    let sent = gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(150), sent).await.is_err(), "no first chunk yet");
    let row = the_row(&gw, &account).await;
    assert_eq!(row["output_tokens"], 555, "{row}");
    assert!(row["input_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_client_that_leaves_a_non_streamed_request_still_pays_for_the_answer() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-impatient").await;
    fake.set(Behavior::Slow { text: "done", completion_tokens: 333, gap_ms: 500 });
    let gw = gateway_on(&fake).await;
    let (account, _, key) = funded_tenant(&gw, "impatient", 5.0).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Slow please"}]});
    let sent = gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send();
    assert!(tokio::time::timeout(std::time::Duration::from_millis(150), sent).await.is_err(), "still waiting");
    let row = the_row(&gw, &account).await;
    assert_eq!(row["output_tokens"], 333, "{row}");
}

#[tokio::test]
async fn an_upstreams_own_error_text_never_reaches_the_tenant() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-words").await;
    fake.set(Behavior::Status { status: 400, retry_after: None });
    let gw = gateway_on(&fake).await;
    let (_, _, key) = funded_tenant(&gw, "curious", 5.0).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]});
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text.contains("The fake was told to fail"), "upstream words leaked: {}", r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("rejected the request"), "{}", r.text);
    assert!(gw.log().contains("The fake was told to fail"), "the operator's log keeps them");
}

#[tokio::test]
async fn a_self_hosted_server_that_ignores_the_bound_is_charged_its_overage_and_the_account_stops() {
    let local = Fake::start(OpenAi { models: vec!["llama3.2"] }, "").await;
    local.set(Behavior::TextReporting { text: "a very long story", completion_tokens: 1_000_000 });
    let gw = Gateway::start_with(Options::default().env("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", "true")).await;
    let (account, session, key) = funded_tenant(&gw, "self-hoster", 0.25).await;
    let r = gw.post("/v1/local-endpoints", &session, json!({"url": local.root, "label": "box"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);

    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "Tell me a story"}]});
    let r = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(local.answer_requests()[0].body["max_tokens"], 4096, "the bound went to the self-hosted server too");
    let rows = usage_rows(&gw, &account).await;
    assert_eq!(rows[0]["output_tokens"], 1_000_000, "a self-hosted server's overage is charged: {}", rows[0]);
    assert_eq!(rows[0]["billing_mode"], "self_hosted");

    let balance = gw.get("/v1/balance", &session).await.body["balance_usd"].as_f64().unwrap();
    assert!(balance < 0.0, "the overage took the balance below zero: {balance}");
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 402, "no new requests while below zero: {}", r.text);
    let r = gw.post("/admin/ledger/reconcile", ADMIN_TOKEN, json!({})).await;
    assert_eq!(r.body["ok"], true, "drift: {}", r.text);
}

#[tokio::test]
async fn tenants_cannot_lift_their_limits_past_the_operators_caps() {
    let gw = Gateway::start_with(
        Options::default()
            .env("TOKAROO_MAX_RPM", "500")
            .env("TOKAROO_MAX_KEYS_PER_ACCOUNT", "3")
            .env("TOKAROO_MAX_WORKSPACES_PER_ACCOUNT", "3")
            .env("TOKAROO_MAX_PROVIDER_KEYS_PER_ACCOUNT", "2")
            .env("TOKAROO_MAX_ENDPOINTS_PER_ACCOUNT", "1")
            .env("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", "true"),
    )
    .await;
    let (_, session) = gw.create_account("greedy").await;

    // Rate limits: at the cap is fine, above it names the cap, on create and on update.
    let r = gw.post("/v1/keys", &session, json!({"name": "fast", "rate_limit_rpm": 501})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("rate_limit.max_rpm"), "{}", r.text);
    let r = gw.post("/v1/keys", &session, json!({"name": "ok", "rate_limit_rpm": 500})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let r = gw.patch(&format!("/v1/keys/{id}"), &session, json!({"rate_limit_rpm": 100000})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("rate_limit.max_rpm"), "{}", r.text);
    // The operator's own account is not capped.
    assert_eq!(gw.post("/v1/keys", ADMIN_TOKEN, json!({"name": "op", "rate_limit_rpm": 100000})).await.status, 200);

    // Keys: a burst of concurrent creations cannot pass the cap together (one exists).
    let statuses: Vec<u16> = stream::iter(0..10)
        .map(|i| {
            let (gw, session) = (&gw, &session);
            async move { gw.post("/v1/keys", session, json!({"name": format!("k{i}")})).await.status.as_u16() }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 8, "{statuses:?}");
    let r = gw.post("/v1/keys", &session, json!({"name": "one-more"})).await;
    assert!(r.text.contains("limits.keys_per_account"), "{}", r.text);

    for (path, bodies, setting) in [
        (
            // The account's `default` workspace counts: two more reach the cap of three.
            "/v1/workspaces",
            vec![json!({"workspace_id": "a", "name": "A"}), json!({"workspace_id": "b", "name": "B"})],
            "limits.workspaces_per_account",
        ),
        (
            "/v1/provider-keys",
            vec![
                json!({"provider": "openai", "label": "one", "secret": "sk-one-0000000000"}),
                json!({"provider": "openai", "label": "two", "secret": "sk-two-0000000000"}),
            ],
            "limits.provider_keys_per_account",
        ),
        (
            "/v1/local-endpoints",
            vec![json!({"url": "http://127.0.0.1:9/v1", "label": "one"})],
            "limits.endpoints_per_account",
        ),
    ] {
        for body in &bodies {
            let r = gw.post(path, &session, body.clone()).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
        }
        let mut extra = bodies[0].clone();
        for field in ["workspace_id", "label"] {
            if extra.get(field).is_some() {
                extra[field] = json!("extra");
            }
        }
        let r = gw.post(path, &session, extra).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text);
        assert!(r.text.contains(setting), "{path}: {}", r.text);
    }
}

#[tokio::test]
async fn a_request_that_times_out_after_the_upstream_accepted_it_pays_its_prompt() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-stall").await;
    fake.set(Behavior::StallBody);
    let gw = Gateway::start_with(
        Options::default()
            .env("OPENAI_API_KEY", &fake.key)
            .env("TOKAROO_OPENAI_BASE_URL", &format!("{}/v1", fake.root))
            .env("TOKAROO_OPENAI_TIMEOUT_SECS", "1"),
    )
    .await;
    let (account, _, key) = funded_tenant(&gw, "staller", 5.0).await;
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "A prompt the provider read"}]});
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("timeout_after_accept"), "{}", r.text);
    let rows = usage_rows(&gw, &account).await;
    assert_eq!(rows.len(), 1, "the accepted prompt is owed: {rows:?}");
    assert!(rows[0]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(rows[0]["output_tokens"], 0);
    assert!(rows[0]["charged_usd"].as_f64().unwrap() > 0.0, "{}", rows[0]);

    // A timeout before the upstream accepted anything costs nothing.
    fake.set(Behavior::Hang);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "Never read"}]});
    assert_eq!(gw.post("/v1/chat/completions", &key, body).await.status, 503);
    assert_eq!(usage_rows(&gw, &account).await.len(), 1);
}

#[tokio::test]
async fn images_are_reserved_as_the_model_bills_them() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-images").await;
    let gw = gateway_on(&fake).await;
    let (_, _, key) = funded_tenant(&gw, "painter", 0.01).await;
    let image = json!({"type": "image_url", "image_url": {"url": png_data_url(2048, 2048), "detail": "high"}});
    let ask = |model: &str, images: usize| {
        let mut content = vec![json!({"type": "text", "text": "What is in these?"})];
        content.extend(std::iter::repeat_n(image.clone(), images));
        json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": content}]})
    };
    // GPT-4o mini bills an image at ~33× GPT-4o's count: one large image is more than $0.01 there.
    let r = gw.post("/v1/chat/completions", &key, ask("gpt-4o-mini", 1)).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert!(r.body["error"]["required_usd"].as_f64().unwrap() > 0.01, "{}", r.text);
    // The image's size counts: the same request with a tiny image fits.
    let small = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "And this?"},
        {"type": "image_url", "image_url": {"url": png_data_url(64, 64), "detail": "low"}},
    ]}]});
    assert_eq!(gw.post("/v1/chat/completions", &key, small).await.status, 200);
}

#[tokio::test]
async fn a_self_hosted_stream_far_past_its_bound_is_cut_and_settled() {
    let local = Fake::start(OpenAi { models: vec!["llama3.2"] }, "").await;
    let endless: &'static str = Box::leak("word ".repeat(40_000).into_boxed_str());
    local.set(Behavior::Text(endless));
    let gw = Gateway::start_with(Options::default().env("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", "true")).await;
    let (account, session, key) = funded_tenant(&gw, "flooder", 5.0).await;
    let r = gw.post("/v1/local-endpoints", &session, json!({"url": local.root, "label": "box"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body =
        json!({"model": "auto", "stream": true, "max_tokens": 10, "messages": [{"role": "user", "content": "Go"}]});
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("output_bound_exceeded"), "the stream is cut");
    assert!(!r.text.contains("[DONE]"), "a cut answer never looks complete");
    let relayed = r.text.matches("word").count();
    assert!(relayed < 20_000, "relayed {relayed} of 40000 words for a 10-token bound");
    let row = the_row(&gw, &account).await;
    assert_eq!(row["billing_mode"], "self_hosted");
    assert!(row["output_tokens"].as_u64().unwrap() > 10_000, "what it streamed is billed: {row}");
}

#[tokio::test]
async fn shutdown_settles_a_stream_whose_client_left_before_its_last_commit() {
    let fake = Fake::start(OpenAi { models: vec![] }, "sk-fake-openai-shutdown").await;
    fake.set(Behavior::Slow { text: LONG_ANSWER, completion_tokens: 777, gap_ms: 1_000 });
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .env("OPENAI_API_KEY", &fake.key)
        .env("TOKAROO_OPENAI_BASE_URL", &format!("{}/v1", fake.root));
    let gw = Gateway::start_in(dir.path(), options.clone()).await;
    let (account, _, key) = funded_tenant(&gw, "leaver-at-shutdown", 5.0).await;
    let body = json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Count"}]});
    let mut response =
        gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body).send().await.unwrap();
    response.chunk().await.unwrap().expect("a first chunk");
    drop(response); // the upstream would go on for several more seconds
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    assert_eq!(gw.stop().await, Some(0), "a clean stop");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "the drain was cut short: {:?}", started.elapsed());
    let again = Gateway::start_in(dir.path(), options).await;
    let rows = usage_rows(&again, &account).await;
    assert_eq!(rows.len(), 1, "the abandoned stream was settled before the ledger's last commit: {rows:?}");
    assert!(rows[0]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn an_endpoint_that_leads_back_to_the_gateway_is_refused_as_a_loop() {
    // Our calls to a tenant's address carry the hop mark...
    let local = Fake::start(OpenAi { models: vec!["llama3.2"] }, "").await;
    let gw = Gateway::start_with(Options::default().env("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", "true")).await;
    let (_, session, key) = funded_tenant(&gw, "looper", 5.0).await;
    let r = gw.post("/v1/local-endpoints", &session, json!({"url": local.root, "label": "box"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = json!({"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(gw.post("/v1/chat/completions", &key, body.clone()).await.status, 200);
    let sent = local.answer_requests();
    assert_eq!(sent[0].header("x-tokaroo-hop"), Some("1"), "the outbound call is marked");
    // ...and a marked request arriving at a runtime route (through whatever proxy) is refused.
    let r = gw
        .raw(
            gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).header("x-tokaroo-hop", "1").json(&body),
        )
        .await;
    assert_eq!(r.status, 508, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "loop_detected", "{}", r.text);
}
