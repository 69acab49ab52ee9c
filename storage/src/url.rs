//! URL intelligence's records: the checks (history and stats), tenants' profiles, and
//! batches with their items.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Record;

/// Key: (account_id, id), `id` time-ordered (`uc_` and a UUIDv7). One analysed URL, as it
/// was answered; pruned oldest first past the account's cap.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UrlCheck {
    pub id: String,
    pub account_id: String,
    /// `""` for the account's own checks.
    pub workspace: String,
    pub batch_id: Option<String>,
    pub profile: String,
    pub domain: String,
    pub decision: String,
    pub score: f64,
    /// The ids of the signals that fired with a non-zero weight.
    pub signals: Vec<String>,
    pub cache_hit: bool,
    /// The `UrlAnalysisResult` as it was answered.
    pub result: Value,
    pub created_at_ms: i64,
}
impl Record for UrlCheck {
    const TREE: &'static str = "url_checks";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, name). A tenant's own weights and thresholds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UrlProfile {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: String,
    pub weights: BTreeMap<String, f64>,
    pub review: f64,
    pub warn: f64,
    pub block: f64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for UrlProfile {
    const TREE: &'static str = "url_profiles";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id), `id` a UUIDv7 (so keys follow time). A batch and its progress;
/// its items are [`UrlBatchItem`]s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UrlBatch {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    /// The key that submitted it (its usage rows name it).
    pub api_key_id: Option<String>,
    pub label: Option<String>,
    /// The profile as it was when the batch was submitted: a resumed batch weighs alike.
    pub profile: String,
    pub weights: BTreeMap<String, f64>,
    pub review: f64,
    pub warn: f64,
    pub block: f64,
    pub total_urls: u64,
    /// `queued`, `running`, `completed`.
    pub status: String,
    pub completed_urls: u64,
    pub failed_urls: u64,
    pub score_sum: f64,
    pub cache_hits: u64,
    /// allow, review, warn, block.
    pub decisions: [u64; 4],
    /// The failed items: (index, url, why), so a listing reads no items.
    #[serde(default)]
    pub errors: Vec<(u64, String, String)>,
    pub webhook_url: Option<String>,
    /// Sealed with the server's master key.
    pub webhook_secret_sealed: Option<String>,
    pub webhook_attempts: u32,
    pub webhook_delivered_at_ms: Option<i64>,
    pub webhook_last_error: Option<String>,
    /// When the next delivery is due (a restart waits for it too).
    pub webhook_next_at_ms: Option<i64>,
    pub request_id: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub completed_at_ms: Option<i64>,
}
impl Record for UrlBatch {
    const TREE: &'static str = "url_batches";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, batch id, index). One URL of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UrlBatchItem {
    pub index: u64,
    pub url: String,
    /// `pending`; `charging` (analysed, its charge maybe not recorded: a resumed batch looks
    /// for its usage row before charging again); `done`; `failed`.
    pub state: String,
    pub result: Option<Value>,
    pub error: Option<String>,
    /// When it was saved `charging`: a settle started then is final a bounded time later.
    #[serde(default)]
    pub charging_at_ms: Option<i64>,
}
impl Record for UrlBatchItem {
    const TREE: &'static str = "url_batch_items";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (batch id). A batch with work left (items or its webhook): the `urlbatches`
/// supervisor starts an actor for each at start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenUrlBatch {
    pub account_id: String,
    pub batch_id: String,
}
impl Record for OpenUrlBatch {
    const TREE: &'static str = "url_batches_open";
    const FORMAT_VERSION: u8 = 1;
}
