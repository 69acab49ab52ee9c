//! The mission harness: `GET/POST /v1/harness/missions`, `GET/PATCH /v1/harness/missions/:id`,
//! `POST /v1/harness/missions/:id/steps`, `PATCH /v1/harness/missions/:id/steps/:step_id`,
//! `POST /v1/harness/missions/:id/artifacts`, `GET/POST /v1/harness/traces`,
//! `GET /v1/harness/traces/:id` and `POST /v1/harness/feedback`.
//!
//! Runtime keys (agents) and dashboard sessions both reach them. A key bound to a workspace
//! reads and writes that workspace's missions only; an unbound key or a session, every
//! workspace of its account (`workspace_id` narrows a list, and places a new mission).

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::harness::{
    inputs::{ArtifactInput, MissionPatch, StepInput},
    mission::{allowed_next, is_finished},
    reflections::ReflectionInput,
    traces::{ObservationInput, TraceFilter, TraceLinks},
    versions::{effective_retrieval, VersionInput},
    Access, HarnessTrace, HarnessVersion, Mission, MissionArtifact, MissionFilter, MissionStep, Reflection,
    TraceDocument, TraceFeedback, TraceMemory,
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams, RequestId},
    memory::{list_limit, scope, workspace_json},
    wire::{double_option, iso, parse_iso_us, usd},
    AppState,
};

/// Steps and artifacts a mission's detail shows at most (each; the newest).
const DETAIL_ITEMS: usize = 1_000;
/// Artifact contents a mission's detail carries at most, in all.
const DETAIL_CONTENT_BYTES: usize = 1 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/harness/missions", get(list_missions).post(upsert_mission))
        .route("/v1/harness/missions/{id}", get(get_mission).patch(update_mission))
        .route("/v1/harness/missions/{id}/steps", post(upsert_step))
        .route("/v1/harness/missions/{id}/steps/{step_id}", patch(update_step))
        .route("/v1/harness/missions/{id}/artifacts", post(add_artifact))
        .route("/v1/harness/missions/{id}/artifacts/{artifact_id}", get(get_artifact))
        .route("/v1/harness/traces", get(list_traces).post(record_trace))
        .route("/v1/harness/traces/{id}", get(get_trace))
        .route("/v1/harness/feedback", post(feedback))
        .route("/v1/harness/versions", get(list_versions).post(create_version))
        .route("/v1/harness/versions/{id}", get(get_version))
        .route("/v1/harness/versions/{id}/activate", post(activate_version))
        .route("/v1/harness/reflections", get(list_reflections))
        .route("/v1/harness/reflections/generate", post(generate_reflection))
}

/// Traces a mission's detail shows (its newest).
const DETAIL_TRACES: usize = 100;

/// What a caller may reach (see the module's doc).
pub(super) fn access(caller: &Caller) -> Access {
    match caller {
        Caller::Key(key) => Access { account_id: key.account_id.clone(), workspace: key.workspace_slug.clone() },
        Caller::Session(identity) => Access { account_id: identity.account_id.clone(), workspace: None },
    }
}

/// The mission a runtime request is charged to as well: `x-tokaroo-mission` (named
/// explicitly: the second value is true), else the body's `metadata.tokaroo_mission_uuid` or
/// `metadata.mission_id`.
pub(super) fn mission_of(headers: &HeaderMap, body: &Value) -> Result<(Option<String>, bool), ApiError> {
    if let Some(value) = headers.get("x-tokaroo-mission") {
        let value = value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256 && !v.chars().any(char::is_control))
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "x-tokaroo-mission must name a mission: its id or mission_id, 1 to 256 characters".into(),
                )
            })?;
        return Ok((Some(value.to_owned()), true));
    }
    Ok((mission_in_metadata(body.get("metadata").and_then(Value::as_object)), false))
}

