//! Memory Vault: `GET/POST /v1/memory/notes`, `PATCH/DELETE /v1/memory/notes/:id`,
//! `POST /v1/memory/notes/:id/approve`, `GET /v1/memory/forgotten`,
//! `POST /v1/memory/context-pack` and `POST /v1/memory/context`.
//!
//! Runtime keys (agents) and dashboard sessions both reach them. A key bound to a workspace
//! works in that workspace only; otherwise `workspace_id` (body or query) names one of the
//! account's workspaces, and no `workspace_id` is the account's own memory.

use axum::{
    extract::{Path, State},
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::knowledge::{
    pack::ContextPack, ForgottenNote, KbScope, MemoryNote, NoteFilter, NoteInput, NotePatch,
};

use super::{
    error::ApiError,
    extract::{Caller, JsonBody, QueryParams},
    memory_graph::{entity_json, event_json, link_json},
    sources::{citation_json, hit_json},
    wire::{double_option, iso},
    AppState,
};

const DEFAULT_LIST_LIMIT: usize = 50;
const MAX_LIST_LIMIT: usize = 500;

/// A list's `limit`: 50 by default, 1 to 500 (every knowledge-base list).
pub(super) fn list_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_LIST_LIMIT}")));
    }
    Ok(limit)
}

/// A record's workspace as answers show it: `null` for the account's own memory.
pub(super) fn workspace_json(workspace: &str) -> Option<&str> {
    (!workspace.is_empty()).then_some(workspace)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/memory/notes", get(list_notes).post(create_note))
        .route("/v1/memory/notes/{id}", patch(update_note).delete(forget_note).get(get_note))
        .route("/v1/memory/notes/{id}/approve", post(approve_note))
        .route("/v1/memory/forgotten", get(list_forgotten))
        .route("/v1/memory/context-pack", post(context_pack))
        .route("/v1/memory/context", post(context))
}

/// The scope a request works in (see the module's doc).
pub(super) fn scope(state: &AppState, caller: &Caller, workspace_id: Option<&str>) -> Result<KbScope, ApiError> {
    if workspace_id.is_some_and(|w| w.is_empty() || w.len() > 128 || w.chars().any(char::is_control)) {
        return Err(ApiError::BadRequest(
            "workspace_id must be a workspace's id: 1 to 128 characters, no control characters".into(),
        ));
    }
    let account_id = caller.account_id().to_owned();
    let workspace = match (caller, workspace_id) {
        (Caller::Key(key), asked) => match (&key.workspace_slug, asked) {
            (Some(bound), Some(asked)) if bound != asked => {
                return Err(ApiError::Forbidden(format!(
                    "This key works in workspace {bound:?} only; it cannot use workspace {asked:?}"
                )))
            }
            (Some(bound), _) => bound.clone(),
            (None, Some(asked)) => known_workspace(state, &account_id, asked)?,
            (None, None) => String::new(),
        },
        (Caller::Session(_), Some(asked)) => known_workspace(state, &account_id, asked)?,
        (Caller::Session(_), None) => String::new(),
    };
    Ok(KbScope { account_id, workspace })
}

fn known_workspace(state: &AppState, account_id: &str, slug: &str) -> Result<String, ApiError> {
    state.engine.directory().get_workspace(account_id, slug)?;
    Ok(slug.to_owned())
}

pub(super) fn who(caller: &Caller) -> String {
    match caller {
        Caller::Key(key) => format!("key:{}", key.id),
        Caller::Session(identity) => format!("session:{}", identity.account_id),
    }
}

pub(super) fn note_json(note: &MemoryNote) -> Value {
    json!({
        "object": "memory.note",
        "id": note.id,
        "workspace_id": workspace_json(&note.workspace),
        "title": note.title,
        "content": note.content,
        "kind": note.kind,
        "tags": note.tags,
        "importance": note.importance,
        "confidence": note.confidence,
        "metadata": note.metadata,
        "status": note.status,
        "external_source": note.external_source,
        "external_id": note.external_id,
        "created_at": iso(note.created_at_ms),
        "updated_at": iso(note.updated_at_ms),
    })
}

