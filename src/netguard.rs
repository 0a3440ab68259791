//! Connection hygiene shared by every listener (OTLP gRPC and HTTP, health check, metrics):
//! a cap on open connections, a deadline for the first byte, an idle timeout, accept errors
//! logged at a bounded rate, and the file-descriptor soft limit raised at start.
//!
//! A connection that sends nothing, or stops sending, would otherwise hold a file descriptor
//! forever; a thousand of them stop every listener of the process.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most; at the cap no new connection is accepted until one closes.
    pub max_connections: usize,
    /// A connection that sends no byte within this is closed.
    pub first_byte_timeout: Duration,
    /// A connection from which nothing arrives for this long is closed (longer than any
    /// request may take, so an in-flight request is never cut).
    pub idle_timeout: Duration,
}

/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default `idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Limits {
    /// For the health check and metrics endpoints: few connections, short requests.
    pub fn small_endpoint() -> Self {
        Limits {
            max_connections: 256,
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// Forwards `AsyncWrite` to the wrapper's `io` field.
macro_rules! forward_async_write {
    () => {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
        }
        fn is_write_vectored(&self) -> bool {
            self.io.is_write_vectored()
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    };
}

/// A connection whose read fails with `TimedOut` (the error saying `what`) when no first
/// byte arrives within a deadline. [`Guarded`] uses it for every listener; the OTLP/HTTP
/// receiver applies its `read_header_timeout` with it once more after the TLS handshake.
pub struct FirstByteDeadline<I> {
    io: I,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    what: &'static str,
}

impl<I> FirstByteDeadline<I> {
    pub fn new(io: I, within: Duration, what: &'static str) -> Self {
        FirstByteDeadline {
            io,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            what,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if r.is_err() || buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if !expired {
                    return Poll::Pending;
                }
                this.deadline = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    this.what,
                )))
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteDeadline<I> {
    forward_async_write!();
}

/// A connection under [`Limits`]: its read fails with `TimedOut` when no first byte arrives
/// in time or nothing arrives for the idle timeout; it holds a slot of the listener's cap
/// until dropped.
pub struct Guarded<I> {
    io: FirstByteDeadline<I>,
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<I> Guarded<I> {
    pub fn new(io: I, limits: &Limits, slot: OwnedSemaphorePermit) -> Self {
        Guarded {
            io: FirstByteDeadline::new(
                io,
                limits.first_byte_timeout,
                "no data within the first-byte deadline",
            ),
            idle: limits.idle_timeout,
            idle_timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
            _slot: slot,
        }
    }

    pub fn get_ref(&self) -> &I {
        self.io.get_ref()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if r.is_ok() && buf.filled().len() > before {
                    let next = tokio::time::Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if this.idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection idle for longer than idle_timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    forward_async_write!();
}

impl<I: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<I> {
    type ConnectInfo = I::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}

/// A listening socket that hands out [`Guarded`] connections.
pub struct GuardedListener {
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    name: String,
    /// Accept errors since the last one logged, and when that was (Unix seconds).
    errors: AtomicU64,
    last_logged: AtomicU64,
}

/// Accept errors are logged at most once per this interval (with the count in between).
const ACCEPT_ERROR_LOG_INTERVAL_SECS: u64 = 10;

impl GuardedListener {
    pub fn new(listener: TcpListener, limits: Limits, name: impl Into<String>) -> Self {
        GuardedListener {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            name: name.into(),
            errors: AtomicU64::new(0),
            last_logged: AtomicU64::new(0),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits for a free slot, then for a connection. Accept errors (out of file
    /// descriptors, aborted handshakes) are retried after a short pause and logged at most
    /// every 10 seconds.
    pub async fn accept(&self) -> (Guarded<TcpStream>, SocketAddr) {
        loop {
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                // The semaphore is never closed; wait rather than spin if it were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return (Guarded::new(tcp, &self.limits, slot), peer);
                }
                Err(e) => {
                    drop(slot);
                    self.log_accept_error(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn log_accept_error(&self, e: &std::io::Error) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_logged.load(Ordering::Relaxed);
        if now >= last + ACCEPT_ERROR_LOG_INTERVAL_SECS
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.errors.store(0, Ordering::Relaxed);
            tracing::warn!(listener = %self.name, error = %e, errors = n, "accepting connections fails (logged at most every 10s, with the count since the last log)");
        }
    }

    /// The connections as a stream (for tonic's `serve_with_incoming`): a task accepts and
    /// hands them over until the stream is dropped, and then closes the listener at once
    /// (not at the next connection), so a stopped server lets go of its port.
    pub fn into_stream(self) -> GuardedIncoming {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = tx.closed() => return,
                    (conn, _) = self.accept() => conn,
                };
                if tx.send(Ok(conn)).await.is_err() {
                    return;
                }
            }
        });
        GuardedIncoming { rx }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded<TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        GuardedListener::accept(self).await
    }
    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// A stream of guarded connections.
pub struct GuardedIncoming {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Guarded<TcpStream>>>,
}

impl futures_core::Stream for GuardedIncoming {
    type Item = std::io::Result<Guarded<TcpStream>>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// Raises the soft limit of open files to the hard limit (the usual soft limit of 1,024 is
/// reached by a modest number of clients); returns (old soft, new soft).
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}
