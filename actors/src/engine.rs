//! [`Engine`]: what the HTTP layer holds. Starts and stops the services and the actor tree.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokaroo_storage::Store;

use crate::{
    config::EngineConfig,
    directory::state::{DirectoryState, SessionEntry, WorkspaceEntry},
    directory::{apikey::KeyEntry, Directory, OPERATOR_ACCOUNT_META},
    embed::{actor::EmbedderSpec, Embedder},
    error::EngineError,
    money::funding::Funding,
    routing::connections::Connections,
    routing::connections::ConnectionsState,
    routing::provider::group_spec,
    routing::router::Router,
    routing::upstreams::Upstreams,
    runtime::Runtime,
    security::tokens::decode_hash,
    tree::inspect::{self, ActorNode},
    tree::registry::{ChildRef, Registry},
    tree::supervisor::{ChildHandle, ChildSpec, ChildStatus, Restart, SupervisorSpec},
    tree::task::TaskSpec,
};

/// The handle every HTTP route holds: the engine's lifecycle (start, shutdown, the actor
/// tree) and its services, each taken by the routes of its area. Cloned for each request, so
/// it is one `Arc`.
#[derive(Clone)]
pub struct Engine(Arc<EngineParts>);

struct EngineParts {
    store: Store,
    registry: Registry,
    /// Keys' use times are written from it at shutdown.
    directory_state: Arc<DirectoryState>,
    config: Arc<EngineConfig>,
    root: ChildRef,
    directory: Directory,
    connections: Connections,
    funding: Funding,
    runtime: Runtime,
    embedder: Embedder,
    knowledge: crate::knowledge::Knowledge,
    missions: crate::harness::Missions,
    actions: crate::actions::Actions,
    url: crate::url::service::UrlIntel,
    /// What `shutdown` is doing now, for the report when it overruns its grace period.
    shutdown_stage: std::sync::Mutex<&'static str>,
}

