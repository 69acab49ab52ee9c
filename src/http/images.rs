//! `POST /v1/images/generations` in OpenAI's shapes; images asked for as `url` are served
//! by `GET /v1/media/:id` (`http::media`).

use axum::{
    body::Bytes,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde_json::{json, Value};
use tokaroo_actors::{
    chat::Mode,
    runtime::images::{known_sizes, ImageRequest, MAX_IMAGES, MAX_PROMPT_CHARS, STYLES},
};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    wire::cost_header,
    AppState,
};

const QUALITIES: [&str; 6] = ["standard", "hd", "low", "medium", "high", "auto"];
const FIELDS: [&str; 8] = ["prompt", "model", "n", "size", "quality", "response_format", "style", "user"];

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/images/generations", post(generate))
}

/// A 400 whose message names the field (`param` is the field, for reading).
fn bad(_param: &str, message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn parse(v: &Value, sizes: &[String]) -> Result<ImageRequest, ApiError> {
    let object = v.as_object().ok_or_else(|| ApiError::BadRequest("Request body must be a JSON object".into()))?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(unknown, format!("Unrecognized request argument supplied: {unknown}")));
    }
    let prompt = match &v["prompt"] {
        Value::String(p) if !p.trim().is_empty() && p.chars().count() <= MAX_PROMPT_CHARS => p.clone(),
        Value::String(_) => {
            return Err(bad("prompt", format!("prompt must be 1 to {MAX_PROMPT_CHARS} characters")));
        }
        _ => return Err(bad("prompt", "prompt is required: a string".into())),
    };
    let (mode, model) = match &v["model"] {
        Value::Null => (Mode::Auto, None),
        Value::String(m) => match Mode::parse(m) {
            Some(mode) => (mode, None),
            None => (Mode::Auto, Some(m.clone())),
        },
        _ => return Err(bad("model", "model must be a string".into())),
    };
    let n = match &v["n"] {
        Value::Null => 1,
        n => n
            .as_u64()
            .filter(|n| (1..=u64::from(MAX_IMAGES)).contains(n))
            .ok_or_else(|| bad("n", format!("n must be a whole number from 1 to {MAX_IMAGES}")))? as u32,
    };
    let size = match &v["size"] {
        Value::Null => "1024x1024".to_owned(),
        Value::String(s) if sizes.contains(s) => s.clone(),
        _ => return Err(bad("size", format!("size must be one of {}", sizes.join(", ")))),
    };
    let text = |field: &str, allowed: &[&str]| -> Result<Option<String>, ApiError> {
        match &v[field] {
            Value::Null => Ok(None),
            Value::String(s) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
            _ => Err(bad(field, format!("{field} must be one of {}", allowed.join(", ")))),
        }
    };
    let quality = text("quality", &QUALITIES)?;
    let style = text("style", &STYLES)?;
    let b64 = text("response_format", &["url", "b64_json"])?.as_deref() == Some("b64_json");
    if !matches!(v["user"], Value::Null | Value::String(_)) {
        return Err(bad("user", "user must be a string".into()));
    }
    Ok(ImageRequest { prompt, mode, model, n, size, quality, style, as_url: !b64 })
}

async fn generate(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire = parse_json_object(&body)?;
    let sizes = known_sizes(&state.engine.runtime().catalog().models);
    let request = parse(&wire, &sizes)?;
    let runtime = state.engine.runtime();
    let permit = runtime.media_permit(runtime.media_slot(&key.account_id)?).await?;
    let outcome = state.engine.runtime().serve_images(key, request, request_id, permit).await?;
    let mut data = Vec::with_capacity(outcome.images.len());
    for (i, image) in outcome.images.into_iter().enumerate() {
        let mut entry = json!({});
        match outcome.media_ids.get(i) {
            Some(id) => entry["url"] = json!(format!("{}/v1/media/{id}", state.config.public_url())),
            None => entry["b64_json"] = json!(STANDARD.encode(&image.bytes)),
        }
        if let Some(revised) = image.revised_prompt {
            entry["revised_prompt"] = json!(revised);
        }
        data.push(entry);
    }
    let created = tokaroo_actors::clock::now_ms() / 1000;
    let mut response = Json(json!({ "created": created, "data": data })).into_response();
    response.headers_mut().insert("x-tokaroo-cost", cost_header(outcome.charge.charged_usd()));
    Ok(response)
}
