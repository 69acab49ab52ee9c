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
    knowledge::{
        ForgottenNote, KnowledgeVector, MemoryEntity, MemoryNote, NoteExternalRef, NotePosition, Source, SourceChunk,
    },
    text_index::TextDoc,
};

use super::{
    batch::{entity_text, Staging},
    graph::{BatchWritten, MemoryBatch},
    sources::ingest::{chunk_text, IngestedSource, PreparedSource},
    vectoriser::{MadeVector, PendingVector, VectoriserMsg, VECTORISER},
    KbScope, KnowledgeParts, NoteInput, NotePatch,
};
use crate::{
    error::EngineError,
    tree::{
        inspect::Inspection,
        registry::{ChildRef, TreeMsg},
        supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
    },
};

pub const INDEXER: &str = "indexer";
/// Work per batch, in records written (`KbWrite::weight`): a burst is cut into batches, and
/// each batch takes the accounts in turn, so one tenant's burst does not hold another's
/// single write for long.
const MAX_BATCH_WEIGHT: usize = 1024;
/// Queued work past these answers 503: the queue stays bounded whoever floods it.
const MAX_BACKLOG: usize = 50_000;
const MAX_BACKLOG_PER_ACCOUNT: usize = 5_000;
/// The kind of a note's documents in the text index and the vectors.
pub const NOTE: &str = "note";
/// The kind of an entity's document in the text index.
pub const ENTITY: &str = "entity";
/// The kind of a source chunk's documents in the text index and the vectors.
pub const CHUNK: &str = "chunk";

/// A write to the knowledge base.
#[derive(Debug)]
pub enum KbWrite {
    Upsert(KbScope, NoteInput),
    Patch(KbScope, String, NotePatch),
    /// (scope, note id, who forgets it)
    Forget(KbScope, String, String),
    /// (scope, writes applied together, who writes them)
    Batch(KbScope, MemoryBatch, String),
    /// A source extracted, chunked and embedded: written, or replacing the one of its
    /// external id.
    Source(KbScope, Box<PreparedSource>),
    /// (scope, source id)
    DeleteSource(KbScope, String),
}

impl KbWrite {
    /// About how many records the write touches: a batch its items, a source one per 16
    /// chunks (they come embedded), anything else one.
    fn weight(&self) -> usize {
        match self {
            Self::Batch(_, batch, _) => batch.len().max(1),
            Self::Source(_, source) => 1 + source.documents.iter().map(|d| d.chunks.len()).sum::<usize>() / 16,
            _ => 1,
        }
    }

    fn account_id(&self) -> &str {
        match self {
            Self::Upsert(scope, _)
            | Self::Patch(scope, _, _)
            | Self::Forget(scope, _, _)
            | Self::Batch(scope, _, _)
            | Self::Source(scope, _)
            | Self::DeleteSource(scope, _) => &scope.account_id,
        }
    }
}

/// Queued writes up to `max` weight, one per account in turn (each account's in order). Writes
/// whose caller stopped waiting are dropped unapplied: the caller was told it failed, and
/// may send it again.
fn take_fairly(queue: &mut VecDeque<Queued>, max: usize) -> Vec<Queued> {
    queue.retain(|(_, reply)| !reply.is_closed());
    let mut by_account: Vec<(String, VecDeque<Queued>)> = Vec::new();
    for (write, reply) in queue.drain(..) {
        let account = write.account_id().to_owned();
        match by_account.iter_mut().find(|(a, _)| *a == account) {
            Some((_, writes)) => writes.push_back((write, reply)),
            None => by_account.push((account, VecDeque::from([(write, reply)]))),
        }
    }
    let mut batch: Vec<Queued> = Vec::new();
    let mut weight = 0;
    // The first write always goes, however heavy.
    while (batch.is_empty() || weight < max) && by_account.iter().any(|(_, w)| !w.is_empty()) {
        for (_, writes) in by_account.iter_mut() {
            if batch.is_empty() || weight < max {
                if let Some(write) = writes.pop_front() {
                    weight += write.0.weight();
                    batch.push(write);
                }
            }
        }
    }
    // The rest go back in their arrival order within each account.
    let mut rest: VecDeque<_> = VecDeque::new();
    while by_account.iter().any(|(_, w)| !w.is_empty()) {
        for (_, writes) in by_account.iter_mut() {
            rest.extend(writes.pop_front());
        }
    }
    *queue = rest;
    batch
}