/// The mission a request's `metadata` names: `tokaroo_mission_uuid`, else `mission_id`.
pub(super) fn mission_in_metadata(metadata: Option<&Map<String, Value>>) -> Option<String> {
    ["tokaroo_mission_uuid", "mission_id"]
        .iter()
        .find_map(|field| metadata.and_then(|m| m.get(*field)).and_then(Value::as_str))
        .map(str::to_owned)
}

fn mission_json(mission: &Mission) -> Value {
    let finished = is_finished(&mission.status);
    let deadline = mission.last_update_ms.saturating_add((mission.heartbeat_timeout_secs as i64).saturating_mul(1000));
    json!({
        "object": "harness.mission",
        "id": mission.id,
        "mission_id": mission.mission_id,
        "external_source": mission.external_source,
        "external_id": mission.external_id,
        "workspace_id": workspace_json(&mission.workspace),
        "app": mission.app,
        "title": mission.title,
        "goal": mission.goal,
        "status": mission.status,
        "allowed_transitions": allowed_next(&mission.status),
        "progress": mission.progress,
        "outcome": mission.outcome,
        "success": mission.success,
        "risk": mission.risk,
        "metadata": mission.metadata,
        "budget_usd": mission.budget_units.map(usd),
        "spent_usd": usd(mission.spent_units),
        "requests": mission.requests,
        "step_count": mission.step_count,
        "artifact_count": mission.artifact_count,
        "heartbeat_timeout_secs": mission.heartbeat_timeout_secs,
        "heartbeat_deadline": (!finished).then(|| iso(deadline)),
        "stale": mission.stale_since_ms.is_some(),
        "stale_since": mission.stale_since_ms.map(iso),
        "created_at": iso(mission.created_at_ms),
        "updated_at": iso(mission.updated_at_ms),
        "finished_at": mission.finished_at_ms.map(iso),
    })
}

fn step_json(step: &MissionStep) -> Value {
    json!({
        "object": "harness.step",
        "id": step.id,
        "mission": step.mission,
        "step_ref": step.step_ref,
        "task_id": step.task_id,
        "title": step.title,
        "status": step.status,
        "output_summary": step.output_summary,
        "cost_usd": usd(step.cost_units),
        "started_at": step.started_at_ms.map(iso),
        "finished_at": step.finished_at_ms.map(iso),
        "metadata": step.metadata,
        "created_at": iso(step.created_at_ms),
        "updated_at": iso(step.updated_at_ms),
    })
}

fn artifact_json(artifact: &MissionArtifact) -> Value {
    json!({
        "object": "harness.artifact",
        "id": artifact.id,
        "mission": artifact.mission,
        "step_id": artifact.step,
        "kind": artifact.kind,
        "title": artifact.title,
        "url": artifact.url,
        "content": artifact.content,
        "metadata": artifact.metadata,
        "created_at": iso(artifact.created_at_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionBody {
    workspace_id: Option<String>,
    mission_id: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
    app: Option<String>,
    title: Option<String>,
    goal: Option<String>,
    status: Option<String>,
    progress: Option<f64>,
    outcome: Option<String>,
    success: Option<bool>,
    risk: Option<String>,
    metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    budget_usd: Option<Option<f64>>,
    heartbeat_timeout_secs: Option<u64>,
}

impl From<MissionBody> for MissionPatch {
    fn from(b: MissionBody) -> Self {
        MissionPatch {
            mission_id: b.mission_id,
            external_source: b.external_source,
            external_id: b.external_id,
            app: b.app,
            title: b.title,
            goal: b.goal,
            status: b.status,
            progress: b.progress,
            outcome: b.outcome,
            success: b.success,
            risk: b.risk,
            metadata: b.metadata,
            budget_usd: b.budget_usd,
            heartbeat_timeout_secs: b.heartbeat_timeout_secs,
        }
    }
}

async fn upsert_mission(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<MissionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let (mission, created) = state.engine.missions().upsert(&scope, body.into()).await?;
    let mut answer = mission_json(&mission);
    answer["created"] = json!(created);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(answer)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workspace_id: Option<String>,
    status: Option<String>,
    app: Option<String>,
    stale: Option<bool>,
    limit: Option<usize>,
}

async fn list_missions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match &q.workspace_id {
        Some(asked) => Some(scope(&state, &caller, Some(asked))?.workspace),
        None => None,
    };
    if let Some(status) = &q.status {
        if !tokaroo_actors::harness::inputs::MISSION_STATUSES.contains(&status.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "status must be one of {}",
                tokaroo_actors::harness::inputs::MISSION_STATUSES.join(", ")
            )));
        }
    }
    let filter = MissionFilter { workspace, status: q.status, app: q.app, stale: q.stale, limit: list_limit(q.limit)? };
    let missions = state.engine.missions().list(&access(&caller), &filter)?;
    Ok(Json(json!({ "object": "list", "data": missions.iter().map(mission_json).collect::<Vec<_>>() })))
}

