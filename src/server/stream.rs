//! Server-sent events as the official OpenAI clients read them: unnamed `data:` events
//! holding one JSON chunk each, `data: [DONE]` at the end, errors as `{"error": {…}}`.
//! Never `event:` names or `id:` lines (the Python client mishandles both).
//!
//! A stream's work runs apart from its body ([`detach`]): the work (engine requests, a
//! search) runs in its own task and ends, releasing its admission permits, as soon as it is
//! done, whether or not the client has read it all; what the client has not read yet waits
//! in a buffer of at most `--stream-buffer-bytes`, and a client that falls further behind
//! has its request cancelled. A client that hangs up cancels the work at once.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::Event;
use futures::{Stream, StreamExt};

use super::error::ApiError;
use super::metrics;

/// One SSE event and the size of its data, for the stream buffer's bound.
pub struct Frame {
    event: Event,
    bytes: usize,
}

fn frame(data: String) -> Frame {
    Frame {
        bytes: data.len(),
        event: Event::default().data(data),
    }
}

/// The event of one chunk. It goes through a JSON value (as the chunks built with `json!`
/// did), so its floats print as that value prints them.
pub fn data_event(chunk: &impl serde::Serialize) -> Frame {
    frame(
        serde_json::to_value(chunk)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| "{}".into()),
    )
}

pub fn error_event(error: &ApiError) -> Frame {
    frame(serde_json::to_string(&error.body()).unwrap_or_else(|_| "{}".into()))
}

pub fn done_event() -> Frame {
    frame("[DONE]".into())
}

/// Runs the event stream `work` in its own task and returns the body's side. The task
/// ends (dropping `work`, which cancels its engine requests and releases what it holds)
/// when `work` ends, when the body is dropped (the client hung up, or its connection was
/// closed for accepting no bytes), or when more than `max_bytes` of events wait unread
/// (then the client gets an error event and `[DONE]`, the last it is sent).
pub fn detach<S>(work: S, max_bytes: usize) -> impl Stream<Item = Result<Event, Infallible>> + Send
where
    S: Stream<Item = Result<Frame, Infallible>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    let waiting = Arc::new(AtomicUsize::new(0));
    let pump_waiting = Arc::clone(&waiting);
    tokio::spawn(async move {
        futures::pin_mut!(work);
        loop {
            let next = tokio::select! {
                next = work.next() => next,
                _ = tx.closed() => return,
            };
            let Some(Ok(frame)) = next else { return };
            let unread = pump_waiting.fetch_add(frame.bytes, Ordering::SeqCst) + frame.bytes;
            if unread > max_bytes {
                let e = ApiError::slow_client(max_bytes);
                metrics::rejected(e.reason());
                tracing::info!(
                    limit = max_bytes,
                    "cancelling a stream whose client reads too slowly"
                );
                let _ = tx.send(error_event(&e));
                let _ = tx.send(done_event());
                return;
            }
            if tx.send(frame).is_err() {
                return;
            }
        }
    });
    futures::stream::unfold((rx, waiting), |(mut rx, waiting)| async move {
        let frame = rx.recv().await?;
        waiting.fetch_sub(frame.bytes, Ordering::SeqCst);
        Some((Ok(frame.event), (rx, waiting)))
    })
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A unique response id: `prefix-<start time><counter>` in hex.
pub fn chunk_id(prefix: &str) -> String {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    format!("{prefix}-{nanos:x}{n:x}")
}
