//! The built-in models on disk: `tokaroo models pull`, and the pull `serve` makes itself when
//! a model's directory is missing (so the README's run command ends with both models active
//! on a fresh machine). Two models: all-MiniLM-L6-v2 (the embedder) and WordLlama (source
//! chunks' static embedder); see `tokaroo_actors::embed::model_files`.

use std::path::{Path, PathBuf};

use tokaroo_actors::embed::{
    fetch::{self, ModelSource, Pulled},
    model_files::{PinnedModel, MINILM, WORDLLAMA},
};

use crate::config::Config;

/// A model this configuration uses, where it goes, and where it comes from.
pub struct Wanted {
    pub model: &'static PinnedModel,
    pub dir: PathBuf,
    pub source: String,
}

/// Both built-in models, each with its configured directory and source.
pub fn configured(config: &Config) -> [Wanted; 2] {
    [
        Wanted { model: &MINILM, dir: config.embed_model_dir(), source: config.embedder.model_source.clone() },
        Wanted {
            model: &WORDLLAMA,
            dir: config.static_model_dir(),
            source: config.knowledge.static_model_source.clone(),
        },
    ]
}

/// The models `config` runs on: MiniLM for the neural embedder, WordLlama for static chunks.
pub fn wanted(config: &Config) -> Vec<Wanted> {
    let uses = |model: &PinnedModel| {
        if model.name == MINILM.name {
            config.embedder.kind == "neural"
        } else {
            config.knowledge.chunk_embedder == "static"
        }
    };
    configured(config).into_iter().filter(|w| uses(w.model)).collect()
}

/// `tokaroo models pull`: fetches and verifies a model into `dir`. Prints what it did.
pub async fn pull(model: &'static PinnedModel, dir: &Path, source: &str) -> Result<(), String> {
    let source = ModelSource::parse(source);
    println!("pulling {} from {} into {}", model.name, source.describe(model), dir.display());
    match fetch::pull(model, dir, &source).await? {
        Pulled::Fetched => println!("done: {} is verified (pinned SHA-256s) and in place", model.name),
        Pulled::AlreadyPresent => println!("already present and verified in {}", dir.display()),
    }
    Ok(())
}

/// Before `serve` starts the engine: each model the configuration uses whose directory lacks
/// it is pulled (unless `embedder.auto_pull` is off). A failed pull does not stop the server:
/// the engine then starts on its fallback (lexical for the embedder, the embedder itself for
/// chunks) and says so.
pub async fn ensure_for_serve(config: &Config) {
    for Wanted { model, dir, source } in wanted(config) {
        if model.is_present(&dir) {
            continue;
        }
        if !config.embedder.auto_pull {
            tracing::warn!(model = model.name, dir = %dir.display(), "a model is missing and embedder.auto_pull is off");
            continue;
        }
        let source = ModelSource::parse(&source);
        tracing::info!(
            model = model.name,
            dir = %dir.display(),
            source = %source.describe(model),
            "a model is missing: pulling it (once; `tokaroo models pull` does the same)"
        );
        let started = std::time::Instant::now();
        match fetch::pull(model, &dir, &source).await {
            Ok(_) => tracing::info!(
                model = model.name,
                dir = %dir.display(),
                secs = started.elapsed().as_secs_f64(),
                "model pulled and verified"
            ),
            Err(error) => tracing::warn!(
                model = model.name,
                %error,
                "pulling a model failed: starting without it (see the fallback logged next); run `tokaroo models \
                 pull`, or point TOKAROO_EMBED_MODEL_DIR / TOKAROO_STATIC_MODEL_DIR at a directory holding it"
            ),
        }
    }
}
