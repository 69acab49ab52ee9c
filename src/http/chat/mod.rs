//! `POST /v1/chat/completions`: OpenAI's request and response shapes, streaming as SSE.

mod parse;
mod render;
mod stream;

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap},
    response::Response,
    routing::post,
    Router,
};
use tokaroo_actors::RequestInfo;

pub use parse::parse_request;
pub(super) use stream::stream_response;

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    knowledge, AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions))
}

async fn chat_completions(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire = parse_json_object(&body)?;
    let (mut request, model_name) = parse_request(&wire)?;
    let (mission, mission_explicit) = super::harness::mission_of(&headers, &wire)?;
    // `tokaroo: {"context": {...}}`: grounded in the knowledge base (see `knowledge.rs`).
    let context = match knowledge::context_ask(&wire)? {
        Some(ask) => {
            let linked = (mission.as_deref(), wire.get("metadata").and_then(serde_json::Value::as_object));
            Some(knowledge::add_context(&state, &key, &mut request, ask, false, linked).await?)
        }
        None => None,
    };
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let bypass_cache = bypasses_cache(&headers);
    let info =
        RequestInfo { request_id, bypass_cache, mission, mission_explicit, ..RequestInfo::chat(&request, &model_name) };
    if request.stream {
        return stream::stream_response(&state, key, request, info, created, context.as_ref()).await;
    }
    let account = key.account_id.clone();
    let served = state.engine.runtime().serve_chat(key, request, info).await?;
    if let Some(context) = &context {
        let answer = served.response.content.as_deref().unwrap_or_default();
        state.engine.traces().complete_reply(&account, &context.trace_id, answer, served.charge.charged_units);
    }
    let mut response = render::completion(&served, &model_name, created, context.as_ref().map(|c| &c.body));
    if let Some(trace) = context.and_then(|c| axum::http::HeaderValue::from_str(&c.trace_id).ok()) {
        response.headers_mut().insert("x-tokaroo-context-trace", trace);
    }
    Ok(response)
}

/// `Cache-Control: no-cache` (or `no-store`) or `x-tokaroo-cache: skip`: neither answered from
/// the response cache nor stored in it.
pub(super) fn bypasses_cache(headers: &HeaderMap) -> bool {
    let cache_control = headers.get_all(header::CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok());
    let no_cache = cache_control
        .flat_map(|v| v.split(','))
        .any(|d| matches!(d.trim().to_ascii_lowercase().as_str(), "no-cache" | "no-store"));
    let skip = headers
        .get("x-tokaroo-cache")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("skip"));
    no_cache || skip
}
