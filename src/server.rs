//! Start-up and graceful shutdown of `tokaroo serve`.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokaroo_actors::{
    routing::catalog::Catalog, routing::providers::ProviderKind, routing::upstreams::UpstreamSettings,
    BootstrapCredentials, Engine, EngineConfig, RestartPolicy, Store,
};
use tokio::time::Instant;

use crate::{
    config::{Config, LogFormat},
    http::{self, AppParts, AppState},
    listener::{self, Limits},
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Storage(#[from] tokaroo_actors::StorageError),
    #[error("{0}")]
    Engine(#[from] tokaroo_actors::EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// `listen` is the address actually bound: endpoints may never point at it.
fn engine_config(config: &Config, listen: std::net::SocketAddr) -> Result<EngineConfig, ServeError> {
    let s = &config.supervision;
    let catalog = Catalog::load(config.catalog.path.as_deref(), config.catalog.extra_path.as_deref())?;
    Ok(EngineConfig {
        default_rpm: config.rate_limit.default_rpm.max(1),
        restart_policy: RestartPolicy {
            initial_backoff: Duration::from_millis(s.initial_backoff_ms),
            max_backoff: Duration::from_millis(s.max_backoff_ms.max(s.initial_backoff_ms)),
            max_failures_in_window: s.max_failures_in_window,
            window: Duration::from_secs(s.window_secs),
        },
        admin_token: config.server.admin_token.clone(),
        session_ttl: Duration::from_secs(config.server.session_ttl_secs.max(1)),
        admission_timeout: Duration::from_secs(5),
        fault_injection: config.debug.fault_injection,
        catalog,
        managed_upstreams: managed_upstreams(config),
        pricing: config.pricing.clone(),
        payments: tokaroo_actors::money::payments::PaymentSettings {
            processor: config.billing.processor.parse().map_err(ServeError::Config)?,
            stripe_secret_key: config.billing.stripe_secret_key.as_ref().map(|k| k.expose().to_owned()),
            stripe_base_url: config.billing.stripe_base_url.clone(),
            stripe_webhook_secret: config.billing.stripe_webhook_secret.as_ref().map(|k| k.expose().to_owned()),
        },
        funding: tokaroo_actors::FundingSettings {
            min_payment_usd: config.billing.min_payment_usd,
            terms_version: config.billing.terms_version.clone(),
            public_url: config.public_url(),
            terms_url: config
                .billing
                .terms_url
                .clone()
                .unwrap_or_else(|| format!("{}/v1/billing/activation", config.public_url())),
            auto_pay_threshold_usd: config.billing.auto_pay_threshold_usd,
            credit_timeout: Duration::from_millis(config.billing.credit_timeout_ms.max(1)),
            reconcile_interval: (config.billing.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(config.billing.reconcile_interval_secs)),
            reconcile_lookback: Duration::from_secs(config.billing.reconcile_lookback_hours.max(1) * 3600),
        },
        endpoint_recheck: Duration::from_secs(config.endpoints.recheck_secs.max(1)),
        master_key: std::env::var("TOKAROO_MASTER_KEY").ok().map(tokaroo_actors::Secret::from),
        provider_base_urls: provider_base_urls(config),
        net: tokaroo_actors::routing::netguard::NetSettings {
            allow_private_networks: config.endpoints.allow_private_networks,
            allowed_cidrs: tokaroo_actors::routing::netguard::parse_cidrs(&config.endpoints.allowed_cidrs)
                .map_err(|e| ServeError::Config(format!("endpoints.allowed_cidrs: {e}")))?,
            listen: vec![listen],
        },
        limits: config.account_limits(),
        cache: config.cache.settings(),
        embedder: config.embedder_settings(),
        chunk_embedder: config.chunk_embedder_settings(),
        ranking: config.knowledge.ranking,
        missions: config.mission_limits(),
        actions: config.action_settings(),
        url: config.url.settings().map_err(|e| ServeError::Config(e.to_string()))?,
    })
}

fn print_bootstrap(creds: &BootstrapCredentials) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n== First start: operator account created. These are shown ONCE; save them now. ==\n\
         dashboard session token: {}\n\
         api key (workspace `default`): {}\n",
        creds.session_token, creds.api_key
    );
    let _ = out.flush();
}

/// Runs the server until SIGINT/SIGTERM, then drains in-flight requests and flushes storage.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let signalled = shutdown_signal();
    let store = Store::open(&config.server.data_dir)?;
    let listener = listener::bind(&config.server.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.server.listen.clone(), source })?;
    let addr = listener.local_addr()?;
    let mut config = config;
    // Links in answers (payment URLs) use the address actually bound (port 0 picks one).
    if config.billing.public_url.is_none() {
        config.billing.public_url = Some(format!("http://{addr}"));
    }
    crate::models::ensure_for_serve(&config).await;
    let engine = Engine::start(store, engine_config(&config, addr)?).await?;
    if let Some(creds) = engine.directory().bootstrap().await? {
        print_bootstrap(&creds);
    }
    let shutting_down = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let state_config = Arc::new(config);
    let state = AppState::new(AppParts {
        engine: engine.clone(),
        config: state_config.clone(),
        shutting_down: shutting_down.clone(),
        in_flight: in_flight.clone(),
    });
    let app = http::router(state);
    println!("Tokaroo listening on http://{addr}");
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "listening");

    let limits = limits(&state_config);
    raise_open_files_limit(limits.max_connections);
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<Instant>();
    let server = listener::serve(listener, app, limits, async move {
        signalled.await;
        shutting_down.store(true, Ordering::Relaxed);
        let _ = signalled_tx.send(Instant::now());
        tracing::info!("shutdown requested; finishing in-flight requests");
    });
    let mut server = std::pin::pin!(server);
    // The grace period bounds everything after the signal: draining requests, then the
    // engine's shutdown. Past it the process exits whatever it was waiting on.
    let (served, deadline) = tokio::select! {
        () = &mut server => (Some(()), Instant::now() + grace),
        signalled = signalled_rx => {
            let deadline = signalled.unwrap_or_else(|_| Instant::now()) + grace;
            (tokio::time::timeout_at(deadline, &mut server).await.ok(), deadline)
        }
    };
    if served.is_none() {
        give_up(grace, &engine, &in_flight, "in-flight requests did not finish");
    }
    // Requests whose clients left are still being served or settled: their rows go to the
    // ledger before it commits for the last time. Drains of abandoned streams stop now.
    engine.begin_shutdown();
    if tokio::time::timeout_at(deadline, engine.work_done()).await.is_err() {
        give_up(grace, &engine, &in_flight, "requests whose clients left did not finish settling");
    }
    match tokio::time::timeout_at(deadline, engine.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "engine shutdown failed");
            give_up(grace, &engine, &in_flight, "engine shutdown failed");
        }
        Err(_) => give_up(grace, &engine, &in_flight, "engine shutdown did not finish"),
    }
    tracing::info!("stopped");
    Ok(())
}

