//! `provider:{provider}:{connection}` and `endpoint:{id}`: one actor per upstream connection.
//! It owns the connection's breakers (circuit, cooldown, latency EWMA, last success/failure):
//! requests report what happened ([`record_success`], [`record_failure`]) and the actor
//! publishes the result on the upstream's [`HealthView`]s, which the router reads on every
//! request without a lock or a round trip. A self-hosted endpoint also has a `recheck:{id}`
//! task beside it that checks reachability and models on a schedule, so a slow probe never
//! holds up the failure reports requests wait for.
//!
//! [`HealthView`]: crate::routing::health::HealthView

use std::{sync::Arc, time::Duration};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;

use crate::{
    routing::health::{Blame, Breakers, HealthEvent, HealthSnapshot},
    routing::providers::openai,
    routing::upstreams::{Owner, Upstream, Upstreams},
    tree::inspect::Inspection,
    tree::registry::{ChildRef, Registry, TreeMsg},
    tree::supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, RestartPolicy, SpawnAt, SupervisorSpec},
    tree::task::{Job, TaskSpec},
};

/// The supervisors of provider connections and of self-hosted endpoints.
pub const PROVIDERS: &str = "providers";
pub const ENDPOINTS: &str = "endpoints";

/// The `providers` (or, with `endpoints`, the `endpoints`) supervisor: one child per
/// connection of that owner class, reloaded from the live upstream set when it restarts.
pub fn group_spec(
    endpoints: bool,
    upstreams: Arc<Upstreams>,
    recheck_every: Duration,
    policy: RestartPolicy,
    registry: Registry,
) -> SupervisorSpec {
    SupervisorSpec {
        name: if endpoints { ENDPOINTS } else { PROVIDERS }.to_owned(),
        kind: if endpoints { ENDPOINTS } else { PROVIDERS },
        restart: Restart::Permanent,
        policy,
        registry,
        escalates: true,
        loader: Arc::new(move || {
            let of_group = upstreams.all().into_iter().filter(|u| matches!(u.owner, Owner::Local { .. }) == endpoints);
            of_group.flat_map(|u| upstream_specs(u, recheck_every)).collect()
        }),
        describe: Arc::new(|children| json!({ "children": children.len() })),
    }
}

/// The children of one upstream connection: its actor and, for a self-hosted endpoint, the
/// task that rechecks it every `endpoint_recheck`.
pub fn upstream_specs(upstream: Arc<Upstream>, endpoint_recheck: Duration) -> Vec<Arc<dyn ChildSpec>> {
    let mut specs: Vec<Arc<dyn ChildSpec>> = vec![Arc::new(UpstreamSpec { upstream: upstream.clone() })];
    if matches!(upstream.owner, Owner::Local { .. }) {
        let name = recheck_name(&upstream.name);
        let job: Job = Arc::new(move || {
            let upstream = upstream.clone();
            Box::pin(async move {
                let event = probe(&upstream).await;
                report_published(&upstream, event).await;
                Ok(())
            })
        });
        let every = TaskSpec::every(name, endpoint_recheck, job);
        specs.push(Arc::new(TaskSpec { kind: "recheck", ..every }));
    }
    specs
}

/// The recheck task of the upstream named `upstream_name`.
pub fn recheck_name(upstream_name: &str) -> String {
    format!("recheck:{}", upstream_name.strip_prefix("endpoint:").unwrap_or(upstream_name))
}

pub enum UpstreamMsg {
    /// What a request saw; with a reply port, answered once published.
    Health(HealthEvent, Option<RpcReplyPort<()>>),
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
}

pub struct UpstreamState {
    checks: u64,
    breakers: Breakers,
}

/// How long a failing request waits for its failure to be published (so the next request
/// routes around an opened breaker) before going on without.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// A served call of `model`; `latency` is `None` for a request too large to be typical.
/// Not awaited: a success only closes breakers and moves the latency EWMA.
pub fn record_success(upstream: &Upstream, model: &str, latency: Option<Duration>) {
    report(upstream, HealthEvent::Served { model: model.to_owned(), latency });
}

/// A failed call of `model`, counted by the breaker `blame` names; returns once published.
pub async fn record_failure(
    upstream: &Upstream,
    model: &str,
    blame: Blame,
    code: String,
    retry_after: Option<Duration>,
) {
    report_published(upstream, HealthEvent::Failed { model: model.to_owned(), blame, code, retry_after }).await;
}

/// Checks a self-hosted endpoint now: its model list, and its reachability as published.
pub async fn check_endpoint(upstream: &Upstream) -> HealthSnapshot {
    let event = probe(upstream).await;
    report_published(upstream, event).await;
    upstream.health.snapshot()
}

/// Asks the endpoint for its models; records the list, returns the health event.
async fn probe(upstream: &Upstream) -> HealthEvent {
    match openai::discover_models(&upstream.conn).await {
        Ok(models) => {
            if let Ok(mut list) = upstream.local_models.write() {
                *list = models;
            }
            HealthEvent::Checked { unreachable_code: None }
        }
        Err(error) => {
            tracing::info!(endpoint = %upstream.name, %error, "self-hosted endpoint unreachable");
            HealthEvent::Checked { unreachable_code: Some(error.code()) }
        }
    }
}

/// The connection's actor, while one runs.
fn actor_of(upstream: &Upstream) -> Option<ActorRef<UpstreamMsg>> {
    let slot = upstream.actor.read().unwrap_or_else(|p| p.into_inner());
    // A starting actor counts: what is sent to it waits in its mailbox until it runs.
    let alive = |cell: &&ractor::ActorCell| {
        matches!(cell.get_status(), ractor::ActorStatus::Starting | ractor::ActorStatus::Running)
    };
    slot.as_ref().filter(alive).map(|cell| cell.clone().into())
}

