//! The scheduler thread: owns the decoder session and the KV arena, and interleaves every
//! request in one continuous batch.
//!
//! One iteration:
//! 1. take new commands from the channel (block only when there is nothing to do);
//! 2. drop cancelled work (a caller dropped its stream): its slots are free for this step;
//! 3. prefill, up to `prefill_budget` prompt tokens: at most one prompt is being prefilled
//!    at a time, in chunks, admitted in arrival order when enough slots are free for all of
//!    its samples (otherwise it waits — the arena never over-allocates);
//! 4. ONE decode step for every decoding sequence together, then sample each row, stream
//!    the tokens, and free finished sequences at once.
//!
//! Policy for mixing prefill and decode: chunked prefill with a per-iteration token budget,
//! then a decode step. Running sequences advance every iteration whatever arrives, so a long
//! prompt delays them by at most one chunk; a prompt is never starved because admission is
//! FIFO and slots free up as sequences finish.
//!
//! Slot layout: decoding sequence `i` always lives in slot `i` (the batch is the contiguous
//! prefix `0..B` of the arena, bound with no copy). When a sequence finishes, the last one
//! moves into its slot (its KV rows are copied); a prompt that finishes prefill joins at
//! slot `B`; its `n - 1` forks copy the prompt's KV rows into the next slots.
//!
//! Prefix cache (on unless `SchedulerLimits::prefix_cache` is off): a finished sequence
//! exchanges rows with the last one instead of being overwritten, and its slot becomes a
//! cache entry holding prompt + answer; so do a finished prefill's slot (the prompt) and a
//! scored continuation's. Admission looks up the longest cached prefix of the prompt
//! (keeping the tokens whose logits the job reads), copies those rows into a fresh slot, or
//! takes the entry's slot over when the prompt covers all of it, and prefills only the
//! rest. Entries live only in slots outside the batch; a request that needs a slot evicts
//! the least recently used entry, so admission counts cached slots as available and the
//! arena never holds more than it did without the cache.
//!
//! Failure isolation: a row of logits that cannot be sampled (NaN, `+inf`, all `-inf`)
//! fails its own request only. A model step that fails is retried once; if it fails again,
//! each row runs alone, so only the rows that fail by themselves fail their requests and
//! every other sequence goes on. A failed request's other samples leave the batch at the
//! next iteration, as a cancelled one's do.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Range;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::decoder::{Decoder, LogitsWanted, RowInput};
use super::device_sampling::{DeviceSampling, SKIPPED_ROW};
use super::kv::{KvArena, Slot, SlotId};
use super::prefix_cache::PrefixCache;
use super::request::{
    Command, ContinuationLogprobs, FinishReason, GenerateRequest, GenerationEvent, SampleOutput,
};
use super::sampler::{
    log_softmax_at, InjectedFault, LogitsError, Sampled, Sampler, SamplingParams, SequenceRng,
};
use super::EngineError;
use crate::gpu::RowSampling;
use crate::liveness::{panic_message, Liveness};
use crate::model::{find_stop, IncrementalText, TokenId, Tokenizer};

/// Counters the scheduler publishes (read by benchmarks and `/metrics`).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub decode_steps: AtomicU64,
    pub prefill_tokens: AtomicU64,
    /// Nanoseconds of prefill (admission, prompt chunks through the model, first samples).
    pub prefill_nanos: AtomicU64,
    /// Nanoseconds of decode iterations (step + sampling + streaming).
    pub decode_nanos: AtomicU64,
    /// Nanoseconds inside ONNX Runtime `run` during decode steps.
    pub decode_ort_nanos: AtomicU64,
    /// Nanoseconds sampling the rows of decode steps.
    pub decode_sample_nanos: AtomicU64,
    /// Sum over decode steps of the batch size (mean batch = this / decode_steps).
    pub decode_rows: AtomicU64,
    /// Sequences decoding now.
    pub running: AtomicU64,
    /// Requests waiting for slots now.
    pub waiting: AtomicU64,
    /// KV slots held now (decoding, prefilling or forking).
    pub kv_slots_used: AtomicU64,
    /// KV slots holding prefix-cache entries now (free to evict).
    pub kv_slots_cached: AtomicU64,
    /// Admissions that reused cached KV rows.
    pub prefix_hits: AtomicU64,
    /// Admissions that found no cached prefix (with the cache on).
    pub prefix_misses: AtomicU64,
    /// Prompt tokens whose KV rows came from the cache instead of prefill.
    pub prefix_reused_tokens: AtomicU64,
    /// Cache entries dropped to free a slot.
    pub prefix_evictions: AtomicU64,
}

/// The cumulative counters of [`EngineStats`] at one moment; benches subtract two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub steps: u64,
    pub rows: u64,
    pub nanos: u64,
    pub ort_nanos: u64,
    pub sample_nanos: u64,
    pub prefill_tokens: u64,
    pub prefill_nanos: u64,
    pub prefix_hits: u64,
    pub prefix_misses: u64,
    pub prefix_reused_tokens: u64,
    pub prefix_evictions: u64,
}

