//! `RewardService`: the cloneable async front of one reward model, shared by every search
//! of a process.
//!
//! One scorer thread owns the model (like the engine's scheduler owns the policy). Searches
//! send their inputs over a channel and await a oneshot reply; each time the thread is free
//! it takes every request already queued (up to [`MAX_BATCH_INPUTS`] inputs) and scores them
//! in ONE `score` call, so concurrent searches share the model's padded batches instead of
//! queueing one call each. Dropping the last handle closes the channel and ends the thread.
//!
//! The queue is bounded ([`MAX_QUEUED_REQUESTS`]): a full queue answers
//! [`ServiceError::Overloaded`] at once instead of growing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::{RewardError, RewardInput, RewardModel, RowError};
use crate::liveness::{panic_message, Liveness};

/// Inputs one scorer call gathers from queued requests before it runs (a single larger
/// request still runs whole, in one call).
pub const MAX_BATCH_INPUTS: usize = 64;

/// Requests waiting for the scorer before `score` answers [`ServiceError::Overloaded`].
pub const MAX_QUEUED_REQUESTS: usize = 4096;

/// Why a [`RewardService`] request got no scores.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// The model failed a whole call; every request in that call gets the same error,
    /// hence the `Arc`.
    #[error("reward model failed: {0}")]
    Model(Arc<RewardError>),
    #[error("the reward scorer has stopped")]
    Stopped,
    /// The scorer thread died (the model panicked); every queued request failed with this
    /// and every later one gets it at once.
    #[error("the reward model's scorer thread died: {reason}")]
    Died { reason: String },
    #[error("the reward model returned {got} scores for {expected} inputs")]
    Count { expected: usize, got: usize },
    #[error("the reward scorer is overloaded ({limit} requests queued); retry later")]
    Overloaded { limit: usize },
}

/// Histogram of the inputs per scorer call, recorded through the `metrics` facade (a no-op
/// unless a recorder is installed, as `tpo serve` does).
pub const RM_BATCH_SIZE_METRIC: &str = "tpo_rm_batch_size";

/// A [`RewardInput`] that owns its text, so it can cross to the scorer thread.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRewardInput {
    pub prompt: String,
    pub response: String,
    pub reference: Option<String>,
}

type Scores = Vec<Result<f32, RowError>>;
type Reply = Result<Scores, ServiceError>;

struct Job {
    inputs: Vec<OwnedRewardInput>,
    reply: oneshot::Sender<Reply>,
}

/// Counters of the scorer thread, for reports and tests.
#[derive(Debug, Default)]
pub struct RewardServiceStats {
    /// `score` calls made on the model.
    pub calls: AtomicU64,
    /// Requests answered (several may share a call).
    pub requests: AtomicU64,
    /// Inputs scored.
    pub inputs: AtomicU64,
    /// Nanoseconds the model spent in `score` calls.
    pub busy_nanos: AtomicU64,
    /// Requests skipped unscored because their caller was gone.
    pub skipped: AtomicU64,
}

/// Reward-service counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct RewardSnapshot {
    pub calls: u64,
    pub requests: u64,
    pub inputs: u64,
    pub busy_nanos: u64,
}

impl RewardServiceStats {
    /// The cumulative counters now.
    pub fn snapshot(&self) -> RewardSnapshot {
        let s = self;
        RewardSnapshot {
            calls: s.calls.load(Ordering::Relaxed),
            requests: s.requests.load(Ordering::Relaxed),
            inputs: s.inputs.load(Ordering::Relaxed),
            busy_nanos: s.busy_nanos.load(Ordering::Relaxed),
        }
    }
}

impl RewardSnapshot {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &RewardSnapshot) -> RewardSnapshot {
        RewardSnapshot {
            calls: self.calls.saturating_sub(before.calls),
            requests: self.requests.saturating_sub(before.requests),
            inputs: self.inputs.saturating_sub(before.inputs),
            busy_nanos: self.busy_nanos.saturating_sub(before.busy_nanos),
        }
    }
}

/// Cloneable handle to the scorer thread of one reward model.
#[derive(Clone)]
pub struct RewardService {
    jobs: Sender<Job>,
    name: Arc<str>,
    stats: Arc<RewardServiceStats>,
    liveness: Liveness,
    needs_reference: bool,
    load_report: Option<super::LoadReport>,
}

fn stopped(liveness: &Liveness) -> ServiceError {
    match liveness.dead_reason() {
        Some(reason) => ServiceError::Died { reason },
        None => ServiceError::Stopped,
    }
}

impl RewardService {
    /// Moves `model` onto its own scorer thread.
    pub fn start(model: Box<dyn RewardModel>) -> Result<Self, RewardError> {
        let name: Arc<str> = Arc::from(model.name());
        let needs_reference = model.needs_reference();
        let load_report = model.load_report().cloned();
        let stats = Arc::new(RewardServiceStats::default());
        let (tx, rx) = crossbeam_channel::bounded(MAX_QUEUED_REQUESTS);
        let thread_stats = Arc::clone(&stats);
        let liveness = Liveness::new();
        let thread_liveness = liveness.clone();
        std::thread::Builder::new()
            .name("tpo-rewards".into())
            .spawn(move || serve(model, rx, &thread_stats, &thread_liveness))
            .map_err(|e| {
                RewardError::Internal(format!("spawning the reward scorer thread: {e}"))
            })?;
        Ok(Self {
            jobs: tx,
            name,
            stats,
            liveness,
            needs_reference,
            load_report,
        })
    }

