//! Sources: `POST /v1/sources` (ingest), `GET /v1/sources`, `GET /v1/sources/:id` (with its
//! documents and chunks), `DELETE /v1/sources/:id` and `POST /v1/sources/search` (ranked
//! chunks with citations).
//!
//! `POST /v1/sources` takes a JSON body (`content` as text, or `content_base64` for a file
//! such as a PDF, or several `documents`), a `multipart/form-data` upload (one or more `file`
//! parts, other fields as form fields), or the file itself as the body with its own
//! `Content-Type` and the other fields in the query string. Scope as in `memory.rs`.

use axum::{
    body::Bytes,
    extract::{FromRequest, Multipart, Path, Request, State},
    http::header::CONTENT_TYPE,
    routing::{get, post},
    Json, Router,
};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokaroo_actors::knowledge::{
    sources::ingest::{ChunkHit, DocumentInput, IngestedSource, SourceInput},
    KbScope, Source, SourceChunk, SourceDocument,
};

use super::{
    error::ApiError,
    extract::{parse_json, Caller, JsonBody, QueryParams},
    memory::{list_limit, scope, workspace_json},
    wire::iso,
    AppState,
};

const DEFAULT_SEARCH_LIMIT: usize = 10;
const MAX_SEARCH_LIMIT: usize = 100;
/// Chunks `GET /v1/sources/:id` shows at most (a source holds up to 10,000).
const MAX_CHUNKS_SHOWN: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sources", get(list_sources).post(create_source))
        .route("/v1/sources/search", post(search))
        .route("/v1/sources/{id}", get(get_source).delete(delete_source))
}

fn document_json(d: &SourceDocument) -> Value {
    json!({
        "object": "source.document",
        "id": d.id,
        "title": d.title,
        "kind": d.kind,
        "url": d.url,
        "bytes": d.bytes,
        "chunk_count": d.chunk_count,
        "pages": d.pages,
        "created_at": iso(d.created_at_ms),
    })
}

fn pages_json(pages: Option<(u32, u32)>) -> Value {
    match pages {
        Some((first, last)) => json!({ "first": first, "last": last }),
        None => Value::Null,
    }
}

fn chunk_json(c: &SourceChunk) -> Value {
    json!({
        "object": "source.chunk",
        "id": c.id,
        "ordinal": c.ordinal,
        "text": c.text,
        "tokens": c.tokens,
        "section": c.section.join(" > "),
        "pages": pages_json(c.pages),
    })
}

fn source_json(s: &Source) -> Value {
    json!({
        "object": "source",
        "id": s.id,
        "workspace_id": workspace_json(&s.workspace),
        "name": s.name,
        "url": s.url,
        "metadata": s.metadata,
        "external_source": s.external_source,
        "external_id": s.external_id,
        "document_count": s.documents.len(),
        "chunk_count": s.chunk_count,
        "bytes": s.bytes,
        "created_at": iso(s.created_at_ms),
        "updated_at": iso(s.updated_at_ms),
    })
}

/// A hit with its citation: where the text came from, down to the chunk.
pub(super) fn hit_json(hit: &ChunkHit) -> Value {
    json!({
        "object": "source.chunk",
        "id": hit.chunk.id,
        "text": hit.chunk.text,
        "score": hit.score,
        "tokens": hit.chunk.tokens,
        "citation": citation_json(hit),
    })
}

pub(super) fn citation_json(hit: &ChunkHit) -> Value {
    json!({
        "source_id": hit.chunk.source_id,
        "source_name": hit.source_name,
        "document_id": hit.chunk.document_id,
        "document_title": hit.document_title,
        "url": hit.document_url.as_ref().or(hit.source_url.as_ref()),
        "chunk_id": hit.chunk.id,
        "section": hit.chunk.section.join(" > "),
        "pages": pages_json(hit.chunk.pages),
        "score": hit.score,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    title: Option<String>,
    content: Option<String>,
    content_base64: Option<String>,
    content_type: Option<String>,
    filename: Option<String>,
    url: Option<String>,
}

impl DocumentBody {
    fn into_input(self, at: &str) -> Result<DocumentInput, ApiError> {
        let content = match (self.content, self.content_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| ApiError::BadRequest(format!("{at}content_base64 is not valid base64: {e}")))?,
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(format!("{at}give content or content_base64, not both")))
            }
            (None, None) => return Err(ApiError::BadRequest(format!("{at}content or content_base64 is required"))),
        };
        Ok(DocumentInput {
            title: self.title,
            content,
            content_type: self.content_type,
            filename: self.filename,
            url: self.url,
        })
    }
}