impl StatsSnapshot {
    /// What happened between `before` and `self`.
    pub fn since(&self, before: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            steps: self.steps.saturating_sub(before.steps),
            rows: self.rows.saturating_sub(before.rows),
            nanos: self.nanos.saturating_sub(before.nanos),
            ort_nanos: self.ort_nanos.saturating_sub(before.ort_nanos),
            sample_nanos: self.sample_nanos.saturating_sub(before.sample_nanos),
            prefill_tokens: self.prefill_tokens.saturating_sub(before.prefill_tokens),
            prefill_nanos: self.prefill_nanos.saturating_sub(before.prefill_nanos),
            prefix_hits: self.prefix_hits.saturating_sub(before.prefix_hits),
            prefix_misses: self.prefix_misses.saturating_sub(before.prefix_misses),
            prefix_reused_tokens: self
                .prefix_reused_tokens
                .saturating_sub(before.prefix_reused_tokens),
            prefix_evictions: self
                .prefix_evictions
                .saturating_sub(before.prefix_evictions),
        }
    }

    /// Mean sequences per decode step (0 when there was none).
    pub fn mean_decode_batch(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.rows as f64 / self.steps as f64
        }
    }
}

impl EngineStats {
    /// The cumulative counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = self;
        StatsSnapshot {
            steps: s.decode_steps.load(Ordering::Relaxed),
            rows: s.decode_rows.load(Ordering::Relaxed),
            nanos: s.decode_nanos.load(Ordering::Relaxed),
            ort_nanos: s.decode_ort_nanos.load(Ordering::Relaxed),
            sample_nanos: s.decode_sample_nanos.load(Ordering::Relaxed),
            prefill_tokens: s.prefill_tokens.load(Ordering::Relaxed),
            prefill_nanos: s.prefill_nanos.load(Ordering::Relaxed),
            prefix_hits: s.prefix_hits.load(Ordering::Relaxed),
            prefix_misses: s.prefix_misses.load(Ordering::Relaxed),
            prefix_reused_tokens: s.prefix_reused_tokens.load(Ordering::Relaxed),
            prefix_evictions: s.prefix_evictions.load(Ordering::Relaxed),
        }
    }
}

/// A request's shared state, referenced by each of its samples.
struct Group {
    params: SamplingParams,
    /// Bounded by construction: room for every event the request can produce.
    events: Sender<GenerationEvent>,
    submitted: Instant,
    prompt_len: usize,
    /// Set once the request has failed (its stream got the error).
    failed: Cell<bool>,
}

impl Group {
    /// The caller is gone or the request failed: its sequences should leave.
    fn cancelled(&self) -> bool {
        self.failed.get() || self.events.is_closed()
    }

    /// Sends `event`; false when the caller is gone.
    fn send(&self, event: GenerationEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            // The channel holds every event a request can produce, so this means a bug;
            // the request fails rather than the scheduler blocking or growing memory.
            Err(TrySendError::Full(_)) => {
                self.failed.set(true);
                false
            }
        }
    }

    /// Fails the request (once): its stream gets `error`, its sequences leave.
    fn fail(&self, error: EngineError) {
        if !self.failed.replace(true) {
            let _ = self.events.try_send(GenerationEvent::Failed(error));
        }
    }
}

/// Logits of one decode step: the whole batch, or (after a failed batch) each row alone.
enum StepLogits {
    Batch(Vec<f32>),
    Rows(Vec<Result<Vec<f32>, String>>),
}

impl StepLogits {
    /// Whether row `i`'s step succeeded (for device logits, where rows are not on the host).
    fn status(&self, i: usize) -> Result<(), &str> {
        match self {
            StepLogits::Batch(_) => Ok(()),
            StepLogits::Rows(rows) => match rows.get(i) {
                Some(Ok(_)) => Ok(()),
                Some(Err(message)) => Err(message),
                None => Err("the step returned fewer rows than the batch"),
            },
        }
    }

    fn row(&self, i: usize, vocab: usize) -> Result<&[f32], &str> {
        match self {
            StepLogits::Batch(all) => all
                .get(i * vocab..(i + 1) * vocab)
                .ok_or("the step returned fewer rows than the batch"),
            StepLogits::Rows(rows) => match rows.get(i) {
                Some(Ok(row)) => Ok(row),
                Some(Err(message)) => Err(message),
                None => Err("the step returned fewer rows than the batch"),
            },
        }
    }
}

/// What happened to a sequence after a token.
enum Outcome {
    Continue,
    Finished(FinishReason),
    /// The request failed (or was already failed / cancelled): leave without a result.
    Dropped,
}

/// A sample being decoded.
struct Sequence {
    slot: Slot,
    group: Rc<Group>,
    /// The request's prompt (shared by its samples), for the prefix-cache entry.
    prompt: Rc<[TokenId]>,
    index: usize,
    rng: SequenceRng,
    /// Tokens cached in the slot.
    len: usize,
    /// Sampled but not yet fed to the model.
    next_input: TokenId,
    tokens: Vec<TokenId>,
    logprobs: Vec<f32>,
    top_logprobs: Vec<Vec<(TokenId, f32)>>,
    /// The answer's text so far, kept only when the request has stop strings.
    text: IncrementalText,
    first_token_at: Option<std::time::Duration>,
    /// Byte offset in the decoded answer where a stop string matched.
    stop_at: Option<usize>,
}