    /// The reward model's name, for traces.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn stats(&self) -> &RewardServiceStats {
        &self.stats
    }

    /// How the model loaded from its folder (see [`super::RewardModel::load_report`]).
    pub fn load_report(&self) -> Option<&super::LoadReport> {
        self.load_report.as_ref()
    }

    /// Whether the model scores only inputs with a reference answer.
    pub fn needs_reference(&self) -> bool {
        self.needs_reference
    }

    /// Why the scorer thread died, or `None` while it runs.
    pub fn dead_reason(&self) -> Option<String> {
        self.liveness.dead_reason()
    }

    /// One result per input, in order; a row the model cannot score gets its own error.
    pub async fn score(&self, inputs: Vec<OwnedRewardInput>) -> Result<Scores, ServiceError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.jobs
            .try_send(Job { inputs, reply })
            .map_err(|e| match e {
                crossbeam_channel::TrySendError::Full(_) => ServiceError::Overloaded {
                    limit: MAX_QUEUED_REQUESTS,
                },
                crossbeam_channel::TrySendError::Disconnected(_) => stopped(&self.liveness),
            })?;
        rx.await.map_err(|_| stopped(&self.liveness))?
    }
}

/// The scorer thread: block for one request, take whatever else is queued, score it all in
/// one call, answer each request with its own slice. A request whose caller is gone (its
/// reply channel closed: a dropped search, a client that hung up) is skipped unscored. A
/// panic in the model marks the service dead, fails the batch and everything queued, and
/// ends the thread.
fn serve(
    model: Box<dyn RewardModel>,
    jobs: Receiver<Job>,
    stats: &RewardServiceStats,
    liveness: &Liveness,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::new();
        let mut queued = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if job.reply.is_closed() {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            } else {
                queued += job.inputs.len();
                batch.push(job);
            }
            if queued < MAX_BATCH_INPUTS {
                next = jobs.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let rows: Vec<RewardInput<'_>> = batch
            .iter()
            .flat_map(|job| job.inputs.iter())
            .map(|i| RewardInput {
                prompt: &i.prompt,
                response: &i.response,
                reference: i.reference.as_deref(),
            })
            .collect();
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.score(&rows)));
        let result = match result {
            Ok(result) => result,
            Err(payload) => {
                let reason = panic_message(payload.as_ref());
                tracing::error!(model = model.name(), %reason, "the reward model panicked; its scorer is dead");
                liveness.mark_dead(reason.clone());
                drop(rows);
                let died = || ServiceError::Died {
                    reason: reason.clone(),
                };
                for job in batch {
                    let _ = job.reply.send(Err(died()));
                }
                while let Ok(job) = jobs.try_recv() {
                    let _ = job.reply.send(Err(died()));
                }
                return;
            }
        };
        stats
            .busy_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        stats.calls.fetch_add(1, Ordering::Relaxed);
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.inputs.fetch_add(rows.len() as u64, Ordering::Relaxed);
        metrics::histogram!(RM_BATCH_SIZE_METRIC).record(rows.len() as f64);
        drop(rows);
        match result {
            Ok(scores) if scores.len() == queued => {
                let mut scores = scores.into_iter();
                for job in batch {
                    let mine: Scores = scores.by_ref().take(job.inputs.len()).collect();
                    // A search that gave up (dropped its future) no longer listens.
                    let _ = job.reply.send(Ok(mine));
                }
            }
            Ok(scores) => {
                for job in batch {
                    let _ = job.reply.send(Err(ServiceError::Count {
                        expected: queued,
                        got: scores.len(),
                    }));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for job in batch {
                    let _ = job.reply.send(Err(ServiceError::Model(Arc::clone(&e))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A stand-in model (the real ones are exercised in tests/search.rs): reward = response
    /// length, "" is a row error; it records the size of every call, and its first call
    /// signals `entered` and waits for `gate` so the test can queue requests behind it.
    struct LengthModel {
        calls: Arc<Mutex<Vec<usize>>>,
        entered: std::sync::mpsc::Sender<()>,
        gate: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl RewardModel for LengthModel {
        fn name(&self) -> &str {
            "length"
        }

        fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Scores, RewardError> {
            if let Some(gate) = self.gate.lock().unwrap().take() {
                let _ = self.entered.send(());
                let _ = gate.recv();
            }
            self.calls.lock().unwrap().push(inputs.len());
            Ok(inputs
                .iter()
                .map(|i| {
                    if i.response.is_empty() {
                        Err(RowError::Empty)
                    } else {
                        Ok(i.response.len() as f32)
                    }
                })
                .collect())
        }
    }

    fn input(response: &str) -> OwnedRewardInput {
        OwnedRewardInput {
            prompt: "q".into(),
            response: response.into(),
            reference: None,
        }
    }

    /// A service on a [`LengthModel`] whose first call waits at a gate, and a runtime.
    struct Gated {
        service: RewardService,
        calls: Arc<Mutex<Vec<usize>>>,
        entered: std::sync::mpsc::Receiver<()>,
        open: std::sync::mpsc::Sender<()>,
        rt: tokio::runtime::Runtime,
    }

    fn gated() -> Gated {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let service = RewardService::start(Box::new(LengthModel {
            calls: Arc::clone(&calls),
            entered: entered_tx,
            gate: Mutex::new(Some(gate)),
        }))
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Gated {
            service,
            calls,
            entered,
            open,
            rt,
        }
    }

    #[test]
    fn requests_queued_during_a_call_share_the_next_call_and_each_gets_its_own_scores() {
        let g = gated();
        let (a, b, c) = g.rt.block_on(async {
            let mut first = Box::pin(g.service.score(vec![input("a")]));
            assert!(futures::poll!(&mut first).is_pending());
            // The scorer is now inside its first call; queue two requests behind it.
            g.entered.recv().unwrap();
            let mut second = Box::pin(g.service.score(vec![input("bb"), input("")]));
            let mut third = Box::pin(g.service.score(vec![input("cccc")]));
            assert!(futures::poll!(&mut second).is_pending());
            assert!(futures::poll!(&mut third).is_pending());
            g.open.send(()).unwrap();
            (first.await, second.await, third.await)
        });
        assert_eq!(a.unwrap(), vec![Ok(1.0)]);
        assert_eq!(b.unwrap(), vec![Ok(2.0), Err(RowError::Empty)]);
        assert_eq!(c.unwrap(), vec![Ok(4.0)]);
        assert_eq!(*g.calls.lock().unwrap(), vec![1, 3]);
        assert_eq!(g.service.stats().calls.load(Ordering::Relaxed), 2);
        assert_eq!(g.service.stats().requests.load(Ordering::Relaxed), 3);
    }

    /// Tells the test when the model is dropped (which happens when the scorer thread ends).
    struct DropSignal(std::sync::mpsc::Sender<()>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }

    struct SignallingModel {
        _dropped: DropSignal,
    }

    impl RewardModel for SignallingModel {
        fn name(&self) -> &str {
            "signalling"
        }

        fn score(&self, inputs: &[RewardInput<'_>]) -> Result<Scores, RewardError> {
            Ok(inputs.iter().map(|_| Ok(0.0)).collect())
        }
    }

    #[test]
    fn dropping_every_handle_stops_the_scorer_thread() {
        let (tx, dropped) = std::sync::mpsc::channel();
        let service = RewardService::start(Box::new(SignallingModel {
            _dropped: DropSignal(tx),
        }))
        .unwrap();
        let other = service.clone();
        drop(service);
        assert!(dropped
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(other);
        dropped
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the scorer thread should end and drop the model");
    }

    #[test]
    fn requests_whose_caller_is_gone_are_skipped_unscored() {
        let g = gated();
        let (a, c) = g.rt.block_on(async {
            let mut first = Box::pin(g.service.score(vec![input("a")]));
            assert!(futures::poll!(&mut first).is_pending());
            g.entered.recv().unwrap();
            // 200 inputs queued, then their caller gives up before the scorer is free.
            let mut gone = Box::pin(g.service.score((0..200).map(|_| input("xx")).collect()));
            assert!(futures::poll!(&mut gone).is_pending());
            drop(gone);
            let mut third = Box::pin(g.service.score(vec![input("cccc")]));
            assert!(futures::poll!(&mut third).is_pending());
            g.open.send(()).unwrap();
            (first.await, third.await)
        });
        assert_eq!(a.unwrap(), vec![Ok(1.0)]);
        assert_eq!(c.unwrap(), vec![Ok(4.0)]);
        assert_eq!(
            *g.calls.lock().unwrap(),
            vec![1, 1],
            "the dropped request was scored"
        );
        assert_eq!(g.service.stats().skipped.load(Ordering::Relaxed), 1);
    }

    /// A model that panics on its first call (a bug in a reward model).
    struct PanickingModel;

    impl RewardModel for PanickingModel {
        fn name(&self) -> &str {
            "panicking"
        }

        fn score(&self, _inputs: &[RewardInput<'_>]) -> Result<Scores, RewardError> {
            panic!("injected reward model panic")
        }
    }

    #[test]
    fn a_panicking_model_marks_the_service_dead_and_every_request_names_why() {
        let service = RewardService::start(Box::new(PanickingModel)).unwrap();
        assert_eq!(service.dead_reason(), None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = rt.block_on(service.score(vec![input("a")]));
        match first {
            Err(ServiceError::Died { reason }) => {
                assert!(reason.contains("injected reward model panic"), "{reason}")
            }
            other => panic!("expected Died, got {other:?}"),
        }
        assert!(service
            .dead_reason()
            .is_some_and(|r| r.contains("injected reward model panic")));
        // Later requests fail at once with the same reason, never hang.
        let later = rt.block_on(service.score(vec![input("b")]));
        assert!(matches!(later, Err(ServiceError::Died { .. })), "{later:?}");
    }
}
