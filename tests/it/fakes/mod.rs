//! Fake upstream providers that speak each provider's real wire format (OpenAI, Anthropic,
//! Gemini; Groq is OpenAI's format under `/openai/v1`). Each validates requests the way the
//! real API does and answers malformed ones with that provider's own 400 body, records every
//! request, and answers according to a [`Behavior`] the test sets (or queues, one per request).

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::Value;

/// How the fake answers the next request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// A text answer (streamed in a few pieces when asked to stream).
    Text(&'static str),
    /// A text answer with no usage reported (OpenAI-compatible servers that omit it).
    TextWithoutUsage(&'static str),
    /// A text answer whose usage reports this many completion tokens, whatever bound the
    /// request set (a server that ignores `max_tokens`, or misreports).
    TextReporting { text: &'static str, completion_tokens: u64 },
    /// [`Behavior::TextReporting`], slowly: every event (or the whole answer) waits `gap_ms`.
    Slow { text: &'static str, completion_tokens: u64, gap_ms: u64 },
    /// A call of `name` with these JSON arguments.
    ToolCall { name: &'static str, arguments: &'static str },
    /// The provider's error body with this status (and `retry-after`, when given).
    Status { status: u16, retry_after: Option<u64> },
    /// Never answers: the client's timeout must fire.
    Hang,
    /// Answers 200 and the start of a body, then never finishes it: the upstream accepted
    /// the request, and the client's timeout fires while reading the answer.
    StallBody,
    /// Streams: the first piece of the answer, then the connection drops.
    BreakMidStream,
    /// Streams: headers, then the connection drops before any event.
    BreakBeforeFirstChunk,
}

/// What the fakes' speech endpoints answer: recognisable bytes, not real audio.
pub const FAKE_AUDIO: &[u8] = b"ID3-fake-audio-bytes-0123456789";

/// What the fakes' video downloads answer.
pub const FAKE_VIDEO: &[u8] = b"\x00\x00\x00\x18ftypmp42fake-video-bytes";

/// A 1×1 PNG, base64: what the fakes' image endpoints answer.
pub const PNG_B64: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==";

/// What one provider's wire format needs: validation and answers.
pub trait Wire: Send + Sync + 'static {
    /// The provider's 400 (or 401) for a request the real API would refuse. `keys` are the
    /// accepted API keys; none means the server takes no key (a self-hosted endpoint).
    fn validate(&self, req: &Recorded, keys: &[String]) -> Result<(), (StatusCode, Value)>;
    fn error_body(&self, status: StatusCode, message: &str) -> Value;
    fn is_stream(&self, req: &Recorded) -> bool;
    /// A non-streamed answer body.
    fn answer(&self, req: &Recorded, behavior: &Behavior) -> Value;
    /// The SSE events of a streamed answer, each a complete `event:`/`data:` block.
    fn stream_events(&self, req: &Recorded, behavior: &Behavior) -> Vec<String>;
    /// How many events of an answer go out before [`Behavior::BreakMidStream`] cuts it: enough
    /// for at least one piece of content to reach the client.
    fn mid_stream_cut(&self) -> usize {
        2
    }
    /// A raw (non-JSON) answer for this request: its content type and bytes (speech).
    fn raw_answer(&self, _req: &Recorded) -> Option<(&'static str, Vec<u8>)> {
        None
    }
    /// Answers other routes (model lists); `None` for 404.
    fn other_route(&self, _req: &Recorded) -> Option<Value> {
        None
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as sent (multipart uploads are not JSON).
    pub raw: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct State_ {
    default: Behavior,
    queue: VecDeque<Behavior>,
    /// Answers for requests naming one model in their body (before the queue and default).
    per_model: HashMap<String, Behavior>,
    requests: Vec<Recorded>,
}

struct Shared {
    wire: Box<dyn Wire>,
    keys: Mutex<Vec<String>>,
    state: Mutex<State_>,
}

/// Whether a request's key is one of `keys` (any key, or none, when `keys` is empty).
pub fn key_ok(given: Option<&str>, keys: &[String]) -> bool {
    keys.is_empty() || given.is_some_and(|g| keys.iter().any(|k| k == g))
}

/// A running fake provider.
pub struct Fake {
    /// The address to hand the gateway as the provider's base URL (see each wire's docs).
    pub root: String,
    pub key: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Fake {
    /// A fake that accepts `key` (no key at all when empty).
    pub async fn start(wire: impl Wire, key: &str) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            wire: Box::new(wire),
            keys: Mutex::new(if key.is_empty() { Vec::new() } else { vec![key.to_owned()] }),
            state: Mutex::new(State_ {
                default: Behavior::Text("Hello from the fake"),
                queue: VecDeque::new(),
                per_model: HashMap::new(),
                requests: Vec::new(),
            }),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { root, key: key.to_owned(), shared, server }
    }

    /// Accepts another API key too (an account's own key next to the managed one).
    pub fn accept_key(&self, key: &str) {
        self.shared.keys.lock().unwrap().push(key.to_owned());
    }

    /// Every later request is answered this way (after the queue is used up).
    pub fn set(&self, behavior: Behavior) {
        self.shared.state.lock().unwrap().default = behavior;
    }

    /// Every request whose body names `model` is answered this way (a provider account that
    /// lacks one model answers 404 for it alone). Wires whose body carries the model only.
    pub fn set_for_model(&self, model: &str, behavior: Behavior) {
        self.shared.state.lock().unwrap().per_model.insert(model.to_owned(), behavior);
    }

    /// The next requests are answered in this order, one each.
    pub fn queue(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.shared.state.lock().unwrap().queue.extend(behaviors);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Requests to the answer route (model lists and health checks excluded).
    pub fn answer_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == "POST").collect()
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, serde_json::to_vec(body).unwrap()).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn sse_response(events: Vec<String>, break_after: Option<usize>) -> Response {
    sse_response_paced(events, break_after, Duration::ZERO)
}

fn sse_response_paced(events: Vec<String>, break_after: Option<usize>, gap: Duration) -> Response {
    use futures_util::StreamExt;
    let cut = break_after.unwrap_or(events.len());
    if !gap.is_zero() {
        let paced = futures_util::stream::iter(events.into_iter().take(cut)).then(move |e| async move {
            tokio::time::sleep(gap).await;
            Ok::<_, std::io::Error>(Bytes::from(e))
        });
        let mut response = Response::new(Body::from_stream(paced));
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
        return response;
    }
    let sent: Vec<Result<Bytes, std::io::Error>> = events.into_iter().take(cut).map(|e| Ok(Bytes::from(e))).collect();
    let mut body = futures_util::stream::iter(sent).boxed();
    if break_after.is_some() {
        // After what was sent has gone out, an error in the body makes the server drop the
        // connection: the response ends without the provider's end marker.
        body = body
            .chain(futures_util::stream::once(async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("connection dropped"))
            }))
            .boxed();
    }
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert("content-type", HeaderValue::from_static("text/event-stream"));
    response
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 30 << 20).await.unwrap_or_default();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers.clone(),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        raw: bytes.clone(),
    };
    let wire = &shared.wire;
    let behavior = {
        let mut st = shared.state.lock().unwrap();
        st.requests.push(recorded.clone());
        if recorded.method == "GET" {
            if let Some((content_type, bytes)) = wire.raw_answer(&recorded) {
                let mut response = Response::new(Body::from(bytes));
                response.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
                return response;
            }
            return match wire.other_route(&recorded) {
                Some(body) => json_response(StatusCode::OK, &body),
                None => json_response(StatusCode::NOT_FOUND, &wire.error_body(StatusCode::NOT_FOUND, "Not found")),
            };
        }
        let keys = shared.keys.lock().unwrap().clone();
        if let Err((status, body)) = wire.validate(&recorded, &keys) {
            return json_response(status, &body);
        }
        let for_model = recorded.body["model"].as_str().and_then(|m| st.per_model.get(m)).cloned();
        for_model.or_else(|| st.queue.pop_front()).unwrap_or_else(|| st.default.clone())
    };
    let stream = wire.is_stream(&recorded);
    match behavior {
        Behavior::Status { status, retry_after } => {
            let status = StatusCode::from_u16(status).unwrap();
            let mut response = json_response(status, &wire.error_body(status, "The fake was told to fail"));
            if let Some(secs) = retry_after {
                response.headers_mut().insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            json_response(StatusCode::OK, &Value::Null)
        }
        Behavior::BreakBeforeFirstChunk => sse_response(Vec::new(), Some(0)),
        Behavior::StallBody => {
            let start = futures_util::stream::once(async { Ok::<_, std::io::Error>(Bytes::from_static(b"{\"id\": ")) });
            let mut response = Response::new(Body::from_stream(futures_util::StreamExt::chain(
                start,
                futures_util::stream::pending(),
            )));
            response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        Behavior::BreakMidStream => {
            let events = wire.stream_events(&recorded, &Behavior::Text("This answer will be cut off mid-way"));
            sse_response(events, Some(wire.mid_stream_cut()))
        }
        Behavior::Slow { gap_ms, .. } if stream => {
            sse_response_paced(wire.stream_events(&recorded, &behavior), None, Duration::from_millis(gap_ms))
        }
        Behavior::Slow { gap_ms, .. } => {
            tokio::time::sleep(Duration::from_millis(gap_ms)).await;
            json_response(StatusCode::OK, &wire.answer(&recorded, &behavior))
        }
        behavior if stream => sse_response(wire.stream_events(&recorded, &behavior), None),
        behavior => match wire.raw_answer(&recorded) {
            Some((content_type, bytes)) => {
                // In two pieces, so a client that streams sees them arrive.
                let half = bytes.len() / 2;
                let (first, second) = (Bytes::copy_from_slice(&bytes[..half]), Bytes::copy_from_slice(&bytes[half..]));
                let pieces = futures_util::stream::iter([Ok::<_, std::io::Error>(first), Ok(second)]);
                let mut response = Response::new(Body::from_stream(pieces));
                response.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
                response
            }
            None => json_response(StatusCode::OK, &wire.answer(&recorded, &behavior)),
        },
    }
}

/// Splits a text answer into the pieces a stream sends.
pub fn pieces(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words.chunks(2).map(|c| c.concat()).collect()
}

/// Token counts the fakes report: deterministic, so tests can assert them exactly.
pub const PROMPT_TOKENS: u64 = 21;
pub const COMPLETION_TOKENS: u64 = 9;
