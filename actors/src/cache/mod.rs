//! The exact response cache: an answer is reused for a request identical to the one that
//! produced it (same mode or model, messages, tools, response format and sampling
//! parameters), inside one partition — a workspace by default, so one tenant's answers never
//! reach another.
//!
//! What is cached, and what is not (the documented rules):
//! - only answers that finished normally (`stop`) without tool calls: a tool call depends on
//!   the world it was made in, and a cut answer is not an answer;
//! - not requests that ask to bypass it (`Cache-Control: no-cache`, `x-tokaroo-cache: skip`),
//!   nor requests with a `temperature` above `cache.max_temperature` (they ask for variety);
//! - a `seed` is part of the key, so different seeds never share an answer;
//! - entries expire after `cache.ttl_secs`; past `cache.max_bytes` the oldest go first.

pub mod guards;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokaroo_storage::{records::CachedAnswer, StorageError, Store};

use crate::{
    chat::{ChatRequest, ChatResponse, FinishReason, Usage},
    directory::apikey::KeyEntry,
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
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            scope: CacheScope::Workspace,
            ttl: Duration::from_secs(3600),
            max_bytes: 256 << 20,
            max_temperature: 1.0,
        }
    }
}

/// Where a request's answer may be found and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSlot {
    pub partition: String,
    pub key: String,
}

/// A cached answer found for a request.
pub struct CacheHit {
    pub response: ChatResponse,
    pub usage: Usage,
    /// What the answer was charged when it was made: what this hit saves.
    pub saved: Charge,
    pub provider: String,
    pub upstream_model: String,
}

/// Bytes counted per entry beyond its text: the record's other fields and the tree's keys.
const ENTRY_OVERHEAD: u64 = 256;
/// How often expired entries are removed and the size bound enforced.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub struct ResponseCache {
    store: Store,
    settings: CacheSettings,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    /// Approximate bytes held; exact again after each sweep.
    bytes: AtomicU64,
}

impl ResponseCache {
    pub fn new(store: Store, settings: CacheSettings) -> Arc<Self> {
        let cache = Arc::new(Self {
            store,
            settings,
            hits: AtomicU64::new(0),
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
        Some(CacheSlot { partition, key: request_key(req) })
    }

    /// The answer stored for `slot`, if it has not expired.
    pub fn lookup(&self, slot: &CacheSlot) -> Option<CacheHit> {
        let found = self.store.answers.get(&(slot.partition.as_str(), slot.key.as_str()));
        let entry = match found {
            Ok(Some(entry)) if entry.expires_at_ms > crate::clock::now_ms() => Some(entry),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "response cache unreadable; serving without it");
                None
            }
        };
        let Some(entry) = entry else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        self.hits.fetch_add(1, Ordering::Relaxed);
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
            Err(error) => tracing::warn!(%error, "could not store an answer in the response cache"),
        }
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

    /// Removes expired entries, then the oldest until the cache is within `max_bytes`.
    pub fn sweep(&self) -> Result<(), StorageError> {
        let now = crate::clock::now_ms();
        let mut live = Vec::new();
        for entry in self.store.answers.all()? {
            if entry.expires_at_ms <= now {
                self.store.answers.remove(&(entry.partition.as_str(), entry.key.as_str()))?;
            } else {
                live.push(entry);
            }
        }
        let mut total: u64 = live.iter().map(entry_bytes).sum();
        if total > self.settings.max_bytes {
            live.sort_by_key(|e| e.created_at_ms);
            for entry in &live {
                if total <= self.settings.max_bytes {
                    break;
                }
                self.store.answers.remove(&(entry.partition.as_str(), entry.key.as_str()))?;
                total -= entry_bytes(entry);
            }
        }
        self.bytes.store(total, Ordering::Relaxed);
        Ok(())
    }

    fn snapshot(&self) -> serde_json::Value {
        let (hits, misses) = (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed));
        json!({
            "enabled": self.settings.enabled,
            "scope": self.settings.scope,
            "entries": self.store.answers.len(),
            "bytes": self.bytes.load(Ordering::Relaxed),
            "max_bytes": self.settings.max_bytes,
            "hits": hits,
            "misses": misses,
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
        Box::pin(async move { cache.sweep().map_err(|e| e.to_string()) })
    });
    let sweeper: Arc<dyn crate::tree::supervisor::ChildSpec> =
        Arc::new(TaskSpec::every("task:cache-sweep", SWEEP_EVERY, sweep));
    let described = cache.clone();
    SupervisorSpec {
        name: "cache".to_owned(),
        kind: "cache",
        restart: Restart::Permanent,
        policy,
        registry,
        escalates: true,
        loader: Arc::new(move || vec![sweeper.clone()]),
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
