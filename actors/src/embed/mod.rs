//! The `Embedder`: sentences to vectors, for the semantic cache and the knowledge base.
//!
//! Four kinds (`EmbedderKind`):
//! - `neural`, the default: all-MiniLM-L6-v2 run in-process (`neural.rs`) by the `embedder`
//!   actor (`actor.rs`), which batches concurrent requests onto blocking threads;
//! - `routed`: a provider or self-hosted embedding model through the router (`routed.rs`);
//! - `lexical`: hashed n-grams (`lexical.rs`), only when the neural model is missing or refused,
//!   with a warning at start and in `/readyz`;
//! - `static`: a token table and a mean (`static_model.rs`), the knowledge base's embedder of
//!   source chunks; called inline on a blocking thread (no batching to gain).
//!
//! Every answer says which embedder made it ([`EmbedderId`]: kind, model, dimension), so
//! stored vectors of different embedders are never compared.

pub mod actor;
pub mod fetch;
pub mod lexical;
pub mod model_files;
pub mod neural;
pub mod routed;
pub mod static_model;

use std::{path::PathBuf, sync::Arc, time::Duration};

use ractor::rpc::CallResult;
use serde::{Deserialize, Serialize};

use crate::{directory::state::DirectoryState, error::EngineError, routing::router::Router, tree::registry::Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedderKind {
    Neural,
    Routed,
    Lexical,
    Static,
}

/// Which embedder made a vector. Two vectors are comparable only when their ids are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EmbedderId {
    pub kind: EmbedderKind,
    pub model: String,
    pub dims: usize,
}

impl EmbedderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Neural => "neural",
            Self::Routed => "routed",
            Self::Lexical => "lexical",
            Self::Static => "static",
        }
    }
}

/// `kind:model:dims`, e.g. `neural:all-MiniLM-L6-v2:384`.
impl std::fmt::Display for EmbedderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind.as_str(), self.model, self.dims)
    }
}

/// Vectors with the embedder that made them (its `dims` is the vectors' real length).
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub embedder: EmbedderId,
    pub vectors: Vec<Vec<f32>>,
}

/// A model run in-process: synchronous CPU work, called only on blocking threads.
pub trait LocalModel: Send + Sync + 'static {
    fn id(&self) -> EmbedderId;
    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, String>;
}

/// What the operator chose (`[embedder]` in config).
#[derive(Debug, Clone)]
pub enum EmbedderSettings {
    /// The built-in model from this directory; `None` (no model configured) and a missing or
    /// refused directory fall back to lexical, loudly.
    Neural { model_dir: Option<PathBuf> },
    /// An embedding model through the router (a catalog model or one a self-hosted endpoint
    /// of the operator serves).
    Routed { model: String },
}

impl Default for EmbedderSettings {
    fn default() -> Self {
        Self::Neural { model_dir: None }
    }
}

/// Which embedder makes the vectors of the knowledge base's source chunks (`[knowledge]
/// chunk_embedder` in config).
#[derive(Debug, Clone)]
pub enum ChunkEmbedderSettings {
    /// The static model from this directory (see `static_model.rs`); `None`, or a missing or
    /// refused directory, falls back to the main embedder, with a warning.
    Static { model_dir: Option<PathBuf> },
    /// The main embedder, as notes and the cache use (better vectors, far slower ingestion).
    Main,
}

impl Default for ChunkEmbedderSettings {
    fn default() -> Self {
        Self::Static { model_dir: None }
    }
}

/// How long a caller waits for its batch; a long input on a busy CPU takes seconds.
const EMBED_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a caller waits for a restarting actor to be back.
const RESTART_WAIT: Duration = Duration::from_secs(5);

/// The service other code calls: `engine.embedder()`. One `Arc`, cloned freely.
#[derive(Clone)]
pub struct Embedder(Arc<EmbedderParts>);

