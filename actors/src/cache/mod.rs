//! The response cache, inside one partition (a workspace by default, so one tenant's answers
//! never reach another):
//! - exact: an answer is reused for a request identical to the one that produced it (same
//!   mode or model, messages, tools, response format and sampling parameters);
//! - semantic (`semantic.rs`): for a request whose last user message is similar enough to a
//!   cached one's, whose everything else (system prompt, earlier turns, tools, format,
//!   sampling) is identical, and which the near-miss guards (`guards/`) find asking the same
//!   question.
//!
//! What is cached, and what is not (the documented rules):
//! - only answers that finished normally (`stop`) without tool calls: a tool call depends on
//!   the world it was made in, and a cut answer is not an answer;
//! - not requests that ask to bypass it (`Cache-Control: no-cache`, `x-tokaroo-cache: skip`),
//!   nor requests with a `temperature` above `cache.max_temperature` (they ask for variety);
//! - a `seed` is part of the key, so different seeds never share an answer; `n` above 1 is
//!   refused by the chat route, so an entry is always one answer;
//! - the semantic cache looks only at a last user message of plain text up to
//!   `SEMANTIC_MAX_PROMPT_CHARS` and an estimated `SEMANTIC_MAX_TOKENS` (the model reads 256
//!   tokens; past that, differences would go unseen), and only with a neural or routed
//!   embedder (never the lexical fallback);
//! - entries expire after `cache.ttl_secs`; past `cache.max_bytes` the oldest go first.

pub mod guards;
pub mod semantic;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokaroo_storage::{
    records::{CachedAnswer, SemanticEntry},
    StorageError, Store,
};

use self::semantic::{Found, Probe, SemanticIndex};
use crate::{
    chat::{ChatRequest, ChatResponse, ContentPart, FinishReason, Role, Usage},
    directory::apikey::KeyEntry,
    embed::{Embedder, EmbedderKind},
    money::billing::Charge,
    tree::{
        registry::Registry,
        supervisor::{Restart, RestartPolicy, SupervisorSpec},
        task::{Job, TaskSpec},
    },
};

/// Who may be served an answer another request produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Requests of the same workspace (keys bound to no workspace share their account's).
    #[default]
    Workspace,
    /// Requests of the same account.
    Account,
    /// Every request on this server: the operator's choice, never the default.
    Global,
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub enabled: bool,
    pub scope: CacheScope,
    pub ttl: Duration,
    /// Past this many bytes of cached answers, the oldest are evicted.
    pub max_bytes: u64,
    /// Requests asking for more randomness than this are neither served from nor stored in
    /// the cache.
    pub max_temperature: f64,
    /// Whether similar (not only identical) requests are answered from the cache.
    pub semantic: bool,
    /// The cosine similarity from which a cached prompt may answer (the guards decide after).
    pub semantic_threshold: f32,
    /// How long a lookup waits for its prompt's vector before going on without.
    pub semantic_wait: Duration,
}

/// Chosen on the labelled pairs of `tests/data/semantic_cache_pairs.jsonl` (the curve is in
/// `tests/it/semantic_cache.rs`'s report).
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.80;
/// Longer last messages are not looked up by similarity (see the module's rules).
pub const SEMANTIC_MAX_PROMPT_CHARS: usize = 1000;
/// At most this many semantic lookups wait for the embedder at once, and at most
/// `SEMANTIC_MAX_WAITING_PER_PARTITION` of one partition; each waits `cache.semantic_wait`
/// at most (the embedder drops the work of callers that gave up). Past any of these the
/// request goes on with the exact cache alone: a tenant flooding the embedder costs others
/// a few semantic hits, never more than `semantic_wait` of latency.
const SEMANTIC_MAX_WAITING: usize = 64;
const SEMANTIC_MAX_WAITING_PER_PARTITION: usize = 8;
/// The model reads 256 WordPiece tokens; a prompt estimated past this many (see
/// `wordpiece_estimate`) would be compared on its beginning alone.
const SEMANTIC_MAX_TOKENS: usize = 240;

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            scope: CacheScope::Workspace,
            ttl: Duration::from_secs(3600),
            max_bytes: 256 << 20,
            max_temperature: 1.0,
            semantic: true,
            semantic_threshold: DEFAULT_SEMANTIC_THRESHOLD,
            semantic_wait: Duration::from_millis(200),
        }
    }
}

