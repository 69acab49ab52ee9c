//! Anthropic's Messages API wire format (`POST {base}/v1/messages`).
//!
//! Differences from the neutral shape handled here: the system prompt is a top-level field,
//! `max_tokens` is required, roles must alternate (consecutive turns are merged, tool results
//! travel as `tool_result` blocks in a user turn), tool arguments are JSON objects rather than
//! JSON text, and there is no JSON mode (the instruction goes into the system prompt).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::adapter::{parse_data_url, with_key, ChatCall, HttpAdapter, KeyIn, StreamDecoder};
use super::{Connection, ProviderError};
use crate::chat::{
    ChatDelta, ChatRequest, ChatResponse, ContentPart, FinishReason, Message, ResponseFormat, Role, ToolCall,
    ToolChoice, ToolDef, Usage,
};

pub struct AnthropicChat;

/// The API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";

fn image_block(url: &str) -> Value {
    match parse_data_url(url) {
        Some((media_type, data)) => {
            json!({ "type": "image", "source": { "type": "base64", "media_type": media_type, "data": data } })
        }
        None => json!({ "type": "image", "source": { "type": "url", "url": url } }),
    }
}

/// Anthropic accepts tool-use ids matching `^[a-zA-Z0-9_-]+$`; ids minted by other providers
/// are mapped onto that alphabet (the same way for the call and its result).
fn tool_use_id(id: &str) -> String {
    let cleaned: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect();
    if cleaned.is_empty() {
        "toolu_unknown".into()
    } else {
        cleaned
    }
}

fn content_blocks(message: &Message) -> Vec<Value> {
    let mut blocks = Vec::new();
    for part in &message.content {
        match part {
            // Anthropic refuses empty text blocks.
            ContentPart::Text(text) if text.is_empty() => {}
            ContentPart::Text(text) => blocks.push(json!({ "type": "text", "text": text })),
            ContentPart::Image { url, .. } => blocks.push(image_block(url)),
        }
    }
    blocks
}

fn message_blocks(message: &Message) -> Vec<Value> {
    match message.role {
        Role::Tool => {
            let id = message.tool_call_id.as_deref().unwrap_or_default();
            vec![json!({ "type": "tool_result", "tool_use_id": tool_use_id(id), "content": message.joined_text() })]
        }
        Role::Assistant => {
            let mut blocks = content_blocks(message);
            for call in &message.tool_calls {
                let input = match serde_json::from_str::<Value>(&call.arguments) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => json!({}),
                };
                blocks.push(
                    json!({ "type": "tool_use", "id": tool_use_id(&call.id), "name": call.name, "input": input }),
                );
            }
            blocks
        }
        Role::User | Role::System => content_blocks(message),
    }
}

/// The conversation as Anthropic `messages`: system turns left out, tool turns as user turns,
/// consecutive same-role turns merged into one, `tool_result` blocks first in their turn.
fn messages_json(messages: &[Message]) -> Vec<Value> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let role = match message.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "assistant",
        };
        let blocks = message_blocks(message);
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, mut blocks)| {
            // Stable: tool results keep their order, and text that followed them stays after.
            blocks.sort_by_key(|b| b["type"] != "tool_result");
            json!({ "role": role, "content": blocks })
        })
        .collect()
}

fn json_instruction(format: &ResponseFormat) -> Option<String> {
    match format {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(
            "Respond with only a single valid JSON object. Do not wrap it in code fences or add any text before \
             or after it."
                .into(),
        ),
        ResponseFormat::JsonSchema { name, schema, .. } => Some(format!(
            "Respond with only a single valid JSON object that conforms to the JSON Schema named \"{name}\" below. \
             Do not wrap it in code fences or add any text before or after it.\n\nSchema:\n{schema}"
        )),
    }
}

fn tool_json(tool: &ToolDef) -> Value {
    let mut json = json!({ "name": tool.name, "input_schema": tool.parameters });
    if !tool.parameters.is_object() {
        json["input_schema"] = json!({ "type": "object", "properties": {} });
    }
    if let Some(d) = &tool.description {
        json["description"] = json!(d);
    }
    json
}

