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
    /// A status change its state machine does not allow; `allowed` are the ones it does.
    #[error("a {what} cannot go from {from} to {to}; allowed from {from}: {}", if allowed.is_empty() { "none (it is finished)".to_owned() } else { allowed.join(", ") })]
    IllegalTransition { what: &'static str, from: String, to: String, allowed: Vec<&'static str> },
    #[error("{0}")]
    Forbidden(String),
    #[error("rate limit exceeded")]
    RateLimited { limit: u32, retry_after: Duration },
    #[error("{0}")]
    Unavailable(String),
    /// Input larger than the server takes (a document past the extraction limits).
    #[error("{0}")]
    TooLarge(String),
    /// Input of a kind the server does not read (a document's content type).
    #[error("{0}")]
    UnsupportedType(String),
    /// The prepaid balance cannot cover the request's worst case.
    #[error("Insufficient balance: this request needs up to ${required_usd:.6} and the balance is ${balance_usd:.6}; add credits")]
    BillingRequired { balance_usd: f64, required_usd: f64, payment_url: String },
    /// The workspace's monthly budget would be exceeded.
    #[error("Workspace monthly budget exceeded: ${spent_usd:.6} of ${budget_usd:.2} spent this month")]
    BudgetExceeded { budget_usd: f64, spent_usd: f64 },
    /// A request would take a mission past its budget.
    #[error("Mission budget exceeded: ${spent_usd:.6} of ${budget_usd:.6} spent, and this request needs up to ${required_usd:.6}")]
    MissionBudgetExceeded { budget_usd: f64, spent_usd: f64, required_usd: f64 },
    /// A self-serve account's first key waits for its activation checklist.
    #[error("First API key activation is incomplete: missing {}", missing.join(", "))]
    ActivationRequired { missing: Vec<&'static str>, payment_url: String, balance_usd: f64 },
    /// A payment step failed (`payment_failed`, `no_card`, ...).
    #[error("{message}")]
    Payment { code: &'static str, message: String },
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
