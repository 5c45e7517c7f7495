//! Admission control: a request runs only with permits for the sequences it decodes at
//! once (1 per sample; a search's peak fan-out), taken before any 200 is sent. When none
//! are free it waits in a bounded queue (`--max-queue`) up to the request timeout; a full
//! queue is an immediate 429. Every admitted or waiting request is counted, so draining
//! knows when the server is idle.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

pub struct Admission {
    permits: Arc<Semaphore>,
    capacity: u32,
    max_queue: usize,
    queued: Arc<AtomicUsize>,
    active: Arc<AtomicUsize>,
}

/// Held for as long as a request runs (its stream included); releases on drop.
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    active: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Decrements the queue count however the wait ends (admitted, timed out, cancelled).
struct QueueSpot(Arc<AtomicUsize>);

impl Drop for QueueSpot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub fn new(capacity: u32, max_queue: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            max_queue,
            queued: Arc::new(AtomicUsize::new(0)),
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for `cost` permits (capped at the capacity) until `deadline`, the request's
    /// one deadline, or fails with 429 / 408.
    pub async fn admit(&self, cost: usize, deadline: Instant) -> Result<Ticket, ApiError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let cost = (cost.max(1) as u32).min(self.capacity);
        let permit = match Arc::clone(&self.permits).try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::SeqCst) >= self.max_queue {
                    self.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(ApiError::overloaded(format!(
                        "the server is at capacity ({} sequences running, {} requests \
                         queued); retry later",
                        self.capacity, self.max_queue
                    )));
                }
                let _spot = QueueSpot(Arc::clone(&self.queued));
                let acquire = Arc::clone(&self.permits).acquire_many_owned(cost);
                match tokio::time::timeout_at(deadline, acquire).await {
                    Ok(Ok(p)) => p,
                    Ok(Err(_)) => return Err(ApiError::draining()),
                    Err(_) => return Err(ApiError::timeout(timeout.as_secs_f64())),
                }
            }
        };
        self.active.fetch_add(1, Ordering::SeqCst);
        Ok(Ticket {
            _permit: permit,
            active: Arc::clone(&self.active),
        })
    }

    /// Requests waiting for permits.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Permits (sequences) held by admitted requests.
    pub fn permits_used(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.permits.available_permits())
    }

    /// Requests admitted and not finished (streams included).
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_is_a_429_and_permits_come_back() {
        let a = Admission::new(2, 1);
        let soon = |ms| Instant::now() + Duration::from_millis(ms);
        let t1 = a.admit(2, soon(5000)).await.unwrap();
        assert_eq!(a.active(), 1);
        // One may wait; it times out since nothing is released.
        let waited = a.admit(1, soon(20)).await;
        assert_eq!(waited.err().map(|e| e.status.as_u16()), Some(408));
        // Fill the queue with a waiter, then the next one is refused at once.
        let waiter = a.admit(1, soon(5000));
        tokio::pin!(waiter);
        assert!(futures::poll!(&mut waiter).is_pending());
        assert_eq!(a.queued(), 1);
        let refused = a.admit(1, soon(5000)).await;
        assert_eq!(refused.err().map(|e| e.status.as_u16()), Some(429));
        drop(t1);
        let t2 = waiter.await.unwrap();
        assert_eq!((a.queued(), a.active()), (0, 1));
        drop(t2);
        assert_eq!(a.active(), 0);
        // A cost above the capacity is capped, never unsatisfiable.
        assert!(a.admit(10, soon(20)).await.is_ok());
    }
}
