//! The HTTP API: one router module per area of the spec, merged here.

mod actions;
mod admin;
mod admission;
mod audio;
mod billing;
mod chat;
mod coalesce;
mod embeddings;
pub mod error;
pub mod extract;
mod harness;
mod health;
mod images;
mod keys;
mod knowledge;
mod local_endpoints;
mod media;
mod memory;
mod memory_graph;
mod models;
mod pricing;
mod provider_keys;
#[cfg(test)]
mod request_props;
mod sessions;
mod sources;
mod url;
mod usage;
mod videos;
mod wire;
mod workspaces;

use std::sync::{
    atomic::{AtomicBool, AtomicUsize, Ordering},
    Arc,
};

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, Method, Uri},
    middleware,
    response::{IntoResponse, Response},
    Router,
};
use tokaroo_actors::Engine;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::config::Config;
use error::{openai_error_shape, to_openai_shape, ApiError, ErrorParts};

#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

/// What the routes share; behind one `Arc` because extractors clone the state per request.
pub struct AppParts {
    pub engine: Engine,
    pub config: Arc<Config>,
    pub shutting_down: Arc<AtomicBool>,
    /// Requests whose response (body included) is not finished: shutdown reports it.
    pub in_flight: Arc<AtomicUsize>,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// Path prefixes that mirror OpenAI's API and so answer errors in OpenAI's shape.
const OPENAI_COMPATIBLE: &[&str] = &["/v1/chat/", "/v1/embeddings", "/v1/images/", "/v1/audio/", "/v1/models"];

fn is_openai_compatible(path: &str) -> bool {
    OPENAI_COMPATIBLE.iter().any(|p| path.starts_with(p))
}

pub fn router(state: AppState) -> Router {
    let runtime_openai = models::routes()
        .merge(chat::routes())
        .merge(embeddings::routes())
        .merge(images::routes())
        .merge(audio::routes())
        .merge(videos::routes())
        .merge(knowledge::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), admission::admit))
        .layer(middleware::from_fn(openai_error_shape));
    // Runtime keys reading usage pass the same admission; sessions go through unmetered.
    let usage_reads =
        usage::read_routes().route_layer(middleware::from_fn_with_state(state.clone(), admission::admit_runtime_keys));
    let knowledge = memory::routes()
        .merge(memory_graph::routes())
        .merge(sources::routes())
        .merge(harness::routes())
        .merge(actions::routes())
        .merge(url::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), admission::admit_runtime_keys));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::routes())
        .merge(media::routes())
        .merge(keys::routes())
        .merge(workspaces::routes())
        .merge(admin::routes())
        .merge(pricing::routes())
        .merge(provider_keys::routes())
        .merge(local_endpoints::routes())
        .merge(sessions::routes())
        .merge(usage_reads)
        .merge(knowledge)
        .merge(usage::admin_routes())
        .merge(billing::routes())
        .merge(runtime_openai)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(refuse_control_characters_in_path))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(middleware::from_fn_with_state(state.clone(), count_in_flight))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Ids in paths are ours (uuids, slugs): one with a NUL or another control character once
/// percent-decoded is a client bug or a probe, answered 400 before any route sees it (NUL
/// also ends a string in our storage keys).
async fn refuse_control_characters_in_path(request: Request, next: middleware::Next) -> Response {
    let path = request.uri().path();
    if path.contains('%') && path_has_control_characters(path) {
        let message = "The path contains a control character (percent-encoded); ids never do";
        return shaped_for(path, ApiError::BadRequest(message.into()));
    }
    next.run(request).await
}

fn path_has_control_characters(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).chars().any(char::is_control)
}

/// A request body must arrive within `body_read_timeout_secs` of the request's head: one
/// that trickles in would otherwise hold its connection and handler for as long as its sender
/// likes (the connection's own deadlines stop at the head). Past the deadline the body fails
/// to read and the answer, whatever the handler made of that, is 408 with the connection closed
/// (the rest of the body is never read).
async fn body_deadline(state: axum::extract::State<AppState>, request: Request, next: middleware::Next) -> Response {
    if http_body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
    let timeout = std::time::Duration::from_secs(state.config.server.body_read_timeout_secs);
    let expired = Arc::new(AtomicBool::new(false));
    let path = request.uri().path().to_owned();
    let request = request.map(|body| {
        axum::body::Body::new(DeadlineBody {
            body,
            deadline: tokio::time::Instant::now() + timeout,
            timer: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    let message = format!("The request body did not arrive within {} s", timeout.as_secs());
    let mut response = shaped_for(&path, ApiError::RequestTimeout(message));
    response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes. The timer is made only when a read
/// has to wait: most bodies are already in hyper's buffer when the handler reads them.
struct DeadlineBody {
    body: axum::body::Body,
    deadline: tokio::time::Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::{future::Future, task::Poll};
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.expired.store(true, Ordering::Relaxed);
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "request body read timed out");
                Poll::Ready(Some(Err(axum::Error::new(timed_out))))
            }
            ready => ready,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Counts a request from its arrival until its response body is done or dropped.
async fn count_in_flight(state: axum::extract::State<AppState>, request: Request, next: middleware::Next) -> Response {
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let done = Done(state.in_flight.clone());
    let (parts, inner) = next.run(request).await.into_parts();
    Response::from_parts(parts, axum::body::Body::new(CountedBody { inner, _done: done }))
}

/// Takes one off `AppParts::in_flight` when dropped.
struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that counts as in flight until it is done or dropped. It forwards the
/// inner body's size hint, so a body of known length still goes out with `Content-Length`.
struct CountedBody {
    inner: axum::body::Body,
    _done: Done,
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn shaped_for(path: &str, error: ApiError) -> Response {
    let response = error.into_response();
    if is_openai_compatible(path) {
        if let Some(parts) = response.extensions().get::<ErrorParts>().cloned() {
            return to_openai_shape(response, &parts);
        }
    }
    response
}

async fn route_not_found(method: Method, uri: Uri) -> Response {
    shaped_for(uri.path(), ApiError::RouteNotFound { method: method.to_string(), path: uri.path().to_owned() })
}

async fn method_not_allowed(request: Request) -> Response {
    let path = request.uri().path().to_owned();
    shaped_for(&path, ApiError::MethodNotAllowed { method: request.method().to_string(), path: path.clone() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_found_once_decoded() {
        use super::path_has_control_characters as bad;
        assert!(bad("/v1/keys/ab%00cd"));
        assert!(bad("/v1/sessions/%0a"));
        assert!(bad("/v1/workspaces/%C2%85"), "C1 controls too");
        assert!(bad("/v1/keys/%7F"));
        assert!(!bad("/v1/keys/0190a8c4-%41bc"));
        assert!(!bad("/v1/workspaces/caf%C3%A9"));
        assert!(!bad("/v1/keys/100%"), "a stray % is not a control character");
    }
}
