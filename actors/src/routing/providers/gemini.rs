//! Google's Gemini API wire format (`POST {base}/v1beta/models/{model}:generateContent`, and
//! `:streamGenerateContent?alt=sse` for streams).
//!
//! Differences from the neutral shape handled here: the system prompt is `systemInstruction`,
//! the assistant role is `model`, tool calls carry no ids (we mint them) and tool results are
//! matched by function name, tool arguments are JSON objects, schemas are an OpenAPI subset
//! (unsupported JSON-Schema keys are removed), and a stream has no end marker.

use std::{collections::HashMap, time::Duration};

use serde_json::{json, Map, Value};

use super::adapter::{
    insert_sampling, parse_data_url, with_key, ChatCall, EmbedCall, HttpAdapter, KeyIn, StreamDecoder,
};
use super::{http, Connection, Embeddings, ProviderError};
use crate::chat::{
    ChatDelta, ChatRequest, ChatResponse, ContentPart, FinishReason, Message, ResponseFormat, Role, ToolCall,
    ToolChoice, Usage,
};

pub struct GeminiChat;

/// Google's documented placeholder for a `thoughtSignature` we do not have (a function call
/// replayed from history that another provider or a client produced). Gemini 3 models refuse a
/// replayed `functionCall` part without a signature; the neutral [`ToolCall`] cannot carry one.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// The image type named by a URL's extension, `image/jpeg` when it names none we know.
fn guess_image_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        _ => "image/jpeg",
    }
}

fn image_part(url: &str) -> Value {
    match parse_data_url(url) {
        Some((mime, data)) => json!({ "inlineData": { "mimeType": mime, "data": data } }),
        None => json!({ "fileData": { "mimeType": guess_image_mime(url), "fileUri": url } }),
    }
}

/// The keys of Gemini's `Schema` object (an OpenAPI 3.0 subset). Everything else is dropped.
const SCHEMA_KEYS: &[&str] = &[
    "type",
    "format",
    "title",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "example",
    "anyOf",
    "propertyOrdering",
    "default",
    "items",
    "minimum",
    "maximum",
];

/// How deep `$ref`s are followed (recursive schemas cannot be expressed inline).
const MAX_REF_DEPTH: usize = 8;

fn resolve_ref<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn convert_schema(schema: &Value, root: &Value, depth: usize) -> Value {
    let Value::Object(map) = schema else {
        // `true` / `false` schemas and anything else: "any value".
        return json!({});
    };
    if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
        return match resolve_ref(root, reference) {
            Some(target) if depth < MAX_REF_DEPTH => {
                let mut resolved = convert_schema(target, root, depth + 1);
                // Sibling keys of `$ref` (a description, typically) win over the target's.
                if let Value::Object(resolved_map) = &mut resolved {
                    resolved_map.extend(convert_local(map, root, depth));
                }
                resolved
            }
            _ => json!({}),
        };
    }
    Value::Object(convert_local(map, root, depth))
}

/// Converts the keys of one schema object, `$ref` aside.
fn convert_local(map: &Map<String, Value>, root: &Value, depth: usize) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "type" => match value {
                // `["string", "null"]` → `type: string, nullable: true`.
                Value::Array(types) => {
                    let non_null: Vec<&Value> = types.iter().filter(|t| t.as_str() != Some("null")).collect();
                    if non_null.len() < types.len() {
                        out.insert("nullable".into(), json!(true));
                    }
                    if let Some(t) = non_null.first() {
                        out.insert("type".into(), (*t).clone());
                    }
                }
                other => {
                    out.insert("type".into(), other.clone());
                }
            },
            "properties" => {
                // Property *names* are the caller's: only the schemas under them are converted.
                if let Value::Object(props) = value {
                    let props: Map<String, Value> =
                        props.iter().map(|(name, s)| (name.clone(), convert_schema(s, root, depth))).collect();
                    out.insert("properties".into(), Value::Object(props));
                }
            }
            "items" => {
                let items = match value {
                    Value::Array(tuple) => tuple.first().cloned().unwrap_or_else(|| json!({})),
                    other => other.clone(),
                };
                out.insert("items".into(), convert_schema(&items, root, depth));
            }
            "anyOf" | "oneOf" => {
                if let Value::Array(options) = value {
                    let options: Vec<Value> = options.iter().map(|s| convert_schema(s, root, depth)).collect();
                    out.insert("anyOf".into(), Value::Array(options));
                }
            }
            "const" if !map.contains_key("enum") => {
                out.insert("enum".into(), json!([value]));
            }
            key if SCHEMA_KEYS.contains(&key) => {
                out.insert(key.to_owned(), value.clone());
            }
            // additionalProperties, $schema, $id, $defs, definitions, strict, examples, ...
            _ => {}
        }
    }
    out
}

/// A JSON Schema reduced to what Gemini's `Schema` accepts: unsupported keys are removed at
/// every level, local `$ref`s are inlined, `oneOf` becomes `anyOf`, `const` becomes `enum`, and
/// nullable type arrays become `nullable`.
pub fn gemini_schema(schema: &Value) -> Value {
    convert_schema(schema, schema, 0)
}

/// Whether replayed function calls need the placeholder signature: Gemini 1.x and 2.x neither
/// require nor expect one.
fn needs_signature_placeholder(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    !(name.starts_with("gemini-1") || name.starts_with("gemini-2"))
}

fn function_response(message: &Message, names: &HashMap<&str, &str>) -> Value {
    let name = message
        .tool_call_id
        .as_deref()
        .and_then(|id| names.get(id).copied())
        .or(message.name.as_deref())
        .unwrap_or_default();
    let text = message.joined_text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({ "result": text }),
    };
    json!({ "functionResponse": { "name": name, "response": response } })
}

