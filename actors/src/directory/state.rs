//! The directory's live state: the indices authentication and admission read on every
//! request (rebuilt from storage at start), and each workspace's one home.

use std::sync::{
    atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    Arc,
};

use dashmap::DashMap;
use tokaroo_storage::Store;

use crate::{
    directory::apikey::{ApiKeySpec, KeyEntry},
    tree::supervisor::{ChildSpec, RestartPolicy},
};

/// A live dashboard session. Its use times are atomics so authentication never takes a lock;
/// `persisted_ms` is the last use already written, so the persister skips idle sessions.
pub struct SessionEntry {
    pub id: String,
    pub account_id: String,
    pub is_operator: bool,
    pub last_used_ms: AtomicI64,
    pub expires_at_ms: AtomicI64,
    pub persisted_ms: AtomicI64,
}

impl SessionEntry {
    pub fn new(id: String, account_id: String, is_operator: bool, last_used_ms: i64, expires_at_ms: i64) -> Self {
        Self {
            id,
            account_id,
            is_operator,
            last_used_ms: last_used_ms.into(),
            expires_at_ms: expires_at_ms.into(),
            persisted_ms: last_used_ms.into(),
        }
    }

    pub fn is_expired(&self, now_ms: i64) -> bool {
        now_ms >= self.expires_at_ms.load(Ordering::Relaxed)
    }

    /// Records a use: the session now expires `ttl_ms` after it.
    pub fn touch(&self, now_ms: i64, ttl_ms: i64) {
        self.last_used_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.expires_at_ms.fetch_max(now_ms.saturating_add(ttl_ms), Ordering::Relaxed);
    }
}

/// A workspace's live state, its one home: the record as last written, plus the two fields
/// every request reads kept as atomics so admission takes no lock.
pub struct WorkspaceEntry {
    pub uuid: String,
    record: std::sync::RwLock<Arc<tokaroo_storage::records::Workspace>>,
    active: AtomicBool,
    /// The monthly budget in USD as `f64` bits, or [`NO_BUDGET`].
    budget_usd_bits: AtomicU64,
}

/// No budget: a NaN payload no real budget has.
pub const NO_BUDGET: u64 = u64::MAX;

impl WorkspaceEntry {
    pub fn new(record: &tokaroo_storage::records::Workspace) -> Self {
        Self {
            uuid: record.id.clone(),
            active: (record.status == tokaroo_storage::records::WorkspaceStatus::Active).into(),
            budget_usd_bits: Self::budget_bits_of(record).into(),
            record: std::sync::RwLock::new(Arc::new(record.clone())),
        }
    }

    fn budget_bits_of(record: &tokaroo_storage::records::Workspace) -> u64 {
        record.monthly_budget_usd.map_or(NO_BUDGET, f64::to_bits)
    }

    /// Applies a changed record (status, budget, name).
    pub fn update(&self, record: &tokaroo_storage::records::Workspace) {
        self.active.store(record.status == tokaroo_storage::records::WorkspaceStatus::Active, Ordering::Relaxed);
        self.budget_usd_bits.store(Self::budget_bits_of(record), Ordering::Relaxed);
        *self.record.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(record.clone());
    }

    pub fn record(&self) -> Arc<tokaroo_storage::records::Workspace> {
        self.record.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    pub fn monthly_budget_usd(&self) -> Option<f64> {
        Some(self.budget_usd_bits.load(Ordering::Relaxed)).filter(|b| *b != NO_BUDGET).map(f64::from_bits)
    }
}

pub struct DirectoryState {
    pub store: Store,
    /// Per account: serialises creations checked against a count cap (`limits.rs`).
    pub creation_locks: DashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>,
    pub restart_policy: RestartPolicy,
    /// The operator's account, once bootstrapped: it is not metered or capped.
    pub operator_account_id: std::sync::RwLock<Option<String>>,
    /// This engine's actor names.
    pub registry: crate::tree::registry::Registry,
    pub default_rpm: u32,
    pub keys_by_hash: DashMap<[u8; 32], Arc<KeyEntry>>,
    pub keys_by_id: DashMap<String, Arc<KeyEntry>>,
    pub sessions_by_hash: DashMap<[u8; 32], Arc<SessionEntry>>,
    /// How long an unused dashboard session lives, in milliseconds.
    pub session_ttl_ms: i64,
    /// Held by every read-modify-write of a stored session or key outside a request
    /// (use-time persistence) and by revocation and rotation, so the former can never
    /// write back a record the latter removed. Never held across an `.await`.
    pub session_writes: std::sync::Mutex<()>,
    /// (account_id, slug) → live workspace state.
    pub workspaces: DashMap<(String, String), Arc<WorkspaceEntry>>,
}

impl DirectoryState {
    pub fn operator_account_id(&self) -> Option<String> {
        self.operator_account_id.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_operator_account_id(&self, id: String) {
        *self.operator_account_id.write().unwrap_or_else(|p| p.into_inner()) = Some(id);
    }

    pub fn keys_in_workspace(&self, account_id: &str, slug: Option<&str>) -> Vec<Arc<KeyEntry>> {
        self.keys_by_id
            .iter()
            .filter(|e| e.account_id == account_id && e.workspace_slug.as_deref() == slug)
            .map(|e| e.value().clone())
            .collect()
    }

    /// Keys not bound to any workspace, across all accounts (supervised by `accounts`).
    pub fn unbound_keys(&self) -> Vec<Arc<KeyEntry>> {
        self.keys_by_id.iter().filter(|e| e.workspace_slug.is_none()).map(|e| e.value().clone()).collect()
    }

    pub fn key_spec(&self, entry: Arc<KeyEntry>) -> Arc<dyn ChildSpec> {
        Arc::new(ApiKeySpec { entry, store: self.store.clone(), default_rpm: self.default_rpm })
    }

    pub fn workspace_entry(&self, account_id: &str, slug: &str) -> Option<Arc<WorkspaceEntry>> {
        self.workspaces.get(&(account_id.to_owned(), slug.to_owned())).map(|e| e.value().clone())
    }
}
