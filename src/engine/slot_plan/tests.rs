//! Property tests of the slot plan alone (no model, no arena): random interleavings of
//! admissions, joins, forks, leaving sequences, scored prompts, cancellations and cache
//! clears, driven the way the scheduler drives the plan, checking after every step that
//! every slot is in exactly one state, that the batch is positions `0..B` in slots `0..B`,
//! that evictions take the least recently used entry, and that nothing leaks after a drain.
//! Not a test of token matching (`prefix_cache.rs`) or admission (`batch_plan/tests.rs`).

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::engine::prefix_cache::BLOCK;

#[derive(Debug, Clone)]
enum Op {
    /// A prompt of `samples` sequences: stem `stem` cut at `keep`, then `extra` tokens.
    Admit {
        stem: usize,
        keep: usize,
        extra: Vec<TokenId>,
        samples: usize,
        scored: bool,
    },
    /// The prefilling prompt is done: scored ones are cached, others join the batch.
    FinishPrefill,
    CancelPrefill,
    /// The sequence at position `k` (mod the batch) leaves, its rows cached or not.
    Leave {
        k: usize,
        keep_rows: bool,
    },
    ClearCache,
}

fn op(slots: usize) -> impl Strategy<Value = Op> {
    let extra = proptest::collection::vec(0u32..3, 0..40);
    prop_oneof![
        4 => (0usize..3, 0usize..=48, extra, 1..=slots, proptest::bool::weighted(0.2)).prop_map(
            |(stem, keep, extra, samples, scored)| Op::Admit { stem, keep, extra, samples, scored }
        ),
        4 => Just(Op::FinishPrefill),
        1 => Just(Op::CancelPrefill),
        4 => (0usize..16, any::<bool>()).prop_map(|(k, keep_rows)| Op::Leave { k, keep_rows }),
        1 => Just(Op::ClearCache),
    ]
}

/// The scheduler's side: the slots it holds (its handles), by role.
struct Driver {
    plan: SlotPlan,
    stems: Vec<Vec<TokenId>>,
    /// The prefilling prompt: its slot, tokens, samples, whether it is scored.
    prefill: Option<(SlotId, Vec<TokenId>, usize, bool)>,
    /// The slot and cached tokens of each decoding position.
    batch: Vec<(SlotId, Vec<TokenId>)>,
}

impl Driver {
    fn new(slots: usize, cache: bool) -> Self {
        let stems = (0..3u32)
            .map(|s| (0..48).map(|i| (i * 7 + s * 13) % 5).collect())
            .collect();
        Self {
            plan: SlotPlan::new(slots, cache),
            stems,
            prefill: None,
            batch: Vec::new(),
        }
    }

    /// Every slot is in exactly one state; the held ones are exactly the driver's; the
    /// batch is positions `0..B` in slots `0..B`.
    fn check(&self) {
        let n = self.plan.slots();
        let all: Vec<SlotId> = (0..n).map(SlotId).collect();
        for &id in &all {
            let states = [
                self.plan.is_free(id),
                self.plan.is_held(id),
                self.plan.is_cached(id),
            ];
            assert_eq!(
                states.iter().filter(|&&s| s).count(),
                1,
                "{id:?}: {states:?}"
            );
        }
        let held = self.batch.len() + usize::from(self.prefill.is_some());
        assert_eq!(self.plan.held(), held, "held slots");
        assert_eq!(
            self.plan.free() + self.plan.held() + self.plan.cached(),
            n,
            "free + decoding + prefilling + cached"
        );
        for (k, (slot, _)) in self.batch.iter().enumerate() {
            assert_eq!(*slot, SlotId(k), "position {k} lives in slot {k}");
            assert!(self.plan.is_held(*slot));
        }
        if let Some((slot, ..)) = &self.prefill {
            assert!(self.plan.is_held(*slot));
            assert!(self.batch.iter().all(|(s, _)| s != slot), "held twice");
        }
        assert_eq!(self.plan.lru_order().len(), self.plan.cached());
        if !self.plan.cache_on() {
            assert_eq!(self.plan.cached(), 0);
        }
    }

    /// Checks an allocation against the state before it: the lowest free slot, else the
    /// least recently used entry other than `keep`.
    fn check_allocation(
        a: Allocation,
        free: &BTreeSet<SlotId>,
        lru: &[SlotId],
        keep: Option<SlotId>,
    ) {
        match free.first() {
            Some(&lowest) => assert_eq!(
                a,
                Allocation {
                    slot: lowest,
                    evicted: false
                }
            ),
            None => {
                let victim = lru.iter().copied().find(|&id| Some(id) != keep);
                assert_eq!(
                    Some(a.slot),
                    victim,
                    "evictions are least recently used first"
                );
                assert!(a.evicted);
            }
        }
    }

