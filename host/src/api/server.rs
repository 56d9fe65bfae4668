//! The HTTP server: hyper's HTTP/1 connection driver with the bounds a shared host needs.
//!
//! - **Connections:** at most `max_connections` are served at once; the next waits in the
//!   listen backlog until one closes, so a flood of sockets cannot use up the process's
//!   file descriptors.
//! - **Slow clients:** a request's headers must arrive within `header_read_timeout` (hyper
//!   runs that timer from the moment a connection waits for a request, so it also closes
//!   a connection opened and never used), a request body may not stall for longer than
//!   that between two pieces, and a keep-alive connection with no request in flight closes
//!   after `idle_timeout`.
//!
//! A long poll (`/wait`) is a request in flight, not an idle connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    pub(super) idle_timeout: Duration,
    pub(super) max_connections: usize,
}

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
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            let busy = activity.begin();
            let stall = bounds.header_read_timeout;
            async move {
                let request = request.map(|body| Body::new(StallTimeout::new(body, stall)));
                let response = app.oneshot(request).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let check_every = (bounds.idle_timeout / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = closed.changed() => break,
            () = tokio::time::sleep(check_every) => {
                if activity.idle_for() >= bounds.idle_timeout {
                    break;
                }
            }
        }
    }
    // Finish the request in flight, if any, then close.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// How long the connection has had nothing in flight (zero while it has).
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request body that fails when the client sends nothing for `limit`: a client
/// trickling a body cannot hold a connection and a handler for ever.
struct StallTimeout {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl StallTimeout {
    fn new(inner: Incoming, limit: Duration) -> Self {
        StallTimeout {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the client sent no part of the request body for {0:?}")]
    Stalled(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl hyper::body::Body for StallTimeout {
    type Data = hyper::body::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.limit;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled(self.limit)))),
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