impl Engine {
    /// Loads the indices from storage and starts the actor tree.
    pub async fn start(store: Store, config: EngineConfig) -> Result<Self, EngineError> {
        crate::chat::tokenizer::warm_up();
        let http = crate::routing::client::client();
        let (upstreams, simulator) = Upstreams::managed(&config.managed_upstreams, &http);
        let upstreams = Arc::new(upstreams);
        let router =
            Arc::new(Router { catalog: Arc::new(config.catalog.clone()), upstreams: upstreams.clone(), simulator });
        let payments = crate::money::payments::processor(&config.payments, http.clone())
            .map_err(|e| EngineError::Invalid(format!("payment settings: {e}")))?;
        let registry = Registry::default();
        let directory_state = Arc::new(DirectoryState {
            store: store.clone(),
            registry: registry.clone(),
            restart_policy: config.restart_policy,
            default_rpm: config.default_rpm,
            creation_locks: DashMap::new(),
            keys_by_hash: DashMap::new(),
            keys_by_id: DashMap::new(),
            sessions_by_hash: DashMap::new(),
            session_ttl_ms: i64::try_from(config.session_ttl.as_millis()).unwrap_or(i64::MAX).max(1),
            session_writes: std::sync::Mutex::new(()),
            workspaces: DashMap::new(),
            operator_account_id: std::sync::RwLock::new(None),
        });
        let connections_state = Arc::new(ConnectionsState {
            store: store.clone(),
            registry: registry.clone(),
            upstreams,
            endpoint_recheck: config.endpoint_recheck,
            http,
            endpoint_guards: crate::routing::netguard::EndpointGuards::new(
                &config.net,
                std::sync::Arc::new(crate::routing::netguard::SystemLookup),
            ),
            secrets: crate::security::secrets::SecretBox::load(
                config.master_key.as_ref().map(|k| k.expose()),
                store.data_dir(),
            )?,
            provider_base_urls: config.provider_base_urls.clone(),
        });
        load_indices(&directory_state)?;
        let operator = store.meta_get(OPERATOR_ACCOUNT_META)?;
        connections_state.load_connections(operator.as_deref())?;
        if let Some(operator) = operator {
            directory_state.set_operator_account_id(operator);
        }
        let config = Arc::new(config);
        let ledger = crate::money::ledger::LedgerClient::new(registry.clone());
        let reconcile_every = config.funding.reconcile_interval.filter(|_| payments.kind() != "manual");
        let directory = Directory::new(directory_state.clone(), config.clone());
        let connections = Connections::new(connections_state.clone(), directory.clone());
        let funding =
            Funding::new(store.clone(), registry.clone(), &config, ledger.clone(), payments, directory.clone());
        let (embedder, local_model) =
            crate::embed::prepare(&config.embedder, registry.clone(), router.clone(), directory_state.clone()).await;
        let cache = crate::cache::ResponseCache::new(store.clone(), config.cache.clone(), &embedder);
        let embedder_spec = local_model
            .map(|model| EmbedderSpec { model, fallback_reason: embedder.fallback_reason().map(str::to_owned) });
        let (chunks, chunk_fallback) = crate::embed::prepare_chunk_embedder(&config.chunk_embedder, &embedder).await;
        let embedders = crate::knowledge::Embedders { main: embedder.clone(), chunks, chunk_fallback };
        let traces = crate::harness::traces::Traces::new(store.clone());
        let knowledge = crate::knowledge::Knowledge::open(
            store.clone(),
            embedders,
            traces.clone(),
            registry.clone(),
            directory_state.clone(),
            config.limits.memory_notes,
            config.ranking,
        )?;
        let missions = crate::harness::Missions::new(
            store.clone(),
            registry.clone(),
            knowledge.clone(),
            traces,
            directory_state.clone(),
            config.missions,
            config.restart_policy,
        );
        let actions = crate::actions::Actions::new(
            store.clone(),
            directory_state.clone(),
            ledger.clone(),
            missions.clone(),
            config.actions.clone(),
        );
        let url = crate::url::service::UrlIntel::new(
            config.url.clone(),
            &config.net,
            store.clone(),
            ledger.clone(),
            directory_state.clone(),
            funding.clone(),
            (config.pricing.clone(), config.funding.payments_url()),
            connections_state.secrets.clone(),
            config.restart_policy,
        )?;
        let runtime = Runtime::new(
            directory_state.clone(),
            config.clone(),
            router,
            ledger,
            funding.clone(),
            cache.clone(),
            missions.clone(),
        );
        let root = root_spec(
            &directory_state,
            &connections_state,
            reconcile_every,
            &funding,
            &cache,
            embedder_spec,
            vec![
                // After the embedder: catching up at start may embed notes; the vectoriser
                // first, as it takes the chunks the indexer's catching up finds without vectors.
                Arc::new(crate::knowledge::vectoriser::VectoriserSpec { parts: knowledge.parts().clone() }),
                Arc::new(crate::knowledge::indexer::IndexerSpec { parts: knowledge.parts().clone() }),
                // After the indexer: a mission writes its lifecycle events through it.
                Arc::new(missions.supervisor_spec()),
                Arc::new(url.supervisor_spec()),
                Arc::new(runtime.video_supervisor_spec()),
            ],
        )
        .spawn_root()
        .await
        .map_err(|e| EngineError::Internal(format!("actor tree failed to start: {e}")))?;
        Ok(Self(Arc::new(EngineParts {
            store,
            registry,
            directory_state,
            config,
            root,
            directory,
            connections,
            funding,
            runtime,
            embedder,
            knowledge,
            missions,
            actions,
            url,
            shutdown_stage: std::sync::Mutex::new("not started"),
        })))
    }

    /// The harness's observation stream (context packs, knowledge replies, agents' traces).
    pub fn traces(&self) -> &crate::harness::traces::Traces {
        self.0.missions.traces()
    }

    /// Action guardrails: policies and checks.
    pub fn actions(&self) -> &crate::actions::Actions {
        &self.0.actions
    }

    /// Missions, their steps and artifacts (the mission harness).
    /// URL intelligence: analyses, history, stats, profiles, batches.
    pub fn url(&self) -> &crate::url::service::UrlIntel {
        &self.0.url
    }

    pub fn missions(&self) -> &crate::harness::Missions {
        &self.0.missions
    }

    /// Accounts, workspaces, keys and sessions; authentication and admission.
    pub fn directory(&self) -> &Directory {
        &self.0.directory
    }

    /// Accounts' provider keys (BYOK) and self-hosted endpoints.
    pub fn connections(&self) -> &Connections {
        &self.0.connections
    }

    /// Balances, credits, payments, auto pay, usage history and reconciliation.
    pub fn funding(&self) -> &Funding {
        &self.0.funding
    }

