//! Completion webhooks: a JSON body POSTed through the account's outbound guard, signed with
//! the batch's `webhook_secret`.
//!
//! Headers (README, "URL intelligence"):
//! - `x-tokaroo-timestamp`: Unix seconds when the attempt was sent;
//! - `x-tokaroo-signature`: `v1=` and the hex HMAC-SHA256, keyed by the secret, of
//!   `{timestamp}.{body}` (only when the batch has a secret).
//!
//! A receiver recomputes the HMAC over the raw body, compares in constant time, and refuses
//! timestamps more than a few minutes old (a replayed delivery).

use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::routing::netguard::{refusal, NetGuard};

pub const TIMESTAMP_HEADER: &str = "x-tokaroo-timestamp";
pub const SIGNATURE_HEADER: &str = "x-tokaroo-signature";

/// The signature header's value for `body` sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The wait before retry `attempt` (1 after the first failure): `base` doubled per attempt,
/// up to `max`, then between half and all of it, so many receivers failing together do not
/// retry together.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let full = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(max);
    let millis = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(millis / 2 + rand::rng().random_range(0..=millis / 2))
}

/// One delivery attempt; any 2xx answer delivers it. The error says why not, for
/// `last_error`.
pub async fn send(
    guard: &NetGuard,
    url: &str,
    secret: Option<&str>,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let url = reqwest::Url::parse(url).map_err(|e| format!("the webhook URL does not parse: {e}"))?;
    guard.check_literal(&url).map_err(|refused| refused.explain())?;
    let timestamp = crate::clock::now_ms() / 1000;
    let client = guard.client(url.port_or_known_default().unwrap_or(443));
    let mut request = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, "tokaroo-webhooks/1")
        .header(crate::routing::providers::http::HOP_HEADER, "1")
        .header(TIMESTAMP_HEADER, timestamp.to_string());
    if let Some(secret) = secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, timestamp, body));
    }
    match request.body(body.to_vec()).send().await {
        Ok(answer) if answer.status().is_success() => Ok(()),
        Ok(answer) => Err(format!("the receiver answered {}", answer.status())),
        Err(error) if error.is_timeout() => Err(format!("no answer within {timeout:?}")),
        Err(error) => Err(match refusal(&error) {
            Some(refused) => refused.explain(),
            None => format!(
                "could not connect: {}",
                std::error::Error::source(&error).map_or_else(|| error.to_string(), ToString::to_string)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{backoff, signature};

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", 1_700_000_000, br#"{"a":1}"#),
            "v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let (base, max) = (Duration::from_secs(2), Duration::from_secs(60));
        for _ in 0..50 {
            let first = backoff(1, base, max);
            assert!(first >= Duration::from_secs(1) && first <= base, "{first:?}");
            let third = backoff(3, base, max);
            assert!(third >= Duration::from_secs(4) && third <= Duration::from_secs(8), "{third:?}");
            assert!(backoff(30, base, max) <= max);
        }
    }
}
