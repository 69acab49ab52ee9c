//! Context packs: the memories, entities, links and recent events that best answer a query,
//! ranked and packed within a token budget counted with the real tokenizer (o200k,
//! `chat::tokenizer`), with telemetry saying why each item is in.
//!
//! Ranking (weights in [`RankWeights`], documented in the README):
//! 1. candidates: the best `CANDIDATES` of BM25 (text index) and of cosine similarity
//!    (vectors) among the notes the scope may read, and the ±1 neighbours in their thread of
//!    each retriever's `NEIGHBOURS_OF` best (`NotePosition`);
//! 2. relevance: `rank::rank`, the fusion measured on LoCoMo (normalised weighted scores,
//!    neighbour and thread terms for notes that say `thread`/`position` in their metadata,
//!    an author cue for `author`);
//! 3. score: `relevance · (1 − w_meta + w_meta · (importance + confidence) / 2) ·
//!    (1 − w_recency + w_recency · 0.5^(age / half_life)) · feedback`, feedback being
//!    `1 + w_feedback · tanh(Σ signal · alike)` over the signals on the note, each weighted by
//!    how alike its query is to this one;
//! 4. links from the best `LINKED_FROM` notes pull in the notes and entities they join
//!    (`w_link · link weight · the note's score`); entities the query names come from the
//!    text index (`w_entity · bm25 / best bm25`); the scope's latest events score
//!    `w_event · 0.5^(age / event_half_life)`.
//!
//! Packing takes entries best first and skips one that does not fit; links between included
//! items follow while they fit. The rendered block (sections: memories, entities, links,
//! recent events) is counted whole at the end and trimmed from the lowest score, so
//! `used_tokens` never exceeds `max_tokens`.

use std::collections::HashMap;

use serde::Serialize;
use tokaroo_storage::{
    harness::{HarnessTrace, TraceDocument, TraceMemory},
    knowledge::{MemoryEntity, MemoryEvent, MemoryFeedback, MemoryLink, MemoryNote, NodeRef},
};

use super::{
    indexer::{CHUNK, ENTITY, NOTE},
    rank::{self, Candidate, FusionParams},
    sources::ingest::ChunkHit,
    KbScope, Knowledge,
};
use crate::{chat::tokenizer, error::EngineError, harness::traces::TraceLinks};

/// Candidates taken from each retriever.
const CANDIDATES: usize = 100;
pub const DEFAULT_MAX_TOKENS: u32 = 2000;
pub const MAX_MAX_TOKENS: u32 = 100_000;
const MAX_QUERY_CHARS: usize = 8000;
/// Ranked items whose tokens are counted before the rest are dropped.
const MAX_ITEMS_LOOKED_AT: usize = 64;
/// The best notes whose links are followed, and the links followed from each node.
const LINKED_FROM: usize = 10;
const MAX_LINKS_FOLLOWED: usize = 32;
/// Link ends read per node and workspace (a node has at most `batch::MAX_LINKS_PER_NODE`),
/// and feedback signals read per item: a pack's reads stay bounded whatever a tenant wrote.
const MAX_LINK_ENDS_READ: usize = 256;
const MAX_SIGNALS_READ: usize = 64;
/// Entities taken from the text index per query.
const ENTITY_CANDIDATES: usize = 10;
/// The best hits of each retriever whose ±1 neighbours in their thread are fetched.
const NEIGHBOURS_OF: usize = 20;
/// Source chunks ranked for a pack.
const MAX_CHUNKS: usize = 20;

/// The ranking's weights (`[knowledge.ranking]` in the config; see the module's doc).
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RankWeights {
    pub fusion: FusionParams,
    /// How much importance and confidence move the score.
    pub meta: f64,
    /// How much recency moves the score, and its half-life.
    pub recency: f64,
    pub half_life_days: f64,
    /// How far feedback moves an item: its score is multiplied by `1 + feedback · tanh(f)`,
    /// `f` the signals on it (helpful +1, unhelpful −1, remember +2), each weighted by how
    /// alike its query and this one are.
    pub feedback: f64,
    /// A node reached by a link from an included note scores `link · weight` of that note.
    pub link: f64,
    /// An entity the query names scores at most this (its BM25 over the best entity's).
    pub entity: f64,
    /// The most recent events (at most `max_events`) score `event · 0.5^(age / event_half_life)`.
    pub event: f64,
    pub event_half_life_days: f64,
    pub max_events: usize,
    /// With `include_sources`, a chunk scores `source ·` its fused relevance.
    pub source: f64,
}

