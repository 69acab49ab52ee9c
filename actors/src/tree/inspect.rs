//! The operator's view of the live actor tree: every actor answers `Inspect` with an
//! [`Inspection`]; [`walk`] turns those into a serializable [`ActorNode`] tree.

use std::time::Duration;

use ractor::{ActorCell, ActorRef, RpcReplyPort};
use serde::Serialize;
use serde_json::Value;

use crate::{
    directory::accounts::AccountsMsg, directory::apikey::ApiKeyMsg, directory::workspace::WorkspaceMsg,
    money::ledger::LedgerMsg, routing::provider::UpstreamMsg, tree::group::GroupMsg, tree::root::RootMsg,
    tree::supervisor::ChildHandle,
};

/// An actor's answer to `Inspect`: its own serializable snapshot plus, for supervisors, what
/// they know about their children (the walk continues into those).
pub struct Inspection {
    pub snapshot: Value,
    pub children: Vec<ChildHandle>,
}

impl Inspection {
    pub fn leaf(snapshot: Value) -> Self {
        Self { snapshot, children: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorNode {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub restarts: u32,
    pub last_error: Option<String>,
    pub snapshot: Value,
    pub children: Vec<ActorNode>,
}

const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks one actor of a known kind for its inspection. The kind picks the message type.
pub(crate) async fn inspect_cell(kind: &str, cell: &ActorCell) -> Option<Inspection> {
    async fn ask<M: ractor::Message>(cell: &ActorCell, build: fn(RpcReplyPort<Inspection>) -> M) -> Option<Inspection> {
        let actor: ActorRef<M> = cell.clone().into();
        match actor.call(build, Some(INSPECT_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(inspection)) => Some(inspection),
            _ => None,
        }
    }
    match kind {
        "root" => ask(cell, RootMsg::Inspect).await,
        "accounts" => ask(cell, AccountsMsg::Inspect).await,
        "workspace" => ask(cell, WorkspaceMsg::Inspect).await,
        "apikey" => ask(cell, ApiKeyMsg::Inspect).await,
        "group" => ask(cell, GroupMsg::Inspect).await,
        "ledger" => ask(cell, LedgerMsg::Inspect).await,
        "provider" | "endpoint" => ask(cell, UpstreamMsg::Inspect).await,
        _ => None,
    }
}

/// Sends a test-only failure to a live actor of a known kind.
pub(crate) fn inject_failure(kind: &str, cell: &ActorCell, reason: String) -> bool {
    fn send<M: ractor::Message>(cell: &ActorCell, msg: M) -> bool {
        let actor: ActorRef<M> = cell.clone().into();
        actor.cast(msg).is_ok()
    }
    match kind {
        "accounts" => send(cell, AccountsMsg::InjectFailure(reason)),
        "workspace" => send(cell, WorkspaceMsg::InjectFailure(reason)),
        "apikey" => send(cell, ApiKeyMsg::InjectFailure(reason)),
        "providers" | "endpoints" => send(cell, GroupMsg::InjectFailure(reason)),
        "ledger" => send(cell, LedgerMsg::InjectFailure(reason)),
        "provider" | "endpoint" => send(cell, UpstreamMsg::InjectFailure(reason)),
        _ => false,
    }
}

/// Walks the tree below `handle`, depth first.
pub(crate) fn walk(handle: ChildHandle) -> crate::tree::supervisor::BoxFuture<ActorNode> {
    Box::pin(async move {
        let inspection = match &handle.cell {
            Some(cell) => inspect_cell(handle.kind, cell).await,
            None => None,
        };
        let status = match (&handle.cell, &inspection) {
            (None, _) => {
                serde_json::to_value(handle.status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
            }
            (Some(_), Some(_)) => "running".to_owned(),
            (Some(_), None) => "unresponsive".to_owned(),
        };
        let (snapshot, children) = match inspection {
            Some(i) => (i.snapshot, i.children),
            None => (Value::Null, Vec::new()),
        };
        let mut nodes = Vec::with_capacity(children.len());
        for child in children {
            nodes.push(walk(child).await);
        }
        ActorNode {
            name: handle.name,
            kind: handle.kind.to_owned(),
            status,
            restarts: handle.restarts,
            last_error: handle.last_error,
            snapshot,
            children: nodes,
        }
    })
}