    /// Chat and embeddings: plan, execute, settle.
    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    /// Sentences to vectors (the neural model, routed, or the lexical fallback), each answer
    /// saying which embedder made it.
    pub fn knowledge(&self) -> &crate::knowledge::Knowledge {
        &self.0.knowledge
    }

    pub fn embedder(&self) -> &Embedder {
        &self.0.embedder
    }

    /// Stops the actor tree, makes everything durable and closes storage. Callers bound it
    /// in time; `shutdown_report` says where it is when it overruns.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        self.set_shutdown_stage("committing the ledger");
        if let Err(error) = self.0.funding.commit_ledger().await {
            tracing::error!(%error, "the ledger could not commit before shutdown; its log is applied at the next start");
        }
        self.set_shutdown_stage("stopping the actor tree");
        let _ = self.0.root.cell().stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(10))).await;
        self.set_shutdown_stage("persisting keys' last_used_at");
        self.0.directory_state.persist_last_used()?;
        self.set_shutdown_stage("flushing storage");
        self.0.store.flush().await?;
        // Closing stops the flusher thread, so the flushes sled runs when its trees are
        // dropped cannot overlap one of ours.
        self.set_shutdown_stage("closing storage");
        let store = self.0.store.clone();
        let closed = tokio::task::spawn_blocking(move || store.close(Duration::from_secs(10)))
            .await
            .map_err(|e| EngineError::Internal(format!("closing storage: {e}")))?;
        if !closed {
            return Err(EngineError::Unavailable("storage did not finish its last flush".into()));
        }
        self.set_shutdown_stage("done");
        Ok(())
    }

    /// Says shutdown has begun: drains of abandoned streams settle with what they have.
    pub fn begin_shutdown(&self) {
        self.0.runtime.work().begin_shutdown();
    }

    /// Resolves once no request work that outlived its client is running.
    pub async fn work_done(&self) {
        self.0.runtime.work().done().await;
    }

    fn set_shutdown_stage(&self, stage: &'static str) {
        *self.0.shutdown_stage.lock().unwrap_or_else(|p| p.into_inner()) = stage;
    }

    /// Where shutdown is, and what storage's flusher is doing: logged when shutdown overruns.
    pub fn shutdown_report(&self) -> String {
        let stage = *self.0.shutdown_stage.lock().unwrap_or_else(|p| p.into_inner());
        let flusher = self.0.store.flusher_status();
        let flush = match flusher.flush_in_flight_ms {
            Some(ms) => format!("a flush has been running for {ms} ms for {} waiter(s)", flusher.in_flight_waiters),
            None => "no flush running".to_owned(),
        };
        format!(
            "engine shutdown stage: {stage}; {} request(s) still settling; storage: {flush}, {} waiter(s) queued{}",
            self.0.runtime.work().running(),
            flusher.queued_waiters,
            if flusher.held { " (flushes held by fault injection)" } else { "" }
        )
    }

    /// Test-only (`fault_injection`): hold or release every storage flush (a hung disk).
    pub fn hold_storage_flushes(&self, held: bool) -> Result<(), EngineError> {
        if !self.0.config.fault_injection {
            return Err(EngineError::Forbidden("fault injection is disabled".into()));
        }
        self.0.store.hold_flushes(held);
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.0.store
    }

    /// The live actor tree, from the root down.
    pub async fn actor_tree(&self) -> ActorNode {
        let root = ChildHandle {
            name: ROOT.to_owned(),
            kind: ROOT,
            status: ChildStatus::Running,
            restarts: 0,
            last_error: None,
            child: Some(self.0.root.clone()),
        };
        inspect::walk(root).await
    }

    /// Test-only: makes the named actor's handler fail so supervision can be exercised.
    pub fn inject_failure(&self, name: &str) -> Result<(), EngineError> {
        if !self.0.config.fault_injection {
            return Err(EngineError::Forbidden("fault injection is disabled".into()));
        }
        if name == ROOT {
            // The root has no supervisor: failing it would end the tree.
            return Err(EngineError::invalid("the root actor does not accept injected failures"));
        }
        let child = self.0.registry.get(name).ok_or(EngineError::NotFound { what: "Actor" })?;
        if child.inject_failure(format!("injected failure in {name}")) {
            Ok(())
        } else {
            Err(EngineError::invalid(format!("actor {name} does not accept injected failures")))
        }
    }
}

