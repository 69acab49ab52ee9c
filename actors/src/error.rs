use std::time::Duration;

use thiserror::Error;
use tokaroo_storage::StorageError;

/// Everything the engine can refuse or fail with. The HTTP layer maps each variant to a
/// status and body; nothing here knows about HTTP.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("rate limit exceeded")]
    RateLimited { limit: u32, retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(msg.into())
    }
}