/// Where a request's answer may be found and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSlot {
    pub partition: String,
    pub key: String,
    /// For the semantic cache: the last user message, the hash of the rest, and the
    /// message's vector once a lookup has made it.
    pub semantic: Option<SemanticSlot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SemanticSlot {
    pub context: String,
    pub prompt: String,
    pub vector: Option<Vec<f32>>,
}

impl Eq for SemanticSlot {}

/// How a hit was found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HitKind {
    Exact,
    Semantic { similarity: f32 },
}

/// A cached answer found for a request.
pub struct CacheHit {
    pub response: ChatResponse,
    pub usage: Usage,
    /// What the answer was charged when it was made: what this hit saves.
    pub saved: Charge,
    pub provider: String,
    pub upstream_model: String,
    pub kind: HitKind,
}

/// Bytes counted per entry beyond its text: the record's other fields and the tree's keys.
const ENTRY_OVERHEAD: u64 = 256;
/// How often expired entries are removed and the size bound enforced.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct ResponseCache {
    store: Store,
    settings: CacheSettings,
    /// With the embedder that makes its vectors; `None` when the semantic cache is off (by
    /// configuration, or because only the lexical fallback could embed).
    semantic: Option<(SemanticIndex, Embedder)>,
    embedding: tokio::sync::Semaphore,
    waiting_by_partition: dashmap::DashMap<String, usize>,
    /// Set by the first `load_semantic`: a restarted loader must not index the disk twice.
    loaded: std::sync::atomic::AtomicBool,
    /// Semantic lookups skipped because the embedder was busy or slow.
    skipped: AtomicU64,
    hits: AtomicU64,
    semantic_hits: AtomicU64,
    /// Lookups whose nearest similar entry the guards refused.
    refused: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    /// Approximate bytes held; exact again after each sweep.
    bytes: AtomicU64,
}

