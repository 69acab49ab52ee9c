//! `POST /v1/chat/completions`: OpenAI's request and response shapes, streaming as SSE.

use std::convert::Infallible;

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokaroo_actors::{
    routing::gateway::billable_usage,
    runtime::chat::{
        ChatDelta, ChatRequest, ContentPart, Message, Mode, ModelChoice, ResponseFormat, Role, ToolCall, ToolChoice,
        ToolDef, Usage,
    },
    RequestInfo,
};

use super::{
    error::ApiError,
    extract::{parse_json_object, ApiKey, RequestId},
    AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/chat/completions", post(chat_completions))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn parse_content(v: &Value, at: &str) -> Result<Vec<ContentPart>, ApiError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![ContentPart::Text(s.clone())]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| match p["type"].as_str() {
                Some("text") => p["text"]
                    .as_str()
                    .map(|t| ContentPart::Text(t.to_owned()))
                    .ok_or_else(|| bad(format!("{at}.content[{i}].text must be a string"))),
                Some("image_url") => {
                    let url = p["image_url"]["url"]
                        .as_str()
                        .or_else(|| p["image_url"].as_str())
                        .ok_or_else(|| bad(format!("{at}.content[{i}].image_url.url must be a string")))?;
                    if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with("data:image/")) {
                        return Err(bad(format!(
                            "{at}.content[{i}].image_url.url must be an http(s) URL or a data:image/... URL"
                        )));
                    }
                    Ok(ContentPart::Image {
                        url: url.to_owned(),
                        detail: p["image_url"]["detail"].as_str().map(str::to_owned),
                    })
                }
                other => Err(bad(format!("{at}.content[{i}].type {other:?} is not supported (text, image_url)"))),
            })
            .collect(),
        _ => Err(bad(format!("{at}.content must be a string or an array of content parts"))),
    }
}

fn parse_message(v: &Value, i: usize) -> Result<Message, ApiError> {
    let at = format!("messages[{i}]");
    let role = match v["role"].as_str() {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        Some("tool") => Role::Tool,
        Some(other) => return Err(bad(format!("{at}.role {other:?} is not one of system, user, assistant, tool"))),
        None => return Err(bad(format!("{at}.role is required"))),
    };
    let content = parse_content(&v["content"], &at)?;
    let mut tool_calls = Vec::new();
    for (j, c) in v["tool_calls"].as_array().into_iter().flatten().enumerate() {
        let name = c["function"]["name"]
            .as_str()
            .ok_or_else(|| bad(format!("{at}.tool_calls[{j}].function.name is required")))?;
        tool_calls.push(ToolCall {
            id: c["id"].as_str().unwrap_or_default().to_owned(),
            name: name.to_owned(),
            arguments: c["function"]["arguments"].as_str().unwrap_or("{}").to_owned(),
        });
    }
    let tool_call_id = v["tool_call_id"].as_str().map(str::to_owned);
    if role == Role::Tool && tool_call_id.is_none() {
        return Err(bad(format!("{at}.tool_call_id is required for role tool")));
    }
    if content.is_empty() && tool_calls.is_empty() {
        return Err(bad(format!("{at}.content is required")));
    }
    Ok(Message { role, content, tool_calls, tool_call_id, name: v["name"].as_str().map(str::to_owned) })
}

fn number(v: &Value, field: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    match &v[field] {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(Some(x)),
            _ => Err(bad(format!("{field} must be between {min} and {max}"))),
        },
        _ => Err(bad(format!("{field} must be a number"))),
    }
}

