//! `POST /v1/audio/speech`: raw audio in the asked format, streamed as the provider sends
//! it. `POST /v1/audio/transcriptions`: a multipart upload of at most 25 MiB (413 above),
//! kept in memory, transcribed into the asked format.

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Multipart, State},
    http::{header, HeaderValue},
    response::Response,
    routing::post,
    Router,
};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokaroo_actors::{
    chat::Mode,
    runtime::{
        speech::{SpeechRequest, FORMATS, MAX_INPUT_CHARS},
        transcription::{TranscriptionRequest, FORMATS as TRANSCRIPT_FORMATS, MAX_AUDIO_BYTES},
    },
};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    wire::cost_header,
    AppState,
};

const FIELDS: [&str; 6] = ["input", "model", "voice", "response_format", "speed", "user"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audio/speech", post(speech)).route(
        "/v1/audio/transcriptions",
        // The file's cap plus room for the other fields and the multipart framing.
        post(transcribe).layer(DefaultBodyLimit::max(MAX_AUDIO_BYTES + (1 << 20))),
    )
}

fn too_large() -> ApiError {
    ApiError::PayloadTooLarge(format!("file must be at most {} MB", MAX_AUDIO_BYTES >> 20))
}

async fn transcribe(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    mut form: Multipart,
) -> Result<Response, ApiError> {
    // The account's slot before the upload is read (its uploads in memory count); the
    // server's place once it is in, so a slow upload holds no one else's place.
    let slot = state.engine.runtime().media_slot(&key.account_id)?;
    let bad = |m: String| ApiError::BadRequest(m);
    let (mut audio, mut filename, mut content_type) =
        (None, String::from("audio"), String::from("application/octet-stream"));
    let mut fields: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let read_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::BadRequest(format!("the multipart body could not be read: {}", e.body_text()))
        }
    };
    while let Some(field) = form.next_field().await.map_err(read_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                filename = field.file_name().unwrap_or("audio").chars().filter(|c| !c.is_control()).take(200).collect();
                content_type = field.content_type().unwrap_or("application/octet-stream").to_owned();
                let bytes = field.bytes().await.map_err(read_error)?;
                if bytes.len() > MAX_AUDIO_BYTES {
                    return Err(too_large());
                }
                audio = Some(bytes);
            }
            "model" | "language" | "response_format" | "temperature" | "prompt" => {
                let text = field.text().await.map_err(read_error)?;
                if text.len() > 4096 {
                    return Err(bad(format!("{name} is too long")));
                }
                fields.insert(name, text);
            }
            // The SDKs send these for options we do not offer: timestamps come with segments.
            "timestamp_granularities[]" | "stream" | "user" => {
                field.bytes().await.map_err(read_error)?;
            }
            other => return Err(bad(format!("Unrecognized request argument supplied: {other}"))),
        }
    }
    let audio =
        audio.filter(|a| !a.is_empty()).ok_or_else(|| bad("file is required: the audio to transcribe".into()))?;
    let (mode, model) = match fields.remove("model") {
        None => (Mode::Auto, None),
        Some(m) => Mode::parse(&m).map_or((Mode::Auto, Some(m)), |mode| (mode, None)),
    };
    let language = fields.remove("language");
    if language.as_deref().is_some_and(|l| l.len() != 2 || !l.bytes().all(|b| b.is_ascii_lowercase())) {
        return Err(bad("language must be an ISO 639-1 code such as en".into()));
    }
    let format = fields.remove("response_format").unwrap_or_else(|| "json".into());
    if !TRANSCRIPT_FORMATS.contains(&format.as_str()) {
        return Err(bad(format!("response_format must be one of {}", TRANSCRIPT_FORMATS.join(", "))));
    }
    let temperature = match fields.remove("temperature") {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|t| (0.0..=1.0).contains(t))
                .ok_or_else(|| bad("temperature must be a number from 0 to 1".into()))?,
        ),
    };
    let request = TranscriptionRequest {
        audio,
        filename,
        content_type,
        mode,
        model,
        language,
        prompt: fields.remove("prompt"),
        temperature,
        format,
    };
    let permit = state.engine.runtime().media_permit(slot).await?;
    let outcome = state.engine.runtime().serve_transcription(key, request, request_id, permit).await?;
    let mut response = Response::new(Body::from(outcome.body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(outcome.content_type));
    headers.insert("x-tokaroo-cost", cost_header(outcome.charge.charged_usd()));
    Ok(response)
}

fn parse(v: &Value) -> Result<SpeechRequest, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let object = v.as_object().ok_or_else(|| bad("Request body must be a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("Unrecognized request argument supplied: {unknown}")));
    }
    let input = match &v["input"] {
        Value::String(s) if !s.trim().is_empty() && s.chars().count() <= MAX_INPUT_CHARS => s.clone(),
        Value::String(_) => return Err(bad(format!("input must be 1 to {MAX_INPUT_CHARS} characters"))),
        _ => return Err(bad("input is required: the text to speak".into())),
    };
    let (mode, model) = match &v["model"] {
        Value::Null => (Mode::Auto, None),
        Value::String(m) => Mode::parse(m).map_or((Mode::Auto, Some(m.clone())), |mode| (mode, None)),
        _ => return Err(bad("model must be a string".into())),
    };
    let voice = match &v["voice"] {
        Value::Null => "alloy".to_owned(),
        Value::String(s)
            if !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            s.clone()
        }
        _ => return Err(bad("voice must be a voice name such as alloy, echo, fable, onyx, nova or shimmer".into())),
    };
    let format = match &v["response_format"] {
        Value::Null => "mp3".to_owned(),
        Value::String(f) if FORMATS.contains(&f.as_str()) => f.clone(),
        _ => return Err(bad(format!("response_format must be one of {}", FORMATS.join(", ")))),
    };
    let speed = match &v["speed"] {
        Value::Null => None,
        s => Some(
            s.as_f64()
                .filter(|x| (0.25..=4.0).contains(x))
                .ok_or_else(|| bad("speed must be a number from 0.25 to 4.0".into()))?,
        ),
    };
    if !matches!(v["user"], Value::Null | Value::String(_)) {
        return Err(bad("user must be a string".into()));
    }
    Ok(SpeechRequest { input, mode, model, voice, format, speed })
}

async fn speech(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse(&parse_json_object(&body)?)?;
    let runtime = state.engine.runtime();
    let permit = runtime.media_permit(runtime.media_slot(&key.account_id)?).await?;
    let outcome = state.engine.runtime().serve_speech(key, request, request_id, permit).await?;
    let audio = outcome.audio.map(|chunk| chunk.map_err(std::io::Error::other));
    let mut response = Response::new(Body::from_stream(audio));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(outcome.content_type));
    headers.insert("x-tokaroo-cost", cost_header(outcome.charge.charged_usd()));
    Ok(response)
}
