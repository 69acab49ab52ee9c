//! Request work that outlives its request (a chat whose client left, still being served and
//! settled): counted, so shutdown waits for it before the ledger's last commit.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

#[derive(Default)]
struct Count {
    running: AtomicUsize,
    idle: tokio::sync::Notify,
}

pub struct Work {
    count: Arc<Count>,
    /// Set when shutdown begins: drains of abandoned streams stop early.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for Work {
    fn default() -> Self {
        Self { count: Arc::default(), stopping: tokio::sync::watch::Sender::new(false) }
    }
}

/// Held by work that must finish before shutdown commits the ledger.
pub struct WorkGuard(Arc<Count>);

impl Drop for WorkGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Work {
    /// Counts a piece of work until the guard drops.
    pub fn track(&self) -> WorkGuard {
        self.count.running.fetch_add(1, Ordering::AcqRel);
        WorkGuard(self.count.clone())
    }

    pub fn running(&self) -> usize {
        self.count.running.load(Ordering::Acquire)
    }

    /// Says shutdown has begun: drains of abandoned streams settle with what they have.
    pub fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Flips to true when shutdown begins.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Resolves once no tracked work is running.
    pub async fn done(&self) {
        loop {
            let idle = self.count.idle.notified();
            if self.running() == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn done_waits_for_every_guard() {
        let work = Work::default();
        let (a, b) = (work.track(), work.track());
        assert_eq!(work.running(), 2);
        drop(a);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), work.done()).await;
        assert!(waiting.is_err(), "one guard is still held");
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), work.done()).await.expect("done once all drop");
        let stopping = work.stopping();
        work.begin_shutdown();
        assert!(*stopping.borrow());
    }
}