/// Builds the engine's request from OpenAI's wire JSON, naming the first thing that is wrong.
pub fn parse_request(v: &Value) -> Result<(ChatRequest, String), ApiError> {
    if !v.is_object() {
        return Err(bad("Request body must be a JSON object"));
    }
    let model_name = v["model"].as_str().ok_or_else(|| bad("model is required: auto, fast or max"))?.to_owned();
    let model = match Mode::parse(&model_name) {
        Some(mode) => ModelChoice::Mode(mode),
        None => ModelChoice::Native(model_name.clone()),
    };
    let messages = v["messages"].as_array().ok_or_else(|| bad("messages must be a non-empty array"))?;
    if messages.is_empty() {
        return Err(bad("messages must be a non-empty array"));
    }
    let messages = messages.iter().enumerate().map(|(i, m)| parse_message(m, i)).collect::<Result<Vec<_>, _>>()?;
    let mut tools = Vec::new();
    for (i, t) in v["tools"].as_array().into_iter().flatten().enumerate() {
        if t["type"].as_str() != Some("function") {
            return Err(bad(format!("tools[{i}].type must be \"function\"")));
        }
        let name =
            t["function"]["name"].as_str().ok_or_else(|| bad(format!("tools[{i}].function.name is required")))?;
        tools.push(ToolDef {
            name: name.to_owned(),
            description: t["function"]["description"].as_str().map(str::to_owned),
            parameters: if t["function"]["parameters"].is_null() {
                json!({"type": "object", "properties": {}})
            } else {
                t["function"]["parameters"].clone()
            },
        });
    }
    let tool_choice = match &v["tool_choice"] {
        Value::Null => None,
        Value::String(s) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            other => return Err(bad(format!("tool_choice {other:?} is not auto, none or required"))),
        }),
        obj => Some(ToolChoice::Function(
            obj["function"]["name"].as_str().ok_or_else(|| bad("tool_choice.function.name is required"))?.to_owned(),
        )),
    };
    let response_format = match v["response_format"]["type"].as_str() {
        None => None,
        Some("text") => Some(ResponseFormat::Text),
        Some("json_object") => Some(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let s = &v["response_format"]["json_schema"];
            Some(ResponseFormat::JsonSchema {
                name: s["name"].as_str().unwrap_or("response").to_owned(),
                schema: s["schema"].clone(),
                strict: s["strict"].as_bool().unwrap_or(false),
            })
        }
        Some(other) => {
            return Err(bad(format!("response_format.type {other:?} is not text, json_object or json_schema")))
        }
    };
    let max_tokens =
        match number(v, "max_completion_tokens", 1.0, 10_000_000.0)?.or(number(v, "max_tokens", 1.0, 10_000_000.0)?) {
            Some(x) if x.fract() == 0.0 => Some(x as u32),
            Some(_) => return Err(bad("max_tokens must be a whole number")),
            None => None,
        };
    if let Some(n) = v["n"].as_u64() {
        if n != 1 {
            return Err(bad("n must be 1"));
        }
    }
    let stop = match &v["stop"] {
        Value::Null => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|s| s.as_str().map(str::to_owned).ok_or_else(|| bad("stop must be a string or an array of strings")))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad("stop must be a string or an array of strings")),
    };
    let stream = match &v["stream"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(bad("stream must be a boolean")),
    };
    let request = ChatRequest {
        model,
        messages,
        tools,
        tool_choice,
        response_format,
        max_tokens,
        temperature: number(v, "temperature", 0.0, 2.0)?,
        top_p: number(v, "top_p", 0.0, 1.0)?,
        stop,
        seed: v["seed"].as_i64(),
        user: v["user"].as_str().map(str::to_owned),
        stream,
        include_usage: v["stream_options"]["include_usage"].as_bool().unwrap_or(false),
        prompt_size: Default::default(),
    };
    Ok((request, model_name))
}