/// What a write produced.
#[derive(Debug)]
pub enum Written {
    /// The note as written, and whether it was created (not updated).
    Note(MemoryNote, bool),
    Forgotten(ForgottenNote),
    Batch(Box<BatchWritten>),
    Source(Box<IngestedSource>),
    SourceDeleted(Box<Source>),
}

type Reply = RpcReplyPort<Result<Written, EngineError>>;
/// A write waiting for its batch, and who waits for its answer.
type Queued = (Box<KbWrite>, Reply);

pub enum IndexerMsg {
    Write(Box<KbWrite>, Reply),
    /// Runs the queued writes as one batch.
    RunBatch,
    /// Vectors the vectoriser made for chunks written without them.
    Vectors(Vec<MadeVector>),
    /// Sends the vectoriser the chunks without a current vector (it lost its queue, or
    /// dropped entries past its bound).
    FindUnvectored,
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
    queue: VecDeque<Queued>,
    scheduled: bool,
    committed_seq: u64,
    last_commit_ms: Option<i64>,
    batches: u64,
    writes: u64,
    /// Notes indexed again at start (written past the last commit).
    recovered: u64,
    /// Notes per account, for the tenant cap (`limits.memory_notes_per_account`).
    notes_per_account: HashMap<String, usize>,
    /// Changes of a batch that could not commit, indexed with the next one.
    retry: Vec<Change>,
    /// The sequence commits stay at after a start that could not catch up.
    pinned_seq: Option<u64>,
    last_error: Option<String>,
}

pub struct IndexerActor {
    parts: Arc<KnowledgeParts>,
}

pub fn note_key(id: &str) -> String {
    format!("{NOTE}:{id}")
}

pub fn entity_key(id: &str) -> String {
    format!("{ENTITY}:{id}")
}

pub fn chunk_key(id: &str) -> String {
    format!("{CHUNK}:{id}")
}

/// Where a note sits in a thread, from its metadata (`thread`, `position`).
pub fn note_position(note: &MemoryNote) -> Option<(&str, i64)> {
    let thread = note.metadata.get("thread")?.as_str()?;
    let position = note.metadata.get("position")?.as_i64()?;
    (!thread.is_empty() && thread.len() <= 256 && !thread.contains('\0')).then_some((thread, position))
}

/// A note as `input` makes it: `existing` updated, or a new one in `scope`.
pub(super) fn merged_note(existing: Option<MemoryNote>, scope: &KbScope, input: NoteInput, now: i64) -> MemoryNote {
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
    note.updated_at_ms = now;
    note
}

/// The text a note is found by.
fn note_text(note: &MemoryNote) -> String {
    if note.title.is_empty() {
        note.content.clone()
    } else {
        format!("{}\n{}", note.title, note.content)
    }
}

/// What a record's text index and vector must show.
pub(super) enum Indexed {
    /// Found by text and by vector.
    Note(MemoryNote),
    /// Found by text (its name, aliases and description).
    Entity(MemoryEntity),
    /// Found by text and by vector: the chunk, its document's title, and its vector when the
    /// ingestion embedded it (with the embedder's id).
    Chunk(Box<SourceChunk>, String, Option<(String, Vec<f32>)>),
}

/// One record write of a batch, before its index work.
pub(super) struct Change {
    index: Option<Indexed>,
    unindex: Option<(String, String, String)>,
}

impl Change {
    /// An active note is indexed; any other status takes it out of the indexes.
    pub(super) fn for_note(note: &MemoryNote) -> Self {
        if note.status == "active" {
            Self { index: Some(Indexed::Note(note.clone())), unindex: None }
        } else {
            Self::unindex(&note.account_id, &note.workspace, note_key(&note.id))
        }
    }

    pub(super) fn for_entity(entity: &MemoryEntity) -> Self {
        Self { index: Some(Indexed::Entity(entity.clone())), unindex: None }
    }

    pub(super) fn for_chunk(chunk: SourceChunk, title: String, vector: Option<(String, Vec<f32>)>) -> Self {
        Self { index: Some(Indexed::Chunk(Box::new(chunk), title, vector)), unindex: None }
    }

    /// The text-index key this change removes, if it removes one.
    pub(super) fn unindexed_key(&self) -> Option<String> {
        match (&self.index, &self.unindex) {
            (None, Some((_, _, key))) => Some(key.clone()),
            _ => None,
        }
    }

    pub(super) fn unindex(account: &str, workspace: &str, key: String) -> Self {
        Self { index: None, unindex: Some((account.into(), workspace.into(), key)) }
    }
}

