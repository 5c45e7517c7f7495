//! Whether a worker thread (the engine's scheduler, a reward model's scorer) is still alive,
//! and if not, why. A worker that catches a panic records it here *before* it fails its
//! in-flight work and drops its channels, so every caller that then finds the channel closed
//! can name the reason, and `/health` can report it (Kubernetes restarts the pod).
//!
//! This is a fact store only: it never restarts anything and knows no HTTP or CLI.

use std::any::Any;
use std::sync::Arc;

use parking_lot::Mutex;

/// Shared liveness of one worker thread.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    dead: Arc<Mutex<Option<String>>>,
}

impl Liveness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that the worker died, and why (the first reason wins).
    pub fn mark_dead(&self, reason: impl Into<String>) {
        let mut dead = self.dead.lock();
        if dead.is_none() {
            *dead = Some(reason.into());
        }
    }

    /// Why the worker died, or `None` while it is alive.
    pub fn dead_reason(&self) -> Option<String> {
        self.dead.lock().clone()
    }

    pub fn is_alive(&self) -> bool {
        self.dead.lock().is_none()
    }
}

/// The message of a caught panic (`panic!("…")` payloads are `&str` or `String`).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_is_kept_and_panic_payloads_read_as_text() {
        let l = Liveness::new();
        assert!(l.is_alive());
        l.mark_dead("first");
        l.mark_dead("second");
        assert_eq!(l.dead_reason().as_deref(), Some("first"));
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "boom 7");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(caught.as_ref()), "static");
    }
}
