//! `accounts`: supervises one `workspace:{id}` actor per workspace, and the `apikey:{id}`
//! actors of keys bound to no workspace.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use serde_json::json;

use crate::{
    directory::workspace::WorkspaceSpec,
    shared::Shared,
    tree::inspect::Inspection,
    tree::supervisor::{BoxFuture, ChildSpec, Children, SupervisionAction},
};

pub const NAME: &str = "accounts";

pub enum AccountsMsg {
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    StopChild(String),
    RestartChild(String),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

pub struct AccountsActor {
    shared: Arc<Shared>,
}

impl Actor for AccountsActor {
    type Msg = AccountsMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<AccountsMsg>, _: ()) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(self.shared.restart_policy);
        for ws in self.shared.store.workspaces.all()? {
            let spec = WorkspaceSpec {
                shared: self.shared.clone(),
                workspace_uuid: ws.id,
                account_id: ws.account_id,
                slug: ws.slug,
            };
            children.start(Arc::new(spec), me.get_cell()).await?;
        }
        for key in self.shared.unbound_keys() {
            children.start(self.shared.key_spec(key), me.get_cell()).await?;
        }
        Ok(children)
    }

    async fn post_stop(&self, _me: ActorRef<AccountsMsg>, children: &mut Children) -> Result<(), ActorProcessingErr> {
        children.stop_all();
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<AccountsMsg>,
        msg: AccountsMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AccountsMsg::StartChild(spec, reply) => {
                let _ = reply.send(children.start(spec, me.get_cell()).await.map_err(|e| e.to_string()));
            }
            AccountsMsg::StopChild(name) => children.stop(&name),
            AccountsMsg::RestartChild(name) => {
                if let Some(delay) = children.restart(&name, me.get_cell()).await {
                    me.send_after(delay, move || AccountsMsg::RestartChild(name));
                }
            }
            AccountsMsg::Inspect(reply) => {
                let _ = reply.send(Inspection {
                    snapshot: json!({
                        "accounts": self.shared.store.accounts.len(),
                        "workspaces": self.shared.workspaces.len(),
                        "api_keys": self.shared.keys_by_id.len(),
                    }),
                    children: children.handles(),
                });
            }
            AccountsMsg::InjectFailure(reason) => {
                children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<AccountsMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match children.on_event(&event) {
            SupervisionAction::None => {}
            SupervisionAction::RestartAfter { name, delay } => {
                me.send_after(delay, move || AccountsMsg::RestartChild(name));
            }
            SupervisionAction::Escalate(reason) => {
                children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }
}

pub struct AccountsSpec {
    pub shared: Arc<Shared>,
}

impl ChildSpec for AccountsSpec {
    fn name(&self) -> String {
        NAME.to_owned()
    }
    fn kind(&self) -> &'static str {
        "accounts"
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>> {
        let actor = AccountsActor { shared: self.shared.clone() };
        Box::pin(async move {
            let (actor_ref, _) = Actor::spawn_linked(Some(NAME.to_owned()), actor, (), supervisor).await?;
            Ok(actor_ref.get_cell())
        })
    }
}