impl IndexerActor {
    /// Applies one write to the records; returns its answer and what the indexes must do.
    fn write_record(&self, write: KbWrite, state: &mut IndexerState) -> Result<(Written, Vec<Change>), EngineError> {
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
                let note = merged_note(existing, &scope, input, now);
                let change = self.save(note, now)?;
                if created {
                    *state.notes_per_account.entry(scope.account_id.clone()).or_default() += 1;
                }
                Ok((Written::Note(change.0, created), vec![change.1]))
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
                Ok((Written::Note(note, false), vec![change]))
            }
            KbWrite::Forget(scope, id, by) => {
                let mut staging = Staging::new(store, &scope);
                let audit = staging.forget(&id, &by)?;
                staging.finish()?;
                store.apply_kb(&staging.set)?;
                if let Some(count) = state.notes_per_account.get_mut(&scope.account_id) {
                    *count = count.saturating_sub(1);
                }
                let change = staging.changes.pop().unwrap_or(Change { index: None, unindex: None });
                Ok((Written::Forgotten(audit), vec![change]))
            }
            KbWrite::Batch(scope, batch, by) => {
                let held = state.notes_per_account.get(&scope.account_id).copied().unwrap_or(0);
                let operator = self.parts.directory.operator_account_id();
                let cap = (operator.as_deref() != Some(scope.account_id.as_str())).then_some(self.parts.note_cap);
                let mut staging = Staging::new(store, &scope);
                let written = staging.batch(batch, &by, held, cap)?;
                store.apply_kb(&staging.set)?;
                let count = state.notes_per_account.entry(scope.account_id.clone()).or_default();
                *count = (*count + staging.created_notes).saturating_sub(written.forgotten.len());
                Ok((Written::Batch(Box::new(written)), staging.changes))
            }
            KbWrite::Source(scope, prepared) => {
                let mut staging = Staging::new(store, &scope);
                let ingested = staging.source(*prepared)?;
                store.apply_kb(&staging.set)?;
                Ok((Written::Source(Box::new(ingested)), staging.changes))
            }
            KbWrite::DeleteSource(scope, id) => {
                let mut staging = Staging::new(store, &scope);
                let source = staging.delete_source(&id)?;
                store.apply_kb(&staging.set)?;
                Ok((Written::SourceDeleted(Box::new(source)), staging.changes))
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
        if let Some((thread, position)) = note_position(&note) {
            let key = (note.account_id.as_str(), note.workspace.as_str(), thread, position);
            store.note_positions.insert(&key, &NotePosition { note_id: note.id.clone() })?;
        }
        let change = Change::for_note(&note);
        Ok((note, change))
    }

    /// Embeds, indexes and commits the changes of a batch (records already written), after
    /// any left over from a batch that could not commit: the index never records a sequence
    /// past a change it does not hold. `commit_seq` overrides the sequence recorded (catching
    /// up at start commits its intermediate chunks at the old one).
    async fn index(
        &self,
        changes: Vec<Change>,
        state: &mut IndexerState,
        commit_seq: Option<u64>,
    ) -> Result<(), EngineError> {
        // The last change of each note wins (a note patched then forgotten in one batch is
        // forgotten); left-over changes go first, so this batch's win over them.
        let mut last: HashMap<String, Change> = HashMap::new();
        let mut order = Vec::new();
        for change in state.retry.drain(..).chain(changes) {
            let key = change.key();
            if last.insert(key.clone(), change).is_none() {
                order.push(key);
            }
        }
        let changes: Vec<Change> = order.into_iter().filter_map(|k| last.remove(&k)).collect();
        if changes.is_empty() {
            return Ok(());
        }
        // After a start that could not catch up, commits stay at the sequence it found, so
        // the next start catches up with everything since (see `pre_start`).
        let commit_seq = commit_seq.or(state.pinned_seq);
        match self.apply_changes(&changes, commit_seq).await {
            Ok((seq, to_vectorise)) => {
                state.committed_seq = seq;
                state.last_commit_ms = Some(crate::clock::now_ms());
                self.prune_removed(seq);
                if !to_vectorise.is_empty() {
                    // Not there (restarting): these are found without vectors at the next start.
                    if let Some(vectoriser) = self.parts.registry.actor::<VectoriserMsg>(VECTORISER) {
                        let _ = vectoriser.cast(VectoriserMsg::Embed(to_vectorise));
                    }
                }
                Ok(())
            }
            Err(error) => {
                // Kept for the next batch, whatever step failed: its commit includes them, or
                // fails too.
                state.retry = changes;
                Err(error)
            }
        }
    }

