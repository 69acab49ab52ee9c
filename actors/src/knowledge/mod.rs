//! The Knowledge Base: Memory Vault notes, ranked into budgeted context packs.
//!
//! - `Knowledge` (this file), the service `engine.knowledge()`: validates, reads, and sends
//!   every write to the indexer;
//! - `indexer.rs`: the `indexer` actor, the only writer of knowledge records, of the text
//!   index (tantivy, `storage::text_index`) and of the vectors (`vectors.rs`); it batches
//!   concurrent writes into one embedding pass and one commit, and after a crash indexes again
//!   what was written past the last commit;
//! - `pack.rs`: context packs: candidates from BM25 and vectors, fused, scored, and packed
//!   within a token budget counted with the real tokenizer.
//!
//! Scope: every record belongs to an account and a workspace (`""` is the account's own
//! memory). A request reads its workspace and the account's own memory; nothing crosses
//! accounts.

mod batch;
pub mod graph;
pub mod indexer;
pub mod pack;
pub mod rank;
pub mod sources;
pub mod vectoriser;
pub mod vectors;

use std::{sync::Arc, time::Duration};

use ractor::rpc::CallResult;
use serde_json::{Map, Value};
use tokaroo_storage::{text_index::TextIndex, Store};

pub use tokaroo_storage::knowledge::{
    ForgottenNote, MemoryEntity, MemoryEvent, MemoryFeedback, MemoryLink, MemoryNote, NodeRef, Source, SourceChunk,
    SourceDocument,
};

use self::{
    indexer::{IndexerMsg, KbWrite, INDEXER},
    vectors::VectorSets,
};
use crate::{embed::Embedder, error::EngineError, tree::registry::Registry};

/// Note statuses: only `active` notes are indexed and used in packs.
pub const STATUSES: [&str; 4] = ["active", "pending", "inferred", "archived"];
const MAX_CONTENT_BYTES: usize = 64 * 1024;
const MAX_TITLE_CHARS: usize = 500;
const MAX_SHORT_CHARS: usize = 256;
const MAX_TAGS: usize = 32;
/// How long a write waits for the indexer (embedding and a commit included).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Whose records a request reads and writes: an account and one of its workspaces (`""`
/// for the account's own memory). Built by the HTTP layer from the caller and checked there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbScope {
    pub account_id: String,
    pub workspace: String,
}

impl KbScope {
    /// The workspaces a read may see: its own and the account's own memory.
    pub fn readable(&self) -> Vec<&str> {
        if self.workspace.is_empty() {
            vec![""]
        } else {
            vec![self.workspace.as_str(), ""]
        }
    }
}

/// A note to create, or to upsert when it names an external id already written.
#[derive(Debug, Clone, Default)]
pub struct NoteInput {
    pub title: Option<String>,
    pub content: String,
    pub kind: Option<String>,
    pub tags: Vec<String>,
    pub importance: Option<f64>,
    pub confidence: Option<f64>,
    pub metadata: Map<String, Value>,
    pub status: Option<String>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
}

/// A change to a note; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct NotePatch {
    pub title: Option<String>,
    pub content: Option<String>,
    pub kind: Option<String>,
    pub tags: Option<Vec<String>>,
    pub importance: Option<f64>,
    pub confidence: Option<f64>,
    pub metadata: Option<Map<String, Value>>,
    pub status: Option<String>,
    pub external_source: Option<Option<String>>,
    pub external_id: Option<Option<String>>,
}

/// `GET /v1/memory/notes` filters.
#[derive(Debug, Clone, Default)]
pub struct NoteFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub limit: usize,
}

/// The service: `engine.knowledge()`.
#[derive(Clone)]
pub struct Knowledge(Arc<KnowledgeParts>);

