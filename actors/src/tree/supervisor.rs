//! Supervision, one protocol for every group: [`SupervisorActor`] runs a [`Children`] table
//! of [`ChildSpec`]s; each child has a [`Restart`] policy and is restarted with backoff.
//!
//! ractor restarts nothing by itself: the supervising actor forwards its supervision events
//! to [`Children::on_event`] and, when told to, sends itself a restart message after the
//! returned delay. A restarted child runs its `pre_start` again and so rebuilds its state.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use serde::Serialize;
use serde_json::Value;

use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, Registry, TreeMsg},
};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// When a child that stopped is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always: the child stands for something that must have a live actor (a key, a
    /// workspace, a subsystem).
    Permanent,
    /// Only after a failure; a normal finish removes it and is recorded (a job that ends).
    Transient,
    /// Never; its exit is recorded either way (a best-effort one-off).
    Temporary,
}

/// How to (re)start one child. Implemented by each supervised actor kind.
pub trait ChildSpec: Send + Sync + 'static {
    /// `kind:id`, also the actor's name in its engine's [`Registry`].
    fn name(&self) -> String;
    fn kind(&self) -> &'static str;
    fn restart(&self) -> Restart {
        Restart::Permanent
    }
    /// Spawns the actor; see [`spawn_linked`].
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>>;
}

/// Where a child is spawned: under which supervisor, and under which name in which registry.
pub struct SpawnAt {
    pub supervisor: ActorCell,
    name: String,
    registry: Registry,
}

/// Spawns `actor` under its supervisor, unnamed in ractor (names live in the engine's
/// [`Registry`]), and returns it with its typed hooks. The name is registered before the
/// actor's `pre_start` runs, as ractor does for its own names: messages sent while it starts
/// (a key created while its workspace restarts) wait in its mailbox instead of being lost.
pub async fn spawn_linked<A>(actor: A, args: A::Arguments, at: SpawnAt) -> Result<ChildRef, SpawnErr>
where
    A: Actor,
    A::Msg: TreeMsg,
{
    let registered = Registered { inner: actor, name: at.name, registry: at.registry };
    let (actor_ref, _) = Actor::spawn_linked(None, registered, args, at.supervisor).await?;
    Ok(ChildRef::of(&actor_ref))
}

/// An actor that registers its name as it starts, then behaves exactly as `inner`.
struct Registered<A> {
    inner: A,
    name: String,
    registry: Registry,
}

