//! The runtime service: chat and embeddings requests, planned by the router, reserved and
//! settled with the ledger, executed by the gateway. Every request settles exactly one usage
//! row, whether its client stays or leaves (`requests`, `stream`, `tasks`).

pub mod embeddings;
pub mod images;
pub mod media;
pub mod requests;
pub mod speech;
pub mod stream;
pub(crate) mod tasks;
pub mod transcription;
pub mod video;
pub mod work;

use std::sync::Arc;

use crate::{
    config::EngineConfig, directory::state::DirectoryState, money::funding::Funding, money::ledger::LedgerClient,
    routing::router::Router,
};

/// Chat and embeddings: plan, reserve, execute, price, settle. One `Arc`: cloned into each
/// request's task.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeParts>);

pub(crate) struct RuntimeParts {
    /// Workspaces' budgets and the operator's account (not metered).
    pub(crate) directory: Arc<DirectoryState>,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) router: Arc<Router>,
    pub(crate) ledger: LedgerClient,
    /// For auto pay after a charge.
    pub(crate) funding: Funding,
    pub(crate) work: work::Work,
    pub(crate) cache: Arc<crate::cache::ResponseCache>,
    /// Requests that name a mission are charged to its budget as well.
    pub(crate) missions: crate::harness::Missions,
    /// Media requests running now (`media_permit`).
    pub(crate) media_gate: media::MediaGate,
    /// Video jobs' start locks and holds on their way to their actors.
    pub(crate) video: video::VideoStarts,
}

impl Runtime {
    pub(crate) fn new(
        directory: Arc<DirectoryState>,
        config: Arc<EngineConfig>,
        router: Arc<Router>,
        ledger: LedgerClient,
        funding: Funding,
        cache: Arc<crate::cache::ResponseCache>,
        missions: crate::harness::Missions,
    ) -> Self {
        Self(Arc::new(RuntimeParts {
            directory,
            config,
            router,
            ledger,
            funding,
            work: work::Work::default(),
            cache,
            missions,
            media_gate: media::MediaGate::default(),
            video: video::VideoStarts::default(),
        }))
    }

    /// The exact response cache.
    pub fn cache(&self) -> &crate::cache::ResponseCache {
        &self.0.cache
    }

    /// Request work that outlives its client, which shutdown waits for.
    pub fn work(&self) -> &work::Work {
        &self.0.work
    }

    pub fn catalog(&self) -> &crate::routing::catalog::Catalog {
        &self.0.router.catalog
    }
}
