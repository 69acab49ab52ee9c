//! Serving runtime requests: route, reserve the worst case with the ledger, execute, price,
//! and settle one usage row per request.

use serde_json::{Map, Value};
use tokaroo_storage::records::UsageRow;

use crate::{
    chat::{ChatRequest, Mode, ModelChoice, Usage},
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::{units_to_usd, usd_to_units, Charge},
    money::ledger::{HoldGuard, LedgerError, Refusal, ReserveRequest},
    routing::gateway::{ChatFailure, ChatOutcome, RouteRecord, StreamOutcome},
    routing::router::{Route, Scope},
    routing::upstreams::BillingMode,
    runtime::Runtime,
};

/// A non-streamed chat answer and what it was charged.
pub struct ServedChat {
    pub outcome: ChatOutcome,
    pub charge: Charge,
}

/// An open stream and its reservation, until a [`crate::runtime::stream::ChatStream`] takes
/// charge of settling them.
pub(crate) struct OpenStream {
    pub outcome: StreamOutcome,
    pub hold: Option<HoldGuard>,
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
        }
    }
}

/// The routes a request may take, and the hold prices: the first usable route of each of
/// the first few upstreams, as the gateway tries them. Trying only these keeps a breaker that
/// opens after the hold from sending the request down a route the hold never priced.
fn priced_routes(routes: Vec<Route>) -> Vec<Route> {
    let mut upstreams_seen: Vec<String> = Vec::new();
    routes
        .into_iter()
        .filter(|r| r.upstream.usable_for(&r.model.id))
        .filter(|r| {
            let first = !upstreams_seen.contains(&r.upstream.name);
            if first {
                upstreams_seen.push(r.upstream.name.clone());
            }
            first
        })
        .take(crate::routing::gateway::MAX_ATTEMPTS)
        .collect()
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
        }
    }
}

/// How much more than our o200k count a provider with another tokenizer may count a prompt.
const OTHER_TOKENIZER_HEADROOM: f64 = 1.5;

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
    /// for a request of this key: balance and workspace budget.
    async fn reserve(
        &self,
        key: &KeyEntry,
        amount_units: impl FnOnce() -> i64,
    ) -> Result<Option<HoldGuard>, EngineError> {
        let metered = self.0.shared.operator_account_id().as_deref() != Some(key.account_id.as_str());
        let budget = key.workspace_slug.as_ref().and_then(|slug| {
            let entry = self.0.shared.workspace_entry(&key.account_id, slug)?;
            entry.monthly_budget_units().map(|units| (slug.clone(), units))
        });
        if !metered && budget.is_none() {
            return Ok(None);
        }
        let req = ReserveRequest { account_id: key.account_id.clone(), metered, amount_units: amount_units(), budget };
        match self.0.ledger.reserve(req).await? {
            Ok(hold) => Ok(Some(hold)),
            Err(Refusal::BillingRequired { balance_units, required_units }) => Err(EngineError::BillingRequired {
                balance_usd: units_to_usd(balance_units),
                required_usd: units_to_usd(required_units),
                payment_url: self.0.config.funding.payments_url(),
            }),
            Err(Refusal::BudgetExceeded { budget_units, spent_units }) => Err(EngineError::BudgetExceeded {
                budget_usd: units_to_usd(budget_units),
                spent_usd: units_to_usd(spent_units),
            }),
        }
    }

    /// Run in a task of its own (`Engine::serve_chat`): a client leaving must not cancel it.
    pub(crate) async fn chat(
        &self,
        key: &KeyEntry,
        req: &ChatRequest,
        info: RequestInfo,
    ) -> Result<ServedChat, EngineError> {
        let scope = scope(key);
        let routes = priced_routes(self.0.router.plan(req, &scope)?);
        let hold = self.reserve(key, || self.worst_case_units(req, &info, &routes, &scope)).await?;
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
        Ok(ServedChat { outcome, charge })
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
        let hold = self.reserve(key, || self.worst_case_units(req, info, &routes, &scope)).await?;
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
        hold: Option<HoldGuard>,
    ) -> Result<Charge, EngineError> {
        let charge = self.0.config.pricing.charge(info.tier, route, usage);
        let row = UsageRow {
            id: crate::clock::new_id(),
            account_id: key.account_id.clone(),
            api_key_id: Some(key.id.clone()),
            workspace_slug: key.workspace_slug.clone(),
            metadata: info.metadata.clone(),
            tier: info.tier.as_str().to_owned(),
            requested_model: info.requested_model.clone(),
            provider: route.provider.to_owned(),
            upstream_model: route.model.clone(),
            upstream: route.upstream.clone(),
            routing_method: if route.escalated { "escalated".into() } else { info.tier.as_str().to_owned() },
            routing_reason: route.reason.clone(),
            execution_source: route.execution_source.to_owned(),
            billing_mode: route.billing_mode.as_str().to_owned(),
            request_type: info.request_type.to_owned(),
            input_tokens: u64::from(usage.prompt_tokens),
            output_tokens: u64::from(usage.completion_tokens),
            actual_cost_units: charge.actual_cost_units,
            charged_units: charge.charged_units,
            baseline_units: charge.baseline_units,
            latency_ms,
            cache: "miss".into(),
            streamed,
            // The ledger stamps the row when it logs it.
            created_at_us: 0,
            request_id: info.request_id.clone(),
            failed_attempts: route.failed_attempts.clone(),
        };
        tracing::info!(
            provider = %row.provider, model = %row.upstream_model, source = %row.execution_source,
            reason = %row.routing_reason, charged_usd = charge.charged_usd(), "request served"
        );
        let (_, money) = self.0.ledger.settle(hold, row).await?;
        if self.0.shared.operator_account_id().as_deref() != Some(key.account_id.as_str()) {
            self.0.funding.maybe_auto_pay(&key.account_id, money);
        }
        Ok(charge)
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
        let hold = self.reserve(key, || self.embedding_worst_case_units(req, tokens)).await?;
        let outcome = self.0.router.embed(req, &scope(key)).await?;
        let info = RequestInfo {
            requested_model: outcome.model.clone(),
            tier: Mode::Auto,
            request_type: "embeddings",
            metadata: Map::new(),
            request_id,
        };
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
