//! How the indexer applies a [`MemoryBatch`]: every write staged in one `KbWriteSet` (reads
//! see the batch's own earlier writes), then applied in one transaction, so a batch is
//! written whole or not at all — a failed check, a storage error or a crash leaves nothing.

use std::collections::{HashMap, HashSet};

use tokaroo_storage::{
    knowledge::{
        ForgottenNote, KbCounts, KbExternalRef, KbWriteSet, KnowledgeVector, LinkEnd, MemoryEntity, MemoryEvent,
        MemoryFeedback, MemoryLink, MemoryNote, NodeRef, NoteExternalRef, NotePosition, RemovedFromIndex, Source,
        SourceChunk, SourceDocument,
    },
    Store,
};

use super::{
    graph::{at, BatchWritten, EntityInput, EventInput, FeedbackInput, LinkInput, MemoryBatch, NodeSpec},
    indexer::{chunk_key, note_key, note_position, Change},
    sources::ingest::{IngestedSource, PreparedSource, MAX_CHUNKS_PER_ACCOUNT, MAX_SOURCES_PER_ACCOUNT},
    KbScope, NoteInput,
};
use crate::error::EngineError;

/// A batch's writes before they are applied.
pub(super) struct Staging<'a> {
    store: &'a Store,
    scope: &'a KbScope,
    now: i64,
    pub(super) set: KbWriteSet,
    notes: HashMap<String, MemoryNote>,
    entities: HashMap<String, MemoryEntity>,
    /// Links written (`Some`) or removed (`None`) by this batch.
    links: HashMap<String, Option<MemoryLink>>,
    /// External ids written by this batch: (kind, source, id) → record.
    refs: HashMap<(String, String, String), KbExternalRef>,
    forgotten: HashSet<String>,
    pub(super) changes: Vec<Change>,
    /// Notes this batch created, for the per-account cap.
    pub(super) created_notes: usize,
    /// The account's graph counts as this batch leaves them (loaded at first use).
    counts: Option<KbCounts>,
    /// The cap on each kind of graph record (`None` for the operator).
    cap: Option<usize>,
}

/// Links one node may have: forgetting a note removes its links in one transaction.
pub(super) const MAX_LINKS_PER_NODE: usize = 1000;
/// Feedback read (and removed with a forgotten note) per node.
pub(super) const MAX_FEEDBACK_PER_NODE: usize = 1000;

fn next_seq(store: &Store) -> Result<u64, EngineError> {
    Ok(store.next_kb_seq()?)
}

fn reference(id: &str, at_ms: i64) -> KbExternalRef {
    KbExternalRef { id: id.into(), at_ms, node: None }
}

/// A link's id when it has no external id: the same ends and relation are the same link.
fn link_id(account: &str, workspace: &str, from: &NodeRef, to: &NodeRef, relation: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{account}\0{workspace}\0{}\0{}\0{relation}", from.key(), to.key()));
    format!("lnk_{}", &hex::encode(digest)[..32])
}

impl<'a> Staging<'a> {
    pub(super) fn new(store: &'a Store, scope: &'a KbScope) -> Self {
        Self {
            store,
            scope,
            now: crate::clock::now_ms(),
            set: KbWriteSet::default(),
            notes: HashMap::new(),
            entities: HashMap::new(),
            links: HashMap::new(),
            refs: HashMap::new(),
            forgotten: HashSet::new(),
            changes: Vec::new(),
            created_notes: 0,
            counts: None,
            cap: None,
        }
    }

    /// Counts a graph record in (`delta` 1) or out (−1), refusing one past the cap.
    fn count(&mut self, kind: &'static str, delta: i64) -> Result<(), EngineError> {
        if self.counts.is_none() {
            self.counts = Some(self.store.kb_counts.get(&self.scope.account_id.as_str())?.unwrap_or_default());
        }
        let cap = self.cap;
        let counts = self.counts.as_mut().expect("loaded above");
        let slot = match kind {
            "entities" => &mut counts.entities,
            "links" => &mut counts.links,
            "events" => &mut counts.events,
            _ => &mut counts.feedback,
        };
        if delta > 0 && cap.is_some_and(|cap| *slot >= cap as u64) {
            return Err(EngineError::Invalid(format!(
                "this account holds {slot} {kind}, the most this server allows \
                 (limits.memory_notes_per_account caps each kind); remove some first"
            )));
        }
        *slot = slot.saturating_add_signed(delta);
        Ok(())
    }

