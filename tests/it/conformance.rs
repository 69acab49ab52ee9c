//! The conformance suite every provider adapter passes, driven through the gateway with
//! OpenAI-format requests against fakes that speak each provider's real wire format: text,
//! streaming, a tool round trip (plain and streamed), an image, and error mapping (401, 429
//! with retry-after, 500, timeout, a stream that breaks before its first chunk or mid-way).
//! Then routing across connections: fallback between providers, BYOK keys and self-hosted
//! endpoints.

mod media;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    fakes::{anthropic::Anthropic, gemini::Gemini, openai::OpenAi, Behavior, Fake, COMPLETION_TOKENS, PROMPT_TOKENS},
    harness::*,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Provider {
    OpenAi,
    Groq,
    Anthropic,
    Gemini,
}

impl Provider {
    /// A model of this provider with tools and vision, named directly so it is the only route.
    fn model(self) -> &'static str {
        match self {
            Self::OpenAi => "gpt-6.2-astra",
            Self::Groq => "meta-llama/llama-4-scout-17b-16e-instruct",
            Self::Anthropic => "claude-fable-5-2",
            Self::Gemini => "gemini-3.8-flash",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Groq => "groq",
            Self::Anthropic => "anthropic",
            Self::Gemini => "google",
        }
    }

    async fn fake(self) -> Fake {
        let key = format!("{}-test-key-5f2b", self.name());
        match self {
            Self::OpenAi | Self::Groq => Fake::start(OpenAi { models: vec![] }, &key).await,
            Self::Anthropic => Fake::start(Anthropic, &key).await,
            Self::Gemini => Fake::start(Gemini, &key).await,
        }
    }

    /// The environment that points the gateway at `fake` as this provider.
    fn env(self, fake: &Fake, options: Options) -> Options {
        let (key_var, url_var, url, timeout_var) = match self {
            Self::OpenAi => (
                "OPENAI_API_KEY",
                "TOKAROO_OPENAI_BASE_URL",
                format!("{}/v1", fake.root),
                "TOKAROO_OPENAI_TIMEOUT_SECS",
            ),
            Self::Groq => (
                "GROQ_API_KEY",
                "TOKAROO_GROQ_BASE_URL",
                format!("{}/openai/v1", fake.root),
                "TOKAROO_GROQ_TIMEOUT_SECS",
            ),
            Self::Anthropic => {
                ("ANTHROPIC_API_KEY", "TOKAROO_ANTHROPIC_BASE_URL", fake.root.clone(), "TOKAROO_ANTHROPIC_TIMEOUT_SECS")
            }
            Self::Gemini => {
                ("GEMINI_API_KEY", "TOKAROO_GEMINI_BASE_URL", fake.root.clone(), "TOKAROO_GEMINI_TIMEOUT_SECS")
            }
        };
        options.env(key_var, &fake.key).env(url_var, &url).env(timeout_var, "2")
    }
}

/// A gateway whose only provider is one fake.
struct Rig {
    provider: Provider,
    fake: Fake,
    gw: Gateway,
    key: String,
}

async fn rig(provider: Provider) -> Rig {
    let fake = provider.fake().await;
    let gw = Gateway::start_with(provider.env(&fake, Options::default())).await;
    let key = gw.first_key.clone().unwrap();
    Rig { provider, fake, gw, key }
}

const WEATHER_TOOL: &str = r#"[{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#;

fn tools() -> Value {
    serde_json::from_str(WEATHER_TOOL).unwrap()
}

impl Rig {
    async fn chat(&self, body: Value) -> Resp {
        self.gw.post("/v1/chat/completions", &self.key, body).await
    }

    async fn stream(&self, mut body: Value) -> (Resp, Vec<Value>) {
        body["stream"] = json!(true);
        let r = self
            .gw
            .raw(self.gw.client().post(self.gw.url("/v1/chat/completions")).bearer_auth(&self.key).json(&body))
            .await;
        let events = r
            .text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("an SSE event is JSON: {e}")))
            .collect();
        (r, events)
    }

    fn last_request(&self) -> crate::fakes::Recorded {
        self.fake.answer_requests().pop().expect("the fake was called")
    }

    async fn usage_rows(&self) -> Vec<Value> {
        let r = self.gw.get("/admin/usage", ADMIN_TOKEN).await;
        r.body["data"].as_array().unwrap().clone()
    }
}

