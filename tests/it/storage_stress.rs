//! Storage under concurrent management writes (issue 17): sled 0.34 deadlocks on concurrent
//! flushes, so every write that must be durable queues for the one flusher thread. These
//! tests drive thousands of writes at once and fail, instead of hanging, if anything stops.

use std::{sync::Arc, time::Duration};

use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use crate::harness::*;

/// One management write, and where it goes.
#[derive(Clone, Debug)]
enum Write {
    Workspace(usize),
    Key { workspace: usize, n: usize },
    ProviderKey(usize),
    Endpoint(usize),
    Account(usize),
}

const WORKSPACES: usize = 300;
const KEYS_PER_WORKSPACE: usize = 5;
const PROVIDER_KEYS: usize = 150;
const ENDPOINTS: usize = 60;
const ACCOUNTS: usize = 40;

impl Write {
    /// Workspaces first (keys need them), then everything else interleaved.
    fn plan() -> (Vec<Write>, Vec<Write>) {
        let workspaces = (0..WORKSPACES).map(Write::Workspace).collect();
        let mut rest = Vec::new();
        for n in 0..KEYS_PER_WORKSPACE {
            rest.extend((0..WORKSPACES).map(|workspace| Write::Key { workspace, n }));
        }
        let others: Vec<Write> = (0..PROVIDER_KEYS)
            .map(Write::ProviderKey)
            .chain((0..ENDPOINTS).map(Write::Endpoint))
            .chain((0..ACCOUNTS).map(Write::Account))
            .collect();
        // Spread the other kinds evenly through the keys.
        let stride = rest.len() / others.len();
        for (i, w) in others.into_iter().enumerate() {
            rest.insert((i * (stride + 1)).min(rest.len()), w);
        }
        (workspaces, rest)
    }

    fn request(&self, dead_port: u16) -> (&'static str, Value) {
        match *self {
            Write::Workspace(i) => {
                ("/v1/workspaces", json!({ "workspace_id": format!("ws-{i}"), "name": format!("W {i}") }))
            }
            Write::Key { workspace, n } => {
                ("/v1/keys", json!({ "name": format!("k-{workspace}-{n}"), "workspace_id": format!("ws-{workspace}") }))
            }
            Write::ProviderKey(i) => (
                "/v1/provider-keys",
                json!({ "provider": "anthropic", "label": format!("pk-{i}"), "secret": format!("sk-ant-{i:032}") }),
            ),
            Write::Endpoint(i) => (
                "/v1/local-endpoints",
                json!({ "url": format!("http://127.0.0.1:{dead_port}/v{i}"), "label": format!("ep-{i}") }),
            ),
            Write::Account(i) => ("/admin/accounts", json!({ "name": format!("tenant-{i}") })),
        }
    }
}

/// Sends every write, 64 at a time; returns the failures (status and body).
async fn send_all(gw: &Gateway, writes: Vec<Write>, dead_port: u16) -> Vec<String> {
    stream::iter(writes)
        .map(|w| async move {
            let (path, body) = w.request(dead_port);
            let r = gw.post(path, ADMIN_TOKEN, body).await;
            (r.status != 200).then(|| format!("{w:?}: {} {}", r.status, r.text))
        })
        .buffer_unordered(64)
        .filter_map(|failure| async move { failure })
        .collect()
        .await
}

