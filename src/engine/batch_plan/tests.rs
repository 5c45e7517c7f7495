//! Property tests of the batch plan alone (no model, milliseconds): random interleavings
//! of submissions, cancellations, prefill chunks, failures and finished sequences, driven
//! the way the scheduler drives the plan, against a plain model of what it must hold.
//! Not a test of placement or the prefix cache (see `prefix_cache.rs` and tests/).

use std::collections::{BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

/// One thing that happens between (or during) scheduler iterations.
#[derive(Debug, Clone)]
enum Op {
    /// A request of `samples` sequences and `tokens` prompt tokens arrives.
    Submit { samples: usize, tokens: usize },
    /// The caller of the `k`-th waiting job (mod the queue) goes away.
    CancelWaiting(usize),
    /// The caller of a prefilling job goes away.
    CancelPrefill,
    /// One iteration's prefill with `budget` tokens; `luck` picks what each step does
    /// (cached prefix length, a failed run, a scored job that never decodes).
    Iterate { budget: usize, luck: u64 },
    /// The sequence at position `k` (mod the batch) finishes, fails or is cancelled.
    Leave(usize),
}

fn op(slots: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..=slots, 1usize..80).prop_map(|(samples, tokens)| Op::Submit { samples, tokens }),
        1 => (0usize..8).prop_map(Op::CancelWaiting),
        1 => Just(Op::CancelPrefill),
        4 => (1usize..64, any::<u64>()).prop_map(|(budget, luck)| Op::Iterate { budget, luck }),
        3 => (0usize..16).prop_map(Op::Leave),
    ]
}

/// The scheduler's side, reduced to what the plan must agree with.
struct Driver {
    plan: BatchPlan,
    slots: usize,
    next: u64,
    /// Submitted and not yet admitted, cancelled or failed: (id, samples, tokens).
    queue: Vec<(JobId, usize, usize)>,
    /// Every submission's (samples, tokens).
    submitted: HashMap<JobId, (usize, usize)>,
    /// The prefilling jobs and how many of each one's tokens are in its slot.
    prefill: Vec<(JobId, usize)>,
    /// The job of each decoding position.
    batch: Vec<JobId>,
    /// Jobs admitted, in order.
    admitted: Vec<JobId>,
    /// Jobs that left the queue without admission (cancelled or failed there).
    dropped: BTreeSet<JobId>,
    /// Whether admissions and chunks may fail (not while draining).
    faults: bool,
    /// The plan's minimum prompt chunk (1, or 2: no 1-token chunk, none leaving 1 behind).
    min_chunk: usize,
}

impl Driver {
    fn new(slots: usize, min_chunk: usize) -> Self {
        Self {
            plan: BatchPlan::new(slots).with_min_chunk(min_chunk),
            slots,
            next: 0,
            queue: Vec::new(),
            submitted: HashMap::new(),
            prefill: Vec::new(),
            batch: Vec::new(),
            admitted: Vec::new(),
            dropped: BTreeSet::new(),
            faults: true,
            min_chunk,
        }
    }

