//! Serving runtime requests: route, reserve the worst case with the ledger, execute, price,
//! and settle one usage row per request.

use serde_json::{Map, Value};
use tokaroo_storage::records::UsageRow;

use crate::{
    chat::{ChatRequest, ChatResponse, Mode, ModelChoice, Usage},
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::{usd_to_units, Charge},
    money::ledger::{refusal_error, HoldGuard, LedgerError, ReserveRequest},
    routing::gateway::{priced_routes, ChatFailure, ChatOutcome, RouteRecord, StreamOutcome},
    routing::router::{Route, Scope},
    routing::upstreams::BillingMode,
    runtime::Runtime,
};

/// A non-streamed chat answer and what it was charged.
pub struct ServedChat {
    pub response: ChatResponse,
    /// The answer's usage (for a cache hit, that of the answer it reuses).
    pub usage: Usage,
    /// What served it; `None` for a cache hit.
    pub route: Option<RouteRecord>,
    pub charge: Charge,
    /// Answered from the response cache.
    pub cache_hit: bool,
}

/// An open stream and its reservation, until a [`crate::runtime::stream::ChatStream`] takes
/// charge of settling them.
pub(crate) struct OpenStream {
    pub outcome: StreamOutcome,
    pub hold: Holds,
}

/// What a request holds until it is settled: the ledger's hold on the balance (and
/// workspace budget), and the hold on the budget of the mission it names. Dropped unsettled
/// (the request failed), both are released.
#[derive(Default)]
pub(crate) struct Holds {
    pub ledger: Option<HoldGuard>,
    pub mission: Option<crate::harness::MissionHold>,
}

/// What is known about a request before it is served, for its usage row.
#[derive(Clone)]
pub struct RequestInfo {
    pub requested_model: String,
    /// The mode the request is priced at (see [`Mode`]).
    pub tier: Mode,
    pub request_type: &'static str,
    pub metadata: Map<String, Value>,
    pub request_id: Option<String>,
    /// The client asked not to be answered from (or stored in) the response cache.
    pub bypass_cache: bool,
    /// The mission the request is charged to as well (`x-tokaroo-mission`, or
    /// `metadata.mission_id`): its Tokaroo UUID or its `mission_id`.
    pub mission: Option<String>,
    /// The mission was named by the header: one that does not exist is a 404 (a metadata
    /// field naming none is only metadata).
    pub mission_explicit: bool,
}

impl RequestInfo {
    pub fn chat(req: &ChatRequest, requested_model: &str) -> Self {
        let tier = match req.model {
            ModelChoice::Mode(mode) => mode,
            ModelChoice::Native(_) => Mode::Auto,
        };
        Self {
            requested_model: requested_model.to_owned(),
            tier,
            request_type: "chat",
            metadata: Map::new(),
            request_id: None,
            bypass_cache: false,
            mission: None,
            mission_explicit: false,
        }
    }
}

fn scope(key: &KeyEntry) -> Scope {
    Scope { account_id: key.account_id.clone(), workspace_slug: key.workspace_slug.clone() }
}

impl From<LedgerError> for EngineError {
    fn from(error: LedgerError) -> Self {
        match error {
            LedgerError::Unavailable => EngineError::Unavailable(error.to_string()),
            LedgerError::Storage(error) => EngineError::Internal(error.to_string()),
            LedgerError::SettleTask(error) => EngineError::Internal(format!("the settle task failed: {error}")),
            LedgerError::Commit(error) => EngineError::Internal(format!("the ledger could not commit: {error}")),
        }
    }
}

/// How much more than our o200k count a provider with another tokenizer may count a prompt.
const OTHER_TOKENIZER_HEADROOM: f64 = 1.5;

/// What served a request, for its usage row.
struct ServedBy {
    provider: String,
    upstream_model: String,
    upstream: String,
    routing_method: String,
    routing_reason: String,
    execution_source: String,
    billing_mode: String,
    latency_ms: Option<u64>,
    cache: &'static str,
    failed_attempts: Vec<String>,
}

