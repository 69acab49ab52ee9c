//! Gathers the SSE frames of a streamed answer that are ready within one scheduler turn into
//! one body frame, so they leave in one socket write.
//!
//! Why scheduler turns and not just "what is ready now": the upstream's body reaches us through
//! hyper's client connection task one chunk at a time (its body channel holds a single chunk),
//! so even when a provider's events arrive in one TCP read, each one becomes ready only after
//! that task has run again. Handing hyper each frame as it appears costs a write, a wake-up of
//! the client and a read on its side per event. Yielding when nothing is ready lets that task
//! run; only after a few turns bring nothing new does the gathered batch go out. A frame waits
//! a few turns of the runtime (microseconds), and never more than [`MAX_BATCH_DELAY`] in all.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use futures_util::Stream;

/// A batch is sent once it reaches this size even if more frames are ready.
/// Scheduler turns without a new frame before the batch goes out. One is rarely enough: each
/// upstream chunk costs a turn of hyper's connection task and one of ours, and other tasks
/// woken meanwhile can push that task behind us. Measured on the load bench: 1 turn left ~8
/// writes per streamed answer, 3 left ~3, 4 and more leave 2 (the head with the first event,
/// then the rest).
const EMPTY_TURNS_BEFORE_SENDING: u32 = 4;
const MAX_BATCH_BYTES: usize = 16 * 1024;
/// A batch goes out once its first frame is this old, even while frames keep coming: under
/// load a scheduler turn can take long, and a steady stream must not be held back for it.
/// Short enough to be invisible in a streamed answer; long enough for the load bench's whole
/// answer to gather at concurrency 64, where 1 ms split it (3 writes an answer, 9% fewer rps).
const MAX_BATCH_DELAY: Duration = Duration::from_millis(5);

pub struct Coalesce<S> {
    inner: S,
    batch: Vec<u8>,
    /// When the batch's first frame came.
    batch_started: Instant,
    /// Turns yielded in a row with a batch in hand and no new frame.
    yielded: u32,
    ended: bool,
    sent_first: bool,
    /// Whether the first batch also waits a few turns. hyper sends what it holds whenever the
    /// body is not ready, the response head included, so by default the first batch leaves as
    /// soon as the inner stream pauses, with the head. A caller that awaits the first batch
    /// before returning the response can let it wait (see [`Coalesce::gather_first`]).
    first_waits: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            batch: Vec::new(),
            batch_started: Instant::now(),
            yielded: 0,
            ended: false,
            sent_first: false,
            first_waits: false,
        }
    }

    /// The first batch, gathered over a few turns like the rest; for a caller that has not
    /// handed the stream to hyper yet, so that the head and this batch leave in one write.
    pub async fn gather_first(&mut self) -> Option<Bytes>
    where
        S: Stream<Item = Bytes> + Unpin,
    {
        self.first_waits = true;
        futures_util::StreamExt::next(self).await
    }

    fn take(&mut self) -> Bytes {
        self.sent_first = true;
        Bytes::from(std::mem::take(&mut self.batch))
    }
}

impl<S: Stream<Item = Bytes> + Unpin> Stream for Coalesce<S> {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(frame)) => {
                    this.yielded = 0;
                    if this.batch.is_empty() {
                        if frame.len() >= MAX_BATCH_BYTES {
                            this.sent_first = true;
                            return Poll::Ready(Some(frame));
                        }
                        this.batch_started = Instant::now();
                    }
                    this.batch.extend_from_slice(&frame);
                    if this.batch.len() >= MAX_BATCH_BYTES {
                        return Poll::Ready(Some(this.take()));
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready((!this.batch.is_empty()).then(|| this.take()));
                }
                Poll::Pending if this.batch.is_empty() => return Poll::Pending,
                Poll::Pending
                    if this.yielded < EMPTY_TURNS_BEFORE_SENDING
                        && (this.sent_first || this.first_waits)
                        && this.batch_started.elapsed() < MAX_BATCH_DELAY =>
                {
                    // Let the tasks that feed the inner stream run before deciding the batch is
                    // complete. Waking ourselves puts this task at the back of the run queue.
                    this.yielded += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    this.yielded = 0;
                    return Poll::Ready(Some(this.take()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn frames_ready_together_leave_as_one_and_nothing_is_lost() {
        let frames = (0..5).map(|i| Bytes::from(format!("data: {i}\n\n")));
        let out: Vec<Bytes> = Coalesce::new(futures_util::stream::iter(frames)).collect().await;
        assert_eq!(out, vec![Bytes::from("data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n")]);
    }

    #[tokio::test]
    async fn a_frame_fed_by_another_task_within_one_turn_joins_the_batch() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        let feeder = tokio::spawn(async move {
            for i in 0..3 {
                tx.send(Bytes::from(format!("{i};"))).unwrap();
                tokio::task::yield_now().await;
            }
        });
        let out: Vec<Bytes> = Coalesce::new(tokio_stream_from(rx)).collect().await;
        feeder.await.unwrap();
        assert_eq!(out.concat(), b"0;1;2;".to_vec());
        assert!(out.len() < 3, "frames one turn apart were sent separately: {out:?}");
    }

    #[tokio::test]
    async fn a_frame_is_not_held_for_data_that_has_not_arrived() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        tx.send(Bytes::from("first")).unwrap();
        let mut coalesced = Coalesce::new(tokio_stream_from(rx));
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), coalesced.next()).await;
        assert_eq!(first.expect("the ready frame went out while the stream stayed open"), Some(Bytes::from("first")));
        drop(tx);
        assert_eq!(coalesced.next().await, None);
    }

    #[tokio::test]
    async fn a_steady_stream_is_not_held_back_until_the_batch_is_full() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
        // A frame every turn, for longer than a batch may wait.
        let feeder = tokio::spawn(async move {
            while tx.send(Bytes::from_static(b"x")).is_ok() {
                tokio::task::yield_now().await;
            }
        });
        let mut coalesced = Coalesce::new(tokio_stream_from(rx));
        let _ = coalesced.next().await;
        let second = coalesced.next().await.expect("a batch while frames keep coming");
        assert!(second.len() < MAX_BATCH_BYTES, "the batch waited until it was full");
        drop(coalesced);
        feeder.await.unwrap();
    }

    #[tokio::test]
    async fn large_batches_are_cut() {
        let frames = (0..40).map(|_| Bytes::from(vec![b'x'; 1024]));
        let out: Vec<Bytes> = Coalesce::new(futures_util::stream::iter(frames)).collect().await;
        assert!(out.iter().all(|b| b.len() <= MAX_BATCH_BYTES));
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 40 * 1024);
    }

    fn tokio_stream_from(mut rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> impl Stream<Item = Bytes> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
