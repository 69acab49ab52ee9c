//! `indexer`: the only writer of the knowledge base — its records in sled, its text index and
//! its vectors — so every write gets the next write sequence in order and the indexes can
//! say exactly how far they are current.
//!
//! Writes queue while a batch runs; the next batch takes them all: one embedding pass for
//! their texts, one sled flush, one text-index commit (recording the batch's last sequence).
//! A write is answered once all three are done, so a context pack right after sees it.
//!
//! At start (`pre_start`) it catches up: notes written past the text index's last commit are
//! indexed again (embedded again if their vector is missing), notes forgotten past it are
//! deleted from it, and every active note's vector is loaded into memory. A crash between a
//! record write and the commit thus loses nothing.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;
use tokaroo_storage::{
    knowledge::{ForgottenNote, KnowledgeVector, MemoryNote, NoteExternalRef},
    text_index::TextDoc,
};

use super::{KbScope, KnowledgeParts, NoteInput, NotePatch};
use crate::{
    error::EngineError,
    tree::{
        inspect::Inspection,
        registry::{ChildRef, TreeMsg},
        supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
    },
};

pub const INDEXER: &str = "indexer";
/// The kind of a note's documents in the text index and the vectors.
pub const NOTE: &str = "note";

/// A write to the knowledge base.
#[derive(Debug)]
pub enum KbWrite {
    Upsert(KbScope, NoteInput),
    Patch(KbScope, String, NotePatch),
    /// (scope, note id, who forgets it)
    Forget(KbScope, String, String),
}

/// What a write produced.
#[derive(Debug)]
pub enum Written {
    /// The note as written, and whether it was created (not updated).
    Note(MemoryNote, bool),
    Forgotten(ForgottenNote),
}

type Reply = RpcReplyPort<Result<Written, EngineError>>;

