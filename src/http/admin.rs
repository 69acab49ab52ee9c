//! Operator routes: tenant accounts and the live actor tree.

use axum::{
    extract::State,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    error::ApiError,
    extract::{JsonBody, Operator, QueryParams},
    wire::iso,
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(list_accounts).post(create_account))
        .route("/admin/actors", get(actor_tree))
        .route("/admin/cache", axum::routing::delete(clear_cache))
        .route("/admin/actors/fail", post(inject_failure))
        .route("/admin/debug/sleep", post(sleep))
        .route("/admin/debug/storage", post(storage_fault))
}

#[derive(Deserialize)]
struct CreateAccountRequest {
    name: String,
    /// A self-serve signup: its first key waits for the activation checklist.
    #[serde(default)]
    self_serve: bool,
}

async fn create_account(
    State(state): State<AppState>,
    _op: Operator,
    JsonBody(req): JsonBody<CreateAccountRequest>,
) -> Result<Json<Value>, ApiError> {
    let (account, session_token) = state.engine.directory().create_account(&req.name, req.self_serve).await?;
    Ok(Json(json!({
        "id": account.id,
        "name": account.name,
        "session_token": session_token,
        "created_at": iso(account.created_at_ms),
    })))
}

async fn list_accounts(State(state): State<AppState>, _op: Operator) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .engine
        .directory()
        .list_accounts()?
        .into_iter()
        .map(
            |a| json!({ "id": a.id, "name": a.name, "is_operator": a.is_operator, "created_at": iso(a.created_at_ms) }),
        )
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

async fn actor_tree(State(state): State<AppState>, _op: Operator) -> Json<Value> {
    Json(serde_json::to_value(state.engine.actor_tree().await).unwrap_or(Value::Null))
}

#[derive(Deserialize)]
struct InjectFailureRequest {
    name: String,
}

/// Test-only (`debug.fault_injection`): makes the named actor fail as a bug would.
async fn inject_failure(
    State(state): State<AppState>,
    _op: Operator,
    JsonBody(req): JsonBody<InjectFailureRequest>,
) -> Result<Json<Value>, ApiError> {
    require_fault_injection(&state, "/admin/actors/fail")?;
    state.engine.inject_failure(&req.name)?;
    Ok(Json(json!({ "ok": true, "name": req.name })))
}

#[derive(Deserialize)]
struct SleepRequest {
    ms: u64,
}

/// Test-only (`debug.fault_injection`): a request that stays in flight for `ms` (at most 10 s),
/// so graceful shutdown can be shown to let it finish.
async fn sleep(
    State(state): State<AppState>,
    _op: Operator,
    JsonBody(req): JsonBody<SleepRequest>,
) -> Result<Json<Value>, ApiError> {
    require_fault_injection(&state, "/admin/debug/sleep")?;
    tokio::time::sleep(std::time::Duration::from_millis(req.ms.min(10_000))).await;
    Ok(Json(json!({ "slept_ms": req.ms.min(10_000) })))
}

#[derive(Deserialize)]
struct StorageFaultRequest {
    hold_flushes: bool,
}

/// Test-only (`debug.fault_injection`): holds every storage flush, as a disk that stopped
/// answering would, so bounded shutdown can be shown with a hung dependency.
async fn storage_fault(
    State(state): State<AppState>,
    _op: Operator,
    JsonBody(req): JsonBody<StorageFaultRequest>,
) -> Result<Json<Value>, ApiError> {
    require_fault_injection(&state, "/admin/debug/storage")?;
    state.engine.hold_storage_flushes(req.hold_flushes)?;
    Ok(Json(json!({ "hold_flushes": req.hold_flushes })))
}

/// Test-only routes do not exist unless `debug.fault_injection` is on.
pub(super) fn require_fault_injection(state: &AppState, path: &str) -> Result<(), ApiError> {
    if state.config.debug.fault_injection {
        Ok(())
    } else {
        Err(ApiError::RouteNotFound { method: "POST".into(), path: path.into() })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearCacheQuery {
    /// Whose answers; the operator's own account when unset.
    account_id: Option<String>,
    workspace_id: Option<String>,
    /// Every partition of every account.
    all: Option<bool>,
}

/// `DELETE /admin/cache`: removes cached answers of one workspace, of one account, or (with
/// `all=true`) all of them. Under `cache.scope = "global"` answers are shared, so any clear
/// empties the one partition.
async fn clear_cache(
    State(state): State<AppState>,
    Operator(operator): Operator,
    QueryParams(q): QueryParams<ClearCacheQuery>,
) -> Result<Json<Value>, ApiError> {
    let cache = state.engine.runtime().cache();
    let prefix = if q.all == Some(true) {
        String::new()
    } else {
        let account_id = q.account_id.unwrap_or(operator.account_id);
        cache.partition_prefix(&account_id, q.workspace_id.as_deref())
    };
    let removed = cache.clear(&prefix).map_err(tokaroo_actors::EngineError::from)?;
    Ok(Json(json!({ "ok": true, "removed": removed })))
}
