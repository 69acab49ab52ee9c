//! The mission harness: missions (an agent's parent goal) with their steps and artifacts,
//! each unfinished one a `mission:{uuid}` actor under the `missions` supervisor
//! (`mission.rs`), and the budget a mission's requests are charged against.
//!
//! `Missions` is the service (`engine.missions()`). Creation goes through one lock, so two
//! concurrent creations of one identity (`mission_id`, or `external_source` + `external_id`)
//! agree on one mission; every later change goes through the mission's actor, which is the
//! only writer of its record while it runs. A finished mission has no actor: its record
//! stays, and takes changes of its outcome and metadata (never of its status) directly.

pub mod inputs;
pub mod mission;
pub mod reflections;
pub mod traces;
pub mod versions;

pub use tokaroo_storage::harness::{
    HarnessTrace, HarnessVersion, Mission, MissionArtifact, MissionStep, Reflection, TraceDocument, TraceMemory,
};

use std::{collections::HashMap, sync::Arc, time::Duration};

use std::sync::Mutex;

use ractor::rpc::CallResult;
use serde_json::{json, Map};
use tokaroo_storage::{harness::MissionRef, Store};

use self::{
    inputs::{ArtifactInput, MissionPatch, StepInput},
    mission::{actor_name, is_finished, MissionMsg, MissionSpec},
};
use crate::{
    directory::state::DirectoryState,
    error::EngineError,
    knowledge::{
        graph::{EventInput, MemoryBatch},
        KbScope, Knowledge,
    },
    tree::{
        registry::Registry,
        supervisor::{ChildSpec, Restart, RestartPolicy, SupervisorSpec},
    },
};

pub const MISSIONS: &str = "missions";
/// How long a caller waits for a mission's actor to answer (it flushes each change).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a mission's actor that is (re)starting.
const START_WAIT: Duration = Duration::from_secs(5);

/// The operator's caps on missions (`[limits]`); the operator's own account is not capped.
#[derive(Debug, Clone, Copy)]
pub struct MissionLimits {
    pub missions_per_account: usize,
    pub live_missions_per_account: usize,
    pub steps_per_mission: usize,
    pub artifacts_per_mission: usize,
    /// A mission's heartbeat timeout unless it sets its own.
    pub default_heartbeat_secs: u64,
    /// The status of a note written from feedback's `remember_text`: `pending` (used in
    /// packs once approved) or `active`.
    pub remember_status: &'static str,
}

impl Default for MissionLimits {
    fn default() -> Self {
        Self {
            missions_per_account: 100_000,
            live_missions_per_account: 10_000,
            steps_per_mission: 10_000,
            artifacts_per_mission: 1_000,
            default_heartbeat_secs: 15 * 60,
            remember_status: "pending",
        }
    }
}

/// Who may read or change missions: an account, narrowed to one workspace for a key bound
/// to it (`None`: every workspace of the account).
#[derive(Debug, Clone)]
pub struct Access {
    pub account_id: String,
    pub workspace: Option<String>,
}

impl Access {
    fn allows(&self, mission: &Mission) -> bool {
        mission.account_id == self.account_id && self.workspace.as_ref().is_none_or(|w| *w == mission.workspace)
    }
}

/// `POST /v1/harness/feedback`: signals on a trace.
#[derive(Debug, Clone, Default)]
pub struct TraceFeedback {
    pub trace_id: String,
    /// -1 (unhelpful) to 1 (helpful); its sign moves the trace's memories in later packs.
    pub rating: Option<f64>,
    pub outcome: Option<String>,
    pub correction: Option<String>,
    /// Written as a memory note (`remember_status`).
    pub remember_text: Option<String>,
    /// Notes to forget (among the trace's memories).
    pub forget: Vec<String>,
    /// The memories the rating is about (default: all the trace's memories).
    pub items: Option<Vec<String>>,
}

/// What feedback did besides scoring the trace.
#[derive(Debug, Clone, Default)]
pub struct FeedbackApplied {
    pub signals: usize,
    pub remembered: Option<String>,
    pub forgotten: Vec<String>,
}

/// `GET /v1/harness/missions` filters.
#[derive(Debug, Clone, Default)]
pub struct MissionFilter {
    pub workspace: Option<String>,
    pub status: Option<String>,
    pub app: Option<String>,
    pub stale: Option<bool>,
    pub limit: usize,
}

