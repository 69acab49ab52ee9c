//! Restart-with-backoff supervision, shared by every actor that has children.
//!
//! ractor does not restart anything by itself: a supervising actor keeps a [`Children`] table,
//! forwards its supervision events to [`Children::on_event`] and, when told to, sends itself a
//! restart message after the returned delay. A child restarted this way runs its `pre_start`
//! again and so rebuilds its state from storage.

use std::{
    collections::{BTreeMap, VecDeque},
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{ActorCell, SpawnErr, SupervisionEvent};
use serde::Serialize;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// How to (re)start one child. Implemented by each supervised actor kind.
pub trait ChildSpec: Send + Sync + 'static {
    /// `kind:id`, also the actor's registry name.
    fn name(&self) -> String;
    fn kind(&self) -> &'static str;
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>>;
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
}

struct ChildEntry {
    spec: Arc<dyn ChildSpec>,
    cell: Option<ActorCell>,
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
    pub cell: Option<ActorCell>,
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
    Escalate(String),
}

pub struct Children {
    entries: BTreeMap<String, ChildEntry>,
    policy: RestartPolicy,
}

impl Children {
    pub fn new(policy: RestartPolicy) -> Self {
        Self { entries: BTreeMap::new(), policy }
    }

    /// Starts a child unless one of that name is already supervised here.
    pub async fn start(&mut self, spec: Arc<dyn ChildSpec>, supervisor: ActorCell) -> Result<(), SpawnErr> {
        let name = spec.name();
        if self.entries.contains_key(&name) {
            return Ok(());
        }
        let cell = spawn_fresh(&*spec, supervisor).await?;
        self.entries.insert(
            name,
            ChildEntry {
                spec,
                cell: Some(cell),
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
            if let Some(cell) = entry.cell {
                cell.stop(Some("removed".into()));
            }
        }
    }

    pub fn stop_all(&mut self) {
        for (_, entry) in std::mem::take(&mut self.entries) {
            if let Some(cell) = entry.cell {
                cell.stop(Some("supervisor stopping".into()));
            }
        }
    }

    pub fn on_event(&mut self, event: &SupervisionEvent) -> SupervisionAction {
        let (cell, error) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A child that stops on its own (not through `stop`) is restarted too:
                // it still has an entity in storage that needs a live actor.
                (cell, format!("terminated: {}", reason.as_deref().unwrap_or("no reason")))
            }
            _ => return SupervisionAction::None,
        };
        let Some(name) = cell.get_name() else { return SupervisionAction::None };
        let Some(entry) = self.entries.get_mut(&name) else { return SupervisionAction::None };
        if entry.cell.as_ref().map(|c| c.get_id()) != Some(cell.get_id()) {
            return SupervisionAction::None;
        }
        let now = Instant::now();
        entry.cell = None;
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
            return SupervisionAction::Escalate(format!(
                "child {name} failed {} times within {:?}: {error}",
                entry.recent_failures.len(),
                self.policy.window
            ));
        }
        let delay = entry.next_backoff;
        entry.next_backoff = (delay * 2).min(self.policy.max_backoff);
        tracing::warn!(child = %name, error = %error, delay_ms = delay.as_millis() as u64, "child actor failed; restarting after backoff");
        SupervisionAction::RestartAfter { name, delay }
    }

    /// Runs a scheduled restart. If spawning fails the child stays `restarting` and the
    /// returned delay says when to try again.
    pub async fn restart(&mut self, name: &str, supervisor: ActorCell) -> Option<Duration> {
        let entry = self.entries.get_mut(name)?;
        if entry.cell.is_some() {
            return None;
        }
        match spawn_fresh(&*entry.spec, supervisor).await {
            Ok(cell) => {
                entry.cell = Some(cell);
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

    pub fn handles(&self) -> Vec<ChildHandle> {
        self.entries
            .iter()
            .map(|(name, e)| ChildHandle {
                name: name.clone(),
                kind: e.spec.kind(),
                status: e.status,
                restarts: e.restarts,
                last_error: e.last_error.clone(),
                cell: e.cell.clone(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Spawns a child, first stopping a stale actor still registered under its name (one left
/// behind by a supervisor that failed before it could stop its children).
async fn spawn_fresh(spec: &dyn ChildSpec, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
    let name = spec.name();
    if let Some(stale) = ractor::registry::where_is(name.clone()) {
        stale.unlink(supervisor.clone());
        let _ = stale.stop_and_wait(Some("replaced".into()), Some(Duration::from_secs(5))).await;
    }
    // A stopped actor leaves the registry a moment after it stops.
    for _ in 0..200 {
        if ractor::registry::where_is(name.clone()).is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    spec.spawn(supervisor).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    struct Idle;
    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    struct IdleSpec(&'static str);
    impl ChildSpec for IdleSpec {
        fn name(&self) -> String {
            self.0.to_owned()
        }
        fn kind(&self) -> &'static str {
            "idle"
        }
        fn spawn(&self, _supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>> {
            let name = self.0.to_owned();
            Box::pin(async move { Ok(Actor::spawn(Some(name), Idle, ()).await?.0.get_cell()) })
        }
    }

    fn failed(children: &Children, name: &str) -> SupervisionEvent {
        let cell = children.handles().into_iter().find(|h| h.name == name).unwrap().cell.unwrap();
        SupervisionEvent::ActorFailed(cell, "boom".into())
    }

    #[tokio::test]
    async fn backoff_doubles_up_to_the_cap_then_escalates() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_failures_in_window: 4,
            window: Duration::from_secs(60),
        };
        let (parent, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        let mut children = Children::new(policy);
        children.start(Arc::new(IdleSpec("idle:backoff")), parent.get_cell()).await.unwrap();
        let mut delays = Vec::new();
        for _ in 0..4 {
            let event = failed(&children, "idle:backoff");
            match children.on_event(&event) {
                SupervisionAction::RestartAfter { name, delay } => {
                    assert_eq!(name, "idle:backoff");
                    delays.push(delay.as_millis());
                    assert_eq!(children.handles()[0].status, ChildStatus::Restarting);
                    if let SupervisionEvent::ActorFailed(cell, _) = event {
                        cell.stop_and_wait(None, None).await.unwrap();
                    }
                    assert_eq!(children.restart(&name, parent.get_cell()).await, None);
                }
                other => panic!("expected a restart, got {other:?}"),
            }
        }
        assert_eq!(delays, vec![10, 20, 40, 40]);
        let handle = &children.handles()[0];
        assert_eq!((handle.restarts, handle.status), (4, ChildStatus::Running));
        assert_eq!(handle.last_error.as_deref(), Some("boom"));
        let event = failed(&children, "idle:backoff");
        assert!(matches!(children.on_event(&event), SupervisionAction::Escalate(_)));
        children.stop_all();
    }

    #[tokio::test]
    async fn events_for_unknown_or_stopped_children_are_ignored() {
        let (parent, _) = Actor::spawn(None, Idle, ()).await.unwrap();
        let mut children = Children::new(RestartPolicy::default());
        children.start(Arc::new(IdleSpec("idle:stopped")), parent.get_cell()).await.unwrap();
        let event = failed(&children, "idle:stopped");
        children.stop("idle:stopped");
        assert_eq!(children.on_event(&event), SupervisionAction::None);
        assert!(children.is_empty());
    }
}
