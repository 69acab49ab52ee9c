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