impl ResponseCache {
    /// The cache over `store`. Its semantic entries are indexed by the `task:semantic-load`
    /// child of its tree node (a restart's rebuild runs off the request path).
    pub fn new(store: Store, settings: CacheSettings, embedder: &Embedder) -> Arc<Self> {
        let id = embedder.id();
        let semantic = (settings.enabled && settings.semantic && id.kind != EmbedderKind::Lexical && id.dims > 0)
            .then(|| (SemanticIndex::new(id.to_string(), id.dims, settings.semantic_threshold), embedder.clone()));
        let cache = Arc::new(Self {
            store,
            settings,
            semantic,
            embedding: tokio::sync::Semaphore::new(SEMANTIC_MAX_WAITING),
            waiting_by_partition: dashmap::DashMap::new(),
            loaded: std::sync::atomic::AtomicBool::new(false),
            skipped: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            semantic_hits: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        if let Err(error) = cache.sweep() {
            tracing::warn!(%error, "could not size the response cache");
        }
        cache
    }

    pub fn settings(&self) -> &CacheSettings {
        &self.settings
    }

    /// The request's slot, or `None` when it may not use the cache.
    pub fn slot(&self, key: &KeyEntry, req: &ChatRequest, bypass: bool) -> Option<CacheSlot> {
        if !self.settings.enabled || bypass || req.temperature.is_some_and(|t| t > self.settings.max_temperature) {
            return None;
        }
        let partition = self.partition_prefix(&key.account_id, Some(key.workspace_slug.as_deref().unwrap_or("")));
        let semantic = self.semantic.as_ref().and_then(|_| semantic_slot(req));
        Some(CacheSlot { partition, key: request_key(req), semantic })
    }

    /// The answer for `slot`: the exact one, else the semantic cache's (the slot keeps the
    /// vector it made, for storing the answer later).
    pub async fn lookup(&self, slot: &mut CacheSlot) -> Option<CacheHit> {
        if let Some(hit) = self.answer(&slot.partition, &slot.key, HitKind::Exact) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Some(hit);
        }
        if let Some(hit) = self.lookup_similar(slot).await {
            self.semantic_hits.fetch_add(1, Ordering::Relaxed);
            return Some(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        None
    }

    async fn lookup_similar(&self, slot: &mut CacheSlot) -> Option<CacheHit> {
        let ((index, embedder), wanted) = (self.semantic.as_ref()?, slot.semantic.as_mut()?);
        let (Ok(_waiting), Some(_in_partition)) =
            (self.embedding.try_acquire(), PartitionTurn::take(&self.waiting_by_partition, &slot.partition))
        else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let wait = self.settings.semantic_wait;
        let embedded = tokio::time::timeout(wait, embedder.embed(vec![wanted.prompt.clone()])).await;
        let Ok(embedded) = embedded else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut vector = match embedded {
            Ok(mut out) if out.embedder.to_string() == index.embedder() => out.vectors.pop()?,
            Ok(out) => {
                tracing::warn!(embedder = %out.embedder, "the embedder changed under the semantic cache; skipping it");
                return None;
            }
            Err(error) => {
                tracing::debug!(%error, "could not embed a prompt for the semantic cache; looking up exact only");
                return None;
            }
        };
        crate::embed::l2_normalise(&mut vector);
        let probe = Probe { context: wanted.context.clone(), prompt: wanted.prompt.clone(), vector };
        let found = index.search(&slot.partition, &probe, crate::clock::now_ms());
        wanted.vector = Some(probe.vector);
        match found {
            // An answer gone meanwhile is a miss; the sweep tombstones its entry.
            Found::Hit { key, similarity } => self.answer(&slot.partition, &key, HitKind::Semantic { similarity }),
            Found::Refused { similarity, why } => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(similarity, ?why, "a similar cached prompt asks a different question");
                None
            }
            Found::Nothing => None,
        }
    }

    /// The stored answer of `key`, if it has not expired.
    fn answer(&self, partition: &str, key: &str, kind: HitKind) -> Option<CacheHit> {
        let found = self.store.answers.get(&(partition, key));
        let entry = match found {
            Ok(Some(entry)) if entry.expires_at_ms > crate::clock::now_ms() => Some(entry),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "response cache unreadable; serving without it");
                None
            }
        };
        let entry = entry?;
        let usage = Usage { prompt_tokens: entry.prompt_tokens, completion_tokens: entry.completion_tokens };
        Some(CacheHit {
            response: ChatResponse {
                content: Some(entry.content),
                tool_calls: Vec::new(),
                finish_reason: FinishReason::Stop,
                usage: Some(usage),
            },
            usage,
            saved: Charge {
                actual_cost_units: 0,
                charged_units: entry.charged_units,
                baseline_units: entry.baseline_units,
            },
            provider: entry.provider,
            upstream_model: entry.upstream_model,
            kind,
        })
    }