    /// Embeds, writes the vectors of and commits `changes`; answers the sequence committed
    /// and the chunks left for the vectoriser.
    async fn apply_changes(
        &self,
        changes: &[Change],
        commit_seq: Option<u64>,
    ) -> Result<(u64, Vec<PendingVector>), EngineError> {
        let parts = &self.parts;
        // What to embed: notes, and chunks whose ingestion could not embed them.
        let mut to_embed: Vec<(String, String, String, &str, u64, String)> = Vec::new();
        let mut to_vectorise = Vec::new();
        let mut docs = Vec::new();
        for change in changes {
            match &change.index {
                Some(Indexed::Note(note)) => {
                    let text = note_text(note);
                    let key = note_key(&note.id);
                    to_embed.push((
                        note.account_id.clone(),
                        note.workspace.clone(),
                        key.clone(),
                        NOTE,
                        note.seq,
                        text.clone(),
                    ));
                    docs.push(TextDoc {
                        key,
                        account: note.account_id.clone(),
                        workspace: note.workspace.clone(),
                        kind: NOTE.into(),
                        text,
                    });
                }
                Some(Indexed::Chunk(chunk, title, vector)) => {
                    let text = chunk_text(title, &chunk.section, &chunk.text);
                    let key = chunk_key(&chunk.id);
                    match vector {
                        Some((embedder, vector)) => {
                            let record =
                                KnowledgeVector { embedder: embedder.clone(), vector: vector.clone(), seq: chunk.seq };
                            parts
                                .store
                                .knowledge_vectors
                                .insert(&(chunk.account_id.as_str(), key.as_str()), &record)?;
                            parts.vectors.upsert(&chunk.account_id, &chunk.workspace, &key, CHUNK, vector.clone());
                        }
                        // Embedded in the background (`vectoriser.rs`) once committed.
                        None => to_vectorise.push(PendingVector {
                            account_id: chunk.account_id.clone(),
                            workspace: chunk.workspace.clone(),
                            key: key.clone(),
                            kind: CHUNK,
                            seq: chunk.seq,
                            text: text.clone(),
                        }),
                    }
                    docs.push(TextDoc {
                        key,
                        account: chunk.account_id.clone(),
                        workspace: chunk.workspace.clone(),
                        kind: CHUNK.into(),
                        text,
                    });
                }
                _ => {}
            }
        }
        // Without vectors (the embedder failing) a record is still found by its text, and
        // embedded again at the next start (its vector is missing).
        if !to_embed.is_empty() {
            let texts = to_embed.iter().map(|e| e.5.clone()).collect();
            match parts.embedder.embed(texts).await {
                Ok(embedded) if embedded.vectors.len() == to_embed.len() => {
                    for ((account, workspace, key, kind, seq, _), mut vector) in
                        to_embed.into_iter().zip(embedded.vectors)
                    {
                        crate::embed::l2_normalise(&mut vector);
                        let record =
                            KnowledgeVector { embedder: embedded.embedder.to_string(), vector: vector.clone(), seq };
                        parts.store.knowledge_vectors.insert(&(account.as_str(), key.as_str()), &record)?;
                        parts.vectors.upsert(&account, &workspace, &key, kind, vector);
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "knowledge base: embedding failed; these records are searchable by text only until the next start");
                }
            }
        }
        for change in changes {
            if let Some(Indexed::Entity(entity)) = &change.index {
                docs.push(TextDoc {
                    key: entity_key(&entity.id),
                    account: entity.account_id.clone(),
                    workspace: entity.workspace.clone(),
                    kind: ENTITY.into(),
                    text: entity_text(entity),
                });
            }
        }
        let mut deletes = Vec::new();
        for (account, workspace, key) in changes.iter().filter_map(|c| c.unindex.as_ref()) {
            parts.vectors.remove(account, workspace, key);
            deletes.push(key.clone());
        }
        let seq = match commit_seq {
            Some(seq) => seq,
            None => parts.store.next_kb_seq()?,
        };
        self.commit_text(docs, deletes, seq).await?;
        Ok((seq, to_vectorise))
    }

    /// Flushes sled (the records the commit speaks for are durable first), then applies
    /// `docs` and `deletes` to the text index and commits it at `seq`.
    async fn commit_text(&self, docs: Vec<TextDoc>, deletes: Vec<String>, seq: u64) -> Result<(), EngineError> {
        self.parts.store.flush().await?;
        let text = self.parts.text.clone();
        tokio::task::spawn_blocking(move || {
            text.apply(&docs, &deletes)?;
            text.commit(seq)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("text index commit: {e}")))??;
        Ok(())
    }

