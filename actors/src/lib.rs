//! Tokaroo's engine: the supervised actor tree and the domain logic it runs. Knows nothing
//! of HTTP; the `tokaroo` crate drives it through [`Engine`].

pub mod accounts;
pub mod apikey;
pub mod billing;
pub mod catalog;
pub mod chat;
pub mod connections;
mod directory;
pub mod embeddings;
mod engine;
mod error;
mod funding;
pub mod gateway;
pub mod group;
pub mod health;
pub mod inspect;
pub mod ledger;
mod limits;
pub mod netguard;
pub mod payments;
pub mod provider;
pub mod providers;
mod requests;
pub mod root;
pub mod router;
pub mod secrets;
mod shared;
pub mod supervisor;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod tokenizer;
pub mod tokens;
pub mod upstreams;
pub mod workspace;

pub use apikey::{Admission, KeyEntry};
pub use directory::{KeyPatch, KeyView, NewKey, NewWorkspace, WorkspacePatch, WORKSPACE_STATUSES};
pub use engine::{BootstrapCredentials, Engine, EngineConfig, Identity, SessionRejection, DEFAULT_SESSION_TTL};
pub use error::EngineError;
pub use funding::{ActivationStatus, FundingSettings, PaymentFault, PaymentsReconciled};
pub use inspect::ActorNode;
pub use limits::AccountLimits;
pub use requests::{OpenStream, RequestInfo, ServedChat};
pub use secrets::Secret;
pub use supervisor::RestartPolicy;
pub use tokaroo_storage::{records, StorageError, Store};

pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-28T17:43:18.123Z`.
pub fn iso8601(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&f).unwrap_or_default()
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The usage record types the HTTP layer renders.
pub mod usage {
    pub use tokaroo_storage::{
        ledger::{UsageFilter, MICROS_PER_DAY},
        records::{RollupCell, UsageRow},
    };
}