pub(crate) struct KnowledgeParts {
    pub(crate) store: Store,
    pub(crate) text: Arc<TextIndex>,
    pub(crate) vectors: Arc<VectorSets>,
    /// Notes', entities' and queries' vectors (and the cache's): MiniLM by default.
    pub(crate) embedder: Embedder,
    /// Source chunks' vectors: the static model by default (see `embed/static_model.rs`).
    pub(crate) chunk_embedder: Embedder,
    /// Why the configured static model is not the chunk embedder, when it is not.
    pub(crate) chunk_fallback: Option<String>,
    pub(crate) registry: Registry,
    /// Whose account is not capped (the operator's), and the cap on the others' notes.
    pub(crate) directory: Arc<crate::directory::state::DirectoryState>,
    pub(crate) note_cap: usize,
    /// The ranking's weights (`[knowledge.ranking]`).
    pub(crate) weights: pack::RankWeights,
    /// Recent packs' queries, for feedback that names a trace.
    pub(crate) traces: std::sync::Mutex<graph::PackTraces>,
    /// Where every pack's trace is written (the harness's observation stream).
    pub(crate) trace_log: crate::harness::traces::Traces,
}

/// The embedders the knowledge base uses: the main one (notes, entities, queries) and the
/// one of source chunks, with why the configured static model is not it, when it is not.
pub(crate) struct Embedders {
    pub main: Embedder,
    pub chunks: Embedder,
    pub chunk_fallback: Option<String>,
}

impl Knowledge {
    pub(crate) fn open(
        store: Store,
        embedders: Embedders,
        trace_log: crate::harness::traces::Traces,
        registry: Registry,
        directory: Arc<crate::directory::state::DirectoryState>,
        note_cap: usize,
        weights: pack::RankWeights,
    ) -> Result<Self, EngineError> {
        let text = Arc::new(TextIndex::open(&store.text_index_dir())?);
        let vectors = Arc::default();
        let traces = Default::default();
        Ok(Self(Arc::new(KnowledgeParts {
            store,
            text,
            vectors,
            embedder: embedders.main,
            chunk_embedder: embedders.chunks,
            chunk_fallback: embedders.chunk_fallback,
            registry,
            directory,
            note_cap,
            weights,
            traces,
            trace_log,
        })))
    }

    /// The ranking's weights the server is configured with (`[knowledge.ranking]`).
    pub fn weights(&self) -> pack::RankWeights {
        self.0.weights
    }

    pub(crate) fn parts(&self) -> &Arc<KnowledgeParts> {
        &self.0
    }

    /// Which embedder makes source chunks' vectors, and why it is not the configured static
    /// model when it is not.
    pub fn chunk_embedder(&self) -> (crate::embed::EmbedderId, Option<&str>) {
        (self.0.chunk_embedder.id(), self.0.chunk_fallback.as_deref())
    }

    /// The query's vector for source chunks by the chunk embedder, or `None` when that is the
    /// main embedder (whose vector of the query serves both). Empty when embedding fails: the
    /// chunks are then found by text alone.
    pub(crate) async fn chunk_query_vector(&self, query: &str) -> Option<Vec<f32>> {
        let parts = self.parts();
        if parts.chunk_embedder.id() == parts.embedder.id() {
            return None;
        }
        Some(match parts.chunk_embedder.embed(vec![query.to_owned()]).await {
            Ok(embedded) => {
                let mut vector = embedded.vectors.into_iter().next().unwrap_or_default();
                crate::embed::l2_normalise(&mut vector);
                vector
            }
            Err(error) => {
                tracing::warn!(%error, "knowledge base: the query could not be embedded for chunks; text search only");
                Vec::new()
            }
        })
    }

