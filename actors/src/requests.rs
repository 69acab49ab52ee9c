//! Serving runtime requests: route, execute, price, and hand one usage row per request to
//! the ledger.

use serde_json::{Map, Value};
use tokaroo_storage::records::UsageRow;

use crate::{
    billing::Charge,
    chat::{ChatRequest, ModelChoice, Usage},
    gateway::{ChatOutcome, RouteRecord, StreamOutcome},
    router::Scope,
    Engine, EngineError, KeyEntry,
};

/// A non-streamed chat answer and what it was charged.
pub struct ServedChat {
    pub outcome: ChatOutcome,
    pub charge: Charge,
}

/// What is known about a request before it is served, for its usage row.
#[derive(Clone)]
pub struct RequestInfo {
    pub requested_model: String,
    pub tier: &'static str,
    pub request_type: &'static str,
    pub metadata: Map<String, Value>,
}

impl RequestInfo {
    pub fn chat(req: &ChatRequest, requested_model: &str) -> Self {
        let tier = match req.model {
            ModelChoice::Mode(mode) => mode.as_str(),
            ModelChoice::Native(_) => "auto",
        };
        Self { requested_model: requested_model.to_owned(), tier, request_type: "chat", metadata: Map::new() }
    }
}

fn scope(key: &KeyEntry) -> Scope {
    Scope { account_id: key.account_id.clone(), workspace_slug: key.workspace_slug.clone() }
}

impl Engine {
    pub async fn chat(&self, key: &KeyEntry, req: &ChatRequest, info: RequestInfo) -> Result<ServedChat, EngineError> {
        let outcome = self.router.chat(req, &scope(key)).await?;
        let charge = self.settle(key, &info, &outcome.route, outcome.usage, Some(outcome.latency_ms), false);
        Ok(ServedChat { outcome, charge })
    }

    /// Opens a stream; the caller settles it with [`Engine::settle`] when it ends.
    pub async fn chat_stream(&self, key: &KeyEntry, req: &ChatRequest) -> Result<StreamOutcome, EngineError> {
        self.router.chat_stream(req, &scope(key)).await
    }

    /// Prices a served request and records its usage row. Returns the charge.
    pub fn settle(
        &self,
        key: &KeyEntry,
        info: &RequestInfo,
        route: &RouteRecord,
        usage: Usage,
        latency_ms: Option<u64>,
        streamed: bool,
    ) -> Charge {
        let charge = self.config.pricing.charge(info.tier, route, usage);
        let row = UsageRow {
            id: crate::new_id(),
            account_id: key.account_id.clone(),
            api_key_id: Some(key.id.clone()),
            workspace_slug: key.workspace_slug.clone(),
            metadata: info.metadata.clone(),
            tier: info.tier.to_owned(),
            requested_model: info.requested_model.clone(),
            provider: route.provider.to_owned(),
            upstream_model: route.model.clone(),
            upstream: route.upstream.clone(),
            routing_method: if route.escalated { "escalated".into() } else { info.tier.to_owned() },
            routing_reason: route.reason.clone(),
            execution_source: route.execution_source.to_owned(),
            billing_mode: route.billing_mode.to_owned(),
            request_type: info.request_type.to_owned(),
            input_tokens: u64::from(usage.prompt_tokens),
            output_tokens: u64::from(usage.completion_tokens),
            actual_cost_usd: charge.actual_cost_usd,
            charged_usd: charge.charged_usd,
            baseline_usd: charge.baseline_usd,
            latency_ms,
            cache: "miss".into(),
            streamed,
            created_at_ms: crate::now_ms(),
        };
        tracing::info!(
            provider = %row.provider, model = %row.upstream_model, source = %row.execution_source,
            reason = %row.routing_reason, charged_usd = row.charged_usd, "request served"
        );
        crate::ledger::record(&self.shared.store, row);
        charge
    }

    /// Usage rows of an account, newest first (admin and tests; paging comes with the usage routes).
    pub fn recent_usage(&self, account_id: &str, limit: usize) -> Result<Vec<UsageRow>, EngineError> {
        let mut rows = self.shared.store.usage.scan_prefix(&(account_id,))?;
        rows.reverse();
        rows.truncate(limit);
        Ok(rows)
    }

    pub fn catalog(&self) -> &crate::catalog::Catalog {
        &self.router.catalog
    }
}

impl Engine {
    pub async fn embed(
        &self,
        key: &KeyEntry,
        req: &crate::embeddings::EmbeddingRequest,
    ) -> Result<(crate::embeddings::EmbeddingOutcome, Charge), EngineError> {
        let outcome = self.router.embed(req, &scope(key)).await?;
        let info = RequestInfo {
            requested_model: outcome.model.clone(),
            tier: "auto",
            request_type: "embeddings",
            metadata: Map::new(),
        };
        let usage = Usage { prompt_tokens: outcome.prompt_tokens, completion_tokens: 0 };
        let charge = self.settle(key, &info, &outcome.route, usage, Some(outcome.latency_ms), false);
        Ok((outcome, charge))
    }
}
