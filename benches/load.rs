//! Load bench: the latency the gateway adds, and the throughput it sustains, measured against
//! an in-process fake OpenAI upstream. Run: `cargo bench --bench load`.
//!
//! Three parties, each on its own runtime: the fake upstream (a tokio runtime on its own
//! threads), the gateway (the release binary, a separate process) and the load generator
//! (a reqwest client with keep-alive on a third runtime). Every scenario is run twice, once
//! straight at the fake and once through the gateway, so the difference is what the gateway
//! costs. This is a measurement: the targets are printed with PASS/MISS, never asserted.
//!
//! Knobs (environment): `LOAD_C1_REQUESTS` (2000), `LOAD_C1_WARMUP` (200), `LOAD_C1_MAX_SECS`
//! (10, a cap on each sequential run), `LOAD_C64_SECS` (5), `LOAD_C64_WARMUP_SECS` (1),
//! `LOAD_CONCURRENCY` (64), `LOAD_MODES` (`non-stream,stream`), `LOAD_FAST=1` (also measure
//! `model: "fast"` through the gateway), `LOAD_FAKE_THREADS` and `LOAD_CLIENT_THREADS` (2 each).
//!
//! The gateway binary is `$CARGO_TARGET_DIR/release/tokaroo` (or `target/release/tokaroo`);
//! `cargo bench` builds it along with the bench, and it is built here if it is missing.
#![allow(clippy::disallowed_methods)] // a test harness spawns its own clients and servers

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use serde_json::{json, Value};

const MODEL: &str = "gpt-4o-mini";

// Targets (printed, not asserted).
const TARGET_C1_P50_MS: f64 = 0.3;
const TARGET_C1_P99_MS: f64 = 1.0;
const TARGET_C64_RPS: f64 = 5000.0;
const TARGET_C64_P99_MS: f64 = 10.0;

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

struct Settings {
    c1_requests: usize,
    c1_warmup: usize,
    c1_max_secs: f64,
    conc: usize,
    conc_secs: f64,
    conc_warmup_secs: f64,
    fast: bool,
    modes: Vec<Mode>,
    fake_threads: usize,
    client_threads: usize,
}

