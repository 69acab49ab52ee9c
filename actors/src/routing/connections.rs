//! An account's own upstream connections: provider keys (BYOK) and self-hosted endpoints.
//! Secrets, custom headers and credentials in endpoint URLs are sealed at rest and never
//! leave the engine. Endpoint addresses pass the [`netguard`](crate::routing::netguard) when they are
//! registered and on every connection.

use std::sync::Arc;

use serde_json::{Map, Value};
use tokaroo_storage::records::{LocalEndpoint, ProviderKey};

use crate::{
    directory::limits::Counted,
    directory::Directory,
    error::EngineError,
    routing::health::HealthSnapshot,
    routing::provider::check_endpoint,
    routing::provider::{recheck_name, upstream_specs, ENDPOINTS, PROVIDERS},
    routing::providers::{Connection, ProviderKind},
    routing::upstreams::{Owner, Upstream},
    tree::supervisor,
};

pub struct NewProviderKey {
    pub provider: String,
    pub label: Option<String>,
    pub secret: String,
    pub workspace_slug: Option<String>,
}

pub struct ProviderKeyView {
    pub record: ProviderKey,
    pub workspace_name: Option<String>,
    /// Live health from the key's `provider:*` actor.
    pub health: Option<HealthSnapshot>,
}

pub struct NewEndpoint {
    pub url: String,
    pub label: Option<String>,
    pub default_model: Option<String>,
    pub headers: Option<Map<String, Value>>,
    pub workspace_slug: Option<String>,
}

#[derive(Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub label: Option<String>,
    pub default_model: Option<Option<String>>,
    pub headers: Option<Option<Map<String, Value>>>,
}

pub struct EndpointView {
    pub record: LocalEndpoint,
    pub has_headers: bool,
}

const BYOK_PROVIDERS: &[&str] = &["openai", "anthropic", "google", "groq"];

fn byok_name(kind: ProviderKind, key_id: &str) -> String {
    format!("provider:{}:{key_id}", kind.as_str())
}

fn endpoint_name(id: &str) -> String {
    format!("endpoint:{id}")
}

/// OpenAI-compatible servers take requests under `/v1`; Ollama's root URL is accepted too.
fn endpoint_base_url(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/v1") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1")
    }
}

/// Labels, model names, URLs and secrets are kept, listed and some held in memory for
/// good: each has a ceiling.
const MAX_LABEL_CHARS: usize = 200;
const MAX_MODEL_CHARS: usize = 256;
const MAX_URL_BYTES: usize = 2048;
const MAX_SECRET_BYTES: usize = 4096;
const MAX_HEADERS: usize = 32;
const MAX_HEADERS_BYTES: usize = 8 << 10;

