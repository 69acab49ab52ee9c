//! `GET /v1/pricing` (public): the reference catalog Tokaroo routes across.

use axum::{extract::State, routing::get, Json, Router};
use serde_json::{json, Value};

use super::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/pricing", get(pricing))
}

async fn pricing(State(state): State<AppState>) -> Json<Value> {
    let catalog = state.engine.runtime().catalog();
    let data: Vec<Value> = catalog
        .models
        .iter()
        .map(|m| {
            let mut entry = json!({
                "id": m.id,
                "name": m.name,
                "provider": m.provider,
                "input_per_1m": m.input_per_1m,
                "output_per_1m": m.output_per_1m,
                "capabilities": m.capabilities,
                "context_window": m.context_window,
            });
            // Media models: unit prices (per image by size and quality, per 1k characters,
            // per minute, per second), options and limits.
            if let Some(media) = &m.media {
                entry["media"] = json!(media);
            }
            entry
        })
        .collect();
    Json(json!({ "object": "list", "data": data, "researched_at": catalog.researched_at }))
}
