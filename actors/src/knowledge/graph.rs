//! The Memory Vault's graph and history: entities, links between notes and entities, events,
//! and feedback on the items of packs. All of them are written as a [`MemoryBatch`] (a single
//! entity or link is a batch of one), which the indexer applies in one transaction: every
//! write of a batch or none.

use serde_json::{Map, Value};
use tokaroo_storage::knowledge::{
    ForgottenNote, MemoryEntity, MemoryEvent, MemoryFeedback, MemoryLink, MemoryNote, NodeRef,
};

use super::{check_common, check_short, check_unit, invalid, validate_input, NoteInput};
use crate::error::EngineError;

/// What a link can join and feedback can be about.
pub const NODE_KINDS: [&str; 2] = ["note", "entity"];
pub const SIGNALS: [&str; 4] = ["helpful", "unhelpful", "remember", "forget"];
/// Writes in one batch, all kinds together.
pub const MAX_BATCH_ITEMS: usize = 1000;
const MAX_TEXT_BYTES: usize = 16 * 1024;
const MAX_ALIASES: usize = 32;
const MAX_SUBJECTS: usize = 32;

/// A note or entity named by its id or by its external id (which may be written in the same
/// batch).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub kind: String,
    pub id: Option<String>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
}

/// An entity to create, to upsert by external id, or (with `id`) to change; `None` leaves a
/// field as it is.
#[derive(Debug, Clone, Default)]
pub struct EntityInput {
    pub id: Option<String>,
    pub name: Option<String>,
    pub entity_type: Option<String>,
    pub description: Option<String>,
    pub aliases: Option<Vec<String>>,
    pub metadata: Option<Map<String, Value>>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
}

