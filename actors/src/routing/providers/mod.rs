//! Provider adapters. Each file knows one provider's wire format and nothing else does:
//! `openai.rs` (also used by Groq and self-hosted OpenAI-compatible endpoints), `anthropic.rs`,
//! `gemini.rs`, and the offline `simulator.rs`. `http.rs` is the shared plumbing (sending,
//! status mapping, SSE framing) and `adapter.rs` what the HTTP adapters share (the
//! [`adapter::HttpAdapter`] shape behind their [`ChatProvider`], stream decoding, `data:`
//! URLs); neither carries a provider's format.

pub mod adapter;
pub mod anthropic;
#[cfg(test)]
mod decoder_props;
pub mod gemini;
pub mod http;
pub mod openai;
pub mod simulator;

use std::time::Duration;

use futures_util::{future::BoxFuture, stream::BoxStream};
use serde::Serialize;

use crate::chat::{ChatDelta, ChatRequest, ChatResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[serde(rename = "openai")]
    OpenAi,
    Anthropic,
    Google,
    Groq,
    /// A self-hosted OpenAI-compatible endpoint (Ollama, vLLM, LocalAI).
    Local,
    /// The built-in offline provider, on only while no real provider is configured.
    Simulator,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
            Self::Google => "google",
            Self::Groq => "groq",
            Self::Local => "local",
            Self::Simulator => "simulator",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "openai" => Some(Self::OpenAi),
            "anthropic" => Some(Self::Anthropic),
            "google" | "gemini" => Some(Self::Google),
            "groq" => Some(Self::Groq),
            "local" => Some(Self::Local),
            "simulator" => Some(Self::Simulator),
            _ => None,
        }
    }
}

/// Everything an adapter needs to reach one upstream account.
#[derive(Clone)]
pub struct Connection {
    pub provider: ProviderKind,
    pub base_url: String,
    pub api_key: Option<String>,
    pub extra_headers: Vec<(String, String)>,
    pub http: reqwest::Client,
    /// Upper bound on one upstream call (for streams: until the first event).
    pub timeout: Duration,
    /// The parsed chat URL of an adapter whose URL does not depend on the model; parsing it
    /// for every request is a measurable share of a request's cost.
    pub chat_url: std::sync::OnceLock<reqwest::Url>,
    /// For addresses a tenant chose: checks IP-literal destinations before sending (`http`'s
    /// resolver checks names). `None` for addresses the operator configured.
    pub guard: Option<crate::routing::netguard::NetGuard>,
}

impl Connection {
    /// The URL `build` makes, parsed on first use and reused after.
    pub fn chat_url(&self, build: impl FnOnce() -> String) -> Result<reqwest::Url, ProviderError> {
        if let Some(url) = self.chat_url.get() {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(&build())
            .map_err(|e| ProviderError::Connect(format!("the provider's base URL is not a valid URL: {e}")))?;
        Ok(self.chat_url.get_or_init(|| url).clone())
    }
}

impl std::fmt::Debug for Connection {
    // Hand-written so that the key can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProviderError {
    #[error("could not connect to the provider: {0}")]
    Connect(String),
    #[error("the provider did not answer in time")]
    Timeout,
    /// The provider accepted the request (its answer's head arrived) but the rest did not
    /// arrive in time: it worked on the prompt, and bills it.
    #[error("the provider accepted the request but its answer did not arrive in time")]
    TimeoutAfterAccept,
    #[error("the provider answered {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("the provider's answer could not be read: {0}")]
    Protocol(String),
    #[error("the provider's stream broke: {0}")]
    StreamBroken(String),
    /// A download larger than we keep: asking again would fetch it again.
    #[error("the provider's answer is larger than the {0} MiB we keep")]
    TooLarge(usize),
}

impl ProviderError {
    /// Worth trying the next candidate: the failure says nothing about the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Timeout | Self::TimeoutAfterAccept | Self::Protocol(_) | Self::StreamBroken(_) => {
                true
            }
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::TooLarge(_) => false,
        }
    }

    /// A short code for health records (`last_failure_code`).
    pub fn code(&self) -> String {
        match self {
            Self::Connect(_) => "connect_error".into(),
            Self::Timeout => "timeout".into(),
            Self::TimeoutAfterAccept => "timeout_after_accept".into(),
            Self::Status { status, .. } => status.to_string(),
            Self::Protocol(_) => "protocol_error".into(),
            Self::StreamBroken(_) => "stream_broken".into(),
            Self::TooLarge(_) => "too_large".into(),
        }
    }
}

