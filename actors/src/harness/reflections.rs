//! Reflections: insights a model synthesizes from selected traces, so an agent improves
//! without fine-tuning. The model is asked through routing like any chat (the mode or model
//! given, or the workspace's active version's), billed to the key with a usage row of its own
//! type (`reflection`); the answer is stored whole with the traces it came from and, when
//! asked, as an active memory note.

use std::sync::Arc;

use serde_json::{json, Map};
use tokaroo_storage::harness::{HarnessTrace, Reflection};

use super::{traces::TraceFilter, Access, Missions};
use crate::{
    chat::{ChatRequest, Message, Mode, ModelChoice, Role},
    directory::apikey::KeyEntry,
    error::EngineError,
    knowledge::{graph::MemoryBatch, KbScope, NoteInput},
    runtime::Runtime,
    RequestInfo,
};

/// Traces one reflection reads at most.
pub const MAX_TRACES: usize = 50;
/// Of each trace, the prompt carries at most this many characters.
const MAX_TRACE_CHARS: usize = 1_500;
/// The reflection's answer is bounded (and so is its hold).
const MAX_ANSWER_TOKENS: u32 = 1_000;

/// What to reflect on, and how.
#[derive(Debug, Clone, Default)]
pub struct ReflectionInput {
    /// Traces by id; or else those `filter` selects (newest first).
    pub trace_ids: Vec<String>,
    pub filter: TraceFilter,
    /// `auto`, `fast`, `max` or a model name; default the active version's, else `auto`.
    pub model: Option<String>,
    pub title: Option<String>,
    /// Also store it as a memory note; default the active version's, else no.
    pub store_as_memory: Option<bool>,
    pub request_id: Option<String>,
}

const SYSTEM: &str = "You review traces of an AI agent's work: what it was asked, the context it \
    retrieved, what it answered, the outcome and any feedback or correction. Write the insights an agent \
    should carry into future work: what worked, what failed and why, and what to remember or do \
    differently. Be concise and concrete: short bullet points, no preamble.";