fn usage_json(u: Usage) -> Value {
    json!({ "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total() })
}

fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

async fn chat_completions(
    State(state): State<AppState>,
    ApiKey(key): ApiKey,
    RequestId(request_id): RequestId,
    body: Bytes,
) -> Result<Response, ApiError> {
    let wire = parse_json_object(&body)?;
    let (request, model_name) = parse_request(&wire)?;
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let info = RequestInfo { request_id, ..RequestInfo::chat(&request, &model_name) };
    if request.stream {
        return stream_response(state, key, request, info, created).await;
    }
    // Served in a task of its own: a client that leaves does not cancel work the upstream
    // goes on doing and billing, so the request still settles its row.
    let engine = state.engine.clone();
    let work = engine.track_work();
    let served = tokio::spawn(async move {
        let _work = work;
        engine.chat(&key, &request, info).await
    })
    .await
    .map_err(|e| ApiError::Internal(format!("the request's task ended: {e}")))??;
    let outcome = &served.outcome;
    let cost = served.charge.charged_usd();
    let r = &outcome.response;
    let mut message = json!({ "role": "assistant", "content": r.content, "refusal": null });
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = r
            .tool_calls
            .iter()
            .map(
                |c| json!({ "id": c.id, "type": "function", "function": { "name": c.name, "arguments": c.arguments } }),
            )
            .collect();
    }
    let body = json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": created,
        "model": model_name,
        "choices": [{ "index": 0, "message": message, "finish_reason": r.finish_reason.as_str(), "logprobs": null }],
        "usage": usage_json(outcome.usage),
    });
    let mut response = Json(body).into_response();
    response.headers_mut().insert("x-tokaroo-cost", super::wire::cost_header(cost));
    response.headers_mut().insert("x-tokaroo-cache", HeaderValue::from_static("miss"));
    Ok(response)
}

