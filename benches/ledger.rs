//! Ledger bench: history and stats reads over 1,000,000 usage rows through the real server,
//! and the ledger actor's settle throughput. Run: `cargo bench --bench ledger`.
//!
//! 1. Starts the release binary once on a fresh data directory (to bootstrap the operator
//!    account), stops it, writes `LEDGER_ROWS` (1,000,000) usage rows for that account straight
//!    into the store over the last 30 days (20 keys, 5 workspaces, 3 tiers, 2 request types),
//!    then starts the server again and times, over HTTP, `GET /v1/usage?limit=100` (first page),
//!    the same with a `before` cursor 90% of the way back, and `GET /v1/stats?days=30`.
//! 2. Starts a ledger actor in-process on its own store and has 64 tasks settle usage rows
//!    (each waits for its row to be logged, as a request does) for `LEDGER_SECS` (5) seconds.
//!
//! Targets (printed, not asserted): each read under 50 ms; at least 20,000 settles a second.
#![allow(clippy::disallowed_methods)] // a test harness spawns its own clients and servers

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokaroo_actors::money::ledger::LedgerClient;
use tokaroo_storage::ledger::{LedgerEvent, MICROS_PER_DAY};
use tokaroo_storage::records::{Credit, UsageRow};
use tokaroo_storage::Store;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789abcdef0123";
const TARGET_READ_MS: f64 = 50.0;
const TARGET_SETTLES_PER_SEC: f64 = 20_000.0;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// Row `i`: one in 20 belongs to `first_key`, the others to 19 made-up keys.
fn row(account: &str, first_key: &str, i: u64, created_at_us: i64) -> UsageRow {
    let tiers = ["auto", "fast", "max"];
    UsageRow {
        id: format!("bench-{i:08}"),
        account_id: account.to_owned(),
        api_key_id: Some(if i.is_multiple_of(20) { first_key.to_owned() } else { format!("key-{}", i % 20) }),
        workspace_slug: Some(format!("ws-{}", i % 5)),
        metadata: Map::new(),
        tier: tiers[(i % 3) as usize].to_owned(),
        requested_model: tiers[(i % 3) as usize].to_owned(),
        provider: "openai".into(),
        upstream_model: "gpt-4o-mini".into(),
        upstream: "provider:openai:managed".into(),
        routing_method: "auto".into(),
        routing_reason: "auto: cheapest route that clears the estimated difficulty".into(),
        execution_source: "managed".into(),
        billing_mode: "managed".into(),
        request_type: if i.is_multiple_of(10) { "embeddings" } else { "chat" }.into(),
        input_tokens: 120 + i % 50,
        output_tokens: 40 + i % 30,
        actual_cost_units: 300_000,
        charged_units: 330_000,
        baseline_units: 2_000_000,
        latency_ms: Some(200 + i % 100),
        cache: "miss".into(),
        streamed: i.is_multiple_of(4),
        created_at_us,
        request_id: None,
        failed_attempts: Vec::new(),
        unit: None,
        units: None,
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Server {
        let started =
            support::start_gateway(data_dir, data_dir, &[("TOKAROO_ADMIN_TOKEN", ADMIN_TOKEN)], Stdio::null());
        Server { child: started.child, base: format!("http://{}", started.addr) }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    let r = client.get(url).bearer_auth(ADMIN_TOKEN).send().await.expect("request");
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.expect("JSON")
}

/// Times `runs` sequential GETs; returns (p50, p99) in ms.
async fn time_get(client: &reqwest::Client, url: &str, runs: usize) -> (f64, f64) {
    get(client, url).await; // warm-up
    let mut ms: Vec<f64> = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        get(client, url).await;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[(ms.len() * 99 / 100).min(ms.len() - 1)])
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

async fn reads(rows: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = tokaroo_actors::routing::client::client();
    // Bootstrap the operator account, then stop to write straight into the store.
    let server = Server::start(dir.path());
    let accounts = get(&client, &format!("{}/admin/accounts", server.base)).await;
    let account = accounts["data"][0]["id"].as_str().expect("the operator account").to_owned();
    let keys = get(&client, &format!("{}/v1/keys", server.base)).await;
    let first_key = keys["data"][0]["id"].as_str().expect("the bootstrap key").to_owned();
    for w in 0..5 {
        let r = client
            .post(format!("{}/v1/workspaces", server.base))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"workspace_id": format!("ws-{w}"), "name": format!("Workspace {w}")}))
            .send()
            .await
            .expect("create a workspace");
        assert!(r.status().is_success());
    }
    server.stop();

    let started = Instant::now();
    let store = Store::open(dir.path()).expect("open the store");
    let span = 30 * MICROS_PER_DAY;
    let first = now_us() - span;
    let step = span / rows as i64;
    let batch = 5_000;
    for chunk in 0..rows.div_ceil(batch) {
        let events: Vec<LedgerEvent> = (chunk * batch..((chunk + 1) * batch).min(rows))
            .map(|i| LedgerEvent::Usage(Box::new(row(&account, &first_key, i, first + i as i64 * step))))
            .collect();
        store.ledger.apply(&events).expect("apply");
    }
    store.flush_blocking().expect("flush");
    drop(store);
    println!("wrote {rows} usage rows in {:.1} s", started.elapsed().as_secs_f64());

    let server = Server::start(dir.path());
    let base = &server.base;
    let page = get(&client, &format!("{base}/v1/usage?limit=100")).await;
    assert_eq!(page["data"].as_array().map(Vec::len), Some(100));
    let deep_cursor = tokaroo_actors::clock::iso8601((first + (rows / 10) as i64 * step) / 1_000);
    let deep = format!("{base}/v1/usage?limit=100&before={deep_cursor}");
    assert_eq!(get(&client, &deep).await["data"].as_array().map(Vec::len), Some(100));
    let stats = get(&client, &format!("{base}/v1/stats?days=30")).await;
    println!("stats over 30 days: {} requests", stats["requests"]);

    let runs = 50;
    println!("\nread (over {rows} rows)                  p50_ms   p99_ms");
    for (name, url) in [
        ("GET /v1/usage?limit=100 (first page)", format!("{base}/v1/usage?limit=100")),
        ("GET /v1/usage?limit=100&before=<90% back>", deep),
        ("GET /v1/usage?limit=100&api_key_id=<1 in 20>", format!("{base}/v1/usage?limit=100&api_key_id={first_key}")),
        ("GET /v1/usage?limit=100&workspace_id=ws-3", format!("{base}/v1/usage?limit=100&workspace_id=ws-3")),
        ("GET /v1/stats?days=30", format!("{base}/v1/stats?days=30")),
        ("GET /v1/usage/breakdown?group_by=api_key", format!("{base}/v1/usage/breakdown?group_by=api_key&days=30")),
    ] {
        let (p50, p99) = time_get(&client, &url, runs).await;
        println!("{name:<44} {p50:>7.2}  {p99:>7.2}   target < {TARGET_READ_MS} ms: {}", verdict(p99 < TARGET_READ_MS));
    }
    server.stop();
}