fn report(upstream: &Upstream, event: HealthEvent) {
    match actor_of(upstream) {
        Some(actor) => {
            if let Err(ractor::MessagingErr::SendErr(UpstreamMsg::Health(event, _))) =
                actor.cast(UpstreamMsg::Health(event, None))
            {
                apply_unowned(upstream, event);
            }
        }
        None => apply_unowned(upstream, event),
    }
}

async fn report_published(upstream: &Upstream, event: HealthEvent) {
    let Some(actor) = actor_of(upstream) else { return apply_unowned(upstream, event) };
    let sent = event.clone();
    match actor.call(|reply| UpstreamMsg::Health(sent, Some(reply)), Some(REPORT_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(())) => {}
        // Not delivered, or the actor stopped with it still queued: nobody else writes, so
        // publish it here.
        Err(_) | Ok(ractor::rpc::CallResult::SenderError) => apply_unowned(upstream, event),
        // Queued behind a busy actor: it publishes it when it gets there.
        Ok(ractor::rpc::CallResult::Timeout) => {}
    }
}

/// With no actor (before it starts, or while it restarts) the event is applied to what was
/// last published, under `unowned_writes`, which an actor taking over also holds while it
/// resumes: a write is either seen by the actor or handed to it, never overwritten.
fn apply_unowned(upstream: &Upstream, event: HealthEvent) {
    let _writes = upstream.unowned_writes.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(actor) = actor_of(upstream) {
        if actor.cast(UpstreamMsg::Health(event.clone(), None)).is_ok() {
            return;
        }
    }
    let mut breakers = upstream.resume_breakers();
    let changed = breakers.apply(event);
    upstream.publish(&breakers, changed.as_deref());
}

impl Actor for UpstreamActor {
    type Msg = UpstreamMsg;
    type State = UpstreamState;
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<UpstreamMsg>, _: ()) -> Result<UpstreamState, ActorProcessingErr> {
        let _writes = self.upstream.unowned_writes.lock().unwrap_or_else(|p| p.into_inner());
        let breakers = self.upstream.resume_breakers();
        *self.upstream.actor.write().unwrap_or_else(|p| p.into_inner()) = Some(me.get_cell());
        Ok(UpstreamState { checks: 0, breakers })
    }

    async fn post_stop(&self, me: ActorRef<UpstreamMsg>, _: &mut UpstreamState) -> Result<(), ActorProcessingErr> {
        let mut slot = self.upstream.actor.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|cell| cell.get_id() == me.get_id()) {
            *slot = None;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<UpstreamMsg>,
        msg: UpstreamMsg,
        state: &mut UpstreamState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            UpstreamMsg::Health(event, reply) => {
                state.checks += u64::from(matches!(event, HealthEvent::Checked { .. }));
                let changed = state.breakers.apply(event);
                self.upstream.publish(&state.breakers, changed.as_deref());
                if let Some(reply) = reply {
                    let _ = reply.send(());
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
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor = UpstreamActor { upstream: self.upstream.clone() };
        Box::pin(spawn_linked(actor, (), at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn owned(upstream: &Arc<Upstream>) -> ActorRef<UpstreamMsg> {
        let actor = UpstreamActor { upstream: upstream.clone() };
        Actor::spawn(None, actor, ()).await.unwrap().0
    }

    #[tokio::test]
    async fn failures_land_on_the_breaker_they_belong_to_through_the_connections_actor() {
        let u = Arc::new(crate::routing::upstreams::tests::upstream());
        let actor = owned(&u).await;
        for _ in 0..5 {
            record_failure(&u, "gpt-4o-mini", Blame::Model, "404".into(), None).await;
            record_failure(&u, "gpt-4o", Blame::Request, "timeout".into(), None).await;
        }
        // Published by the time each report returned: the next request routes around it.
        assert!(!u.usable_for("gpt-4o-mini"), "the missing model cools down");
        assert!(u.usable_for("gpt-4o"), "the other models stay usable");
        assert_eq!(u.health.snapshot().status, "healthy");
        assert_eq!(u.health.snapshot().last_failure_code.as_deref(), Some("timeout"));
        assert_eq!(u.model_health().keys().collect::<Vec<_>>(), ["gpt-4o-mini"]);

        record_success(&u, "gpt-4o-mini", Some(Duration::from_millis(10)));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !u.usable_for("gpt-4o-mini") {
            assert!(std::time::Instant::now() < deadline, "a success closes the model's breaker");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        for _ in 0..2 {
            record_failure(&u, "gpt-4o", Blame::Connection, "500".into(), None).await;
        }
        // A restarted actor resumes from what was published: the third failure still opens.
        actor.stop_and_wait(None, None).await.unwrap();
        assert!(u.actor.read().unwrap().is_none(), "a stopped actor leaves its slot");
        let actor = owned(&u).await;
        record_failure(&u, "gpt-4o", Blame::Connection, "500".into(), None).await;
        assert!(!u.usable_for("gpt-4o") && !u.usable_for("gpt-4o-mini"), "a connection's failures cool it all");
        let inspected = match actor.call(UpstreamMsg::Inspect, None).await.unwrap() {
            ractor::rpc::CallResult::Success(i) => i.snapshot,
            _ => panic!("no inspection"),
        };
        assert_eq!(inspected["health"]["status"], "cooling_down");
        actor.stop(None);
    }

    #[tokio::test]
    async fn with_no_actor_a_report_is_still_published() {
        let u = crate::routing::upstreams::tests::upstream();
        for _ in 0..3 {
            record_failure(&u, "gpt-4o", Blame::Connection, "500".into(), None).await;
        }
        assert!(!u.usable_for("gpt-4o"), "reports while the actor restarts are not lost");
    }
}