impl<A> Actor for Registered<A>
where
    A: Actor,
    A::Msg: TreeMsg,
{
    type Msg = A::Msg;
    type State = A::State;
    type Arguments = A::Arguments;

    async fn pre_start(&self, me: ActorRef<A::Msg>, args: A::Arguments) -> Result<A::State, ActorProcessingErr> {
        self.registry.register(self.name.clone(), ChildRef::of(&me));
        self.inner.pre_start(me, args).await
    }

    async fn post_start(&self, me: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_start(me, state).await
    }

    async fn post_stop(&self, me: ActorRef<A::Msg>, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.inner.post_stop(me, state).await
    }

    async fn handle(&self, me: ActorRef<A::Msg>, msg: A::Msg, state: &mut A::State) -> Result<(), ActorProcessingErr> {
        self.inner.handle(me, msg, state).await
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<A::Msg>,
        event: SupervisionEvent,
        state: &mut A::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle_supervisor_evt(me, event, state).await
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// More failures than this inside `window` escalate to the parent.
    pub max_failures_in_window: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_failures_in_window: 5,
            window: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildStatus {
    Running,
    Restarting,
    /// A transient or temporary child that ended normally.
    Finished,
    /// A temporary child that failed (it is not restarted).
    Failed,
}

struct ChildEntry {
    spec: Arc<dyn ChildSpec>,
    /// Start order: children stop in reverse (the ledger, started first, stops last).
    order: u64,
    child: Option<ChildRef>,
    status: ChildStatus,
    restarts: u32,
    last_error: Option<String>,
    recent_failures: VecDeque<Instant>,
    next_backoff: Duration,
}

/// What a supervisor reports about one child when inspected.
#[derive(Clone)]
pub struct ChildHandle {
    pub name: String,
    pub kind: &'static str,
    pub status: ChildStatus,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub child: Option<ChildRef>,
}

/// What the supervising actor must do after a supervision event.
#[derive(Debug, PartialEq)]
pub enum SupervisionAction {
    None,
    RestartAfter {
        name: String,
        delay: Duration,
    },
    /// Too many failures: the supervisor should fail itself so its own parent restarts it.
    Escalate {
        name: String,
        reason: String,
    },
}

/// How many ended transient/temporary children a supervisor remembers for the tree.
const EXITS_KEPT: usize = 32;

pub struct Children {
    entries: BTreeMap<String, ChildEntry>,
    by_actor: HashMap<ActorId, String>,
    exits: VecDeque<ChildHandle>,
    policy: RestartPolicy,
    registry: Registry,
    started: u64,
}

/// How long a stopping supervisor waits for each child to finish its `post_stop`.
const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Children {
    pub fn new(policy: RestartPolicy, registry: Registry) -> Self {
        Self {
            entries: BTreeMap::new(),
            by_actor: HashMap::new(),
            exits: VecDeque::new(),
            policy,
            registry,
            started: 0,
        }
    }

    /// Starts a child unless one of that name is already supervised here.
    pub async fn start(&mut self, spec: Arc<dyn ChildSpec>, supervisor: ActorCell) -> Result<(), SpawnErr> {
        let name = spec.name();
        if self.entries.contains_key(&name) {
            return Ok(());
        }
        let child = self.spawn_fresh(&*spec, supervisor).await?;
        self.started += 1;
        self.entries.insert(
            name,
            ChildEntry {
                spec,
                order: self.started,
                child: Some(child),
                status: ChildStatus::Running,
                restarts: 0,
                last_error: None,
                recent_failures: VecDeque::new(),
                next_backoff: self.policy.initial_backoff,
            },
        );
        Ok(())
    }

    /// Stops and forgets a child (its entity was deleted). Unknown names are ignored.
    pub fn stop(&mut self, name: &str) {
        if let Some(entry) = self.entries.remove(name) {
            self.stop_entry(name, entry, "removed");
        }
    }

    pub fn stop_all(&mut self) {
        for (name, entry) in std::mem::take(&mut self.entries) {
            self.stop_entry(&name, entry, "supervisor stopping");
        }
    }

    /// Stops every child, newest first, each finishing its `post_stop` (the ledger commits,
    /// an upstream leaves its slot) before the next is asked: a supervisor that is stopping
    /// normally (shutdown) leaves nothing half-stopped behind it.
    pub async fn stop_all_in_order(&mut self) {
        let mut entries: Vec<(String, ChildEntry)> = std::mem::take(&mut self.entries).into_iter().collect();
        entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.order));
        for (name, entry) in entries {
            if let Some(child) = entry.child {
                self.by_actor.remove(&child.cell().get_id());
                self.registry.unregister(&name, child.cell());
                let _ = child.cell().stop_and_wait(Some("supervisor stopping".into()), Some(CHILD_STOP_TIMEOUT)).await;
            }
        }
    }

    fn stop_entry(&mut self, name: &str, entry: ChildEntry, reason: &str) {
        if let Some(child) = entry.child {
            self.by_actor.remove(&child.cell().get_id());
            self.registry.unregister(name, child.cell());
            child.cell().stop(Some(reason.into()));
        }
    }

    pub fn on_event(&mut self, event: &SupervisionEvent) -> SupervisionAction {
        let (cell, error) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return SupervisionAction::None,
        };
        let Some(name) = self.by_actor.remove(&cell.get_id()) else { return SupervisionAction::None };
        self.registry.unregister(&name, cell);
        let Some(entry) = self.entries.get_mut(&name) else { return SupervisionAction::None };
        let restart = entry.spec.restart();
        let ends = match (restart, &error) {
            (Restart::Permanent, _) | (Restart::Transient, Some(_)) => None,
            (Restart::Transient, None) | (Restart::Temporary, None) => Some(ChildStatus::Finished),
            (Restart::Temporary, Some(_)) => Some(ChildStatus::Failed),
        };
        if let Some(status) = ends {
            let entry = self.entries.remove(&name).expect("looked up above");
            match &error {
                Some(error) => tracing::warn!(child = %name, %error, "child actor failed; not restarted (temporary)"),
                None => tracing::debug!(child = %name, "child actor finished"),
            }
            self.remember_exit(ChildHandle {
                name,
                kind: entry.spec.kind(),
                status,
                restarts: entry.restarts,
                last_error: error,
                child: None,
            });
            return SupervisionAction::None;
        }
        // A permanent child that stops on its own (not through `stop`) is restarted too: it
        // still has an entity in storage that needs a live actor.
        let error = error.unwrap_or_else(|| {
            let SupervisionEvent::ActorTerminated(_, _, reason) = event else { unreachable!() };
            format!("terminated: {}", reason.as_deref().unwrap_or("no reason"))
        });
        let now = Instant::now();
        entry.child = None;
        entry.status = ChildStatus::Restarting;
        entry.last_error = Some(error.clone());
        entry.recent_failures.push_back(now);
        while entry.recent_failures.front().is_some_and(|t| now.duration_since(*t) > self.policy.window) {
            entry.recent_failures.pop_front();
        }
        if entry.recent_failures.len() == 1 {
            // The first failure after a healthy window starts the backoff afresh.
            entry.next_backoff = self.policy.initial_backoff;
        }
        if entry.recent_failures.len() > self.policy.max_failures_in_window {
            let reason = format!(
                "child {name} failed {} times within {:?}: {error}",
                entry.recent_failures.len(),
                self.policy.window
            );
            return SupervisionAction::Escalate { name, reason };
        }
        let delay = entry.next_backoff;
        entry.next_backoff = (delay * 2).min(self.policy.max_backoff);
        tracing::warn!(child = %name, error = %error, delay_ms = delay.as_millis() as u64, "child actor failed; restarting after backoff");
        SupervisionAction::RestartAfter { name, delay }
    }

    fn remember_exit(&mut self, exit: ChildHandle) {
        if self.exits.len() == EXITS_KEPT {
            self.exits.pop_front();
        }
        self.exits.push_back(exit);
    }

    /// Runs a scheduled restart. If spawning fails the child stays `restarting` and the
    /// returned delay says when to try again.
    pub async fn restart(&mut self, name: &str, supervisor: ActorCell) -> Option<Duration> {
        let entry = self.entries.get(name)?;
        if entry.child.is_some() {
            return None;
        }
        let spec = entry.spec.clone();
        let spawned = self.spawn_fresh(&*spec, supervisor).await;
        let entry = self.entries.get_mut(name)?;
        match spawned {
            Ok(child) => {
                entry.child = Some(child);
                entry.status = ChildStatus::Running;
                entry.restarts += 1;
                None
            }
            Err(err) => {
                entry.last_error = Some(format!("restart failed: {err}"));
                let delay = entry.next_backoff;
                entry.next_backoff = (delay * 2).min(self.policy.max_backoff);
                Some(delay)
            }
        }
    }

    /// Live children first (by name), then the last few that ended.
    pub fn handles(&self) -> Vec<ChildHandle> {
        let live = self.entries.iter().map(|(name, e)| ChildHandle {
            name: name.clone(),
            kind: e.spec.kind(),
            status: e.status,
            restarts: e.restarts,
            last_error: e.last_error.clone(),
            child: e.child.clone(),
        });
        live.chain(self.exits.iter().cloned()).collect()
    }

    /// Supervised children (ended ones are not counted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Spawns a child, first stopping a stale actor still registered under its name (one left
    /// behind by a supervisor that failed before it could stop its children).
    async fn spawn_fresh(&mut self, spec: &dyn ChildSpec, supervisor: ActorCell) -> Result<ChildRef, SpawnErr> {
        let name = spec.name();
        if let Some(stale) = self.registry.live(&name) {
            stale.cell().unlink(supervisor.clone());
            let _ = stale.cell().stop_and_wait(Some("replaced".into()), Some(Duration::from_secs(5))).await;
        }
        let at = SpawnAt { supervisor, name: name.clone(), registry: self.registry.clone() };
        let child = spec.spawn(at).await?;
        self.by_actor.insert(child.cell().get_id(), name.clone());
        self.registry.register(name, child.clone());
        Ok(child)
    }
}