    /// Writes background vectors whose chunk is still the one embedded (not deleted or
    /// replaced meanwhile).
    fn write_vectors(&self, made: Vec<MadeVector>) -> Result<(), EngineError> {
        let store = &self.parts.store;
        for m in made {
            let p = &m.pending;
            let Some(id) = p.key.strip_prefix("chunk:") else { continue };
            let Some((document, ordinal)) = SourceChunk::parse_id(id) else { continue };
            let current = store.source_chunks.get(&(p.account_id.as_str(), document, u64::from(ordinal)))?;
            if current.is_some_and(|c| c.seq == p.seq) {
                let record = KnowledgeVector { embedder: m.embedder, vector: m.vector.clone(), seq: p.seq };
                store.knowledge_vectors.insert(&(p.account_id.as_str(), p.key.as_str()), &record)?;
                self.parts.vectors.upsert(&p.account_id, &p.workspace, &p.key, p.kind, m.vector);
            }
        }
        Ok(())
    }

    /// What a chunk's stored vector is worth to the chunk embedder now.
    fn stored_chunk_vector(
        &self,
        chunk: &SourceChunk,
        current: &crate::embed::EmbedderId,
    ) -> Result<StoredVector, EngineError> {
        let key = chunk_key(&chunk.id);
        let stored = self.parts.store.knowledge_vectors.get(&(chunk.account_id.as_str(), key.as_str()))?;
        Ok(match stored {
            Some(v) if v.seq >= chunk.seq && same_embedder(&v.embedder, current) => StoredVector::Current(v.vector),
            // Another embedder's while a stand-in runs for the configured static model (it
            // failed to load): kept for its return, rather than replaced by vectors that would
            // be thrown away then; the chunk is found by text meanwhile.
            Some(v) if v.seq >= chunk.seq && self.parts.chunk_fallback.is_some() => StoredVector::LeaveToText,
            _ => StoredVector::Make,
        })
    }

    /// Every chunk without a current vector, for the vectoriser (as many as it takes).
    fn find_unvectored(&self) -> Result<(), EngineError> {
        let current = self.parts.chunk_embedder.id();
        let mut unvectored = Unvectored::default();
        self.parts.store.source_chunks.for_each(|chunk| {
            if let StoredVector::Make = self.stored_chunk_vector(&chunk, &current)? {
                unvectored.offer(chunk);
            }
            Ok::<_, EngineError>(())
        })?;
        self.send_unvectored(unvectored)
    }

    fn send_unvectored(&self, unvectored: Unvectored) -> Result<(), EngineError> {
        if unvectored.chunks.is_empty() {
            return Ok(());
        }
        let Some(vectoriser) = self.parts.registry.actor::<VectoriserMsg>(VECTORISER) else {
            // Restarting: it asks for them again when it is back.
            return Ok(());
        };
        let mut titles: HashMap<(String, String), String> = HashMap::new();
        let mut pending = Vec::with_capacity(unvectored.chunks.len());
        for chunk in unvectored.chunks {
            let document = (chunk.account_id.clone(), chunk.document_id.clone());
            let title = match titles.get(&document) {
                Some(title) => title.clone(),
                None => {
                    let found = self.parts.store.source_documents.get(&(document.0.as_str(), document.1.as_str()))?;
                    let title = found.map(|d| d.title).unwrap_or_default();
                    titles.insert(document, title.clone());
                    title
                }
            };
            pending.push(PendingVector {
                account_id: chunk.account_id.clone(),
                workspace: chunk.workspace.clone(),
                key: chunk_key(&chunk.id),
                kind: CHUNK,
                seq: chunk.seq,
                text: crate::knowledge::sources::ingest::chunk_text(&title, &chunk.section, &chunk.text),
            });
        }
        let _ = vectoriser.cast(VectoriserMsg::Embed(pending));
        if unvectored.more {
            let _ = vectoriser.cast(VectoriserMsg::MoreToFind);
        }
        Ok(())
    }