pub(crate) struct MissionsParts {
    pub(crate) store: Store,
    registry: Registry,
    knowledge: Knowledge,
    traces: traces::Traces,
    directory: Arc<DirectoryState>,
    pub(crate) limits: MissionLimits,
    policy: RestartPolicy,
    /// Creations, one at a time (identity and caps are decided under it).
    creating: tokio::sync::Mutex<()>,
    /// Per account: (missions, unfinished missions), counted at its first creation since start.
    counts: Mutex<HashMap<String, (usize, usize)>>,
}

#[derive(Clone)]
pub struct Missions(Arc<MissionsParts>);

impl Missions {
    pub(crate) fn new(
        store: Store,
        registry: Registry,
        knowledge: Knowledge,
        traces: traces::Traces,
        directory: Arc<DirectoryState>,
        limits: MissionLimits,
        policy: RestartPolicy,
    ) -> Self {
        Self(Arc::new(MissionsParts {
            store,
            registry,
            knowledge,
            traces,
            directory,
            limits,
            policy,
            creating: tokio::sync::Mutex::new(()),
            counts: Mutex::default(),
        }))
    }

    /// Creates a mission, or updates the one its identity names (`created` says which).
    pub async fn upsert(&self, scope: &KbScope, patch: MissionPatch) -> Result<(Mission, bool), EngineError> {
        patch.validate()?;
        let parts = &self.0;
        let account = scope.account_id.as_str();
        let identities = identities(&patch);
        let guard = parts.creating.lock().await;
        let mut existing = None;
        for (namespace, value) in &identities {
            let key = (account, scope.workspace.as_str(), namespace.as_str(), value.as_str());
            if let Some(found) = parts.store.mission_refs.get(&key)? {
                existing = Some(found.mission);
                break;
            }
        }
        if let Some(id) = &existing {
            // A record lost to a crash between its reference and itself is written anew.
            if parts.store.missions.get(&(account, id.as_str()))?.is_some() {
                self.add_refs(scope, id, &identities)?;
                drop(guard);
                let access = Access { account_id: scope.account_id.clone(), workspace: Some(scope.workspace.clone()) };
                return Ok((self.update(&access, id, patch).await?, false));
            }
        }
        let status = patch.status.as_deref().unwrap_or("pending");
        if !matches!(status, "pending" | "running") {
            return Err(EngineError::Invalid(format!(
                "a new mission starts pending or running; got status {status:?} (update it afterwards)"
            )));
        }
        self.check_caps(account)?;
        let id = existing.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mission = self.create(scope, id, patch, &identities).await?;
        self.counted(account, 1, 1);
        drop(guard);
        parts.lifecycle_event(&mission, None).await;
        Ok((mission, true))
    }

    /// Writes a new mission (its references first), starts its actor and records its creation.
    async fn create(
        &self,
        scope: &KbScope,
        id: String,
        patch: MissionPatch,
        identities: &[(String, String)],
    ) -> Result<Mission, EngineError> {
        let parts = &self.0;
        let status = patch.status.clone().unwrap_or_else(|| "pending".into());
        let now = crate::clock::now_ms();
        let mut mission = Mission {
            id: id.clone(),
            account_id: scope.account_id.clone(),
            workspace: scope.workspace.clone(),
            mission_id: patch.mission_id.clone(),
            external_source: patch.external_source.clone(),
            external_id: patch.external_id.clone(),
            app: None,
            title: None,
            goal: None,
            status: status.clone(),
            progress: 0.0,
            outcome: None,
            success: None,
            risk: None,
            metadata: Map::new(),
            budget_units: None,
            spent_units: 0,
            requests: 0,
            step_count: 0,
            artifact_count: 0,
            heartbeat_timeout_secs: parts.limits.default_heartbeat_secs,
            last_update_ms: now,
            stale_since_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
            finished_at_ms: None,
        };
        inputs::apply_patch(&mut mission, &MissionPatch { status: Some(status), ..patch })?;
        self.add_refs(scope, &id, identities)?;
        parts.store.missions.insert(&(mission.account_id.as_str(), id.as_str()), &mission)?;
        parts.store.flush().await?;
        crate::tree::supervisor::start_child(&parts.registry, MISSIONS, self.spec(&mission)).await;
        Ok(mission)
    }

