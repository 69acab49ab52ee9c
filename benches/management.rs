//! Management writes under concurrency: how many keys per second the server creates, and
//! how long each creation takes, when many clients script an import at once.
//!
//! Starts the release binary on a fresh data directory, creates `MGMT_WORKSPACES` workspaces,
//! then creates one key in each, at concurrency 8 and 64, for `MGMT_ROUNDS` rounds. Every
//! request has a watchdog (`MGMT_TIMEOUT_SECS`, 30): a request that does not answer in time
//! is reported as a hang and the run stops. Finally SIGTERM, and the time the server takes to
//! exit. Nothing here is asserted; the figures are printed.
#![allow(clippy::disallowed_methods)] // a test harness spawns its own clients and servers

mod support;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Server {
    child: Child,
    addr: SocketAddr,
    token: String,
    _data: tempfile::TempDir,
}

fn start_server() -> Server {
    let data = tempfile::tempdir().expect("temp dir");
    let token = format!("adm_{}", uuid::Uuid::new_v4().simple());
    let stderr = std::fs::File::create(data.path().join("stderr.log")).expect("log file");
    let started = support::start_gateway(
        &data.path().join("data"),
        data.path(),
        &[("TOKAROO_ADMIN_TOKEN", &token), ("TOKAROO_DEFAULT_RPM", "100000000")],
        Stdio::from(stderr),
    );
    Server { child: started.child, addr: started.addr, token, _data: data }
}

#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    elapsed: Duration,
    hung: usize,
    failed: usize,
}

impl Phase {
    fn print(&mut self, label: &str) {
        self.latencies.sort();
        let pct = |p: f64| {
            if self.latencies.is_empty() {
                return f64::NAN;
            }
            let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        let ok = self.latencies.len();
        println!(
            "{label:<34} {ok:>6} ok {:>4} failed {:>4} hung {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            self.failed,
            self.hung,
            ok as f64 / self.elapsed.as_secs_f64(),
            pct(0.5),
            pct(0.99),
            pct(1.0),
        );
    }
}

/// Sends `bodies` as POSTs to `path`, `concurrency` at a time, each under the watchdog.
async fn burst(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    bodies: Vec<Value>,
    concurrency: usize,
    timeout: Duration,
) -> Phase {
    let url = format!("http://{}{path}", server.addr);
    let queue = std::sync::Arc::new(std::sync::Mutex::new(bodies));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, token, queue) = (client.clone(), url.clone(), server.token.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            let mut phase = Phase::default();
            loop {
                let Some(body) = queue.lock().unwrap().pop() else { break };
                let sent = Instant::now();
                let call = client.post(&url).bearer_auth(&token).json(&body).send();
                match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(r)) if r.status().is_success() => phase.latencies.push(sent.elapsed()),
                    Ok(_) => phase.failed += 1,
                    Err(_) => {
                        phase.hung += 1;
                        break;
                    }
                }
            }
            phase
        }));
    }
    let mut total = Phase::default();
    for task in tasks {
        let phase = task.await.expect("burst task");
        total.latencies.extend(phase.latencies);
        total.hung += phase.hung;
        total.failed += phase.failed;
    }
    total.elapsed = started.elapsed();
    total
}

fn stop(mut server: Server) {
    let started = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            println!("SIGTERM: exited ({status}) after {:.0?}", started.elapsed());
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = server.child.kill();
            println!("SIGTERM: still running after 60 s; killed");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --list`/`cargo test --benches` probe: nothing to list.
    }
    let workspaces = env_num("MGMT_WORKSPACES", 254) as usize;
    let rounds = env_num("MGMT_ROUNDS", 3) as usize;
    let timeout = Duration::from_secs(env_num("MGMT_TIMEOUT_SECS", 30));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let server = start_server();
        let client = tokaroo_actors::routing::client::client();
        println!("management writes: {workspaces} workspaces, {rounds} rounds of one key per workspace");
        let bodies = (0..workspaces)
            .map(|i| json!({ "workspace_id": format!("ws-{i}"), "name": format!("Workspace {i}") }))
            .collect();
        let mut phase = burst(&client, &server, "/v1/workspaces", bodies, 8, timeout).await;
        phase.print("create workspaces (c8)");
        let mut hung = phase.hung > 0;
        'rounds: for concurrency in [8usize, 64] {
            for round in 0..rounds {
                let bodies = (0..workspaces)
                    .map(|i| json!({ "name": format!("key-{round}-{i}"), "workspace_id": format!("ws-{i}") }))
                    .collect();
                let mut phase = burst(&client, &server, "/v1/keys", bodies, concurrency, timeout).await;
                phase.print(&format!("create keys (c{concurrency}, round {})", round + 1));
                if phase.hung > 0 {
                    println!("HUNG: {} requests did not answer within {timeout:?}", phase.hung);
                    hung = true;
                    break 'rounds;
                }
            }
        }
        if !hung {
            println!("no hangs");
        }
        stop(server);
    });
}