pub enum IndexerMsg {
    Write(Box<KbWrite>, Reply),
    /// Runs the queued writes as one batch.
    RunBatch,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for IndexerMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub struct IndexerState {
    queue: VecDeque<(Box<KbWrite>, Reply)>,
    scheduled: bool,
    committed_seq: u64,
    last_commit_ms: Option<i64>,
    batches: u64,
    writes: u64,
    /// Notes indexed again at start (written past the last commit).
    recovered: u64,
    /// Notes per account, for the tenant cap (`limits.memory_notes_per_account`).
    notes_per_account: HashMap<String, usize>,
    last_error: Option<String>,
}

pub struct IndexerActor {
    parts: Arc<KnowledgeParts>,
}

pub fn note_key(id: &str) -> String {
    format!("{NOTE}:{id}")
}

/// The text a note is found by.
fn note_text(note: &MemoryNote) -> String {
    if note.title.is_empty() {
        note.content.clone()
    } else {
        format!("{}\n{}", note.title, note.content)
    }
}

/// One record write of a batch, before its index work.
struct Change {
    index: Option<MemoryNote>,
    unindex: Option<(String, String, String)>,
}

impl IndexerActor {
    /// Applies one write to the records; returns its answer and what the indexes must do.
    fn write_record(&self, write: KbWrite, state: &mut IndexerState) -> Result<(Written, Change), EngineError> {
        let store = &self.parts.store;
        let now = crate::clock::now_ms();
        match write {
            KbWrite::Upsert(scope, input) => {
                let reference = input
                    .external_source
                    .as_deref()
                    .zip(input.external_id.as_deref())
                    .map(|(s, i)| (scope.account_id.clone(), scope.workspace.clone(), s.to_owned(), i.to_owned()));
                let existing = match &reference {
                    Some(key) => store
                        .note_refs
                        .get(key)?
                        .and_then(|r| store.notes.get(&(scope.account_id.as_str(), r.note_id.as_str())).transpose())
                        .transpose()?,
                    None => None,
                };
                let created = existing.is_none();
                let held = state.notes_per_account.get(&scope.account_id).copied().unwrap_or(0);
                let operator = self.parts.directory.operator_account_id();
                if created && held >= self.parts.note_cap && operator.as_deref() != Some(scope.account_id.as_str()) {
                    return Err(EngineError::Invalid(format!(
                        "this account holds {held} memory notes, the most this server allows \
                         (limits.memory_notes_per_account); forget some first"
                    )));
                }
                let mut note = existing.unwrap_or_else(|| MemoryNote {
                    id: uuid::Uuid::new_v4().to_string(),
                    account_id: scope.account_id.clone(),
                    workspace: scope.workspace.clone(),
                    title: String::new(),
                    content: String::new(),
                    kind: "fact".into(),
                    tags: Vec::new(),
                    importance: 0.5,
                    confidence: 1.0,
                    metadata: Default::default(),
                    status: "active".into(),
                    external_source: None,
                    external_id: None,
                    created_at_ms: now,
                    updated_at_ms: now,
                    seq: 0,
                });
                note.title = input.title.unwrap_or_default();
                note.content = input.content;
                note.kind = input.kind.unwrap_or(note.kind);
                note.tags = input.tags;
                note.importance = input.importance.unwrap_or(note.importance);
                note.confidence = input.confidence.unwrap_or(note.confidence);
                note.metadata = input.metadata;
                note.status = input.status.unwrap_or(note.status);
                note.external_source = input.external_source;
                note.external_id = input.external_id;
                let change = self.save(note, now)?;
                if created {
                    *state.notes_per_account.entry(scope.account_id.clone()).or_default() += 1;
                }
                Ok((Written::Note(change.0, created), change.1))
            }
            KbWrite::Patch(scope, id, patch) => {
                let Some(mut note) = store.notes.get(&(scope.account_id.as_str(), id.as_str()))? else {
                    return Err(EngineError::NotFound { what: "memory note" });
                };
                if note.workspace != scope.workspace {
                    return Err(EngineError::NotFound { what: "memory note" });
                }
                let old_ref = note.external_source.clone().zip(note.external_id.clone());
                if let Some(v) = patch.title {
                    note.title = v;
                }
                if let Some(v) = patch.content {
                    note.content = v;
                }
                if let Some(v) = patch.kind {
                    note.kind = v;
                }
                if let Some(v) = patch.tags {
                    note.tags = v;
                }
                if let Some(v) = patch.importance {
                    note.importance = v;
                }
                if let Some(v) = patch.confidence {
                    note.confidence = v;
                }
                if let Some(v) = patch.metadata {
                    note.metadata = v;
                }
                if let Some(v) = patch.status {
                    note.status = v;
                }
                if let Some(v) = patch.external_source {
                    note.external_source = v;
                }
                if let Some(v) = patch.external_id {
                    note.external_id = v;
                }
                let new_ref = note.external_source.clone().zip(note.external_id.clone());
                if note.external_source.is_some() != note.external_id.is_some() {
                    return Err(EngineError::Invalid("external_source and external_id go together".into()));
                }
                if new_ref != old_ref {
                    if let Some((source, external)) = &new_ref {
                        let key =
                            (note.account_id.as_str(), note.workspace.as_str(), source.as_str(), external.as_str());
                        if store.note_refs.get(&key)?.is_some_and(|r| r.note_id != note.id) {
                            return Err(EngineError::Conflict(
                                "another note already has this external_source and external_id".into(),
                            ));
                        }
                    }
                    if let Some((source, external)) = &old_ref {
                        store.note_refs.remove(&(
                            note.account_id.as_str(),
                            note.workspace.as_str(),
                            source.as_str(),
                            external.as_str(),
                        ))?;
                    }
                }
                let (note, change) = self.save(note, now)?;
                Ok((Written::Note(note, false), change))
            }
            KbWrite::Forget(scope, id, by) => {
                let Some(note) = store.notes.get(&(scope.account_id.as_str(), id.as_str()))? else {
                    return Err(EngineError::NotFound { what: "memory note" });
                };
                if note.workspace != scope.workspace {
                    return Err(EngineError::NotFound { what: "memory note" });
                }
                let audit = ForgottenNote {
                    note_id: note.id.clone(),
                    account_id: note.account_id.clone(),
                    workspace: note.workspace.clone(),
                    kind: note.kind.clone(),
                    external_source: note.external_source.clone(),
                    external_id: note.external_id.clone(),
                    created_at_ms: note.created_at_ms,
                    forgotten_at_ms: now,
                    forgotten_by: by,
                    seq: store.next_kb_seq()?,
                };
                // The audit record first: a crash after it and before the removals is
                // finished at the next start (a forgotten note is never served again).
                store.forgotten_notes.insert(&(audit.account_id.as_str(), audit.note_id.as_str()), &audit)?;
                if let Some((source, external)) = note.external_source.as_deref().zip(note.external_id.as_deref()) {
                    store.note_refs.remove(&(note.account_id.as_str(), note.workspace.as_str(), source, external))?;
                }
                let key = note_key(&note.id);
                store.knowledge_vectors.remove(&(note.account_id.as_str(), key.as_str()))?;
                store.notes.remove(&(note.account_id.as_str(), note.id.as_str()))?;
                if let Some(count) = state.notes_per_account.get_mut(&note.account_id) {
                    *count = count.saturating_sub(1);
                }
                let unindex = Some((note.account_id, note.workspace, key));
                Ok((Written::Forgotten(audit), Change { index: None, unindex }))
            }
        }
    }