fn message_parts(message: &Message, names: &HashMap<&str, &str>, signature: bool) -> Vec<Value> {
    if message.role == Role::Tool {
        return vec![function_response(message, names)];
    }
    let mut parts = Vec::new();
    for part in &message.content {
        match part {
            ContentPart::Text(text) if text.is_empty() => {}
            ContentPart::Text(text) => parts.push(json!({ "text": text })),
            ContentPart::Image { url, .. } => parts.push(image_part(url)),
        }
    }
    for (i, call) in message.tool_calls.iter().enumerate() {
        let args = match serde_json::from_str::<Value>(&call.arguments) {
            Ok(v @ Value::Object(_)) => v,
            _ => json!({}),
        };
        let mut part = json!({ "functionCall": { "name": call.name, "args": args } });
        // For parallel calls Gemini signs only the first one.
        if signature && i == 0 {
            part["thoughtSignature"] = json!(SKIP_THOUGHT_SIGNATURE);
        }
        parts.push(part);
    }
    parts
}

/// The conversation as Gemini `contents`: system turns left out, consecutive same-role turns
/// merged, tool results as `functionResponse` parts of a user turn.
fn contents_json(model: &str, messages: &[Message]) -> Vec<Value> {
    let names: HashMap<&str, &str> =
        messages.iter().flat_map(|m| m.tool_calls.iter()).map(|c| (c.id.as_str(), c.name.as_str())).collect();
    let signature = needs_signature_placeholder(model);
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for message in messages {
        let role = match message.role {
            Role::System => continue,
            Role::User | Role::Tool => "user",
            Role::Assistant => "model",
        };
        let parts = message_parts(message, &names, signature);
        if parts.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((last_role, last_parts)) if *last_role == role => last_parts.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    turns.into_iter().map(|(role, parts)| json!({ "role": role, "parts": parts })).collect()
}

fn function_declaration(tool: &crate::chat::ToolDef) -> Value {
    let mut f = json!({ "name": tool.name });
    if let Some(d) = &tool.description {
        f["description"] = json!(d);
    }
    let parameters = gemini_schema(&tool.parameters);
    // Gemini refuses an OBJECT schema with no properties: a function without arguments simply
    // has no `parameters`.
    let no_arguments = parameters.as_object().is_none_or(Map::is_empty)
        || (parameters["type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("object"))
            && parameters["properties"].as_object().is_none_or(Map::is_empty));
    if !no_arguments {
        f["parameters"] = parameters;
    }
    f
}

/// Whether the model accepts `systemInstruction` (Gemini does; Gemma served by the same API
/// does not).
fn takes_system_instruction(model: &str) -> bool {
    !model.strip_prefix("models/").unwrap_or(model).starts_with("gemma")
}

/// The upstream request body (the same for streamed and whole answers). `model` is the native
/// model id (it decides whether replayed function calls need a placeholder signature).
pub fn request_body(model: &str, req: &ChatRequest, max_output_tokens: u32) -> Value {
    let mut body = Map::new();
    let mut contents = contents_json(model, &req.messages);
    if let Some(system) = req.system_text().filter(|s| !s.is_empty()) {
        if takes_system_instruction(model) {
            body.insert("systemInstruction".into(), json!({ "parts": [{ "text": system }] }));
        } else if let Some(first_user) = contents.iter_mut().find(|c| c["role"] == "user") {
            // Gemma on the Gemini API refuses `systemInstruction` (400 "Developer instruction is
            // not enabled"): the system prompt leads the first user turn instead.
            if let Some(parts) = first_user["parts"].as_array_mut() {
                parts.insert(0, json!({ "text": system }));
            }
        }
    }
    body.insert("contents".into(), Value::Array(contents));
    if !req.tools.is_empty() {
        let declarations: Vec<Value> = req.tools.iter().map(function_declaration).collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
        if let Some(choice) = &req.tool_choice {
            let config = match choice {
                ToolChoice::Auto => json!({ "mode": "AUTO" }),
                ToolChoice::None => json!({ "mode": "NONE" }),
                ToolChoice::Required => json!({ "mode": "ANY" }),
                ToolChoice::Function(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
            };
            body.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
        }
    }
    let mut config = Map::new();
    config.insert("maxOutputTokens".into(), json!(max_output_tokens));
    insert_sampling(&mut config, req, ["temperature", "topP", "stopSequences", "seed"]);
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".into(), json!("application/json"));
            config.insert("responseSchema".into(), gemini_schema(schema));
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    Value::Object(body)
}

fn finish_reason(s: &str, called_functions: bool) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if called_functions => FinishReason::ToolCalls,
        // STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, ...
        _ => FinishReason::Stop,
    }
}

fn to_u32(n: u64) -> u32 {
    n.min(u64::from(u32::MAX)) as u32
}

fn usage(v: &Value) -> Option<Usage> {
    if !v.is_object() {
        return None;
    }
    let prompt = v["promptTokenCount"].as_u64().unwrap_or(0) + v["toolUsePromptTokenCount"].as_u64().unwrap_or(0);
    let completion = v["candidatesTokenCount"].as_u64().unwrap_or(0) + v["thoughtsTokenCount"].as_u64().unwrap_or(0);
    Some(Usage { prompt_tokens: to_u32(prompt), completion_tokens: to_u32(completion) })
}

fn new_call_id() -> String {
    format!("call_{}", &uuid::Uuid::new_v4().simple().to_string()[..24])
}

fn tool_call(call: &Value) -> ToolCall {
    let args = &call["args"];
    ToolCall {
        id: call["id"].as_str().filter(|id| !id.is_empty()).map_or_else(new_call_id, str::to_owned),
        name: call["name"].as_str().unwrap_or_default().to_owned(),
        arguments: if args.is_null() { "{}".into() } else { args.to_string() },
    }
}

/// The answer's parts that matter: visible text parts (thoughts left out) and function calls.
fn parts(candidate: &Value) -> impl Iterator<Item = &Value> {
    candidate["content"]["parts"].as_array().into_iter().flatten().filter(|p| p["thought"] != true)
}

fn blocked(v: &Value) -> bool {
    v["promptFeedback"]["blockReason"].as_str().is_some()
}

pub fn parse_response(v: &Value) -> Result<ChatResponse, ProviderError> {
    let Some(candidate) = v["candidates"].get(0) else {
        if blocked(v) {
            return Ok(ChatResponse {
                content: None,
                tool_calls: Vec::new(),
                finish_reason: FinishReason::ContentFilter,
                usage: usage(&v["usageMetadata"]),
            });
        }
        return Err(ProviderError::Protocol("response has no candidates".into()));
    };
    let mut text: Option<String> = None;
    let mut tool_calls = Vec::new();
    for part in parts(candidate) {
        if let Some(t) = part["text"].as_str() {
            text.get_or_insert_with(String::new).push_str(t);
        }
        if part["functionCall"].is_object() {
            tool_calls.push(tool_call(&part["functionCall"]));
        }
    }
    let finish_reason = finish_reason(candidate["finishReason"].as_str().unwrap_or("STOP"), !tool_calls.is_empty());
    Ok(ChatResponse { content: text, tool_calls, finish_reason, usage: usage(&v["usageMetadata"]) })
}

/// Turns the chunks of one streamed answer into deltas. Pure: feed it each SSE event's data in
/// order; when the body ends, [`StreamState::finish`] emits the usage, or judges the stream
/// broken if no chunk ever carried a finish reason (Gemini has no end marker).
#[derive(Debug, Default)]
pub struct StreamState {
    tool_calls: u32,
    finished: bool,
    usage: Option<Usage>,
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamDecoder for StreamState {
    /// The deltas carried by one streamed chunk (a whole `GenerateContentResponse`); Gemini's
    /// events have no names.
    fn on_event(&mut self, _event_name: &str, data: &str) -> Result<Vec<ChatDelta>, ProviderError> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let v: Value =
            serde_json::from_str(data).map_err(|e| ProviderError::StreamBroken(format!("invalid JSON chunk: {e}")))?;
        if let Some(error) = v.get("error") {
            let message = error["message"].as_str().unwrap_or("error chunk in stream");
            return Err(ProviderError::StreamBroken(message.to_owned()));
        }
        if let Some(u) = usage(&v["usageMetadata"]) {
            self.usage = Some(u);
        }
        let mut out = Vec::new();
        let Some(candidate) = v["candidates"].get(0) else {
            if blocked(&v) && !self.finished {
                self.finished = true;
                out.push(ChatDelta::Finish(FinishReason::ContentFilter));
            }
            return Ok(out);
        };
        for part in parts(candidate) {
            if let Some(t) = part["text"].as_str().filter(|t| !t.is_empty()) {
                out.push(ChatDelta::Text(t.to_owned()));
            }
            if part["functionCall"].is_object() {
                let call = tool_call(&part["functionCall"]);
                let index = self.tool_calls;
                self.tool_calls += 1;
                out.push(ChatDelta::ToolCallStart { index, id: call.id, name: call.name });
                out.push(ChatDelta::ToolCallArguments { index, fragment: call.arguments });
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            if !self.finished {
                self.finished = true;
                out.push(ChatDelta::Finish(finish_reason(reason, self.tool_calls > 0)));
            }
        }
        Ok(out)
    }

    /// Called when the body ends: the usage of the last chunk that reported any, or
    /// `StreamBroken` when the answer never finished.
    fn finish(&mut self) -> Result<Vec<ChatDelta>, ProviderError> {
        if !self.finished {
            return Err(ProviderError::StreamBroken("stream ended without a finish reason".into()));
        }
        Ok(self.usage.take().map(ChatDelta::Usage).into_iter().collect())
    }
}

/// A protobuf `Duration` in JSON: seconds with an `s` suffix (`"30s"`, `"1.5s"`), at most
/// [`http::MAX_RETRY_AFTER`] (`"1e30s"` would not fit a `Duration`).
fn proto_duration(s: &str) -> Option<Duration> {
    let secs = s.strip_suffix('s')?.parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(http::MAX_RETRY_AFTER.as_secs_f64())))
}

