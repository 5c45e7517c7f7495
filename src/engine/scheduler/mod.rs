//! The scheduler thread: owns the decoder session and the KV arena, and interleaves every
//! request in one continuous batch.
//!
//! One iteration:
//! 1. take new commands from the channel (block only when there is nothing to do);
//! 2. drop cancelled work (a caller dropped its stream): its slots are free for this step;
//! 3. prefill, up to `prefill_budget` prompt tokens: prompts are admitted in arrival order
//!    when enough slots are free for all of their samples (otherwise they wait — the arena
//!    never over-allocates); a long prompt is prefilled alone, in chunks; whole fresh
//!    prompts that arrive together run as one prefill group, a single right-padded model
//!    step over consecutive slots (the batch plan says when);
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
//!
//! Rooms: `mod.rs` (the loop: receive, cancel, prefill, decode), `stats` (published
//! counters), `sequence` (per-request and per-sample state), `prefill`, `decode`, `sample`
//! (a sampled token's consequences), `placement` (slots and the prefix cache), `faults`
//! (test hooks, the `fault-injection` feature only). The admission, budget and batch
//! position policy is a pure state machine outside the loop, `engine/batch_plan.rs`, and so
//! is the slot and prefix-cache placement policy, `engine/slot_plan.rs`; `placement` carries
//! its decisions out on the arena.

mod decode;
#[cfg(feature = "fault-injection")]
mod faults;
mod placement;
mod prefill;
mod sample;
mod sequence;
mod stats;

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};

use super::batch_plan::{BatchPlan, JobId};
use super::decoder::Decoder;
use super::device_sampling::DeviceSampling;
use super::kv::KvArena;
use super::kv::{Slot, SlotId};
use super::request::{Command, GenerateRequest, SampleOutput};
use super::sampler::Sampler;
use super::slot_plan::SlotPlan;
use super::EngineError;
use crate::liveness::{panic_message, Liveness};
use crate::model::{TokenId, Tokenizer};
use sequence::{fail_job, Group, Job, Prefill, Sequence, Waiting};
pub use stats::{EngineStats, StatsSnapshot};

/// Scheduler limits.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerLimits {
    /// Prompt tokens prefilled per iteration before the decode step.
    pub prefill_budget: usize,
    /// Keep finished sequences' KV rows for later prompts that start with their tokens.
    pub prefix_cache: bool,
    /// Reuse only KV rows that multi-token steps computed (a policy whose one-token steps
    /// compute a position differently, `PolicyCheck::one_token_steps_differ`): the cache
    /// keeps a finished sequence's prompt rows, not its decoded ones; a cached prompt
    /// leaves at least 2 tokens to prefill; and no prompt chunk is a single token. Then an
    /// answer is the same whether its prompt came from the cache or was prefilled fresh.
    pub multi_token_rows_only: bool,
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
    /// Admission, prefill budget and batch positions (the policy; ids and counts only).
    plan: BatchPlan,
    /// The id of the next job submitted.
    next_job: u64,
    /// The payloads of the plan's queue, in the same order.
    waiting: VecDeque<Waiting>,
    /// The prompts being prefilled, in admission order (several: a prefill group).
    prefill: Vec<Prefill>,
    decoding: Vec<Sequence>,
    /// Which slot holds what, and the prefix cache's entries (the placement policy).
    slots: SlotPlan,
    /// The handles of the slots the plan holds as cache entries, by id.
    cached: HashMap<SlotId, Slot>,
    /// Results waiting for `flush_finished`.
    finished: Vec<(Rc<Group>, SampleOutput)>,
    /// A row of NaN, for the logits-poisoning test hook.
    #[cfg(feature = "fault-injection")]
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
        // A chunk that stops one short of leaving a single token still runs 2 with a
        // budget of 3; below that the plan keeps 1-token chunks.
        let min_chunk = if limits.multi_token_rows_only && limits.prefill_budget >= 3 {
            2
        } else {
            1
        };
        let plan = BatchPlan::new(arena.slots()).with_min_chunk(min_chunk);
        let slots = SlotPlan::new(arena.slots(), limits.prefix_cache);
        Self {
            decoder,
            arena,
            sampler: Sampler::default(),
            tokenizer,
            commands,
            stats,
            limits,
            eos,
            plan,
            next_job: 0,
            waiting: VecDeque::new(),
            prefill: Vec::new(),
            decoding: Vec::new(),
            slots,
            cached: HashMap::new(),
            finished: Vec::new(),
            #[cfg(feature = "fault-injection")]
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
            let idle = self.plan.is_idle();
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
        for p in self.prefill.drain(..) {
            fail_job(p.job, died());
        }
        for w in self.waiting.drain(..) {
            fail_job(w.job, died());
        }
        self.plan.clear();
        // Commands already sent but not yet received fail too; one sent after this drain
        // is failed by its sender (`request::fail_orphans`, which pairs with this fence).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        while let Ok(cmd) = self.commands.try_recv() {
            cmd.fail(died());
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
            .store(self.plan.decoding() as u64, Ordering::Relaxed);
        s.waiting
            .store(self.plan.waiting() as u64, Ordering::Relaxed);
        let cached = self.slots.cached();
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
                self.queue(Job::Generate { group, n }, prompt);
            }
            Command::ClearPrefixCache => self.clear_cache(),
            Command::Logprobs {
                prompt,
                continuation,
                reply,
            } => {
                let prompt_len = prompt.len();
                let mut tokens = prompt;
                tokens.extend_from_slice(&continuation);
                let job = Job::Logprobs {
                    prompt_len,
                    reply,
                    logprobs: Vec::with_capacity(continuation.len()),
                };
                self.queue(job, tokens);
            }
        }
    }

    /// Queues `job` (prefilling `tokens`) behind every job submitted before it.
    fn queue(&mut self, job: Job, tokens: Vec<TokenId>) {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.plan.submit(id, job.slots_needed(), tokens.len());
        self.waiting.push_back(Waiting { id, job, tokens });
    }

    fn drop_cancelled(&mut self) {
        let gone: Vec<JobId> = self
            .waiting
            .iter()
            .filter(|w| w.job.cancelled())
            .map(|w| w.id)
            .chain(
                self.prefill
                    .iter()
                    .filter(|p| p.job.cancelled())
                    .map(|p| p.id),
            )
            .collect();
        if !gone.is_empty() {
            self.waiting.retain(|w| !gone.contains(&w.id));
            self.prefill.retain(|p| !gone.contains(&p.id));
            self.plan.cancel_queued(|id| gone.contains(&id));
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
}