impl Settings {
    fn from_env() -> Self {
        Settings {
            c1_requests: env_num("LOAD_C1_REQUESTS", 2000usize).max(1),
            c1_warmup: env_num("LOAD_C1_WARMUP", 200usize),
            c1_max_secs: env_num("LOAD_C1_MAX_SECS", 10.0f64).max(0.1),
            conc: env_num("LOAD_CONCURRENCY", 64usize).max(1),
            conc_secs: env_num("LOAD_C64_SECS", 5.0f64).max(0.1),
            conc_warmup_secs: env_num("LOAD_C64_WARMUP_SECS", 1.0f64).max(0.0),
            fast: std::env::var("LOAD_FAST").is_ok_and(|v| v == "1" || v == "true"),
            modes: match std::env::var("LOAD_MODES") {
                Ok(v) => v
                    .split(',')
                    .map(|m| match m.trim() {
                        "non-stream" => Mode::NonStream,
                        "stream" => Mode::Stream,
                        other => panic!("LOAD_MODES: unknown mode {other:?} (non-stream, stream)"),
                    })
                    .collect(),
                Err(_) => vec![Mode::NonStream, Mode::Stream],
            },
            fake_threads: env_num("LOAD_FAKE_THREADS", 2usize).max(1),
            client_threads: env_num("LOAD_CLIENT_THREADS", 2usize).max(1),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fake upstream.

const CREATED: u64 = 1_700_000_000;
const UPSTREAM_MODEL: &str = "gpt-4o-mini-2024-07-18";
const PIECES: [&str; 5] = ["Hello", "!", " How can I", " help you", " today?"];

fn completion_body() -> Bytes {
    let v = json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": CREATED,
        "model": UPSTREAM_MODEL,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": PIECES.concat(), "refusal": null },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": { "prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18 },
        "system_fingerprint": "fp_fake"
    });
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

/// The SSE events of one streamed answer, one body frame each.
fn stream_frames() -> Vec<Bytes> {
    let chunk = |delta: Value, finish: Value| {
        json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED,
                "model": UPSTREAM_MODEL, "system_fingerprint": "fp_fake",
                "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] })
    };
    let mut events: Vec<Value> = PIECES
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let delta = if i == 0 {
                json!({ "role": "assistant", "content": piece, "refusal": null })
            } else {
                json!({ "content": piece })
            };
            chunk(delta, Value::Null)
        })
        .collect();
    events.push(chunk(json!({}), json!("stop")));
    events.push(json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": CREATED,
        "model": UPSTREAM_MODEL, "system_fingerprint": "fp_fake", "choices": [],
        "usage": { "prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18 } }));
    let mut frames: Vec<Bytes> = events.iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

#[derive(Clone)]
struct Fake {
    completion: Bytes,
    frames: std::sync::Arc<Vec<Bytes>>,
}

async fn fake_chat(axum::extract::State(fake): axum::extract::State<Fake>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
    };
    if request["stream"].as_bool() == Some(true) {
        let frames: Vec<Result<Bytes, std::convert::Infallible>> = fake.frames.iter().cloned().map(Ok).collect();
        let mut response = Response::new(Body::from_stream(futures_util::stream::iter(frames)));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    } else {
        let mut response = Response::new(Body::from(fake.completion.clone()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

/// Starts the fake on its own runtime and threads; returns its address.
fn start_fake(threads: usize) -> SocketAddr {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("fake-upstream".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("fake-upstream-worker")
                .enable_all()
                .build()
                .expect("fake upstream runtime");
            runtime.block_on(async move {
                let fake = Fake { completion: completion_body(), frames: std::sync::Arc::new(stream_frames()) };
                let app = Router::new().route("/v1/chat/completions", post(fake_chat)).with_state(fake);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the fake upstream");
                tx.send(listener.local_addr().unwrap()).unwrap();
                // Small SSE frames must not wait on Nagle + delayed ACK: set TCP_NODELAY per connection.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, app).await.expect("fake upstream serves");
            });
        })
        .expect("spawn the fake upstream thread");
    rx.recv_timeout(Duration::from_secs(10)).expect("fake upstream starts")
}

// ---------------------------------------------------------------------------------------------
// The gateway process.

struct Gateway {
    child: Option<Child>,
    addr: SocketAddr,
    api_key: String,
    stderr_path: PathBuf,
    _data: tempfile::TempDir,
}

impl Gateway {
    fn start(fake: SocketAddr) -> Gateway {
        let data = tempfile::tempdir().expect("temp dir");
        let stderr_path = data.path().join("gateway.stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log file");
        let admin_token = format!("adm_{}", uuid::Uuid::new_v4().simple());
        let base_url = format!("http://{fake}/v1");
        let started = support::start_gateway(
            &data.path().join("data"),
            data.path(),
            &[
                ("OPENAI_API_KEY", "fake"),
                ("TOKAROO_OPENAI_BASE_URL", &base_url),
                ("TOKAROO_ADMIN_TOKEN", &admin_token),
                ("TOKAROO_DEFAULT_RPM", "100000000"),
            ],
            Stdio::from(stderr),
        );
        let api_key = started.api_key.expect("a fresh data dir prints the bootstrap API key");
        assert!(api_key.starts_with("tok_"), "unexpected API key format: {api_key}");
        Gateway { child: Some(started.child), addr: started.addr, api_key, stderr_path, _data: data }
    }

    /// SIGTERM, then wait (SIGKILL after 15 s). Returns how the process ended.
    fn stop(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(format!("{status} after {:.0?}", started.elapsed())),
                Ok(None) if started.elapsed() < Duration::from_secs(15) => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    return Some(format!("did not stop on SIGTERM within 15 s; killed ({status:?})"));
                }
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The load generator.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    NonStream,
    Stream,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::NonStream => "non-stream",
            Mode::Stream => "stream",
        }
    }
}

/// One target to hit: URL, bearer token, pre-serialized body.
#[derive(Clone)]
struct Target {
    url: String,
    bearer: String,
    body: Bytes,
    mode: Mode,
}

fn request_body(model: &str, mode: Mode) -> Bytes {
    let mut v = json!({
        "model": model,
        "messages": [
            { "role": "system", "content": "You are a terse assistant." },
            { "role": "user", "content": "Say hello." }
        ],
        "max_tokens": 16
    });
    if mode == Mode::Stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({ "include_usage": true });
    }
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

/// Sends one request and reads the whole body. `Err` describes a failure.
async fn one(client: &reqwest::Client, target: &Target) -> Result<Duration, String> {
    let start = Instant::now();
    let response = client
        .post(&target.url)
        .bearer_auth(&target.bearer)
        .header(header::CONTENT_TYPE, "application/json")
        .body(target.body.clone())
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("body: {e}"))?;
    let elapsed = start.elapsed();
    if status != reqwest::StatusCode::OK {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
    }
    let text = std::str::from_utf8(&body).map_err(|_| "body is not UTF-8".to_owned())?;
    let valid = match target.mode {
        Mode::NonStream => text.contains("\"chat.completion\"") && text.contains("How can I help you today?"),
        Mode::Stream => {
            text.ends_with("data: [DONE]\n\n") && !text.contains("stream_broken") && text.contains("today?")
        }
    };
    if !valid {
        return Err(format!("unexpected body: {}", &text[..text.len().min(300)]));
    }
    Ok(elapsed)
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    errors: usize,
    first_errors: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    fn record(&mut self, result: Result<Duration, String>) {
        match result {
            Ok(d) => self.latencies.push(d),
            Err(e) => {
                self.errors += 1;
                if self.first_errors.len() < 3 {
                    self.first_errors.push(e);
                }
            }
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < 3 {
                self.first_errors.push(e);
            }
        }
    }

    fn total(&self) -> usize {
        self.latencies.len() + self.errors
    }
}

/// `requests` sequential requests after `warmup` discarded ones; the measured loop stops early
/// at `max` (the warm-up at a fifth of it) so a pathological path cannot stall the whole run.
async fn sequential(client: reqwest::Client, target: Target, warmup: usize, requests: usize, max: Duration) -> Outcome {
    let mut discard = Outcome::default();
    let warm_start = Instant::now();
    for _ in 0..warmup {
        if warm_start.elapsed() > max / 5 {
            break;
        }
        discard.record(one(&client, &target).await);
    }
    let mut out = Outcome { latencies: Vec::with_capacity(requests), ..Outcome::default() };
    out.errors = discard.errors; // Failures count even in the warm-up.
    out.first_errors = discard.first_errors;
    let start = Instant::now();
    for _ in 0..requests {
        if start.elapsed() > max {
            println!(
                "  (capped at LOAD_C1_MAX_SECS={:.0} s after {} of {requests} requests)",
                max.as_secs_f64(),
                out.total()
            );
            break;
        }
        out.record(one(&client, &target).await);
    }
    out.elapsed = start.elapsed();
    out
}

async fn workers(client: &reqwest::Client, target: &Target, conc: usize, secs: f64) -> Outcome {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..conc)
        .map(|_| {
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let mut out = Outcome::default();
                while Instant::now() < deadline {
                    out.record(one(&client, &target).await);
                }
                out
            })
        })
        .collect();
    let mut all = Outcome::default();
    for handle in handles {
        all.merge(handle.await.expect("worker task"));
    }
    all.elapsed = start.elapsed();
    all
}