async fn stream_response(
    state: AppState,
    key: ApiKeyEntry,
    request: ChatRequest,
    info: RequestInfo,
    created: i64,
) -> Result<Response, ApiError> {
    // Opened in a task of its own: if the client leaves before the first chunk, the stream
    // the upstream accepted is still drained and settled (the provider bills it).
    let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
    let engine = state.engine.clone();
    let work = engine.track_work();
    tokio::spawn(async move {
        let _work = work;
        let opened = engine.chat_stream(&key, &request, &info).await;
        if let Err(unread) = opened_tx.send((opened, key, request, info)) {
            settle_unread(engine, unread).await;
        }
    });
    let mut opened_rx = OpenedReceiver { rx: Some(opened_rx), engine: state.engine.clone() };
    let (opened, key, request, info) =
        opened_rx.recv().await.ok_or_else(|| ApiError::Internal("the stream's task ended before opening".into()))?;
    let open = opened?;
    let outcome = open.outcome;
    let model_name = info.requested_model.clone();
    let charged = std::sync::Arc::new(std::sync::Mutex::new(None));
    let settle = Settle {
        engine: state.engine.clone(),
        key,
        info,
        started: outcome.started,
        charged: charged.clone(),
        hold: open.hold,
    };
    let route = outcome.route;
    let include_usage = request.include_usage;
    let chunk = ChunkWriter { id: completion_id(), created, model: model_name };
    let frames = async_stream(outcome.stream, chunk, request, route, include_usage, settle);
    // The charge is known only when the stream ends: it goes out as an HTTP trailer (for
    // clients that send `TE: trailers`) as well as in the final usage chunk.
    let trailer = futures_util::stream::once(async move {
        let mut trailers = axum::http::HeaderMap::new();
        if let Some(cost) = charged.lock().ok().and_then(|c| *c) {
            trailers.insert("x-tokaroo-cost", super::wire::cost_header(cost));
        }
        http_body::Frame::trailers(trailers)
    });
    let open_streams = OpenStream::count();
    let mut frames = super::coalesce::Coalesce::new(Box::pin(frames));
    // Busy: gather the first batch before hyper gets the body, so that the head and it leave in
    // one write. Idle: hand the head over at once, so that the client reads it while the rest
    // of the answer is still being made; that overlap is worth more than the write saved.
    let first_batch = if open_streams.others() > 0 { frames.gather_first().await } else { None };
    // The body owns the guard: the stream counts as open until hyper drops it.
    let frames = frames.map(move |frame| {
        let _open = &open_streams;
        frame
    });
    let frames = futures_util::stream::iter(first_batch)
        .chain(frames)
        .map(http_body::Frame::data)
        .chain(trailer)
        .map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::new(http_body_util::StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-tokaroo-cache", HeaderValue::from_static("miss"));
    headers.insert(header::TRAILER, HeaderValue::from_static("x-tokaroo-cost"));
    Ok(response)
}

type ApiKeyEntry = std::sync::Arc<tokaroo_actors::KeyEntry>;

/// What the stream's open task hands the handler.
type Opened = (Result<tokaroo_actors::OpenStream, tokaroo_actors::EngineError>, ApiKeyEntry, ChatRequest, RequestInfo);

/// Settles a stream the handler never took (its client left while it opened).
async fn settle_unread(engine: tokaroo_actors::Engine, (opened, key, request, info): Opened) {
    if let Ok(open) = opened {
        let settle = Settle {
            engine,
            key,
            info,
            started: open.outcome.started,
            charged: std::sync::Arc::default(),
            hold: open.hold,
        };
        settle.abandoned(open.outcome.stream, open.outcome.route, request, None, String::new()).await;
    }
}

/// The handler's end of the open task's channel. Dropped before reading (the client left
/// just as the stream opened), it settles what was sent instead of dropping it unbilled.
struct OpenedReceiver {
    rx: Option<tokio::sync::oneshot::Receiver<Opened>>,
    engine: tokaroo_actors::Engine,
}

impl OpenedReceiver {
    /// `None` when the task ended without sending (it panicked).
    async fn recv(&mut self) -> Option<Opened> {
        let received = self.rx.as_mut()?.await.ok();
        self.rx = None;
        received
    }
}

impl Drop for OpenedReceiver {
    fn drop(&mut self) {
        if let Some(Ok(unread)) = self.rx.take().map(|mut rx| rx.try_recv()) {
            let work = self.engine.track_work();
            let engine = self.engine.clone();
            tokio::spawn(async move {
                let _work = work;
                settle_unread(engine, unread).await
            });
        }
    }
}

/// Counts the streamed answers in flight, for as long as this guard lives.
struct OpenStream;

static OPEN_STREAMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl OpenStream {
    fn count() -> Self {
        OPEN_STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream
    }

    /// Streams in flight besides this one.
    fn others(&self) -> usize {
        OPEN_STREAMS.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(1)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        OPEN_STREAMS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Settles a stream once, when it ends: normally, broken, or dropped by its client.
struct Settle {
    engine: tokaroo_actors::Engine,
    key: ApiKeyEntry,
    info: RequestInfo,
    started: std::time::Instant,
    charged: std::sync::Arc<std::sync::Mutex<Option<f64>>>,
    hold: Option<tokaroo_actors::money::ledger::HoldGuard>,
}

impl Settle {
    /// Records the usage; only after this returns may the client be told the answer is complete.
    async fn finish(
        mut self,
        route: &tokaroo_actors::routing::gateway::RouteRecord,
        usage: Usage,
    ) -> Result<tokaroo_actors::money::billing::Charge, tokaroo_actors::EngineError> {
        let latency = self.started.elapsed().as_millis() as u64;
        let hold = self.hold.take();
        let charge = self.engine.settle(&self.key, &self.info, route, usage, Some(latency), true, hold).await?;
        if let Ok(mut slot) = self.charged.lock() {
            *slot = Some(charge.charged_usd());
        }
        Ok(charge)
    }
}

impl Settle {
    /// Settles a stream whose client left: drains the upstream first (bounded), so the row
    /// carries the provider's final usage rather than what had been relayed so far.
    async fn abandoned(
        self,
        upstream: tokaroo_actors::routing::providers::DeltaStream,
        route: tokaroo_actors::routing::gateway::RouteRecord,
        request: ChatRequest,
        usage: Option<Usage>,
        text: String,
    ) {
        let stopping = self.engine.stopping();
        let (usage, text) = tokaroo_actors::routing::gateway::drain_abandoned(upstream, usage, text, stopping).await;
        let usage = billable_usage(&route, &request, usage, &text);
        let request_id = self.info.request_id.clone().unwrap_or_default();
        match self.finish(&route, usage).await {
            Ok(_) => tracing::info!(%request_id, "a stream its client left was drained and settled as abandoned"),
            Err(error) => tracing::error!(%error, %request_id, "could not record an abandoned stream's usage"),
        }
    }
}

/// Writes `chat.completion.chunk` events for one streamed answer. Typed rather than built as
/// `serde_json::Value`: a streamed answer is many small events, and each map costs allocations.
struct ChunkWriter {
    id: String,
    created: i64,
    model: String,
}

#[derive(serde::Serialize)]
struct ChunkOut<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: &'a [ChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    x_tokaroo: Option<Value>,
}

#[derive(serde::Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: DeltaOut<'a>,
    finish_reason: Option<&'a str>,
    logprobs: Option<()>,
}

#[derive(serde::Serialize, Default)]
struct DeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDeltaOut<'a>; 1]>,
}