struct EmbedderParts {
    id: EmbedderId,
    fallback_reason: Option<String>,
    way: Way,
}

enum Way {
    /// Through the `embedder` actor, found by name on each call (it may have restarted).
    Local(Registry),
    Routed(routed::Routed),
    /// A model cheap enough to call directly on a blocking thread.
    Inline(Arc<dyn LocalModel>),
}

impl Embedder {
    /// Which embedder answers (for `routed`, `dims` is the catalog's, 0 if unknown).
    pub fn id(&self) -> EmbedderId {
        self.0.id.clone()
    }

    /// Why the lexical fallback runs instead of the neural model; `None` when it does not.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.0.fallback_reason.as_deref()
    }

    /// One vector per text, in order, L2-normalised for the local kinds.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, EngineError> {
        match &self.0.way {
            Way::Routed(routed) => {
                let vectors = routed.embed(texts).await?;
                let mut embedder = routed.id();
                if let Some(first) = vectors.first() {
                    embedder.dims = first.len();
                }
                Ok(Embeddings { embedder, vectors })
            }
            Way::Inline(model) => {
                let model = model.clone();
                match tokio::task::spawn_blocking(move || model.embed_batch(&texts)).await {
                    Ok(Ok(vectors)) => Ok(Embeddings { embedder: self.id(), vectors }),
                    Ok(Err(error)) => Err(EngineError::Internal(format!("embedding: {error}"))),
                    Err(error) => Err(EngineError::Internal(format!("the embedding thread ended: {error}"))),
                }
            }
            Way::Local(registry) => {
                let actor = find_actor(registry).await?;
                match actor.call(|reply| actor::EmbedderMsg::Embed(texts, reply), Some(EMBED_TIMEOUT)).await {
                    Ok(CallResult::Success(Ok(vectors))) => Ok(Embeddings { embedder: self.id(), vectors }),
                    Ok(CallResult::Success(Err(error))) => Err(EngineError::Internal(format!("embedding: {error}"))),
                    Ok(CallResult::Timeout) => Err(EngineError::Unavailable("the embedder timed out".into())),
                    Ok(CallResult::SenderError) | Err(_) => {
                        Err(EngineError::Unavailable("the embedder is restarting; retry shortly".into()))
                    }
                }
            }
        }
    }
}

impl Embedder {
    /// A model called inline (see [`Way::Inline`]).
    pub fn inline(model: Arc<dyn LocalModel>) -> Self {
        Self(Arc::new(EmbedderParts { id: model.id(), fallback_reason: None, way: Way::Inline(model) }))
    }

    /// Whether this embedder is cheap enough to call on every chunk as it is ingested.
    pub fn is_inline(&self) -> bool {
        matches!(self.0.way, Way::Inline(_))
    }
}

async fn find_actor(registry: &Registry) -> Result<ractor::ActorRef<actor::EmbedderMsg>, EngineError> {
    registry
        .wait_for(actor::EMBEDDER, RESTART_WAIT)
        .await
        .ok_or_else(|| EngineError::Unavailable("the embedder is restarting; retry shortly".into()))
}