impl Sequence {
    /// The tokens whose KV rows the slot holds (the last sampled token is never fed).
    fn cached_tokens(&self) -> Vec<TokenId> {
        let mut tokens = Vec::with_capacity(self.len);
        tokens.extend_from_slice(&self.prompt);
        tokens.extend_from_slice(&self.tokens);
        tokens.truncate(self.len);
        tokens
    }

    fn fault(&self) -> Option<InjectedFault> {
        self.group.params.options().inject_fault
    }

    /// Test hook: this sequence's row makes model steps fail.
    fn fails_steps(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::StepErrorAfter(k)) if self.tokens.len() >= k)
    }

    /// Test hook: the scheduler thread panics at this sequence's next token.
    fn panics_scheduler(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::PanicAfter(k)) if self.tokens.len() >= k)
    }

    /// Test hook: this sequence's logits are replaced by NaN.
    fn poisons_logits(&self) -> bool {
        matches!(self.fault(), Some(InjectedFault::NanLogitsAfter(k)) if self.tokens.len() >= k)
    }
}

enum Job {
    Generate {
        group: Rc<Group>,
        n: usize,
    },
    Logprobs {
        prompt_len: usize,
        reply: tokio::sync::oneshot::Sender<Result<ContinuationLogprobs, EngineError>>,
        logprobs: Vec<f32>,
    },
}

impl Job {
    fn cancelled(&self) -> bool {
        match self {
            Job::Generate { group, .. } => group.cancelled(),
            Job::Logprobs { reply, .. } => reply.is_closed(),
        }
    }
    fn slots_needed(&self) -> usize {
        match self {
            Job::Generate { n, .. } => *n,
            Job::Logprobs { .. } => 1,
        }
    }

    /// Tokens of `tokens` a cached prefix may cover: prefill must still compute the logits
    /// the job reads (the last prompt token's for sampling; from the prompt's last token on
    /// for teacher-forced log-probs).
    fn reusable(&self, tokens: &[TokenId]) -> usize {
        match self {
            Job::Generate { .. } => tokens.len().saturating_sub(1),
            Job::Logprobs { prompt_len, .. } => prompt_len.saturating_sub(1),
        }
    }
}

/// Work admitted but not yet prefilled.
struct Waiting {
    job: Job,
    tokens: Vec<TokenId>,
}

/// The prompt being prefilled.
struct Prefill {
    job: Job,
    slot: Slot,
    tokens: Vec<TokenId>,
    done: usize,
}

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLimits {
    /// Prompt tokens prefilled per iteration before the decode step.
    pub prefill_budget: usize,
    /// Keep finished sequences' KV rows for later prompts that start with their tokens.
    pub prefix_cache: bool,
}

pub(crate) struct Scheduler {
    decoder: Decoder,
    arena: KvArena,
    sampler: Sampler,
    tokenizer: Arc<Tokenizer>,
    commands: Receiver<Command>,
    stats: Arc<EngineStats>,
    limits: SchedulerLimits,
    eos: Vec<TokenId>,
    waiting: VecDeque<Waiting>,
    prefill: Option<Prefill>,
    decoding: Vec<Sequence>,
    /// Cached KV entries in slots nobody holds (`None`: the cache is off).
    cache: Option<PrefixCache>,
    /// Results waiting for `flush_finished`.
    finished: Vec<(Rc<Group>, SampleOutput)>,
    /// A row of NaN, for the logits-poisoning test hook.
    poisoned_row: Vec<f32>,
    /// Decode logits on the GPU and the sampling kernel (`None`: logits come to the host).
    device: Option<DeviceSampling>,
    /// One row of device logits copied back for a row the CPU samples.
    host_row: Vec<f32>,
    disconnected: bool,
}

impl Scheduler {
    pub(crate) fn new(
        decoder: Decoder,
        arena: KvArena,
        tokenizer: Arc<Tokenizer>,
        commands: Receiver<Command>,
        stats: Arc<EngineStats>,
        limits: SchedulerLimits,
        device: Option<DeviceSampling>,
    ) -> Self {
        let eos = decoder.config().eos_token_ids.clone();
        Self {
            decoder,
            arena,
            sampler: Sampler::default(),
            tokenizer,
            commands,
            stats,
            limits,
            eos,
            waiting: VecDeque::new(),
            prefill: None,
            decoding: Vec::new(),
            cache: limits.prefix_cache.then(PrefixCache::new),
            finished: Vec::new(),
            poisoned_row: Vec::new(),
            device,
            host_row: Vec::new(),
            disconnected: false,
        }
    }

