//! `mission:{uuid}`: one live (unfinished) mission. It owns the mission's record while it
//! runs: the status machine, progress, steps and artifacts, the heartbeat deadline, and the
//! budget its requests are charged against. Every change is written and flushed before it is
//! answered, so a `kill -9` loses nothing answered; after a restart the `missions` supervisor
//! starts the actor again from the record (its loader lists unfinished missions), deadlines
//! included. A mission that reaches `succeeded`, `failed` or `cancelled` answers, writes its
//! lifecycle event, and stops: a normal finish of a transient child, so it leaves the tree
//! and its record stays.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::{json, Map};
use tokaroo_storage::harness::{Mission, MissionArtifact, MissionStep, StepRef};

use super::{
    inputs::{ArtifactInput, MissionPatch, StepInput},
    MissionsParts,
};
use crate::{
    error::EngineError,
    tree::{
        inspect::Inspection,
        registry::{ChildRef, TreeMsg},
        supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, SpawnAt},
    },
};

pub const MISSION: &str = "mission";

pub fn actor_name(id: &str) -> String {
    format!("mission:{id}")
}

/// The statuses a mission may move to from `status` (none once finished).
pub fn allowed_next(status: &str) -> &'static [&'static str] {
    match status {
        "pending" => &["running", "waiting_approval", "failed", "cancelled"],
        "running" => &["waiting_approval", "succeeded", "failed", "cancelled"],
        "waiting_approval" => &["running", "failed", "cancelled"],
        _ => &[],
    }
}

pub fn is_finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

type Reply<T> = RpcReplyPort<Result<T, EngineError>>;

pub enum MissionMsg {
    Update(Box<MissionPatch>, Reply<Mission>),
    /// Creates or (by `step_ref`) updates a step; answers it and whether it was created.
    UpsertStep(Box<StepInput>, Reply<(MissionStep, bool)>),
    /// Updates a step by its id.
    PatchStep(String, Box<StepInput>, Reply<MissionStep>),
    Artifact(Box<ArtifactInput>, Reply<MissionArtifact>),
    /// Holds `units` of the mission's budget for a request (refused past the budget).
    Reserve(i64, Reply<()>),
    /// A held request was charged `charged` units (its hold of `reserved` is released).
    Settle {
        reserved: i64,
        charged: i64,
        /// Answered once recorded and flushed.
        reply: RpcReplyPort<()>,
    },
    /// A held request was not charged.
    Release(i64),
    /// The heartbeat deadline may have passed.
    CheckStale,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for MissionMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub struct MissionState {
    mission: Mission,
    /// Units held for requests in flight.
    reserved: i64,
    /// When the scheduled staleness check fires (at most one is pending).
    check_at_ms: Option<i64>,
}

pub struct MissionActor {
    parts: std::sync::Arc<MissionsParts>,
    account_id: String,
    id: String,
}

impl MissionActor {
    /// Writes the record and flushes it: answered changes survive a `kill -9`.
    async fn save(&self, mission: &Mission) -> Result<(), EngineError> {
        self.parts.store.missions.insert(&(mission.account_id.as_str(), mission.id.as_str()), mission)?;
        self.parts.store.flush().await?;
        Ok(())
    }

    /// A change from the agent: the heartbeat is fresh again.
    fn touch(mission: &mut Mission, now: i64) {
        mission.last_update_ms = now;
        mission.updated_at_ms = now;
        mission.stale_since_ms = None;
    }

    /// Schedules a staleness check at the heartbeat deadline, unless one is pending for it
    /// or earlier (a later one reschedules itself when it fires).
    fn schedule_check(&self, me: &ActorRef<MissionMsg>, state: &mut MissionState) {
        let mission = &state.mission;
        if mission.stale_since_ms.is_some() || !can_go_stale(&mission.status) {
            return;
        }
        let deadline = mission.last_update_ms.saturating_add(timeout_ms(mission));
        if state.check_at_ms.is_some_and(|at| at <= deadline) {
            return;
        }
        state.check_at_ms = Some(deadline);
        let wait = Duration::from_millis(u64::try_from(deadline - crate::clock::now_ms()).unwrap_or(0));
        me.send_after(wait, || MissionMsg::CheckStale);
    }