    /// At start: the indexes catch up with the records (see the module's doc). Best effort:
    /// what fails is logged and retried at the next start, and the actor starts anyway, so a
    /// broken knowledge base never keeps the gateway from serving.
    async fn recover(&self, state: &mut IndexerState) -> Result<(), EngineError> {
        let parts = &self.parts;
        let committed = parts.text.committed_seq()?;
        state.committed_seq = committed;
        // A sled restored from an older backup, or a crash before its counter was flushed,
        // must not hand out sequences the index already claims to hold.
        parts.store.raise_kb_seq(committed)?;
        let forgotten = parts.store.forgotten_notes.all()?;
        // A forget is its audit record first; one cut short by a crash is finished here.
        for audit in &forgotten {
            let slot = (audit.account_id.as_str(), audit.note_id.as_str());
            if parts.store.notes.get(&slot)?.is_some_and(|note| note.seq < audit.seq) {
                if let Some((source, external)) = audit.external_source.as_deref().zip(audit.external_id.as_deref()) {
                    let reference = (audit.account_id.as_str(), audit.workspace.as_str(), source, external);
                    if parts.store.note_refs.get(&reference)?.is_some_and(|r| r.note_id == audit.note_id) {
                        parts.store.note_refs.remove(&reference)?;
                    }
                }
                let key = note_key(&audit.note_id);
                parts.store.knowledge_vectors.remove(&(audit.account_id.as_str(), key.as_str()))?;
                parts.store.notes.remove(&slot)?;
            }
        }
        let notes = parts.store.notes.all()?;
        let embedder = parts.embedder.id();
        let mut behind = Vec::new();
        let mut deletes: Vec<String> =
            forgotten.iter().filter(|f| f.seq > committed).map(|f| note_key(&f.note_id)).collect();
        // Chunks removed by writes the index never committed.
        for removed in parts.store.removed_from_index.all()? {
            if removed.seq > committed {
                deletes.extend(removed.keys);
            }
        }
        for note in notes {
            *state.notes_per_account.entry(note.account_id.clone()).or_default() += 1;
            // The note's place in its thread, for packs' neighbours (written after the note).
            if let Some((thread, position)) = note_position(&note) {
                let key = (note.account_id.as_str(), note.workspace.as_str(), thread, position);
                if parts.store.note_positions.get(&key)?.is_none() {
                    parts.store.note_positions.insert(&key, &NotePosition { note_id: note.id.clone() })?;
                }
            }
            // A note and its external reference are two writes: the reference is restored.
            if let Some((source, external)) = note.external_source.as_deref().zip(note.external_id.as_deref()) {
                let reference = (note.account_id.as_str(), note.workspace.as_str(), source, external);
                if parts.store.note_refs.get(&reference)?.is_none() {
                    parts.store.note_refs.insert(&reference, &NoteExternalRef { note_id: note.id.clone() })?;
                }
            }
            let key = note_key(&note.id);
            if note.status != "active" {
                if note.seq > committed {
                    deletes.push(key);
                }
                continue;
            }
            let stored = parts.store.knowledge_vectors.get(&(note.account_id.as_str(), key.as_str()))?;
            let current = stored.filter(|v| same_embedder(&v.embedder, &embedder) && v.seq >= note.seq);
            match current {
                Some(v) if note.seq <= committed => {
                    parts.vectors.upsert(&note.account_id, &note.workspace, &key, NOTE, v.vector);
                }
                _ => behind.push(note),
            }
        }
        state.recovered = behind.len() as u64;
        // Intermediate chunks commit at the old sequence: a crash midway leaves the rest
        // still behind it, so the next start catches up with them too.
        let chunks: Vec<Vec<MemoryNote>> = behind.chunks(64).map(<[MemoryNote]>::to_vec).collect();
        for chunk in chunks {
            let changes = chunk.into_iter().map(|n| Change { index: Some(Indexed::Note(n)), unindex: None }).collect();
            self.index(changes, state, Some(committed)).await?;
        }
        // Entities are found by text only: those written past the commit are indexed again.
        let entities: Vec<Change> = parts
            .store
            .entities
            .all()?
            .into_iter()
            .filter(|e| e.seq > committed)
            .map(|e| Change::for_entity(&e))
            .collect();
        self.index(entities, state, Some(committed)).await?;
        // Source chunks: those past the commit are indexed (and embedded) again; the others'
        // vectors are loaded, and those missing or another embedder's made in the background.
        let mut behind_chunks = Vec::new();
        let mut unvectored = Unvectored::default();
        let current = parts.chunk_embedder.id();
        parts.store.source_chunks.for_each(|chunk| {
            if chunk.seq > committed {
                behind_chunks.push(chunk);
                return Ok::<_, EngineError>(());
            }
            match self.stored_chunk_vector(&chunk, &current)? {
                StoredVector::Current(vector) => {
                    parts.vectors.upsert(&chunk.account_id, &chunk.workspace, &chunk_key(&chunk.id), CHUNK, vector)
                }
                StoredVector::Make => unvectored.offer(chunk),
                StoredVector::LeaveToText => {}
            }
            Ok(())
        })?;
        state.recovered += behind_chunks.len() as u64;
        for slice in behind_chunks.chunks(64) {
            let mut changes = Vec::with_capacity(slice.len());
            for chunk in slice {
                let document =
                    parts.store.source_documents.get(&(chunk.account_id.as_str(), chunk.document_id.as_str()))?;
                let title = document.map(|d| d.title).unwrap_or_default();
                changes.push(Change::for_chunk(chunk.clone(), title, None));
            }
            self.index(changes, state, Some(committed)).await?;
        }
        self.send_unvectored(unvectored)?;
        let seq = parts.store.next_kb_seq()?;
        self.commit_text(Vec::new(), deletes, seq).await?;
        state.committed_seq = seq;
        self.prune_removed(seq);
        Ok(())
    }

