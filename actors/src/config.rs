//! What an engine is started with: [`EngineConfig`], built by the `tokaroo` crate from its
//! configuration file, environment and flags.

use std::time::Duration;

use crate::{
    money::billing::PricingPolicy,
    routing::{catalog::Catalog, upstreams::UpstreamSettings},
    tree::supervisor::RestartPolicy,
};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub default_rpm: u32,
    pub restart_policy: RestartPolicy,
    /// Accepted as the operator's dashboard session token (automation).
    pub admin_token: Option<crate::security::secrets::Secret>,
    /// A dashboard session unused for this long expires; each use pushes it out again.
    pub session_ttl: Duration,
    pub admission_timeout: Duration,
    /// Enables `Engine::inject_failure` (tests only).
    pub fault_injection: bool,
    pub catalog: Catalog,
    pub managed_upstreams: Vec<UpstreamSettings>,
    pub pricing: PricingPolicy,
    pub payments: crate::money::payments::PaymentSettings,
    pub funding: FundingSettings,
    pub cache: crate::cache::CacheSettings,
    pub endpoint_recheck: Duration,
    /// Hex master key for sealed secrets; else `<data_dir>/master.key`.
    pub master_key: Option<crate::security::secrets::Secret>,
    pub provider_base_urls: Vec<(crate::routing::providers::ProviderKind, String)>,
    /// What tenants' endpoints may reach, and this server's listen addresses.
    pub net: crate::routing::netguard::NetSettings,
    /// The operator's caps on tenants (rate limits, record counts).
    pub limits: AccountLimits,
    /// Which embedder `Engine::embedder` runs (neural by default).
    pub embedder: crate::embed::EmbedderSettings,
    /// Which embedder makes source chunks' vectors: the static model from the directory given
    /// (`serve` gives it one), the main embedder without one.
    pub chunk_embedder: crate::embed::ChunkEmbedderSettings,
    /// The knowledge base's ranking weights.
    pub ranking: crate::knowledge::pack::RankWeights,
    /// Caps and defaults of the mission harness.
    pub missions: crate::harness::MissionLimits,
    /// Action guardrails' defaults.
    pub actions: crate::actions::ActionSettings,
    /// URL intelligence: its resolver, roots, registries, lists and caps.
    pub url: crate::url::service::UrlSettings,
}

/// 30 days: a dashboard left alone for a month signs in again.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            default_rpm: 60,
            restart_policy: RestartPolicy::default(),
            admin_token: None,
            session_ttl: DEFAULT_SESSION_TTL,
            admission_timeout: Duration::from_secs(5),
            fault_injection: false,
            catalog: Catalog::builtin(),
            managed_upstreams: Vec::new(),
            pricing: PricingPolicy::default(),
            payments: crate::money::payments::PaymentSettings::default(),
            funding: FundingSettings::default(),
            cache: crate::cache::CacheSettings::default(),
            endpoint_recheck: Duration::from_secs(30),
            master_key: None,
            provider_base_urls: crate::routing::providers::default_base_urls(),
            net: crate::routing::netguard::NetSettings::default(),
            limits: AccountLimits::default(),
            embedder: crate::embed::EmbedderSettings::default(),
            chunk_embedder: crate::embed::ChunkEmbedderSettings::default(),
            ranking: crate::knowledge::pack::RankWeights::default(),
            missions: crate::harness::MissionLimits::default(),
            actions: crate::actions::ActionSettings::default(),
            url: crate::url::service::UrlSettings::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccountLimits {
    /// The highest `rate_limit_rpm` a tenant may give a key (`rate_limit.max_rpm`).
    pub max_rpm: u32,
    pub keys: usize,
    pub workspaces: usize,
    pub provider_keys: usize,
    pub endpoints: usize,
    /// Memory notes a tenant account may hold (all its workspaces together).
    pub memory_notes: usize,
}

impl Default for AccountLimits {
    fn default() -> Self {
        Self {
            max_rpm: 100_000,
            keys: 1_000,
            workspaces: 1_000,
            provider_keys: 100,
            endpoints: 100,
            memory_notes: 100_000,
        }
    }
}

/// The `[billing]` settings the engine needs.
#[derive(Debug, Clone)]
pub struct FundingSettings {
    /// Smallest checkout or top-up, in USD.
    pub min_payment_usd: f64,
    pub terms_version: String,
    /// Where clients reach this server (links in answers).
    pub public_url: String,
    pub terms_url: String,
    /// Auto pay tops an account up when its balance falls below this.
    pub auto_pay_threshold_usd: f64,
    /// How long a payment's credit waits for the ledger; past it the caller fails (a webhook
    /// answers 503 and is retried) and the credit is not sent again.
    pub credit_timeout: Duration,
    /// How often the reconciler lists recent PaymentIntents; `None`: only on demand.
    pub reconcile_interval: Option<Duration>,
    /// How far back the reconciler looks (Stripe retries a webhook for up to 3 days).
    pub reconcile_lookback: Duration,
}

impl Default for FundingSettings {
    fn default() -> Self {
        Self {
            min_payment_usd: 5.0,
            terms_version: "2026-11".into(),
            public_url: "http://127.0.0.1:8080".into(),
            terms_url: "http://127.0.0.1:8080/v1/billing/activation".into(),
            auto_pay_threshold_usd: 5.0,
            credit_timeout: crate::money::ledger::DEFAULT_CREDIT_TIMEOUT,
            reconcile_interval: Some(Duration::from_secs(300)),
            reconcile_lookback: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl FundingSettings {
    pub fn payments_url(&self) -> String {
        format!("{}/v1/billing/activation", self.public_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every secret an engine is configured with stays out of `Debug`.
    #[test]
    fn engine_config_debug_redacts_secrets() {
        let config = EngineConfig {
            admin_token: Some("SECRET-admin-token-0123456789abcdef".into()),
            master_key: Some("SECRET-master".into()),
            managed_upstreams: vec![UpstreamSettings {
                kind: crate::routing::providers::ProviderKind::OpenAi,
                base_url: "http://127.0.0.1:1".into(),
                api_key: Some("SECRET-openai".into()),
                timeout: Duration::from_secs(1),
            }],
            payments: crate::money::payments::PaymentSettings {
                stripe_secret_key: Some("SECRET-stripe".into()),
                stripe_webhook_secret: Some("SECRET-whsec".into()),
                ..Default::default()
            },
            ..EngineConfig::default()
        };
        for dump in
            [format!("{config:?}"), format!("{:?}", config.managed_upstreams[0]), format!("{:?}", config.payments)]
        {
            assert!(!dump.contains("SECRET-"), "a secret leaked into Debug: {dump}");
            assert!(dump.contains("<redacted>"), "{dump}");
        }
    }
}