/// The upstream request body.
pub fn request_body(model: &str, req: &ChatRequest, max_output_tokens: u32, stream: bool) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("max_tokens".into(), json!(max_output_tokens));
    let mut system: Vec<String> = Vec::new();
    if let Some(text) = req.system_text() {
        if !text.is_empty() {
            system.push(text);
        }
    }
    if let Some(instruction) = req.response_format.as_ref().and_then(json_instruction) {
        system.push(instruction);
    }
    if !system.is_empty() {
        body.insert("system".into(), json!(system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages_json(&req.messages)));
    if let Some(t) = req.temperature {
        // Anthropic's range is 0..=1 (OpenAI's is 0..=2).
        body.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = req.top_p {
        // Current Claude models refuse `temperature` and `top_p` together; temperature wins.
        if req.temperature.is_none() {
            body.insert("top_p".into(), json!(p));
        }
    }
    if !req.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(user) = &req.user {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    if !req.tools.is_empty() {
        body.insert("tools".into(), Value::Array(req.tools.iter().map(tool_json).collect()));
        if let Some(choice) = &req.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!({ "type": "auto" }),
                ToolChoice::None => json!({ "type": "none" }),
                ToolChoice::Required => json!({ "type": "any" }),
                ToolChoice::Function(name) => json!({ "type": "tool", "name": name }),
            };
            body.insert("tool_choice".into(), v);
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    Value::Object(body)
}

fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn
        _ => FinishReason::Stop,
    }
}

fn to_u32(n: u64) -> u32 {
    n.min(u64::from(u32::MAX)) as u32
}

/// Input tokens including prompt-cache reads and writes, when the usage object reports them.
fn prompt_tokens(usage: &Value) -> Option<u32> {
    let input = usage["input_tokens"].as_u64()?;
    let total = input
        + usage["cache_read_input_tokens"].as_u64().unwrap_or(0)
        + usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    Some(to_u32(total))
}

fn usage(v: &Value) -> Option<Usage> {
    let prompt = prompt_tokens(v)?;
    Some(Usage { prompt_tokens: prompt, completion_tokens: to_u32(v["output_tokens"].as_u64().unwrap_or(0)) })
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, ProviderError> {
    if v["type"] == "error" {
        let message = v["error"]["message"].as_str().unwrap_or("error response");
        return Err(ProviderError::Protocol(message.to_owned()));
    }
    let blocks = v["content"].as_array().ok_or_else(|| ProviderError::Protocol("response has no content".into()))?;
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block["type"].as_str() {
            Some("text") => {
                let t = block["text"].as_str().unwrap_or_default();
                text.get_or_insert_with(String::new).push_str(t);
            }
            Some("tool_use") => tool_calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().to_owned(),
                name: block["name"].as_str().unwrap_or_default().to_owned(),
                arguments: if block["input"].is_null() { "{}".into() } else { block["input"].to_string() },
            }),
            // thinking, redacted_thinking, server tool blocks: not part of the neutral answer.
            _ => {}
        }
    }
    let finish_reason = match v["stop_reason"].as_str() {
        Some(reason) => finish_reason(reason),
        None if !tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    Ok(ChatResponse { content: text, tool_calls, finish_reason, usage: usage(&v["usage"]) })
}

/// Turns the events of one streamed answer into deltas. Pure: feed it each SSE event's name and
/// data in order; after the body ends, [`StreamState::finish`] judges whether it ended properly.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Content block index → tool call index (among this answer's `tool_use` blocks).
    tools: HashMap<u64, u32>,
    /// Tool calls (by tool index) that have received at least one argument fragment.
    tools_with_args: Vec<u32>,
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
    usage_sent: bool,
    stopped: bool,
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }

    fn take_usage(&mut self) -> Option<ChatDelta> {
        if self.usage_sent || (self.prompt_tokens.is_none() && self.completion_tokens.is_none()) {
            return None;
        }
        self.usage_sent = true;
        Some(ChatDelta::Usage(Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
        }))
    }
}

