//! `GET /v1/models`: the three routing tiers a runtime key can request.

use axum::{routing::get, Json, Router};
use serde_json::{json, Value};

use super::{extract::ApiKey, AppState};

pub const TIERS: [&str; 3] = ["auto", "fast", "max"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/models", get(list_models))
}

async fn list_models(_key: ApiKey) -> Json<Value> {
    let data: Vec<Value> =
        TIERS.iter().map(|id| json!({ "id": id, "object": "model", "owned_by": "tokaroo", "created": 0 })).collect();
    Json(json!({ "object": "list", "data": data }))
}
