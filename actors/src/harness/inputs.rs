//! What callers send about missions, steps and artifacts, checked before anything is written:
//! bad input is an `EngineError::Invalid` (or `TooLarge`) naming the field.

use serde_json::{Map, Value};
use tokaroo_storage::harness::{Mission, MissionStep};

use crate::{error::EngineError, money::billing::usd_to_units};

/// Ids and short texts: at most this many characters, no control characters.
const MAX_ID_CHARS: usize = 256;
const MAX_TEXT_CHARS: usize = 4_000;
pub use crate::metadata::{check_metadata, MAX_METADATA_BYTES};
/// An artifact's `content`; larger is refused with 413.
pub const MAX_ARTIFACT_CONTENT_BYTES: usize = 256 << 10;
/// The longest heartbeat timeout a mission may ask for (30 days).
const MAX_HEARTBEAT_SECS: u64 = 30 * 24 * 3600;
const MAX_BUDGET_USD: f64 = 1_000_000.0;

pub const MISSION_STATUSES: [&str; 6] = ["pending", "running", "waiting_approval", "succeeded", "failed", "cancelled"];
pub const STEP_STATUSES: [&str; 5] = ["pending", "running", "succeeded", "failed", "skipped"];
pub const RISKS: [&str; 4] = ["low", "medium", "high", "critical"];
pub const ARTIFACT_KINDS: [&str; 9] =
    ["email", "file", "doc", "url", "receipt", "plan", "report", "code_summary", "other"];

/// A mission to create, or (same `mission_id` or `external_source` + `external_id`) to
/// update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct MissionPatch {
    pub mission_id: Option<String>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub app: Option<String>,
    pub title: Option<String>,
    pub goal: Option<String>,
    pub status: Option<String>,
    pub progress: Option<f64>,
    pub outcome: Option<String>,
    pub success: Option<bool>,
    pub risk: Option<String>,
    /// Merged into the mission's metadata (a `null` value removes its key).
    pub metadata: Option<Map<String, Value>>,
    /// `Some(None)` removes the budget.
    pub budget_usd: Option<Option<f64>>,
    pub heartbeat_timeout_secs: Option<u64>,
}

/// A step to create or update (`step_ref` names it for an upsert).
#[derive(Debug, Clone, Default)]
pub struct StepInput {
    pub step_ref: Option<String>,
    pub task_id: Option<String>,
    pub title: Option<String>,
    pub status: Option<String>,
    pub output_summary: Option<String>,
    pub cost_usd: Option<f64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Default)]
pub struct ArtifactInput {
    pub kind: String,
    pub step_id: Option<String>,
    pub title: Option<String>,
    pub url: Option<String>,
    pub content: Option<String>,
    pub metadata: Map<String, Value>,
}

fn invalid(message: String) -> EngineError {
    EngineError::Invalid(message)
}

/// An id-like field: 1 to 256 characters, no control characters (keys hold them).
pub fn check_id(field: &str, value: &str) -> Result<(), EngineError> {
    if value.is_empty() || value.chars().count() > MAX_ID_CHARS || value.chars().any(char::is_control) {
        return Err(invalid(format!("{field} must be 1 to {MAX_ID_CHARS} characters, without control characters")));
    }
    Ok(())
}

fn check_text(field: &str, value: &str) -> Result<(), EngineError> {
    if value.chars().count() > MAX_TEXT_CHARS || value.contains('\0') {
        return Err(invalid(format!("{field} must be at most {MAX_TEXT_CHARS} characters, without NUL")));
    }
    Ok(())
}

fn check_one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), EngineError> {
    if !allowed.contains(&value) {
        return Err(invalid(format!("{field} must be one of {}; got {value:?}", allowed.join(", "))));
    }
    Ok(())
}

/// Merges `changes` into `metadata`: a `null` value removes its key. The result is checked
/// against the size limit as a whole.
fn merge_metadata(metadata: &mut Map<String, Value>, changes: &Map<String, Value>) -> Result<(), EngineError> {
    for (key, value) in changes {
        match value {
            Value::Null => metadata.remove(key),
            value => metadata.insert(key.clone(), value.clone()),
        };
    }
    check_metadata("metadata", metadata)
}

fn check_usd(field: &str, usd: f64) -> Result<(), EngineError> {
    if !usd.is_finite() || !(0.0..=MAX_BUDGET_USD).contains(&usd) {
        return Err(invalid(format!("{field} must be a number from 0 to {MAX_BUDGET_USD}")));
    }
    Ok(())
}