/// A link. Without an external id, the same ends and relation are the same link (written
/// again, it is updated); with one, the external id names it.
#[derive(Debug, Clone)]
pub struct LinkInput {
    pub from: NodeSpec,
    pub to: NodeSpec,
    pub relation: String,
    pub weight: Option<f64>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EventInput {
    pub event_type: String,
    pub summary: String,
    pub occurred_at_ms: Option<i64>,
    pub subjects: Vec<NodeSpec>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
}

/// A signal on an item of a pack. `remember` with `text` and no item writes the text as a
/// note; `forget` on a note forgets it.
#[derive(Debug, Clone, Default)]
pub struct FeedbackInput {
    pub item: Option<NodeSpec>,
    pub signal: String,
    pub query: Option<String>,
    pub trace_id: Option<String>,
    pub text: Option<String>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    /// The query's vector and its embedder, filled in by `Knowledge::write_batch`.
    pub query_vector: Option<(String, Vec<f32>)>,
}

/// Writes applied together (see the module's doc).
#[derive(Debug, Clone, Default)]
pub struct MemoryBatch {
    pub notes: Vec<NoteInput>,
    pub entities: Vec<EntityInput>,
    pub links: Vec<LinkInput>,
    /// Links to delete, by id.
    pub unlinks: Vec<String>,
    pub events: Vec<EventInput>,
    pub feedback: Vec<FeedbackInput>,
}

impl MemoryBatch {
    pub fn len(&self) -> usize {
        self.notes.len()
            + self.entities.len()
            + self.links.len()
            + self.unlinks.len()
            + self.events.len()
            + self.feedback.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a batch wrote; each record with whether it was created (not updated).
#[derive(Debug, Clone, Default)]
pub struct BatchWritten {
    pub notes: Vec<(MemoryNote, bool)>,
    pub entities: Vec<(MemoryEntity, bool)>,
    pub links: Vec<(MemoryLink, bool)>,
    pub unlinked: Vec<MemoryLink>,
    pub events: Vec<(MemoryEvent, bool)>,
    pub feedback: Vec<MemoryFeedback>,
    pub forgotten: Vec<ForgottenNote>,
}

fn check_external(source: Option<&str>, id: Option<&str>) -> Result<(), EngineError> {
    if source.is_some() != id.is_some() {
        return Err(invalid("external_source and external_id go together"));
    }
    check_common(None, None, None, None, None, [source, id])
}

fn check_text(name: &str, text: &str, required: bool) -> Result<(), EngineError> {
    if required && text.trim().is_empty() {
        return Err(invalid(format!("{name} must not be empty")));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(invalid(format!("{name} is larger than {MAX_TEXT_BYTES} bytes")));
    }
    Ok(())
}

fn check_node(what: &str, node: &NodeSpec) -> Result<(), EngineError> {
    if !NODE_KINDS.contains(&node.kind.as_str()) {
        return Err(invalid(format!("{what}.type must be one of {}", NODE_KINDS.join(", "))));
    }
    match (&node.id, &node.external_id) {
        (Some(id), None) => check_short(&format!("{what}.id"), id, 128),
        (None, Some(_)) => check_external(node.external_source.as_deref(), node.external_id.as_deref()),
        _ => Err(invalid(format!("{what} names its node by id, or by external_source and external_id (one of them)"))),
    }
}

impl MemoryBatch {
    /// Checks every write before any is applied.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.is_empty() {
            return Err(invalid("the batch is empty"));
        }
        if self.len() > MAX_BATCH_ITEMS {
            return Err(invalid(format!("a batch holds at most {MAX_BATCH_ITEMS} writes")));
        }
        for (i, note) in self.notes.iter().enumerate() {
            validate_input(note).map_err(|e| at("notes", i, e))?;
        }
        for (i, entity) in self.entities.iter().enumerate() {
            validate_entity(entity).map_err(|e| at("entities", i, e))?;
        }
        for (i, link) in self.links.iter().enumerate() {
            validate_link(link).map_err(|e| at("links", i, e))?;
        }
        for (i, id) in self.unlinks.iter().enumerate() {
            check_short("id", id, 128).map_err(|e| at("unlinks", i, e))?;
        }
        for (i, event) in self.events.iter().enumerate() {
            validate_event(event).map_err(|e| at("events", i, e))?;
        }
        for (i, feedback) in self.feedback.iter().enumerate() {
            validate_feedback(feedback).map_err(|e| at("feedback", i, e))?;
        }
        Ok(())
    }
}

/// Names the failing write of a batch in its error.
pub(super) fn at(list: &str, i: usize, error: EngineError) -> EngineError {
    match error {
        EngineError::Invalid(m) => EngineError::Invalid(format!("{list}[{i}]: {m}")),
        EngineError::Conflict(m) => EngineError::Conflict(format!("{list}[{i}]: {m}")),
        EngineError::NotFound { what } => EngineError::Invalid(format!("{list}[{i}]: no such {what}")),
        other => other,
    }
}

fn validate_entity(e: &EntityInput) -> Result<(), EngineError> {
    if e.id.is_none() && e.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(invalid("name must not be empty"));
    }
    if let Some(name) = &e.name {
        check_short("name", name, 200)?;
        if name.trim().is_empty() {
            return Err(invalid("name must not be empty"));
        }
    }
    if let Some(t) = &e.entity_type {
        check_short("type", t, 64)?;
        if t.trim().is_empty() {
            return Err(invalid("type must not be empty"));
        }
    }
    if let Some(d) = &e.description {
        check_text("description", d, false)?;
    }
    if let Some(aliases) = &e.aliases {
        if aliases.len() > MAX_ALIASES {
            return Err(invalid(format!("at most {MAX_ALIASES} aliases")));
        }
        for alias in aliases {
            check_short("an alias", alias, 200)?;
        }
    }
    check_common(None, None, None, None, e.metadata.as_ref(), [None, None])?;
    check_external(e.external_source.as_deref(), e.external_id.as_deref())
}

fn validate_link(l: &LinkInput) -> Result<(), EngineError> {
    check_node("from", &l.from)?;
    check_node("to", &l.to)?;
    if l.from == l.to {
        return Err(invalid("a link joins two different nodes"));
    }
    check_short("relation", &l.relation, 64)?;
    if l.relation.trim().is_empty() {
        return Err(invalid("relation must not be empty"));
    }
    check_unit("weight", l.weight)?;
    check_common(None, None, None, None, Some(&l.metadata), [None, None])?;
    check_external(l.external_source.as_deref(), l.external_id.as_deref())
}