/// Vectors in input order, and the provider's token count when it gives one.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: Option<u32>,
}

/// Embeds `inputs` with a provider's `model`; `dims` asks for shortened vectors.
pub async fn embed(
    conn: &Connection,
    model: &str,
    inputs: &[String],
    dims: Option<u32>,
) -> Result<Embeddings, ProviderError> {
    match conn.provider {
        ProviderKind::OpenAi | ProviderKind::Local | ProviderKind::Groq => {
            openai::embed(conn, &adapter::EmbedCall { model, inputs, dims }).await
        }
        ProviderKind::Google => gemini::embed(conn, &adapter::EmbedCall { model, inputs, dims }).await,
        ProviderKind::Simulator => Ok(simulator::embed(inputs, dims.unwrap_or(1536))),
        ProviderKind::Anthropic => Err(ProviderError::Status {
            status: 400,
            message: "Anthropic has no embeddings API".into(),
            retry_after: None,
        }),
    }
}

/// One image generation call, in the provider's own words for size and quality
/// (`1024x1536`, `high`; Google: `16:9`, `2K`).
#[derive(Debug, Clone)]
pub struct ImageCall<'a> {
    pub prompt: &'a str,
    pub n: u32,
    pub size: &'a str,
    pub quality: Option<&'a str>,
    /// DALL·E 3's `vivid` or `natural`; other models take none.
    pub style: Option<&'a str>,
}

/// One generated image.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Vec<u8>,
    pub mime: String,
    pub revised_prompt: Option<String>,
}

/// The most an image answer may make us buffer: base64 of up to `n` large PNGs.
pub fn images_cap(n: u32) -> usize {
    (n.max(1) as usize).saturating_mul(24 << 20).min(256 << 20)
}

/// Decodes an image's base64 (standard alphabet, as every provider sends).
pub(crate) fn decode_image(
    b64: &str,
    mime: &str,
    revised_prompt: Option<String>,
) -> Result<GeneratedImage, ProviderError> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ProviderError::Protocol(format!("an image that is not base64: {e}")))?;
    if bytes.is_empty() {
        return Err(ProviderError::Protocol("an empty image".into()));
    }
    Ok(GeneratedImage { bytes, mime: mime.to_owned(), revised_prompt })
}

/// Generates images with `model` on `conn`.
pub async fn generate_images(
    conn: &Connection,
    model: &str,
    call: &ImageCall<'_>,
) -> Result<Vec<GeneratedImage>, ProviderError> {
    let images = match conn.provider {
        ProviderKind::OpenAi | ProviderKind::Local | ProviderKind::Groq => openai::images(conn, model, call).await?,
        ProviderKind::Google => gemini::images(conn, model, call).await?,
        ProviderKind::Simulator => simulator::images(call),
        ProviderKind::Anthropic => {
            return Err(ProviderError::Status {
                status: 400,
                message: "Anthropic has no image generation API".into(),
                retry_after: None,
            })
        }
    };
    if images.is_empty() {
        return Err(ProviderError::Protocol("the answer held no image".into()));
    }
    Ok(images)
}

/// One speech call, in the provider's own voice and format words.
#[derive(Debug, Clone)]
pub struct SpeechCall<'a> {
    pub input: &'a str,
    pub voice: &'a str,
    /// `mp3`, `opus`, `aac`, `flac`, `wav` or `pcm`.
    pub format: &'a str,
    pub speed: Option<f64>,
}

