//! The HTTP API: one router module per area of the spec, merged here.

mod admin;
mod admission;
mod billing;
mod chat;
mod coalesce;
mod embeddings;
pub mod error;
pub mod extract;
mod health;
mod keys;
mod local_endpoints;
mod models;
mod pricing;
mod provider_keys;
mod sessions;
mod usage;
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
        .route_layer(middleware::from_fn_with_state(state.clone(), admission::admit))
        .layer(middleware::from_fn(openai_error_shape));
    // Runtime keys reading usage pass the same admission; sessions go through unmetered.
    let usage_reads =
        usage::read_routes().route_layer(middleware::from_fn_with_state(state.clone(), admission::admit_runtime_keys));
    let request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .merge(health::routes())
        .merge(keys::routes())
        .merge(workspaces::routes())
        .merge(admin::routes())
        .merge(pricing::routes())
        .merge(provider_keys::routes())
        .merge(local_endpoints::routes())
        .merge(sessions::routes())
        .merge(usage_reads)
        .merge(usage::admin_routes())
        .merge(billing::routes())
        .merge(runtime_openai)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_in_flight))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

/// Counts a request from its arrival until its response body is done or dropped.
async fn count_in_flight(state: axum::extract::State<AppState>, request: Request, next: middleware::Next) -> Response {
    struct Done(Arc<AtomicUsize>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    state.in_flight.fetch_add(1, Ordering::Relaxed);
    let done = Done(state.in_flight.clone());
    let (parts, body) = next.run(request).await.into_parts();
    let body = http_body_util::BodyExt::map_frame(body, move |frame| {
        let _ = &done;
        frame
    });
    Response::from_parts(parts, axum::body::Body::new(body))
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
