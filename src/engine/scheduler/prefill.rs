//! Prefill: admitting the next job as the batch plan decides, running its prompt through
//! the model in chunks within the iteration's token budget, and, once the prompt is in its
//! slot, either answering a scored continuation or moving the prompt's samples into the
//! decoding batch (forks copy its KV rows) and sampling their first tokens.
//!
//! Not here: the admission and budget policy (`engine/batch_plan.rs`), slot choice
//! (`placement`), sampling a row (`sample`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use super::super::batch_plan::{run_cost, Chunk, JobId, PrefillDecision};
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
        // `can_join` reads the slot plan: it must know every slot freed since it last looked.
        self.sync_slots();
        let mut budget = self.limits.prefill_budget;
        while let Some(decision) = self.plan.next_prefill(budget, |id| self.can_join(id)) {
            match decision {
                PrefillDecision::Admit(id) => self.admit(id),
                PrefillDecision::Run(chunks) => {
                    budget -= run_cost(&chunks).min(budget);
                    self.run_chunks(&chunks);
                }
            }
        }
    }

    /// Whether the front job `id` can join the prefill group as one more row of its step:
    /// the same kind of job as the group (their steps want the same logits), no cached
    /// prefix to reuse (every row of a multi-token step starts at position 0), and the slot
    /// right after the group's last one is free (or, with no slot free, an entry to evict),
    /// since a step runs over consecutive slots.
    fn can_join(&self, id: JobId) -> bool {
        let (Some(front), Some(last)) = (self.waiting.front(), self.prefill.last()) else {
            return false;
        };
        front.id == id
            && front.job.logits_wanted() == last.job.logits_wanted()
            && self.slots.cached_prefix_len(
                &front.tokens,
                self.reusable_prefix(&front.job, &front.tokens),
            ) == 0
            && self.slots.can_claim(SlotId(last.slot.id().0 + 1))
    }

    /// Runs the chunks the plan named: a prefill group's whole prompts in one model step,
    /// or the one prefilling job's next chunk.
    fn run_chunks(&mut self, chunks: &[Chunk]) {
        let mut members = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            match self.prefill.iter().position(|p| p.id == chunk.job) {
                Some(i) => members.push((self.prefill.remove(i), chunk.range.end)),
                // Cannot happen (the plan runs only the jobs it admitted).
                None => self.plan.failed(chunk.job),
            }
        }
        // Cannot happen either (the plan runs every prefilling job); both sides drop what
        // they hold so they agree again.
        for p in std::mem::take(&mut self.prefill) {
            let error = "a prefilling job the batch plan does not run";
            self.plan.failed(p.id);
            fail_job(p.job, EngineError::Internal(error.into()));
        }
        if members.len() == 1 {
            if let Some((p, end)) = members.pop() {
                self.prefill_chunk(p, end);
            }
            return;
        }
        self.prefill_group(members);
    }

    /// A prefill group's whole fresh prompts, in consecutive slots, through the model in
    /// one right-padded step (a failed run is retried once; if it fails again, each prompt
    /// runs alone, so only a prompt that fails by itself fails its request).
    fn prefill_group(&mut self, members: Vec<(Prefill, usize)>) {
        let Some(lo) = members.first().map(|(p, _)| p.slot.id()) else {
            return;
        };
        let consecutive = members.iter().enumerate().all(|(i, (p, end))| {
            p.slot.id().0 == lo.0 + i && p.done == 0 && *end == p.tokens.len()
        });
        let wanted = members[0].0.job.logits_wanted();
        let result = if consecutive {
            let rows: Vec<RowInput<'_>> = members
                .iter()
                .map(|(p, _)| RowInput {
                    past_len: 0,
                    tokens: &p.tokens,
                })
                .collect();
            self.step_retried(lo, &rows, wanted)
        } else {
            // Cannot happen (`can_join` admits only the next slot, fresh and whole).
            Err(EngineError::Internal("a prefill group out of order".into()))
        };
        let Ok(logits) = result else {
            for (p, end) in members {
                self.prefill_chunk(p, end);
            }
            return;
        };
        self.stats.prefill_runs.fetch_add(1, Ordering::Relaxed);
        let v = self.decoder.config().vocab_size;
        let longest = members
            .iter()
            .map(|(p, _)| p.tokens.len())
            .max()
            .unwrap_or(0);
        for (i, (p, end)) in members.into_iter().enumerate() {
            self.stats
                .prefill_tokens
                .fetch_add(end as u64, Ordering::Relaxed);
            let row = match wanted {
                LogitsWanted::Last => &logits[i * v..(i + 1) * v],
                // Row i's positions 0..len of its right-padded `[S, V]` block.
                LogitsWanted::All => &logits[i * longest * v..(i * longest + end) * v],
            };
            self.chunk_ran(p, end, row);
        }
    }

    /// Runs the prefilling job's tokens up to `end` through the model alone (a failed run
    /// is retried once), then finishes the prefill if that was the last chunk.
    fn prefill_chunk(&mut self, p: Prefill, end: usize) {
        let wanted = p.job.logits_wanted();
        let rows = [RowInput {
            past_len: p.done,
            tokens: &p.tokens[p.done..end],
        }];
        let result = self.step_retried(p.slot.id(), &rows, wanted);
        let chunk = end - p.done;
        self.stats
            .prefill_tokens
            .fetch_add(chunk as u64, Ordering::Relaxed);
        self.stats.prefill_runs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(logits) => self.chunk_ran(p, end, &logits),
            Err(e) => {
                self.plan.failed(p.id);
                fail_job(p.job, e);
            }
        }
    }

    /// One prefill step over slots from `lo`; a failed run is retried once (a transient
    /// failure must not fail the request).
    fn step_retried(
        &mut self,
        lo: SlotId,
        rows: &[RowInput<'_>],
        wanted: LogitsWanted,
    ) -> Result<Vec<f32>, EngineError> {
        self.decoder
            .step(&mut self.arena, lo, rows, wanted)
            .or_else(|_| self.decoder.step(&mut self.arena, lo, rows, wanted))
    }

    /// Tokens `p.done..end` of `p` went through the model with these logits (its last
    /// position's, or every position's for a scored continuation): keep the continuation's
    /// log-probs, then finish the prefill or keep the job for its next chunk.
    fn chunk_ran(&mut self, mut p: Prefill, end: usize, logits: &[f32]) {
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
            self.prefill.push(p);
            return;
        }
        self.finish_prefill(p, logits);
    }

    /// Moves the front job, which the batch plan admitted, into prefill in the slot
    /// placement finds for it (a prefill group's next member: the slot after the group's).
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
        let next = self.prefill.last().map(|last| SlotId(last.slot.id().0 + 1));
        // A group member takes the next slot; if that is gone (cannot happen: `can_join`
        // looked just now), it is placed as any prompt and its group runs prompt by prompt.
        let placed = match next.and_then(|next| self.group_slot(next)) {
            Some(slot) => Some((slot, 0)),
            None => self.prefill_slot(&w.job, &w.tokens),
        };
        let Some((slot, done)) = placed else {
            self.plan.failed(w.id);
            fail_job(
                w.job,
                EngineError::Internal("no free slot after a free-slot check".into()),
            );
            return;
        };
        self.plan.admitted(w.id, done);
        self.prefill.push(Prefill {
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
