//! Context packs: the memories that best answer a query, ranked and packed within a token
//! budget counted with the real tokenizer (cl100k, `chat::tokenizer`), with telemetry saying
//! why each item is in.
//!
//! Ranking (weights in [`RankWeights`], documented in the README):
//! 1. candidates: the best `CANDIDATES` of BM25 (text index) and of cosine similarity
//!    (vectors) among the notes the scope may read;
//! 2. relevance: `rank::rank`, the fusion measured on LoCoMo (normalised weighted scores,
//!    neighbour and thread terms for notes that say `thread`/`position` in their metadata,
//!    an author cue for `author`);
//! 3. score: `relevance · (1 − w_meta + w_meta · (importance + confidence) / 2) ·
//!    (1 − w_recency + w_recency · 0.5^(age / half_life))`.
//!
//! Packing takes items best first and skips one that does not fit; the rendered context is
//! counted whole at the end and trimmed if joining the items cost tokens, so `used_tokens`
//! never exceeds `max_tokens`.

use std::collections::HashMap;

use serde::Serialize;
use tokaroo_storage::knowledge::MemoryNote;

use super::{
    indexer::NOTE,
    rank::{self, Candidate, FusionParams},
    KbScope, Knowledge,
};
use crate::{chat::tokenizer, error::EngineError};

/// Candidates taken from each retriever.
const CANDIDATES: usize = 100;
pub const DEFAULT_MAX_TOKENS: u32 = 2000;
pub const MAX_MAX_TOKENS: u32 = 100_000;
const MAX_QUERY_CHARS: usize = 8000;
/// Ranked items whose tokens are counted before the rest are dropped.
const MAX_ITEMS_LOOKED_AT: usize = 64;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RankWeights {
    pub fusion: FusionParams,
    /// How much importance and confidence move the score.
    pub meta: f64,
    /// How much recency moves the score, and its half-life.
    pub recency: f64,
    pub half_life_days: f64,
}

impl Default for RankWeights {
    fn default() -> Self {
        Self { fusion: FusionParams::default(), meta: 0.3, recency: 0.2, half_life_days: 90.0 }
    }
}

/// One item of a pack, with the components of its score.
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
}

#[derive(Debug, Clone, Serialize)]
pub struct ContextPack {
    pub trace_id: String,
    pub items: Vec<PackItem>,
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

fn render(note: &MemoryNote) -> String {
    if note.title.is_empty() {
        format!("- {}\n", note.content.trim())
    } else {
        format!("- {}: {}\n", note.title.trim(), note.content.trim())
    }
}

impl Knowledge {
    /// The pack for `query` within `max_tokens` (see the module's doc).
    pub async fn context_pack(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: u32,
    ) -> Result<ContextPack, EngineError> {
        self.context_pack_with(scope, query, max_tokens, RankWeights::default()).await
    }

    /// The same with other weights (the LoCoMo evaluation compares the retrievers alone).
    pub async fn context_pack_with(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: u32,
        weights: RankWeights,
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
        let text_hits = {
            let (text, account, query) = (parts.text.clone(), scope.account_id.clone(), query.to_owned());
            let readable: Vec<String> = readable.iter().map(|w| (*w).to_owned()).collect();
            tokio::task::spawn_blocking(move || {
                let readable: Vec<&str> = readable.iter().map(String::as_str).collect();
                text.search(&account, &readable, &[NOTE], &query, CANDIDATES)
            })
            .await
            .map_err(|e| EngineError::Internal(format!("text search: {e}")))??
        };
        let embedded = parts.embedder.embed(vec![query.to_owned()]).await?;
        let mut query_vector = embedded.vectors.into_iter().next().unwrap_or_default();
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
            .collect();
        let now = crate::clock::now_ms();
        let fused = rank::rank(query, candidates, &weights.fusion);
        let candidate_count = fused.len();
        let mut ranked = Vec::with_capacity(fused.len());
        for r in fused {
            let Some(note) = notes.remove(&r.id) else { continue };
            let age_days = ((now - note.updated_at_ms).max(0) as f64) / 86_400_000.0;
            let c = Components {
                fusion: r.components,
                relevance: r.score,
                importance: note.importance,
                confidence: note.confidence,
                recency: 0.5f64.powf(age_days / weights.half_life_days),
            };
            let score = c.relevance
                * (1.0 - weights.meta + weights.meta * (c.importance + c.confidence) / 2.0)
                * (1.0 - weights.recency + weights.recency * c.recency);
            ranked.push(PackItem { tokens: 0, note, score, components: c });
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.note.id.cmp(&b.note.id)));
        let (mut items, mut used, mut dropped) = (Vec::new(), 0u32, 0usize);
        for (looked_at, mut item) in ranked.into_iter().enumerate() {
            // Counting is the costly part (notes run to 64 KB): once the budget is nearly
            // spent or many items were looked at, the rest are dropped uncounted.
            if used >= max_tokens || looked_at >= MAX_ITEMS_LOOKED_AT {
                dropped += 1;
                continue;
            }
            item.tokens = tokenizer::count(&render(&item.note));
            if used + item.tokens <= max_tokens {
                used += item.tokens;
                items.push(item);
            } else {
                dropped += 1;
            }
        }
        let mut context: String = items.iter().map(|i| render(&i.note)).collect();
        let mut used_tokens = tokenizer::count(&context);
        while used_tokens > max_tokens {
            items.pop();
            dropped += 1;
            context = items.iter().map(|i| render(&i.note)).collect();
            used_tokens = tokenizer::count(&context);
        }
        Ok(ContextPack {
            trace_id: format!("ctx_{}", uuid::Uuid::new_v4().simple()),
            items,
            context,
            used_tokens,
            max_tokens,
            candidates: candidate_count,
            dropped_for_budget: dropped,
            embedder: embedded.embedder.to_string(),
            weights,
        })
    }
}
