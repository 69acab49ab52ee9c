//! The runtime service: chat and embeddings requests, planned by the router, reserved and
//! settled with the ledger, executed by the gateway. Every request settles exactly one usage
//! row, whether its client stays or leaves (`requests`, `stream`, `tasks`).

pub mod embeddings;
pub mod requests;
pub mod stream;
pub(crate) mod tasks;
pub mod work;

use std::sync::Arc;

use crate::{
    config::EngineConfig, money::funding::Funding, money::ledger::LedgerClient, routing::router::Router, shared::Shared,
};

/// Chat and embeddings: plan, reserve, execute, price, settle. One `Arc`: cloned into each
/// request's task.
#[derive(Clone)]
pub struct Runtime(Arc<RuntimeParts>);

pub(crate) struct RuntimeParts {
    pub(crate) shared: Arc<Shared>,
    pub(crate) config: Arc<EngineConfig>,
    pub(crate) router: Arc<Router>,
    pub(crate) ledger: LedgerClient,
    /// For auto pay after a charge.
    pub(crate) funding: Funding,
    pub(crate) work: work::Work,
}

impl Runtime {
    pub(crate) fn new(
        shared: Arc<Shared>,
        config: Arc<EngineConfig>,
        router: Arc<Router>,
        ledger: LedgerClient,
        funding: Funding,
    ) -> Self {
        Self(Arc::new(RuntimeParts { shared, config, router, ledger, funding, work: work::Work::default() }))
    }

    /// Request work that outlives its client, which shutdown waits for.
    pub fn work(&self) -> &work::Work {
        &self.0.work
    }

    pub fn catalog(&self) -> &crate::routing::catalog::Catalog {
        &self.0.router.catalog
    }
}
