//! Plumbing shared by the adapters: sending a request with a deadline, mapping failures to
//! [`ProviderError`], and framing an SSE body into events. No provider's format lives here.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures_util::{stream::BoxStream, StreamExt};
use serde_json::Value;

use super::{Connection, ProviderError};

/// The HTTP client for upstream calls: rustls with the ring crypto provider (installed once
/// per process), pooled connections, platform root certificates.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .expect("the HTTP client builds once a crypto provider is installed")
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
    let mut request = request.timeout(conn.timeout);
    for (name, value) in &conn.extra_headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(map_reqwest_error)?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(read_error(ErrorResponse::read(response).await))
}

pub fn map_reqwest_error(error: reqwest::Error) -> ProviderError {
    if error.is_timeout() {
        ProviderError::Timeout
    } else if error.is_connect() {
        ProviderError::Connect(error.to_string())
    } else if error.is_decode() || error.is_body() {
        ProviderError::Protocol(error.to_string())
    } else {
        ProviderError::Connect(error.to_string())
    }
}

/// An upstream's error answer, read whole.
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
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let body = response.text().await.unwrap_or_default();
        Self { status, retry_after, body }
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

/// Reads an error response: status, `retry-after`, and the message.
pub async fn status_error(response: reqwest::Response) -> ProviderError {
    ErrorResponse::read(response).await.into_error()
}

/// Parses a JSON body, naming the provider's mistake when it is not what we expect.
pub async fn json_body(response: reqwest::Response) -> Result<Value, ProviderError> {
    let bytes = response.bytes().await.map_err(map_reqwest_error)?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Protocol(format!("invalid JSON: {e}")))
}

/// The SSE events of a streamed response body. Transport failures mid-way become
/// `StreamBroken`; a body that ends without the provider's end marker is the adapter's to judge.
pub fn sse(response: reqwest::Response, idle_timeout: Duration) -> BoxStream<'static, Result<Event, ProviderError>> {
    IdleTimeout::new(response.bytes_stream().eventsource(), idle_timeout)
        .map(|item| match item {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(e)) => Err(ProviderError::StreamBroken(e.to_string())),
            Err(IdleElapsed) => Err(ProviderError::StreamBroken("no data within the idle timeout".into())),
        })
        .boxed()
}

struct IdleElapsed;

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
