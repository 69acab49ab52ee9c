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
    extract::{runtime_key, ApiKey},
    AppState,
};

pub async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let key = match runtime_key(&parts, &state) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let (limit, remaining) = match state.engine.admit(&key).await {
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
