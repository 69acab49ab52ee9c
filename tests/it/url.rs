//! URL intelligence through HTTP, offline: a fake DNS server answers for the test zones, a
//! loopback site serves shops, parked pages, redirects and slow pages, a fake registry
//! answers RDAP, and a webhook receiver records deliveries. Tenants reach loopback through
//! `url.allowed_cidrs`; private and metadata addresses stay refused.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokaroo_actors::test_support::{
    fake_dns::{FakeDns, FakeName},
    fake_http,
};

use crate::harness::*;

/// The fakes a gateway is pointed at, and the env that points it.
struct World {
    dns: FakeDns,
    site: u16,
    hook: Hook,
}

fn days_ago(days: i64) -> String {
    let at = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    at.format(&time::format_description::well_known::Rfc3339).unwrap()
}

async fn world() -> World {
    let dns = FakeDns::start().await;
    let site = |mx: &[&str], ns: &[&str]| FakeName::Records {
        a: vec![Ipv4Addr::LOCALHOST],
        aaaa: Vec::new(),
        mx: mx.iter().map(|s| s.to_string()).collect(),
        ns: ns.iter().map(|s| s.to_string()).collect(),
    };
    dns.set("shop.test", site(&["mail.shop.test"], &["ns1.shop.test"]));
    dns.set("young.test", site(&["mail.young.test"], &["ns1.young.test"]));
    dns.set("parked.test", site(&[], &["ns1.sedoparking.com"]));
    dns.set("broken.test", FakeName::ServFail);
    // Names that resolve inside the network: refused at connect time, not by their text.
    dns.set("intranet.test", FakeName::a(Ipv4Addr::new(10, 0, 0, 7)));
    dns.set("metadata.test", FakeName::a(Ipv4Addr::new(169, 254, 169, 254)));
    let site = fake_http::serve(|path: String| async move {
        if let Some(to) = path.strip_prefix("/go?to=") {
            return fake_http::redirect(to);
        }
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        match path.as_str() {
            "/forsale" => fake_http::response("200 OK", "text/html", "<h1>This domain is for sale!</h1>"),
            "/gone" => fake_http::response("404 Not Found", "text/html", "no"),
            _ => fake_http::response("200 OK", "text/html", "<h1>Shop</h1>"),
        }
    })
    .await
    .port();
    World { dns, site, hook: Hook::start().await }
}

async fn registry() -> u16 {
    fake_http::serve(|path: String| async move {
        let registered = match path.as_str() {
            "/domain/shop.test" => days_ago(800),
            "/domain/young.test" => days_ago(3),
            _ => return fake_http::response("404 Not Found", "application/rdap+json", "{}"),
        };
        let body = json!({
            "objectClassName": "domain",
            "ldhName": path.trim_start_matches("/domain/"),
            "status": ["active"],
            "events": [
                {"eventAction": "registration", "eventDate": registered},
                {"eventAction": "expiration", "eventDate": days_ago(-200)},
            ],
        });
        fake_http::response("200 OK", "application/rdap+json", &body.to_string())
    })
    .await
    .port()
}

async fn options(world: &World) -> Options {
    let rdap = registry().await;
    Options::default()
        .env("TOKAROO_URL_DNS_SERVERS", &world.dns.addr.to_string())
        .env("TOKAROO_URL_DNS_TIMEOUT_MS", "500")
        .env("TOKAROO_URL_HOP_TIMEOUT_MS", "3000")
        .env("TOKAROO_URL_RDAP_SERVERS", &format!("test=http://127.0.0.1:{rdap}/"))
        .env("TOKAROO_URL_WEBHOOK_BACKOFF_MS", "50")
        .env("TOKAROO_URL_ALLOWED_CIDRS", "127.0.0.1/32")
        // Polling a batch is many reads a minute.
        .env("TOKAROO_DEFAULT_RPM", "100000")
}