async fn get_mission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let missions = state.engine.missions();
    let mission = missions.get(&access(&caller), &id)?;
    let (steps, artifacts) = missions.contents(&mission, DETAIL_ITEMS)?;
    let steps_cost: i64 = steps.iter().fold(0i64, |sum, s| sum.saturating_add(s.cost_units));
    let mut body = mission_json(&mission);
    body["steps"] = json!(steps.iter().map(step_json).collect::<Vec<_>>());
    // Contents up to 1 MiB in all; past it an artifact shows its size, and is read alone.
    let mut budget = DETAIL_CONTENT_BYTES;
    let artifacts: Vec<Value> = artifacts
        .iter()
        .map(|a| {
            let mut body = artifact_json(a);
            let size = a.content.as_ref().map_or(0, String::len);
            if size > budget {
                body["content"] = Value::Null;
                body["content_omitted_bytes"] = json!(size);
            } else {
                budget -= size;
            }
            body
        })
        .collect();
    body["artifacts"] = json!(artifacts);
    body["usage"] = json!({
        "requests": mission.requests,
        "charged_usd": usd(mission.spent_units),
        "budget_usd": mission.budget_units.map(usd),
        "remaining_usd": mission.budget_units.map(|b| usd((b - mission.spent_units).max(0))),
        "steps_cost_usd": usd(steps_cost),
    });
    let filter = TraceFilter { mission: Some(mission.id.clone()), limit: DETAIL_TRACES, ..TraceFilter::default() };
    let traces = state.engine.traces().page(&access(&caller), &filter)?;
    body["traces"] = json!(traces.iter().map(trace_json).collect::<Vec<_>>());
    let actions = state.engine.actions();
    let approvals = actions.approvals(&access(&caller), Some(&mission.id), None, DETAIL_TRACES)?;
    body["approvals"] = json!(approvals.iter().map(super::actions::approval_json).collect::<Vec<_>>());
    let filter = tokaroo_actors::actions::AuditFilter {
        mission: Some(mission.id.clone()),
        limit: DETAIL_TRACES,
        ..Default::default()
    };
    let audit = actions.audit(&access(&caller), &filter)?;
    body["action_audit"] = json!(audit.iter().map(super::actions::audit_json).collect::<Vec<_>>());
    Ok(Json(body))
}

