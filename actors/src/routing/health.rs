//! Live health of one upstream connection (or of one model on it): a circuit breaker with
//! cooldown, a latency EWMA and the last success/failure, read by the router on every request
//! without a round trip.
//!
//! A failure is counted where it belongs ([`Blame`]): a connection's breaker opens only on
//! failures that say the connection itself is unwell, so one tenant's requests cannot cool a
//! shared connection down for every other tenant.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

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

/// What happened on a connection, reported to the connection's actor, which owns its
/// breakers ([`Breakers`]) and publishes the result ([`HealthView`]).
#[derive(Debug, Clone)]
pub enum HealthEvent {
    /// A served call of `model`. `latency` is `None` for a request too large to be typical:
    /// it closes the breakers without moving the latency `fast` routing reads.
    Served { model: String, latency: Option<Duration> },
    /// A failed call of `model`, counted by the breaker `blame` names.
    Failed { model: String, blame: Blame, code: String, retry_after: Option<Duration> },
    /// A self-hosted endpoint's check: reachable, or not with the failure's code.
    Checked { unreachable_code: Option<String> },
}

/// One breaker's state machine. Owned by the connection's actor; nothing else writes it.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    state: HealthSnapshot,
}

impl Breaker {
    /// Resumes from what was last published (a restarted actor loses no failure counts).
    pub fn resume(view: &HealthView) -> Self {
        Self { state: view.snapshot() }
    }

    pub fn state(&self) -> &HealthSnapshot {
        &self.state
    }

    /// The result of a periodic health check (self-hosted endpoints).
    pub fn set_reachable(&mut self, reachable: bool) {
        let s = &mut self.state;
        s.unreachable = !reachable;
        if reachable {
            s.cooldown_until_ms = None;
            s.consecutive_failures = 0;
        }
    }

    pub fn record_success(&mut self, latency: Duration) {
        let s = &mut self.state;
        let ms = latency.as_secs_f64() * 1000.0;
        s.latency_ewma_ms = Some(match s.latency_ewma_ms {
            Some(prev) => prev * (1.0 - EWMA_WEIGHT) + ms * EWMA_WEIGHT,
            None => ms,
        });
        succeeded(s);
    }

    /// A failure no breaker counts ([`Blame::Request`]): kept as the last failure for the
    /// operator (and a BYOK key's owner), with no effect on routing.
    pub fn note_failure(&mut self, code: String) {
        let s = &mut self.state;
        s.failures += 1;
        s.last_failure_at_ms = Some(crate::clock::now_ms());
        s.last_failure_code = Some(code);
    }

    /// A success that says nothing about latency (a request too large to be typical): closes
    /// the circuit without moving the EWMA `fast` routing reads.
    pub fn record_success_only(&mut self) {
        succeeded(&mut self.state);
    }