fn cut(text: &str) -> &str {
    match text.char_indices().nth(MAX_TRACE_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The prompt's account of one trace.
fn describe(trace: &HarnessTrace) -> String {
    let mut lines = vec![format!("Trace {} ({}; outcome: {})", trace.id, trace.trace_type, trace.outcome)];
    if let Some(score) = trace.feedback_score {
        lines.push(format!("Feedback rating: {score}"));
    }
    if let Some(input) = &trace.input_summary {
        lines.push(format!("Input: {}", cut(input)));
    }
    if let Some(output) = &trace.output_summary {
        lines.push(format!("Output: {}", cut(output)));
    }
    if let Some(correction) = &trace.correction {
        lines.push(format!("Correction: {}", cut(correction)));
    }
    lines.push(format!("Context: {} memories, {} documents", trace.memories.len(), trace.documents.len()));
    lines.join("\n")
}

/// Selects the traces, asks the model, and stores the reflection. `scope` is where it is
/// stored (and the note written); the traces may be any the key can read.
pub async fn generate(
    runtime: &Runtime,
    missions: &Missions,
    key: Arc<KeyEntry>,
    scope: &KbScope,
    input: ReflectionInput,
) -> Result<Reflection, EngineError> {
    let access = Access { account_id: key.account_id.clone(), workspace: key.workspace_slug.clone() };
    let settings = missions.active_version(scope)?.map(|v| v.reflection).unwrap_or_default();
    let traces = select(missions, &access, &input, &settings)?;
    let model = input
        .model
        .clone()
        .or_else(|| settings.get("mode").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "auto".into());
    super::inputs::check_id("model", &model)?;
    if let Some(title) = &input.title {
        super::inputs::check_id("title", title)?;
    }
    let choice = match Mode::parse(&model) {
        Some(mode) => ModelChoice::Mode(mode),
        None => ModelChoice::Native(model.clone()),
    };
    let prompt = traces.iter().map(describe).collect::<Vec<_>>().join("\n\n");
    let mut request = ChatRequest::new(
        choice,
        vec![
            Message::text(Role::System, SYSTEM),
            Message::text(Role::User, format!("Reflect on these {} traces:\n\n{prompt}", traces.len())),
        ],
    );
    request.max_tokens = Some(MAX_ANSWER_TOKENS);
    request.temperature = Some(0.2);
    let info = RequestInfo {
        request_type: "reflection",
        request_id: input.request_id.clone(),
        bypass_cache: true,
        ..RequestInfo::chat(&request, &model)
    };
    let served = runtime.serve_chat(key, request, info).await?;
    let content = served.response.content.clone().unwrap_or_default();
    let missions_named: std::collections::BTreeSet<&str> = traces.iter().filter_map(|t| t.mission.as_deref()).collect();
    let mut reflection = Reflection {
        id: format!("rf_{}", uuid::Uuid::now_v7().simple()),
        account_id: scope.account_id.clone(),
        workspace: scope.workspace.clone(),
        title: input.title.clone(),
        content,
        trace_ids: traces.iter().map(|t| t.id.clone()).collect(),
        mission: (missions_named.len() == 1).then(|| missions_named.iter().next().map(|m| (*m).to_owned())).flatten(),
        harness_version_id: missions.active_version(scope)?.map(|v| v.id),
        model: served.route.as_ref().map_or_else(|| model.clone(), |r| r.model.clone()),
        charged_units: served.charge.charged_units,
        note_id: None,
        created_at_ms: crate::clock::now_ms(),
    };
    let store_note =
        input.store_as_memory.or_else(|| settings.get("store_as_memory").and_then(|v| v.as_bool())).unwrap_or(false);
    if store_note && !reflection.content.trim().is_empty() {
        let mut metadata = Map::new();
        metadata.insert("reflection_id".into(), json!(reflection.id));
        metadata.insert("trace_ids".into(), json!(reflection.trace_ids));
        let note = NoteInput {
            title: reflection.title.clone(),
            content: reflection.content.clone(),
            kind: Some("reflection".into()),
            status: Some("active".into()),
            metadata,
            ..NoteInput::default()
        };
        let batch = MemoryBatch { notes: vec![note], ..MemoryBatch::default() };
        let written = missions.knowledge().write_batch(scope, batch, &format!("reflection:{}", reflection.id)).await?;
        reflection.note_id = written.notes.first().map(|(n, _)| n.id.clone());
    }
    missions.save_reflection(&reflection).await?;
    Ok(reflection)
}

fn select(
    missions: &Missions,
    access: &Access,
    input: &ReflectionInput,
    settings: &Map<String, serde_json::Value>,
) -> Result<Vec<HarnessTrace>, EngineError> {
    let traces = missions.traces();
    if !input.trace_ids.is_empty() {
        if input.trace_ids.len() > MAX_TRACES {
            return Err(EngineError::Invalid(format!("trace_ids holds at most {MAX_TRACES} traces")));
        }
        return input.trace_ids.iter().map(|id| traces.get(access, id)).collect();
    }
    let most = settings.get("max_traces").and_then(|v| v.as_u64()).map_or(20, |n| n as usize).min(MAX_TRACES);
    let limit = if input.filter.limit == 0 { most } else { input.filter.limit.min(MAX_TRACES) };
    let found = traces.page(access, &TraceFilter { limit, ..input.filter.clone() })?;
    if found.is_empty() {
        return Err(EngineError::Invalid("no traces match: give trace_ids, or a filter that selects some".into()));
    }
    Ok(found)
}

impl Missions {
    pub(crate) fn knowledge(&self) -> &crate::knowledge::Knowledge {
        &self.0.knowledge
    }

    /// The workspace's active harness version, if any.
    pub fn active_version(&self, scope: &KbScope) -> Result<Option<super::HarnessVersion>, EngineError> {
        let store = &self.0.store;
        let Some(active) = store.active_versions.get(&(scope.account_id.as_str(), scope.workspace.as_str()))? else {
            return Ok(None);
        };
        Ok(store.harness_versions.get(&(scope.account_id.as_str(), active.version.as_str()))?)
    }

    async fn save_reflection(&self, reflection: &Reflection) -> Result<(), EngineError> {
        let store = &self.0.store;
        store.reflections.insert(&(reflection.account_id.as_str(), reflection.id.as_str()), reflection)?;
        store.flush().await?;
        Ok(())
    }

    /// The caller's reflections, newest first (`mission` narrows to one mission's).
    pub fn reflections(
        &self,
        access: &Access,
        workspace: Option<&str>,
        mission: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Reflection>, EngineError> {
        Ok(self.0.store.reflections.page_rev(&(access.account_id.as_str(),), None, limit, 50_000, |r| {
            access.workspace.as_ref().is_none_or(|w| *w == r.workspace)
                && workspace.is_none_or(|w| w == r.workspace)
                && mission.is_none_or(|m| r.mission.as_deref() == Some(m))
        })?)
    }
}
