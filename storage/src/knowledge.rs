//! The knowledge base's records: memory notes, what stays of a forgotten one, the external
//! ids notes are upserted by, and the vectors of indexed texts.
//!
//! Every indexed record carries `seq`, the knowledge base's write sequence when it was
//! written (assigned by the indexer, the only writer): the text index's last commit records
//! the sequence it is current to, so after a crash the records written past it are indexed
//! again (see `TextIndex::committed_seq`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Record;

/// Key: (account_id, note_id). A durable memory: a fact, preference, decision or lesson.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryNote {
    pub id: String,
    pub account_id: String,
    /// The workspace's slug; "" for the account's own memory.
    pub workspace: String,
    pub title: String,
    pub content: String,
    pub kind: String,
    pub tags: Vec<String>,
    pub importance: f64,
    pub confidence: f64,
    pub metadata: Map<String, Value>,
    /// `active`, or `pending`/`inferred` (kept out of context packs until approved), or
    /// `archived`.
    pub status: String,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub seq: u64,
}
impl Record for MemoryNote {
    const TREE: &'static str = "memory_notes";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, external_source, external_id). Which note an external id
/// names, so writing it again updates the note instead of adding another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NoteExternalRef {
    pub note_id: String,
}
impl Record for NoteExternalRef {
    const TREE: &'static str = "memory_note_refs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, note_id). The audit record of a forgotten note: that it existed, who
/// forgot it and when — not what it said.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ForgottenNote {
    pub note_id: String,
    pub account_id: String,
    pub workspace: String,
    pub kind: String,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
    pub forgotten_at_ms: i64,
    /// The key or session that forgot it.
    pub forgotten_by: String,
    pub seq: u64,
}
impl Record for ForgottenNote {
    const TREE: &'static str = "memory_forgotten";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, doc_key). The vector of an indexed text, with the embedder that made it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KnowledgeVector {
    pub embedder: String,
    #[serde(with = "crate::records::f32_base64")]
    pub vector: Vec<f32>,
    pub seq: u64,
}
impl Record for KnowledgeVector {
    const TREE: &'static str = "knowledge_vectors";
    const FORMAT_VERSION: u8 = 1;
}

/// A note or an entity: what a link joins, or what feedback is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct NodeRef {
    /// `note` or `entity`.
    pub kind: String,
    pub id: String,
}

impl NodeRef {
    /// `note:<id>` or `entity:<id>`: the node's key in the link-end index and the text index.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// Key: (account_id, entity_id). Something memories are about: a user, a project, a tool, a
/// company, a mission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryEntity {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub name: String,
    /// `user`, `workspace`, `project`, `tool`, `company`, `mission`, or the caller's own.
    pub entity_type: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub seq: u64,
}
impl Record for MemoryEntity {
    const TREE: &'static str = "memory_entities";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, link_id). A relationship between two nodes of one workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryLink {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub from: NodeRef,
    pub to: NodeRef,
    /// What the link says, e.g. `works_on`, `about`, `prefers`.
    pub relation: String,
    pub weight: f64,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
    pub seq: u64,
}
impl Record for MemoryLink {
    const TREE: &'static str = "memory_links";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, node key (`NodeRef::key`), the link's workspace, link_id). The links at a
/// node, so a pack follows those of its own workspaces without scanning every link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkEnd {
    pub link_id: String,
}
impl Record for LinkEnd {
    const TREE: &'static str = "memory_link_ends";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, occurred_at_ms, event_id): a workspace's events in time
/// order. Summarised history: onboarding turns, mission lifecycle, tool outcomes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryEvent {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub event_type: String,
    pub summary: String,
    pub occurred_at_ms: i64,
    /// The notes and entities the event is about.
    pub subjects: Vec<NodeRef>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
    pub seq: u64,
}
impl Record for MemoryEvent {
    const TREE: &'static str = "memory_events";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, record kind (`entity`, `link`, `event`, `feedback`),
/// external_source, external_id). Which record an external id names, so writing it again
/// updates that record; `at_ms` is an event's time (part of its key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KbExternalRef {
    pub id: String,
    pub at_ms: i64,
    /// Feedback's item (`NodeRef::key`), part of its key.
    #[serde(default)]
    pub node: Option<String>,
}
impl Record for KbExternalRef {
    const TREE: &'static str = "memory_refs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, node key, workspace, feedback_id). A signal on an item of a pack, given
/// in a workspace and counted in that workspace's packs only: `helpful`,
/// `unhelpful`, `remember` or `forget`, with the query it answered (and that query's vector)
/// so it moves the item for similar queries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryFeedback {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub item: NodeRef,
    pub signal: String,
    pub query: Option<String>,
    pub trace_id: Option<String>,
    pub embedder: String,
    #[serde(with = "crate::records::f32_base64")]
    pub query_vector: Vec<f32>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub created_at_ms: i64,
}
impl Record for MemoryFeedback {
    const TREE: &'static str = "memory_feedback";
    const FORMAT_VERSION: u8 = 1;
}