    fn check(&self) {
        let held = self.batch.len() + self.prefill.len();
        assert!(held <= self.slots, "{held} slots held of {}", self.slots);
        assert_eq!(self.plan.held(), held, "the plan counts the slots held");
        assert_eq!(self.plan.available() + held, self.slots, "a slot leaked");
        assert_eq!(self.plan.waiting(), self.queue.len());
        assert_eq!(self.plan.decoding(), self.batch.len());
        assert_eq!(self.plan.decode_batch(), 0..self.batch.len());
        let prefilling: Vec<JobId> = self.prefill.iter().map(|p| p.0).collect();
        assert_eq!(self.plan.prefilling(), prefilling);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Submit { samples, tokens } => {
                let id = JobId(self.next);
                self.next += 1;
                self.plan.submit(id, samples, tokens);
                self.queue.push((id, samples, tokens));
                self.submitted.insert(id, (samples, tokens));
            }
            Op::CancelWaiting(k) => {
                if !self.queue.is_empty() {
                    let (id, _, _) = self.queue.remove(k % self.queue.len());
                    self.plan.cancel_queued(|j| j == id);
                    self.dropped.insert(id);
                }
            }
            Op::CancelPrefill => {
                if !self.prefill.is_empty() {
                    let (id, _) = self.prefill.remove(0);
                    self.plan.cancel_queued(|j| j == id);
                }
            }
            Op::Iterate { budget, luck } => self.iterate(budget, luck),
            Op::Leave(k) => self.leave(k),
        }
        self.check();
    }

    fn leave(&mut self, k: usize) {
        if self.batch.is_empty() {
            return;
        }
        let i = k % self.batch.len();
        let moved = self.plan.leave(i);
        self.batch.swap_remove(i);
        // The last sequence moves into the freed position (slot i = sequence i).
        assert_eq!(moved, (i < self.batch.len()).then_some(self.batch.len()));
    }

    /// One iteration's prefill, as `Scheduler::prefill_step` runs it.
    fn iterate(&mut self, budget: usize, mut luck: u64) {
        let mut roll = |n: u64| {
            let r = luck % n;
            luck = (luck / n) ^ luck.rotate_left(17);
            r
        };
        let mut left = budget;
        let mut spent = 0;
        // Whether the scheduler lets the front job join a prefill group this iteration.
        let join_ok = roll(3) != 0;
        while let Some(decision) = self.plan.next_prefill(left, |_| join_ok) {
            match decision {
                PrefillDecision::Admit(id) => {
                    // FIFO: only the front of the queue, and only when it fits.
                    let (front, samples, tokens) = self.queue[0];
                    assert_eq!(id, front, "admission skipped the front of the queue");
                    assert!(
                        self.plan.available() >= samples,
                        "admitted beyond the slots"
                    );
                    if !self.prefill.is_empty() {
                        // It joins a prefill group: whole fresh single-slot prompts before
                        // it, and the group's padded size within what is left.
                        assert!(join_ok, "joined a group the scheduler refused");
                        assert!(self.prefill.len() < MAX_PREFILL_GROUP);
                        assert!(
                            self.prefill
                                .iter()
                                .all(|&(id, done)| done == 0 && self.submitted[&id].0 == 1),
                            "a group behind a cached, chunked or forked prompt"
                        );
                        let longest = self
                            .prefill
                            .iter()
                            .map(|(id, _)| self.submitted[id].1)
                            .max()
                            .unwrap_or(0)
                            .max(tokens);
                        assert!((self.prefill.len() + 1) * longest <= left);
                    }
                    self.queue.remove(0);
                    if self.faults && roll(8) == 0 {
                        // Placement failed: the job fails, the loop goes on.
                        self.plan.failed(id);
                        self.dropped.insert(id);
                        continue;
                    }
                    // A cached prefix covers at most all but the last token; a group's
                    // member never has one.
                    let done = if self.prefill.is_empty() {
                        roll(tokens as u64) as usize
                    } else {
                        0
                    };
                    self.plan.admitted(id, done);
                    self.admitted.push(id);
                    self.prefill.push((id, done));
                }
                PrefillDecision::Run(chunks) => {
                    let named: Vec<JobId> = chunks.iter().map(|c| c.job).collect();
                    let prefilling: Vec<JobId> = self.prefill.iter().map(|p| p.0).collect();
                    assert_eq!(named, prefilling, "a run of every prefilling job, in order");
                    let cost = run_cost(&chunks);
                    assert!(cost > 0 && cost <= left, "a run of {cost} on {left} left");
                    left -= cost;
                    spent += cost;
                    for (chunk, &(id, done)) in chunks.iter().zip(&self.prefill.clone()) {
                        let (samples, tokens) = self.submitted[&id];
                        assert_eq!(chunk.range.start, done, "chunks follow each other");
                        assert!(!chunk.range.is_empty(), "an empty chunk");
                        assert!(chunk.range.end <= tokens);
                        if self.min_chunk > 1 && chunks.len() == 1 && tokens - done >= 2 {
                            assert!(chunk.range.len() >= 2, "a 1-token chunk: {chunk:?}");
                            assert_ne!(tokens - chunk.range.end, 1, "left one token: {chunk:?}");
                        }
                        if chunks.len() > 1 {
                            assert_eq!(chunk.range, 0..tokens, "a group member is whole");
                        }
                        self.prefill.retain(|p| p.0 != id);
                        if self.faults && roll(10) == 0 {
                            self.plan.failed(id);
                            continue;
                        }
                        let complete = self.plan.chunk_done(id, chunk.range.end);
                        assert_eq!(complete, chunk.range.end == tokens);
                        if !complete {
                            assert!(
                                left < self.min_chunk,
                                "a prompt stopped with {left} of the budget left"
                            );
                            self.prefill.push((id, chunk.range.end));
                            continue;
                        }
                        if roll(4) == 0 {
                            // Scored, or its samples could not be placed: it never decodes.
                            self.plan.prefilled(id);
                        } else {
                            let start = self.batch.len();
                            assert_eq!(self.plan.join(id), start..start + samples);
                            self.batch.extend(std::iter::repeat_n(id, samples));
                        }
                    }
                }
            }
            self.check();
        }
        assert!(
            spent <= budget,
            "prefilled {spent} tokens on a budget of {budget}"
        );
        // Between iterations at most one prompt is part-way (a group runs whole).
        assert!(
            self.prefill.len() <= 1,
            "a group left for the next iteration"
        );
        // Nothing that could start was left waiting (with a minimum chunk of 2, a budget of
        // 1 or 2 may not fit the next chunk: 2 tokens, or 2 of 3 would leave one behind).
        let could_run = if self.min_chunk > 1 {
            left > 2
        } else {
            left > 0
        };
        if could_run {
            assert!(self.prefill.is_empty());
            if let Some(&(_, samples, _)) = self.queue.first() {
                assert!(
                    samples > self.plan.available(),
                    "a job that fits was not admitted"
                );
            }
        }
    }

    /// Every sequence finishes and no new work comes: everything queued must be admitted
    /// (no starvation) and every slot must come back (no leak).
    fn drain(&mut self) {
        let waiting: Vec<JobId> = self.queue.iter().map(|q| q.0).collect();
        self.faults = false;
        let mut rounds = 0;
        while !self.plan.is_idle() {
            rounds += 1;
            assert!(rounds < 10_000, "the plan never drained");
            self.apply(&Op::Iterate {
                budget: 32,
                luck: 1,
            });
            while !self.batch.is_empty() {
                self.apply(&Op::Leave(0));
            }
        }
        for id in waiting {
            assert!(self.admitted.contains(&id), "{id:?} starved");
        }
        assert_eq!(self.plan.available(), self.slots);
        assert_eq!(self.plan.held(), 0);
    }

    /// Admissions in submission order (FIFO within the one priority there is).
    fn check_fifo(&self) {
        assert!(
            self.admitted.windows(2).all(|w| w[0] < w[1]),
            "admitted out of order: {:?}",
            self.admitted
        );
        for id in &self.admitted {
            assert!(!self.dropped.contains(id));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_slot_leaks_budgets_hold_fifo_and_no_starvation(
        slots in 1usize..8,
        min_chunk in 1usize..=2,
        ops in (1usize..8).prop_flat_map(|s| prop::collection::vec(op(s), 0..120)),
    ) {
        let mut d = Driver::new(slots, min_chunk);
        for op in &ops {
            // Requests wider than the arena are refused before they reach the scheduler.
            if let Op::Submit { samples, .. } = op {
                if *samples > slots {
                    continue;
                }
            }
            d.apply(op);
        }
        d.check_fifo();
        d.drain();
        d.check_fifo();
    }
}

#[test]
fn a_job_that_does_not_fit_waits_and_blocks_smaller_ones_behind_it() {
    let mut plan = BatchPlan::new(3);
    plan.submit(JobId(0), 2, 4);
    assert_eq!(
        plan.next_prefill(100, |_| true),
        Some(PrefillDecision::Admit(JobId(0)))
    );
    plan.admitted(JobId(0), 0);
    assert_eq!(
        plan.next_prefill(100, |_| true),
        Some(PrefillDecision::Run(vec![Chunk {
            job: JobId(0),
            range: 0..4
        }]))
    );
    assert!(plan.chunk_done(JobId(0), 4));
    assert_eq!(plan.join(JobId(0)), 0..2);
    plan.submit(JobId(1), 2, 4);
    plan.submit(JobId(2), 1, 4);
    // One slot is left: job 1 needs two and job 2 must not overtake it.
    assert_eq!(plan.next_prefill(100, |_| true), None);
    assert_eq!(plan.leave(0), Some(1));
    assert_eq!(
        plan.next_prefill(100, |_| true),
        Some(PrefillDecision::Admit(JobId(1)))
    );
}

#[test]
fn a_long_prompt_is_prefilled_in_chunks_of_the_budget() {
    let mut plan = BatchPlan::new(2);
    plan.submit(JobId(7), 1, 10);
    assert_eq!(
        plan.next_prefill(4, |_| true),
        Some(PrefillDecision::Admit(JobId(7)))
    );
    plan.admitted(JobId(7), 3);
    assert_eq!(
        plan.next_prefill(4, |_| true),
        Some(PrefillDecision::Run(vec![Chunk {
            job: JobId(7),
            range: 3..7
        }]))
    );
    assert!(!plan.chunk_done(JobId(7), 7));
    assert_eq!(
        plan.next_prefill(0, |_| true),
        None,
        "the iteration's budget is spent"
    );
    assert_eq!(
        plan.next_prefill(4, |_| true),
        Some(PrefillDecision::Run(vec![Chunk {
            job: JobId(7),
            range: 7..10
        }]))
    );
    assert!(plan.chunk_done(JobId(7), 10));
    assert_eq!(plan.join(JobId(7)), 0..1);
    assert!(!plan.is_idle());
    assert_eq!(plan.leave(0), None);
    assert!(plan.is_idle());
}

#[test]
fn whole_fresh_prompts_that_arrive_together_prefill_as_one_group() {
    let mut plan = BatchPlan::new(8);
    plan.submit(JobId(0), 1, 10);
    plan.submit(JobId(1), 1, 20);
    plan.submit(JobId(2), 3, 5);
    plan.submit(JobId(3), 1, 5);
    for id in 0..3 {
        assert_eq!(
            plan.next_prefill(64, |_| true),
            Some(PrefillDecision::Admit(JobId(id)))
        );
        plan.admitted(JobId(id), 0);
    }
    // Job 2 has three samples, so it is the group's last member: job 3 waits.
    let whole = |id: u64, tokens: usize| Chunk {
        job: JobId(id),
        range: 0..tokens,
    };
    let run = vec![whole(0, 10), whole(1, 20), whole(2, 5)];
    assert_eq!(run_cost(&run), 60, "three rows padded to the longest");
    assert_eq!(
        plan.next_prefill(64, |_| true),
        Some(PrefillDecision::Run(run))
    );
    for (id, tokens) in [(0, 10), (1, 20), (2, 5)] {
        assert!(plan.chunk_done(JobId(id), tokens));
    }
    assert_eq!(plan.join(JobId(0)), 0..1);
    assert_eq!(plan.join(JobId(1)), 1..2);
    assert_eq!(plan.join(JobId(2)), 2..5);
    assert_eq!(plan.held(), 5);
}

#[test]
fn a_group_stays_within_the_budget_and_behind_a_cached_or_refused_prompt_runs_alone() {
    // The padded size decides: a fourth row of 20 would make 80 > 64.
    let mut plan = BatchPlan::new(8);
    for id in 0..4 {
        plan.submit(JobId(id), 1, 20);
    }
    for id in 0..3 {
        assert_eq!(
            plan.next_prefill(64, |_| true),
            Some(PrefillDecision::Admit(JobId(id)))
        );
        plan.admitted(JobId(id), 0);
    }
    assert!(
        matches!(plan.next_prefill(64, |_| true), Some(PrefillDecision::Run(r)) if r.len() == 3)
    );

    // A prompt that reused a cached prefix runs alone.
    let mut plan = BatchPlan::new(8);
    plan.submit(JobId(0), 1, 20);
    plan.submit(JobId(1), 1, 20);
    assert_eq!(
        plan.next_prefill(64, |_| true),
        Some(PrefillDecision::Admit(JobId(0)))
    );
    plan.admitted(JobId(0), 16);
    assert_eq!(
        plan.next_prefill(64, |_| true),
        Some(PrefillDecision::Run(vec![Chunk {
            job: JobId(0),
            range: 16..20
        }]))
    );

    // The scheduler's refusal (another kind of job, a cached prefix, no next slot) too.
    let mut plan = BatchPlan::new(8);
    plan.submit(JobId(0), 1, 20);
    plan.submit(JobId(1), 1, 20);
    assert_eq!(
        plan.next_prefill(64, |_| false),
        Some(PrefillDecision::Admit(JobId(0)))
    );
    plan.admitted(JobId(0), 0);
    assert_eq!(
        plan.next_prefill(64, |_| false),
        Some(PrefillDecision::Run(vec![Chunk {
            job: JobId(0),
            range: 0..20
        }]))
    );
}

/// The chunks a prompt of `tokens` with `done` cached runs, with a minimum chunk of
/// `min_chunk`, under iteration budgets taken in turn from `budgets` (each iteration runs
/// chunks until its budget is spent or none fits).
fn chunks(min_chunk: usize, tokens: usize, done: usize, budgets: &[usize]) -> Vec<usize> {
    let mut plan = BatchPlan::new(1).with_min_chunk(min_chunk);
    plan.submit(JobId(0), 1, tokens);
    assert_eq!(
        plan.next_prefill(100, |_| true),
        Some(PrefillDecision::Admit(JobId(0)))
    );
    plan.admitted(JobId(0), done);
    let mut sizes = Vec::new();
    for &budget in budgets {
        let mut left = budget;
        while let Some(decision) = plan.next_prefill(left, |_| true) {
            let PrefillDecision::Run(chunks) = decision else {
                panic!("unexpected {decision:?}");
            };
            let range = chunks[0].range.clone();
            left -= range.len();
            sizes.push(range.len());
            if plan.chunk_done(JobId(0), range.end) {
                return sizes;
            }
        }
    }
    sizes
}

#[test]
fn with_a_minimum_chunk_of_two_no_chunk_is_one_token_and_none_leaves_one_behind() {
    // 10 tokens at a budget of 3: 3, 3, then 2 + 2 instead of 3 + 1.
    assert_eq!(chunks(2, 10, 0, &[3, 3, 3, 3]), vec![3, 3, 2, 2]);
    // An iteration with 1 token of budget runs nothing; the next one does.
    assert_eq!(chunks(2, 5, 0, &[1, 4, 4]), vec![3, 2]);
    // A cached prefix leaving 2 runs them in one chunk.
    assert_eq!(chunks(2, 40, 38, &[512]), vec![2]);
    // Without the minimum the same budgets give 1-token chunks.
    assert_eq!(chunks(1, 10, 0, &[3, 3, 3, 3]), vec![3, 3, 3, 1]);
    assert_eq!(chunks(1, 5, 0, &[1, 4, 4]), vec![1, 4]);
}