    fn add_refs(&self, scope: &KbScope, id: &str, identities: &[(String, String)]) -> Result<(), EngineError> {
        for (namespace, value) in identities {
            let key = (scope.account_id.as_str(), scope.workspace.as_str(), namespace.as_str(), value.as_str());
            self.0.store.mission_refs.insert_new(&key, &MissionRef { mission: id.to_owned() })?;
        }
        Ok(())
    }

    /// Refuses a tenant's creation past its caps. Called under the creation lock; the
    /// account's counts are read from storage the first time, then kept (`counted`,
    /// `MissionsParts::finished`).
    fn check_caps(&self, account: &str) -> Result<(), EngineError> {
        let parts = &self.0;
        if parts.directory.operator_account_id().as_deref() == Some(account) {
            return Ok(());
        }
        let known = parts.counts.lock().unwrap_or_else(|p| p.into_inner()).get(account).copied();
        let (total, live) = match known {
            Some(counts) => counts,
            None => {
                let (mut total, mut live) = (0usize, 0usize);
                parts.store.missions.for_each_prefix(&(account,), |m: Mission| {
                    total += 1;
                    live += usize::from(!is_finished(&m.status));
                    Ok::<_, EngineError>(())
                })?;
                // Under the same lock as `finished`, so a mission that finished meanwhile is
                // counted once, either way.
                let mut counts = parts.counts.lock().unwrap_or_else(|p| p.into_inner());
                *counts.entry(account.to_owned()).or_insert((total, live))
            }
        };
        if total >= parts.limits.missions_per_account {
            return Err(EngineError::Invalid(format!(
                "this account has {total} missions, the most it may have (limits.missions_per_account)"
            )));
        }
        if live >= parts.limits.live_missions_per_account {
            return Err(EngineError::Invalid(format!(
                "this account has {live} unfinished missions, the most it may have (limits.live_missions_per_account); \
                 finish some first"
            )));
        }
        Ok(())
    }

    /// A mission was created: the account's counts, when kept, go up.
    fn counted(&self, account: &str, total: usize, live: usize) {
        if let Some(counts) = self.0.counts.lock().unwrap_or_else(|p| p.into_inner()).get_mut(account) {
            counts.0 += total;
            counts.1 += live;
        }
    }

    fn spec(&self, mission: &Mission) -> Arc<dyn ChildSpec> {
        Arc::new(MissionSpec { parts: self.0.clone(), account_id: mission.account_id.clone(), id: mission.id.clone() })
    }

    /// The observation stream (context packs, knowledge replies, agents' traces).
    pub fn traces(&self) -> &traces::Traces {
        &self.0.traces
    }

