//! `apikey:{id}`: one per live API key. Owns the key's rate limiter; every runtime request is
//! admitted through it.

use std::{
    num::NonZeroU32,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use governor::{
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::{InMemoryState, NotKeyed},
    Quota, RateLimiter,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::json;
use tokaroo_storage::Store;

use crate::tree::{
    inspect::Inspection,
    registry::{ChildRef, TreeMsg},
    supervisor::{spawn_linked, BoxFuture, ChildSpec, SpawnAt},
};

/// The in-memory view of a key used by authentication; shared by the index and the actor.
pub struct KeyEntry {
    pub id: String,
    pub account_id: String,
    pub workspace_slug: Option<String>,
    /// `apikey:{id}`, precomputed so the hot path does not format it.
    pub actor_name: String,
    pub last_used_ms: AtomicI64,
}

impl KeyEntry {
    pub fn last_used_ms(&self) -> Option<i64> {
        match self.last_used_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted { limit: u32, remaining: u32 },
    Limited { limit: u32, retry_after: Duration },
}

pub enum ApiKeyMsg {
    Admit(RpcReplyPort<Admission>),
    SetRateLimit(u32),
    Inspect(RpcReplyPort<Inspection>),
    /// Test-only fault injection: the handler fails, as a bug would.
    InjectFailure(String),
}

impl TreeMsg for ApiKeyMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub fn actor_name(key_id: &str) -> String {
    format!("apikey:{key_id}")
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

pub struct ApiKeyState {
    entry: Arc<KeyEntry>,
    limit_rpm: u32,
    limiter: Limiter,
    admitted: u64,
    rejected: u64,
}

fn limiter(rpm: u32) -> Limiter {
    let rpm = NonZeroU32::new(rpm.max(1)).expect("max(1) is non-zero");
    RateLimiter::direct(Quota::per_minute(rpm)).with_middleware::<StateInformationMiddleware>()
}

pub struct ApiKeyActor {
    store: Store,
    default_rpm: u32,
}

impl Actor for ApiKeyActor {
    type Msg = ApiKeyMsg;
    type State = ApiKeyState;
    type Arguments = Arc<KeyEntry>;

    async fn pre_start(
        &self,
        _me: ActorRef<ApiKeyMsg>,
        entry: Arc<KeyEntry>,
    ) -> Result<ApiKeyState, ActorProcessingErr> {
        // Rebuild from storage: the limit may have changed since the entry was made.
        let record = self
            .store
            .api_keys
            .get(&(entry.account_id.as_str(), entry.id.as_str()))?
            .ok_or_else(|| format!("api key {} is not in storage", entry.id))?;
        let limit_rpm = record.rate_limit_rpm.unwrap_or(self.default_rpm);
        Ok(ApiKeyState { entry, limit_rpm, limiter: limiter(limit_rpm), admitted: 0, rejected: 0 })
    }

    async fn handle(
        &self,
        _me: ActorRef<ApiKeyMsg>,
        msg: ApiKeyMsg,
        state: &mut ApiKeyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiKeyMsg::Admit(reply) => {
                let admission = match state.limiter.check() {
                    Ok(snapshot) => {
                        state.admitted += 1;
                        state.entry.last_used_ms.store(crate::clock::now_ms(), Ordering::Relaxed);
                        Admission::Admitted { limit: state.limit_rpm, remaining: snapshot.remaining_burst_capacity() }
                    }
                    Err(not_until) => {
                        state.rejected += 1;
                        let wait = not_until.wait_time_from(DefaultClock::default().now());
                        Admission::Limited { limit: state.limit_rpm, retry_after: wait }
                    }
                };
                let _ = reply.send(admission);
            }
            ApiKeyMsg::SetRateLimit(rpm) => {
                state.limit_rpm = rpm;
                state.limiter = limiter(rpm);
            }
            ApiKeyMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "key_id": state.entry.id,
                    "account_id": state.entry.account_id,
                    "workspace_id": state.entry.workspace_slug,
                    "rate_limit_rpm": state.limit_rpm,
                    "admitted": state.admitted,
                    "rate_limited": state.rejected,
                    "last_used_at": state.entry.last_used_ms().map(crate::clock::iso8601),
                })));
            }
            ApiKeyMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct ApiKeySpec {
    pub entry: Arc<KeyEntry>,
    pub store: Store,
    pub default_rpm: u32,
}

impl ChildSpec for ApiKeySpec {
    fn name(&self) -> String {
        self.entry.actor_name.clone()
    }
    fn kind(&self) -> &'static str {
        "apikey"
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor = ApiKeyActor { store: self.store.clone(), default_rpm: self.default_rpm };
        Box::pin(spawn_linked(actor, self.entry.clone(), at))
    }
}
