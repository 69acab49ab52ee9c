//! Actor names scoped to one engine. Actors are spawned without a ractor name (ractor's
//! registry is process-wide) and found here by their `kind:id`, so two engines can live in
//! one process without seeing each other's actors.

use std::sync::Arc;

use dashmap::DashMap;
use ractor::{ActorCell, ActorRef, RpcReplyPort};

use crate::tree::inspect::Inspection;

/// What every actor in the tree answers: `Inspect` for the operator's tree and a test-only
/// failure for exercising supervision. Implemented by each actor's message enum, so the hooks
/// a supervisor holds are typed by the actor that was spawned, never chosen by its name.
pub trait TreeMsg: ractor::Message {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self;
    fn inject_failure(reason: String) -> Self;
}

/// A live child: its cell plus the typed hooks made when it was spawned.
#[derive(Clone)]
pub struct ChildRef {
    cell: ActorCell,
    inspect: fn(ActorCell) -> crate::tree::supervisor::BoxFuture<Option<Inspection>>,
    inject_failure: fn(&ActorCell, String) -> bool,
}

const INSPECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl ChildRef {
    pub fn of<M: TreeMsg>(actor: &ActorRef<M>) -> Self {
        fn inspect<M: TreeMsg>(cell: ActorCell) -> crate::tree::supervisor::BoxFuture<Option<Inspection>> {
            Box::pin(async move {
                let actor: ActorRef<M> = cell.into();
                match actor.call(M::inspect, Some(INSPECT_TIMEOUT)).await {
                    Ok(ractor::rpc::CallResult::Success(inspection)) => Some(inspection),
                    _ => None,
                }
            })
        }
        fn inject_failure<M: TreeMsg>(cell: &ActorCell, reason: String) -> bool {
            let actor: ActorRef<M> = cell.clone().into();
            actor.cast(M::inject_failure(reason)).is_ok()
        }
        Self { cell: actor.get_cell(), inspect: inspect::<M>, inject_failure: inject_failure::<M> }
    }

    pub fn cell(&self) -> &ActorCell {
        &self.cell
    }

    pub async fn inspect(&self) -> Option<Inspection> {
        (self.inspect)(self.cell.clone()).await
    }

    pub fn inject_failure(&self, reason: String) -> bool {
        (self.inject_failure)(&self.cell, reason)
    }

    /// The typed handle, if this child's messages are `M` (a wrong guess is `None`, not a
    /// message the actor cannot read).
    pub fn actor<M: TreeMsg>(&self) -> Option<ActorRef<M>> {
        (self.cell.get_type_id() == std::any::TypeId::of::<M>()).then(|| self.cell.clone().into())
    }

    fn is_alive(&self) -> bool {
        matches!(
            self.cell.get_status(),
            ractor::ActorStatus::Starting | ractor::ActorStatus::Running | ractor::ActorStatus::Upgrading
        )
    }
}

/// One engine's names. Cloning shares it.
#[derive(Clone, Default)]
pub struct Registry(Arc<DashMap<String, ChildRef>>);

impl Registry {
    pub fn get(&self, name: &str) -> Option<ChildRef> {
        self.0.get(name).map(|e| e.value().clone())
    }

    pub fn actor<M: TreeMsg>(&self, name: &str) -> Option<ActorRef<M>> {
        self.0.get(name).and_then(|e| e.value().actor::<M>())
    }

    /// The actor named `name`, waiting up to `within` for it to be back if it is
    /// restarting; `None` if it is not back by then.
    pub async fn wait_for<M: TreeMsg>(&self, name: &str, within: std::time::Duration) -> Option<ActorRef<M>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(actor) = self.actor::<M>(name) {
                return Some(actor);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn register(&self, name: String, child: ChildRef) {
        self.0.insert(name, child);
    }

    /// Forgets `name` only while it still points at `cell` (a successor may have taken it).
    pub(crate) fn unregister(&self, name: &str, cell: &ActorCell) {
        self.0.remove_if(name, |_, child| child.cell.get_id() == cell.get_id());
    }

    /// A still-running actor under `name`: one left behind by a supervisor that failed
    /// before it could stop its children.
    pub(crate) fn live(&self, name: &str) -> Option<ChildRef> {
        self.get(name).filter(ChildRef::is_alive)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
