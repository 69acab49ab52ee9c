//! The upstream connections requests can be routed to: managed provider accounts (from
//! config), accounts' own provider keys (BYOK) and accounts' self-hosted endpoints. Each is one
//! [`Upstream`], named `provider:{provider}:{connection}` or `endpoint:{id}`, and visible only
//! to the scope that owns it.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
};

use dashmap::DashMap;
use serde::Serialize;

use crate::{
    routing::health::{Breaker, Breakers, HealthSnapshot, HealthView},
    routing::providers::{Connection, ProviderKind},
};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Owner {
    /// Tokaroo's own provider account, from config or environment.
    Managed,
    /// The built-in offline provider.
    Simulator,
    /// An account's own provider key, optionally bound to one workspace.
    Byok { account_id: String, workspace_slug: Option<String>, key_id: String },
    /// An account's self-hosted OpenAI-compatible endpoint.
    Local { account_id: String, workspace_slug: Option<String>, endpoint_id: String },
}

/// Who pays the provider for a route, which decides how the request is priced. Its string is
/// a usage row's `billing_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingMode {
    /// We pay the provider and charge cost plus margin.
    Managed,
    /// Nobody pays; priced like managed traffic so the quickstart shows real figures.
    Simulator,
    /// The account's own provider key: the provider bills the account, we charge a fee.
    Byok,
    /// The account's own endpoint: we charge a share of the baseline.
    SelfHosted,
}

impl BillingMode {
    pub const ALL: [Self; 4] = [Self::Managed, Self::Simulator, Self::Byok, Self::SelfHosted];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Simulator => "simulator",
            Self::Byok => "byok",
            Self::SelfHosted => "self_hosted",
        }
    }

    /// Reads a stored usage row's `billing_mode`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == s)
    }
}

pub struct Upstream {
    pub name: String,
    pub kind: ProviderKind,
    pub conn: Connection,
    /// The connection's own breaker as its actor last published it: failures that make it
    /// unusable for every model.
    pub health: HealthView,
    /// One breaker per model that failed here on its own ([`Blame::Model`]), created on its
    /// first failure. A managed connection is shared by every tenant: a model the operator's
    /// account lacks must not cool the other models down with it.
    ///
    /// [`Blame::Model`]: crate::routing::health::Blame::Model
    model_health: DashMap<String, Arc<HealthView>>,
    /// The connection's actor (`routing::provider`), the one writer of its health; `None`
    /// before it starts and while it restarts.
    pub(crate) actor: RwLock<Option<ractor::ActorCell>>,
    /// Serialises the writes made while no actor owns the breakers with an actor taking them
    /// over (see `provider::apply_unowned`).
    pub(crate) unowned_writes: std::sync::Mutex<()>,
    pub owner: Owner,
    /// Self-hosted endpoints: the models discovered at the last check, and the preferred one.
    pub local_models: RwLock<Vec<String>>,
    pub default_model: Option<String>,
}

impl Upstream {
    pub fn new(name: String, kind: ProviderKind, conn: Connection, owner: Owner) -> Self {
        Self {
            name,
            kind,
            conn,
            health: HealthView::default(),
            model_health: DashMap::new(),
            actor: RwLock::new(None),
            unowned_writes: std::sync::Mutex::new(()),
            owner,
            local_models: RwLock::default(),
            default_model: None,
        }
    }

    /// Whether `model` may be routed here now: neither the connection nor that model on it is
    /// cooling down. Planning, the gateway's attempts and the hold all ask this.
    pub fn usable_for(&self, model: &str) -> bool {
        !self.health.is_cooling_down() && !self.model_health.get(model).is_some_and(|h| h.is_cooling_down())
    }

    /// The breakers as last published, to resume from (a restarted actor keeps the counts).
    pub(crate) fn resume_breakers(&self) -> Breakers {
        Breakers {
            connection: Breaker::resume(&self.health),
            models: self.model_health.iter().map(|e| (e.key().clone(), Breaker::resume(e.value()))).collect(),
        }
    }

    /// Publishes `breakers` for routing to read.
    pub(crate) fn publish(&self, breakers: &Breakers, changed_model: Option<&str>) {
        self.health.publish(breakers.connection.state());
        if let Some((model, breaker)) = changed_model.and_then(|m| breakers.models.get_key_value(m)) {
            self.model_health.entry(model.clone()).or_default().publish(breaker.state());
        }
    }

    /// The breakers of models that failed here on their own, by model.
    pub fn model_health(&self) -> BTreeMap<String, HealthSnapshot> {
        self.model_health.iter().map(|e| (e.key().clone(), e.value().snapshot())).collect()
    }

    /// Whether a request from this account and workspace may use this upstream.
    pub fn visible_to(&self, account_id: &str, workspace: Option<&str>) -> bool {
        match &self.owner {
            Owner::Managed | Owner::Simulator => true,
            Owner::Byok { account_id: a, workspace_slug: w, .. }
            | Owner::Local { account_id: a, workspace_slug: w, .. } => {
                a == account_id && (w.is_none() || w.as_deref() == workspace)
            }
        }
    }

    /// Bound to the request's own workspace (preferred over account-wide connections).
    pub fn workspace_specific(&self) -> bool {
        matches!(
            &self.owner,
            Owner::Byok { workspace_slug: Some(_), .. } | Owner::Local { workspace_slug: Some(_), .. }
        )
    }

    /// Which of a provider's connections is tried first (lowest): the tenant's own key for
    /// the request's workspace, then its account-wide key, then Tokaroo's.
    pub fn preference(&self) -> u8 {
        match self.owner {
            Owner::Byok { .. } if self.workspace_specific() => 0,
            Owner::Byok { .. } => 1,
            _ => 2,
        }
    }

