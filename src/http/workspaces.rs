//! Workspace management (dashboard session): `POST/GET /v1/workspaces`,
//! `GET/PATCH /v1/workspaces/:workspace_id`.

use axum::{
    extract::{Path, State},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::{records::Workspace, NewWorkspace, WorkspacePatch};

use super::{
    error::ApiError,
    extract::{JsonBody, Session},
    wire::{double_option, iso},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces", get(list_workspaces).post(create_workspace))
        .route("/v1/workspaces/{workspace_id}", get(get_workspace).patch(update_workspace))
}

#[derive(Deserialize)]
struct CreateWorkspaceRequest {
    workspace_id: String,
    name: String,
    metadata: Option<Map<String, Value>>,
    monthly_budget_usd: Option<f64>,
}

#[derive(Deserialize)]
struct UpdateWorkspaceRequest {
    name: Option<String>,
    status: Option<String>,
    metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    monthly_budget_usd: Option<Option<f64>>,
}

fn workspace_json(w: &Workspace) -> Value {
    json!({
        "id": w.id,
        "workspace_id": w.slug,
        "name": w.name,
        "status": w.status.as_str(),
        "metadata": w.metadata,
        "monthly_budget_usd": w.monthly_budget_usd,
        "created_at": iso(w.created_at_ms),
        "updated_at": iso(w.updated_at_ms),
    })
}

async fn create_workspace(
    State(state): State<AppState>,
    Session(who): Session,
    JsonBody(req): JsonBody<CreateWorkspaceRequest>,
) -> Result<Json<Value>, ApiError> {
    let new = NewWorkspace {
        slug: req.workspace_id,
        name: req.name,
        metadata: req.metadata.unwrap_or_default(),
        monthly_budget_usd: req.monthly_budget_usd,
    };
    let ws = state.engine.directory().create_workspace(&who.account_id, new).await?;
    Ok(Json(workspace_json(&ws)))
}

async fn list_workspaces(State(state): State<AppState>, Session(who): Session) -> Result<Json<Value>, ApiError> {
    let list = state.engine.directory().list_workspaces(&who.account_id)?;
    Ok(Json(json!({ "object": "list", "data": list.iter().map(workspace_json).collect::<Vec<_>>() })))
}

async fn get_workspace(
    State(state): State<AppState>,
    Session(who): Session,
    Path(slug): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut body = workspace_json(&state.engine.directory().get_workspace(&who.account_id, &slug)?);
    // Beyond the spec: what the workspace has spent this calendar month (UTC), against its budget.
    body["month_to_date_usd"] = json!(state.engine.funding().workspace_month_spend_usd(&who.account_id, &slug).await?);
    Ok(Json(body))
}

async fn update_workspace(
    State(state): State<AppState>,
    Session(who): Session,
    Path(slug): Path<String>,
    JsonBody(req): JsonBody<UpdateWorkspaceRequest>,
) -> Result<Json<Value>, ApiError> {
    let patch = WorkspacePatch {
        name: req.name,
        status: req.status,
        metadata: req.metadata,
        monthly_budget_usd: req.monthly_budget_usd,
    };
    let ws = state.engine.directory().update_workspace(&who.account_id, &slug, patch).await?;
    Ok(Json(workspace_json(&ws)))
}