/// Chooses and loads the embedder: the neural model on a blocking thread (reading and
/// hashing 87 MiB), or the fallback with a warning saying why and how to get the model.
/// Returns the service and, for the local kinds, the model the `embedder` actor owns (the
/// routed kind has no actor: its calls are network waits, batched by nobody).
pub(crate) async fn prepare(
    settings: &EmbedderSettings,
    registry: Registry,
    router: Arc<Router>,
    directory: Arc<DirectoryState>,
) -> (Embedder, Option<Arc<dyn LocalModel>>) {
    let (model, fallback_reason): (Arc<dyn LocalModel>, Option<String>) = match settings {
        EmbedderSettings::Routed { model } => {
            let routed = routed::Routed { router, directory, model: model.clone() };
            let id = routed.id();
            tracing::info!(embedder = %id, "embeddings go through the router (internal use: not charged)");
            let parts = EmbedderParts { id, fallback_reason: None, way: Way::Routed(routed) };
            return (Embedder(Arc::new(parts)), None);
        }
        EmbedderSettings::Neural { model_dir: None } => {
            (Arc::new(lexical::Lexical), Some("no model directory is configured".to_owned()))
        }
        EmbedderSettings::Neural { model_dir: Some(dir) } if !model_files::MINILM.is_present(dir) => (
            Arc::new(lexical::Lexical),
            Some(format!("the neural model is missing from {}; run `tokaroo models pull`", dir.display())),
        ),
        EmbedderSettings::Neural { model_dir: Some(dir) } => {
            let path = dir.clone();
            match tokio::task::spawn_blocking(move || neural::Neural::load(&path)).await {
                Ok(Ok(model)) => {
                    tracing::info!(embedder = %model.id(), dir = %dir.display(), "neural embedding model loaded");
                    (Arc::new(model), None)
                }
                Ok(Err(error)) => (
                    Arc::new(lexical::Lexical),
                    Some(format!(
                        "the neural model in {} was refused: {error}; run `tokaroo models pull`",
                        dir.display()
                    )),
                ),
                Err(error) => (Arc::new(lexical::Lexical), Some(format!("loading the neural model: {error}"))),
            }
        }
    };
    if let Some(reason) = &fallback_reason {
        tracing::warn!(
            reason = %reason,
            "EMBEDDER FALLBACK: using the lexical embedder (hashed n-grams, far weaker than the neural model); \
             `tokaroo models pull` fetches all-MiniLM-L6-v2, or set TOKAROO_EMBED_MODEL_DIR"
        );
    }
    let parts = EmbedderParts { id: model.id(), fallback_reason, way: Way::Local(registry) };
    (Embedder(Arc::new(parts)), Some(model))
}

/// The embedder of source chunks: the static model when configured and intact, else `main`
/// with the reason the static model is not in use.
pub(crate) async fn prepare_chunk_embedder(
    settings: &ChunkEmbedderSettings,
    main: &Embedder,
) -> (Embedder, Option<String>) {
    let dir = match settings {
        ChunkEmbedderSettings::Main => return (main.clone(), None),
        ChunkEmbedderSettings::Static { model_dir: None } => None,
        ChunkEmbedderSettings::Static { model_dir: Some(dir) } => Some(dir.clone()),
    };
    let loaded = match dir {
        None => Err("has no directory configured".to_owned()),
        Some(dir) if !model_files::WORDLLAMA.is_present(&dir) => {
            Err(format!("is missing from {}; run `tokaroo models pull`", dir.display()))
        }
        Some(dir) => tokio::task::spawn_blocking(move || static_model::StaticModel::load(&dir))
            .await
            .unwrap_or_else(|e| Err(format!("ended its loading thread: {e}")))
            .map_err(|e| format!("was refused: {e}")),
    };
    match loaded {
        Ok(model) => {
            tracing::info!(embedder = %model.id(), "source chunks are embedded by the static model");
            (Embedder::inline(Arc::new(model)), None)
        }
        Err(reason) => {
            tracing::warn!(
                %reason,
                embedder = %main.id(),
                "the static model of source chunks is not loaded: chunks use the main embedder (a large source's \
                 vectors then trail its ingestion)"
            );
            (main.clone(), Some(format!("the static model of source chunks {reason}")))
        }
    }
}

pub(crate) fn l2_normalise(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// The dot product: for unit vectors (what the local kinds make), their cosine similarity.
/// Eight running sums, so the compiler can keep them in one SIMD register (a single sum
/// of floats must be added in order, which it cannot vectorise); searches compare a query
/// with every stored vector of a scope, so this is their inner loop.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            sums[i] += x[i] * y[i];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    sums.iter().sum::<f32>() + rest
}