/// The one usage row of a request of `key`.
fn usage_row(
    key: &KeyEntry,
    info: &RequestInfo,
    usage: Usage,
    charge: Charge,
    streamed: bool,
    by: ServedBy,
) -> UsageRow {
    UsageRow {
        id: crate::clock::new_id(),
        account_id: key.account_id.clone(),
        api_key_id: Some(key.id.clone()),
        workspace_slug: key.workspace_slug.clone(),
        metadata: info.metadata.clone(),
        tier: info.tier.as_str().to_owned(),
        requested_model: info.requested_model.clone(),
        provider: by.provider,
        upstream_model: by.upstream_model,
        upstream: by.upstream,
        routing_method: by.routing_method,
        routing_reason: by.routing_reason,
        execution_source: by.execution_source,
        billing_mode: by.billing_mode,
        request_type: info.request_type.to_owned(),
        input_tokens: u64::from(usage.prompt_tokens),
        output_tokens: u64::from(usage.completion_tokens),
        actual_cost_units: charge.actual_cost_units,
        charged_units: charge.charged_units,
        baseline_units: charge.baseline_units,
        latency_ms: by.latency_ms,
        cache: by.cache.into(),
        streamed,
        // The ledger stamps the row when it logs it.
        created_at_us: 0,
        request_id: info.request_id.clone(),
        failed_attempts: by.failed_attempts,
        unit: None,
        units: None,
    }
}

impl Runtime {
    /// The most a request on these routes can be charged (escalation included for `auto`).
    fn worst_case_units(&self, req: &ChatRequest, info: &RequestInfo, routes: &[Route], scope: &Scope) -> i64 {
        let baseline = self.0.router.baseline_model(req);
        // A request is served by one route: the first of each of the first few upstreams, as
        // the gateway skips an upstream that already failed.
        // Images cost some models many times the provider-neutral estimate.
        let image_tokens = if req.needs_vision() { crate::chat::request_image_tokens(req) } else { 0 };
        // Our count is OpenAI's o200k; other providers' tokenizers count some text (code,
        // CJK, crafted Unicode) higher, and their report is what is charged.
        let prompt_on = |route: &Route| {
            let headroom = match route.upstream.kind {
                crate::routing::providers::ProviderKind::Anthropic
                | crate::routing::providers::ProviderKind::Google
                | crate::routing::providers::ProviderKind::Groq => OTHER_TOKENIZER_HEADROOM,
                _ => 1.0,
            };
            let images = image_tokens as f64 * (route.model.image_token_multiplier.unwrap_or(1.0) - 1.0).max(0.0);
            let prompt = f64::from(req.prompt_tokens()) * headroom + images;
            u32::try_from(prompt as u64).unwrap_or(u32::MAX)
        };
        // `routes` are `priced_routes`: exactly the ones the gateway may try.
        let worst_on = |routes: &[Route]| {
            let (worst, owed) = routes
                .iter()
                .map(|route| {
                    let record = crate::routing::gateway::record(route, req, &[], &baseline);
                    let prompt = prompt_on(route);
                    let whole = Usage {
                        prompt_tokens: prompt,
                        completion_tokens: req.output_bound(route.model.max_output_tokens),
                    };
                    // A managed upstream that accepts and then times out is owed its prompt
                    // (`ChatFailure::owed`), on top of the route that finally serves.
                    let owed = if record.billing_mode == BillingMode::Managed && !req.stream {
                        let prompt_only = Usage { prompt_tokens: prompt, completion_tokens: 0 };
                        self.0.config.pricing.charge(info.tier, &record, prompt_only).charged_units
                    } else {
                        0
                    };
                    (self.0.config.pricing.charge(info.tier, &record, whole).charged_units, owed)
                })
                .fold((0, 0), |(worst, owed), (whole, prompt)| (worst.max(whole), owed + prompt));
            worst + owed
        };
        let mut worst = worst_on(routes);
        if req.model == ModelChoice::Mode(Mode::Auto) && !req.stream {
            let mut max_req = req.clone();
            max_req.model = ModelChoice::Mode(Mode::Max);
            if let Ok(max_routes) = self.0.router.plan(&max_req, scope) {
                worst += worst_on(&priced_routes(max_routes));
            }
        }
        worst
    }

