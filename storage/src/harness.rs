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

/// A source chunk a traced pack included.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceDocument {
    pub id: String,
    pub score: f64,
}

/// A memory note a traced pack included, with the parts of its score.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceMemory {
    pub id: String,
    pub score: f64,
    pub relevance_score: f64,
    pub recency_score: f64,
    pub importance_score: f64,
    pub confidence_score: f64,
}

/// Key: (account_id, id). An observation of the harness: a context pack, a knowledge reply
/// (the pack it was grounded in, with what the answer cost) or an agent's own observation.
/// `id` is `tr_` and a UUIDv7, so the key order is the time order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessTrace {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    /// `context_pack`, `knowledge_reply`, `external_observation` or the caller's own.
    pub trace_type: String,
    pub harness_version_id: Option<String>,
    /// The Tokaroo UUID of the mission it belongs to.
    pub mission: Option<String>,
    pub task_id: Option<String>,
    pub assistant_id: Option<String>,
    pub thread_id: Option<String>,
    pub input_summary: Option<String>,
    pub output_summary: Option<String>,
    pub context_strategy: String,
    pub documents: Vec<TraceDocument>,
    pub memories: Vec<TraceMemory>,
    pub charged_units: i64,
    /// `unknown`, `success`, `failure` or the caller's own.
    pub outcome: String,
    pub feedback_score: Option<f64>,
    pub correction: Option<String>,
    pub metadata: Map<String, Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}
impl Record for HarnessTrace {
    const TREE: &'static str = "harness_traces";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, mission, trace id): the traces of a mission, for its detail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MissionTrace {
    pub trace: String,
}
impl Record for MissionTrace {
    const TREE: &'static str = "mission_traces";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id). A harness configuration: how context is assembled and ranked, and
/// how reflections are made. `status` is `draft` or `active` (one active per workspace) or
/// `retired` (active once, replaced).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HarnessVersion {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub name: String,
    pub description: Option<String>,
    pub status: String,
    /// `{max_tokens, include_sources}`: a pack's defaults when its request does not say.
    pub context: Map<String, Value>,
    /// The ranking's weights (`RankWeights`), as JSON.
    pub retrieval: Map<String, Value>,
    /// `{mode, max_traces, store_as_memory}`: a reflection's defaults.
    pub reflection: Map<String, Value>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub activated_at_ms: Option<i64>,
}
impl Record for HarnessVersion {
    const TREE: &'static str = "harness_versions";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, workspace): the workspace's active harness version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActiveVersion {
    pub version: String,
}
impl Record for ActiveVersion {
    const TREE: &'static str = "harness_active_versions";
    const FORMAT_VERSION: u8 = 1;
}

/// Key: (account_id, id): insights a model synthesized from traces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Reflection {
    pub id: String,
    pub account_id: String,
    pub workspace: String,
    pub title: Option<String>,
    pub content: String,
    pub trace_ids: Vec<String>,
    pub mission: Option<String>,
    pub harness_version_id: Option<String>,
    /// The model that wrote it, and what that was charged (ledger units).
    pub model: String,
    pub charged_units: i64,
    /// The memory note it was stored as, when asked.
    pub note_id: Option<String>,
    pub created_at_ms: i64,
}
impl Record for Reflection {
    const TREE: &'static str = "harness_reflections";
    const FORMAT_VERSION: u8 = 1;
}
