//! `GET /v1/models`: the three routing tiers a runtime key can request.

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};
use tokaroo_actors::chat::Mode;

use super::{extract::ApiKey, AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

async fn list_models(_key: ApiKey) -> Json<Value> {
    let data: Vec<Value> = Mode::ALL
        .map(|mode| json!({ "id": mode.as_str(), "object": "model", "owned_by": "tokaroo", "created": 0 }))
        .into();
    Json(json!({ "object": "list", "data": data }))
}
