//! The batch plan: the scheduler's admission, prefill-budget and batch-position policy as a
//! pure state machine over job ids and counts, so it can be tested without a model.
//!
//! The scheduler (`scheduler/`) feeds it events (a job submitted, cancelled, admitted, a
//! prefill chunk done, a job failed, a prefilled job joining the batch, a sequence leaving)
//! and asks it for decisions (admit the front job, prefill these tokens of this prompt,
//! which decode positions form the batch, which sequence moves into a freed position). The
//! policy, as the scheduler's module doc states it:
//! - FIFO admission: only the front of the queue is ever admitted, and only when enough
//!   slots are available for all of its samples (`slots - held`: free slots and prefix-cache
//!   entries, which can be evicted, both count; a job that does not fit waits, it never
//!   over-allocates and is never skipped by a smaller one behind it);
//! - prompts prefill in chunks within a per-iteration token budget (a chunk never exceeds
//!   what is left of the budget, and the next prompt is admitted only when the previous one
//!   is done), except that whole fresh prompts form a **prefill group** run through the model
//!   in one step: while the prefilling prompts are all fresh (nothing cached) single-slot
//!   jobs, the front job joins them when the scheduler says it can (`can_join`: same kind of
//!   job, no cached prefix, the next slot is there), the group stays within
//!   [`MAX_PREFILL_GROUP`], and the group's padded size (members × longest prompt) fits in
//!   what is left of the budget; a job of several samples can only be a group's last
//!   member;
//! - with a minimum chunk of 2 ([`BatchPlan::with_min_chunk`], for a policy whose
//!   one-token steps compute a position differently from multi-token steps), no prompt
//!   chunk is a single token: a chunk that would leave one token behind stops one short, and
//!   a budget remainder too small for such a chunk waits for the next iteration's budget;
//! - decoding sequence `i` lives in slot `i`: a prefilled job's samples join at positions
//!   `B..B + n`, and when a sequence leaves, the last one moves into its position.
//!
//! What it is NOT: it knows no tokens, tensors, KV rows or sessions. Which slot a prompt
//! gets and which cached prefix it reuses are the slot plan's (`engine/slot_plan.rs`, pure
//! as well), carried out on the KV arena by the scheduler's placement
//! (`scheduler/placement.rs`); the batch plan only counts the slots a job holds. Retries of failed model steps and sampling live in the scheduler too; the plan
//! only hears that a job failed.

use std::collections::VecDeque;
use std::ops::Range;

/// A request as the plan knows it (the scheduler numbers them in arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct JobId(pub u64);

/// A job waiting for admission.
#[derive(Debug, Clone, Copy)]
struct Queued {
    job: JobId,
    /// Slots it holds once decoding (its samples; 1 for a scored continuation).
    slots: usize,
    /// Tokens to prefill (prompt, plus the continuation of a scored one).
    tokens: usize,
}

/// The most prompts one prefill step runs together.
pub(crate) const MAX_PREFILL_GROUP: usize = 16;

/// A job being prefilled: it holds one slot.
#[derive(Debug, Clone, Copy)]
struct Prefilling {
    job: JobId,
    slots: usize,
    /// Tokens whose KV rows the slot holds (from the cache or earlier chunks).
    done: usize,
    tokens: usize,
}

/// What the scheduler should do next within an iteration's prefill budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrefillDecision {
    /// Admit the front job (it fits): place it in a slot (reusing a cached prefix where one
    /// is), then report [`BatchPlan::admitted`] with the tokens already cached, or
    /// [`BatchPlan::failed`].
    Admit(JobId),
    /// Run these chunks of the prefilling jobs through the model (several: a prefill group
    /// of whole fresh prompts, in admission order, for one step), then report
    /// [`BatchPlan::chunk_done`] or [`BatchPlan::failed`] for each.
    Run(Vec<Chunk>),
}

/// `range` of `job`'s tokens, to run through the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) job: JobId,
    pub(crate) range: Range<usize>,
}

/// The budget a run of `chunks` spends: one chunk's tokens, or a group's padded size
/// (members × the longest), which is what one right-padded step computes.
pub(crate) fn run_cost(chunks: &[Chunk]) -> usize {
    match chunks {
        [one] => one.range.len(),
        many => many.len() * many.iter().map(|c| c.range.len()).max().unwrap_or(0),
    }
}