    /// BM25 searches of the text index over what `scope` may read, on a blocking thread: one
    /// per `(kinds, limit)`, in order.
    pub(crate) async fn text_search(
        &self,
        scope: &KbScope,
        query: &str,
        searches: Vec<(&'static [&'static str], usize)>,
    ) -> Result<Vec<Vec<(String, f32)>>, EngineError> {
        let (text, account, query) = (self.0.text.clone(), scope.account_id.clone(), query.to_owned());
        let readable: Vec<String> = scope.readable().iter().map(|w| (*w).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let readable: Vec<&str> = readable.iter().map(String::as_str).collect();
            searches
                .into_iter()
                .map(|(kinds, limit)| text.search(&account, &readable, kinds, &query, limit))
                .collect::<Result<Vec<_>, tokaroo_storage::StorageError>>()
        })
        .await
        .map_err(|e| EngineError::Internal(format!("text search: {e}")))?
        .map_err(EngineError::from)
    }

    /// Vectors in memory, and the sets of them searched through a graph.
    pub fn vector_index(&self) -> (usize, usize) {
        (self.0.vectors.len(), self.0.vectors.graphs())
    }

    /// Creates a note, or updates the one its external id names. Returns it and whether it
    /// was created.
    pub async fn upsert_note(&self, scope: &KbScope, input: NoteInput) -> Result<(MemoryNote, bool), EngineError> {
        validate_input(&input)?;
        match self.write(KbWrite::Upsert(scope.clone(), input)).await? {
            indexer::Written::Note(note, created) => Ok((note, created)),
            _ => Err(another_answer()),
        }
    }

    pub async fn patch_note(&self, scope: &KbScope, id: &str, patch: NotePatch) -> Result<MemoryNote, EngineError> {
        validate_patch(&patch)?;
        self.note_write(KbWrite::Patch(scope.clone(), id.to_owned(), patch)).await
    }

    /// Makes a pending or inferred note active (used in packs from now on). An active note
    /// is answered as it is; an archived one is restored with a patch, not approved.
    pub async fn approve_note(&self, scope: &KbScope, id: &str) -> Result<MemoryNote, EngineError> {
        let note = self.note(scope, id)?;
        match note.status.as_str() {
            "active" => return Ok(note),
            "archived" => {
                return Err(EngineError::Conflict(
                    "this note is archived; restore it with PATCH {\"status\": \"active\"}".into(),
                ))
            }
            _ => {}
        }
        let patch = NotePatch { status: Some("active".into()), ..NotePatch::default() };
        self.note_write(KbWrite::Patch(scope.clone(), id.to_owned(), patch)).await
    }

    /// Forgets a note: gone from every index and pack at once; an audit record stays.
    pub async fn forget_note(&self, scope: &KbScope, id: &str, by: &str) -> Result<ForgottenNote, EngineError> {
        match self.write(KbWrite::Forget(scope.clone(), id.to_owned(), by.to_owned())).await? {
            indexer::Written::Forgotten(audit) => Ok(audit),
            _ => Err(another_answer()),
        }
    }

    /// A note of this scope (its workspace only).
    pub fn note(&self, scope: &KbScope, id: &str) -> Result<MemoryNote, EngineError> {
        match self.0.store.notes.get(&(scope.account_id.as_str(), id))? {
            Some(note) if note.workspace == scope.workspace => Ok(note),
            _ => Err(EngineError::NotFound { what: "memory note" }),
        }
    }

    /// The scope's notes, newest first.
    pub fn list_notes(&self, scope: &KbScope, filter: &NoteFilter) -> Result<Vec<MemoryNote>, EngineError> {
        let mut notes: Vec<MemoryNote> = self
            .0
            .store
            .notes
            .scan_prefix(&(scope.account_id.as_str(),))?
            .into_iter()
            .filter(|n| n.workspace == scope.workspace)
            .filter(|n| filter.status.as_ref().is_none_or(|s| &n.status == s))
            .filter(|n| filter.kind.as_ref().is_none_or(|k| &n.kind == k))
            .collect();
        notes.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| b.id.cmp(&a.id)));
        notes.truncate(filter.limit);
        Ok(notes)
    }

    /// The audit records of the scope's forgotten notes.
    pub fn forgotten_notes(&self, scope: &KbScope) -> Result<Vec<ForgottenNote>, EngineError> {
        let all = self.0.store.forgotten_notes.scan_prefix(&(scope.account_id.as_str(),))?;
        Ok(all.into_iter().filter(|f| f.workspace == scope.workspace).collect())
    }

    async fn note_write(&self, write: KbWrite) -> Result<MemoryNote, EngineError> {
        match self.write(write).await? {
            indexer::Written::Note(note, _) => Ok(note),
            _ => Err(another_answer()),
        }
    }

    async fn write(&self, write: KbWrite) -> Result<indexer::Written, EngineError> {
        let actor = self.indexer().await?;
        match actor.call(|reply| IndexerMsg::Write(Box::new(write), reply), Some(WRITE_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(EngineError::Unavailable("the knowledge base indexer timed out".into())),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(EngineError::Unavailable("the knowledge base indexer is restarting; retry shortly".into()))
            }
        }
    }

    async fn indexer(&self) -> Result<ractor::ActorRef<IndexerMsg>, EngineError> {
        self.0
            .registry
            .wait_for(INDEXER, Duration::from_secs(5))
            .await
            .ok_or_else(|| EngineError::Unavailable("the knowledge base indexer is restarting; retry shortly".into()))
    }
}