    /// Stores an answer for `slot` when it may be reused (see the module's rules).
    pub fn store(&self, slot: &CacheSlot, answer: &StoredAnswer<'_>) {
        if answer.had_tool_calls || answer.finish_reason != FinishReason::Stop {
            return;
        }
        let now = crate::clock::now_ms();
        let entry = CachedAnswer {
            partition: slot.partition.clone(),
            key: slot.key.clone(),
            content: answer.content.to_owned(),
            prompt_tokens: answer.usage.prompt_tokens,
            completion_tokens: answer.usage.completion_tokens,
            provider: answer.provider.to_owned(),
            upstream_model: answer.upstream_model.to_owned(),
            charged_units: answer.charge.charged_units,
            baseline_units: answer.charge.baseline_units,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX)),
        };
        match self.store.answers.insert(&(slot.partition.as_str(), slot.key.as_str()), &entry) {
            Ok(()) => {
                self.stored.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(entry_bytes(&entry), Ordering::Relaxed);
            }
            Err(error) => {
                tracing::warn!(%error, "could not store an answer in the response cache");
                return;
            }
        }
        let (Some((index, _)), Some(SemanticSlot { context, prompt, vector: Some(vector) })) =
            (&self.semantic, &slot.semantic)
        else {
            return;
        };
        let semantic = SemanticEntry {
            partition: slot.partition.clone(),
            key: slot.key.clone(),
            context: context.clone(),
            prompt: prompt.clone(),
            embedder: index.embedder().to_owned(),
            vector: vector.clone(),
            created_at_ms: entry.created_at_ms,
            expires_at_ms: entry.expires_at_ms,
        };
        match self.store.semantic.insert(&(slot.partition.as_str(), slot.key.as_str()), &semantic) {
            Ok(()) => {
                index.insert(&semantic);
                self.bytes.fetch_add(semantic_bytes(&semantic), Ordering::Relaxed);
            }
            Err(error) => tracing::warn!(%error, "could not store a prompt in the semantic cache"),
        }
    }

    /// Indexes the semantic entries on disk (at start, so a restart keeps them); entries of
    /// another embedder, expired, or without their answer are dropped. Slow for many entries: a blocking thread's work.
    pub fn load_semantic(&self) -> Result<usize, StorageError> {
        let Some((index, _)) = &self.semantic else { return Ok(0) };
        if self.loaded.swap(true, Ordering::SeqCst) {
            return Ok(0);
        }
        let now = crate::clock::now_ms();
        let mut live = Vec::new();
        let (entries, undecodable) = self.store.semantic.all_dropping_undecodable()?;
        if undecodable > 0 {
            tracing::warn!(undecodable, "dropped semantic cache entries that no longer decode");
        }
        for entry in entries {
            let slot = (entry.partition.as_str(), entry.key.as_str());
            // Another embedder's vectors mean nothing here; an entry without its answer (a
            // crash between the two writes, say) can never be served.
            let answered = self.store.answers.get(&slot)?.is_some_and(|answer| answer.expires_at_ms > now);
            if entry.embedder != index.embedder() || entry.expires_at_ms <= now || !answered {
                self.store.semantic.remove(&slot)?;
            } else {
                live.push(entry);
            }
        }
        let loaded = live.len();
        index.insert_many(live);
        Ok(loaded)
    }

    /// Removes every entry of the partitions starting with `prefix` (all of them for `""`).
    /// Returns how many were removed.
    pub fn clear(&self, prefix: &str) -> Result<usize, StorageError> {
        let mut removed = 0;
        for entry in self.store.answers.all()? {
            if entry.partition.starts_with(prefix) {
                self.store.answers.remove(&(entry.partition.as_str(), entry.key.as_str()))?;
                let bytes = entry_bytes(&entry);
                let _ =
                    self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
                removed += 1;
            }
        }
        for entry in self.store.semantic.all_dropping_undecodable()?.0 {
            if entry.partition.starts_with(prefix) {
                self.store.semantic.remove(&(entry.partition.as_str(), entry.key.as_str()))?;
                let bytes = semantic_bytes(&entry);
                let _ =
                    self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(bytes)));
            }
        }
        if let Some((index, _)) = &self.semantic {
            index.clear(prefix);
        }
        Ok(removed)
    }

    /// The partition of a workspace (`Some`; `""` for keys bound to none), or the prefix of
    /// all of an account's (`None`), under this scope. Every partition ends in `/`, which no
    /// account id or workspace slug contains, so one is never a prefix of another.
    pub fn partition_prefix(&self, account_id: &str, workspace_slug: Option<&str>) -> String {
        match (self.settings.scope, workspace_slug) {
            (CacheScope::Workspace, Some(slug)) => format!("ws:{account_id}:{slug}/"),
            (CacheScope::Workspace, None) => format!("ws:{account_id}:"),
            (CacheScope::Account, _) => format!("acct:{account_id}/"),
            (CacheScope::Global, _) => "global/".to_owned(),
        }
    }

    /// Removes expired entries, then the oldest until the cache is within `max_bytes`; a
    /// semantic entry goes with its answer. Then rebuilds the semantic graphs that are mostly
    /// tombstones.
    pub fn sweep(&self) -> Result<(), StorageError> {
        let now = crate::clock::now_ms();
        let mut live = Vec::new();
        for entry in self.store.answers.all()? {
            if entry.expires_at_ms <= now {
                self.evict(&entry.partition, &entry.key)?;
            } else {
                live.push(entry);
            }
        }
        // A semantic entry's size comes from the index in memory: reading every vector back
        // from disk twice a minute would cost more than the sweep saves.
        let size = |e: &CachedAnswer| {
            let semantic = self.semantic.as_ref().and_then(|(index, _)| index.entry_bytes(&e.partition, &e.key));
            entry_bytes(e) + semantic.unwrap_or(0)
        };
        let mut total: u64 = live.iter().map(size).sum();
        if total > self.settings.max_bytes {
            live.sort_by_key(|e| e.created_at_ms);
            for entry in &live {
                if total <= self.settings.max_bytes {
                    break;
                }
                total -= size(entry);
                self.evict(&entry.partition, &entry.key)?;
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
        if let Some((index, _)) = &self.semantic {
            index.expire(now);
            index.compact();
        }
        Ok(())
    }

    fn evict(&self, partition: &str, key: &str) -> Result<(), StorageError> {
        self.store.answers.remove(&(partition, key))?;
        self.store.semantic.remove(&(partition, key))?;
        if let Some((index, _)) = &self.semantic {
            index.remove(partition, key);
        }
        Ok(())
    }

    fn snapshot(&self) -> serde_json::Value {
        let (exact, similar) = (self.hits.load(Ordering::Relaxed), self.semantic_hits.load(Ordering::Relaxed));
        let (hits, misses) = (exact + similar, self.misses.load(Ordering::Relaxed));
        let semantic = self.semantic.as_ref().map(|(index, _)| {
            let (entries, tombstones, partitions) = index.counts();
            json!({
                "embedder": index.embedder(),
                "threshold": index.threshold(),
                "entries": entries,
                "tombstones": tombstones,
                "partitions": partitions,
                "hits": similar,
                "refused_by_guards": self.refused.load(Ordering::Relaxed),
                "skipped_embedder_busy": self.skipped.load(Ordering::Relaxed),
            })
        });
        json!({
            "enabled": self.settings.enabled,
            "scope": self.settings.scope,
            "entries": self.store.answers.len(),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "max_bytes": self.settings.max_bytes,
            "hits": hits,
            "exact_hits": exact,
            "misses": misses,
            "semantic": semantic,
            "hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "stored": self.stored.load(Ordering::Relaxed),
        })
    }
}

/// An answer to store, and what it cost.
pub struct StoredAnswer<'a> {
    pub content: &'a str,
    pub had_tool_calls: bool,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub charge: Charge,
    pub provider: &'a str,
    pub upstream_model: &'a str,
}