async fn settles(secs: f64, concurrency: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("open the store");
    let registry = tokaroo_actors::tree::registry::Registry::default();
    let ledger =
        tokaroo_actors::money::ledger::spawn_standalone(store.clone(), &registry).await.expect("start the ledger");
    let client = LedgerClient::new(registry);
    client
        .credit(
            Credit {
                id: "bench-credit".into(),
                account_id: "bench".into(),
                amount_units: i64::MAX / 4,
                source: "manual".into(),
                reference: None,
                note: None,
                created_at_us: 0,
            },
            tokaroo_actors::money::ledger::DEFAULT_CREDIT_TIMEOUT,
        )
        .await
        .expect("credit");
    let settled = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let settled = settled.clone();
            let client = client.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let mut r = row("bench", "key", t as u64 * 1_000_000_000 + i, 0);
                    r.id = format!("settle-{t}-{i}");
                    client.settle(None, r).await.expect("settle");
                    settled.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("settle task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let n = settled.load(Ordering::Relaxed);
    let _ = ledger.stop_and_wait(None, Some(Duration::from_secs(30))).await;
    let stored = store.ledger.balances.get(&"bench").expect("read").expect("balance").usage_rows;
    let rate = n as f64 / elapsed;
    println!(
        "\nledger: {n} settles in {elapsed:.1} s from {concurrency} tasks = {rate:.0}/s ({stored} rows committed)   target >= {TARGET_SETTLES_PER_SEC}/s: {}",
        verdict(rate >= TARGET_SETTLES_PER_SEC)
    );
    assert_eq!(stored, n, "every settled row reached the store");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        reads(env_num("LEDGER_ROWS", 1_000_000)).await;
        settles(env_num("LEDGER_SECS", 5.0), env_num("LEDGER_CONCURRENCY", 64)).await;
    });
}