    /// Stages the counts with the batch's other writes.
    pub(super) fn finish(&mut self) -> Result<(), EngineError> {
        if let Some(counts) = &self.counts {
            self.set.put(&self.scope.account_id.as_str(), counts)?;
        }
        Ok(())
    }

    fn account(&self) -> &str {
        &self.scope.account_id
    }

    fn readable(&self, workspace: &str) -> bool {
        workspace == self.scope.workspace || workspace.is_empty()
    }

    fn note(&self, id: &str) -> Result<Option<MemoryNote>, EngineError> {
        if self.forgotten.contains(id) {
            return Ok(None);
        }
        if let Some(note) = self.notes.get(id) {
            return Ok(Some(note.clone()));
        }
        Ok(self.store.notes.get(&(self.account(), id))?)
    }

    fn entity(&self, id: &str) -> Result<Option<MemoryEntity>, EngineError> {
        if let Some(entity) = self.entities.get(id) {
            return Ok(Some(entity.clone()));
        }
        Ok(self.store.entities.get(&(self.account(), id))?)
    }

    fn link(&self, id: &str) -> Result<Option<MemoryLink>, EngineError> {
        match self.links.get(id) {
            Some(staged) => Ok(staged.clone()),
            None => Ok(self.store.links.get(&(self.account(), id))?),
        }
    }

    /// The record an external id names in this scope's workspace: written by this batch or
    /// before it.
    fn external(&self, kind: &str, source: &str, external: &str) -> Result<Option<KbExternalRef>, EngineError> {
        if let Some(found) = self.refs.get(&(kind.to_owned(), source.to_owned(), external.to_owned())) {
            return Ok(Some(found.clone()));
        }
        let (account, workspace) = (self.account(), self.scope.workspace.as_str());
        if kind == "note" {
            let found = self.store.note_refs.get(&(account, workspace, source, external))?;
            return Ok(found.filter(|r| !self.forgotten.contains(&r.note_id)).map(|r| reference(&r.note_id, 0)));
        }
        Ok(self.store.kb_refs.get(&(account, workspace, kind, source, external))?)
    }

    fn put_ref(&mut self, kind: &str, source: &str, external: &str, found: KbExternalRef) -> Result<(), EngineError> {
        let (account, workspace) = (self.scope.account_id.clone(), self.scope.workspace.clone());
        if kind == "note" {
            let reference = NoteExternalRef { note_id: found.id.clone() };
            self.set.put(&(account.as_str(), workspace.as_str(), source, external), &reference)?;
        } else {
            self.set.put(&(account.as_str(), workspace.as_str(), kind, source, external), &found)?;
        }
        self.refs.insert((kind.into(), source.into(), external.into()), found);
        Ok(())
    }

    /// The node a spec names, which this scope must be able to read.
    fn resolve(&self, spec: &NodeSpec) -> Result<NodeRef, EngineError> {
        let id = match (&spec.id, spec.external_source.as_deref().zip(spec.external_id.as_deref())) {
            (Some(id), _) => id.clone(),
            (None, Some((source, external))) => match self.external(&spec.kind, source, external)? {
                Some(found) => found.id,
                None => {
                    return Err(EngineError::NotFound { what: if spec.kind == "note" { "note" } else { "entity" } })
                }
            },
            (None, None) => return Err(EngineError::Invalid("a node needs an id or an external id".into())),
        };
        let workspace = match spec.kind.as_str() {
            "note" => self.note(&id)?.map(|n| n.workspace),
            _ => self.entity(&id)?.map(|e| e.workspace),
        };
        match workspace {
            Some(w) if self.readable(&w) => Ok(NodeRef { kind: spec.kind.clone(), id }),
            _ => Err(EngineError::NotFound { what: if spec.kind == "note" { "note" } else { "entity" } }),
        }
    }

