//! What a request costs and what it is charged: one pricing policy for every route.

use serde::Serialize;

pub use tokaroo_storage::records::UNITS_PER_USD;

use crate::{
    chat::{Mode, Usage},
    routing::{gateway::RouteRecord, upstreams::BillingMode},
};

/// Customer charge from provider cost. See `[pricing]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PricingPolicy {
    /// Margin on managed traffic, per mode (0.1 = provider cost + 10%).
    pub margin_auto: f64,
    pub margin_fast: f64,
    pub margin_max: f64,
    /// BYOK traffic pays only the optimisation layer: this share of the route's list cost.
    pub byok_fee_share: f64,
    /// Self-hosted endpoint traffic pays this share of the baseline.
    pub self_hosted_share_of_baseline: f64,
    /// A cache hit pays this share of what it saved (the charge of the answer it reuses).
    pub cache_hit_share_of_savings: f64,
    /// What one URL analysis (`POST /v1/url/analyse`, or one URL of a batch) is charged, in USD.
    pub url_check_usd: f64,
}

impl Default for PricingPolicy {
    fn default() -> Self {
        Self {
            margin_auto: 0.10,
            margin_fast: 0.10,
            margin_max: 0.10,
            byok_fee_share: 0.05,
            self_hosted_share_of_baseline: 0.05,
            cache_hit_share_of_savings: 0.10,
            url_check_usd: 0.001,
        }
    }
}

/// What a request costs, in the ledger's integer units ([`UNITS_PER_USD`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Charge {
    /// What Tokaroo pays the provider.
    pub actual_cost_units: i64,
    /// What the customer is charged.
    pub charged_units: i64,
    /// What the request would have cost on the reference `max` route.
    pub baseline_units: i64,
}

impl Charge {
    pub fn charged_usd(&self) -> f64 {
        units_to_usd(self.charged_units)
    }
}

impl PricingPolicy {
    pub fn margin(&self, tier: Mode) -> f64 {
        match tier {
            Mode::Auto => self.margin_auto,
            Mode::Fast => self.margin_fast,
            Mode::Max => self.margin_max,
        }
    }

    pub fn charge(&self, tier: Mode, route: &RouteRecord, usage: Usage) -> Charge {
        let list = route.cost_usd(usage) + route.earlier_attempts_usd;
        let baseline = route.baseline_usd(usage).max(list);
        let (actual, charged) = match route.billing_mode {
            BillingMode::Byok => (0.0, list * self.byok_fee_share),
            BillingMode::SelfHosted => (0.0, baseline * self.self_hosted_share_of_baseline),
            // Managed and simulated traffic are priced alike so the quickstart shows real figures.
            BillingMode::Managed | BillingMode::Simulator => (list, list * (1.0 + self.margin(tier))),
        };
        Charge {
            actual_cost_units: usd_to_units(actual),
            charged_units: usd_to_units(charged),
            baseline_units: usd_to_units(baseline),
        }
    }
}

impl PricingPolicy {
    /// Refuses shares and margins that would charge nothing sensible.
    pub fn validate(&self) -> Result<(), String> {
        let fields = [
            ("margin_auto", self.margin_auto, 10.0),
            ("margin_fast", self.margin_fast, 10.0),
            ("margin_max", self.margin_max, 10.0),
            ("byok_fee_share", self.byok_fee_share, 1.0),
            ("self_hosted_share_of_baseline", self.self_hosted_share_of_baseline, 1.0),
            ("cache_hit_share_of_savings", self.cache_hit_share_of_savings, 1.0),
            ("url_check_usd", self.url_check_usd, 1.0),
        ];
        for (name, value, max) in fields {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err(format!("pricing.{name} must be between 0 and {max}, got {value}"));
            }
        }
        Ok(())
    }

    /// What a cache hit is charged: a share of the charge it saved.
    pub fn cache_hit_charge(&self, saved: Charge) -> Charge {
        Charge {
            actual_cost_units: 0,
            charged_units: (saved.charged_units as f64 * self.cache_hit_share_of_savings).round() as i64,
            baseline_units: saved.baseline_units,
        }
    }
}

pub fn usd_to_units(usd: f64) -> i64 {
    (usd * UNITS_PER_USD as f64).round() as i64
}

pub fn units_to_usd(units: i64) -> f64 {
    units as f64 / UNITS_PER_USD as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_converts_exactly_at_the_ledger_precision() {
        assert_eq!(usd_to_units(1.0), UNITS_PER_USD);
        assert_eq!(usd_to_units(0.000_000_000_1), 1);
        assert_eq!(units_to_usd(usd_to_units(12.345_678_9)), 12.345_678_9);
        // A million one-unit charges sum without drift.
        assert_eq!((0..1_000_000).map(|_| usd_to_units(0.000_000_000_1)).sum::<i64>(), 1_000_000);
    }

    #[test]
    fn a_cache_hit_pays_its_share_of_what_it_saved() {
        let policy = PricingPolicy { cache_hit_share_of_savings: 0.25, ..PricingPolicy::default() };
        let saved = Charge { actual_cost_units: 800, charged_units: 1_000, baseline_units: 5_000 };
        assert_eq!(
            policy.cache_hit_charge(saved),
            Charge { actual_cost_units: 0, charged_units: 250, baseline_units: 5_000 }
        );
    }

    #[test]
    fn out_of_range_shares_are_refused() {
        assert!(PricingPolicy::default().validate().is_ok());
        for bad in [
            PricingPolicy { margin_auto: -0.1, ..PricingPolicy::default() },
            PricingPolicy { byok_fee_share: 1.5, ..PricingPolicy::default() },
            PricingPolicy { self_hosted_share_of_baseline: f64::NAN, ..PricingPolicy::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