    /// Reserves the request's worst case (`amount_units`, computed only when a hold is needed)
    /// for a request of this key: balance and workspace budget, and the budget of the mission
    /// the request names.
    pub(crate) async fn reserve(
        &self,
        key: &KeyEntry,
        info: &RequestInfo,
        amount_units: impl FnOnce() -> i64,
    ) -> Result<Holds, EngineError> {
        let (metered, budget) = self.ledger_terms(&key.account_id, key.workspace_slug.as_deref());
        if !metered && budget.is_none() && info.mission.is_none() {
            return Ok(Holds::default());
        }
        let amount = amount_units();
        let mission = match &info.mission {
            Some(reference) => {
                let workspace = key.workspace_slug.as_deref();
                self.0.missions.hold(&key.account_id, workspace, reference, info.mission_explicit, amount).await?
            }
            None => None,
        };
        let ledger = self.reserve_ledger(&key.account_id, metered, budget, amount).await?;
        Ok(Holds { ledger, mission })
    }

    /// Whether `account_id` is metered (the operator's is not), and the monthly budget of
    /// `workspace` when it has one.
    fn ledger_terms(&self, account_id: &str, workspace: Option<&str>) -> (bool, Option<(String, i64)>) {
        let metered = self.0.directory.operator_account_id().as_deref() != Some(account_id);
        let budget = workspace.and_then(|slug| {
            let entry = self.0.directory.workspace_entry(account_id, slug)?;
            entry.monthly_budget_usd().map(|usd| (slug.to_owned(), usd_to_units(usd)))
        });
        (metered, budget)
    }

    /// The ledger's hold of `amount` on those terms; `None` when there is nothing to hold
    /// against (unmetered, no budget).
    async fn reserve_ledger(
        &self,
        account_id: &str,
        metered: bool,
        budget: Option<(String, i64)>,
        amount: i64,
    ) -> Result<Option<HoldGuard>, EngineError> {
        if !metered && budget.is_none() {
            return Ok(None);
        }
        let req = ReserveRequest { account_id: account_id.to_owned(), metered, amount_units: amount, budget };
        match self.0.ledger.reserve(req).await? {
            Ok(hold) => Ok(Some(hold)),
            Err(refusal) => Err(refusal_error(refusal, &self.0.config.funding.payments_url())),
        }
    }

    /// A hold of `amount` for work of `account_id` in `workspace` that no request task
    /// carries (a video job after a restart).
    pub(crate) async fn reserve_for(
        &self,
        account_id: &str,
        workspace: Option<&str>,
        amount: i64,
    ) -> Result<Option<HoldGuard>, EngineError> {
        let (metered, budget) = self.ledger_terms(account_id, workspace);
        self.reserve_ledger(account_id, metered, budget, amount).await
    }