async fn concurrent(client: reqwest::Client, target: Target, conc: usize, warmup_secs: f64, secs: f64) -> Outcome {
    let mut out = Outcome::default();
    if warmup_secs > 0.0 {
        let warm = workers(&client, &target, conc, warmup_secs).await;
        out.errors = warm.errors;
        out.first_errors = warm.first_errors;
    }
    let measured = workers(&client, &target, conc, secs).await;
    out.latencies = measured.latencies;
    out.errors += measured.errors;
    for e in measured.first_errors {
        if out.first_errors.len() < 3 {
            out.first_errors.push(e);
        }
    }
    out.elapsed = measured.elapsed;
    out
}

// ---------------------------------------------------------------------------------------------
// Results.

struct Row {
    mode: Mode,
    path: &'static str,
    conc: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    n: usize,
    errors: usize,
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn row(mode: Mode, path: &'static str, conc: usize, mut out: Outcome) -> Row {
    out.latencies.sort_unstable();
    let n = out.latencies.len();
    let total = out.total();
    if out.errors > 0 {
        println!("  ! {} {path} c{conc}: {} of {total} requests failed, e.g.:", mode.label(), out.errors);
        for e in &out.first_errors {
            println!("      {e}");
        }
    }
    if total > 0 && out.errors * 100 > total {
        panic!("{} {path} c{conc}: more than 1% of requests failed ({}/{total}); aborting", mode.label(), out.errors);
    }
    Row {
        mode,
        path,
        conc,
        rps: n as f64 / out.elapsed.as_secs_f64().max(1e-9),
        p50: percentile_ms(&out.latencies, 0.50),
        p99: percentile_ms(&out.latencies, 0.99),
        n,
        errors: out.errors,
    }
}

fn mark(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<11} {:<13} {:<5} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "mode", "path", "conc", "rps", "p50_ms", "p99_ms", "n", "errors"
    );
    for r in rows {
        println!(
            "{:<11} {:<13} {:<5} {:>8.0} {:>8.3} {:>8.3} {:>8} {:>6}",
            r.mode.label(),
            r.path,
            r.conc,
            r.rps,
            r.p50,
            r.p99,
            r.n,
            r.errors
        );
    }
    println!();
}

fn find<'a>(rows: &'a [Row], mode: Mode, path: &str, conc: usize) -> Option<&'a Row> {
    rows.iter().find(|r| r.mode == mode && r.path == path && r.conc == conc)
}