    pub fn execution_source(&self) -> &'static str {
        match self.owner {
            Owner::Managed => "managed",
            Owner::Simulator => "simulator",
            Owner::Byok { .. } => "byok",
            Owner::Local { .. } => "local_endpoint",
        }
    }

    pub fn billing_mode(&self) -> BillingMode {
        match self.owner {
            Owner::Managed => BillingMode::Managed,
            Owner::Simulator => BillingMode::Simulator,
            Owner::Byok { .. } => BillingMode::Byok,
            Owner::Local { .. } => BillingMode::SelfHosted,
        }
    }

    pub fn serves_local_model(&self, model: &str) -> bool {
        let models = self.local_models.read().map(|m| m.clone()).unwrap_or_default();
        models.iter().any(|m| m == model || m.strip_suffix(":latest") == Some(model))
    }

    /// The model to ask a self-hosted endpoint for when the request names a mode.
    pub fn local_default_model(&self) -> Option<String> {
        let models = self.local_models.read().map(|m| m.clone()).unwrap_or_default();
        match &self.default_model {
            Some(d) if models.is_empty() || models.iter().any(|m| m == d || m.strip_suffix(":latest") == Some(d)) => {
                Some(d.clone())
            }
            // An embedding model cannot answer chat.
            _ => models.iter().find(|m| !looks_like_embedding_model(m)).cloned(),
        }
    }
}

/// Names of embedding models as self-hosted servers report them (nomic-embed-text, bge-m3,
/// multilingual-e5-small, all-MiniLM-L6-v2, gte-base, ...).
pub fn looks_like_embedding_model(name: &str) -> bool {
    let n = name.to_lowercase();
    ["embed", "e5-", "bge", "minilm", "gte-", "nomic"].iter().any(|k| n.contains(k))
}

#[derive(Default)]
pub struct Upstreams {
    by_name: DashMap<String, Arc<Upstream>>,
}

impl Upstreams {
    pub fn insert(&self, upstream: Arc<Upstream>) {
        self.by_name.insert(upstream.name.clone(), upstream);
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.remove(name).map(|(_, u)| u)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Upstream>> {
        self.by_name.get(name).map(|u| u.value().clone())
    }

    pub fn all(&self) -> Vec<Arc<Upstream>> {
        let mut all: Vec<_> = self.by_name.iter().map(|u| u.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Everything this scope may route to, simulator excluded.
    pub fn for_scope(&self, account_id: &str, workspace: Option<&str>) -> Vec<Arc<Upstream>> {
        let mut list: Vec<_> = self
            .by_name
            .iter()
            .filter(|u| u.owner != Owner::Simulator && u.visible_to(account_id, workspace))
            .map(|u| u.value().clone())
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub fn has_managed(&self) -> bool {
        self.by_name.iter().any(|u| u.owner == Owner::Managed)
    }
}

/// Settings for one managed provider account, from config and environment.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<crate::security::secrets::Secret>,
    pub timeout: std::time::Duration,
}

impl Upstreams {
    /// The managed connections, or the labelled simulator when there are none.
    pub fn managed(settings: &[UpstreamSettings], http: &reqwest::Client) -> (Self, Option<Arc<Upstream>>) {
        let upstreams = Self::default();
        for s in settings {
            let conn = Connection {
                provider: s.kind,
                base_url: s.base_url.clone(),
                api_key: s.api_key.as_ref().map(|k| k.expose().to_owned()),
                extra_headers: Vec::new(),
                http: http.clone(),
                timeout: s.timeout,
                chat_url: Default::default(),
                guard: None,
            };
            upstreams.insert(Arc::new(Upstream::new(
                format!("provider:{}:managed", s.kind.as_str()),
                s.kind,
                conn,
                Owner::Managed,
            )));
        }
        let simulator = settings.is_empty().then(|| {
            tracing::warn!(
                "no provider configured: the built-in SIMULATOR answers every request \
                 (set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or GROQ_API_KEY)"
            );
            let conn = Connection {
                provider: ProviderKind::Simulator,
                base_url: String::new(),
                api_key: None,
                extra_headers: Vec::new(),
                http: http.clone(),
                timeout: std::time::Duration::from_secs(30),
                chat_url: Default::default(),
                guard: None,
            };
            Arc::new(Upstream::new(
                "provider:simulator:builtin".into(),
                ProviderKind::Simulator,
                conn,
                Owner::Simulator,
            ))
        });
        if let Some(sim) = &simulator {
            upstreams.insert(sim.clone());
        }
        (upstreams, simulator)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn upstream() -> Upstream {
        let conn = Connection {
            provider: ProviderKind::OpenAi,
            base_url: "http://127.0.0.1:9".into(),
            api_key: None,
            extra_headers: Vec::new(),
            http: crate::routing::client::client(),
            timeout: std::time::Duration::from_secs(1),
            chat_url: Default::default(),
            guard: None,
        };
        Upstream::new("provider:openai:managed".into(), ProviderKind::OpenAi, conn, Owner::Managed)
    }

    /// The strings are on stored usage rows and in `/v1/usage` answers.
    #[test]
    fn billing_modes_parse_what_they_print() {
        assert_eq!(BillingMode::ALL.map(BillingMode::as_str), ["managed", "simulator", "byok", "self_hosted"]);
        for mode in BillingMode::ALL {
            assert_eq!(BillingMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        assert_eq!(BillingMode::parse("local"), None);
    }
}
