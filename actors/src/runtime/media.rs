//! What the media routes (images, speech, transcription, video) share: the routes a
//! request's candidate models may take, the fallback loop over them, and how a media
//! request is charged.

use std::{sync::Arc, time::Instant};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use tokaroo_storage::records::UsageRow;

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::{usd_to_units, Charge},
    routing::{
        catalog::{CatalogModel, MediaSpec},
        gateway::{self, RequestWork},
        providers::{ByteStream, ProviderError, ProviderKind},
        upstreams::{BillingMode, Owner, Upstream},
    },
    runtime::{requests::RequestInfo, Runtime},
};

/// What is known of a media request before it is served (never cached, never a mission's).
pub(crate) fn media_info(
    mode: Mode,
    model: Option<&str>,
    request_type: &'static str,
    request_id: Option<String>,
) -> RequestInfo {
    RequestInfo {
        requested_model: model.map_or_else(|| mode.as_str().to_owned(), str::to_owned),
        tier: mode,
        request_type,
        metadata: serde_json::Map::new(),
        request_id,
        bypass_cache: true,
        mission: None,
        mission_explicit: false,
    }
}

/// The one usage row of a served media request of `key`: who, how it was routed, what it
/// cost. The caller adds why (`routing_reason`), the tokens, what it was billed by (`unit`,
/// `units`) and the routes that failed first.
pub(crate) fn media_row(
    key: &KeyEntry,
    info: &RequestInfo,
    upstream: &Upstream,
    model: &str,
    charge: Charge,
    started: std::time::Instant,
) -> UsageRow {
    UsageRow {
        id: crate::clock::new_id(),
        account_id: key.account_id.clone(),
        api_key_id: Some(key.id.clone()),
        workspace_slug: key.workspace_slug.clone(),
        metadata: serde_json::Map::new(),
        tier: info.tier.as_str().to_owned(),
        requested_model: info.requested_model.clone(),
        provider: upstream.kind.as_str().to_owned(),
        upstream_model: model.to_owned(),
        upstream: upstream.name.clone(),
        routing_method: info.tier.as_str().to_owned(),
        routing_reason: String::new(),
        execution_source: upstream.execution_source().to_owned(),
        billing_mode: upstream.billing_mode().as_str().to_owned(),
        request_type: info.request_type.to_owned(),
        input_tokens: 0,
        output_tokens: 0,
        actual_cost_units: charge.actual_cost_units,
        charged_units: charge.charged_units,
        baseline_units: charge.baseline_units,
        latency_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        cache: "miss".into(),
        streamed: false,
        created_at_us: 0,
        request_id: info.request_id.clone(),
        failed_attempts: Vec::new(),
        unit: None,
        units: None,
    }
}

/// How many media requests of one account may run at once (past it: 429).
pub const MEDIA_PER_ACCOUNT: usize = 8;
/// How many may run on the whole server: each may hold an upload or a provider's images in
/// memory, so this bounds memory. Past it a request waits up to [`MEDIA_QUEUE_WAIT`], then
/// is a 503.
pub const MEDIA_GLOBAL: usize = 32;
pub const MEDIA_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How many accounts the gate remembers before it forgets the idle ones.
const PRUNE_GATE_AT: usize = 4096;

/// The media requests running now, per account and in all.
pub(crate) struct MediaGate {
    global: Arc<Semaphore>,
    accounts: DashMap<String, Arc<Semaphore>>,
}

impl Default for MediaGate {
    fn default() -> Self {
        Self { global: Arc::new(Semaphore::new(MEDIA_GLOBAL)), accounts: DashMap::new() }
    }
}

