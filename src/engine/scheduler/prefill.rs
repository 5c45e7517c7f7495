//! Prefill: admitting the next job as the batch plan decides, running its prompt through
//! the model in chunks within the iteration's token budget, and, once the prompt is in its
//! slot, either answering a scored continuation or moving the prompt's samples into the
//! decoding batch (forks copy its KV rows) and sampling their first tokens.
//!
//! Not here: the admission and budget policy (`engine/batch_plan.rs`), slot choice
//! (`placement`), sampling a row (`sample`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::super::batch_plan::{JobId, PrefillDecision};
use super::super::decoder::{LogitsWanted, RowInput};
use super::super::kv::SlotId;
use super::super::request::ContinuationLogprobs;
use super::super::sampler::log_softmax_at;
use super::super::EngineError;
use super::sequence::{fail_job, Job, Outcome, Prefill, Sequence};
use super::Scheduler;
use crate::model::{IncrementalText, TokenId};

impl Scheduler {
    /// Admits and prefills prompts, as the batch plan decides, until the iteration's token
    /// budget is spent or nothing can start.
    pub(super) fn prefill_step(&mut self) {
        let mut budget = self.limits.prefill_budget;
        while let Some(decision) = self.plan.next_prefill(budget) {
            match decision {
                PrefillDecision::Admit(id) => self.admit(id),
                PrefillDecision::Chunk { job, range } => {
                    budget -= range.len();
                    self.prefill_chunk(job, range.end);
                }
            }
        }
    }

    /// Runs the prefilling job's tokens up to `end` through the model (a failed run is
    /// retried once), then finishes the prefill if that was the last chunk.
    fn prefill_chunk(&mut self, id: JobId, end: usize) {
        let mut p = match self.prefill.take() {
            Some(p) if p.id == id => p,
            other => {
                // Cannot happen (the plan chunks only the job it admitted); both sides
                // drop what they hold so they agree again.
                if let Some(p) = other {
                    let error = "the prefilling job is not the one the batch plan chunks";
                    fail_job(p.job, EngineError::Internal(error.into()));
                }
                self.plan.failed(id);
                return;
            }
        };
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
        self.stats
            .prefill_tokens
            .fetch_add(chunk as u64, Ordering::Relaxed);
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                self.plan.failed(p.id);
                fail_job(p.job, e);
                return;
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
        if !self.plan.chunk_done(p.id, end) {
            self.prefill = Some(p);
            return;
        }
        self.finish_prefill(p, &logits);
    }

    /// Moves the front job, which the batch plan admitted, into prefill in the slot
    /// placement finds for it.
    fn admit(&mut self, id: JobId) {
        self.sync_slots();
        debug_assert_eq!(self.plan.held(), self.slots.held(), "held slots disagree");
        debug_assert_eq!(
            self.plan.available(),
            self.slots.free() + self.slots.cached()
        );
        let Some(w) = self.waiting.pop_front() else {
            self.plan.failed(id);
            return;
        };
        debug_assert_eq!(w.id, id, "the plan's queue and the payloads' must agree");
        let Some((slot, done)) = self.prefill_slot(&w.job, &w.tokens) else {
            self.plan.failed(w.id);
            fail_job(
                w.job,
                EngineError::Internal("no free slot after a free-slot check".into()),
            );
            return;
        };
        self.plan.admitted(w.id, done);
        self.prefill = Some(Prefill {
            id: w.id,
            job: w.job,
            slot,
            tokens: w.tokens,
            done,
        });
    }

    /// The prompt of `p` is in its slot: a scored continuation is answered (its rows stay
    /// cached); a generation's samples join the batch at the positions the plan gives them
    /// and sample their first tokens.
    pub(super) fn finish_prefill(&mut self, p: Prefill, last_logits: &[f32]) {
        let id = p.id;
        match p.job {
            Job::Logprobs {
                reply, logprobs, ..
            } => {
                // Every token of prompt + continuation now has its KV rows in the slot.
                self.plan.prefilled(id);
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
                                self.plan.prefilled(id);
                                group.fail(e);
                                return;
                            }
                            // The prompt's rows stay cached (for requests with the same
                            // prompt while this one decodes) and are evictable by the forks.
                            let prefilled = std::mem::replace(&mut slot, t);
                            self.cache_insert(prefilled, p.tokens.clone());
                        }
                        None => {
                            self.plan.prefilled(id);
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
                        self.plan.prefilled(id);
                        group.fail(EngineError::Internal("no slot for a fork".into()));
                        return;
                    };
                    if let Err(e) = self.arena.copy_prefix(slots[0].id(), fork.id(), prompt_len) {
                        self.plan.prefilled(id);
                        group.fail(e);
                        return;
                    }
                    slots.push(fork);
                }
                let positions = self.plan.join(id);
                debug_assert_eq!(positions, target.0..target.0 + n);
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
}