    pub(super) fn note_input(
        &mut self,
        input: NoteInput,
        held: usize,
        cap: Option<usize>,
    ) -> Result<(MemoryNote, bool), EngineError> {
        let existing = match input.external_source.as_deref().zip(input.external_id.as_deref()) {
            Some((source, external)) => match self.external("note", source, external)? {
                Some(found) => self.note(&found.id)?,
                None => None,
            },
            None => None,
        };
        let created = existing.is_none();
        if created && cap.is_some_and(|cap| held + self.created_notes >= cap) {
            return Err(EngineError::Invalid(format!(
                "this account holds {} memory notes, the most this server allows \
                 (limits.memory_notes_per_account); forget some first",
                held + self.created_notes
            )));
        }
        let mut note = super::indexer::merged_note(existing, self.scope, input, self.now);
        note.seq = next_seq(self.store)?;
        self.set.put(&(note.account_id.as_str(), note.id.as_str()), &note)?;
        if let Some((source, external)) = note.external_source.clone().zip(note.external_id.clone()) {
            self.put_ref("note", &source, &external, reference(&note.id, 0))?;
        }
        if let Some((thread, position)) = note_position(&note) {
            let key = (note.account_id.as_str(), note.workspace.as_str(), thread, position);
            self.set.put(&key, &NotePosition { note_id: note.id.clone() })?;
        }
        self.changes.push(Change::for_note(&note));
        self.notes.insert(note.id.clone(), note.clone());
        if created {
            self.created_notes += 1;
        }
        Ok((note, created))
    }

    fn entity_input(&mut self, input: EntityInput) -> Result<(MemoryEntity, bool), EngineError> {
        let existing = match (&input.id, input.external_source.as_deref().zip(input.external_id.as_deref())) {
            (Some(id), _) => match self.entity(id)? {
                Some(e) if e.workspace == self.scope.workspace => Some(e),
                _ => return Err(EngineError::NotFound { what: "entity" }),
            },
            (None, Some((source, external))) => match self.external("entity", source, external)? {
                Some(found) => self.entity(&found.id)?,
                None => None,
            },
            (None, None) => None,
        };
        let created = existing.is_none();
        if created {
            self.count("entities", 1)?;
        }
        let mut entity = existing.unwrap_or_else(|| MemoryEntity {
            id: format!("ent_{}", uuid::Uuid::new_v4().simple()),
            account_id: self.scope.account_id.clone(),
            workspace: self.scope.workspace.clone(),
            name: String::new(),
            entity_type: "thing".into(),
            description: String::new(),
            aliases: Vec::new(),
            metadata: Default::default(),
            external_source: None,
            external_id: None,
            created_at_ms: self.now,
            updated_at_ms: self.now,
            seq: 0,
        });
        if let Some(v) = input.name {
            entity.name = v;
        }
        if let Some(v) = input.entity_type {
            entity.entity_type = v;
        }
        if let Some(v) = input.description {
            entity.description = v;
        }
        if let Some(v) = input.aliases {
            entity.aliases = v;
        }
        if let Some(v) = input.metadata {
            entity.metadata = v;
        }
        if let Some((source, external)) = input.external_source.zip(input.external_id) {
            if let Some(other) = self.external("entity", &source, &external)?.filter(|r| r.id != entity.id) {
                return Err(EngineError::Conflict(format!(
                    "entity {} already has this external_source and external_id",
                    other.id
                )));
            }
            if let Some((old_source, old_external)) = entity.external_source.clone().zip(entity.external_id.clone()) {
                if (old_source.as_str(), old_external.as_str()) != (source.as_str(), external.as_str()) {
                    let scope = self.scope;
                    let key = (
                        scope.account_id.as_str(),
                        entity.workspace.as_str(),
                        "entity",
                        old_source.as_str(),
                        old_external.as_str(),
                    );
                    self.set.remove::<KbExternalRef>(&key);
                }
            }
            self.put_ref("entity", &source, &external, reference(&entity.id, 0))?;
            entity.external_source = Some(source);
            entity.external_id = Some(external);
        }
        entity.updated_at_ms = self.now;
        entity.seq = next_seq(self.store)?;
        self.set.put(&(entity.account_id.as_str(), entity.id.as_str()), &entity)?;
        self.changes.push(Change::for_entity(&entity));
        self.entities.insert(entity.id.clone(), entity.clone());
        Ok((entity, created))
    }

