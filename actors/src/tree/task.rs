//! `task:{name}` and one-off jobs: background work as an actor in the tree, so it is
//! supervised, shows in the operator's tree, and stops with the engine.
//!
//! A [`TaskSpec`] runs its job either every `period` (permanent: restarted if it fails) or
//! once (transient or temporary: the actor stops when the job returns, and its supervisor
//! records the exit).

use std::{sync::Arc, time::Duration};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, TreeMsg},
    supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, SpawnAt},
};

/// The supervisor of background jobs: periodic tasks and one-off jobs such as auto pay.
pub const TASKS: &str = "tasks";

/// The work: returns an error to record (a periodic task keeps running; a failed one-off
/// job fails its actor, so a transient job is restarted).
pub type Job = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
pub enum Schedule {
    /// Runs one period after start, then one period after each run ends (a slow run delays
    /// the next rather than piling runs up behind it).
    Every(Duration),
    /// Runs once, at start.
    Once,
}

pub enum TaskMsg {
    Run,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for TaskMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

#[derive(Clone)]
pub struct TaskSpec {
    pub name: String,
    pub kind: &'static str,
    pub schedule: Schedule,
    pub restart: Restart,
    pub job: Job,
}

impl TaskSpec {
    /// A permanent task that runs `job` every `period`.
    pub fn every(name: impl Into<String>, period: Duration, job: Job) -> Self {
        Self { name: name.into(), kind: "task", schedule: Schedule::Every(period), restart: Restart::Permanent, job }
    }

    /// A job run once; `restart` says whether a failure runs it again.
    pub fn once(name: impl Into<String>, kind: &'static str, restart: Restart, job: Job) -> Self {
        Self { name: name.into(), kind, schedule: Schedule::Once, restart, job }
    }
}

impl ChildSpec for TaskSpec {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn restart(&self) -> Restart {
        self.restart
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        Box::pin(spawn_linked(TaskActor { spec: self.clone() }, (), at))
    }
}

pub struct TaskActor {
    spec: TaskSpec,
}

#[derive(Default)]
pub struct TaskState {
    runs: u64,
    failures: u64,
    last_run_at_ms: Option<i64>,
    last_error: Option<String>,
}

impl Actor for TaskActor {
    type Msg = TaskMsg;
    type State = TaskState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<TaskMsg>, _: ()) -> Result<TaskState, ActorProcessingErr> {
        match self.spec.schedule {
            Schedule::Every(period) => {
                me.send_after(period, || TaskMsg::Run);
            }
            Schedule::Once => me.cast(TaskMsg::Run)?,
        }
        Ok(TaskState::default())
    }

    async fn handle(
        &self,
        me: ActorRef<TaskMsg>,
        msg: TaskMsg,
        state: &mut TaskState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TaskMsg::Run => {
                let result = (self.spec.job)().await;
                state.runs += 1;
                state.last_run_at_ms = Some(crate::clock::now_ms());
                if let Schedule::Every(period) = self.spec.schedule {
                    me.send_after(period, || TaskMsg::Run);
                }
                match (result, self.spec.schedule) {
                    (Ok(()), Schedule::Every(_)) => {}
                    (Ok(()), Schedule::Once) => me.stop(Some("finished".into())),
                    (Err(error), Schedule::Every(_)) => {
                        tracing::warn!(task = %self.spec.name, %error, "background task failed; it runs again next period");
                        state.failures += 1;
                        state.last_error = Some(error);
                    }
                    (Err(error), Schedule::Once) => return Err(error.into()),
                }
            }
            TaskMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "schedule": match self.spec.schedule {
                        Schedule::Every(period) => format!("every {} ms", period.as_millis()),
                        Schedule::Once => "once".to_owned(),
                    },
                    "runs": state.runs,
                    "failures": state.failures,
                    "last_run_at": state.last_run_at_ms.map(crate::clock::iso8601),
                    "last_error": state.last_error,
                })));
            }
            TaskMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}
