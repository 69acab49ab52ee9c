//! The built-in embedding model on disk: `tokaroo models pull`, and the pull `serve` makes
//! itself when the model's directory is missing (so the README's run command ends with the
//! neural model active on a fresh machine).

use std::path::Path;

use tokaroo_actors::embed::{
    fetch::{self, ModelSource, Pulled},
    model_files,
};

use crate::config::Config;

/// `tokaroo models pull`: fetches and verifies the model into `dir` (default: the configured
/// model directory). Prints what it did.
pub async fn pull(dir: &Path, source: &str) -> Result<(), String> {
    let source = ModelSource::parse(source);
    println!("pulling {} from {} into {}", model_files::MODEL_NAME, source.describe(), dir.display());
    match fetch::pull(dir, &source).await? {
        Pulled::Fetched => println!("done: {} is verified (pinned SHA-256s) and in place", model_files::MODEL_NAME),
        Pulled::AlreadyPresent => println!("already present and verified in {}", dir.display()),
    }
    Ok(())
}

/// Before `serve` starts the engine: when the neural embedder is configured and its
/// directory lacks the model, pull it (unless `embedder.auto_pull` is off). A failed pull
/// does not stop the server: the engine then starts on the lexical fallback and says so.
pub async fn ensure_for_serve(config: &Config) {
    if config.embedder.kind != "neural" {
        return;
    }
    let dir = config.embed_model_dir();
    if model_files::is_present(&dir) {
        return;
    }
    if !config.embedder.auto_pull {
        tracing::warn!(dir = %dir.display(), "the embedding model is missing and embedder.auto_pull is off");
        return;
    }
    let source = ModelSource::parse(&config.embedder.model_source);
    tracing::info!(
        dir = %dir.display(),
        source = %source.describe(),
        "the embedding model is missing: pulling it (once; `tokaroo models pull` does the same)"
    );
    let started = std::time::Instant::now();
    match fetch::pull(&dir, &source).await {
        Ok(_) => {
            tracing::info!(dir = %dir.display(), secs = started.elapsed().as_secs_f64(), "embedding model pulled and verified")
        }
        Err(error) => tracing::warn!(
            %error,
            "pulling the embedding model failed: starting with the lexical fallback; run `tokaroo models pull` \
             or set TOKAROO_EMBED_MODEL_DIR to a directory holding the model"
        ),
    }
}