fn forgotten_json(f: &ForgottenNote) -> Value {
    json!({
        "object": "memory.forgotten",
        "note_id": f.note_id,
        "workspace_id": workspace_json(&f.workspace),
        "kind": f.kind,
        "external_source": f.external_source,
        "external_id": f.external_id,
        "created_at": iso(f.created_at_ms),
        "forgotten_at": iso(f.forgotten_at_ms),
        "forgotten_by": f.forgotten_by,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateNote {
    pub(super) workspace_id: Option<String>,
    title: Option<String>,
    content: String,
    kind: Option<String>,
    tags: Option<Vec<String>>,
    importance: Option<f64>,
    confidence: Option<f64>,
    metadata: Option<Map<String, Value>>,
    status: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
}

impl From<CreateNote> for NoteInput {
    fn from(req: CreateNote) -> Self {
        NoteInput {
            title: req.title,
            content: req.content,
            kind: req.kind,
            tags: req.tags.unwrap_or_default(),
            importance: req.importance,
            confidence: req.confidence,
            metadata: req.metadata.unwrap_or_default(),
            status: req.status,
            external_source: req.external_source,
            external_id: req.external_id,
        }
    }
}

async fn create_note(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<CreateNote>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, req.workspace_id.as_deref())?;
    let (note, created) = state.engine.knowledge().upsert_note(&scope, req.into()).await?;
    let mut body = note_json(&note);
    body["created"] = json!(created);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workspace_id: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    limit: Option<usize>,
}

async fn list_notes(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let limit = list_limit(q.limit)?;
    let filter = NoteFilter { status: q.status, kind: q.kind, limit };
    let notes = state.engine.knowledge().list_notes(&scope, &filter)?;
    Ok(Json(json!({ "object": "list", "data": notes.iter().map(note_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScopeQuery {
    pub(super) workspace_id: Option<String>,
}

async fn get_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    Ok(Json(note_json(&state.engine.knowledge().note(&scope, &id)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateNote {
    workspace_id: Option<String>,
    title: Option<String>,
    content: Option<String>,
    kind: Option<String>,
    tags: Option<Vec<String>>,
    importance: Option<f64>,
    confidence: Option<f64>,
    metadata: Option<Map<String, Value>>,
    status: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    external_source: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    external_id: Option<Option<String>>,
}

async fn update_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateNote>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, req.workspace_id.as_deref())?;
    let patch = NotePatch {
        title: req.title,
        content: req.content,
        kind: req.kind,
        tags: req.tags,
        importance: req.importance,
        confidence: req.confidence,
        metadata: req.metadata,
        status: req.status,
        external_source: req.external_source,
        external_id: req.external_id,
    };
    Ok(Json(note_json(&state.engine.knowledge().patch_note(&scope, &id, patch).await?)))
}

async fn approve_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    Ok(Json(note_json(&state.engine.knowledge().approve_note(&scope, &id).await?)))
}

async fn forget_note(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let audit = state.engine.knowledge().forget_note(&scope, &id, &who(&caller)).await?;
    let mut body = forgotten_json(&audit);
    body["deleted"] = json!(true);
    Ok(Json(body))
}

async fn list_forgotten(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let forgotten = state.engine.knowledge().forgotten_notes(&scope)?;
    Ok(Json(json!({ "object": "list", "data": forgotten.iter().map(forgotten_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackRequest {
    query: String,
    workspace_id: Option<String>,
    max_tokens: Option<i64>,
    include_sources: Option<bool>,
    metadata: Option<Map<String, Value>>,
}

impl PackRequest {
    /// The budget asked for; `None` takes the active harness version's, then the default.
    fn max_tokens(&self) -> Result<Option<u32>, ApiError> {
        match self.max_tokens {
            None => Ok(None),
            Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            Some(_) => Err(ApiError::BadRequest("max_tokens must be a positive number of tokens".into())),
        }
    }
}

async fn build_pack(state: &AppState, caller: &Caller, req: &PackRequest) -> Result<(KbScope, ContextPack), ApiError> {
    let scope = scope(state, caller, req.workspace_id.as_deref())?;
    let mission = super::harness::mission_in_metadata(req.metadata.as_ref());
    let missions = state.engine.missions();
    let links = missions.trace_links(&scope.account_id, &scope.workspace, mission.as_deref(), req.metadata.as_ref());
    let max_tokens = req.max_tokens()?;
    let pack = missions.context_pack(&scope, &req.query, max_tokens, req.include_sources, false, links).await?;
    Ok((scope, pack))
}

/// A pack item's record with its score and the tokens it took.
fn scored(mut body: Value, score: f64, tokens: u32) -> Value {
    body["score"] = json!(score);
    body["tokens"] = json!(tokens);
    body
}

fn memories_json(pack: &ContextPack) -> Vec<Value> {
    pack.items.iter().map(|item| scored(note_json(&item.note), item.score, item.tokens)).collect()
}

async fn context_pack(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PackRequest>,
) -> Result<Json<Value>, ApiError> {
    let (scope, pack) = build_pack(&state, &caller, &req).await?;
    let mut included: Vec<Value> = pack
        .items
        .iter()
        .map(|item| {
            // Raw BM25 and cosine scores are left out: BM25's statistics span every tenant's
            // documents, so raw scores would tell one tenant about the others' text.
            let mut components = json!(item.components);
            for raw in ["bm25", "cosine"] {
                components["fusion"].as_object_mut().map(|f| f.remove(raw));
            }
            json!({ "type": "memory", "id": item.note.id, "score": item.score, "tokens": item.tokens, "components": components })
        })
        .collect();
    included.extend(
        pack.entities.iter().map(
            |e| json!({ "type": "entity", "id": e.entity.id, "score": e.score, "tokens": e.tokens, "via": e.via }),
        ),
    );
    included.extend(pack.links.iter().map(|l| json!({ "type": "link", "id": l.link.id, "tokens": l.tokens })));
    included.extend(
        pack.events.iter().map(|e| json!({ "type": "event", "id": e.event.id, "score": e.score, "tokens": e.tokens })),
    );
    included.extend(
        pack.chunks
            .iter()
            .map(|c| json!({ "type": "source_chunk", "id": c.hit.chunk.id, "score": c.score, "tokens": c.tokens })),
    );
    Ok(Json(json!({
        "object": "memory.context_pack",
        "trace_id": pack.trace_id,
        "query": req.query,
        "workspace_id": workspace_json(&scope.workspace),
        "max_tokens": pack.max_tokens,
        "used_tokens": pack.used_tokens,
        "context": pack.context,
        "memories": memories_json(&pack),
        "entities": pack.entities.iter().map(|e| scored(entity_json(&e.entity), e.score, e.tokens)).collect::<Vec<_>>(),
        "links": pack.links.iter().map(|l| {
            let mut body = link_json(&l.link);
            body["tokens"] = json!(l.tokens);
            body
        }).collect::<Vec<_>>(),
        "events": pack.events.iter().map(|e| scored(event_json(&e.event), e.score, e.tokens)).collect::<Vec<_>>(),
        "sources": pack.chunks.iter().map(|c| scored(hit_json(&c.hit), c.score, c.tokens)).collect::<Vec<_>>(),
        "citations": citations(&pack),
        "metadata": req.metadata,
        "telemetry": {
            "trace_id": pack.trace_id,
            "candidates": pack.candidates,
            "included": included,
            "dropped_for_budget": pack.dropped_for_budget,
            "include_sources": req.include_sources.unwrap_or(false),
            "embedder": pack.embedder,
            "weights": pack.weights,
        },
    })))
}

/// The pack's citations, numbered as `[n]` in its context.
pub(super) fn citations(pack: &ContextPack) -> Vec<Value> {
    pack.chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut citation = citation_json(&c.hit);
            citation["index"] = json!(i + 1);
            citation
        })
        .collect()
}

async fn context(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PackRequest>,
) -> Result<Json<Value>, ApiError> {
    let (_, pack) = build_pack(&state, &caller, &req).await?;
    Ok(Json(json!({
        "object": "memory.context",
        "trace_id": pack.trace_id,
        "context": pack.context,
        "used_tokens": pack.used_tokens,
        "memories": memories_json(&pack),
        "citations": citations(&pack),
    })))
}
