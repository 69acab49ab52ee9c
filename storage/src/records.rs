//! The record types kept on disk. Times are unix milliseconds (UTC).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Record;

/// A tenant. The operator account is created at first start; others by the operator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub is_operator: bool,
    /// Self-serve accounts must pass the first-key activation checklist; accounts the
    /// operator creates skip it.
    pub self_serve: bool,
    pub created_at_ms: i64,
}
impl Record for Account {
    const TREE: &'static str = "accounts";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, slug).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Workspace {
    pub id: String,
    pub account_id: String,
    /// The caller-chosen identifier (`workspace_id` on the wire), unique per account.
    pub slug: String,
    pub name: String,
    pub status: WorkspaceStatus,
    pub metadata: Map<String, Value>,
    pub monthly_budget_usd: Option<f64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for Workspace {
    const TREE: &'static str = "workspaces";
    const FORMAT_VERSION: u8 = 1;
}

/// Stored as its string (`"active"`), as when it was a plain string field.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceStatus {
    /// Its keys are admitted.
    Active,
    /// Its keys are refused (403) until it is active again.
    Disabled,
}

impl WorkspaceStatus {
    pub const ALL: [Self; 2] = [Self::Active, Self::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

/// Key: (account_id, key_id). The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKey {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub secret_sha256: String,
    pub metadata: Map<String, Value>,
    pub workspace_slug: Option<String>,
    pub rate_limit_rpm: Option<u32>,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
}
impl Record for ApiKey {
    const TREE: &'static str = "api_keys";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, session_id). A dashboard session token, stored as its SHA-256.
///
/// Expiry slides: each use moves `expires_at_ms` to the use plus the configured TTL. Both
/// times are written lazily (every few seconds, not per request), so after a crash they may
/// lag the last use by that much. Sessions written before expiry existed have neither field
/// (`serde(default)`, same format version); they count as used at the next start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub id: String,
    pub account_id: String,
    pub token_sha256: String,
    pub label: String,
    pub created_at_ms: i64,
    #[serde(default)]
    pub last_used_at_ms: Option<i64>,
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}
impl Record for Session {
    const TREE: &'static str = "sessions";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (partition, key). One answer of the exact response cache: a chat answer without tool
/// calls, what it cost when it was made, and when it expires. `partition` is the scope it may
/// be served in (a workspace, an account, or everyone, as the operator configures).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CachedAnswer {
    pub partition: String,
    /// Hex SHA-256 of the canonical request.
    pub key: String,
    pub content: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub provider: String,
    pub upstream_model: String,
    /// The charge of the answer when it was made: what a hit saves.
    pub charged_units: i64,
    pub baseline_units: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

impl Record for CachedAnswer {
    const TREE: &'static str = "answer_cache";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (partition, key). The semantic cache's entry for the [`CachedAnswer`] with the same
/// partition and key: the request's last user message, its vector, and the hash of
/// everything else in the request, which a later request must match exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SemanticEntry {
    pub partition: String,
    pub key: String,
    /// Hex SHA-256 of the request without its last user message.
    pub context: String,
    /// The last user message, which the similarity and the near-miss guards compare.
    pub prompt: String,
    /// Which embedder made `vector` (`kind:model:dims`): vectors of others are never compared.
    pub embedder: String,
    #[serde(with = "f32_base64")]
    pub vector: Vec<f32>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}
impl Record for SemanticEntry {
    const TREE: &'static str = "semantic_cache";
    const FORMAT_VERSION: u8 = 1;
}

/// A vector as base64 of its little-endian `f32`s: a quarter of its size as JSON numbers.
pub(crate) mod f32_base64 {
    use base64::{engine::general_purpose::STANDARD, Engine as _};
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(vector: &[f32], serializer: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<f32>, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        if bytes.len() % 4 != 0 {
            return Err(D::Error::custom("a vector's byte length is not a multiple of 4"));
        }
        Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions stored before expiry existed still load, as format version 1.
    #[test]
    fn a_session_without_expiry_fields_still_decodes() {
        let mut old = vec![Session::FORMAT_VERSION];
        old.extend_from_slice(
            br#"{"id":"s1","account_id":"a1","token_sha256":"00","label":"initial","created_at_ms":5}"#,
        );
        let s: Session = crate::collection::decode(&old).unwrap();
        assert_eq!((s.last_used_at_ms, s.expires_at_ms), (None, None));
        assert_eq!(s.created_at_ms, 5);
    }

    /// Workspaces stored while `status` was a string field load, and are written back the same.
    #[test]
    fn a_workspace_status_is_stored_as_its_string() {
        for (stored, status) in [("active", WorkspaceStatus::Active), ("disabled", WorkspaceStatus::Disabled)] {
            let mut old = vec![Workspace::FORMAT_VERSION];
            old.extend_from_slice(
                format!(
                    r#"{{"id":"w1","account_id":"a1","slug":"s","name":"S","status":"{stored}","metadata":{{}},"monthly_budget_usd":null,"created_at_ms":1,"updated_at_ms":2}}"#
                )
                .as_bytes(),
            );
            let w: Workspace = crate::collection::decode(&old).unwrap();
            assert_eq!(w.status, status);
            assert_eq!(crate::collection::encode(&w).unwrap(), old);
            assert_eq!((status.as_str(), WorkspaceStatus::parse(stored)), (stored, Some(status)));
        }
        assert_eq!(WorkspaceStatus::parse("Active"), None);
    }
}

/// Money on disk is an integer count of 1e-10 USD: sums of millions of rows stay exact.
pub const UNITS_PER_USD: i64 = 10_000_000_000;

/// One served request, written only by the ledger. Key: (account_id, created_at_us, id);
/// the ledger makes `created_at_us` strictly increasing per account, so a time cursor never
/// skips or repeats a row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UsageRow {
    pub id: String,
    pub account_id: String,
    pub api_key_id: Option<String>,
    pub workspace_slug: Option<String>,
    pub metadata: Map<String, Value>,
    /// The routing mode, or "auto" when a native model was named.
    pub tier: String,
    /// What the client put in `model`.
    pub requested_model: String,
    pub provider: String,
    /// The upstream model that served it (admin view only).
    pub upstream_model: String,
    pub upstream: String,
    pub routing_method: String,
    pub routing_reason: String,
    pub execution_source: String,
    pub billing_mode: String,
    pub request_type: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the provider charges us, in [`UNITS_PER_USD`] units.
    pub actual_cost_units: i64,
    /// What the customer is charged.
    pub charged_units: i64,
    /// What the request would have cost on the reference `max` route.
    pub baseline_units: i64,
    pub latency_ms: Option<u64>,
    pub cache: String,
    pub streamed: bool,
    pub created_at_us: i64,
    /// The HTTP request's `x-request-id`, to find a request's row from a client or a log.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Routes that failed before the one that served: `upstream/model: code (the upstream's
    /// words, truncated)`. For the operator only; a customer's view never shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<String>,
    /// What a media request was billed by (`image`, `character`, `minute`, `second`) and
    /// how many; none for token-billed requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<f64>,
}
impl Record for UsageRow {
    const TREE: &'static str = "usage";
    const FORMAT_VERSION: u8 = 2;
}

/// Money added to (or, for an adjustment, taken back from) an account. Key: (account_id,
/// created_at_us, id); the `credits_by_id` index makes `id` unique across the ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credit {
    /// Unique: a processor payment's credit uses the payment id, so a payment is credited
    /// once; an adjustment uses `refund:{charge}:{cumulative cents}` or `dispute:{dispute}`.
    pub id: String,
    pub account_id: String,
    /// Negative for adjustments (refunds, disputes).
    pub amount_units: i64,
    /// "manual", "checkout", "top_up" or "auto_pay"; adjustments: "refund" or "dispute".
    pub source: String,
    /// The payment processor's id for the payment, when there was one (idempotency). An
    /// adjustment references the payment it takes back from.
    pub reference: Option<String>,
    pub note: Option<String>,
    pub created_at_us: i64,
}
impl Record for Credit {
    const TREE: &'static str = "credits";
    const FORMAT_VERSION: u8 = 1;
}

/// An account's running totals, updated in the same transaction as the rows they sum.
/// Key: account_id. Balance = credited − charged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Balance {
    pub account_id: String,
    pub credited_units: i64,
    pub charged_units: i64,
    pub usage_rows: u64,
    pub credits: u64,
}
impl Record for Balance {
    const TREE: &'static str = "balances";
    const FORMAT_VERSION: u8 = 1;
}

