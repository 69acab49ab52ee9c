//! `engine.url()`: one URL analysed and charged, the history and stats of an account's
//! checks, its profiles, and its batches (run by `batch.rs`'s actors).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use serde::Serialize;
use tokaroo_storage::{
    records::UsageRow,
    url::{UrlCheck, UrlProfile},
    Store,
};

use super::{
    brands::{BrandList, BrandMatch},
    normalize::normalize,
    parked::Parking,
    pipeline::{Inspection, Inspector, PipelineSettings},
    rdap::Bootstrap,
    score::{self, Profile, Thresholds},
    weigh, Signal,
};
use crate::{
    directory::state::DirectoryState,
    error::EngineError,
    money::{
        billing::{usd_to_units, Charge, PricingPolicy},
        funding::Funding,
        ledger::{HoldGuard, LedgerClient, ReserveRequest},
    },
    routing::netguard::{NetGuard, NetPolicy, NetSettings},
    security::secrets::SecretBox,
    tree::registry::Registry,
};

/// `[url]`: the pipeline's resolver, roots, registries and lists, and the caps on tenants.
#[derive(Debug, Clone)]
pub struct UrlSettings {
    pub pipeline: PipelineSettings,
    /// JSON text of brands to add to (or replace in) the shipped list.
    pub brands_extra: Option<String>,
    /// JSON text of parking services to add.
    pub parking_extra: Option<String>,
    /// JSON text of an IANA RDAP bootstrap file replacing the shipped snapshot.
    pub rdap_bootstrap: Option<String>,
    /// TLD → RDAP base URL, over the bootstrap.
    pub rdap_servers: Vec<(String, String)>,
    /// Checks kept per account for history and stats (oldest pruned first).
    pub history_per_account: usize,
    pub profiles_per_account: usize,
    /// Batches with work left an account may have at once.
    pub open_batches_per_account: usize,
    /// URLs one batch analyses at once, one account at once (its analyses and batches
    /// together), and all batches together.
    pub batch_concurrency: usize,
    pub account_concurrency: usize,
    pub global_concurrency: usize,
    pub webhook: WebhookSettings,
    /// Addresses URL checks and webhooks may reach whatever their range (the only way past
    /// the public-internet-only rule, for every account alike; `url.allowed_cidrs`).
    pub allowed_cidrs: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub attempts: u32,
    /// The first retry's wait; each next one doubles it (with jitter), up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for UrlSettings {
    fn default() -> Self {
        Self {
            pipeline: PipelineSettings::default(),
            brands_extra: None,
            parking_extra: None,
            rdap_bootstrap: None,
            rdap_servers: Vec::new(),
            history_per_account: 10_000,
            profiles_per_account: 100,
            open_batches_per_account: 10,
            batch_concurrency: 4,
            account_concurrency: 8,
            global_concurrency: 16,
            webhook: WebhookSettings::default(),
            allowed_cidrs: Vec::new(),
        }
    }
}

/// Batches at most this many URLs.
pub const MAX_BATCH_URLS: usize = 100;
/// Stats read at most this many of the newest checks.
pub const STATS_WINDOW: usize = 10_000;

/// Who asks: the account, the workspace its key works in (`""` for none), the key.
#[derive(Debug, Clone)]
pub struct UrlCaller {
    pub account_id: String,
    pub workspace: String,
    pub api_key_id: Option<String>,
    pub request_id: Option<String>,
    /// A key bound to a workspace reads only that workspace's checks and batches.
    pub bound_to_workspace: bool,
}

/// The spec's `UrlAnalysisResult`.
#[derive(Debug, Clone, Serialize)]
pub struct UrlAnalysis {
    pub id: String,
    pub url: String,
    pub normalized_url: String,
    pub domain: String,
    pub final_url: Option<String>,
    pub score: f64,
    pub decision: &'static str,
    pub signals: Vec<Signal>,
    pub observations: Observations,
    pub cache: CacheBlock,
}

