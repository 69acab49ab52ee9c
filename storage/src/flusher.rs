//! The one thread that makes sled durable.
//!
//! sled 0.34 deadlocks when flushes run concurrently (sled #1308: concurrent
//! `flush_async` calls park every `sled-io` thread in `make_stable`; fixed on sled's main
//! branch, never released). So no code calls `sled::Db::flush` or `flush_async` except the
//! [`Flusher`]'s own thread, and callers that need durability queue for it: group commit.
//! A waiter is answered by a flush that started after it queued, so everything it wrote
//! before queueing is on disk; every waiter queued while a flush runs shares the next one.

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use futures_channel::oneshot;

use crate::StorageError;

/// What a flush answers its waiters: the outcome is shared, so the error is its message.
type FlushResult = Result<(), String>;

enum Waiter {
    Async(oneshot::Sender<FlushResult>),
    Blocking(std::sync::mpsc::SyncSender<FlushResult>),
}

impl Waiter {
    fn answer(self, result: FlushResult) {
        match self {
            Waiter::Async(tx) => drop(tx.send(result)),
            Waiter::Blocking(tx) => drop(tx.send(result)),
        }
    }
}

#[derive(Default)]
struct State {
    queued: Vec<Waiter>,
    /// When the flush under way started, and how many waiters it answers.
    in_flight: Option<(Instant, usize)>,
    flushes: u64,
    last_error: Option<String>,
    /// Set by `stop`: the thread answers what is queued with one last flush and exits.
    stopping: bool,
    exited: bool,
    /// Test-only: the thread holds every flush while this is set (a hung disk).
    held: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher thread (work queued, stop, release) and `stop` (thread exited).
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated in a way that
        // matters more than stopping the server would; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the flusher is doing, for shutdown diagnostics and the operator tree.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlusherStatus {
    /// Milliseconds the flush under way has taken so far; `None` when idle.
    pub flush_in_flight_ms: Option<u64>,
    /// Waiters the flush under way will answer.
    pub in_flight_waiters: usize,
    /// Waiters queued for the next flush.
    pub queued_waiters: usize,
    pub flushes: u64,
    pub last_error: Option<String>,
    pub held: bool,
    pub stopped: bool,
}