/// Writes to the knowledge base's trees applied together (`Store::apply_kb`): all of them or,
/// after any failure or crash, none.
#[derive(Default)]
pub struct KbWriteSet {
    pub(crate) ops: Vec<KbOp>,
}

/// One write of a set: (tree, key, the encoded value or `None` to remove).
pub(crate) type KbOp = (&'static str, Vec<u8>, Option<Vec<u8>>);

impl KbWriteSet {
    pub fn put<R: Record>(&mut self, key: &impl crate::KeyTuple, value: &R) -> Result<(), crate::StorageError> {
        self.ops.push((R::TREE, key.encode_key(), Some(crate::collection::encode(value)?)));
        Ok(())
    }

    pub fn remove<R: Record>(&mut self, key: &impl crate::KeyTuple) {
        self.ops.push((R::TREE, key.encode_key(), None));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Key: (account_id, source_id). Where knowledge came from: an upload, a page, a spec. Its
/// documents and chunks are what is indexed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub name: String,
    pub url: Option<String>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    /// Its documents' ids, in order.
    pub documents: Vec<String>,
    pub chunk_count: u32,
    pub bytes: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub seq: u64,
}
impl Record for Source {
    const TREE: &'static str = "sources";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, document_id). A source's file or text as indexed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceDocument {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub source_id: String,
    pub title: String,
    /// `text`, `markdown`, `html` or `pdf`.
    pub kind: String,
    pub url: Option<String>,
    pub bytes: u64,
    pub chunk_count: u32,
    pub pages: Option<u32>,
    pub created_at_ms: i64,
}
impl Record for SourceDocument {
    const TREE: &'static str = "source_documents";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, document_id, ordinal). A searchable piece of a document, with what a
/// citation needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SourceChunk {
    /// `chk_<document id>_<ordinal>`.
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub source_id: String,
    pub document_id: String,
    pub ordinal: u32,
    pub text: String,
    pub tokens: u32,
    /// Heading path, outermost first.
    pub section: Vec<String>,
    /// First and last PDF page.
    pub pages: Option<(u32, u32)>,
    pub seq: u64,
}
impl Record for SourceChunk {
    const TREE: &'static str = "source_chunks";
    const FORMAT_VERSION: u8 = 1;
}

impl SourceChunk {
    pub fn id_for(document_id: &str, ordinal: u32) -> String {
        format!("chk_{document_id}_{ordinal}")
    }

    /// The (document id, ordinal) a chunk id names.
    pub fn parse_id(id: &str) -> Option<(&str, u32)> {
        let (document, ordinal) = id.strip_prefix("chk_")?.rsplit_once('_')?;
        Some((document, ordinal.parse().ok()?))
    }
}

/// Key: (account_id). How many graph records an account holds, for its caps; written in the
/// same transaction as the records.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KbCounts {
    pub entities: u64,
    pub links: u64,
    pub events: u64,
    pub feedback: u64,
}
impl Record for KbCounts {
    const TREE: &'static str = "memory_counts";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (seq). Text-index documents a write removed (a source's chunks, deleted or replaced),
/// kept until a text-index commit covers `seq`: after a crash before that commit, the next
/// start deletes them from the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemovedFromIndex {
    pub seq: u64,
    pub keys: Vec<String>,
}
impl Record for RemovedFromIndex {
    const TREE: &'static str = "kb_removed";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, thread, position). The note at a position of a thread (a
/// conversation's turns, say), from the note's `metadata.thread` and `metadata.position`:
/// packs fetch the neighbours of what they found. Readers check the note still says so.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NotePosition {
    pub note_id: String,
}
impl Record for NotePosition {
    const TREE: &'static str = "memory_note_positions";
    const FORMAT_VERSION: u8 = 1;
}