    fn link_input(&mut self, input: LinkInput) -> Result<(MemoryLink, bool), EngineError> {
        let from = self.resolve(&input.from)?;
        let to = self.resolve(&input.to)?;
        let (account, workspace) = (self.scope.account_id.clone(), self.scope.workspace.clone());
        let external = input.external_source.clone().zip(input.external_id.clone());
        let id = match &external {
            Some((source, ext)) => match self.external("link", source, ext)? {
                Some(found) => found.id,
                None => format!("lnk_{}", uuid::Uuid::new_v4().simple()),
            },
            None => link_id(&account, &workspace, &from, &to, &input.relation),
        };
        let existing = self.link(&id)?;
        if let Some(old) = &existing {
            self.unstage_link_ends(old);
        }
        let created = existing.is_none();
        if created {
            self.count("links", 1)?;
            for end in [&from, &to] {
                if self.links_at(end)?.len() >= MAX_LINKS_PER_NODE {
                    return Err(EngineError::Invalid(format!(
                        "{} already has {MAX_LINKS_PER_NODE} links, the most one node may have",
                        end.key()
                    )));
                }
            }
        }
        let link = MemoryLink {
            id: id.clone(),
            account_id: account.clone(),
            workspace,
            from,
            to,
            relation: input.relation,
            weight: input.weight.unwrap_or(1.0),
            metadata: input.metadata,
            external_source: input.external_source,
            external_id: input.external_id,
            created_at_ms: existing.as_ref().map_or(self.now, |l| l.created_at_ms),
            seq: next_seq(self.store)?,
        };
        if let Some((source, ext)) = &external {
            self.put_ref("link", source, ext, reference(&id, 0))?;
        }
        self.set.put(&(account.as_str(), id.as_str()), &link)?;
        for end in [&link.from, &link.to] {
            let key = (account.as_str(), end.key(), link.workspace.as_str(), id.as_str());
            self.set.put(&key, &LinkEnd { link_id: id.clone() })?;
        }
        self.links.insert(id, Some(link.clone()));
        Ok((link, created))
    }

    fn unstage_link_ends(&mut self, link: &MemoryLink) {
        for end in [&link.from, &link.to] {
            let key = (link.account_id.as_str(), end.key(), link.workspace.as_str(), link.id.as_str());
            self.set.remove::<LinkEnd>(&key);
        }
    }

    /// Removes a link, its ends and its external id.
    pub(super) fn unlink(&mut self, id: &str) -> Result<MemoryLink, EngineError> {
        let link = match self.link(id)? {
            Some(link) if link.workspace == self.scope.workspace => link,
            _ => return Err(EngineError::NotFound { what: "link" }),
        };
        self.unlink_any(&link.id)?;
        Ok(link)
    }