fn print_added(rows: &[Row], conc: usize, gateway_path: &str) {
    for mode in [Mode::NonStream, Mode::Stream] {
        let (Some(d1), Some(g1), Some(dn), Some(gn)) = (
            find(rows, mode, "direct", 1),
            find(rows, mode, gateway_path, 1),
            find(rows, mode, "direct", conc),
            find(rows, mode, gateway_path, conc),
        ) else {
            continue;
        };
        let add_p50 = g1.p50 - d1.p50;
        let add_p99 = g1.p99 - d1.p99;
        let add_cn_p99 = gn.p99 - dn.p99;
        println!(
            "{:<10} added latency ({gateway_path} - direct): c1 p50 {add_p50:+.3} ms, p99 {add_p99:+.3} ms; c{conc} p99 {add_cn_p99:+.3} ms; c{conc} {:.0} rps",
            mode.label(),
            gn.rps
        );
        println!(
            "{:<10}   targets: c1 p50 +{TARGET_C1_P50_MS} ms {}, c1 p99 +{TARGET_C1_P99_MS} ms {}, c{conc} >= {TARGET_C64_RPS:.0} rps {}, c{conc} p99 +{TARGET_C64_P99_MS} ms {}",
            "",
            mark(add_p50 < TARGET_C1_P50_MS),
            mark(add_p99 < TARGET_C1_P99_MS),
            mark(gn.rps >= TARGET_C64_RPS),
            mark(add_cn_p99 < TARGET_C64_P99_MS),
        );
    }
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let settings = Settings::from_env();
    let total_start = Instant::now();

    let fake = start_fake(settings.fake_threads);
    let mut gateway = Gateway::start(fake);
    println!(
        "fake upstream http://{fake} ({} threads); gateway http://{} (pid {}); {} cores",
        settings.fake_threads,
        gateway.addr,
        gateway.child.as_ref().map_or(0, Child::id),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "c1: {} requests after {} warm-up; c{}: {} s after {} s warm-up; model {MODEL:?}",
        settings.c1_requests, settings.c1_warmup, settings.conc, settings.conc_secs, settings.conc_warmup_secs
    );
    let _ = std::io::stdout().flush();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads)
        .thread_name("load-client")
        .enable_all()
        .build()
        .expect("load generator runtime");
    // Installs the ring provider that reqwest's `rustls-no-provider` build needs; plain HTTP here.
    let _ = tokaroo_actors::routing::client::client();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.conc.max(64) * 2)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("load client");

    let direct_url = format!("http://{fake}/v1/chat/completions");
    let gateway_url = format!("http://{}/v1/chat/completions", gateway.addr);
    let mut paths: Vec<(&'static str, String, String, &'static str)> = vec![
        ("direct", direct_url, "fake".to_owned(), MODEL),
        ("gateway", gateway_url.clone(), gateway.api_key.clone(), MODEL),
    ];
    if settings.fast {
        paths.push(("gateway-fast", gateway_url, gateway.api_key.clone(), "fast"));
    }

    let mut rows = Vec::new();
    for &mode in &settings.modes {
        let mut levels = vec![1, settings.conc];
        levels.dedup();
        for &conc in &levels {
            for (path, url, bearer, model) in &paths {
                let target = Target { url: url.clone(), bearer: bearer.clone(), body: request_body(model, mode), mode };
                let started = Instant::now();
                let out = if conc == 1 {
                    let task = sequential(
                        client.clone(),
                        target,
                        settings.c1_warmup,
                        settings.c1_requests,
                        Duration::from_secs_f64(settings.c1_max_secs),
                    );
                    runtime.block_on(async { tokio::spawn(task).await.expect("sequential task") })
                } else {
                    let task = concurrent(client.clone(), target, conc, settings.conc_warmup_secs, settings.conc_secs);
                    runtime.block_on(async { tokio::spawn(task).await.expect("concurrent task") })
                };
                let r = row(mode, path, conc, out);
                println!(
                    "  {:<10} {:<12} c{:<3} {:>7.0} rps  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} ok, {} errors, {:.1} s)",
                    mode.label(),
                    path,
                    conc,
                    r.rps,
                    r.p50,
                    r.p99,
                    r.n,
                    r.errors,
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stdout().flush();
                rows.push(r);
            }
        }
    }

    print_table(&rows);
    print_added(&rows, settings.conc, "gateway");
    if settings.fast {
        print_added(&rows, settings.conc, "gateway-fast");
    }

    let stopped = gateway.stop().unwrap_or_default();
    let log = std::fs::read_to_string(&gateway.stderr_path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    println!();
    println!("gateway stopped: {stopped}; stderr (log level warn): {} lines", lines.len());
    for line in lines.iter().take(10) {
        println!("  | {line}");
    }
    if lines.len() > 10 {
        println!("  | ... ({} more)", lines.len() - 10);
    }
    println!("total bench time {:.1} s", total_start.elapsed().as_secs_f64());
    drop(runtime);
}
