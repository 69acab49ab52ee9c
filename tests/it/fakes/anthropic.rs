//! Anthropic's Messages API (`POST /v1/messages`). Base URL for the gateway: `{root}`.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{key_ok, pieces, Behavior, Recorded, Wire, COMPLETION_TOKENS, PROMPT_TOKENS};

pub struct Anthropic;

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({ "type": "error", "error": { "type": kind, "message": message.into() } }))
}

fn invalid(message: impl Into<String>) -> (StatusCode, Value) {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

impl Wire for Anthropic {
    fn validate(&self, req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
        if req.path != "/v1/messages" {
            return Err(error(StatusCode::NOT_FOUND, "not_found_error", "Not found"));
        }
        if !key_ok(req.header("x-api-key"), keys) {
            return Err(error(StatusCode::UNAUTHORIZED, "authentication_error", "invalid x-api-key"));
        }
        if req.header("anthropic-version").is_none() {
            return Err(invalid("anthropic-version: header is required"));
        }
        let b = &req.body;
        if !b["model"].is_string() {
            return Err(invalid("model: Field required"));
        }
        if !b["max_tokens"].is_u64() {
            return Err(invalid("max_tokens: Field required"));
        }
        let Some(messages) = b["messages"].as_array().filter(|m| !m.is_empty()) else {
            return Err(invalid("messages: at least one message is required"));
        };
        if messages[0]["role"] != "user" {
            return Err(invalid("messages: first message must use the \"user\" role"));
        }
        let mut previous_tool_uses: Vec<String> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let role = m["role"].as_str().unwrap_or_default();
            if role != "user" && role != "assistant" {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant' (a system prompt goes in the top-level `system` field)"
                )));
            }
            let blocks: Vec<Value> = match &m["content"] {
                Value::String(_) => Vec::new(),
                Value::Array(blocks) => blocks.clone(),
                _ => return Err(invalid(format!("messages.{i}.content: Input should be a valid list"))),
            };
            let mut tool_uses = Vec::new();
            for block in &blocks {
                match block["type"].as_str() {
                    Some("text") if block["text"].is_string() => {}
                    Some("image") => {
                        let s = &block["source"];
                        let ok = match s["type"].as_str() {
                            Some("base64") => {
                                s["media_type"].as_str().is_some_and(|t| t.starts_with("image/"))
                                    && s["data"].is_string()
                            }
                            Some("url") => s["url"].is_string(),
                            _ => false,
                        };
                        if !ok {
                            return Err(invalid(format!("messages.{i}.content: invalid image source")));
                        }
                    }
                    Some("tool_use") if role == "assistant" => {
                        if !block["input"].is_object() || !block["id"].is_string() {
                            return Err(invalid(format!(
                                "messages.{i}.content: tool_use needs an id and an object input"
                            )));
                        }
                        tool_uses.push(block["id"].as_str().unwrap_or_default().to_owned());
                    }
                    Some("tool_result") if role == "user" => {
                        let id = block["tool_use_id"].as_str().unwrap_or_default();
                        if !previous_tool_uses.iter().any(|u| u == id) {
                            return Err(invalid(format!(
                                "messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                            )));
                        }
                    }
                    _ => return Err(invalid(format!("messages.{i}.content: unsupported block {block}"))),
                }
            }
            previous_tool_uses = tool_uses;
        }
        for tool in b["tools"].as_array().into_iter().flatten() {
            if !tool["name"].is_string() || !tool["input_schema"].is_object() {
                return Err(invalid("tools: each tool needs a name and an input_schema"));
            }
        }
        Ok(())
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Value {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        json!({ "type": "error", "error": { "type": kind, "message": message } })
    }

    fn mid_stream_cut(&self) -> usize {
        // message_start, content_block_start, ping, one text delta.
        4
    }

    fn is_stream(&self, req: &Recorded) -> bool {
        req.body["stream"] == true
    }

    fn answer(&self, req: &Recorded, behavior: &Behavior) -> Value {
        let (content, stop) = match behavior {
            Behavior::Text(text) => (json!([{ "type": "text", "text": text }]), "end_turn"),
            Behavior::ToolCall { name, arguments } => {
                let input: Value = serde_json::from_str(arguments).unwrap();
                (json!([{ "type": "tool_use", "id": "toolu_fake_1", "name": name, "input": input }]), "tool_use")
            }
            other => panic!("no answer for {other:?}"),
        };
        json!({
            "id": "msg_fake", "type": "message", "role": "assistant", "model": req.body["model"], "content": content,
            "stop_reason": stop, "stop_sequence": null,
            "usage": { "input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS },
        })
    }

    fn stream_events(&self, req: &Recorded, behavior: &Behavior) -> Vec<String> {
        let mut out = vec![event(
            "message_start",
            json!({ "type": "message_start", "message": { "id": "msg_fake", "type": "message", "role": "assistant", "model": req.body["model"],
                    "content": [], "stop_reason": null, "stop_sequence": null, "usage": { "input_tokens": PROMPT_TOKENS, "output_tokens": 1 } } }),
        )];
        let stop = match behavior {
            Behavior::Text(text) => {
                out.push(event("content_block_start", json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } })));
                out.push(event("ping", json!({ "type": "ping" })));
                for p in pieces(text) {
                    out.push(event("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": p } })));
                }
                "end_turn"
            }
            Behavior::ToolCall { name, arguments } => {
                out.push(event("content_block_start", json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "tool_use", "id": "toolu_fake_1", "name": name, "input": {} } })));
                let (a, b) = arguments.split_at(arguments.len() / 2);
                for fragment in [a, b] {
                    out.push(event("content_block_delta", json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": fragment } })));
                }
                "tool_use"
            }
            other => panic!("no stream for {other:?}"),
        };
        out.push(event("content_block_stop", json!({ "type": "content_block_stop", "index": 0 })));
        out.push(event(
            "message_delta",
            json!({ "type": "message_delta", "delta": { "stop_reason": stop, "stop_sequence": null }, "usage": { "output_tokens": COMPLETION_TOKENS } }),
        ));
        out.push(event("message_stop", json!({ "type": "message_stop" })));
        out
    }
}
