//! Live health of one upstream connection (or of one model on it): a circuit breaker with
//! cooldown, a latency EWMA and the last success/failure, read by the router on every request
//! without a round trip.
//!
//! A failure is counted where it belongs ([`Blame`]): a connection's breaker opens only on
//! failures that say the connection itself is unwell, so one tenant's requests cannot cool a
//! shared connection down for every other tenant.

use std::{sync::Mutex, time::Duration};

use serde::Serialize;

/// Consecutive failures that open the circuit.
const OPEN_AFTER: u32 = 3;
const BASE_COOLDOWN: Duration = Duration::from_secs(5);
const MAX_COOLDOWN: Duration = Duration::from_secs(300);
const EWMA_WEIGHT: f64 = 0.2;

/// What a failed upstream call says, and so which breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The connection is unwell for everyone (unreachable, 5xx, rate limited, its key refused,
    /// an unreadable answer): its breaker counts it.
    Connection,
    /// One model is unusable on this connection (the provider account lacks it): only that
    /// (connection, model) breaker counts it, other models stay routable.
    Model,
    /// The request explains it (a huge request that timed out): recorded for the operator,
    /// counted by no breaker.
    Request,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    pub status: &'static str,
    pub consecutive_failures: u32,
    pub latency_ewma_ms: Option<f64>,
    pub successes: u64,
    pub failures: u64,
    pub last_success_at_ms: Option<i64>,
    pub last_failure_at_ms: Option<i64>,
    pub last_failure_code: Option<String>,
    /// While set and in the future, the connection is cooling down and not routed to.
    pub cooldown_until_ms: Option<i64>,
    /// Set by a self-hosted endpoint's health check when it does not answer.
    pub unreachable: bool,
}

#[derive(Default)]
pub struct Health {
    state: Mutex<HealthSnapshot>,
}

impl Health {
    pub fn snapshot(&self) -> HealthSnapshot {
        let mut s = self.state.lock().map(|s| s.clone()).unwrap_or_default();
        s.status = if s.unreachable {
            "unreachable"
        } else if self.is_cooling_down() {
            "cooling_down"
        } else if s.consecutive_failures > 0 {
            "degraded"
        } else {
            "healthy"
        };
        s
    }

    pub fn is_cooling_down(&self) -> bool {
        let now = crate::clock::now_ms();
        self.state.lock().map(|s| s.cooldown_until_ms.is_some_and(|until| until > now)).unwrap_or(false)
    }

    pub fn is_reachable(&self) -> bool {
        self.state.lock().map(|s| !s.unreachable).unwrap_or(true)
    }

    /// The result of a periodic health check (self-hosted endpoints).
    pub fn set_reachable(&self, reachable: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.unreachable = !reachable;
            if reachable {
                s.cooldown_until_ms = None;
                s.consecutive_failures = 0;
            }
        }
    }

    pub fn latency_ms(&self) -> Option<f64> {
        self.state.lock().ok().and_then(|s| s.latency_ewma_ms)
    }

    pub fn record_success(&self, latency: Duration) {
        if let Ok(mut s) = self.state.lock() {
            let ms = latency.as_secs_f64() * 1000.0;
            s.latency_ewma_ms = Some(match s.latency_ewma_ms {
                Some(prev) => prev * (1.0 - EWMA_WEIGHT) + ms * EWMA_WEIGHT,
                None => ms,
            });
            succeeded(&mut s);
        }
    }

    /// A failure no breaker counts ([`Blame::Request`]): kept as the last failure for the
    /// operator (and a BYOK key's owner), with no effect on routing.
    pub fn note_failure(&self, code: String) {
        if let Ok(mut s) = self.state.lock() {
            s.failures += 1;
            s.last_failure_at_ms = Some(crate::clock::now_ms());
            s.last_failure_code = Some(code);
        }
    }

    /// A success that says nothing about latency (a request too large to be typical): closes
    /// the circuit without moving the EWMA `fast` routing reads.
    pub fn record_success_only(&self) {
        if let Ok(mut s) = self.state.lock() {
            succeeded(&mut s);
        }
    }

    /// A failure counted by this breaker. A 429's `retry-after` sets the cooldown directly; otherwise the
    /// circuit opens after a few consecutive failures, for a cooldown that doubles.
    pub fn record_failure(&self, code: String, retry_after: Option<Duration>) {
        if let Ok(mut s) = self.state.lock() {
            let now = crate::clock::now_ms();
            s.failures += 1;
            s.consecutive_failures += 1;
            s.last_failure_at_ms = Some(now);
            s.last_failure_code = Some(code);
            let cooldown = match retry_after {
                Some(wait) => Some(wait.min(MAX_COOLDOWN)),
                None if s.consecutive_failures >= OPEN_AFTER => {
                    let doublings = (s.consecutive_failures - OPEN_AFTER).min(6);
                    Some((BASE_COOLDOWN * 2u32.pow(doublings)).min(MAX_COOLDOWN))
                }
                None => None,
            };
            if let Some(c) = cooldown {
                s.cooldown_until_ms = Some(now + c.as_millis() as i64);
            }
        }
    }
}

/// A success closes the circuit.
fn succeeded(s: &mut HealthSnapshot) {
    s.successes += 1;
    s.consecutive_failures = 0;
    s.cooldown_until_ms = None;
    s.last_success_at_ms = Some(crate::clock::now_ms());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn circuit_opens_after_repeated_failures_and_closes_on_success() {
        let h = Health::default();
        h.record_failure("500".into(), None);
        h.record_failure("timeout".into(), None);
        assert!(!h.is_cooling_down());
        assert_eq!(h.snapshot().status, "degraded");
        h.record_failure("500".into(), None);
        assert!(h.is_cooling_down());
        assert_eq!(h.snapshot().status, "cooling_down");
        h.record_success(Duration::from_millis(100));
        assert!(!h.is_cooling_down());
        assert_eq!(h.snapshot().latency_ewma_ms, Some(100.0));
        h.record_success(Duration::from_millis(200));
        assert_eq!(h.snapshot().latency_ewma_ms, Some(120.0));
        h.record_failure("429".into(), Some(Duration::from_secs(30)));
        assert!(h.is_cooling_down(), "a 429 with retry-after cools down at once");
    }

    #[test]
    fn noted_failures_never_open_the_circuit() {
        let h = Health::default();
        for _ in 0..10 {
            h.note_failure("timeout".into());
        }
        assert!(!h.is_cooling_down());
        let s = h.snapshot();
        assert_eq!((s.status, s.failures, s.last_failure_code.as_deref()), ("healthy", 10, Some("timeout")));
        h.record_success(Duration::from_millis(100));
        h.record_success_only();
        assert_eq!(h.snapshot().latency_ewma_ms, Some(100.0), "an untypical success leaves the EWMA alone");
        assert_eq!(h.snapshot().successes, 2);
    }
}
