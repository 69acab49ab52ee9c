//! OpenAI's Chat Completions wire format (also Groq's, under `/openai/v1`). Base URL for the
//! gateway: `{root}/v1` (OpenAI, self-hosted) or `{root}/openai/v1` (Groq).

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::{key_ok, pieces, Behavior, Recorded, Wire, COMPLETION_TOKENS, PNG_B64, PROMPT_TOKENS};

pub struct OpenAi {
    /// Model ids `GET /v1/models` lists (self-hosted endpoints discover them there).
    pub models: Vec<&'static str>,
}

fn invalid(message: impl Into<String>, param: Option<&str>) -> (StatusCode, Value) {
    let body = json!({ "error": { "message": message.into(), "type": "invalid_request_error", "param": param, "code": null } });
    (StatusCode::BAD_REQUEST, body)
}

fn usage(behavior: &Behavior) -> Value {
    let completion = match behavior {
        Behavior::TextReporting { completion_tokens, .. } | Behavior::Slow { completion_tokens, .. } => {
            *completion_tokens
        }
        _ => COMPLETION_TOKENS,
    };
    json!({ "prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion, "total_tokens": PROMPT_TOKENS + completion })
}

/// `POST /v1/embeddings` as OpenAI (and OpenAI-compatible servers) check it.
fn validate_embeddings(req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
    if !key_ok(req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")), keys) {
        let body = json!({ "error": { "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
        return Err((StatusCode::UNAUTHORIZED, body));
    }
    if !req.body["model"].is_string() {
        return Err(invalid("you must provide a model parameter", Some("model")));
    }
    match &req.body["input"] {
        Value::String(_) => Ok(()),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => Ok(()),
        _ => Err(invalid("'input' must be a string or an array of strings", Some("input"))),
    }
}

/// Four-dimensional vectors, and a `model` that is the upstream's own build name, so a test
/// can tell it from the name the client asked for.
fn embeddings_answer(req: &Recorded) -> Value {
    let inputs = match &req.body["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({ "object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, i as f64] }))
        .collect();
    let model = format!("{}-upstream-build-0042", req.body["model"].as_str().unwrap_or_default());
    json!({ "object": "list", "data": data, "model": model, "usage": { "prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS } })
}

/// `POST /v1/images/generations` as OpenAI checks it: GPT Image models take no
/// `response_format` and their own sizes and qualities; DALL·E 3 one image at a time.
fn validate_images(req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
    if !key_ok(req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")), keys) {
        let body = json!({ "error": { "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
        return Err((StatusCode::UNAUTHORIZED, body));
    }
    let b = &req.body;
    let model = b["model"].as_str().unwrap_or("dall-e-2");
    if b["prompt"].as_str().is_none_or(|p| p.is_empty()) {
        return Err(invalid("Missing required parameter: 'prompt'.", Some("prompt")));
    }
    let n = b["n"].as_u64().unwrap_or(1);
    if !(1..=10).contains(&n) || (model == "dall-e-3" && n != 1) {
        return Err(invalid(format!("Invalid 'n': {n}"), Some("n")));
    }
    let gpt_image = model.starts_with("gpt-image");
    if gpt_image && !b["response_format"].is_null() {
        return Err(invalid("Unknown parameter: 'response_format'.", Some("response_format")));
    }
    let sizes: &[&str] = if gpt_image {
        &[
            "1024x1024",
            "1024x1536",
            "1536x1024",
            "2048x2048",
            "2048x1152",
            "1152x2048",
            "3840x2160",
            "2160x3840",
            "auto",
        ]
    } else {
        &["256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"]
    };
    if b["size"].as_str().is_some_and(|s| !sizes.contains(&s)) {
        return Err(invalid(format!("Invalid value: '{}'. Supported values are: {sizes:?}", b["size"]), Some("size")));
    }
    let qualities: &[&str] = if gpt_image { &["low", "medium", "high", "auto"] } else { &["standard", "hd"] };
    if b["quality"].as_str().is_some_and(|q| !qualities.contains(&q)) {
        return Err(invalid(format!("Invalid value for 'quality': {}", b["quality"]), Some("quality")));
    }
    Ok(())
}

fn images_answer(req: &Recorded) -> Value {
    let n = req.body["n"].as_u64().unwrap_or(1);
    let dalle = req.body["model"].as_str().is_some_and(|m| m.starts_with("dall-e"));
    let data: Vec<Value> = (0..n)
        .map(|_| match dalle {
            true => json!({ "b64_json": PNG_B64, "revised_prompt": format!("A detailed {}", req.body["prompt"].as_str().unwrap_or_default()) }),
            false => json!({ "b64_json": PNG_B64 }),
        })
        .collect();
    json!({ "created": 1_764_000_000, "data": data, "usage": { "input_tokens": 20, "output_tokens": 272, "total_tokens": 292 } })
}

/// `POST /v1/audio/speech` as OpenAI (and Groq) check it.
fn validate_speech(req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
    if !key_ok(req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")), keys) {
        let body = json!({ "error": { "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
        return Err((StatusCode::UNAUTHORIZED, body));
    }
    let b = &req.body;
    for field in ["model", "input", "voice"] {
        if !b[field].is_string() {
            return Err(invalid(format!("Missing required parameter: '{field}'."), Some(field)));
        }
    }
    if b["model"].as_str().is_some_and(|m| m.starts_with("canopylabs/orpheus")) {
        // Groq's Orpheus: wav only, 200 characters, its own voices.
        if b["response_format"].as_str().is_some_and(|f| f != "wav") {
            return Err(invalid("response_format must be one of [wav]", Some("response_format")));
        }
        if b["input"].as_str().is_some_and(|i| i.chars().count() > 200) {
            return Err(invalid("The input text length is limited to 200 characters", Some("input")));
        }
        let voices = [
            "autumn", "diana", "hannah", "austin", "daniel", "troy", "abdullah", "fahad", "sultan", "lulwa", "noura",
            "aisha",
        ];
        if b["voice"].as_str().is_some_and(|v| !voices.contains(&v)) {
            return Err(invalid(format!("voice {} is not a voice of this model", b["voice"]), Some("voice")));
        }
        return Ok(());
    }
    let formats = ["mp3", "opus", "aac", "flac", "wav", "pcm"];
    if b["response_format"].as_str().is_some_and(|f| !formats.contains(&f)) {
        return Err(invalid(format!("Invalid value: {}", b["response_format"]), Some("response_format")));
    }
    Ok(())
}

/// A multipart text field's value (`name="..."` then a blank line then the value).
pub fn form_field(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let at = text.find(&format!("name=\"{name}\""))?;
    let rest = &text[at..];
    let value = rest.split_once("\r\n\r\n")?.1;
    Some(value.split("\r\n").next()?.to_owned())
}

/// `POST /v1/audio/transcriptions` as OpenAI (and Groq) check it: multipart, a file and a model.
fn validate_transcription(req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
    if !key_ok(req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")), keys) {
        let body = json!({ "error": { "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
        return Err((StatusCode::UNAUTHORIZED, body));
    }
    if !req.header("content-type").is_some_and(|c| c.starts_with("multipart/form-data")) {
        return Err(invalid("Content-Type must be multipart/form-data", None));
    }
    let text = String::from_utf8_lossy(&req.raw);
    if !text.contains("name=\"file\"") {
        return Err(invalid("Missing required parameter: 'file'.", Some("file")));
    }
    if form_field(&req.raw, "model").is_none() {
        return Err(invalid("Missing required parameter: 'model'.", Some("model")));
    }
    Ok(())
}

fn transcription_answer(req: &Recorded) -> Value {
    let language = form_field(&req.raw, "language").unwrap_or_else(|| "english".into());
    json!({
        "task": "transcribe", "language": language, "duration": 12.5,
        "text": "Hello there. General Kenobi.",
        "segments": [
            { "id": 0, "seek": 0, "start": 0.0, "end": 1.25, "text": " Hello there.", "tokens": [1], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.01 },
            { "id": 1, "seek": 0, "start": 1.25, "end": 12.5, "text": " General Kenobi.", "tokens": [2], "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0, "no_speech_prob": 0.01 }
        ],
    })
}

impl Wire for OpenAi {
    fn raw_answer(&self, req: &Recorded) -> Option<(&'static str, Vec<u8>)> {
        req.path.ends_with("/audio/speech").then(|| ("audio/mpeg", super::FAKE_AUDIO.to_vec()))
    }

    fn validate(&self, req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)> {
        if req.path.ends_with("/audio/speech") {
            return validate_speech(req, keys);
        }
        if req.path.ends_with("/audio/transcriptions") {
            return validate_transcription(req, keys);
        }
        if req.path.ends_with("/embeddings") {
            return validate_embeddings(req, keys);
        }
        if req.path.ends_with("/images/generations") {
            return validate_images(req, keys);
        }
        if !req.path.ends_with("/chat/completions") {
            return Err((StatusCode::NOT_FOUND, self.error_body(StatusCode::NOT_FOUND, "Unknown request URL")));
        }
        if !key_ok(req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")), keys) {
            let body = json!({ "error": { "message": "Incorrect API key provided.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
            return Err((StatusCode::UNAUTHORIZED, body));
        }
        let b = &req.body;
        if !b["model"].is_string() {
            return Err(invalid("you must provide a model parameter", Some("model")));
        }
        let Some(messages) = b["messages"].as_array().filter(|m| !m.is_empty()) else {
            return Err(invalid("[] is too short - 'messages'", Some("messages")));
        };
        let mut call_ids: Vec<&str> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            match m["role"].as_str() {
                Some("system" | "developer" | "user") => {}
                Some("assistant") => {
                    for call in m["tool_calls"].as_array().into_iter().flatten() {
                        let (Some(id), Some(_), Some(args)) = (
                            call["id"].as_str(),
                            call["function"]["name"].as_str(),
                            call["function"]["arguments"].as_str(),
                        ) else {
                            return Err(invalid(format!("Invalid tool_calls in messages[{i}]"), Some("messages")));
                        };
                        if serde_json::from_str::<Value>(args).is_err() {
                            return Err(invalid("tool call arguments must be a JSON string", Some("messages")));
                        }
                        call_ids.push(id);
                    }
                }
                Some("tool") => {
                    let id = m["tool_call_id"].as_str().unwrap_or_default();
                    if !call_ids.contains(&id) {
                        return Err(invalid(
                            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                            Some(&format!("messages.[{i}].role")),
                        ));
                    }
                }
                _ => return Err(invalid(format!("Invalid value for 'messages[{i}].role'"), Some("messages"))),
            }
            for part in m["content"].as_array().into_iter().flatten() {
                match part["type"].as_str() {
                    Some("text") if part["text"].is_string() => {}
                    Some("image_url")
                        if part["image_url"]["url"]
                            .as_str()
                            .is_some_and(|u| u.starts_with("data:image/") || u.starts_with("https://")) => {}
                    _ => return Err(invalid(format!("Invalid content part in messages[{i}]"), Some("messages"))),
                }
            }
        }
        if let Some(t) = b.get("temperature").and_then(Value::as_f64) {
            if !(0.0..=2.0).contains(&t) {
                return Err(invalid("temperature must be between 0 and 2", Some("temperature")));
            }
        }
        Ok(())
    }

    fn error_body(&self, status: StatusCode, message: &str) -> Value {
        let kind = match status.as_u16() {
            429 => "rate_limit_exceeded",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
    }

    fn is_stream(&self, req: &Recorded) -> bool {
        req.body["stream"] == true
    }

    fn answer(&self, req: &Recorded, behavior: &Behavior) -> Value {
        if req.path.ends_with("/embeddings") {
            return embeddings_answer(req);
        }
        if req.path.ends_with("/images/generations") {
            return images_answer(req);
        }
        if req.path.ends_with("/audio/transcriptions") {
            return transcription_answer(req);
        }
        let (message, finish) = match behavior {
            Behavior::ToolCall { name, arguments } => (
                json!({ "role": "assistant", "content": null, "tool_calls": [{ "id": "call_fake_1", "type": "function", "function": { "name": name, "arguments": arguments } }] }),
                "tool_calls",
            ),
            Behavior::Text(text)
            | Behavior::TextWithoutUsage(text)
            | Behavior::TextReporting { text, .. }
            | Behavior::Slow { text, .. } => (json!({ "role": "assistant", "content": text, "refusal": null }), "stop"),
            other => panic!("no answer for {other:?}"),
        };
        let mut body = json!({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_764_000_000, "model": req.body["model"],
            "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
            "usage": usage(behavior), "system_fingerprint": "fp_fake",
        });
        if matches!(behavior, Behavior::TextWithoutUsage(_)) {
            body.as_object_mut().unwrap().remove("usage");
        }
        body
    }

    fn stream_events(&self, req: &Recorded, behavior: &Behavior) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            let c = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": req.body["model"],
                            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }] });
            format!("data: {c}\n\n")
        };
        let mut out = vec![chunk(json!({ "role": "assistant", "content": "" }), Value::Null)];
        let finish = match behavior {
            Behavior::Text(text)
            | Behavior::TextWithoutUsage(text)
            | Behavior::TextReporting { text, .. }
            | Behavior::Slow { text, .. } => {
                out.extend(pieces(text).into_iter().map(|p| chunk(json!({ "content": p }), Value::Null)));
                "stop"
            }
            Behavior::ToolCall { name, arguments } => {
                out.push(chunk(
                    json!({ "tool_calls": [{ "index": 0, "id": "call_fake_1", "type": "function", "function": { "name": name, "arguments": "" } }] }),
                    Value::Null,
                ));
                let (a, b) = arguments.split_at(arguments.len() / 2);
                for fragment in [a, b] {
                    out.push(chunk(
                        json!({ "tool_calls": [{ "index": 0, "function": { "arguments": fragment } }] }),
                        Value::Null,
                    ));
                }
                "tool_calls"
            }
            other => panic!("no stream for {other:?}"),
        };
        out.push(chunk(json!({}), json!(finish)));
        if req.body["stream_options"]["include_usage"] == true && !matches!(behavior, Behavior::TextWithoutUsage(_)) {
            let u = json!({ "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_764_000_000, "model": req.body["model"], "choices": [], "usage": usage(behavior) });
            out.push(format!("data: {u}\n\n"));
        }
        out.push("data: [DONE]\n\n".into());
        out
    }

    fn other_route(&self, req: &Recorded) -> Option<Value> {
        req.path.ends_with("/models").then(|| {
            let data: Vec<Value> = self
                .models
                .iter()
                .map(|id| json!({ "id": id, "object": "model", "created": 0, "owned_by": "fake" }))
                .collect();
            json!({ "object": "list", "data": data })
        })
    }
}
