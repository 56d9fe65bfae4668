//! The HTTP server: hyper's HTTP/1 connection driver with the bounds a shared host needs.
//!
//! - **Connections:** at most `max_connections` are served at once; the next waits in the
//!   listen backlog until one closes, so a flood of sockets cannot use up the process's
//!   file descriptors.
//! - **Slow clients:** a request's headers must arrive within `header_read_timeout` (hyper
//!   runs that timer from the moment a connection waits for a request, so it also closes
//!   a connection opened and never used, and a keep-alive connection idle that long); a
//!   request body may not pause that long between two pieces, nor arrive slower than
//!   [`MIN_BODY_RATE`] on average once that much time has passed; a response the client
//!   stops reading for `write_timeout` ends the connection.
//! - **Shutdown:** the listener closes first; each connection finishes the request it is
//!   serving within [`SHUTDOWN_GRACE`], then is closed.
//!
//! A long poll (`/wait`) is a request in flight, not an idle connection.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

/// The connection bounds (from [`super::ApiConfig`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) header_read_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) write_timeout: Duration,
}

/// The slowest average rate a request body may arrive at, in bytes per second, once
/// `header_read_timeout` has passed.
pub(super) const MIN_BODY_RATE: f64 = 16.0 * 1024.0;

/// How long a connection may take to finish its request once the server is stopping.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown` resolves, then lets every connection finish the
/// request it is serving and close.
pub(super) async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let (closing, closed) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted:
                    // back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            app.clone(),
            bounds,
            closed.clone(),
            permit,
        ));
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    bounds: Bounds,
    mut closed: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stream = Watched::new(stream);
    let writes = Arc::clone(&stream.blocked_since);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        let pause = bounds.header_read_timeout;
        async move {
            let request = request.map(|body| Body::new(SlowBodyLimit::new(body, pause)));
            app.oneshot(request).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let check_every = (bounds.header_read_timeout / 4).max(Duration::from_millis(25));
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closed.changed() => break,
            () = tokio::time::sleep(check_every) => {
                let stalled = writes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some_and(|since| since.elapsed() >= bounds.write_timeout);
                if stalled {
                    // The client stopped reading what it asked for: drop the connection.
                    return;
                }
            }
        }
    }
    // Finish the request in flight, if any, then close.
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
}

/// A connection's socket, remembering since when a write has been waiting for the client
/// to read.
struct Watched {
    inner: tokio::net::TcpStream,
    blocked_since: Arc<Mutex<Option<Instant>>>,
}

impl Watched {
    fn new(inner: tokio::net::TcpStream) -> Self {
        Watched {
            inner,
            blocked_since: Arc::default(),
        }
    }

    fn note<T>(&self, poll: Poll<T>) -> Poll<T> {
        let mut since = self.blocked_since.lock().unwrap_or_else(|p| p.into_inner());
        match poll {
            Poll::Pending => {
                since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => *since = None,
        }
        poll
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that fails when the client pauses for `pause`, or sends slower than
/// [`MIN_BODY_RATE`] on average once `pause` has passed: a client trickling a body cannot
/// hold a connection and a handler for ever.
struct SlowBodyLimit {
    inner: Incoming,
    pause: Duration,
    started: tokio::time::Instant,
    received: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl SlowBodyLimit {
    fn new(inner: Incoming, pause: Duration) -> Self {
        let started = tokio::time::Instant::now();
        SlowBodyLimit {
            inner,
            pause,
            started,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(started + pause)),
        }
    }

    /// The sooner of: `pause` after the last piece, and when the average rate would fall
    /// below the minimum.
    fn next_deadline(&self) -> tokio::time::Instant {
        let quiet = tokio::time::Instant::now() + self.pause;
        let paced = self.started
            + self.pause
            + Duration::from_secs_f64(self.received as f64 / MIN_BODY_RATE);
        quiet.min(paced)
    }
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the client sent the request body too slowly (a pause of {0:?}, or under 16 KiB/s)")]
    TooSlow(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl hyper::body::Body for SlowBodyLimit {
    type Data = hyper::body::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(Ok(piece)) = &frame {
                    self.received += piece.data_ref().map_or(0, |d| d.len() as u64);
                }
                let next = self.next_deadline();
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TooSlow(self.pause)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
