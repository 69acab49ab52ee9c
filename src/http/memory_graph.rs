//! Memory Vault's graph and history: `GET/POST/PATCH /v1/memory/entities`,
//! `GET/POST/DELETE /v1/memory/links`, `GET/POST /v1/memory/events`, `POST /v1/memory/feedback`
//! and `POST /v1/memory/batch` (all of them together, all or nothing).
//!
//! Every write is a `MemoryBatch` applied by the indexer in one transaction; a single entity
//! or link is a batch of one. Scope as in `memory.rs`.

use axum::{
    extract::{Path, State},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::knowledge::{
    graph::{BatchWritten, EntityFilter, EntityInput, EventInput, FeedbackInput, LinkInput, MemoryBatch, NodeSpec},
    KbScope, MemoryEntity, MemoryEvent, MemoryFeedback, MemoryLink, NodeRef, NoteInput,
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams},
    memory::{list_limit, note_json, scope, who, workspace_json, CreateNote, ScopeQuery},
    wire::{iso, parse_iso_us},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/memory/entities", get(list_entities).post(create_entity).patch(patch_entity_by_body))
        .route("/v1/memory/entities/{id}", get(get_entity).patch(patch_entity))
        .route("/v1/memory/links", get(list_links).post(create_link))
        .route("/v1/memory/links/{id}", delete(delete_link))
        .route("/v1/memory/events", get(list_events).post(create_event))
        .route("/v1/memory/feedback", post(feedback))
        .route("/v1/memory/batch", post(batch))
}

fn node_json(node: &NodeRef) -> Value {
    json!({ "type": node.kind, "id": node.id })
}

pub(super) fn entity_json(e: &MemoryEntity) -> Value {
    json!({
        "object": "memory.entity",
        "id": e.id,
        "workspace_id": workspace_json(&e.workspace),
        "name": e.name,
        "type": e.entity_type,
        "description": e.description,
        "aliases": e.aliases,
        "metadata": e.metadata,
        "external_source": e.external_source,
        "external_id": e.external_id,
        "created_at": iso(e.created_at_ms),
        "updated_at": iso(e.updated_at_ms),
    })
}

pub(super) fn link_json(l: &MemoryLink) -> Value {
    json!({
        "object": "memory.link",
        "id": l.id,
        "workspace_id": workspace_json(&l.workspace),
        "from": node_json(&l.from),
        "to": node_json(&l.to),
        "relation": l.relation,
        "weight": l.weight,
        "metadata": l.metadata,
        "external_source": l.external_source,
        "external_id": l.external_id,
        "created_at": iso(l.created_at_ms),
    })
}

pub(super) fn event_json(e: &MemoryEvent) -> Value {
    json!({
        "object": "memory.event",
        "id": e.id,
        "workspace_id": workspace_json(&e.workspace),
        "type": e.event_type,
        "summary": e.summary,
        "occurred_at": iso(e.occurred_at_ms),
        "subjects": e.subjects.iter().map(node_json).collect::<Vec<_>>(),
        "metadata": e.metadata,
        "external_source": e.external_source,
        "external_id": e.external_id,
        "created_at": iso(e.created_at_ms),
    })
}

fn feedback_json(f: &MemoryFeedback) -> Value {
    json!({
        "object": "memory.feedback",
        "id": f.id,
        "workspace_id": workspace_json(&f.workspace),
        "item": node_json(&f.item),
        "signal": f.signal,
        "query": f.query,
        "trace_id": f.trace_id,
        "external_source": f.external_source,
        "external_id": f.external_id,
        "created_at": iso(f.created_at_ms),
    })
}

fn with_created(mut body: Value, created: bool) -> Value {
    body["created"] = json!(created);
    body
}