    /// Run in a task of its own (`Engine::serve_chat`): a client leaving must not cancel it.
    pub(crate) async fn chat(
        &self,
        key: &KeyEntry,
        req: &ChatRequest,
        info: RequestInfo,
    ) -> Result<ServedChat, EngineError> {
        let mut slot = self.0.cache.slot(key, req, info.bypass_cache);
        if let Some(slot) = slot.as_mut() {
            if let Some(hit) = self.0.cache.lookup(slot).await {
                return self.serve_hit(key, &info, hit, false).await;
            }
        }
        let scope = scope(key);
        let routes = priced_routes(self.0.router.plan(req, &scope)?);
        let hold = self.reserve(key, &info, || self.worst_case_units(req, &info, &routes, &scope)).await?;
        // On failure the hold is dropped, which releases it, unless an upstream accepted the
        // request before failing: then its prompt is settled (it was worked on and billed).
        let outcome = match self.0.router.chat(req, &scope, routes).await {
            Ok(outcome) => outcome,
            Err(ChatFailure { error, owed: Some(route) }) => {
                let prompt_only = Usage { prompt_tokens: req.prompt_tokens(), completion_tokens: 0 };
                self.settle(key, &info, &route, prompt_only, None, false, hold).await?;
                return Err(error);
            }
            Err(failure) => return Err(failure.error),
        };
        let charge =
            self.settle(key, &info, &outcome.route, outcome.usage, Some(outcome.latency_ms), false, hold).await?;
        if let Some(slot) = &slot {
            let r = &outcome.response;
            self.0.cache.store(
                slot,
                &crate::cache::StoredAnswer {
                    content: r.content.as_deref().unwrap_or_default(),
                    had_tool_calls: !r.tool_calls.is_empty(),
                    finish_reason: r.finish_reason,
                    usage: outcome.usage,
                    charge,
                    provider: outcome.route.provider,
                    upstream_model: &outcome.route.model,
                },
            );
        }
        let ChatOutcome { response, usage, route, .. } = outcome;
        Ok(ServedChat { response, usage, route: Some(route), charge, cache_hit: false })
    }

    /// Answers from the cache: a row whose source is the cache, charged the policy's share of
    /// what the answer cost when it was made, held first like any charge (a hit cannot
    /// overdraw either).
    pub(crate) async fn serve_hit(
        &self,
        key: &KeyEntry,
        info: &RequestInfo,
        hit: crate::cache::CacheHit,
        streamed: bool,
    ) -> Result<ServedChat, EngineError> {
        let charge = self.0.config.pricing.cache_hit_charge(hit.saved);
        let hold = self.reserve(key, info, || charge.charged_units).await?;
        let served_by = ServedBy {
            provider: hit.provider.clone(),
            upstream_model: hit.upstream_model.clone(),
            upstream: "cache".into(),
            routing_method: info.tier.as_str().to_owned(),
            routing_reason: match hit.kind {
                crate::cache::HitKind::Exact => "exact cache hit".into(),
                crate::cache::HitKind::Semantic { similarity } => {
                    format!("semantic cache hit (similarity {similarity:.3}, guards agree)")
                }
            },
            execution_source: "cache".into(),
            billing_mode: "cache".into(),
            latency_ms: Some(0),
            cache: "hit",
            failed_attempts: Vec::new(),
        };
        let row = usage_row(key, info, hit.usage, charge, streamed, served_by);
        tracing::info!(charged_usd = charge.charged_usd(), "request served from the cache");
        self.0.ledger.settle(hold.ledger, row).await?;
        if let Some(mission) = hold.mission {
            mission.settle(charge.charged_units).await;
        }
        Ok(ServedChat { response: hit.response, usage: hit.usage, route: None, charge, cache_hit: true })
    }

    /// Opens a stream on the first route that answers.
    pub(crate) async fn chat_stream(
        &self,
        key: &KeyEntry,
        req: &ChatRequest,
        info: &RequestInfo,
    ) -> Result<OpenStream, EngineError> {
        let scope = scope(key);
        let routes = priced_routes(self.0.router.plan(req, &scope)?);
        let hold = self.reserve(key, info, || self.worst_case_units(req, info, &routes, &scope)).await?;
        let outcome = self.0.router.chat_stream(req, routes).await?;
        Ok(OpenStream { outcome, hold })
    }

