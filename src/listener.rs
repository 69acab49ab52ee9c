//! The HTTP/1 accept loop. `axum::serve` exposes none of hyper's connection settings, and a
//! server facing slow and many clients needs some (issue 9): a cap on open connections, a
//! deadline for a request's head, one for an idle keep-alive connection, one for a write the
//! client does not take, and a graceful drain.
//!
//! Deadlines are the connection's own [`Clock`] rather than hyper's `header_read_timeout`:
//! hyper arms that one timer whenever it waits for a head, idle keep-alive waits included, so
//! it cannot give a slow head 10 s and an idle connection 75 s.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{body::Bytes, Router};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{Instant, Sleep},
};
use tower::ServiceExt;

/// The limits one connection is held to. See `[server]` in `config/tokaroo.toml`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections past this wait in the kernel's accept queue until one closes.
    pub max_connections: usize,
    /// From a connection's accept, or from the first byte of a later request, to the end of
    /// the request's head.
    pub header_read_timeout: Duration,
    /// From the end of a response to the first byte of the next request.
    pub keep_alive_idle: Duration,
    /// How long a write may wait on a client that reads nothing before the connection is cut.
    pub stream_write_timeout: Duration,
}

/// The kernel's queue of connections not yet accepted (capped by `net.core.somaxconn`). It
/// absorbs bursts and is where connections past `max_connections` wait; a full queue drops
/// new SYNs, which clients retry only after a second or more. (The usual default is 128.)
const ACCEPT_BACKLOG: u32 = 4096;

/// Binds `listen` ("host:port", the first address that binds) with [`ACCEPT_BACKLOG`].
pub async fn bind(listen: &str) -> io::Result<TcpListener> {
    let mut failed = None;
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As std and mio do: a restarted server may bind while old connections linger in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(ACCEPT_BACKLOG)) {
            Ok(listener) => return Ok(listener),
            Err(error) => failed = Some(error),
        }
    }
    Err(failed.unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing")))
}

/// Serves `app` on `listener` until `signal` completes, then stops accepting (the listener is
/// closed at once) and returns when every open connection has finished its request. The
/// caller bounds that wait (`shutdown_grace_secs`).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, signal: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own head timer is off: `Clock` keeps the head and idle deadlines apart.
    http.header_read_timeout(None).keep_alive(true);
    let graceful = GracefulShutdown::new();
    // A permit per open connection, taken before `accept`: past the cap, new connections wait
    // in the kernel's queue rather than being refused, and are served as soon as another
    // closes. Idle and half-open connections close within their deadlines, so the wait is
    // bounded, and a client that waits is better off than one that gets a reset.
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let draining = Arc::new(AtomicBool::new(false));
    let mut signal = std::pin::pin!(signal);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut signal => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let tcp = tokio::select! {
            biased;
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
        };
        // Streaming answers are many small writes; Nagle's algorithm would hold each one back
        // waiting for the client's delayed ACK (tens of milliseconds per chunk).
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let clock = Arc::new(Clock::new(limits, draining.clone()));
        let io = TokioIo::new(Guarded::new(tcp, clock.clone(), limits.stream_write_timeout));
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            clock.request_started();
            let done = RequestDone(clock.clone());
            let response = app.clone().oneshot(request);
            async move {
                let response = response.await?;
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _done: done }))
            }
        });
        let connection = graceful.watch(http.serve_connection(io, service));
        // Allow-list: one task per accepted connection, watched by the graceful shutdown.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Timeouts, resets and malformed requests: the client's business, not ours.
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Before the connections are told: each one then reads once more, and one serving no
    // request closes (hyper itself closes idle ones, but waits out a head half sent).
    draining.store(true, Ordering::Relaxed);
    graceful.shutdown().await;
}

/// Aborted handshakes are routine. Anything else (out of file descriptors, mostly) would fail
/// again at once: wait for connections to close, as `axum::serve` does.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

const WAITING_FOR_HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;
const NO_DEADLINE: u64 = u64::MAX;

/// What one connection is waiting for, and until when. The service marks requests starting
/// and ending; `Guarded` reads the deadline whenever a read would wait, and notes a new head
/// beginning. All of it runs on the connection's own task, so nothing here is contended.
struct Clock {
    base: Instant,
    phase: AtomicU8,
    /// Milliseconds after `base`, or [`NO_DEADLINE`] while a request is being served (its
    /// body's deadline is the router's; its answer may stream for as long as it takes).
    deadline_ms: AtomicU64,
    /// Requests whose response hyper still holds (more than one only when pipelined).
    active: AtomicUsize,
    header: Duration,
    idle: Duration,
    /// The connection's task, parked on a read while a request was served. hyper may drop
    /// the last response body after its final read of the round, and a read with no deadline
    /// arms no timer: the connection must be polled again for the idle deadline to count.
    reader: futures_util::task::AtomicWaker,
    /// Set for every connection when shutdown begins.
    draining: Arc<AtomicBool>,
}

