//! Accounts, workspaces, API keys and sessions: the management operations behind the
//! dashboard routes. Every operation is scoped to one account; nothing here can reach
//! another account's records.

pub mod accounts;
pub mod apikey;
pub mod limits;
mod persist;
pub(crate) mod state;
pub mod workspace;

use std::sync::{atomic::Ordering, Arc};

use serde_json::{Map, Value};
use tokaroo_storage::records::{Account, ApiKey, Session, Workspace, WorkspaceStatus};

use ractor::rpc::CallResult;
use subtle::ConstantTimeEq;

use crate::{
    config::EngineConfig,
    directory::apikey::{Admission, ApiKeyMsg, KeyEntry},
    directory::limits::Counted,
    directory::state::{DirectoryState, SessionEntry, WorkspaceEntry},
    error::EngineError,
    security::tokens,
    security::tokens::decode_hash,
    tree::supervisor::{self, ChildSpec},
};

const MAX_RPM: u32 = 1_000_000;
const DEFAULT_WORKSPACE: &str = "default";

/// Who a dashboard session token belongs to.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account_id: String,
    pub is_operator: bool,
    /// The stored session the token is; `None` for `TOKAROO_ADMIN_TOKEN`, which is
    /// configuration rather than a session and so cannot be listed, rotated or revoked.
    pub session_id: Option<String>,
}

/// Why a dashboard session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRejection {
    /// Not a token we issued, or one since revoked or rotated.
    Unknown,
    /// A real session left unused longer than the session TTL; it is now removed.
    Expired,
}

/// Printed once, at the first start.
pub struct BootstrapCredentials {
    pub account_id: String,
    pub session_token: String,
    pub api_key: String,
}

pub(crate) const OPERATOR_ACCOUNT_META: &str = "operator_account_id";

pub struct NewWorkspace {
    pub slug: String,
    pub name: String,
    pub metadata: Map<String, Value>,
    pub monthly_budget_usd: Option<f64>,
}

#[derive(Default)]
pub struct WorkspacePatch {
    pub name: Option<String>,
    pub status: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// `Some(None)` clears the budget.
    pub monthly_budget_usd: Option<Option<f64>>,
}

#[derive(Default)]
pub struct NewKey {
    pub name: Option<String>,
    pub metadata: Map<String, Value>,
    pub workspace_slug: Option<String>,
    pub workspace_name: Option<String>,
    pub rate_limit_rpm: Option<u32>,
}

#[derive(Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    /// `Some(None)` returns the key to the server default.
    pub rate_limit_rpm: Option<Option<u32>>,
}

/// A key as management routes show it: the record plus its workspace's display name.
pub struct KeyView {
    pub record: ApiKey,
    pub workspace_name: Option<String>,
}

fn validate_slug(slug: &str) -> Result<(), EngineError> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(EngineError::invalid("workspace_id must be 1-64 characters of letters, digits, '-', '_' or '.'"))
    }
}

fn validate_name(field: &str, name: &str) -> Result<(), EngineError> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(EngineError::invalid(format!("{field} must be 1-200 characters")));
    }
    Ok(())
}

fn validate_budget(budget: Option<f64>) -> Result<(), EngineError> {
    match budget {
        Some(b) if !b.is_finite() || b < 0.0 => {
            Err(EngineError::invalid("monthly_budget_usd must be a non-negative number or null"))
        }
        _ => Ok(()),
    }
}

fn validate_rpm(rpm: Option<u32>) -> Result<(), EngineError> {
    match rpm {
        Some(r) if r == 0 || r > MAX_RPM => {
            Err(EngineError::invalid(format!("rate_limit_rpm must be between 1 and {MAX_RPM}")))
        }
        _ => Ok(()),
    }
}

/// Accounts, workspaces, API keys and sessions: the management operations behind the
/// dashboard routes, and the authentication and admission of every request.
#[derive(Clone)]
pub struct Directory {
    state: Arc<DirectoryState>,
    config: Arc<EngineConfig>,
    /// Funding's activation checklist, which a self-serve account's first key waits for. Set
    /// once funding exists (funding also creates keys, so the two cannot own each other).
    first_key_gate: Arc<std::sync::OnceLock<FirstKeyGate>>,
}

