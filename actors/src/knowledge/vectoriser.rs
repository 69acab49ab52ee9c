//! `kb-vectoriser`: embeds the source chunks that were written without a vector, in the
//! background. With `knowledge.chunk_embedder = "main"` that is every chunk: an ingestion is
//! answered as soon as its records are written and searchable by text, and the shared
//! indexer never waits for the embedding of a large source (MiniLM does about a dozen chunks
//! a second on two cores; a source can have thousands). With the static chunk embedder (the
//! default) an ingestion embeds its own chunks, and this actor only makes the vectors a start
//! finds missing or another embedder's, and those an ingestion could not embed.
//!
//! The indexer hands it those chunks; it embeds them a slice at a time, taking accounts in
//! turn, and sends the vectors back to the indexer, which writes them (it is the only writer)
//! if the chunk is still the one embedded. Small MiniLM slices keep the embedder free for the
//! queries of context packs in between. Entries a later write superseded, or whose chunk is
//! gone, are skipped before embedding; a failed pass goes back to the front and is retried
//! after a pause that grows while it fails. The queue is in memory and bounded per account:
//! entries past the bound are dropped, and once the queue is empty the indexer is asked to
//! look for chunks without a vector again (`IndexerMsg::FindUnvectored`), as it is when this
//! actor restarts with its queue lost, so nothing waits for the next process start.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

use tokaroo_storage::knowledge::SourceChunk;

use super::{
    indexer::{IndexerMsg, INDEXER},
    KnowledgeParts,
};
use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, TreeMsg},
    supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
};

pub const VECTORISER: &str = "kb-vectoriser";
/// Chunks embedded per pass by MiniLM: about a second of the embedder on two cores at most,
/// so a pack's query waits at most that long behind it.
const SLICE: usize = 8;
/// Per pass by the static model (a few milliseconds; it has no queue for queries to wait in).
const INLINE_SLICE: usize = 512;
/// Queued chunks past these are dropped (embedded at the next start instead): one tenant's
/// flood never holds the others' chunks out.
pub(crate) const MAX_QUEUE: usize = 500_000;
pub(crate) const MAX_QUEUE_PER_ACCOUNT: usize = 50_000;
/// After a failed pass, the next waits this long, doubling up to the most.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A chunk to embed: where its vector goes, and the sequence of the record it was made for.
#[derive(Debug, Clone)]
pub struct PendingVector {
    pub account_id: String,
    pub workspace: String,
    pub key: String,
    pub kind: &'static str,
    pub seq: u64,
    pub text: String,
}

/// A finished vector, for the indexer to write.
#[derive(Debug, Clone)]
pub struct MadeVector {
    pub pending: PendingVector,
    pub embedder: String,
    pub vector: Vec<f32>,
}

pub enum VectoriserMsg {
    Embed(Vec<PendingVector>),
    /// The indexer found more than it sent: ask again once the queue is empty.
    MoreToFind,
    /// Embeds the next slice.
    Work,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for VectoriserMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

/// Queued chunks by account, taken in turn: one tenant's flood never holds another's chunks
/// behind it, and taking a slice costs its length whatever the queue holds.
#[derive(Default)]
struct FairQueue {
    by_account: HashMap<String, VecDeque<PendingVector>>,
    /// Accounts with something queued, the next to take from first.
    turn: VecDeque<String>,
    len: usize,
}

impl FairQueue {
    fn push_back(&mut self, p: PendingVector) {
        let turn = &mut self.turn;
        let queue = self.by_account.entry(p.account_id.clone()).or_insert_with(|| {
            turn.push_back(p.account_id.clone());
            VecDeque::new()
        });
        queue.push_back(p);
        self.len += 1;
    }

    /// Back at the very front (a slice whose embedding failed).
    fn push_front(&mut self, p: PendingVector) {
        match self.by_account.get_mut(&p.account_id) {
            Some(queue) => queue.push_front(p),
            None => {
                self.turn.push_front(p.account_id.clone());
                self.by_account.insert(p.account_id.clone(), VecDeque::from([p]));
            }
        }
        self.len += 1;
    }