pub(crate) const ROOT: &str = "root";

/// The tree: `root` over the ledger, the directory (`accounts`), the upstream connections
/// (`providers`, `endpoints`), the background `tasks`, for the in-process kinds the
/// `embedder`, and then the children that use it (the knowledge base's, the `missions`).
fn root_spec(
    directory: &Arc<DirectoryState>,
    connections: &Arc<ConnectionsState>,
    reconcile_every: Option<Duration>,
    funding: &Funding,
    cache: &Arc<crate::cache::ResponseCache>,
    embedder: Option<EmbedderSpec>,
    after_embedder: Vec<Arc<dyn ChildSpec>>,
) -> SupervisorSpec {
    let (policy, registry) = (directory.restart_policy, directory.registry.clone());
    let group = |endpoints| {
        let (upstreams, recheck) = (connections.upstreams.clone(), connections.endpoint_recheck);
        Arc::new(group_spec(endpoints, upstreams, recheck, policy, registry.clone()))
    };
    let mut children: Vec<Arc<dyn ChildSpec>> = vec![
        Arc::new(crate::money::ledger::LedgerSpec::new(directory.store.clone())),
        Arc::new(crate::directory::accounts::spec(directory)),
        group(false),
        group(true),
        Arc::new(crate::cache::spec(cache, policy, registry.clone())),
        Arc::new(tasks_spec(directory, reconcile_every, funding)),
    ];
    if let Some(embedder) = embedder {
        children.push(Arc::new(embedder));
    }
    children.extend(after_embedder);
    let started_at = crate::clock::iso8601(crate::clock::now_ms());
    SupervisorSpec {
        name: ROOT.to_owned(),
        kind: ROOT,
        restart: Restart::Permanent,
        policy,
        registry,
        escalates: false,
        loader: Arc::new(move || children.clone()),
        describe: Arc::new(move |_| serde_json::json!({ "started_at": started_at })),
    }
}

/// How often images past their URL's lifetime are deleted.
const SWEEP_MEDIA_EVERY: Duration = Duration::from_secs(600);

/// How often keys' and sessions' use times are written.
const PERSIST_USE_EVERY: Duration = Duration::from_secs(5);

fn tasks_spec(directory: &Arc<DirectoryState>, reconcile_every: Option<Duration>, funding: &Funding) -> SupervisorSpec {
    let persisted = directory.clone();
    let persist_use: crate::tree::task::Job = Arc::new(move || {
        let directory = persisted.clone();
        Box::pin(async move {
            let keys = directory.persist_last_used().map_err(|e| format!("keys' last_used_at: {e}"));
            let sessions = directory.persist_session_use().map_err(|e| format!("sessions' last use: {e}"));
            keys.and(sessions)
        })
    });
    let store = directory.store.clone();
    let sweep_media: crate::tree::task::Job = Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let now = crate::clock::now_ms();
            let swept = tokio::task::spawn_blocking(move || store.sweep_media(now)).await;
            swept.map_err(|e| e.to_string())?.map(|_| ()).map_err(|e| format!("expired media: {e}"))
        })
    });
    let mut tasks: Vec<Arc<dyn ChildSpec>> = vec![
        Arc::new(TaskSpec::every("task:last-used", PERSIST_USE_EVERY, persist_use)),
        Arc::new(TaskSpec::every("task:media-sweep", SWEEP_MEDIA_EVERY, sweep_media)),
    ];
    if let Some(every) = reconcile_every {
        let funding = funding.clone();
        let reconcile: crate::tree::task::Job = Arc::new(move || {
            let funding = funding.clone();
            Box::pin(async move { funding.reconcile_payments().await.map(|_| ()).map_err(|e| e.to_string()) })
        });
        tasks.push(Arc::new(TaskSpec::every("task:payment-reconciler", every, reconcile)));
    }
    SupervisorSpec {
        name: crate::tree::task::TASKS.to_owned(),
        kind: crate::tree::task::TASKS,
        restart: Restart::Permanent,
        policy: directory.restart_policy,
        registry: directory.registry.clone(),
        escalates: true,
        loader: Arc::new(move || tasks.clone()),
        describe: Arc::new(|children| serde_json::json!({ "children": children.len() })),
    }
}

