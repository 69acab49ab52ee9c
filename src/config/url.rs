//! `[url]`: URL intelligence's resolver, roots, registries, lists, cache and caps.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;
use tokaroo_actors::url::{
    dns::DnsSettings,
    pipeline::{CacheTtls, PipelineSettings},
    redirects::RedirectSettings,
    service::{UrlSettings, WebhookSettings},
    tls::TlsSettings,
};

use super::ConfigError;

/// See `[url]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UrlConfig {
    /// Name servers (`ip:port`) to ask; empty: the system's.
    pub dns_servers: Vec<String>,
    pub dns_timeout_ms: u64,
    /// PEM certificates that TLS checks trust instead of the shipped Mozilla roots.
    pub tls_roots_file: Option<PathBuf>,
    pub tls_timeout_ms: u64,
    /// An IANA RDAP bootstrap file (`dns.json`) replacing the shipped snapshot.
    pub rdap_bootstrap_file: Option<PathBuf>,
    /// TLD → RDAP base URL, over the bootstrap.
    pub rdap_servers: BTreeMap<String, String>,
    pub rdap_timeout_ms: u64,
    /// JSON brands added to (or replacing by name in) the shipped list.
    pub brands_file: Option<PathBuf>,
    /// JSON parking services added to the shipped list.
    pub parking_file: Option<PathBuf>,
    pub max_redirects: usize,
    pub hop_timeout_ms: u64,
    pub max_page_bytes: usize,
    pub dns_ttl_secs: u64,
    pub tls_ttl_secs: u64,
    pub rdap_ttl_secs: u64,
    pub page_ttl_secs: u64,
    pub cache_entries: usize,
    pub history_per_account: usize,
    pub profiles_per_account: usize,
    pub open_batches_per_account: usize,
    pub batch_concurrency: usize,
    pub account_concurrency: usize,
    pub global_concurrency: usize,
    pub webhook_attempts: u32,
    pub webhook_backoff_ms: u64,
    pub webhook_max_backoff_secs: u64,
    pub webhook_timeout_secs: u64,
    /// Addresses URL checks and webhooks may reach whatever their range; otherwise only
    /// public addresses, for every account (the operator's too).
    pub allowed_cidrs: Vec<String>,
}

impl Default for UrlConfig {
    fn default() -> Self {
        let s = UrlSettings::default();
        let p = &s.pipeline;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            dns_servers: Vec::new(),
            dns_timeout_ms: ms(p.dns.timeout),
            tls_roots_file: None,
            tls_timeout_ms: ms(p.tls.timeout),
            rdap_bootstrap_file: None,
            rdap_servers: BTreeMap::new(),
            rdap_timeout_ms: ms(p.rdap_timeout),
            brands_file: None,
            parking_file: None,
            max_redirects: p.redirects.max_hops,
            hop_timeout_ms: ms(p.redirects.hop_timeout),
            max_page_bytes: p.redirects.max_body_bytes,
            dns_ttl_secs: p.ttls.dns.as_secs(),
            tls_ttl_secs: p.ttls.tls.as_secs(),
            rdap_ttl_secs: p.ttls.rdap.as_secs(),
            page_ttl_secs: p.ttls.page.as_secs(),
            cache_entries: p.cache_capacity,
            history_per_account: s.history_per_account,
            profiles_per_account: s.profiles_per_account,
            open_batches_per_account: s.open_batches_per_account,
            batch_concurrency: s.batch_concurrency,
            account_concurrency: s.account_concurrency,
            global_concurrency: s.global_concurrency,
            webhook_attempts: s.webhook.attempts,
            webhook_backoff_ms: ms(s.webhook.backoff),
            webhook_max_backoff_secs: s.webhook.max_backoff.as_secs(),
            webhook_timeout_secs: s.webhook.timeout.as_secs(),
            allowed_cidrs: Vec::new(),
        }
    }
}

fn read(what: &str, path: &Option<PathBuf>) -> Result<Option<String>, ConfigError> {
    path.as_ref()
        .map(|p| {
            std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid(format!("url.{what} {}: {e}", p.display())))
        })
        .transpose()
}

