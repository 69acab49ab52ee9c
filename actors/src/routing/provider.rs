//! `provider:{provider}:{connection}` and `endpoint:{id}`: one actor per upstream connection.
//! It owns the connection's live health (circuit breaker, cooldown, latency EWMA, last
//! success/failure) — the router reads it through the shared [`Health`] without a round
//! trip — and for self-hosted endpoints it rechecks reachability and models on a schedule.

use std::{sync::Arc, time::Duration};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

use crate::{
    routing::health::HealthSnapshot,
    routing::providers::openai,
    routing::upstreams::{Owner, Upstream},
    tree::inspect::Inspection,
    tree::registry::{ChildRef, TreeMsg},
    tree::supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, SupervisorSpec},
};

/// The supervisors of provider connections and of self-hosted endpoints.
pub const PROVIDERS: &str = "providers";
pub const ENDPOINTS: &str = "endpoints";

/// The `providers` (or, with `endpoints`, the `endpoints`) supervisor: one child per
/// connection of that owner class, reloaded from the live upstream set when it restarts.
pub fn group_spec(shared: &Arc<crate::shared::Shared>, endpoints: bool) -> SupervisorSpec {
    let loader_shared = shared.clone();
    SupervisorSpec {
        name: if endpoints { ENDPOINTS } else { PROVIDERS }.to_owned(),
        kind: if endpoints { ENDPOINTS } else { PROVIDERS },
        restart: Restart::Permanent,
        policy: shared.restart_policy,
        registry: shared.registry.clone(),
        escalates: true,
        loader: Arc::new(move || loader_shared.upstream_specs(endpoints)),
        describe: Arc::new(|children| json!({ "children": children.len() })),
    }
}

pub enum UpstreamMsg {
    /// Self-hosted endpoints: check reachability and discover models now.
    Recheck(Option<RpcReplyPort<HealthSnapshot>>),
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for UpstreamMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub struct UpstreamActor {
    upstream: Arc<Upstream>,
    recheck_every: Option<Duration>,
}

pub struct UpstreamState {
    checks: u64,
}

/// Checks a self-hosted endpoint and records the result on its health and model list.
pub async fn check_endpoint(upstream: &Upstream) -> HealthSnapshot {
    match openai::discover_models(&upstream.conn).await {
        Ok(models) => {
            if let Ok(mut list) = upstream.local_models.write() {
                *list = models;
            }
            upstream.health.set_reachable(true);
        }
        Err(error) => {
            tracing::info!(endpoint = %upstream.name, %error, "self-hosted endpoint unreachable");
            upstream.health.set_reachable(false);
            upstream.health.record_failure(error.code(), None);
        }
    }
    upstream.health.snapshot()
}

impl Actor for UpstreamActor {
    type Msg = UpstreamMsg;
    type State = UpstreamState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<UpstreamMsg>, _: ()) -> Result<UpstreamState, ActorProcessingErr> {
        if let Some(every) = self.recheck_every {
            me.send_interval(every, || UpstreamMsg::Recheck(None));
        }
        Ok(UpstreamState { checks: 0 })
    }

    async fn handle(
        &self,
        _me: ActorRef<UpstreamMsg>,
        msg: UpstreamMsg,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            UpstreamMsg::Recheck(reply) => {
                let snapshot = check_endpoint(&self.upstream).await;
                state.checks += 1;
                if let Some(reply) = reply {
                    let _ = reply.send(snapshot);
                }
            }
            UpstreamMsg::Inspect(reply) => {
                let u = &self.upstream;
                let models = u.local_models.read().map(|m| m.clone()).unwrap_or_default();
                let _ = reply.send(Inspection::leaf(json!({
                    "provider": u.kind.as_str(),
                    "owner": u.owner,
                    "base_url": u.conn.base_url,
                    "health": u.health.snapshot(),
                    // Breakers of models that failed here on their own (a model the account
                    // lacks): cooling one leaves the connection's other models routable.
                    "model_health": u.model_health(),
                    "models": if matches!(u.owner, Owner::Local { .. }) { Some(models) } else { None },
                    "checks": state.checks,
                })));
            }
            UpstreamMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct UpstreamSpec {
    pub upstream: Arc<Upstream>,
    pub recheck_every: Option<Duration>,
}

impl ChildSpec for UpstreamSpec {
    fn name(&self) -> String {
        self.upstream.name.clone()
    }
    fn kind(&self) -> &'static str {
        if matches!(self.upstream.owner, Owner::Local { .. }) {
            "endpoint"
        } else {
            "provider"
        }
    }
    fn spawn(&self, supervisor: ActorCell) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor = UpstreamActor { upstream: self.upstream.clone(), recheck_every: self.recheck_every };
        Box::pin(spawn_linked(actor, (), supervisor))
    }
}
