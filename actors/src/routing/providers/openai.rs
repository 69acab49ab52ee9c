//! OpenAI's Chat Completions wire format. Also spoken by Groq and by self-hosted
//! OpenAI-compatible servers (Ollama, vLLM, LocalAI), which differ only in small ways
//! handled here by [`ProviderKind`].

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::adapter::{insert_sampling, with_key, ChatCall, EmbedCall, HttpAdapter, KeyIn, StreamDecoder};
use super::{http, Connection, Embeddings, ProviderError, ProviderKind};
use crate::chat::{
    ChatDelta, ChatRequest, ChatResponse, ContentPart, FinishReason, Message, ResponseFormat, Role, ToolCall,
    ToolChoice, ToolDef, Usage,
};

pub struct OpenAiChat;

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn content_json(message: &Message) -> Value {
    match message.content.as_slice() {
        [] => Value::Null,
        [ContentPart::Text(text)] => Value::String(text.clone()),
        parts => Value::Array(
            parts
                .iter()
                .map(|part| match part {
                    ContentPart::Text(text) => json!({ "type": "text", "text": text }),
                    ContentPart::Image { url, detail } => {
                        let mut image = json!({ "url": url });
                        if let Some(detail) = detail {
                            image["detail"] = json!(detail);
                        }
                        json!({ "type": "image_url", "image_url": image })
                    }
                })
                .collect(),
        ),
    }
}

fn message_json(message: &Message) -> Value {
    let mut m = Map::new();
    m.insert("role".into(), json!(role(message.role)));
    m.insert("content".into(), content_json(message));
    if !message.tool_calls.is_empty() {
        let calls: Vec<Value> = message
            .tool_calls
            .iter()
            .map(
                |c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }),
            )
            .collect();
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    if let Some(id) = &message.tool_call_id {
        m.insert("tool_call_id".into(), json!(id));
    }
    if let Some(name) = &message.name {
        m.insert("name".into(), json!(name));
    }
    Value::Object(m)
}

fn tool_json(tool: &ToolDef) -> Value {
    let mut f = json!({ "name": tool.name, "parameters": tool.parameters });
    if let Some(d) = &tool.description {
        f["description"] = json!(d);
    }
    json!({ "type": "function", "function": f })
}