/// The fields of a source other than its content.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SourceFields {
    workspace_id: Option<String>,
    name: Option<String>,
    url: Option<String>,
    external_source: Option<String>,
    external_id: Option<String>,
    /// For a file sent as the body: its name (the kind may be told from it).
    filename: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceBody {
    workspace_id: Option<String>,
    name: Option<String>,
    url: Option<String>,
    metadata: Option<Map<String, Value>>,
    external_source: Option<String>,
    external_id: Option<String>,
    title: Option<String>,
    content: Option<String>,
    content_base64: Option<String>,
    content_type: Option<String>,
    filename: Option<String>,
    documents: Option<Vec<DocumentBody>>,
}

impl SourceBody {
    fn into_input(self) -> Result<(Option<String>, SourceInput), ApiError> {
        let single = self.content.is_some() || self.content_base64.is_some();
        let documents = match (single, self.documents) {
            (true, Some(_)) => {
                return Err(ApiError::BadRequest("give content (one document) or documents, not both".into()))
            }
            (true, None) => vec![DocumentBody {
                title: self.title,
                content: self.content,
                content_base64: self.content_base64,
                content_type: self.content_type,
                filename: self.filename,
                url: None,
            }
            .into_input("")?],
            (false, Some(documents)) => documents
                .into_iter()
                .enumerate()
                .map(|(i, d)| d.into_input(&format!("documents[{i}]: ")))
                .collect::<Result<_, _>>()?,
            (false, None) => {
                return Err(ApiError::BadRequest(
                    "a source needs content (text), content_base64 (a file) or documents".into(),
                ))
            }
        };
        let input = SourceInput {
            name: self.name,
            url: self.url,
            metadata: self.metadata.unwrap_or_default(),
            external_source: self.external_source,
            external_id: self.external_id,
            documents,
        };
        Ok((self.workspace_id, input))
    }
}

fn ingested_json(ingested: &IngestedSource) -> Value {
    let mut body = source_json(&ingested.source);
    body["documents"] = json!(ingested.documents.iter().map(document_json).collect::<Vec<_>>());
    body["created"] = json!(ingested.created);
    body["replaced_chunks"] = json!(ingested.replaced_chunks);
    body
}

/// A `multipart/form-data` upload: every `file` part is a document; the other parts are the
/// source's fields.
async fn from_multipart(mut form: Multipart) -> Result<(Option<String>, SourceInput), ApiError> {
    let mut fields = Map::new();
    let mut documents = Vec::new();
    let bad =
        |e: axum::extract::multipart::MultipartError| ApiError::BadRequest(format!("Could not read the upload: {e}"));
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let content = field.bytes().await.map_err(bad)?.to_vec();
            documents.push(DocumentInput { title: None, content, content_type, filename, url: None });
        } else {
            let value = field.text().await.map_err(bad)?;
            fields.insert(name, Value::String(value));
        }
    }
    let fields: SourceFields = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::BadRequest(format!("Invalid form field: {e}")))?;
    if documents.is_empty() {
        return Err(ApiError::BadRequest("the upload has no `file` part".into()));
    }
    if let (Some(title), [document]) = (fields.title, documents.as_mut_slice()) {
        document.title = Some(title);
    }
    let input = SourceInput {
        name: fields.name,
        url: fields.url,
        metadata: Map::new(),
        external_source: fields.external_source,
        external_id: fields.external_id,
        documents,
    };
    Ok((fields.workspace_id, input))
}

