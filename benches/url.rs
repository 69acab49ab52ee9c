//! URL intelligence: `cargo bench --bench url`.
//!
//! Starts the release binary against local fakes (a DNS server for `*.test`, a loopback
//! site, an RDAP registry, a webhook receiver), then:
//! - `URL_ANALYSES` (2,000) analyses of one URL through HTTP, one at a time, every signal
//!   from the signal cache (checked on each answer): p50/p99;
//! - as many analyses of distinct pages (the page walk fresh; DNS and RDAP cached);
//! - one 100-URL batch of distinct pages: wall time from the POST to the signed webhook's
//!   arrival, and the server's resident memory before and its peak (`VmHWM`) after.
//!
//! A funded tenant's key asks: each analysis reserves its price, settles a usage row and
//! keeps a history record. Nothing is asserted
//! but the cache use; the figures are printed.
#![allow(clippy::disallowed_methods)] // a bench spawns its own clients and servers

mod support;

use std::{
    net::Ipv4Addr,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokaroo_actors::test_support::{
    fake_dns::{FakeDns, FakeName},
    fake_http,
};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> (Duration, Value) {
    let started = Instant::now();
    let r = client.post(url).bearer_auth(token).json(body).send().await.expect("send");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let took = started.elapsed();
    assert!(status.is_success(), "{url}: {status} {text}");
    (took, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `VmRSS` or `VmHWM` of a process, in MiB (Linux).
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench --list`/`cargo test --benches` probe: nothing to list.
    }
    let analyses = env_num("URL_ANALYSES", 2_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let dns = FakeDns::start().await;
        dns.set(
            "shop.test",
            FakeName::Records {
                a: vec![Ipv4Addr::LOCALHOST],
                aaaa: Vec::new(),
                mx: vec!["mail.shop.test".into()],
                ns: vec!["ns1.shop.test".into()],
            },
        );
        let site = fake_http::serve(|_path: String| async move {
            fake_http::response("200 OK", "text/html", "<h1>Shop</h1>")
        })
        .await;
        let registry = fake_http::serve(|_path: String| async move {
            let body = json!({"objectClassName": "domain", "events": [
                {"eventAction": "registration", "eventDate": "2020-01-01T00:00:00Z"},
                {"eventAction": "expiration", "eventDate": "2030-01-01T00:00:00Z"}]});
            fake_http::response("200 OK", "application/rdap+json", &body.to_string())
        })
        .await;
        let delivered: Arc<Mutex<Option<Instant>>> = Arc::default();
        let sink = delivered.clone();
        let hook = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().get_or_insert_with(Instant::now);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, hook).await });

        let data = tempfile::tempdir().expect("temp dir");
        let stderr = std::fs::File::create(data.path().join("stderr.log")).expect("log file");
        let admin = format!("adm_{}", uuid::Uuid::new_v4().simple());
        let (dns_addr, rdap) = (dns.addr.to_string(), format!("test=http://{registry}/"));
        let mut started = support::start_gateway(
            &data.path().join("data"),
            data.path(),
            &[
                ("TOKAROO_DEFAULT_RPM", "100000000"),
                ("TOKAROO_ADMIN_TOKEN", &admin),
                ("TOKAROO_URL_DNS_SERVERS", &dns_addr),
                ("TOKAROO_URL_RDAP_SERVERS", &rdap),
                ("TOKAROO_ENDPOINTS_ALLOWED_CIDRS", "127.0.0.1/32"),
            ],
            Stdio::from(stderr),
        );
        let pid = started.child.id();
        let base = format!("http://{}", started.addr);
        let client = tokaroo_actors::routing::client::client();
        // A funded tenant, so every analysis reserves and settles with the ledger.
        let (_, account) = post(&client, &format!("{base}/admin/accounts"), &admin, &json!({"name": "bench"})).await;
        let account_id = account["id"].as_str().expect("an account id");
        let credits = format!("{base}/admin/accounts/{account_id}/credits");
        post(&client, &credits, &admin, &json!({"amount_usd": 100})).await;
        let session = account["session_token"].as_str().expect("a session").to_owned();
        let (_, created) = post(&client, &format!("{base}/v1/keys"), &session, &json!({"name": "bench"})).await;
        let key = created["key"].as_str().expect("a key").to_owned();
        let url = format!("{base}/v1/url/analyse");
        let shop = format!("http://shop.test:{}/", site.port());

        for _ in 0..50 {
            post(&client, &url, &key, &json!({"url": shop})).await;
        }
        let mut cached = Vec::with_capacity(analyses);
        for _ in 0..analyses {
            let (took, answer) = post(&client, &url, &key, &json!({"url": shop})).await;
            assert_eq!(answer["cache"]["hit"], true, "every signal from the cache: {answer}");
            cached.push(took);
        }
        cached.sort();
        println!(
            "{analyses} analyses, every signal cached: p50 {:.3} ms, p99 {:.3} ms (HTTP; each settles a usage \
             row and keeps a history record)",
            percentile(&cached, 0.5),
            percentile(&cached, 0.99)
        );

        let mut fresh = Vec::with_capacity(analyses);
        for i in 0..analyses {
            let page = json!({"url": format!("{shop}p{i}")});
            fresh.push(post(&client, &url, &key, &page).await.0);
        }
        fresh.sort();
        println!(
            "{analyses} analyses of distinct pages (page walk fresh, DNS and RDAP cached): p50 {:.3} ms, p99 {:.3} ms",
            percentile(&fresh, 0.5),
            percentile(&fresh, 0.99)
        );

        let rss_before = memory_mib(pid, "VmRSS:");
        let urls: Vec<String> = (0..100).map(|i| format!("{shop}batch/{i}")).collect();
        let body = json!({"urls": urls, "webhook_url": format!("http://127.0.0.1:{hook_port}/hook"),
                          "webhook_secret": "bench"});
        let t = Instant::now();
        let (_, batch) = post(&client, &format!("{base}/v1/url/batch"), &key, &body).await;
        let id = batch["id"].as_str().expect("a batch id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(120);
        let arrived = loop {
            if let Some(at) = *delivered.lock().unwrap() {
                break at;
            }
            assert!(Instant::now() < deadline, "the batch's webhook never arrived");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let wall = arrived.duration_since(t);
        let r = client.get(format!("{base}/v1/url/batches/{id}")).bearer_auth(&key).send().await.unwrap();
        let done: Value = r.json().await.unwrap();
        println!(
            "100-URL batch: {:.0} ms from POST to the signed webhook ({} completed, {} failed); server memory {:.1} MiB \
             before, peak {:.1} MiB (VmHWM, whole run)",
            wall.as_secs_f64() * 1e3,
            done["completed_urls"],
            done["failed_urls"],
            rss_before,
            memory_mib(pid, "VmHWM:")
        );
        let _ = started.child.kill();
        let _ = started.child.wait();
    });
}