/// An account's share of the media gate: one of its [`MEDIA_PER_ACCOUNT`] slots.
#[derive(Debug)]
pub struct MediaSlot(#[allow(dead_code, reason = "held, never read: dropping it frees the slot")] OwnedSemaphorePermit);

/// Leave to run one media request: the account's slot and one of the server's. Held until
/// the request is served; a speech stream keeps the slot until the audio ends.
#[derive(Debug)]
pub struct MediaPermit {
    slot: MediaSlot,
    _global: OwnedSemaphorePermit,
}

impl MediaPermit {
    /// The account's slot alone, the server's given back (work that holds no buffers).
    pub fn into_slot(self) -> MediaSlot {
        self.slot
    }
}

impl Runtime {
    /// One of `account_id`'s media slots, at once or a 429: one tenant cannot take the
    /// server's share. Taken before an upload is read.
    pub fn media_slot(&self, account_id: &str) -> Result<MediaSlot, EngineError> {
        let gate = &self.0.media_gate;
        if gate.accounts.len() >= PRUNE_GATE_AT {
            // Forget the accounts with no media request running: a slot out holds a clone
            // of its account's semaphore.
            gate.accounts.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        let mine = gate
            .accounts
            .entry(account_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(MEDIA_PER_ACCOUNT)))
            .clone();
        mine.try_acquire_owned().map(MediaSlot).map_err(|_| EngineError::RateLimited {
            limit: MEDIA_PER_ACCOUNT as u32,
            retry_after: std::time::Duration::from_secs(1),
        })
    }

    /// With a slot, one of the server's [`MEDIA_GLOBAL`] places, queued up to
    /// [`MEDIA_QUEUE_WAIT`] (then a 503). Taken once the request's body is in.
    pub async fn media_permit(&self, slot: MediaSlot) -> Result<MediaPermit, EngineError> {
        let global = tokio::time::timeout(MEDIA_QUEUE_WAIT, self.0.media_gate.global.clone().acquire_owned())
            .await
            .map_err(|_| EngineError::Unavailable("The gateway is busy with media requests; try again shortly".into()))?
            .map_err(|_| EngineError::Unavailable("The gateway is shutting down".into()))?;
        Ok(MediaPermit { slot, _global: global })
    }
}

/// `body`, holding `slot` until it ends or is dropped.
pub(crate) fn holding(body: ByteStream, slot: MediaSlot) -> ByteStream {
    use futures_util::StreamExt as _;
    body.map(move |piece| {
        let _held = &slot;
        piece
    })
    .boxed()
}

/// What the first route that answered gave.
pub(crate) struct Served<C, T> {
    pub candidate: C,
    pub upstream: Arc<Upstream>,
    pub answer: T,
    /// The routes that failed first, for the usage row.
    pub failed: Vec<String>,
    /// When the route that answered was asked.
    pub started: Instant,
}

/// Tries `routes` in order until one answers, falling back on the failures chat falls back
/// on (5xx, timeouts, 401/403/404, 429): each is counted against its connection and listed
/// in `failed`. A provider's 400 is the client's, and nothing else is tried. When every
/// route failed, a 503 naming only the last failure's code (`what`: "generate the images").
///
/// `attempt` takes its own copies: a future that borrowed them would not be `Send` for
/// every lifetime, which the request's task needs.
pub(crate) async fn first_answer<C: Clone, T, Fut>(
    routes: Vec<(C, Arc<Upstream>)>,
    model_of: impl Fn(&C) -> &str,
    work: &[String],
    what: &str,
    attempt: impl Fn(C, Arc<Upstream>) -> Fut,
) -> Result<Served<C, T>, EngineError>
where
    Fut: std::future::Future<Output = Result<T, ProviderError>>,
{
    let (mut failed, mut last_error) = (Vec::new(), None);
    for (candidate, upstream) in routes {
        let started = Instant::now();
        let model = model_of(&candidate);
        match attempt(candidate.clone(), upstream.clone()).await {
            Ok(answer) => {
                crate::routing::provider::record_success(&upstream, model, None);
                return Ok(Served { candidate, upstream, answer, failed, started });
            }
            Err(error) if gateway::moves_on(&error) => {
                gateway::note_failure(&upstream, model, RequestWork::Embed(work), &error, &mut failed).await;
                last_error = Some(error);
            }
            Err(error) => return Err(gateway::upstream_error(error)),
        }
    }
    Err(last_error
        .map_or_else(|| EngineError::Unavailable(format!("No provider could {what}")), |e| gateway::unavailable(&e)))
}

impl Runtime {
    /// The catalog's media models of `kind` a request may use, with their specs: the one it
    /// names (refused when unknown or of another kind: "is not {noun} model", `does`), else
    /// every one routable today.
    pub(crate) fn media_models(
        &self,
        named: Option<&str>,
        kind: &str,
        noun: &str,
        does: &str,
    ) -> Result<Vec<(&CatalogModel, &MediaSpec)>, EngineError> {
        let catalog = &self.0.router.catalog;
        let today = crate::clock::iso8601(crate::clock::now_ms())[..10].to_owned();
        if let Some(name) = named {
            let model = catalog.get(name).ok_or_else(|| {
                EngineError::invalid(format!(
                    "model {name:?} is not {noun} model; use auto, fast, max or one from GET /v1/pricing"
                ))
            })?;
            let Some(spec) = model.media.as_ref().filter(|m| m.kind == kind) else {
                return Err(EngineError::invalid(format!("model {name:?} {does}")));
            };
            let shut_down =
                spec.available_until.as_deref().filter(|until| model.deprecated && *until <= today.as_str());
            if let Some(until) = shut_down {
                return Err(EngineError::invalid(format!(
                    "model {name:?} was shut down by its provider on {until}; see GET /v1/pricing for current models"
                )));
            }
        }
        Ok(catalog
            .models
            .iter()
            .filter(|m| named.is_none_or(|name| m.id == name))
            .filter_map(|m| Some((m, m.media.as_ref().filter(|s| s.kind == kind)?)))
            .filter(|(m, spec)| named.is_some() || spec.routable(m.deprecated, &today))
            .collect())
    }

    /// The routes to try, best candidate first: each on every upstream of its provider that
    /// the key may use, in the order chat prefers them (a tenant's own key, then managed),
    /// one route per upstream (one that failed is not tried again with another model), at
    /// most `MAX_ATTEMPTS`; the simulator when no provider is configured at all.
    pub(crate) fn media_routes<T: Clone>(
        &self,
        key: &KeyEntry,
        candidates: &[T],
        model_of: impl Fn(&T) -> &CatalogModel,
    ) -> Vec<(T, Arc<Upstream>)> {
        let mut available = self.0.router.upstreams.for_scope(&key.account_id, key.workspace_slug.as_deref());
        available.sort_by_key(|u| u.preference());
        let mut routes: Vec<(T, Arc<Upstream>)> = Vec::new();
        for c in candidates {
            let model = model_of(c);
            let kind = ProviderKind::parse(&model.provider);
            for u in &available {
                let fits = Some(u.kind) == kind && !matches!(u.owner, Owner::Local { .. }) && u.usable_for(&model.id);
                if fits && !routes.iter().any(|(_, taken)| taken.name == u.name) {
                    routes.push((c.clone(), u.clone()));
                }
            }
        }
        if routes.is_empty() {
            if let (Some(sim), Some(first)) = (&self.0.router.simulator, candidates.first()) {
                routes.push((first.clone(), sim.clone()));
            }
        }
        routes.truncate(gateway::MAX_ATTEMPTS);
        routes
    }

    /// A media request's charge from its list price: the margin of its mode on managed (and
    /// simulated) traffic, the fee share on BYOK; the baseline is the dearest candidate at
    /// `max`'s margin, so savings count.
    pub(crate) fn media_charge(&self, mode: Mode, billing: BillingMode, list_usd: f64, baseline_usd: f64) -> Charge {
        let pricing = &self.0.config.pricing;
        let (actual, charged) = match billing {
            BillingMode::Byok => (0.0, list_usd * pricing.byok_fee_share),
            BillingMode::SelfHosted => (0.0, baseline_usd * pricing.self_hosted_share_of_baseline),
            BillingMode::Managed | BillingMode::Simulator => (list_usd, list_usd * (1.0 + pricing.margin(mode))),
        };
        Charge {
            actual_cost_units: usd_to_units(actual),
            charged_units: usd_to_units(charged),
            baseline_units: usd_to_units(baseline_usd.max(list_usd) * (1.0 + pricing.margin(Mode::Max))),
        }
    }
}