    /// Writes a note under the next sequence, with its external reference.
    fn save(&self, mut note: MemoryNote, now: i64) -> Result<(MemoryNote, Change), EngineError> {
        let store = &self.parts.store;
        note.updated_at_ms = now;
        note.seq = store.next_kb_seq()?;
        store.notes.insert(&(note.account_id.as_str(), note.id.as_str()), &note)?;
        if let Some((source, external)) = note.external_source.as_deref().zip(note.external_id.as_deref()) {
            let key = (note.account_id.as_str(), note.workspace.as_str(), source, external);
            store.note_refs.insert(&key, &NoteExternalRef { note_id: note.id.clone() })?;
        }
        let change = if note.status == "active" {
            Change { index: Some(note.clone()), unindex: None }
        } else {
            Change { index: None, unindex: Some((note.account_id.clone(), note.workspace.clone(), note_key(&note.id))) }
        };
        Ok((note, change))
    }

    /// Embeds, indexes and commits the changes of a batch (records already written).
    async fn index(&self, changes: Vec<Change>, state: &mut IndexerState) -> Result<(), EngineError> {
        let parts = &self.parts;
        let notes: Vec<&MemoryNote> = changes.iter().filter_map(|c| c.index.as_ref()).collect();
        let embedded = if notes.is_empty() {
            None
        } else {
            Some(parts.embedder.embed(notes.iter().map(|n| note_text(n)).collect()).await?)
        };
        let mut docs = Vec::new();
        for (i, note) in notes.iter().enumerate() {
            let key = note_key(&note.id);
            if let Some(embedded) = &embedded {
                let mut vector = embedded.vectors.get(i).cloned().unwrap_or_default();
                crate::embed::l2_normalise(&mut vector);
                let record =
                    KnowledgeVector { embedder: embedded.embedder.to_string(), vector: vector.clone(), seq: note.seq };
                parts.store.knowledge_vectors.insert(&(note.account_id.as_str(), key.as_str()), &record)?;
                parts.vectors.upsert(&note.account_id, &note.workspace, &key, NOTE, vector);
            }
            docs.push(TextDoc {
                key,
                account: note.account_id.clone(),
                workspace: note.workspace.clone(),
                kind: NOTE.into(),
                text: note_text(note),
            });
        }
        let mut deletes = Vec::new();
        for (account, workspace, key) in changes.iter().filter_map(|c| c.unindex.as_ref()) {
            parts.vectors.remove(account, workspace, key);
            deletes.push(key.clone());
        }
        let seq = parts.store.next_kb_seq()?;
        parts.store.flush().await?;
        let text = parts.text.clone();
        tokio::task::spawn_blocking(move || {
            text.apply(&docs, &deletes)?;
            text.commit(seq)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("text index commit: {e}")))??;
        state.committed_seq = seq;
        state.last_commit_ms = Some(crate::clock::now_ms());
        Ok(())
    }

