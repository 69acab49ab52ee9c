//! `kb-vectoriser`: embeds source chunks in the background, so an ingestion is answered as
//! soon as its records are written and searchable by text, and the shared indexer never waits
//! for the embedding of a large source (MiniLM does about a dozen chunks a second on two
//! cores; a source can have thousands). With the static chunk embedder (the default) an
//! ingestion embeds its own chunks, and this actor only catches up at start, after a failed
//! embedding, and after the chunk embedder changed.
//!
//! The indexer hands it the chunks it wrote without vectors; it embeds them a few at a time,
//! taking accounts in turn, and sends the vectors back to the indexer, which writes them
//! (it is the only writer) if the chunk is still the one embedded. Small slices keep the
//! embedder free for the queries of context packs in between. Entries a later write
//! superseded, or whose chunk is gone, are skipped before embedding; a failed pass goes back
//! to the front and is retried after a pause that grows while it fails. The queue is bounded
//! per account and in memory: what a restart loses is found again at the next start (a chunk
//! without a current vector).

use std::{collections::VecDeque, sync::Arc, time::Duration};

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
const MAX_QUEUE: usize = 500_000;
const MAX_QUEUE_PER_ACCOUNT: usize = 50_000;
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

pub struct VectoriserState {
    queue: VecDeque<PendingVector>,
    /// The latest sequence queued for each key: an older entry of the key is skipped.
    latest: std::collections::HashMap<String, u64>,
    per_account: std::collections::HashMap<String, usize>,
    /// Consecutive failed passes (the backoff grows with them).
    failing: u32,
    scheduled: bool,
    embedded: u64,
    dropped: u64,
    failures: u64,
    last_error: Option<String>,
}

pub struct VectoriserActor {
    parts: Arc<KnowledgeParts>,
}

/// Up to `max` queued chunks, one account at a time in turn.
fn take_fairly(queue: &mut VecDeque<PendingVector>, max: usize) -> Vec<PendingVector> {
    let mut accounts: Vec<String> = Vec::new();
    for p in queue.iter() {
        if !accounts.contains(&p.account_id) {
            accounts.push(p.account_id.clone());
        }
        if accounts.len() >= max {
            break;
        }
    }
    let mut taken = Vec::new();
    while taken.len() < max && !queue.is_empty() {
        let before = taken.len();
        for account in &accounts {
            if taken.len() >= max {
                break;
            }
            if let Some(at) = queue.iter().position(|p| &p.account_id == account) {
                taken.extend(queue.remove(at));
            }
        }
        if taken.len() == before {
            taken.extend(queue.pop_front());
        }
    }
    taken
}

impl VectoriserActor {
    /// The next slice to embed, skipping entries a later write of their key superseded and
    /// chunks no longer there as queued (deleted, or replaced by a re-ingestion).
    fn next_slice(&self, state: &mut VectoriserState) -> Vec<PendingVector> {
        let size = if self.parts.chunk_embedder.is_inline() { INLINE_SLICE } else { SLICE };
        let mut slice = Vec::new();
        while slice.len() < size && !state.queue.is_empty() {
            for p in take_fairly(&mut state.queue, size - slice.len()) {
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
        Ok(VectoriserState {
            queue: VecDeque::new(),
            latest: Default::default(),
            per_account: Default::default(),
            failing: 0,
            scheduled: false,
            embedded: 0,
            dropped: 0,
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
                }
            }
            VectoriserMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "queued": state.queue.len(),
                    "accounts_queued": state.per_account.len(),
                    "failing": state.failing,
                    "embedded": state.embedded,
                    "dropped_for_next_start": state.dropped,
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
        let mut queue: VecDeque<PendingVector> = (0..1000).map(|n| pending("big", n)).collect();
        queue.push_back(pending("small", 0));
        let slice = take_fairly(&mut queue, 4);
        let keys: Vec<&str> = slice.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["chunk:big0", "chunk:small0", "chunk:big1", "chunk:big2"]);
        assert_eq!(queue.len(), 997);
    }
}