fn check_time(field: &str, ms: i64) -> Result<(), EngineError> {
    // Years 2000 to 2200: a timestamp in seconds, or a garbage number, is caught here.
    if !(946_684_800_000..=7_258_118_400_000).contains(&ms) {
        return Err(invalid(format!("{field} must be a time between the years 2000 and 2200")));
    }
    Ok(())
}

impl MissionPatch {
    pub fn validate(&self) -> Result<(), EngineError> {
        for (field, value) in [
            ("mission_id", &self.mission_id),
            ("external_source", &self.external_source),
            ("external_id", &self.external_id),
            ("app", &self.app),
        ] {
            if let Some(value) = value {
                check_id(field, value)?;
            }
        }
        if self.external_source.is_some() != self.external_id.is_some() {
            return Err(invalid("external_source and external_id go together: give both or neither".into()));
        }
        for (field, value) in [("title", &self.title), ("goal", &self.goal), ("outcome", &self.outcome)] {
            if let Some(value) = value {
                check_text(field, value)?;
            }
        }
        if let Some(status) = &self.status {
            check_one_of("status", status, &MISSION_STATUSES)?;
        }
        if let Some(risk) = &self.risk {
            check_one_of("risk", risk, &RISKS)?;
        }
        if let Some(progress) = self.progress {
            if !progress.is_finite() || !(0.0..=100.0).contains(&progress) {
                return Err(invalid("progress must be a number from 0 to 100 (percent)".into()));
            }
        }
        if let Some(metadata) = &self.metadata {
            check_metadata("metadata", metadata)?;
        }
        if let Some(Some(budget)) = self.budget_usd {
            check_usd("budget_usd", budget)?;
        }
        if let Some(secs) = self.heartbeat_timeout_secs {
            if secs == 0 || secs > MAX_HEARTBEAT_SECS {
                return Err(invalid(format!("heartbeat_timeout_secs must be from 1 to {MAX_HEARTBEAT_SECS}")));
            }
        }
        Ok(())
    }
}

/// Applies a (validated) patch to a mission, identity fields aside.
pub fn apply_patch(mission: &mut Mission, patch: &MissionPatch) -> Result<(), EngineError> {
    patch.validate()?;
    let set = |field: &mut Option<String>, value: &Option<String>| {
        if let Some(value) = value {
            *field = Some(value.clone());
        }
    };
    set(&mut mission.app, &patch.app);
    set(&mut mission.title, &patch.title);
    set(&mut mission.goal, &patch.goal);
    set(&mut mission.outcome, &patch.outcome);
    set(&mut mission.risk, &patch.risk);
    if let Some(status) = &patch.status {
        mission.status = status.clone();
    }
    if let Some(progress) = patch.progress {
        mission.progress = progress;
    }
    if let Some(success) = patch.success {
        mission.success = Some(success);
    }
    if let Some(metadata) = &patch.metadata {
        merge_metadata(&mut mission.metadata, metadata)?;
    }
    if let Some(budget) = patch.budget_usd {
        mission.budget_units = budget.map(usd_to_units);
    }
    if let Some(secs) = patch.heartbeat_timeout_secs {
        mission.heartbeat_timeout_secs = secs;
    }
    Ok(())
}

impl StepInput {
    pub fn validate(&self) -> Result<(), EngineError> {
        for (field, value) in [("step_ref", &self.step_ref), ("task_id", &self.task_id)] {
            if let Some(value) = value {
                check_id(field, value)?;
            }
        }
        for (field, value) in [("title", &self.title), ("output_summary", &self.output_summary)] {
            if let Some(value) = value {
                check_text(field, value)?;
            }
        }
        if let Some(status) = &self.status {
            check_one_of("status", status, &STEP_STATUSES)?;
        }
        if let Some(cost) = self.cost_usd {
            check_usd("cost_usd", cost)?;
        }
        for (field, value) in [("started_at", self.started_at_ms), ("finished_at", self.finished_at_ms)] {
            if let Some(ms) = value {
                check_time(field, ms)?;
            }
        }
        if let (Some(started), Some(finished)) = (self.started_at_ms, self.finished_at_ms) {
            if finished < started {
                return Err(invalid("finished_at must not be before started_at".into()));
            }
        }
        if let Some(metadata) = &self.metadata {
            check_metadata("metadata", metadata)?;
        }
        Ok(())
    }
}