#[derive(serde::Serialize)]
struct ToolCallDeltaOut<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDeltaOut<'a>,
}

#[derive(serde::Serialize)]
struct FunctionDeltaOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl ChunkWriter {
    fn event(&self, out: &ChunkOut<'_>) -> Bytes {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"data: ");
        // Serializing plain structs of strings and numbers cannot fail.
        let _ = serde_json::to_writer(&mut buf, out);
        buf.extend_from_slice(b"\n\n");
        Bytes::from(buf)
    }

    fn delta(&self, delta: DeltaOut<'_>, finish_reason: Option<&str>) -> Bytes {
        let choices = [ChunkChoice { index: 0, delta, finish_reason, logprobs: None }];
        self.event(&ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &choices,
            usage: None,
            x_tokaroo: None,
        })
    }

    /// The `include_usage` event: no choices, the usage, and (beyond OpenAI's shape) the
    /// charge, which a header cannot carry once streaming began.
    fn usage(&self, usage: Usage, charged_usd: f64) -> Bytes {
        self.event(&ChunkOut {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: &[],
            usage: Some(usage_json(usage)),
            x_tokaroo: Some(json!({ "cost_usd": charged_usd, "cache": "miss" })),
        })
    }
}

/// Turns upstream deltas into OpenAI chunks; counts usage for billing as it goes.
fn async_stream(
    upstream: tokaroo_actors::routing::providers::DeltaStream,
    chunk: ChunkWriter,
    request: ChatRequest,
    route: tokaroo_actors::routing::gateway::RouteRecord,
    include_usage: bool,
    settle: Settle,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    struct St {
        upstream: tokaroo_actors::routing::providers::DeltaStream,
        chunk: ChunkWriter,
        sent_role: bool,
        usage: Option<Usage>,
        text: String,
        done: bool,
        request: ChatRequest,
        route: tokaroo_actors::routing::gateway::RouteRecord,
        include_usage: bool,
        /// Taken when the stream is settled.
        settle: Option<Settle>,
    }
    impl St {
        fn usage(&self) -> Usage {
            billable_usage(&self.route, &self.request, self.usage, &self.text)
        }
    }
    impl Drop for St {
        fn drop(&mut self) {
            // The client went away mid-answer. The provider goes on and bills the whole
            // answer, so keep reading it (bounded) for its final usage, then settle.
            if let Some(settle) = self.settle.take() {
                let upstream = std::mem::replace(&mut self.upstream, futures_util::stream::empty().boxed());
                let (route, request) = (self.route.clone(), self.request.clone());
                let (usage, text) = (self.usage, std::mem::take(&mut self.text));
                let work = settle.engine.track_work();
                tokio::spawn(async move {
                    let _work = work;
                    settle.abandoned(upstream, route, request, usage, text).await
                });
            }
        }
    }
    let settle = Some(settle);
    let st = St {
        upstream,
        chunk,
        sent_role: false,
        usage: None,
        text: String::new(),
        done: false,
        request,
        route,
        include_usage,
        settle,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.upstream.next().await {
                Some(Ok(delta)) => {
                    let role = (!st.sent_role).then_some("assistant");
                    st.sent_role = true;
                    let frame = match &delta {
                        ChatDelta::Text(_) | ChatDelta::ToolCallArguments { .. }
                            if st.text.len() > tokaroo_actors::routing::gateway::answer_text_limit(&st.route) =>
                        {
                            // An upstream far past the output bound (a self-hosted server that
                            // ignores it): stop relaying and buffering, and settle what came.
                            tracing::warn!(upstream = %st.route.upstream, "stream exceeded its output bound; cut");
                            st.done = true;
                            let usage = st.usage();
                            if let Some(settle) = st.settle.take() {
                                if let Err(error) = settle.finish(&st.route, usage).await {
                                    tracing::error!(%error, "could not record a cut stream's usage");
                                }
                            }
                            let err = json!({ "error": { "message": "The upstream's answer exceeded its output bound and was cut", "type": "api_error", "code": "output_bound_exceeded" } });
                            return Some((Bytes::from(format!("data: {err}\n\n")), st));
                        }
                        ChatDelta::Text(t) => {
                            st.text.push_str(t);
                            st.chunk.delta(DeltaOut { role, content: Some(t), tool_calls: None }, None)
                        }
                        ChatDelta::ToolCallStart { index, id, name } => {
                            let call = ToolCallDeltaOut {
                                index: *index,
                                id: Some(id),
                                kind: Some("function"),
                                function: FunctionDeltaOut { name: Some(name), arguments: "" },
                            };
                            st.chunk.delta(DeltaOut { role, content: None, tool_calls: Some([call]) }, None)
                        }
                        ChatDelta::ToolCallArguments { index, fragment } => {
                            st.text.push_str(fragment);
                            let call = ToolCallDeltaOut {
                                index: *index,
                                id: None,
                                kind: None,
                                function: FunctionDeltaOut { name: None, arguments: fragment },
                            };
                            st.chunk.delta(DeltaOut { role, content: None, tool_calls: Some([call]) }, None)
                        }
                        ChatDelta::Finish(reason) => st.chunk.delta(DeltaOut::default(), Some(reason.as_str())),
                        ChatDelta::Usage(u) => {
                            st.usage = Some(*u);
                            st.sent_role = role.is_none();
                            continue;
                        }
                    };
                    return Some((frame, st));
                }
                Some(Err(error)) => {
                    // Mid-stream failure after the first chunk: tell the client in-band and stop
                    // without `[DONE]`, OpenAI's end-of-answer marker, so that no client takes the
                    // partial answer for a complete one. What was streamed is still charged, from
                    // our own count.
                    tracing::warn!(%error, upstream = %st.route.upstream, "stream broke after the first chunk");
                    st.done = true;
                    let usage = st.usage();
                    if let Some(settle) = st.settle.take() {
                        if let Err(error) = settle.finish(&st.route, usage).await {
                            tracing::error!(%error, "could not record a broken stream's usage");
                        }
                    }
                    let err = json!({ "error": { "message": "The upstream stream broke; the answer is incomplete", "type": "api_error", "code": "stream_broken" } });
                    return Some((Bytes::from(format!("data: {err}\n\n")), st));
                }
                None => {
                    st.done = true;
                    let usage = st.usage();
                    let settle = st.settle.take()?;
                    let charge = match settle.finish(&st.route, usage).await {
                        Ok(charge) => charge,
                        Err(error) => {
                            // Unrecorded: the client must not see a completed answer.
                            tracing::error!(%error, "could not record a stream's usage");
                            let err = json!({ "error": { "message": "The answer could not be recorded; retry the request", "type": "api_error", "code": "ledger_unavailable" } });
                            return Some((Bytes::from(format!("data: {err}\n\n")), st));
                        }
                    };
                    let mut tail = Vec::new();
                    if st.include_usage {
                        tail.extend_from_slice(&st.chunk.usage(usage, charge.charged_usd()));
                    }
                    tail.extend_from_slice(b"data: [DONE]\n\n");
                    return Some((Bytes::from(tail), st));
                }
            }
        }
    })
}