    /// Forgets the removal records a commit at `seq` covers.
    fn prune_removed(&self, seq: u64) {
        let removed = &self.parts.store.removed_from_index;
        if removed.is_empty() {
            return;
        }
        match removed.all() {
            Ok(all) => {
                for r in all.into_iter().filter(|r| r.seq <= seq) {
                    let _ = removed.remove(&r.seq);
                }
            }
            Err(error) => tracing::warn!(%error, "knowledge base: could not prune removal records"),
        }
    }
}

enum StoredVector {
    Current(Vec<f32>),
    Make,
    LeaveToText,
}

/// Chunks for the vectoriser, at most as many as its queue takes (per account and in all);
/// `more` when some were left for a later search.
#[derive(Default)]
struct Unvectored {
    chunks: Vec<SourceChunk>,
    per_account: HashMap<String, usize>,
    more: bool,
}

impl Unvectored {
    fn offer(&mut self, chunk: SourceChunk) {
        let held = self.per_account.entry(chunk.account_id.clone()).or_default();
        if self.chunks.len() >= super::vectoriser::MAX_QUEUE || *held >= super::vectoriser::MAX_QUEUE_PER_ACCOUNT {
            self.more = true;
            return;
        }
        *held += 1;
        self.chunks.push(chunk);
    }
}

/// Whether a stored vector's embedder (`kind:model:dims`) is `current`: kind and model only,
/// as a routed model's dims are known only once it has answered.
fn same_embedder(stored: &str, current: &crate::embed::EmbedderId) -> bool {
    stored.rsplit_once(':').map(|(kind_model, _)| kind_model)
        == Some(format!("{}:{}", current.kind.as_str(), current.model).as_str())
}

impl Change {
    fn key(&self) -> String {
        match (&self.index, &self.unindex) {
            (Some(Indexed::Note(note)), _) => note_key(&note.id),
            (Some(Indexed::Entity(entity)), _) => entity_key(&entity.id),
            (Some(Indexed::Chunk(chunk, ..)), _) => chunk_key(&chunk.id),
            (None, Some((_, _, key))) => key.clone(),
            (None, None) => String::new(),
        }
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
            retry: Vec::new(),
            pinned_seq: None,
            last_error: None,
        }
    }
}

