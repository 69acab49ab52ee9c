//! URL batches: `POST /v1/url/batch` stores the batch and its items, then a
//! `urlbatch:{uuid}` actor (transient, under `urlbatches`) analyses them, a few at a time and
//! within the global permits, saving each item and the batch's counters as it goes; once all
//! are done it delivers the completion webhook, retrying with backoff, and stops.
//!
//! A `kill -9` loses nothing: the `urlbatches` loader starts an actor for every batch with
//! work left (`OpenUrlBatch`), which recounts from its items and picks up the pending ones.
//! An item is charged once: it is saved `charging` (with its result) before its usage row
//! is settled, so a resumed batch looks for that row (by its request id,
//! `urlbatch:{batch}:{index}`) before charging again, once any settle sent before the
//! crash has landed or given up (`SETTLE_FINAL_AFTER`); and a batch's new actor waits for
//! its old one's analyses to end before it starts.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde::Serialize;
use serde_json::{json, Value};
use tokaroo_storage::url::{OpenUrlBatch, UrlBatch, UrlBatchItem};

use super::{
    normalize::normalize,
    score::{self, Profile, Thresholds},
    service::{ChargeLine, UrlAnalysis, UrlCaller, UrlIntel, DECISIONS, MAX_BATCH_URLS},
    webhook,
};
use crate::{
    error::EngineError,
    tree::{
        inspect::Inspection,
        registry::{ChildRef, TreeMsg},
        supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, SpawnAt, SupervisorSpec},
    },
};

pub const URLBATCHES: &str = "urlbatches";
pub const URLBATCH: &str = "urlbatch";

pub fn actor_name(id: &str) -> String {
    format!("urlbatch:{id}")
}

fn usage_request_id(batch: &str, index: u64) -> String {
    format!("urlbatch:{batch}:{index}")
}

/// A settle sent this long ago has landed or given up: `LedgerClient::settle` waits at most
/// its call timeout (10 s) for the ledger, then as long again in a task of its own.
pub(crate) const SETTLE_FINAL_AFTER: Duration = Duration::from_secs(25);

/// Batches an account keeps; past it, creating one drops the oldest finished ones.
const KEPT_BATCHES: usize = 1_000;

/// What a failed URL shows of what was sent.
const SHOWN_URL_CHARS: usize = 2_048;

/// What `POST /v1/url/batch` asks.
#[derive(Debug, Clone, Default)]
pub struct BatchInput {
    pub urls: Vec<String>,
    pub label: Option<String>,
    pub profile: Option<String>,
    pub weights: BTreeMap<String, f64>,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
}

/// The spec's batch record (`object: "url.batch"`); `results` only when asked for one batch.
#[derive(Debug, Clone, Serialize)]
pub struct BatchView {
    pub id: String,
    pub object: &'static str,
    pub status: String,
    pub label: Option<String>,
    pub profile: String,
    pub total_urls: u64,
    pub completed_urls: u64,
    pub failed_urls: u64,
    pub summary: Summary,
    pub errors: Vec<BatchError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub results: Option<Vec<Value>>,
    pub webhook: WebhookView,
    pub created_at: String,
    pub completed_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub average_score: f64,
    pub cache_hit_rate: f64,
    pub decisions: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchError {
    pub input_index: u64,
    pub url: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub url: Option<String>,
    pub delivered_at: Option<String>,
    pub last_error: Option<String>,
}

fn view(batch: &UrlBatch, results: Option<Vec<Value>>) -> BatchView {
    let done = batch.completed_urls;
    let ratio = |n: f64| if done == 0 { 0.0 } else { (n / done as f64 * 1000.0).round() / 1000.0 };
    BatchView {
        id: batch.id.clone(),
        object: "url.batch",
        status: batch.status.clone(),
        label: batch.label.clone(),
        profile: batch.profile.clone(),
        total_urls: batch.total_urls,
        completed_urls: batch.completed_urls,
        failed_urls: batch.failed_urls,
        summary: Summary {
            average_score: if done == 0 { 0.0 } else { (batch.score_sum / done as f64 * 10.0).round() / 10.0 },
            cache_hit_rate: ratio(batch.cache_hits as f64),
            decisions: DECISIONS.iter().copied().zip(batch.decisions).collect(),
        },
        errors: batch
            .errors
            .iter()
            .map(|(index, url, error)| BatchError { input_index: *index, url: url.clone(), error: error.clone() })
            .collect(),
        results,
        webhook: WebhookView {
            url: batch.webhook_url.clone(),
            delivered_at: batch.webhook_delivered_at_ms.map(crate::clock::iso8601),
            last_error: batch.webhook_last_error.clone(),
        },
        created_at: crate::clock::iso8601(batch.created_at_ms),
        completed_at: batch.completed_at_ms.map(crate::clock::iso8601),
    }
}

fn check_label(label: &Option<String>) -> Result<(), EngineError> {
    match label {
        Some(l) if l.chars().count() > 200 || l.chars().any(char::is_control) => {
            Err(EngineError::Invalid("label must be at most 200 characters, without control characters".into()))
        }
        _ => Ok(()),
    }
}

impl UrlIntel {
    fn items(&self, batch: &UrlBatch) -> Result<Vec<UrlBatchItem>, EngineError> {
        Ok(self.0.store.url_batch_items.scan_prefix(&(batch.account_id.as_str(), batch.id.as_str()))?)
    }