impl RankWeights {
    /// Names the first weight out of its range.
    pub fn check(&self) -> Result<(), String> {
        let unit = [
            ("fusion.lexical_weight", self.fusion.lexical_weight),
            ("meta", self.meta),
            ("recency", self.recency),
            ("feedback", self.feedback),
            ("link", self.link),
            ("entity", self.entity),
            ("event", self.event),
        ];
        for (name, value) in unit {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("knowledge.ranking.{name} must be between 0 and 1"));
            }
        }
        let non_negative = [
            ("fusion.neighbour_weight", self.fusion.neighbour_weight),
            ("fusion.thread_weight", self.fusion.thread_weight),
            ("fusion.author_boost", self.fusion.author_boost),
            ("source", self.source),
        ];
        for (name, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("knowledge.ranking.{name} must be a number of at least 0"));
            }
        }
        for (name, days) in
            [("half_life_days", self.half_life_days), ("event_half_life_days", self.event_half_life_days)]
        {
            if !(days.is_finite() && days > 0.0) {
                return Err(format!("knowledge.ranking.{name} must be more than 0"));
            }
        }
        if self.max_events > 100 {
            return Err("knowledge.ranking.max_events must be at most 100".into());
        }
        Ok(())
    }
}

impl Default for RankWeights {
    fn default() -> Self {
        Self {
            fusion: FusionParams::default(),
            meta: 0.3,
            recency: 0.2,
            half_life_days: 90.0,
            feedback: 0.5,
            link: 0.5,
            entity: 0.6,
            event: 0.25,
            event_half_life_days: 7.0,
            max_events: 5,
            source: 1.0,
        }
    }
}