/// A node as requests name it: `{"type": "note" | "entity", "id": ...}` or with
/// `external_source` and `external_id` instead of `id`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeBody {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl From<NodeBody> for NodeSpec {
    fn from(n: NodeBody) -> Self {
        NodeSpec { kind: n.kind, id: n.id, external_source: n.external_source, external_id: n.external_id }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityBody {
    workspace_id: Option<String>,
    /// For `PATCH /v1/memory/entities` (the id in the body).
    id: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    entity_type: Option<String>,
    description: Option<String>,
    aliases: Option<Vec<String>>,
    metadata: Option<Map<String, Value>>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl EntityBody {
    fn into_input(self, id: Option<String>) -> EntityInput {
        EntityInput {
            id,
            name: self.name,
            entity_type: self.entity_type,
            description: self.description,
            aliases: self.aliases,
            metadata: self.metadata,
            external_source: self.external_source,
            external_id: self.external_id,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    workspace_id: Option<String>,
    from: NodeBody,
    to: NodeBody,
    relation: String,
    weight: Option<f64>,
    metadata: Option<Map<String, Value>>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl From<LinkBody> for LinkInput {
    fn from(l: LinkBody) -> Self {
        LinkInput {
            from: l.from.into(),
            to: l.to.into(),
            relation: l.relation,
            weight: l.weight,
            metadata: l.metadata.unwrap_or_default(),
            external_source: l.external_source,
            external_id: l.external_id,
        }
    }
}

/// When an event happened: RFC 3339, or unix milliseconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum When {
    Millis(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    workspace_id: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    summary: String,
    occurred_at: Option<When>,
    subjects: Option<Vec<NodeBody>>,
    metadata: Option<Map<String, Value>>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl EventBody {
    fn into_input(self) -> Result<EventInput, ApiError> {
        let occurred_at_ms = match self.occurred_at {
            None => None,
            Some(When::Millis(ms)) if (0..=253_402_300_799_999).contains(&ms) => Some(ms),
            Some(When::Text(text)) => match parse_iso_us(&text) {
                Some(us) if us >= 0 => Some(us / 1000),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "occurred_at {text:?} is not an RFC 3339 time such as 2026-11-30T09:00:00Z"
                    )))
                }
            },
            Some(When::Millis(_)) => {
                return Err(ApiError::BadRequest("occurred_at in milliseconds must be between 0 and year 9999".into()))
            }
        };
        Ok(EventInput {
            event_type: self.event_type,
            summary: self.summary,
            occurred_at_ms,
            subjects: self.subjects.unwrap_or_default().into_iter().map(NodeSpec::from).collect(),
            metadata: self.metadata.unwrap_or_default(),
            external_source: self.external_source,
            external_id: self.external_id,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    workspace_id: Option<String>,
    item: Option<NodeBody>,
    signal: String,
    query: Option<String>,
    trace_id: Option<String>,
    text: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl From<FeedbackBody> for FeedbackInput {
    fn from(f: FeedbackBody) -> Self {
        FeedbackInput {
            item: f.item.map(NodeSpec::from),
            signal: f.signal,
            query: f.query,
            trace_id: f.trace_id,
            text: f.text,
            external_source: f.external_source,
            external_id: f.external_id,
            query_vector: None,
        }
    }
}

/// Items of a batch carry no `workspace_id` of their own: the batch's applies to all.
fn refuse_item_workspace(list: &str, items: &[Option<String>]) -> Result<(), ApiError> {
    match items.iter().position(Option::is_some) {
        Some(i) => {
            Err(ApiError::BadRequest(format!("{list}[{i}]: workspace_id belongs on the batch, not on its items")))
        }
        None => Ok(()),
    }
}

async fn write(
    state: &AppState,
    caller: &Caller,
    scope: &KbScope,
    batch: MemoryBatch,
) -> Result<BatchWritten, ApiError> {
    Ok(state.engine.knowledge().write_batch(scope, batch, &who(caller)).await?)
}

async fn create_entity(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<EntityBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    if body.id.is_some() {
        return Err(ApiError::BadRequest("id is chosen by the server; to change an entity use PATCH".into()));
    }
    let batch = MemoryBatch { entities: vec![body.into_input(None)], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    let (entity, created) = written.entities.into_iter().next().ok_or_else(missing)?;
    Ok(Json(with_created(entity_json(&entity), created)))
}

async fn patch_entity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<EntityBody>,
) -> Result<Json<Value>, ApiError> {
    if body.id.as_ref().is_some_and(|b| b != &id) {
        return Err(ApiError::BadRequest("the id in the body differs from the one in the path".into()));
    }
    update_entity(state, caller, id, body).await
}

async fn patch_entity_by_body(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<EntityBody>,
) -> Result<Json<Value>, ApiError> {
    let Some(id) = body.id.clone() else {
        return Err(ApiError::BadRequest("PATCH /v1/memory/entities names the entity by id".into()));
    };
    update_entity(state, caller, id, body).await
}

async fn update_entity(state: AppState, caller: Caller, id: String, body: EntityBody) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    // An unknown id is a 404 here, not a batch's 400.
    state.engine.knowledge().entity(&scope, &id)?;
    let batch = MemoryBatch { entities: vec![body.into_input(Some(id))], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    let (entity, _) = written.entities.into_iter().next().ok_or_else(missing)?;
    Ok(Json(entity_json(&entity)))
}

async fn get_entity(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    Ok(Json(entity_json(&state.engine.knowledge().entity(&scope, &id)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityQuery {
    workspace_id: Option<String>,
    #[serde(rename = "type")]
    entity_type: Option<String>,
    limit: Option<usize>,
}

async fn list_entities(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<EntityQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let filter = EntityFilter { entity_type: q.entity_type, limit: list_limit(q.limit)? };
    let entities = state.engine.knowledge().list_entities(&scope, &filter)?;
    Ok(Json(json!({ "object": "list", "data": entities.iter().map(entity_json).collect::<Vec<_>>() })))
}

async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<LinkBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let batch = MemoryBatch { links: vec![body.into()], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    let (link, created) = written.links.into_iter().next().ok_or_else(missing)?;
    Ok(Json(with_created(link_json(&link), created)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkQuery {
    workspace_id: Option<String>,
    note_id: Option<String>,
    entity_id: Option<String>,
    limit: Option<usize>,
}

async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<LinkQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    for id in q.note_id.iter().chain(&q.entity_id) {
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(ApiError::BadRequest(
                "note_id and entity_id are ids: 1 to 128 characters, no control characters".into(),
            ));
        }
    }
    let node = match (q.note_id, q.entity_id) {
        (Some(_), Some(_)) => return Err(ApiError::BadRequest("give note_id or entity_id, not both".into())),
        (Some(id), None) => Some(NodeRef { kind: "note".into(), id }),
        (None, Some(id)) => Some(NodeRef { kind: "entity".into(), id }),
        (None, None) => None,
    };
    let links = state.engine.knowledge().list_links(&scope, node.as_ref(), list_limit(q.limit)?)?;
    Ok(Json(json!({ "object": "list", "data": links.iter().map(link_json).collect::<Vec<_>>() })))
}

async fn delete_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    state.engine.knowledge().link(&scope, &id)?;
    let batch = MemoryBatch { unlinks: vec![id], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    let link = written.unlinked.into_iter().next().ok_or_else(missing)?;
    let mut body = link_json(&link);
    body["deleted"] = json!(true);
    Ok(Json(body))
}

async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<EventBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let batch = MemoryBatch { events: vec![body.into_input()?], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    let (event, created) = written.events.into_iter().next().ok_or_else(missing)?;
    Ok(Json(with_created(event_json(&event), created)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    workspace_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<usize>,
}

async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let events = state.engine.knowledge().list_events(&scope, q.event_type.as_deref(), list_limit(q.limit)?)?;
    Ok(Json(json!({ "object": "list", "data": events.iter().map(event_json).collect::<Vec<_>>() })))
}

async fn feedback(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<FeedbackBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let batch = MemoryBatch { feedback: vec![body.into()], ..MemoryBatch::default() };
    let written = write(&state, &caller, &scope, batch).await?;
    Ok(Json(batch_json(&written, "memory.feedback_result")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    workspace_id: Option<String>,
    #[serde(default)]
    notes: Vec<CreateNote>,
    #[serde(default)]
    entities: Vec<EntityBody>,
    #[serde(default)]
    links: Vec<LinkBody>,
    /// Link ids to delete.
    #[serde(default)]
    unlinks: Vec<String>,
    #[serde(default)]
    events: Vec<EventBody>,
    #[serde(default)]
    feedback: Vec<FeedbackBody>,
}

fn batch_json(w: &BatchWritten, object: &str) -> Value {
    json!({
        "object": object,
        "notes": w.notes.iter().map(|(n, c)| with_created(note_json(n), *c)).collect::<Vec<_>>(),
        "entities": w.entities.iter().map(|(e, c)| with_created(entity_json(e), *c)).collect::<Vec<_>>(),
        "links": w.links.iter().map(|(l, c)| with_created(link_json(l), *c)).collect::<Vec<_>>(),
        "unlinked": w.unlinked.iter().map(|l| l.id.clone()).collect::<Vec<_>>(),
        "events": w.events.iter().map(|(e, c)| with_created(event_json(e), *c)).collect::<Vec<_>>(),
        "feedback": w.feedback.iter().map(feedback_json).collect::<Vec<_>>(),
        "forgotten": w.forgotten.iter().map(|f| f.note_id.clone()).collect::<Vec<_>>(),
    })
}

async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    refuse_item_workspace("notes", &body.notes.iter().map(|n| n.workspace_id.clone()).collect::<Vec<_>>())?;
    refuse_item_workspace("entities", &body.entities.iter().map(|n| n.workspace_id.clone()).collect::<Vec<_>>())?;
    refuse_item_workspace("links", &body.links.iter().map(|n| n.workspace_id.clone()).collect::<Vec<_>>())?;
    refuse_item_workspace("events", &body.events.iter().map(|n| n.workspace_id.clone()).collect::<Vec<_>>())?;
    refuse_item_workspace("feedback", &body.feedback.iter().map(|n| n.workspace_id.clone()).collect::<Vec<_>>())?;
    let mut entities = Vec::with_capacity(body.entities.len());
    for (i, entity) in body.entities.into_iter().enumerate() {
        if entity.id.is_some() && entity.external_id.is_some() {
            return Err(ApiError::BadRequest(format!("entities[{i}]: give id or external_id, not both")));
        }
        let id = entity.id.clone();
        entities.push(entity.into_input(id));
    }
    let mut events = Vec::with_capacity(body.events.len());
    for (i, event) in body.events.into_iter().enumerate() {
        events.push(event.into_input().map_err(|e| match e {
            ApiError::BadRequest(m) => ApiError::BadRequest(format!("events[{i}]: {m}")),
            other => other,
        })?);
    }
    let batch = MemoryBatch {
        notes: body.notes.into_iter().map(NoteInput::from).collect(),
        entities,
        links: body.links.into_iter().map(LinkInput::from).collect(),
        unlinks: body.unlinks,
        events,
        feedback: body.feedback.into_iter().map(FeedbackInput::from).collect(),
    };
    let written = write(&state, &caller, &scope, batch).await?;
    Ok(Json(batch_json(&written, "memory.batch")))
}

fn missing() -> ApiError {
    ApiError::Internal("the knowledge base answered without the record it wrote".into())
}
