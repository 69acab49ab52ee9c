//! Action guardrails: `GET/POST /v1/actions/policies`, `POST /v1/actions/check`,
//! `GET /v1/actions/approvals`, `POST /v1/actions/approvals/:id/decide` and
//! `GET/POST /v1/actions/audit`.
//!
//! Runtime keys may check and report; only dashboard sessions write policies and decide
//! approvals. A key bound to a workspace works in that workspace, under its policies and the
//! account-wide ones.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::actions::{
    actions::{ActionApproval, ActionAudit, ActionPolicy},
    effective_status, AuditFilter, AuditInput, CheckInput, PolicyInput, FIELDS,
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams, Session},
    harness::access,
    memory::{list_limit, scope, who, workspace_json},
    wire::{iso, usd},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/actions/policies", get(list_policies).post(upsert_policy))
        .route("/v1/actions/check", post(check))
        .route("/v1/actions/approvals", get(list_approvals))
        .route("/v1/actions/approvals/{id}/decide", post(decide))
        .route("/v1/actions/audit", get(list_audit).post(report))
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
    Session(identity): Session,
    JsonBody(body): JsonBody<PolicyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = Caller::Session(identity);
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
    let policies = state.engine.actions().policies(caller.account_id(), workspace.as_deref()).await?;
    Ok(Json(json!({ "object": "list", "data": policies.iter().map(policy_json).collect::<Vec<_>>() })))
}

fn text(field: &str, value: &Value) -> Result<String, ApiError> {
    value.as_str().map(str::to_owned).ok_or_else(|| ApiError::BadRequest(format!("{field} must be a string")))
}

/// What a check and an audit event both take: the action's fields, `metadata` and
/// `workspace_id`.
#[derive(Default)]
struct ActionBody {
    fields: std::collections::HashMap<String, String>,
    metadata: Map<String, Value>,
    workspace_id: Option<String>,
}

