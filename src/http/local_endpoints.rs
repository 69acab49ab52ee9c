//! Self-hosted endpoints (dashboard session): `POST/GET /v1/local-endpoints`,
//! `GET/PATCH/DELETE /v1/local-endpoints/:id`, `POST .../:id/recheck`, `GET .../:id/models`.
//! Custom headers are stored sealed and never returned.

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::routing::connections::{EndpointPatch, EndpointView, NewEndpoint};

use super::{
    error::ApiError,
    extract::{JsonBody, QueryParams, Session},
    wire::{double_option, iso},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/local-endpoints", get(list).post(create))
        .route("/v1/local-endpoints/{id}", get(show).patch(update).delete(remove))
        .route("/v1/local-endpoints/{id}/recheck", post(recheck))
        .route("/v1/local-endpoints/{id}/models", get(models))
}

#[derive(Deserialize)]
struct CreateRequest {
    url: String,
    label: Option<String>,
    default_model: Option<String>,
    headers: Option<Map<String, Value>>,
    workspace_id: Option<String>,
}

#[derive(Deserialize)]
struct UpdateRequest {
    url: Option<String>,
    label: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    default_model: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    headers: Option<Option<Map<String, Value>>>,
}

#[derive(Deserialize)]
struct ListQuery {
    workspace_id: Option<String>,
}

fn endpoint_json(v: &EndpointView) -> Value {
    let e = &v.record;
    json!({
        "id": e.id,
        "url": e.url,
        "label": e.label,
        "default_model": e.default_model,
        "workspace_id": e.workspace_slug,
        "status": e.status,
        "models": e.models,
        "has_headers": v.has_headers,
        "last_checked_at": e.last_checked_at_ms.map(iso),
        "created_at": iso(e.created_at_ms),
        "updated_at": iso(e.updated_at_ms),
    })
}

async fn create(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let new = NewEndpoint {
        url: req.url,
        label: req.label,
        default_model: req.default_model,
        headers: req.headers,
        workspace_slug: req.workspace_id,
    };
    Ok(Json(endpoint_json(&state.engine.connections().create_endpoint(&who.account_id, new).await?)))
}

async fn list(
    State(state): State<AppState>,
    Session(who): Session,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let list = state.engine.connections().list_endpoints(&who.account_id, q.workspace_id.as_deref())?;
    Ok(Json(json!({ "object": "list", "data": list.iter().map(endpoint_json).collect::<Vec<_>>() })))
}

async fn show(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(endpoint_json(&state.engine.connections().get_endpoint(&who.account_id, &id)?)))
}

async fn update(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateRequest>,
) -> Result<Json<Value>, ApiError> {
    let patch =
        EndpointPatch { url: req.url, label: req.label, default_model: req.default_model, headers: req.headers };
    Ok(Json(endpoint_json(&state.engine.connections().update_endpoint(&who.account_id, &id, patch).await?)))
}

async fn remove(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.engine.connections().delete_endpoint(&who.account_id, &id).await?;
    Ok(Json(json!({ "deleted": true, "id": id })))
}

async fn recheck(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(endpoint_json(&state.engine.connections().recheck_endpoint(&who.account_id, &id).await?)))
}

async fn models(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let view = state.engine.connections().get_endpoint(&who.account_id, &id)?;
    let data: Vec<Value> =
        view.record.models.iter().map(|m| json!({ "id": m, "object": "model", "owned_by": "local" })).collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}
