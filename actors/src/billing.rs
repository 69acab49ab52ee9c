//! What a request costs and what it is charged: one pricing policy for every route.

use serde::Serialize;

use crate::{chat::Usage, gateway::RouteRecord};

/// Customer charge from provider cost. See `[pricing]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct PricingPolicy {
    /// Margin on managed traffic, per mode (0.1 = provider cost + 10%).
    pub margin_auto: f64,
    pub margin_fast: f64,
    pub margin_max: f64,
    /// BYOK traffic pays only the optimisation layer: this share of the route's list cost.
    pub byok_fee_share: f64,
    /// Self-hosted endpoint traffic pays this share of the baseline.
    pub self_hosted_share_of_baseline: f64,
}

impl Default for PricingPolicy {
    fn default() -> Self {
        Self {
            margin_auto: 0.10,
            margin_fast: 0.10,
            margin_max: 0.10,
            byok_fee_share: 0.05,
            self_hosted_share_of_baseline: 0.05,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Charge {
    /// What Tokaroo pays the provider.
    pub actual_cost_usd: f64,
    /// What the customer is charged.
    pub charged_usd: f64,
    /// What the request would have cost on the reference `max` route.
    pub baseline_usd: f64,
}

impl PricingPolicy {
    pub fn margin(&self, tier: &str) -> f64 {
        match tier {
            "fast" => self.margin_fast,
            "max" => self.margin_max,
            _ => self.margin_auto,
        }
    }

    pub fn charge(&self, tier: &str, route: &RouteRecord, usage: Usage) -> Charge {
        let list = route.cost_usd(usage);
        let baseline = route.baseline_usd(usage).max(list);
        let (actual, charged) = match route.billing_mode {
            "byok" => (0.0, list * self.byok_fee_share),
            "self_hosted" => (0.0, baseline * self.self_hosted_share_of_baseline),
            // Managed and simulated traffic are priced alike so the quickstart shows real figures.
            _ => (list, list * (1.0 + self.margin(tier))),
        };
        Charge { actual_cost_usd: actual, charged_usd: round_usd(charged), baseline_usd: round_usd(baseline) }
    }
}

/// Money is kept to 1e-10 USD so sums of many rows do not drift in the last digits.
pub fn round_usd(x: f64) -> f64 {
    (x * 1e10).round() / 1e10
}