impl Actor for IndexerActor {
    type Msg = IndexerMsg;
    type State = IndexerState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<IndexerMsg>, _: ()) -> Result<IndexerState, ActorProcessingErr> {
        let mut state = IndexerState::new(0);
        // Vectors loaded now are graphed by one background build per large set, after.
        self.parts.vectors.loading();
        let recovered = self.recover(&mut state).await;
        self.parts.vectors.loaded();
        match recovered {
            Ok(()) if state.recovered > 0 => {
                tracing::info!(
                    recovered = state.recovered,
                    "knowledge base: indexed again the notes written past the last commit"
                );
            }
            Ok(()) => {}
            Err(error) => {
                tracing::error!(%error, "knowledge base: catching up at start failed; retried at the next start");
                state.last_error = Some(error.to_string());
                // Commits from now on claim no more than what was caught up with.
                state.pinned_seq = Some(state.committed_seq);
            }
        }
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
                let account = write.account_id();
                let total: usize = state.queue.iter().map(|(w, _)| w.weight()).sum();
                let queued: usize =
                    state.queue.iter().filter(|(w, _)| w.account_id() == account).map(|(w, _)| w.weight()).sum();
                if total >= MAX_BACKLOG || queued >= MAX_BACKLOG_PER_ACCOUNT {
                    let _ = reply.send(Err(EngineError::Unavailable(
                        "the knowledge base has too many writes queued; retry shortly".into(),
                    )));
                    return Ok(());
                }
                state.queue.push_back((write, reply));
                if !state.scheduled {
                    state.scheduled = true;
                    me.cast(IndexerMsg::RunBatch)?;
                }
            }
            IndexerMsg::RunBatch => {
                state.scheduled = false;
                let batch = take_fairly(&mut state.queue, MAX_BATCH_WEIGHT);
                if !state.queue.is_empty() {
                    state.scheduled = true;
                    me.cast(IndexerMsg::RunBatch)?;
                }
                if batch.is_empty() {
                    return Ok(());
                }
                let mut answers = Vec::with_capacity(batch.len());
                let mut changes = Vec::new();
                for (write, reply) in batch {
                    match self.write_record(*write, state) {
                        Ok((written, written_changes)) => {
                            changes.extend(written_changes);
                            answers.push((reply, Ok(written)));
                        }
                        Err(error) => answers.push((reply, Err(error))),
                    }
                }
                state.writes += answers.len() as u64;
                state.batches += 1;
                let indexed = self.index(changes, state, None).await;
                if let Err(error) = &indexed {
                    tracing::error!(%error, "knowledge base: a batch's records were written but not indexed");
                    state.last_error = Some(error.to_string());
                }
                for (reply, answer) in answers {
                    let answer = match (&indexed, answer) {
                        (Err(error), Ok(_)) => Err(EngineError::Unavailable(format!(
                            "written, but not yet searchable ({error}); it is indexed with the next write or at \
                             the next start"
                        ))),
                        (_, answer) => answer,
                    };
                    let _ = reply.send(answer);
                }
            }
            IndexerMsg::Vectors(made) => {
                if let Err(error) = self.write_vectors(made) {
                    tracing::error!(%error, "knowledge base: writing background vectors failed; retried at the next start");
                    state.last_error = Some(error.to_string());
                }
            }
            IndexerMsg::FindUnvectored => {
                if let Err(error) = self.find_unvectored() {
                    tracing::error!(%error, "knowledge base: looking for chunks without a vector failed; retried at the next start");
                    state.last_error = Some(error.to_string());
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
                    "waiting_for_a_commit": state.retry.len(),
                    "commits_pinned_at": state.pinned_seq,
                    "text_documents": self.parts.text.len(),
                    "vectors": self.parts.vectors.len(),
                    "vector_graphs": self.parts.vectors.graphs(),
                    "embedder": self.parts.embedder.id().to_string(),
                    "chunk_embedder": self.parts.chunk_embedder.id().to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn write(account: &str, n: usize) -> (Queued, tokio::sync::oneshot::Receiver<Result<Written, EngineError>>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let scope = KbScope { account_id: account.into(), workspace: String::new() };
        let input = NoteInput { content: format!("{account} {n}"), ..NoteInput::default() };
        ((Box::new(KbWrite::Upsert(scope, input)), RpcReplyPort::from(tx)), rx)
    }

    fn label(queued: &Queued) -> String {
        match &*queued.0 {
            KbWrite::Upsert(_, input) => input.content.clone(),
            _ => unreachable!(),
        }
    }

    /// One tenant's burst and another's single write: the single write goes in the first
    /// batch, each tenant's writes stay in order, and abandoned writes are dropped.
    #[test]
    fn batches_take_accounts_in_turn_and_drop_abandoned_writes() {
        let mut queue = VecDeque::new();
        let mut waiting = Vec::new();
        for n in 0..5 {
            let (queued, rx) = write("flood", n);
            queue.push_back(queued);
            waiting.push(rx);
        }
        let (queued, rx) = write("quiet", 0);
        queue.push_back(queued);
        drop(rx); // its caller gave up
        let (queued, _quiet) = write("quiet", 1);
        queue.push_back(queued);
        let first: Vec<String> = take_fairly(&mut queue, 3).iter().map(label).collect();
        assert_eq!(first, ["flood 0", "quiet 1", "flood 1"]);
        let rest: Vec<String> = take_fairly(&mut queue, 10).iter().map(label).collect();
        assert_eq!(rest, ["flood 2", "flood 3", "flood 4"]);
        assert!(queue.is_empty());
    }
}