    /// Runs until every `Engine` handle is dropped and all work is done, or until an
    /// iteration panics: then the engine is marked dead (with the panic's message) before
    /// every request in flight fails with [`EngineError::Died`] and the thread ends, so
    /// nobody waits on a scheduler that is gone and later submissions fail at once.
    pub(crate) fn run(mut self, liveness: &Liveness) {
        loop {
            let idle =
                self.waiting.is_empty() && self.prefill.is_none() && self.decoding.is_empty();
            if idle && self.disconnected {
                return;
            }
            let iteration =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.iteration(idle)));
            if let Err(payload) = iteration {
                let reason = panic_message(payload.as_ref());
                tracing::error!(%reason, "the engine's scheduler thread panicked; the engine is dead");
                liveness.mark_dead(reason.clone());
                self.fail_everything(&reason);
                return;
            }
        }
    }

    /// Fails every request the scheduler holds (after a panic; its state may be torn).
    fn fail_everything(&mut self, reason: &str) {
        let died = || EngineError::Died {
            reason: reason.to_string(),
        };
        for (group, _) in self.finished.drain(..) {
            group.fail(died());
        }
        for seq in self.decoding.drain(..) {
            seq.group.fail(died());
        }
        if let Some(p) = self.prefill.take() {
            fail_job(p.job, died());
        }
        for w in self.waiting.drain(..) {
            fail_job(w.job, died());
        }
        // Commands already sent but not yet received fail too.
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::Generate { events, .. } => {
                    let _ = events.try_send(GenerationEvent::Failed(died()));
                }
                Command::Logprobs { reply, .. } => {
                    let _ = reply.send(Err(died()));
                }
                Command::ClearPrefixCache => {}
            }
        }
    }

    /// One scheduler iteration: receive, drop cancelled work, prefill, decode.
    fn iteration(&mut self, idle: bool) {
        self.receive(idle);
        self.drop_cancelled();
        let prefill_started = Instant::now();
        self.prefill_step();
        self.stats.prefill_nanos.fetch_add(
            prefill_started.elapsed().as_nanos() as u64,
            Ordering::Relaxed,
        );
        self.flush_finished();
        self.decode_step();
        self.flush_finished();
    }

    fn publish_gauges(&self) {
        let s = &self.stats;
        s.running
            .store(self.decoding.len() as u64, Ordering::Relaxed);
        s.waiting
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        let cached = self.cache.as_ref().map_or(0, PrefixCache::len);
        let used = self.arena.slots() - self.arena.free_slots() - cached;
        s.kv_slots_used.store(used as u64, Ordering::Relaxed);
        s.kv_slots_cached.store(cached as u64, Ordering::Relaxed);
    }

    fn receive(&mut self, block: bool) {
        if block && !self.disconnected {
            match self.commands.recv() {
                Ok(cmd) => self.enqueue(cmd),
                Err(_) => self.disconnected = true,
            }
        }
        loop {
            match self.commands.try_recv() {
                Ok(cmd) => self.enqueue(cmd),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    break;
                }
            }
        }
    }

    fn enqueue(&mut self, cmd: Command) {
        match cmd {
            Command::Generate { request, events } => {
                let GenerateRequest { prompt, params, n } = request;
                let group = Rc::new(Group {
                    params,
                    events,
                    submitted: Instant::now(),
                    prompt_len: prompt.len(),
                    failed: Cell::new(false),
                });
                self.waiting.push_back(Waiting {
                    job: Job::Generate { group, n },
                    tokens: prompt,
                });
            }
            Command::ClearPrefixCache => {
                if let Some(cache) = self.cache.as_mut() {
                    while cache.evict_lru(None) {}
                }
            }
            Command::Logprobs {
                prompt,
                continuation,
                reply,
            } => {
                let prompt_len = prompt.len();
                let mut tokens = prompt;
                tokens.extend_from_slice(&continuation);
                self.waiting.push_back(Waiting {
                    job: Job::Logprobs {
                        prompt_len,
                        reply,
                        logprobs: Vec::with_capacity(continuation.len()),
                    },
                    tokens,
                });
            }
        }
    }

    fn drop_cancelled(&mut self) {
        self.waiting.retain(|w| !w.job.cancelled());
        if self.prefill.as_ref().is_some_and(|p| p.job.cancelled()) {
            self.prefill = None;
        }
        let mut i = 0;
        while i < self.decoding.len() {
            if self.decoding[i].group.cancelled() {
                self.remove_decoding(i, false);
            } else {
                i += 1;
            }
        }
    }

    /// Removes decoding sequence `i`, moving the last one into its slot. With `keep_rows`
    /// the two exchange rows, so the removed sequence leaves holding its own (for the
    /// prefix cache); otherwise its rows are overwritten.
    fn remove_decoding(&mut self, i: usize, keep_rows: bool) -> Sequence {
        let mut removed = self.decoding.swap_remove(i);
        if i < self.decoding.len() {
            let moved = &mut self.decoding[i];
            // `removed` still holds slot i; the moved sequence's rows go there and the two
            // handles swap, so the old last slot is the one returned to the arena.
            let (from, to) = (moved.slot.id(), removed.slot.id());
            let result = if keep_rows {
                self.arena.swap_prefix(from, to, moved.len.max(removed.len))
            } else {
                self.arena.copy_prefix(from, to, moved.len)
            };
            if let Err(e) = result {
                // Cannot happen (lengths are checked on admission); fail loudly in the stream.
                moved.group.fail(EngineError::Internal(e.to_string()));
            }
            std::mem::swap(&mut moved.slot, &mut removed.slot);
        }
        removed
    }

    /// Admits and prefills prompts until the iteration's token budget is spent.
    fn prefill_step(&mut self) {
        let mut budget = self.limits.prefill_budget;
        while budget > 0 {
            if self.prefill.is_none() && !self.admit() {
                return;
            }
            let Some(mut p) = self.prefill.take() else {
                return;
            };
            let end = (p.done + budget).min(p.tokens.len());
            let wanted = match p.job {
                Job::Logprobs { .. } => LogitsWanted::All,
                Job::Generate { .. } => LogitsWanted::Last,
            };
            let rows = [RowInput {
                past_len: p.done,
                tokens: &p.tokens[p.done..end],
            }];
            // A failed run is retried once (a transient failure must not fail the request).
            let result = self
                .decoder
                .step(&mut self.arena, p.slot.id(), &rows, wanted)
                .or_else(|_| {
                    self.decoder
                        .step(&mut self.arena, p.slot.id(), &rows, wanted)
                });
            let chunk = end - p.done;
            budget -= chunk;
            self.stats
                .prefill_tokens
                .fetch_add(chunk as u64, Ordering::Relaxed);
            let logits = match result {
                Ok(logits) => logits,
                Err(e) => {
                    fail_job(p.job, e);
                    continue;
                }
            };
            if let Job::Logprobs {
                prompt_len,
                ref mut logprobs,
                ..
            } = p.job
            {
                let v = self.decoder.config().vocab_size;
                for pos in p.done..end {
                    // Row `pos` predicts token `pos + 1`; keep those inside the continuation.
                    if pos + 1 >= prompt_len && pos + 1 < p.tokens.len() {
                        let row = &logits[(pos - p.done) * v..(pos - p.done + 1) * v];
                        logprobs.push(log_softmax_at(row, p.tokens[pos + 1]));
                    }
                }
            }
            p.done = end;
            if p.done < p.tokens.len() {
                self.prefill = Some(p);
                return;
            }
            self.finish_prefill(p, &logits);
        }
    }

    /// Moves the next waiting job into prefill if slots allow; false when nothing starts.
    fn admit(&mut self) -> bool {
        let Some(front) = self.waiting.front() else {
            return false;
        };
        if self.available_slots() < front.job.slots_needed() {
            return false;
        }
        let Some(w) = self.waiting.pop_front() else {
            return false;
        };
        let Some((slot, done)) = self.prefill_slot(&w.job, &w.tokens) else {
            fail_job(
                w.job,
                EngineError::Internal("no free slot after a free-slot check".into()),
            );
            return true;
        };
        self.prefill = Some(Prefill {
            job: w.job,
            slot,
            tokens: w.tokens,
            done,
        });
        true
    }

    fn finish_prefill(&mut self, p: Prefill, last_logits: &[f32]) {
        match p.job {
            Job::Logprobs {
                reply, logprobs, ..
            } => {
                // Every token of prompt + continuation now has its KV rows in the slot.
                self.cache_insert(p.slot, p.tokens);
                let sum = logprobs.iter().sum();
                let _ = reply.send(Ok(ContinuationLogprobs {
                    token_logprobs: logprobs,
                    sum,
                }));
            }
            Job::Generate { group, n } => {
                let v = self.decoder.config().vocab_size;
                let last = &last_logits[last_logits.len() - v..];
                let prompt_len = p.tokens.len();
                let mut slot = p.slot;
                // Join the contiguous decoding prefix at slot B.
                let target = SlotId(self.decoding.len());
                if slot.id() != target {
                    match self.take_slot(target) {
                        Some(t) => {
                            if let Err(e) = self.arena.copy_prefix(slot.id(), t.id(), prompt_len) {
                                group.fail(e);
                                return;
                            }
                            // The prompt's rows stay cached (for requests with the same
                            // prompt while this one decodes) and are evictable by the forks.
                            let prefilled = std::mem::replace(&mut slot, t);
                            self.cache_insert(prefilled, p.tokens.clone());
                        }
                        None => {
                            group.fail(EngineError::Internal(format!(
                                "slot {} is not free",
                                target.0
                            )));
                            return;
                        }
                    }
                }
                let mut slots = vec![slot];
                for k in 1..n {
                    // Fork k decodes at position B + k, so it must live in slot B + k (a
                    // cache entry there moves or is evicted).
                    let Some(fork) = self.take_slot(SlotId(target.0 + k)) else {
                        group.fail(EngineError::Internal("no slot for a fork".into()));
                        return;
                    };
                    if let Err(e) = self.arena.copy_prefix(slots[0].id(), fork.id(), prompt_len) {
                        group.fail(e);
                        return;
                    }
                    slots.push(fork);
                }
                // Every sample joins the batch first; those done after their first token
                // leave afterwards, highest position first, so swap-removal keeps each
                // remaining sequence in the slot of its position (finishing sample 0 at
                // once would move sample 1 to position B while it holds slot B + 1).
                let mut done = Vec::new();
                let prompt: Rc<[TokenId]> = p.tokens.into();
                for (index, slot) in slots.into_iter().enumerate() {
                    let seq = Sequence {
                        slot,
                        group: Rc::clone(&group),
                        prompt: Rc::clone(&prompt),
                        index,
                        rng: group.params.rng(index as u64),
                        len: prompt_len,
                        next_input: 0,
                        tokens: Vec::new(),
                        logprobs: Vec::new(),
                        top_logprobs: Vec::new(),
                        text: IncrementalText::new(),
                        first_token_at: None,
                        stop_at: None,
                    };
                    self.decoding.push(seq);
                    let i = self.decoding.len() - 1;
                    let u = self.decoding[i].rng.next_uniform();
                    match self.sample_row(i, last, u) {
                        Outcome::Continue => {}
                        outcome => done.push((i, outcome)),
                    }
                }
                for (i, outcome) in done.into_iter().rev() {
                    self.settle(i, outcome);
                }
            }
        }
    }

    /// Samples row `logits` for decoding sequence `i` with uniform `u` and takes the token.
    fn sample_row(&mut self, i: usize, logits: &[f32], u: f32) -> Outcome {
        let seq = &self.decoding[i];
        if seq.group.cancelled() {
            return Outcome::Dropped;
        }
        if seq.panics_scheduler() {
            panic!(
                "injected scheduler panic (test hook of sample {})",
                seq.index
            );
        }
        let row = if seq.poisons_logits() {
            self.poisoned_row.clear();
            self.poisoned_row.resize(logits.len(), f32::NAN);
            &self.poisoned_row[..]
        } else {
            logits
        };
        match self.sampler.sample(row, &seq.group.params, u, &seq.tokens) {
            Ok(sampled) => self.accept_sampled(i, sampled),
            Err(e) => {
                seq.group.fail(EngineError::Logits(e));
                Outcome::Dropped
            }
        }
    }

    /// Appends `sampled` to decoding sequence `i`.
    fn accept_sampled(&mut self, i: usize, sampled: Sampled) -> Outcome {
        let max_len = self.arena.shape().max_len;
        let seq = &mut self.decoding[i];
        let params = &seq.group.params;
        let o = params.options();
        let is_eos = !params.ignore_eos() && self.eos.contains(&sampled.token);
        if is_eos || o.stop_token_ids.contains(&sampled.token) {
            return Outcome::Finished(FinishReason::Stop);
        }
        seq.tokens.push(sampled.token);
        seq.logprobs.push(sampled.logprob);
        if o.top_logprobs > 0 {
            seq.top_logprobs.push(sampled.top.clone());
        }
        seq.next_input = sampled.token;
        if seq.first_token_at.is_none() {
            seq.first_token_at = Some(seq.group.submitted.elapsed());
        }
        let sent = seq.group.send(GenerationEvent::Token {
            index: seq.index,
            token: sampled.token,
            logprob: sampled.logprob,
            top: sampled.top,
        });
        if !sent {
            // Cancelled: the slot is freed now; nothing reaches the closed stream.
            return Outcome::Dropped;
        }
        if !o.stop.is_empty() {
            // Only the new text (and the longest stop's reach before it) is searched.
            match seq.text.push(&self.tokenizer, &seq.tokens) {
                Ok(new_from) => {
                    seq.stop_at = find_stop(seq.text.text(), new_from, &o.stop);
                    if seq.stop_at.is_some() {
                        return Outcome::Finished(FinishReason::Stop);
                    }
                }
                Err(e) => {
                    seq.group.fail(EngineError::Model(e));
                    return Outcome::Dropped;
                }
            }
        }
        if seq.tokens.len() >= params.max_new_tokens() || seq.len >= max_len {
            Outcome::Finished(FinishReason::Length)
        } else {
            Outcome::Continue
        }
    }

    /// Ends sequence `i` as `outcome` says (call highest index first).
    fn settle(&mut self, i: usize, outcome: Outcome) {
        match outcome {
            Outcome::Continue => {}
            Outcome::Finished(reason) => self.finish(i, reason),
            Outcome::Dropped => {
                self.remove_decoding(i, false);
            }
        }
    }

    /// Queues sequence `i`'s result (sent by `flush_finished`) and frees its slot.
    fn finish(&mut self, i: usize, finish_reason: FinishReason) {
        let seq = self.remove_decoding(i, self.cache.is_some());
        let elapsed = seq.group.submitted.elapsed();
        let cached = self.cache.is_some().then(|| seq.cached_tokens());
        // The answer cut at its stop string, on the very text the stop was found in (a fresh
        // decode of the tokens may differ from the incremental one, so an offset into this
        // text is not one into that).
        let text = seq
            .stop_at
            .and_then(|at| seq.text.text().get(..at))
            .map(str::to_string);
        let output = SampleOutput {
            index: seq.index,
            text,
            prompt_tokens: seq.group.prompt_len,
            time_to_first_token: seq.first_token_at.unwrap_or(elapsed),
            elapsed,
            tokens: seq.tokens,
            logprobs: seq.logprobs,
            top_logprobs: seq.top_logprobs,
            stop_at: seq.stop_at,
            finish_reason,
        };
        if let Some(tokens) = cached {
            self.cache_insert(seq.slot, tokens);
        }
        self.finished.push((seq.group, output));
    }

    /// Caches `slot`'s rows `0..tokens.len()` (or frees the slot when the cache is off).
    fn cache_insert(&mut self, slot: Slot, tokens: Vec<TokenId>) {
        if let Some(cache) = self.cache.as_mut() {
            cache.insert(slot, tokens);
        }
    }

    /// Free slots plus cached ones (which can be evicted).
    fn available_slots(&self) -> usize {
        self.arena.free_slots() + self.cache.as_ref().map_or(0, PrefixCache::len)
    }

    /// The lowest free slot, evicting the least recently used cache entry (never `keep`)
    /// when none is free.
    fn allocate_slot(&mut self, keep: Option<SlotId>) -> Option<Slot> {
        if let Some(slot) = self.arena.allocate() {
            return Some(slot);
        }
        let cache = self.cache.as_mut()?;
        if !cache.evict_lru(keep) {
            return None;
        }
        self.stats.prefix_evictions.fetch_add(1, Ordering::Relaxed);
        self.arena.allocate()
    }

    /// Slot `id` for the decoding batch. A cache entry there moves to a free slot if there
    /// is one (its rows are copied), else it is evicted.
    fn take_slot(&mut self, id: SlotId) -> Option<Slot> {
        if let Some(slot) = self.arena.take(id) {
            return Some(slot);
        }
        let (slot, tokens) = self.cache.as_mut()?.remove(id)?;
        match self.arena.allocate() {
            Some(moved) if self.arena.copy_prefix(id, moved.id(), tokens.len()).is_ok() => {
                self.cache_insert(moved, tokens);
            }
            _ => {
                self.stats.prefix_evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(slot)
    }

    /// A slot for the prompt `tokens` of `job` and how many of its tokens it already holds:
    /// the longest cached prefix is copied into a fresh slot (the entry stays), or the entry
    /// is taken over when the prompt covers all of it (nothing is lost) or no other slot is
    /// left; with no usable prefix, a fresh slot.
    fn prefill_slot(&mut self, job: &Job, tokens: &[TokenId]) -> Option<(Slot, usize)> {
        let found = self
            .cache
            .as_ref()
            .and_then(|c| c.longest_match(tokens, job.reusable(tokens)));
        let Some(hit) = found else {
            if self.cache.is_some() {
                self.stats.prefix_misses.fetch_add(1, Ordering::Relaxed);
            }
            return Some((self.allocate_slot(None)?, 0));
        };
        self.stats.prefix_hits.fetch_add(1, Ordering::Relaxed);
        self.stats
            .prefix_reused_tokens
            .fetch_add(hit.len as u64, Ordering::Relaxed);
        if hit.len < hit.entry_len {
            if let Some(fresh) = self.allocate_slot(Some(hit.slot)) {
                if self
                    .arena
                    .copy_prefix(hit.slot, fresh.id(), hit.len)
                    .is_ok()
                {
                    if let Some(cache) = self.cache.as_mut() {
                        cache.touch(hit.slot);
                    }
                    return Some((fresh, hit.len));
                }
                return Some((fresh, 0));
            }
        }
        let (slot, _) = self.cache.as_mut()?.remove(hit.slot)?;
        Some((slot, hit.len))
    }

    /// Publishes the gauges, then sends the results of sequences finished since the last
    /// flush: whoever receives a result sees every slot freed with it already counted.
    fn flush_finished(&mut self) {
        self.publish_gauges();
        for (group, output) in self.finished.drain(..) {
            group.send(GenerationEvent::Finished(output));
        }
    }

    /// One model step over decoding sequences `range` (contiguous slots), or its error.
    fn model_step(&mut self, range: Range<usize>) -> Result<Vec<f32>, EngineError> {
        let batch = &self.decoding[range.clone()];
        if let Some(seq) = batch.iter().find(|s| s.fails_steps()) {
            return Err(EngineError::Internal(format!(
                "injected step failure (test hook of sample {})",
                seq.index
            )));
        }
        // The step binds slots `range` as one view: sequence k must hold slot start + k.
        if let Some((k, seq)) = batch
            .iter()
            .enumerate()
            .find(|(k, s)| s.slot.id().0 != range.start + k)
        {
            return Err(EngineError::Internal(format!(
                "decoding sequence {} holds slot {} (the batch must be contiguous)",
                range.start + k,
                seq.slot.id().0
            )));
        }
        let inputs: Vec<[TokenId; 1]> = batch.iter().map(|s| [s.next_input]).collect();
        let rows: Vec<RowInput<'_>> = batch
            .iter()
            .zip(&inputs)
            .map(|(s, t)| RowInput {
                past_len: s.len,
                tokens: t,
            })
            .collect();
        let Some(device) = &self.device else {
            return self.decoder.step(
                &mut self.arena,
                SlotId(range.start),
                &rows,
                LogitsWanted::Last,
            );
        };
        // Row k of the step lands in row range.start + k of the device buffer, which has
        // one row per slot.
        let ptr = device
            .row_ptr(range.start)
            .map_err(|e| EngineError::Internal(format!("device logits: {e}")))?;
        if range.end > self.arena.slots() {
            return Err(EngineError::Internal(format!(
                "decode rows {range:?} exceed the {} slots",
                self.arena.slots()
            )));
        }
        // SAFETY: the buffer has one row of `vocab` float32s per KV slot on the arena's GPU
        // and `range` lies within the slots (checked), so rows range.start.. hold the step's
        // rows; only this thread uses the buffer, and not during the step.
        unsafe {
            self.decoder
                .step_to_device(&mut self.arena, SlotId(range.start), &rows, ptr)
        }?;
        Ok(Vec::new())
    }

    /// Samples on the GPU, in one launch, every row the kernel handles (`Some` at its
    /// index); the other rows (`None`) take the CPU sampler. Empty without device logits.
    fn sample_on_device(
        &self,
        logits: &StepLogits,
        uniforms: &[f32],
    ) -> Vec<Option<Result<Sampled, LogitsError>>> {
        let Some(device) = &self.device else {
            return Vec::new();
        };
        let none = || (0..uniforms.len()).map(|_| None).collect();
        let plan: Vec<Option<RowSampling>> = self
            .decoding
            .iter()
            .zip(uniforms)
            .enumerate()
            .map(|(i, (seq, &u))| {
                let eligible =
                    logits.status(i).is_ok() && !seq.poisons_logits() && !seq.group.cancelled();
                eligible
                    .then(|| RowSampling::for_row(&seq.group.params, u, &seq.tokens))
                    .flatten()
            })
            .collect();
        if plan.iter().all(Option::is_none) {
            return none();
        }
        let rows: Vec<RowSampling> = plan.iter().map(|p| p.unwrap_or(SKIPPED_ROW)).collect();
        match device.sample(&rows) {
            Ok(results) => results
                .into_iter()
                .zip(&plan)
                .map(|(r, p)| p.map(|_| r))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "the sampling kernel failed; sampling this step on the CPU");
                none()
            }
        }
    }

    /// Takes the kernel's result for decoding sequence `i`.
    fn accept_kernel_result(&mut self, i: usize, result: Result<Sampled, LogitsError>) -> Outcome {
        let seq = &self.decoding[i];
        if seq.group.cancelled() {
            return Outcome::Dropped;
        }
        match result {
            Ok(sampled) => self.accept_sampled(i, sampled),
            Err(e) => {
                seq.group.fail(EngineError::Logits(e));
                Outcome::Dropped
            }
        }
    }

    /// Copies decoding sequence `i`'s device logits to the host and samples them there.
    fn sample_device_row_on_cpu(&mut self, i: usize, u: f32) -> Outcome {
        let mut row = std::mem::take(&mut self.host_row);
        let copied = match &self.device {
            Some(device) => device.row_to_host(i, &mut row).map_err(|e| e.to_string()),
            None => Err("no device logits".to_string()),
        };
        let outcome = match copied {
            Ok(()) => self.sample_row(i, &row, u),
            Err(message) => {
                self.decoding[i].group.fail(EngineError::Internal(format!(
                    "copying a logits row from the GPU: {message}"
                )));
                Outcome::Dropped
            }
        };
        self.host_row = row;
        outcome
    }

    /// Logits of every decoding row: the batch step, retried once; then each row alone, so
    /// a failure is pinned on the rows that fail by themselves (re-running a step rewrites
    /// the same KV positions with the same values, so retries are safe).
    fn decode_logits(&mut self) -> StepLogits {
        let b = self.decoding.len();
        let batch = self.model_step(0..b).or_else(|_| self.model_step(0..b));
        match batch {
            Ok(logits) => StepLogits::Batch(logits),
            Err(e) => {
                tracing::warn!(error = %e, rows = b, "decode step failed twice; running its rows one by one");
                StepLogits::Rows(
                    (0..b)
                        .map(|i| self.model_step(i..i + 1).map_err(|e| e.to_string()))
                        .collect(),
                )
            }
        }
    }

    fn decode_step(&mut self) {
        if self.decoding.is_empty() {
            return;
        }
        let started = Instant::now();
        let b = self.decoding.len();
        let logits = self.decode_logits();
        let ort_time = self.decoder.last_run_time();
        let v = self.decoder.config().vocab_size;
        // Sampling on this thread: a parallel split measured no faster on 2 cores, where
        // ONNX Runtime's spinning workers compete for the same cores between runs.
        let sampling_started = Instant::now();
        // Every row draws its uniform, used or not, so its stream never depends on what
        // else happened in the step.
        let uniforms: Vec<f32> = self
            .decoding
            .iter_mut()
            .map(|s| s.rng.next_uniform())
            .collect();
        let on_device = self.device.is_some();
        let mut kernel = self.sample_on_device(&logits, &uniforms);
        let mut ended = Vec::new();
        for (i, &u) in uniforms.iter().enumerate() {
            let row = if on_device {
                logits.status(i).map(|()| &[][..])
            } else {
                logits.row(i, v)
            };
            let outcome = match row {
                Ok(row) => {
                    self.decoding[i].len += 1;
                    match kernel.get_mut(i).and_then(Option::take) {
                        Some(result) => self.accept_kernel_result(i, result),
                        None if on_device => self.sample_device_row_on_cpu(i, u),
                        None => self.sample_row(i, row, u),
                    }
                }
                Err(message) => {
                    self.decoding[i].group.fail(EngineError::Internal(format!(
                        "model step failed: {message}"
                    )));
                    Outcome::Dropped
                }
            };
            if !matches!(outcome, Outcome::Continue) {
                ended.push((i, outcome));
            }
        }
        let sampling_time = sampling_started.elapsed();
        // Highest index first so swap-removal never moves a sequence still to be ended.
        for (i, outcome) in ended.into_iter().rev() {
            self.settle(i, outcome);
        }
        let s = &self.stats;
        s.decode_steps.fetch_add(1, Ordering::Relaxed);
        s.decode_rows.fetch_add(b as u64, Ordering::Relaxed);
        s.decode_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        s.decode_ort_nanos
            .fetch_add(ort_time.as_nanos() as u64, Ordering::Relaxed);
        s.decode_sample_nanos
            .fetch_add(sampling_time.as_nanos() as u64, Ordering::Relaxed);
    }
}

fn fail_job(job: Job, error: EngineError) {
    match job {
        Job::Generate { group, .. } => group.fail(error),
        Job::Logprobs { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}
