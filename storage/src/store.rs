use std::{fs::File, path::Path, sync::Arc};

use crate::{
    actions::{ActionApproval, ActionAudit, ActionPolicy, ApprovalRef},
    flusher::{Flusher, FlusherStatus},
    harness::{
        ActiveVersion, HarnessTrace, HarnessVersion, Mission, MissionArtifact, MissionRef, MissionStep, MissionTrace,
        Reflection, StepRef,
    },
    knowledge::{
        ForgottenNote, KbCounts, KbExternalRef, KbWriteSet, KnowledgeVector, LinkEnd, MemoryEntity, MemoryEvent,
        MemoryFeedback, MemoryLink, MemoryNote, NoteExternalRef, NotePosition, RemovedFromIndex, Source, SourceChunk,
        SourceDocument,
    },
    ledger::LedgerStore,
    media::{MediaFile, OpenVideoJob, VideoJob},
    records::{
        Account, ApiKey, BillingProfile, CachedAnswer, LocalEndpoint, PaymentAttempt, PendingAdjustment, ProviderKey,
        SemanticEntry, Session, Workspace,
    },
    url::{OpenUrlBatch, UrlBatch, UrlBatchItem, UrlCheck, UrlProfile},
    Collection, Record, StorageError,
};

/// Bumped whenever a record layout changes incompatibly; checked at every open.
pub const SCHEMA_VERSION: u32 = 2;
const SCHEMA_KEY: &[u8] = b"schema_version";