fn entry_bytes(entry: &CachedAnswer) -> u64 {
    entry.content.len() as u64 + ENTRY_OVERHEAD
}

/// What a semantic entry costs against `max_bytes` until the sweep measures it in memory.
fn semantic_bytes(entry: &SemanticEntry) -> u64 {
    (entry.prompt.len() + entry.context.len() + entry.vector.len() * 8 + entry.key.len()) as u64 + 4 * ENTRY_OVERHEAD
}

/// One of a partition's places in the queue for the embedder, given back on drop.
struct PartitionTurn<'a> {
    waiting: &'a dashmap::DashMap<String, usize>,
    partition: String,
}

impl<'a> PartitionTurn<'a> {
    fn take(waiting: &'a dashmap::DashMap<String, usize>, partition: &str) -> Option<Self> {
        let mut count = waiting.entry(partition.to_owned()).or_insert(0);
        if *count >= SEMANTIC_MAX_WAITING_PER_PARTITION {
            return None;
        }
        *count += 1;
        Some(Self { waiting, partition: partition.to_owned() })
    }
}

impl Drop for PartitionTurn<'_> {
    fn drop(&mut self) {
        self.waiting.remove_if_mut(&self.partition, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// An upper estimate of the WordPiece tokens the model sees: an ASCII word is one token per
/// four characters (rare words split), punctuation one each, other scripts (CJK, accented
/// text the vocabulary splits per character) one per character.
fn wordpiece_estimate(text: &str) -> usize {
    let (mut tokens, mut run) = (0usize, 0usize);
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run += 1;
            continue;
        }
        tokens += run.div_ceil(4);
        run = 0;
        if !c.is_whitespace() {
            tokens += 1;
        }
    }
    tokens + run.div_ceil(4)
}