impl ActionBody {
    /// Takes `field` when it is one of these (true), else leaves it to the caller (false).
    fn take(&mut self, field: &str, value: &Value) -> Result<bool, ApiError> {
        match field {
            "workspace_id" => self.workspace_id = Some(text(field, value)?),
            "metadata" => {
                self.metadata = value
                    .as_object()
                    .cloned()
                    .ok_or_else(|| ApiError::BadRequest("metadata must be an object".into()))?
            }
            f if FIELDS.contains(&f) => {
                self.fields.insert(field.to_owned(), text(field, value)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

async fn check(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let mut input = CheckInput { by: who(&caller), ..CheckInput::default() };
    let mut action = ActionBody::default();
    for (field, value) in &body {
        if action.take(field, value)? {
            continue;
        }
        match field.as_str() {
            "external_source" => input.external_source = Some(text(field, value)?),
            "external_id" => input.external_id = Some(text(field, value)?),
            "requested_amount_usd" => {
                input.requested_amount_usd = Some(
                    value
                        .as_f64()
                        .ok_or_else(|| ApiError::BadRequest("requested_amount_usd must be a number".into()))?,
                )
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
    let (fields, metadata, workspace_id) = (action.fields, action.metadata, action.workspace_id);
    input.fields = fields;
    input.metadata = metadata;
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
            "id": a.id, "status": effective_status(a, tokaroo_actors::clock::now_ms()), "expires_at": iso(a.expires_at_ms),
        })),
        "audit_id": decision.audit_id,
    })))
}

pub(super) fn approval_json(approval: &ActionApproval) -> Value {
    json!({
        "object": "action.approval",
        "id": approval.id,
        "workspace_id": workspace_json(&approval.workspace),
        "status": effective_status(approval, tokaroo_actors::clock::now_ms()),
        "action": approval.action,
        "mission": approval.mission,
        "policy_id": approval.policy_id,
        "reason": approval.reason,
        "external_source": approval.external_source,
        "external_id": approval.external_id,
        "decided_by": approval.decided_by,
        "note": approval.decision_note,
        "created_at": iso(approval.created_at_ms),
        "expires_at": iso(approval.expires_at_ms),
        "decided_at": approval.decided_at_ms.map(iso),
    })
}

pub(super) fn audit_json(event: &ActionAudit) -> Value {
    json!({
        "object": "action.audit",
        "id": event.id,
        "workspace_id": workspace_json(&event.workspace),
        "event": event.event,
        "decision": event.decision,
        "tool_ref": event.tool_ref,
        "mission": event.mission,
        "policy_id": event.policy_id,
        "approval_id": event.approval_id,
        "reason": event.reason,
        "action": event.action,
        "by": event.by,
        "created_at": iso(event.created_at_ms),
    })
}

/// A mission reference in a query, as the mission's UUID (a `mission_id` of the workspace is
/// resolved; one that names nothing matches nothing).
fn mission_param(
    state: &AppState,
    caller: &Caller,
    workspace_id: Option<&str>,
    mission: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(reference) = mission else { return Ok(None) };
    if reference.is_empty() || reference.len() > 256 || reference.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("mission must be a mission's id or mission_id".into()));
    }
    let in_workspace = scope(state, caller, workspace_id)?;
    let found = state.engine.missions().find(&in_workspace.account_id, &in_workspace.workspace, reference)?;
    Ok(Some(found.map_or_else(|| reference.to_owned(), |m| m.id)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalQuery {
    workspace_id: Option<String>,
    mission: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

async fn list_approvals(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ApprovalQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(status) = &q.status {
        if !matches!(status.as_str(), "pending" | "approved" | "rejected" | "expired") {
            return Err(ApiError::BadRequest("status must be pending, approved, rejected or expired".into()));
        }
    }
    let mut access = access(&caller);
    if let Some(asked) = &q.workspace_id {
        access.workspace = Some(scope(&state, &caller, Some(asked))?.workspace);
    }
    let mission = mission_param(&state, &caller, q.workspace_id.as_deref(), q.mission.as_deref())?;
    let approvals =
        state.engine.actions().approvals(&access, mission.as_deref(), q.status.as_deref(), list_limit(q.limit)?)?;
    Ok(Json(json!({ "object": "list", "data": approvals.iter().map(approval_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {
    /// `approve` or `reject`.
    decision: String,
    note: Option<String>,
}

async fn decide(
    State(state): State<AppState>,
    Session(identity): Session,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<DecideBody>,
) -> Result<Json<Value>, ApiError> {
    let caller = Caller::Session(identity);
    let approve = match body.decision.as_str() {
        "approve" => true,
        "reject" => false,
        other => return Err(ApiError::BadRequest(format!("decision must be approve or reject; got {other:?}"))),
    };
    let approval = state.engine.actions().decide(&access(&caller), &id, approve, body.note, &who(&caller)).await?;
    Ok(Json(approval_json(&approval)))
}

async fn report(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut input = AuditInput { by: who(&caller), ..AuditInput::default() };
    let mut action = ActionBody::default();
    for (field, value) in &body {
        if action.take(field, value)? {
            continue;
        }
        match field.as_str() {
            "event" => input.event = text(field, value)?,
            "approval_id" => input.approval_id = Some(text(field, value)?),
            "reason" => input.reason = Some(text(field, value)?),
            other => {
                return Err(ApiError::BadRequest(format!(
                    "Unknown field `{other}`: an audit event takes event, {}, approval_id, reason, metadata and workspace_id",
                    FIELDS.join(", ")
                )))
            }
        }
    }
    let (fields, metadata, workspace_id) = (action.fields, action.metadata, action.workspace_id);
    input.fields = fields;
    input.metadata = metadata;
    let scope = scope(&state, &caller, workspace_id.as_deref())?;
    let event = state.engine.actions().report(&scope, input).await?;
    Ok((StatusCode::CREATED, Json(audit_json(&event))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    workspace_id: Option<String>,
    mission: Option<String>,
    tool_ref: Option<String>,
    decision: Option<String>,
    event: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn list_audit(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match &q.workspace_id {
        Some(asked) => Some(scope(&state, &caller, Some(asked))?.workspace),
        None => None,
    };
    if let Some(before) = &q.before {
        if before.is_empty() || before.len() > 256 || before.chars().any(char::is_control) {
            return Err(ApiError::BadRequest("before must be an audit event's id".into()));
        }
    }
    let since_ms = match &q.since {
        Some(text) => Some(
            super::wire::parse_iso_us(text)
                .map(|us| us / 1_000)
                .ok_or_else(|| ApiError::BadRequest("since must be an RFC 3339 time".into()))?,
        ),
        None => None,
    };
    let limit = list_limit(q.limit)?;
    let filter = AuditFilter {
        workspace,
        mission: mission_param(&state, &caller, q.workspace_id.as_deref(), q.mission.as_deref())?,
        tool_ref: q.tool_ref,
        decision: q.decision,
        event: q.event,
        since_ms,
        before: q.before,
        limit,
    };
    let events = state.engine.actions().audit(&access(&caller), &filter)?;
    let next = (events.len() == limit).then(|| events.last().map(|e| e.id.clone())).flatten();
    Ok(Json(json!({
        "object": "list",
        "data": events.iter().map(audit_json).collect::<Vec<_>>(),
        "next_before": next,
    })))
}