    /// Up to `max` entries, one account at a time in turn.
    fn take(&mut self, max: usize) -> Vec<PendingVector> {
        let mut taken = Vec::with_capacity(max.min(self.len));
        while taken.len() < max {
            let Some(account) = self.turn.pop_front() else { break };
            let Some(queue) = self.by_account.get_mut(&account) else { continue };
            taken.extend(queue.pop_front());
            if queue.is_empty() {
                self.by_account.remove(&account);
            } else {
                self.turn.push_back(account);
            }
        }
        self.len -= taken.len();
        taken
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct VectoriserState {
    queue: FairQueue,
    /// The latest sequence queued for each key: an older entry of the key is skipped.
    latest: std::collections::HashMap<String, u64>,
    per_account: std::collections::HashMap<String, usize>,
    /// Consecutive failed passes (the backoff grows with them).
    failing: u32,
    scheduled: bool,
    embedded: u64,
    dropped: u64,
    /// Entries dropped since the indexer last looked for chunks without a vector.
    dropped_since_search: u64,
    failures: u64,
    last_error: Option<String>,
}

pub struct VectoriserActor {
    parts: Arc<KnowledgeParts>,
}

impl VectoriserActor {
    /// The next slice to embed, skipping entries a later write of their key superseded and
    /// chunks no longer there as queued (deleted, or replaced by a re-ingestion).
    fn next_slice(&self, state: &mut VectoriserState) -> Vec<PendingVector> {
        let size = if self.parts.chunk_embedder.is_inline() { INLINE_SLICE } else { SLICE };
        let mut slice = Vec::new();
        while slice.len() < size && !state.queue.is_empty() {
            for p in state.queue.take(size - slice.len()) {
                let latest = state.latest.get(&p.key).copied() == Some(p.seq);
                if latest && self.still_current(&p) {
                    slice.push(p);
                } else {
                    self.forget(state, &p);
                }
            }
        }
        slice
    }

    fn still_current(&self, p: &PendingVector) -> bool {
        let Some((document, ordinal)) = p.key.strip_prefix("chunk:").and_then(SourceChunk::parse_id) else {
            return false;
        };
        let chunk = self.parts.store.source_chunks.get(&(p.account_id.as_str(), document, u64::from(ordinal)));
        matches!(chunk, Ok(Some(c)) if c.seq == p.seq)
    }

    /// Drops an entry's bookkeeping once it is done with.
    fn forget(&self, state: &mut VectoriserState, p: &PendingVector) {
        if state.latest.get(&p.key) == Some(&p.seq) {
            state.latest.remove(&p.key);
        }
        if let Some(held) = state.per_account.get_mut(&p.account_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                state.per_account.remove(&p.account_id);
            }
        }
    }
}

impl Actor for VectoriserActor {
    type Msg = VectoriserMsg;
    type State = VectoriserState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<VectoriserMsg>, _: ()) -> Result<VectoriserState, ActorProcessingErr> {
        // Restarted alone, its queue is lost: the indexer looks again for what it held. (At
        // the process's start the indexer is not there yet, and its catching up sends all.)
        if let Some(indexer) = self.parts.registry.actor::<IndexerMsg>(INDEXER) {
            let _ = indexer.cast(IndexerMsg::FindUnvectored);
        }
        Ok(VectoriserState {
            queue: FairQueue::default(),
            latest: Default::default(),
            per_account: Default::default(),
            failing: 0,
            scheduled: false,
            embedded: 0,
            dropped: 0,
            dropped_since_search: 0,
            failures: 0,
            last_error: None,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<VectoriserMsg>,
        msg: VectoriserMsg,
        state: &mut VectoriserState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            VectoriserMsg::Embed(pending) => {
                for p in pending {
                    let held = state.per_account.get(&p.account_id).copied().unwrap_or(0);
                    if state.queue.len() >= MAX_QUEUE || held >= MAX_QUEUE_PER_ACCOUNT {
                        state.dropped += 1;
                        state.dropped_since_search += 1;
                        continue;
                    }
                    if state.latest.get(&p.key).is_some_and(|&seq| seq >= p.seq) {
                        continue;
                    }
                    state.latest.insert(p.key.clone(), p.seq);
                    *state.per_account.entry(p.account_id.clone()).or_default() += 1;
                    state.queue.push_back(p);
                }
                if !state.scheduled && !state.queue.is_empty() {
                    state.scheduled = true;
                    me.cast(VectoriserMsg::Work)?;
                }
            }
            VectoriserMsg::MoreToFind => {
                state.dropped_since_search += 1;
            }
            VectoriserMsg::Work => {
                state.scheduled = false;
                let slice = self.next_slice(state);
                if !slice.is_empty() {
                    let texts = slice.iter().map(|p| p.text.clone()).collect();
                    let made = match self.parts.chunk_embedder.embed(texts).await {
                        Ok(embedded) if embedded.vectors.len() == slice.len() => {
                            let embedder = embedded.embedder.to_string();
                            Ok(slice
                                .iter()
                                .cloned()
                                .zip(embedded.vectors)
                                .map(|(pending, mut vector)| {
                                    crate::embed::l2_normalise(&mut vector);
                                    MadeVector { pending, embedder: embedder.clone(), vector }
                                })
                                .collect::<Vec<_>>())
                        }
                        Ok(_) => Err("the embedder answered another number of vectors".to_owned()),
                        Err(error) => Err(error.to_string()),
                    };
                    let sent = match made {
                        Ok(made) => {
                            match self.parts.registry.wait_for::<IndexerMsg>(INDEXER, Duration::from_secs(5)).await {
                                Some(indexer) => {
                                    let count = made.len() as u64;
                                    indexer.cast(IndexerMsg::Vectors(made)).map(|()| count).map_err(|e| e.to_string())
                                }
                                None => Err("the indexer was not there to write the vectors".to_owned()),
                            }
                        }
                        Err(error) => Err(error),
                    };
                    match sent {
                        Ok(count) => {
                            state.embedded += count;
                            state.failing = 0;
                            for p in &slice {
                                self.forget(state, p);
                            }
                        }
                        Err(error) => {
                            // Back at the front, tried again after a pause that grows while it fails.
                            tracing::warn!(%error, chunks = slice.len(), "knowledge base: embedding chunks failed; retrying later");
                            state.failures += 1;
                            state.failing = state.failing.saturating_add(1);
                            state.last_error = Some(error);
                            for p in slice.into_iter().rev() {
                                state.queue.push_front(p);
                            }
                            let pause = FIRST_BACKOFF.saturating_mul(1 << state.failing.min(6)).min(MAX_BACKOFF);
                            state.scheduled = true;
                            me.send_after(pause, || VectoriserMsg::Work);
                            return Ok(());
                        }
                    }
                }
                if !state.queue.is_empty() {
                    state.scheduled = true;
                    me.cast(VectoriserMsg::Work)?;
                } else if state.dropped_since_search > 0 {
                    // After the vectors just sent (the indexer's mailbox keeps the order).
                    if let Some(indexer) = self.parts.registry.actor::<IndexerMsg>(INDEXER) {
                        state.dropped_since_search = 0;
                        let _ = indexer.cast(IndexerMsg::FindUnvectored);
                    }
                }
            }
            VectoriserMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "queued": state.queue.len(),
                    "accounts_queued": state.per_account.len(),
                    "failing": state.failing,
                    "embedded": state.embedded,
                    "dropped_until_the_queue_drains": state.dropped,
                    "failures": state.failures,
                    "last_error": state.last_error,
                })));
            }
            VectoriserMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct VectoriserSpec {
    pub(crate) parts: Arc<KnowledgeParts>,
}

