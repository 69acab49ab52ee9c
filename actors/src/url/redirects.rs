//! Following a URL's redirects hop by hop, each hop through the outbound guard
//! ([`NetGuard`]): an IP literal is checked before the request, a name at connect time, so
//! a chain that walks into a private, loopback or metadata address stops there. Every hop
//! has its own timeout; the final page's body is read up to a cap (for parked-page
//! markers).

use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

use crate::routing::netguard::{refusal, NetGuard};

/// Limits of a walk.
#[derive(Debug, Clone)]
pub struct RedirectSettings {
    pub max_hops: usize,
    pub hop_timeout: Duration,
    /// The most of the final page's body that is read.
    pub max_body_bytes: usize,
}

impl Default for RedirectSettings {
    fn default() -> Self {
        Self { max_hops: 10, hop_timeout: Duration::from_secs(5), max_body_bytes: 256 * 1024 }
    }
}

/// One request of the walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Hop {
    pub url: String,
    pub status: u16,
}

/// Why a walk stopped before a final page.
#[derive(Debug, Clone, PartialEq)]
pub enum Stopped {
    TooManyHops,
    /// The guard refused the next address (its explanation).
    Refused(String),
    /// A redirect to something that is not an http(s) URL.
    BadLocation(String),
    Timeout,
    Network(String),
}

/// What [`follow`] found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedirectFindings {
    /// Every answered request, the first one included.
    pub hops: Vec<Hop>,
    /// The page the walk ended on (a non-redirect answer).
    pub final_url: Option<String>,
    pub final_status: Option<u16>,
    /// The final page's body (up to the cap), lossily decoded.
    pub body: Option<String>,
    pub stopped: Option<Stopped>,
}

impl RedirectFindings {
    /// Redirects followed (answers that sent us on).
    pub fn redirect_hops(&self) -> usize {
        self.hops.len().saturating_sub(usize::from(self.final_status.is_some()))
    }
}

/// A longer `Location` is refused: no browser needs it, and every hop's URL is kept.
pub const MAX_LOCATION_BYTES: usize = 2048;

/// Walks from `start` until a page that is not a redirect, or a stop.
pub async fn follow(guard: &NetGuard, start: &Url, settings: &RedirectSettings) -> RedirectFindings {
    let mut found = RedirectFindings::default();
    let mut url = start.clone();
    url.set_fragment(None);
    loop {
        if found.hops.len() > settings.max_hops {
            found.stopped = Some(Stopped::TooManyHops);
            return found;
        }
        if let Err(refused) = guard.check_literal(&url) {
            found.stopped = Some(Stopped::Refused(refused.explain()));
            return found;
        }
        let client = guard.client(url.port_or_known_default().unwrap_or(80));
        let sent = client
            .get(url.clone())
            .header(reqwest::header::USER_AGENT, "Tokaroo-URL-Inspector/1")
            .header(crate::routing::providers::http::HOP_HEADER, "1")
            .timeout(settings.hop_timeout)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                found.stopped = Some(match refusal(&error) {
                    Some(refused) => Stopped::Refused(refused.explain()),
                    None if error.is_timeout() => Stopped::Timeout,
                    None => Stopped::Network(error.to_string()),
                });
                return found;
            }
        };
        let status = response.status();
        found.hops.push(Hop { url: url.to_string(), status: status.as_u16() });
        let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok());
        if status.is_redirection() {
            if let Some(location) = location {
                let joined = if location.len() > MAX_LOCATION_BYTES { None } else { url.join(location).ok() };
                match joined {
                    Some(next) if matches!(next.scheme(), "http" | "https") => {
                        url = next;
                        url.set_fragment(None);
                        continue;
                    }
                    _ => {
                        found.stopped = Some(Stopped::BadLocation(location.chars().take(200).collect()));
                        return found;
                    }
                }
            }
        }
        found.final_url = Some(url.to_string());
        found.final_status = Some(status.as_u16());
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let read = tokio::time::timeout(settings.hop_timeout, async {
            while let Some(Ok(chunk)) = stream.next().await {
                let room = settings.max_body_bytes.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= settings.max_body_bytes {
                    break;
                }
            }
        })
        .await;
        if read.is_err() && body.is_empty() {
            found.stopped = Some(Stopped::Timeout);
        }
        found.body = Some(String::from_utf8_lossy(&body).into_owned());
        return found;
    }
}

#[cfg(test)]
mod tests;