    async fn update(&self, state: &mut MissionState, patch: MissionPatch) -> Result<Option<String>, EngineError> {
        let before = state.mission.status.clone();
        let mut next = state.mission.clone();
        super::inputs::apply_patch(&mut next, &patch)?;
        let now = crate::clock::now_ms();
        if next.status != before {
            let allowed = allowed_next(&before);
            if !allowed.contains(&next.status.as_str()) {
                return Err(EngineError::IllegalTransition {
                    what: "mission",
                    from: before,
                    to: next.status,
                    allowed: allowed.to_vec(),
                });
            }
            if is_finished(&next.status) {
                next.finished_at_ms = Some(now);
                if next.status == "succeeded" {
                    next.progress = 100.0;
                    next.success.get_or_insert(true);
                } else {
                    next.success.get_or_insert(false);
                }
            }
        }
        Self::touch(&mut next, now);
        // Saved first: a change that cannot be written is not kept either.
        self.save(&next).await?;
        state.mission = next;
        Ok((state.mission.status != before).then_some(before))
    }

    async fn upsert_step(
        &self,
        state: &mut MissionState,
        input: StepInput,
    ) -> Result<(MissionStep, bool), EngineError> {
        let store = &self.parts.store;
        let (account, mission_id) = (state.mission.account_id.clone(), state.mission.id.clone());
        let (account, mission) = (account.as_str(), mission_id.as_str());
        let existing = match &input.step_ref {
            Some(step_ref) => match store.step_refs.get(&(account, mission, step_ref.as_str()))? {
                Some(r) => store.mission_steps.get(&(account, mission, r.step.as_str()))?,
                None => None,
            },
            None => None,
        };
        let now = crate::clock::now_ms();
        let created = existing.is_none();
        let mut step = match existing {
            Some(step) => step,
            None => {
                if state.mission.step_count >= self.parts.limits.steps_per_mission as u64 {
                    return Err(EngineError::Invalid(format!(
                        "this mission has {} steps, the most a mission may have (limits.steps_per_mission)",
                        state.mission.step_count
                    )));
                }
                MissionStep {
                    id: format!("step_{}", uuid::Uuid::new_v4().simple()),
                    account_id: account.to_owned(),
                    mission: mission.to_owned(),
                    step_ref: input.step_ref.clone(),
                    task_id: None,
                    title: None,
                    status: "pending".into(),
                    output_summary: None,
                    cost_units: 0,
                    started_at_ms: None,
                    finished_at_ms: None,
                    metadata: Map::new(),
                    created_at_ms: now,
                    updated_at_ms: now,
                }
            }
        };
        super::inputs::apply_step(&mut step, &input, now)?;
        let mut next = state.mission.clone();
        if created {
            if let Some(step_ref) = &step.step_ref {
                store.step_refs.insert(&(account, mission, step_ref.as_str()), &StepRef { step: step.id.clone() })?;
            }
            next.step_count += 1;
        }
        store.mission_steps.insert(&(account, mission, step.id.as_str()), &step)?;
        Self::touch(&mut next, now);
        self.save(&next).await?;
        state.mission = next;
        Ok((step, created))
    }

    async fn patch_step(
        &self,
        state: &mut MissionState,
        id: &str,
        input: StepInput,
    ) -> Result<MissionStep, EngineError> {
        let store = &self.parts.store;
        let key = (state.mission.account_id.clone(), state.mission.id.clone(), id.to_owned());
        let mut step = store.mission_steps.get(&key)?.ok_or(EngineError::NotFound { what: "step" })?;
        let now = crate::clock::now_ms();
        super::inputs::apply_step(&mut step, &input, now)?;
        store.mission_steps.insert(&key, &step)?;
        let mut next = state.mission.clone();
        Self::touch(&mut next, now);
        self.save(&next).await?;
        state.mission = next;
        Ok(step)
    }