impl ChildSpec for VectoriserSpec {
    fn name(&self) -> String {
        VECTORISER.to_owned()
    }
    fn kind(&self) -> &'static str {
        VECTORISER
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        Box::pin(spawn_linked(VectoriserActor { parts: self.parts.clone() }, (), at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(account: &str, n: usize) -> PendingVector {
        PendingVector {
            account_id: account.into(),
            workspace: String::new(),
            key: format!("chunk:{account}{n}"),
            kind: "chunk",
            seq: 1,
            text: String::new(),
        }
    }

    /// One tenant's thousand chunks do not hold another's one behind them.
    #[test]
    fn slices_take_accounts_in_turn() {
        let mut queue = FairQueue::default();
        (0..1000).for_each(|n| queue.push_back(pending("big", n)));
        queue.push_back(pending("small", 0));
        let slice = queue.take(4);
        let keys: Vec<&str> = slice.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["chunk:big0", "chunk:small0", "chunk:big1", "chunk:big2"]);
        assert_eq!(queue.len(), 997);
        // A failed slice goes back in front: each account's entries first in its turn.
        slice.into_iter().rev().for_each(|p| queue.push_front(p));
        let mut again: Vec<String> = queue.take(2).into_iter().map(|p| p.key).collect();
        again.sort();
        assert_eq!(again, ["chunk:big0", "chunk:small0"]);
        let rest: Vec<String> = queue.take(usize::MAX).into_iter().map(|p| p.key).collect();
        assert_eq!((rest.len(), rest[0].as_str(), queue.is_empty()), (999, "chunk:big1", true));
    }

    /// A long queue of many accounts: every slice holds as many accounts as it can, and every
    /// entry is taken exactly once.
    #[test]
    fn a_long_queue_of_many_accounts_is_taken_in_turn() {
        let mut queue = FairQueue::default();
        for n in 0..200_000 {
            queue.push_back(pending(&format!("acct{}", n % 1000), n));
        }
        let mut taken = 0;
        while !queue.is_empty() {
            let slice = queue.take(512);
            let accounts: std::collections::HashSet<&str> = slice.iter().map(|p| p.account_id.as_str()).collect();
            assert_eq!(accounts.len(), slice.len().min(1000), "distinct accounts first");
            taken += slice.len();
        }
        assert_eq!(taken, 200_000);
    }
}