fn load_indices(directory: &DirectoryState) -> Result<(), EngineError> {
    for key in directory.store.api_keys.all()? {
        let hash = decode_hash(&key.secret_sha256)?;
        let entry = Arc::new(KeyEntry {
            actor_name: crate::directory::apikey::actor_name(&key.id),
            last_used_ms: key.last_used_at_ms.unwrap_or(0).into(),
            id: key.id,
            account_id: key.account_id,
            workspace_slug: key.workspace_slug,
        });
        directory.keys_by_hash.insert(hash, entry.clone());
        directory.keys_by_id.insert(entry.id.clone(), entry);
    }
    let operators: std::collections::HashSet<String> =
        directory.store.accounts.all()?.into_iter().filter(|a| a.is_operator).map(|a| a.id).collect();
    let now = crate::clock::now_ms();
    for session in directory.store.sessions.all()? {
        // Sessions from before expiry existed have no use time: they count as used now.
        let last_used = session.last_used_at_ms.unwrap_or(now);
        // A shorter TTL than the one a session was stored under applies at once.
        let expires = session.expires_at_ms.unwrap_or(i64::MAX).min(last_used.saturating_add(directory.session_ttl_ms));
        if now >= expires {
            directory.store.sessions.remove(&(session.account_id.as_str(), session.id.as_str()))?;
            continue;
        }
        let hash = decode_hash(&session.token_sha256)?;
        let is_operator = operators.contains(&session.account_id);
        let entry = SessionEntry::new(session.id, session.account_id, is_operator, last_used, expires);
        directory.sessions_by_hash.insert(hash, Arc::new(entry));
    }
    for ws in directory.store.workspaces.all()? {
        let entry = WorkspaceEntry::new(&ws);
        directory.workspaces.insert((ws.account_id, ws.slug), Arc::new(entry));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(node: &ActorNode, into: &mut Vec<String>) {
        into.push(node.name.clone());
        node.children.iter().for_each(|c| names(c, into));
    }

    async fn started(dir: &std::path::Path) -> (Engine, crate::BootstrapCredentials) {
        let config = EngineConfig { fault_injection: true, ..EngineConfig::default() };
        let engine = Engine::start(Store::open(dir).unwrap(), config).await.unwrap();
        let credentials = engine.directory().bootstrap().await.unwrap().expect("a fresh store bootstraps");
        (engine, credentials)
    }

    /// Actor names are per engine: two engines in one process each see only their own.
    #[tokio::test]
    async fn two_engines_run_side_by_side_without_seeing_each_others_actors() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, creds_a) = started(dir_a.path()).await;
        let (b, creds_b) = started(dir_b.path()).await;
        let (key_a, key_b) = (
            a.directory().authenticate_key(&creds_a.api_key).unwrap(),
            b.directory().authenticate_key(&creds_b.api_key).unwrap(),
        );
        assert!(a.directory().authenticate_key(&creds_b.api_key).is_none(), "b's key is unknown to a");
        let (mut in_a, mut in_b) = (Vec::new(), Vec::new());
        names(&a.actor_tree().await, &mut in_a);
        names(&b.actor_tree().await, &mut in_b);
        assert!(in_a.contains(&key_a.actor_name) && !in_a.contains(&key_b.actor_name), "{in_a:?}");
        assert!(in_b.contains(&key_b.actor_name) && !in_b.contains(&key_a.actor_name), "{in_b:?}");
        for name in ["root", "ledger", "accounts", "providers", "endpoints", "tasks", "task:last-used"] {
            assert!(in_a.contains(&name.to_owned()) && in_b.contains(&name.to_owned()), "{name} in both trees");
        }
        // Each admits through its own key actor.
        assert!(matches!(
            a.directory().admit(&key_a).await.unwrap(),
            crate::directory::apikey::Admission::Admitted { .. }
        ));
        assert!(matches!(
            b.directory().admit(&key_b).await.unwrap(),
            crate::directory::apikey::Admission::Admitted { .. }
        ));
        // A failure injected into one engine's ledger leaves the other's running.
        assert!(matches!(a.inject_failure(&key_b.actor_name), Err(EngineError::NotFound { .. })));
        a.inject_failure("ledger").unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ledger_of = |tree: &ActorNode| tree.children.iter().find(|c| c.name == "ledger").map(|l| l.restarts);
        assert_eq!(ledger_of(&b.actor_tree().await), Some(0));
        assert_eq!(b.funding().money(&creds_b.account_id).await.unwrap().balance_units(), 0);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }
}
