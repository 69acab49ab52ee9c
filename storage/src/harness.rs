//! The mission harness's records: missions (the parent goal an agent works on), their steps
//! and artifacts, and the references that make a caller's stable ids name one mission.
//! Money is in ledger units (micro-dollars, as `UsageRow`), times in unix milliseconds.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Record;

/// Key: (account_id, id). `id` is the Tokaroo mission UUID. Written only by its
/// `mission:{id}` actor while the mission is unfinished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mission {
    pub id: String,
    pub account_id: String,
    /// `""` for the account's own missions.
    pub workspace: String,
    /// The caller's stable id of the goal (`mission_id` on the wire).
    pub mission_id: Option<String>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub app: Option<String>,
    pub title: Option<String>,
    pub goal: Option<String>,
    /// `pending`, `running`, `waiting_approval`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// 0 to 100.
    pub progress: f64,
    pub outcome: Option<String>,
    pub success: Option<bool>,
    /// `low`, `medium`, `high` or `critical`.
    pub risk: Option<String>,
    pub metadata: Map<String, Value>,
    /// The most the mission's requests may be charged, in ledger units.
    pub budget_units: Option<i64>,
    /// What its requests were charged so far, in ledger units.
    pub spent_units: i64,
    pub requests: u64,
    pub step_count: u64,
    pub artifact_count: u64,
    /// With no update for this long, an unfinished mission is stale.
    pub heartbeat_timeout_secs: u64,
    /// The last create, update, step or artifact (what staleness is measured from).
    pub last_update_ms: i64,
    pub stale_since_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}
impl Record for Mission {
    const TREE: &'static str = "missions";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace, namespace, value): which mission a caller's identity names.
/// The namespace is `mission_id` for a `mission_id`, or `external:<source>` for an
/// `external_source` + `external_id`. Written before its mission (`insert_new`), so two
/// concurrent creations of one identity agree on one mission.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MissionRef {
    pub mission: String,
}
impl Record for MissionRef {
    const TREE: &'static str = "mission_refs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, mission, id): a step of a mission's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MissionStep {
    pub id: String,
    pub account_id: String,
    pub mission: String,
    /// The caller's id of the step (`task_456` or `task_456:step_1`): upserts by it.
    pub step_ref: Option<String>,
    pub task_id: Option<String>,
    pub title: Option<String>,
    /// `pending`, `running`, `succeeded`, `failed` or `skipped`.
    pub status: String,
    pub output_summary: Option<String>,
    pub cost_units: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub metadata: Map<String, Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for MissionStep {
    const TREE: &'static str = "mission_steps";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, mission, step_ref): the step a caller's `step_ref` names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepRef {
    pub step: String,
}
impl Record for StepRef {
    const TREE: &'static str = "mission_step_refs";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, mission, id): an output a mission produced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MissionArtifact {
    pub id: String,
    pub account_id: String,
    pub mission: String,
    pub step: Option<String>,
    /// `email`, `file`, `doc`, `url`, `receipt`, `plan`, `report`, `code_summary` or another.
    pub kind: String,
    pub title: Option<String>,
    pub url: Option<String>,
    pub content: Option<String>,
    pub metadata: Map<String, Value>,
    pub created_at_ms: i64,
}
impl Record for MissionArtifact {
    const TREE: &'static str = "mission_artifacts";
    const FORMAT_VERSION: u8 = 1;
}
