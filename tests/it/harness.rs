//! The shared harness: [`Gateway`] runs the real server binary; [`Resp`] is one HTTP answer.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef0123";
pub const BIN: &str = env!("CARGO_BIN_EXE_tokaroo");

pub struct Gateway {
    child: Child,
    pub base: String,
    pub data_dir: PathBuf,
    /// Everything the server printed on stdout so far.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// The bootstrap API key, when this start printed one.
    pub first_key: Option<String>,
    pub first_session: Option<String>,
    client: reqwest::Client,
    _temp: Option<tempfile::TempDir>,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A fake OpenAI as the only provider.
    pub fn openai(self, fake: &crate::fakes::Fake) -> Self {
        self.env("OPENAI_API_KEY", &fake.key).env("TOKAROO_OPENAI_BASE_URL", &format!("{}/v1", fake.root))
    }
}

/// Builds the `serve` command with the test defaults: random port, fast supervision backoff,
/// fault injection on, the response cache off (so every request of the other suites reaches
/// its route; `cache.rs` turns it on), logs to `<data_dir>/server.log`.
pub fn serve_command(data_dir: &Path, options: &Options) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(data_dir)
        .env("TOKAROO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TOKAROO_SUPERVISION_INITIAL_BACKOFF_MS", "50")
        .env("TOKAROO_FAULT_INJECTION", "1")
        .env("TOKAROO_CACHE_ENABLED", "false")
        .env("TOKAROO_LOG_LEVEL", "info")
        // One copy of each model for every server the tests start.
        .env("TOKAROO_EMBED_MODEL_DIR", tokaroo_actors::test_support::test_model_path())
        .env("TOKAROO_STATIC_MODEL_DIR", tokaroo_actors::test_support::test_static_model_path())
        .env_remove("RUST_LOG")
        .env_remove("TOKAROO_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.join("server.log"));
    match log {
        Ok(file) => cmd.stderr(Stdio::from(file)),
        Err(_) => cmd.stderr(Stdio::null()),
    };
    cmd
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().to_path_buf();
        let mut gw = Self::start_in(&dir, options).await;
        gw._temp = Some(temp);
        gw
    }

    /// Starts a server on an existing data directory (restarts keep the directory).
    pub async fn start_in(data_dir: &Path, options: Options) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        // Pulled once before the first server, so no start waits on a download.
        tokaroo_actors::test_support::test_model_dir().await;
        tokaroo_actors::test_support::test_static_model_dir().await;
        let mut child = serve_command(data_dir, &options).spawn().expect("spawn tokaroo");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = reader.next_line().await {
                if let Some(addr) = line.strip_prefix("Tokaroo listening on ") {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr.trim().to_owned());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        // Generous: a loaded 2-core CI machine runs many gateways (each loading the embedder) at once.
        let base = match tokio::time::timeout(Duration::from_secs(90), addr_rx).await {
            Ok(Ok(base)) => base,
            _ => {
                let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
                panic!("server did not start; its log:\n{log}");
            }
        };
        let printed = lines.lock().unwrap().clone();
        let find = |label: &str| printed.iter().find_map(|l| l.split_once(label).map(|(_, v)| v.trim().to_owned()));
        Self {
            first_key: find("api key (workspace `default`):"),
            first_session: find("dashboard session token:"),
            child,
            base,
            data_dir: data_dir.to_path_buf(),
            stdout: lines,
            client: tokaroo_actors::routing::client::client(),
            _temp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.client.request(method, self.url(path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        into_resp(req.send().await.expect("request reaches the server")).await
    }

    pub async fn raw(&self, req: reqwest::RequestBuilder) -> Resp {
        into_resp(req.send().await.expect("request reaches the server")).await
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn put_json(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a key in the operator account; returns (id, secret).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let r = self.post("/v1/keys", ADMIN_TOKEN, body).await;
        assert_eq!(r.status, 200, "create key: {}", r.text);
        (r.body["id"].as_str().unwrap().to_owned(), r.body["key"].as_str().unwrap().to_owned())
    }

    /// Creates a tenant account; returns (account id, session token).
    pub async fn create_account(&self, name: &str) -> (String, String) {
        let r = self.post("/admin/accounts", ADMIN_TOKEN, serde_json::json!({ "name": name })).await;
        assert_eq!(r.status, 200, "create account: {}", r.text);
        (r.body["id"].as_str().unwrap().to_owned(), r.body["session_token"].as_str().unwrap().to_owned())
    }

    /// Keys for isolation tests: the first key (workspace `default`), a key of a new workspace
    /// `research` of the same account, and a key of another, funded account.
    pub async fn neighbours(&self) -> Neighbours {
        let ws =
            self.post("/v1/workspaces", ADMIN_TOKEN, json!({"workspace_id": "research", "name": "Research"})).await;
        assert!(ws.status.is_success(), "{}", ws.text);
        let (_, research) = self.create_key(json!({"workspace_id": "research"})).await;
        let (tenant_id, tenant) = self.create_account("tenant").await;
        let credit =
            self.post(&format!("/admin/accounts/{tenant_id}/credits"), ADMIN_TOKEN, json!({"amount_usd": 5})).await;
        assert!(credit.status.is_success(), "{}", credit.text);
        let other = self.post("/v1/keys", &tenant, json!({"name": "k"})).await;
        assert!(other.status.is_success(), "{}", other.text);
        Neighbours {
            default_ws: self.first_key.clone().expect("the first key"),
            research,
            other_account: other.body["key"].as_str().expect("a key").to_owned(),
        }
    }

    pub async fn actor_tree(&self) -> Value {
        let r = self.get("/admin/actors", ADMIN_TOKEN).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub async fn stop(mut self) -> Option<i32> {
        signal(self.pid(), "-TERM");
        let status =
            tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("server exits").unwrap();
        status.code()
    }

    /// `kill -9`: no shutdown, as a crash; waits for the process to be gone.
    pub async fn kill(mut self) {
        signal(self.pid(), "-KILL");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("server dies").unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").arg(sig).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill {sig} {pid}");
}

async fn into_resp(response: reqwest::Response) -> Resp {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, body, text }
}

/// Finds a node by name anywhere in an actor tree.
/// See [`Gateway::neighbours`].
pub struct Neighbours {
    pub default_ws: String,
    pub research: String,
    pub other_account: String,
}

pub fn find_actor<'a>(node: &'a Value, name: &str) -> Option<&'a Value> {
    if node["name"] == name {
        return Some(node);
    }
    node["children"].as_array()?.iter().find_map(|c| find_actor(c, name))
}

/// Polls `check` until it returns Some or the timeout passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub use reqwest::Method as HttpMethod;
