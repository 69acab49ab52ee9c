//! Tokaroo's engine: the supervised actor tree and the domain logic it runs. Knows nothing
//! of HTTP; the `tokaroo` crate drives it through [`Engine`].
// Tests may spawn freely; production code is held to the allow-list (clippy.toml).
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod actions;
pub mod cache;
pub mod chat;
pub mod clock;
mod config;
pub mod directory;
pub mod embed;
mod engine;
mod error;
pub mod harness;
pub mod knowledge;
pub mod metadata;
pub mod money;
pub mod routing;
pub mod runtime;
pub mod security;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod tree;
pub mod url;

pub use config::{AccountLimits, EngineConfig, FundingSettings, DEFAULT_SESSION_TTL};
pub use directory::apikey::{Admission, KeyEntry};
pub use directory::{BootstrapCredentials, Identity, SessionRejection};
pub use directory::{KeyPatch, KeyView, NewKey, NewWorkspace, WorkspacePatch};
pub use embed::{EmbedderId, EmbedderKind, EmbedderSettings, Embeddings};
pub use engine::Engine;
pub use error::EngineError;
pub use money::funding::{ActivationStatus, PaymentFault, PaymentsReconciled};
pub use runtime::requests::{RequestInfo, ServedChat};
pub use runtime::stream::{ChatStream, StreamEnd, StreamEvent};
pub use security::secrets::Secret;
pub use tokaroo_storage::media::VideoJob;
pub use tokaroo_storage::{records, StorageError, Store};
pub use tree::inspect::ActorNode;
pub use tree::supervisor::RestartPolicy;

/// The usage record types the HTTP layer renders.
pub mod usage {
    pub use tokaroo_storage::{
        ledger::{UsageFilter, MICROS_PER_DAY},
        records::{RollupCell, UsageRow},
    };
}