/// One memory of a pack, with the components of its score.
#[derive(Debug, Clone, Serialize)]
pub struct PackItem {
    pub note: MemoryNote,
    pub score: f64,
    pub tokens: u32,
    pub components: Components,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Components {
    /// The fusion's parts (raw and normalised retriever scores, neighbour, thread, author).
    pub fusion: rank::Components,
    pub relevance: f64,
    pub importance: f64,
    pub confidence: f64,
    pub recency: f64,
    /// The feedback multiplier (1 without feedback).
    pub feedback: f64,
}

/// An entity of a pack: named by the query, or linked from an included note.
#[derive(Debug, Clone, Serialize)]
pub struct EntityItem {
    pub entity: MemoryEntity,
    pub score: f64,
    pub tokens: u32,
    /// `query`, or the id of the link that pulled it in.
    pub via: String,
}

/// A link between two items of the pack.
#[derive(Debug, Clone, Serialize)]
pub struct LinkItem {
    pub link: MemoryLink,
    pub tokens: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventItem {
    pub event: MemoryEvent,
    pub score: f64,
    pub tokens: u32,
}

/// A source chunk of a pack, with its citation.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkItem {
    pub hit: ChunkHit,
    pub score: f64,
    pub tokens: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextPack {
    pub trace_id: String,
    pub items: Vec<PackItem>,
    pub entities: Vec<EntityItem>,
    pub links: Vec<LinkItem>,
    pub events: Vec<EventItem>,
    /// Source chunks (with `include_sources`), best first; `[n]` in the context is the n-th.
    pub chunks: Vec<ChunkItem>,
    /// The items rendered as one block for a prompt.
    pub context: String,
    pub used_tokens: u32,
    pub max_tokens: u32,
    pub candidates: usize,
    /// Ranked items left out because they did not fit.
    pub dropped_for_budget: usize,
    pub embedder: String,
    pub weights: RankWeights,
}

impl ContextPack {
    /// The pack as a harness trace: what it included, with the parts of each score.
    fn trace(&self, scope: &KbScope, query: &str, include_sources: bool, links: TraceLinks) -> HarnessTrace {
        let now = crate::clock::now_ms();
        let memories = self
            .items
            .iter()
            .map(|item| TraceMemory {
                id: item.note.id.clone(),
                score: item.score,
                relevance_score: item.components.relevance,
                recency_score: item.components.recency,
                importance_score: item.components.importance,
                confidence_score: item.components.confidence,
            })
            .collect();
        let documents =
            self.chunks.iter().map(|c| TraceDocument { id: c.hit.chunk.id.clone(), score: c.score }).collect();
        HarnessTrace {
            id: self.trace_id.clone(),
            account_id: scope.account_id.clone(),
            workspace: scope.workspace.clone(),
            trace_type: "context_pack".into(),
            harness_version_id: links.harness_version_id,
            mission: links.mission,
            task_id: links.task_id,
            assistant_id: links.assistant_id,
            thread_id: links.thread_id,
            input_summary: Some(crate::harness::traces::summary(query)),
            output_summary: Some(format!(
                "{} memories, {} entities, {} events, {} documents; {} of {} tokens",
                self.items.len(),
                self.entities.len(),
                self.events.len(),
                self.chunks.len(),
                self.used_tokens,
                self.max_tokens
            )),
            context_strategy: if include_sources { "hybrid_pack+sources" } else { "hybrid_pack" }.into(),
            documents,
            memories,
            charged_units: 0,
            outcome: "unknown".into(),
            feedback_score: None,
            correction: None,
            metadata: links.metadata,
            created_at_ms: now,
            updated_at_ms: now,
        }
    }
}

fn render_note(note: &MemoryNote) -> String {
    if note.title.is_empty() {
        format!("- {}\n", note.content.trim())
    } else {
        format!("- {}: {}\n", note.title.trim(), note.content.trim())
    }
}

fn render_entity(entity: &MemoryEntity) -> String {
    if entity.description.is_empty() {
        format!("- {} ({})\n", entity.name.trim(), entity.entity_type)
    } else {
        format!("- {} ({}): {}\n", entity.name.trim(), entity.entity_type, entity.description.trim())
    }
}

/// A chunk as a cited passage; `n` is its citation number.
fn render_chunk(n: usize, hit: &ChunkHit) -> String {
    let mut cite = hit.document_title.trim().to_owned();
    if !hit.chunk.section.is_empty() {
        cite.push_str(" › ");
        cite.push_str(&hit.chunk.section.join(" › "));
    }
    if let Some((first, last)) = hit.chunk.pages {
        if first == last {
            cite.push_str(&format!(", p. {first}"));
        } else {
            cite.push_str(&format!(", pp. {first}–{last}"));
        }
    }
    format!("[{n}] ({cite})\n{}\n", hit.chunk.text.trim())
}

fn render_event(event: &MemoryEvent) -> String {
    let iso = crate::clock::iso8601(event.occurred_at_ms);
    let day = iso.get(..10).unwrap_or(&iso);
    format!("- [{day}] {}: {}\n", event.event_type, event.summary.trim())
}

/// A link as a line, its ends named as the pack shows them.
fn render_link(link: &MemoryLink, names: &HashMap<String, String>) -> String {
    let name = |node: &NodeRef| names.get(&node.key()).cloned().unwrap_or_else(|| node.key());
    format!("- {} —{}→ {}\n", name(&link.from), link.relation, name(&link.to))
}

/// A short name for a node in link lines.
fn node_name(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl ContextPack {
    /// The items as one block, in sections.
    fn render(&self) -> String {
        let mut out = String::new();
        let mut section = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(title);
                out.push('\n');
                lines.iter().for_each(|l| out.push_str(l));
            }
        };
        section("Memories:", self.items.iter().map(|i| render_note(&i.note)).collect());
        section("Entities:", self.entities.iter().map(|e| render_entity(&e.entity)).collect());
        let names = self.names();
        section("Links:", self.links.iter().map(|l| render_link(&l.link, &names)).collect());
        section("Recent events:", self.events.iter().map(|e| render_event(&e.event)).collect());
        section("Sources:", self.chunks.iter().enumerate().map(|(i, c)| render_chunk(i + 1, &c.hit)).collect());
        out
    }

