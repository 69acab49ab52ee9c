//! Live missions at scale: `cargo bench --bench missions`.
//!
//! Starts the release binary on a fresh data directory, creates `MISSIONS_LIVE` (10,000)
//! running missions through HTTP (32 at a time), and reports the server's resident memory
//! before and after, divided by the missions: the memory each live mission costs (its
//! `mission:{uuid}` actor, and its record in sled's cache). Then `MISSIONS_STEPS` (5,000) step
//! upserts through HTTP on random missions, 8 at a time, with their p50/p99 (each is written
//! and flushed by the mission's actor before it is answered). Nothing is asserted; the
//! figures are printed.
#![allow(clippy::disallowed_methods)] // a bench spawns its own clients and servers

mod support;

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The process's resident set, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

/// Runs `bodies` as POSTs (path, body) `concurrency` at a time; answers the latencies.
async fn run(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    requests: Vec<(String, Value)>,
    concurrency: usize,
) -> (Vec<Duration>, Vec<Value>) {
    let queue = Arc::new(std::sync::Mutex::new(requests.into_iter().enumerate().collect::<Vec<_>>()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, queue, base, key) = (client.clone(), queue.clone(), base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().pop();
                let Some((i, (path, body))) = next else { break };
                let started = Instant::now();
                let r = client.post(format!("{base}{path}")).bearer_auth(&key).json(&body).send().await.expect("send");
                let status = r.status();
                let answer: Value = r.json().await.unwrap_or(Value::Null);
                assert!(status.is_success(), "{path}: {status} {answer}");
                out.push((i, started.elapsed(), answer));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    all.sort_by_key(|(i, ..)| *i);
    let mut latencies: Vec<Duration> = all.iter().map(|(_, d, _)| *d).collect();
    latencies.sort();
    (latencies, all.into_iter().map(|(.., v)| v).collect())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --list`/`cargo test --benches` probe: nothing to list.
    }
    let live = env_num("MISSIONS_LIVE", 10_000) as usize;
    let steps = env_num("MISSIONS_STEPS", 5_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let data = tempfile::tempdir().expect("temp dir");
        let stderr = std::fs::File::create(data.path().join("stderr.log")).expect("log file");
        let mut started = support::start_gateway(
            &data.path().join("data"),
            data.path(),
            &[("TOKAROO_DEFAULT_RPM", "100000000")],
            Stdio::from(stderr),
        );
        let key = started.api_key.clone().expect("the bootstrap key");
        let base = format!("http://{}", started.addr);
        let client = tokaroo_actors::routing::client::client();
        let pid = started.child.id();
        // Warm up the paths (and the allocator) before the baseline.
        let warm = (0..64)
            .map(|i| {
                ("/v1/harness/missions".to_owned(), json!({"mission_id": format!("warm-{i}"), "status": "running"}))
            })
            .collect();
        run(&client, &base, &key, warm, 8).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = rss_kib(pid);

        let creations = (0..live)
            .map(|i| {
                (
                    "/v1/harness/missions".to_owned(),
                    json!({"mission_id": format!("m-{i}"), "status": "running",
                                                                "title": format!("Mission {i}"), "budget_usd": 10}),
                )
            })
            .collect();
        let t = Instant::now();
        let (latencies, answers) = run(&client, &base, &key, creations, 32).await;
        let elapsed = t.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = rss_kib(pid);
        println!(
            "created {live} live missions in {:.1} s ({:.0}/s; p50 {:.2} ms, p99 {:.2} ms at concurrency 32)",
            elapsed.as_secs_f64(),
            live as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        println!(
            "resident memory: {:.1} MiB before, {:.1} MiB with {live} more live missions: {:.2} KiB per mission \
             (its actor and its record in sled's cache)",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            after.saturating_sub(before) as f64 / live as f64
        );

        let ids: Vec<String> = answers.iter().map(|a| a["id"].as_str().expect("a mission id").to_owned()).collect();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let updates = (0..steps)
            .map(|i| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let id = &ids[(rng % ids.len() as u64) as usize];
                (
                    format!("/v1/harness/missions/{id}/steps"),
                    json!({"step_ref": format!("task:{}", i % 50), "status": "running", "output_summary": "working"}),
                )
            })
            .collect();
        let t = Instant::now();
        let (latencies, _) = run(&client, &base, &key, updates, 8).await;
        let elapsed = t.elapsed();
        println!(
            "{steps} step upserts on random live missions: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms (concurrency 8; each \
             written and flushed before it is answered)",
            steps as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
        let (single, _) = run(
            &client,
            &base,
            &key,
            (0..500)
                .map(|i| (format!("/v1/harness/missions/{}/steps", ids[i % ids.len()]), json!({"step_ref": "solo"})))
                .collect(),
            1,
        )
        .await;
        println!(
            "500 step upserts one at a time: p50 {:.2} ms, p99 {:.2} ms",
            percentile(&single, 0.5),
            percentile(&single, 0.99)
        );
        let _ = started.child.kill();
        let _ = started.child.wait();
    });
}
