//! `workspace:{id}`: one per workspace. Holds the workspace's live status and budget and
//! supervises the `apikey:{id}` actors of the keys bound to it.

use std::sync::{atomic::Ordering, Arc};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use serde_json::json;
use tokaroo_storage::records::Workspace;

use crate::{
    shared::Shared,
    tree::inspect::Inspection,
    tree::supervisor::{BoxFuture, ChildSpec, Children, SupervisionAction},
};

pub enum WorkspaceMsg {
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    StopChild(String),
    RestartChild(String),
    Updated(Box<Workspace>),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

pub fn actor_name(workspace_uuid: &str) -> String {
    format!("workspace:{workspace_uuid}")
}

pub struct WorkspaceState {
    record: Workspace,
    children: Children,
}

pub struct WorkspaceActor {
    shared: Arc<Shared>,
    account_id: String,
    slug: String,
}

impl Actor for WorkspaceActor {
    type Msg = WorkspaceMsg;
    type State = WorkspaceState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<WorkspaceMsg>, _: ()) -> Result<WorkspaceState, ActorProcessingErr> {
        let record = self
            .shared
            .store
            .workspaces
            .get(&(self.account_id.as_str(), self.slug.as_str()))?
            .ok_or_else(|| format!("workspace {} is not in storage", self.slug))?;
        let mut children = Children::new(self.shared.restart_policy);
        for key in self.shared.keys_in_workspace(&self.account_id, Some(&self.slug)) {
            children.start(self.shared.key_spec(key), me.get_cell()).await?;
        }
        Ok(WorkspaceState { record, children })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<WorkspaceMsg>,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        state.children.stop_all();
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<WorkspaceMsg>,
        msg: WorkspaceMsg,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkspaceMsg::StartChild(spec, reply) => {
                let result = state.children.start(spec, me.get_cell()).await.map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            WorkspaceMsg::StopChild(name) => state.children.stop(&name),
            WorkspaceMsg::RestartChild(name) => {
                if let Some(delay) = state.children.restart(&name, me.get_cell()).await {
                    me.send_after(delay, move || WorkspaceMsg::RestartChild(name));
                }
            }
            WorkspaceMsg::Updated(record) => state.record = *record,
            WorkspaceMsg::Inspect(reply) => {
                let r = &state.record;
                let live = self.shared.workspace_entry(&r.account_id, &r.slug);
                let _ = reply.send(Inspection {
                    snapshot: json!({
                        "workspace_id": r.slug,
                        "account_id": r.account_id,
                        "name": r.name,
                        "status": r.status,
                        "monthly_budget_usd": r.monthly_budget_usd,
                        "active": live.map(|w| w.active.load(Ordering::Relaxed)),
                        "api_keys": state.children.len(),
                    }),
                    children: state.children.handles(),
                });
            }
            WorkspaceMsg::InjectFailure(reason) => {
                // ractor skips post_stop on failure, so children are stopped here.
                state.children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<WorkspaceMsg>,
        event: SupervisionEvent,
        state: &mut WorkspaceState,
    ) -> Result<(), ActorProcessingErr> {
        match state.children.on_event(&event) {
            SupervisionAction::None => {}
            SupervisionAction::RestartAfter { name, delay } => {
                me.send_after(delay, move || WorkspaceMsg::RestartChild(name));
            }
            SupervisionAction::Escalate(reason) => {
                state.children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }
}

pub struct WorkspaceSpec {
    pub shared: Arc<Shared>,
    pub workspace_uuid: String,
    pub account_id: String,
    pub slug: String,
}

impl ChildSpec for WorkspaceSpec {
    fn name(&self) -> String {
        actor_name(&self.workspace_uuid)
    }
    fn kind(&self) -> &'static str {
        "workspace"
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>> {
        let actor = WorkspaceActor {
            shared: self.shared.clone(),
            account_id: self.account_id.clone(),
            slug: self.slug.clone(),
        };
        let name = self.name();
        Box::pin(async move {
            let (actor_ref, _) = Actor::spawn_linked(Some(name), actor, (), supervisor).await?;
            Ok(actor_ref.get_cell())
        })
    }
}