/// Refuses an account's first key until its activation checklist is complete.
pub(crate) type FirstKeyGate =
    Arc<dyn Fn(String) -> crate::tree::supervisor::BoxFuture<Result<(), EngineError>> + Send + Sync>;

impl Directory {
    pub(crate) fn new(state: Arc<DirectoryState>, config: Arc<EngineConfig>) -> Self {
        Self { state, config, first_key_gate: Arc::default() }
    }

    pub(crate) fn set_first_key_gate(&self, gate: FirstKeyGate) {
        let _ = self.first_key_gate.set(gate);
    }

    async fn check_first_key_allowed(&self, account_id: &str) -> Result<(), EngineError> {
        match self.first_key_gate.get() {
            Some(gate) => gate(account_id.to_owned()).await,
            None => Err(EngineError::Unavailable("funding is not running".into())),
        }
    }

    fn store(&self) -> &tokaroo_storage::Store {
        &self.state.store
    }

    pub fn operator_account_id(&self) -> Option<String> {
        self.state.operator_account_id()
    }

    /// Looks a runtime key up by its hash. Revoked keys are gone from the index at once.
    pub fn authenticate_key(&self, secret: &str) -> Option<Arc<KeyEntry>> {
        self.state.keys_by_hash.get(&tokens::sha256(secret)).map(|e| e.value().clone())
    }

    /// A dashboard session token's identity. A use slides the session's expiry (in memory;
    /// the persister writes it every few seconds); an expired session is removed here.
    pub fn authenticate_session(&self, token: &str) -> Result<Identity, SessionRejection> {
        if let Some(admin) = &self.config.admin_token {
            let admin = admin.expose();
            if !admin.is_empty() && bool::from(admin.as_bytes().ct_eq(token.as_bytes())) {
                return self
                    .operator_account_id()
                    .map(|account_id| Identity { account_id, is_operator: true, session_id: None })
                    .ok_or(SessionRejection::Unknown);
            }
        }
        let hash = tokens::sha256(token);
        let entry =
            self.state.sessions_by_hash.get(&hash).map(|e| e.value().clone()).ok_or(SessionRejection::Unknown)?;
        let now = crate::clock::now_ms();
        if entry.is_expired(now) {
            self.state.expire_session(&hash, &entry);
            return Err(SessionRejection::Expired);
        }
        entry.touch(now, self.state.session_ttl_ms);
        Ok(Identity {
            account_id: entry.account_id.clone(),
            is_operator: entry.is_operator,
            session_id: Some(entry.id.clone()),
        })
    }

    /// Admission of one runtime request: the key's workspace must be active and the key's
    /// actor must grant a rate-limit permit.
    pub async fn admit(&self, key: &KeyEntry) -> Result<Admission, EngineError> {
        if let Some(slug) = &key.workspace_slug {
            match self.state.workspace_entry(&key.account_id, slug) {
                Some(ws) if ws.is_active() => {}
                Some(_) => return Err(EngineError::Forbidden(format!("Workspace {slug} is disabled"))),
                None => return Err(EngineError::NotFound { what: "Workspace" }),
            }
        }
        let actor = (self.state.registry)
            .actor::<ApiKeyMsg>(&key.actor_name)
            .ok_or_else(|| EngineError::Unavailable("this API key's actor is restarting; retry shortly".into()))?;
        match actor.call(ApiKeyMsg::Admit, Some(self.config.admission_timeout)).await {
            Ok(CallResult::Success(admission)) => Ok(admission),
            Ok(CallResult::Timeout) => Err(EngineError::Unavailable("admission timed out".into())),
            Ok(CallResult::SenderError) | Err(_) => {
                Err(EngineError::Unavailable("this API key's actor is restarting; retry shortly".into()))
            }
        }
    }

    /// First start: creates the operator account, its `default` workspace, a dashboard
    /// session and a first API key. Later starts return `None`.
    pub async fn bootstrap(&self) -> Result<Option<BootstrapCredentials>, EngineError> {
        if self.operator_account_id().is_some() {
            return Ok(None);
        }
        let (account, session_token) = self.create_account_inner("operator", true, false).await?;
        self.create_default_workspace(&account.id).await?;
        let (_, api_key) = self
            .create_key(
                &account.id,
                NewKey {
                    name: Some("first key".into()),
                    workspace_slug: Some(DEFAULT_WORKSPACE.into()),
                    ..NewKey::default()
                },
            )
            .await?;
        self.store().meta_set(OPERATOR_ACCOUNT_META, &account.id)?;
        self.store().flush().await?;
        self.state.set_operator_account_id(account.id.clone());
        Ok(Some(BootstrapCredentials { account_id: account.id, session_token, api_key }))
    }

