//! Action checks against many policies: `cargo bench --bench actions`.
//!
//! Starts the release binary on a fresh data directory, writes `ACTIONS_POLICIES` (10,000)
//! policies into the bootstrap workspace through HTTP (a mix of exact and wildcard tool
//! patterns, effects and amount ranges), then times `ACTIONS_CHECKS` (2,000) checks through
//! HTTP one at a time, and as many at concurrency 8: p50/p99. Each check also writes (and
//! flushes) its audit event. Nothing is asserted; the figures are printed.
//!
//! `ACTIONS_SHAPE=unindexed` writes every tool pattern with a wildcard at both ends
//! (`*svc3.op12*`), the shape the policy index cannot file, so every check reads every
//! policy: the worst case.
#![allow(clippy::disallowed_methods)] // a bench spawns its own clients and servers

mod support;

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

const ACTION_TYPES: [&str; 3] = ["read", "write", "spend"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Duration {
    let started = Instant::now();
    let r = client.post(url).bearer_auth(token).json(body).send().await.expect("send");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {text}");
    started.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --list`/`cargo test --benches` probe: nothing to list.
    }
    let policies = env_num("ACTIONS_POLICIES", 10_000) as usize;
    let checks = env_num("ACTIONS_CHECKS", 2_000) as usize;
    let unindexed = std::env::var("ACTIONS_SHAPE").is_ok_and(|s| s == "unindexed");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let data = tempfile::tempdir().expect("temp dir");
        let stderr = std::fs::File::create(data.path().join("stderr.log")).expect("log file");
        let admin = format!("adm_{}", uuid::Uuid::new_v4().simple());
        let mut started = support::start_gateway(
            &data.path().join("data"),
            data.path(),
            &[("TOKAROO_DEFAULT_RPM", "100000000"), ("TOKAROO_ADMIN_TOKEN", &admin)],
            Stdio::from(stderr),
        );
        let key = started.api_key.clone().expect("the bootstrap key");
        let base = format!("http://{}", started.addr);
        let client = tokaroo_actors::routing::client::client();
        let t = Instant::now();
        let queue = Arc::new(std::sync::Mutex::new((0..policies).collect::<Vec<_>>()));
        let mut writers = Vec::new();
        for _ in 0..8 {
            let (client, queue, url, admin) =
                (client.clone(), queue.clone(), format!("{base}/v1/actions/policies"), admin.clone());
            writers.push(tokio::spawn(async move {
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some(i) = next else { break };
                    let effect = ["allow", "approval", "deny"][i % 3];
                    let tool = match (unindexed, i % 4) {
                        (true, _) => format!("*svc{}.op{}*", i % 97, i),
                        (false, 0) => format!("svc{}.*", i % 97),
                        (false, _) => format!("svc{}.op{}", i % 97, i),
                    };
                    let body = json!({"name": format!("p{i}"), "workspace_id": "default", "effect": effect,
                                      "priority": (i % 10) as i64,
                                      "match": {"tool_ref": tool, "action_type": ACTION_TYPES[i % 3],
                                                "requested_amount_usd": {"max": (i % 500) as f64}}});
                    post(&client, &url, &admin, &body).await;
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        let shape = if unindexed { "unindexed" } else { "mixed" };
        println!("wrote {policies} policies ({shape}) in {:.1} s", t.elapsed().as_secs_f64());
        let url = format!("{base}/v1/actions/check");
        let body = |i: usize| {
            json!({"app": "bench", "tool_ref": format!("svc{}.op{}", i % 97, i * 7), "action_type": ACTION_TYPES[i % 3],
                   "requested_amount_usd": (i % 300) as f64, "risk_level": "low"})
        };
        for i in 0..50 {
            post(&client, &url, &key, &body(i)).await;
        }
        let mut alone = Vec::with_capacity(checks);
        for i in 0..checks {
            alone.push(post(&client, &url, &key, &body(i)).await);
        }
        alone.sort();
        println!(
            "{checks} checks one at a time over {policies} policies: p50 {:.3} ms, p99 {:.3} ms (HTTP, each with its audit \
             event written and flushed)",
            percentile(&alone, 0.5),
            percentile(&alone, 0.99)
        );
        let queue = Arc::new(std::sync::Mutex::new((0..checks).collect::<Vec<_>>()));
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (client, queue, url, key) = (client.clone(), queue.clone(), url.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let next = queue.lock().unwrap().pop();
                    let Some(i) = next else { break };
                    out.push(post(&client, &url, &key, &body(i)).await);
                }
                out
            }));
        }
        let mut together = Vec::new();
        for task in tasks {
            together.extend(task.await.expect("task"));
        }
        together.sort();
        println!(
            "{checks} checks at concurrency 8: {:.0}/s, p50 {:.3} ms, p99 {:.3} ms",
            checks as f64 / t.elapsed().as_secs_f64(),
            percentile(&together, 0.5),
            percentile(&together, 0.99)
        );
        let _ = started.child.kill();
        let _ = started.child.wait();
    });
}