/// The semantic side of a request's slot: its last message when that is a user's plain text
/// short enough to embed whole, and the hash of everything else that decides the answer.
fn semantic_slot(req: &ChatRequest) -> Option<SemanticSlot> {
    let (last, earlier) = req.messages.split_last()?;
    let plain_text = last.content.iter().all(|part| matches!(part, ContentPart::Text(_)));
    if last.role != Role::User || !plain_text || !last.tool_calls.is_empty() {
        return None;
    }
    let prompt = last.joined_text();
    if prompt.trim().is_empty()
        || prompt.chars().count() > SEMANTIC_MAX_PROMPT_CHARS
        || wordpiece_estimate(&prompt) > SEMANTIC_MAX_TOKENS
    {
        return None;
    }
    let context = (
        "semantic-context",
        &req.model,
        earlier,
        &last.name,
        &req.tools,
        &req.tool_choice,
        &req.response_format,
        (req.max_tokens, req.temperature, req.top_p, &req.stop, req.seed),
    );
    Some(SemanticSlot { context: crate::security::tokens::sha256_hex(&format!("{context:?}")), prompt, vector: None })
}

/// Hex SHA-256 of what decides the answer: mode or model, messages, tools, tool choice,
/// response format and sampling parameters. Built from the request's `Debug` form, which
/// names every field and quotes every string; a change of that form only costs misses.
pub fn request_key(req: &ChatRequest) -> String {
    let decisive = (
        &req.model,
        &req.messages,
        &req.tools,
        &req.tool_choice,
        &req.response_format,
        (req.max_tokens, req.temperature, req.top_p, &req.stop, req.seed),
    );
    crate::security::tokens::sha256_hex(&format!("{decisive:?}"))
}

