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
        matching.sort_by_key(|u| u.preference());
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
        Some(CatalogModel::self_hosted(id, capabilities))
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chat::{ContentPart, Message, ResponseFormat, ToolDef};
    use crate::routing::{
        health::Breakers,
        providers::{Connection, ProviderKind},
    };

    /// One catalog entry as `config/catalog.json` spells it.
    fn model(id: &str, provider: &str, quality: f64, price_in: f64, latency: &str, caps: &[&str]) -> serde_json::Value {
        serde_json::json!({
            "id": id, "name": id, "provider": provider,
            "input_per_1m": price_in, "output_per_1m": price_in * 4.0,
            "capabilities": caps, "context_window": 128_000,
            "quality": quality, "latency_class": latency,
        })
    }

    const ALL: &[&str] = &["chat", "streaming", "json", "tools"];

    /// A small catalog whose order every mode can be checked against:
    /// - `cheap` (40) is the cheapest and fastest, below every bar;
    /// - `okay` (60) clears an easy prompt's bar but not a hard one's;
    /// - `plain` (75) is cheap for its quality but has no tools or JSON mode;
    /// - `good` (80) is fast and clears hard prompts;
    /// - `top` (95) is the best, slow and dear, and the only one with vision;
    /// - `tiny-ctx` (85) has a 100-token window; `retired` (99) is deprecated;
    /// - `claude` is on a provider with no connection; `groq-fast` on Groq.
    pub(crate) fn catalog() -> Catalog {
        let mut tiny = model("tiny-ctx", "openai", 85.0, 0.05, "fast", ALL);
        tiny["context_window"] = 100.into();
        let mut retired = model("retired", "openai", 99.0, 0.01, "fast", ALL);
        retired["deprecated"] = true.into();
        let models = vec![
            model("cheap", "openai", 40.0, 0.1, "fast", ALL),
            model("okay", "openai", 60.0, 0.2, "medium", ALL),
            model("plain", "openai", 75.0, 0.3, "medium", &["chat", "streaming"]),
            model("good", "openai", 80.0, 1.0, "fast", ALL),
            model("top", "openai", 95.0, 10.0, "slow", &["chat", "streaming", "json", "tools", "vision"]),
            tiny,
            retired,
            model("claude", "anthropic", 90.0, 3.0, "medium", ALL),
            model("groq-fast", "groq", 70.0, 0.5, "medium", ALL),
            model("embedder", "openai", 0.0, 0.02, "fast", &["embeddings"]),
        ];
        Catalog::parse(&serde_json::json!({ "models": models }).to_string(), "test").unwrap()
    }

    pub(crate) fn connection(kind: ProviderKind, base_url: &str) -> Connection {
        Connection {
            provider: kind,
            base_url: base_url.into(),
            api_key: None,
            extra_headers: Vec::new(),
            http: crate::routing::client::client(),
            timeout: std::time::Duration::from_secs(2),
            chat_url: Default::default(),
            guard: None,
        }
    }

    pub(crate) fn managed(kind: ProviderKind, base_url: &str) -> Arc<Upstream> {
        Arc::new(Upstream::new(
            format!("provider:{}:managed", kind.as_str()),
            kind,
            connection(kind, base_url),
            Owner::Managed,
        ))
    }

    pub(crate) fn simulator() -> Arc<Upstream> {
        let conn = connection(ProviderKind::Simulator, "");
        Arc::new(Upstream::new("provider:simulator:builtin".into(), ProviderKind::Simulator, conn, Owner::Simulator))
    }

    fn byok(account: &str, workspace: Option<&str>, key_id: &str) -> Arc<Upstream> {
        let owner = Owner::Byok {
            account_id: account.into(),
            workspace_slug: workspace.map(Into::into),
            key_id: key_id.into(),
        };
        let conn = connection(ProviderKind::OpenAi, "http://127.0.0.1:9");
        Arc::new(Upstream::new(format!("provider:openai:{key_id}"), ProviderKind::OpenAi, conn, owner))
    }

    fn local(account: &str, workspace: Option<&str>, id: &str, models: &[&str]) -> Arc<Upstream> {
        let owner = Owner::Local {
            account_id: account.into(),
            workspace_slug: workspace.map(Into::into),
            endpoint_id: id.into(),
        };
        let u = Upstream::new(
            format!("endpoint:{id}"),
            ProviderKind::Local,
            connection(ProviderKind::Local, "http://127.0.0.1:9"),
            owner,
        );
        *u.local_models.write().unwrap() = models.iter().map(|m| m.to_string()).collect();
        Arc::new(u)
    }

    pub(crate) fn router(upstreams: &[Arc<Upstream>], simulator: Option<Arc<Upstream>>) -> Router {
        let all = Upstreams::default();
        for u in upstreams {
            all.insert(u.clone());
        }
        Router { catalog: Arc::new(catalog()), upstreams: Arc::new(all), simulator }
    }

    pub(crate) fn scope(account: &str, workspace: Option<&str>) -> Scope {
        Scope { account_id: account.into(), workspace_slug: workspace.map(Into::into) }
    }

    pub(crate) fn ask(model: ModelChoice, text: &str) -> ChatRequest {
        ChatRequest::new(model, vec![Message::text(Role::User, text)])
    }

    fn auto(text: &str) -> ChatRequest {
        ask(ModelChoice::Mode(Mode::Auto), text)
    }

    fn ids(routes: &[Route]) -> Vec<&str> {
        routes.iter().map(|r| r.model.id.as_str()).collect()
    }

    fn with_tools(mut req: ChatRequest) -> ChatRequest {
        req.tools = vec![ToolDef { name: "lookup".into(), description: None, parameters: serde_json::json!({}) }];
        req
    }

    /// Opens a breaker the way the connection's actor would after three failures.
    fn cool_down(upstream: &Upstream, model: Option<&str>) {
        let mut breakers = Breakers::default();
        let breaker = match model {
            Some(m) => breakers.models.entry(m.to_owned()).or_default(),
            None => &mut breakers.connection,
        };
        for _ in 0..3 {
            breaker.record_failure("500".into(), None);
        }
        upstream.publish(&breakers, model);
    }

    #[test]
    fn auto_takes_the_cheapest_route_clearing_the_difficulty_then_the_best_of_the_rest() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let routes = r.plan(&auto("hi"), &scope("acct", None)).unwrap();
        // Bar 55: okay (60), tiny-ctx, plain, good, top clear it, cheapest first; then cheap
        // (40) below. Deprecated, embedding-only and unconnected providers' models are left out.
        assert_eq!(ids(&routes), ["tiny-ctx", "okay", "plain", "good", "top", "cheap"]);
        assert!(
            routes[0].reason.starts_with("auto: cheapest route clearing estimated difficulty 55"),
            "{}",
            routes[0].reason
        );
        assert!(routes[5].reason.starts_with("auto: no route clears difficulty 55"), "{}", routes[5].reason);
        assert!(routes.iter().all(|r| r.upstream.name == "provider:openai:managed"));
    }

    #[test]
    fn auto_raises_the_bar_for_hard_prompts() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let hard = auto("Prove this theorem step by step");
        assert_eq!(difficulty(&hard), 67.0);
        let routes = r.plan(&hard, &scope("acct", None)).unwrap();
        // okay (60) no longer clears: it falls among the routes below the bar, by quality.
        assert_eq!(ids(&routes), ["tiny-ctx", "plain", "good", "top", "okay", "cheap"]);
    }

    #[test]
    fn fast_keeps_routes_above_the_quality_floor_and_orders_them_by_latency_then_price() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Fast), "hi"), &scope("acct", None)).unwrap();
        // cheap (40) is under the floor; fast class, then medium, then slow; cheaper first.
        assert_eq!(ids(&routes), ["tiny-ctx", "good", "okay", "plain", "top"]);
        assert!(routes[0].reason.starts_with("fast: lowest expected latency (400 ms)"), "{}", routes[0].reason);
    }

    #[test]
    fn fast_prefers_a_connection_measured_faster_than_its_catalog_class() {
        let openai = managed(ProviderKind::OpenAi, "http://127.0.0.1:9");
        let groq = managed(ProviderKind::Groq, "http://127.0.0.1:9");
        // Groq's `medium` model measured at 50 ms; OpenAI measured at 2 s.
        for (u, ms) in [(&groq, 50), (&openai, 2_000)] {
            let mut b = Breakers::default();
            b.connection.record_success(std::time::Duration::from_millis(ms));
            u.publish(&b, None);
        }
        let r = router(&[openai, groq], None);
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Fast), "hi"), &scope("acct", None)).unwrap();
        assert_eq!(routes[0].model.id, "groq-fast");
        assert_eq!(routes[0].upstream.name, "provider:groq:managed");
    }

    #[test]
    fn fast_falls_back_to_every_route_when_none_reaches_the_quality_floor() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let weak = Catalog::parse(
            &serde_json::json!({ "models": [model("weak-a", "openai", 30.0, 1.0, "fast", ALL), model("weak-b", "openai", 45.0, 0.5, "fast", ALL)] })
                .to_string(),
            "test",
        )
        .unwrap();
        let r = Router { catalog: Arc::new(weak), ..r };
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Fast), "hi"), &scope("acct", None)).unwrap();
        assert_eq!(ids(&routes), ["weak-b", "weak-a"], "same latency: cheaper first");
    }

    #[test]
    fn max_orders_by_quality_and_never_plans_deprecated_or_unconnected_models() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Max), "hi"), &scope("acct", None)).unwrap();
        assert_eq!(ids(&routes), ["top", "tiny-ctx", "good", "plain", "okay", "cheap"]);
        assert_eq!(routes[0].reason, "max: highest quality (95)");
        let baseline = r.baseline_model(&auto("hi")).unwrap();
        assert_eq!(baseline.id, "top", "the baseline is the best fitting catalog model");
    }

    #[test]
    fn capability_filters_leave_out_models_that_cannot_serve_the_request() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let s = scope("acct", None);
        let max = |req: ChatRequest| ids(&r.plan(&req, &s).unwrap()).into_iter().map(str::to_owned).collect::<Vec<_>>();
        let tools = max(with_tools(ask(ModelChoice::Mode(Mode::Max), "hi")));
        assert_eq!(tools, ["top", "tiny-ctx", "good", "okay", "cheap"], "plain has no tools");
        let mut json = ask(ModelChoice::Mode(Mode::Max), "hi");
        json.response_format = Some(ResponseFormat::JsonObject);
        assert!(!max(json).contains(&"plain".to_owned()), "plain has no JSON mode");
        let mut image = ask(ModelChoice::Mode(Mode::Max), "what is this?");
        image.messages[0]
            .content
            .push(ContentPart::Image { url: crate::test_support::png_data_url(8, 8), detail: None });
        assert_eq!(max(image.clone()), ["top"], "only top sees images");

        // Nothing fits: an image and no vision model connected.
        let mut only_text = catalog();
        only_text.models.retain(|m| m.id != "top");
        let without_top = Router { catalog: Arc::new(only_text), upstreams: r.upstreams.clone(), simulator: None };
        match without_top.plan(&image, &s) {
            Err(EngineError::Unavailable(m)) => {
                assert!(m.starts_with("No provider configured that can serve this request"), "{m}")
            }
            other => panic!("{:?}", other.map(|r| ids(&r).join(","))),
        }
    }

    #[test]
    fn a_model_whose_context_window_cannot_hold_prompt_and_output_is_not_planned() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let s = scope("acct", None);
        let planned = |req: &ChatRequest| r.plan(req, &s).unwrap().iter().any(|r| r.model.id == "tiny-ctx");
        assert!(planned(&auto("hi")), "a short prompt fits in 100 tokens");
        assert!(!planned(&auto(&"word ".repeat(200))), "a 200-word prompt does not");
        let mut long_answer = auto("hi");
        long_answer.max_tokens = Some(99);
        assert!(!planned(&long_answer), "the output bound counts against the window");
    }

    #[test]
    fn a_named_model_is_planned_on_its_providers_connections_only() {
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9")], None);
        let s = scope("acct", None);
        let routes = r.plan(&ask(ModelChoice::Native("good".into()), "hi"), &s).unwrap();
        assert_eq!(ids(&routes), ["good"]);
        assert_eq!(routes[0].reason, "native model requested");
        match r.plan(&ask(ModelChoice::Native("claude".into()), "hi"), &s) {
            Err(EngineError::Unavailable(m)) => {
                assert_eq!(m, "Provider anthropic not configured (or cooling down) for model claude")
            }
            other => panic!("{:?}", other.map(|r| ids(&r).join(","))),
        }
        match r.plan(&ask(ModelChoice::Native("no-such-model".into()), "hi"), &s) {
            Err(EngineError::Invalid(m)) => {
                assert_eq!(m, "Unknown model \"no-such-model\": use auto, fast or max, or a model from GET /v1/pricing")
            }
            other => panic!("{:?}", other.map(|r| ids(&r).join(","))),
        }
    }

    #[test]
    fn with_nothing_configured_the_simulator_serves_every_model_and_without_it_nothing_is_planned() {
        let sim = simulator();
        let r = router(std::slice::from_ref(&sim), Some(sim.clone()));
        let s = scope("acct", None);
        let routes = r.plan(&ask(ModelChoice::Native("claude".into()), "hi"), &s).unwrap();
        assert_eq!(
            (routes[0].model.id.as_str(), routes[0].upstream.name.as_str()),
            ("claude", "provider:simulator:builtin")
        );
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Max), "hi"), &s).unwrap();
        assert_eq!(routes[0].model.id, "top");
        assert!(routes.iter().any(|r| r.model.id == "claude") && routes.iter().any(|r| r.model.id == "groq-fast"));
        assert!(routes.iter().all(|r| r.upstream.kind == ProviderKind::Simulator));

        let nothing = router(&[], None);
        assert!(matches!(nothing.plan(&auto("hi"), &s), Err(EngineError::Unavailable(_))));
    }

    #[test]
    fn a_route_on_a_cooling_connection_is_not_planned() {
        let openai = managed(ProviderKind::OpenAi, "http://127.0.0.1:9");
        let groq = managed(ProviderKind::Groq, "http://127.0.0.1:9");
        let r = router(&[openai.clone(), groq], None);
        let s = scope("acct", None);
        cool_down(&openai, None);
        assert!(openai.health.is_cooling_down());
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Max), "hi"), &s).unwrap();
        assert_eq!(ids(&routes), ["groq-fast"], "only the healthy connection's models");
        match r.plan(&ask(ModelChoice::Native("top".into()), "hi"), &s) {
            Err(EngineError::Unavailable(m)) => assert!(m.contains("(or cooling down)"), "{m}"),
            other => panic!("{:?}", other.map(|r| ids(&r).join(","))),
        }
    }

    #[test]
    fn a_model_cooling_down_on_a_connection_leaves_its_other_models_planned() {
        let openai = managed(ProviderKind::OpenAi, "http://127.0.0.1:9");
        let r = router(std::slice::from_ref(&openai), None);
        cool_down(&openai, Some("top"));
        assert!(!openai.health.is_cooling_down());
        let routes = r.plan(&ask(ModelChoice::Mode(Mode::Max), "hi"), &scope("acct", None)).unwrap();
        assert_eq!(ids(&routes), ["tiny-ctx", "good", "plain", "okay", "cheap"]);
    }

    #[test]
    fn another_scopes_own_keys_and_endpoints_are_never_planned() {
        let managed_openai = managed(ProviderKind::OpenAi, "http://127.0.0.1:9");
        let upstreams = [
            managed_openai,
            byok("other", None, "theirs"),
            byok("me", Some("ws-a"), "mine-a"),
            byok("me", None, "mine"),
            local("other", None, "their-box", &["llama3"]),
            local("me", Some("ws-a"), "my-box", &["nomic-embed-text", "qwen2"]),
        ];
        let r = router(&upstreams, None);
        let named = ask(ModelChoice::Native("good".into()), "hi");
        let names = |routes: Vec<Route>| routes.into_iter().map(|r| r.upstream.name.clone()).collect::<Vec<_>>();

        // Workspace b sees the account-wide key before the managed connection; never ws-a's
        // key, the other account's key or either endpoint.
        assert_eq!(
            names(r.plan(&named, &scope("me", Some("ws-b"))).unwrap()),
            ["provider:openai:mine", "provider:openai:managed"]
        );
        // Workspace a: its self-hosted endpoint can't serve `good`; its own key comes first.
        assert_eq!(
            names(r.plan(&named, &scope("me", Some("ws-a"))).unwrap()),
            ["provider:openai:mine-a", "provider:openai:mine", "provider:openai:managed"]
        );
        // Another account sees only its own key, then managed.
        assert_eq!(
            names(r.plan(&named, &scope("other", Some("ws-a"))).unwrap()),
            ["provider:openai:theirs", "provider:openai:managed"]
        );
        // A stranger sees only the managed connection, and nobody else's endpoint models.
        assert_eq!(names(r.plan(&named, &scope("stranger", None)).unwrap()), ["provider:openai:managed"]);
        assert!(matches!(
            r.plan(&ask(ModelChoice::Native("llama3".into()), "hi"), &scope("me", Some("ws-a"))),
            Err(EngineError::Invalid(_))
        ));

        // A mode: the workspace's endpoint first (its chat model, not the embedder), then the
        // catalog on the scope's preferred connection.
        let routes = r.plan(&auto("hi"), &scope("me", Some("ws-a"))).unwrap();
        assert_eq!((routes[0].model.id.as_str(), routes[0].upstream.name.as_str()), ("qwen2", "endpoint:my-box"));
        assert!(routes[1..].iter().all(|r| r.upstream.name == "provider:openai:mine-a"), "{:?}", names(routes));
        let routes = r.plan(&auto("hi"), &scope("other", None)).unwrap();
        assert_eq!(routes[0].upstream.name, "endpoint:their-box");
        assert!(routes[1..].iter().all(|r| r.upstream.name == "provider:openai:theirs"));
    }

    #[test]
    fn an_unreachable_or_cooling_endpoint_is_not_planned() {
        let endpoint = local("me", None, "box", &["llama3"]);
        let r = router(&[managed(ProviderKind::OpenAi, "http://127.0.0.1:9"), endpoint.clone()], None);
        let s = scope("me", None);
        assert_eq!(r.plan(&auto("hi"), &s).unwrap()[0].upstream.name, "endpoint:box");
        let mut b = Breakers::default();
        b.apply(crate::routing::health::HealthEvent::Checked { unreachable_code: Some("connect_error".into()) });
        endpoint.publish(&b, None);
        assert!(r.plan(&auto("hi"), &s).unwrap().iter().all(|r| r.upstream.name != "endpoint:box"));
        assert!(matches!(r.plan(&ask(ModelChoice::Native("llama3".into()), "hi"), &s), Err(EngineError::Invalid(_))));
    }
}