fn validate_event(e: &EventInput) -> Result<(), EngineError> {
    check_short("type", &e.event_type, 64)?;
    if e.event_type.trim().is_empty() {
        return Err(invalid("type must not be empty"));
    }
    check_text("summary", &e.summary, true)?;
    // History: an event may be dated up to a day ahead (clocks differ), not into the future.
    let latest = crate::clock::now_ms() + 86_400_000;
    if e.occurred_at_ms.is_some_and(|at| !(0..=latest).contains(&at)) {
        return Err(invalid("occurred_at must be after 1970 and not more than a day in the future"));
    }
    if e.subjects.len() > MAX_SUBJECTS {
        return Err(invalid(format!("at most {MAX_SUBJECTS} subjects")));
    }
    for (i, subject) in e.subjects.iter().enumerate() {
        check_node(&format!("subjects[{i}]"), subject)?;
    }
    check_common(None, None, None, None, Some(&e.metadata), [None, None])?;
    check_external(e.external_source.as_deref(), e.external_id.as_deref())
}

fn validate_feedback(f: &FeedbackInput) -> Result<(), EngineError> {
    if !SIGNALS.contains(&f.signal.as_str()) {
        return Err(invalid(format!("signal must be one of {}", SIGNALS.join(", "))));
    }
    match (&f.item, f.text.as_deref()) {
        (Some(item), _) => check_node("item", item)?,
        (None, Some(_)) if f.signal == "remember" => {}
        (None, _) => {
            return Err(invalid(
                "feedback names its item (or, to remember something new, gives text with signal remember)",
            ))
        }
    }
    if let Some(text) = &f.text {
        check_text("text", text, true)?;
    }
    if let Some(query) = &f.query {
        check_text("query", query, true)?;
    }
    if let Some(trace) = &f.trace_id {
        check_short("trace_id", trace, 128)?;
    }
    check_external(f.external_source.as_deref(), f.external_id.as_deref())
}

/// The queries of recent packs by trace id, so feedback naming only a trace still knows which
/// query it answered. Bounded per account (the oldest are forgotten first), so one tenant's
/// packs never push out another's.
#[derive(Default)]
pub(crate) struct PackTraces {
    by_account: std::collections::HashMap<String, std::collections::VecDeque<(String, String)>>,
}

/// Packs remembered per account for feedback.
const MAX_PACK_TRACES_PER_ACCOUNT: usize = 1_000;

impl PackTraces {
    pub(crate) fn remember(&mut self, trace_id: &str, account_id: &str, query: &str) {
        let traces = self.by_account.entry(account_id.to_owned()).or_default();
        if traces.len() >= MAX_PACK_TRACES_PER_ACCOUNT {
            traces.pop_front();
        }
        traces.push_back((trace_id.to_owned(), query.to_owned()));
    }

    fn query(&self, trace_id: &str, account_id: &str) -> Option<String> {
        let traces = self.by_account.get(account_id)?;
        traces.iter().rev().find(|(t, _)| t == trace_id).map(|(_, q)| q.clone())
    }
}

/// `GET /v1/memory/entities` filters.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    pub entity_type: Option<String>,
    pub limit: usize,
}

