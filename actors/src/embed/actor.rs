//! `embedder`: the actor that owns the in-process model (neural, or the lexical fallback) and
//! batches the requests queued for it.
//!
//! A forward pass is CPU work of milliseconds to seconds, so it never runs on tokio's async
//! workers nor in the actor's handler: the actor hands one batch at a time to a blocking
//! thread (`spawn_blocking`), which answers the callers itself and then tells the actor it is
//! done. Requests that arrive meanwhile wait in the queue and go together in the next batch
//! (up to [`MAX_BATCH`] sentences), so concurrent callers share forward passes.

use std::{collections::VecDeque, sync::Arc};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

use super::LocalModel;
use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, TreeMsg},
    supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
};

pub const EMBEDDER: &str = "embedder";
/// Sentences per forward pass: past this, a bigger batch costs more in padding and memory
/// than it saves in per-pass overhead on a CPU.
pub const MAX_BATCH: usize = 32;

type Vectors = Result<Vec<Vec<f32>>, String>;

pub enum EmbedderMsg {
    Embed(Vec<String>, RpcReplyPort<Vectors>),
    /// From the blocking thread: a batch has been answered.
    BatchDone {
        sentences: usize,
        error: Option<String>,
    },
    Inspect(RpcReplyPort<Inspection>),
    /// Test-only fault injection: the handler fails, as a bug would.
    InjectFailure(String),
}

impl TreeMsg for EmbedderMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

struct Job {
    texts: Vec<String>,
    reply: RpcReplyPort<Vectors>,
}

pub struct EmbedderState {
    queue: VecDeque<Job>,
    /// A batch is on a blocking thread; the next starts when it reports back.
    busy: bool,
    batches: u64,
    sentences: u64,
    requests: u64,
    /// Requests dropped unrun because their caller stopped waiting.
    abandoned: u64,
    largest_batch: usize,
    last_error: Option<String>,
}

pub struct EmbedderActor {
    model: Arc<dyn LocalModel>,
    /// Why the configured embedder is not the one running (shown in the tree).
    fallback_reason: Option<String>,
}

impl EmbedderActor {
    /// Takes whole requests from the queue up to [`MAX_BATCH`] sentences (always at least
    /// one request, however large: it is split into passes of `MAX_BATCH` on the thread).
    fn start_batch(&self, me: &ActorRef<EmbedderMsg>, state: &mut EmbedderState) {
        if state.busy || state.queue.is_empty() {
            return;
        }
        // A caller that gave up (the semantic cache's wait ran out) is not worth a forward pass.
        let queued = state.queue.len();
        state.queue.retain(|job| !job.reply.is_closed());
        state.abandoned += (queued - state.queue.len()) as u64;
        if state.queue.is_empty() {
            return;
        }
        let mut jobs = Vec::new();
        let mut sentences = 0;
        while let Some(next) = state.queue.front() {
            if !jobs.is_empty() && sentences + next.texts.len() > MAX_BATCH {
                break;
            }
            sentences += next.texts.len();
            jobs.extend(state.queue.pop_front());
        }
        state.busy = true;
        let (model, me) = (self.model.clone(), me.clone());
        // Detached on purpose: the thread answers its callers itself, and a restarted actor
        // must not lose a batch that is already running.
        drop(tokio::task::spawn_blocking(move || {
            let error = run_batch(model.as_ref(), jobs);
            let _ = me.cast(EmbedderMsg::BatchDone { sentences, error });
        }));
    }
}

/// One batch on the blocking thread: all its sentences in passes of [`MAX_BATCH`], then each
/// caller gets its own slice.
fn run_batch(model: &dyn LocalModel, jobs: Vec<Job>) -> Option<String> {
    let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    let mut vectors = Vec::with_capacity(texts.len());
    let mut error = None;
    for chunk in texts.chunks(MAX_BATCH) {
        match model.embed_batch(chunk) {
            Ok(mut out) => vectors.append(&mut out),
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    let mut vectors = vectors.into_iter();
    for job in jobs {
        let answer = match &error {
            Some(e) => Err(e.clone()),
            None => Ok(vectors.by_ref().take(job.texts.len()).collect()),
        };
        let _ = job.reply.send(answer);
    }
    error
}

impl Actor for EmbedderActor {
    type Msg = EmbedderMsg;
    type State = EmbedderState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<EmbedderMsg>, _: ()) -> Result<EmbedderState, ActorProcessingErr> {
        Ok(EmbedderState {
            queue: VecDeque::new(),
            busy: false,
            batches: 0,
            sentences: 0,
            requests: 0,
            abandoned: 0,
            largest_batch: 0,
            last_error: None,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<EmbedderMsg>,
        msg: EmbedderMsg,
        state: &mut EmbedderState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EmbedderMsg::Embed(texts, reply) => {
                state.requests += 1;
                if texts.is_empty() {
                    let _ = reply.send(Ok(Vec::new()));
                    return Ok(());
                }
                state.queue.push_back(Job { texts, reply });
                self.start_batch(&me, state);
            }
            EmbedderMsg::BatchDone { sentences, error } => {
                state.busy = false;
                state.batches += 1;
                state.sentences += sentences as u64;
                state.largest_batch = state.largest_batch.max(sentences);
                if let Some(error) = error {
                    tracing::warn!(%error, "an embedding batch failed");
                    state.last_error = Some(error);
                }
                self.start_batch(&me, state);
            }
            EmbedderMsg::Inspect(reply) => {
                let mean = if state.batches == 0 { 0.0 } else { state.sentences as f64 / state.batches as f64 };
                let _ = reply.send(Inspection::leaf(json!({
                    "embedder": self.model.id(),
                    "fallback_reason": self.fallback_reason,
                    "batches": state.batches,
                    "sentences": state.sentences,
                    "requests": state.requests,
                    "abandoned": state.abandoned,
                    "mean_batch_size": mean,
                    "largest_batch": state.largest_batch,
                    "queued_requests": state.queue.len(),
                    "busy": state.busy,
                    "last_error": state.last_error,
                })));
            }
            EmbedderMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct EmbedderSpec {
    pub model: Arc<dyn LocalModel>,
    pub fallback_reason: Option<String>,
}

impl ChildSpec for EmbedderSpec {
    fn name(&self) -> String {
        EMBEDDER.to_owned()
    }
    fn kind(&self) -> &'static str {
        EMBEDDER
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor = EmbedderActor { model: self.model.clone(), fallback_reason: self.fallback_reason.clone() };
        Box::pin(spawn_linked(actor, (), at))
    }
}