impl Clock {
    /// A new connection must send a whole head within the header timeout: a half-open
    /// connection that sends nothing is cut as soon as a slow one.
    fn new(limits: Limits, draining: Arc<AtomicBool>) -> Self {
        let clock = Self {
            base: Instant::now(),
            phase: AtomicU8::new(WAITING_FOR_HEAD),
            deadline_ms: AtomicU64::new(NO_DEADLINE),
            active: AtomicUsize::new(0),
            header: limits.header_read_timeout,
            idle: limits.keep_alive_idle,
            reader: futures_util::task::AtomicWaker::new(),
            draining,
        };
        clock.set(WAITING_FOR_HEAD, Some(clock.header));
        clock
    }

    fn set(&self, phase: u8, after: Option<Duration>) {
        self.phase.store(phase, Ordering::Relaxed);
        let ms = after.map_or(NO_DEADLINE, |d| (self.base.elapsed() + d).as_millis() as u64);
        self.deadline_ms.store(ms, Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.set(BUSY, None);
    }

    fn request_finished(&self) {
        if self.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.set(IDLE, Some(self.idle));
            self.reader.wake();
        }
    }

    /// Bytes arrived: on an idle connection they begin the next head, which gets the header
    /// timeout from here (however long the idle wait was). Bytes of a head being read do not
    /// push its deadline: a head sent a byte at a time is cut all the same.
    fn bytes_read(&self) {
        if self.phase.load(Ordering::Relaxed) == IDLE {
            self.set(WAITING_FOR_HEAD, Some(self.header));
        }
    }

    /// Shutting down, and this connection serves no request: nothing to wait for.
    fn closing(&self) -> bool {
        self.draining.load(Ordering::Relaxed) && self.phase.load(Ordering::Relaxed) != BUSY
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline_ms.load(Ordering::Relaxed) {
            NO_DEADLINE => None,
            ms => Some(self.base + Duration::from_millis(ms)),
        }
    }

    fn what_timed_out(&self) -> &'static str {
        match self.phase.load(Ordering::Relaxed) {
            IDLE => "idle keep-alive connection closed",
            _ => "no complete request head within the header read timeout",
        }
    }
}

/// Ends a request for its connection's [`Clock`] when hyper drops the response body (sent,
/// or abandoned with the connection).
struct RequestDone(Arc<Clock>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that holds its request's [`RequestDone`].
struct Tracked<B> {
    body: B,
    _done: RequestDone,
}

impl<B: http_body::Body<Data = Bytes> + Unpin> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The socket with the connection's deadlines applied: a read that waits past the
/// [`Clock`]'s deadline, or a write that waits `write_timeout` for the client to take data,
/// fails with `TimedOut`. hyper then drops the connection, and with it the response body: a
/// streamed answer is settled as abandoned (`ChatStream`'s drop, in the runtime), exactly as if the client had left.
struct Guarded {
    tcp: TcpStream,
    clock: Arc<Clock>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// Whether `write_timer` runs for the current stall.
    write_stalled: bool,
    write_timeout: Duration,
}

impl Guarded {
    fn new(tcp: TcpStream, clock: Arc<Clock>, write_timeout: Duration) -> Self {
        Self { tcp, clock, read_timer: None, write_timer: None, write_stalled: false, write_timeout }
    }

    /// A write could not proceed: the client's window and our send buffer are full. Counts
    /// the stall from its start and fails the write once it lasts `write_timeout`.
    fn write_would_wait<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.write_stalled {
            self.write_stalled = true;
            let deadline = Instant::now() + self.write_timeout;
            arm(&mut self.write_timer, deadline);
        }
        match self.write_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data for the stream write timeout",
            ))),
            _ => Poll::Pending,
        }
    }

    fn wrote<T>(&mut self, written: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match written {
            Poll::Pending => self.write_would_wait(cx),
            ready => {
                self.write_stalled = false;
                ready
            }
        }
    }
}

fn arm(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Instant) {
    match slot {
        Some(timer) if timer.deadline() == deadline => {}
        Some(timer) => timer.as_mut().reset(deadline),
        None => *slot = Some(Box::pin(tokio::time::sleep_until(deadline))),
    }
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.bytes_read();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.clock.closing() => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "shutting down")))
            }
            Poll::Pending => {
                let Some(deadline) = this.clock.deadline() else {
                    this.clock.reader.register(cx.waker());
                    return Poll::Pending;
                };
                arm(&mut this.read_timer, deadline);
                match this.read_timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, this.clock.what_timed_out())))
                    }
                    _ => Poll::Pending,
                }
            }
            failed => failed,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.wrote(written, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(written, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.tcp).poll_flush(cx);
        this.wrote(flushed, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = Pin::new(&mut this.tcp).poll_shutdown(cx);
        this.wrote(shut, cx)
    }
}
