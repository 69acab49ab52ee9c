//! Streaming a chat answer as SSE. The runtime's [`ChatStream`] settles its own usage row;
//! this relays its events as chunks, gathered into writes by [`Coalesce`], with the charge as
//! an HTTP trailer.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderValue},
    response::Response,
};
use futures_util::StreamExt;
use tokaroo_actors::{chat::ChatRequest, ChatStream, KeyEntry, RequestInfo, StreamEvent};

use super::render::ChunkWriter;
use crate::http::{coalesce::Coalesce, error::ApiError, knowledge::GivenContext, wire::cost_header, AppState};

/// Streams the answer; `context` (a knowledge context the request was given) goes on its
/// first chunk.
pub(crate) async fn stream_response(
    state: &AppState,
    key: Arc<KeyEntry>,
    request: ChatRequest,
    info: RequestInfo,
    created: i64,
    context: Option<&GivenContext>,
) -> Result<Response, ApiError> {
    let include_usage = request.include_usage;
    let model_name = info.requested_model.clone();
    // A grounded answer completes its pack's trace when it ends (its text and charge).
    let on_end: Option<OnEnd> = context.map(|c| {
        let (traces, account, trace) = (state.engine.traces().clone(), key.account_id.clone(), c.trace_id.clone());
        Box::new(move |units: i64, text: &str| traces.complete_reply(&account, &trace, text, units)) as OnEnd
    });
    let answer = state.engine.runtime().open_chat_stream(key, request, info).await?;
    let cache = super::render::cache_header(answer.cache_hit());
    let charged = Arc::new(Mutex::new(None));
    let chunk = ChunkWriter::new(created, model_name).with_context(context.map(|c| c.body.clone()));
    let frames = sse_events(answer, chunk, include_usage, charged.clone(), on_end);
    // The charge is known only when the stream ends: it goes out as an HTTP trailer (for
    // clients that send `TE: trailers`) as well as in the final usage chunk.
    let trailer = futures_util::stream::once(async move {
        let mut trailers = axum::http::HeaderMap::new();
        if let Some(cost) = charged.lock().ok().and_then(|c| *c) {
            trailers.insert("x-tokaroo-cost", cost_header(cost));
        }
        http_body::Frame::trailers(trailers)
    });
    let open_streams = OpenStream::count();
    let mut frames = Coalesce::new(Box::pin(frames));
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
    headers.insert("x-tokaroo-cache", cache);
    headers.insert(header::TRAILER, HeaderValue::from_static("x-tokaroo-cost"));
    if let Some(trace) = context.and_then(|c| HeaderValue::from_str(&c.trace_id).ok()) {
        headers.insert("x-tokaroo-context-trace", trace);
    }
    Ok(response)
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

/// Renders the answer's events as SSE frames, keeping its charge for the trailer. Dropping
/// the frames (the client left) drops the answer, which then settles itself as abandoned.
/// Called once a stream ends, with its charge (ledger units) and text.
type OnEnd = Box<dyn FnOnce(i64, &str) + Send>;

fn sse_events(
    answer: ChatStream,
    chunk: ChunkWriter,
    include_usage: bool,
    charged: Arc<Mutex<Option<f64>>>,
    on_end: Option<OnEnd>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    struct Relay {
        answer: ChatStream,
        chunk: ChunkWriter,
        include_usage: bool,
        sent_role: bool,
        charged: Arc<Mutex<Option<f64>>>,
        on_end: Option<OnEnd>,
        /// The answer's text, kept only for `on_end`.
        text: String,
    }
    let relay = Relay { answer, chunk, include_usage, sent_role: false, charged, on_end, text: String::new() };
    futures_util::stream::unfold(relay, |mut relay| async move {
        loop {
            let frame = match relay.answer.next().await? {
                StreamEvent::Delta(delta) => {
                    if let (Some(_), tokaroo_actors::chat::ChatDelta::Text(text)) = (&relay.on_end, &delta) {
                        relay.text.push_str(text);
                    }
                    let role = (!relay.sent_role).then_some("assistant");
                    let Some(frame) = relay.chunk.delta_chunk(&delta, role) else { continue };
                    relay.sent_role = true;
                    frame
                }
                StreamEvent::End(end) => {
                    if let (Some(charge), Ok(mut slot)) = (end.charge(), relay.charged.lock()) {
                        *slot = Some(charge.charged_usd());
                    }
                    if let Some(on_end) = relay.on_end.take() {
                        on_end(end.charge().map_or(0, |c| c.charged_units), &relay.text);
                    }
                    relay.chunk.end(&end, relay.include_usage)
                }
            };
            return Some((frame, relay));
        }
    })
}
