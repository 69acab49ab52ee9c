//! Rendering answers in OpenAI's shapes: a whole completion, and a streamed answer's chunks.

use axum::{
    body::Bytes,
    http::HeaderValue,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};
use tokaroo_actors::{
    chat::{ChatDelta, Usage},
    ServedChat, StreamEnd,
};

use crate::http::wire::cost_header;

fn usage_json(u: Usage) -> Value {
    json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total() })
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

/// A non-streamed answer as `chat.completion`, its charge in `x-tokaroo-cost`.
/// `context`: the knowledge context the request was given, shown as `tokaroo.context`.
pub(super) fn completion(served: &ServedChat, model_name: &str, created: i64, context: Option<&Value>) -> Response {
    let cost = served.charge.charged_usd();
    let r = &served.response;
    let mut message = json!({ "role": "assistant", "content": r.content, "refusal": null });
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = r
            .tool_calls
            .iter()
            .map(
                |c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }),
            )
            .collect();
    }
    let mut body = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [{ "index": 0, "message": message, "finish_reason": r.finish_reason.as_str(), "logprobs": null }],
        "usage": usage_json(served.usage),
    });
    if let Some(context) = context {
        body["tokaroo"] = json!({ "context": context });
    }
    let mut response = Json(body).into_response();
    response.headers_mut().insert("x-tokaroo-cost", cost_header(cost));
    response.headers_mut().insert("x-tokaroo-cache", cache_header(served.cache_hit));
    response
}

/// `x-tokaroo-cache`: whether the answer came from the response cache.
pub(super) fn cache_header(hit: bool) -> HeaderValue {
    HeaderValue::from_static(if hit { "hit" } else { "miss" })
}

/// Writes `chat.completion.chunk` events for one streamed answer. Typed rather than built as
/// `serde_json::Value`: a streamed answer is many small events, and each map costs allocations.
pub(super) struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
    /// Not yet sent: goes on the next chunk with a choice.
    context: Option<Value>,
}

#[derive(serde::Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_tokaroo: Option<Value>,
}

#[derive(serde::Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
    logprobs: Option<()>,
}

#[derive(serde::Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(serde::Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(serde::Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl ChunkWriter {
    pub(super) fn new(created: i64, model: String) -> Self {
        Self { id: completion_id(), created, model, context: None }
    }

    fn event(&self, out: &ChunkOut<'_>) -> Bytes {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"data: ");
        // Serializing plain structs of strings and numbers cannot fail.
        let _ = serde_json::to_writer(&mut buf, out);
        buf.extend_from_slice(b"\n\n");
        Bytes::from(buf)
    }

    /// The knowledge context the request was given, shown as `x_tokaroo.context` on the
    /// answer's first chunk (one with a choice, as clients reading `choices[0]` expect).
    pub(super) fn with_context(mut self, context: Option<Value>) -> Self {
        self.context = context;
        self
    }

    fn delta(&mut self, delta: DeltaOut<'_>, finish_reason: Option<&str>) -> Bytes {
        let choices = [ChunkChoice { index: 0, delta, finish_reason, logprobs: None }];
        let x_tokaroo = self.context.take().map(|context| json!({ "context": context }));
        self.event(&ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: None,
            x_tokaroo,
        })
    }

    /// The `include_usage` event: no choices, the usage, and (beyond OpenAI's shape) the
    /// charge, which a header cannot carry once streaming began.
    fn usage(&self, usage: Usage, charged_usd: f64) -> Bytes {
        self.event(&ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: Some(usage_json(usage)),
            x_tokaroo: Some(json!({ "cost_usd": charged_usd, "cache": "miss" })),
        })
    }

    /// The chunk for one delta of the answer; `None` for what is not relayed (usage, which
    /// the runtime bills). `role` goes on the answer's first chunk.
    pub(super) fn delta_chunk(&mut self, delta: &ChatDelta, role: Option<&'static str>) -> Option<Bytes> {
        let chunk = match delta {
            ChatDelta::Text(t) => self.delta(DeltaOut { role, content: Some(t), tool_calls: None }, None),
            ChatDelta::ToolCallStart { index, id, name } => {
                let call = ToolCallDeltaOut {
                    index: *index,
                    id: Some(id),
                    kind: Some("function"),
                    function: FunctionDeltaOut { name: Some(name), arguments: "" },
                };
                self.delta(DeltaOut { role, content: None, tool_calls: Some([call]) }, None)
            }
            ChatDelta::ToolCallArguments { index, fragment } => {
                let call = ToolCallDeltaOut {
                    index: *index,
                    id: None,
                    kind: None,
                    function: FunctionDeltaOut { name: None, arguments: fragment },
                };
                self.delta(DeltaOut { role, content: None, tool_calls: Some([call]) }, None)
            }
            ChatDelta::Finish(reason) => self.delta(DeltaOut::default(), Some(reason.as_str())),
            ChatDelta::Usage(_) => return None,
        };
        Some(chunk)
    }

    /// The answer's last event. Only a complete answer gets `[DONE]`, OpenAI's end-of-answer
    /// marker: an incomplete or unrecorded one ends in an in-band error instead, so that no
    /// client takes it for a complete one.
    pub(super) fn end(&self, end: &StreamEnd, include_usage: bool) -> Bytes {
        match end {
            StreamEnd::Complete { usage, charge } => {
                let mut tail = Vec::new();
                if include_usage {
                    tail.extend_from_slice(&self.usage(*usage, charge.charged_usd()));
                }
                tail.extend_from_slice(b"data: [DONE]\n\n");
                Bytes::from(tail)
            }
            StreamEnd::Broken { .. } => {
                error_event("The upstream stream broke; the answer is incomplete", "stream_broken")
            }
            StreamEnd::OverBound { .. } => {
                error_event("The upstream's answer exceeded its output bound and was cut", "output_bound_exceeded")
            }
            StreamEnd::Unrecorded => {
                error_event("The answer could not be recorded; retry the request", "ledger_unavailable")
            }
        }
    }
}

fn error_event(message: &str, code: &str) -> Bytes {
    let err = json!({ "error": { "message": message, "type": "api_error", "code": code } });
    Bytes::from(format!("data: {err}\n\n"))
}