    async fn create_default_workspace(&self, account_id: &str) -> Result<Workspace, EngineError> {
        let default = NewWorkspace {
            slug: DEFAULT_WORKSPACE.into(),
            name: "Default".into(),
            metadata: Map::new(),
            monthly_budget_usd: None,
        };
        self.create_workspace(account_id, default).await
    }

    /// Creates a tenant account (with its `default` workspace) and a first session token
    /// for it. Accounts the operator creates skip the self-serve activation checklist.
    /// `self_serve` marks a signup that must pass the first-key activation checklist.
    pub async fn create_account(&self, name: &str, self_serve: bool) -> Result<(Account, String), EngineError> {
        validate_name("name", name)?;
        let (account, token) = self.create_account_inner(name, false, self_serve).await?;
        self.create_default_workspace(&account.id).await?;
        Ok((account, token))
    }

    async fn create_account_inner(
        &self,
        name: &str,
        is_operator: bool,
        self_serve: bool,
    ) -> Result<(Account, String), EngineError> {
        let account = Account {
            id: crate::clock::new_id(),
            name: name.to_owned(),
            is_operator,
            self_serve,
            created_at_ms: crate::clock::now_ms(),
        };
        self.store().accounts.insert(&account.id.as_str(), &account)?;
        let token = self.create_session(&account, "initial").await?;
        Ok((account, token))
    }

    pub fn list_accounts(&self) -> Result<Vec<Account>, EngineError> {
        Ok(self.store().accounts.all()?)
    }

    /// Issues a new dashboard session token for an account; returns the token (shown once).
    pub async fn create_session(&self, account: &Account, label: &str) -> Result<String, EngineError> {
        let token = tokens::new_session_token();
        let now = crate::clock::now_ms();
        let expires = now.saturating_add(self.state.session_ttl_ms);
        let session = Session {
            id: crate::clock::new_id(),
            account_id: account.id.clone(),
            token_sha256: tokens::sha256_hex(&token),
            label: label.to_owned(),
            created_at_ms: now,
            last_used_at_ms: Some(now),
            expires_at_ms: Some(expires),
        };
        self.store().sessions.insert(&(session.account_id.as_str(), session.id.as_str()), &session)?;
        self.store().flush().await?;
        let entry = SessionEntry::new(session.id, account.id.clone(), account.is_operator, now, expires);
        self.state.sessions_by_hash.insert(tokens::sha256(&token), Arc::new(entry));
        Ok(token)
    }

    /// An account's dashboard sessions, oldest first, with their live use times.
    pub fn list_sessions(&self, account_id: &str) -> Result<Vec<Session>, EngineError> {
        let live: std::collections::HashMap<String, Arc<SessionEntry>> = self
            .state
            .sessions_by_hash
            .iter()
            .filter(|e| e.account_id == account_id)
            .map(|e| (e.id.clone(), e.value().clone()))
            .collect();
        let now = crate::clock::now_ms();
        let mut sessions: Vec<Session> = self
            .store()
            .sessions
            .scan_prefix(&(account_id,))?
            .into_iter()
            // Only what still authenticates: expired sessions not yet swept are left out.
            .filter_map(|mut s| {
                let entry = live.get(&s.id).filter(|e| !e.is_expired(now))?;
                s.last_used_at_ms = Some(entry.last_used_ms.load(Ordering::Relaxed));
                s.expires_at_ms = Some(entry.expires_at_ms.load(Ordering::Relaxed));
                Some(s)
            })
            .collect();
        sessions.sort_by_key(|s| s.created_at_ms);
        Ok(sessions)
    }

    /// Revokes a session: out of the index first (the next request with it is refused),
    /// then out of storage, flushed before this returns so a restart cannot bring it back.
    pub async fn revoke_session(&self, account_id: &str, session_id: &str) -> Result<(), EngineError> {
        {
            let _writes = self.state.session_writes.lock().unwrap_or_else(|p| p.into_inner());
            let record = self
                .store()
                .sessions
                .get(&(account_id, session_id))?
                .ok_or(EngineError::NotFound { what: "Session" })?;
            self.state.sessions_by_hash.remove(&decode_hash(&record.token_sha256)?);
            self.store().sessions.remove(&(account_id, session_id))?;
        }
        self.store().flush().await?;
        Ok(())
    }