#[derive(Debug, Clone, Serialize)]
pub struct Observations {
    pub final_status_code: Option<u16>,
    pub redirect_hops: usize,
    pub tls_valid: Option<bool>,
    pub mx_records: Option<usize>,
    pub ns_records: Option<usize>,
    pub domain_age_days: Option<i64>,
    pub expires_in_days: Option<i64>,
    pub parked: bool,
    pub brand_match: Option<BrandMatch>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheBlock {
    pub hit: bool,
    /// `miss` or `signal_cache`.
    pub status: &'static str,
    pub age_ms: Option<u64>,
}

/// A profile as listed: built in, or the account's own.
#[derive(Debug, Clone)]
pub struct ProfileEntry {
    pub id: String,
    pub profile: Profile,
    pub builtin: bool,
    pub created_at_ms: Option<i64>,
    pub updated_at_ms: Option<i64>,
}

/// A profile to create, or changes to one.
#[derive(Debug, Clone, Default)]
pub struct ProfileInput {
    pub name: Option<String>,
    pub description: Option<String>,
    pub weights: Option<BTreeMap<String, f64>>,
    pub thresholds: Option<Thresholds>,
}

/// What history and stats read.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub decision: Option<String>,
    pub domain: Option<String>,
    /// A check id: only older ones.
    pub before: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct UrlStats {
    pub days: u32,
    pub total_checks: u64,
    pub decisions: BTreeMap<&'static str, u64>,
    pub average_score: f64,
    pub cache_hit_rate: f64,
    pub top_signals: Vec<Counted>,
    pub top_domains: Vec<Counted>,
    /// More checks fell in the window than stats read (the newest `STATS_WINDOW`).
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    pub id: String,
    pub count: u64,
}

/// What one check's usage row says besides the price.
pub(crate) struct ChargeLine {
    pub request_type: &'static str,
    pub request_id: Option<String>,
    pub reason: String,
    pub cache_hit: bool,
    pub latency_ms: Option<u64>,
}

impl ChargeLine {
    pub(crate) fn of(
        result: &serde_json::Value,
        request_type: &'static str,
        request_id: Option<String>,
        profile: &str,
        started: Option<Instant>,
    ) -> Self {
        let text = |field: &str| result[field].as_str().unwrap_or_default().to_owned();
        Self {
            request_type,
            request_id,
            reason: format!("profile {profile}: {} {}", text("decision"), text("domain")),
            cache_hit: result["cache"]["hit"].as_bool().unwrap_or(false),
            latency_ms: started.map(|s| u64::try_from(s.elapsed().as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

pub const DECISIONS: [&str; 4] = ["allow", "review", "warn", "block"];

/// The service. One `Arc`, cloned into batch actors.
#[derive(Clone)]
pub struct UrlIntel(pub(crate) Arc<UrlParts>);

pub(crate) struct UrlParts {
    pub(crate) inspector: Inspector,
    pub(crate) store: Store,
    pub(crate) ledger: LedgerClient,
    pub(crate) directory: Arc<DirectoryState>,
    pub(crate) funding: Funding,
    pub(crate) pricing: PricingPolicy,
    pub(crate) payments_url: String,
    /// Resolving through the pipeline's resolver, so redirects and webhooks see the same
    /// answers DNS reported.
    pub(crate) guard: NetGuard,
    pub(crate) secrets: SecretBox,
    pub(crate) registry: Registry,
    pub(crate) settings: UrlSettings,
    pub(crate) policy: crate::tree::supervisor::RestartPolicy,
    /// All batches' analyses at once.
    pub(crate) permits: Arc<tokio::sync::Semaphore>,
    /// Each account's analyses at once (`account_concurrency`).
    account_permits: DashMap<String, Arc<tokio::sync::Semaphore>>,
    /// Batches whose actor (and its analyses) is live in this process.
    pub(crate) live_batches: DashMap<String, ()>,
    /// When this engine started: settles sent before it were replayed from the ledger's log.
    pub(crate) started_at_ms: i64,
    /// Checks per account, counted from storage at an account's first check.
    history_counts: DashMap<String, usize>,
    /// Serialises an account's batch creations (the cap on open batches) and profile writes.
    pub(crate) creation_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

pub(crate) fn new_check_id() -> String {
    format!("uc_{}", uuid::Uuid::now_v7().simple())
}

impl UrlIntel {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: UrlSettings,
        net: &NetSettings,
        store: Store,
        ledger: LedgerClient,
        directory: Arc<DirectoryState>,
        funding: Funding,
        (pricing, payments_url): (PricingPolicy, String),
        secrets: SecretBox,
        policy: crate::tree::supervisor::RestartPolicy,
    ) -> Result<Self, EngineError> {
        let invalid = |e: String| EngineError::Invalid(format!("url settings: {e}"));
        let brands = BrandList::load(settings.brands_extra.as_deref()).map_err(invalid)?;
        let parking = Parking::load(settings.parking_extra.as_deref()).map_err(invalid)?;
        let mut bootstrap = match &settings.rdap_bootstrap {
            Some(json) => Bootstrap::parse(json).map_err(invalid)?,
            None => Bootstrap::shipped(),
        };
        for (tld, base) in &settings.rdap_servers {
            bootstrap.set(tld, base);
        }
        let inspector = Inspector::new(settings.pipeline.clone(), brands, parking, bootstrap).map_err(invalid)?;
        // The public internet only, for every account, the operator's included: a runtime
        // key can ask for a URL check, and `endpoints.*` opens self-hosted endpoints alone.
        let policy_for_urls =
            NetPolicy { allow_private: false, allowed: settings.allowed_cidrs.clone(), own: net.listen.clone() };
        let guard = NetGuard::new(policy_for_urls, Arc::new(inspector.dns().clone()));
        let registry = directory.registry.clone();
        Ok(Self(Arc::new(UrlParts {
            inspector,
            store,
            ledger,
            directory,
            funding,
            pricing,
            payments_url,
            guard,
            secrets,
            registry,
            permits: Arc::new(tokio::sync::Semaphore::new(settings.global_concurrency.max(1))),
            settings,
            policy,
            history_counts: DashMap::new(),
            creation_locks: DashMap::new(),
            account_permits: DashMap::new(),
            live_batches: DashMap::new(),
            started_at_ms: crate::clock::now_ms(),
        })))
    }

    pub(crate) fn account_permits(&self, account_id: &str) -> Arc<tokio::sync::Semaphore> {
        let per_account = self.0.settings.account_concurrency.max(1);
        self.0
            .account_permits
            .entry(account_id.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_account)))
            .clone()
    }

    pub(crate) fn is_operator(&self, account_id: &str) -> bool {
        self.0.directory.operator_account_id().as_deref() == Some(account_id)
    }

    /// The guard every outbound URL call passes (checks, their redirects, TLS, webhooks).
    pub(crate) fn guard(&self) -> &NetGuard {
        &self.0.guard
    }

    /// The profile `name` (or id) names for this account; `default` when none.
    pub fn profile(&self, account_id: &str, name: Option<&str>) -> Result<Profile, EngineError> {
        let name = name.unwrap_or("default");
        if let Some(builtin) = score::builtin_profiles().into_iter().find(|p| p.name == name) {
            return Ok(builtin);
        }
        self.own_profile(account_id, name)?.map(|p| to_profile(&p)).ok_or_else(|| {
            EngineError::Invalid(format!(
                "profile {name:?} is neither a built-in profile nor one of this account's; see GET /v1/url/profiles"
            ))
        })
    }

    fn own_profile(&self, account_id: &str, name_or_id: &str) -> Result<Option<UrlProfile>, EngineError> {
        if let Some(found) = self.0.store.url_profiles.get(&(account_id, name_or_id))? {
            return Ok(Some(found));
        }
        Ok(self.0.store.url_profiles.scan_prefix(&(account_id,))?.into_iter().find(|p| p.id == name_or_id))
    }

    /// Analyses one URL for `caller`, charges it, and records it in the history.
    pub async fn analyse(
        &self,
        caller: &UrlCaller,
        url: &str,
        profile: Option<&str>,
        weights: &BTreeMap<String, f64>,
    ) -> Result<(UrlAnalysis, Charge), EngineError> {
        let normalized = normalize(url).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let profile = self.profile(&caller.account_id, profile)?;
        score::validate(weights, None).map_err(EngineError::Invalid)?;
        let started = Instant::now();
        let hold = self.reserve(caller, 1).await?;
        let analysis = {
            // Held while the network is asked: an account's analyses share its permits.
            let _permit = self
                .account_permits(&caller.account_id)
                .acquire_owned()
                .await
                .map_err(|_| EngineError::Unavailable("URL intelligence is shutting down".into()))?;
            self.inspect(caller, url, normalized, &profile, weights).await
        };
        let result = serde_json::to_value(&analysis).map_err(|e| EngineError::Internal(e.to_string()))?;
        let line = ChargeLine::of(&result, "url_analysis", caller.request_id.clone(), &profile.name, Some(started));
        let charge = self.charge(caller, hold, line).await?;
        // Charged and answered: a history that could not be written is logged, not failed.
        if let Err(error) = self.record(caller, None, &profile.name, &result) {
            tracing::warn!(%error, "a URL check was not kept in the history");
        }
        Ok((analysis, charge))
    }

    /// Runs the pipeline and weighs its findings. Never fails: what could not be learnt is
    /// a signal.
    pub(crate) async fn inspect(
        &self,
        caller: &UrlCaller,
        given: &str,
        url: super::normalize::NormalizedUrl,
        profile: &Profile,
        weights: &BTreeMap<String, f64>,
    ) -> UrlAnalysis {
        let (guard, guard_id) = (self.guard(), "public");
        // Pages are cached per account: a page's URL may carry a secret (a reset link), and
        // a hit would tell one tenant that another checked it.
        let inspection = self.0.inspector.inspect(url, guard, guard_id, &caller.account_id).await;
        analysis_of(given, inspection, profile, weights)
    }

    /// Holds the price of `urls` checks against the balance and the workspace budget.
    pub(crate) async fn reserve(&self, caller: &UrlCaller, urls: usize) -> Result<Option<HoldGuard>, EngineError> {
        let metered = !self.is_operator(&caller.account_id);
        let budget = (!caller.workspace.is_empty())
            .then(|| self.0.directory.workspace_entry(&caller.account_id, &caller.workspace))
            .flatten()
            .and_then(|entry| entry.monthly_budget_usd().map(|usd| (caller.workspace.clone(), usd_to_units(usd))));
        if !metered && budget.is_none() {
            return Ok(None);
        }
        let amount_units = self.price_units().saturating_mul(i64::try_from(urls).unwrap_or(i64::MAX));
        let request = ReserveRequest { account_id: caller.account_id.clone(), metered, amount_units, budget };
        match self.0.ledger.reserve(request).await? {
            Ok(hold) => Ok(Some(hold)),
            Err(refusal) => Err(crate::money::ledger::refusal_error(refusal, &self.0.payments_url)),
        }
    }

    fn price_units(&self) -> i64 {
        usd_to_units(self.0.pricing.url_check_usd)
    }

    /// Settles one check's usage row.
    pub(crate) async fn charge(
        &self,
        caller: &UrlCaller,
        hold: Option<HoldGuard>,
        line: ChargeLine,
    ) -> Result<Charge, EngineError> {
        let units = self.price_units();
        let charge = Charge { actual_cost_units: 0, charged_units: units, baseline_units: units };
        let row = UsageRow {
            id: crate::clock::new_id(),
            account_id: caller.account_id.clone(),
            api_key_id: caller.api_key_id.clone(),
            workspace_slug: (!caller.workspace.is_empty()).then(|| caller.workspace.clone()),
            metadata: serde_json::Map::new(),
            tier: "auto".into(),
            requested_model: "url-intelligence".into(),
            provider: "tokaroo".into(),
            upstream_model: "url-intelligence".into(),
            upstream: "url".into(),
            routing_method: "url".into(),
            routing_reason: line.reason,
            execution_source: "tokaroo".into(),
            billing_mode: "managed".into(),
            request_type: line.request_type.into(),
            input_tokens: 0,
            output_tokens: 0,
            actual_cost_units: charge.actual_cost_units,
            charged_units: charge.charged_units,
            baseline_units: charge.baseline_units,
            latency_ms: line.latency_ms,
            cache: if line.cache_hit { "signal_cache".into() } else { "miss".into() },
            streamed: false,
            created_at_us: 0,
            request_id: line.request_id,
            failed_attempts: Vec::new(),
            unit: None,
            units: None,
        };
        let (_, money) = self.0.ledger.settle(hold, row).await?;
        if !self.is_operator(&caller.account_id) {
            self.0.funding.maybe_auto_pay(&caller.account_id, money);
        }
        Ok(charge)
    }

    /// Keeps a check (its answered `result`) for history and stats, pruning the account's
    /// oldest past its cap. The check's id is the result's, so keeping it twice keeps one.
    pub(crate) fn record(
        &self,
        caller: &UrlCaller,
        batch_id: Option<&str>,
        profile: &str,
        result: &serde_json::Value,
    ) -> Result<(), EngineError> {
        let text = |field: &str| result[field].as_str().unwrap_or_default().to_owned();
        let check = UrlCheck {
            id: text("id"),
            account_id: caller.account_id.clone(),
            workspace: caller.workspace.clone(),
            batch_id: batch_id.map(str::to_owned),
            profile: profile.to_owned(),
            domain: text("domain"),
            decision: text("decision"),
            score: result["score"].as_f64().unwrap_or(0.0),
            signals: result["signals"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["weight"].as_f64().is_some_and(|w| w != 0.0))
                .filter_map(|s| s["id"].as_str().map(str::to_owned))
                .collect(),
            cache_hit: result["cache"]["hit"].as_bool().unwrap_or(false),
            result: result.clone(),
            created_at_ms: crate::clock::now_ms(),
        };
        let checks = &self.0.store.url_checks;
        checks.insert(&(check.account_id.as_str(), check.id.as_str()), &check)?;
        let cap = self.0.settings.history_per_account.max(1);
        let over = {
            let mut count = self
                .0
                .history_counts
                .entry(caller.account_id.clone())
                .or_insert_with(|| checks.count_prefix(&(caller.account_id.as_str(),)).saturating_sub(1));
            *count += 1;
            let over = count.saturating_sub(cap);
            *count -= over;
            over
        };
        if over > 0 {
            for old in checks.scan_prefix_limit(&(caller.account_id.as_str(),), over)? {
                checks.remove(&(old.account_id.as_str(), old.id.as_str()))?;
            }
        }
        Ok(())
    }

    /// The newest checks first, below the `before` cursor (read on a blocking thread).
    pub async fn history(&self, caller: &UrlCaller, filter: HistoryFilter) -> Result<Vec<UrlCheck>, EngineError> {
        let (intel, caller) = (self.clone(), caller.clone());
        tokio::task::spawn_blocking(move || intel.history_now(&caller, &filter))
            .await
            .map_err(|e| EngineError::Internal(format!("reading the history: {e}")))?
    }

    /// Stats over the last `days` (read on a blocking thread).
    pub async fn stats(&self, caller: &UrlCaller, days: u32) -> Result<UrlStats, EngineError> {
        let (intel, caller) = (self.clone(), caller.clone());
        tokio::task::spawn_blocking(move || intel.stats_now(&caller, days))
            .await
            .map_err(|e| EngineError::Internal(format!("reading the stats: {e}")))?
    }

    fn history_now(&self, caller: &UrlCaller, filter: &HistoryFilter) -> Result<Vec<UrlCheck>, EngineError> {
        let before = filter.before.as_deref().map(|id| (caller.account_id.as_str(), id));
        let keep = |c: &UrlCheck| {
            (!caller.bound_to_workspace || c.workspace == caller.workspace)
                && filter.decision.as_ref().is_none_or(|d| *d == c.decision)
                && filter.domain.as_ref().is_none_or(|d| *d == c.domain)
        };
        let page = self.0.store.url_checks.page_rev(
            &(caller.account_id.as_str(),),
            before.as_ref().map(|b| b as &dyn tokaroo_storage::KeyTuple),
            filter.limit.max(1),
            STATS_WINDOW,
            keep,
        )?;
        Ok(page)
    }

    /// Decision breakdown, top signals and domains, average score and cache hit rate over
    /// the last `days`.
    fn stats_now(&self, caller: &UrlCaller, days: u32) -> Result<UrlStats, EngineError> {
        let since = crate::clock::now_ms() - i64::from(days) * 86_400_000;
        let mut decisions: BTreeMap<&'static str, u64> = DECISIONS.iter().map(|d| (*d, 0)).collect();
        let (mut total, mut hits, mut score_sum, mut truncated) = (0u64, 0u64, 0.0f64, false);
        let mut signals: HashMap<String, u64> = HashMap::new();
        let mut domains: HashMap<String, u64> = HashMap::new();
        let mut read = 0usize;
        let mut old_enough = false;
        let page = self.0.store.url_checks.page_rev(
            &(caller.account_id.as_str(),),
            None,
            STATS_WINDOW,
            STATS_WINDOW,
            |c: &UrlCheck| {
                read += 1;
                if c.created_at_ms < since {
                    old_enough = true;
                }
                !old_enough && (!caller.bound_to_workspace || c.workspace == caller.workspace)
            },
        )?;
        if read >= STATS_WINDOW && !old_enough {
            truncated = true;
        }
        for check in page {
            total += 1;
            score_sum += check.score;
            hits += u64::from(check.cache_hit);
            if let Some(slot) = DECISIONS.iter().find(|d| **d == check.decision) {
                *decisions.entry(slot).or_default() += 1;
            }
            for id in check.signals {
                *signals.entry(id).or_default() += 1;
            }
            *domains.entry(check.domain).or_default() += 1;
        }
        let ratio = |n: u64| if total == 0 { 0.0 } else { (n as f64 / total as f64 * 1000.0).round() / 1000.0 };
        Ok(UrlStats {
            days,
            total_checks: total,
            decisions,
            average_score: if total == 0 { 0.0 } else { (score_sum / total as f64 * 10.0).round() / 10.0 },
            cache_hit_rate: ratio(hits),
            top_signals: top(signals),
            top_domains: top(domains),
            truncated,
        })
    }

    /// The built-in profiles, then the account's own by name.
    pub fn profiles(&self, account_id: &str) -> Result<Vec<ProfileEntry>, EngineError> {
        let mut out: Vec<ProfileEntry> = score::builtin_profiles()
            .into_iter()
            .map(|profile| ProfileEntry {
                id: profile.name.clone(),
                profile,
                builtin: true,
                created_at_ms: None,
                updated_at_ms: None,
            })
            .collect();
        for own in self.0.store.url_profiles.scan_prefix(&(account_id,))? {
            out.push(entry_of(&own));
        }
        Ok(out)
    }

    pub async fn create_profile(&self, account_id: &str, input: ProfileInput) -> Result<ProfileEntry, EngineError> {
        let name = input.name.clone().ok_or_else(|| EngineError::Invalid("name is required".into()))?;
        check_profile_name(&name)?;
        if score::builtin_profiles().iter().any(|p| p.name == name) {
            return Err(EngineError::Conflict(format!("{name:?} is a built-in profile; choose another name")));
        }
        let weights = input.weights.clone().unwrap_or_default();
        let thresholds = input.thresholds.unwrap_or(score::DEFAULT_THRESHOLDS);
        score::validate(&weights, Some(&thresholds)).map_err(EngineError::Invalid)?;
        let description = check_description(input.description)?;
        let lock = self.creation_lock(account_id);
        let _held = lock.lock().await;
        let profiles = &self.0.store.url_profiles;
        if profiles.count_prefix(&(account_id,)) >= self.0.settings.profiles_per_account {
            return Err(EngineError::Invalid(format!(
                "this account has {} profiles, the most it may have; change one instead",
                self.0.settings.profiles_per_account
            )));
        }
        let now = crate::clock::now_ms();
        let profile = UrlProfile {
            id: format!("up_{}", uuid::Uuid::now_v7().simple()),
            account_id: account_id.to_owned(),
            name: name.clone(),
            description,
            weights,
            review: thresholds.review,
            warn: thresholds.warn,
            block: thresholds.block,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !profiles.insert_new(&(account_id, name.as_str()), &profile)? {
            return Err(EngineError::Conflict(format!("a profile named {name:?} exists; PATCH it instead")));
        }
        self.0.store.flush().await?;
        Ok(entry_of(&profile))
    }

    pub async fn update_profile(
        &self,
        account_id: &str,
        id: &str,
        input: ProfileInput,
    ) -> Result<ProfileEntry, EngineError> {
        if score::builtin_profiles().iter().any(|p| p.name == id) {
            return Err(EngineError::Forbidden(format!(
                "{id:?} is a built-in profile and cannot be changed; create your own with POST /v1/url/profiles"
            )));
        }
        if input.name.is_some() {
            return Err(EngineError::Invalid("a profile's name cannot be changed; create another".into()));
        }
        let lock = self.creation_lock(account_id);
        let _held = lock.lock().await;
        let mut profile = self.own_profile(account_id, id)?.ok_or(EngineError::NotFound { what: "profile" })?;
        if let Some(weights) = input.weights {
            profile.weights = weights;
        }
        let thresholds =
            input.thresholds.unwrap_or(Thresholds { review: profile.review, warn: profile.warn, block: profile.block });
        score::validate(&profile.weights, Some(&thresholds)).map_err(EngineError::Invalid)?;
        (profile.review, profile.warn, profile.block) = (thresholds.review, thresholds.warn, thresholds.block);
        if input.description.is_some() {
            profile.description = check_description(input.description)?;
        }
        profile.updated_at_ms = crate::clock::now_ms();
        self.0.store.url_profiles.insert(&(account_id, profile.name.as_str()), &profile)?;
        self.0.store.flush().await?;
        Ok(entry_of(&profile))
    }

    pub(crate) fn creation_lock(&self, account_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0.creation_locks.entry(account_id.to_owned()).or_default().clone()
    }

    /// The signal cache's and the pipeline's figures, for the operator.
    pub fn settings(&self) -> &UrlSettings {
        &self.0.settings
    }
}

fn top(counts: HashMap<String, u64>) -> Vec<Counted> {
    let mut all: Vec<Counted> = counts.into_iter().map(|(id, count)| Counted { id, count }).collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
    all.truncate(10);
    all
}

fn check_profile_name(name: &str) -> Result<(), EngineError> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EngineError::Invalid("name must be 1 to 64 characters of a-z, 0-9, - and _".into()))
    }
}

fn check_description(description: Option<String>) -> Result<String, EngineError> {
    let description = description.unwrap_or_default();
    if description.chars().count() > 500 || description.chars().any(char::is_control) {
        return Err(EngineError::Invalid(
            "description must be at most 500 characters, without control characters".into(),
        ));
    }
    Ok(description)
}

pub(crate) fn to_profile(p: &UrlProfile) -> Profile {
    Profile {
        name: p.name.clone(),
        description: p.description.clone(),
        weights: p.weights.clone(),
        thresholds: Thresholds { review: p.review, warn: p.warn, block: p.block },
    }
}

fn entry_of(p: &UrlProfile) -> ProfileEntry {
    ProfileEntry {
        id: p.id.clone(),
        profile: to_profile(p),
        builtin: false,
        created_at_ms: Some(p.created_at_ms),
        updated_at_ms: Some(p.updated_at_ms),
    }
}

/// The spec's result from an inspection, weighed under `profile` and `weights`.
pub(crate) fn analysis_of(
    given: &str,
    inspection: Inspection,
    profile: &Profile,
    weights: &BTreeMap<String, f64>,
) -> UrlAnalysis {
    let (signals, total, decision) = weigh(&inspection.fired, profile, weights);
    let network = &inspection.network;
    let now = crate::clock::now_ms() / 1000;
    let rdap = network.rdap.as_ref().and_then(|r| r.as_ref().ok());
    let walk = network.redirects.as_ref();
    let observations = Observations {
        final_status_code: walk.and_then(|w| w.final_status),
        redirect_hops: walk.map_or(0, |w| w.redirect_hops()),
        tls_valid: network.tls.as_ref().and_then(|t| t.as_ref().ok()).map(|t| t.valid),
        mx_records: network.dns.as_ref().and_then(|d| d.mx_records),
        ns_records: network.dns.as_ref().and_then(|d| d.ns_records),
        domain_age_days: rdap.and_then(|r| r.age_days(now)),
        expires_in_days: rdap.and_then(|r| r.expires_at).map(|at| (at - now).div_euclid(86_400)),
        parked: network.parked.is_some(),
        brand_match: inspection.brand_match.clone(),
    };
    let cache = CacheBlock {
        hit: inspection.cache.hit,
        status: if inspection.cache.hit { "signal_cache" } else { "miss" },
        age_ms: inspection.cache.hit.then_some(inspection.cache.age_ms).flatten(),
    };
    UrlAnalysis {
        id: new_check_id(),
        url: given.to_owned(),
        normalized_url: inspection.url.url.to_string(),
        domain: inspection.url.domain().to_owned(),
        final_url: walk.and_then(|w| w.final_url.clone()),
        score: total,
        decision,
        signals,
        observations,
        cache,
    }
}
