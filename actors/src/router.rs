//! Route selection: which catalog model on which upstream connection serves a request, in
//! what order of fallback, and why.

use std::sync::Arc;

use crate::{
    catalog::{Catalog, CatalogModel},
    chat::{ChatRequest, Mode, ModelChoice, Role},
    health::Health,
    providers::{simulator, Connection, ProviderKind},
    EngineError,
};

/// One connection to a provider account: `provider:{provider}:{connection}`.
pub struct Upstream {
    pub name: String,
    pub kind: ProviderKind,
    pub conn: Connection,
    pub health: Arc<Health>,
}

pub struct Route {
    pub model: CatalogModel,
    pub upstream: Arc<Upstream>,
    pub reason: String,
}

pub struct Router {
    pub catalog: Arc<Catalog>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Serves every catalog model, clearly labelled, while no real upstream is configured.
    pub simulator: Option<Arc<Upstream>>,
}

const FAST_QUALITY_FLOOR: f64 = 50.0;

/// The quality an answer needs, estimated from the request (0–100).
pub fn difficulty(req: &ChatRequest) -> f64 {
    let prompt = simulator::prompt_tokens(req);
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
    fn upstream_for(&self, provider: &str) -> Option<Arc<Upstream>> {
        if let Some(sim) = &self.simulator {
            return Some(sim.clone());
        }
        let kind = ProviderKind::parse(provider)?;
        self.upstreams.iter().find(|u| u.kind == kind && !u.health.is_cooling_down()).cloned()
    }

    fn fits(model: &CatalogModel, req: &ChatRequest, prompt_tokens: u64) -> bool {
        model.has("chat")
            && !model.deprecated
            && (!req.needs_tools() || model.has("tools"))
            && (!req.needs_vision() || model.has("vision"))
            && (!req.needs_json() || model.has("json"))
            && (!req.stream || model.has("streaming"))
            && prompt_tokens + u64::from(req.max_tokens.unwrap_or(0)) <= model.context_window
    }

    /// Routes in the order they should be tried.
    pub fn plan(&self, req: &ChatRequest) -> Result<Vec<Route>, EngineError> {
        let prompt = u64::from(simulator::prompt_tokens(req));
        if let ModelChoice::Native(id) = &req.model {
            let model = self.catalog.get(id).ok_or_else(|| {
                EngineError::invalid(format!(
                    "Unknown model {id:?}: use auto, fast or max, or a model from GET /v1/pricing"
                ))
            })?;
            let upstream = self.upstream_for(&model.provider).ok_or_else(|| {
                EngineError::Unavailable(format!(
                    "Provider {} not configured (or cooling down) for model {id}",
                    model.provider
                ))
            })?;
            return Ok(vec![Route { model: model.clone(), upstream, reason: "native model requested".into() }]);
        }
        let ModelChoice::Mode(mode) = req.model else { unreachable!("native handled above") };
        let mut fits: Vec<(&CatalogModel, Arc<Upstream>)> = self
            .catalog
            .models
            .iter()
            .filter(|m| Self::fits(m, req, prompt))
            .filter_map(|m| self.upstream_for(&m.provider).map(|u| (m, u)))
            .collect();
        if fits.is_empty() {
            return Err(EngineError::Unavailable(
                "No provider configured that can serve this request (check tools, images, JSON mode and context length)".into(),
            ));
        }
        let latency = |m: &CatalogModel, u: &Upstream| u.health.latency_ms().unwrap_or_else(|| m.class_latency_ms());
        let routes: Vec<Route> = match mode {
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
        Ok(routes)
    }

    /// The reference `max` route's model for the request: the baseline savings are measured against.
    pub fn baseline_model(&self, req: &ChatRequest) -> Option<CatalogModel> {
        let prompt = u64::from(simulator::prompt_tokens(req));
        self.catalog
            .models
            .iter()
            .filter(|m| Self::fits(m, req, prompt))
            .max_by(|a, b| a.quality.total_cmp(&b.quality).then(b.input_per_1m.total_cmp(&a.input_per_1m)))
            .cloned()
    }
}
