//! Grounded replies: `POST /v1/knowledge/reply`, and the `tokaroo.context` extension of
//! `POST /v1/chat/completions`.
//!
//! Both build a context pack for the question (its memories and, by default for replies,
//! source chunks with citations), put it in a system message ahead of the conversation, and
//! send the request through routing like any chat: `auto`/`fast`/`max`, fallback, caching,
//! billing and `x-tokaroo-cost` apply unchanged. The answer carries the pack's trace id and
//! the citations it was given (`tokaroo.context` on a completion; on a stream, its first
//! chunk (which has a choice, like any other) carries `x_tokaroo.context`).

use std::sync::Arc;

use axum::{
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokaroo_actors::{
    chat::{ChatRequest, ContentPart, Message, Role},
    knowledge::pack::ContextPack,
    KeyEntry, RequestInfo,
};

use super::{
    chat::parse_request,
    error::ApiError,
    extract::{ApiKey, Caller, JsonBody, RequestId},
    memory::{citations, scope},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/knowledge/reply", post(reply))
}

/// What `tokaroo.context` (chat) or a reply's fields ask of the pack.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ContextAsk {
    workspace_id: Option<String>,
    max_tokens: Option<i64>,
    include_sources: Option<bool>,
    /// The text to retrieve for; the last user message by default.
    query: Option<String>,
}

/// The pack a request was given, as answers show it.
pub(super) struct GivenContext {
    pub trace_id: String,
    pub body: Value,
}