    /// Replaces a session's token: the old token stops working before the new record is
    /// written, and the new one starts only once that write is durable, so no moment after
    /// the answer has both valid (a crash before the answer leaves the old token or neither).
    /// Returns the session and its new token (shown once).
    pub async fn rotate_session(&self, account_id: &str, session_id: &str) -> Result<(Session, String), EngineError> {
        let token = tokens::new_session_token();
        let now = crate::clock::now_ms();
        let expires = now.saturating_add(self.state.session_ttl_ms);
        let (record, is_operator) = {
            let _writes = self.state.session_writes.lock().unwrap_or_else(|p| p.into_inner());
            let not_found = || EngineError::NotFound { what: "Session" };
            let mut record = self.store().sessions.get(&(account_id, session_id))?.ok_or_else(not_found)?;
            let old = decode_hash(&record.token_sha256)?;
            let (_, entry) = self.state.sessions_by_hash.remove(&old).ok_or_else(not_found)?;
            if entry.is_expired(now) {
                self.store().sessions.remove(&(account_id, session_id))?;
                return Err(not_found());
            }
            record.token_sha256 = tokens::sha256_hex(&token);
            record.last_used_at_ms = Some(now);
            record.expires_at_ms = Some(expires);
            self.store().sessions.insert(&(account_id, session_id), &record)?;
            (record, entry.is_operator)
        };
        self.store().flush().await?;
        // A revocation may have landed during the flush: the new token goes live only if the
        // stored session still carries it, checked under the same lock revocations take.
        let _writes = self.state.session_writes.lock().unwrap_or_else(|p| p.into_inner());
        let still_ours = self
            .store()
            .sessions
            .get(&(account_id, session_id))?
            .is_some_and(|stored| stored.token_sha256 == record.token_sha256);
        if !still_ours {
            return Err(EngineError::NotFound { what: "Session" });
        }
        let entry = SessionEntry::new(record.id.clone(), account_id.to_owned(), is_operator, now, expires);
        self.state.sessions_by_hash.insert(tokens::sha256(&token), Arc::new(entry));
        Ok((record, token))
    }

