//! `POST /v1/audio/speech`: the catalog's speech models that speak the format and the voice,
//! ordered by mode, tried with fallback; charged by the input's length (the catalog's price
//! per 1,000 characters, or its token and audio-minute prices on an estimate) as one usage
//! row of type `speech`, settled once the provider has accepted, then the audio streams.
//!
//! Voices: the spec's six are mapped per provider by [`VOICES`] (README: "Media"); a
//! provider's own voice name is taken by the models that list it.

use tokaroo_storage::records::UsageRow;

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::Charge,
    routing::{
        catalog::{CatalogModel, MediaSpec},
        providers::{self, ByteStream, SpeechCall},
    },
    runtime::Runtime,
};

pub const FORMATS: [&str; 6] = ["mp3", "opus", "aac", "flac", "wav", "pcm"];
pub const MAX_INPUT_CHARS: usize = 4096;

/// The spec's voices and what each provider calls the nearest of its own.
pub const VOICES: [(&str, &str, &str); 6] = [
    // (spec and OpenAI, Gemini, Groq Orpheus English)
    ("alloy", "Kore", "autumn"),
    ("echo", "Puck", "daniel"),
    ("fable", "Aoede", "austin"),
    ("onyx", "Charon", "troy"),
    ("nova", "Leda", "hannah"),
    ("shimmer", "Zephyr", "diana"),
];

/// The content type of each format.
pub fn content_type(format: &str) -> &'static str {
    match format {
        "mp3" => "audio/mpeg",
        "opus" => "audio/opus",
        "aac" => "audio/aac",
        "flac" => "audio/flac",
        "wav" => "audio/wav",
        _ => "audio/pcm",
    }
}

#[derive(Debug, Clone)]
pub struct SpeechRequest {
    pub input: String,
    pub mode: Mode,
    pub model: Option<String>,
    pub voice: String,
    pub format: String,
    pub speed: Option<f64>,
}

pub struct SpeechOutcome {
    pub audio: ByteStream,
    pub content_type: &'static str,
    pub charge: Charge,
}

#[derive(Debug, Clone)]
struct Candidate {
    model: CatalogModel,
    voice: String,
    usd: f64,
}

/// The provider's name for `voice` on `model`, when it has one.
fn native_voice(model: &CatalogModel, spec: &MediaSpec, voice: &str) -> Option<String> {
    if spec.voices.iter().any(|v| v.eq_ignore_ascii_case(voice)) {
        return spec.voices.iter().find(|v| v.eq_ignore_ascii_case(voice)).cloned();
    }
    let mapped =
        VOICES.iter().find(|(ours, ..)| *ours == voice).map(|(_, gemini, groq)| match model.provider.as_str() {
            "google" => *gemini,
            "groq" => *groq,
            _ => voice,
        })?;
    spec.voices.iter().any(|v| v == mapped).then(|| mapped.to_owned())
}

/// The list price of speaking `input` at `speed`: per 1,000 characters, or on an estimate
/// of 4 characters a token and, for the audio, 600 characters a minute (200 for CJK and
/// other scripts without spaces, which speak slower per character), stretched by a slow
/// `speed`. On the high side on purpose: the provider bills the real minutes.
fn list_usd(spec: &MediaSpec, input: &str, speed: Option<f64>) -> Option<f64> {
    let chars = input.chars().count() as f64;
    if let Some(per_1k) = spec.price_per_1k_chars {
        return Some(per_1k * chars / 1000.0);
    }
    let dense = input.chars().filter(|c| (*c as u32) >= 0x2E80).count() as f64;
    let minutes = ((chars - dense) / 600.0 + dense / 200.0) / speed.unwrap_or(1.0).clamp(0.25, 4.0);
    let tokens = spec.price_per_1m_input_tokens.map(|p| p * chars / 4.0 / 1e6);
    let minutes = spec.price_per_minute_audio.map(|p| p * minutes);
    match (tokens, minutes) {
        (None, None) => None,
        (t, m) => Some(t.unwrap_or(0.0) + m.unwrap_or(0.0)),
    }
}

