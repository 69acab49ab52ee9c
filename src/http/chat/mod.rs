//! `POST /v1/chat/completions`: OpenAI's request and response shapes, streaming as SSE.

mod parse;
mod render;
mod stream;

use axum::{body::Bytes, extract::State, response::Response, routing::post, Router};
use tokaroo_actors::RequestInfo;

pub use parse::parse_request;

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions))
}

async fn chat_completions(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire = parse_json_object(&body)?;
    let (request, model_name) = parse_request(&wire)?;
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let info = RequestInfo { request_id, ..RequestInfo::chat(&request, &model_name) };
    if request.stream {
        return stream::stream_response(&state, key, request, info, created).await;
    }
    let served = state.engine.runtime().serve_chat(key, request, info).await?;
    Ok(render::completion(&served, &model_name, created))
}
