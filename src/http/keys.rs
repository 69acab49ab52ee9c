//! API-key management (dashboard session): `POST/GET /v1/keys`, `PATCH/DELETE /v1/keys/:id`.

use axum::{
    extract::{Path, State},
    routing::{get, patch},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::{KeyPatch, KeyView, NewKey};

use super::{
    error::ApiError,
    extract::{JsonBody, Session},
    wire::{double_option, iso},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", patch(update_key).delete(revoke_key))
}

#[derive(Deserialize)]
struct CreateKeyRequest {
    name: Option<String>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    workspace_id: Option<String>,
    workspace_name: Option<String>,
    /// Beyond the spec: this key's own requests-per-minute limit.
    rate_limit_rpm: Option<u32>,
}

#[derive(Deserialize)]
struct UpdateKeyRequest {
    name: Option<String>,
    metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    rate_limit_rpm: Option<Option<u32>>,
}

fn key_json(view: &KeyView) -> Value {
    let k = &view.record;
    json!({
        "id": k.id,
        "name": k.name,
        "metadata": k.metadata,
        "workspace_id": k.workspace_slug,
        "workspace_name": view.workspace_name,
        "keyPrefix": k.prefix,
        "lastUsedAt": k.last_used_at_ms.map(iso),
        "createdAt": iso(k.created_at_ms),
        "rate_limit_rpm": k.rate_limit_rpm,
    })
}

async fn create_key(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(req): JsonBody<CreateKeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let new = NewKey {
        name: req.name,
        metadata: req.metadata.unwrap_or_default(),
        workspace_slug: req.workspace_id,
        workspace_name: req.workspace_name,
        rate_limit_rpm: req.rate_limit_rpm,
    };
    let (view, secret) = state.engine.directory().create_key(&who.account_id, new).await?;
    let k = &view.record;
    Ok(Json(json!({
        "id": k.id,
        "key": secret,
        "name": k.name,
        "prefix": k.prefix,
        "metadata": k.metadata,
        "workspace_id": k.workspace_slug,
        "workspace_name": view.workspace_name,
        "rate_limit_rpm": k.rate_limit_rpm,
    })))
}

async fn list_keys(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    let keys = state.engine.directory().list_keys(&who.account_id)?;
    Ok(Json(json!({ "object": "list", "data": keys.iter().map(key_json).collect::<Vec<_>>() })))
}

async fn update_key(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateKeyRequest>,
) -> Result<Json<Value>, ApiError> {
    let patch = KeyPatch { name: req.name, metadata: req.metadata, rate_limit_rpm: req.rate_limit_rpm };
    let view = state.engine.directory().update_key(&who.account_id, &id, patch).await?;
    Ok(Json(key_json(&view)))
}

async fn revoke_key(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.engine.directory().revoke_key(&who.account_id, &id).await?;
    Ok(Json(json!({ "deleted": true, "id": id })))
}