impl super::Knowledge {
    /// Applies a batch (see [`MemoryBatch`]); `by` is the key or session writing it.
    pub async fn write_batch(
        &self,
        scope: &super::KbScope,
        mut batch: MemoryBatch,
        by: &str,
    ) -> Result<BatchWritten, EngineError> {
        batch.validate()?;
        // Feedback keeps the vector of the query it answered, so it moves its item for similar
        // queries only.
        let parts = self.parts();
        let mut queries = Vec::new();
        for (i, feedback) in batch.feedback.iter_mut().enumerate() {
            if feedback.query.is_none() {
                if let Some(trace) = &feedback.trace_id {
                    let traces = parts.traces.lock().unwrap_or_else(|p| p.into_inner());
                    feedback.query = traces.query(trace, &scope.account_id);
                }
            }
            if let Some(query) = &feedback.query {
                queries.push((i, query.clone()));
            }
        }
        if !queries.is_empty() {
            let embedded = parts.embedder.embed(queries.iter().map(|(_, q)| q.clone()).collect()).await?;
            for ((i, _), mut vector) in queries.into_iter().zip(embedded.vectors) {
                crate::embed::l2_normalise(&mut vector);
                batch.feedback[i].query_vector = Some((embedded.embedder.to_string(), vector));
            }
        }
        match self.write(super::indexer::KbWrite::Batch(scope.clone(), batch, by.to_owned())).await? {
            super::indexer::Written::Batch(written) => Ok(*written),
            _ => Err(super::another_answer()),
        }
    }

    pub fn entity(&self, scope: &super::KbScope, id: &str) -> Result<MemoryEntity, EngineError> {
        match self.parts().store.entities.get(&(scope.account_id.as_str(), id))? {
            Some(entity) if entity.workspace == scope.workspace => Ok(entity),
            _ => Err(EngineError::NotFound { what: "entity" }),
        }
    }

    pub fn link(&self, scope: &super::KbScope, id: &str) -> Result<MemoryLink, EngineError> {
        match self.parts().store.links.get(&(scope.account_id.as_str(), id))? {
            Some(link) if link.workspace == scope.workspace => Ok(link),
            _ => Err(EngineError::NotFound { what: "link" }),
        }
    }

    /// The scope's entities, by name.
    pub fn list_entities(
        &self,
        scope: &super::KbScope,
        filter: &EntityFilter,
    ) -> Result<Vec<MemoryEntity>, EngineError> {
        let mut entities: Vec<MemoryEntity> = self
            .parts()
            .store
            .entities
            .scan_prefix(&(scope.account_id.as_str(),))?
            .into_iter()
            .filter(|e| e.workspace == scope.workspace)
            .filter(|e| filter.entity_type.as_ref().is_none_or(|t| &e.entity_type == t))
            .collect();
        entities.sort_by(|a, b| a.name.to_lowercase().cmp(&b.name.to_lowercase()).then_with(|| a.id.cmp(&b.id)));
        entities.truncate(filter.limit);
        Ok(entities)
    }

    /// The scope's links; with `node`, only those at that node.
    pub fn list_links(
        &self,
        scope: &super::KbScope,
        node: Option<&NodeRef>,
        limit: usize,
    ) -> Result<Vec<MemoryLink>, EngineError> {
        let store = &self.parts().store;
        let account = scope.account_id.as_str();
        let mut links: Vec<MemoryLink> = match node {
            Some(node) => {
                let mut links = Vec::new();
                for end in store.link_ends.scan_prefix(&(account, node.key().as_str()))? {
                    links.extend(store.links.get(&(account, end.link_id.as_str()))?);
                }
                links
            }
            None => store.links.scan_prefix(&(account,))?,
        };
        links.retain(|l| l.workspace == scope.workspace);
        links.sort_by(|a, b| b.created_at_ms.cmp(&a.created_at_ms).then_with(|| a.id.cmp(&b.id)));
        links.truncate(limit);
        Ok(links)
    }

    /// The scope's events, newest first; with `event_type`, only those.
    pub fn list_events(
        &self,
        scope: &super::KbScope,
        event_type: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryEvent>, EngineError> {
        let events = &self.parts().store.events;
        let prefix = (scope.account_id.as_str(), scope.workspace.as_str());
        if event_type.is_none() {
            return Ok(events.scan_prefix_rev(&prefix, limit)?);
        }
        let mut all = events.scan_prefix_rev(&prefix, usize::MAX)?;
        all.retain(|e| Some(e.event_type.as_str()) == event_type);
        all.truncate(limit);
        Ok(all)
    }
}