    /// The links at a node, as written before this batch and by it.
    fn links_at(&self, node: &NodeRef) -> Result<Vec<String>, EngineError> {
        let at = |l: &MemoryLink| &l.from == node || &l.to == node;
        let stored =
            self.store.link_ends.scan_prefix_limit(&(self.account(), node.key().as_str()), MAX_LINKS_PER_NODE + 1)?;
        // A stored link this batch moved or removed is no longer at the node.
        let mut ids: Vec<String> = stored
            .into_iter()
            .map(|end| end.link_id)
            .filter(|id| self.links.get(id).is_none_or(|staged| staged.as_ref().is_some_and(at)))
            .collect();
        for (id, staged) in &self.links {
            if staged.as_ref().is_some_and(at) && !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        Ok(ids)
    }

    /// Forgets a note: an audit record stays; the note, its external id, its vector and its
    /// links go.
    pub(super) fn forget(&mut self, id: &str, by: &str) -> Result<ForgottenNote, EngineError> {
        let note = match self.note(id)? {
            Some(note) if note.workspace == self.scope.workspace => note,
            Some(note) if note.workspace.is_empty() => {
                return Err(EngineError::Conflict(
                    "this note is the account's own memory; forget it at the account level, not from a workspace"
                        .into(),
                ))
            }
            _ => return Err(EngineError::NotFound { what: "memory note" }),
        };
        let audit = ForgottenNote {
            note_id: note.id.clone(),
            account_id: note.account_id.clone(),
            workspace: note.workspace.clone(),
            kind: note.kind.clone(),
            external_source: note.external_source.clone(),
            external_id: note.external_id.clone(),
            created_at_ms: note.created_at_ms,
            forgotten_at_ms: self.now,
            forgotten_by: by.into(),
            seq: next_seq(self.store)?,
        };
        let account = note.account_id.as_str();
        self.set.put(&(account, note.id.as_str()), &audit)?;
        if let Some((source, external)) = note.external_source.as_deref().zip(note.external_id.as_deref()) {
            self.set.remove::<NoteExternalRef>(&(account, note.workspace.as_str(), source, external));
            self.refs.remove(&("note".to_owned(), source.to_owned(), external.to_owned()));
        }
        if let Some((thread, position)) = note_position(&note) {
            let key = (account, note.workspace.as_str(), thread, position);
            if self.store.note_positions.get(&key)?.is_some_and(|p| p.note_id == note.id) {
                self.set.remove::<NotePosition>(&key);
            }
        }
        let key = note_key(&note.id);
        self.set.remove::<KnowledgeVector>(&(account, key.as_str()));
        self.set.remove::<MemoryNote>(&(account, note.id.as_str()));
        let node = NodeRef { kind: "note".into(), id: note.id.clone() };
        for link in self.links_at(&node)? {
            self.unlink_any(&link)?;
        }
        // The signals on it go too (what they said of it was about it).
        for signal in self.store.feedback.scan_prefix_limit(&(account, node.key().as_str()), MAX_FEEDBACK_PER_NODE)? {
            self.set.remove::<MemoryFeedback>(&(
                account,
                node.key().as_str(),
                signal.workspace.as_str(),
                signal.id.as_str(),
            ));
            self.count("feedback", -1)?;
        }
        self.notes.remove(&note.id);
        self.forgotten.insert(note.id.clone());
        self.changes.push(Change::unindex(&note.account_id, &note.workspace, key));
        Ok(audit)
    }

    /// `unlink` for a link of any workspace (a forgotten note's links all go).
    fn unlink_any(&mut self, id: &str) -> Result<(), EngineError> {
        if let Some(link) = self.link(id)? {
            self.count("links", -1)?;
            self.unstage_link_ends(&link);
            self.set.remove::<MemoryLink>(&(link.account_id.as_str(), link.id.as_str()));
            if let Some((source, ext)) = link.external_source.as_deref().zip(link.external_id.as_deref()) {
                self.set.remove::<KbExternalRef>(&(
                    link.account_id.as_str(),
                    link.workspace.as_str(),
                    "link",
                    source,
                    ext,
                ));
            }
            self.links.insert(link.id.clone(), None);
        }
        Ok(())
    }

    fn event_input(&mut self, input: EventInput) -> Result<(MemoryEvent, bool), EngineError> {
        let subjects = input.subjects.iter().map(|s| self.resolve(s)).collect::<Result<Vec<_>, _>>()?;
        let (account, workspace) = (self.scope.account_id.clone(), self.scope.workspace.clone());
        let external = input.external_source.clone().zip(input.external_id.clone());
        let existing = match &external {
            Some((source, ext)) => self.external("event", source, ext)?,
            None => None,
        };
        if existing.is_none() {
            self.count("events", 1)?;
        }
        let occurred_at_ms = input.occurred_at_ms.unwrap_or(self.now);
        let (id, created_at_ms) = match &existing {
            Some(found) => {
                let old =
                    self.store.events.get(&(account.as_str(), workspace.as_str(), found.at_ms, found.id.as_str()))?;
                self.set.remove::<MemoryEvent>(&(account.as_str(), workspace.as_str(), found.at_ms, found.id.as_str()));
                (found.id.clone(), old.map_or(self.now, |e| e.created_at_ms))
            }
            None => (format!("evt_{}", uuid::Uuid::new_v4().simple()), self.now),
        };
        let event = MemoryEvent {
            id: id.clone(),
            account_id: account.clone(),
            workspace: workspace.clone(),
            event_type: input.event_type,
            summary: input.summary,
            occurred_at_ms,
            subjects,
            metadata: input.metadata,
            external_source: input.external_source,
            external_id: input.external_id,
            created_at_ms,
            seq: next_seq(self.store)?,
        };
        if let Some((source, ext)) = &external {
            self.put_ref("event", source, ext, reference(&id, occurred_at_ms))?;
        }
        self.set.put(&(account.as_str(), workspace.as_str(), occurred_at_ms, id.as_str()), &event)?;
        Ok((event, existing.is_none()))
    }

    fn feedback_input(
        &mut self,
        input: FeedbackInput,
        by: &str,
        held: usize,
        cap: Option<usize>,
        written: &mut BatchWritten,
    ) -> Result<Option<MemoryFeedback>, EngineError> {
        let item = match &input.item {
            Some(spec) => self.resolve(spec)?,
            None => {
                // Remember something new: the text becomes a note.
                let text = input.text.clone().unwrap_or_default();
                let note = NoteInput {
                    content: text,
                    kind: Some("feedback".into()),
                    importance: Some(0.7),
                    ..NoteInput::default()
                };
                let (note, created) = self.note_input(note, held, cap)?;
                written.notes.push((note, created));
                return Ok(None);
            }
        };
        if input.signal == "forget" && item.kind == "note" {
            let audit = self.forget(&item.id, by)?;
            written.forgotten.push(audit);
        }
        let (embedder, query_vector) = input.query_vector.unwrap_or_default();
        let feedback = MemoryFeedback {
            id: format!("fb_{}", uuid::Uuid::new_v4().simple()),
            account_id: self.scope.account_id.clone(),
            workspace: self.scope.workspace.clone(),
            item: item.clone(),
            signal: input.signal,
            query: input.query,
            trace_id: input.trace_id,
            embedder,
            query_vector,
            external_source: input.external_source.clone(),
            external_id: input.external_id.clone(),
            created_at_ms: self.now,
        };
        if let Some((source, ext)) = input.external_source.zip(input.external_id) {
            if let Some(old) = self.external("feedback", &source, &ext)? {
                // Sent again: the earlier signal is replaced (its item may differ).
                if let Some(node) = &old.node {
                    let scope = self.scope;
                    let key = (scope.account_id.as_str(), node.as_str(), scope.workspace.as_str(), old.id.as_str());
                    self.set.remove::<MemoryFeedback>(&key);
                    self.count("feedback", -1)?;
                }
            }
            let found = KbExternalRef { id: feedback.id.clone(), at_ms: 0, node: Some(item.key()) };
            self.put_ref("feedback", &source, &ext, found)?;
        }
        self.count("feedback", 1)?;
        let key = (feedback.account_id.as_str(), item.key(), feedback.workspace.as_str(), feedback.id.as_str());
        self.set.put(&key, &feedback)?;
        Ok(Some(feedback))
    }

    /// Stages a whole batch: entities first, then notes, links, unlinks, events, feedback, so
    /// later parts may name what earlier parts wrote.
    pub(super) fn batch(
        &mut self,
        batch: MemoryBatch,
        by: &str,
        held: usize,
        cap: Option<usize>,
    ) -> Result<BatchWritten, EngineError> {
        self.cap = cap;
        let mut written = BatchWritten::default();
        for (i, entity) in batch.entities.into_iter().enumerate() {
            written.entities.push(self.entity_input(entity).map_err(|e| at("entities", i, e))?);
        }
        for (i, note) in batch.notes.into_iter().enumerate() {
            written.notes.push(self.note_input(note, held, cap).map_err(|e| at("notes", i, e))?);
        }
        for (i, link) in batch.links.into_iter().enumerate() {
            written.links.push(self.link_input(link).map_err(|e| at("links", i, e))?);
        }
        for (i, id) in batch.unlinks.iter().enumerate() {
            written.unlinked.push(self.unlink(id).map_err(|e| at("unlinks", i, e))?);
        }
        for (i, event) in batch.events.into_iter().enumerate() {
            written.events.push(self.event_input(event).map_err(|e| at("events", i, e))?);
        }
        for (i, feedback) in batch.feedback.into_iter().enumerate() {
            if let Some(f) =
                self.feedback_input(feedback, by, held, cap, &mut written).map_err(|e| at("feedback", i, e))?
            {
                written.feedback.push(f);
            }
        }
        self.finish()?;
        Ok(written)
    }
}

/// The text an entity is found by.
pub(super) fn entity_text(entity: &MemoryEntity) -> String {
    let mut text = entity.name.clone();
    for alias in &entity.aliases {
        text.push('\n');
        text.push_str(alias);
    }
    if !entity.description.is_empty() {
        text.push('\n');
        text.push_str(&entity.description);
    }
    text
}

impl Staging<'_> {
    /// Writes a prepared source, replacing the documents and chunks of the one its external
    /// id names.
    pub(super) fn source(&mut self, prepared: PreparedSource) -> Result<IngestedSource, EngineError> {
        let scope = self.scope;
        let account = scope.account_id.as_str();
        let existing = match prepared.external_source.as_deref().zip(prepared.external_id.as_deref()) {
            Some((source, external)) => match self.external("source", source, external)? {
                Some(found) => self.store.sources.get(&(account, found.id.as_str()))?,
                None => None,
            },
            None => None,
        };
        let new_chunks: usize = prepared.documents.iter().map(|d| d.chunks.len()).sum();
        let others: Vec<Source> = self
            .store
            .sources
            .scan_prefix(&(account,))?
            .into_iter()
            .filter(|s| existing.as_ref().is_none_or(|e| e.id != s.id))
            .collect();
        if others.len() >= MAX_SOURCES_PER_ACCOUNT {
            return Err(EngineError::Invalid(format!(
                "this account holds {} sources, the most this server allows; delete some first",
                others.len()
            )));
        }
        let held: u64 = others.iter().map(|s| u64::from(s.chunk_count)).sum();
        if held + new_chunks as u64 > MAX_CHUNKS_PER_ACCOUNT {
            return Err(EngineError::Invalid(format!(
                "this account's sources hold {held} chunks; with this one they would be over \
                 {MAX_CHUNKS_PER_ACCOUNT}; delete some sources first"
            )));
        }
        let mut replaced_chunks = 0;
        if let Some(old) = &existing {
            replaced_chunks = self.remove_documents(old)?;
        }
        self.note_removed_keys()?;
        let seq = next_seq(self.store)?;
        let source_id =
            existing.as_ref().map_or_else(|| format!("src_{}", uuid::Uuid::new_v4().simple()), |s| s.id.clone());
        let mut documents = Vec::with_capacity(prepared.documents.len());
        let embedder = prepared.embedder.clone();
        for doc in prepared.documents {
            let document = SourceDocument {
                id: format!("doc_{}", uuid::Uuid::new_v4().simple()),
                account_id: account.to_owned(),
                workspace: scope.workspace.clone(),
                source_id: source_id.clone(),
                title: doc.title,
                kind: doc.kind.to_owned(),
                url: doc.url,
                bytes: doc.bytes,
                chunk_count: u32::try_from(doc.chunks.len()).unwrap_or(u32::MAX),
                pages: doc.pages,
                created_at_ms: self.now,
            };
            for (ordinal, prepared_chunk) in doc.chunks.into_iter().enumerate() {
                let ordinal = u32::try_from(ordinal).unwrap_or(u32::MAX);
                let chunk = SourceChunk {
                    id: SourceChunk::id_for(&document.id, ordinal),
                    account_id: account.to_owned(),
                    workspace: scope.workspace.clone(),
                    source_id: source_id.clone(),
                    document_id: document.id.clone(),
                    ordinal,
                    text: prepared_chunk.text,
                    tokens: prepared_chunk.tokens,
                    section: prepared_chunk.section,
                    pages: prepared_chunk.pages,
                    seq,
                };
                self.set.put(&(account, document.id.as_str(), u64::from(ordinal)), &chunk)?;
                let vector = embedder.clone().zip(prepared_chunk.vector);
                self.changes.push(Change::for_chunk(chunk, document.title.clone(), vector));
            }
            self.set.put(&(account, document.id.as_str()), &document)?;
            documents.push(document);
        }
        let source = Source {
            id: source_id.clone(),
            account_id: account.to_owned(),
            workspace: scope.workspace.clone(),
            name: prepared.name,
            url: prepared.url,
            metadata: prepared.metadata,
            external_source: prepared.external_source,
            external_id: prepared.external_id,
            documents: documents.iter().map(|d| d.id.clone()).collect(),
            chunk_count: u32::try_from(new_chunks).unwrap_or(u32::MAX),
            bytes: documents.iter().map(|d| d.bytes).sum(),
            created_at_ms: existing.as_ref().map_or(self.now, |s| s.created_at_ms),
            updated_at_ms: self.now,
            seq,
        };
        if let Some((ext_source, external)) = source.external_source.clone().zip(source.external_id.clone()) {
            self.put_ref("source", &ext_source, &external, reference(&source_id, 0))?;
        }
        self.set.put(&(account, source_id.as_str()), &source)?;
        Ok(IngestedSource { source, documents, created: existing.is_none(), replaced_chunks })
    }