/// A body as it arrives (speech's audio, a video download).
pub type ByteStream = BoxStream<'static, Result<bytes::Bytes, ProviderError>>;

/// An accepted answer's body as it arrives, each wait for the next piece bounded by `idle`
/// (not the whole body: long audio streams for longer than a connection's timeout); the
/// stream ends after its first error.
pub(crate) fn idle_bounded_body(response: reqwest::Response, idle: Duration) -> ByteStream {
    use futures_util::StreamExt as _;
    let body = Some(response.bytes_stream().boxed());
    futures_util::stream::unfold(body, move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(error))) => Some((Err(ProviderError::StreamBroken(error.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((Err(ProviderError::StreamBroken(format!("no data for {idle:?}"))), None)),
        }
    })
    .boxed()
}

/// Speaks `call.input` with `model` on `conn`: the audio's bytes as the provider sends them.
pub async fn speech(conn: &Connection, model: &str, call: &SpeechCall<'_>) -> Result<ByteStream, ProviderError> {
    match conn.provider {
        ProviderKind::OpenAi | ProviderKind::Local | ProviderKind::Groq => openai::speech(conn, model, call).await,
        ProviderKind::Google => gemini::speech(conn, model, call).await,
        ProviderKind::Simulator => simulator::speech(call),
        ProviderKind::Anthropic => {
            Err(ProviderError::Status { status: 400, message: "Anthropic has no speech API".into(), retry_after: None })
        }
    }
}

/// One transcription call. The provider is always asked for `verbose_json`: only it
/// reports the audio's duration, which the request is charged by.
#[derive(Debug, Clone)]
pub struct TranscriptionCall<'a> {
    pub audio: &'a bytes::Bytes,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub language: Option<&'a str>,
    pub prompt: Option<&'a str>,
    pub temperature: Option<f64>,
}

/// What a transcription found: the text, its timed segments, the language and the
/// audio's length.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    pub duration_secs: f64,
    /// (start, end, text), seconds.
    pub segments: Vec<(f64, f64, String)>,
}

pub async fn transcribe(
    conn: &Connection,
    model: &str,
    call: &TranscriptionCall<'_>,
) -> Result<Transcript, ProviderError> {
    match conn.provider {
        ProviderKind::OpenAi | ProviderKind::Local | ProviderKind::Groq => openai::transcribe(conn, model, call).await,
        ProviderKind::Simulator => Ok(simulator::transcribe(call)),
        ProviderKind::Google | ProviderKind::Anthropic => Err(ProviderError::Status {
            status: 400,
            message: "this provider has no transcription API here".into(),
            retry_after: None,
        }),
    }
}

/// One video job to start, in the provider's own words.
#[derive(Debug, Clone)]
pub struct VideoCall<'a> {
    pub prompt: &'a str,
    pub duration_secs: u32,
    /// `16:9` or `9:16`.
    pub aspect_ratio: &'a str,
    /// `720p`, `1080p`, `4k`.
    pub resolution: &'a str,
}

/// Where a provider's video job stands.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoStatus {
    Running,
    /// Done: where to fetch the video (with the connection's key).
    Done {
        uri: String,
    },
    Failed(String),
}

/// The most a video download may be (it streams to disk; this bounds the disk).
pub const MAX_VIDEO_BYTES: usize = 512 << 20;

/// `body`, ending in an error once more than `cap` bytes came (or the response's
/// `content-length` says more will).
pub(crate) fn capped_body(response: reqwest::Response, idle: Duration, cap: usize) -> ByteStream {
    use futures_util::StreamExt as _;
    let too_large = move || ProviderError::TooLarge(cap >> 20);
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return futures_util::stream::once(async move { Err(too_large()) }).boxed();
    }
    let state = Some((idle_bounded_body(response, idle), 0usize));
    futures_util::stream::unfold(state, move |state| async move {
        let (mut body, seen) = state?;
        match body.next().await? {
            Ok(piece) if seen.saturating_add(piece.len()) > cap => Some((Err(too_large()), None)),
            Ok(piece) => {
                let seen = seen + piece.len();
                Some((Ok(piece), Some((body, seen))))
            }
            Err(error) => Some((Err(error), None)),
        }
    })
    .boxed()
}