    async fn artifact(&self, state: &mut MissionState, input: ArtifactInput) -> Result<MissionArtifact, EngineError> {
        if state.mission.artifact_count >= self.parts.limits.artifacts_per_mission as u64 {
            return Err(EngineError::Invalid(format!(
                "this mission has {} artifacts, the most a mission may have (limits.artifacts_per_mission)",
                state.mission.artifact_count
            )));
        }
        let store = &self.parts.store;
        let (account, mission) = (state.mission.account_id.clone(), state.mission.id.clone());
        if let Some(step) = &input.step_id {
            if store.mission_steps.get(&(account.as_str(), mission.as_str(), step.as_str()))?.is_none() {
                return Err(EngineError::Invalid(format!("step_id {step:?} is not a step of this mission")));
            }
        }
        let now = crate::clock::now_ms();
        let artifact = MissionArtifact {
            id: format!("art_{}", uuid::Uuid::new_v4().simple()),
            account_id: account.clone(),
            mission: mission.clone(),
            step: input.step_id,
            kind: input.kind,
            title: input.title,
            url: input.url,
            content: input.content,
            metadata: input.metadata,
            created_at_ms: now,
        };
        store.mission_artifacts.insert(&(account.as_str(), mission.as_str(), artifact.id.as_str()), &artifact)?;
        let mut next = state.mission.clone();
        next.artifact_count += 1;
        Self::touch(&mut next, now);
        self.save(&next).await?;
        state.mission = next;
        Ok(artifact)
    }

