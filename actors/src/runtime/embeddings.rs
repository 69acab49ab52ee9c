//! Routing `POST /v1/embeddings`: a self-hosted endpoint's embedding model when the client
//! leaves the choice to us (or names one the endpoint serves), else the named catalog model
//! on its provider, else a compatible model of another provider at the same dimension.

use std::{sync::Arc, time::Instant};

use crate::{
    error::EngineError,
    routing::catalog::CatalogModel,
    routing::gateway::{self, RequestWork, RouteRecord},
    routing::providers,
    routing::router::{Router, Scope},
    routing::upstreams::{looks_like_embedding_model, BillingMode, Owner, Upstream},
};

pub const DEFAULT_MODEL: &str = "text-embedding-3-small";
/// Used when the default model's provider is not configured; asked for the default's dimension.
const FALLBACK_MODELS: &[&str] = &["text-embedding-3-small", "text-embedding-3-large", "gemini-embedding-001"];

pub struct EmbeddingRequest {
    /// The model to route to; `None` leaves the choice to us (no model, or a mode).
    pub model: Option<String>,
    /// What the client put in `model`, answered back as is (`auto`, a native name, ...):
    /// the spec's black box never names the model that served. Absent: the documented
    /// default, [`DEFAULT_MODEL`].
    pub requested: Option<String>,
    pub inputs: Vec<String>,
    pub dimensions: Option<u32>,
}

pub struct EmbeddingOutcome {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
    /// The model name the response reports: the requested one, never the upstream's.
    pub model: String,
    pub route: RouteRecord,
    pub latency_ms: u64,
}

struct Candidate {
    upstream: Arc<Upstream>,
    model: CatalogModel,
    dims: Option<u32>,
    reason: String,
}

fn local_embedding_model(id: &str) -> CatalogModel {
    CatalogModel::self_hosted(id, vec!["embeddings".into()])
}

impl Router {
    fn embedding_candidates(&self, req: &EmbeddingRequest, scope: &Scope) -> Vec<Candidate> {
        let available = self.upstreams.for_scope(&scope.account_id, scope.workspace_slug.as_deref());
        let mut out = Vec::new();
        for u in available.iter().filter(|u| {
            matches!(u.owner, Owner::Local { .. }) && u.health.is_reachable() && !u.health.is_cooling_down()
        }) {
            let models = u.local_models.read().map(|m| m.clone()).unwrap_or_default();
            let chosen = match &req.model {
                Some(name) => models.iter().find(|m| *m == name).cloned(),
                None => models.iter().find(|m| looks_like_embedding_model(m)).cloned(),
            }
            .filter(|m| u.usable_for(m));
            if let Some(m) = chosen {
                out.push(Candidate {
                    upstream: u.clone(),
                    model: local_embedding_model(&m),
                    dims: req.dimensions,
                    reason: format!("self-hosted endpoint {} serves {m}", u.name),
                });
            }
        }
        let wanted = req.model.as_deref().unwrap_or(DEFAULT_MODEL);
        let wanted_dims = req.dimensions.or_else(|| self.catalog.get(wanted).and_then(|m| m.embedding_dims));
        let mut names = vec![wanted];
        if req.model.is_none() || wanted == DEFAULT_MODEL {
            names.extend(FALLBACK_MODELS.iter().copied().filter(|m| *m != wanted));
        }
        for name in names {
            let Some(model) = self.catalog.get(name).filter(|m| m.has("embeddings")) else { continue };
            let kind = providers::ProviderKind::parse(&model.provider);
            let upstream = available
                .iter()
                .find(|u| Some(u.kind) == kind && u.usable_for(name) && !matches!(u.owner, Owner::Local { .. }))
                .cloned()
                .or_else(|| self.simulator.clone());
            if let Some(upstream) = upstream {
                // A stand-in model is asked for the wanted dimension so vectors stay comparable.
                let dims = if name == wanted { req.dimensions } else { wanted_dims };
                out.push(Candidate { upstream, model: model.clone(), dims, reason: format!("embeddings with {name}") });
            }
        }
        out
    }

    pub async fn embed(&self, req: &EmbeddingRequest, scope: &Scope) -> Result<EmbeddingOutcome, EngineError> {
        if req.model.as_deref().is_some_and(|m| self.catalog.get(m).is_some_and(|c| !c.has("embeddings"))) {
            return Err(EngineError::invalid(format!(
                "{} is not an embedding model",
                req.model.as_deref().unwrap_or_default()
            )));
        }
        let candidates = self.embedding_candidates(req, scope);
        if candidates.is_empty() {
            return Err(match &req.model {
                Some(m) if self.catalog.get(m).is_none() => {
                    EngineError::invalid(format!("Unknown embedding model {m:?}"))
                }
                _ => EngineError::Unavailable(
                    "No embeddings provider configured (OpenAI, Gemini or a self-hosted endpoint)".into(),
                ),
            });
        }
        let baseline = self.catalog.get(DEFAULT_MODEL).cloned();
        let mut failed = Vec::new();
        let mut last_error = None;
        for c in candidates.into_iter().take(3) {
            let started = Instant::now();
            match providers::embed(&c.upstream.conn, &c.model.id, &req.inputs, c.dims).await {
                Ok(result) => {
                    let typical = !RequestWork::Embed(&req.inputs).is_large();
                    crate::routing::provider::record_success(
                        &c.upstream,
                        &c.model.id,
                        typical.then(|| started.elapsed()),
                    );
                    let counted =
                        || req.inputs.iter().map(|t| crate::chat::tokenizer::count(t)).fold(0u32, u32::saturating_add);
                    // A self-hosted server is billed the larger of its report and our count,
                    // as for chat: it could report nothing at all.
                    let prompt_tokens = match result.prompt_tokens {
                        Some(reported) if c.upstream.billing_mode() == BillingMode::SelfHosted => {
                            reported.max(counted())
                        }
                        Some(reported) => reported,
                        None => counted(),
                    };
                    let route = RouteRecord {
                        provider: c.upstream.kind.as_str(),
                        execution_source: c.upstream.execution_source(),
                        billing_mode: c.upstream.billing_mode(),
                        upstream: c.upstream.name.clone(),
                        model: c.model.id.clone(),
                        reason: c.reason,
                        failed_attempts: failed,
                        escalated: false,
                        earlier_attempts_usd: 0.0,
                        max_output_tokens: 0,
                        priced_as: c.model.clone(),
                        baseline: baseline.clone(),
                    };
                    let model =
                        req.requested.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| DEFAULT_MODEL.to_owned());
                    return Ok(EmbeddingOutcome {
                        vectors: result.vectors,
                        prompt_tokens,
                        model,
                        route,
                        latency_ms: started.elapsed().as_millis() as u64,
                    });
                }
                Err(error) if gateway::moves_on(&error) => {
                    gateway::note_failure(
                        &c.upstream,
                        &c.model.id,
                        RequestWork::Embed(&req.inputs),
                        &error,
                        &mut failed,
                    )
                    .await;
                    last_error = Some(error);
                }
                // The same mapping as chat: the tenant learns a status or a code, never the
                // upstream's words.
                Err(error) => return Err(gateway::upstream_error(error)),
            }
        }
        Err(last_error.map_or_else(
            || EngineError::Unavailable("No provider could serve this request".into()),
            |e| gateway::unavailable(&e),
        ))
    }
}