/// Cosine similarity; for unit vectors, their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot = dot(a, b);
    let norms = a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norms == 0.0 {
        0.0
    } else {
        dot / norms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::EngineConfig, engine::Engine, tree::inspect::ActorNode};

    async fn engine_with(settings: EmbedderSettings, dir: &std::path::Path) -> Engine {
        let config = EngineConfig { fault_injection: true, embedder: settings, ..EngineConfig::default() };
        Engine::start(tokaroo_storage::Store::open(dir).unwrap(), config).await.unwrap()
    }

    async fn embedder_node(engine: &Engine) -> ActorNode {
        engine.actor_tree().await.children.into_iter().find(|c| c.name == actor::EMBEDDER).expect("an embedder actor")
    }

    /// Concurrent callers share forward passes, and each gets exactly its own vectors.
    #[tokio::test]
    async fn concurrent_requests_are_batched_and_answered_in_order() {
        let data = tempfile::tempdir().unwrap();
        let model_dir = crate::test_support::test_model_dir().await;
        let engine = engine_with(EmbedderSettings::Neural { model_dir: Some(model_dir) }, data.path()).await;
        let embedder = engine.embedder().clone();
        assert_eq!(embedder.id().kind, EmbedderKind::Neural);
        assert!(embedder.fallback_reason().is_none());
        let texts: Vec<String> = (0..24).map(|i| format!("sentence number {i} about topic {}", i % 5)).collect();
        let calls = texts.iter().map(|t| {
            let embedder = embedder.clone();
            let text = t.clone();
            async move { embedder.embed(vec![text]).await.unwrap() }
        });
        let answers = futures_util::future::join_all(calls).await;
        let alone = embedder.embed(texts.clone()).await.unwrap();
        for (answer, expected) in answers.iter().zip(&alone.vectors) {
            assert_eq!(answer.embedder, alone.embedder);
            assert_eq!(answer.vectors.len(), 1);
            let diff = answer.vectors[0].iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-5, "{diff}");
        }
        // The thread answers its callers before it reports the batch done: wait for the report.
        let mut node = embedder_node(&engine).await;
        for _ in 0..100 {
            if node.snapshot["sentences"] == 48 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            node = embedder_node(&engine).await;
        }
        let batches = node.snapshot["batches"].as_u64().unwrap();
        assert_eq!(node.snapshot["sentences"], 48);
        assert!(batches < 25, "24 concurrent requests and one of 24 ran in {batches} batches");
        assert_eq!(node.snapshot["embedder"]["kind"], "neural");
        // A failed actor comes back and serves again.
        engine.inject_failure(actor::EMBEDDER).unwrap();
        let mut again = embedder.embed(vec![texts[0].clone()]).await;
        for _ in 0..50 {
            if again.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            again = embedder.embed(vec![texts[0].clone()]).await;
        }
        let again = again.unwrap();
        let diff = again.vectors[0].iter().zip(&alone.vectors[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-5, "the restarted actor serves the same model: {diff}");
        engine.shutdown().await.unwrap();
    }

    /// No model: the lexical fallback, saying why and how to get the model.
    #[tokio::test]
    async fn a_missing_model_falls_back_to_lexical_and_says_so() {
        let data = tempfile::tempdir().unwrap();
        let missing = data.path().join("no-model-here");
        let engine = engine_with(EmbedderSettings::Neural { model_dir: Some(missing) }, data.path()).await;
        let embedder = engine.embedder();
        assert_eq!(embedder.id().kind, EmbedderKind::Lexical);
        assert!(embedder.fallback_reason().unwrap().contains("tokaroo models pull"));
        let a = embedder.embed(vec!["reset my password".into()]).await.unwrap();
        let b = embedder.embed(vec!["reset my password".into()]).await.unwrap();
        assert_eq!(a.vectors, b.vectors);
        assert_eq!(a.embedder.dims, a.vectors[0].len());
        let node = embedder_node(&engine).await;
        assert!(node.snapshot["fallback_reason"].as_str().unwrap().contains("missing"));
        engine.shutdown().await.unwrap();
    }

    /// Routed: the router's embeddings path (here the offline simulator, as no provider is
    /// configured), with no actor and no usage row: internal use is not charged.
    #[tokio::test]
    async fn routed_embeddings_go_through_the_router_uncharged() {
        let data = tempfile::tempdir().unwrap();
        let settings = EmbedderSettings::Routed { model: "text-embedding-3-small".into() };
        let engine = engine_with(settings, data.path()).await;
        let credentials = engine.directory().bootstrap().await.unwrap().unwrap();
        let id = engine.embedder().id();
        assert_eq!((id.kind, id.model.as_str(), id.dims), (EmbedderKind::Routed, "text-embedding-3-small", 1536));
        let out = engine.embedder().embed(vec!["hello".into(), "world".into()]).await.unwrap();
        assert_eq!(out.vectors.len(), 2);
        assert_eq!(out.embedder.dims, out.vectors[0].len());
        assert!(engine.actor_tree().await.children.iter().all(|c| c.name != actor::EMBEDDER));
        let (usage, _) =
            engine.store().ledger.usage_page(&credentials.account_id, &Default::default(), None, 10).unwrap();
        assert!(usage.is_empty(), "no usage row for internal embeddings");
        engine.shutdown().await.unwrap();
    }

    /// The static chunk embedder: inline when its model is there, else the main embedder with
    /// the reason; `Main` is the main embedder with no reason.
    #[tokio::test]
    async fn the_chunk_embedder_is_static_or_falls_back_to_the_main_one() {
        let data = tempfile::tempdir().unwrap();
        let main = engine_with(EmbedderSettings::Neural { model_dir: None }, data.path()).await;
        let main_embedder = main.embedder().clone();
        let dir = crate::test_support::test_static_model_dir().await;
        let (chunks, reason) =
            prepare_chunk_embedder(&ChunkEmbedderSettings::Static { model_dir: Some(dir) }, &main_embedder).await;
        assert!(chunks.is_inline() && reason.is_none());
        assert_eq!(chunks.id().kind, EmbedderKind::Static);
        let out = chunks.embed(vec!["a chunk of a handbook".into(), String::new()]).await.unwrap();
        assert_eq!((out.vectors.len(), out.vectors[0].len(), out.embedder.dims), (2, 256, 256));
        let missing = data.path().join("none");
        let (chunks, reason) =
            prepare_chunk_embedder(&ChunkEmbedderSettings::Static { model_dir: Some(missing) }, &main_embedder).await;
        assert_eq!(chunks.id(), main_embedder.id());
        assert!(reason.unwrap().contains("is missing"));
        let (chunks, reason) = prepare_chunk_embedder(&ChunkEmbedderSettings::Main, &main_embedder).await;
        assert!(!chunks.is_inline() && reason.is_none());
        main.shutdown().await.unwrap();
    }

    /// A tampered file is refused at load: the engine runs on the fallback, never on the file.
    #[tokio::test]
    async fn a_tampered_model_falls_back_to_lexical() {
        let real = crate::test_support::test_model_dir().await;
        let data = tempfile::tempdir().unwrap();
        let copy = data.path().join("model");
        std::fs::create_dir_all(&copy).unwrap();
        for file in model_files::MINILM.files {
            std::fs::copy(real.join(file.name), copy.join(file.name)).unwrap();
        }
        std::fs::write(copy.join("tokenizer.json"), b"{}").unwrap();
        let engine = engine_with(EmbedderSettings::Neural { model_dir: Some(copy) }, data.path()).await;
        assert_eq!(engine.embedder().id().kind, EmbedderKind::Lexical);
        assert!(engine.embedder().fallback_reason().unwrap().contains("refused"));
        engine.shutdown().await.unwrap();
    }
}