fn check_len(field: &str, value: &str, max: usize, unit: &str) -> Result<(), EngineError> {
    let len = if unit == "characters" { value.chars().count() } else { value.len() };
    if len > max {
        return Err(EngineError::invalid(format!("{field} is {len} {unit}; at most {max}")));
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<reqwest::Url, EngineError> {
    check_len("url", url, MAX_URL_BYTES, "bytes")?;
    let parsed = reqwest::Url::parse(url).map_err(|e| EngineError::invalid(format!("url is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(EngineError::invalid("url must be an http:// or https:// URL with a host"));
    }
    Ok(parsed)
}

fn has_credentials(url: &reqwest::Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `url` as it may be shown and stored in the clear: credentials become `***`.
fn shown_url(given: &str, url: &reqwest::Url) -> String {
    if !has_credentials(url) {
        return given.to_owned();
    }
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// `url` without its credentials, and the `Authorization` they stand for. They are sent as a
/// header of ours rather than left to the client, so no URL we send or log carries them.
fn split_credentials(given: &str) -> (String, Option<String>) {
    let Ok(mut url) = reqwest::Url::parse(given) else { return (given.to_owned(), None) };
    if !has_credentials(&url) {
        return (given.to_owned(), None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let pair = format!("{}:{}", decode(url.username()), decode(url.password().unwrap_or_default()));
    use base64::Engine as _;
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair));
    let _ = url.set_password(None);
    let _ = url.set_username("");
    (url.to_string(), Some(auth))
}

/// Headers an endpoint may not set. `Host` would aim the request at another virtual host
/// than the address that was checked; hop-by-hop headers describe our connection, not the
/// request, and set by hand they break its framing (request smuggling) or talk to proxies.
fn forbidden_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.starts_with("proxy-")
        // Cloud metadata services ask for these to prove a request is not forwarded: an
        // endpoint has no business sending them.
        || name.starts_with("x-aws-ec2-metadata-token")
        || ["metadata-flavor", "metadata", "x-google-metadata-request"].contains(&name.as_str())
        || ["host", "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "content-length"]
            .contains(&name.as_str())
}

fn headers_list(headers: &Map<String, Value>) -> Result<Vec<(String, String)>, EngineError> {
    let bytes: usize = headers.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADERS_BYTES {
        return Err(EngineError::invalid(format!(
            "headers: at most {MAX_HEADERS} headers of {MAX_HEADERS_BYTES} bytes in all"
        )));
    }
    headers
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().ok_or_else(|| EngineError::invalid(format!("headers.{k} must be a string")))?;
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| EngineError::invalid(format!("headers: {k:?} is not a valid header name")))?;
            if forbidden_header(k) {
                return Err(EngineError::invalid(format!(
                    "headers: {k} cannot be set on an endpoint (Host, hop-by-hop and cloud metadata headers are refused)"
                )));
            }
            reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| EngineError::invalid(format!("headers.{k} is not a valid header value")))?;
            Ok((k.clone(), value.to_owned()))
        })
        .collect()
}

/// What connections work with: the live upstream set, how to reach providers, and the
/// sealing and guarding of what accounts hand us.
pub struct ConnectionsState {
    pub store: tokaroo_storage::Store,
    pub registry: crate::tree::registry::Registry,
    pub upstreams: Arc<crate::routing::upstreams::Upstreams>,
    /// How often self-hosted endpoints are rechecked.
    pub endpoint_recheck: std::time::Duration,
    /// The pooled HTTP client for upstreams the operator configured (managed, BYOK).
    pub http: reqwest::Client,
    /// Clients and checks for addresses accounts chose (self-hosted endpoints).
    pub endpoint_guards: crate::routing::netguard::EndpointGuards,
    pub secrets: crate::security::secrets::SecretBox,
    /// Where each provider's API lives (managed connections and BYOK keys alike).
    pub provider_base_urls: Vec<(ProviderKind, String)>,
}

impl ConnectionsState {
    pub(crate) fn byok_upstream(&self, key: &ProviderKey, secret: String) -> Option<Arc<Upstream>> {
        let kind = ProviderKind::parse(&key.provider)?;
        let base_url = self.provider_base_urls.iter().find(|(k, _)| *k == kind).map(|(_, u)| u.clone())?;
        let conn = Connection {
            provider: kind,
            base_url,
            api_key: Some(secret),
            extra_headers: Vec::new(),
            http: self.http.clone(),
            timeout: std::time::Duration::from_secs(60),
            chat_url: Default::default(),
            guard: None,
        };
        let owner = Owner::Byok {
            account_id: key.account_id.clone(),
            workspace_slug: key.workspace_slug.clone(),
            key_id: key.id.clone(),
        };
        Some(Arc::new(Upstream::new(byok_name(kind, &key.id), kind, conn, owner)))
    }

    /// The endpoint's URL with its credentials, opened.
    fn endpoint_url(&self, ep: &LocalEndpoint) -> Result<String, EngineError> {
        match &ep.sealed_url {
            Some(sealed) => self.secrets.open(sealed),
            None => Ok(ep.url.clone()),
        }
    }

    /// `is_operator` picks the endpoint's guard: the operator's account may reach private
    /// networks.
    pub(crate) fn endpoint_upstream(
        &self,
        ep: &LocalEndpoint,
        mut headers: Vec<(String, String)>,
        is_operator: bool,
    ) -> Result<Arc<Upstream>, EngineError> {
        let (url, authorization) = split_credentials(&self.endpoint_url(ep)?);
        if let Some(auth) = authorization {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                headers.push(("Authorization".into(), auth));
            }
        }
        let base_url = endpoint_base_url(&url);
        let port = reqwest::Url::parse(&base_url).ok().and_then(|u| u.port_or_known_default()).unwrap_or(80);
        let guard = self.endpoint_guards.for_account(is_operator).clone();
        let conn = Connection {
            provider: ProviderKind::Local,
            base_url,
            api_key: None,
            extra_headers: headers,
            http: guard.client(port),
            timeout: std::time::Duration::from_secs(60),
            chat_url: Default::default(),
            guard: Some(guard),
        };
        let owner = Owner::Local {
            account_id: ep.account_id.clone(),
            workspace_slug: ep.workspace_slug.clone(),
            endpoint_id: ep.id.clone(),
        };
        let mut upstream = Upstream::new(endpoint_name(&ep.id), ProviderKind::Local, conn, owner);
        upstream.default_model = ep.default_model.clone();
        if let Ok(mut models) = upstream.local_models.write() {
            *models = ep.models.clone();
        }
        // Seeds the published health from the stored check, before the endpoint's actor (its
        // one writer from then on) starts.
        let mut seed = crate::routing::health::Breakers::default();
        seed.connection.set_reachable(ep.status == "healthy");
        upstream.publish(&seed, None);
        Ok(Arc::new(upstream))
    }

    /// Rebuilds every account connection from storage at start.
    pub(crate) fn load_connections(&self, operator_account_id: Option<&str>) -> Result<(), EngineError> {
        for key in self.store.provider_keys.all()? {
            match self.secrets.open(&key.sealed_secret).map(|s| self.byok_upstream(&key, s)) {
                Ok(Some(upstream)) => self.upstreams.insert(upstream),
                Ok(None) => {
                    tracing::warn!(key = %key.id, provider = %key.provider, "provider key for an unknown provider skipped")
                }
                Err(error) => tracing::error!(key = %key.id, %error, "provider key could not be opened"),
            }
        }
        for ep in self.store.local_endpoints.all()? {
            let headers = match &ep.sealed_headers {
                Some(sealed) => {
                    serde_json::from_str::<Vec<(String, String)>>(&self.secrets.open(sealed)?).unwrap_or_default()
                }
                None => Vec::new(),
            };
            let is_operator = operator_account_id == Some(ep.account_id.as_str());
            self.upstreams.insert(self.endpoint_upstream(&ep, headers, is_operator)?);
        }
        Ok(())
    }
}

/// Accounts' provider keys (BYOK) and self-hosted endpoints, each an upstream with an actor.
#[derive(Clone)]
pub struct Connections {
    state: Arc<ConnectionsState>,
    /// Workspaces to bind to, and the per-account creation caps.
    directory: Directory,
}

impl Connections {
    pub(crate) fn new(state: Arc<ConnectionsState>, directory: Directory) -> Self {
        Self { state, directory }
    }

    fn store(&self) -> &tokaroo_storage::Store {
        &self.state.store
    }

    /// Makes a connection routable and starts its actor (and an endpoint's recheck) under
    /// `group`.
    async fn go_live(&self, group: &str, upstream: Arc<Upstream>) {
        self.state.upstreams.insert(upstream.clone());
        for spec in upstream_specs(upstream, self.state.endpoint_recheck) {
            supervisor::start_child(&self.state.registry, group, spec).await;
        }
    }

    /// Stops an endpoint's actor and its recheck.
    fn take_endpoint_offline(&self, name: String) {
        supervisor::stop_child(&self.state.registry, ENDPOINTS, recheck_name(&name));
        supervisor::stop_child(&self.state.registry, ENDPOINTS, name);
    }

    fn check_workspace(&self, account_id: &str, slug: &Option<String>) -> Result<Option<String>, EngineError> {
        match slug {
            Some(slug) => Ok(Some(self.directory.get_workspace(account_id, slug)?.name)),
            None => Ok(None),
        }
    }

    pub async fn create_provider_key(
        &self,
        account_id: &str,
        new: NewProviderKey,
    ) -> Result<ProviderKeyView, EngineError> {
        if !BYOK_PROVIDERS.contains(&new.provider.as_str()) {
            return Err(EngineError::invalid(format!("provider must be one of: {}", BYOK_PROVIDERS.join(", "))));
        }
        if new.secret.trim().is_empty() {
            return Err(EngineError::invalid("secret must not be empty"));
        }
        check_len("secret", &new.secret, MAX_SECRET_BYTES, "bytes")?;
        if let Some(label) = &new.label {
            check_len("label", label, MAX_LABEL_CHARS, "characters")?;
        }
        let workspace_name = self.check_workspace(account_id, &new.workspace_slug)?;
        let creating = self
            .directory
            .reserve_creation(account_id, Counted::ProviderKeys, || {
                Ok(self.store().provider_keys.count_prefix(&(account_id,)))
            })
            .await?;
        let record = ProviderKey {
            id: crate::clock::new_id(),
            account_id: account_id.to_owned(),
            label: new.label.unwrap_or_else(|| format!("{} key", new.provider)),
            provider: new.provider,
            workspace_slug: new.workspace_slug,
            sealed_secret: self.state.secrets.seal(new.secret.trim()),
            created_at_ms: crate::clock::now_ms(),
            last_success_at_ms: None,
            last_failure_at_ms: None,
            last_failure_code: None,
            estimated_reset_at_ms: None,
        };
        self.store().provider_keys.insert(&(account_id, record.id.as_str()), &record)?;
        drop(creating);
        self.store().flush().await?;
        if let Some(upstream) = self.state.byok_upstream(&record, new.secret.trim().to_owned()) {
            self.go_live(PROVIDERS, upstream).await;
        }
        Ok(ProviderKeyView { record, workspace_name, health: None })
    }

    pub fn list_provider_keys(
        &self,
        account_id: &str,
        workspace: Option<&str>,
    ) -> Result<Vec<ProviderKeyView>, EngineError> {
        let names: std::collections::HashMap<String, String> =
            self.directory.list_workspaces(account_id)?.into_iter().map(|w| (w.slug, w.name)).collect();
        let keys = self.store().provider_keys.scan_prefix(&(account_id,))?;
        Ok(keys
            .into_iter()
            .filter(|k| workspace.is_none() || k.workspace_slug.as_deref() == workspace)
            .map(|record| {
                let health = ProviderKind::parse(&record.provider)
                    .and_then(|kind| self.state.upstreams.get(&byok_name(kind, &record.id)))
                    .map(|u| u.health.snapshot());
                let workspace_name = record.workspace_slug.as_ref().and_then(|s| names.get(s).cloned());
                ProviderKeyView { record, workspace_name, health }
            })
            .collect())
    }

    pub async fn delete_provider_key(&self, account_id: &str, id: &str) -> Result<(), EngineError> {
        let record = self
            .store()
            .provider_keys
            .remove(&(account_id, id))?
            .ok_or(EngineError::NotFound { what: "Provider key" })?;
        self.store().flush().await?;
        if let Some(kind) = ProviderKind::parse(&record.provider) {
            let name = byok_name(kind, id);
            self.state.upstreams.remove(&name);
            supervisor::stop_child(&self.state.registry, PROVIDERS, name);
        }
        Ok(())
    }

    fn is_operator(&self, account_id: &str) -> bool {
        self.directory.operator_account_id().as_deref() == Some(account_id)
    }

    /// Refuses a URL whose address the account may not reach, saying why.
    async fn check_endpoint_url(&self, account_id: &str, url: &reqwest::Url) -> Result<(), EngineError> {
        let guard = self.state.endpoint_guards.for_account(self.is_operator(account_id));
        guard.check_url(url).await.map_err(|refused| EngineError::Invalid(refused.explain()))
    }

    /// The URL to store in the clear, and the whole one sealed when it carries credentials.
    fn seal_url(&self, given: &str, url: &reqwest::Url) -> (String, Option<String>) {
        let sealed = has_credentials(url).then(|| self.state.secrets.seal(given));
        (shown_url(given, url), sealed)
    }

    pub async fn create_endpoint(&self, account_id: &str, new: NewEndpoint) -> Result<EndpointView, EngineError> {
        let parsed = parse_url(&new.url)?;
        if let Some(label) = &new.label {
            check_len("label", label, MAX_LABEL_CHARS, "characters")?;
        }
        if let Some(model) = &new.default_model {
            check_len("default_model", model, MAX_MODEL_CHARS, "characters")?;
        }
        self.check_workspace(account_id, &new.workspace_slug)?;
        let headers = new.headers.as_ref().map(headers_list).transpose()?.unwrap_or_default();
        self.check_endpoint_url(account_id, &parsed).await?;
        let creating = self
            .directory
            .reserve_creation(account_id, Counted::Endpoints, || {
                Ok(self.store().local_endpoints.count_prefix(&(account_id,)))
            })
            .await?;
        let (url, sealed_url) = self.seal_url(&new.url, &parsed);
        let now = crate::clock::now_ms();
        let mut record = LocalEndpoint {
            id: crate::clock::new_id(),
            account_id: account_id.to_owned(),
            label: new.label.unwrap_or_else(|| url.clone()),
            url,
            sealed_url,
            default_model: new.default_model,
            sealed_headers: (!headers.is_empty())
                .then(|| self.state.secrets.seal(&serde_json::to_string(&headers).unwrap_or_default())),
            workspace_slug: new.workspace_slug,
            status: "unknown".into(),
            models: Vec::new(),
            last_checked_at_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let upstream = self.state.endpoint_upstream(&record, headers, self.is_operator(account_id))?;
        self.apply_check(&mut record, &upstream).await;
        self.store().local_endpoints.insert(&(account_id, record.id.as_str()), &record)?;
        drop(creating);
        self.store().flush().await?;
        self.go_live(ENDPOINTS, upstream).await;
        Ok(EndpointView { has_headers: record.sealed_headers.is_some(), record })
    }

    async fn apply_check(&self, record: &mut LocalEndpoint, upstream: &Upstream) {
        let snapshot = check_endpoint(upstream).await;
        record.status = if snapshot.unreachable { "unreachable" } else { "healthy" }.into();
        record.models = upstream.local_models.read().map(|m| m.clone()).unwrap_or_default();
        record.last_checked_at_ms = Some(crate::clock::now_ms());
    }

    fn live_endpoint(&self, mut record: LocalEndpoint) -> EndpointView {
        if let Some(u) = self.state.upstreams.get(&endpoint_name(&record.id)) {
            let snapshot = u.health.snapshot();
            record.status = if snapshot.unreachable { "unreachable".into() } else { "healthy".into() };
            record.models = u.local_models.read().map(|m| m.clone()).unwrap_or(record.models);
        }
        EndpointView { has_headers: record.sealed_headers.is_some(), record }
    }

    pub fn list_endpoints(&self, account_id: &str, workspace: Option<&str>) -> Result<Vec<EndpointView>, EngineError> {
        Ok(self
            .store()
            .local_endpoints
            .scan_prefix(&(account_id,))?
            .into_iter()
            .filter(|e| workspace.is_none() || e.workspace_slug.as_deref() == workspace)
            .map(|e| self.live_endpoint(e))
            .collect())
    }

    fn endpoint_record(&self, account_id: &str, id: &str) -> Result<LocalEndpoint, EngineError> {
        self.store().local_endpoints.get(&(account_id, id))?.ok_or(EngineError::NotFound { what: "Local endpoint" })
    }

    pub fn get_endpoint(&self, account_id: &str, id: &str) -> Result<EndpointView, EngineError> {
        Ok(self.live_endpoint(self.endpoint_record(account_id, id)?))
    }

    pub async fn update_endpoint(
        &self,
        account_id: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<EndpointView, EngineError> {
        let mut record = self.endpoint_record(account_id, id)?;
        if let Some(given) = patch.url {
            let parsed = parse_url(&given)?;
            self.check_endpoint_url(account_id, &parsed).await?;
            (record.url, record.sealed_url) = self.seal_url(&given, &parsed);
        }
        if let Some(label) = patch.label {
            check_len("label", &label, MAX_LABEL_CHARS, "characters")?;
            record.label = label;
        }
        if let Some(model) = patch.default_model {
            if let Some(model) = &model {
                check_len("default_model", model, MAX_MODEL_CHARS, "characters")?;
            }
            record.default_model = model;
        }
        let headers = match patch.headers {
            Some(Some(h)) => {
                let list = headers_list(&h)?;
                record.sealed_headers = (!list.is_empty())
                    .then(|| self.state.secrets.seal(&serde_json::to_string(&list).unwrap_or_default()));
                list
            }
            Some(None) => {
                record.sealed_headers = None;
                Vec::new()
            }
            None => match &record.sealed_headers {
                Some(sealed) => serde_json::from_str(&self.state.secrets.open(sealed)?).unwrap_or_default(),
                None => Vec::new(),
            },
        };
        record.updated_at_ms = crate::clock::now_ms();
        let upstream = self.state.endpoint_upstream(&record, headers, self.is_operator(account_id))?;
        self.apply_check(&mut record, &upstream).await;
        self.store().local_endpoints.insert(&(account_id, id), &record)?;
        self.store().flush().await?;
        // Replace the live connection and its actor.
        let name = endpoint_name(id);
        self.take_endpoint_offline(name);
        self.go_live(ENDPOINTS, upstream).await;
        Ok(EndpointView { has_headers: record.sealed_headers.is_some(), record })
    }

    pub async fn delete_endpoint(&self, account_id: &str, id: &str) -> Result<(), EngineError> {
        self.store()
            .local_endpoints
            .remove(&(account_id, id))?
            .ok_or(EngineError::NotFound { what: "Local endpoint" })?;
        self.store().flush().await?;
        let name = endpoint_name(id);
        self.state.upstreams.remove(&name);
        self.take_endpoint_offline(name);
        Ok(())
    }

    pub async fn recheck_endpoint(&self, account_id: &str, id: &str) -> Result<EndpointView, EngineError> {
        let mut record = self.endpoint_record(account_id, id)?;
        let upstream =
            self.state.upstreams.get(&endpoint_name(id)).ok_or(EngineError::NotFound { what: "Local endpoint" })?;
        self.apply_check(&mut record, &upstream).await;
        self.store().local_endpoints.insert(&(account_id, id), &record)?;
        Ok(EndpointView { has_headers: record.sealed_headers.is_some(), record })
    }
}
