//! `providers` and `endpoints`: plain supervisors of a dynamic set of children. They start
//! with the children their loader lists and take more through `StartChild`.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent};
use serde_json::json;

use crate::{
    tree::inspect::Inspection,
    tree::supervisor::{BoxFuture, ChildSpec, Children, RestartPolicy, SupervisionAction},
};

pub const PROVIDERS: &str = "providers";
pub const ENDPOINTS: &str = "endpoints";

pub enum GroupMsg {
    StartChild(Arc<dyn ChildSpec>, RpcReplyPort<Result<(), String>>),
    StopChild(String),
    RestartChild(String),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

/// Lists the children a (re)started group begins with, from current state.
pub type Loader = Arc<dyn Fn() -> Vec<Arc<dyn ChildSpec>> + Send + Sync>;

pub struct GroupActor {
    policy: RestartPolicy,
    loader: Loader,
}

impl Actor for GroupActor {
    type Msg = GroupMsg;
    type State = Children;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<GroupMsg>, _: ()) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(self.policy);
        for spec in (self.loader)() {
            children.start(spec, me.get_cell()).await?;
        }
        Ok(children)
    }

    async fn post_stop(&self, _me: ActorRef<GroupMsg>, children: &mut Children) -> Result<(), ActorProcessingErr> {
        children.stop_all();
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<GroupMsg>,
        msg: GroupMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GroupMsg::StartChild(spec, reply) => {
                let _ = reply.send(children.start(spec, me.get_cell()).await.map_err(|e| e.to_string()));
            }
            GroupMsg::StopChild(name) => children.stop(&name),
            GroupMsg::RestartChild(name) => {
                if let Some(delay) = children.restart(&name, me.get_cell()).await {
                    me.send_after(delay, move || GroupMsg::RestartChild(name));
                }
            }
            GroupMsg::Inspect(reply) => {
                let _ = reply
                    .send(Inspection { snapshot: json!({ "children": children.len() }), children: children.handles() });
            }
            GroupMsg::InjectFailure(reason) => {
                children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<GroupMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        match children.on_event(&event) {
            SupervisionAction::None => {}
            SupervisionAction::RestartAfter { name, delay } => {
                me.send_after(delay, move || GroupMsg::RestartChild(name));
            }
            SupervisionAction::Escalate(reason) => {
                children.stop_all();
                return Err(reason.into());
            }
        }
        Ok(())
    }
}

pub struct GroupSpec {
    pub name: &'static str,
    pub policy: RestartPolicy,
    pub loader: Loader,
}

impl ChildSpec for GroupSpec {
    fn name(&self) -> String {
        self.name.to_owned()
    }
    fn kind(&self) -> &'static str {
        "group"
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ActorCell, SpawnErr>> {
        let actor = GroupActor { policy: self.policy, loader: self.loader.clone() };
        let name = self.name.to_owned();
        Box::pin(async move {
            let (actor_ref, _) = Actor::spawn_linked(Some(name), actor, (), supervisor).await?;
            Ok(actor_ref.get_cell())
        })
    }
}

/// Asks a group to start a child; a group that is restarting picks it up from its loader.
pub async fn start_child(group: &str, spec: Arc<dyn ChildSpec>) {
    let name = spec.name();
    let Some(actor) = ActorRef::<GroupMsg>::where_is(group) else { return };
    match actor.call(|r| GroupMsg::StartChild(spec, r), Some(std::time::Duration::from_secs(5))).await {
        Ok(ractor::rpc::CallResult::Success(Ok(()))) => {}
        Ok(ractor::rpc::CallResult::Success(Err(error))) => {
            tracing::warn!(child = %name, group, %error, "could not start child actor")
        }
        _ => tracing::warn!(child = %name, group, "group unavailable; the child starts when it restarts"),
    }
}

pub fn stop_child(group: &str, name: String) {
    if let Some(actor) = ActorRef::<GroupMsg>::where_is(group) {
        let _ = actor.cast(GroupMsg::StopChild(name));
    }
}