/// Reads Google's error body `{"error": {"code", "message", "status", "details"}}`. Google
/// answers a bad key with 400 `API_KEY_INVALID`: that is our credential failing (reported as
/// 401), not the client's request. It says when to retry in a `RetryInfo` detail, not in a
/// `retry-after` header.
fn status_error(response: http::ErrorResponse) -> ProviderError {
    let body: Value = serde_json::from_str(&response.body).unwrap_or_default();
    let details = body["error"]["details"].as_array().map(Vec::as_slice).unwrap_or_default();
    let status = if details.iter().any(|d| d["reason"] == "API_KEY_INVALID") { 401 } else { response.status };
    let retry_after =
        response.retry_after.or_else(|| details.iter().find_map(|d| d["retryDelay"].as_str()).and_then(proto_duration));
    ProviderError::Status { status, message: response.message(), retry_after }
}

fn endpoint(conn: &Connection, model: &str, stream: bool) -> String {
    let base = conn.base_url.trim_end_matches('/');
    let base =
        if base.ends_with("/v1beta") || base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1beta") };
    let model = model.strip_prefix("models/").unwrap_or(model);
    if stream {
        format!("{base}/models/{model}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{model}:generateContent")
    }
}

/// Google takes the key in a header, never in the URL (where logs would keep it).
const KEY: KeyIn = KeyIn::Header("x-goog-api-key");

fn post(conn: &Connection, model: &str, stream: bool, body: &Value) -> reqwest::RequestBuilder {
    with_key(conn.http.post(endpoint(conn, model, stream)).json(body), conn, KEY)
}

impl HttpAdapter for GeminiChat {
    type Decoder = StreamState;

    const PARSE_RESPONSE: fn(&Value) -> Result<ChatResponse, ProviderError> = parse_response;
    const READ_ERROR: fn(http::ErrorResponse) -> ProviderError = status_error;

    /// The body is the same for streamed and whole answers; the endpoint differs.
    fn request(conn: &Connection, call: &ChatCall<'_>) -> Result<reqwest::RequestBuilder, ProviderError> {
        Ok(post(conn, call.model, call.stream, &request_body(call.model, call.req, call.max_output_tokens)))
    }
}