/// The upstream request body.
pub fn request_body(conn: &Connection, model: &str, req: &ChatRequest, max_output_tokens: u32, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(req.messages.iter().map(message_json).collect()));
    // Always bounded, so the charge stays within the hold. OpenAI and Groq deprecate
    // `max_tokens` (reasoning models refuse it); self-hosted servers mostly know only it.
    let field = if conn.provider == ProviderKind::Local { "max_tokens" } else { "max_completion_tokens" };
    body.insert(field.into(), json!(max_output_tokens));
    insert_sampling(&mut body, req, ["temperature", "top_p", "stop", "seed"]);
    if let Some(user) = &req.user {
        body.insert("user".into(), json!(user));
    }
    if !req.tools.is_empty() {
        body.insert("tools".into(), Value::Array(req.tools.iter().map(tool_json).collect()));
    }
    if let Some(choice) = &req.tool_choice {
        let v = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Function(name) => json!({ "type": "function", "function": { "name": name } }),
        };
        body.insert("tool_choice".into(), v);
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body.insert("response_format".into(), json!({ "type": "json_object" }));
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            body.insert(
                "response_format".into(),
                json!({ "type": "json_schema", "json_schema": { "name": name, "schema": schema, "strict": strict } }),
            );
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
        // Always ask for usage: billing needs it even when the client did not.
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    Value::Object(body)
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage(v: &Value) -> Option<Usage> {
    let prompt = v["prompt_tokens"].as_u64()?;
    let completion = v["completion_tokens"].as_u64().unwrap_or(0);
    // Saturating: a report past u32 (a hostile server) must not wrap into a small charge.
    let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    Some(Usage { prompt_tokens: clamp(prompt), completion_tokens: clamp(completion) })
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, ProviderError> {
    let choice = v["choices"].get(0).ok_or_else(|| ProviderError::Protocol("response has no choices".into()))?;
    let message = &choice["message"];
    let tool_calls = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| ToolCall {
                    id: c["id"].as_str().unwrap_or_default().to_owned(),
                    name: c["function"]["name"].as_str().unwrap_or_default().to_owned(),
                    arguments: c["function"]["arguments"].as_str().unwrap_or("{}").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ChatResponse {
        content: message["content"].as_str().map(str::to_owned),
        tool_calls,
        finish_reason: finish_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
        usage: usage(&v["usage"]),
    })
}

/// The deltas carried by one streamed chunk.
// One streamed chunk, read into borrowed fields: a streamed answer is many small events, and
// building a `Value` map for each costs more than the rest of the relay.
#[derive(serde::Deserialize)]
struct StreamChunk<'a> {
    error: Option<Value>,
    #[serde(borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    usage: Option<ChunkUsage>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(serde::Deserialize)]
struct ToolCallDelta<'a> {
    index: Option<u32>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(serde::Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// The deltas of one `chat.completion.chunk` event's data.
pub fn parse_chunk(data: &str) -> Result<Vec<ChatDelta>, ProviderError> {
    let chunk: StreamChunk<'_> =
        serde_json::from_str(data).map_err(|e| ProviderError::StreamBroken(format!("invalid JSON chunk: {e}")))?;
    if let Some(error) = chunk.error {
        let message = error["message"].as_str().unwrap_or("error event in stream");
        return Err(ProviderError::StreamBroken(message.to_owned()));
    }
    let mut out = Vec::new();
    if let Some(choice) = chunk.choices.and_then(|c| c.into_iter().next()) {
        if let Some(delta) = choice.delta {
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(ChatDelta::Text(text.into_owned()));
            }
            for call in delta.tool_calls.into_iter().flatten() {
                let index = call.index.unwrap_or(0);
                let function = call.function;
                let (name, arguments) = match function {
                    Some(f) => (f.name, f.arguments),
                    None => (None, None),
                };
                if let Some(id) = call.id {
                    let name = name.map(Cow::into_owned).unwrap_or_default();
                    out.push(ChatDelta::ToolCallStart { index, id: id.into_owned(), name });
                }
                if let Some(args) = arguments.filter(|a| !a.is_empty()) {
                    out.push(ChatDelta::ToolCallArguments { index, fragment: args.into_owned() });
                }
            }
        }
        if let Some(reason) = choice.finish_reason {
            out.push(ChatDelta::Finish(finish_reason(&reason)));
        }
    }
    if let Some(ChunkUsage { prompt_tokens: Some(prompt), completion_tokens }) = chunk.usage {
        let completion = completion_tokens.unwrap_or(0);
        out.push(ChatDelta::Usage(Usage { prompt_tokens: prompt as u32, completion_tokens: completion as u32 }));
    }
    Ok(out)
}

fn endpoint(conn: &Connection) -> String {
    format!("{}/chat/completions", conn.base_url.trim_end_matches('/'))
}

fn post(conn: &Connection, body: &Value) -> Result<reqwest::RequestBuilder, ProviderError> {
    Ok(with_key(conn.http.post(conn.chat_url(|| endpoint(conn))?).json(body), conn, KeyIn::Bearer))
}

/// Turns the events of one streamed answer into deltas. Pure: feed it each SSE event's data in
/// order; `data: [DONE]` ends the answer, and a body that ends without it or a finish reason
/// is broken.
#[derive(Debug, Default)]
pub struct StreamState {
    /// A chunk carried a finish reason.
    finished: bool,
    /// `[DONE]` was seen.
    done: bool,
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for StreamState {
    fn on_event(&mut self, _event_name: &str, data: &str) -> Result<Vec<ChatDelta>, ProviderError> {
        if data.trim() == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let deltas = parse_chunk(data)?;
        self.finished = self.finished || deltas.iter().any(|d| matches!(d, ChatDelta::Finish(_)));
        Ok(deltas)
    }

    fn finish(&mut self) -> Result<Vec<ChatDelta>, ProviderError> {
        if self.finished {
            Ok(Vec::new())
        } else {
            Err(ProviderError::StreamBroken("stream ended before the answer finished".into()))
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

impl HttpAdapter for OpenAiChat {
    type Decoder = StreamState;

    const PARSE_RESPONSE: fn(&Value) -> Result<ChatResponse, ProviderError> = parse_response;

    fn request(conn: &Connection, call: &ChatCall<'_>) -> Result<reqwest::RequestBuilder, ProviderError> {
        post(conn, &request_body(conn, call.model, call.req, call.max_output_tokens, call.stream))
    }
}

/// Model discovery on a self-hosted endpoint: OpenAI-style `GET {base}/models`, then Ollama's
/// `GET {root}/api/tags` (the base URL may or may not end in `/v1`).
pub async fn discover_models(conn: &Connection) -> Result<Vec<String>, ProviderError> {
    let base = conn.base_url.trim_end_matches('/');
    let with_v1 = if base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1") };
    let root = base.strip_suffix("/v1").unwrap_or(base);
    let get = |url: String| with_key(conn.http.get(url), conn, KeyIn::Bearer);
    let openai_style = async {
        let response = http::send(conn, get(format!("{with_v1}/models"))).await?;
        let v = http::json_body_capped(response, http::MAX_DISCOVERY_BODY).await?;
        let ids: Vec<String> =
            v["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str().map(str::to_owned)).collect();
        Ok::<_, ProviderError>(ids)
    };
    match openai_style.await {
        Ok(ids) if !ids.is_empty() => Ok(ids),
        first => {
            let ollama = async {
                let response = http::send(conn, get(format!("{root}/api/tags"))).await?;
                let v = http::json_body_capped(response, http::MAX_DISCOVERY_BODY).await?;
                let names: Vec<String> = v["models"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect();
                Ok::<_, ProviderError>(names)
            };
            match ollama.await {
                Ok(names) if !names.is_empty() => Ok(names),
                // Reachable but empty: report the first answer (an empty list or its error).
                _ => first,
            }
        }
    }
}

/// `POST {base}/embeddings` (OpenAI and OpenAI-compatible servers).
pub async fn embed(conn: &Connection, call: &EmbedCall<'_>) -> Result<Embeddings, ProviderError> {
    let EmbedCall { model, inputs, dims } = *call;
    let mut body = json!({ "model": model, "input": inputs, "encoding_format": "float" });
    if let Some(d) = dims {
        body["dimensions"] = json!(d);
    }
    let url = format!("{}/embeddings", conn.base_url.trim_end_matches('/'));
    let request = with_key(conn.http.post(url).json(&body), conn, KeyIn::Bearer);
    let v = http::json_body_capped(http::send(conn, request).await?, http::embeddings_cap(inputs.len())).await?;
    let mut items: Vec<(u64, Vec<f32>)> = v["data"]
        .as_array()
        .ok_or_else(|| ProviderError::Protocol("embedding response has no data".into()))?
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let vector = d["embedding"]
                .as_array()
                .map(|vals| vals.iter().filter_map(|x| x.as_f64().map(|f| f as f32)).collect())
                .unwrap_or_default();
            (d["index"].as_u64().unwrap_or(i as u64), vector)
        })
        .collect();
    items.sort_by_key(|(i, _)| *i);
    if items.len() != inputs.len() {
        return Err(ProviderError::Protocol(format!("{} embeddings for {} inputs", items.len(), inputs.len())));
    }
    Ok(Embeddings {
        vectors: items.into_iter().map(|(_, v)| v).collect(),
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().map(|t| t as u32),
    })
}

/// `POST /images/generations`. DALL·E answers base64 only when asked (its URLs expire and
/// would be fetched again); GPT Image models always answer base64 and take no
/// `response_format`.
pub async fn images(
    conn: &Connection,
    model: &str,
    call: &super::ImageCall<'_>,
) -> Result<Vec<super::GeneratedImage>, ProviderError> {
    let mut body = json!({ "model": model, "prompt": call.prompt, "n": call.n, "size": call.size });
    if let Some(quality) = call.quality {
        body["quality"] = json!(quality);
    }
    if model.starts_with("dall-e") {
        body["response_format"] = json!("b64_json");
    }
    if let Some(style) = call.style.filter(|_| model == "dall-e-3") {
        body["style"] = json!(style);
    }
    let url = format!("{}/images/generations", conn.base_url.trim_end_matches('/'));
    let request = with_key(conn.http.post(url).json(&body), conn, KeyIn::Bearer);
    let v = http::json_body_capped(http::send(conn, request).await?, super::images_cap(call.n)).await?;
    let mime = match v["output_format"].as_str() {
        Some("jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => "image/png",
    };
    v["data"]
        .as_array()
        .ok_or_else(|| ProviderError::Protocol("image response has no data".into()))?
        .iter()
        .map(|d| {
            let b64 =
                d["b64_json"].as_str().ok_or_else(|| ProviderError::Protocol("an image without b64_json".into()))?;
            super::decode_image(b64, mime, d["revised_prompt"].as_str().map(str::to_owned))
        })
        .collect()
}

/// `POST /audio/speech` (OpenAI's, and Groq's under `/openai/v1`): raw audio bytes,
/// passed on as they arrive.
pub async fn speech(
    conn: &Connection,
    model: &str,
    call: &super::SpeechCall<'_>,
) -> Result<super::ByteStream, ProviderError> {
    let mut body = json!({ "model": model, "input": call.input, "voice": call.voice, "response_format": call.format });
    if let Some(speed) = call.speed {
        body["speed"] = json!(speed);
    }
    let url = format!("{}/audio/speech", conn.base_url.trim_end_matches('/'));
    let request = with_key(conn.http.post(url).json(&body), conn, KeyIn::Bearer);
    // Only the head is bounded by the connection's timeout; then each piece of the audio.
    let response = http::open_stream(conn, request).await?;
    if !response.status().is_success() {
        return Err(http::ErrorResponse::read(response).await.into_error());
    }
    Ok(super::idle_bounded_body(response, conn.timeout))
}

/// `POST /audio/transcriptions` (OpenAI's, and Groq's under `/openai/v1`), multipart, asked
/// for `verbose_json`.
pub async fn transcribe(
    conn: &Connection,
    model: &str,
    call: &super::TranscriptionCall<'_>,
) -> Result<super::Transcript, ProviderError> {
    let file = reqwest::multipart::Part::stream(call.audio.clone())
        .file_name(call.filename.to_owned())
        .mime_str(call.content_type)
        .map_err(|e| ProviderError::Protocol(format!("the audio's content type: {e}")))?;
    let mut form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", model.to_owned())
        .text("response_format", "verbose_json");
    if let Some(language) = call.language {
        form = form.text("language", language.to_owned());
    }
    if let Some(prompt) = call.prompt {
        form = form.text("prompt", prompt.to_owned());
    }
    if let Some(t) = call.temperature {
        form = form.text("temperature", t.to_string());
    }
    let url = format!("{}/audio/transcriptions", conn.base_url.trim_end_matches('/'));
    let request = with_key(conn.http.post(url).multipart(form), conn, KeyIn::Bearer);
    let v = http::json_body(http::send(conn, request).await?).await?;
    let text = v["text"].as_str().ok_or_else(|| ProviderError::Protocol("a transcript without text".into()))?;
    let duration_secs = v["duration"]
        .as_f64()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .ok_or_else(|| ProviderError::Protocol("a transcript without its duration".into()))?;
    let segments = v["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["start"].as_f64()?, s["end"].as_f64()?, s["text"].as_str()?.trim().to_owned())))
        .collect();
    Ok(super::Transcript {
        text: text.to_owned(),
        language: v["language"].as_str().map(str::to_owned),
        duration_secs,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_chunks_parse_text_tool_calls_usage_and_nulls() {
        let text = r#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi \"there\""},"finish_reason":null}]}"#;
        assert_eq!(parse_chunk(text).unwrap(), vec![ChatDelta::Text("Hi \"there\"".into())]);
        let start = r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}"#;
        assert_eq!(
            parse_chunk(start).unwrap(),
            vec![ChatDelta::ToolCallStart { index: 1, id: "call_1".into(), name: "f".into() }]
        );
        let args = r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{\"a\":"}}]}}]}"#;
        assert_eq!(
            parse_chunk(args).unwrap(),
            vec![ChatDelta::ToolCallArguments { index: 1, fragment: "{\"a\":".into() }]
        );
        let end = r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"usage":null}"#;
        assert_eq!(parse_chunk(end).unwrap(), vec![ChatDelta::Finish(FinishReason::ToolCalls)]);
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        assert_eq!(
            parse_chunk(usage).unwrap(),
            vec![ChatDelta::Usage(Usage { prompt_tokens: 5, completion_tokens: 7 })]
        );
        assert_eq!(parse_chunk(r#"{"choices":null,"delta":null}"#).unwrap(), vec![]);
        assert!(
            matches!(parse_chunk(r#"{"error":{"message":"overloaded"}}"#), Err(ProviderError::StreamBroken(m)) if m == "overloaded")
        );
        assert!(matches!(parse_chunk("not json"), Err(ProviderError::StreamBroken(_))));
    }
}

#[cfg(test)]
mod stream_tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::routing::providers::adapter::delta_stream;
    use crate::routing::providers::adapter::testing::{self, events};

    #[tokio::test]
    async fn delta_stream_ends_at_done_and_flags_truncation() {
        let text = r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        let end = r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
        let late = Err(ProviderError::StreamBroken("late".into()));
        let complete = events(vec![Ok(("", text)), Ok(("", end)), Ok(("", usage)), Ok(("", " [DONE]")), late]);
        let usage = Usage { prompt_tokens: 2, completion_tokens: 1 };
        testing::assert_text_stop_usage(delta_stream(complete, StreamState::new()), "Hi", usage).await;
        // A finish reason without `[DONE]` is a whole answer; neither is a broken stream.
        let finished = events(vec![Ok(("", end))]);
        let out: Vec<_> = delta_stream(finished, StreamState::new()).collect().await;
        assert_eq!(out, vec![Ok(ChatDelta::Finish(FinishReason::Stop))]);
        let truncated = events(vec![Ok(("", text))]);
        testing::assert_text_then_broken(delta_stream(truncated, StreamState::new()), "Hi").await;
    }
}

#[cfg(test)]
mod usage_tests {
    use serde_json::json;

    #[test]
    fn usage_past_u32_saturates_instead_of_wrapping_into_a_small_charge() {
        let body = json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 4_294_967_297u64, "completion_tokens": 4_294_967_301u64},
        });
        let usage = super::parse_response(&body).unwrap().usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (u32::MAX, u32::MAX));
        assert_eq!(usage.total(), u32::MAX);
    }
}