impl StreamDecoder for StreamState {
    /// The deltas carried by one SSE event. `event_name` is the SSE `event:` field; the JSON
    /// `type` inside `data` takes precedence when present.
    fn on_event(&mut self, event_name: &str, data: &str) -> Result<Vec<ChatDelta>, ProviderError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::StreamBroken(format!("invalid JSON in {event_name} event: {e}")))?;
        let kind = v["type"].as_str().unwrap_or(event_name);
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let u = &v["message"]["usage"];
                if let Some(p) = prompt_tokens(u) {
                    self.prompt_tokens = Some(p);
                }
                if let Some(c) = u["output_tokens"].as_u64() {
                    self.completion_tokens = Some(to_u32(c));
                }
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ChatDelta::Text(t.to_owned()));
                        }
                    }
                    Some("tool_use") => {
                        let tool_index = self.tools.len() as u32;
                        self.tools.insert(index, tool_index);
                        out.push(ChatDelta::ToolCallStart {
                            index: tool_index,
                            id: block["id"].as_str().unwrap_or_default().to_owned(),
                            name: block["name"].as_str().unwrap_or_default().to_owned(),
                        });
                        // The start block carries `input: {}`; the arguments arrive as deltas.
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        if let Some(t) = delta["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ChatDelta::Text(t.to_owned()));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = delta["partial_json"].as_str().unwrap_or_default();
                        if let (Some(&tool_index), false) = (self.tools.get(&index), fragment.is_empty()) {
                            if !self.tools_with_args.contains(&tool_index) {
                                self.tools_with_args.push(tool_index);
                            }
                            out.push(ChatDelta::ToolCallArguments { index: tool_index, fragment: fragment.to_owned() });
                        }
                    }
                    // thinking_delta, signature_delta, citations_delta: not part of the answer.
                    _ => {}
                }
            }
            "content_block_stop" => {
                // A tool called without arguments streams no fragment; its arguments are `{}`.
                let index = v["index"].as_u64().unwrap_or(0);
                if let Some(&tool_index) = self.tools.get(&index) {
                    if !self.tools_with_args.contains(&tool_index) {
                        self.tools_with_args.push(tool_index);
                        out.push(ChatDelta::ToolCallArguments { index: tool_index, fragment: "{}".into() });
                    }
                }
            }
            "message_delta" => {
                let u = &v["usage"];
                if let Some(p) = prompt_tokens(u) {
                    self.prompt_tokens = Some(p);
                }
                if let Some(c) = u["output_tokens"].as_u64() {
                    // Cumulative: the final count of output tokens.
                    self.completion_tokens = Some(to_u32(c));
                }
                if let Some(reason) = v["delta"]["stop_reason"].as_str() {
                    out.push(ChatDelta::Finish(finish_reason(reason)));
                }
            }
            "message_stop" => {
                self.stopped = true;
                out.extend(self.take_usage());
            }
            "error" => {
                let message = v["error"]["message"].as_str().unwrap_or("error event in stream");
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                return Err(ProviderError::StreamBroken(format!("{kind}: {message}")));
            }
            // ping and event types added later.
            _ => {}
        }
        Ok(out)
    }

    /// Called when the body ends: a stream without `message_stop` is broken.
    fn finish(&mut self) -> Result<Vec<ChatDelta>, ProviderError> {
        if self.stopped {
            Ok(self.take_usage().into_iter().collect())
        } else {
            Err(ProviderError::StreamBroken("stream ended before message_stop".into()))
        }
    }

    /// `message_stop` was seen: the answer is complete.
    fn is_done(&self) -> bool {
        self.stopped
    }
}