    fn names(&self) -> HashMap<String, String> {
        let notes = self.items.iter().map(|i| {
            let text = if i.note.title.is_empty() { &i.note.content } else { &i.note.title };
            (format!("note:{}", i.note.id), node_name(text))
        });
        let entities = self.entities.iter().map(|e| (format!("entity:{}", e.entity.id), node_name(&e.entity.name)));
        notes.chain(entities).collect()
    }

    /// Drops the lowest-scored item (links first: they only say how the others relate).
    fn drop_lowest(&mut self) -> bool {
        if self.links.pop().is_some() {
            return true;
        }
        let lowest = [
            self.items.last().map(|i| i.score),
            self.entities.iter().map(|e| e.score).reduce(f64::min),
            self.events.iter().map(|e| e.score).reduce(f64::min),
            self.chunks.last().map(|c| c.score),
        ];
        let Some(min) = lowest.iter().flatten().copied().reduce(f64::min) else { return false };
        if lowest[0] == Some(min) {
            self.items.pop();
        } else if lowest[1] == Some(min) {
            let at = self.entities.iter().position(|e| e.score == min).unwrap_or(0);
            self.entities.remove(at);
        } else if lowest[2] == Some(min) {
            let at = self.events.iter().position(|e| e.score == min).unwrap_or(0);
            self.events.remove(at);
        } else if lowest[3] == Some(min) {
            self.chunks.pop();
        } else {
            return false;
        }
        true
    }
}

/// A pack entry before packing.
enum Entry {
    Memory(PackItem),
    Entity(EntityItem),
    Event(EventItem),
    Chunk(ChunkItem),
}

impl Entry {
    fn score(&self) -> f64 {
        match self {
            Self::Memory(i) => i.score,
            Self::Entity(e) => e.score,
            Self::Event(e) => e.score,
            Self::Chunk(c) => c.score,
        }
    }

    fn id(&self) -> &str {
        match self {
            Self::Memory(i) => &i.note.id,
            Self::Entity(e) => &e.entity.id,
            Self::Event(e) => &e.event.id,
            Self::Chunk(c) => &c.hit.chunk.id,
        }
    }

    fn line(&self) -> String {
        match self {
            Self::Memory(i) => render_note(&i.note),
            Self::Entity(e) => render_entity(&e.entity),
            Self::Event(e) => render_event(&e.event),
            // Numbered once packed; a two-digit number costs what any other does.
            Self::Chunk(c) => render_chunk(99, &c.hit),
        }
    }

    fn set_tokens(&mut self, tokens: u32) {
        match self {
            Self::Memory(i) => i.tokens = tokens,
            Self::Entity(e) => e.tokens = tokens,
            Self::Event(e) => e.tokens = tokens,
            Self::Chunk(c) => c.tokens = tokens,
        }
    }
}

/// How much feedback moves an item for `query` (see [`RankWeights::feedback`]).
fn feedback_factor(signals: &[MemoryFeedback], query_vector: &[f32], embedder: &str, weight: f64) -> f64 {
    let mut sum = 0.0;
    for f in signals {
        let sign = match f.signal.as_str() {
            "helpful" => 1.0,
            "remember" => 2.0,
            "unhelpful" | "forget" => -1.0,
            _ => 0.0,
        };
        // Alike queries (cosine ≥ 0.5) count, the more alike the more; a signal without a
        // query counts half for every query.
        let alike = if f.query_vector.is_empty() || f.embedder != embedder {
            0.5
        } else {
            ((f64::from(crate::embed::dot(&f.query_vector, query_vector)) - 0.5) / 0.5).clamp(0.0, 1.0)
        };
        sum += sign * alike;
    }
    1.0 + weight * sum.tanh()
}

impl Knowledge {
    /// The pack for `query` within `max_tokens` (see the module's doc).
    pub async fn context_pack(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: u32,
        include_sources: bool,
    ) -> Result<ContextPack, EngineError> {
        self.context_pack_with(scope, query, max_tokens, include_sources, self.parts().weights).await
    }