fn last_user_text(request: &ChatRequest) -> Option<String> {
    let message = request.messages.iter().rev().find(|m| m.role == Role::User)?;
    let text: Vec<&str> = message
        .content
        .iter()
        .filter_map(|p| match p {
            ContentPart::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let text = text.join("\n");
    (!text.trim().is_empty()).then_some(text)
}

/// A query taken from a message is at most this long (a pack's query limit is 8,000).
const MAX_DERIVED_QUERY_CHARS: usize = 4000;

fn last_chars(text: String, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text;
    }
    text.chars().skip(count - max).collect()
}

fn context_message(pack: &ContextPack) -> Message {
    let text = format!(
        "Use the context below when it helps to answer. It comes from the knowledge base \
         (memories, entities, events and source passages). Cite source passages by their \
         [n] number. If the context does not answer the question, say so.\n\n<context>\n{}</context>",
        pack.context
    );
    Message {
        role: Role::System,
        content: vec![ContentPart::Text(text)],
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// Builds the pack `ask` names and puts it in `request` as a system message after the
/// request's own system messages (whose instructions stay first).
pub(super) async fn add_context(
    state: &AppState,
    key: &Arc<KeyEntry>,
    request: &mut ChatRequest,
    ask: ContextAsk,
    default_sources: bool,
    linked: (Option<&str>, Option<&serde_json::Map<String, Value>>),
) -> Result<GivenContext, ApiError> {
    let scope = scope(state, &Caller::Key(key.clone()), ask.workspace_id.as_deref())?;
    let links = state.engine.missions().trace_links(&scope.account_id, &scope.workspace, linked.0, linked.1);
    let query = match ask.query {
        Some(query) => query,
        // A long message is retrieved for by its end (the question usually closes it).
        None => last_chars(
            last_user_text(request).ok_or_else(|| {
                ApiError::BadRequest(
                    "the context needs a question: a user message with text, or tokaroo.context.query".into(),
                )
            })?,
            MAX_DERIVED_QUERY_CHARS,
        ),
    };
    let max_tokens = match ask.max_tokens {
        None => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(ApiError::BadRequest("the context's max_tokens must be a positive number of tokens".into()))
        }
    };
    let missions = state.engine.missions();
    let pack = missions.context_pack(&scope, &query, max_tokens, ask.include_sources, default_sources, links).await?;
    let at = request.messages.iter().take_while(|m| m.role == Role::System).count();
    request.messages.insert(at, context_message(&pack));
    let body = json!({
        "trace_id": pack.trace_id,
        "workspace_id": (!scope.workspace.is_empty()).then_some(&scope.workspace),
        "used_tokens": pack.used_tokens,
        "max_tokens": pack.max_tokens,
        "memories": pack.items.iter().map(|i| i.note.id.clone()).collect::<Vec<_>>(),
        "citations": citations(&pack),
    });
    Ok(GivenContext { trace_id: pack.trace_id, body })
}

/// The `tokaroo` extension of a chat request, if any: `{"context": {...}}`.
pub(super) fn context_ask(wire: &Value) -> Result<Option<ContextAsk>, ApiError> {
    match &wire["tokaroo"] {
        Value::Null => Ok(None),
        Value::Object(extension) => {
            if let Some(other) = extension.keys().find(|k| k.as_str() != "context") {
                return Err(ApiError::BadRequest(format!("tokaroo.{other} is not a known extension (context)")));
            }
            match extension.get("context") {
                None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
                Some(Value::Bool(true)) => Ok(Some(ContextAsk::default())),
                Some(context @ Value::Object(_)) => serde_json::from_value(context.clone())
                    .map(Some)
                    .map_err(|e| ApiError::BadRequest(format!("Invalid value for `tokaroo.context`: {e}"))),
                Some(_) => Err(ApiError::BadRequest("tokaroo.context must be an object (or true)".into())),
            }
        }
        _ => {
            Err(ApiError::BadRequest("tokaroo must be an object such as {\"context\": {\"workspace_id\": ...}}".into()))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyRequest {
    query: Option<String>,
    messages: Option<Vec<Value>>,
    workspace_id: Option<String>,
    /// `auto`, `fast` or `max`.
    mode: Option<String>,
    /// A model name instead of a mode.
    model: Option<String>,
    max_context_tokens: Option<i64>,
    include_sources: Option<bool>,
    stream: Option<bool>,
    max_tokens: Option<Value>,
    temperature: Option<Value>,
    /// `mission_id` (or `tokaroo_mission_uuid`) charges the reply to that mission as well.
    metadata: Option<serde_json::Map<String, Value>>,
}

async fn reply(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<ReplyRequest>,
) -> Result<Response, ApiError> {
    let model = match (&req.mode, &req.model) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give mode or model, not both".into())),
        (Some(mode), None) if matches!(mode.as_str(), "auto" | "fast" | "max") => mode.clone(),
        (Some(mode), None) => return Err(ApiError::BadRequest(format!("mode {mode:?} is not auto, fast or max"))),
        (None, Some(model)) => model.clone(),
        (None, None) => "auto".to_owned(),
    };
    let messages = match (req.query, req.messages) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give query or messages, not both".into())),
        (Some(query), None) if !query.trim().is_empty() => vec![json!({"role": "user", "content": query})],
        (Some(_), None) => return Err(ApiError::BadRequest("query must not be empty".into())),
        (None, Some(messages)) => messages,
        (None, None) => return Err(ApiError::BadRequest("a reply needs a query or messages".into())),
    };
    let mut wire = json!({ "model": model, "messages": messages, "stream": req.stream.unwrap_or(false) });
    for (field, value) in [("max_tokens", req.max_tokens), ("temperature", req.temperature)] {
        if let Some(value) = value {
            wire[field] = value;
        }
    }
    let (mut request, model_name) = parse_request(&wire)?;
    let ask = ContextAsk {
        workspace_id: req.workspace_id,
        max_tokens: req.max_context_tokens,
        include_sources: req.include_sources,
        query: None,
    };
    let body = json!({ "metadata": req.metadata });
    let (mission, mission_explicit) = super::harness::mission_of(&headers, &body)?;
    let given = add_context(&state, &key, &mut request, ask, true, (mission.as_deref(), req.metadata.as_ref())).await?;
    let bypass_cache = super::chat::bypasses_cache(&headers);
    let info =
        RequestInfo { request_id, bypass_cache, mission, mission_explicit, ..RequestInfo::chat(&request, &model_name) };
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    if request.stream {
        return super::chat::stream_response(&state, key, request, info, created, Some(&given)).await;
    }
    let account = key.account_id.clone();
    let served = state.engine.runtime().serve_chat(key, request, info).await?;
    let answer = served.response.content.as_deref().unwrap_or_default();
    state.engine.traces().complete_reply(&account, &given.trace_id, answer, served.charge.charged_units);
    let cost = served.charge.charged_usd();
    let usage = served.usage;
    let body = json!({
        "object": "knowledge.reply",
        "id": format!("kr_{}", uuid::Uuid::new_v4().simple()),
        "created": created,
        "model": model_name,
        "answer": served.response.content,
        "finish_reason": served.response.finish_reason.as_str(),
        "citations": given.body["citations"],
        "context": given.body,
        "usage": { "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total() },
        "cost_usd": cost,
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert("x-tokaroo-cost", super::wire::cost_header(cost));
    response
        .headers_mut()
        .insert("x-tokaroo-cache", HeaderValue::from_static(if served.cache_hit { "hit" } else { "miss" }));
    if let Ok(trace) = HeaderValue::from_str(&given.trace_id) {
        response.headers_mut().insert("x-tokaroo-context-trace", trace);
    }
    Ok(response)
}