/// The `cache` node of the tree: its snapshot is the cache's size and hit rate, its child the
/// sweep that expires and evicts entries.
pub fn spec(cache: &Arc<ResponseCache>, policy: RestartPolicy, registry: Registry) -> SupervisorSpec {
    let swept = cache.clone();
    let sweep: Job = Arc::new(move || {
        let cache = swept.clone();
        // Rebuilding a graph is seconds of CPU at 100k entries: not on an async worker.
        Box::pin(async move {
            tokio::task::spawn_blocking(move || cache.sweep())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    });
    let sweeper: Arc<dyn crate::tree::supervisor::ChildSpec> =
        Arc::new(TaskSpec::every("task:cache-sweep", SWEEP_EVERY, sweep));
    let loaded = cache.clone();
    let load: Job = Arc::new(move || {
        let cache = loaded.clone();
        Box::pin(async move {
            // A failure is logged and not retried: the cache works without its old entries,
            // and a loader that fails again and again would take the cache node down.
            match tokio::task::spawn_blocking(move || cache.load_semantic()).await {
                Ok(Ok(count)) => tracing::info!(entries = count, "semantic cache indexed"),
                Ok(Err(error)) => tracing::error!(%error, "could not index the semantic cache's entries"),
                Err(error) => tracing::error!(%error, "indexing the semantic cache's entries panicked"),
            }
            Ok(())
        })
    });
    let loader: Arc<dyn crate::tree::supervisor::ChildSpec> =
        Arc::new(TaskSpec::once("task:semantic-load", "task", Restart::Transient, load));
    let described = cache.clone();
    SupervisorSpec {
        name: "cache".to_owned(),
        kind: "cache",
        restart: Restart::Permanent,
        policy,
        registry,
        escalates: true,
        loader: Arc::new(move || vec![loader.clone(), sweeper.clone()]),
        describe: Arc::new(move |_| described.snapshot()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Message, Mode, ModelChoice, Role};

    fn ask(text: &str) -> ChatRequest {
        ChatRequest::new(ModelChoice::Mode(Mode::Auto), vec![Message::text(Role::User, text)])
    }

    #[test]
    fn only_a_short_plain_last_user_message_is_looked_up_by_similarity() {
        let base = ask("How do I reverse a list in Python?");
        let slot = semantic_slot(&base).expect("a plain user question");
        assert_eq!(slot.prompt, "How do I reverse a list in Python?");
        let long = ask(&"word ".repeat(SEMANTIC_MAX_PROMPT_CHARS));
        let mut image = base.clone();
        image.messages[0].content.push(ContentPart::Image { url: "https://example.com/a.png".into(), detail: None });
        let mut assistant_last = base.clone();
        assistant_last.messages.push(Message::text(Role::Assistant, "Use reversed()."));
        for (why, req) in [("too long", long), ("an image", image), ("not a user's turn", assistant_last)] {
            assert!(semantic_slot(&req).is_none(), "{why}");
        }
        assert!(semantic_slot(&ask("   ")).is_none(), "blank");
        // 300 characters of Japanese are ~300 tokens: past what the model reads.
        assert!(semantic_slot(&ask(&"日本語の質問".repeat(50))).is_none(), "truncated by the model");
        assert!(semantic_slot(&ask(&"How do I reverse a list? ".repeat(20))).is_some(), "500 ASCII characters");
        // The context is everything but the last user message: it must match exactly.
        let mut with_system = base.clone();
        with_system.messages.insert(0, Message::text(Role::System, "Answer like a pirate."));
        let paraphrase = ask("How can I reverse a Python list?");
        let context = |req: &ChatRequest| semantic_slot(req).unwrap().context;
        assert_eq!(context(&base), context(&paraphrase), "only the last message differs");
        assert_ne!(context(&base), context(&with_system));
        assert_ne!(context(&base), context(&ChatRequest { seed: Some(1), ..base.clone() }));
        assert_ne!(context(&base), context(&ChatRequest { model: ModelChoice::Mode(Mode::Max), ..base.clone() }));
    }

    #[test]
    fn the_key_follows_everything_that_decides_the_answer_and_nothing_else() {
        let base = ask("What is 2 + 2?");
        assert_eq!(request_key(&base), request_key(&base.clone()));
        let mut streamed = base.clone();
        streamed.stream = true;
        streamed.include_usage = true;
        streamed.user = Some("someone".into());
        assert_eq!(request_key(&base), request_key(&streamed), "how the answer is delivered does not matter");
        let variants = [
            ask("What is 2 + 3?"),
            ChatRequest { model: ModelChoice::Mode(Mode::Max), ..base.clone() },
            ChatRequest { temperature: Some(0.2), ..base.clone() },
            ChatRequest { seed: Some(7), ..base.clone() },
            ChatRequest { max_tokens: Some(10), ..base.clone() },
            ChatRequest { stop: vec!["\n".into()], ..base.clone() },
        ];
        for variant in variants {
            assert_ne!(request_key(&base), request_key(&variant), "{variant:?}");
        }
    }
}