    /// Records the text-index documents this write removes, for a crash before the commit
    /// (`RemovedFromIndex`).
    fn note_removed_keys(&mut self) -> Result<(), EngineError> {
        let keys: Vec<String> = self.changes.iter().filter_map(|c| c.unindexed_key()).collect();
        if !keys.is_empty() {
            let seq = next_seq(self.store)?;
            self.set.put(&seq, &RemovedFromIndex { seq, keys })?;
        }
        Ok(())
    }

    /// Removes a source's documents and chunks (records, vectors, and from the text index);
    /// returns how many chunks went.
    fn remove_documents(&mut self, source: &Source) -> Result<u32, EngineError> {
        let account = source.account_id.as_str();
        let mut removed = 0;
        for document in &source.documents {
            for chunk in self.store.source_chunks.scan_prefix(&(account, document.as_str()))? {
                let key = chunk_key(&chunk.id);
                self.set.remove::<SourceChunk>(&(account, document.as_str(), u64::from(chunk.ordinal)));
                self.set.remove::<KnowledgeVector>(&(account, key.as_str()));
                self.changes.push(Change::unindex(account, &chunk.workspace, key));
                removed += 1;
            }
            self.set.remove::<SourceDocument>(&(account, document.as_str()));
        }
        Ok(removed)
    }

    pub(super) fn delete_source(&mut self, id: &str) -> Result<Source, EngineError> {
        let scope = self.scope;
        let source = match self.store.sources.get(&(scope.account_id.as_str(), id))? {
            Some(source) if source.workspace == scope.workspace => source,
            _ => return Err(EngineError::NotFound { what: "source" }),
        };
        self.remove_documents(&source)?;
        self.note_removed_keys()?;
        self.set.remove::<Source>(&(scope.account_id.as_str(), id));
        if let Some((ext_source, external)) = source.external_source.as_deref().zip(source.external_id.as_deref()) {
            let key = (scope.account_id.as_str(), source.workspace.as_str(), "source", ext_source, external);
            self.set.remove::<KbExternalRef>(&key);
        }
        Ok(source)
    }
}