/// The embedded store: one sled database under `<data_dir>/db`, guarded by an exclusive
/// lock on `<data_dir>/LOCK` so that a second server on the same directory fails at once.
#[derive(Clone)]
pub struct Store {
    meta: sled::Tree,
    pub accounts: Collection<Account>,
    pub workspaces: Collection<Workspace>,
    pub api_keys: Collection<ApiKey>,
    pub sessions: Collection<Session>,
    /// Usage rows, credits, balances and rollups: written only by the ledger.
    pub ledger: LedgerStore,
    pub provider_keys: Collection<ProviderKey>,
    pub local_endpoints: Collection<LocalEndpoint>,
    pub billing: Collection<BillingProfile>,
    /// Card charges in flight or done (see [`PaymentAttempt`]).
    pub payment_attempts: Collection<PaymentAttempt>,
    /// Refunds and disputes waiting for their payment's credit (see [`PendingAdjustment`]).
    pub pending_adjustments: Collection<PendingAdjustment>,
    /// The exact response cache (see [`CachedAnswer`]).
    pub answers: Collection<CachedAnswer>,
    /// The semantic cache's prompts and vectors (see [`SemanticEntry`]).
    pub semantic: Collection<SemanticEntry>,
    /// The knowledge base (see `knowledge.rs`).
    pub notes: Collection<MemoryNote>,
    pub note_refs: Collection<NoteExternalRef>,
    pub note_positions: Collection<NotePosition>,
    pub forgotten_notes: Collection<ForgottenNote>,
    pub knowledge_vectors: Collection<KnowledgeVector>,
    pub entities: Collection<MemoryEntity>,
    pub links: Collection<MemoryLink>,
    pub link_ends: Collection<LinkEnd>,
    pub events: Collection<MemoryEvent>,
    pub kb_refs: Collection<KbExternalRef>,
    pub feedback: Collection<MemoryFeedback>,
    pub kb_counts: Collection<KbCounts>,
    pub sources: Collection<Source>,
    pub source_documents: Collection<SourceDocument>,
    pub source_chunks: Collection<SourceChunk>,
    pub removed_from_index: Collection<RemovedFromIndex>,
    /// The mission harness (see `harness.rs`).
    pub missions: Collection<Mission>,
    pub mission_refs: Collection<MissionRef>,
    pub mission_steps: Collection<MissionStep>,
    pub step_refs: Collection<StepRef>,
    pub mission_artifacts: Collection<MissionArtifact>,
    pub traces: Collection<HarnessTrace>,
    pub mission_traces: Collection<MissionTrace>,
    pub harness_versions: Collection<HarnessVersion>,
    pub active_versions: Collection<ActiveVersion>,
    pub reflections: Collection<Reflection>,
    /// Action guardrails (see `actions.rs`).
    pub action_policies: Collection<ActionPolicy>,
    pub action_approvals: Collection<ActionApproval>,
    pub approval_refs: Collection<ApprovalRef>,
    pub action_audit: Collection<ActionAudit>,
    /// URL intelligence (see `url.rs`).
    pub url_checks: Collection<UrlCheck>,
    pub url_profiles: Collection<UrlProfile>,
    pub url_batches: Collection<UrlBatch>,
    pub url_batch_items: Collection<UrlBatchItem>,
    pub url_batches_open: Collection<OpenUrlBatch>,
    /// Generated media served by URL (see `media.rs`).
    pub media_files: Collection<MediaFile>,
    pub video_jobs: Collection<VideoJob>,
    pub video_jobs_open: Collection<OpenVideoJob>,
    /// Every knowledge-base tree by name, for `apply_kb`'s transactions.
    kb_trees: Arc<(Vec<&'static str>, Vec<sled::Tree>)>,
    /// The knowledge base's write sequence (see `knowledge.rs`).
    kb_seq: sled::Tree,
    data_dir: std::path::PathBuf,
    /// The only caller of sled's flush (see `flusher.rs`).
    flusher: Arc<Flusher>,
    _lock: Arc<File>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let io_err = |source| StorageError::Io { path: data_dir.display().to_string(), source };
        std::fs::create_dir_all(data_dir).map_err(io_err)?;
        let lock_path = data_dir.join("LOCK");
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io_err)?;
        if lock.try_lock().is_err() {
            return Err(StorageError::Locked { path: data_dir.display().to_string() });
        }
        let db = sled::Config::new().path(data_dir.join("db")).flush_every_ms(Some(200)).open()?;
        let meta = db.open_tree("meta")?;
        check_schema(&meta)?;
        let flusher = Arc::new(Flusher::start(db.clone())?);
        let kb_tree_names = vec![
            MemoryNote::TREE,
            NoteExternalRef::TREE,
            NotePosition::TREE,
            ForgottenNote::TREE,
            KnowledgeVector::TREE,
            MemoryEntity::TREE,
            MemoryLink::TREE,
            LinkEnd::TREE,
            MemoryEvent::TREE,
            KbExternalRef::TREE,
            MemoryFeedback::TREE,
            KbCounts::TREE,
            Source::TREE,
            SourceDocument::TREE,
            SourceChunk::TREE,
            RemovedFromIndex::TREE,
        ];
        let kb_trees = kb_tree_names.iter().map(|name| db.open_tree(name)).collect::<Result<Vec<_>, _>>()?;
        // `db` itself is kept only by the flusher: every tree holds what it needs.
        Ok(Self {
            accounts: Collection::open(&db)?,
            workspaces: Collection::open(&db)?,
            api_keys: Collection::open(&db)?,
            sessions: Collection::open(&db)?,
            ledger: LedgerStore::open(&db)?,
            provider_keys: Collection::open(&db)?,
            local_endpoints: Collection::open(&db)?,
            billing: Collection::open(&db)?,
            payment_attempts: Collection::open(&db)?,
            pending_adjustments: Collection::open(&db)?,
            answers: Collection::open(&db)?,
            semantic: Collection::open(&db)?,
            notes: Collection::open(&db)?,
            note_refs: Collection::open(&db)?,
            note_positions: Collection::open(&db)?,
            forgotten_notes: Collection::open(&db)?,
            knowledge_vectors: Collection::open(&db)?,
            entities: Collection::open(&db)?,
            links: Collection::open(&db)?,
            link_ends: Collection::open(&db)?,
            events: Collection::open(&db)?,
            kb_refs: Collection::open(&db)?,
            feedback: Collection::open(&db)?,
            kb_counts: Collection::open(&db)?,
            sources: Collection::open(&db)?,
            source_documents: Collection::open(&db)?,
            source_chunks: Collection::open(&db)?,
            removed_from_index: Collection::open(&db)?,
            missions: Collection::open(&db)?,
            mission_refs: Collection::open(&db)?,
            mission_steps: Collection::open(&db)?,
            step_refs: Collection::open(&db)?,
            mission_artifacts: Collection::open(&db)?,
            traces: Collection::open(&db)?,
            mission_traces: Collection::open(&db)?,
            harness_versions: Collection::open(&db)?,
            active_versions: Collection::open(&db)?,
            reflections: Collection::open(&db)?,
            action_policies: Collection::open(&db)?,
            action_approvals: Collection::open(&db)?,
            approval_refs: Collection::open(&db)?,
            action_audit: Collection::open(&db)?,
            url_checks: Collection::open(&db)?,
            url_profiles: Collection::open(&db)?,
            url_batches: Collection::open(&db)?,
            url_batch_items: Collection::open(&db)?,
            url_batches_open: Collection::open(&db)?,
            media_files: Collection::open(&db)?,
            video_jobs: Collection::open(&db)?,
            video_jobs_open: Collection::open(&db)?,
            kb_trees: Arc::new((kb_tree_names, kb_trees)),
            kb_seq: db.open_tree("knowledge_seq")?,
            data_dir: data_dir.to_path_buf(),
            meta,
            flusher,
            _lock: Arc::new(lock),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where the knowledge base's text index lives.
    pub fn text_index_dir(&self) -> std::path::PathBuf {
        self.data_dir.join("index").join("text")
    }

    /// The next knowledge-base write sequence: strictly increasing, across restarts too.
    pub fn next_kb_seq(&self) -> Result<u64, StorageError> {
        let next = self.kb_seq.update_and_fetch("seq", |old| {
            let n = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(next.and_then(|b| b.as_ref().try_into().ok()).map(u64::from_be_bytes).unwrap_or(1))
    }

    /// Applies a knowledge-base write set in one sled transaction: every write or none, even
    /// across a crash. Not durable until the next `flush`.
    pub fn apply_kb(&self, set: &KbWriteSet) -> Result<(), StorageError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        use sled::Transactional;
        let (names, trees) = &*self.kb_trees;
        let mut slots = Vec::with_capacity(set.ops.len());
        for (tree, _, _) in &set.ops {
            let slot = names.iter().position(|n| n == tree).ok_or_else(|| StorageError::Corrupt {
                tree: (*tree).into(),
                detail: "not a knowledge-base tree".into(),
            })?;
            slots.push(slot);
        }
        let result = trees[..].transaction(|views| {
            for ((_, key, value), &slot) in set.ops.iter().zip(&slots) {
                match value {
                    Some(value) => views[slot].insert(key.as_slice(), value.as_slice())?,
                    None => views[slot].remove(key.as_slice())?,
                };
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => {
                Err(StorageError::Corrupt { tree: "knowledge".into(), detail: "transaction aborted".into() })
            }
        }
    }

    /// Raises the knowledge-base write sequence to at least `floor` (never lowers it).
    pub fn raise_kb_seq(&self, floor: u64) -> Result<(), StorageError> {
        self.kb_seq.update_and_fetch("seq", |old| {
            let n = old.and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some(n.max(floor).to_be_bytes().to_vec())
        })?;
        Ok(())
    }

    /// Where the ledger's write-ahead log lives.
    pub fn wal_dir(&self) -> std::path::PathBuf {
        self.data_dir.join("ledger-wal")
    }

    /// Small string flags such as "bootstrapped".
    pub fn meta_get(&self, key: &str) -> Result<Option<String>, StorageError> {
        Ok(self.meta.get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn meta_set(&self, key: &str, value: &str) -> Result<(), StorageError> {
        self.meta.insert(key, value.as_bytes())?;
        Ok(())
    }

    /// Makes every write made before this call durable, sharing one flush with every caller
    /// that queued meanwhile. Management writes call this before answering.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.flusher.flush().await
    }

    /// `flush` for threads that are not async.
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.flusher.flush_blocking()
    }

    /// The last flush, then no more: later flushes answer `Closed`. False when the flusher
    /// did not finish within `timeout` (storage is stuck); nothing should wait on it then.
    pub fn close(&self, timeout: std::time::Duration) -> bool {
        self.flusher.stop(timeout)
    }

    pub fn flusher_status(&self) -> FlusherStatus {
        self.flusher.status()
    }

    /// Test-only fault injection: hold every flush, as a disk that stopped answering would.
    pub fn hold_flushes(&self, held: bool) {
        self.flusher.hold(held);
    }
}

fn check_schema(meta: &sled::Tree) -> Result<(), StorageError> {
    match meta.get(SCHEMA_KEY)? {
        None => {
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(bytes) => {
            let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| StorageError::Corrupt {
                tree: "meta".into(),
                detail: "schema_version is not 4 bytes".into(),
            })?);
            if found == SCHEMA_VERSION {
                Ok(())
            } else {
                Err(StorageError::SchemaVersion { found, expected: SCHEMA_VERSION })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(id: &str) -> Account {
        Account { id: id.into(), name: id.into(), is_operator: false, self_serve: false, created_at_ms: 1 }
    }

    /// Cache records that no longer decode are dropped, not fatal; vectors round-trip exactly.
    #[test]
    fn a_cache_scan_drops_what_does_not_decode_and_keeps_vectors_exact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let entry = SemanticEntry {
            partition: "ws:a/".into(),
            key: "k".into(),
            context: "c".into(),
            prompt: "p".into(),
            embedder: "neural:m:3".into(),
            vector: vec![0.1, -2.5e-7, f32::MAX],
            created_at_ms: 1,
            expires_at_ms: 2,
        };
        store.semantic.insert(&("ws:a/", "k"), &entry).unwrap();
        store.semantic.tree().insert(b"garbage", b"\x01{\"vector\": \"AAA\"}".to_vec()).unwrap();
        let (records, dropped) = store.semantic.all_dropping_undecodable().unwrap();
        assert_eq!((records, dropped), (vec![entry], 1));
        assert_eq!(store.semantic.len(), 1);
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.accounts.insert(&"a1", &account("a1")).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.accounts.get(&"a1").unwrap(), Some(account("a1")));
        assert_eq!(store.accounts.get(&"a2").unwrap(), None);
    }

    #[test]
    fn second_open_of_same_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        match Store::open(dir.path()) {
            Err(StorageError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("expected Locked, got a second store"),
        }
    }

    #[test]
    fn schema_version_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.meta.insert(SCHEMA_KEY, &99u32.to_be_bytes()).unwrap();
            store.flush_blocking().unwrap();
        }
        match Store::open(dir.path()) {
            Err(StorageError::SchemaVersion { found: 99, expected: SCHEMA_VERSION }) => {}
            Err(other) => panic!("expected SchemaVersion, got {other}"),
            Ok(_) => panic!("expected SchemaVersion error"),
        }
    }

    #[test]
    fn prefix_scan_is_scoped_and_insert_new_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (acct, id) in [("a", "1"), ("a", "2"), ("ab", "3")] {
            let mut rec = account(id);
            rec.name = acct.into();
            assert!(store.accounts.insert_new(&(acct, id), &rec).unwrap());
        }
        assert!(!store.accounts.insert_new(&("a", "1"), &account("1")).unwrap());
        let in_a: Vec<String> = store.accounts.scan_prefix(&("a",)).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(in_a, vec!["1", "2"]);
    }
}
