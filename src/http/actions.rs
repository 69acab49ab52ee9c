//! Action guardrails: `GET/POST /v1/actions/policies` and `POST /v1/actions/check`.
//!
//! Runtime keys may check; only dashboard sessions write policies. A key bound to a workspace
//! checks in that workspace, under its policies and the account-wide ones.

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::actions::{actions::ActionPolicy, CheckInput, PolicyInput, FIELDS};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams},
    memory::{scope, who, workspace_json},
    wire::{iso, usd},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/actions/policies", get(list_policies).post(upsert_policy))
        .route("/v1/actions/check", post(check))
}

fn policy_json(policy: &ActionPolicy) -> Value {
    let mut matches: Map<String, Value> =
        policy.patterns.iter().map(|(field, patterns)| (field.clone(), json!(patterns))).collect();
    if policy.amount_min_units.is_some() || policy.amount_max_units.is_some() {
        matches.insert(
            "requested_amount_usd".into(),
            json!({"min": policy.amount_min_units.map(usd), "max": policy.amount_max_units.map(usd)}),
        );
    }
    if !policy.metadata.is_empty() {
        let metadata: Map<String, Value> = policy.metadata.iter().map(|(k, p)| (k.clone(), json!(p))).collect();
        matches.insert("metadata".into(), Value::Object(metadata));
    }
    json!({
        "object": "action.policy",
        "id": policy.id,
        "workspace_id": workspace_json(&policy.workspace),
        "name": policy.name,
        "description": policy.description,
        "effect": policy.effect,
        "priority": policy.priority,
        "status": policy.status,
        "match": matches,
        "created_at": iso(policy.created_at_ms),
        "updated_at": iso(policy.updated_at_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    workspace_id: Option<String>,
    name: String,
    description: Option<String>,
    effect: String,
    priority: Option<i64>,
    status: Option<String>,
    #[serde(rename = "match", default)]
    matches: Map<String, Value>,
}

async fn upsert_policy(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PolicyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if matches!(caller, Caller::Key(_)) {
        return Err(ApiError::SessionRequired);
    }
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let input = PolicyInput {
        name: body.name,
        description: body.description,
        effect: body.effect,
        priority: body.priority,
        status: body.status,
        matches: body.matches,
    };
    let (policy, created) = state.engine.actions().upsert_policy(&scope, input).await?;
    let mut answer = policy_json(&policy);
    answer["created"] = json!(created);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyQuery {
    workspace_id: Option<String>,
}

async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<PolicyQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match (&caller, &q.workspace_id) {
        (Caller::Key(key), None) => key.workspace_slug.clone(),
        (_, Some(asked)) => Some(scope(&state, &caller, Some(asked))?.workspace),
        (Caller::Session(_), None) => None,
    };
    let policies = state.engine.actions().policies(caller.account_id(), workspace.as_deref())?;
    Ok(Json(json!({ "object": "list", "data": policies.iter().map(policy_json).collect::<Vec<_>>() })))
}

async fn check(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let mut input = CheckInput { by: who(&caller), ..CheckInput::default() };
    let mut workspace_id = None;
    for (field, value) in &body {
        let text = || {
            value.as_str().map(str::to_owned).ok_or_else(|| ApiError::BadRequest(format!("{field} must be a string")))
        };
        match field.as_str() {
            "workspace_id" => workspace_id = Some(text()?),
            "external_source" => input.external_source = Some(text()?),
            "external_id" => input.external_id = Some(text()?),
            "requested_amount_usd" => {
                input.requested_amount_usd = Some(
                    value
                        .as_f64()
                        .ok_or_else(|| ApiError::BadRequest("requested_amount_usd must be a number".into()))?,
                )
            }
            "metadata" => {
                input.metadata = value
                    .as_object()
                    .cloned()
                    .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?
            }
            f if FIELDS.contains(&f) => {
                input.fields.insert(field.clone(), text()?);
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Unknown field `{other}`: a check takes {}, requested_amount_usd, external_source, external_id, \
                     metadata and workspace_id",
                    FIELDS.join(", ")
                )))
            }
        }
    }
    let scope = scope(&state, &caller, workspace_id.as_deref())?;
    let decision = state.engine.actions().check(&scope, input).await?;
    Ok(Json(json!({
        "object": "action.decision",
        "decision": decision.decision,
        "allowed": decision.decision == "allow",
        "reason": decision.reason,
        "policy": decision.policy.as_ref().map(|p| json!({"id": p.id, "name": p.name, "effect": p.effect})),
        "approval_id": decision.approval.as_ref().map(|a| a.id.clone()),
        "approval": decision.approval.as_ref().map(|a| json!({
            "id": a.id, "status": a.status, "expires_at": iso(a.expires_at_ms),
        })),
        "audit_id": decision.audit_id,
    })))
}
