//! Accounts' own connections: BYOK provider keys and self-hosted endpoints — management
//! routes, secrecy at rest and in answers, and tenant isolation.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    fakes::{openai::OpenAi, Fake},
    harness::*,
};

/// Every file under the data directory, concatenated (to look for leaked plaintext).
fn data_dir_bytes(gw: &Gateway) -> Vec<u8> {
    fn walk(dir: &std::path::Path, out: &mut Vec<u8>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.file_name().is_some_and(|n| n != "server.log") {
                out.extend(std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    let mut out = Vec::new();
    walk(&gw.data_dir, &mut out);
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn provider_keys_are_sealed_never_returned_and_scoped_to_their_account() {
    let gw = Gateway::start().await;
    let secret = "sk-ant-super-secret-value-123456";
    let r = gw
        .post(
            "/v1/provider-keys",
            ADMIN_TOKEN,
            json!({"provider": "anthropic", "label": "my-anthropic-key", "secret": secret, "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["created"], true);
    assert_eq!(r.body["provider"], "anthropic");
    assert_eq!(r.body["label"], "my-anthropic-key");
    assert_eq!(r.body["workspace_id"], "default");
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(!r.text.contains(secret));

    let list = gw.get("/v1/provider-keys", ADMIN_TOKEN).await;
    assert!(!list.text.contains(secret) && !list.text.contains("sk-ant"), "{}", list.text);
    let row = &list.body["data"][0];
    for field in [
        "id",
        "provider",
        "label",
        "workspace_id",
        "workspace_name",
        "status",
        "last_success_at",
        "last_failure_at",
        "last_failure_code",
        "estimated_reset_at",
    ] {
        assert!(row.get(field).is_some(), "{field} in {row}");
    }
    assert_eq!(row["workspace_name"], "Default");
    assert_eq!(gw.get("/v1/provider-keys?workspace_id=other", ADMIN_TOKEN).await.body["data"], json!([]));
    assert_eq!(
        gw.get("/v1/provider-keys?workspace_id=default", ADMIN_TOKEN).await.body["data"].as_array().unwrap().len(),
        1
    );

    // Sealed at rest: the plaintext is nowhere in the data directory, and not in the log.
    let stored = data_dir_bytes(&gw);
    assert!(!contains(&stored, secret), "the secret is stored encrypted");
    assert!(!gw.log().contains(secret), "the secret is never logged");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(gw.data_dir.join("master.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The key's connection is a live actor.
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("provider:anthropic:{id}")).is_some());

    // Another account sees nothing and cannot delete it.
    let (_, other) = gw.create_account("other").await;
    assert_eq!(gw.get("/v1/provider-keys", &other).await.body["data"], json!([]));
    assert_eq!(gw.delete(&format!("/v1/provider-keys/{id}"), &other).await.status, 404);

    let del = gw.delete(&format!("/v1/provider-keys/{id}"), ADMIN_TOKEN).await;
    assert_eq!(del.body, json!({"deleted": true, "id": id}));
    assert_eq!(gw.delete(&format!("/v1/provider-keys/{id}"), ADMIN_TOKEN).await.status, 404);
    assert!(find_actor(&gw.actor_tree().await, &format!("provider:anthropic:{id}")).is_none());
}

#[tokio::test]
async fn provider_key_input_is_validated_and_runtime_keys_are_refused() {
    let gw = Gateway::start().await;
    let cases = [
        (json!({"provider": "mistral", "secret": "x"}), 400),
        (json!({"provider": "openai", "secret": "  "}), 400),
        (json!({"provider": "openai"}), 400),
        (json!({"provider": "openai", "secret": "x", "workspace_id": "nope"}), 404),
    ];
    for (body, status) in cases {
        let r = gw.post("/v1/provider-keys", ADMIN_TOKEN, body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.text);
    }
    let key = gw.first_key.clone().unwrap();
    let r = gw.post("/v1/provider-keys", &key, json!({"provider": "openai", "secret": "x"})).await;
    assert_eq!(r.status, 403);
    assert_eq!(gw.get("/v1/local-endpoints", &key).await.status, 403);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_saved_as_unreachable_with_headers_sealed() {
    let gw = Gateway::start().await;
    let header_secret = "Bearer internal-token-987654321";
    let r = gw
        .post(
            "/v1/local-endpoints",
            ADMIN_TOKEN,
            json!({"url": "http://127.0.0.1:9", "label": "home-ollama", "default_model": "llama3.2", "headers": {"Authorization": header_secret}, "workspace_id": "default"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "unreachable");
    assert_eq!(r.body["has_headers"], true);
    assert!(!r.text.contains(header_secret));
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(!contains(&data_dir_bytes(&gw), header_secret), "headers are sealed at rest");

    let list = gw.get("/v1/local-endpoints", ADMIN_TOKEN).await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    assert!(!list.text.contains(header_secret));
    assert_eq!(gw.get("/v1/local-endpoints?workspace_id=elsewhere", ADMIN_TOKEN).await.body["data"], json!([]));
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}/models"), ADMIN_TOKEN).await.body["data"], json!([]));
    let re = gw.post(&format!("/v1/local-endpoints/{id}/recheck"), ADMIN_TOKEN, json!({})).await;
    assert_eq!(re.body["status"], "unreachable");
    let p =
        gw.patch(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN, json!({"label": "renamed", "headers": null})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["label"], "renamed");
    assert_eq!(p.body["has_headers"], false);
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("endpoint:{id}")).is_some(), "{tree:#}\n{}", gw.log());
    // Its recheck runs as a task beside it (a slow probe never holds up the endpoint's actor).
    let recheck = find_actor(&tree, &format!("recheck:{id}")).expect("the endpoint's recheck task");
    assert_eq!((recheck["kind"].as_str(), recheck["status"].as_str()), (Some("recheck"), Some("running")), "{recheck}");

    // Requests still work: they fall back to managed routing while the endpoint is down.
    let key = gw.first_key.clone().unwrap();
    let chat = gw
        .post("/v1/chat/completions", &key, json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text);

    let (_, other) = gw.create_account("other").await;
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}"), &other).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/local-endpoints/{id}"), &other).await.status, 404);
    assert_eq!(gw.delete(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN).await.status, 200);
    assert_eq!(gw.get(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN).await.status, 404);
    let tree = gw.actor_tree().await;
    assert!(find_actor(&tree, &format!("endpoint:{id}")).is_none());
    assert!(find_actor(&tree, &format!("recheck:{id}")).is_none(), "the recheck stops with its endpoint");

    for bad in [
        json!({"url": "ftp://x"}),
        json!({"url": "not a url"}),
        json!({"url": "http://x", "headers": {"Bad Header": "v"}}),
        json!({"label": "no url"}),
    ] {
        assert_eq!(gw.post("/v1/local-endpoints", ADMIN_TOKEN, bad.clone()).await.status, 400, "{bad}");
    }
}

#[tokio::test]
async fn embeddings_answer_in_openai_shape_and_bad_input_is_400() {
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let r = gw.post("/v1/embeddings", &key, json!({"input": "The quick brown fox"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "list");
    assert_eq!(r.body["model"], "text-embedding-3-small");
    assert_eq!(r.body["data"][0]["embedding"].as_array().unwrap().len(), 1536);
    assert!(r.body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(r.header("x-tokaroo-cost").is_some());
    let r = gw.post("/v1/embeddings", &key, json!({"input": ["a", "b", "c"], "dimensions": 256})).await;
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[2]["index"], 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 256);
    for (body, needle) in [
        (json!({}), "input"),
        (json!({"input": []}), "input"),
        (json!({"input": [1, 2]}), "input"),
        (json!({"input": "x", "dimensions": 0}), "dimensions"),
        (json!({"input": "x", "model": "gpt-4o"}), "not an embedding model"),
        (json!({"input": "x", "encoding_format": "hex"}), "encoding_format"),
    ] {
        let r = gw.post("/v1/embeddings", &key, body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.body["error"]["message"].as_str().unwrap().contains(needle), "{body}: {}", r.text);
    }
}

// ---- The outbound guard: what endpoints may reach, redirects, headers, credentials. ----

/// How a [`Raw`] server answers one request.
#[derive(Clone)]
enum Reply {
    Json(String),
    Redirect(String),
    /// 200, then `prefix` and bytes that never end (until the client hangs up).
    Endless {
        content_type: &'static str,
        prefix: &'static str,
    },
}

/// A loopback HTTP/1.1 server answering by path, for what the fakes cannot do: redirects and
/// bodies that never end. Records `METHOD path` of every request and counts bytes written.
struct Raw {
    root: String,
    hits: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Raw {
    async fn start(route: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Raw {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let written = Arc::new(AtomicU64::new(0));
        let route = Arc::new(route);
        let (h, w) = (hits.clone(), written.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (route, hits, written) = (route.clone(), h.clone(), w.clone());
                tokio::spawn(async move {
                    let Some((line, body)) = read_request(&mut socket).await else { return };
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    hits.lock().unwrap().push(line.rsplit_once(' ').map_or(line.clone(), |(l, _)| l.to_owned()));
                    let _ = match route(&path, &body) {
                        Reply::Json(body) => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                                body.len()
                            );
                            socket.write_all(format!("{head}{body}").as_bytes()).await
                        }
                        Reply::Redirect(to) => {
                            let head = format!("HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                            socket.write_all(head.as_bytes()).await
                        }
                        Reply::Endless { content_type, prefix } => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n{prefix}"
                            );
                            let filler = vec![b'x'; 64 << 10];
                            let mut result = socket.write_all(head.as_bytes()).await;
                            while result.is_ok() {
                                result = socket.write_all(&filler).await;
                                written.fetch_add(filler.len() as u64, Ordering::Relaxed);
                            }
                            result
                        }
                    };
                });
            }
        });
        Raw { root, hits, written, task }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

/// The request line and body of one HTTP/1.1 request.
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    Some((head.lines().next().unwrap_or_default().to_owned(), body))
}

fn error_message(r: &Resp) -> String {
    r.body["error"]["message"].as_str().or_else(|| r.body["message"].as_str()).unwrap_or(&r.text).to_owned()
}

#[tokio::test]
async fn tenants_cannot_point_endpoints_at_private_loopback_link_local_or_metadata_addresses() {
    let gw = Gateway::start().await;
    let (_, tenant) = gw.create_account("tenant").await;
    // A live OpenAI-compatible server on loopback: today's answer would be "healthy" plus its
    // model list.
    let internal = Fake::start(OpenAi { models: vec!["internal-model"] }, "").await;
    let port = internal.root.rsplit(':').next().unwrap().to_owned();
    let cases = [
        (internal.root.clone(), "127.0.0.1, a loopback address"),
        (format!("http://localhost:{port}/v1"), "a loopback address"),
        ("http://10.1.2.3:8000".into(), "10.1.2.3, a private-network address"),
        ("http://172.16.0.1/v1".into(), "172.16.0.1, a private-network address"),
        ("http://192.168.1.10:11434".into(), "192.168.1.10, a private-network address"),
        ("http://169.254.169.254/latest".into(), "169.254.169.254, a cloud metadata address"),
        ("http://100.64.0.1".into(), "100.64.0.1, a carrier-grade NAT (shared) address"),
        ("http://224.0.0.1".into(), "224.0.0.1, a multicast address"),
        ("http://0.0.0.0:8080".into(), "0.0.0.0, an unspecified (this host) address"),
        (format!("http://[::1]:{port}"), "::1, a loopback address"),
        ("http://[fc00::1]/v1".into(), "fc00::1, a private-network address"),
        ("http://[fe80::1]/v1".into(), "fe80::1, a link-local address"),
        (format!("http://[::ffff:127.0.0.1]:{port}"), "127.0.0.1, a loopback address"),
        ("http://[::ffff:a9fe:a9fe]/".into(), "169.254.169.254, a cloud metadata address"),
        ("http://0x7f.1:9".into(), "127.0.0.1, a loopback address"),
    ];
    for (url, why) in cases {
        let r = gw.post("/v1/local-endpoints", &tenant, json!({"url": url})).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        let message = error_message(&r);
        assert!(message.contains(why), "{url}: {message}");
        if why.contains("metadata") || why.contains("link-local") {
            // Never opened by allow_private_networks: only an allowed_cidrs entry opens them.
            assert!(message.contains("endpoints.allowed_cidrs"), "{url}: {message}");
        } else {
            assert!(message.contains("tenants may not reach private networks"), "{url}: {message}");
        }
    }
    assert!(internal.requests().is_empty(), "the internal server was never called");
    assert_eq!(gw.get("/v1/local-endpoints", &tenant).await.body["data"], json!([]));

    // The operator's own account may reach its private network, but never the gateway itself.
    let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": internal.root})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    let gw_port = gw.base.rsplit(':').next().unwrap().to_owned();
    for own in [gw.base.clone(), format!("http://localhost:{gw_port}"), format!("http://0.0.0.0:{gw_port}/v1")] {
        let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": own})).await;
        assert_eq!(r.status, 400, "{own}: {}", r.text);
        assert!(error_message(&r).contains("this gateway's own address"), "{own}: {}", r.text);
    }
    // Nor the metadata service: only an explicit allow-list opens it.
    let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": "http://169.254.169.254/"})).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(error_message(&r).contains("endpoints.allowed_cidrs"), "{}", r.text);
}

#[tokio::test]
async fn the_operator_can_open_private_networks_or_cidrs_to_tenants_and_connections_stay_guarded() {
    let internal = Fake::start(OpenAi { models: vec!["internal-model"] }, "").await;
    let dir = tempfile::tempdir().unwrap();
    let open = Options::default().env("TOKAROO_ENDPOINTS_ALLOW_PRIVATE_NETWORKS", "true");
    let gw = Gateway::start_in(dir.path(), open).await;
    let (_, tenant) = gw.create_account("tenant").await;
    let r = gw.post("/v1/local-endpoints", &tenant, json!({"url": internal.root})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    assert_eq!(r.body["models"], json!(["internal-model"]));
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Still never the gateway itself, nor metadata.
    for (url, why) in [(gw.base.clone(), "own address"), ("http://169.254.169.254".into(), "metadata")] {
        let r = gw.post("/v1/local-endpoints", &tenant, json!({"url": url})).await;
        assert_eq!(r.status, 400, "{url}: {}", r.text);
        assert!(error_message(&r).contains(why), "{url}: {}", r.text);
    }
    gw.stop().await;

    // Restarted without the permission: the stored endpoint is refused when connecting (as a
    // name that rebinds to a private address would be), and nothing reaches the server.
    let seen = internal.requests().len();
    let gw = Gateway::start_in(dir.path(), Options::default()).await;
    let r = gw.post(&format!("/v1/local-endpoints/{id}/recheck"), &tenant, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "unreachable", "{}", r.text);
    assert_eq!(internal.requests().len(), seen, "the guard refused before connecting");
    assert!(gw.log().contains("127.0.0.1 is a loopback address"), "the refusal is logged");
    gw.stop().await;

    // An allowed CIDR opens just that range.
    let listed = Options::default().env("TOKAROO_ENDPOINTS_ALLOWED_CIDRS", "127.0.0.0/8, 10.9.0.0/16");
    let gw = Gateway::start_with(listed).await;
    let (_, tenant) = gw.create_account("tenant").await;
    let r = gw.post("/v1/local-endpoints", &tenant, json!({"url": internal.root})).await;
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let p = gw.patch(&format!("/v1/local-endpoints/{id}"), &tenant, json!({"url": "http://192.168.0.1"})).await;
    assert_eq!(p.status, 400, "{}", p.text);
    assert!(error_message(&p).contains("192.168.0.1, a private-network address"), "{}", p.text);
    let r = gw.post("/v1/local-endpoints", &tenant, json!({"url": gw.base})).await;
    assert!(error_message(&r).contains("own address"), "listing a range never opens the gateway: {}", r.text);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Raw::start(|_, _| Reply::Json(r#"{"data":[{"id":"secret-model"}]}"#.into())).await;
    let to = target.root.clone();
    let redirecting = Raw::start(move |path, _| Reply::Redirect(format!("{to}{path}"))).await;
    let gw = Gateway::start().await;
    let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": redirecting.root})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "unreachable", "{}", r.text);
    assert_eq!(r.body["models"], json!([]));
    assert!(!redirecting.hits().is_empty(), "the endpoint was asked");
    assert!(target.hits().is_empty(), "the redirect's target never got a request: {:?}", target.hits());
}

#[tokio::test]
async fn host_and_hop_by_hop_headers_cannot_be_set_on_endpoints() {
    let gw = Gateway::start().await;
    for name in [
        "Host",
        "host",
        "Connection",
        "Keep-Alive",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        // What cloud metadata services take as proof a request was not forwarded.
        "Metadata-Flavor",
        "Metadata",
        "X-Google-Metadata-Request",
        "X-aws-ec2-metadata-token",
        "X-aws-ec2-metadata-token-ttl-seconds",
    ] {
        let body = json!({"url": "http://127.0.0.1:9", "headers": {name: "x"}});
        let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, body).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text);
        assert!(error_message(&r).contains(name), "{name}: {}", r.text);
    }
    let r = gw
        .post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": "http://127.0.0.1:9", "headers": {"X-Api-Key": "k"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["id"].as_str().unwrap();
    let p = gw.patch(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN, json!({"headers": {"Host": "internal"}})).await;
    assert_eq!(p.status, 400, "{}", p.text);
}

#[tokio::test]
async fn credentials_in_an_endpoint_url_are_sealed_sent_as_basic_auth_and_shown_redacted() {
    let box_ = Fake::start(OpenAi { models: vec!["llama3.2"] }, "").await;
    let password = "pw-7c1d2e9f0a";
    let url = box_.root.replace("http://", &format!("http://alice:{password}@")) + "/v1";
    let gw = Gateway::start().await;
    let r = gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": url})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    let shown = box_.root.replace("http://", "http://***@") + "/v1";
    assert_eq!(r.body["url"], shown);
    assert_eq!(r.body["label"], shown);
    assert!(!r.text.contains(password) && !r.text.contains("alice"), "{}", r.text);
    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("alice:{password}")));
    let models = box_.requests().into_iter().find(|r| r.path.ends_with("/models")).expect("discovery");
    assert_eq!(models.header("authorization"), Some(basic.as_str()));
    assert!(!models.path.contains(password));

    let id = r.body["id"].as_str().unwrap().to_owned();
    let key = gw.first_key.clone().unwrap();
    let chat = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status, 200, "{}", chat.text);
    assert_eq!(box_.answer_requests()[0].header("authorization"), Some(basic.as_str()));
    for view in [
        gw.get("/v1/local-endpoints", ADMIN_TOKEN).await.text,
        gw.get(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN).await.text,
        gw.post(&format!("/v1/local-endpoints/{id}/recheck"), ADMIN_TOKEN, json!({})).await.text,
        gw.patch(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN, json!({"label": "box"})).await.text,
        gw.actor_tree().await.to_string(),
    ] {
        assert!(!view.contains(password), "{view}");
    }
    assert!(!contains(&data_dir_bytes(&gw), password), "the credentials are sealed at rest");
    assert!(!gw.log().contains(password), "and never logged");
    // A new URL replaces the sealed one.
    let p = gw.patch(&format!("/v1/local-endpoints/{id}"), ADMIN_TOKEN, json!({"url": box_.root})).await;
    assert_eq!(p.body["url"], box_.root.as_str());
}

/// A server that writes forever fails the one call it answers, within the caps; the gateway
/// stays up and serves the next request.
#[tokio::test]
async fn endless_upstream_bodies_fail_only_their_own_call() {
    const CHAT_PREFIX: &str = r#"{"choices":[{"message":{"role":"assistant","content":""#;
    const SSE_PREFIX: &str = r#"data: {"choices":[{"delta":{"content":""#;
    let endless_models =
        Raw::start(|_, _| Reply::Endless { content_type: "application/json", prefix: r#"{"data":[{"id":""# }).await;
    let endless_answers = Raw::start(|path, body| {
        if path.ends_with("/models") {
            Reply::Json(r#"{"data":[{"id":"llama3.2"}]}"#.into())
        } else if body.contains(r#""stream":true"#) {
            Reply::Endless { content_type: "text/event-stream", prefix: SSE_PREFIX }
        } else {
            Reply::Endless { content_type: "application/json", prefix: CHAT_PREFIX }
        }
    })
    .await;
    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();

    // Model discovery.
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        gw.post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": endless_models.root})),
    )
    .await
    .expect("discovery of an endless model list ends");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "unreachable", "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(20), "failed by the cap, not a timeout");
    assert!(endless_models.written.load(Ordering::Relaxed) < 64 << 20, "the gateway stopped reading");
    assert_eq!(gw.get("/livez", ADMIN_TOKEN).await.status, 200);

    let r = gw
        .post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": endless_answers.root, "workspace_id": "default"}))
        .await;
    assert_eq!(r.body["status"], "healthy", "{}", r.text);

    // A non-streamed answer that never ends: that route fails, the next one answers.
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), gw.post("/v1/chat/completions", &key, body))
        .await
        .expect("an endless answer ends");
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(endless_answers.hits().iter().any(|h| h.contains("/chat/completions")), "{:?}", endless_answers.hits());
    assert!(endless_answers.written.load(Ordering::Relaxed) < 64 << 20, "the gateway stopped reading");

    // A streamed answer whose first event never ends.
    let asked = endless_answers.hits().len();
    let body = json!({"model": "llama3.2", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = tokio::time::timeout(Duration::from_secs(30), gw.post("/v1/chat/completions", &key, body))
        .await
        .expect("an endless event ends");
    assert!(endless_answers.hits().len() > asked, "the stream was asked for");
    assert!(!r.text.contains("xxxxxxxx"), "no part of the oversized event was relayed");
    assert!(endless_answers.written.load(Ordering::Relaxed) < 128 << 20, "the gateway stopped reading");
    assert!(gw.log().contains("KiB cap"), "the cap is named in the log:\n{}", gw.log());

    // The gateway is fine.
    let r = gw
        .post(
            "/v1/chat/completions",
            &key,
            json!({"model": "auto", "messages": [{"role": "user", "content": "again"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