    /// Prices a served request and has the ledger record it. When this returns, the usage row
    /// survives a crash, so the caller may now tell the client.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn settle(
        &self,
        key: &KeyEntry,
        info: &RequestInfo,
        route: &RouteRecord,
        usage: Usage,
        latency_ms: Option<u64>,
        streamed: bool,
        hold: Holds,
    ) -> Result<Charge, EngineError> {
        let charge = self.0.config.pricing.charge(info.tier, route, usage);
        let served_by = ServedBy {
            provider: route.provider.to_owned(),
            upstream_model: route.model.clone(),
            upstream: route.upstream.clone(),
            routing_method: if route.escalated { "escalated".into() } else { info.tier.as_str().to_owned() },
            routing_reason: route.reason.clone(),
            execution_source: route.execution_source.to_owned(),
            billing_mode: route.billing_mode.as_str().to_owned(),
            latency_ms,
            cache: "miss",
            failed_attempts: route.failed_attempts.clone(),
        };
        let row = usage_row(key, info, usage, charge, streamed, served_by);
        tracing::info!(
            provider = %row.provider, model = %row.upstream_model, source = %row.execution_source,
            reason = %row.routing_reason, charged_usd = charge.charged_usd(), "request served"
        );
        self.settle_row(key, hold, row).await?;
        Ok(charge)
    }

    /// Settles a row with a ledger hold no request task carries (a video job's), or none
    /// (work finished after its request was answered), then auto pay when the balance fell
    /// below its threshold.
    pub(crate) async fn settle_held(&self, hold: Option<HoldGuard>, row: UsageRow) -> Result<(), EngineError> {
        let account_id = row.account_id.clone();
        let (_, money) = self.0.ledger.settle(hold, row).await?;
        if self.0.directory.operator_account_id().as_deref() != Some(account_id.as_str()) {
            self.0.funding.maybe_auto_pay(&account_id, money);
        }
        Ok(())
    }

    /// Settles a request's one row with its holds: the ledger's, then the mission's, then
    /// auto pay when the balance fell below its threshold.
    pub(crate) async fn settle_row(&self, key: &KeyEntry, hold: Holds, row: UsageRow) -> Result<(), EngineError> {
        let charged_units = row.charged_units;
        let (_, money) = self.0.ledger.settle(hold.ledger, row).await?;
        if let Some(mission) = hold.mission {
            // In a task of its own: a caller dropped from here on (a client leaving a
            // stream at its end) must not leave the charge out of the mission's spend.
            let recorded = super::tasks::spawn_request_task(self, mission.settle(charged_units));
            let _ = recorded.await;
        }
        if self.0.directory.operator_account_id().as_deref() != Some(key.account_id.as_str()) {
            self.0.funding.maybe_auto_pay(&key.account_id, money);
        }
        Ok(())
    }
}

impl Runtime {
    /// Run in a task of its own (`Engine::serve_embeddings`), like chat.
    pub(crate) async fn embed(
        &self,
        key: &KeyEntry,
        req: &crate::runtime::embeddings::EmbeddingRequest,
        request_id: Option<String>,
    ) -> Result<(crate::runtime::embeddings::EmbeddingOutcome, Charge), EngineError> {
        let tokens: u64 = req.inputs.iter().map(|t| u64::from(crate::chat::tokenizer::count(t))).sum();
        let mut info = RequestInfo {
            requested_model: String::new(),
            tier: Mode::Auto,
            request_type: "embeddings",
            metadata: Map::new(),
            request_id,
            bypass_cache: true,
            mission: None,
            mission_explicit: false,
        };
        let hold = self.reserve(key, &info, || self.embedding_worst_case_units(req, tokens)).await?;
        let outcome = self.0.router.embed(req, &scope(key)).await?;
        info.requested_model = outcome.model.clone();
        let usage = Usage { prompt_tokens: outcome.prompt_tokens, completion_tokens: 0 };
        let charge = self.settle(key, &info, &outcome.route, usage, Some(outcome.latency_ms), false, hold).await?;
        Ok((outcome, charge))
    }