/// Starts a video job; answers the provider's id for it.
pub async fn start_video(conn: &Connection, model: &str, call: &VideoCall<'_>) -> Result<String, ProviderError> {
    match conn.provider {
        ProviderKind::Google => gemini::start_video(conn, model, call).await,
        ProviderKind::Simulator => Ok(format!("simulated-{}", crate::clock::new_id())),
        _ => Err(ProviderError::Status {
            status: 400,
            message: "this provider has no video API here (OpenAI's Videos API was shut down)".into(),
            retry_after: None,
        }),
    }
}

pub async fn video_status(conn: &Connection, job: &str) -> Result<VideoStatus, ProviderError> {
    match conn.provider {
        ProviderKind::Google => gemini::video_status(conn, job).await,
        ProviderKind::Simulator => Ok(VideoStatus::Done { uri: "simulated".into() }),
        _ => Err(ProviderError::Protocol("no video jobs on this provider".into())),
    }
}

/// Opens a finished video's download: its bytes as they arrive, at most [`MAX_VIDEO_BYTES`].
pub async fn fetch_video(conn: &Connection, uri: &str) -> Result<ByteStream, ProviderError> {
    use futures_util::StreamExt as _;
    match conn.provider {
        ProviderKind::Google => gemini::fetch_video(conn, uri).await,
        // An empty MP4 `ftyp` box: labelled stand-in bytes.
        ProviderKind::Simulator => Ok(futures_util::stream::once(async {
            Ok(bytes::Bytes::from_static(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isommp41"))
        })
        .boxed()),
        _ => Err(ProviderError::Protocol("no video jobs on this provider".into())),
    }
}

/// A WAV header for `data_len` bytes of 16-bit little-endian mono PCM at `rate` Hz.
pub fn wav_header(data_len: u32, rate: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

pub type DeltaStream = BoxStream<'static, Result<ChatDelta, ProviderError>>;

/// One provider's chat API. `model` is the provider's native model id.
pub trait ChatProvider: Send + Sync {
    /// `max_output_tokens` is the bound the request's hold assumed: always sent upstream.
    fn chat<'a>(
        &'a self,
        conn: &'a Connection,
        model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>>;

    /// Resolves once the upstream has accepted the request (status checked); the stream then
    /// yields deltas until the answer ends.
    fn chat_stream<'a>(
        &'a self,
        conn: &'a Connection,
        model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<DeltaStream, ProviderError>>;
}

static SIMULATOR: simulator::SimulatorChat = simulator::SimulatorChat { latency: Duration::from_millis(120) };

/// The adapter for a provider kind.
pub fn adapter(kind: ProviderKind) -> &'static dyn ChatProvider {
    match kind {
        ProviderKind::OpenAi | ProviderKind::Groq | ProviderKind::Local => &openai::OpenAiChat,
        ProviderKind::Anthropic => &anthropic::AnthropicChat,
        ProviderKind::Google => &gemini::GeminiChat,
        ProviderKind::Simulator => &SIMULATOR,
    }
}

/// The public API base URL of each provider.
pub fn default_base_urls() -> Vec<(ProviderKind, String)> {
    vec![
        (ProviderKind::OpenAi, "https://api.openai.com/v1".into()),
        (ProviderKind::Anthropic, "https://api.anthropic.com".into()),
        (ProviderKind::Google, "https://generativelanguage.googleapis.com".into()),
        (ProviderKind::Groq, "https://api.groq.com/openai/v1".into()),
    ]
}