async fn update_mission(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<MissionBody>,
) -> Result<Json<Value>, ApiError> {
    if body.workspace_id.is_some()
        || body.mission_id.is_some()
        || body.external_source.is_some()
        || body.external_id.is_some()
    {
        return Err(ApiError::BadRequest(
            "workspace_id, mission_id, external_source and external_id name a mission; they are not changed by PATCH"
                .into(),
        ));
    }
    let mission = state.engine.missions().update(&access(&caller), &id, body.into()).await?;
    Ok(Json(mission_json(&mission)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    step_ref: Option<String>,
    task_id: Option<String>,
    title: Option<String>,
    status: Option<String>,
    output_summary: Option<String>,
    cost_usd: Option<f64>,
    started_at: Option<String>,
    finished_at: Option<String>,
    metadata: Option<Map<String, Value>>,
}

impl TryFrom<StepBody> for StepInput {
    type Error = ApiError;

    fn try_from(b: StepBody) -> Result<Self, ApiError> {
        let time = |field: &str, value: Option<String>| match value {
            None => Ok(None),
            Some(text) => parse_iso_us(&text).map(|us| Some(us / 1_000)).ok_or_else(|| {
                ApiError::BadRequest(format!("{field} must be an RFC 3339 time such as 2026-11-30T09:00:00Z"))
            }),
        };
        Ok(StepInput {
            started_at_ms: time("started_at", b.started_at)?,
            finished_at_ms: time("finished_at", b.finished_at)?,
            step_ref: b.step_ref,
            task_id: b.task_id,
            title: b.title,
            status: b.status,
            output_summary: b.output_summary,
            cost_usd: b.cost_usd,
            metadata: b.metadata,
        })
    }
}

async fn upsert_step(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StepBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = StepInput::try_from(body)?;
    let (step, created) = state.engine.missions().upsert_step(&access(&caller), &id, input).await?;
    let mut answer = step_json(&step);
    answer["created"] = json!(created);
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(answer)))
}

async fn update_step(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, step_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<StepBody>,
) -> Result<Json<Value>, ApiError> {
    if body.step_ref.is_some() {
        return Err(ApiError::BadRequest("step_ref names a step; it is not changed by PATCH".into()));
    }
    let input = StepInput::try_from(body)?;
    let step = state.engine.missions().patch_step(&access(&caller), &id, &step_id, input).await?;
    Ok(Json(step_json(&step)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactBody {
    kind: String,
    step_id: Option<String>,
    title: Option<String>,
    url: Option<String>,
    content: Option<String>,
    metadata: Option<Map<String, Value>>,
}

async fn add_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ArtifactBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let input = ArtifactInput {
        kind: body.kind,
        step_id: body.step_id,
        title: body.title,
        url: body.url,
        content: body.content,
        metadata: body.metadata.unwrap_or_default(),
    };
    let artifact = state.engine.missions().add_artifact(&access(&caller), &id, input).await?;
    Ok((StatusCode::CREATED, Json(artifact_json(&artifact))))
}

pub(super) fn trace_json(trace: &HarnessTrace) -> Value {
    json!({
        "object": "harness.trace",
        "id": trace.id,
        "trace_type": trace.trace_type,
        "harness_version_id": trace.harness_version_id,
        "mission": trace.mission,
        "task_id": trace.task_id,
        "assistant_id": trace.assistant_id,
        "thread_id": trace.thread_id,
        "workspace_id": workspace_json(&trace.workspace),
        "input_summary": trace.input_summary,
        "output_summary": trace.output_summary,
        "context_strategy": trace.context_strategy,
        "context": {
            "documents": trace.documents.iter().map(|d| json!({"id": d.id, "score": d.score})).collect::<Vec<_>>(),
            "memories": trace.memories.iter().map(|m| json!({
                "id": m.id,
                "score": m.score,
                "relevance_score": m.relevance_score,
                "recency_score": m.recency_score,
                "importance_score": m.importance_score,
                "confidence_score": m.confidence_score,
            })).collect::<Vec<_>>(),
        },
        "charged_usd": usd(trace.charged_units),
        "outcome": trace.outcome,
        "feedback_score": trace.feedback_score,
        "correction": trace.correction,
        "metadata": trace.metadata,
        "created_at": iso(trace.created_at_ms),
        "updated_at": iso(trace.updated_at_ms),
    })
}

/// An id given in a query (a cursor, a mission): 1 to 256 characters, no control characters.
fn id_param(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) => {
            Err(ApiError::BadRequest(format!("{field} must be an id: 1 to 256 characters, no control characters")))
        }
        _ => Ok(()),
    }
}

