//! `POST /v1/images/generations`: the catalog's image models that take the request (size,
//! quality, count), ordered by mode, tried with fallback on the same failures as chat;
//! priced per image from the catalog's table, reserved at the worst case, settled as one
//! usage row of type `image`.
//!
//! The request speaks OpenAI's words (`1024x1792`, `hd`); each model gets its own
//! (`1024x1536`/`high` for GPT Image, `9:16`/`2K` for Google's): [`native_options`].

use tokaroo_storage::records::UsageRow;

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::Charge,
    routing::{
        catalog::{CatalogModel, MediaSpec},
        providers::{self, GeneratedImage, ImageCall, ProviderError},
    },
    runtime::Runtime,
};

pub const MAX_PROMPT_CHARS: usize = 32_000;
pub const MAX_IMAGES: u32 = 10;
/// What the spec names; a model's own sizes and qualities are taken too.
pub const SPEC_SIZES: [&str; 3] = ["1024x1024", "1024x1792", "1792x1024"];
pub const STYLES: [&str; 2] = ["vivid", "natural"];

/// A checked image request.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub prompt: String,
    /// A routing mode, or a native image model the client named.
    pub mode: Mode,
    pub model: Option<String>,
    pub n: u32,
    pub size: String,
    pub quality: Option<String>,
    pub style: Option<String>,
    /// Answered as URLs this gateway serves: the images are kept before the charge.
    pub as_url: bool,
}

/// What served the images.
#[derive(Debug)]
pub struct ImageOutcome {
    /// Their bytes are empty when kept for URLs (`media_ids`, in the same order).
    pub images: Vec<GeneratedImage>,
    pub media_ids: Vec<String>,
    pub model: String,
    pub provider: &'static str,
    pub charge: Charge,
    /// The media gate's permit, held until this answer is dropped (`serve_images`).
    pub permit: Option<super::media::MediaPermit>,
}

/// A model able to take the request, with the words and the price it takes it at.
#[derive(Debug, Clone)]
struct Candidate {
    model: CatalogModel,
    size: String,
    quality: String,
    usd_per_image: f64,
}

/// `WIDTH x HEIGHT` in pixels.
fn pixels(size: &str) -> Option<(u32, u32)> {
    let (w, h) = size.split_once('x')?;
    Some((w.parse().ok().filter(|w| *w > 0)?, h.parse().ok().filter(|h| *h > 0)?))
}

/// `W:H`.
fn ratio(aspect: &str) -> Option<f64> {
    let (w, h) = aspect.split_once(':')?;
    let (w, h): (f64, f64) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0.0 && h > 0.0).then(|| w / h)
}

/// The size and quality `spec`'s model takes for the request's, when it takes it at all.
fn native_options(spec: &MediaSpec, size: &str, quality: Option<&str>) -> Option<(String, String)> {
    let pick = |wanted: &[&str]| wanted.iter().find(|q| spec.qualities.iter().any(|m| m == *q)).map(|q| q.to_string());
    let native_size = if spec.sizes.iter().any(|s| s == size) {
        size.to_owned()
    } else {
        // Google's models take an aspect ratio: the listed one within 3% of the request's.
        // A model of pixel sizes takes the spec's portrait and landscape (1024x1792,
        // 1792x1024) at its own of the same orientation and near shape (within 20%, at most
        // its 1024-based sizes: 1024x1536).
        let (w, h) = pixels(size)?;
        let wanted = f64::from(w) / f64::from(h);
        let shape = |s: &String| match pixels(s) {
            Some((sw, sh)) => (sw.min(sh) == 1024).then(|| (f64::from(sw) / f64::from(sh), 0.20)),
            None => ratio(s).map(|r| (r, 0.03)),
        };
        spec.sizes
            .iter()
            .filter_map(|s| Some((s, shape(s)?)))
            .filter(|(_, (r, tolerance))| (r / wanted - 1.0).abs() <= *tolerance && (*r > 1.0) == (wanted > 1.0))
            .min_by(|a, b| (a.1 .0 / wanted - 1.0).abs().total_cmp(&(b.1 .0 / wanted - 1.0).abs()))?
            .0
            .clone()
    };
    let native_quality = match quality {
        None | Some("auto") => pick(&["standard", "medium", "1K"]).or_else(|| spec.qualities.first().cloned())?,
        Some("standard") => pick(&["standard", "medium", "1K"])?,
        Some("hd") => pick(&["hd", "high", "2K"])?,
        Some(own) => pick(&[own])?,
    };
    Some((native_size, native_quality))
}