/// The answer text of an SSE body: the chunks' `delta.content`, in order.
fn streamed_text(sse: &str) -> String {
    sse.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

fn model_body(p: Provider, messages: Value) -> Value {
    json!({ "model": p.model(), "max_tokens": 200, "messages": messages })
}

async fn text(p: Provider) {
    let rig = rig(p).await;
    let r = rig
        .chat(model_body(
            p,
            json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]),
        ))
        .await;
    assert_eq!(r.status, 200, "{p:?}: {}", r.text);
    assert_eq!(r.body["model"], p.model(), "the requested model is echoed");
    assert_eq!(r.body["choices"][0]["message"]["content"], "Hello from the fake");
    assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
    assert_eq!(r.body["usage"]["prompt_tokens"], PROMPT_TOKENS, "usage comes from the provider");
    assert_eq!(r.body["usage"]["completion_tokens"], COMPLETION_TOKENS);
    assert!(r.header("x-tokaroo-cost").unwrap().parse::<f64>().unwrap() > 0.0);
    assert!(!r.text.contains(&rig.fake.key));
    let sent = rig.last_request();
    match p {
        Provider::OpenAi | Provider::Groq => assert_eq!(sent.body["messages"][0]["role"], "system"),
        Provider::Anthropic => {
            assert!(sent.body["system"].to_string().contains("Be brief."), "top-level system: {}", sent.body);
            assert!(sent.body["messages"].as_array().unwrap().iter().all(|m| m["role"] != "system"));
        }
        Provider::Gemini => assert!(sent.body["systemInstruction"].to_string().contains("Be brief."), "{}", sent.body),
    }
    let rows = rig.usage_rows().await;
    assert_eq!(rows[0]["provider"], p.name());
    assert_eq!(rows[0]["input_tokens"], PROMPT_TOKENS);
}

async fn stream(p: Provider) {
    let rig = rig(p).await;
    let body = json!({ "model": p.model(), "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Stream"}] });
    let (r, events) = rig.stream(body).await;
    assert_eq!(r.status, 200, "{p:?}: {}", r.text);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert!(r.text.ends_with("data: [DONE]\n\n"));
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello from the fake");
    assert!(events.iter().all(|e| e["model"] == p.model()));
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"));
    let usage = &events.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], PROMPT_TOKENS, "{p:?}: {}", r.text);
    assert_eq!(usage["completion_tokens"], COMPLETION_TOKENS);
}

async fn tool_round_trip(p: Provider) {
    let rig = rig(p).await;
    rig.fake.queue([
        Behavior::ToolCall { name: "get_weather", arguments: r#"{"city":"Paris"}"# },
        Behavior::Text("Sunny, 21 C"),
    ]);
    let mut messages = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let first = rig.chat(json!({ "model": p.model(), "messages": messages, "tools": tools() })).await;
    assert_eq!(first.status, 200, "{p:?}: {}", first.text);
    let choice = &first.body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let sent_tools = rig.last_request().body.to_string();
    assert!(sent_tools.contains("get_weather") && sent_tools.contains("city"), "{p:?}: tools sent: {sent_tools}");

    let messages = messages.as_array_mut().unwrap();
    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 21}"}));
    let second = rig.chat(json!({ "model": p.model(), "messages": messages, "tools": tools() })).await;
    assert_eq!(second.status, 200, "{p:?}: the fake accepted the tool result: {}", second.text);
    assert_eq!(second.body["choices"][0]["message"]["content"], "Sunny, 21 C");
    let sent = rig.last_request().body.to_string();
    let expected = match p {
        Provider::OpenAi | Provider::Groq => "\"role\":\"tool\"",
        Provider::Anthropic => "\"tool_result\"",
        Provider::Gemini => "functionResponse",
    };
    assert!(sent.contains(expected) && sent.contains("temp_c"), "{p:?}: {sent}");
}