    /// The same with other weights (the LoCoMo evaluation compares the retrievers alone).
    pub async fn context_pack_with(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: u32,
        include_sources: bool,
        weights: RankWeights,
    ) -> Result<ContextPack, EngineError> {
        self.context_pack_traced(scope, query, max_tokens, include_sources, weights, TraceLinks::default()).await
    }

    /// A pack with these weights, its trace linked to a mission, task or harness version.
    pub async fn context_pack_traced(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: u32,
        include_sources: bool,
        weights: RankWeights,
        trace_links: TraceLinks,
    ) -> Result<ContextPack, EngineError> {
        if query.trim().is_empty() {
            return Err(EngineError::Invalid("query must not be empty".into()));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(EngineError::Invalid(format!("query is longer than {MAX_QUERY_CHARS} characters")));
        }
        if max_tokens == 0 || max_tokens > MAX_MAX_TOKENS {
            return Err(EngineError::Invalid(format!("max_tokens must be between 1 and {MAX_MAX_TOKENS}")));
        }
        let parts = self.parts();
        let readable = scope.readable();
        // The text searches (notes, entities, and chunks when asked) run on a blocking thread
        // while the query is embedded (for chunks too, when their embedder is another).
        let mut searches: Vec<(&'static [&'static str], usize)> =
            vec![(&[NOTE], CANDIDATES), (&[ENTITY], ENTITY_CANDIDATES)];
        if include_sources {
            searches.push((&[CHUNK], CANDIDATES));
        }
        let chunk_embedded = async {
            if include_sources {
                self.chunk_query_vector(query).await
            } else {
                None
            }
        };
        let (searched, embedded, chunk_vector) = tokio::join!(
            self.text_search(scope, query, searches),
            parts.embedder.embed(vec![query.to_owned()]),
            chunk_embedded
        );
        let mut searched = searched?.into_iter();
        let (text_hits, entity_hits, chunk_text_hits) = (
            searched.next().unwrap_or_default(),
            searched.next().unwrap_or_default(),
            searched.next().unwrap_or_default(),
        );
        // Without the query's vector (the embedder failing) the pack is made from text alone:
        // an empty vector matches nothing, and the fusion weighs what there is.
        let (mut query_vector, embedder_id) = match embedded {
            Ok(embedded) => (embedded.vectors.into_iter().next().unwrap_or_default(), embedded.embedder.to_string()),
            Err(error) => {
                tracing::warn!(%error, "knowledge base: the query could not be embedded; this pack uses text search only");
                (Vec::new(), "none".to_owned())
            }
        };
        crate::embed::l2_normalise(&mut query_vector);
        let vector_hits = parts.vectors.search(&scope.account_id, &readable, &[NOTE], &query_vector, CANDIDATES);