    fn reserve(&self, state: &mut MissionState, units: i64) -> Result<(), EngineError> {
        let mission = &state.mission;
        if let Some(budget) = mission.budget_units {
            let committed = mission.spent_units.saturating_add(state.reserved);
            if committed.saturating_add(units) > budget {
                return Err(EngineError::MissionBudgetExceeded {
                    budget_usd: crate::money::billing::units_to_usd(budget),
                    spent_usd: crate::money::billing::units_to_usd(mission.spent_units),
                    required_usd: crate::money::billing::units_to_usd(units),
                });
            }
        }
        state.reserved = state.reserved.saturating_add(units.max(0));
        Ok(())
    }
}

fn can_go_stale(status: &str) -> bool {
    // A mission waiting for a person's approval is not the agent's to keep alive.
    matches!(status, "pending" | "running")
}

fn timeout_ms(mission: &Mission) -> i64 {
    i64::try_from(mission.heartbeat_timeout_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Actor for MissionActor {
    type Msg = MissionMsg;
    type State = MissionState;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<MissionMsg>, _: ()) -> Result<MissionState, ActorProcessingErr> {
        let mission = self
            .parts
            .store
            .missions
            .get(&(self.account_id.as_str(), self.id.as_str()))?
            .ok_or_else(|| format!("mission {} has no record", self.id))?;
        Ok(MissionState { mission, reserved: 0, check_at_ms: None })
    }

    async fn post_start(&self, me: ActorRef<MissionMsg>, state: &mut MissionState) -> Result<(), ActorProcessingErr> {
        if is_finished(&state.mission.status) {
            // Finished while it was starting (or by a crash between the record and the stop).
            me.stop(None);
            return Ok(());
        }
        // A deadline that passed while the server was down is checked at once.
        self.schedule_check(&me, state);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<MissionMsg>,
        msg: MissionMsg,
        state: &mut MissionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MissionMsg::Update(patch, reply) => {
                let result = self.update(state, *patch).await;
                let changed_from = match &result {
                    Ok(from) => from.clone(),
                    Err(_) => None,
                };
                let finished = changed_from.is_some() && is_finished(&state.mission.status);
                if finished {
                    // Before the answer: a creation the caller makes next finds the place free.
                    self.parts.finished(&state.mission.account_id);
                }
                let _ = reply.send(result.map(|_| state.mission.clone()));
                if let Some(from) = changed_from {
                    self.parts.lifecycle_event(&state.mission, Some(&from)).await;
                    if finished {
                        me.stop(None);
                        return Ok(());
                    }
                }
            }
            MissionMsg::UpsertStep(input, reply) => {
                let _ = reply.send(self.upsert_step(state, *input).await);
            }
            MissionMsg::PatchStep(id, input, reply) => {
                let _ = reply.send(self.patch_step(state, &id, *input).await);
            }
            MissionMsg::Artifact(input, reply) => {
                let _ = reply.send(self.artifact(state, *input).await);
            }
            MissionMsg::Reserve(units, reply) => {
                let _ = reply.send(self.reserve(state, units));
            }
            MissionMsg::Settle { reserved, charged, reply } => {
                state.reserved = state.reserved.saturating_sub(reserved.max(0)).max(0);
                state.mission.spent_units = state.mission.spent_units.saturating_add(charged.max(0));
                state.mission.requests += 1;
                match self.save(&state.mission).await {
                    Ok(()) => {
                        let _ = reply.send(());
                    }
                    // Unanswered: the hold writes the spend on the record itself.
                    Err(error) => {
                        tracing::error!(mission = %state.mission.id, %error, "recording a mission's spend failed")
                    }
                }
            }
            MissionMsg::Release(units) => {
                state.reserved = state.reserved.saturating_sub(units.max(0)).max(0);
            }
            MissionMsg::CheckStale => {
                state.check_at_ms = None;
                let now = crate::clock::now_ms();
                let mission = &mut state.mission;
                let deadline = mission.last_update_ms.saturating_add(timeout_ms(mission));
                if can_go_stale(&mission.status) && mission.stale_since_ms.is_none() && now >= deadline {
                    mission.stale_since_ms = Some(now);
                    tracing::info!(mission = %mission.id, "mission is stale: no update within its heartbeat timeout");
                    if let Err(error) = self.save(&state.mission).await {
                        tracing::error!(mission = %state.mission.id, %error, "recording a stale mission failed");
                    }
                } else {
                    self.schedule_check(&me, state);
                }
            }
            MissionMsg::Inspect(reply) => {
                let m = &state.mission;
                let _ = reply.send(Inspection::leaf(json!({
                    "status": m.status,
                    "progress": m.progress,
                    "stale": m.stale_since_ms.is_some(),
                    "heartbeat_deadline": (!is_finished(&m.status))
                        .then(|| crate::clock::iso8601(m.last_update_ms.saturating_add(timeout_ms(m)))),
                    "spent_usd": crate::money::billing::units_to_usd(m.spent_units),
                    "budget_usd": m.budget_units.map(crate::money::billing::units_to_usd),
                    "held_usd": crate::money::billing::units_to_usd(state.reserved),
                    "requests": m.requests,
                    "steps": m.step_count,
                    "artifacts": m.artifact_count,
                })));
            }
            MissionMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        // Any change moved the deadline: the pending check reschedules itself when it fires.
        self.schedule_check(&me, state);
        Ok(())
    }
}

/// How the `missions` supervisor starts one mission's actor (again, after a failure).
pub struct MissionSpec {
    pub(crate) parts: std::sync::Arc<MissionsParts>,
    pub(crate) account_id: String,
    pub(crate) id: String,
}

impl ChildSpec for MissionSpec {
    fn name(&self) -> String {
        actor_name(&self.id)
    }
    fn kind(&self) -> &'static str {
        MISSION
    }
    fn restart(&self) -> Restart {
        Restart::Transient
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor =
            MissionActor { parts: self.parts.clone(), account_id: self.account_id.clone(), id: self.id.clone() };
        Box::pin(spawn_linked(actor, (), at))
    }
}