/// Every size some image model takes, for the 400 that names them.
pub fn known_sizes(models: &[CatalogModel]) -> Vec<String> {
    let mut sizes: Vec<String> = models
        .iter()
        .filter_map(|m| m.media.as_ref())
        .filter(|s| s.kind == "image")
        .flat_map(|s| s.sizes.iter().filter(|x| pixels(x).is_some()).cloned())
        .collect();
    sizes.sort();
    sizes.dedup();
    sizes
}

fn latency_rank(class: &str) -> u8 {
    match class {
        "fast" => 0,
        "medium" => 1,
        _ => 2,
    }
}

impl Runtime {
    /// The image models that take `req`, best first for its mode.
    fn image_candidates(&self, req: &ImageRequest) -> Result<Vec<Candidate>, EngineError> {
        let mut candidates: Vec<Candidate> = self
            .media_models(req.model.as_deref(), "image", "an image", "does not generate images")?
            .into_iter()
            .filter_map(|(m, spec)| {
                if spec.max_n.is_some_and(|max| req.n > max) {
                    return None;
                }
                let (size, quality) = native_options(spec, &req.size, req.quality.as_deref())?;
                let usd_per_image = *spec.price_per_image.get(&format!("{size}/{quality}"))?;
                Some(Candidate { model: m.clone(), size, quality, usd_per_image })
            })
            .collect();
        match req.mode {
            Mode::Max => candidates.sort_by(|a, b| {
                b.model.quality.total_cmp(&a.model.quality).then(a.usd_per_image.total_cmp(&b.usd_per_image))
            }),
            Mode::Fast => candidates.sort_by(|a, b| {
                latency_rank(&a.model.latency_class)
                    .cmp(&latency_rank(&b.model.latency_class))
                    .then(a.usd_per_image.total_cmp(&b.usd_per_image))
            }),
            // Good enough (quality 80 or more) at the lowest price, then the rest by quality.
            Mode::Auto => candidates.sort_by(|a, b| {
                let (ga, gb) = (a.model.quality >= 80.0, b.model.quality >= 80.0);
                gb.cmp(&ga).then_with(|| {
                    if ga {
                        a.usd_per_image.total_cmp(&b.usd_per_image)
                    } else {
                        b.model.quality.total_cmp(&a.model.quality)
                    }
                })
            }),
        }
        Ok(candidates)
    }

    /// Generates, with fallback, and settles one `image` row. Run in a task of its own
    /// (`serve_images`): a client that leaves cancels nothing the upstream bills.
    pub(crate) async fn images(
        &self,
        key: &KeyEntry,
        req: &ImageRequest,
        request_id: Option<String>,
    ) -> Result<ImageOutcome, EngineError> {
        let candidates = self.image_candidates(req)?;
        if candidates.is_empty() {
            return Err(EngineError::invalid(format!(
                "no image model takes size {:?} with quality {:?} and n = {}; see GET /v1/pricing",
                req.size,
                req.quality.as_deref().unwrap_or("standard"),
                req.n
            )));
        }
        let routes = self.media_routes(key, &candidates, |c| &c.model);
        if routes.is_empty() {
            return Err(EngineError::Unavailable("No image provider is configured (OpenAI or Gemini)".into()));
        }
        let n = f64::from(req.n);
        let baseline_usd = candidates.iter().map(|c| c.usd_per_image).fold(0.0, f64::max) * n;
        let info = super::media::media_info(req.mode, req.model.as_deref(), "image", request_id);
        let worst = routes
            .iter()
            .map(|(c, u)| {
                self.media_charge(req.mode, u.billing_mode(), c.usd_per_image * n, baseline_usd).charged_units
            })
            .max()
            .unwrap_or(0);
        let holds = self.reserve(key, &info, || worst).await?;
        let work = [req.prompt.clone()];
        let served = super::media::first_answer(
            routes,
            |c| &c.model.id,
            &work,
            "generate the images",
            |c, upstream| async move {
                let call = ImageCall {
                    prompt: &req.prompt,
                    n: req.n,
                    size: &c.size,
                    quality: Some(c.quality.as_str()),
                    style: req.style.as_deref(),
                };
                providers::generate_images(&upstream.conn, &c.model.id, &call).await
            },
        )
        .await?;
        let (c, upstream, mut images) = (served.candidate, served.upstream, served.answer);
        images.truncate(req.n as usize);
        let list_usd = c.usd_per_image * images.len() as f64;
        let charge = self.media_charge(req.mode, upstream.billing_mode(), list_usd, baseline_usd);
        let row = UsageRow {
            routing_reason: format!("{} image(s) {} {} with {}", images.len(), c.size, c.quality, c.model.id),
            input_tokens: u64::from(crate::chat::tokenizer::count(&req.prompt)),
            failed_attempts: served.failed,
            unit: Some("image".into()),
            units: Some(images.len() as f64),
            ..super::media::media_row(key, &info, &upstream, &c.model.id, charge, served.started)
        };
        // Kept before the charge: a write that fails charges nothing.
        let mut media_ids = Vec::new();
        if req.as_url {
            for image in &mut images {
                let kept = GeneratedImage {
                    bytes: std::mem::take(&mut image.bytes),
                    mime: image.mime.clone(),
                    revised_prompt: None,
                };
                media_ids.push(self.keep_media(&key.account_id, kept).await?);
            }
        }
        self.settle_row(key, holds, row).await?;
        Ok(ImageOutcome {
            images,
            media_ids,
            model: c.model.id.clone(),
            provider: upstream.kind.as_str(),
            charge,
            permit: None,
        })
    }
}

