//! `/livez` (the process answers) and `/readyz` (it can take traffic: storage answers and it
//! is not shutting down). `/readyz` also names the embedder and the chunk embedder, and says
//! when a fallback stands in for a model (degraded, not unready: it still answers).

use std::sync::atomic::Ordering;

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/livez", get(livez)).route("/readyz", get(readyz))
}

async fn livez() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    if state.shutting_down.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting_down" })));
    }
    match state.engine.store().meta_get("schema_version_probe") {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({ "status": "ready", "embedder": embedder(&state), "chunk_embedder": chunk_embedder(&state) })),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "storage_unavailable", "message": e.to_string() })),
        ),
    }
}

/// What makes source chunks' vectors: degraded when the static model is configured but not
/// loaded (chunks then use the embedder, and a large source's vectors trail its ingestion).
fn chunk_embedder(state: &AppState) -> Value {
    match state.engine.knowledge().chunk_embedder() {
        (id, None) => json!({ "id": id, "status": "ok" }),
        (id, Some(reason)) => json!({
            "id": id,
            "status": "degraded",
            "detail": format!("{reason}; source chunks use the embedder. Get it with `tokaroo models pull` and restart."),
        }),
    }
}

fn embedder(state: &AppState) -> Value {
    let embedder = state.engine.embedder();
    match embedder.fallback_reason() {
        None => json!({ "id": embedder.id(), "status": "ok" }),
        Some(reason) => json!({
            "id": embedder.id(),
            "status": "degraded",
            "detail": format!(
                "the neural embedding model is not active ({reason}); the lexical fallback is in use. \
                 Get the model with `tokaroo models pull` (or set TOKAROO_EMBED_MODEL_DIR) and restart."
            ),
        }),
    }
}