    /// The results of a batch's done items, in input order.
    fn results(&self, batch: &UrlBatch) -> Result<Vec<Value>, EngineError> {
        Ok(self.items(batch)?.into_iter().filter(|i| i.state == "done").filter_map(|i| i.result).collect())
    }

    /// Drops the account's oldest finished batches (and their items) past `KEPT_BATCHES`.
    fn prune_batches(&self, account_id: &str) -> Result<(), EngineError> {
        let store = &self.0.store;
        let over = store.url_batches.count_prefix(&(account_id,)).saturating_sub(KEPT_BATCHES - 1);
        if over == 0 {
            return Ok(());
        }
        for old in store.url_batches.scan_prefix_limit(&(account_id,), over)? {
            if store.url_batches_open.get(&old.id.as_str())?.is_some() {
                continue;
            }
            for item in self.items(&old)? {
                store.url_batch_items.remove(&(account_id, old.id.as_str(), item.index))?;
            }
            store.url_batches.remove(&(account_id, old.id.as_str()))?;
        }
        Ok(())
    }

    /// Checks a batch, stores it with its items, starts its actor, and answers its record.
    pub async fn create_batch(&self, caller: &UrlCaller, input: BatchInput) -> Result<BatchView, EngineError> {
        if input.urls.is_empty() {
            return Err(EngineError::Invalid("urls must list at least one URL".into()));
        }
        if input.urls.len() > MAX_BATCH_URLS {
            return Err(EngineError::Invalid(format!(
                "urls lists {} URLs; a batch takes at most {MAX_BATCH_URLS}",
                input.urls.len()
            )));
        }
        check_label(&input.label)?;
        let profile = self.profile(&caller.account_id, input.profile.as_deref())?;
        score::validate(&input.weights, None).map_err(EngineError::Invalid)?;
        let webhook_url = match &input.webhook_url {
            Some(url) => Some(self.check_webhook_url(url).await?),
            None => None,
        };
        let secret = match (&input.webhook_secret, &webhook_url) {
            (Some(_), None) => return Err(EngineError::Invalid("webhook_secret needs a webhook_url".into())),
            (Some(s), Some(_)) if s.is_empty() || s.len() > 256 => {
                return Err(EngineError::Invalid("webhook_secret must be 1 to 256 bytes".into()))
            }
            (Some(s), Some(_)) => Some(self.0.secrets.seal(s)),
            (None, _) => None,
        };
        let items: Vec<UrlBatchItem> = input
            .urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let refused = normalize(url).err().map(|e| e.to_string());
                UrlBatchItem {
                    index: index as u64,
                    // A URL that parses is within normalize's cap, and kept whole; of one
                    // that does not, only what a person needs to find it.
                    url: if refused.is_some() { url.chars().take(SHOWN_URL_CHARS).collect() } else { url.clone() },
                    state: if refused.is_some() { "failed" } else { "pending" }.into(),
                    result: None,
                    error: refused,
                    charging_at_ms: None,
                }
            })
            .collect();
        let runnable = items.iter().filter(|i| i.state == "pending").count();
        let lock = self.creation_lock(&caller.account_id);
        let _held = lock.lock().await;
        let mut open = 0;
        self.0.store.url_batches_open.for_each(|o: OpenUrlBatch| {
            open += usize::from(o.account_id == caller.account_id);
            Ok::<_, EngineError>(())
        })?;
        if open >= self.0.settings.open_batches_per_account {
            return Err(EngineError::RateLimited {
                limit: u32::try_from(self.0.settings.open_batches_per_account).unwrap_or(u32::MAX),
                retry_after: Duration::from_secs(10),
            });
        }
        // The whole batch must be affordable now; each URL is charged as it is done.
        drop(self.reserve(caller, runnable).await?);
        self.prune_batches(&caller.account_id)?;
        let now = crate::clock::now_ms();
        let id = uuid::Uuid::now_v7().to_string();
        let failed = (items.len() - runnable) as u64;
        let batch = UrlBatch {
            id: id.clone(),
            account_id: caller.account_id.clone(),
            workspace: caller.workspace.clone(),
            api_key_id: caller.api_key_id.clone(),
            label: input.label,
            profile: profile.name.clone(),
            weights: merged_weights(&profile, &input.weights),
            review: profile.thresholds.review,
            warn: profile.thresholds.warn,
            block: profile.thresholds.block,
            total_urls: items.len() as u64,
            status: if runnable == 0 { "completed" } else { "queued" }.into(),
            completed_urls: 0,
            failed_urls: failed,
            score_sum: 0.0,
            cache_hits: 0,
            decisions: [0; 4],
            errors: items
                .iter()
                .filter(|i| i.state == "failed")
                .map(|i| (i.index, i.url.clone(), i.error.clone().unwrap_or_default()))
                .collect(),
            webhook_url,
            webhook_secret_sealed: secret,
            webhook_attempts: 0,
            webhook_delivered_at_ms: None,
            webhook_last_error: None,
            webhook_next_at_ms: None,
            request_id: caller.request_id.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            completed_at_ms: (runnable == 0).then_some(now),
        };
        let store = &self.0.store;
        let account = caller.account_id.as_str();
        let keyed: Vec<((&str, &str, u64), UrlBatchItem)> =
            items.iter().map(|i| ((account, id.as_str(), i.index), i.clone())).collect();
        store.url_batch_items.insert_batch(&keyed)?;
        store.url_batches.insert(&(account, id.as_str()), &batch)?;
        let has_work = runnable > 0 || batch.webhook_url.is_some();
        if has_work {
            store
                .url_batches_open
                .insert(&id.as_str(), &OpenUrlBatch { account_id: account.to_owned(), batch_id: id.clone() })?;
        }
        store.flush().await?;
        if has_work {
            crate::tree::supervisor::start_child(&self.0.registry, URLBATCHES, self.batch_spec(account, &id)).await;
        }
        Ok(view(&batch, Some(Vec::new())))
    }

    /// A webhook URL must be http(s) and reachable under URL intelligence's outbound guard.
    async fn check_webhook_url(&self, url: &str) -> Result<String, EngineError> {
        let parsed = reqwest::Url::parse(url.trim())
            .map_err(|e| EngineError::Invalid(format!("webhook_url is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() || url.len() > 2048 {
            return Err(EngineError::Invalid("webhook_url must be an http(s) URL of at most 2048 bytes".into()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(EngineError::Invalid("webhook_url must not carry credentials; use webhook_secret".into()));
        }
        let guard = self.guard();
        guard
            .check_url(&parsed)
            .await
            .map_err(|refused| EngineError::Invalid(format!("webhook_{}", refused.explain())))?;
        Ok(parsed.to_string())
    }

    /// One batch of the caller's, with its results.
    pub fn batch(&self, caller: &UrlCaller, id: &str) -> Result<BatchView, EngineError> {
        let batch = self
            .0
            .store
            .url_batches
            .get(&(caller.account_id.as_str(), id))?
            .filter(|b| !caller.bound_to_workspace || b.workspace == caller.workspace)
            .ok_or(EngineError::NotFound { what: "batch" })?;
        Ok(view(&batch, Some(self.results(&batch)?)))
    }

    /// The caller's newest batches, without their results.
    pub fn batches(&self, caller: &UrlCaller, limit: usize) -> Result<Vec<BatchView>, EngineError> {
        let keep = |b: &UrlBatch| !caller.bound_to_workspace || b.workspace == caller.workspace;
        let newest =
            self.0.store.url_batches.page_rev(&(caller.account_id.as_str(),), None, limit, KEPT_BATCHES, keep)?;
        Ok(newest.iter().map(|b| view(b, None)).collect())
    }

    fn batch_spec(&self, account_id: &str, id: &str) -> Arc<dyn ChildSpec> {
        Arc::new(UrlBatchSpec { intel: self.clone(), account_id: account_id.to_owned(), id: id.to_owned() })
    }

    /// `urlbatches`: starts an actor for every batch with work left.
    pub(crate) fn supervisor_spec(&self) -> SupervisorSpec {
        let intel = self.clone();
        SupervisorSpec {
            name: URLBATCHES.to_owned(),
            kind: URLBATCHES,
            restart: Restart::Permanent,
            policy: self.0.policy,
            registry: self.0.registry.clone(),
            escalates: true,
            loader: Arc::new(move || {
                let mut specs = Vec::new();
                let found = intel.0.store.url_batches_open.for_each(|open: OpenUrlBatch| {
                    specs.push(intel.batch_spec(&open.account_id, &open.batch_id));
                    Ok::<_, EngineError>(())
                });
                if let Err(error) = found {
                    tracing::error!(%error, "reading unfinished URL batches failed; they resume at the next restart");
                }
                specs
            }),
            describe: Arc::new(|children| json!({ "live_batches": children.len() })),
        }
    }
}

/// The profile's weights with the request's over them: what the batch weighs with, kept.
fn merged_weights(profile: &Profile, overrides: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut weights = profile.weights.clone();
    weights.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
    weights
}

/// How one item ended.
pub enum ItemOutcome {
    Done(u64, Box<UrlAnalysis>),
    Failed(u64, String),
    /// Analysed and saved `charging`, but its charge could not be confirmed: the actor
    /// fails, and its restart settles it from the ledger.
    InDoubt(u64, String),
    /// The analysis panicked; what it left in storage says what comes next.
    Panicked(u64),
}

pub enum UrlBatchMsg {
    Finished(ItemOutcome),
    /// Settle the items a crash left `charging`, now that any settle sent before is final.
    Resolve,
    /// Time to try the webhook.
    Deliver,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for UrlBatchMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub struct UrlBatchActor {
    intel: UrlIntel,
    account_id: String,
    id: String,
}

/// Marks a batch's actor live until its state is dropped (after the analyses it owned are
/// aborted), so a new actor for the batch never runs beside the old one's work.
struct LiveMark {
    intel: UrlIntel,
    id: String,
}

impl Drop for LiveMark {
    fn drop(&mut self) {
        self.intel.0.live_batches.remove(&self.id);
    }
}

pub struct BatchState {
    batch: UrlBatch,
    queue: VecDeque<UrlBatchItem>,
    /// Items a crash left `charging`, settled by `Resolve`.
    in_doubt: Vec<UrlBatchItem>,
    /// The item analyses in flight; dropping the state (the actor stopped) aborts them, and
    /// a restart takes them up again from their saved state.
    running: tokio::task::JoinSet<()>,
    /// Analyses started whose outcome has not arrived (a task reports just before it ends,
    /// so `running.len()` may still count it).
    jobs: usize,
    /// Items started and not yet counted (in-doubt ones included), so the batch completes
    /// only once all are.
    in_flight: usize,
    caller: UrlCaller,
    profile: Profile,
    /// Last: dropped after `running` has aborted its tasks.
    _live: LiveMark,
}

impl UrlBatchActor {
    async fn save(&self, batch: &mut UrlBatch) -> Result<(), EngineError> {
        batch.updated_at_ms = crate::clock::now_ms();
        self.intel.0.store.url_batches.insert(&(batch.account_id.as_str(), batch.id.as_str()), batch)?;
        self.intel.0.store.flush().await?;
        Ok(())
    }

    fn save_item(&self, item: &UrlBatchItem) -> Result<(), EngineError> {
        let key = (self.account_id.as_str(), self.id.as_str(), item.index);
        self.intel.0.store.url_batch_items.insert(&key, item)?;
        Ok(())
    }

    /// Charges the in-doubt items whose usage row the ledger lacks, and counts them done.
    async fn resolve(&self, state: &mut BatchState) -> Result<(), EngineError> {
        let doubtful: HashSet<String> = state.in_doubt.iter().map(|i| usage_request_id(&self.id, i.index)).collect();
        let intel = &self.intel.0;
        // Rows only logged are applied first, so the scan sees every settled row.
        intel.ledger.commit().await?;
        let since_us = state.batch.created_at_ms.saturating_mul(1000);
        let (store, account) = (intel.store.clone(), self.account_id.clone());
        let found = tokio::task::spawn_blocking(move || store.ledger.request_ids_since(&account, since_us, &doubtful))
            .await
            .map_err(|e| EngineError::Internal(format!("reading the ledger: {e}")))??;
        for mut item in std::mem::take(&mut state.in_doubt) {
            let request_id = usage_request_id(&self.id, item.index);
            let result = item.result.clone().unwrap_or(Value::Null);
            if !found.contains(&request_id) {
                // The work was done: it is charged even past the balance, like a settled chat.
                let line = ChargeLine::of(&result, "url_batch", Some(request_id), &state.profile.name, None);
                if let Err(error) = self.intel.charge(&state.caller, None, line).await {
                    state.in_doubt.push(item);
                    return Err(error);
                }
            }
            if let Err(error) = self.intel.record(&state.caller, Some(&self.id), &state.profile.name, &result) {
                tracing::warn!(batch = %self.id, %error, "a batch URL's check was not kept in the history");
            }
            item.state = "done".into();
            self.save_item(&item)?;
            let (score, decision, hit) = summary_of(&result);
            count_result(&mut state.batch, score, decision, hit);
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        self.save(&mut state.batch).await
    }

    /// Starts analyses until the batch's share of concurrency is used.
    fn fill(&self, me: &ActorRef<UrlBatchMsg>, state: &mut BatchState) {
        let limit = self.intel.0.settings.batch_concurrency.max(1);
        while state.jobs < limit {
            let Some(item) = state.queue.pop_front() else { break };
            state.in_flight += 1;
            state.jobs += 1;
            let index = item.index;
            let job = ItemJob {
                intel: self.intel.clone(),
                caller: state.caller.clone(),
                batch_id: self.id.clone(),
                profile: state.profile.clone(),
                item,
            };
            let me = me.clone();
            state.running.spawn(async move {
                let outcome = AssertUnwindSafe(job.run()).catch_unwind().await.unwrap_or(ItemOutcome::Panicked(index));
                let _ = me.cast(UrlBatchMsg::Finished(outcome));
            });
        }
    }

    /// Counts one finished item into the batch; an error when the actor must restart to
    /// settle it.
    fn count(&self, state: &mut BatchState, outcome: ItemOutcome) -> Result<(), EngineError> {
        match outcome {
            ItemOutcome::Done(_, analysis) => {
                count_result(&mut state.batch, analysis.score, analysis.decision, analysis.cache.hit);
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            ItemOutcome::Failed(index, error) => {
                let listed = state.batch.errors.iter().any(|(i, ..)| *i == index);
                if !listed {
                    let item = self.item(index)?;
                    state.batch.errors.push((index, item.map(|i| i.url).unwrap_or_default(), error));
                }
                state.batch.failed_urls += 1;
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            ItemOutcome::InDoubt(index, error) => {
                return Err(EngineError::Internal(format!("item {index}: its charge is unconfirmed ({error})")));
            }
            ItemOutcome::Panicked(index) => {
                tracing::error!(batch = %self.id, index, "analysing a batch URL panicked");
                match self.item(index)? {
                    // It may have been charged: settled once any settle it sent is final.
                    Some(item) if item.state == "charging" => {
                        state.in_doubt.push(item);
                        return Err(EngineError::Internal(format!("item {index} panicked while charging")));
                    }
                    Some(mut item) => {
                        let error = "internal error while analysing this URL".to_owned();
                        item.state = "failed".into();
                        item.error = Some(error.clone());
                        self.save_item(&item)?;
                        state.batch.errors.push((index, item.url, error));
                        state.batch.failed_urls += 1;
                        state.in_flight = state.in_flight.saturating_sub(1);
                    }
                    None => state.in_flight = state.in_flight.saturating_sub(1),
                }
            }
        }
        Ok(())
    }

    fn item(&self, index: u64) -> Result<Option<UrlBatchItem>, EngineError> {
        Ok(self.intel.0.store.url_batch_items.get(&(self.account_id.as_str(), self.id.as_str(), index))?)
    }

    async fn complete(&self, me: &ActorRef<UrlBatchMsg>, state: &mut BatchState) -> Result<(), EngineError> {
        state.batch.status = "completed".into();
        state.batch.completed_at_ms = Some(crate::clock::now_ms());
        self.save(&mut state.batch).await?;
        tracing::info!(batch = %self.id, completed = state.batch.completed_urls, failed = state.batch.failed_urls, "URL batch completed");
        if state.batch.webhook_url.is_some() {
            let _ = me.cast(UrlBatchMsg::Deliver);
            Ok(())
        } else {
            self.finish(me).await
        }
    }

    /// No work left: the batch leaves the open list and its actor stops.
    async fn finish(&self, me: &ActorRef<UrlBatchMsg>) -> Result<(), EngineError> {
        self.intel.0.store.url_batches_open.remove(&self.id.as_str())?;
        self.intel.0.store.flush().await?;
        me.stop(None);
        Ok(())
    }

    /// The completion webhook, signed: any failure (ours or the receiver's) is an attempt.
    async fn deliver(&self, me: &ActorRef<UrlBatchMsg>, state: &mut BatchState) -> Result<(), EngineError> {
        let Some(url) = state.batch.webhook_url.clone() else { return self.finish(me).await };
        let sent = async {
            let batch = &state.batch;
            let results = self.intel.results(batch).map_err(|e| format!("reading the results: {e}"))?;
            let body = serde_json::to_vec(&json!({"type": "url.batch.completed", "data": view(batch, Some(results))}))
                .map_err(|e| format!("encoding the body: {e}"))?;
            let secret = match &batch.webhook_secret_sealed {
                Some(sealed) => Some(self.intel.0.secrets.open(sealed).map_err(|e| format!("the secret: {e}"))?),
                None => None,
            };
            let settings = &self.intel.0.settings.webhook;
            let guard = self.intel.guard();
            webhook::send(guard, &url, secret.as_deref(), &body, settings.timeout).await
        }
        .await;
        let settings = &self.intel.0.settings.webhook;
        let batch = &mut state.batch;
        batch.webhook_attempts += 1;
        match sent {
            Ok(()) => {
                batch.webhook_delivered_at_ms = Some(crate::clock::now_ms());
                batch.webhook_last_error = None;
                batch.webhook_next_at_ms = None;
                self.save(batch).await?;
                self.finish(me).await
            }
            Err(error) => {
                tracing::info!(batch = %self.id, attempt = batch.webhook_attempts, %error, "URL batch webhook failed");
                batch.webhook_last_error = Some(error);
                if batch.webhook_attempts >= settings.attempts {
                    batch.webhook_next_at_ms = None;
                    self.save(batch).await?;
                    return self.finish(me).await;
                }
                let wait = webhook::backoff(batch.webhook_attempts, settings.backoff, settings.max_backoff);
                batch.webhook_next_at_ms =
                    Some(crate::clock::now_ms() + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
                self.save(batch).await?;
                me.send_after(wait, || UrlBatchMsg::Deliver);
                Ok(())
            }
        }
    }

    /// Completes the batch once nothing is queued, running or in doubt.
    async fn maybe_complete(&self, me: &ActorRef<UrlBatchMsg>, state: &mut BatchState) -> Result<(), EngineError> {
        if state.queue.is_empty() && state.in_flight == 0 && state.batch.status != "completed" {
            self.complete(me, state).await?;
        }
        Ok(())
    }
}

/// Score, decision and cache use of a stored result.
fn summary_of(result: &Value) -> (f64, &str, bool) {
    (
        result["score"].as_f64().unwrap_or(0.0),
        result["decision"].as_str().unwrap_or(""),
        result["cache"]["hit"].as_bool().unwrap_or(false),
    )
}

fn count_result(batch: &mut UrlBatch, score: f64, decision: &str, cache_hit: bool) {
    batch.completed_urls += 1;
    batch.score_sum += score;
    batch.cache_hits += u64::from(cache_hit);
    if let Some(slot) = DECISIONS.iter().position(|d| *d == decision) {
        batch.decisions[slot] += 1;
    }
}

/// One item's analysis, run in the batch actor's `JoinSet`.
struct ItemJob {
    intel: UrlIntel,
    caller: UrlCaller,
    batch_id: String,
    profile: Profile,
    item: UrlBatchItem,
}

impl ItemJob {
    async fn run(mut self) -> ItemOutcome {
        let index = self.item.index;
        // The account's share first, so one tenant's batches queue behind each other, not
        // in front of everyone else's.
        let Ok(_mine) = self.intel.account_permits(&self.caller.account_id).acquire_owned().await else {
            return ItemOutcome::Panicked(index);
        };
        let Ok(_global) = self.intel.0.permits.clone().acquire_owned().await else {
            return ItemOutcome::Panicked(index);
        };
        let url = match normalize(&self.item.url) {
            Ok(url) => url,
            Err(error) => return self.failed(error.to_string()),
        };
        let hold = match self.intel.reserve(&self.caller, 1).await {
            Ok(hold) => hold,
            Err(error) => return self.failed(error.to_string()),
        };
        let started = Instant::now();
        let none = BTreeMap::new();
        let analysis = self.intel.inspect(&self.caller, &self.item.url, url, &self.profile, &none).await;
        let Ok(result) = serde_json::to_value(&analysis) else {
            return self.failed("the analysis could not be saved".into());
        };
        self.item.state = "charging".into();
        self.item.result = Some(result);
        self.item.charging_at_ms = Some(crate::clock::now_ms());
        let key = (self.caller.account_id.as_str(), self.batch_id.as_str(), index);
        let store = &self.intel.0.store;
        if let Err(error) = store.url_batch_items.insert(&key, &self.item) {
            return ItemOutcome::InDoubt(index, error.to_string());
        }
        if let Err(error) = store.flush().await {
            return ItemOutcome::InDoubt(index, error.to_string());
        }
        let request_id = Some(usage_request_id(&self.batch_id, index));
        let result = self.item.result.as_ref().unwrap_or(&Value::Null);
        let line = ChargeLine::of(result, "url_batch", request_id, &self.profile.name, Some(started));
        if let Err(error) = self.intel.charge(&self.caller, hold, line).await {
            return ItemOutcome::InDoubt(index, error.to_string());
        }
        if let Err(error) = self.intel.record(&self.caller, Some(&self.batch_id), &self.profile.name, result) {
            tracing::warn!(batch = %self.batch_id, %error, "a batch URL's check was not kept in the history");
        }
        self.item.state = "done".into();
        if let Err(error) = store.url_batch_items.insert(&key, &self.item) {
            return ItemOutcome::InDoubt(index, error.to_string());
        }
        ItemOutcome::Done(index, Box::new(analysis))
    }

    fn failed(mut self, error: String) -> ItemOutcome {
        self.item.state = "failed".into();
        self.item.error = Some(error.clone());
        let key = (self.caller.account_id.as_str(), self.batch_id.as_str(), self.item.index);
        match self.intel.0.store.url_batch_items.insert(&key, &self.item) {
            Ok(()) => ItemOutcome::Failed(self.item.index, error),
            Err(e) => ItemOutcome::InDoubt(self.item.index, e.to_string()),
        }
    }
}

/// How long until every settle an in-doubt item may have sent is final: none for items
/// saved before this process started (its ledger replayed everything at start).
fn wait_for_final_settles(items: &[UrlBatchItem], process_started_ms: i64) -> Duration {
    let now = crate::clock::now_ms();
    let final_after = i64::try_from(SETTLE_FINAL_AFTER.as_millis()).unwrap_or(i64::MAX);
    let latest = items
        .iter()
        .filter_map(|i| i.charging_at_ms)
        .filter(|at| *at >= process_started_ms)
        .map(|at| at.saturating_add(final_after) - now)
        .max()
        .unwrap_or(0);
    Duration::from_millis(u64::try_from(latest).unwrap_or(0))
}

impl Actor for UrlBatchActor {
    type Msg = UrlBatchMsg;
    /// `None`: the batch has no record (nothing to do but leave the open list).
    type State = Option<BatchState>;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<UrlBatchMsg>, _: ()) -> Result<Option<BatchState>, ActorProcessingErr> {
        // A restarted batch's old actor may still be stopping: its analyses end with it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.intel.0.live_batches.contains_key(&self.id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.intel.0.live_batches.insert(self.id.clone(), ());
        let live = LiveMark { intel: self.intel.clone(), id: self.id.clone() };
        let store = &self.intel.0.store;
        let Some(mut batch) = store.url_batches.get(&(self.account_id.as_str(), self.id.as_str()))? else {
            tracing::warn!(batch = %self.id, "an open URL batch has no record; dropping it");
            return Ok(None);
        };
        let caller = UrlCaller {
            account_id: batch.account_id.clone(),
            workspace: batch.workspace.clone(),
            api_key_id: batch.api_key_id.clone(),
            request_id: batch.request_id.clone(),
            bound_to_workspace: false,
        };
        let profile = Profile {
            name: batch.profile.clone(),
            description: String::new(),
            weights: batch.weights.clone(),
            thresholds: Thresholds { review: batch.review, warn: batch.warn, block: batch.block },
        };
        let items = self.intel.items(&batch)?;
        // Recounted from the items: a crash between an item and its batch's save loses no count.
        (batch.completed_urls, batch.failed_urls, batch.score_sum, batch.cache_hits, batch.decisions) =
            (0, 0, 0.0, 0, [0; 4]);
        batch.errors.clear();
        let (mut queue, mut in_doubt) = (VecDeque::new(), Vec::new());
        for item in items {
            match item.state.as_str() {
                "done" => {
                    let (score, decision, hit) = summary_of(item.result.as_ref().unwrap_or(&Value::Null));
                    count_result(&mut batch, score, decision, hit);
                }
                "failed" => {
                    batch.failed_urls += 1;
                    batch.errors.push((item.index, item.url, item.error.unwrap_or_default()));
                }
                "charging" => in_doubt.push(item),
                _ => queue.push_back(item),
            }
        }
        Ok(Some(BatchState {
            batch,
            queue,
            in_flight: in_doubt.len(),
            in_doubt,
            running: tokio::task::JoinSet::new(),
            jobs: 0,
            caller,
            profile,
            _live: live,
        }))
    }

    async fn post_start(
        &self,
        me: ActorRef<UrlBatchMsg>,
        state: &mut Option<BatchState>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(state) = state else {
            self.finish(&me).await?;
            return Ok(());
        };
        if !state.in_doubt.is_empty() {
            let wait = wait_for_final_settles(&state.in_doubt, self.intel.0.started_at_ms);
            me.send_after(wait, || UrlBatchMsg::Resolve);
        }
        if state.batch.status != "completed" {
            state.batch.status = "running".into();
            self.save(&mut state.batch).await?;
            self.fill(&me, state);
            self.maybe_complete(&me, state).await?;
            return Ok(());
        }
        // Completed before the restart: what is left is the webhook, when it is due.
        match (&state.batch.webhook_url, state.batch.webhook_delivered_at_ms) {
            (Some(_), None) if state.batch.webhook_attempts < self.intel.0.settings.webhook.attempts => {
                let due = state.batch.webhook_next_at_ms.unwrap_or(0) - crate::clock::now_ms();
                me.send_after(Duration::from_millis(u64::try_from(due).unwrap_or(0)), || UrlBatchMsg::Deliver);
            }
            _ => self.finish(&me).await?,
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<UrlBatchMsg>,
        msg: UrlBatchMsg,
        state: &mut Option<BatchState>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(state) = state else { return Ok(()) };
        match msg {
            UrlBatchMsg::Finished(outcome) => {
                state.jobs = state.jobs.saturating_sub(1);
                // Frees what ended.
                while state.running.try_join_next().is_some() {}
                self.count(state, outcome)?;
                self.save(&mut state.batch).await?;
                self.fill(&me, state);
                self.maybe_complete(&me, state).await?;
            }
            UrlBatchMsg::Resolve => {
                if !state.in_doubt.is_empty() {
                    self.resolve(state).await?;
                }
                self.maybe_complete(&me, state).await?;
            }
            UrlBatchMsg::Deliver => {
                if state.batch.webhook_delivered_at_ms.is_none() {
                    self.deliver(&me, state).await?;
                }
            }
            UrlBatchMsg::Inspect(reply) => {
                let b = &state.batch;
                let _ = reply.send(Inspection::leaf(json!({
                    "status": b.status,
                    "total_urls": b.total_urls,
                    "completed_urls": b.completed_urls,
                    "failed_urls": b.failed_urls,
                    "in_flight": state.jobs,
                    "in_doubt": state.in_doubt.len(),
                    "queued": state.queue.len(),
                    "webhook_attempts": b.webhook_attempts,
                })));
            }
            UrlBatchMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

/// How the `urlbatches` supervisor starts one batch's actor (again, after a failure).
pub struct UrlBatchSpec {
    intel: UrlIntel,
    account_id: String,
    id: String,
}

impl ChildSpec for UrlBatchSpec {
    fn name(&self) -> String {
        actor_name(&self.id)
    }
    fn kind(&self) -> &'static str {
        URLBATCH
    }
    fn restart(&self) -> Restart {
        Restart::Transient
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor =
            UrlBatchActor { intel: self.intel.clone(), account_id: self.account_id.clone(), id: self.id.clone() };
        Box::pin(spawn_linked(actor, (), at))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::disallowed_methods)]

    use std::collections::BTreeMap;

    use tokaroo_storage::{
        ledger::UsageFilter,
        url::{OpenUrlBatch, UrlBatch, UrlBatchItem},
        Store,
    };

    use super::{usage_request_id, URLBATCHES};
    use crate::{
        config::EngineConfig,
        engine::Engine,
        url::service::{ChargeLine, UrlCaller},
    };

    fn item(index: u64, state: &str) -> UrlBatchItem {
        let result = serde_json::json!({
            "id": format!("uc_test{index}"), "domain": "example.com", "decision": "allow", "score": 0.0,
            "signals": [], "cache": {"hit": false},
        });
        UrlBatchItem {
            index,
            url: "http://127.0.0.1:1/".into(),
            state: state.into(),
            result: (state == "charging").then_some(result),
            error: None,
            charging_at_ms: None,
        }
    }

    /// A settle this process may still be sending is waited out; one from before the start
    /// is already in the ledger.
    #[test]
    fn in_doubt_items_wait_only_for_settles_this_process_may_still_send() {
        let now = crate::clock::now_ms();
        let at = |ms: i64| UrlBatchItem { charging_at_ms: Some(ms), ..item(0, "charging") };
        let started = now - 60_000;
        assert_eq!(super::wait_for_final_settles(&[at(now - 120_000)], started), std::time::Duration::ZERO);
        assert_eq!(super::wait_for_final_settles(&[at(now - 30_000)], started), std::time::Duration::ZERO);
        let wait = super::wait_for_final_settles(&[at(now - 30_000), at(now - 5_000)], started);
        assert!(wait > std::time::Duration::from_secs(19) && wait <= super::SETTLE_FINAL_AFTER, "{wait:?}");
    }

    /// Items a crash left `charging` are charged once: the one whose row the ledger has is
    /// not charged again, the one whose row it lacks is charged now.
    #[tokio::test]
    async fn a_resumed_batch_charges_each_in_doubt_item_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = EngineConfig { fault_injection: true, ..EngineConfig::default() };
        let engine = Engine::start(Store::open(dir.path()).unwrap(), config).await.unwrap();
        engine.directory().bootstrap().await.unwrap();
        let account = engine.directory().operator_account_id().expect("the operator");
        let intel = engine.url().clone();
        let store = engine.store().clone();
        let now = crate::clock::now_ms();
        let id = "b-in-doubt".to_owned();
        let batch = UrlBatch {
            id: id.clone(),
            account_id: account.clone(),
            workspace: String::new(),
            api_key_id: None,
            label: None,
            profile: "default".into(),
            weights: BTreeMap::new(),
            review: 20.0,
            warn: 40.0,
            block: 70.0,
            total_urls: 3,
            status: "running".into(),
            completed_urls: 0,
            failed_urls: 0,
            score_sum: 0.0,
            cache_hits: 0,
            decisions: [0; 4],
            errors: Vec::new(),
            webhook_url: None,
            webhook_secret_sealed: None,
            webhook_attempts: 0,
            webhook_delivered_at_ms: None,
            webhook_last_error: None,
            webhook_next_at_ms: None,
            request_id: None,
            created_at_ms: now - 1000,
            updated_at_ms: now,
            completed_at_ms: None,
        };
        store.url_batches.insert(&(account.as_str(), id.as_str()), &batch).unwrap();
        for item in [item(0, "charging"), item(1, "charging"), item(2, "pending")] {
            store.url_batch_items.insert(&(account.as_str(), id.as_str(), item.index), &item).unwrap();
        }
        store
            .url_batches_open
            .insert(&id.as_str(), &OpenUrlBatch { account_id: account.clone(), batch_id: id.clone() })
            .unwrap();
        // Item 0 was charged just before the crash; item 1 was not.
        let caller = UrlCaller {
            account_id: account.clone(),
            workspace: String::new(),
            api_key_id: None,
            request_id: None,
            bound_to_workspace: false,
        };
        let result = item(0, "charging").result.unwrap();
        let line = ChargeLine::of(&result, "url_batch", Some(usage_request_id(&id, 0)), "default", None);
        intel.charge(&caller, None, line).await.unwrap();

        crate::tree::supervisor::start_child(&intel.0.registry, URLBATCHES, intel.batch_spec(&account, &id)).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let now = store.url_batches.get(&(account.as_str(), id.as_str())).unwrap().unwrap();
            if now.status == "completed" && store.url_batches_open.get(&id.as_str()).unwrap().is_none() {
                assert_eq!((now.completed_urls, now.failed_urls), (3, 0), "{now:?}");
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "the batch did not finish: {now:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        engine.url().0.ledger.commit().await.unwrap();
        let filter = UsageFilter { request_type: Some("url_batch".into()), ..Default::default() };
        let (rows, _) = store.ledger.usage_page(&account, &filter, None, 100).unwrap();
        let mut ids: Vec<String> = rows.into_iter().filter_map(|r| r.request_id).collect();
        ids.sort();
        let expected: Vec<String> = (0..3).map(|i| usage_request_id(&id, i)).collect();
        assert_eq!(ids, expected, "one row per item");
        engine.shutdown().await.unwrap();
    }
}