async fn streamed_tool_call(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::ToolCall { name: "get_weather", arguments: r#"{"city":"Oslo"}"# });
    let (r, events) = rig
        .stream(json!({ "model": p.model(), "messages": [{"role": "user", "content": "Oslo?"}], "tools": tools() }))
        .await;
    assert_eq!(r.status, 200, "{p:?}: {}", r.text);
    let mut name = String::new();
    let mut arguments = String::new();
    for e in &events {
        for call in e["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            name += call["function"]["name"].as_str().unwrap_or_default();
            arguments += call["function"]["arguments"].as_str().unwrap_or_default();
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Oslo"}), "{p:?}: {}", r.text);
    assert!(events.iter().any(|e| e["choices"][0]["finish_reason"] == "tool_calls"));
}

const PNG_BASE64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

async fn image(p: Provider) {
    let rig = rig(p).await;
    let url = format!("data:image/png;base64,{PNG_BASE64}");
    let r = rig
        .chat(json!({ "model": p.model(), "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}] }))
        .await;
    assert_eq!(r.status, 200, "{p:?}: {}", r.text);
    let sent = rig.last_request().body;
    let image = match p {
        Provider::OpenAi | Provider::Groq => sent["messages"][0]["content"][1]["image_url"]["url"].clone(),
        Provider::Anthropic => {
            let source = &sent["messages"][0]["content"][1]["source"];
            assert_eq!(source["media_type"], "image/png");
            source["data"].clone()
        }
        Provider::Gemini => {
            let inline = &sent["contents"][0]["parts"][1]["inlineData"];
            assert_eq!(inline["mimeType"], "image/png");
            inline["data"].clone()
        }
    };
    assert!(image.as_str().unwrap().ends_with(PNG_BASE64), "{p:?}: {sent}");
}

/// With one provider and nothing to fall back to, a failing upstream is a 503 in OpenAI's
/// shape that never leaks the provider's key.
async fn fails_cleanly(rig: &Rig, r: &Resp) {
    assert_eq!(r.status, 503, "{:?}: {}", rig.provider, r.text);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("No provider could serve"), "{}", r.text);
    assert!(!r.text.contains("The fake was told to fail"), "the upstream's own words stay in the log: {}", r.text);
    assert!(!r.text.contains(&rig.fake.key));
    assert!(!rig.gw.log().contains(&rig.fake.key), "the provider key is never logged");
}

async fn upstream_401(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::Status { status: 401, retry_after: None });
    let r = rig.chat(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    fails_cleanly(&rig, &r).await;
}

async fn upstream_500(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::Status { status: 500, retry_after: None });
    let r = rig.chat(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    fails_cleanly(&rig, &r).await;
}

async fn upstream_429_cools_the_connection_down(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::Status { status: 429, retry_after: Some(30) });
    let r = rig.chat(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    fails_cleanly(&rig, &r).await;
    assert_eq!(rig.fake.answer_requests().len(), 1);
    // Within the provider's retry-after, the connection is not asked again.
    let again = rig.chat(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    assert_eq!(again.status, 503, "{}", again.text);
    assert_eq!(rig.fake.answer_requests().len(), 1, "{p:?}: the cooling connection was skipped");
}

async fn upstream_timeout(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::Hang);
    let started = Instant::now();
    let r = rig.chat(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    fails_cleanly(&rig, &r).await;
    assert!(started.elapsed() < Duration::from_secs(8), "the 2 s timeout fired: {:?}", started.elapsed());
}

async fn stream_breaks_before_first_chunk(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::BreakBeforeFirstChunk);
    let (r, _) = rig.stream(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    // Nothing was sent yet, so the client gets a plain error rather than a broken stream.
    fails_cleanly(&rig, &r).await;
}

async fn stream_breaks_mid_way(p: Provider) {
    let rig = rig(p).await;
    rig.fake.set(Behavior::BreakMidStream);
    let (r, events) = rig.stream(model_body(p, json!([{"role": "user", "content": "hi"}]))).await;
    assert_eq!(r.status, 200, "{p:?}: {}", r.text);
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.starts_with("This answer"), "{p:?}: the first piece arrived: {}", r.text);
    let error = events.last().unwrap();
    assert_eq!(
        error["error"]["code"], "stream_broken",
        "{p:?}: the client is told the answer is incomplete: {}",
        r.text
    );
    assert!(!events.iter().any(|e| e["choices"][0]["finish_reason"] == "stop"), "never a clean finish");
    assert!(!r.text.contains("[DONE]"), "no end-of-answer marker after a broken stream: {}", r.text);
    let rows = rig.usage_rows().await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["output_tokens"].as_u64().unwrap() > 0, "what was streamed is charged: {}", rows[0]);
    assert!(rows[0]["charged_usd"].as_f64().unwrap() > 0.0);
}

macro_rules! conformance {
    ($($provider:ident: $variant:expr;)+) => {
        $(
            mod $provider {
                use super::*;
                const P: Provider = $variant;
                #[tokio::test] async fn text() { super::text(P).await }
                #[tokio::test] async fn stream() { super::stream(P).await }
                #[tokio::test] async fn tool_round_trip() { super::tool_round_trip(P).await }
                #[tokio::test] async fn streamed_tool_call() { super::streamed_tool_call(P).await }
                #[tokio::test] async fn image() { super::image(P).await }
                #[tokio::test] async fn upstream_401() { super::upstream_401(P).await }
                #[tokio::test] async fn upstream_500() { super::upstream_500(P).await }
                #[tokio::test] async fn upstream_429_cools_the_connection_down() { super::upstream_429_cools_the_connection_down(P).await }
                #[tokio::test] async fn upstream_timeout() { super::upstream_timeout(P).await }
                #[tokio::test] async fn stream_breaks_before_first_chunk() { super::stream_breaks_before_first_chunk(P).await }
                #[tokio::test] async fn stream_breaks_mid_way() { super::stream_breaks_mid_way(P).await }
            }
        )+
    };
}

conformance! {
    openai: Provider::OpenAi;
    groq: Provider::Groq;
    anthropic: Provider::Anthropic;
    gemini: Provider::Gemini;
}

// ---------------------------------------------------------------------------------------------
// Routing across connections.

async fn admin_rows(gw: &Gateway, account: Option<&str>) -> Vec<Value> {
    let path = match account {
        Some(a) => format!("/admin/usage?account_id={a}"),
        None => "/admin/usage".into(),
    };
    gw.get(&path, ADMIN_TOKEN).await.body["data"].as_array().unwrap().clone()
}

/// Two providers: when the preferred one fails, the next serves, and the client sees one
/// clean answer (plain and streamed).
#[tokio::test]
async fn a_failing_provider_falls_back_to_the_next_one() {
    let openai = Provider::OpenAi.fake().await;
    let anthropic = Provider::Anthropic.fake().await;
    let options = Provider::Anthropic.env(&anthropic, Provider::OpenAi.env(&openai, Options::default()));
    let gw = Gateway::start_with(options).await;
    let key = gw.first_key.clone().unwrap();
    let body = json!({"model": "max", "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]});

    // Find which provider `max` prefers, then make it fail.
    assert_eq!(gw.post("/v1/chat/completions", &key, body.clone()).await.status, 200);
    let (first, second) =
        if openai.answer_requests().len() == 1 { (&openai, &anthropic) } else { (&anthropic, &openai) };
    assert_eq!(first.answer_requests().len(), 1);
    first.set(Behavior::Status { status: 500, retry_after: None });
    second.set(Behavior::Text("Answer from the second provider"));
    let r = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["choices"][0]["message"]["content"], "Answer from the second provider");
    assert_eq!(first.answer_requests().len(), 2, "the preferred provider was tried");
    assert_eq!(second.answer_requests().len(), 1);
    let rows = admin_rows(&gw, None).await;
    assert!(rows[0]["routing_reason"].as_str().is_some_and(|r| !r.is_empty()));

    // A stream that breaks before its first chunk moves on just as invisibly.
    first.set(Behavior::BreakBeforeFirstChunk);
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let s = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&streamed)).await;
    assert_eq!(s.status, 200);
    assert!(s.text.ends_with("data: [DONE]\n\n"));
    assert!(!s.text.contains("error"), "one clean answer: {}", s.text);
    let text = streamed_text(&s.text);
    assert_eq!(text, "Answer from the second provider");
}

/// An account's own provider key is preferred for its provider, billed as BYOK, and its
/// status is kept current; another account still uses the managed key.
#[tokio::test]
async fn a_byok_key_is_preferred_billed_as_byok_and_its_health_shown() {
    let fake = Provider::OpenAi.fake().await;
    let byok_secret = "sk-byok-tenant-owned-7c1d";
    fake.accept_key(byok_secret);
    let gw = Gateway::start_with(Provider::OpenAi.env(&fake, Options::default())).await;
    let (account, session) = gw.create_account("byok-co").await;
    gw.post(&format!("/admin/accounts/{account}/credits"), ADMIN_TOKEN, json!({"amount_usd": 10})).await;
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await.body["key"].as_str().unwrap().to_owned();
    let r = gw
        .post("/v1/provider-keys", &session, json!({"provider": "openai", "label": "mine", "secret": byok_secret}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let body = json!({"model": "gpt-6.2-astra", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.answer_requests()[0].header("authorization"), Some(format!("Bearer {byok_secret}").as_str()));
    let row = admin_rows(&gw, Some(&account)).await[0].clone();
    assert_eq!(row["billing_mode"], "byok", "{row}");
    assert_eq!(row["actual_cost_usd"], 0.0, "the provider bills the account directly");
    let pricing = gw.get("/v1/pricing", &key).await;
    let model = pricing.body["data"].as_array().unwrap().iter().find(|m| m["id"] == "gpt-6.2-astra").unwrap().clone();
    let list = (PROMPT_TOKENS as f64 * model["input_per_1m"].as_f64().unwrap()
        + COMPLETION_TOKENS as f64 * model["output_per_1m"].as_f64().unwrap())
        / 1e6;
    let charged = row["charged_usd"].as_f64().unwrap();
    assert!((charged - list * 0.05).abs() < 1e-9, "BYOK pays 5% of list ({list}): {row}");
    let keys = gw.get("/v1/provider-keys", &session).await;
    let k = &keys.body["data"][0];
    assert!(k["last_success_at"].is_string(), "{k}");

    // The operator has no BYOK key: the managed key serves it.
    let op = gw.first_key.clone().unwrap();
    assert_eq!(gw.post("/v1/chat/completions", &op, body.clone()).await.status, 200);
    assert_eq!(fake.answer_requests()[1].header("authorization"), Some(format!("Bearer {}", fake.key).as_str()));

    // The BYOK key failing (401) falls back to the managed connection, and the key shows it.
    fake.queue([Behavior::Status { status: 401, retry_after: None }]);
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(fake.answer_requests()[3].header("authorization"), Some(format!("Bearer {}", fake.key).as_str()));
    let keys = gw.get("/v1/provider-keys", &session).await;
    let k = &keys.body["data"][0];
    assert!(k["last_failure_at"].is_string(), "{k}");
    assert!(k["last_failure_code"].as_str().is_some_and(|c| c.contains("401")), "{k}");
    assert!(!keys.text.contains(byok_secret));
}

/// A healthy self-hosted endpoint is preferred, charged 5% of baseline; when it fails, the
/// managed route answers.
#[tokio::test]
async fn a_self_hosted_endpoint_is_preferred_and_falls_back_to_managed() {
    let local = Fake::start(OpenAi { models: vec!["llama3.2"] }, "").await;
    local.set(Behavior::Text("Answer from the box under the desk"));
    let managed = Provider::OpenAi.fake().await;
    managed.set(Behavior::Text("Answer from the managed provider"));
    let gw = Gateway::start_with(Provider::OpenAi.env(&managed, Options::default())).await;
    let r = gw
        .post(
            "/v1/local-endpoints",
            ADMIN_TOKEN,
            json!({"url": local.root, "label": "desk", "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    let key = gw.first_key.clone().unwrap();
    let body = json!({"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]});

    let r = gw.post("/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["choices"][0]["message"]["content"], "Answer from the box under the desk");
    assert_eq!(local.answer_requests()[0].body["model"], "llama3.2");
    let row = admin_rows(&gw, None).await[0].clone();
    assert_eq!(row["execution_source"], "local_endpoint", "{row}");
    assert_eq!(row["billing_mode"], "self_hosted");
    let (charged, baseline) = (row["charged_usd"].as_f64().unwrap(), row["baseline_usd"].as_f64().unwrap());
    assert!(baseline > 0.0 && (charged - baseline * 0.05).abs() < 1e-9, "{row}");

    local.set(Behavior::Status { status: 500, retry_after: None });
    let r = gw.post("/v1/chat/completions", &key, body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["choices"][0]["message"]["content"], "Answer from the managed provider");
    assert_eq!(local.answer_requests().len(), 2, "the endpoint was tried first");
    assert_eq!(admin_rows(&gw, None).await[0]["execution_source"], "managed");
}

/// A server that reports no usage is charged from our own token count, streamed or not:
/// never zero.
#[tokio::test]
async fn answers_without_reported_usage_are_charged_from_our_own_count() {
    let rig = rig(Provider::OpenAi).await;
    rig.fake.set(Behavior::TextWithoutUsage("An answer whose usage the server never reports"));
    let body = model_body(Provider::OpenAi, json!([{"role": "user", "content": "Count these tokens yourself"}]));
    let r = rig.chat(body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body["usage"]["completion_tokens"].as_u64().unwrap() >= 8, "{}", r.text);
    let (s, events) = rig.stream(body).await;
    assert!(s.text.ends_with("data: [DONE]\n\n"));
    assert!(events.iter().any(|e| e["choices"][0]["delta"]["content"].is_string()));
    let rows = rig.usage_rows().await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert!(row["input_tokens"].as_u64().unwrap() > 0 && row["output_tokens"].as_u64().unwrap() >= 8, "{row}");
        assert!(row["charged_usd"].as_f64().unwrap() > 0.0, "{row}");
    }
}

/// A stream whose preferred provider fails before its first chunk moves to another provider,
/// not to another model of the same failed one (Groq offers several `auto` candidates).
#[tokio::test]
async fn a_stream_falls_back_to_another_provider_not_another_model_of_the_failed_one() {
    let groq = Provider::Groq.fake().await;
    let openai = Provider::OpenAi.fake().await;
    let gw = Gateway::start_with(Provider::OpenAi.env(&openai, Provider::Groq.env(&groq, Options::default()))).await;
    let key = gw.first_key.clone().unwrap();
    let body =
        json!({"model": "fast", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "hello"}]});
    let probe = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body)).await;
    assert_eq!(probe.status, 200, "{}", probe.text);
    let (first, second) = if groq.answer_requests().len() == 1 { (&groq, &openai) } else { (&openai, &groq) };
    first.set(Behavior::BreakBeforeFirstChunk);
    second.set(Behavior::Text("Served by the other provider"));
    let s = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&body)).await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert!(s.text.ends_with("data: [DONE]\n\n"), "{}", s.text);
    let text = streamed_text(&s.text);
    assert_eq!(text, "Served by the other provider");
    assert_eq!(first.answer_requests().len(), 2, "the failed provider was tried once for this request");
}

/// Many streams at once: each is gathered into few writes while the others are open (the busy
/// path of `Coalesce`), and each still arrives whole, in order, and is charged exactly once.
#[tokio::test]
async fn concurrent_streams_each_arrive_whole_and_are_charged_once() {
    const STREAMS: usize = 24;
    let rig = rig(Provider::OpenAi).await;
    let body = json!({ "model": Provider::OpenAi.model(), "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Stream"}] });
    let answers = futures_util::future::join_all((0..STREAMS).map(|_| rig.stream(body.clone()))).await;
    for (r, events) in &answers {
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.ends_with("data: [DONE]\n\n"), "{}", r.text);
        assert_eq!(r.text.matches("data: [DONE]").count(), 1, "{}", r.text);
        assert_eq!(streamed_text(&r.text), "Hello from the fake");
        assert_eq!(events.last().unwrap()["usage"]["completion_tokens"], COMPLETION_TOKENS, "{}", r.text);
    }
    let rows = rig.usage_rows().await;
    assert_eq!(rows.len(), STREAMS, "one usage row per stream");
    assert!(rows.iter().all(|row| row["streamed"] == true));
}
