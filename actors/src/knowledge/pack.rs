//! Context packs: the memories that best answer a query, ranked and packed within a token
//! budget counted with the real tokenizer (cl100k, `chat::tokenizer`), with telemetry saying
//! why each item is in.
//!
//! Ranking (weights in [`RankWeights`], documented in the README):
//! 1. candidates: the best `CANDIDATES` of BM25 (text index) and of cosine similarity
//!    (vectors) among the notes the scope may read;
//! 2. relevance: each retriever's scores normalised to [0, 1] by the best candidate's, then
//!    `relevance = w_text · bm25 + w_vector · cosine`;
//! 3. score: `relevance · (1 − w_meta + w_meta · (importance + confidence) / 2) ·
//!    (1 − w_recency + w_recency · 0.5^(age / half_life))`.
//!
//! Packing takes items best first and skips one that does not fit; the rendered context is
//! counted whole at the end and trimmed if joining the items cost tokens, so `used_tokens`
//! never exceeds `max_tokens`.

use std::collections::HashMap;

use serde::Serialize;
use tokaroo_storage::knowledge::MemoryNote;

use super::{indexer::NOTE, KbScope, Knowledge};
use crate::{chat::tokenizer, error::EngineError};

/// Candidates taken from each retriever.
const CANDIDATES: usize = 100;
pub const DEFAULT_MAX_TOKENS: u32 = 2000;
pub const MAX_MAX_TOKENS: u32 = 100_000;
const MAX_QUERY_CHARS: usize = 8000;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RankWeights {
    pub text: f64,
    pub vector: f64,
    /// How much importance and confidence move the score.
    pub meta: f64,
    /// How much recency moves the score, and its half-life.
    pub recency: f64,
    pub half_life_days: f64,
}

impl Default for RankWeights {
    fn default() -> Self {
        Self { text: 0.5, vector: 0.5, meta: 0.3, recency: 0.2, half_life_days: 90.0 }
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

#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Components {
    pub bm25: f64,
    pub vector: f64,
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
        let weights = RankWeights::default();
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

        let best_bm25 = text_hits.iter().map(|(_, s)| f64::from(*s)).fold(0.0, f64::max);
        let best_cosine = vector_hits.iter().map(|(_, s)| f64::from(*s)).fold(0.0, f64::max);
        let mut candidates: HashMap<String, Components> = HashMap::new();
        for (key, score) in &text_hits {
            candidates.entry(key.clone()).or_default().bm25 =
                if best_bm25 > 0.0 { f64::from(*score) / best_bm25 } else { 0.0 };
        }
        for (key, cosine) in &vector_hits {
            candidates.entry(key.clone()).or_default().vector =
                if best_cosine > 0.0 { (f64::from(*cosine) / best_cosine).max(0.0) } else { 0.0 };
        }
        let now = crate::clock::now_ms();
        let mut ranked = Vec::with_capacity(candidates.len());
        let candidate_count = candidates.len();
        for (key, mut c) in candidates {
            let Some(id) = key.strip_prefix("note:") else { continue };
            // The indexes may lag a forget by a commit; the record is the truth.
            let Some(note) = parts.store.notes.get(&(scope.account_id.as_str(), id))? else { continue };
            if note.status != "active" || !readable.contains(&note.workspace.as_str()) {
                continue;
            }
            c.relevance = weights.text * c.bm25 + weights.vector * c.vector;
            c.importance = note.importance;
            c.confidence = note.confidence;
            let age_days = ((now - note.updated_at_ms).max(0) as f64) / 86_400_000.0;
            c.recency = 0.5f64.powf(age_days / weights.half_life_days);
            let score = c.relevance
                * (1.0 - weights.meta + weights.meta * (c.importance + c.confidence) / 2.0)
                * (1.0 - weights.recency + weights.recency * c.recency);
            ranked.push(PackItem { tokens: tokenizer::count(&render(&note)), note, score, components: c });
        }
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.note.id.cmp(&b.note.id)));
        let (mut items, mut used, mut dropped) = (Vec::new(), 0u32, 0usize);
        for item in ranked {
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