/// Images: Imagen models through `:predict`, Gemini image models through
/// `:generateContent` with an image answer (one image per call, so `n` calls).
pub async fn images(
    conn: &Connection,
    model: &str,
    call: &super::ImageCall<'_>,
) -> Result<Vec<super::GeneratedImage>, ProviderError> {
    let base = conn.base_url.trim_end_matches('/');
    let base =
        if base.ends_with("/v1beta") || base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1beta") };
    let model = model.strip_prefix("models/").unwrap_or(model);
    let cap = super::images_cap(call.n);
    if model.starts_with("imagen") {
        let mut parameters = json!({ "sampleCount": call.n, "aspectRatio": call.size });
        if let Some(quality) = call.quality {
            parameters["imageSize"] = json!(quality);
        }
        let body = json!({ "instances": [{ "prompt": call.prompt }], "parameters": parameters });
        let request = with_key(conn.http.post(format!("{base}/models/{model}:predict")).json(&body), conn, KEY);
        let v = http::json_body_capped(http::send_with(conn, request, status_error).await?, cap).await?;
        return v["predictions"]
            .as_array()
            .ok_or_else(|| ProviderError::Protocol("Imagen answered no predictions".into()))?
            .iter()
            .map(|p| {
                let b64 = p["bytesBase64Encoded"]
                    .as_str()
                    .ok_or_else(|| ProviderError::Protocol("a prediction without image bytes".into()))?;
                super::decode_image(b64, p["mimeType"].as_str().unwrap_or("image/png"), None)
            })
            .collect();
    }
    let mut image_config = json!({ "aspectRatio": call.size });
    if let Some(quality) = call.quality {
        image_config["imageSize"] = json!(quality);
    }
    let body = json!({
        "contents": [{ "role": "user", "parts": [{ "text": call.prompt }] }],
        "generationConfig": { "responseModalities": ["IMAGE"], "imageConfig": image_config },
    });
    let mut images = Vec::new();
    for _ in 0..call.n.max(1) {
        let url = format!("{base}/models/{model}:generateContent");
        let request = with_key(conn.http.post(url).json(&body), conn, KEY);
        let v = http::json_body_capped(http::send_with(conn, request, status_error).await?, cap).await?;
        let parts = v["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default();
        let inline = parts
            .iter()
            .find_map(|p| p.get("inlineData").or_else(|| p.get("inline_data")))
            .ok_or_else(|| ProviderError::Protocol("Gemini answered no image".into()))?;
        let b64 =
            inline["data"].as_str().ok_or_else(|| ProviderError::Protocol("an image part without data".into()))?;
        let mime = inline.get("mimeType").or_else(|| inline.get("mime_type")).and_then(Value::as_str);
        images.push(super::decode_image(b64, mime.unwrap_or("image/png"), None)?);
    }
    Ok(images)
}

/// Speech through `:generateContent` with an audio answer: 16-bit PCM at 24 kHz, answered
/// as is (`pcm`) or with a WAV header (`wav`), the only formats Gemini's speech gives.
pub async fn speech(
    conn: &Connection,
    model: &str,
    call: &super::SpeechCall<'_>,
) -> Result<super::ByteStream, ProviderError> {
    use base64::Engine as _;
    use futures_util::StreamExt as _;
    if !matches!(call.format, "pcm" | "wav") {
        return Err(ProviderError::Status {
            status: 400,
            message: format!("Gemini speech answers pcm or wav, not {}", call.format),
            retry_after: None,
        });
    }
    let base = conn.base_url.trim_end_matches('/');
    let base =
        if base.ends_with("/v1beta") || base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1beta") };
    let model = model.strip_prefix("models/").unwrap_or(model);
    let body = json!({
        "contents": [{ "role": "user", "parts": [{ "text": call.input }] }],
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": { "voiceConfig": { "prebuiltVoiceConfig": { "voiceName": call.voice } } },
        },
    });
    let url = format!("{base}/models/{model}:generateContent");
    let request = with_key(conn.http.post(url).json(&body), conn, KEY);
    let v = http::json_body_capped(http::send_with(conn, request, status_error).await?, 64 << 20).await?;
    let parts = v["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default();
    let inline = parts
        .iter()
        .find_map(|p| p.get("inlineData").or_else(|| p.get("inline_data")))
        .ok_or_else(|| ProviderError::Protocol("Gemini answered no audio".into()))?;
    let data = inline["data"].as_str().ok_or_else(|| ProviderError::Protocol("an audio part without data".into()))?;
    let mut pcm = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| ProviderError::Protocol(format!("audio that is not base64: {e}")))?;
    if call.format == "wav" {
        let rate = inline
            .get("mimeType")
            .or_else(|| inline.get("mime_type"))
            .and_then(Value::as_str)
            .and_then(|m| m.split(';').find_map(|p| p.trim().strip_prefix("rate=")))
            .and_then(|r| r.parse().ok())
            .unwrap_or(24_000);
        let mut wav = super::wav_header(u32::try_from(pcm.len()).unwrap_or(u32::MAX), rate);
        wav.append(&mut pcm);
        pcm = wav;
    }
    Ok(futures_util::stream::once(async move { Ok(bytes::Bytes::from(pcm)) }).boxed())
}

/// The API's root: the configured base with `/v1beta` unless it names a version.
fn api_base(conn: &Connection) -> String {
    let base = conn.base_url.trim_end_matches('/');
    if base.ends_with("/v1beta") || base.ends_with("/v1") {
        base.to_owned()
    } else {
        format!("{base}/v1beta")
    }
}

/// Veo: `:predictLongRunning` answers an operation's name, polled until done.
pub async fn start_video(conn: &Connection, model: &str, call: &super::VideoCall<'_>) -> Result<String, ProviderError> {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let body = json!({
        "instances": [{ "prompt": call.prompt }],
        "parameters": {
            "aspectRatio": call.aspect_ratio,
            "durationSeconds": call.duration_secs,
            "resolution": call.resolution,
        },
    });
    let url = format!("{}/models/{model}:predictLongRunning", api_base(conn));
    let request = with_key(conn.http.post(url).json(&body), conn, KEY);
    let v = http::json_body(http::send_with(conn, request, status_error).await?).await?;
    v["name"]
        .as_str()
        .filter(|n| n.contains("/operations/") && !n.contains(".."))
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Protocol("Veo answered no operation".into()))
}