    /// Feedback on a trace: its score, outcome and correction; helpful or unhelpful signals
    /// on the memories it included (through the knowledge base's feedback path, so they move
    /// in later packs for similar queries); a note to remember; notes to forget. The
    /// knowledge-base writes are one batch: all or nothing.
    pub async fn feedback(
        &self,
        access: &Access,
        input: TraceFeedback,
    ) -> Result<(HarnessTrace, FeedbackApplied), EngineError> {
        use crate::knowledge::{graph::FeedbackInput, graph::NodeSpec, NoteInput};
        let parts = &self.0;
        let trace = parts.traces.get(access, &input.trace_id)?;
        if let Some(rating) = input.rating {
            if !rating.is_finite() || !(-1.0..=1.0).contains(&rating) {
                return Err(EngineError::Invalid("rating must be a number from -1 (unhelpful) to 1 (helpful)".into()));
            }
        }
        if let Some(outcome) = &input.outcome {
            inputs::check_id("outcome", outcome)?;
        }
        let included: Vec<&str> = trace.memories.iter().map(|m| m.id.as_str()).collect();
        for id in input.items.iter().flatten().chain(&input.forget) {
            if !included.contains(&id.as_str()) {
                return Err(EngineError::Invalid(format!("{id:?} is not a memory this trace included")));
            }
        }
        let note = |id: &str| NodeSpec {
            kind: "note".into(),
            id: Some(id.to_owned()),
            external_source: None,
            external_id: None,
        };
        let mut batch = MemoryBatch::default();
        let signal = match input.rating {
            Some(r) if r > 0.0 => Some("helpful"),
            Some(r) if r < 0.0 => Some("unhelpful"),
            _ => None,
        };
        if let Some(signal) = signal {
            let rated: Vec<&str> = match &input.items {
                Some(items) => items.iter().map(String::as_str).collect(),
                None => included.clone(),
            };
            for id in rated.into_iter().filter(|id| !input.forget.iter().any(|f| f == id)) {
                batch.feedback.push(FeedbackInput {
                    item: Some(note(id)),
                    signal: signal.into(),
                    query: trace.input_summary.clone(),
                    trace_id: Some(trace.id.clone()),
                    ..FeedbackInput::default()
                });
            }
        }
        for id in &input.forget {
            batch.feedback.push(FeedbackInput {
                item: Some(note(id)),
                signal: "forget".into(),
                trace_id: Some(trace.id.clone()),
                ..FeedbackInput::default()
            });
        }
        if let Some(text) = &input.remember_text {
            let mut metadata = Map::new();
            metadata.insert("trace_id".into(), json!(trace.id));
            if let Some(mission) = &trace.mission {
                metadata.insert("tokaroo_mission_uuid".into(), json!(mission));
            }
            batch.notes.push(NoteInput {
                content: text.clone(),
                kind: Some("feedback".into()),
                status: Some(parts.limits.remember_status.to_owned()),
                metadata,
                ..NoteInput::default()
            });
        }
        let signals = batch.feedback.iter().filter(|f| f.signal != "forget").count();
        let mut applied = FeedbackApplied { signals, remembered: None, forgotten: input.forget.clone() };
        if !batch.is_empty() {
            let scope = KbScope { account_id: trace.account_id.clone(), workspace: trace.workspace.clone() };
            let written = parts.knowledge.write_batch(&scope, batch, &format!("trace:{}", trace.id)).await?;
            applied.remembered = written.notes.first().map(|(n, _)| n.id.clone());
        }
        let score = input.rating;
        let trace = parts.traces.set_feedback(&trace, score, input.outcome.as_deref(), input.correction.as_deref())?;
        parts.store.flush().await?;
        Ok((trace, applied))
    }

    /// A mission the caller may see.
    pub fn get(&self, access: &Access, id: &str) -> Result<Mission, EngineError> {
        if inputs::check_id("id", id).is_err() {
            return Err(EngineError::NotFound { what: "mission" });
        }
        match self.0.store.missions.get(&(access.account_id.as_str(), id))? {
            Some(mission) if access.allows(&mission) => Ok(mission),
            _ => Err(EngineError::NotFound { what: "mission" }),
        }
    }

    /// The caller's missions, newest first. One pass over the account's missions, keeping
    /// only the newest `limit` that match.
    pub fn list(&self, access: &Access, filter: &MissionFilter) -> Result<Vec<Mission>, EngineError> {
        let mut newest = Newest::new(filter.limit, |m: &Mission| (m.created_at_ms, m.id.clone()));
        self.0.store.missions.for_each_prefix(&(access.account_id.as_str(),), |m: Mission| {
            let keep = access.allows(&m)
                && filter.workspace.as_ref().is_none_or(|w| *w == m.workspace)
                && filter.status.as_ref().is_none_or(|s| *s == m.status)
                && filter.app.as_ref().is_none_or(|a| m.app.as_ref() == Some(a))
                && filter.stale.is_none_or(|stale| stale == m.stale_since_ms.is_some());
            if keep {
                newest.offer(m);
            }
            Ok::<_, EngineError>(())
        })?;
        Ok(newest.into_sorted())
    }

    /// A mission's newest `max` steps and artifacts (each list oldest first), read in one
    /// pass each.
    pub fn contents(
        &self,
        mission: &Mission,
        max: usize,
    ) -> Result<(Vec<MissionStep>, Vec<MissionArtifact>), EngineError> {
        let store = &self.0.store;
        let prefix = (mission.account_id.as_str(), mission.id.as_str());
        let mut steps = Newest::new(max, |s: &MissionStep| (s.created_at_ms, s.id.clone()));
        store.mission_steps.for_each_prefix(&prefix, |s| {
            steps.offer(s);
            Ok::<_, EngineError>(())
        })?;
        let mut artifacts = Newest::new(max, |a: &MissionArtifact| (a.created_at_ms, a.id.clone()));
        store.mission_artifacts.for_each_prefix(&prefix, |a| {
            artifacts.offer(a);
            Ok::<_, EngineError>(())
        })?;
        let (mut steps, mut artifacts) = (steps.into_sorted(), artifacts.into_sorted());
        steps.reverse();
        artifacts.reverse();
        Ok((steps, artifacts))
    }