/// Lists the children a (re)started supervisor begins with, from current state.
pub type Loader = Arc<dyn Fn() -> Vec<Arc<dyn ChildSpec>> + Send + Sync>;
/// A supervisor's own snapshot for the tree, given its children.
pub type Describe = Arc<dyn Fn(&Children) -> Value + Send + Sync>;

pub enum SupervisorMsg {
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    /// Starts a child without waiting for the answer (a failure to spawn is logged).
    Adopt(Arc<dyn ChildSpec>),
    StopChild(String),
    RestartChild(String),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for SupervisorMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

/// Every group in the tree (root, accounts, a workspace, providers, endpoints, tasks) is one
/// of these, told apart only by its [`SupervisorSpec`].
pub struct SupervisorActor {
    spec: SupervisorSpec,
}

#[derive(Clone)]
pub struct SupervisorSpec {
    pub name: String,
    pub kind: &'static str,
    pub restart: Restart,
    pub policy: RestartPolicy,
    pub loader: Loader,
    pub describe: Describe,
    /// False for the root, which has no parent: it keeps restarting at the longest backoff.
    pub escalates: bool,
    pub registry: Registry,
}

impl SupervisorSpec {
    /// Starts this supervisor as the top of a tree (no parent).
    pub async fn spawn_root(self) -> Result<ChildRef, SpawnErr> {
        let name = self.name.clone();
        let registry = self.registry.clone();
        let registered = Registered { inner: SupervisorActor { spec: self }, name, registry };
        let (actor, _) = Actor::spawn(None, registered, ()).await?;
        Ok(ChildRef::of(&actor))
    }
}

impl ChildSpec for SupervisorSpec {
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
        let actor = SupervisorActor { spec: self.clone() };
        Box::pin(spawn_linked(actor, (), at))
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<SupervisorMsg>, _: ()) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(self.spec.policy, self.spec.registry.clone());
        for spec in (self.spec.loader)() {
            children.start(spec, me.get_cell()).await?;
        }
        Ok(children)
    }

    async fn post_stop(&self, _me: ActorRef<SupervisorMsg>, children: &mut Children) -> Result<(), ActorProcessingErr> {
        children.stop_all_in_order().await;
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::StartChild(spec, reply) => {
                let _ = reply.send(children.start(spec, me.get_cell()).await.map_err(|e| e.to_string()));
            }
            SupervisorMsg::Adopt(spec) => {
                let name = spec.name();
                if let Err(error) = children.start(spec, me.get_cell()).await {
                    tracing::warn!(child = %name, supervisor = %self.spec.name, %error, "could not start child actor");
                }
            }
            SupervisorMsg::StopChild(name) => children.stop(&name),
            SupervisorMsg::RestartChild(name) => {
                if let Some(delay) = children.restart(&name, me.get_cell()).await {
                    me.send_after(delay, move || SupervisorMsg::RestartChild(name));
                }
            }
            SupervisorMsg::Inspect(reply) => {
                let _ =
                    reply.send(Inspection { snapshot: (self.spec.describe)(children), children: children.handles() });
            }
            SupervisorMsg::InjectFailure(reason) => {
                // ractor skips post_stop on failure, so children are stopped here.
                children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match children.on_event(&event) {
            SupervisionAction::None => {}
            SupervisionAction::RestartAfter { name, delay } => {
                me.send_after(delay, move || SupervisorMsg::RestartChild(name));
            }
            SupervisionAction::Escalate { reason, .. } if self.spec.escalates => {
                children.stop_all();
                return Err(reason.into());
            }
            SupervisionAction::Escalate { name, reason } => {
                tracing::error!(%reason, supervisor = %self.spec.name, "child keeps failing; still restarting it");
                me.send_after(self.spec.policy.max_backoff, move || SupervisorMsg::RestartChild(name));
            }
        }
        Ok(())
    }
}