impl Balance {
    pub fn balance_units(&self) -> i64 {
        self.credited_units - self.charged_units
    }
}

/// Usage summed per account, UTC day and dimension, maintained as rows are written so that
/// stats and breakdowns never scan history. Key: (account_id, day, workspace, api_key, tier,
/// request_type), with "" for an absent workspace or key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct RollupCell {
    /// Days since the unix epoch (UTC).
    pub day: i64,
    pub workspace_slug: Option<String>,
    pub api_key_id: Option<String>,
    pub tier: String,
    pub request_type: String,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_sum_ms: u64,
    pub latency_count: u64,
    pub charged_units: i64,
    pub actual_cost_units: i64,
    pub baseline_units: i64,
}
impl Record for RollupCell {
    const TREE: &'static str = "usage_rollups";
    const FORMAT_VERSION: u8 = 1;
}

/// An account's own provider key (BYOK). Key: (account_id, id). The secret is sealed
/// (AES-256-GCM) by the engine before it gets here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProviderKey {
    pub id: String,
    pub account_id: String,
    pub provider: String,
    pub label: String,
    pub workspace_slug: Option<String>,
    pub sealed_secret: String,
    pub created_at_ms: i64,
    pub last_success_at_ms: Option<i64>,
    pub last_failure_at_ms: Option<i64>,
    pub last_failure_code: Option<String>,
    pub estimated_reset_at_ms: Option<i64>,
}
impl Record for ProviderKey {
    const TREE: &'static str = "provider_keys";
    const FORMAT_VERSION: u8 = 1;
}