    /// One artifact of a mission the caller may see.
    pub fn artifact(&self, access: &Access, id: &str, artifact_id: &str) -> Result<MissionArtifact, EngineError> {
        let mission = self.get(access, id)?;
        inputs::check_id("artifact_id", artifact_id).map_err(|_| EngineError::NotFound { what: "artifact" })?;
        let key = (mission.account_id.as_str(), mission.id.as_str(), artifact_id);
        self.0.store.mission_artifacts.get(&key)?.ok_or(EngineError::NotFound { what: "artifact" })
    }

    /// Updates a mission through its actor (a finished one directly: outcome and metadata).
    pub async fn update(&self, access: &Access, id: &str, patch: MissionPatch) -> Result<Mission, EngineError> {
        patch.validate()?;
        let mission = self.get(access, id)?;
        if is_finished(&mission.status) {
            return self.update_finished(mission, patch).await;
        }
        let result = self.call(&mission, |reply| MissionMsg::Update(Box::new(patch), reply)).await;
        match result {
            // It finished between the read and the call: the record says so.
            Err(EngineError::Unavailable(_)) => {
                let again = self.get(access, id)?;
                if is_finished(&again.status) {
                    return Err(finished_error(&again));
                }
                Err(EngineError::Unavailable("the mission's actor is restarting; retry shortly".into()))
            }
            other => other,
        }
    }

    async fn update_finished(&self, mut mission: Mission, patch: MissionPatch) -> Result<Mission, EngineError> {
        if patch.status.as_ref().is_some_and(|s| *s != mission.status) {
            return Err(finished_error(&mission));
        }
        // Finished missions change only under the creation lock (no actor writes them).
        let _guard = self.0.creating.lock().await;
        if let Some(current) = self.0.store.missions.get(&(mission.account_id.as_str(), mission.id.as_str()))? {
            mission = current;
        }
        let patch = MissionPatch { budget_usd: None, heartbeat_timeout_secs: None, progress: None, ..patch };
        inputs::apply_patch(&mut mission, &patch)?;
        mission.updated_at_ms = crate::clock::now_ms();
        self.0.store.missions.insert(&(mission.account_id.as_str(), mission.id.as_str()), &mission)?;
        self.0.store.flush().await?;
        Ok(mission)
    }

    pub async fn upsert_step(
        &self,
        access: &Access,
        id: &str,
        input: StepInput,
    ) -> Result<(MissionStep, bool), EngineError> {
        input.validate()?;
        let mission = self.live(access, id)?;
        let answer = self.call(&mission, |reply| MissionMsg::UpsertStep(Box::new(input), reply)).await;
        self.finished_meanwhile(access, id, answer)
    }

    /// A call to a mission's actor that found it gone: a 409 when the mission finished
    /// meanwhile (its actor stopped), else the error as it was.
    fn finished_meanwhile<T>(
        &self,
        access: &Access,
        id: &str,
        answer: Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        match answer {
            Err(EngineError::Unavailable(why)) => match self.get(access, id) {
                Ok(mission) if is_finished(&mission.status) => Err(finished_error(&mission)),
                _ => Err(EngineError::Unavailable(why)),
            },
            other => other,
        }
    }

    pub async fn patch_step(
        &self,
        access: &Access,
        id: &str,
        step_id: &str,
        input: StepInput,
    ) -> Result<MissionStep, EngineError> {
        input.validate()?;
        inputs::check_id("step_id", step_id).map_err(|_| EngineError::NotFound { what: "step" })?;
        let mission = self.live(access, id)?;
        let step_id = step_id.to_owned();
        let answer = self.call(&mission, |reply| MissionMsg::PatchStep(step_id, Box::new(input), reply)).await;
        self.finished_meanwhile(access, id, answer)
    }

    pub async fn add_artifact(
        &self,
        access: &Access,
        id: &str,
        input: ArtifactInput,
    ) -> Result<MissionArtifact, EngineError> {
        input.validate()?;
        let mission = self.live(access, id)?;
        let answer = self.call(&mission, |reply| MissionMsg::Artifact(Box::new(input), reply)).await;
        self.finished_meanwhile(access, id, answer)
    }

