//! The operator's caps on what a tenant account may create or claim for itself: a key's rate
//! limit, and how many keys, workspaces, provider keys and endpoints it may hold. The
//! operator's own account is not capped (it sets the caps).

use crate::{config::AccountLimits, directory::Directory, error::EngineError};

/// Which count a creation is checked against, and the setting that caps it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counted {
    Keys,
    Workspaces,
    ProviderKeys,
    Endpoints,
}

impl Counted {
    fn describe(self, limits: &AccountLimits) -> (usize, &'static str, &'static str) {
        match self {
            Counted::Keys => (limits.keys, "API keys", "limits.keys_per_account"),
            Counted::Workspaces => (limits.workspaces, "workspaces", "limits.workspaces_per_account"),
            Counted::ProviderKeys => (limits.provider_keys, "provider keys", "limits.provider_keys_per_account"),
            Counted::Endpoints => (limits.endpoints, "local endpoints", "limits.endpoints_per_account"),
        }
    }
}

impl Directory {
    fn capped(&self, account_id: &str) -> bool {
        self.operator_account_id().as_deref() != Some(account_id)
    }

    /// A tenant cannot give a key a higher rate limit than the operator allows.
    pub(crate) fn check_rpm_cap(&self, account_id: &str, rpm: Option<u32>) -> Result<(), EngineError> {
        let max = self.config.limits.max_rpm;
        match rpm {
            Some(rpm) if rpm > max && self.capped(account_id) => Err(EngineError::invalid(format!(
                "rate_limit_rpm {rpm} is above this server's cap of {max} requests per minute (rate_limit.max_rpm)"
            ))),
            _ => Ok(()),
        }
    }

    /// Serialises one account's creations of `what`, so a burst of concurrent requests
    /// cannot all pass the count check together; then checks the count. Hold the guard
    /// until the new record is inserted, and drop it before flushing (flushes are shared).
    /// The operator's account is not capped, so not serialised either.
    pub(crate) async fn reserve_creation(
        &self,
        account_id: &str,
        what: Counted,
        count: impl FnOnce() -> Result<usize, EngineError>,
    ) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, EngineError> {
        if !self.capped(account_id) {
            return Ok(None);
        }
        let lock = self.state.creation_locks.entry(account_id.to_owned()).or_default().clone();
        let guard = lock.lock_owned().await;
        let (cap, noun, setting) = what.describe(&self.config.limits);
        if count()? >= cap {
            return Err(EngineError::invalid(format!(
                "This account already has {cap} {noun}, the most this server allows ({setting}); delete one first"
            )));
        }
        Ok(Some(guard))
    }
}