/// A self-hosted OpenAI-compatible endpoint. Key: (account_id, id). Custom headers and URL
/// credentials are sealed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalEndpoint {
    pub id: String,
    pub account_id: String,
    pub url: String,
    pub label: String,
    pub default_model: Option<String>,
    pub sealed_headers: Option<String>,
    /// The whole URL, sealed, when it carries credentials (`user:pass@`); `url` then shows
    /// them as `***`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_url: Option<String>,
    pub workspace_slug: Option<String>,
    pub status: String,
    pub models: Vec<String>,
    pub last_checked_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for LocalEndpoint {
    const TREE: &'static str = "local_endpoints";
    const FORMAT_VERSION: u8 = 1;
}

/// A saved card as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SavedCard {
    pub payment_method_id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

/// An account's payment setup and activation checklist. Key: account_id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct BillingProfile {
    pub account_id: String,
    /// The payment processor's customer.
    pub customer_id: Option<String>,
    pub card: Option<SavedCard>,
    pub auto_pay_enabled: bool,
    pub auto_pay_amount_usd: Option<f64>,
    pub terms_accepted_at_ms: Option<i64>,
    pub terms_version: Option<String>,
    pub successful_payments: u64,
    /// Checkout sessions started and not yet seen paid.
    pub pending_checkouts: Vec<String>,
}
impl Record for BillingProfile {
    const TREE: &'static str = "billing_profiles";
    const FORMAT_VERSION: u8 = 1;
}

/// One off-session card charge (a top-up or an auto pay), stored before Stripe is asked so
/// that a lost answer can be resolved later: retries reuse `idempotency_key`, and the
/// webhook or the reconciler finds the PaymentIntent by the `attempt_id` in its metadata.
/// Key: (account_id, id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentAttempt {
    pub id: String,
    pub account_id: String,
    pub amount_cents: i64,
    /// "top_up" or "auto_pay".
    pub kind: String,
    pub idempotency_key: String,
    /// "pending" (asking Stripe), "succeeded" (credited), "failed" (declined: nothing was
    /// charged) or "unknown" (no answer: Stripe may or may not have charged).
    pub status: String,
    pub payment_intent_id: Option<String>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for PaymentAttempt {
    const TREE: &'static str = "payment_attempts";
    const FORMAT_VERSION: u8 = 1;
}

/// A refund or dispute the processor reported for a payment not credited here yet (its
/// answer was lost, and the reconciler had not credited it): taken back once the payment is
/// credited. Key: (payment_id, id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PendingAdjustment {
    pub id: String,
    pub payment_id: String,
    /// "refund" or "dispute".
    pub reason: String,
    /// `amount_units` is the running total taken back for this payment and reason (Stripe's
    /// refunds), not an amount to take back once more.
    pub running_total: bool,
    pub amount_units: i64,
    pub note: Option<String>,
    pub received_at_ms: i64,
}
impl Record for PendingAdjustment {
    const TREE: &'static str = "pending_adjustments";
    const FORMAT_VERSION: u8 = 1;
}
