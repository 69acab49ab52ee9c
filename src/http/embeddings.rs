//! `POST /v1/embeddings`: OpenAI's request and response shapes.

use axum::{
    body::Bytes,
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};
use tokaroo_actors::{chat::Mode, runtime::embeddings::EmbeddingRequest};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    wire::cost_header,
    AppState,
};

const MAX_INPUTS: usize = 2048;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/embeddings", post(embeddings))
}

pub(super) fn parse(v: &Value) -> Result<(EmbeddingRequest, bool), ApiError> {
    let bad = |m: &str| ApiError::BadRequest(m.to_owned());
    let inputs = match &v["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| bad("input must be a string or an array of strings")))
            .collect::<Result<Vec<_>, _>>()?,
        Value::Null => return Err(bad("input is required: a string or an array of strings")),
        _ => return Err(bad("input must be a non-empty string or array of strings")),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(bad("input may hold at most 2048 strings"));
    }
    if inputs.iter().any(|s| s.is_empty()) {
        return Err(bad("input strings must not be empty"));
    }
    let (model, requested) = match &v["model"] {
        Value::Null => (None, None),
        Value::String(s) if s.is_empty() || Mode::parse(s).is_some() => (None, Some(s.clone())),
        Value::String(s) => (Some(s.clone()), Some(s.clone())),
        _ => return Err(bad("model must be a string")),
    };
    let dimensions = match &v["dimensions"] {
        Value::Null => None,
        d => Some(
            d.as_u64()
                .filter(|n| (1..=8192).contains(n))
                .ok_or_else(|| bad("dimensions must be a whole number from 1 to 8192"))? as u32,
        ),
    };
    let base64 = match v["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return Err(bad("encoding_format must be float or base64")),
    };
    Ok((EmbeddingRequest { model, requested, inputs, dimensions }, base64))
}

async fn embeddings(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire = parse_json_object(&body)?;
    if !wire.is_object() {
        return Err(ApiError::BadRequest("Request body must be a JSON object".into()));
    }
    let (request, base64) = parse(&wire)?;
    let (outcome, charge) = state.engine.runtime().serve_embeddings(key, request, request_id).await?;
    let data: Vec<Value> = outcome
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "model": outcome.model,
        "usage": { "prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens },
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert("x-tokaroo-cost", cost_header(charge.charged_usd()));
    response.headers_mut().insert("x-tokaroo-cache", HeaderValue::from_static("miss"));
    Ok(response)
}
