//! The admission path of a runtime request: credential lookup (hash + index), then the
//! `apikey:{id}` actor round trip that checks the rate limit. Run: `cargo bench --bench admission`.
#![allow(clippy::disallowed_methods)] // a test harness spawns its own clients and servers

use criterion::{criterion_group, criterion_main, Criterion};
use tokaroo_actors::{Admission, Engine, EngineConfig, NewKey, Store};

fn admission(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (engine, secret) = runtime.block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let engine = Engine::start(store, EngineConfig::default()).await.unwrap();
        let creds = engine.directory().bootstrap().await.unwrap().expect("fresh data dir bootstraps");
        let new = NewKey { rate_limit_rpm: Some(1_000_000), ..NewKey::default() };
        let (_, secret) = engine.directory().create_key(&creds.account_id, new).await.unwrap();
        (engine, secret)
    });

    c.bench_function("credential_lookup", |b| {
        b.iter(|| engine.directory().authenticate_key(std::hint::black_box(&secret)).expect("known key"))
    });
    c.bench_function("admission_full", |b| {
        b.to_async(&runtime).iter(|| async {
            let key = engine.directory().authenticate_key(&secret).expect("known key");
            match engine.directory().admit(&key).await.expect("admitted") {
                Admission::Admitted { remaining, .. } => remaining,
                Admission::Limited { .. } => panic!("limit is set far above the bench's rate"),
            }
        })
    });
    // As in the server: the request's task runs on a runtime worker, not on a foreign thread.
    c.bench_function("admission_full_on_worker", |b| {
        b.iter_custom(|iters| {
            let engine = engine.clone();
            let secret = secret.clone();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    let start = std::time::Instant::now();
                    for _ in 0..iters {
                        let key = engine.directory().authenticate_key(&secret).expect("known key");
                        std::hint::black_box(engine.directory().admit(&key).await.expect("admitted"));
                    }
                    start.elapsed()
                })
                .await
                .unwrap()
            })
        })
    });
    runtime.block_on(engine.shutdown()).unwrap();
}

criterion_group!(benches, admission);
criterion_main!(benches);
