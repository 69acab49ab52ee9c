//! `root`: the top of the tree. Supervises the long-lived subsystems: `ledger`, `accounts`,
//! `providers` and `endpoints`.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde_json::json;

use crate::{
    directory::accounts::AccountsSpec,
    money::ledger::LedgerSpec,
    shared::Shared,
    tree::group::{self, GroupSpec, Loader},
    tree::inspect::Inspection,
    tree::supervisor::{Children, SupervisionAction},
};

pub const NAME: &str = "root";

pub enum RootMsg {
    RestartChild(String),
    Inspect(RpcReplyPort<Inspection>),
}

pub struct RootActor {
    pub(crate) shared: Arc<Shared>,
    pub(crate) started_at_ms: i64,
}

impl Actor for RootActor {
    type Msg = RootMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<RootMsg>, _: ()) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(self.shared.restart_policy);
        let policy = self.shared.restart_policy;
        children.start(Arc::new(LedgerSpec { store: self.shared.store.clone() }), me.get_cell()).await?;
        children.start(Arc::new(AccountsSpec { shared: self.shared.clone() }), me.get_cell()).await?;
        let shared = self.shared.clone();
        let providers: Loader = Arc::new(move || shared.upstream_specs(false));
        children
            .start(Arc::new(GroupSpec { name: group::PROVIDERS, policy, loader: providers }), me.get_cell())
            .await?;
        let shared = self.shared.clone();
        let endpoints: Loader = Arc::new(move || shared.upstream_specs(true));
        children
            .start(Arc::new(GroupSpec { name: group::ENDPOINTS, policy, loader: endpoints }), me.get_cell())
            .await?;
        Ok(children)
    }

    async fn post_stop(&self, _me: ActorRef<RootMsg>, children: &mut Children) -> Result<(), ActorProcessingErr> {
        children.stop_all();
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<RootMsg>,
        msg: RootMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::RestartChild(name) => {
                if let Some(delay) = children.restart(&name, me.get_cell()).await {
                    me.send_after(delay, move || RootMsg::RestartChild(name));
                }
            }
            RootMsg::Inspect(reply) => {
                let _ = reply.send(Inspection {
                    snapshot: json!({ "started_at": crate::clock::iso8601(self.started_at_ms) }),
                    children: children.handles(),
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<RootMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        // The root has no parent to escalate to: it keeps restarting with capped backoff.
        match children.on_event(&event) {
            SupervisionAction::RestartAfter { name, delay } => {
                me.send_after(delay, move || RootMsg::RestartChild(name));
            }
            SupervisionAction::Escalate(reason) => {
                tracing::error!(%reason, "subsystem keeps failing; still restarting it");
                if let Some(cell) = event.actor_cell() {
                    if let Some(name) = cell.get_name() {
                        let delay = self.shared.restart_policy.max_backoff;
                        me.send_after(delay, move || RootMsg::RestartChild(name));
                    }
                }
            }
            SupervisionAction::None => {}
        }
        Ok(())
    }
}