    /// A failure counted by this breaker. A 429's `retry-after` sets the cooldown directly; otherwise the
    /// circuit opens after a few consecutive failures, for a cooldown that doubles.
    pub fn record_failure(&mut self, code: String, retry_after: Option<Duration>) {
        let s = &mut self.state;
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

/// A connection's breakers: its own, and one per model that failed there on its own.
#[derive(Default)]
pub struct Breakers {
    pub connection: Breaker,
    pub models: std::collections::HashMap<String, Breaker>,
}

impl Breakers {
    /// Applies `event`; returns the models whose breaker changed (besides the connection's).
    pub fn apply(&mut self, event: HealthEvent) -> Option<String> {
        match event {
            HealthEvent::Served { model, latency } => {
                let record = |b: &mut Breaker| match latency {
                    Some(l) => b.record_success(l),
                    None => b.record_success_only(),
                };
                record(&mut self.connection);
                let breaker = self.models.get_mut(&model)?;
                record(breaker);
                Some(model)
            }
            HealthEvent::Failed { model, blame, code, retry_after } => match blame {
                Blame::Connection => {
                    self.connection.record_failure(code, retry_after);
                    None
                }
                Blame::Model => {
                    self.connection.note_failure(code.clone());
                    self.models.entry(model.clone()).or_default().record_failure(code, retry_after);
                    Some(model)
                }
                Blame::Request => {
                    self.connection.note_failure(code);
                    None
                }
            },
            HealthEvent::Checked { unreachable_code } => {
                self.connection.set_reachable(unreachable_code.is_none());
                if let Some(code) = unreachable_code {
                    self.connection.record_failure(code, None);
                }
                None
            }
        }
    }
}

/// The published side of a breaker: what routing reads on every request, without a lock or a
/// round trip. Only the breaker's owner publishes.
pub struct HealthView {
    /// 0 when not cooling down.
    cooldown_until_ms: AtomicI64,
    unreachable: AtomicBool,
    /// f64 bits; `NO_LATENCY` when none yet.
    latency_ewma_bits: AtomicU64,
    /// The whole state, for the operator's views (read rarely).
    full: Mutex<HealthSnapshot>,
}

const NO_LATENCY: u64 = u64::MAX;

impl Default for HealthView {
    fn default() -> Self {
        Self {
            cooldown_until_ms: AtomicI64::new(0),
            unreachable: AtomicBool::new(false),
            latency_ewma_bits: AtomicU64::new(NO_LATENCY),
            full: Mutex::new(HealthSnapshot::default()),
        }
    }
}

impl HealthView {
    pub fn publish(&self, state: &HealthSnapshot) {
        *self.full.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        self.cooldown_until_ms.store(state.cooldown_until_ms.unwrap_or(0), Ordering::Release);
        self.unreachable.store(state.unreachable, Ordering::Release);
        self.latency_ewma_bits.store(state.latency_ewma_ms.map_or(NO_LATENCY, f64::to_bits), Ordering::Release);
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let mut s = self.full.lock().unwrap_or_else(|p| p.into_inner()).clone();
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
        self.cooldown_until_ms.load(Ordering::Acquire) > crate::clock::now_ms()
    }

    pub fn is_reachable(&self) -> bool {
        !self.unreachable.load(Ordering::Acquire)
    }

    pub fn latency_ms(&self) -> Option<f64> {
        Some(self.latency_ewma_bits.load(Ordering::Acquire)).filter(|b| *b != NO_LATENCY).map(f64::from_bits)
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

    /// A breaker and its published view, as the connection's actor keeps them.
    fn published(b: &Breaker) -> HealthView {
        let view = HealthView::default();
        view.publish(b.state());
        view
    }

    #[test]
    fn circuit_opens_after_repeated_failures_and_closes_on_success() {
        let mut h = Breaker::default();
        h.record_failure("500".into(), None);
        h.record_failure("timeout".into(), None);
        assert!(!published(&h).is_cooling_down());
        assert_eq!(published(&h).snapshot().status, "degraded");
        h.record_failure("500".into(), None);
        assert!(published(&h).is_cooling_down());
        assert_eq!(published(&h).snapshot().status, "cooling_down");
        h.record_success(Duration::from_millis(100));
        assert!(!published(&h).is_cooling_down());
        assert_eq!(published(&h).latency_ms(), Some(100.0));
        h.record_success(Duration::from_millis(200));
        assert_eq!(published(&h).snapshot().latency_ewma_ms, Some(120.0));
        h.record_failure("429".into(), Some(Duration::from_secs(30)));
        assert!(published(&h).is_cooling_down(), "a 429 with retry-after cools down at once");
    }

    #[test]
    fn noted_failures_never_open_the_circuit() {
        let mut h = Breaker::default();
        for _ in 0..10 {
            h.note_failure("timeout".into());
        }
        assert!(!published(&h).is_cooling_down());
        let s = published(&h).snapshot();
        assert_eq!((s.status, s.failures, s.last_failure_code.as_deref()), ("healthy", 10, Some("timeout")));
        h.record_success(Duration::from_millis(100));
        h.record_success_only();
        assert_eq!(published(&h).latency_ms(), Some(100.0), "an untypical success leaves the EWMA alone");
        assert_eq!(published(&h).snapshot().successes, 2);
    }

    #[test]
    fn a_resumed_breaker_keeps_its_counts() {
        let mut h = Breaker::default();
        h.record_failure("500".into(), None);
        h.record_failure("500".into(), None);
        let mut resumed = Breaker::resume(&published(&h));
        resumed.record_failure("500".into(), None);
        assert!(published(&resumed).is_cooling_down(), "the third failure opens it, across the restart");
    }

    #[test]
    fn an_unreachable_check_marks_the_connection_and_a_reachable_one_clears_it() {
        let mut b = Breakers::default();
        b.apply(HealthEvent::Checked { unreachable_code: Some("connect".into()) });
        assert!(!published(&b.connection).is_reachable());
        assert_eq!(published(&b.connection).snapshot().status, "unreachable");
        b.apply(HealthEvent::Checked { unreachable_code: None });
        assert!(published(&b.connection).is_reachable());
        assert_eq!(published(&b.connection).snapshot().consecutive_failures, 0);
    }
}