async fn create_source(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<SourceFields>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let too_large = |state: &AppState| {
        ApiError::PayloadTooLarge(format!(
            "Request body is larger than the limit of {} bytes",
            state.config.server.max_body_bytes
        ))
    };
    let (workspace_id, input) = match essence.as_str() {
        "application/json" | "" => {
            let bytes = Bytes::from_request(request, &state).await.map_err(|_| too_large(&state))?;
            parse_json::<SourceBody>(&bytes)?.into_input()?
        }
        "multipart/form-data" => {
            let form = Multipart::from_request(request, &state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("Could not read the upload: {e}")))?;
            from_multipart(form).await?
        }
        _ => {
            // The file itself is the body.
            let bytes = Bytes::from_request(request, &state).await.map_err(|_| too_large(&state))?;
            let document = DocumentInput {
                title: query.title.clone(),
                content: bytes.to_vec(),
                content_type: Some(content_type),
                filename: query.filename.clone(),
                url: None,
            };
            let input = SourceInput {
                name: query.name.clone(),
                url: query.url.clone(),
                metadata: Map::new(),
                external_source: query.external_source.clone(),
                external_id: query.external_id.clone(),
                documents: vec![document],
            };
            (query.workspace_id.clone(), input)
        }
    };
    let scope = scope(&state, &caller, workspace_id.or(query.workspace_id).as_deref())?;
    let ingested = state.engine.knowledge().ingest_source(&scope, input).await?;
    Ok(Json(ingested_json(&ingested)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workspace_id: Option<String>,
    limit: Option<usize>,
}

async fn list_sources(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let limit = list_limit(q.limit)?;
    let sources = state.engine.knowledge().list_sources(&scope, limit)?;
    Ok(Json(json!({ "object": "list", "data": sources.iter().map(source_json).collect::<Vec<_>>() })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    workspace_id: Option<String>,
    /// `false` leaves the chunks out.
    chunks: Option<bool>,
}

async fn get_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<GetQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope: KbScope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let knowledge = state.engine.knowledge();
    let source = knowledge.source(&scope, &id)?;
    let with_chunks = q.chunks != Some(false);
    let mut shown = 0;
    let documents: Vec<Value> = knowledge
        .source_contents(&scope, &source, if with_chunks { MAX_CHUNKS_SHOWN } else { 0 })?
        .iter()
        .map(|(document, chunks)| {
            let mut body = document_json(document);
            if with_chunks {
                body["chunks"] = json!(chunks.iter().map(chunk_json).collect::<Vec<_>>());
                shown += chunks.len();
            }
            body
        })
        .collect();
    let mut body = source_json(&source);
    body["documents"] = json!(documents);
    body["chunks_truncated"] = json!(with_chunks && (source.chunk_count as usize) > shown);
    Ok(Json(body))
}

async fn delete_source(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, q.workspace_id.as_deref())?;
    let source = state.engine.knowledge().delete_source(&scope, &id).await?;
    let mut body = source_json(&source);
    body["deleted"] = json!(true);
    Ok(Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    query: String,
    workspace_id: Option<String>,
    limit: Option<i64>,
    source_ids: Option<Vec<String>>,
}

async fn search(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(&state, &caller, body.workspace_id.as_deref())?;
    let limit = match body.limit {
        None => DEFAULT_SEARCH_LIMIT,
        Some(n) if (1..=MAX_SEARCH_LIMIT as i64).contains(&n) => n as usize,
        Some(_) => return Err(ApiError::BadRequest(format!("limit must be between 1 and {MAX_SEARCH_LIMIT}"))),
    };
    if body.source_ids.as_ref().is_some_and(|ids| ids.len() > 100) {
        return Err(ApiError::BadRequest("source_ids names at most 100 sources".into()));
    }
    let hits = state.engine.knowledge().search_sources(&scope, &body.query, limit, body.source_ids.as_deref()).await?;
    Ok(Json(json!({
        "object": "list",
        "query": body.query,
        "data": hits.iter().map(hit_json).collect::<Vec<_>>(),
    })))
}
