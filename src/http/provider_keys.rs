//! BYOK provider keys (dashboard session): `POST/GET /v1/provider-keys`, `DELETE /v1/provider-keys/:id`.
//! Secrets go in and never come out.

use axum::{
    extract::{Path, State},
    routing::{delete, get},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use tokaroo_actors::routing::connections::{NewProviderKey, ProviderKeyView};

use super::{
    error::ApiError,
    extract::{JsonBody, QueryParams, Session},
    wire::iso,
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/provider-keys", get(list).post(create)).route("/v1/provider-keys/{id}", delete(remove))
}

#[derive(Deserialize)]
struct CreateRequest {
    provider: String,
    label: Option<String>,
    secret: String,
    workspace_id: Option<String>,
}

#[derive(Deserialize)]
struct ListQuery {
    workspace_id: Option<String>,
}

fn key_json(v: &ProviderKeyView) -> Value {
    let k = &v.record;
    let h = v.health.as_ref();
    let status = h.map(|h| h.status).unwrap_or("unknown");
    let pick = |live: Option<i64>, stored: Option<i64>| live.or(stored).map(iso);
    json!({
        "id": k.id,
        "provider": k.provider,
        "label": k.label,
        "workspace_id": k.workspace_slug,
        "workspace_name": v.workspace_name,
        "status": if h.is_some_and(|h| h.successes == 0 && h.failures == 0) { "active" } else { status },
        "last_success_at": pick(h.and_then(|h| h.last_success_at_ms), k.last_success_at_ms),
        "last_failure_at": pick(h.and_then(|h| h.last_failure_at_ms), k.last_failure_at_ms),
        "last_failure_code": h.and_then(|h| h.last_failure_code.clone()).or_else(|| k.last_failure_code.clone()),
        "estimated_reset_at": pick(h.and_then(|h| h.cooldown_until_ms), k.estimated_reset_at_ms),
    })
}

async fn create(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(req): JsonBody<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let new = NewProviderKey {
        provider: req.provider,
        label: req.label,
        secret: req.secret,
        workspace_slug: req.workspace_id,
    };
    let view = state.engine.connections().create_provider_key(&who.account_id, new).await?;
    let k = &view.record;
    Ok(Json(
        json!({ "created": true, "id": k.id, "provider": k.provider, "label": k.label, "workspace_id": k.workspace_slug }),
    ))
}

async fn list(
    State(state): State<AppState>,
    Session(who): Session,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let keys = state.engine.connections().list_provider_keys(&who.account_id, q.workspace_id.as_deref())?;
    Ok(Json(json!({ "object": "list", "data": keys.iter().map(key_json).collect::<Vec<_>>() })))
}

async fn remove(
    State(state): State<AppState>,
    Session(who): Session,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.engine.connections().delete_provider_key(&who.account_id, &id).await?;
    Ok(Json(json!({ "deleted": true, "id": id })))
}
