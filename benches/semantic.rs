//! The semantic cache's lookup at scale: 100,000 cached prompts in one partition (the worst
//! case: one busy workspace), then per lookup the real work a cache miss or hit does — embed
//! the last user message with the built-in model, search the HNSW graph, run the guards.
//! Run: `cargo bench --bench semantic`. Prints p50/p90/p99 of embed + search and of search
//! alone, and how long building the graph took.
//!
//! The entries are realistic rather than random: 2,000 generated questions embedded by the
//! model, each cached 50 times with a small perturbation (as near-duplicate prompts pile up in
//! a real cache), so a lookup lands in a dense neighbourhood. Two shapes of traffic:
//! - one app: ten system prompts shared by all requests (large contexts: the HNSW graph);
//! - conversations: every entry has a context of its own (earlier turns differ), so a lookup
//!   compares the few entries of its context directly.
//!
//! `SEMANTIC_BENCH_ENTRIES` and `SEMANTIC_BENCH_LOOKUPS` change the sizes.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use tokaroo_actors::{
    cache::semantic::{Found, Probe, SemanticIndex},
    embed::{neural::Neural, LocalModel},
    records::SemanticEntry,
};

const ASKS: [&str; 10] = [
    "How do I",
    "What is the best way to",
    "Can you explain how to",
    "Why does it fail when I",
    "Show me how to",
    "Is it safe to",
    "What happens if I",
    "Write a script to",
    "What are the steps to",
    "Give me tips to",
];
const TASKS: [&str; 20] = [
    "reset my password",
    "reverse a list",
    "convert a string to an integer",
    "deploy a Flask app",
    "read a CSV file",
    "cancel my subscription",
    "merge two dictionaries",
    "install Docker",
    "centre a div",
    "make cold brew coffee",
    "change a flat tire",
    "learn the guitar",
    "write a unit test",
    "rotate an API key",
    "set an environment variable",
    "boil an egg",
    "find duplicate rows",
    "squash commits",
    "budget every month",
    "renew a passport",
];
const PLACES: [&str; 10] = [
    "in Python",
    "in Rust",
    "on Linux",
    "on Windows",
    "at home",
    "in Go",
    "for beginners",
    "in SQL",
    "on a Mac",
    "today",
];

fn questions() -> Vec<String> {
    let mut out = Vec::new();
    for ask in ASKS {
        for task in TASKS {
            for place in PLACES {
                out.push(format!("{ask} {task} {place}?"));
            }
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn main() {
    let entries: usize = std::env::var("SEMANTIC_BENCH_ENTRIES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let lookups: usize = std::env::var("SEMANTIC_BENCH_LOOKUPS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let model = Neural::load(&runtime.block_on(tokaroo_actors::test_support::test_model_dir())).unwrap();
    let questions = questions();
    let started = Instant::now();
    let base: Vec<Vec<f32>> = questions.chunks(32).flat_map(|batch| model.embed_batch(batch).unwrap()).collect();
    println!("embedded {} questions in {:.1} s", base.len(), started.elapsed().as_secs_f64());

    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut p50s = Vec::new();
    for (shape, contexts) in [("one app, 10 contexts", 10), ("conversations, 1 entry per context", entries)] {
        p50s.push(run(&model, &base, &questions, &mut noise, entries, lookups, shape, contexts));
    }
    let p50 = p50s.into_iter().fold(0.0, f64::max);
    println!("target: semantic lookup under 15 ms p50 -> {}", if p50 < 15.0 { "PASS" } else { "FAIL" });
}

/// Indexes `entries` over `contexts` contexts and times `lookups`; returns the p50 in ms.
#[allow(clippy::too_many_arguments)]
fn run(
    model: &Neural,
    base: &[Vec<f32>],
    questions: &[String],
    noise: &mut impl FnMut() -> f32,
    entries: usize,
    lookups: usize,
    shape: &str,
    contexts: usize,
) -> f64 {
    let id = model.id();
    println!("-- {shape}");
    let cached: Vec<SemanticEntry> = (0..entries)
        .map(|i| {
            let q = i % base.len();
            let mut vector: Vec<f32> = base[q].iter().map(|x| x + 0.01 * noise()).collect();
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            vector.iter_mut().for_each(|x| *x /= norm);
            SemanticEntry {
                partition: "ws:bench/".into(),
                key: format!("{i:08}"),
                // Round-robin: with 10, as one app's system prompts; with one per entry, as
                // conversations whose earlier turns all differ.
                context: format!("context-{}", i % contexts),
                prompt: questions[q].clone(),
                embedder: id.to_string(),
                vector,
                created_at_ms: 0,
                expires_at_ms: i64::MAX,
            }
        })
        .collect();
    let index = SemanticIndex::new(id.to_string(), id.dims, tokaroo_actors::cache::DEFAULT_SEMANTIC_THRESHOLD);
    let started = Instant::now();
    index.insert_many(cached);
    println!(
        "indexed {entries} entries in {:.1} s ({} live, {} partition)",
        started.elapsed().as_secs_f64(),
        index.counts().0,
        index.counts().2
    );

    // Lookups: paraphrase-like rewordings of cached questions (hits) and unrelated ones.
    let asked: Vec<String> = (0..lookups)
        .map(|i| {
            let (ask, task, place) = (ASKS[(i * 7) % 10], TASKS[(i * 3) % 20], PLACES[i % 10]);
            if i % 2 == 0 {
                format!("{ask} {task} {place}, please?")
            } else {
                format!("Tell me a joke about {task} number {i}")
            }
        })
        .collect();
    let mut with_embed = Vec::with_capacity(lookups);
    let mut search_only = Vec::with_capacity(lookups);
    let mut hits = 0;
    for (i, text) in asked.iter().enumerate() {
        let started = Instant::now();
        let vector = model.embed_batch(std::slice::from_ref(text)).unwrap().pop().unwrap();
        let probe = Probe { context: format!("context-{}", i % contexts), prompt: text.clone(), vector };
        let searched = Instant::now();
        let found = index.search("ws:bench/", &probe, 0);
        search_only.push(searched.elapsed());
        with_embed.push(started.elapsed());
        hits += usize::from(matches!(found, Found::Hit { .. }));
    }
    with_embed.sort();
    search_only.sort();
    for (label, samples) in [("embed + search + guards", &with_embed), ("search + guards only", &search_only)] {
        println!(
            "{label:<26} {entries} entries: p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms",
            percentile(samples, 0.50),
            percentile(samples, 0.90),
            percentile(samples, 0.99)
        );
    }
    println!("{hits}/{lookups} lookups hit");
    percentile(&with_embed, 0.50)
}
