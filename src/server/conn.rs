//! Connections: `tpo serve`'s own accept loop over hyper, so that no client can hold the
//! server with a socket.
//!
//! What it enforces, per connection (the flags are in `docs/serving.md`):
//! - **at most `max_connections` open**: one more is answered `503` and closed at once
//!   (uvicorn's `--limit-concurrency` answers the same way), so a flood of idle sockets
//!   cannot exhaust file descriptors or memory;
//! - **headers within `header_read_timeout`** (hyper's own timer), so a slow-loris client
//!   trickling a header a byte a second is closed when its time is up;
//! - **an idle keep-alive connection closes after `keep_alive_timeout`**: no request in
//!   flight and no byte either way for that long;
//! - **a client that accepts no bytes for `write_stall_timeout` is cut off**: a write that
//!   has been blocked (the client's receive window full) that long drops the connection,
//!   which drops its response body, which cancels the engine work behind it and frees its
//!   admission permits. Without this a streaming client that stops reading would hold
//!   everything forever, since hyper stops polling a body whose socket accepts nothing.
//!
//! The request body's deadline is the handlers' (`body::read_json_body`), as it is a
//! request's, not a connection's.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use super::metrics;

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub write_stall_timeout: Duration,
}

/// Milliseconds since the process's first use of this clock, plus one (0 means "never").
fn now_ms() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// What a connection's watchdog reads: when bytes last moved, since when a write has been
/// blocked, and how many requests are in flight on it.
#[derive(Debug, Default)]
struct Activity {
    last_io: AtomicU64,
    write_blocked_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_io.store(now_ms(), Ordering::Relaxed);
    }
}

/// Counts one request in flight on a connection until its response body is dropped (sent
/// whole, or abandoned with the connection).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A socket that records its reads, writes and blocked writes in an [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn wrote(&self, result: &Poll<io::Result<usize>>) {
        match result {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity
                    .write_blocked_since
                    .store(0, Ordering::Relaxed);
                self.activity.touch();
            }
            Poll::Pending => {
                let _ = self.activity.write_blocked_since.compare_exchange(
                    0,
                    now_ms(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            _ => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&result);
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&result);
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The answer to a connection over the limit, written without reading its request.
static TOO_MANY_CONNECTIONS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = super::error::ApiError::too_many_connections().body();
    let json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         connection: close\r\nretry-after: 1\r\ncontent-length: {}\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
});

/// Accepts connections until `stop` turns true, then asks every open connection to finish
/// its requests and close (graceful). Returns once the listener has stopped; connections
/// still draining go on in their tasks (the caller bounds the drain).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::connection_refused();
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = stream.write_all(&TOO_MANY_CONNECTIONS).await;
                    let _ = stream.shutdown().await;
                })
                .await;
            });
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            metrics::connection_opened();
            let reason = serve_one(stream, router, limits, stop).await;
            metrics::connection_closed(reason);
            drop(permit);
        });
    }
}

/// Serves one connection to its end; the reason it ended, for the metrics.
async fn serve_one(
    stream: TcpStream,
    router: Router,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) -> &'static str {
    let activity = Arc::new(Activity::default());
    activity.touch();
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service_activity = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let guard = InFlight::begin(&service_activity);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await?;
            // The guard lives as long as the response body: a stream counts as in flight
            // until it is sent whole or dropped.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _held = &guard;
                    frame
                }))
            }))
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let tick = limits
        .keep_alive_timeout
        .min(limits.write_stall_timeout)
        .min(Duration::from_secs(1))
        .max(Duration::from_millis(50));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    Ok(()) if closing => "idle",
                    Ok(()) => "done",
                    Err(_) => "error",
                };
            }
            _ = ticks.tick() => {
                let now = now_ms();
                let blocked = activity.write_blocked_since.load(Ordering::Relaxed);
                if blocked != 0
                    && now.saturating_sub(blocked) >= limits.write_stall_timeout.as_millis() as u64
                {
                    tracing::info!(
                        seconds = limits.write_stall_timeout.as_secs_f64(),
                        "closing a connection whose client accepted no bytes"
                    );
                    // Dropping the connection drops its response bodies: the engine work
                    // behind them is cancelled and their permits come back.
                    return "write_stalled";
                }
                let idle_ms = now.saturating_sub(activity.last_io.load(Ordering::Relaxed));
                if !closing
                    && activity.in_flight.load(Ordering::Relaxed) == 0
                    && idle_ms >= limits.keep_alive_timeout.as_millis() as u64
                {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
