//! `POST /v1/audio/transcriptions`: the catalog's transcription models that report the
//! audio's duration (`verbose_json`), ordered by mode, tried with fallback; charged per
//! minute of audio as one usage row of type `transcription`. The answer is rendered here in
//! the asked format (`json`, `text`, `srt`, `vtt`, `verbose_json`) from the one transcript.
//!
//! The upload stays in memory (at most [`MAX_AUDIO_BYTES`]) from the request to the
//! provider: it never touches the disk.

use serde_json::{json, Value};
use tokaroo_storage::records::UsageRow;

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::Charge,
    routing::{
        catalog::CatalogModel,
        providers::{self, Transcript, TranscriptionCall},
    },
    runtime::Runtime,
};

pub const MAX_AUDIO_BYTES: usize = 25 * 1024 * 1024;
pub const FORMATS: [&str; 5] = ["json", "text", "srt", "vtt", "verbose_json"];
/// The hold assumes audio at least this dense (Opus voice at 6 kb/s is about the least), so
/// the longest the upload can be; the charge follows the duration the provider reports.
const HOLD_BITS_PER_SEC: f64 = 6_000.0;
/// Providers bill at least this much audio per request (Groq: 10 s).
const MIN_BILLED_SECS: f64 = 10.0;

#[derive(Debug, Clone)]
pub struct TranscriptionRequest {
    pub audio: bytes::Bytes,
    pub filename: String,
    pub content_type: String,
    pub mode: Mode,
    pub model: Option<String>,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: Option<f64>,
    pub format: String,
}

pub struct TranscriptionOutcome {
    /// The answer's body and its content type.
    pub body: String,
    pub content_type: &'static str,
    pub charge: Charge,
}

