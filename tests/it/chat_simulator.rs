//! Chat completions end to end through the built-in simulator (no provider configured).

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn chat_answers_in_openai_shape_with_cost_and_cache_headers() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    for mode in ["auto", "fast", "max"] {
        let r = gw
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": mode, "messages": [{"role": "user", "content": "Hello!"}]}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["object"], "chat.completion");
        assert_eq!(r.body["model"], mode, "echoes the requested mode");
        assert_eq!(r.body["choices"][0]["message"]["role"], "assistant");
        assert!(r.body["choices"][0]["message"]["content"].as_str().unwrap().contains("simulat"));
        assert_eq!(r.body["choices"][0]["finish_reason"], "stop");
        assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
        assert!(r.body["usage"]["completion_tokens"].as_u64().unwrap() > 0);
        assert!(r.header("x-tokaroo-cost").unwrap().parse::<f64>().unwrap() >= 0.0);
        assert_eq!(r.header("x-tokaroo-cache"), Some("miss"));
        assert!(r.header("x-ratelimit-remaining").is_some());
    }
}

#[tokio::test]
async fn streaming_is_sse_in_openai_chunks_ending_with_done() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let req = json!({"model": "fast", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Stream please"}]});
    let r = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&req)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events: Vec<&str> =
        r.text.split("\n\n").filter(|e| !e.is_empty()).map(|e| e.strip_prefix("data: ").expect("data lines")).collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> =
        events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert!(chunks.len() >= 3, "several chunks");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(text.contains("Stream please"));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn tools_are_called_and_bad_requests_get_openai_shaped_400s() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "auto", "tools": tools, "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["choices"][0]["finish_reason"], "tool_calls");
    let call = &r.body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    let args: serde_json::Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(args.get("city").is_some());

    let cases = [
        (json!({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (json!({"model": "auto", "messages": []}), "messages"),
        (json!({"model": "auto", "temperature": 2.5, "messages": [{"role": "user", "content": "x"}]}), "temperature"),
        (json!({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}), "role"),
        (json!({"model": "auto", "messages": [{"role": "tool", "content": "x"}]}), "tool_call_id"),
        (json!({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}), "Unknown model"),
        (json!({"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}), "stream"),
        (json!({"model": "auto", "n": 2, "messages": [{"role": "user", "content": "x"}]}), "n must be 1"),
        (json!({"model": "auto", "n": -1, "messages": [{"role": "user", "content": "x"}]}), "n must be 1"),
        (json!({"model": "auto", "n": "1", "messages": [{"role": "user", "content": "x"}]}), "n must be 1"),
    ];
    for (body, needle) in cases {
        let r = gw.post("/v1/chat/completions", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
    }
    // Bodies that are not one JSON object, on both runtime routes that read raw JSON.
    for path in ["/v1/chat/completions", "/v1/embeddings"] {
        for (body, needle) in [
            ("", "empty"),
            ("{not json", "Malformed JSON"),
            ("[1,2]", "got an array"),
            ("\"text\"", "must be a JSON object"),
            (r#"{"model": "auto"} trailing"#, "Malformed JSON"),
        ] {
            let request = gw.client().post(gw.url(path)).bearer_auth(&key).header("content-type", "application/json");
            let r = gw.raw(request.body(body)).await;
            assert_eq!(r.status, 400, "{path} {body:?}: {}", r.text);
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.contains(needle), "{path} {body:?}: {message}");
        }
    }
}

#[tokio::test]
async fn every_request_records_one_usage_row_with_route_and_matching_charge() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let r = gw
        .post("/v1/chat/completions", &key, json!({"model": "max", "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    let header_cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    let stream = json!({"model": "fast", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hi"}]});
    let s = gw.raw(gw.client().post(gw.url("/v1/chat/completions")).bearer_auth(&key).json(&stream)).await;
    let usage_chunk: serde_json::Value = s
        .text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter_map(|e| serde_json::from_str(e).ok())
        .last()
        .unwrap();
    let stream_cost = usage_chunk["x_tokaroo"]["cost_usd"].as_f64().expect("the stream reports its charge");

    let rows = eventually("two usage rows", || async {
        let r = gw.get("/admin/usage", ADMIN_TOKEN).await;
        let rows = r.body["data"].as_array()?.clone();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    let (streamed, plain) = (&rows[0], &rows[1]);
    assert_eq!(plain["tier"], "max");
    assert_eq!(plain["provider"], "simulator");
    assert_eq!(plain["execution_source"], "simulator");
    assert!(plain["routing_reason"].as_str().unwrap().starts_with("max:"));
    assert!(
        (plain["charged_usd"].as_f64().unwrap() - header_cost).abs() < 1e-8,
        "x-tokaroo-cost equals the row's charge"
    );
    assert!(plain["charged_usd"].as_f64().unwrap() > 0.0, "the max route is priced");
    assert!(plain["baseline_usd"].as_f64().unwrap() >= plain["actual_cost_usd"].as_f64().unwrap());
    assert_eq!(streamed["streamed"], true);
    assert_eq!(streamed["tier"], "fast");
    assert!(streamed["output_tokens"].as_u64().unwrap() > 0, "streamed requests are never counted as zero");
    assert!((streamed["charged_usd"].as_f64().unwrap() - stream_cost).abs() < 1e-12);
    // Runtime keys never see the provider: the chat answer itself does not name it.
    assert!(!r.text.contains("gpt-") && !r.text.contains("claude") && !r.text.contains("gemini"), "{}", r.text);
}

#[tokio::test]
async fn pricing_catalog_is_public_and_the_tree_shows_subsystems() {
    let gw = Gateway::start().await;
    let r = gw.request(HttpMethod::GET, "/v1/pricing", None, None).await;
    assert_eq!(r.status, 200);
    let data = r.body["data"].as_array().unwrap();
    assert!(data.len() >= 150);
    for field in ["id", "name", "provider", "input_per_1m", "output_per_1m", "capabilities", "context_window"] {
        assert!(data[0].get(field).is_some(), "{field}");
    }
    assert!(r.body.get("researched_at").is_some());
    let tree = gw.actor_tree().await;
    for name in ["ledger", "accounts", "providers", "endpoints", "provider:simulator:builtin"] {
        assert!(find_actor(&tree, name).is_some(), "{name} in tree");
    }
    let sim = find_actor(&tree, "provider:simulator:builtin").unwrap();
    assert_eq!(sim["snapshot"]["health"]["status"], "healthy");
}

#[tokio::test]
async fn operators_add_models_to_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.json");
    std::fs::write(
        &extra,
        r#"{"models": [{"id": "acme-llm-1", "name": "Acme LLM", "provider": "openai", "input_per_1m": 1.5, "output_per_1m": 3,
            "capabilities": ["chat", "streaming"], "context_window": 32000, "quality": 60, "latency_class": "fast"}]}"#,
    )
    .unwrap();
    let gw = Gateway::start_in(
        &dir.path().join("data"),
        Options::default().env("TOKAROO_CATALOG_EXTRA", extra.to_str().unwrap()),
    )
    .await;
    let pricing = gw.request(HttpMethod::GET, "/v1/pricing", None, None).await;
    let added = pricing.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "acme-llm-1")
        .cloned()
        .expect("added model listed");
    assert_eq!(added["input_per_1m"], 1.5);
    let key = gw.first_key.clone().unwrap();
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "acme-llm-1", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["model"], "acme-llm-1", "a native name is echoed as requested");
    drop(gw);
    std::fs::write(&extra, r#"{"models": [{"id": "broken"}]}"#).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data2"))
        .env("TOKAROO_CATALOG_EXTRA", &extra)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("catalog"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_streamed_answer_sends_its_cost_as_a_trailer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let body = r#"{"model":"max","stream":true,"messages":[{"role":"user","content":"Hi"}]}"#;
    let addr = gw.base.strip_prefix("http://").unwrap();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nTE: trailers\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    socket.read_to_string(&mut raw).await.unwrap();
    assert!(raw.to_lowercase().contains("trailer: x-tokaroo-cost"), "{raw}");
    let (_, after_last_chunk) = raw.rsplit_once("\r\n0\r\n").expect("chunked body ends");
    let trailer = after_last_chunk.lines().find_map(|l| l.strip_prefix("x-tokaroo-cost: ")).expect("cost trailer");
    assert!(trailer.trim().parse::<f64>().unwrap() > 0.0);
}
