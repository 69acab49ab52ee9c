//! Route selection: which catalog model on which upstream connection serves a request, in
//! what order of fallback, and why.

use std::sync::Arc;

use crate::{
    chat::{ChatRequest, Mode, ModelChoice, Role},
    error::EngineError,
    routing::catalog::{Catalog, CatalogModel},
    routing::providers::ProviderKind,
    routing::upstreams::{Owner, Upstreams},
};

pub use crate::routing::upstreams::Upstream;

pub struct Route {
    pub model: CatalogModel,
    pub upstream: Arc<Upstream>,
    pub reason: String,
}

/// Who is asking: routes are limited to the connections this scope may use.
#[derive(Debug, Clone)]
pub struct Scope {
    pub account_id: String,
    pub workspace_slug: Option<String>,
}

pub struct Router {
    pub catalog: Arc<Catalog>,
    pub upstreams: Arc<Upstreams>,
    /// Serves every catalog model, clearly labelled, while no real upstream is configured.
    pub simulator: Option<Arc<Upstream>>,
}

const FAST_QUALITY_FLOOR: f64 = 50.0;

/// The quality an answer needs, estimated from the request (0–100).
pub fn difficulty(req: &ChatRequest) -> f64 {
    let prompt = req.prompt_tokens();
    let last_user = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.joined_text().to_lowercase())
        .unwrap_or_default();
    let mut bar: f64 = 55.0;
    if prompt > 2_000 {
        bar += 8.0;
    }
    if prompt > 20_000 {
        bar += 7.0;
    }
    if req.needs_tools() {
        bar += 5.0;
    }
    if req.needs_json() {
        bar += 3.0;
    }
    const HARD: [&str; 12] = [
        "prove",
        "step by step",
        "analy",
        "debug",
        "architect",
        "optimi",
        "complex",
        "reason",
        "derive",
        "theorem",
        "refactor",
        "algorithm",
    ];
    if HARD.iter().any(|w| last_user.contains(w)) {
        bar += 12.0;
    }
    if last_user.contains("```") {
        bar += 8.0;
    }
    bar.min(90.0)
}

fn blended_price(m: &CatalogModel) -> f64 {
    (3.0 * m.input_per_1m + m.output_per_1m) / 4.0
}

impl Router {
    /// The connection for a catalog model in this scope: the scope's own key (workspace-bound
    /// first) before the managed account. The simulator (present only while no managed
    /// provider is configured) stands in when the scope has no key for it.
    fn upstream_for(&self, model: &CatalogModel, available: &[Arc<Upstream>]) -> Option<Arc<Upstream>> {
        self.upstreams_for(model, available).into_iter().next()
    }

    /// Every usable connection for a catalog model, in order of preference (see
    /// `upstream_for`): its provider's connections where neither the connection nor the model
    /// on it is cooling down.
    fn upstreams_for(&self, model: &CatalogModel, available: &[Arc<Upstream>]) -> Vec<Arc<Upstream>> {
        let Some(kind) = ProviderKind::parse(&model.provider) else {
            return self.simulator.clone().into_iter().collect();
        };
        let mut matching: Vec<Arc<Upstream>> =
            available.iter().filter(|u| u.kind == kind && u.usable_for(&model.id)).cloned().collect();
        if matching.is_empty() {
            return self.simulator.clone().into_iter().collect();
        }
        matching.sort_by_key(|u| match u.owner {
            Owner::Byok { .. } if u.workspace_specific() => 0,
            Owner::Byok { .. } => 1,
            _ => 2,
        });
        matching
    }

    /// A self-hosted endpoint's model as a zero-priced catalog entry (it is charged from the
    /// baseline, not from list prices).
    fn local_model(id: &str, req: &ChatRequest) -> Option<CatalogModel> {
        let lower = id.to_lowercase();
        let vision =
            ["llava", "vision", "vl", "gemma3", "llama3.2-vision", "moondream"].iter().any(|v| lower.contains(v));
        if req.needs_vision() && !vision {
            return None;
        }
        let mut capabilities: Vec<String> =
            ["chat", "streaming", "json", "tools"].iter().map(|c| c.to_string()).collect();
        if vision {
            capabilities.push("vision".into());
        }
        Some(CatalogModel {
            id: id.to_owned(),
            name: id.to_owned(),
            provider: "local".into(),
            input_per_1m: 0.0,
            output_per_1m: 0.0,
            cached_input_per_1m: None,
            capabilities,
            context_window: u64::MAX,
            max_output_tokens: None,
            embedding_dims: None,
            quality: 0.0,
            latency_class: "fast".into(),
            deprecated: false,
            unit_price: None,
            image_token_multiplier: None,
        })
    }

    /// Healthy self-hosted endpoints of the scope that can serve the request, first.
    fn local_routes(&self, req: &ChatRequest, available: &[Arc<Upstream>]) -> Vec<Route> {
        let mut locals: Vec<&Arc<Upstream>> = available
            .iter()
            .filter(|u| {
                matches!(u.owner, Owner::Local { .. }) && !u.health.is_cooling_down() && u.health.is_reachable()
            })
            .collect();
        locals.sort_by_key(|u| !u.workspace_specific());
        locals
            .into_iter()
            .filter_map(|u| {
                let model = match &req.model {
                    ModelChoice::Native(id) if u.serves_local_model(id) => id.clone(),
                    ModelChoice::Native(_) => return None,
                    ModelChoice::Mode(_) => u.local_default_model()?,
                };
                // A model that keeps failing on its own here leaves the endpoint's others usable.
                if !u.usable_for(&model) {
                    return None;
                }
                let model = Self::local_model(&model, req)?;
                Some(Route {
                    model,
                    upstream: u.clone(),
                    reason: format!("self-hosted endpoint {} preferred while healthy", u.name),
                })
            })
            .collect()
    }