/// A funded tenant: (account id, session, key).
async fn tenant(gw: &Gateway, name: &str, usd: f64) -> (String, String, String) {
    let (id, session) = gw.create_account(name).await;
    if usd > 0.0 {
        let r = gw.post(&format!("/admin/accounts/{id}/credits"), ADMIN_TOKEN, json!({"amount_usd": usd})).await;
        assert!(r.status.is_success(), "{}", r.text);
    }
    let key = gw.post("/v1/keys", &session, json!({"name": "k"})).await;
    assert!(key.status.is_success(), "{}", key.text);
    (id, session, key.body["key"].as_str().unwrap().to_owned())
}

async fn analyse(gw: &Gateway, key: &str, body: Value) -> Resp {
    gw.post("/v1/url/analyse", key, body).await
}

fn signal_ids(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        result["signals"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

async fn balance(gw: &Gateway, key: &str) -> f64 {
    let r = gw.get("/v1/balance", key).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["balance_usd"].as_f64().unwrap()
}

#[tokio::test]
async fn an_analysis_answers_the_spec_is_charged_cached_and_kept_in_history() {
    let world = world().await;
    let gw = Gateway::start_with(options(&world).await).await;
    let (_, _, key) = tenant(&gw, "acme", 1.0).await;
    let port = world.site;

    let shop = format!("http://shop.test:{port}/");
    let r = analyse(&gw, &key, json!({"url": shop})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cost: f64 = r.header("x-tokaroo-cost").unwrap().parse().unwrap();
    assert_eq!(cost, 0.001, "{:?}", r.headers);
    let first = r.body;
    for field in ["id", "url", "normalized_url", "domain", "final_url", "score", "decision", "signals"] {
        assert!(first.get(field).is_some(), "{field} missing: {first}");
    }
    assert_eq!(first["url"], shop);
    assert_eq!(first["domain"], "shop.test");
    assert_eq!(first["final_url"], shop);
    assert_eq!(first["decision"], "allow", "{first}");
    assert_eq!(signal_ids(&first), ["insecure_scheme", "non_standard_port"], "{first}");
    let o = &first["observations"];
    assert_eq!(o["final_status_code"], 200);
    assert_eq!(o["redirect_hops"], 0);
    assert_eq!(o["tls_valid"], Value::Null, "plain http has no certificate");
    assert_eq!((o["mx_records"].as_u64(), o["ns_records"].as_u64()), (Some(1), Some(1)));
    assert!((799..=801).contains(&o["domain_age_days"].as_i64().unwrap()), "{o}");
    assert!((198..=200).contains(&o["expires_in_days"].as_i64().unwrap()), "{o}");
    assert_eq!((o["parked"].as_bool(), o["brand_match"].clone()), (Some(false), Value::Null));
    assert_eq!(first["cache"], json!({"hit": false, "status": "miss", "age_ms": null}));
    for s in first["signals"].as_array().unwrap() {
        assert!(s["weight"].is_number() && s["detail"].is_string() && !s["value"].is_null(), "{s}");
    }

    // The second look is the signal cache's, with the same answer.
    let again = analyse(&gw, &key, json!({"url": shop})).await.body;
    assert_eq!(again["cache"]["hit"], true, "{again}");
    assert_eq!(again["cache"]["status"], "signal_cache");
    assert!(again["cache"]["age_ms"].is_u64());
    assert_eq!((again["score"].clone(), signal_ids(&again)), (first["score"].clone(), signal_ids(&first)));
    assert_ne!(again["id"], first["id"]);

    // The spec's example blocks with PayPal named.
    let phish = json!({"url": "https://paypa1-login.example/security-check", "profile": "affiliate-review"});
    let r = analyse(&gw, &key, phish).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["decision"], "block", "{}", r.body);
    assert_eq!(r.body["observations"]["brand_match"]["brand"], "PayPal");
    assert!(signal_ids(&r.body).contains(&"brand_impersonation".to_owned()));

    // Young, parked, failing, redirected into the metadata service, and request weights.
    let cases = [
        (format!("http://young.test:{port}/"), "young_domain"),
        (format!("http://parked.test:{port}/forsale"), "parked_domain"),
        (format!("http://broken.test:{port}/"), "dns_servfail"),
        (format!("http://shop.test:{port}/gone"), "http_error_status"),
        (format!("http://shop.test:{port}/go?to=http://169.254.169.254/latest/meta-data/"), "redirect_refused"),
        (format!("http://shop.test:{port}/go?to=http://intranet.test/admin"), "redirect_refused"),
        (format!("http://shop.test:{port}/go?to=http://metadata.test/latest/"), "redirect_refused"),
    ];
    for (url, signal) in &cases {
        let r = analyse(&gw, &key, json!({"url": url})).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        assert!(signal_ids(&r.body).contains(&signal.to_string()), "{url}: {}", r.body);
    }
    let parked = analyse(&gw, &key, json!({"url": format!("http://parked.test:{port}/forsale")})).await.body;
    assert_eq!(parked["observations"]["parked"], true);
    let heavy = json!({"url": shop, "weights": {"insecure_scheme": 50}});
    let r = analyse(&gw, &key, heavy).await;
    assert_eq!((r.body["score"].as_f64(), r.body["decision"].as_str()), (Some(55.0), Some("warn")), "{}", r.body);

    // Bad input is a 400 naming what was wrong, and is not charged.
    let charged_so_far = 3 + cases.len() + 2;
    let long = format!("https://example.com/{}", "a".repeat(5000));
    for (body, says) in [
        (json!({"url": ""}), "url is empty"),
        (json!({"url": "ftp://example.com/"}), "http or https"),
        (json!({"url": long}), "longer than"),
        (json!({}), "missing field `url`"),
        (json!({"url": shop, "weights": {"nope": 1}}), "weights.nope"),
        (json!({"url": shop, "weights": {"idn_host": 1000}}), "weights.idn_host"),
        (json!({"url": shop, "weights": {"idn_host": "x"}}), "weights"),
        (json!({"url": shop, "profile": "nope"}), "profile"),
        (json!({"url": shop, "colour": "red"}), "colour"),
    ] {
        let r = analyse(&gw, &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(says), "{body}: {}", r.text);
    }

    // Every analysis is one usage row of its type, and the balance moved by their price.
    let usage = gw.get("/v1/usage?request_type=url_analysis&limit=100", &key).await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    assert_eq!(usage.body["data"].as_array().unwrap().len(), charged_so_far, "{}", usage.text);
    let left = balance(&gw, &key).await;
    assert!((left - (1.0 - 0.001 * charged_so_far as f64)).abs() < 1e-9, "{left}");

    // History: newest first, paged by cursor, filtered by decision.
    let page = gw.get("/v1/url/history?limit=2", &key).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.body["data"][0]["domain"], "shop.test");
    assert_eq!(page.body["data"][0]["score"], 55.0);
    assert_eq!(page.body["has_more"], true);
    let before = page.body["next_before"].as_str().unwrap();
    let next = gw.get(&format!("/v1/url/history?limit=50&before={before}"), &key).await;
    assert_eq!(next.body["data"].as_array().unwrap().len(), charged_so_far - 2, "{}", next.text);
    let blocked = gw.get("/v1/url/history?decision=block", &key).await;
    assert!(blocked.body["data"].as_array().unwrap().iter().all(|c| c["decision"] == "block"));
    assert!(!blocked.body["data"].as_array().unwrap().is_empty());
    assert_eq!(gw.get("/v1/url/history?decision=maybe", &key).await.status, 400);
    assert_eq!(gw.get("/v1/url/history?limit=0", &key).await.status, 400);
    assert_eq!(gw.get("/v1/url/history?before=x", &key).await.status, 400);

    // Stats add up.
    let stats = gw.get("/v1/url/stats?days=7", &key).await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    let s = &stats.body;
    assert_eq!(s["total_checks"], charged_so_far);
    let decided: u64 = DECISIONS.iter().map(|d| s["decisions"][d].as_u64().unwrap()).sum();
    assert_eq!(decided, charged_so_far as u64);
    assert!(s["cache_hit_rate"].as_f64().unwrap() > 0.0, "{s}");
    assert_eq!(s["top_domains"][0]["id"], "shop.test", "{s}");
    assert!(s["top_signals"].as_array().unwrap().iter().any(|t| t["id"] == "insecure_scheme"));
    assert_eq!(gw.get("/v1/url/stats?days=0", &key).await.status, 400);

    // Another account sees none of it; an unfunded one is refused before any lookup.
    let (_, _, other) = tenant(&gw, "other", 1.0).await;
    assert_eq!(gw.get("/v1/url/history", &other).await.body["data"], json!([]));
    assert_eq!(gw.get("/v1/url/stats", &other).await.body["total_checks"], 0);
    let (_, _, broke) = tenant(&gw, "broke", 0.0).await;
    let r = analyse(&gw, &broke, json!({"url": shop})).await;
    assert_eq!(r.status, 402, "{}", r.text);
}

const DECISIONS: [&str; 4] = ["allow", "review", "warn", "block"];

#[tokio::test]
async fn profiles_are_listed_written_by_sessions_and_weigh_analyses() {
    let world = world().await;
    let gw = Gateway::start_with(options(&world).await).await;
    let (_, session, key) = tenant(&gw, "acme", 1.0).await;
    let list = gw.get("/v1/url/profiles", &key).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let names: Vec<&str> = list.body["data"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "agent-browsing", "affiliate-review", "lead-screening"]);
    assert!(list.body["signals"].as_array().unwrap().len() >= 29);

    let mine = json!({"name": "strict-http", "description": "http is suspect",
                      "weights": {"insecure_scheme": 60}, "thresholds": {"review": 10, "warn": 30, "block": 60}});
    let r = gw.post("/v1/url/profiles", &key, mine.clone()).await;
    assert_eq!(r.status, 403, "a key may not write profiles: {}", r.text);
    let r = gw.post("/v1/url/profiles", &session, mine.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["builtin"], false);
    assert_eq!(gw.post("/v1/url/profiles", &session, mine).await.status, 409);
    for (body, status) in [
        (json!({"name": "default"}), 409),
        (json!({"name": "Bad Name"}), 400),
        (json!({"description": "no name"}), 400),
        (json!({"name": "w", "weights": {"nope": 1}}), 400),
        (json!({"name": "w", "weights": {"idn_host": 101}}), 400),
        (json!({"name": "w", "thresholds": {"review": 50, "warn": 40, "block": 70}}), 400),
        (json!({"name": "w", "thresholds": {"review": 10, "warn": 40}}), 400),
    ] {
        let r = gw.post("/v1/url/profiles", &session, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
    }

    let shop = format!("http://shop.test:{}/", world.site);
    let r = analyse(&gw, &key, json!({"url": shop, "profile": "strict-http"})).await;
    assert_eq!((r.body["score"].as_f64(), r.body["decision"].as_str()), (Some(65.0), Some("block")), "{}", r.body);

    let r = gw.patch(&format!("/v1/url/profiles/{id}"), &session, json!({"weights": {"insecure_scheme": 20}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = analyse(&gw, &key, json!({"url": shop, "profile": id})).await;
    assert_eq!((r.body["score"].as_f64(), r.body["decision"].as_str()), (Some(25.0), Some("review")), "{}", r.body);
    assert_eq!(gw.patch("/v1/url/profiles/default", &session, json!({"description": "x"})).await.status, 403);
    assert_eq!(gw.patch("/v1/url/profiles/up_nope", &session, json!({"description": "x"})).await.status, 404);
    assert_eq!(gw.patch(&format!("/v1/url/profiles/{id}"), &key, json!({"description": "x"})).await.status, 403);
    let bad = json!({"thresholds": {"review": 90, "warn": 10, "block": 20}});
    assert_eq!(gw.patch(&format!("/v1/url/profiles/{id}"), &session, bad).await.status, 400);

    // Another account neither sees nor uses it.
    let (_, other_session, other) = tenant(&gw, "other", 1.0).await;
    let theirs = gw.get("/v1/url/profiles", &other).await;
    assert_eq!(theirs.body["data"].as_array().unwrap().len(), 4);
    assert_eq!(analyse(&gw, &other, json!({"url": shop, "profile": "strict-http"})).await.status, 400);
    let r = gw.patch(&format!("/v1/url/profiles/{id}"), &other_session, json!({"description": "x"})).await;
    assert_eq!(r.status, 404);
}

/// One delivery: its headers and raw body.
type Delivery = (axum::http::HeaderMap, Vec<u8>);

/// Records webhook deliveries; fails the first `fail_first` with a 500.
#[derive(Clone)]
struct Hook {
    port: u16,
    received: Arc<Mutex<Vec<Delivery>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl Hook {
    async fn start() -> Self {
        let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let fail_first = Arc::new(Mutex::new(0usize));
        let (sink, failing) = (received.clone(), fail_first.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (sink, failing) = (sink.clone(), failing.clone());
                async move {
                    sink.lock().unwrap().push((headers, body.to_vec()));
                    let mut left = failing.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { port, received, fail_first }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.received.lock().unwrap().clone()
    }
}

/// Checks a delivery's signature as a receiver would, with our own HMAC.
fn verify(headers: &axum::http::HeaderMap, body: &[u8], secret: &str) -> bool {
    let timestamp = headers["x-tokaroo-timestamp"].to_str().unwrap();
    let age = time::OffsetDateTime::now_utc().unix_timestamp() - timestamp.parse::<i64>().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    (0..300).contains(&age) && headers["x-tokaroo-signature"].to_str().unwrap() == expected
}

/// The batch's actor while it runs (a finished one stays listed with its exit).
async fn batch_actor(gw: &Gateway, id: &str) -> Option<Value> {
    let tree = gw.actor_tree().await;
    let batches = find_actor(&tree, "urlbatches").expect("the urlbatches supervisor");
    find_actor(batches, &format!("urlbatch:{id}")).filter(|a| a["status"] == "running").cloned()
}

async fn finished_batch(gw: &Gateway, key: &str, id: &str, delivered: bool) -> Value {
    eventually("the batch to finish", || async {
        let r = gw.get(&format!("/v1/url/batches/{id}"), key).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let done = r.body["status"] == "completed" && (!delivered || !r.body["webhook"]["delivered_at"].is_null());
        done.then_some(r.body)
    })
    .await
}

#[tokio::test]
async fn a_batch_runs_as_an_actor_and_delivers_a_signed_webhook_after_retries() {
    let world = world().await;
    let gw = Gateway::start_with(options(&world).await).await;
    let (_, _, key) = tenant(&gw, "acme", 1.0).await;
    let port = world.site;
    let urls = json!([
        format!("http://shop.test:{port}/"),
        "https://paypa1-login.example/security-check",
        "not a url at all",
        format!("http://parked.test:{port}/forsale"),
        format!("http://young.test:{port}/"),
        format!("http://shop.test:{port}/go?to=http://10.0.0.1/"),
    ]);
    *world.hook.fail_first.lock().unwrap() = 2;
    let body = json!({"label": "import-1", "urls": urls, "profile": "affiliate-review",
                      "webhook_url": world.hook.url(), "webhook_secret": "whsec-test"});
    let r = gw.post("/v1/url/batch", &key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["object"], "url.batch");
    assert_eq!((r.body["total_urls"].as_u64(), r.body["failed_urls"].as_u64()), (Some(6), Some(1)));
    assert_eq!(r.body["webhook"]["url"], world.hook.url());
    let id = r.body["id"].as_str().unwrap().to_owned();

    let batch = finished_batch(&gw, &key, &id, true).await;
    assert_eq!((batch["completed_urls"].as_u64(), batch["failed_urls"].as_u64()), (Some(5), Some(1)), "{batch}");
    assert_eq!(batch["errors"][0]["input_index"], 2);
    assert_eq!(batch["errors"][0]["url"], "not a url at all");
    assert_eq!(batch["results"].as_array().unwrap().len(), 5);
    let decisions = &batch["summary"]["decisions"];
    let counted: u64 = DECISIONS.iter().map(|d| decisions[d].as_u64().unwrap()).sum();
    assert_eq!(counted, 5, "{batch}");
    assert!(decisions["block"].as_u64().unwrap() >= 1);
    assert!(batch["summary"]["average_score"].as_f64().unwrap() > 0.0);
    assert_eq!(batch["webhook"]["last_error"], Value::Null);

    // Three attempts: two 500s, then delivered; each signed over its own timestamp.
    let deliveries = world.hook.deliveries();
    assert_eq!(deliveries.len(), 3);
    for (headers, body) in &deliveries {
        assert!(verify(headers, body, "whsec-test"), "a bad signature: {headers:?}");
        assert!(!verify(headers, body, "another-secret"));
    }
    let sent: Value = serde_json::from_slice(&deliveries[2].1).unwrap();
    assert_eq!(sent["type"], "url.batch.completed");
    assert_eq!(sent["data"]["id"], id);
    assert_eq!(sent["data"]["results"].as_array().unwrap().len(), 5);

    // Charged per analysed URL, with its own request type; listed; private to the account.
    let usage = gw.get("/v1/usage?request_type=url_batch&limit=100", &key).await;
    assert_eq!(usage.body["data"].as_array().unwrap().len(), 5, "{}", usage.text);
    let list = gw.get("/v1/url/batches", &key).await;
    assert_eq!(list.body["data"][0]["id"], id);
    assert!(list.body["data"][0].get("results").is_none());
    let (_, _, other) = tenant(&gw, "other", 1.0).await;
    assert_eq!(gw.get(&format!("/v1/url/batches/{id}"), &other).await.status, 404);
    assert_eq!(gw.get("/v1/url/batches", &other).await.body["data"], json!([]));
    let history = gw.get("/v1/url/history", &key).await;
    assert_eq!(history.body["data"].as_array().unwrap().len(), 5);
    assert!(history.body["data"].as_array().unwrap().iter().all(|c| c["batch_id"] == id));

    // Refused at once: too many URLs, none, webhooks into private or metadata networks.
    let many: Vec<String> = (0..101).map(|i| format!("https://example.com/{i}")).collect();
    let shop = format!("http://shop.test:{port}/");
    for (body, says) in [
        (json!({"urls": many}), "at most 100"),
        (json!({"urls": []}), "at least one"),
        (json!({"urls": [shop], "webhook_url": "http://10.0.0.1/hook"}), "10.0.0.1"),
        (json!({"urls": [shop], "webhook_url": "http://169.254.169.254/"}), "169.254.169.254"),
        (json!({"urls": [shop], "webhook_url": "ftp://example.com/"}), "http(s)"),
        (json!({"urls": [shop], "webhook_secret": "s"}), "webhook_url"),
        (json!({"urls": [shop], "label": "x".repeat(300)}), "label"),
        (json!({"urls": "one"}), "invalid type"),
        (json!({"urls": [shop], "webhook_url": "http://intranet.test/hook"}), "10.0.0.7"),
        (json!({"urls": [shop], "webhook_url": "http://metadata.test/hook"}), "169.254.169.254"),
    ] {
        let r = gw.post("/v1/url/batch", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{}: {}", body.to_string().chars().take(120).collect::<String>(), r.text);
        assert!(r.text.contains(says), "{says}: {}", r.text);
    }
    // The operator's own runtime keys get no wider reach: any of them may ask for a check.
    let operator = gw.first_key.clone().unwrap();
    let r = gw.post("/v1/url/batch", &operator, json!({"urls": [shop], "webhook_url": "http://10.0.0.1/hook"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let into_intranet = format!("http://shop.test:{port}/go?to=http://intranet.test/admin");
    let r = analyse(&gw, &operator, json!({"url": into_intranet})).await;
    assert!(signal_ids(&r.body).contains(&"redirect_refused".to_owned()), "{}", r.body);
    assert_eq!(gw.get("/v1/url/batches/nope", &key).await.status, 404);
    let (_, _, broke) = tenant(&gw, "broke", 0.0).await;
    assert_eq!(gw.post("/v1/url/batch", &broke, json!({"urls": [shop]})).await.status, 402);
}

#[tokio::test]
async fn a_batch_failed_and_killed_midway_resumes_and_charges_each_url_once() {
    let world = world().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = options(&world).await.env("TOKAROO_URL_BATCH_CONCURRENCY", "2");
    let gw = Gateway::start_in(dir.path(), opts.clone()).await;
    let (_, _, key) = tenant(&gw, "acme", 1.0).await;
    let urls: Vec<String> = (0..20).map(|i| format!("http://shop.test:{}/slow?i={i}", world.site)).collect();
    let body = json!({"urls": urls, "webhook_url": world.hook.url(), "webhook_secret": "whsec-kill"});
    let r = gw.post("/v1/url/batch", &key, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(batch_actor(&gw, &id).await.is_some(), "the batch's actor is in the tree");
    let done_at_least = |n: u64| {
        let (gw, key, id) = (&gw, &key, &id);
        async move {
            eventually("URLs done", || async {
                let r = gw.get(&format!("/v1/url/batches/{id}"), key).await;
                (r.body["completed_urls"].as_u64().unwrap() >= n).then_some(())
            })
            .await
        }
    };
    done_at_least(3).await;
    // The actor fails midway: its analyses end with it, and its new self goes on.
    let r = gw.post("/admin/actors/fail", ADMIN_TOKEN, json!({"name": format!("urlbatch:{id}")})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    eventually("the batch's actor to restart", || async {
        batch_actor(&gw, &id).await.filter(|a| a["restarts"].as_u64() >= Some(1)).map(|_| ())
    })
    .await;
    done_at_least(8).await;
    gw.kill().await;

    let gw = Gateway::start_in(dir.path(), opts).await;
    let batch = finished_batch(&gw, &key, &id, true).await;
    assert_eq!(batch["completed_urls"], 20, "{batch}");
    assert_eq!(batch["failed_urls"], 0);
    assert_eq!(batch["results"].as_array().unwrap().len(), 20);

    // One usage row per URL, whatever the kill interrupted.
    let usage = gw.get("/v1/usage?request_type=url_batch&limit=100", &key).await;
    assert_eq!(usage.body["data"].as_array().unwrap().len(), 20, "{}", usage.text);
    let left = balance(&gw, &key).await;
    assert!((left - (1.0 - 20.0 * 0.001)).abs() < 1e-9, "{left}");
    let deliveries = world.hook.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert!(verify(&deliveries[0].0, &deliveries[0].1, "whsec-kill"));
    eventually("the finished batch's actor to leave", || async { batch_actor(&gw, &id).await.is_none().then_some(()) })
        .await;
}

/// A key bound to a workspace sees only that workspace's checks and batches; the account's
/// session sees them all.
#[tokio::test]
async fn workspace_keys_see_only_their_workspace() {
    let world = world().await;
    let gw = Gateway::start_with(options(&world).await).await;
    let keys = gw.neighbours().await;
    let shop = format!("http://shop.test:{}/", world.site);
    assert_eq!(analyse(&gw, &keys.research, json!({"url": shop})).await.status, 200);
    let r = gw.post("/v1/url/batch", &keys.research, json!({"urls": [shop]})).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    finished_batch(&gw, &keys.research, &id, false).await;

    let mine = gw.get("/v1/url/history", &keys.research).await;
    assert_eq!(mine.body["data"].as_array().unwrap().len(), 2, "{}", mine.text);
    assert_eq!(mine.body["data"][0]["workspace_id"], "research");
    let default_ws = &keys.default_ws;
    assert_eq!(gw.get("/v1/url/history", default_ws).await.body["data"], json!([]));
    assert_eq!(gw.get("/v1/url/stats", default_ws).await.body["total_checks"], 0);
    assert_eq!(gw.get("/v1/url/batches", default_ws).await.body["data"], json!([]));
    assert_eq!(gw.get(&format!("/v1/url/batches/{id}"), default_ws).await.status, 404);
    let all = gw.get("/v1/url/history", ADMIN_TOKEN).await;
    assert_eq!(all.body["data"].as_array().unwrap().len(), 2, "{}", all.text);
    assert_eq!(gw.get("/v1/url/stats", ADMIN_TOKEN).await.body["total_checks"], 2);
    assert_eq!(gw.get(&format!("/v1/url/batches/{id}"), ADMIN_TOKEN).await.status, 200);
    let other = gw.get("/v1/url/history", &keys.other_account).await;
    assert_eq!(other.body["data"], json!([]));
}
