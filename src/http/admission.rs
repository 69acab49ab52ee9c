//! Admission of runtime requests: authenticate the `tok_...` key, ask its `apikey:{id}`
//! actor for a rate-limit permit, and stamp `x-ratelimit-*` on the response.

use axum::{
    extract::{Request, State},
    http::HeaderValue,
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokaroo_actors::Admission;

use super::{
    error::ApiError,
    extract::{bearer, is_api_key, runtime_key, ApiKey},
    AppState,
};

pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if parts.headers.contains_key(tokaroo_actors::routing::providers::http::HOP_HEADER) {
        return ApiError::LoopDetected.into_response();
    }
    let key = match runtime_key(&parts, &state) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    admit_key(&state, key, parts, body, next).await
}

/// For routes both credentials may use (usage, stats, balance): a runtime key is admitted
/// exactly as on `admit`'s routes (rate limit, disabled workspace, headers); anything else
/// goes on to the route's own extractor (dashboard sessions are not metered).
pub async fn admit_runtime_keys(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let is_key = bearer(&parts).is_ok_and(is_api_key);
    if !is_key {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let key = match runtime_key(&parts, &state) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    admit_key(&state, key, parts, body, next).await
}

async fn admit_key(
    state: &AppState,
    key: std::sync::Arc<tokaroo_actors::KeyEntry>,
    mut parts: axum::http::request::Parts,
    body: axum::body::Body,
    next: Next,
) -> Response {
    let (limit, remaining) = match state.engine.directory().admit(&key).await {
        Ok(Admission::Admitted { limit, remaining }) => (limit, remaining),
        Ok(Admission::Limited { limit, retry_after }) => {
            return ApiError::rate_limited(limit, retry_after).into_response()
        }
        Err(error) => return ApiError::from(error).into_response(),
    };
    parts.extensions.insert(ApiKey(key));
    let mut response = next.run(Request::from_parts(parts, body)).await;
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    response
}