fn time_param(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            parse_iso_us(text).map(|us| us / 1_000).ok_or_else(|| {
                ApiError::BadRequest(format!("{field} must be an RFC 3339 time such as 2026-11-30T09:00:00Z"))
            })
        })
        .transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceQuery {
    workspace_id: Option<String>,
    /// A mission's UUID, or its `mission_id` in the workspace.
    mission: Option<String>,
    #[serde(rename = "type")]
    trace_type: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

async fn list_traces(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<TraceQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match &q.workspace_id {
        Some(asked) => Some(scope(&state, &caller, Some(asked))?.workspace),
        None => None,
    };
    let limit = list_limit(q.limit)?;
    id_param("mission", q.mission.as_deref())?;
    id_param("before", q.before.as_deref())?;
    let mission = match &q.mission {
        None => None,
        Some(reference) => {
            let in_workspace = scope(&state, &caller, q.workspace_id.as_deref())?;
            let links = state.engine.missions().trace_links(
                &in_workspace.account_id,
                &in_workspace.workspace,
                Some(reference),
                None,
            );
            // A mission the caller cannot see has no traces for it.
            Some(links.mission.unwrap_or_else(|| reference.clone()))
        }
    };
    let filter = TraceFilter {
        workspace,
        mission,
        trace_type: q.trace_type,
        outcome: q.outcome,
        since_ms: time_param("since", q.since.as_deref())?,
        until_ms: time_param("until", q.until.as_deref())?,
        before: q.before,
        limit,
    };
    let traces = state.engine.traces().page(&access(&caller), &filter)?;
    let next = (traces.len() == limit).then(|| traces.last().map(|t| t.id.clone())).flatten();
    Ok(Json(json!({
        "object": "list",
        "data": traces.iter().map(trace_json).collect::<Vec<_>>(),
        "next_before": next,
    })))
}

async fn get_trace(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(trace_json(&state.engine.traces().get(&access(&caller), &id)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextBody {
    #[serde(default)]
    documents: Vec<DocumentBody>,
    #[serde(default)]
    memories: Vec<MemoryBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    id: String,
    score: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryBody {
    id: String,
    score: f64,
    #[serde(default)]
    relevance_score: f64,
    #[serde(default)]
    recency_score: f64,
    #[serde(default)]
    importance_score: f64,
    #[serde(default)]
    confidence_score: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceBody {
    workspace_id: Option<String>,
    trace_type: Option<String>,
    mission_id: Option<String>,
    tokaroo_mission_uuid: Option<String>,
    task_id: Option<String>,
    harness_version_id: Option<String>,
    assistant_id: Option<String>,
    thread_id: Option<String>,
    input_summary: Option<String>,
    output_summary: Option<String>,
    context_strategy: Option<String>,
    context: Option<ContextBody>,
    charged_usd: Option<f64>,
    outcome: Option<String>,
    metadata: Option<Map<String, Value>>,
}

async fn record_trace(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<TraceBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let reference = body.tokaroo_mission_uuid.as_deref().or(body.mission_id.as_deref());
    let mission = match reference {
        None => None,
        Some(reference) => {
            let links = state.engine.missions().trace_links(&scope.account_id, &scope.workspace, Some(reference), None);
            Some(links.mission.ok_or(ApiError::NotFound { what: "mission" })?)
        }
    };
    let context = body.context.unwrap_or(ContextBody { documents: Vec::new(), memories: Vec::new() });
    let input = ObservationInput {
        trace_type: body.trace_type,
        links: TraceLinks {
            mission,
            task_id: body.task_id,
            harness_version_id: body.harness_version_id,
            assistant_id: body.assistant_id,
            thread_id: body.thread_id,
            metadata: body.metadata.unwrap_or_default(),
        },
        input_summary: body.input_summary,
        output_summary: body.output_summary,
        context_strategy: body.context_strategy,
        documents: context.documents.into_iter().map(|d| TraceDocument { id: d.id, score: d.score }).collect(),
        memories: context
            .memories
            .into_iter()
            .map(|m| TraceMemory {
                id: m.id,
                score: m.score,
                relevance_score: m.relevance_score,
                recency_score: m.recency_score,
                importance_score: m.importance_score,
                confidence_score: m.confidence_score,
            })
            .collect(),
        charged_usd: body.charged_usd,
        outcome: body.outcome,
    };
    let trace = state.engine.traces().observe(&scope.account_id, &scope.workspace, input)?;
    Ok((StatusCode::CREATED, Json(trace_json(&trace))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    trace_id: String,
    rating: Option<f64>,
    outcome: Option<String>,
    correction: Option<String>,
    remember_text: Option<String>,
    #[serde(default)]
    forget: Vec<String>,
    items: Option<Vec<String>>,
}

async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<FeedbackBody>,
) -> Result<Json<Value>, ApiError> {
    if body.rating.is_none()
        && body.outcome.is_none()
        && body.correction.is_none()
        && body.remember_text.is_none()
        && body.forget.is_empty()
    {
        return Err(ApiError::BadRequest(
            "feedback needs at least one of rating, outcome, correction, remember_text or forget".into(),
        ));
    }
    let input = TraceFeedback {
        trace_id: body.trace_id,
        rating: body.rating,
        outcome: body.outcome,
        correction: body.correction,
        remember_text: body.remember_text,
        forget: body.forget,
        items: body.items,
    };
    let (trace, applied) = state.engine.missions().feedback(&access(&caller), input).await?;
    Ok(Json(json!({
        "object": "harness.feedback",
        "trace": trace_json(&trace),
        "signals": applied.signals,
        "remembered_note_id": applied.remembered,
        "forgotten_note_ids": applied.forgotten,
    })))
}

fn version_json(version: &HarnessVersion) -> Value {
    json!({
        "object": "harness.version",
        "id": version.id,
        "workspace_id": workspace_json(&version.workspace),
        "name": version.name,
        "description": version.description,
        "status": version.status,
        "context": version.context,
        "retrieval": version.retrieval,
        "effective_retrieval": effective_retrieval(version),
        "reflection": version.reflection,
        "created_at": iso(version.created_at_ms),
        "updated_at": iso(version.updated_at_ms),
        "activated_at": version.activated_at_ms.map(iso),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    workspace_id: Option<String>,
    name: String,
    description: Option<String>,
    status: Option<String>,
    context: Option<Map<String, Value>>,
    retrieval: Option<Map<String, Value>>,
    reflection: Option<Map<String, Value>>,
}

async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<VersionBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let input = VersionInput {
        name: body.name,
        description: body.description,
        status: body.status,
        context: body.context.unwrap_or_default(),
        retrieval: body.retrieval.unwrap_or_default(),
        reflection: body.reflection.unwrap_or_default(),
    };
    let version = state.engine.missions().create_version(&scope, input).await?;
    Ok((StatusCode::CREATED, Json(version_json(&version))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    workspace_id: Option<String>,
    status: Option<String>,
}

async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<VersionQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match &q.workspace_id {
        Some(asked) => Some(scope(&state, &caller, Some(asked))?.workspace),
        None => None,
    };
    let versions = state.engine.missions().versions(&access(&caller), workspace.as_deref(), q.status.as_deref())?;
    Ok(Json(json!({ "object": "list", "data": versions.iter().map(version_json).collect::<Vec<_>>() })))
}

async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(version_json(&state.engine.missions().version(&access(&caller), &id)?)))
}

async fn activate_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(version_json(&state.engine.missions().activate_version(&access(&caller), &id).await?)))
}

fn reflection_json(reflection: &Reflection) -> Value {
    json!({
        "object": "harness.reflection",
        "id": reflection.id,
        "workspace_id": workspace_json(&reflection.workspace),
        "title": reflection.title,
        "content": reflection.content,
        "trace_ids": reflection.trace_ids,
        "mission": reflection.mission,
        "harness_version_id": reflection.harness_version_id,
        "model": reflection.model,
        "charged_usd": usd(reflection.charged_units),
        "note_id": reflection.note_id,
        "created_at": iso(reflection.created_at_ms),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReflectBody {
    workspace_id: Option<String>,
    #[serde(default)]
    trace_ids: Vec<String>,
    /// Else the traces these select, newest first: a mission's UUID or `mission_id`, a type,
    /// an outcome, a start time, and how many (default the active version's, else 20).
    mission: Option<String>,
    #[serde(rename = "type")]
    trace_type: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    /// `auto`, `fast` or `max`, or `model`: a model name.
    mode: Option<String>,
    model: Option<String>,
    title: Option<String>,
    store_as_memory: Option<bool>,
}

/// Takes a runtime key: the model call is billed to it like a chat.
async fn generate_reflection(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    JsonBody(body): JsonBody<ReflectBody>,
) -> Result<(StatusCode, axum::http::HeaderMap, Json<Value>), ApiError> {
    let Caller::Key(key) = &caller else { return Err(ApiError::ApiKeyRequired) };
    let key = key.clone();
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let model = match (body.mode, body.model) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give mode or model, not both".into())),
        (Some(mode), None) if matches!(mode.as_str(), "auto" | "fast" | "max") => Some(mode),
        (Some(mode), None) => return Err(ApiError::BadRequest(format!("mode {mode:?} is not auto, fast or max"))),
        (None, model) => model,
    };
    if let Some(limit) = body.limit {
        if limit == 0 || limit > tokaroo_actors::harness::reflections::MAX_TRACES {
            return Err(ApiError::BadRequest(format!(
                "limit must be from 1 to {}",
                tokaroo_actors::harness::reflections::MAX_TRACES
            )));
        }
    }
    id_param("mission", body.mission.as_deref())?;
    let mission = body.mission.as_deref().map(|reference| {
        let links = state.engine.missions().trace_links(&scope.account_id, &scope.workspace, Some(reference), None);
        links.mission.unwrap_or_else(|| reference.to_owned())
    });
    let input = ReflectionInput {
        trace_ids: body.trace_ids,
        filter: TraceFilter {
            mission,
            trace_type: body.trace_type,
            outcome: body.outcome,
            since_ms: time_param("since", body.since.as_deref())?,
            limit: body.limit.unwrap_or(0),
            ..TraceFilter::default()
        },
        model,
        title: body.title,
        store_as_memory: body.store_as_memory,
        request_id,
    };
    let engine = &state.engine;
    let reflection =
        tokaroo_actors::harness::reflections::generate(engine.runtime(), engine.missions(), key, &scope, input).await?;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-tokaroo-cost", super::wire::cost_header(usd(reflection.charged_units)));
    Ok((StatusCode::CREATED, headers, Json(reflection_json(&reflection))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReflectionQuery {
    workspace_id: Option<String>,
    mission: Option<String>,
    limit: Option<usize>,
}

async fn list_reflections(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ReflectionQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = match &q.workspace_id {
        Some(asked) => Some(scope(&state, &caller, Some(asked))?.workspace),
        None => None,
    };
    let missions = state.engine.missions();
    id_param("mission", q.mission.as_deref())?;
    let mission = match &q.mission {
        Some(reference) => {
            let in_workspace = scope(&state, &caller, q.workspace_id.as_deref())?;
            let links = missions.trace_links(&in_workspace.account_id, &in_workspace.workspace, Some(reference), None);
            Some(links.mission.unwrap_or_else(|| reference.clone()))
        }
        None => None,
    };
    let reflections =
        missions.reflections(&access(&caller), workspace.as_deref(), mission.as_deref(), list_limit(q.limit)?)?;
    Ok(Json(json!({ "object": "list", "data": reflections.iter().map(reflection_json).collect::<Vec<_>>() })))
}

async fn get_artifact(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, artifact_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let artifact = state.engine.missions().artifact(&access(&caller), &id, &artifact_id)?;
    Ok(Json(artifact_json(&artifact)))
}