/// Owns every flush of one sled database (see the module docs).
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub fn start(db: sled::Db) -> Result<Self, StorageError> {
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), changed: Condvar::new() });
        // Allow-list: the flusher thread is owned by `Store` and joined by `Store::close`.
        #[allow(clippy::disallowed_methods)]
        let thread = std::thread::Builder::new()
            .name("sled-flusher".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &db)
            })
            .map_err(|source| StorageError::Io { path: "sled-flusher thread".into(), source })?;
        Ok(Self { shared, thread: Mutex::new(Some(thread)) })
    }

    /// Resolves once a flush that started after this call has finished.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Waiter::Async(tx))?;
        match rx.await {
            Ok(result) => result.map_err(StorageError::Flush),
            Err(_) => Err(StorageError::Closed),
        }
    }

    /// The same wait, for threads that are not async (the ledger's committer).
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.enqueue(Waiter::Blocking(tx))?;
        match rx.recv() {
            Ok(result) => result.map_err(StorageError::Flush),
            Err(_) => Err(StorageError::Closed),
        }
    }

    fn enqueue(&self, waiter: Waiter) -> Result<(), StorageError> {
        let mut state = self.shared.lock();
        if state.stopping {
            return Err(StorageError::Closed);
        }
        state.queued.push(waiter);
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    pub fn status(&self) -> FlusherStatus {
        let state = self.shared.lock();
        FlusherStatus {
            flush_in_flight_ms: state.in_flight.map(|(since, _)| since.elapsed().as_millis() as u64),
            in_flight_waiters: state.in_flight.map_or(0, |(_, n)| n),
            queued_waiters: state.queued.len(),
            flushes: state.flushes,
            last_error: state.last_error.clone(),
            held: state.held,
            stopped: state.exited,
        }
    }

    /// Test-only fault: while held, flushes wait as on a disk that stopped answering.
    pub fn hold(&self, held: bool) {
        self.shared.lock().held = held;
        self.shared.changed.notify_all();
    }

    /// Answers what is queued with a last flush, then ends the thread. Refuses new waiters
    /// at once. Returns false when the thread has not exited within `timeout` (a flush is
    /// stuck); it is then left behind, and the caller must not wait on storage again.
    pub fn stop(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        state.stopping = true;
        self.shared.changed.notify_all();
        while !state.exited {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.shared.changed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        drop(state);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        true
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Bounded: a store dropped without `stop` must not hang its thread's exit.
        self.stop(Duration::from_secs(5));
    }
}

fn run(shared: &Shared, db: &sled::Db) {
    loop {
        let mut state = shared.lock();
        while (state.queued.is_empty() && !state.stopping) || state.held {
            state = shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.queued.is_empty() {
            // Stopping, and nobody waits: one last flush so nothing written is left behind.
            drop(state);
            let result = db.flush();
            let mut state = shared.lock();
            if let Err(error) = result {
                state.last_error = Some(error.to_string());
            }
            state.exited = true;
            drop(state);
            shared.changed.notify_all();
            return;
        }
        let batch = std::mem::take(&mut state.queued);
        state.in_flight = Some((Instant::now(), batch.len()));
        drop(state);

        let result = db.flush().map(|_| ()).map_err(|e| e.to_string());

        let mut state = shared.lock();
        state.in_flight = None;
        state.flushes += 1;
        if let Err(error) = &result {
            state.last_error = Some(error.clone());
        }
        drop(state);
        for waiter in batch {
            waiter.answer(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, sled::Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        (dir, db)
    }

    #[test]
    fn waiters_queued_during_a_flush_share_the_next_one() {
        let (_dir, db) = db();
        let flusher = Arc::new(Flusher::start(db.clone()).unwrap());
        flusher.hold(true);
        let threads: Vec<_> = (0..32u32)
            .map(|i| {
                let (flusher, db) = (flusher.clone(), db.clone());
                std::thread::spawn(move || {
                    db.insert(i.to_be_bytes(), &[1]).unwrap();
                    flusher.flush_blocking()
                })
            })
            .collect();
        while flusher.status().queued_waiters < 32 {
            std::thread::sleep(Duration::from_millis(1));
        }
        flusher.hold(false);
        for t in threads {
            t.join().unwrap().unwrap();
        }
        // All 32 queued while the thread was held, so one flush answered them all.
        assert_eq!(flusher.status().flushes, 1);
    }

    #[test]
    fn a_stopped_flusher_refuses_waiters_instead_of_hanging_them() {
        let (_dir, db) = db();
        let flusher = Flusher::start(db).unwrap();
        flusher.flush_blocking().unwrap();
        assert!(flusher.stop(Duration::from_secs(5)));
        assert!(matches!(flusher.flush_blocking(), Err(StorageError::Closed)));
        assert!(flusher.status().stopped);
    }

    #[test]
    fn stop_is_bounded_when_a_flush_is_stuck() {
        let (_dir, db) = db();
        let flusher = Arc::new(Flusher::start(db).unwrap());
        flusher.hold(true);
        let waiter = {
            let flusher = flusher.clone();
            std::thread::spawn(move || flusher.flush_blocking())
        };
        while flusher.status().queued_waiters < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        assert!(!flusher.stop(Duration::from_millis(200)));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Releasing the fault lets the stuck flush finish and the waiter get its answer.
        flusher.hold(false);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn writes_are_durable_after_the_flush_answers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            let flusher = Flusher::start(db.clone()).unwrap();
            db.insert(b"k", b"v".as_slice()).unwrap();
            flusher.flush_blocking().unwrap();
            assert!(flusher.stop(Duration::from_secs(5)));
        }
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        assert_eq!(db.get(b"k").unwrap().as_deref(), Some(b"v".as_slice()));
    }
}
