//! Response cache bench: an exact hit answered end to end through HTTP (the real server, the
//! simulator as the upstream), next to the same request bypassing the cache. Run:
//! `cargo bench --bench cache` (`CACHE_REQUESTS` sets how many of each, default 2000).
#![allow(clippy::disallowed_methods)] // a bench spawns its own clients and servers

mod support;

use std::time::{Duration, Instant};

const TARGET_HIT_P50_MS: f64 = 1.0;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn timed(client: &reqwest::Client, url: &str, key: &str, bypass: bool, n: usize) -> (f64, f64) {
    let body =
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "How long is a marathon?"}]});
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut request = client.post(url).bearer_auth(key).json(&body);
        if bypass {
            request = request.header("x-tokaroo-cache", "skip");
        }
        let started = Instant::now();
        let response = request.send().await.expect("request");
        let cache = response.headers().get("x-tokaroo-cache").map(|v| v.to_str().unwrap_or_default().to_owned());
        let _ = response.bytes().await.expect("body");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(cache.as_deref(), Some(if bypass { "miss" } else { "hit" }));
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

fn main() {
    let n: usize = std::env::var("CACHE_REQUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let data = tempfile::tempdir().expect("temp dir");
    let cwd = tempfile::tempdir().expect("cwd");
    let started = support::start_gateway(
        data.path(),
        cwd.path(),
        &[("TOKAROO_CACHE_ENABLED", "true"), ("TOKAROO_DEFAULT_RPM", "1000000")],
        std::process::Stdio::null(),
    );
    let key = started.api_key.clone().expect("a fresh data dir prints the bootstrap API key");
    let url = format!("http://{}/v1/chat/completions", started.addr);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (hit, miss) = runtime.block_on(async {
        let client = tokaroo_actors::routing::client::client();
        // The first answer fills the cache.
        let warm =
            serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "How long is a marathon?"}]});
        client.post(&url).bearer_auth(&key).json(&warm).send().await.expect("first").bytes().await.expect("body");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let hit = timed(&client, &url, &key, false, n).await;
        let miss = timed(&client, &url, &key, true, n).await;
        (hit, miss)
    });
    let mut child = started.child;
    let _ = child.kill();
    let _ = child.wait();
    println!("{n} sequential requests each, through HTTP, simulator upstream");
    println!(
        "exact cache hit       p50 {:7.3} ms  p99 {:7.3} ms   target p50 < {TARGET_HIT_P50_MS} ms: {}",
        hit.0,
        hit.1,
        if hit.0 < TARGET_HIT_P50_MS { "PASS" } else { "FAIL" }
    );
    println!("same request, skipped p50 {:7.3} ms  p99 {:7.3} ms", miss.0, miss.1);
}