pub async fn video_status(conn: &Connection, operation: &str) -> Result<super::VideoStatus, ProviderError> {
    let url = format!("{}/{}", api_base(conn), operation.trim_start_matches('/'));
    let request = with_key(conn.http.get(url), conn, KEY);
    let v = http::json_body(http::send_with(conn, request, status_error).await?).await?;
    if v["done"] != true {
        return Ok(super::VideoStatus::Running);
    }
    if let Some(message) = v["error"]["message"].as_str() {
        return Ok(super::VideoStatus::Failed(message.to_owned()));
    }
    let response = &v["response"]["generateVideoResponse"];
    match response["generatedSamples"][0]["video"]["uri"].as_str() {
        Some(uri) => Ok(super::VideoStatus::Done { uri: uri.to_owned() }),
        None => Ok(super::VideoStatus::Failed(
            response["raiMediaFilteredReasons"][0].as_str().unwrap_or("the job finished without a video").to_owned(),
        )),
    }
}

/// Downloads a finished video. The URI must be on the connection's own host (it is fetched
/// with the connection's key); one redirect, as the download answers, is followed without
/// the key and only to Google's https content hosts.
pub async fn fetch_video(conn: &Connection, uri: &str) -> Result<super::ByteStream, ProviderError> {
    let (ours, theirs) = (reqwest::Url::parse(&conn.base_url).ok(), reqwest::Url::parse(uri).ok());
    let same_host = matches!((&ours, &theirs), (Some(a), Some(b)) if a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default());
    if !same_host {
        return Err(ProviderError::Protocol(format!("a video URI on another host: {uri}")));
    }
    // Only the wait for each answer's head, then for each piece, is bounded: a large video
    // on a slow link takes as long as it takes.
    let head = conn.timeout;
    let request =
        with_key(conn.http.get(uri), conn, KEY).build().map_err(|e| ProviderError::Protocol(e.to_string()))?;
    let response = tokio::time::timeout(head, conn.http.execute(request)).await.map_err(|_| ProviderError::Timeout)?;
    let response = response.map_err(|e| ProviderError::Connect(e.to_string()))?;
    let response = if response.status().is_redirection() {
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| reqwest::Url::parse(l).ok())
            .filter(|l| {
                l.scheme() == "https"
                    && l.host_str().is_some_and(|h| {
                        h.ends_with(".googleusercontent.com")
                            || h == "storage.googleapis.com"
                            || h.ends_with(".googleapis.com")
                    })
            })
            .ok_or_else(|| ProviderError::Protocol("the video download redirects somewhere unexpected".into()))?;
        let follow = tokio::time::timeout(head, conn.http.get(location).send()).await;
        follow.map_err(|_| ProviderError::Timeout)?.map_err(|e| ProviderError::Connect(e.to_string()))?
    } else {
        response
    };
    if !response.status().is_success() {
        return Err(status_error(http::ErrorResponse::read(response).await));
    }
    Ok(super::capped_body(response, head, super::MAX_VIDEO_BYTES))
}