        // The notes behind both candidate lists, as the fusion needs them.
        let mut notes: HashMap<String, MemoryNote> = HashMap::new();
        for key in text_hits.iter().chain(&vector_hits).map(|(key, _)| key) {
            let Some(id) = key.strip_prefix("note:") else { continue };
            if notes.contains_key(id) {
                continue;
            }
            // The indexes may lag a forget by a commit; the record is the truth.
            let Some(note) = parts.store.notes.get(&(scope.account_id.as_str(), id))? else { continue };
            if note.status == "active" && readable.contains(&note.workspace.as_str()) {
                notes.insert(note.id.clone(), note);
            }
        }
        // The turns next to the best hits of each retriever join as candidates with no score
        // of their own: the fusion's neighbour term scores them (an answer is often the turn
        // after the one that matches the question).
        let mut neighbours = Vec::new();
        if weights.fusion.neighbour_weight > 0.0 {
            let best = text_hits.iter().take(NEIGHBOURS_OF).chain(vector_hits.iter().take(NEIGHBOURS_OF));
            let mut around = Vec::new();
            for (key, _) in best {
                if let Some(note) = key.strip_prefix("note:").and_then(|id| notes.get(id)) {
                    if let Some((thread, position)) = super::indexer::note_position(note) {
                        for at in [position.saturating_sub(1), position.saturating_add(1)] {
                            around.push((note.workspace.clone(), thread.to_owned(), at));
                        }
                    }
                }
            }
            for (workspace, thread, position) in around {
                let key = (scope.account_id.as_str(), workspace.as_str(), thread.as_str(), position);
                let Some(found) = parts.store.note_positions.get(&key)? else { continue };
                if notes.contains_key(&found.note_id) {
                    continue;
                }
                let Some(note) = parts.store.notes.get(&(scope.account_id.as_str(), found.note_id.as_str()))? else {
                    continue;
                };
                // The position index may be stale; the note must still say it is there.
                let there = super::indexer::note_position(&note) == Some((thread.as_str(), position));
                if there && note.status == "active" && note.workspace == workspace {
                    neighbours.push(format!("note:{}", note.id));
                    notes.insert(note.id.clone(), note);
                }
            }
        }
        let candidate = |key: &str, bm25: Option<f32>, cosine: Option<f32>| {
            let note = notes.get(key.strip_prefix("note:")?)?;
            Some(Candidate {
                id: note.id.clone(),
                bm25,
                cosine,
                thread: note.metadata.get("thread").and_then(|v| v.as_str()).map(str::to_owned),
                position: note.metadata.get("position").and_then(|v| v.as_i64()),
                created_at_ms: note.created_at_ms,
                author: note.metadata.get("author").and_then(|v| v.as_str()).map(str::to_owned),
            })
        };
        let candidates: Vec<Candidate> = text_hits
            .iter()
            .filter_map(|(key, score)| candidate(key, Some(*score), None))
            .chain(vector_hits.iter().filter_map(|(key, cosine)| candidate(key, None, Some(*cosine))))
            .chain(neighbours.iter().filter_map(|key| candidate(key, None, None)))
            .collect();
        let now = crate::clock::now_ms();
        let account = scope.account_id.as_str();
        let store = &parts.store;
        let fused = rank::rank(query, candidates, &weights.fusion);
        let mut candidate_count = fused.len();
        let mut ranked = Vec::with_capacity(fused.len());
        for r in fused {
            let Some(note) = notes.remove(&r.id) else { continue };
            let signals = self.signals(scope, &format!("note:{}", note.id))?;
            let item =
                self.memory_item(note, r.components, r.score, &signals, &query_vector, &embedder_id, &weights, now);
            ranked.push(item);
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.note.id.cmp(&b.note.id)));

        // Links from the best notes pull in the notes and entities they name.
        let mut entities: HashMap<String, EntityItem> = HashMap::new();
        let mut linked_notes = Vec::new();
        let mut seen: std::collections::HashSet<String> = ranked.iter().map(|i| i.note.id.clone()).collect();
        for item in ranked.iter().take(LINKED_FROM) {
            let here = NodeRef { kind: NOTE.into(), id: item.note.id.clone() };
            for link in self.links_at(scope, &here.key())? {
                let other = if link.from == here { &link.to } else { &link.from };
                let score = item.score * weights.link * link.weight;
                match other.kind.as_str() {
                    NOTE if !seen.contains(&other.id) => {
                        let Some(note) = store.notes.get(&(account, other.id.as_str()))? else { continue };
                        if note.status != "active" || !readable.contains(&note.workspace.as_str()) {
                            continue;
                        }
                        seen.insert(note.id.clone());
                        let mut components = Components::none();
                        components.relevance = score;
                        linked_notes.push(PackItem { note, score, tokens: 0, components });
                    }
                    ENTITY => {
                        let Some(entity) = store.entities.get(&(account, other.id.as_str()))? else { continue };
                        if !readable.contains(&entity.workspace.as_str()) {
                            continue;
                        }
                        let signals = self.signals(scope, &other.key())?;
                        let score = score * feedback_factor(&signals, &query_vector, &embedder_id, weights.feedback);
                        let better = entities.get(&entity.id).is_none_or(|e| e.score < score);
                        if better {
                            let via = link.id.clone();
                            entities.insert(entity.id.clone(), EntityItem { entity, score, tokens: 0, via });
                        }
                    }
                    _ => {}
                }
            }
        }
        ranked.extend(linked_notes);
        // Entities the query names (by name, alias or description).
        let best = entity_hits.iter().map(|(_, s)| *s).fold(0.0f32, f32::max);
        for (key, bm25) in &entity_hits {
            let Some(id) = key.strip_prefix("entity:") else { continue };
            let Some(entity) = store.entities.get(&(account, id))? else { continue };
            if !readable.contains(&entity.workspace.as_str()) {
                continue;
            }
            let signals = self.signals(scope, &format!("entity:{id}"))?;
            let feedback = feedback_factor(&signals, &query_vector, &embedder_id, weights.feedback);
            let score = weights.entity * f64::from(bm25 / best.max(f32::MIN_POSITIVE)) * feedback;
            if entities.get(id).is_none_or(|e| e.score < score) {
                entities.insert(id.to_owned(), EntityItem { entity, score, tokens: 0, via: "query".into() });
            }
        }
        // The most recent events of the scope.
        let mut events = Vec::new();
        for workspace in &readable {
            events.extend(store.events.scan_prefix_rev(&(account, *workspace), weights.max_events)?);
        }
        events.sort_by_key(|e| std::cmp::Reverse(e.occurred_at_ms));
        events.truncate(weights.max_events);
        candidate_count += entities.len() + events.len();
        let mut chunks = Vec::new();
        if include_sources {
            let chunk_vector = chunk_vector.as_deref().unwrap_or(&query_vector);
            let vector_hits = parts.vectors.search(account, &readable, &[CHUNK], chunk_vector, CANDIDATES);
            let hits =
                self.rank_chunks(scope, query, (&chunk_text_hits, &vector_hits), MAX_CHUNKS, None, &weights.fusion)?;
            candidate_count += hits.len();
            chunks =
                hits.into_iter().map(|hit| ChunkItem { score: weights.source * hit.score, hit, tokens: 0 }).collect();
        }