    fn fits(model: &CatalogModel, req: &ChatRequest) -> bool {
        model.has("chat")
            && !model.deprecated
            && (!req.needs_tools() || model.has("tools"))
            && (!req.needs_vision() || model.has("vision"))
            && (!req.needs_json() || model.has("json"))
            && (!req.stream || model.has("streaming"))
            && req.prompt_fits(model.context_window.saturating_sub(u64::from(req.max_tokens.unwrap_or(0))))
    }

    /// Routes in the order they should be tried.
    pub fn plan(&self, req: &ChatRequest, scope: &Scope) -> Result<Vec<Route>, EngineError> {
        let available = self.upstreams.for_scope(&scope.account_id, scope.workspace_slug.as_deref());
        let locals = self.local_routes(req, &available);
        if let ModelChoice::Native(id) = &req.model {
            let Some(model) = self.catalog.get(id) else {
                if !locals.is_empty() {
                    return Ok(locals);
                }
                return Err(EngineError::invalid(format!(
                    "Unknown model {id:?}: use auto, fast or max, or a model from GET /v1/pricing"
                )));
            };
            let upstreams = self.upstreams_for(model, &available);
            if upstreams.is_empty() {
                return Err(EngineError::Unavailable(format!(
                    "Provider {} not configured (or cooling down) for model {id}",
                    model.provider
                )));
            }
            // The account's own key first; the managed connection is its fallback.
            let mut routes = locals;
            routes.extend(upstreams.into_iter().map(|upstream| Route {
                model: model.clone(),
                upstream,
                reason: "native model requested".into(),
            }));
            return Ok(routes);
        }
        let ModelChoice::Mode(mode) = req.model else { unreachable!("native handled above") };
        let mut fits: Vec<(&CatalogModel, Arc<Upstream>)> = self
            .catalog
            .models
            .iter()
            .filter(|m| Self::fits(m, req))
            .filter_map(|m| self.upstream_for(m, &available).map(|u| (m, u)))
            .collect();
        if fits.is_empty() && locals.is_empty() {
            return Err(EngineError::Unavailable(
                "No provider configured that can serve this request (check tools, images, JSON mode and context length)".into(),
            ));
        }
        let latency = |m: &CatalogModel, u: &Upstream| u.health.latency_ms().unwrap_or_else(|| m.class_latency_ms());
        let ranked: Vec<Route> = match mode {
            Mode::Max => {
                fits.sort_by(|a, b| {
                    b.0.quality.total_cmp(&a.0.quality).then(latency(a.0, &a.1).total_cmp(&latency(b.0, &b.1)))
                });
                fits.into_iter()
                    .map(|(m, u)| Route {
                        reason: format!("max: highest quality ({})", m.quality),
                        model: m.clone(),
                        upstream: u,
                    })
                    .collect()
            }
            Mode::Fast => {
                let floor_met = fits.iter().any(|(m, _)| m.quality >= FAST_QUALITY_FLOOR);
                if floor_met {
                    fits.retain(|(m, _)| m.quality >= FAST_QUALITY_FLOOR);
                }
                fits.sort_by(|a, b| {
                    latency(a.0, &a.1)
                        .total_cmp(&latency(b.0, &b.1))
                        .then(blended_price(a.0).total_cmp(&blended_price(b.0)))
                });
                fits.into_iter()
                    .map(|(m, u)| Route {
                        reason: format!("fast: lowest expected latency ({:.0} ms)", latency(m, &u)),
                        model: m.clone(),
                        upstream: u,
                    })
                    .collect()
            }
            Mode::Auto => {
                let bar = difficulty(req);
                let (mut clear, mut below): (Vec<_>, Vec<_>) = fits.into_iter().partition(|(m, _)| m.quality >= bar);
                clear.sort_by(|a, b| blended_price(a.0).total_cmp(&blended_price(b.0)));
                below.sort_by(|a, b| b.0.quality.total_cmp(&a.0.quality));
                clear
                    .into_iter()
                    .map(|(m, u)| Route {
                        reason: format!(
                            "auto: cheapest route clearing estimated difficulty {bar:.0} (quality {})",
                            m.quality
                        ),
                        model: m.clone(),
                        upstream: u,
                    })
                    .chain(below.into_iter().map(|(m, u)| Route {
                        reason: format!(
                            "auto: no route clears difficulty {bar:.0}; best available quality {}",
                            m.quality
                        ),
                        model: m.clone(),
                        upstream: u,
                    }))
                    .collect()
            }
        };
        Ok(locals.into_iter().chain(ranked).collect())
    }

    /// The reference `max` route's model for the request: the baseline savings are measured against.
    pub fn baseline_model(&self, req: &ChatRequest) -> Option<CatalogModel> {
        self.catalog
            .models
            .iter()
            .filter(|m| Self::fits(m, req))
            .max_by(|a, b| a.quality.total_cmp(&b.quality).then(b.input_per_1m.total_cmp(&a.input_per_1m)))
            .cloned()
    }
}