fn endpoint(conn: &Connection) -> String {
    let base = conn.base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

fn post(conn: &Connection, body: &Value) -> reqwest::RequestBuilder {
    let request = conn.http.post(endpoint(conn)).header("anthropic-version", API_VERSION).json(body);
    with_key(request, conn, KeyIn::Header("x-api-key"))
}

impl HttpAdapter for AnthropicChat {
    type Decoder = StreamState;

    const PARSE_RESPONSE: fn(&Value) -> Result<ChatResponse, ProviderError> = parse_response;

    fn request(conn: &Connection, call: &ChatCall<'_>) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(post(conn, &request_body(call.model, call.req, call.max_output_tokens, call.stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolDef;
    use crate::routing::providers::adapter::delta_stream;
    use crate::routing::providers::adapter::testing::{
        self, assistant_calls, connection, conversation, events, request, tool_result, user_parts,
    };

    #[test]
    fn system_messages_are_hoisted_and_max_tokens_defaults() {
        let req = conversation(&[(Role::System, "Be brief."), (Role::User, "Hi"), (Role::System, "Be kind.")]);
        let body = request_body("claude-x", &req, 4096, false);
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["system"], "Be brief.\n\nBe kind.");
        assert_eq!(body["max_tokens"], 4096);
        assert_eq!(body["messages"], json!([{ "role": "user", "content": [{ "type": "text", "text": "Hi" }] }]));
        assert!(body.get("stream").is_none());
        assert!(body.get("tools").is_none());

        let mut req = req;
        req.max_tokens = Some(100);
        assert_eq!(request_body("m", &req, 100, true)["max_tokens"], 100);
        assert_eq!(request_body("m", &req, 100, true)["stream"], true);
    }

    #[test]
    fn images_become_base64_or_url_sources() {
        let msg = user_parts(vec![
            ContentPart::Text("What is this?".into()),
            ContentPart::Image { url: "data:image/png;base64,AAAA".into(), detail: None },
            ContentPart::Image { url: "https://example.com/cat.jpg".into(), detail: Some("high".into()) },
        ]);
        let body = request_body("m", &request(vec![msg]), 4096, false);
        assert_eq!(
            body["messages"][0]["content"],
            json!([
                { "type": "text", "text": "What is this?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "AAAA" } },
                { "type": "image", "source": { "type": "url", "url": "https://example.com/cat.jpg" } },
            ])
        );
    }

    #[test]
    fn tool_round_trip_merges_results_into_one_user_turn() {
        let req = request(vec![
            Message::text(Role::User, "Weather in Paris and Rome?"),
            assistant_calls(vec![
                ToolCall { id: "call_1".into(), name: "weather".into(), arguments: r#"{"city":"Paris"}"#.into() },
                ToolCall { id: "call.2".into(), name: "weather".into(), arguments: "not json".into() },
            ]),
            tool_result("call_1", "sunny"),
            tool_result("call.2", "rainy"),
            Message::text(Role::User, "Thanks, and tomorrow?"),
        ]);
        let body = request_body("m", &req, 4096, false);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(
            messages[1],
            json!({ "role": "assistant", "content": [
                { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
                { "type": "tool_use", "id": "call_2", "name": "weather", "input": {} },
            ]})
        );
        assert_eq!(
            messages[2],
            json!({ "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "call_1", "content": "sunny" },
                { "type": "tool_result", "tool_use_id": "call_2", "content": "rainy" },
                { "type": "text", "text": "Thanks, and tomorrow?" },
            ]})
        );
    }

    #[test]
    fn consecutive_same_role_messages_merge_and_empty_ones_drop() {
        let req = conversation(&[
            (Role::User, "one"),
            (Role::User, "two"),
            (Role::Assistant, ""),
            (Role::Assistant, "three"),
            (Role::Assistant, "four"),
        ]);
        let body = request_body("m", &req, 4096, false);
        assert_eq!(
            body["messages"],
            json!([
                { "role": "user", "content": [{ "type": "text", "text": "one" }, { "type": "text", "text": "two" }] },
                { "role": "assistant", "content": [{ "type": "text", "text": "three" }, { "type": "text", "text": "four" }] },
            ])
        );
    }

    #[test]
    fn tools_and_tool_choice() {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.tools = vec![ToolDef {
            name: "lookup".into(),
            description: Some("Looks things up".into()),
            parameters: json!({ "type": "object", "properties": { "q": { "type": "string" } } }),
        }];
        let cases = [
            (ToolChoice::Auto, json!({ "type": "auto" })),
            (ToolChoice::Required, json!({ "type": "any" })),
            (ToolChoice::None, json!({ "type": "none" })),
            (ToolChoice::Function("lookup".into()), json!({ "type": "tool", "name": "lookup" })),
        ];
        for (choice, expected) in cases {
            req.tool_choice = Some(choice);
            let body = request_body("m", &req, 4096, false);
            assert_eq!(body["tool_choice"], expected);
            assert_eq!(
                body["tools"],
                json!([{
                    "name": "lookup",
                    "description": "Looks things up",
                    "input_schema": { "type": "object", "properties": { "q": { "type": "string" } } },
                }])
            );
        }
        // No tools: no tool_choice either (Anthropic rejects it alone).
        req.tools.clear();
        assert!(request_body("m", &req, 4096, false).get("tool_choice").is_none());
    }

    #[test]
    fn sampling_parameters_are_translated() {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.temperature = Some(1.7);
        req.stop = vec!["END".into()];
        req.user = Some("user-42".into());
        req.seed = Some(7);
        let body = request_body("m", &req, 4096, false);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["stop_sequences"], json!(["END"]));
        assert_eq!(body["metadata"], json!({ "user_id": "user-42" }));
        assert!(body.get("seed").is_none(), "Anthropic has no seed");
        assert!(body.get("stop").is_none());

        req.temperature = Some(0.3);
        req.top_p = Some(0.9);
        let body = request_body("m", &req, 4096, false);
        assert_eq!(body["temperature"], 0.3);
        assert!(body.get("top_p").is_none(), "temperature and top_p are not sent together");

        req.temperature = None;
        assert_eq!(request_body("m", &req, 4096, false)["top_p"], 0.9);
    }

    #[test]
    fn json_mode_becomes_a_system_instruction() {
        let mut req = request(vec![Message::text(Role::System, "You are a bot."), Message::text(Role::User, "hi")]);
        req.response_format = Some(ResponseFormat::JsonObject);
        let system = request_body("m", &req, 4096, false)["system"].as_str().unwrap().to_owned();
        assert!(system.starts_with("You are a bot.\n\n"), "{system}");
        assert!(system.contains("JSON object"), "{system}");

        req.messages.remove(0);
        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "person".into(),
            schema: json!({ "type": "object", "properties": { "age": { "type": "integer" } } }),
            strict: true,
        });
        let body = request_body("m", &req, 4096, false);
        let system = body["system"].as_str().unwrap();
        assert!(system.contains("\"person\""), "{system}");
        assert!(system.contains(r#""age":{"type":"integer"}"#), "{system}");
        assert!(body.get("response_format").is_none());

        req.response_format = Some(ResponseFormat::Text);
        assert!(request_body("m", &req, 4096, false).get("system").is_none());
    }

    #[test]
    fn parses_text_response_with_cached_usage() {
        let v = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{ "type": "text", "text": "Hello" }, { "type": "text", "text": " there" }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 12, "output_tokens": 6, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20 }
        });
        let usage = Some(Usage { prompt_tokens: 132, completion_tokens: 6 });
        testing::assert_text_answer(&parse_response(&v).unwrap(), Some("Hello there"), FinishReason::Stop, usage);
    }

    #[test]
    fn parses_tool_use_response() {
        let v = json!({
            "type": "message", "role": "assistant",
            "content": [
                { "type": "text", "text": "Let me check." },
                { "type": "tool_use", "id": "toolu_01", "name": "weather", "input": { "city": "Paris" } }
            ],
            "stop_reason": "tool_use",
            "usage": { "input_tokens": 50, "output_tokens": 20 }
        });
        let r = parse_response(&v).unwrap();
        assert_eq!(r.content.as_deref(), Some("Let me check."));
        assert_eq!(
            r.tool_calls,
            vec![ToolCall { id: "toolu_01".into(), name: "weather".into(), arguments: r#"{"city":"Paris"}"#.into() }]
        );
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.usage, Some(Usage { prompt_tokens: 50, completion_tokens: 20 }));
    }

    #[test]
    fn maps_stop_reasons() {
        for (reason, expected) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
        ] {
            let v = json!({ "content": [], "stop_reason": reason, "usage": { "input_tokens": 1, "output_tokens": 0 } });
            let r = parse_response(&v).unwrap();
            assert_eq!(r.finish_reason, expected, "{reason}");
            assert_eq!(r.content, None);
        }
        assert!(matches!(parse_response(&json!({ "id": "x" })), Err(ProviderError::Protocol(_))));
    }

    fn run(events: &[(&str, &str)]) -> (Vec<ChatDelta>, Result<Vec<ChatDelta>, ProviderError>) {
        testing::run::<StreamState>(events)
    }

    #[test]
    fn stream_text_answer() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let (deltas, end) = run(&events);
        assert_eq!(
            deltas,
            vec![
                ChatDelta::Text("Hello".into()),
                ChatDelta::Text("!".into()),
                ChatDelta::Finish(FinishReason::Stop),
                ChatDelta::Usage(Usage { prompt_tokens: 30, completion_tokens: 15 }),
            ]
        );
        // Usage is emitted once only.
        assert_eq!(end, Ok(Vec::new()));
    }

    #[test]
    fn stream_tool_use_indexes_count_tool_blocks() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_2","role":"assistant","content":[],"usage":{"input_tokens":472,"output_tokens":2}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":0}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_a","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\": \"San"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisco\"}"}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":1}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_b","name":"get_time","input":{}}}"#,
            ),
            ("content_block_stop", r#"{"type":"content_block_stop","index":2}"#),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ];
        let (deltas, end) = run(&events);
        assert_eq!(
            deltas,
            vec![
                ChatDelta::Text("Checking.".into()),
                ChatDelta::ToolCallStart { index: 0, id: "toolu_a".into(), name: "get_weather".into() },
                ChatDelta::ToolCallArguments { index: 0, fragment: "{\"location\": \"San".into() },
                ChatDelta::ToolCallArguments { index: 0, fragment: " Francisco\"}".into() },
                ChatDelta::ToolCallStart { index: 1, id: "toolu_b".into(), name: "get_time".into() },
                ChatDelta::ToolCallArguments { index: 1, fragment: "{}".into() },
                ChatDelta::Finish(FinishReason::ToolCalls),
                ChatDelta::Usage(Usage { prompt_tokens: 472, completion_tokens: 89 }),
            ]
        );
        assert!(end.is_ok());
    }

    #[test]
    fn stream_uses_event_name_when_data_has_no_type_and_ignores_thinking() {
        let mut state = StreamState::new();
        let d = state
            .on_event("content_block_start", r#"{"index":0,"content_block":{"type":"thinking","thinking":""}}"#)
            .unwrap();
        assert!(d.is_empty());
        let d = state
            .on_event(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            )
            .unwrap();
        assert!(d.is_empty());
        let d =
            state.on_event("message_delta", r#"{"delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":3}}"#);
        assert_eq!(d.unwrap(), vec![ChatDelta::Finish(FinishReason::Length)]);
        assert!(!state.is_done());
        let d = state.on_event("message_stop", "{}").unwrap();
        assert_eq!(d, vec![ChatDelta::Usage(Usage { prompt_tokens: 0, completion_tokens: 3 })]);
        assert!(state.is_done());
    }

    #[test]
    fn stream_without_message_stop_is_broken() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"role":"assistant","content":[],"usage":{"input_tokens":3,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            ),
        ];
        let (deltas, end) = run(&events);
        assert_eq!(deltas, vec![ChatDelta::Text("Hel".into())]);
        assert!(matches!(end, Err(ProviderError::StreamBroken(_))), "{end:?}");
    }

    #[test]
    fn stream_error_event_is_broken() {
        let mut state = StreamState::new();
        let err = state
            .on_event("error", r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#)
            .unwrap_err();
        assert_eq!(err, ProviderError::StreamBroken("overloaded_error: Overloaded".into()));
        assert!(err.is_retryable());
        assert!(matches!(state.on_event("message_start", "{not json"), Err(ProviderError::StreamBroken(_))));
    }

    #[tokio::test]
    async fn delta_stream_stops_at_message_stop_and_flags_truncation() {
        let complete = events(vec![
            Ok((
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":2,"output_tokens":1}}}"#,
            )),
            Ok((
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            )),
            Ok((
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
            )),
            Ok(("message_stop", r#"{"type":"message_stop"}"#)),
            // Anything after message_stop is not read.
            Err(ProviderError::StreamBroken("late".into())),
        ]);
        let usage = Usage { prompt_tokens: 2, completion_tokens: 4 };
        testing::assert_text_stop_usage(delta_stream(complete, StreamState::new()), "Hi", usage).await;

        let truncated = events(vec![Ok((
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        ))]);
        testing::assert_text_then_broken(delta_stream(truncated, StreamState::new()), "Hi").await;
    }

    #[test]
    fn endpoint_appends_v1_messages() {
        let conn = connection(super::super::ProviderKind::Anthropic, "https://api.anthropic.com/", "sk-secret");
        assert_eq!(endpoint(&conn), "https://api.anthropic.com/v1/messages");
        let request = post(&conn, &json!({})).build().unwrap();
        assert_eq!(request.headers()["x-api-key"], "sk-secret");
        assert_eq!(request.headers()["anthropic-version"], API_VERSION);
        assert_eq!(request.headers()["content-type"], "application/json");
        assert!(request.headers().get("authorization").is_none());
        let conn = Connection { base_url: "http://proxy.local/v1".into(), ..conn };
        assert_eq!(endpoint(&conn), "http://proxy.local/v1/messages");
    }
}
