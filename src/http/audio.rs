//! `POST /v1/audio/speech`: raw audio in the asked format, streamed as the provider sends it.

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderValue},
    response::Response,
    routing::post,
    Router,
};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokaroo_actors::{
    chat::Mode,
    runtime::speech::{SpeechRequest, FORMATS, MAX_INPUT_CHARS},
};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    wire::cost_header,
    AppState,
};

const FIELDS: [&str; 6] = ["input", "model", "voice", "response_format", "speed", "user"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audio/speech", post(speech))
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
    let outcome = state.engine.runtime().serve_speech(key, request, request_id).await?;
    let audio = outcome.audio.map(|chunk| chunk.map_err(std::io::Error::other));
    let mut response = Response::new(Body::from_stream(audio));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(outcome.content_type));
    headers.insert("x-tokaroo-cost", cost_header(outcome.charge.charged_usd()));
    Ok(response)
}