fn another_answer() -> EngineError {
    EngineError::Internal("the indexer answered another write".into())
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

fn check_short(name: &str, value: &str, max: usize) -> Result<(), EngineError> {
    if value.chars().count() > max {
        return Err(invalid(format!("{name} is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{name} must not contain control characters")));
    }
    Ok(())
}

fn check_unit(name: &str, value: Option<f64>) -> Result<(), EngineError> {
    match value {
        Some(v) if !(0.0..=1.0).contains(&v) => Err(invalid(format!("{name} must be between 0 and 1"))),
        _ => Ok(()),
    }
}

fn check_content(content: &str) -> Result<(), EngineError> {
    if content.trim().is_empty() {
        return Err(invalid("content must not be empty"));
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(invalid(format!(
            "content is larger than {MAX_CONTENT_BYTES} bytes; split it into notes or add it as a source"
        )));
    }
    Ok(())
}

fn check_common(
    title: Option<&str>,
    kind: Option<&str>,
    tags: Option<&[String]>,
    status: Option<&str>,
    metadata: Option<&Map<String, Value>>,
    external: [Option<&str>; 2],
) -> Result<(), EngineError> {
    if let Some(title) = title {
        check_short("title", &title.replace(['\n', '\t'], " "), MAX_TITLE_CHARS)?;
    }
    if let Some(kind) = kind {
        check_short("kind", kind, 64)?;
        if kind.trim().is_empty() {
            return Err(invalid("kind must not be empty"));
        }
    }
    if let Some(tags) = tags {
        if tags.len() > MAX_TAGS {
            return Err(invalid(format!("at most {MAX_TAGS} tags")));
        }
        for tag in tags {
            check_short("a tag", tag, 64)?;
        }
    }
    if let Some(status) = status {
        if !STATUSES.contains(&status) {
            return Err(invalid(format!("status must be one of {}", STATUSES.join(", "))));
        }
    }
    if let Some(metadata) = metadata {
        crate::metadata::check_metadata("metadata", metadata)?;
    }
    for (name, value) in ["external_source", "external_id"].into_iter().zip(external) {
        if let Some(value) = value {
            check_short(name, value, MAX_SHORT_CHARS)?;
            if value.is_empty() {
                return Err(invalid(format!("{name} must not be empty")));
            }
        }
    }
    Ok(())
}

fn validate_input(input: &NoteInput) -> Result<(), EngineError> {
    check_content(&input.content)?;
    check_unit("importance", input.importance)?;
    check_unit("confidence", input.confidence)?;
    if input.external_id.is_some() != input.external_source.is_some() {
        return Err(invalid("external_source and external_id go together"));
    }
    check_common(
        input.title.as_deref(),
        input.kind.as_deref(),
        Some(&input.tags),
        input.status.as_deref(),
        Some(&input.metadata),
        [input.external_source.as_deref(), input.external_id.as_deref()],
    )
}

fn validate_patch(patch: &NotePatch) -> Result<(), EngineError> {
    if let Some(content) = &patch.content {
        check_content(content)?;
    }
    check_unit("importance", patch.importance)?;
    check_unit("confidence", patch.confidence)?;
    check_common(
        patch.title.as_deref(),
        patch.kind.as_deref(),
        patch.tags.as_deref(),
        patch.status.as_deref(),
        patch.metadata.as_ref(),
        [patch.external_source.clone().flatten().as_deref(), patch.external_id.clone().flatten().as_deref()],
    )
}