impl Runtime {
    fn speech_candidates(&self, req: &SpeechRequest) -> Result<Vec<Candidate>, EngineError> {
        let chars = req.input.chars().count();
        let mut candidates: Vec<Candidate> = self
            .media_models(req.model.as_deref(), "speech", "a speech", "does not generate speech")?
            .into_iter()
            .filter_map(|(m, spec)| {
                // Gemini answers PCM, which the gateway also wraps as WAV.
                let formats_ok = spec.formats.contains(&req.format)
                    || (m.provider == "google" && req.format == "wav" && spec.formats.iter().any(|f| f == "pcm"));
                let speed_ok =
                    spec.speed_range.is_none_or(|(min, max)| (min..=max).contains(&req.speed.unwrap_or(1.0)));
                if !formats_ok || !speed_ok || spec.max_input_chars.is_some_and(|max| chars as u64 > max) {
                    return None;
                }
                let voice = native_voice(m, spec, &req.voice)?;
                Some(Candidate { model: m.clone(), voice, usd: list_usd(spec, &req.input, req.speed)? })
            })
            .collect();
        match req.mode {
            Mode::Max => {
                candidates.sort_by(|a, b| b.model.quality.total_cmp(&a.model.quality).then(a.usd.total_cmp(&b.usd)))
            }
            Mode::Fast | Mode::Auto => candidates.sort_by(|a, b| {
                let latency = |c: &Candidate| u8::from(c.model.latency_class != "fast");
                latency(a).cmp(&latency(b)).then(a.usd.total_cmp(&b.usd))
            }),
        }
        Ok(candidates)
    }

    /// Opens the audio with fallback and settles one `speech` row once a provider accepted.
    pub(crate) async fn speech(
        &self,
        key: &KeyEntry,
        req: &SpeechRequest,
        request_id: Option<String>,
    ) -> Result<SpeechOutcome, EngineError> {
        let candidates = self.speech_candidates(req)?;
        if candidates.is_empty() {
            return Err(EngineError::invalid(format!(
                "no speech model speaks response_format {:?} with voice {:?} for {} characters; see GET /v1/pricing",
                req.format,
                req.voice,
                req.input.chars().count()
            )));
        }
        let routes = self.media_routes(key, &candidates, |c| &c.model);
        if routes.is_empty() {
            return Err(EngineError::Unavailable("No speech provider is configured (OpenAI, Gemini or Groq)".into()));
        }
        let baseline_usd = candidates.iter().map(|c| c.usd).fold(0.0, f64::max);
        let info = super::media::media_info(req.mode, req.model.as_deref(), "speech", request_id);
        let worst = routes
            .iter()
            .map(|(c, u)| self.media_charge(req.mode, u.billing_mode(), c.usd, baseline_usd).charged_units)
            .max()
            .unwrap_or(0);
        let holds = self.reserve(key, &info, || worst).await?;
        let work = [req.input.clone()];
        let served = super::media::first_answer(
            routes,
            |c| &c.model.id,
            &work,
            "speak this",
            |c, upstream| async move {
                let call = SpeechCall { input: &req.input, voice: &c.voice, format: &req.format, speed: req.speed };
                providers::speech(&upstream.conn, &c.model.id, &call).await
            },
        )
        .await?;
        let (c, upstream) = (&served.candidate, &served.upstream);
        let charge = self.media_charge(req.mode, upstream.billing_mode(), c.usd, baseline_usd);
        let chars = req.input.chars().count();
        let row = UsageRow {
            routing_reason: format!("{chars} characters as {} with {} ({})", req.format, c.model.id, c.voice),
            input_tokens: u64::from(crate::chat::tokenizer::count(&req.input)),
            streamed: true,
            failed_attempts: served.failed.clone(),
            unit: Some("character".into()),
            units: Some(chars as f64),
            ..super::media::media_row(key, &info, upstream, &c.model.id, charge, served.started)
        };
        self.settle_row(key, holds, row).await?;
        Ok(SpeechOutcome { audio: served.answer, content_type: content_type(&req.format), charge })
    }
}