/// How long an image asked for as `url` is served.
pub const MEDIA_URL_TTL_MS: i64 = 60 * 60 * 1000;

impl Runtime {
    /// Keeps an image the gateway serves by URL until it expires; answers its id.
    pub async fn keep_media(&self, account_id: &str, image: GeneratedImage) -> Result<String, EngineError> {
        self.keep_media_for(account_id, image, MEDIA_URL_TTL_MS).await
    }

    /// Keeps media for `ttl_ms`.
    pub(crate) async fn keep_media_for(
        &self,
        account_id: &str,
        image: GeneratedImage,
        ttl_ms: i64,
    ) -> Result<String, EngineError> {
        let now = crate::clock::now_ms();
        let file = tokaroo_storage::media::MediaFile {
            id: uuid::Uuid::new_v4().simple().to_string(),
            account_id: account_id.to_owned(),
            mime: image.mime,
            bytes: image.bytes.len() as u64,
            created_at_ms: now,
            expires_at_ms: now + ttl_ms,
        };
        let store = self.0.directory.store.clone();
        let id = file.id.clone();
        tokio::task::spawn_blocking(move || store.put_media(&file, &image.bytes))
            .await
            .map_err(|e| EngineError::Internal(format!("storing an image: {e}")))??;
        Ok(id)
    }

    /// Keeps a download for `ttl_ms` as it arrives, written to disk a megabyte at a time,
    /// never whole in memory; answers its id. A download that fails half-way leaves nothing.
    pub(crate) async fn keep_download(
        &self,
        account_id: &str,
        mime: &str,
        mut body: providers::ByteStream,
        ttl_ms: i64,
    ) -> Result<String, KeepFailure> {
        use futures_util::StreamExt as _;
        const WRITE_AT: usize = 1 << 20;
        let store = self.0.directory.store.clone();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut upload = {
            let (store, id) = (store.clone(), id.clone());
            blocking(move || store.begin_media(&id)).await?
        };
        let mut pending = Vec::with_capacity(WRITE_AT);
        loop {
            let piece = body.next().await.transpose().map_err(KeepFailure::Upstream)?;
            let done = piece.is_none();
            if let Some(piece) = piece {
                pending.extend_from_slice(&piece);
            }
            if pending.len() >= WRITE_AT || (done && !pending.is_empty()) {
                let batch = std::mem::replace(&mut pending, Vec::with_capacity(WRITE_AT));
                upload = blocking(move || upload.write(&batch).map(|()| upload)).await?;
            }
            if done {
                break;
            }
        }
        if upload.is_empty() {
            return Err(KeepFailure::Upstream(ProviderError::Protocol("an empty download".into())));
        }
        let now = crate::clock::now_ms();
        let file = tokaroo_storage::media::MediaFile {
            id: id.clone(),
            account_id: account_id.to_owned(),
            mime: mime.to_owned(),
            bytes: upload.len(),
            created_at_ms: now,
            expires_at_ms: now + ttl_ms,
        };
        blocking(move || store.commit_media(upload, &file)).await?;
        Ok(id)
    }

    /// A kept file that has not expired: its content type, length and where it is.
    pub async fn media(&self, id: &str) -> Result<Option<(String, u64, std::path::PathBuf)>, EngineError> {
        let (store, id, now) = (self.0.directory.store.clone(), id.to_owned(), crate::clock::now_ms());
        let found = blocking(move || store.media_path(&id, now)).await?;
        Ok(found.map(|(file, path)| (file.mime, file.bytes, path)))
    }
}

/// Why a download was not kept: the provider's side (worth another try later) or ours.
#[derive(Debug)]
pub(crate) enum KeepFailure {
    Upstream(ProviderError),
    Ours(EngineError),
}

impl From<EngineError> for KeepFailure {
    fn from(error: EngineError) -> Self {
        Self::Ours(error)
    }
}

/// Runs a storage call on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, tokaroo_storage::StorageError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("a media write: {e}")))?
        .map_err(Into::into)
}