/// The queue, the prefilling job and the decode positions.
#[derive(Debug)]
pub(crate) struct BatchPlan {
    slots: usize,
    /// The fewest tokens a prompt chunk runs (1, or 2: see [`BatchPlan::with_min_chunk`]).
    min_chunk: usize,
    waiting: VecDeque<Queued>,
    /// The prefilling jobs in admission order (more than one only as a prefill group).
    prefilling: Vec<Prefilling>,
    /// The job of the sequence decoding at each position (= slot).
    decoding: Vec<JobId>,
}

impl BatchPlan {
    /// A plan over an arena of `slots` KV slots.
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            slots,
            min_chunk: 1,
            waiting: VecDeque::new(),
            prefilling: Vec::new(),
            decoding: Vec::new(),
        }
    }

    /// The same plan whose prompt chunks run at least `min_chunk` tokens (1 or 2), except a
    /// prompt shorter than that. The scheduler asks for 2 only with a budget of at least 3,
    /// so a chunk that stops one short of leaving a single token still runs 2.
    pub(crate) fn with_min_chunk(mut self, min_chunk: usize) -> Self {
        self.min_chunk = min_chunk.clamp(1, 2);
        self
    }

    /// Whether nothing is queued, prefilling or decoding.
    pub(crate) fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.prefilling.is_empty() && self.decoding.is_empty()
    }

    /// Jobs waiting for admission.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences decoding (the batch is positions `0..decoding()`).
    pub(crate) fn decoding(&self) -> usize {
        self.decoding.len()
    }

    /// Slots held by decoding sequences and the prefilling jobs.
    pub(crate) fn held(&self) -> usize {
        self.decoding.len() + self.prefilling.len()
    }

    /// Slots a job may be admitted into: free ones and prefix-cache entries (evictable).
    pub(crate) fn available(&self) -> usize {
        self.slots.saturating_sub(self.held())
    }

    /// The jobs being prefilled, in admission order.
    #[cfg(test)]
    pub(crate) fn prefilling(&self) -> Vec<JobId> {
        self.prefilling.iter().map(|p| p.job).collect()
    }

    /// Queues `job`, which decodes `slots` sequences after prefilling `tokens` tokens.
    pub(crate) fn submit(&mut self, job: JobId, slots: usize, tokens: usize) {
        self.waiting.push_back(Queued { job, slots, tokens });
    }

    /// Drops every waiting job `cancelled` names, and the prefilling ones it names (their
    /// slots are free again). Decoding sequences leave through [`BatchPlan::leave`].
    pub(crate) fn cancel_queued(&mut self, cancelled: impl Fn(JobId) -> bool) {
        self.waiting.retain(|q| !cancelled(q.job));
        self.prefilling.retain(|p| !cancelled(p.job));
    }

    /// The next step of an iteration's prefill with `budget` tokens left: admit the front
    /// job when nothing is prefilling and it fits, or when it can join the prefill group
    /// (`can_join` is the scheduler's say: same kind of job, no cached prefix, a slot right
    /// after the group's), or run the prefilling jobs' next chunks; `None` when the budget
    /// is spent or nothing can start.
    pub(crate) fn next_prefill(
        &self,
        budget: usize,
        can_join: impl Fn(JobId) -> bool,
    ) -> Option<PrefillDecision> {
        if budget == 0 {
            return None;
        }
        let front = self
            .waiting
            .front()
            .filter(|front| self.available() >= front.slots);
        if self.prefilling.is_empty() {
            return front.map(|front| PrefillDecision::Admit(front.job));
        }
        if let Some(front) = front {
            if self.joins_group(front, budget) && can_join(front.job) {
                return Some(PrefillDecision::Admit(front.job));
            }
        }
        Some(PrefillDecision::Run(match self.prefilling.as_slice() {
            [p] => vec![Chunk {
                job: p.job,
                range: p.done..self.chunk_end(p, budget)?,
            }],
            // A group: every member is whole, and its padded size fits the budget.
            group => group
                .iter()
                .map(|p| Chunk {
                    job: p.job,
                    range: p.done..p.tokens,
                })
                .collect(),
        }))
    }

    /// Where the next chunk of `p` ends with `budget` tokens left: as far as the budget
    /// reaches, but with a minimum chunk of 2 never a chunk of 1 nor one that leaves a
    /// single token behind; `None` when no such chunk fits the budget (the next iteration's
    /// does).
    fn chunk_end(&self, p: &Prefilling, budget: usize) -> Option<usize> {
        let left = p.tokens - p.done;
        let mut take = budget.min(left);
        if self.min_chunk > 1 && left >= self.min_chunk {
            if left - take == 1 {
                take -= 1;
            }
            if take < self.min_chunk {
                return None;
            }
        }
        Some(p.done + take)
    }

    /// Whether `front` may join the prefilling jobs as one more whole fresh prompt of their
    /// step (the scheduler still has its say).
    fn joins_group(&self, front: &Queued, budget: usize) -> bool {
        let members = self.prefilling.len() + 1;
        let longest = self
            .prefilling
            .iter()
            .map(|p| p.tokens)
            .max()
            .unwrap_or(0)
            .max(front.tokens);
        members <= MAX_PREFILL_GROUP
            && self.prefilling.iter().all(|p| p.done == 0 && p.slots == 1)
            && members * longest <= budget
    }

    /// The front job took a slot holding its first `done` tokens already: it is prefilling
    /// (a group member's `done` is 0: the scheduler lets no cached prefix join a group).
    pub(crate) fn admitted(&mut self, job: JobId, done: usize) {
        if self.waiting.front().is_some_and(|q| q.job == job) {
            if let Some(q) = self.waiting.pop_front() {
                self.prefilling.push(Prefilling {
                    job,
                    slots: q.slots,
                    done: done.min(q.tokens),
                    tokens: q.tokens,
                });
            }
        }
    }

    /// The prefilling job's tokens `..end` are in its slot; true when it is fully prefilled
    /// (then it joins the batch with [`BatchPlan::join`] or ends with
    /// [`BatchPlan::prefilled`]).
    pub(crate) fn chunk_done(&mut self, job: JobId, end: usize) -> bool {
        match self.prefilling.iter_mut().find(|p| p.job == job) {
            Some(p) => {
                p.done = end.min(p.tokens);
                p.done == p.tokens
            }
            _ => false,
        }
    }

    /// `job` failed while waiting, being admitted or prefilling: it leaves (its slot too).
    pub(crate) fn failed(&mut self, job: JobId) {
        self.waiting.retain(|q| q.job != job);
        self.prefilling.retain(|p| p.job != job);
    }

    /// The prefilled job ends without decoding (a scored continuation, or one whose samples
    /// could not be placed): its slot is free or cached.
    pub(crate) fn prefilled(&mut self, job: JobId) {
        self.failed(job);
    }

    /// The prefilled job's samples start decoding: the positions (= slots) they take, at
    /// the end of the batch. Empty when `job` is not the prefilling job.
    pub(crate) fn join(&mut self, job: JobId) -> Range<usize> {
        let Some(i) = self.prefilling.iter().position(|p| p.job == job) else {
            return 0..0;
        };
        let p = self.prefilling.remove(i);
        let start = self.decoding.len();
        self.decoding.extend(std::iter::repeat_n(job, p.slots));
        start..self.decoding.len()
    }

    /// The decode batch: positions `0..B`, one row per decoding sequence, in slot order.
    pub(crate) fn decode_batch(&self) -> Range<usize> {
        0..self.decoding.len()
    }

    /// The sequence at `position` leaves (finished, failed or cancelled); returns the
    /// position whose sequence moves into it (the last one), if any.
    pub(crate) fn leave(&mut self, position: usize) -> Option<usize> {
        if position >= self.decoding.len() {
            return None;
        }
        self.decoding.swap_remove(position);
        (position < self.decoding.len()).then_some(self.decoding.len())
    }

    /// Forgets everything (after a scheduler panic every job failed).
    pub(crate) fn clear(&mut self) {
        self.waiting.clear();
        self.prefilling.clear();
        self.decoding.clear();
    }
}

#[cfg(test)]
mod tests;