    /// A mission that is not finished (steps and artifacts belong to the work in progress).
    fn live(&self, access: &Access, id: &str) -> Result<Mission, EngineError> {
        let mission = self.get(access, id)?;
        if is_finished(&mission.status) {
            return Err(finished_error(&mission));
        }
        Ok(mission)
    }

    /// Asks a mission's actor, waiting for it while it (re)starts.
    async fn call<T: Send + 'static>(
        &self,
        mission: &Mission,
        msg: impl FnOnce(ractor::RpcReplyPort<Result<T, EngineError>>) -> MissionMsg,
    ) -> Result<T, EngineError> {
        let name = actor_name(&mission.id);
        let actor = self
            .0
            .registry
            .wait_for::<MissionMsg>(&name, START_WAIT)
            .await
            .ok_or_else(|| EngineError::Unavailable("the mission's actor is not running; retry shortly".into()))?;
        match actor.call(msg, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => {
                Err(EngineError::Unavailable("the mission's actor did not answer in time".into()))
            }
            _ => Err(EngineError::Unavailable("the mission's actor stopped; retry shortly".into())),
        }
    }

    /// Holds `units` of the budget of the mission a key's request names (its Tokaroo UUID,
    /// in any workspace the key may use; or its `mission_id` in the key's workspace). A
    /// reference that names no unfinished mission leaves the request the account's alone,
    /// unless the client named it `explicitly` (the `x-tokaroo-mission` header): then 404.
    pub(crate) async fn hold(
        &self,
        account_id: &str,
        key_workspace: Option<&str>,
        reference: &str,
        explicitly: bool,
        units: i64,
    ) -> Result<Option<MissionHold>, EngineError> {
        let named = self.resolve_for_key(account_id, key_workspace, reference)?;
        let mission = match named {
            Some(mission) => mission,
            None if explicitly => return Err(EngineError::NotFound { what: "mission" }),
            None => return Ok(None),
        };
        if is_finished(&mission.status) {
            return Ok(None);
        }
        match self.call(&mission, |reply| MissionMsg::Reserve(units, reply)).await {
            Ok(()) => Ok(Some(MissionHold {
                parts: self.0.clone(),
                account_id: mission.account_id.clone(),
                id: mission.id.clone(),
                units,
                settled: false,
            })),
            Err(EngineError::Unavailable(why)) => {
                // Finished meanwhile: the request is not the mission's any more.
                match self.resolve_for_key(account_id, key_workspace, reference)? {
                    Some(m) if !is_finished(&m.status) => Err(EngineError::Unavailable(why)),
                    _ => Ok(None),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The mission a key's request names (see [`Self::hold`]).
    fn resolve_for_key(
        &self,
        account_id: &str,
        key_workspace: Option<&str>,
        reference: &str,
    ) -> Result<Option<Mission>, EngineError> {
        if inputs::check_id("mission", reference).is_err() {
            return Ok(None);
        }
        let access = Access { account_id: account_id.to_owned(), workspace: key_workspace.map(str::to_owned) };
        match self.0.store.missions.get(&(account_id, reference))? {
            Some(mission) => Ok(access.allows(&mission).then_some(mission)),
            None => self.find(account_id, key_workspace.unwrap_or_default(), reference),
        }
    }

    /// What a trace made in `workspace` belongs to, from a request's mission reference and
    /// metadata (`task_id` or `gwen_task_id`, `harness_version_id`, `assistant_id`,
    /// `thread_id`). A reference naming no mission of the workspace links none.
    pub fn trace_links(
        &self,
        account_id: &str,
        workspace: &str,
        mission: Option<&str>,
        metadata: Option<&Map<String, serde_json::Value>>,
    ) -> traces::TraceLinks {
        let text = |field: &str| {
            metadata
                .and_then(|m| m.get(field))
                .and_then(serde_json::Value::as_str)
                .filter(|v| inputs::check_id(field, v).is_ok())
                .map(str::to_owned)
        };
        let mission = mission.and_then(|reference| match self.find(account_id, workspace, reference) {
            Ok(found) => found.map(|m| m.id),
            Err(error) => {
                tracing::warn!(%error, "resolving a trace's mission failed");
                None
            }
        });
        traces::TraceLinks {
            mission,
            task_id: text("task_id").or_else(|| text("gwen_task_id")),
            harness_version_id: text("harness_version_id"),
            assistant_id: text("assistant_id"),
            thread_id: text("thread_id"),
            metadata: Map::new(),
        }
    }

    /// The mission `reference` names in `workspace`: its Tokaroo UUID or its `mission_id`.
    pub fn find(&self, account_id: &str, workspace: &str, reference: &str) -> Result<Option<Mission>, EngineError> {
        if inputs::check_id("mission", reference).is_err() {
            return Ok(None);
        }
        let store = &self.0.store;
        let access = Access { account_id: account_id.to_owned(), workspace: Some(workspace.to_owned()) };
        if let Some(mission) = store.missions.get(&(account_id, reference))? {
            return Ok(access.allows(&mission).then_some(mission));
        }
        match store.mission_refs.get(&(account_id, workspace, "mission_id", reference))? {
            Some(found) => Ok(store.missions.get(&(account_id, found.mission.as_str()))?),
            None => Ok(None),
        }
    }

    /// The `missions` supervisor: its loader starts an actor for every unfinished mission
    /// (at the engine's start, and again if the supervisor restarts).
    pub(crate) fn supervisor_spec(&self) -> SupervisorSpec {
        let missions = self.clone();
        SupervisorSpec {
            name: MISSIONS.to_owned(),
            kind: MISSIONS,
            restart: Restart::Permanent,
            policy: self.0.policy,
            registry: self.0.registry.clone(),
            escalates: true,
            loader: Arc::new(move || {
                let mut specs = Vec::new();
                let found = missions.0.store.missions.for_each(|m: Mission| {
                    if !is_finished(&m.status) {
                        specs.push(missions.spec(&m));
                    }
                    Ok::<_, EngineError>(())
                });
                if let Err(error) = found {
                    tracing::error!(%error, "reading unfinished missions failed; their actors start at the next restart");
                }
                specs
            }),
            describe: Arc::new(|children| json!({ "live_missions": children.len() })),
        }
    }
}

/// The newest `limit` items offered, by a `(time, id)` key: a bounded heap, so a scan of many
/// keeps few.
struct Newest<T, F: Fn(&T) -> (i64, String)> {
    heap: std::collections::BinaryHeap<std::cmp::Reverse<Ranked<T>>>,
    limit: usize,
    key: F,
}

struct Ranked<T>((i64, String), T);

impl<T> PartialEq for Ranked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for Ranked<T> {}
impl<T> PartialOrd for Ranked<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Ranked<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl<T, F: Fn(&T) -> (i64, String)> Newest<T, F> {
    fn new(limit: usize, key: F) -> Self {
        Self { heap: std::collections::BinaryHeap::new(), limit, key }
    }

    fn offer(&mut self, item: T) {
        if self.limit == 0 {
            return;
        }
        let ranked = Ranked((self.key)(&item), item);
        if self.heap.len() < self.limit {
            self.heap.push(std::cmp::Reverse(ranked));
        } else if self.heap.peek().is_some_and(|oldest| ranked.0 > oldest.0 .0) {
            self.heap.pop();
            self.heap.push(std::cmp::Reverse(ranked));
        }
    }

    /// Newest first.
    fn into_sorted(self) -> Vec<T> {
        let mut items: Vec<Ranked<T>> = self.heap.into_iter().map(|r| r.0).collect();
        items.sort_by(|a, b| b.0.cmp(&a.0));
        items.into_iter().map(|r| r.1).collect()
    }
}

fn finished_error(mission: &Mission) -> EngineError {
    EngineError::IllegalTransition {
        what: "mission",
        from: mission.status.clone(),
        to: "(any change to a finished mission's steps, artifacts or status)".into(),
        allowed: Vec::new(),
    }
}

/// The identities a mission input names: `(namespace, value)` as [`MissionRef`] keys them.
fn identities(patch: &MissionPatch) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(id) = &patch.mission_id {
        out.push(("mission_id".to_owned(), id.clone()));
    }
    if let (Some(source), Some(external)) = (&patch.external_source, &patch.external_id) {
        out.push((format!("external:{source}"), external.clone()));
    }
    out
}

impl MissionsParts {
    /// Adds a request's charge to a mission's record directly (no actor holds it: the mission
    /// finished while the request ran). Under the creation lock, as other writes of finished
    /// missions.
    async fn spend_on_record(&self, account_id: &str, id: &str, charged_units: i64) -> Result<(), EngineError> {
        let _guard = self.creating.lock().await;
        if let Some(mut mission) = self.store.missions.get(&(account_id, id))? {
            mission.spent_units = mission.spent_units.saturating_add(charged_units.max(0));
            mission.requests += 1;
            self.store.missions.insert(&(account_id, id), &mission)?;
            self.store.flush().await?;
        }
        Ok(())
    }

    /// A mission finished: one fewer unfinished mission for its account's cap.
    pub(crate) fn finished(&self, account: &str) {
        if let Some((_, live)) = self.counts.lock().unwrap_or_else(|p| p.into_inner()).get_mut(account) {
            *live = live.saturating_sub(1);
        }
    }

    /// A mission's creation or change of status, as a memory event of its workspace, so
    /// context packs can show recent mission history. Best effort: a failure is logged.
    pub(crate) async fn lifecycle_event(&self, mission: &Mission, from: Option<&str>) {
        let name = mission.title.clone().or_else(|| mission.mission_id.clone()).unwrap_or_else(|| mission.id.clone());
        let summary = match from {
            None => format!("Mission {name:?} created ({})", mission.status),
            Some(from) => format!("Mission {name:?}: {from} → {}", mission.status),
        };
        let mut metadata = Map::new();
        metadata.insert("tokaroo_mission_uuid".into(), json!(mission.id));
        metadata.insert("status".into(), json!(mission.status));
        if let Some(id) = &mission.mission_id {
            metadata.insert("mission_id".into(), json!(id));
        }
        if let Some(from) = from {
            metadata.insert("from".into(), json!(from));
        }
        if let Some(outcome) = &mission.outcome {
            metadata.insert("outcome".into(), json!(outcome));
        }
        let event = EventInput {
            event_type: "mission_lifecycle".into(),
            summary,
            occurred_at_ms: Some(mission.updated_at_ms),
            metadata,
            ..EventInput::default()
        };
        let scope = KbScope { account_id: mission.account_id.clone(), workspace: mission.workspace.clone() };
        let batch = MemoryBatch { events: vec![event], ..MemoryBatch::default() };
        if let Err(error) = self.knowledge.write_batch(&scope, batch, &actor_name(&mission.id)).await {
            tracing::warn!(mission = %mission.id, %error, "writing a mission's lifecycle event failed");
        }
    }
}

/// Units of a mission's budget held for one request: settled with what it was charged, or
/// released when dropped unsettled (the request failed).
pub struct MissionHold {
    parts: Arc<MissionsParts>,
    account_id: String,
    id: String,
    units: i64,
    settled: bool,
}

impl MissionHold {
    /// Records what the request was charged, durably, before the client is answered: through
    /// the mission's actor, or (the mission finished while the request ran) on its record.
    pub async fn settle(mut self, charged_units: i64) {
        self.settled = true;
        let parts = &self.parts;
        let finished = match parts.store.missions.get(&(self.account_id.as_str(), self.id.as_str())) {
            Ok(Some(mission)) => is_finished(&mission.status),
            Ok(None) => return,
            Err(error) => {
                tracing::error!(mission = %self.id, %error, "reading a mission to record its spend failed");
                return;
            }
        };
        let name = actor_name(&self.id);
        let actor = if finished { None } else { parts.registry.wait_for::<MissionMsg>(&name, START_WAIT).await };
        let settle = |reply| MissionMsg::Settle { reserved: self.units, charged: charged_units, reply };
        let recorded = match actor {
            Some(actor) => matches!(actor.call(settle, Some(CALL_TIMEOUT)).await, Ok(CallResult::Success(()))),
            None => false,
        };
        if !recorded {
            if let Err(error) = parts.spend_on_record(&self.account_id, &self.id, charged_units).await {
                tracing::error!(mission = %self.id, %error, "recording a finished mission's spend failed");
            }
        }
    }
}

impl Drop for MissionHold {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(actor) = self.parts.registry.actor::<MissionMsg>(&actor_name(&self.id)) {
                let _ = actor.cast(MissionMsg::Release(self.units));
            }
        }
    }
}