fn limits(config: &Config) -> Limits {
    let s = &config.server;
    Limits {
        max_connections: s.max_connections,
        header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
        keep_alive_idle: Duration::from_secs(s.keep_alive_idle_secs),
        stream_write_timeout: Duration::from_secs(s.stream_write_timeout_secs),
    }
}

/// Each connection is a file descriptor, and the usual soft limit (1024) is far below
/// `max_connections`: raise it to the hard limit, as Go's runtime does, and say so when even
/// that leaves too little room (accepting then waits for descriptors to free up).
fn raise_open_files_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        // Descriptors besides connections: storage, the WAL, upstream clients, logs.
        const RESERVE: libc::rlim_t = 256;
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return;
        }
        let wanted = (max_connections as libc::rlim_t).saturating_add(RESERVE);
        if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max.min(wanted), rlim_max: limit.rlim_max };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                limit = raised;
            }
        }
        if limit.rlim_cur < wanted {
            tracing::warn!(
                open_files_limit = limit.rlim_cur,
                max_connections,
                "the open-files limit is below max_connections; raise it (ulimit -n, LimitNOFILE)"
            );
        }
    }
}

/// Ends the process at once, saying what shutdown was still waiting on. Returning instead
/// would run destructors, and sled's flush on drop would wait on the same stuck storage.
fn give_up(grace: Duration, engine: &Engine, in_flight: &AtomicUsize, what: &str) -> ! {
    tracing::error!(
        grace_secs = grace.as_secs(),
        requests_in_flight = in_flight.load(Ordering::Relaxed),
        waiting_on = %engine.shutdown_report(),
        "shutdown exceeded its grace period ({what}); exiting without waiting further"
    );
    eprintln!(
        "tokaroo: shutdown exceeded its grace period of {}s ({what}): {} request(s) in flight; {}",
        grace.as_secs(),
        in_flight.load(Ordering::Relaxed),
        engine.shutdown_report()
    );
    std::process::exit(SHUTDOWN_TIMED_OUT_EXIT_CODE);
}

/// The exit code when shutdown overran `shutdown_grace_secs` (a clean stop exits 0).
pub const SHUTDOWN_TIMED_OUT_EXIT_CODE: i32 = 3;

/// Where each provider's API lives: config/env overrides over the public defaults.
fn provider_base_urls(config: &Config) -> Vec<(ProviderKind, String)> {
    let p = &config.providers;
    tokaroo_actors::routing::providers::default_base_urls()
        .into_iter()
        .map(|(kind, default)| {
            let configured = match kind {
                ProviderKind::OpenAi => &p.openai.base_url,
                ProviderKind::Anthropic => &p.anthropic.base_url,
                ProviderKind::Google => &p.google.base_url,
                _ => &p.groq.base_url,
            };
            (kind, configured.clone().unwrap_or(default))
        })
        .collect()
}

/// The managed provider accounts configured by keys; none means the labelled simulator answers.
fn managed_upstreams(config: &Config) -> Vec<UpstreamSettings> {
    let p = &config.providers;
    let mut settings = Vec::new();
    for (kind, provider, default_url) in [
        (ProviderKind::OpenAi, &p.openai, "https://api.openai.com/v1"),
        (ProviderKind::Anthropic, &p.anthropic, "https://api.anthropic.com"),
        (ProviderKind::Google, &p.google, "https://generativelanguage.googleapis.com"),
        (ProviderKind::Groq, &p.groq, "https://api.groq.com/openai/v1"),
    ] {
        if let Some(key) = &provider.api_key {
            settings.push(UpstreamSettings {
                kind,
                base_url: provider.base_url.clone().unwrap_or_else(|| default_url.to_owned()),
                api_key: Some(key.clone()),
                timeout: Duration::from_secs(provider.timeout_secs.unwrap_or(60)),
            });
        }
    }
    settings
}

/// Registers for SIGINT and SIGTERM now and returns what resolves on the first of them.
/// Registered before anything is served: a signal that arrives as soon as the server answers
/// must find the handler, not the default action (which would end the process unflushed).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(interrupt) => {},
                _ = wait(terminate) => {},
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
