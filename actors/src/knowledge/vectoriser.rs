//! `kb-vectoriser`: embeds source chunks in the background, so an ingestion is answered as
//! soon as its records are written and searchable by text, and the shared indexer never waits
//! for the embedding of a large source (the built-in model does a few dozen chunks a second
//! on two cores; a source can have thousands).
//!
//! The indexer hands it the chunks it wrote without vectors; it embeds them a few at a time,
//! taking accounts in turn, and sends the vectors back to the indexer, which writes them
//! (it is the only writer) if the chunk is still the one embedded. Small slices keep the
//! embedder free for the queries of context packs in between. The queue is in memory: what a
//! restart loses is found again at the next start (a chunk without a current vector).

use std::{collections::VecDeque, sync::Arc, time::Duration};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

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
/// Chunks embedded per pass: about a second of the embedder on two cores at most, so a pack's
/// query waits at most that long behind it.
const SLICE: usize = 8;
/// Queued chunks past this are dropped (embedded at the next start instead).
const MAX_QUEUE: usize = 500_000;

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

impl Actor for VectoriserActor {
    type Msg = VectoriserMsg;
    type State = VectoriserState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<VectoriserMsg>, _: ()) -> Result<VectoriserState, ActorProcessingErr> {
        Ok(VectoriserState {
            queue: VecDeque::new(),
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
                let room = MAX_QUEUE.saturating_sub(state.queue.len());
                state.dropped += pending.len().saturating_sub(room) as u64;
                state.queue.extend(pending.into_iter().take(room));
                if !state.scheduled && !state.queue.is_empty() {
                    state.scheduled = true;
                    me.cast(VectoriserMsg::Work)?;
                }
            }
            VectoriserMsg::Work => {
                state.scheduled = false;
                let slice = take_fairly(&mut state.queue, SLICE);
                if !slice.is_empty() {
                    let texts = slice.iter().map(|p| p.text.clone()).collect();
                    match self.parts.embedder.embed(texts).await {
                        Ok(embedded) if embedded.vectors.len() == slice.len() => {
                            let embedder = embedded.embedder.to_string();
                            let made: Vec<MadeVector> = slice
                                .into_iter()
                                .zip(embedded.vectors)
                                .map(|(pending, mut vector)| {
                                    crate::embed::l2_normalise(&mut vector);
                                    MadeVector { pending, embedder: embedder.clone(), vector }
                                })
                                .collect();
                            state.embedded += made.len() as u64;
                            match self.parts.registry.wait_for::<IndexerMsg>(INDEXER, Duration::from_secs(5)).await {
                                Some(indexer) => indexer.cast(IndexerMsg::Vectors(made))?,
                                None => state.last_error = Some("the indexer was not there to write vectors".into()),
                            }
                        }
                        Ok(_) => state.failures += 1,
                        Err(error) => {
                            // Left for the next start, which finds these chunks without vectors.
                            tracing::warn!(%error, chunks = slice.len(), "knowledge base: embedding chunks failed; retried at the next start");
                            state.failures += 1;
                            state.last_error = Some(error.to_string());
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