#[derive(Debug, Clone)]
struct Candidate {
    model: CatalogModel,
    usd_per_minute: f64,
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(secs: f64, separator: char) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    format!("{:02}:{:02}:{:02}{separator}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// The transcript in the asked format.
pub fn render(t: &Transcript, format: &str) -> (String, &'static str) {
    let segments: Vec<(f64, f64, String)> =
        if t.segments.is_empty() { vec![(0.0, t.duration_secs, t.text.clone())] } else { t.segments.clone() };
    match format {
        "text" => (t.text.clone(), "text/plain; charset=utf-8"),
        "srt" => {
            let cues: Vec<String> = segments
                .iter()
                .enumerate()
                .map(|(i, (start, end, text))| {
                    format!("{}\n{} --> {}\n{text}\n", i + 1, timestamp(*start, ','), timestamp(*end, ','))
                })
                .collect();
            (cues.join("\n"), "application/x-subrip")
        }
        "vtt" => {
            let cues: Vec<String> = segments
                .iter()
                .map(|(start, end, text)| format!("{} --> {}\n{text}\n", timestamp(*start, '.'), timestamp(*end, '.')))
                .collect();
            (format!("WEBVTT\n\n{}", cues.join("\n")), "text/vtt")
        }
        "verbose_json" => {
            let segments: Vec<Value> = segments
                .iter()
                .enumerate()
                .map(|(i, (start, end, text))| json!({"id": i, "start": start, "end": end, "text": text}))
                .collect();
            let body = json!({
                "task": "transcribe",
                "language": t.language,
                "duration": t.duration_secs,
                "text": t.text,
                "segments": segments,
            });
            (body.to_string(), "application/json")
        }
        _ => (json!({ "text": t.text }).to_string(), "application/json"),
    }
}

impl Runtime {
    fn transcription_candidates(&self, req: &TranscriptionRequest) -> Result<Vec<Candidate>, EngineError> {
        let mut candidates: Vec<Candidate> = self
            .media_models(req.model.as_deref(), "transcription", "a transcription", "does not transcribe audio")?
            .into_iter()
            .filter_map(|(m, spec)| {
                let reports_duration = spec.response_formats.iter().any(|f| f == "verbose_json");
                let fits = spec.max_file_mb.is_none_or(|mb| req.audio.len() as u64 <= mb * 1024 * 1024);
                // A model that hears only some languages is asked only for one it was told of.
                let hears = spec.languages.is_empty()
                    || req.language.as_ref().is_some_and(|l| spec.languages.iter().any(|h| h == l));
                if !reports_duration || !fits || !hears {
                    return None;
                }
                Some(Candidate { model: m.clone(), usd_per_minute: spec.price_per_minute? })
            })
            .collect();
        match req.mode {
            Mode::Max => candidates.sort_by(|a, b| {
                b.model.quality.total_cmp(&a.model.quality).then(a.usd_per_minute.total_cmp(&b.usd_per_minute))
            }),
            Mode::Fast | Mode::Auto => candidates.sort_by(|a, b| {
                let latency = |c: &Candidate| u8::from(c.model.latency_class != "fast");
                latency(a).cmp(&latency(b)).then(a.usd_per_minute.total_cmp(&b.usd_per_minute))
            }),
        }
        Ok(candidates)
    }

    /// Transcribes with fallback and settles one `transcription` row by the audio's length.
    pub(crate) async fn transcribe(
        &self,
        key: &KeyEntry,
        req: &TranscriptionRequest,
        request_id: Option<String>,
    ) -> Result<TranscriptionOutcome, EngineError> {
        let candidates = self.transcription_candidates(req)?;
        if candidates.is_empty() {
            return Err(EngineError::invalid(match req.model.as_deref() {
                Some(m) => format!(
                    "model {m:?} cannot take this file here: transcription is charged by the audio's length, which \
                     only models with verbose_json report (whisper-1, Groq's Whisper), at most their max_file_mb, \
                     in the languages they hear; see GET /v1/pricing"
                ),
                None => "no transcription model takes this request; see GET /v1/pricing".into(),
            }));
        }
        let routes = self.media_routes(key, &candidates, |c| &c.model);
        if routes.is_empty() {
            return Err(EngineError::Unavailable("No transcription provider is configured (OpenAI or Groq)".into()));
        }
        let longest_minutes = (req.audio.len() as f64 * 8.0 / HOLD_BITS_PER_SEC / 60.0).max(MIN_BILLED_SECS / 60.0);
        let baseline_per_minute = candidates.iter().map(|c| c.usd_per_minute).fold(0.0, f64::max);
        let info = super::media::media_info(req.mode, req.model.as_deref(), "transcription", request_id);
        let worst = routes
            .iter()
            .map(|(c, u)| {
                let list = c.usd_per_minute * longest_minutes;
                self.media_charge(req.mode, u.billing_mode(), list, baseline_per_minute * longest_minutes).charged_units
            })
            .max()
            .unwrap_or(0);
        let holds = self.reserve(key, &info, || worst).await?;
        let work = [req.filename.clone()];
        let served = super::media::first_answer(
            routes,
            |c| &c.model.id,
            &work,
            "transcribe this",
            |c, upstream| async move {
                let call = TranscriptionCall {
                    audio: &req.audio,
                    filename: &req.filename,
                    content_type: &req.content_type,
                    language: req.language.as_deref(),
                    prompt: req.prompt.as_deref(),
                    temperature: req.temperature,
                };
                providers::transcribe(&upstream.conn, &c.model.id, &call).await
            },
        )
        .await?;
        let (c, upstream, transcript) = (&served.candidate, &served.upstream, &served.answer);
        let minutes = transcript.duration_secs.max(MIN_BILLED_SECS) / 60.0;
        let charge = self.media_charge(
            req.mode,
            upstream.billing_mode(),
            c.usd_per_minute * minutes,
            baseline_per_minute * minutes,
        );
        let row = UsageRow {
            routing_reason: format!("{:.1} s of audio with {}", transcript.duration_secs, c.model.id),
            output_tokens: u64::from(crate::chat::tokenizer::count(&transcript.text)),
            failed_attempts: served.failed.clone(),
            unit: Some("minute".into()),
            units: Some((minutes * 1000.0).round() / 1000.0),
            ..super::media::media_row(key, &info, upstream, &c.model.id, charge, served.started)
        };
        self.settle_row(key, holds, row).await?;
        let (body, content_type) = render(transcript, &req.format);
        Ok(TranscriptionOutcome { body, content_type, charge })
    }
}

#[cfg(test)]
mod tests {
    use super::{render, Transcript};

    #[test]
    fn transcripts_render_as_srt_vtt_text_and_json() {
        let t = Transcript {
            text: "Hello there. General Kenobi.".into(),
            language: Some("en".into()),
            duration_secs: 3.5,
            segments: vec![(0.0, 1.25, "Hello there.".into()), (1.25, 3.5, "General Kenobi.".into())],
        };
        let (srt, _) = render(&t, "srt");
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:01,250\nHello there.\n\n2\n00:00:01,250 --> 00:00:03,500\nGeneral Kenobi.\n"
        );
        let (vtt, ct) = render(&t, "vtt");
        assert!(vtt.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\nHello there.\n"), "{vtt}");
        assert_eq!(ct, "text/vtt");
        assert_eq!(render(&t, "text").0, t.text);
        let json: serde_json::Value = serde_json::from_str(&render(&t, "json").0).unwrap();
        assert_eq!(json, serde_json::json!({"text": t.text}));
        let verbose: serde_json::Value = serde_json::from_str(&render(&t, "verbose_json").0).unwrap();
        assert_eq!((verbose["duration"].as_f64(), verbose["segments"][1]["start"].as_f64()), (Some(3.5), Some(1.25)));
        assert_eq!(super::timestamp(3723.4567, ','), "01:02:03,457");
    }
}
