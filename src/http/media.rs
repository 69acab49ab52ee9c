//! `GET /v1/media/:id`: what the gateway keeps to serve by URL (images asked for as `url`,
//! finished videos), streamed from the data directory with `Range` support until it
//! expires. Public: the 128-bit random id is the capability.

use axum::{
    extract::{Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::{error::ApiError, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/media/{id}", get(media))
}

/// The content types we make; anything else (a provider's odd label) goes out as bytes.
fn served_type(mime: &str) -> HeaderValue {
    match mime {
        "image/png" | "image/jpeg" | "image/webp" | "video/mp4" => HeaderValue::from_str(mime).ok(),
        _ => None,
    }
    .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

async fn media(State(state): State<AppState>, Path(id): Path<String>, request: Request) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound { what: "media (unknown or expired)" };
    let Some((mime, _, path)) = state.engine.runtime().media(&id).await? else { return Err(not_found()) };
    // tower-http's file service answers ranges (206, 416), HEAD and conditional requests,
    // reading the file as it goes out.
    let mut response = match ServeFile::new(path).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(infallible) => match infallible {},
    };
    match response.status() {
        // Swept between the lookup and the open.
        StatusCode::NOT_FOUND => return Err(not_found()),
        status if status.is_server_error() => {
            return Err(ApiError::Internal(format!("media {id} could not be read from disk ({status})")))
        }
        // The file's own type on the file's bytes only, not on a 416's or a 304's.
        StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
            response.headers_mut().insert(header::CONTENT_TYPE, served_type(&mime));
        }
        _ => {}
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(response)
}