/// A port nothing listens on: endpoints registered there are simply unhealthy.
fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn list_len(gw: &Gateway, path: &str) -> usize {
    let r = gw.get(path, ADMIN_TOKEN).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text);
    r.body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_concurrent_management_writes_mixed_with_chat_never_hang() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default().env("TOKAROO_DEFAULT_RPM", "1000000")).await;
    let chat_key = gw.first_key.clone().expect("bootstrap key");
    let port = dead_port();
    let (workspaces, rest) = Write::plan();
    let total = workspaces.len() + rest.len();
    assert!(total >= 2000, "the plan has {total} writes");

    // The watchdog: a hang fails the test (and the harness kills the server) instead of
    // holding CI until its own limit.
    let run = async {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let chatters: Vec<_> = (0..8)
            .map(|_| {
                let (done, client, url, key) =
                    (done.clone(), gw.client().clone(), gw.url("/v1/chat/completions"), chat_key.clone());
                tokio::spawn(async move {
                    let mut served = 0usize;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let r = client
                            .post(&url)
                            .bearer_auth(&key)
                            .json(&json!({"model": "auto", "messages": [{"role": "user", "content": "hello"}]}))
                            .send()
                            .await
                            .expect("chat reaches the server");
                        assert_eq!(
                            r.status(),
                            200,
                            "chat during the write storm: {}",
                            r.text().await.unwrap_or_default()
                        );
                        served += 1;
                    }
                    served
                })
            })
            .collect();
        let mut failures = send_all(&gw, workspaces, port).await;
        failures.extend(send_all(&gw, rest, port).await);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut chats = 0;
        for c in chatters {
            chats += c.await.expect("chat task");
        }
        (failures, chats)
    };
    let (failures, chats) = match tokio::time::timeout(Duration::from_secs(90), run).await {
        Ok(result) => result,
        Err(_) => panic!("management writes hung (watchdog after 90 s); server log tail:\n{}", tail(&gw.log())),
    };
    assert!(failures.is_empty(), "{} writes failed, first: {:?}", failures.len(), failures.first());
    assert!(chats > 0, "chat traffic ran alongside the writes");

    // Every write was answered only once durable: all of it is there after a restart.
    assert_eq!(list_len(&gw, "/v1/workspaces").await, WORKSPACES + 1);
    let code = tokio::time::timeout(Duration::from_secs(60), gw.stop()).await.expect("server stops on SIGTERM");
    assert_eq!(code, Some(0), "a clean stop after the storm");
    let again = Gateway::start_in(dir.path(), Options::default()).await;
    assert_eq!(list_len(&again, "/v1/workspaces").await, WORKSPACES + 1);
    assert_eq!(list_len(&again, "/v1/keys").await, WORKSPACES * KEYS_PER_WORKSPACE + 1);
    assert_eq!(list_len(&again, "/v1/provider-keys").await, PROVIDER_KEYS);
    assert_eq!(list_len(&again, "/v1/local-endpoints").await, ENDPOINTS);
    assert_eq!(list_len(&again, "/admin/accounts").await, ACCOUNTS + 1);
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test]
async fn sigterm_during_a_hung_storage_flush_exits_non_zero_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_in(dir.path(), Options::default().env("TOKAROO_SHUTDOWN_GRACE_SECS", "2")).await;
    let held = gw.post("/admin/debug/storage", ADMIN_TOKEN, json!({ "hold_flushes": true })).await;
    assert_eq!(held.status, 200, "{}", held.text);

    // A management write now waits for a flush that never comes.
    let client = gw.client().clone();
    let url = gw.url("/v1/workspaces");
    let stuck = tokio::spawn(async move {
        client.post(url).bearer_auth(ADMIN_TOKEN).json(&json!({"workspace_id": "stuck", "name": "Stuck"})).send().await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stuck.is_finished(), "the write waits for its flush");

    let started = std::time::Instant::now();
    let log_path = gw.data_dir.join("server.log");
    let code = gw.stop().await;
    let took = started.elapsed();
    assert_eq!(code, Some(3), "shutdown that overran its grace exits with code 3");
    assert!(took < Duration::from_secs(10), "exit took {took:?} with a 2 s grace period");
    let log = std::fs::read_to_string(log_path).unwrap();
    assert!(log.contains("shutdown exceeded its grace period"), "{log}");
    assert!(log.contains("1 request(s) in flight"), "says what it waited on: {log}");
    assert!(log.contains("(flushes held by fault injection)"), "names the stuck storage: {log}");
    stuck.abort();
}

#[tokio::test]
async fn storage_fault_route_exists_only_with_fault_injection() {
    let gw = Gateway::start_with(Options::default().env("TOKAROO_FAULT_INJECTION", "0")).await;
    let r = gw.post("/admin/debug/storage", ADMIN_TOKEN, json!({ "hold_flushes": true })).await;
    assert_eq!(r.status, 404, "{}", r.text);
    // And the server still writes and stops normally.
    let ws = gw.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "ok", "name": "Ok"})).await;
    assert_eq!(ws.status, 200, "{}", ws.text);
    assert_eq!(gw.stop().await, Some(0));
}
