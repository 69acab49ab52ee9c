//! The operator's view of the live actor tree: every actor answers `Inspect` with an
//! [`Inspection`]; [`walk`] turns those into a serializable [`ActorNode`] tree.

use serde::Serialize;
use serde_json::Value;

use crate::tree::supervisor::ChildHandle;

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

/// Walks the tree below `handle`, depth first.
pub(crate) fn walk(handle: ChildHandle) -> crate::tree::supervisor::BoxFuture<ActorNode> {
    Box::pin(async move {
        let inspection = match &handle.child {
            Some(child) => child.inspect().await,
            None => None,
        };
        let status = match (&handle.child, &inspection) {
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