    fn free_set(&self) -> BTreeSet<SlotId> {
        (0..self.plan.slots())
            .map(SlotId)
            .filter(|&id| self.plan.is_free(id))
            .collect()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Admit {
                stem,
                keep,
                extra,
                samples,
                scored,
            } => {
                let available = self.plan.slots() - self.plan.held();
                let samples = if *scored { 1 } else { *samples };
                if self.prefill.is_some() || available < samples {
                    return;
                }
                let mut tokens = self.stems[*stem][..*keep].to_vec();
                tokens.extend(extra);
                if tokens.is_empty() {
                    tokens.push(9);
                }
                let reusable = tokens.len() - 1;
                let (free, lru) = (self.free_set(), self.plan.lru_order());
                let (lookup, placement) = self.plan.place(&tokens, reusable);
                let placement = placement.expect("an admitted prompt always gets a slot");
                let slot = match (lookup, placement) {
                    (Lookup::Off | Lookup::Miss, Placement::Fresh(a)) => {
                        assert_eq!(lookup == Lookup::Off, !self.plan.cache_on());
                        Self::check_allocation(a, &free, &lru, None);
                        a.slot
                    }
                    (Lookup::Hit { len }, Placement::Copy { from, len: l, to }) => {
                        assert_eq!(len, l);
                        assert!(len >= BLOCK && len <= reusable);
                        assert!(self.plan.is_cached(from), "the copied entry stays");
                        assert_ne!(to.slot, from);
                        Self::check_allocation(to, &free, &lru, Some(from));
                        self.plan.reused(from);
                        assert_eq!(self.plan.lru_order().last(), Some(&from), "touched");
                        to.slot
                    }
                    (Lookup::Hit { len }, Placement::TakeOver { slot, len: l }) => {
                        assert_eq!(len, l);
                        assert!(len >= BLOCK && len <= reusable);
                        assert!(lru.contains(&slot), "only an entry is taken over");
                        slot
                    }
                    other => panic!("{other:?}"),
                };
                self.prefill = Some((slot, tokens, samples, *scored));
            }
            Op::FinishPrefill => {
                let Some((slot, tokens, samples, scored)) = self.prefill.take() else {
                    return;
                };
                if scored {
                    self.cache(slot, tokens);
                    return;
                }
                let target = SlotId(self.batch.len());
                let mut slots = vec![slot];
                if slot != target {
                    let t = self.take(target).expect("slot B is never held");
                    slots[0] = t;
                    self.cache(slot, tokens.clone());
                }
                for k in 1..samples {
                    let fork = self.take(SlotId(target.0 + k)).expect("a fork's slot");
                    slots.push(fork);
                }
                self.batch
                    .extend(slots.into_iter().map(|s| (s, tokens.clone())));
            }
            Op::CancelPrefill => {
                if let Some((slot, ..)) = self.prefill.take() {
                    self.plan.release(slot);
                }
            }
            Op::Leave { k, keep_rows } => {
                if self.batch.is_empty() {
                    return;
                }
                let i = k % self.batch.len();
                // The last sequence moves into position i; the leaving one ends up with
                // the old last slot (rows exchanged when kept).
                let last = self.batch.len() - 1;
                self.batch.swap(i, last);
                let (_, tokens) = self.batch.pop().expect("not empty");
                if i < self.batch.len() {
                    self.batch[i].0 = SlotId(i);
                }
                let freed_slot = SlotId(last);
                if *keep_rows {
                    self.cache(freed_slot, tokens);
                } else {
                    self.plan.release(freed_slot);
                }
            }
            Op::ClearCache => {
                let lru = self.plan.lru_order();
                assert_eq!(self.plan.clear_cache(), lru);
                assert_eq!(self.plan.cached(), 0);
            }
        }
    }

    /// Takes slot `id` for a batch position, checking the decision.
    fn take(&mut self, id: SlotId) -> Option<SlotId> {
        let free = self.free_set();
        let was_cached = self.plan.is_cached(id);
        let taken = self.plan.take(id)?;
        match taken {
            Taken::Free => assert!(free.contains(&id)),
            Taken::Moved { to, len } => {
                assert!(was_cached && len >= BLOCK);
                assert_eq!(
                    Some(&to),
                    free.first(),
                    "an entry moves to the lowest free slot"
                );
                assert!(self.plan.is_cached(to));
                assert_eq!(self.plan.lru_order().last(), Some(&to));
            }
            Taken::Evicted => assert!(was_cached && free.is_empty()),
        }
        assert!(self.plan.is_held(id));
        Some(id)
    }

    fn cache(&mut self, slot: SlotId, tokens: Vec<TokenId>) {
        let before = self.plan.cached();
        let freed = self.plan.cache(slot, tokens.clone());
        for id in &freed {
            assert!(self.plan.is_free(*id));
        }
        if !self.plan.cache_on() || tokens.len() < BLOCK {
            assert_eq!(freed, vec![slot]);
        }
        if self.plan.is_cached(slot) {
            assert_eq!(self.plan.cached(), before + 1 - freed.len());
            assert_eq!(self.plan.lru_order().last(), Some(&slot));
        }
    }

    /// Ends everything: nothing may stay held, and after a clear everything is free.
    fn drain(&mut self) {
        if let Some((slot, ..)) = self.prefill.take() {
            self.plan.release(slot);
        }
        while !self.batch.is_empty() {
            self.apply(&Op::Leave {
                k: 0,
                keep_rows: true,
            });
            self.check();
        }
        assert_eq!(self.plan.held(), 0, "a slot leaked");
        self.plan.clear_cache();
        assert_eq!(self.plan.free(), self.plan.slots(), "a slot leaked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_slot_is_in_one_state_evictions_are_lru_and_nothing_leaks(
        (slots, cache, ops) in (1usize..=6, any::<bool>())
            .prop_flat_map(|(slots, cache)| {
                (Just(slots), Just(cache), proptest::collection::vec(op(slots), 0..80))
            })
    ) {
        let mut d = Driver::new(slots, cache);
        d.check();
        for op in &ops {
            d.apply(op);
            d.check();
        }
        d.drain();
        d.check();
    }
}