    /// At start: the indexes catch up with the records (see the module's doc).
    async fn recover(&self) -> Result<(u64, u64, HashMap<String, usize>), EngineError> {
        let parts = &self.parts;
        let committed = parts.text.committed_seq()?;
        let notes = parts.store.notes.all()?;
        let forgotten = parts.store.forgotten_notes.all()?;
        let mut per_account: HashMap<String, usize> = HashMap::new();
        for note in &notes {
            *per_account.entry(note.account_id.clone()).or_default() += 1;
        }
        let mut behind = Vec::new();
        let mut deletes = Vec::new();
        let embedder = parts.embedder.id().to_string();
        for note in &notes {
            let key = note_key(&note.id);
            if note.seq > committed {
                if note.status == "active" {
                    behind.push(note);
                } else {
                    deletes.push(key.clone());
                }
            }
            if note.status != "active" {
                continue;
            }
            let stored = parts.store.knowledge_vectors.get(&(note.account_id.as_str(), key.as_str()))?;
            match stored {
                Some(v) if v.embedder == embedder && v.seq >= note.seq => {
                    parts.vectors.upsert(&note.account_id, &note.workspace, &key, NOTE, v.vector);
                }
                // Missing, stale, or another embedder's: made again below.
                _ if note.seq <= committed => behind.push(note),
                _ => {}
            }
        }
        deletes.extend(forgotten.iter().filter(|f| f.seq > committed).map(|f| note_key(&f.note_id)));
        let recovered = behind.len() as u64;
        let mut state = IndexerState::new(committed);
        for chunk in behind.chunks(256) {
            let changes = chunk.iter().map(|n| Change { index: Some((*n).clone()), unindex: None }).collect();
            self.index(changes, &mut state).await?;
        }
        if !deletes.is_empty() {
            let text = parts.text.clone();
            let seq = parts.store.next_kb_seq()?;
            tokio::task::spawn_blocking(move || {
                text.apply(&[], &deletes)?;
                text.commit(seq)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("text index commit: {e}")))??;
        }
        Ok((parts.text.committed_seq()?, recovered, per_account))
    }
}

impl IndexerState {
    fn new(committed_seq: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            scheduled: false,
            committed_seq,
            last_commit_ms: None,
            batches: 0,
            writes: 0,
            recovered: 0,
            notes_per_account: HashMap::new(),
            last_error: None,
        }
    }
}

impl Actor for IndexerActor {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<IndexerMsg>, _: ()) -> Result<IndexerState, ActorProcessingErr> {
        let (committed, recovered, per_account) = self.recover().await?;
        if recovered > 0 {
            tracing::info!(recovered, "knowledge base: indexed again the notes written past the last commit");
        }
        let mut state = IndexerState::new(committed);
        state.recovered = recovered;
        state.notes_per_account = per_account;
        Ok(state)
    }

    async fn handle(
        &self,
        me: ActorRef<IndexerMsg>,
        msg: IndexerMsg,
        state: &mut IndexerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IndexerMsg::Write(write, reply) => {
                state.queue.push_back((write, reply));
                if !state.scheduled {
                    state.scheduled = true;
                    me.cast(IndexerMsg::RunBatch)?;
                }
            }
            IndexerMsg::RunBatch => {
                state.scheduled = false;
                let batch: Vec<(Box<KbWrite>, Reply)> = state.queue.drain(..).collect();
                if batch.is_empty() {
                    return Ok(());
                }
                let mut answers = Vec::with_capacity(batch.len());
                let mut changes = Vec::new();
                for (write, reply) in batch {
                    match self.write_record(*write, state) {
                        Ok((written, change)) => {
                            changes.push(change);
                            answers.push((reply, Ok(written)));
                        }
                        Err(error) => answers.push((reply, Err(error))),
                    }
                }
                state.writes += answers.len() as u64;
                state.batches += 1;
                let indexed = self.index(changes, state).await;
                if let Err(error) = &indexed {
                    tracing::error!(%error, "knowledge base: a batch's records were written but not indexed");
                    state.last_error = Some(error.to_string());
                }
                for (reply, answer) in answers {
                    let answer = match (&indexed, answer) {
                        (Err(error), Ok(_)) => Err(EngineError::Unavailable(format!(
                            "written, but not yet searchable ({error}); it will be indexed at the next start"
                        ))),
                        (_, answer) => answer,
                    };
                    let _ = reply.send(answer);
                }
            }
            IndexerMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "backlog": state.queue.len(),
                    "committed_seq": state.committed_seq,
                    "last_commit_ms": state.last_commit_ms,
                    "batches": state.batches,
                    "writes": state.writes,
                    "recovered_at_start": state.recovered,
                    "text_documents": self.parts.text.len(),
                    "vectors": self.parts.vectors.len(),
                    "embedder": self.parts.embedder.id().to_string(),
                    "last_error": state.last_error,
                })));
            }
            IndexerMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct IndexerSpec {
    pub(crate) parts: Arc<KnowledgeParts>,
}

impl ChildSpec for IndexerSpec {
    fn name(&self) -> String {
        INDEXER.to_owned()
    }
    fn kind(&self) -> &'static str {
        INDEXER
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        Box::pin(spawn_linked(IndexerActor { parts: self.parts.clone() }, (), at))
    }
}
