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
    let mut request = request.timeout(conn.timeout);
    for (name, value) in &conn.extra_headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(map_reqwest_error)?;
    if response.status().is_success() {
        return Ok(response);
    }
    Err(status_error(response).await)
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

/// Reads an error response: status, `retry-after`, and the message from the usual JSON
/// error shapes (`{"error": {"message"}}`, `{"error": "..."}`, `{"message"}`).
pub async fn status_error(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let body = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| {
            v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .or_else(|| v["message"].as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    ProviderError::Status { status, message, retry_after }
}

/// Parses a JSON body, naming the provider's mistake when it is not what we expect.
pub async fn json_body(response: reqwest::Response) -> Result<Value, ProviderError> {
    let bytes = response.bytes().await.map_err(map_reqwest_error)?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::Protocol(format!("invalid JSON: {e}")))
}

/// The SSE events of a streamed response body. Transport failures mid-way become
/// `StreamBroken`; a body that ends without the provider's end marker is the adapter's to judge.
pub fn sse(response: reqwest::Response, idle_timeout: Duration) -> BoxStream<'static, Result<Event, ProviderError>> {
    let events = response.bytes_stream().eventsource();
    futures_util::stream::unfold(events, move |mut events| async move {
        match tokio::time::timeout(idle_timeout, events.next()).await {
            Err(_) => Some((Err(ProviderError::StreamBroken("no data within the idle timeout".into())), events)),
            Ok(None) => None,
            Ok(Some(Ok(event))) => Some((Ok(event), events)),
            Ok(Some(Err(e))) => Some((Err(ProviderError::StreamBroken(e.to_string())), events)),
        }
    })
    .boxed()
}