/// Applies a (validated) step input; a step that starts or ends without a time given gets
/// `now`.
pub fn apply_step(step: &mut MissionStep, input: &StepInput, now: i64) -> Result<(), EngineError> {
    input.validate()?;
    if let Some(task) = &input.task_id {
        step.task_id = Some(task.clone());
    }
    if let Some(title) = &input.title {
        step.title = Some(title.clone());
    }
    if let Some(summary) = &input.output_summary {
        step.output_summary = Some(summary.clone());
    }
    if let Some(cost) = input.cost_usd {
        step.cost_units = usd_to_units(cost);
    }
    if let Some(status) = &input.status {
        step.status = status.clone();
        if status == "running" && step.started_at_ms.is_none() {
            step.started_at_ms = Some(now);
        }
        if matches!(status.as_str(), "succeeded" | "failed" | "skipped") && step.finished_at_ms.is_none() {
            step.finished_at_ms = Some(now);
        }
    }
    if let Some(ms) = input.started_at_ms {
        step.started_at_ms = Some(ms);
    }
    if let Some(ms) = input.finished_at_ms {
        step.finished_at_ms = Some(ms);
    }
    if let Some(metadata) = &input.metadata {
        merge_metadata(&mut step.metadata, metadata)?;
    }
    step.updated_at_ms = now;
    Ok(())
}

impl ArtifactInput {
    pub fn validate(&self) -> Result<(), EngineError> {
        check_one_of("kind", &self.kind, &ARTIFACT_KINDS)?;
        if let Some(step) = &self.step_id {
            check_id("step_id", step)?;
        }
        if let Some(title) = &self.title {
            check_text("title", title)?;
        }
        if let Some(url) = &self.url {
            check_id("url", url)?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(invalid("url must be an http(s) URL".into()));
            }
        }
        if let Some(content) = &self.content {
            if content.len() > MAX_ARTIFACT_CONTENT_BYTES {
                return Err(EngineError::TooLarge(format!(
                    "content is {} bytes; an artifact holds at most {MAX_ARTIFACT_CONTENT_BYTES} (attach a url for more)",
                    content.len()
                )));
            }
        }
        if self.content.is_none() && self.url.is_none() && self.title.is_none() {
            return Err(invalid("an artifact needs at least one of content, url or title".into()));
        }
        check_metadata("metadata", &self.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_mission_fields_are_named() {
        let cases: Vec<(MissionPatch, &str)> = vec![
            (MissionPatch { status: Some("done".into()), ..Default::default() }, "status"),
            (MissionPatch { progress: Some(101.0), ..Default::default() }, "progress"),
            (MissionPatch { progress: Some(f64::NAN), ..Default::default() }, "progress"),
            (MissionPatch { risk: Some("extreme".into()), ..Default::default() }, "risk"),
            (MissionPatch { mission_id: Some("a\0b".into()), ..Default::default() }, "mission_id"),
            (MissionPatch { mission_id: Some(String::new()), ..Default::default() }, "mission_id"),
            (MissionPatch { external_source: Some("gwen".into()), ..Default::default() }, "external_id"),
            (MissionPatch { budget_usd: Some(Some(-1.0)), ..Default::default() }, "budget_usd"),
            (MissionPatch { heartbeat_timeout_secs: Some(0), ..Default::default() }, "heartbeat_timeout_secs"),
        ];
        for (patch, field) in cases {
            let error = patch.validate().unwrap_err().to_string();
            assert!(error.contains(field), "{field}: {error}");
        }
        assert!(MissionPatch { progress: Some(42.5), ..Default::default() }.validate().is_ok());
    }

    #[test]
    fn bad_steps_and_artifacts_are_named() {
        let step = StepInput { started_at_ms: Some(1_700_000_000), ..Default::default() };
        assert!(step.validate().unwrap_err().to_string().contains("started_at"), "seconds, not milliseconds");
        let step = StepInput {
            started_at_ms: Some(1_700_000_010_000),
            finished_at_ms: Some(1_700_000_000_000),
            ..Default::default()
        };
        assert!(step.validate().unwrap_err().to_string().contains("finished_at"));
        let artifact = ArtifactInput { kind: "spreadsheet".into(), title: Some("x".into()), ..Default::default() };
        assert!(artifact.validate().unwrap_err().to_string().contains("kind"));
        let big = ArtifactInput {
            kind: "report".into(),
            content: Some("x".repeat(MAX_ARTIFACT_CONTENT_BYTES + 1)),
            ..Default::default()
        };
        assert!(matches!(big.validate(), Err(EngineError::TooLarge(_))));
    }
}