#[test]
fn a_prompt_copies_a_longer_entry_and_takes_over_one_it_covers() {
    let mut plan = SlotPlan::new(3, true);
    let tokens: Vec<TokenId> = (0..40).collect();
    let a = plan.allocate(None).unwrap().slot;
    assert!(plan.cache(a, tokens.clone()).is_empty());
    // A shorter prompt: the entry's rows are copied into the lowest free slot.
    let (lookup, placement) = plan.place(&tokens[..30], 29);
    assert_eq!(lookup, Lookup::Hit { len: 29 });
    let to = Allocation {
        slot: SlotId(1),
        evicted: false,
    };
    assert_eq!(
        placement,
        Some(Placement::Copy {
            from: a,
            len: 29,
            to
        })
    );
    // A prompt covering the whole entry takes it over.
    let mut longer = tokens.clone();
    longer.push(99);
    let (lookup, placement) = plan.place(&longer, 40);
    assert_eq!(lookup, Lookup::Hit { len: 40 });
    assert_eq!(placement, Some(Placement::TakeOver { slot: a, len: 40 }));
    assert_eq!((plan.free(), plan.held(), plan.cached()), (1, 2, 0));
}

#[test]
fn with_no_free_slot_the_least_recently_used_entry_is_evicted_but_never_the_kept_one() {
    let mut plan = SlotPlan::new(2, true);
    for i in 0..2u32 {
        let id = plan.allocate(None).unwrap().slot;
        plan.cache(id, (i * 100..i * 100 + 16).collect());
    }
    plan.reused(SlotId(0));
    assert_eq!(plan.lru_order(), vec![SlotId(1), SlotId(0)]);
    let a = plan.allocate(Some(SlotId(1))).unwrap();
    assert_eq!((a.slot, a.evicted), (SlotId(0), true));
    assert_eq!(plan.allocate(Some(SlotId(1))), None);
    assert_eq!(plan.take(SlotId(0)), None, "a held slot is not taken");
    assert_eq!(plan.take(SlotId(1)), Some(Taken::Evicted));
    assert_eq!((plan.free(), plan.held(), plan.cached()), (0, 2, 0));
}

#[test]
fn a_group_claims_the_next_slot_free_or_with_none_free_evicts_the_entry_there() {
    let mut plan = SlotPlan::new(4, true);
    let a = plan.allocate(None).unwrap().slot;
    plan.cache(a, (0..16).collect());
    assert_eq!(plan.cached_prefix_len(&(0..20).collect::<Vec<_>>(), 19), 16);
    assert_eq!(plan.cached_prefix_len(&(50..70).collect::<Vec<_>>(), 19), 0);
    // Slot 0 holds an entry while slots 1..4 are free: the scheduler may not claim it.
    assert!(!plan.can_claim(SlotId(0)));
    for id in 1..4 {
        assert!(plan.can_claim(SlotId(id)));
        let claimed = plan.claim(SlotId(id)).unwrap();
        assert_eq!((claimed.slot, claimed.evicted), (SlotId(id), false));
    }
    assert!(!plan.can_claim(SlotId(2)), "a held slot");
    assert_eq!(plan.claim(SlotId(2)), None, "a held slot");
    assert!(!plan.can_claim(SlotId(4)), "beyond the arena");
    // No slot is free now: the entry in slot 0 is evicted for the claim.
    assert!(plan.can_claim(SlotId(0)));
    let claimed = plan.claim(SlotId(0)).unwrap();
    assert_eq!((claimed.slot, claimed.evicted), (SlotId(0), true));
    assert_eq!((plan.free(), plan.held(), plan.cached()), (0, 4, 0));
}
