//! Action guardrails' records: policies, the approvals checks ask for, and the append-only
//! audit trail.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Record;

/// Key: (account_id, workspace, name). A rule over actions: the checks whose fields match
/// its patterns get its effect. `workspace` is `""` for an account-wide policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionPolicy {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub name: String,
    pub description: Option<String>,
    /// `allow`, `approval` or `deny`.
    pub effect: String,
    pub priority: i64,
    /// `active` or `disabled`.
    pub status: String,
    /// Field (`app`, `tool_ref`, ...) → the glob patterns (`*`, `?`) one of which its value
    /// must match.
    pub patterns: Vec<(String, Vec<String>)>,
    /// `requested_amount_usd` within [min, max] (ledger units), each bound optional.
    pub amount_min_units: Option<i64>,
    pub amount_max_units: Option<i64>,
    /// `metadata` key → the patterns its (string) value must match.
    pub metadata: Vec<(String, Vec<String>)>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for ActionPolicy {
    const TREE: &'static str = "action_policies";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id). A decision a check left to a person.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionApproval {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    /// The check that asked for it, as it was sent.
    pub action: Map<String, Value>,
    pub mission: Option<String>,
    pub policy_id: Option<String>,
    pub reason: String,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub decided_by: Option<String>,
    pub decision_note: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub decided_at_ms: Option<i64>,
}
impl Record for ActionApproval {
    const TREE: &'static str = "action_approvals";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, source, external id): the approval a retried check names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApprovalRef {
    pub approval: String,
}
impl Record for ApprovalRef {
    const TREE: &'static str = "action_approval_refs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id), `id` time-ordered (`au_` and a UUIDv7). Never changed or deleted by
/// any route.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionAudit {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    /// `checked`, `executed`, `failed`, `blocked`, `approved`, `rejected`, ...
    pub event: String,
    /// For `checked`: `allow`, `deny` or `approval_required`.
    pub decision: Option<String>,
    pub tool_ref: Option<String>,
    pub mission: Option<String>,
    pub policy_id: Option<String>,
    pub approval_id: Option<String>,
    pub reason: Option<String>,
    pub action: Map<String, Value>,
    pub by: String,
    pub created_at_ms: i64,
}
impl Record for ActionAudit {
    const TREE: &'static str = "action_audit";
    const FORMAT_VERSION: u8 = 1;
}