impl UrlConfig {
    /// The `TOKAROO_URL_*` overrides.
    pub fn apply_env(&mut self, get: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let list = |v: String| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if let Some(v) = get("TOKAROO_URL_DNS_SERVERS") {
            self.dns_servers = list(v);
        }
        if let Some(v) = get("TOKAROO_URL_TLS_ROOTS_FILE").filter(|v| !v.is_empty()) {
            self.tls_roots_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_URL_RDAP_BOOTSTRAP_FILE").filter(|v| !v.is_empty()) {
            self.rdap_bootstrap_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_URL_RDAP_SERVERS") {
            for pair in list(v) as Vec<String> {
                let (tld, base) = pair.split_once('=').ok_or_else(|| ConfigError::Env {
                    var: "TOKAROO_URL_RDAP_SERVERS",
                    message: format!("{pair:?} is not tld=https://rdap.example/"),
                })?;
                self.rdap_servers.insert(tld.trim().to_owned(), base.trim().to_owned());
            }
        }
        if let Some(v) = get("TOKAROO_URL_BRANDS_FILE").filter(|v| !v.is_empty()) {
            self.brands_file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("TOKAROO_URL_PARKING_FILE").filter(|v| !v.is_empty()) {
            self.parking_file = Some(PathBuf::from(v));
        }
        let numbers: [(&'static str, &mut u64); 4] = [
            ("TOKAROO_URL_DNS_TIMEOUT_MS", &mut self.dns_timeout_ms),
            ("TOKAROO_URL_HOP_TIMEOUT_MS", &mut self.hop_timeout_ms),
            ("TOKAROO_URL_WEBHOOK_BACKOFF_MS", &mut self.webhook_backoff_ms),
            ("TOKAROO_URL_WEBHOOK_TIMEOUT_SECS", &mut self.webhook_timeout_secs),
        ];
        for (var, slot) in numbers {
            if let Some(v) = get(var) {
                *slot = v.trim().parse().map_err(|e| ConfigError::Env { var, message: format!("{e}") })?;
            }
        }
        if let Some(v) = get("TOKAROO_URL_ALLOWED_CIDRS") {
            self.allowed_cidrs = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        }
        if let Some(v) = get("TOKAROO_URL_BATCH_CONCURRENCY") {
            self.batch_concurrency = v
                .trim()
                .parse()
                .map_err(|e| ConfigError::Env { var: "TOKAROO_URL_BATCH_CONCURRENCY", message: format!("{e}") })?;
        }
        Ok(())
    }

    /// What the engine takes: files read, servers parsed.
    pub fn settings(&self) -> Result<UrlSettings, ConfigError> {
        let servers = self
            .dns_servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                    .map_err(|_| ConfigError::Invalid(format!("url.dns_servers: {s:?} is not ip or ip:port")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let roots = match read("tls_roots_file", &self.tls_roots_file)? {
            Some(pem) => tokaroo_actors::url::tls::roots_from_pem(&pem)
                .map_err(|e| ConfigError::Invalid(format!("url.tls_roots_file: {e}")))?,
            None => Vec::new(),
        };
        let for_rdap = |(tld, base): (&String, &String)| {
            if base.starts_with("https://") || base.starts_with("http://") {
                Ok((tld.clone(), base.clone()))
            } else {
                Err(ConfigError::Invalid(format!("url.rdap_servers.{tld}: {base:?} is not an http(s) URL")))
            }
        };
        if [self.batch_concurrency, self.account_concurrency, self.global_concurrency, self.max_redirects].contains(&0)
        {
            return Err(ConfigError::Invalid(
                "url.batch_concurrency, url.account_concurrency, url.global_concurrency and url.max_redirects must \
                 be at least 1"
                    .into(),
            ));
        }
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        Ok(UrlSettings {
            pipeline: PipelineSettings {
                dns: DnsSettings { servers, timeout: ms(self.dns_timeout_ms.max(1)) },
                tls: TlsSettings { roots, timeout: ms(self.tls_timeout_ms.max(1)) },
                redirects: RedirectSettings {
                    max_hops: self.max_redirects,
                    hop_timeout: ms(self.hop_timeout_ms.max(1)),
                    max_body_bytes: self.max_page_bytes,
                },
                rdap_timeout: ms(self.rdap_timeout_ms.max(1)),
                ttls: CacheTtls {
                    dns: secs(self.dns_ttl_secs),
                    tls: secs(self.tls_ttl_secs),
                    rdap: secs(self.rdap_ttl_secs),
                    page: secs(self.page_ttl_secs),
                },
                cache_capacity: self.cache_entries.max(1),
            },
            brands_extra: read("brands_file", &self.brands_file)?,
            parking_extra: read("parking_file", &self.parking_file)?,
            rdap_bootstrap: read("rdap_bootstrap_file", &self.rdap_bootstrap_file)?,
            rdap_servers: self.rdap_servers.iter().map(for_rdap).collect::<Result<_, _>>()?,
            history_per_account: self.history_per_account.max(1),
            profiles_per_account: self.profiles_per_account,
            open_batches_per_account: self.open_batches_per_account.max(1),
            batch_concurrency: self.batch_concurrency,
            account_concurrency: self.account_concurrency,
            global_concurrency: self.global_concurrency,
            webhook: WebhookSettings {
                attempts: self.webhook_attempts.max(1),
                backoff: ms(self.webhook_backoff_ms.max(1)),
                max_backoff: secs(self.webhook_max_backoff_secs.max(1)),
                timeout: secs(self.webhook_timeout_secs.max(1)),
            },
            allowed_cidrs: tokaroo_actors::routing::netguard::parse_cidrs(&self.allowed_cidrs)
                .map_err(|e| ConfigError::Invalid(format!("url.allowed_cidrs: {e}")))?,
        })
    }
}
