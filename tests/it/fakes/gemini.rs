//! Google's Gemini API: `POST /v1beta/models/{model}:generateContent` and
//! `:streamGenerateContent?alt=sse`. Base URL for the gateway: `{root}`.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{key_ok, pieces, Behavior, Recorded, Wire, COMPLETION_TOKENS, PNG_B64, PROMPT_TOKENS};

pub struct Gemini;

fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> (StatusCode, Value) {
    (status, json!({ "error": { "code": status.as_u16(), "message": message.into(), "status": status_name(status) } }))
}

/// The API accepts both proto-JSON spellings of a field.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> &'a Value {
    if v.get(camel).is_some() {
        &v[camel]
    } else {
        &v[snake]
    }
}

fn usage() -> Value {
    json!({ "promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": COMPLETION_TOKENS, "totalTokenCount": PROMPT_TOKENS + COMPLETION_TOKENS })
}

impl Wire for Gemini {
    fn validate(&self, req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
        let action_ok = req.path.starts_with("/v1beta/models/")
            && (req.path.ends_with(":generateContent")
                || req.path.ends_with(":predict")
                || req.path.ends_with(":predictLongRunning")
                || (req.path.ends_with(":streamGenerateContent") && req.query.contains("alt=sse")));
        if !action_ok {
            return Err(error(StatusCode::NOT_FOUND, format!("{} is not a method of this API", req.path)));
        }
        let given = req
            .header("x-goog-api-key")
            .map(str::to_owned)
            .or_else(|| req.query.split('&').find_map(|kv| kv.strip_prefix("key=").map(str::to_owned)));
        if given.is_none() && !keys.is_empty() {
            return Err(error(StatusCode::FORBIDDEN, "Method doesn't allow unregistered callers. Please use API Key."));
        }
        if !key_ok(given.as_deref(), keys) {
            // Google's answer to a bad key: a 400 that says why in its details.
            let (status, mut body) = error(StatusCode::BAD_REQUEST, "API key not valid. Please pass a valid API key.");
            body["error"]["details"] = json!([{ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID", "domain": "googleapis.com" }]);
            return Err((status, body));
        }
        let b = &req.body;
        if req.path.ends_with(":predictLongRunning") {
            // Veo: a prompt, and a length of 4, 6 or 8 seconds.
            let seconds = b["parameters"]["durationSeconds"].as_u64().unwrap_or(8);
            if !b["instances"][0]["prompt"].is_string() || ![4, 6, 8].contains(&seconds) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "instances[0].prompt and durationSeconds 4, 6 or 8 are required",
                ));
            }
            return Ok(());
        }
        if req.path.ends_with(":predict") {
            // Imagen: one instance with a prompt; sampleCount 1 to 4.
            let count = b["parameters"]["sampleCount"].as_u64().unwrap_or(1);
            if !b["instances"][0]["prompt"].is_string() || !(1..=4).contains(&count) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "instances[0].prompt and parameters.sampleCount (1-4) are required",
                ));
            }
            return Ok(());
        }
        let Some(contents) = b["contents"].as_array().filter(|c| !c.is_empty()) else {
            return Err(error(StatusCode::BAD_REQUEST, "* GenerateContentRequest.contents: contents is not specified"));
        };
        let mut previous_calls: Vec<String> = Vec::new();
        for (i, c) in contents.iter().enumerate() {
            let role = c["role"].as_str().unwrap_or("user");
            if role != "user" && role != "model" {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("Please use a valid role: user, model. (contents[{i}])"),
                ));
            }
            let Some(parts) = c["parts"].as_array().filter(|p| !p.is_empty()) else {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."),
                ));
            };
            let mut calls = Vec::new();
            for part in parts {
                let inline = field(part, "inlineData", "inline_data");
                let call = field(part, "functionCall", "function_call");
                let response = field(part, "functionResponse", "function_response");
                if part["text"].is_string() {
                } else if !inline.is_null() {
                    let mime = field(inline, "mimeType", "mime_type").as_str().unwrap_or_default();
                    if !mime.contains('/') || !inline["data"].is_string() {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            format!("contents[{i}]: inline_data needs mime_type and data"),
                        ));
                    }
                } else if !call.is_null() && role == "model" {
                    calls.push(call["name"].as_str().unwrap_or_default().to_owned());
                } else if !response.is_null() && role == "user" {
                    let name = response["name"].as_str().unwrap_or_default();
                    if !previous_calls.iter().any(|c| c == name) || !response["response"].is_object() {
                        return Err(error(StatusCode::BAD_REQUEST, format!(
                            "Please ensure that function response turn comes immediately after a function call turn (contents[{i}])."
                        )));
                    }
                } else {
                    return Err(error(StatusCode::BAD_REQUEST, format!("contents[{i}]: unsupported part {part}")));
                }
            }
            previous_calls = calls;
        }
        Ok(())
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Value {
        error(status, message).1
    }

    fn is_stream(&self, req: &Recorded) -> bool {
        req.path.ends_with(":streamGenerateContent")
    }

    /// A finished video's bytes, for a download with the key.
    fn raw_answer(&self, req: &Recorded) -> Option<(&'static str, Vec<u8>)> {
        req.path.ends_with(":download").then(|| ("video/mp4", super::FAKE_VIDEO.to_vec()))
    }

    /// Veo's operations: running for the first 1.5 s after they started (the time is in
    /// their name), then done with a video on this server.
    fn other_route(&self, req: &Recorded) -> Option<Value> {
        let (model, started) = req.path.strip_prefix("/v1beta/models/")?.split_once("/operations/op-")?;
        let started: i64 = started.parse().ok()?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000;
        let name = format!("models/{model}/operations/op-{started}");
        if now - started < 1500 {
            return Some(json!({ "name": name, "done": false }));
        }
        let host = req.header("host").unwrap_or("127.0.0.1");
        let uri = format!("http://{host}/v1beta/files/vid-{started}:download?alt=media");
        Some(
            json!({ "name": name, "done": true, "response": { "generateVideoResponse": { "generatedSamples": [{ "video": { "uri": uri } }] } } }),
        )
    }

    fn answer(&self, req: &Recorded, behavior: &Behavior) -> Value {
        if req.path.ends_with(":predictLongRunning") {
            let model = req.path.trim_start_matches("/v1beta/models/").split(':').next().unwrap_or_default();
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000;
            return json!({ "name": format!("models/{model}/operations/op-{now}") });
        }
        if req.path.ends_with(":predict") {
            let count = req.body["parameters"]["sampleCount"].as_u64().unwrap_or(1);
            let predictions: Vec<Value> =
                (0..count).map(|_| json!({ "bytesBase64Encoded": PNG_B64, "mimeType": "image/png" })).collect();
            return json!({ "predictions": predictions });
        }
        let wants_audio = req.body["generationConfig"]["responseModalities"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "AUDIO"));
        if wants_audio {
            use base64::Engine as _;
            let pcm = base64::engine::general_purpose::STANDARD.encode(super::FAKE_AUDIO);
            return json!({
                "candidates": [{ "content": { "role": "model", "parts": [{ "inlineData": { "mimeType": "audio/L16;codec=pcm;rate=24000", "data": pcm } }] }, "finishReason": "STOP", "index": 0 }],
                "usageMetadata": { "promptTokenCount": 8, "candidatesTokenCount": 100, "totalTokenCount": 108 },
            });
        }
        let wants_image = req.body["generationConfig"]["responseModalities"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x == "IMAGE"));
        if wants_image {
            let model = req.path.trim_start_matches("/v1beta/models/").split(':').next().unwrap_or_default();
            return json!({
                "candidates": [{ "content": { "role": "model", "parts": [{ "inlineData": { "mimeType": "image/png", "data": PNG_B64 } }] }, "finishReason": "STOP", "index": 0 }],
                "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 1290, "totalTokenCount": 1300 }, "modelVersion": model,
            });
        }
        let parts = match behavior {
            Behavior::Text(text) => json!([{ "text": text }]),
            Behavior::ToolCall { name, arguments } => {
                json!([{ "functionCall": { "name": name, "args": serde_json::from_str::<Value>(arguments).unwrap() } }])
            }
            other => panic!("no answer for {other:?}"),
        };
        let model = req.path.trim_start_matches("/v1beta/models/").split(':').next().unwrap_or_default();
        json!({
            "candidates": [{ "content": { "role": "model", "parts": parts }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": usage(), "modelVersion": model,
        })
    }

    fn stream_events(&self, req: &Recorded, behavior: &Behavior) -> Vec<String> {
        let full = self.answer(req, behavior);
        let mut out = Vec::new();
        if let Behavior::Text(text) = behavior {
            let pieces = pieces(text);
            for p in &pieces[..pieces.len() - 1] {
                let c =
                    json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": p }] }, "index": 0 }] });
                out.push(format!("data: {c}\r\n\r\n"));
            }
            let last = json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": pieces[pieces.len() - 1] }] }, "finishReason": "STOP", "index": 0 }], "usageMetadata": usage() });
            out.push(format!("data: {last}\r\n\r\n"));
        } else {
            out.push(format!("data: {full}\r\n\r\n"));
        }
        out
    }
}