    /// The dearest embedding model's price for the input, with headroom for tokenizer
    /// differences between providers.
    fn embedding_worst_case_units(&self, req: &crate::runtime::embeddings::EmbeddingRequest, tokens: u64) -> i64 {
        let price_per_1m = self
            .0
            .router
            .catalog
            .models
            .iter()
            .filter(|m| m.has("embeddings") && req.model.as_ref().is_none_or(|name| *name == m.id))
            .map(|m| m.input_per_1m)
            .fold(0.0, f64::max);
        let margin = 1.0 + self.0.config.pricing.margin(Mode::Auto);
        usd_to_units(tokens as f64 * 1.5 / 1e6 * price_per_1m * margin)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokaroo_storage::ledger::UsageFilter;

    use super::*;
    use crate::money::billing::units_to_usd;
    use crate::{
        chat::{Message, Role},
        directory::{NewWorkspace, WorkspacePatch},
        engine::Engine,
        money::funding::tests::engine,
        NewKey,
    };

    /// A key of a fresh tenant account (no balance), bound to a `team` workspace.
    async fn tenant_key(engine: &Engine) -> Arc<KeyEntry> {
        let directory = engine.directory();
        let (account, _) = directory.create_account("acme", false).await.unwrap();
        let team =
            NewWorkspace { slug: "team".into(), name: "Team".into(), metadata: Map::new(), monthly_budget_usd: None };
        directory.create_workspace(&account.id, team).await.unwrap();
        let new = NewKey { workspace_slug: Some("team".into()), ..NewKey::default() };
        let (_, secret) = directory.create_key(&account.id, new).await.unwrap();
        directory.authenticate_key(&secret).unwrap()
    }

    /// A short chat naming a priced model (`auto` may pick a free one), served by the
    /// simulator as no provider is configured.
    async fn chat(engine: &Engine, key: &Arc<KeyEntry>) -> Result<ServedChat, EngineError> {
        let mut req = ChatRequest::new(ModelChoice::Native("gpt-4o".into()), vec![Message::text(Role::User, "hi")]);
        req.max_tokens = Some(50);
        let info = RequestInfo::chat(&req, "gpt-4o");
        engine.runtime().serve_chat(key.clone(), req, info).await
    }

    async fn usage_rows(engine: &Engine, account_id: &str) -> Vec<UsageRow> {
        engine.funding().usage_page(account_id, &UsageFilter::default(), None, 10).await.unwrap().0
    }

    #[tokio::test]
    async fn an_account_with_no_balance_is_refused_with_billing_required() {
        let (engine, _dir) = engine().await;
        let key = tenant_key(&engine).await;
        match chat(&engine, &key).await {
            Err(error @ EngineError::BillingRequired { .. }) => {
                let message = error.to_string();
                let EngineError::BillingRequired { balance_usd, required_usd, payment_url } = error else {
                    unreachable!()
                };
                assert_eq!(balance_usd, 0.0);
                assert!(required_usd > 0.0, "the worst case is reserved: {required_usd}");
                assert_eq!(payment_url, "http://127.0.0.1:8080/v1/billing/activation");
                assert_eq!(
                    message,
                    format!("Insufficient balance: this request needs up to ${required_usd:.6} and the balance is $0.000000; add credits")
                );
            }
            other => panic!("{:?}", other.map(|s| s.charge)),
        }
        assert!(usage_rows(&engine, &key.account_id).await.is_empty(), "a refused request settles nothing");
        let money = engine.funding().money(&key.account_id).await.unwrap();
        assert_eq!((money.charged_units, money.held_units), (0, 0));
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_funded_request_settles_one_usage_row_and_moves_the_balance_by_its_charge() {
        let (engine, _dir) = engine().await;
        let key = tenant_key(&engine).await;
        engine.funding().add_credit(&key.account_id, 5.0, "operator", None, None).await.unwrap();
        let served = chat(&engine, &key).await.unwrap();
        assert_eq!(served.route.as_ref().unwrap().billing_mode, BillingMode::Simulator);
        assert!(served.charge.charged_units > 0, "simulated traffic is priced like managed traffic");

        let rows = usage_rows(&engine, &key.account_id).await;
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.charged_units, served.charge.charged_units);
        assert_eq!(row.api_key_id.as_deref(), Some(key.id.as_str()));
        assert_eq!(row.workspace_slug.as_deref(), Some("team"));
        assert_eq!(
            (row.tier.as_str(), row.requested_model.as_str(), row.billing_mode.as_str()),
            ("auto", "gpt-4o", "simulator")
        );
        assert_eq!(row.upstream_model, "gpt-4o");
        assert_eq!(
            (row.input_tokens, row.output_tokens),
            (u64::from(served.usage.prompt_tokens), u64::from(served.usage.completion_tokens))
        );

        let money = engine.funding().money(&key.account_id).await.unwrap();
        assert_eq!(money.balance_units(), usd_to_units(5.0) - served.charge.charged_units);
        assert_eq!(money.held_units, 0, "the hold is released once settled");
        let spent = engine.funding().workspace_month_spend_usd(&key.account_id, "team").await.unwrap();
        assert_eq!(usd_to_units(spent), served.charge.charged_units, "the workspace's month counts the charge");
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_workspace_over_its_monthly_budget_is_refused_with_budget_exceeded() {
        let (engine, _dir) = engine().await;
        let key = tenant_key(&engine).await;
        engine.funding().add_credit(&key.account_id, 5.0, "operator", None, None).await.unwrap();
        let first = chat(&engine, &key).await.unwrap();
        let spent = units_to_usd(first.charge.charged_units);
        assert!(spent > 0.0);
        // The budget is what was already spent: nothing more fits this month.
        let patch = WorkspacePatch { monthly_budget_usd: Some(Some(spent)), ..WorkspacePatch::default() };
        engine.directory().update_workspace(&key.account_id, "team", patch).await.unwrap();
        match chat(&engine, &key).await {
            Err(error @ EngineError::BudgetExceeded { .. }) => {
                assert_eq!(
                    error.to_string(),
                    format!("Workspace monthly budget exceeded: ${spent:.6} of ${spent:.2} spent this month")
                );
                let EngineError::BudgetExceeded { budget_usd, spent_usd } = error else { unreachable!() };
                assert_eq!((budget_usd, spent_usd), (spent, spent));
            }
            other => panic!("{:?}", other.map(|s| s.charge)),
        }
        assert_eq!(usage_rows(&engine, &key.account_id).await.len(), 1, "the refused request settled nothing");
        let money = engine.funding().money(&key.account_id).await.unwrap();
        assert_eq!(money.held_units, 0);
        assert_eq!(
            money.balance_units(),
            usd_to_units(5.0) - first.charge.charged_units,
            "the balance was not the reason"
        );
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn the_operators_own_account_is_served_without_a_balance() {
        let (engine, _dir) = engine().await;
        let operator = engine.directory().operator_account_id().unwrap();
        let (_, secret) = engine.directory().create_key(&operator, NewKey::default()).await.unwrap();
        let key = engine.directory().authenticate_key(&secret).unwrap();
        let served = chat(&engine, &key).await.unwrap();
        let rows = usage_rows(&engine, &operator).await;
        assert_eq!(rows.len(), 1, "its usage is still recorded");
        assert_eq!(rows[0].charged_units, served.charge.charged_units);
        engine.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_model_is_refused_before_anything_is_reserved() {
        let (engine, _dir) = engine().await;
        let key = tenant_key(&engine).await;
        let req = ChatRequest::new(ModelChoice::Native("no-such-model".into()), vec![Message::text(Role::User, "hi")]);
        let info = RequestInfo::chat(&req, "no-such-model");
        match engine.runtime().serve_chat(key.clone(), req, info).await {
            Err(EngineError::Invalid(m)) => assert!(m.starts_with("Unknown model \"no-such-model\""), "{m}"),
            other => panic!("{:?}", other.map(|s| s.charge)),
        }
        engine.shutdown().await.unwrap();
    }
}
