//! `POST /v1/videos/generations` (answers the job at once, `processing`) and
//! `GET /v1/videos/generations/:id` (the same shape; `url` once `completed`, `error` once
//! `failed`).

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};
use tokaroo_actors::{
    chat::Mode,
    runtime::video::{VideoRequest, MAX_DURATION_SECS, MAX_PROMPT_CHARS},
};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    wire::cost_header,
    AppState,
};

const FIELDS: [&str; 7] = ["prompt", "model", "duration", "size", "aspect_ratio", "fps", "user"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/videos/generations", post(start)).route("/v1/videos/generations/{id}", get(status))
}

/// A pixel size or a resolution name as (aspect ratio, resolution).
fn shape_of(size: &str) -> Option<(&'static str, &'static str)> {
    Some(match size {
        "720p" | "1280x720" => ("16:9", "720p"),
        "1080p" | "1920x1080" => ("16:9", "1080p"),
        "4k" | "3840x2160" => ("16:9", "4k"),
        "720x1280" => ("9:16", "720p"),
        "1080x1920" => ("9:16", "1080p"),
        "2160x3840" => ("9:16", "4k"),
        _ => return None,
    })
}

fn parse(v: &Value) -> Result<VideoRequest, ApiError> {
    let bad = |m: String| ApiError::BadRequest(m);
    let object = v.as_object().ok_or_else(|| bad("Request body must be a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("Unrecognized request argument supplied: {unknown}")));
    }
    let prompt = match &v["prompt"] {
        Value::String(p) if !p.trim().is_empty() && p.chars().count() <= MAX_PROMPT_CHARS => p.clone(),
        _ => return Err(bad(format!("prompt is required: 1 to {MAX_PROMPT_CHARS} characters"))),
    };
    let (mode, model) = match &v["model"] {
        Value::Null => (Mode::Auto, None),
        Value::String(m) => Mode::parse(m).map_or((Mode::Auto, Some(m.clone())), |mode| (mode, None)),
        _ => return Err(bad("model must be a string".into())),
    };
    let duration_secs =
        match &v["duration"] {
            Value::Null => 5,
            d => d.as_u64().filter(|d| (1..=u64::from(MAX_DURATION_SECS)).contains(d)).ok_or_else(|| {
                bad(format!("duration must be a whole number of seconds from 1 to {MAX_DURATION_SECS}"))
            })? as u32,
        };
    let (mut aspect_ratio, mut resolution) = ("16:9", "720p");
    match &v["size"] {
        Value::Null => {}
        Value::String(s) => (aspect_ratio, resolution) = shape_of(s).ok_or_else(|| {
            bad("size must be 1280x720, 1920x1080, 3840x2160, 720x1280, 1080x1920, 2160x3840, 720p, 1080p or 4k".into())
        })?,
        _ => return Err(bad("size must be a string".into())),
    }
    match &v["aspect_ratio"] {
        Value::Null => {}
        Value::String(a) if a == "16:9" || a == "9:16" => aspect_ratio = if a == "16:9" { "16:9" } else { "9:16" },
        _ => return Err(bad("aspect_ratio must be 16:9 or 9:16".into())),
    }
    match &v["fps"] {
        Value::Null => {}
        f if f.as_u64() == Some(24) => {}
        _ => return Err(bad("fps: the video models here make 24 frames a second".into())),
    }
    Ok(VideoRequest {
        prompt,
        mode,
        model,
        duration_secs,
        aspect_ratio: aspect_ratio.to_owned(),
        resolution: resolution.to_owned(),
    })
}

/// The job, with `x-tokaroo-cost`: what it was charged once completed, else 0 (a job is
/// charged when it completes).
fn job_response(state: &AppState, job: &tokaroo_actors::VideoJob) -> Response {
    let charged = if job.status == "completed" { job.charged_usd.unwrap_or(0.0) } else { 0.0 };
    let mut response = Json(job_json(state, job)).into_response();
    response.headers_mut().insert("x-tokaroo-cost", cost_header(charged));
    response
}

fn job_json(state: &AppState, job: &tokaroo_actors::VideoJob) -> Value {
    let status = match job.status.as_str() {
        "completed" => "completed",
        "failed" => "failed",
        _ => "processing",
    };
    let mut body = json!({ "id": job.id, "status": status });
    if status == "completed" {
        if let Some(media) = &job.media_id {
            body["url"] = json!(format!("{}/v1/media/{media}", state.config.public_url()));
        }
        body["duration"] = json!(job.duration_secs);
    }
    if let Some(error) = job.error.as_ref().filter(|_| status == "failed") {
        body["error"] = json!(error);
    }
    body
}

async fn start(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request = parse(&parse_json_object(&body)?)?;
    let runtime = state.engine.runtime();
    let permit = runtime.media_permit(runtime.media_slot(&key.account_id)?).await?;
    let job = state.engine.runtime().serve_video(key, request, request_id, permit).await?;
    Ok(job_response(&state, &job))
}

async fn status(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.engine.runtime().video_job(&key, &id)?;
    Ok(job_response(&state, &job))
}