/// Asks the supervisor `parent` to start a child; one that is restarting picks it up from
/// its loader instead.
pub async fn start_child(registry: &Registry, parent: &str, spec: Arc<dyn ChildSpec>) {
    let name = spec.name();
    let Some(actor) = registry.actor::<SupervisorMsg>(parent) else {
        tracing::warn!(child = %name, parent, "supervisor unavailable; the child starts when it restarts");
        return;
    };
    match actor.call(|r| SupervisorMsg::StartChild(spec, r), Some(Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(Ok(()))) => {}
        Ok(ractor::rpc::CallResult::Success(Err(error))) => {
            tracing::warn!(child = %name, parent, %error, "could not start child actor")
        }
        _ => tracing::warn!(child = %name, parent, "supervisor unavailable; the child starts when it restarts"),
    }
}

/// Hands `spec` to the supervisor `parent` without waiting. False when it is not running;
/// the spec is dropped then, as it is when a supervisor stops with it still queued.
pub fn adopt(registry: &Registry, parent: &str, spec: Arc<dyn ChildSpec>) -> bool {
    registry.actor::<SupervisorMsg>(parent).is_some_and(|actor| actor.cast(SupervisorMsg::Adopt(spec)).is_ok())
}

pub fn stop_child(registry: &Registry, parent: &str, name: String) {
    match registry.actor::<SupervisorMsg>(parent) {
        Some(actor) => {
            let _ = actor.cast(SupervisorMsg::StopChild(name));
        }
        // The parent is restarting and reloads without the child; stop a straggler anyway.
        None => {
            if let Some(child) = registry.get(&name) {
                child.cell().stop(Some("removed".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Mutex,
    };

    use super::*;
    use crate::tree::task::{Job, TaskSpec};

    fn fast_policy() -> RestartPolicy {
        RestartPolicy {
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(80),
            max_failures_in_window: 3,
            window: Duration::from_secs(60),
        }
    }

    fn group(name: &str, registry: &Registry, escalates: bool, children: Vec<Arc<dyn ChildSpec>>) -> SupervisorSpec {
        SupervisorSpec {
            name: name.to_owned(),
            kind: "group",
            restart: Restart::Permanent,
            policy: fast_policy(),
            loader: Arc::new(move || children.clone()),
            describe: Arc::new(|children| serde_json::json!({ "children": children.len() })),
            escalates,
            registry: registry.clone(),
        }
    }

    /// A job that panics on its first `panics` runs, then succeeds; it records when it ran.
    fn flaky_job(panics: u32, runs: Arc<Mutex<Vec<Instant>>>) -> Job {
        let count = Arc::new(AtomicU32::new(0));
        Arc::new(move || {
            let (count, runs) = (count.clone(), runs.clone());
            Box::pin(async move {
                runs.lock().unwrap().push(Instant::now());
                if count.fetch_add(1, Ordering::SeqCst) < panics {
                    panic!("flaky job panics");
                }
                Ok(())
            })
        })
    }

    async fn inspect(registry: &Registry, name: &str) -> Inspection {
        registry.get(name).expect("registered").inspect().await.expect("answers")
    }

    async fn eventually<F: Fn(&Inspection) -> bool>(registry: &Registry, name: &str, done: F) -> Inspection {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let seen = inspect(registry, name).await;
            if done(&seen) {
                return seen;
            }
            assert!(Instant::now() < deadline, "{name} never reached the expected state");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn only_child(inspection: &Inspection) -> &ChildHandle {
        assert_eq!(inspection.children.len(), 1, "one child expected");
        &inspection.children[0]
    }

    #[tokio::test]
    async fn a_transient_child_that_finishes_is_removed_not_restarted_and_its_exit_shows() {
        let registry = Registry::default();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let job = TaskSpec::once("job:ok", "job", Restart::Transient, flaky_job(0, runs.clone()));
        let root = group("root", &registry, false, vec![Arc::new(job)]).spawn_root().await.unwrap();
        let seen =
            eventually(&registry, "root", |i| i.children.iter().any(|c| c.status == ChildStatus::Finished)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let later = inspect(&registry, "root").await;
        let exit = only_child(&later);
        assert_eq!((exit.name.as_str(), exit.status, exit.restarts), ("job:ok", ChildStatus::Finished, 0));
        assert!(exit.child.is_none() && exit.last_error.is_none());
        assert_eq!(runs.lock().unwrap().len(), 1, "a finished transient child is not run again");
        assert!(registry.get("job:ok").is_none(), "its name is free again");
        assert_eq!(seen.children.len(), 1);
        root.cell().stop(None);
    }

    #[tokio::test]
    async fn a_transient_child_that_panics_is_restarted_with_growing_backoff() {
        let registry = Registry::default();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let job = TaskSpec::once("job:flaky", "job", Restart::Transient, flaky_job(2, runs.clone()));
        let root = group("root", &registry, false, vec![Arc::new(job)]).spawn_root().await.unwrap();
        let seen = eventually(&registry, "root", |i| i.children[0].status == ChildStatus::Finished).await;
        let exit = only_child(&seen);
        assert_eq!(exit.restarts, 2, "restarted after each of its two panics");
        let runs = runs.lock().unwrap().clone();
        assert_eq!(runs.len(), 3);
        // Backoff 20 ms, then 40 ms: each restart waits at least that long.
        assert!(runs[1] - runs[0] >= Duration::from_millis(20), "{:?}", runs[1] - runs[0]);
        assert!(runs[2] - runs[1] >= Duration::from_millis(40), "{:?}", runs[2] - runs[1]);
        root.cell().stop(None);
    }

    #[tokio::test]
    async fn a_temporary_child_that_fails_is_recorded_as_failed_and_not_restarted() {
        let registry = Registry::default();
        let runs = Arc::new(Mutex::new(Vec::new()));
        let job = TaskSpec::once("job:once", "job", Restart::Temporary, flaky_job(5, runs.clone()));
        let root = group("root", &registry, false, vec![Arc::new(job)]).spawn_root().await.unwrap();
        let seen = eventually(&registry, "root", |i| i.children[0].status == ChildStatus::Failed).await;
        assert!(
            only_child(&seen).last_error.as_deref().unwrap_or_default().contains("panic"),
            "{:?}",
            seen.children[0].last_error
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.lock().unwrap().len(), 1);
        root.cell().stop(None);
    }

    #[tokio::test]
    async fn a_child_failing_too_often_escalates_and_its_supervisor_is_restarted() {
        let registry = Registry::default();
        // Permanent and always failing: restarted 3 times, the 4th failure escalates.
        let runs = Arc::new(Mutex::new(Vec::new()));
        let doomed = TaskSpec::once("job:doomed", "job", Restart::Permanent, flaky_job(u32::MAX, runs.clone()));
        let middle = group("middle", &registry, true, vec![Arc::new(doomed)]);
        let root = group("root", &registry, false, vec![Arc::new(middle)]).spawn_root().await.unwrap();
        let seen = eventually(&registry, "root", |i| i.children[0].restarts >= 1).await;
        let middle = only_child(&seen);
        assert_eq!(middle.name, "middle");
        assert!(
            middle.last_error.as_deref().unwrap_or_default().contains("job:doomed failed 4 times"),
            "{:?}",
            middle.last_error
        );
        assert!(runs.lock().unwrap().len() >= 4);
        root.cell().stop(None);
    }

    #[tokio::test]
    async fn a_permanent_child_that_stops_on_its_own_is_restarted() {
        let registry = Registry::default();
        let runs = Arc::new(Mutex::new(Vec::new()));
        // A one-off job marked permanent: each normal finish brings it back.
        let job = TaskSpec::once("job:again", "job", Restart::Permanent, flaky_job(0, runs.clone()));
        let root = group("root", &registry, false, vec![Arc::new(job)]).spawn_root().await.unwrap();
        let seen = eventually(&registry, "root", |i| i.children[0].restarts >= 2).await;
        assert!(only_child(&seen).last_error.as_deref().unwrap_or_default().contains("terminated: finished"));
        root.cell().stop(None);
    }

    /// A child whose `post_stop` raises a flag (a ledger committing, say).
    struct Flagging(Arc<std::sync::atomic::AtomicBool>);

    enum FlaggingMsg {
        Inspect(RpcReplyPort<Inspection>),
        InjectFailure(String),
    }

    impl TreeMsg for FlaggingMsg {
        fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
            Self::Inspect(reply)
        }
        fn inject_failure(reason: String) -> Self {
            Self::InjectFailure(reason)
        }
    }

    impl Actor for Flagging {
        type Msg = FlaggingMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<FlaggingMsg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn post_stop(&self, _: ActorRef<FlaggingMsg>, _: &mut ()) -> Result<(), ActorProcessingErr> {
            // Slow, as a final commit is: the supervisor must wait for it.
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<FlaggingMsg>,
            msg: FlaggingMsg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                FlaggingMsg::Inspect(reply) => {
                    let _ = reply.send(Inspection::leaf(serde_json::Value::Null));
                }
                FlaggingMsg::InjectFailure(reason) => return Err(reason.into()),
            }
            Ok(())
        }
    }

    struct FlaggingSpec(Arc<std::sync::atomic::AtomicBool>);

    impl ChildSpec for FlaggingSpec {
        fn name(&self) -> String {
            "flagging:1".into()
        }
        fn kind(&self) -> &'static str {
            "flagging"
        }
        fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
            Box::pin(spawn_linked(Flagging(self.0.clone()), (), at))
        }
    }

    #[tokio::test]
    async fn a_stopping_tree_waits_for_every_descendants_post_stop() {
        let registry = Registry::default();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let middle = group("middle", &registry, true, vec![Arc::new(FlaggingSpec(stopped.clone()))]);
        let root = group("root", &registry, false, vec![Arc::new(middle)]).spawn_root().await.unwrap();
        root.cell().stop_and_wait(None, Some(Duration::from_secs(5))).await.unwrap();
        assert!(stopped.load(Ordering::SeqCst), "the grandchild's post_stop ran before the root stopped");
        assert!(registry.get("flagging:1").is_none() && registry.get("middle").is_none(), "names are released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_started_while_its_supervisor_starts_is_not_lost() {
        let registry = Registry::default();
        let mut slow = group("slow", &registry, true, Vec::new());
        // A supervisor that takes a while to start (a workspace reloading many keys).
        slow.loader = Arc::new(|| {
            std::thread::sleep(Duration::from_millis(300));
            Vec::new()
        });
        let root_registry = registry.clone();
        let root =
            tokio::spawn(async move { group("root", &root_registry, false, vec![Arc::new(slow)]).spawn_root().await });
        // While `slow` is in its pre_start: the name is already there, and the start waits.
        let deadline = Instant::now() + Duration::from_secs(5);
        while registry.get("slow").is_none() {
            assert!(Instant::now() < deadline, "the supervisor registers as it starts");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = registry.get("slow").unwrap().cell().get_status();
        assert_eq!(status, ractor::ActorStatus::Starting, "the start is sent while the supervisor starts");
        let late = TaskSpec::every("task:late", Duration::from_secs(60), flaky_job(0, Arc::default()));
        start_child(&registry, "slow", Arc::new(late)).await;
        let root = root.await.unwrap().unwrap();
        let seen = eventually(&registry, "slow", |i| i.children.iter().any(|c| c.name == "task:late")).await;
        assert_eq!(only_child(&seen).status, ChildStatus::Running);
        root.cell().stop(None);
    }
}