        let mut entries: Vec<Entry> = ranked.into_iter().map(Entry::Memory).collect();
        entries.extend(entities.into_values().map(Entry::Entity));
        entries.extend(events.into_iter().map(|event| {
            let age_days = ((now - event.occurred_at_ms).max(0) as f64) / 86_400_000.0;
            let score = weights.event * 0.5f64.powf(age_days / weights.event_half_life_days);
            Entry::Event(EventItem { event, score, tokens: 0 })
        }));
        entries.extend(chunks.into_iter().map(Entry::Chunk));
        entries.sort_by(|a, b| b.score().total_cmp(&a.score()).then_with(|| a.id().cmp(b.id())));

        let mut pack = ContextPack {
            trace_id: crate::harness::traces::new_id(),
            items: Vec::new(),
            entities: Vec::new(),
            links: Vec::new(),
            events: Vec::new(),
            chunks: Vec::new(),
            context: String::new(),
            used_tokens: 0,
            max_tokens,
            candidates: candidate_count,
            dropped_for_budget: 0,
            embedder: embedder_id,
            weights,
        };
        let mut used = 0u32;
        for (looked_at, mut entry) in entries.into_iter().enumerate() {
            // Counting is the costly part (notes run to 64 KB): once the budget is nearly
            // spent or many items were looked at, the rest are dropped uncounted.
            if used >= max_tokens || looked_at >= MAX_ITEMS_LOOKED_AT {
                pack.dropped_for_budget += 1;
                continue;
            }
            let tokens = tokenizer::count(&entry.line());
            if used + tokens > max_tokens {
                pack.dropped_for_budget += 1;
                continue;
            }
            used += tokens;
            entry.set_tokens(tokens);
            match entry {
                Entry::Memory(item) => pack.items.push(item),
                Entry::Entity(item) => pack.entities.push(item),
                Entry::Event(item) => pack.events.push(item),
                Entry::Chunk(item) => pack.chunks.push(item),
            }
        }
        // Links between included items, strongest first, while they fit.
        let included: std::collections::HashSet<String> = pack
            .items
            .iter()
            .map(|i| format!("note:{}", i.note.id))
            .chain(pack.entities.iter().map(|e| format!("entity:{}", e.entity.id)))
            .collect();
        let mut links: HashMap<String, MemoryLink> = HashMap::new();
        for node in &included {
            for link in self.links_at(scope, node)? {
                if included.contains(&link.from.key()) && included.contains(&link.to.key()) {
                    links.insert(link.id.clone(), link);
                }
            }
        }
        let mut links: Vec<MemoryLink> = links.into_values().collect();
        links.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
        let names = pack.names();
        for link in links.into_iter().take(MAX_ITEMS_LOOKED_AT) {
            let tokens = tokenizer::count(&render_link(&link, &names));
            if used + tokens <= max_tokens {
                used += tokens;
                pack.links.push(LinkItem { link, tokens });
            }
        }
        pack.items.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.note.id.cmp(&b.note.id)));
        pack.entities.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.entity.id.cmp(&b.entity.id)));
        pack.chunks.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.hit.chunk.id.cmp(&b.hit.chunk.id)));
        // Section titles and joins cost tokens too: the whole block is counted, and trimmed
        // until it fits.
        loop {
            pack.context = pack.render();
            pack.used_tokens = tokenizer::count(&pack.context);
            if pack.used_tokens <= max_tokens || !pack.drop_lowest() {
                break;
            }
            pack.dropped_for_budget += 1;
        }
        if pack.used_tokens > max_tokens {
            pack.context.clear();
            pack.used_tokens = 0;
        }
        parts.traces.lock().unwrap_or_else(|p| p.into_inner()).remember(&pack.trace_id, account, query);
        if let Err(error) = parts.trace_log.record(&pack.trace(scope, query, include_sources, trace_links)) {
            tracing::warn!(trace = %pack.trace_id, %error, "writing a context pack's trace failed");
        }
        Ok(pack)
    }

    /// The feedback on a node given in this scope's workspace (bounded).
    fn signals(&self, scope: &KbScope, node: &str) -> Result<Vec<MemoryFeedback>, EngineError> {
        let prefix = (scope.account_id.as_str(), node, scope.workspace.as_str());
        Ok(self.parts().store.feedback.scan_prefix_limit(&prefix, MAX_SIGNALS_READ)?)
    }

    /// The strongest links at a node that this scope may read: a link belongs to the
    /// workspace that wrote it, whatever the nodes it joins.
    fn links_at(&self, scope: &KbScope, node: &str) -> Result<Vec<MemoryLink>, EngineError> {
        let store = &self.parts().store;
        let account = scope.account_id.as_str();
        let readable = scope.readable();
        let mut links = Vec::new();
        for workspace in readable {
            for end in store.link_ends.scan_prefix_limit(&(account, node, workspace), MAX_LINK_ENDS_READ)? {
                links.extend(store.links.get(&(account, end.link_id.as_str()))?);
            }
        }
        links.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.id.cmp(&b.id)));
        links.truncate(MAX_LINKS_FOLLOWED);
        Ok(links)
    }

    /// A ranked note as a pack item: relevance scaled by importance, confidence, recency and
    /// feedback (see the module's doc).
    #[allow(clippy::too_many_arguments)]
    fn memory_item(
        &self,
        note: MemoryNote,
        fusion: rank::Components,
        relevance: f64,
        signals: &[MemoryFeedback],
        query_vector: &[f32],
        embedder: &str,
        weights: &RankWeights,
        now: i64,
    ) -> PackItem {
        let age_days = ((now - note.updated_at_ms).max(0) as f64) / 86_400_000.0;
        let c = Components {
            fusion,
            relevance,
            importance: note.importance,
            confidence: note.confidence,
            recency: 0.5f64.powf(age_days / weights.half_life_days),
            feedback: feedback_factor(signals, query_vector, embedder, weights.feedback),
        };
        let score = c.relevance
            * (1.0 - weights.meta + weights.meta * (c.importance + c.confidence) / 2.0)
            * (1.0 - weights.recency + weights.recency * c.recency)
            * c.feedback;
        PackItem { tokens: 0, note, score, components: c }
    }
}

impl Components {
    /// A note reached by a link: its relevance is set by the caller.
    fn none() -> Self {
        Self {
            fusion: rank::Components::default(),
            relevance: 0.0,
            importance: 0.0,
            confidence: 0.0,
            recency: 0.0,
            feedback: 1.0,
        }
    }
}
