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

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, TryRecvError};
use tokio::sync::mpsc::UnboundedSender;

use super::decoder::{Decoder, LogitsWanted, RowInput};
use super::kv::{KvArena, Slot, SlotId};
use super::request::{
    Command, ContinuationLogprobs, FinishReason, GenerateRequest, GenerationEvent, SampleOutput,
};
use super::sampler::{log_softmax_at, Sampled, Sampler, SamplingParams, SequenceRng};
use super::EngineError;
use crate::model::{TokenId, Tokenizer};

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
}

/// A request's shared state, referenced by each of its samples.
struct Group {
    params: SamplingParams,
    events: UnboundedSender<GenerationEvent>,
    submitted: Instant,
    prompt_len: usize,
}

impl Group {
    fn cancelled(&self) -> bool {
        self.events.is_closed()
    }
}

/// A sample being decoded.
struct Sequence {
    slot: Slot,
    group: Rc<Group>,
    index: usize,
    rng: SequenceRng,
    /// Tokens cached in the slot.
    len: usize,
    /// Sampled but not yet fed to the model.
    next_input: TokenId,
    tokens: Vec<TokenId>,
    logprobs: Vec<f32>,
    first_token_at: Option<std::time::Duration>,
    /// Byte offset in the decoded answer where a stop string matched.
    stop_at: Option<usize>,
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
    /// Results waiting for `flush_finished`.
    finished: Vec<(Rc<Group>, SampleOutput)>,
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
            finished: Vec::new(),
            disconnected: false,
        }
    }

    /// Runs until every `Engine` handle is dropped and all work is done.
    pub(crate) fn run(mut self) {
        loop {
            let idle =
                self.waiting.is_empty() && self.prefill.is_none() && self.decoding.is_empty();
            if idle && self.disconnected {
                return;
            }
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
    }

    fn publish_gauges(&self) {
        let s = &self.stats;
        s.running
            .store(self.decoding.len() as u64, Ordering::Relaxed);
        s.waiting
            .store(self.waiting.len() as u64, Ordering::Relaxed);
        let used = self.arena.slots() - self.arena.free_slots();
        s.kv_slots_used.store(used as u64, Ordering::Relaxed);
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
                });
                self.waiting.push_back(Waiting {
                    job: Job::Generate { group, n },
                    tokens: prompt,
                });
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
                self.remove_decoding(i);
            } else {
                i += 1;
            }
        }
    }

    /// Removes decoding sequence `i`, moving the last one into its slot.
    fn remove_decoding(&mut self, i: usize) -> Sequence {
        let mut removed = self.decoding.swap_remove(i);
        if i < self.decoding.len() {
            let moved = &mut self.decoding[i];
            // `removed` still holds slot i; the moved sequence's rows go there and the two
            // handles swap, so the old last slot is the one returned to the arena.
            if let Err(e) = self
                .arena
                .copy_prefix(moved.slot.id(), removed.slot.id(), moved.len)
            {
                // Cannot happen (lengths are checked on admission); fail loudly in the stream.
                let _ = moved
                    .group
                    .events
                    .send(GenerationEvent::Failed(EngineError::Internal(
                        e.to_string(),
                    )));
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
            let result = self
                .decoder
                .step(&mut self.arena, p.slot.id(), &rows, wanted);
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
        if self.arena.free_slots() < front.job.slots_needed() {
            return false;
        }
        let Some(w) = self.waiting.pop_front() else {
            return false;
        };
        let Some(slot) = self.arena.allocate() else {
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
            done: 0,
        });
        true
    }

    fn finish_prefill(&mut self, p: Prefill, last_logits: &[f32]) {
        match p.job {
            Job::Logprobs {
                reply, logprobs, ..
            } => {
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
                    match self.arena.take(target) {
                        Some(t) => {
                            if let Err(e) = self.arena.copy_prefix(slot.id(), t.id(), prompt_len) {
                                fail_group(&group, e);
                                return;
                            }
                            slot = t;
                        }
                        None => {
                            fail_group(
                                &group,
                                EngineError::Internal(format!("slot {} is not free", target.0)),
                            );
                            return;
                        }
                    }
                }
                let mut slots = vec![slot];
                for _ in 1..n {
                    let Some(fork) = self.arena.allocate() else {
                        fail_group(&group, EngineError::Internal("no slot for a fork".into()));
                        return;
                    };
                    if let Err(e) = self.arena.copy_prefix(slots[0].id(), fork.id(), prompt_len) {
                        fail_group(&group, e);
                        return;
                    }
                    slots.push(fork);
                }
                // Every sample joins the batch first; those done after their first token
                // leave afterwards, highest position first, so swap-removal keeps each
                // remaining sequence in the slot of its position (finishing sample 0 at
                // once would move sample 1 to position B while it holds slot B + 1).
                let mut done = Vec::new();
                for (index, slot) in slots.into_iter().enumerate() {
                    let seq = Sequence {
                        slot,
                        group: Rc::clone(&group),
                        index,
                        rng: group.params.rng(index as u64),
                        len: prompt_len,
                        next_input: 0,
                        tokens: Vec::new(),
                        logprobs: Vec::new(),
                        first_token_at: None,
                        stop_at: None,
                    };
                    self.decoding.push(seq);
                    let i = self.decoding.len() - 1;
                    if let Some(reason) = self.accept_next_token(i, last) {
                        done.push((i, reason));
                    }
                }
                for &(i, reason) in done.iter().rev() {
                    self.finish(i, reason);
                }
            }
        }
    }

    /// Samples row `logits` for decoding sequence `i`; `Some` when the sequence is finished.
    fn accept_next_token(&mut self, i: usize, logits: &[f32]) -> Option<FinishReason> {
        let seq = &mut self.decoding[i];
        let sampled = self
            .sampler
            .sample(logits, &seq.group.params, seq.rng.next_uniform());
        self.accept_sampled(i, sampled)
    }

    /// Appends `sampled` to decoding sequence `i`; `Some` when the sequence is finished.
    fn accept_sampled(&mut self, i: usize, sampled: Sampled) -> Option<FinishReason> {
        let max_len = self.arena.shape().max_len;
        let seq = &mut self.decoding[i];
        let params = &seq.group.params;
        let o = params.options();
        let is_eos = !params.ignore_eos() && self.eos.contains(&sampled.token);
        if is_eos || o.stop_token_ids.contains(&sampled.token) {
            return Some(FinishReason::Stop);
        }
        seq.tokens.push(sampled.token);
        seq.logprobs.push(sampled.logprob);
        seq.next_input = sampled.token;
        if seq.first_token_at.is_none() {
            seq.first_token_at = Some(seq.group.submitted.elapsed());
        }
        let sent = seq.group.events.send(GenerationEvent::Token {
            index: seq.index,
            token: sampled.token,
            logprob: sampled.logprob,
            top: Vec::new(),
        });
        if sent.is_err() {
            // Cancelled: `finish` frees the slot; nothing reaches the closed stream.
            return Some(FinishReason::Stop);
        }
        if !o.stop.is_empty() {
            let text = self.tokenizer.decode(&seq.tokens).unwrap_or_default();
            seq.stop_at = o.stop.iter().filter_map(|s| text.find(s.as_str())).min();
            if seq.stop_at.is_some() {
                return Some(FinishReason::Stop);
            }
        }
        (seq.tokens.len() >= params.max_new_tokens() || seq.len >= max_len)
            .then_some(FinishReason::Length)
    }

    /// Queues sequence `i`'s result (sent by `flush_finished`) and frees its slot.
    fn finish(&mut self, i: usize, finish_reason: FinishReason) {
        let seq = self.remove_decoding(i);
        let elapsed = seq.group.submitted.elapsed();
        let output = SampleOutput {
            index: seq.index,
            prompt_tokens: seq.group.prompt_len,
            time_to_first_token: seq.first_token_at.unwrap_or(elapsed),
            elapsed,
            tokens: seq.tokens,
            logprobs: seq.logprobs,
            top_logprobs: Vec::new(),
            stop_at: seq.stop_at,
            finish_reason,
        };
        self.finished.push((seq.group, output));
    }

    /// Publishes the gauges, then sends the results of sequences finished since the last
    /// flush: whoever receives a result sees every slot freed with it already counted.
    fn flush_finished(&mut self) {
        self.publish_gauges();
        for (group, output) in self.finished.drain(..) {
            let _ = group.events.send(GenerationEvent::Finished(output));
        }
    }

    fn decode_step(&mut self) {
        if self.decoding.is_empty() {
            return;
        }
        let started = Instant::now();
        let inputs: Vec<[TokenId; 1]> = self.decoding.iter().map(|s| [s.next_input]).collect();
        let rows: Vec<RowInput<'_>> = self
            .decoding
            .iter()
            .zip(&inputs)
            .map(|(s, t)| RowInput {
                past_len: s.len,
                tokens: t,
            })
            .collect();
        let result = self
            .decoder
            .step(&mut self.arena, SlotId(0), &rows, LogitsWanted::Last);
        let ort_time = self.decoder.last_run_time();
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let message = e.to_string();
                // Every sequence fails; their slots return as they drop, no rows to move.
                for seq in self.decoding.drain(..) {
                    fail_group(&seq.group, EngineError::Internal(message.clone()));
                }
                return;
            }
        };
        let v = self.decoder.config().vocab_size;
        let b = self.decoding.len();
        // Sampling on this thread: a parallel split measured no faster on 2 cores, where
        // ONNX Runtime's spinning workers compete for the same cores between runs.
        let jobs: Vec<(&SamplingParams, f32)> = self
            .decoding
            .iter_mut()
            .map(|s| {
                let u = s.rng.next_uniform();
                (&s.group.params, u)
            })
            .collect();
        let sampling_started = Instant::now();
        let sampled: Vec<Sampled> = jobs
            .iter()
            .zip(logits.chunks(v))
            .map(|(&(params, u), row)| self.sampler.sample(row, params, u))
            .collect();
        let sampling_time = sampling_started.elapsed();
        let mut finished = Vec::new();
        for (i, s) in sampled.into_iter().enumerate() {
            self.decoding[i].len += 1;
            if let Some(reason) = self.accept_sampled(i, s) {
                finished.push((i, reason));
            }
        }
        // Highest index first so swap-removal never moves a sequence still to be finished.
        for &(i, reason) in finished.iter().rev() {
            self.finish(i, reason);
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

fn fail_group(group: &Group, error: EngineError) {
    let _ = group.events.send(GenerationEvent::Failed(error));
}

fn fail_job(job: Job, error: EngineError) {
    match job {
        Job::Generate { group, .. } => fail_group(&group, error),
        Job::Logprobs { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}