    pub async fn create_workspace(&self, account_id: &str, new: NewWorkspace) -> Result<Workspace, EngineError> {
        validate_slug(&new.slug)?;
        validate_name("name", &new.name)?;
        validate_budget(new.monthly_budget_usd)?;
        crate::metadata::check_metadata("metadata", &new.metadata)?;
        let creating = self
            .reserve_creation(account_id, Counted::Workspaces, || {
                Ok(self.store().workspaces.count_prefix(&(account_id,)))
            })
            .await?;
        let now = crate::clock::now_ms();
        let record = Workspace {
            id: crate::clock::new_id(),
            account_id: account_id.to_owned(),
            slug: new.slug,
            name: new.name,
            status: WorkspaceStatus::Active,
            metadata: new.metadata,
            monthly_budget_usd: new.monthly_budget_usd,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !self.store().workspaces.insert_new(&(account_id, record.slug.as_str()), &record)? {
            return Err(EngineError::Conflict(format!("Workspace {} already exists", record.slug)));
        }
        // Counted from here on; the flush is shared with other writers, so not under the lock.
        drop(creating);
        self.store().flush().await?;
        let entry = Arc::new(WorkspaceEntry::new(&record));
        self.state.workspaces.insert((account_id.to_owned(), record.slug.clone()), entry.clone());
        let spec: Arc<dyn ChildSpec> = Arc::new(workspace::spec(&self.state, entry));
        self.start_child(accounts::NAME, spec).await;
        Ok(record)
    }

    pub fn list_workspaces(&self, account_id: &str) -> Result<Vec<Workspace>, EngineError> {
        Ok(self.store().workspaces.scan_prefix(&(account_id,))?)
    }

    pub fn get_workspace(&self, account_id: &str, slug: &str) -> Result<Workspace, EngineError> {
        self.store().workspaces.get(&(account_id, slug))?.ok_or(EngineError::NotFound { what: "Workspace" })
    }

    pub async fn update_workspace(
        &self,
        account_id: &str,
        slug: &str,
        patch: WorkspacePatch,
    ) -> Result<Workspace, EngineError> {
        let mut record = self.get_workspace(account_id, slug)?;
        if let Some(name) = patch.name {
            validate_name("name", &name)?;
            record.name = name;
        }
        if let Some(status) = patch.status {
            record.status = WorkspaceStatus::parse(&status).ok_or_else(|| {
                let allowed = WorkspaceStatus::ALL.map(WorkspaceStatus::as_str);
                EngineError::invalid(format!("status must be one of: {}", allowed.join(", ")))
            })?;
        }
        if let Some(metadata) = patch.metadata {
            crate::metadata::check_metadata("metadata", &metadata)?;
            record.metadata = metadata;
        }
        if let Some(budget) = patch.monthly_budget_usd {
            validate_budget(budget)?;
            record.monthly_budget_usd = budget;
        }
        record.updated_at_ms = crate::clock::now_ms();
        self.store().workspaces.insert(&(account_id, slug), &record)?;
        self.store().flush().await?;
        if let Some(entry) = self.state.workspace_entry(account_id, slug) {
            entry.update(&record);
        }
        Ok(record)
    }

    /// Resolves the workspace a new key is bound to from `workspace_id` and/or `workspace_name`.
    fn resolve_key_workspace(&self, account_id: &str, new: &NewKey) -> Result<Option<Workspace>, EngineError> {
        match (&new.workspace_slug, &new.workspace_name) {
            (None, None) => Ok(None),
            (Some(slug), name) => {
                let ws = self.get_workspace(account_id, slug)?;
                if let Some(name) = name {
                    if &ws.name != name {
                        return Err(EngineError::invalid(format!(
                            "workspace_name {name:?} does not match workspace {slug} (named {:?})",
                            ws.name
                        )));
                    }
                }
                Ok(Some(ws))
            }
            (None, Some(name)) => self
                .list_workspaces(account_id)?
                .into_iter()
                .find(|w| &w.name == name)
                .map(Some)
                .ok_or(EngineError::NotFound { what: "Workspace" }),
        }
    }

    /// Creates a runtime key; returns its record and the secret (shown once, never stored).
    pub async fn create_key(&self, account_id: &str, new: NewKey) -> Result<(KeyView, String), EngineError> {
        validate_rpm(new.rate_limit_rpm)?;
        crate::metadata::check_metadata("metadata", &new.metadata)?;
        self.check_rpm_cap(account_id, new.rate_limit_rpm)?;
        let creating = self
            .reserve_creation(account_id, Counted::Keys, || Ok(self.store().api_keys.count_prefix(&(account_id,))))
            .await?;
        let self_serve = self.store().accounts.get(&account_id)?.is_some_and(|a| a.self_serve);
        if self_serve && self.store().api_keys.count_prefix(&(account_id,)) == 0 {
            self.check_first_key_allowed(account_id).await?;
        }
        let name = new.name.clone().unwrap_or_else(|| "default".into());
        validate_name("name", &name)?;
        let workspace = self.resolve_key_workspace(account_id, &new)?;
        let secret = tokens::new_api_key();
        let record = ApiKey {
            id: crate::clock::new_id(),
            account_id: account_id.to_owned(),
            name,
            prefix: tokens::display_prefix(&secret),
            secret_sha256: tokens::sha256_hex(&secret),
            metadata: new.metadata,
            workspace_slug: workspace.as_ref().map(|w| w.slug.clone()),
            rate_limit_rpm: new.rate_limit_rpm,
            created_at_ms: crate::clock::now_ms(),
            last_used_at_ms: None,
        };
        self.store().api_keys.insert(&(account_id, record.id.as_str()), &record)?;
        drop(creating);
        self.store().flush().await?;
        let entry = Arc::new(KeyEntry {
            id: record.id.clone(),
            account_id: account_id.to_owned(),
            workspace_slug: record.workspace_slug.clone(),
            actor_name: apikey::actor_name(&record.id),
            last_used_ms: 0.into(),
        });
        self.state.keys_by_id.insert(record.id.clone(), entry.clone());
        self.state.keys_by_hash.insert(decode_hash(&record.secret_sha256)?, entry.clone());
        let parent = self.key_parent(&entry);
        self.start_child(&parent, self.state.key_spec(entry)).await;
        Ok((KeyView { record, workspace_name: workspace.map(|w| w.name) }, secret))
    }

    pub fn list_keys(&self, account_id: &str) -> Result<Vec<KeyView>, EngineError> {
        let names: std::collections::HashMap<String, String> =
            self.list_workspaces(account_id)?.into_iter().map(|w| (w.slug, w.name)).collect();
        let mut keys = self.store().api_keys.scan_prefix(&(account_id,))?;
        keys.sort_by_key(|k| k.created_at_ms);
        Ok(keys
            .into_iter()
            .map(|mut record| {
                if let Some(live) = self.state.keys_by_id.get(&record.id).and_then(|e| e.last_used_ms()) {
                    record.last_used_at_ms = Some(record.last_used_at_ms.map_or(live, |p| p.max(live)));
                }
                let workspace_name = record.workspace_slug.as_ref().and_then(|s| names.get(s).cloned());
                KeyView { record, workspace_name }
            })
            .collect())
    }

    /// Changes a key's name, metadata or rate limit; a new limit applies to the next request.
    pub async fn update_key(&self, account_id: &str, key_id: &str, patch: KeyPatch) -> Result<KeyView, EngineError> {
        let mut record =
            self.store().api_keys.get(&(account_id, key_id))?.ok_or(EngineError::NotFound { what: "API key" })?;
        if let Some(name) = patch.name {
            validate_name("name", &name)?;
            record.name = name;
        }
        if let Some(metadata) = patch.metadata {
            crate::metadata::check_metadata("metadata", &metadata)?;
            record.metadata = metadata;
        }
        if let Some(rpm) = patch.rate_limit_rpm {
            validate_rpm(rpm)?;
            self.check_rpm_cap(account_id, rpm)?;
            record.rate_limit_rpm = rpm;
        }
        self.store().api_keys.insert(&(account_id, key_id), &record)?;
        self.store().flush().await?;
        if let Some(actor) = self.state.registry.actor::<ApiKeyMsg>(&apikey::actor_name(key_id)) {
            let _ = actor.cast(ApiKeyMsg::SetRateLimit(record.rate_limit_rpm.unwrap_or(self.config.default_rpm)));
        }
        let workspace_name = match &record.workspace_slug {
            Some(slug) => self.store().workspaces.get(&(account_id, slug.as_str()))?.map(|w| w.name),
            None => None,
        };
        Ok(KeyView { record, workspace_name })
    }

    /// Revokes a key: it leaves the authentication index first, so the very next request
    /// with it is refused, then storage and its actor.
    pub async fn revoke_key(&self, account_id: &str, key_id: &str) -> Result<(), EngineError> {
        let record =
            self.store().api_keys.get(&(account_id, key_id))?.ok_or(EngineError::NotFound { what: "API key" })?;
        let hash = decode_hash(&record.secret_sha256)?;
        let entry = {
            // Against the last-used persister writing the record back (see `session_writes`).
            let _writes = self.state.session_writes.lock().unwrap_or_else(|p| p.into_inner());
            self.state.keys_by_hash.remove(&hash);
            let entry = self.state.keys_by_id.remove(key_id).map(|(_, e)| e);
            self.store().api_keys.remove(&(account_id, key_id))?;
            entry
        };
        self.store().flush().await?;
        if let Some(entry) = entry {
            let parent = self.key_parent(&entry);
            self.stop_child(&parent, entry.actor_name.clone());
        }
        Ok(())
    }

    fn key_parent(&self, key: &KeyEntry) -> String {
        key.workspace_slug
            .as_ref()
            .and_then(|slug| self.state.workspace_entry(&key.account_id, slug))
            .map(|ws| workspace::actor_name(&ws.uuid))
            .unwrap_or_else(|| accounts::NAME.to_owned())
    }

    /// Asks a supervisor to start a child. If the supervisor is itself restarting, the child
    /// is started from storage when it comes back, so a failure here is only logged.
    async fn start_child(&self, parent: &str, spec: Arc<dyn ChildSpec>) {
        supervisor::start_child(&self.state.registry, parent, spec).await;
    }

    fn stop_child(&self, parent: &str, name: String) {
        supervisor::stop_child(&self.state.registry, parent, name);
    }
}
