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
    pub status: String,
    pub metadata: Map<String, Value>,
    pub monthly_budget_usd: Option<f64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for Workspace {
    const TREE: &'static str = "workspaces";
    const FORMAT_VERSION: u8 = 1;
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    pub id: String,
    pub account_id: String,
    pub token_sha256: String,
    pub label: String,
    pub created_at_ms: i64,
}
impl Record for Session {
    const TREE: &'static str = "sessions";
    const FORMAT_VERSION: u8 = 1;
}

/// One served request. Key: (account_id, created_at_ms, id), so history pages by time.
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
    pub actual_cost_usd: f64,
    pub charged_usd: f64,
    pub baseline_usd: f64,
    pub latency_ms: Option<u64>,
    pub cache: String,
    pub streamed: bool,
    pub created_at_ms: i64,
}
impl Record for UsageRow {
    const TREE: &'static str = "usage";
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

/// A self-hosted OpenAI-compatible endpoint. Key: (account_id, id). Custom headers are sealed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LocalEndpoint {
    pub id: String,
    pub account_id: String,
    pub url: String,
    pub label: String,
    pub default_model: Option<String>,
    pub sealed_headers: Option<String>,
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
