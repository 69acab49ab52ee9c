//! The routed embedder: the gateway's own embeddings routing (`Router::embed`, the path
//! `POST /v1/embeddings` takes) to a provider or a self-hosted endpoint, in the operator's
//! scope (managed upstreams and the operator's own endpoints).
//!
//! Internal use, not a tenant's request: it goes to the router directly, not through
//! `Runtime::serve_embeddings`, so nothing is reserved or settled and no usage row is written
//! (the operator's upstream bill is the only record). What it costs is the operator's choice
//! in config (`embedder.kind = "routed"`).

use std::sync::Arc;

use crate::{
    directory::state::DirectoryState,
    error::EngineError,
    routing::router::{Router, Scope},
    runtime::embeddings::EmbeddingRequest,
};

use super::{EmbedderId, EmbedderKind};

pub struct Routed {
    pub router: Arc<Router>,
    pub directory: Arc<DirectoryState>,
    pub model: String,
}

impl Routed {
    /// The dimension the catalog knows for the model; 0 when only an answer will tell
    /// (each answer's [`super::Embeddings`] carries the real one).
    pub fn id(&self) -> EmbedderId {
        let dims = self.router.catalog.get(&self.model).and_then(|m| m.embedding_dims).unwrap_or(0) as usize;
        EmbedderId { kind: EmbedderKind::Routed, model: self.model.clone(), dims }
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EngineError> {
        let scope =
            Scope { account_id: self.directory.operator_account_id().unwrap_or_default(), workspace_slug: None };
        let request = EmbeddingRequest {
            model: Some(self.model.clone()),
            requested: Some(self.model.clone()),
            inputs: texts,
            dimensions: None,
        };
        Ok(self.router.embed(&request, &scope).await?.vectors)
    }
}
