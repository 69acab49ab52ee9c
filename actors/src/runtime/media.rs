//! What the media routes (images, speech) share: the routes a request's candidate models
//! may take, and how a media request is charged.

use std::sync::Arc;

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    money::billing::{usd_to_units, Charge},
    routing::{
        catalog::CatalogModel,
        gateway,
        providers::ProviderKind,
        upstreams::{BillingMode, Owner, Upstream},
    },
    runtime::Runtime,
};

impl Runtime {
    /// The routes to try, best candidate first: each on an upstream of its provider that the
    /// key may use, one route per upstream (one that failed is not tried again with another
    /// model), at most `MAX_ATTEMPTS`; the simulator when no provider is configured at all.
    pub(crate) fn media_routes<T: Clone>(
        &self,
        key: &KeyEntry,
        candidates: &[T],
        model_of: impl Fn(&T) -> &CatalogModel,
    ) -> Vec<(T, Arc<Upstream>)> {
        let available = self.0.router.upstreams.for_scope(&key.account_id, key.workspace_slug.as_deref());
        let mut routes: Vec<(T, Arc<Upstream>)> = Vec::new();
        for c in candidates {
            let model = model_of(c);
            let kind = ProviderKind::parse(&model.provider);
            let found = available
                .iter()
                .find(|u| Some(u.kind) == kind && !matches!(u.owner, Owner::Local { .. }) && u.usable_for(&model.id));
            if let Some(u) = found.filter(|u| !routes.iter().any(|(_, taken)| taken.name == u.name)) {
                routes.push((c.clone(), u.clone()));
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
