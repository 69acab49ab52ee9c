//! Plumbing shared by the adapters: sending a request with a deadline, mapping failures to
//! [`ProviderError`], bounding what an upstream may make us buffer, and framing an SSE body
//! into events. No provider's format lives here.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{stream::BoxStream, Stream, StreamExt};
use serde_json::Value;

use super::{Connection, ProviderError};

/// The most of one non-streamed answer we hold. A chat answer is at most the model's output
/// limit (128k tokens, about 0.5 MB of JSON); 16 MiB leaves a wide margin for tool calls and
/// verbose servers while one misbehaving upstream can hold at most that per request.
/// Embeddings are bounded per input instead ([`embeddings_cap`]).
pub const MAX_BODY: usize = 16 << 20;
/// The most of one SSE event (the bytes between blank lines): real events are a token or a
/// tool-call fragment, well under a kilobyte.
pub const MAX_SSE_EVENT: usize = 1 << 20;
/// The most of a model list: a thousand models with metadata is about 200 KB.
pub const MAX_DISCOVERY_BODY: usize = 1 << 20;
/// Only the message of an error answer is kept (at most 300 characters shown).
pub const MAX_ERROR_BODY: usize = 64 << 10;
/// How long reading an error answer's body may take: it is read outside any request
/// deadline on streams.
const ERROR_BODY_TIME: Duration = Duration::from_secs(10);
/// `Retry-After` beyond this is taken as this: nothing we route waits longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The cap on an embeddings answer for `inputs` vectors: a float is at most ~25 bytes of
/// JSON and a vector at most 8,192 of them (256 KiB), plus room for the envelope.
pub fn embeddings_cap(inputs: usize) -> usize {
    (1 << 20) + inputs * (256 << 10)
}

/// Sends `request` and returns the response if its status is a success.
pub async fn send(conn: &Connection, request: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    send_with(conn, request, ErrorResponse::into_error).await
}

/// [`send`] for providers that say more in their error bodies: `read_error` turns a failed
/// answer into the error.
pub async fn send_with(
    conn: &Connection,
    request: reqwest::RequestBuilder,
    read_error: fn(ErrorResponse) -> ProviderError,
) -> Result<reqwest::Response, ProviderError> {
    let response = execute(conn, request.timeout(conn.timeout)).await?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(read_error(ErrorResponse::read(response).await))
}

/// Opens a streamed answer: only the wait for its headers is bounded (by the connection's
/// timeout), not the (possibly long) stream. The status is the caller's to check.
pub async fn open_stream(
    conn: &Connection,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ProviderError> {
    tokio::time::timeout(conn.timeout, execute(conn, request)).await.map_err(|_| ProviderError::Timeout)?
}

/// Opens a streamed answer ([`open_stream`]) and checks its status (`read_error` turns a
/// failed answer into the error): the SSE events of an accepted one, idle-bounded by the
/// connection's timeout.
pub async fn open_stream_checked(
    conn: &Connection,
    request: reqwest::RequestBuilder,
    read_error: fn(ErrorResponse) -> ProviderError,
) -> Result<BoxStream<'static, Result<Event, ProviderError>>, ProviderError> {
    let response = open_stream(conn, request).await?;
    if !response.status().is_success() {
        return Err(read_error(ErrorResponse::read(response).await));
    }
    Ok(sse(response, conn.timeout))
}

/// Sent on every call to an address an account chose; runtime routes refuse a request that
/// carries it, as it came from this gateway (a self-hosted endpoint pointing back at it).
pub const HOP_HEADER: &str = "x-tokaroo-hop";

/// Adds the connection's headers, checks the destination against the connection's guard
/// (IP-literal hosts never reach its resolver) and sends.
async fn execute(conn: &Connection, mut request: reqwest::RequestBuilder) -> Result<reqwest::Response, ProviderError> {
    for (name, value) in &conn.extra_headers {
        request = request.header(name, value);
    }
    if conn.guard.is_some() {
        // Marks calls to addresses an account chose, so that one leading back into this
        // gateway (through a proxy the address guard cannot see through) is refused there.
        request = request.header(HOP_HEADER, "1");
    }
    let request = request.build().map_err(map_reqwest_error)?;
    if let Some(guard) = &conn.guard {
        guard.check_literal(request.url()).map_err(|refused| ProviderError::Connect(refused.to_string()))?;
    }
    conn.http.execute(request).await.map_err(map_reqwest_error)
}

