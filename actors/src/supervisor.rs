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
    spec.spawn(supervisor).await
}
