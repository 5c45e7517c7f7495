//! Server-sent events as the official OpenAI clients read them: unnamed `data:` events
//! holding one JSON chunk each, `data: [DONE]` at the end, errors as `{"error": {…}}`.
//! Never `event:` names or `id:` lines (the Python client mishandles both).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::Event;

use super::error::ApiError;

pub fn data_event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

pub fn error_event(error: &ApiError) -> Event {
    let body = serde_json::to_string(&error.body()).unwrap_or_else(|_| "{}".into());
    Event::default().data(body)
}

pub fn done_event() -> Event {
    Event::default().data("[DONE]")
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