pub use crate::routing::netguard::refusal;

pub fn map_reqwest_error(error: reqwest::Error) -> ProviderError {
    if let Some(refused) = refusal(&error) {
        ProviderError::Connect(format!("refused: {refused}"))
    } else if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Connect(error.to_string())
    } else if error.is_decode() || error.is_body() {
        ProviderError::Protocol(error.to_string())
    } else {
        ProviderError::Connect(error.to_string())
    }
}

fn too_large(what: &str, cap: usize) -> ProviderError {
    ProviderError::Protocol(format!("{what} exceeds the {} KiB cap", cap >> 10))
}

/// Reads a whole body, failing once it passes `cap` bytes instead of buffering on.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Bytes, ProviderError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_large("the answer", cap));
    }
    let mut body = Vec::new();
    // The head has arrived: a timeout from here on is one the provider billed the prompt for.
    let after_accept = |e| match map_reqwest_error(e) {
        ProviderError::Timeout => ProviderError::TimeoutAfterAccept,
        other => other,
    };
    while let Some(chunk) = response.chunk().await.map_err(after_accept)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large("the answer", cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

/// An upstream's error answer, its body read up to [`MAX_ERROR_BODY`].
#[derive(Debug, Clone)]
pub struct ErrorResponse {
    pub status: u16,
    /// From the `retry-after` header.
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl ErrorResponse {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
        let body =
            tokio::time::timeout(ERROR_BODY_TIME, read_prefix(response, MAX_ERROR_BODY)).await.unwrap_or_default();
        Self { status, retry_after, body: String::from_utf8_lossy(&body).into_owned() }
    }

    /// The message from the usual JSON error shapes (`{"error": {"message"}}`,
    /// `{"error": "..."}`, `{"message"}`), or the start of the body.
    pub fn message(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| {
                v["error"]["message"]
                    .as_str()
                    .or_else(|| v["error"].as_str())
                    .or_else(|| v["message"].as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.body.chars().take(300).collect())
    }

    pub fn into_error(self) -> ProviderError {
        ProviderError::Status { status: self.status, message: self.message(), retry_after: self.retry_after }
    }
}

/// Up to `cap` bytes of a body; the rest is never read (the connection is dropped).
async fn read_prefix(mut response: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == cap {
            break;
        }
    }
    body
}

/// `Retry-After` as seconds (fractions accepted) or an HTTP date, clamped to
/// [`MAX_RETRY_AFTER`]; anything else (negative, NaN, words) is ignored. An upstream's header
/// must never be able to panic us (`Duration::from_secs_f64` does on overflow).
pub fn parse_retry_after(value: &str, now: time::OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = (at - now).clamp(time::Duration::ZERO, time::Duration::try_from(MAX_RETRY_AFTER).ok()?);
    Duration::try_from(wait).ok()
}

/// Parses a JSON body of at most [`MAX_BODY`], naming the provider's mistake when it is not
/// what we expect.
pub async fn json_body(response: reqwest::Response) -> Result<Value, ProviderError> {
    json_body_capped(response, MAX_BODY).await
}

/// [`json_body`] with another cap.
pub async fn json_body_capped(response: reqwest::Response, cap: usize) -> Result<Value, ProviderError> {
    let bytes = read_capped(response, cap).await?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Protocol(format!("invalid JSON: {e}")))
}