/// `batchEmbedContents`: one vector per input, optionally truncated to `dims`.
pub async fn embed(conn: &Connection, call: &EmbedCall<'_>) -> Result<Embeddings, ProviderError> {
    let EmbedCall { model, inputs, dims } = *call;
    let base = conn.base_url.trim_end_matches('/');
    let base =
        if base.ends_with("/v1beta") || base.ends_with("/v1") { base.to_owned() } else { format!("{base}/v1beta") };
    let model = model.strip_prefix("models/").unwrap_or(model);
    let requests: Vec<Value> = inputs
        .iter()
        .map(|text| {
            let mut r = json!({ "model": format!("models/{model}"), "content": { "parts": [{ "text": text }] } });
            if let Some(d) = dims {
                r["outputDimensionality"] = json!(d);
            }
            r
        })
        .collect();
    let url = format!("{base}/models/{model}:batchEmbedContents");
    let request = with_key(conn.http.post(url).json(&json!({ "requests": requests })), conn, KEY);
    let response = http::send_with(conn, request, status_error).await?;
    let v = http::json_body_capped(response, http::embeddings_cap(inputs.len())).await?;
    let vectors: Vec<Vec<f32>> = v["embeddings"]
        .as_array()
        .ok_or_else(|| ProviderError::Protocol("embedding response has no embeddings".into()))?
        .iter()
        .map(|e| {
            e["values"]
                .as_array()
                .map(|vals| vals.iter().filter_map(|x| x.as_f64().map(|f| f as f32)).collect())
                .unwrap_or_default()
        })
        .collect();
    if vectors.len() != inputs.len() {
        return Err(ProviderError::Protocol(format!("{} embeddings for {} inputs", vectors.len(), inputs.len())));
    }
    // The Gemini API reports no token usage for embeddings.
    Ok(Embeddings { vectors, prompt_tokens: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ToolDef;
    use crate::routing::providers::adapter::delta_stream;
    use crate::routing::providers::adapter::testing::{
        self, assistant_calls, connection, conversation, request, tool_result, user_parts,
    };
    use futures_util::StreamExt;

    #[test]
    fn gemma_gets_the_system_prompt_in_its_first_user_turn() {
        let req = request(vec![Message::text(Role::System, "Be brief."), Message::text(Role::User, "Hi")]);
        let body = request_body("gemma-3-27b-it", &req, 4096);
        assert!(body.get("systemInstruction").is_none());
        assert_eq!(body["contents"][0]["role"], "user");
        assert_eq!(body["contents"][0]["parts"], json!([{ "text": "Be brief." }, { "text": "Hi" }]));
    }

    #[test]
    fn system_becomes_system_instruction_and_roles_map() {
        let req = conversation(&[
            (Role::System, "Be brief."),
            (Role::User, "Hi"),
            (Role::Assistant, "Hello!"),
            (Role::User, "Bye"),
            (Role::User, "Really"),
        ]);
        let body = request_body("gemini-2.5-flash", &req, 4096);
        assert_eq!(body["systemInstruction"], json!({ "parts": [{ "text": "Be brief." }] }));
        assert_eq!(
            body["contents"],
            json!([
                { "role": "user", "parts": [{ "text": "Hi" }] },
                { "role": "model", "parts": [{ "text": "Hello!" }] },
                { "role": "user", "parts": [{ "text": "Bye" }, { "text": "Really" }] },
            ])
        );
        // The output bound is always sent: it is what the request's hold covers.
        assert_eq!(body["generationConfig"], json!({ "maxOutputTokens": 4096 }));
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn images_become_inline_or_file_data() {
        let msg = user_parts(vec![
            ContentPart::Text("Compare".into()),
            ContentPart::Image { url: "data:image/webp;base64,UklG".into(), detail: None },
            ContentPart::Image { url: "https://example.com/a/cat.PNG?size=large".into(), detail: None },
            ContentPart::Image { url: "https://example.com/photo".into(), detail: None },
        ]);
        let body = request_body("gemini-2.5-flash", &request(vec![msg]), 4096);
        assert_eq!(
            body["contents"][0]["parts"],
            json!([
                { "text": "Compare" },
                { "inlineData": { "mimeType": "image/webp", "data": "UklG" } },
                { "fileData": { "mimeType": "image/png", "fileUri": "https://example.com/a/cat.PNG?size=large" } },
                { "fileData": { "mimeType": "image/jpeg", "fileUri": "https://example.com/photo" } },
            ])
        );
    }

    #[test]
    fn tool_round_trip_uses_function_names_and_merges_results() {
        let mut named_result = tool_result("unknown_id", "plain text");
        named_result.name = Some("clock".into());
        let req = request(vec![
            Message::text(Role::User, "Weather in Paris, and the time?"),
            assistant_calls(vec![
                ToolCall { id: "call_1".into(), name: "weather".into(), arguments: r#"{"city":"Paris"}"#.into() },
                ToolCall { id: "call_2".into(), name: "time".into(), arguments: "garbage".into() },
            ]),
            tool_result("call_1", r#"{"temp": 21}"#),
            tool_result("call_2", "12:00"),
            named_result,
        ]);
        let body = request_body("gemini-2.5-pro", &req, 4096);
        let contents = body["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{contents:?}");
        assert_eq!(
            contents[1],
            json!({ "role": "model", "parts": [
                { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
                { "functionCall": { "name": "time", "args": {} } },
            ]})
        );
        assert_eq!(
            contents[2],
            json!({ "role": "user", "parts": [
                { "functionResponse": { "name": "weather", "response": { "temp": 21 } } },
                { "functionResponse": { "name": "time", "response": { "result": "12:00" } } },
                { "functionResponse": { "name": "clock", "response": { "result": "plain text" } } },
            ]})
        );
    }

    #[test]
    fn gemini_3_replayed_calls_carry_the_placeholder_signature() {
        let req = request(vec![
            Message::text(Role::User, "Go"),
            assistant_calls(vec![
                ToolCall { id: "a".into(), name: "f".into(), arguments: "{}".into() },
                ToolCall { id: "b".into(), name: "g".into(), arguments: "{}".into() },
            ]),
            tool_result("a", "1"),
            tool_result("b", "2"),
        ]);
        let body = request_body("gemini-3-pro-preview", &req, 4096);
        let parts = &body["contents"][1]["parts"];
        assert_eq!(parts[0]["thoughtSignature"], SKIP_THOUGHT_SIGNATURE);
        assert!(parts[1].get("thoughtSignature").is_none(), "only the first parallel call is signed");
        let body = request_body("models/gemini-2.0-flash", &req, 4096);
        assert!(body["contents"][1]["parts"][0].get("thoughtSignature").is_none());
    }

    #[test]
    fn tools_are_declared_with_cleaned_schemas() {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.tools = vec![
            ToolDef {
                name: "search".into(),
                description: Some("Searches".into()),
                parameters: json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "strict": true,
                    "additionalProperties": false,
                    "properties": {
                        "query": { "type": "string", "description": "what to find" },
                        "strict": { "type": ["boolean", "null"] },
                        "filters": {
                            "type": "array",
                            "items": { "$ref": "#/$defs/filter" }
                        }
                    },
                    "required": ["query"],
                    "$defs": {
                        "filter": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": { "field": { "const": "name" } }
                        }
                    }
                }),
            },
            ToolDef {
                name: "ping".into(),
                description: None,
                parameters: json!({ "type": "object", "properties": {}, "additionalProperties": false }),
            },
        ];
        let body = request_body("gemini-2.5-flash", &req, 4096);
        assert_eq!(
            body["tools"],
            json!([{ "functionDeclarations": [
                {
                    "name": "search",
                    "description": "Searches",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "query": { "type": "string", "description": "what to find" },
                            "strict": { "type": "boolean", "nullable": true },
                            "filters": {
                                "type": "array",
                                "items": { "type": "object", "properties": { "field": { "enum": ["name"] } } }
                            }
                        },
                        "required": ["query"]
                    }
                },
                { "name": "ping" },
            ]}])
        );
        assert!(body.get("toolConfig").is_none());
    }

    #[test]
    fn tool_choice_maps_to_function_calling_config() {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.tools = vec![ToolDef {
            name: "lookup".into(),
            description: None,
            parameters: json!({ "type": "object", "properties": { "q": { "type": "string" } } }),
        }];
        let cases = [
            (ToolChoice::Auto, json!({ "mode": "AUTO" })),
            (ToolChoice::None, json!({ "mode": "NONE" })),
            (ToolChoice::Required, json!({ "mode": "ANY" })),
            (ToolChoice::Function("lookup".into()), json!({ "mode": "ANY", "allowedFunctionNames": ["lookup"] })),
        ];
        for (choice, expected) in cases {
            req.tool_choice = Some(choice);
            let body = request_body("gemini-2.5-flash", &req, 4096);
            assert_eq!(body["toolConfig"], json!({ "functionCallingConfig": expected }));
        }
    }

    #[test]
    fn generation_config_and_json_modes() {
        let mut req = request(vec![Message::text(Role::User, "hi")]);
        req.max_tokens = Some(256);
        req.temperature = Some(1.5);
        req.top_p = Some(0.9);
        req.stop = vec!["END".into()];
        req.seed = Some(42);
        req.response_format = Some(ResponseFormat::JsonObject);
        let body = request_body("gemini-2.5-flash", &req, 256);
        assert_eq!(
            body["generationConfig"],
            json!({
                "maxOutputTokens": 256,
                "temperature": 1.5,
                "topP": 0.9,
                "stopSequences": ["END"],
                "seed": 42,
                "responseMimeType": "application/json",
            })
        );

        req.response_format = Some(ResponseFormat::JsonSchema {
            name: "person".into(),
            schema: json!({
                "type": "object",
                "additionalProperties": false,
                "properties": { "age": { "type": "integer", "minimum": 0 } },
                "required": ["age"]
            }),
            strict: true,
        });
        let config = &request_body("gemini-2.5-flash", &req, 4096)["generationConfig"];
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(
            config["responseSchema"],
            json!({ "type": "object", "properties": { "age": { "type": "integer", "minimum": 0 } }, "required": ["age"] })
        );
    }

    #[test]
    fn parses_text_response_with_usage() {
        let v = json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "text": "thinking...", "thought": true },
                    { "text": "Hello" },
                    { "text": " world" }
                ] },
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": { "promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22 },
            "modelVersion": "gemini-2.5-flash"
        });
        let usage = Some(Usage { prompt_tokens: 10, completion_tokens: 12 });
        testing::assert_text_answer(&parse_response(&v).unwrap(), Some("Hello world"), FinishReason::Stop, usage);
    }

    #[test]
    fn parses_function_calls() {
        let v = json!({
            "candidates": [{
                "content": { "role": "model", "parts": [
                    { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
                    { "functionCall": { "id": "fc-7", "name": "time" } }
                ] },
                "finishReason": "STOP"
            }],
            "usageMetadata": { "promptTokenCount": 30, "candidatesTokenCount": 8 }
        });
        let r = parse_response(&v).unwrap();
        assert_eq!(r.content, None);
        assert_eq!(r.finish_reason, FinishReason::ToolCalls);
        assert_eq!(r.tool_calls.len(), 2);
        assert!(r.tool_calls[0].id.starts_with("call_") && r.tool_calls[0].id.len() == 29, "{}", r.tool_calls[0].id);
        assert_eq!(r.tool_calls[0].name, "weather");
        assert_eq!(r.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(r.tool_calls[1], ToolCall { id: "fc-7".into(), name: "time".into(), arguments: "{}".into() });
        assert_eq!(r.usage, Some(Usage { prompt_tokens: 30, completion_tokens: 8 }));
        // Minted ids are unique.
        let again = parse_response(&v).unwrap();
        assert_ne!(again.tool_calls[0].id, r.tool_calls[0].id);
    }

    #[test]
    fn maps_finish_reasons_and_blocked_prompts() {
        for (reason, expected) in [
            ("STOP", FinishReason::Stop),
            ("MAX_TOKENS", FinishReason::Length),
            ("SAFETY", FinishReason::ContentFilter),
            ("RECITATION", FinishReason::ContentFilter),
            ("BLOCKLIST", FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
            ("OTHER", FinishReason::Stop),
        ] {
            let v = json!({ "candidates": [{ "content": { "parts": [{ "text": "x" }] }, "finishReason": reason }] });
            assert_eq!(parse_response(&v).unwrap().finish_reason, expected, "{reason}");
        }
        let blocked = json!({
            "promptFeedback": { "blockReason": "SAFETY" },
            "usageMetadata": { "promptTokenCount": 9, "totalTokenCount": 9 }
        });
        let r = parse_response(&blocked).unwrap();
        assert_eq!(r.content, None);
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.finish_reason, FinishReason::ContentFilter);
        assert_eq!(r.usage, Some(Usage { prompt_tokens: 9, completion_tokens: 0 }));
        assert!(matches!(parse_response(&json!({})), Err(ProviderError::Protocol(_))));
    }

    fn run(chunks: &[&str]) -> (Vec<ChatDelta>, Result<Vec<ChatDelta>, ProviderError>) {
        let events: Vec<(&str, &str)> = chunks.iter().map(|chunk| ("", *chunk)).collect();
        testing::run::<StreamState>(&events)
    }

    #[test]
    fn stream_text_answer_reports_last_usage_once() {
        let chunks = [
            r#"{"candidates": [{"content": {"parts": [{"text": "The"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 1,"totalTokenCount": 9},"modelVersion": "gemini-2.5-flash"}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": " sky is blue."}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 5,"totalTokenCount": 13}}"#,
            r#"{"candidates": [{"content": {"parts": [{"text": ""}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 8,"candidatesTokenCount": 6,"thoughtsTokenCount": 4,"totalTokenCount": 18}}"#,
        ];
        let (deltas, end) = run(&chunks);
        assert_eq!(
            deltas,
            vec![
                ChatDelta::Text("The".into()),
                ChatDelta::Text(" sky is blue.".into()),
                ChatDelta::Finish(FinishReason::Stop),
            ]
        );
        assert_eq!(end, Ok(vec![ChatDelta::Usage(Usage { prompt_tokens: 8, completion_tokens: 10 })]));
    }

    #[test]
    fn stream_function_calls_are_indexed_across_chunks() {
        let chunks = [
            r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "weather","args": {"city": "Paris"}}}],"role": "model"},"index": 0}]}"#,
            r#"{"candidates": [{"content": {"parts": [{"functionCall": {"name": "time","args": {}}}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 20,"candidatesTokenCount": 10}}"#,
        ];
        let (deltas, end) = run(&chunks);
        assert_eq!(deltas.len(), 5, "{deltas:?}");
        let ChatDelta::ToolCallStart { index: 0, id, name } = &deltas[0] else { panic!("{deltas:?}") };
        assert!(id.starts_with("call_"));
        assert_eq!(name, "weather");
        assert_eq!(deltas[1], ChatDelta::ToolCallArguments { index: 0, fragment: r#"{"city":"Paris"}"#.into() });
        assert!(matches!(&deltas[2], ChatDelta::ToolCallStart { index: 1, name, .. } if name == "time"));
        assert_eq!(deltas[3], ChatDelta::ToolCallArguments { index: 1, fragment: "{}".into() });
        assert_eq!(deltas[4], ChatDelta::Finish(FinishReason::ToolCalls));
        assert_eq!(end, Ok(vec![ChatDelta::Usage(Usage { prompt_tokens: 20, completion_tokens: 10 })]));
    }

    #[test]
    fn stream_blocked_prompt_finishes_with_content_filter() {
        let (deltas, end) = run(&[
            r#"{"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},"usageMetadata": {"promptTokenCount": 4}}"#,
        ]);
        assert_eq!(deltas, vec![ChatDelta::Finish(FinishReason::ContentFilter)]);
        assert_eq!(end, Ok(vec![ChatDelta::Usage(Usage { prompt_tokens: 4, completion_tokens: 0 })]));
    }

    #[test]
    fn stream_without_finish_reason_is_broken() {
        let (deltas, end) =
            run(&[r#"{"candidates": [{"content": {"parts": [{"text": "Half an ans"}],"role": "model"},"index": 0}]}"#]);
        assert_eq!(deltas, vec![ChatDelta::Text("Half an ans".into())]);
        assert!(matches!(end, Err(ProviderError::StreamBroken(_))), "{end:?}");
    }

    #[test]
    fn stream_error_chunk_and_bad_json_are_broken() {
        let mut state = StreamState::new();
        let err = state.on_event(
            "",
            r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#,
        );
        assert_eq!(err, Err(ProviderError::StreamBroken("The model is overloaded.".into())));
        assert!(matches!(state.on_event("", "{oops"), Err(ProviderError::StreamBroken(_))));
    }

    fn events(items: Vec<Result<&str, ProviderError>>) -> crate::routing::providers::adapter::Events {
        testing::events(items.into_iter().map(|r| r.map(|data| ("", data))).collect())
    }

    #[tokio::test]
    async fn delta_stream_ends_with_usage_or_an_error() {
        let complete = events(vec![
            Ok(
                r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}],"usageMetadata":{"promptTokenCount":3}}"#,
            ),
            Ok(
                r#"{"candidates":[{"content":{"parts":[{"text":"!"}],"role":"model"},"finishReason":"MAX_TOKENS"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}"#,
            ),
        ]);
        let out: Vec<_> = delta_stream(complete, StreamState::new()).collect().await;
        assert_eq!(
            out,
            vec![
                Ok(ChatDelta::Text("Hi".into())),
                Ok(ChatDelta::Text("!".into())),
                Ok(ChatDelta::Finish(FinishReason::Length)),
                Ok(ChatDelta::Usage(Usage { prompt_tokens: 3, completion_tokens: 2 })),
            ]
        );

        let truncated = events(vec![Ok(r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"}}]}"#)]);
        testing::assert_text_then_broken(delta_stream(truncated, StreamState::new()), "Hi").await;

        let broken = events(vec![Err(ProviderError::StreamBroken("reset".into())), Ok("{}")]);
        let out: Vec<_> = delta_stream(broken, StreamState::new()).collect().await;
        assert_eq!(out, vec![Err(ProviderError::StreamBroken("reset".into()))]);
    }

    #[test]
    fn endpoints_and_headers() {
        let conn =
            connection(super::super::ProviderKind::Google, "https://generativelanguage.googleapis.com/", "AIza-secret");
        assert_eq!(
            endpoint(&conn, "gemini-2.5-flash", false),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            endpoint(&conn, "models/gemini-2.5-flash", true),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let request = post(&conn, "gemini-2.5-flash", false, &json!({})).build().unwrap();
        assert_eq!(request.headers()["x-goog-api-key"], "AIza-secret");
        assert!(request.headers().get("authorization").is_none());
        assert!(!request.url().as_str().contains("secret"), "the key never goes in the URL");
        let conn = Connection { base_url: "http://proxy.local/v1beta".into(), ..conn };
        assert_eq!(endpoint(&conn, "m", false), "http://proxy.local/v1beta/models/m:generateContent");
    }

    #[test]
    fn a_bad_key_is_an_auth_failure_and_retry_info_sets_the_delay() {
        let response = |status, body: Value| http::ErrorResponse { status, retry_after: None, body: body.to_string() };
        let bad_key = response(
            400,
            json!({ "error": { "code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT",
                "details": [{ "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com" }] } }),
        );
        assert_eq!(
            status_error(bad_key),
            ProviderError::Status {
                status: 401,
                message: "API key not valid. Please pass a valid API key.".into(),
                retry_after: None
            }
        );

        let exhausted = response(
            429,
            json!({ "error": { "code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED", "details": [
                { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [] },
                { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37.5s" }] } }),
        );
        let ProviderError::Status { status, retry_after, .. } = status_error(exhausted) else { panic!() };
        assert_eq!((status, retry_after), (429, Some(Duration::from_millis(37_500))));

        let bad_request =
            response(400, json!({ "error": { "code": 400, "message": "Bad.", "status": "INVALID_ARGUMENT" } }));
        assert_eq!(
            status_error(bad_request),
            ProviderError::Status { status: 400, message: "Bad.".into(), retry_after: None }
        );
        assert_eq!(proto_duration("soon"), None);
        assert_eq!(proto_duration("1e30s"), Some(http::MAX_RETRY_AFTER), "clamped, not a panic");
    }
}
