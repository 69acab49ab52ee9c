//! The directory's background writes: use times of keys and sessions (kept off the request
//! path, written every few seconds by the `task:last-used` actor and at shutdown) and the
//! removal of expired sessions.

use std::sync::{atomic::Ordering, Arc};

use tokaroo_storage::StorageError;

use crate::{
    directory::apikey::KeyEntry,
    directory::state::{DirectoryState, SessionEntry},
};

impl DirectoryState {
    /// Drops an expired session from the index and storage. No flush: were the removal
    /// lost, the stored use times would still make it expired at the next start.
    pub(crate) fn expire_session(&self, hash: &[u8; 32], entry: &Arc<SessionEntry>) {
        let _writes = self.session_writes.lock().unwrap_or_else(|p| p.into_inner());
        if self.sessions_by_hash.remove_if(hash, |_, e| Arc::ptr_eq(e, entry)).is_some() {
            if let Err(error) = self.store.sessions.remove(&(entry.account_id.as_str(), entry.id.as_str())) {
                tracing::warn!(%error, session = %entry.id, "could not remove an expired session");
            }
            tracing::info!(session = %entry.id, account = %entry.account_id, "dashboard session expired");
        }
    }

    /// Writes `last_used_at` of keys used since the last write (kept off the request path).
    pub(crate) fn persist_last_used(&self) -> Result<(), StorageError> {
        // Collected first: holding a DashMap shard guard while waiting for `session_writes`
        // would deadlock with a revocation holding the lock and waiting for the shard.
        let entries: Vec<Arc<KeyEntry>> = self.keys_by_id.iter().map(|e| e.value().clone()).collect();
        for entry in entries {
            let Some(used) = entry.last_used_ms() else { continue };
            let key = (entry.account_id.as_str(), entry.id.as_str());
            // Under the lock revocation takes, and only while the key is still indexed: a
            // read-modify-write racing `revoke_key` would otherwise write the key back.
            let _writes = self.session_writes.lock().unwrap_or_else(|p| p.into_inner());
            if !self.keys_by_id.contains_key(&entry.id) {
                continue;
            }
            if let Some(mut record) = self.store.api_keys.get(&key)? {
                if record.last_used_at_ms.is_none_or(|prev| prev < used) {
                    record.last_used_at_ms = Some(used);
                    self.store.api_keys.insert(&key, &record)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the use times of sessions used since the last write, and sweeps out expired
    /// sessions nobody presented again. Runs every few seconds, off the request path.
    pub(crate) fn persist_session_use(&self) -> Result<(), StorageError> {
        let now = crate::clock::now_ms();
        let entries: Vec<([u8; 32], Arc<SessionEntry>)> =
            self.sessions_by_hash.iter().map(|e| (*e.key(), e.value().clone())).collect();
        for (hash, entry) in entries {
            if entry.is_expired(now) {
                self.expire_session(&hash, &entry);
                continue;
            }
            let used = entry.last_used_ms.load(Ordering::Relaxed);
            if used <= entry.persisted_ms.load(Ordering::Relaxed) {
                continue;
            }
            let key = (entry.account_id.as_str(), entry.id.as_str());
            // A rotation or revocation changes the index and the record under this lock; a
            // write here after it would bring a revoked session back.
            let _writes = self.session_writes.lock().unwrap_or_else(|p| p.into_inner());
            if !self.sessions_by_hash.get(&hash).is_some_and(|e| Arc::ptr_eq(e.value(), &entry)) {
                continue;
            }
            if let Some(mut record) = self.store.sessions.get(&key)? {
                record.last_used_at_ms = Some(used);
                record.expires_at_ms = Some(entry.expires_at_ms.load(Ordering::Relaxed));
                self.store.sessions.insert(&key, &record)?;
            }
            entry.persisted_ms.store(used, Ordering::Relaxed);
        }
        Ok(())
    }
}