/// The SSE events of a streamed response body. Transport failures mid-way become
/// `StreamBroken`; a body that ends without the provider's end marker is the adapter's to judge.
/// No event may pass [`MAX_SSE_EVENT`]: the framing would otherwise buffer an unterminated one
/// for as long as the upstream keeps writing.
pub fn sse(response: reqwest::Response, idle_timeout: Duration) -> BoxStream<'static, Result<Event, ProviderError>> {
    let bytes = EventBound::new(response.bytes_stream(), MAX_SSE_EVENT);
    IdleTimeout::new(bytes.eventsource(), idle_timeout)
        .map(|item| match item {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(EventStreamError::Transport(SseError::EventTooLarge(cap)))) => Err(too_large("an SSE event", cap)),
            Ok(Err(e)) => Err(ProviderError::StreamBroken(e.to_string())),
            // A timeout like the one on the answer's headers: how long a stream stays silent
            // (before its first event above all) grows with the request, which the breakers
            // weigh (`gateway::blame`), unlike a connection that broke.
            Err(IdleElapsed) => Err(ProviderError::Timeout),
        })
        .boxed()
}

struct IdleElapsed;

#[derive(Debug, thiserror::Error)]
enum SseError {
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    #[error("an SSE event exceeds {0} bytes")]
    EventTooLarge(usize),
}

/// Passes a byte stream through, failing it once the bytes since the last event boundary (a
/// blank line) pass `cap`. Line ends may be `\n`, `\r\n` or `\r`, and may be split across
/// chunks, so the scan keeps its place between chunks.
struct EventBound<S> {
    inner: S,
    cap: usize,
    /// Bytes of the event being read, line ends excluded.
    event_len: usize,
    /// Bytes of the line being read.
    line_len: usize,
    /// The last byte seen was `\r` (a following `\n` belongs to the same line end).
    after_cr: bool,
    failed: bool,
}

impl<S> EventBound<S> {
    fn new(inner: S, cap: usize) -> Self {
        Self { inner, cap, event_len: 0, line_len: 0, after_cr: false, failed: false }
    }

    /// Whether `chunk` keeps every event within the cap.
    fn within_cap(&mut self, chunk: &[u8]) -> bool {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.line_len == 0 {
                        self.event_len = 0;
                    }
                    self.line_len = 0;
                }
                _ => {
                    self.after_cr = false;
                    self.line_len += 1;
                    self.event_len += 1;
                    if self.event_len > self.cap {
                        return false;
                    }
                }
            }
        }
        true
    }
}

impl<S: Stream<Item = Result<Bytes, reqwest::Error>> + Unpin> Stream for EventBound<S> {
    type Item = Result<Bytes, SseError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.failed {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.inner.poll_next_unpin(cx)) {
            Some(Ok(chunk)) if !self.within_cap(&chunk) => {
                self.failed = true;
                Poll::Ready(Some(Err(SseError::EventTooLarge(self.cap))))
            }
            Some(item) => Poll::Ready(Some(item.map_err(SseError::from))),
            None => Poll::Ready(None),
        }
    }
}

/// Ends a stream with [`IdleElapsed`] once its consumer has waited `idle` for an item. Time the
/// consumer spends elsewhere (a slow client not reading) does not count. One timer serves the
/// whole stream: it is re-armed only when it fires early, not for every item, because an
/// answer is many small events and a timer per event is a measurable share of their cost.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    /// Since when the consumer has been waiting for the next item; `None` right after an item.
    waiting_since: Option<tokio::time::Instant>,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self { inner, idle, waiting_since: None, timer: Box::pin(tokio::time::sleep_until(now + idle)), done: false }
    }
}

impl<S: futures_util::Stream + Unpin> futures_util::Stream for IdleTimeout<S> {
    type Item = Result<S::Item, IdleElapsed>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = this.inner.poll_next_unpin(cx) {
            this.waiting_since = None;
            this.done = item.is_none();
            return Poll::Ready(item.map(Ok));
        }
        // The timer's deadline is never later than this wait's: it was set for this wait or an
        // earlier one, so at worst it fires early and is re-armed once.
        let since = *this.waiting_since.get_or_insert_with(tokio::time::Instant::now);
        loop {
            std::task::ready!(std::future::Future::poll(this.timer.as_mut(), cx));
            let deadline = since + this.idle;
            if tokio::time::Instant::now() >= deadline {
                this.done = true;
                return Poll::Ready(Some(Err(IdleElapsed)));
            }
            this.timer.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_never_panics_and_is_clamped() {
        let now = time::macros::datetime!(2015-10-21 07:27:00 UTC);
        let parse = |v: &str| parse_retry_after(v, now);
        assert_eq!(parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse(" 1.5 "), Some(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        for huge in ["1e20", "18446744073709551616", "inf", "1e308"] {
            assert_eq!(parse(huge), if huge == "inf" { None } else { Some(MAX_RETRY_AFTER) }, "{huge}");
        }
        for ignored in ["-1", "-0.5", "NaN", "soon", "", "0x10", "-inf"] {
            assert_eq!(parse(ignored), None, "{ignored:?}");
        }
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::from_secs(60)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO), "a date in the past");
        assert_eq!(parse("Wed, 21 Oct 2099 07:28:00 GMT"), Some(MAX_RETRY_AFTER));
    }

    fn bounded(chunks: &[&str], cap: usize) -> Vec<Result<usize, ()>> {
        let mut bound = EventBound::new((), cap);
        let mut out = Vec::new();
        for chunk in chunks {
            let ok = bound.within_cap(chunk.as_bytes());
            out.push(if ok { Ok(bound.event_len) } else { Err(()) });
            if !ok {
                break;
            }
        }
        out
    }

    #[test]
    fn an_sse_event_is_bounded_between_blank_lines_whatever_the_line_ends() {
        // Many events, each under the cap, add up to far more than it.
        let event = "data: 0123456789\n\n";
        assert!(bounded(&[event; 100], 20).iter().all(Result::is_ok));
        assert!(bounded(&["data: 0123456789\r\n\r\n"; 100], 20).iter().all(Result::is_ok));
        assert!(bounded(&["data: 0123456789\r\r"; 100], 20).iter().all(Result::is_ok));
        // A boundary split across chunks still ends the event.
        assert!(bounded(&["data: 0123456789\r", "\n", "\r", "\ndata: 0123456789\n\n"], 20).iter().all(Result::is_ok));
        // Lines of one event count together; one endless line fails.
        assert_eq!(bounded(&["data: 0123456789\ndata: 0123456789\n"], 20).last(), Some(&Err(())));
        let endless = ["data: {\"x\": \""].into_iter().chain(std::iter::repeat_n("xxxxxxxx", 10)).collect::<Vec<_>>();
        assert_eq!(bounded(&endless, 64).last(), Some(&Err(())));
    }

    #[tokio::test]
    async fn the_idle_timeout_bounds_gaps_between_items_not_the_whole_stream() {
        let idle = Duration::from_millis(400);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        tokio::spawn(async move {
            // Ten items 50 ms apart: longer than `idle` in total, never idle that long.
            for i in 0..10 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send(i).unwrap();
            }
            // Then silence, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(tx);
        });
        let mut rx = rx;
        let items = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut stream = IdleTimeout::new(Box::pin(items), idle);
        for i in 0..10 {
            assert!(matches!(stream.next().await, Some(Ok(n)) if n == i), "item {i} arrives");
        }
        let started = tokio::time::Instant::now();
        assert!(matches!(stream.next().await, Some(Err(IdleElapsed))), "silence ends the stream");
        assert!(started.elapsed() >= idle - Duration::from_millis(60), "ended early: {:?}", started.elapsed());
        assert!(stream.next().await.is_none(), "nothing after the timeout");
    }

    #[tokio::test]
    async fn a_consumer_that_stops_reading_does_not_time_the_upstream_out() {
        let idle = Duration::from_millis(200);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut rx = rx;
        let items = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut stream = IdleTimeout::new(Box::pin(items), idle);
        tx.send(1).unwrap();
        assert!(matches!(stream.next().await, Some(Ok(1))));
        // The consumer is away (a slow client) for longer than `idle`; the upstream then
        // answers soon after it comes back.
        tokio::time::sleep(idle * 3).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(2).unwrap();
        });
        assert!(matches!(stream.next().await, Some(Ok(2))), "the upstream was not silent for `idle`");
    }
}
