//! Slot placement, executed: the slot plan (`engine/slot_plan.rs`) decides which KV slot a
//! prompt, a fork or a moved sequence gets, which cached prefix is copied or taken over and
//! which entries are evicted; this room carries those decisions out on the arena (takes the
//! slots by id, copies and swaps KV rows, keeps the `Slot` handles of cache entries in a map
//! keyed by id, dropping those the plan evicts) and tells the plan which slots were freed by
//! a dropped handle. A sequence leaving the batch has the last one move into its slot (the
//! batch plan says which).
//!
//! Not here: any placement policy (the slot plan), when a job is admitted or how many slots
//! it may take (the batch plan, `engine/batch_plan.rs`), and the model steps that fill the
//! slots.

use std::sync::atomic::Ordering;

use super::super::kv::{Slot, SlotId};
use super::super::slot_plan::{Allocation, Lookup, Placement, Taken};
use super::super::EngineError;
use super::sequence::{Job, Sequence};
use super::Scheduler;
use crate::model::TokenId;

impl Scheduler {
    /// Removes decoding sequence `i`; the batch plan moves the last one into its slot. With
    /// `keep_rows` the two exchange rows, so the removed sequence leaves holding its own (for
    /// the prefix cache); otherwise its rows are overwritten.
    pub(super) fn remove_decoding(&mut self, i: usize, keep_rows: bool) -> Sequence {
        let moved_from = self.plan.leave(i);
        let mut removed = self.decoding.swap_remove(i);
        debug_assert_eq!(
            moved_from,
            (i < self.decoding.len()).then_some(self.decoding.len())
        );
        if moved_from.is_some() {
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

    /// Tells the slot plan which held slots are free again (their handles were dropped
    /// since it last looked), then checks in debug builds that the plan and the arena agree.
    pub(super) fn sync_slots(&mut self) {
        for id in self.arena.free_ids() {
            if self.slots.is_held(id) {
                self.slots.release(id);
            }
        }
        #[cfg(debug_assertions)]
        {
            let free = self.arena.free_ids();
            debug_assert_eq!(free.len(), self.slots.free(), "free slots disagree");
            debug_assert!(free.iter().all(|&id| self.slots.is_free(id)));
            debug_assert_eq!(
                self.cached.len(),
                self.slots.cached(),
                "cache entries disagree"
            );
            debug_assert!(self.cached.keys().all(|&id| self.slots.is_cached(id)));
            debug_assert_eq!(
                self.slots.free() + self.slots.held() + self.slots.cached(),
                self.slots.slots()
            );
        }
    }

    /// Caches `slot`'s rows `0..tokens.len()` (or frees the slot when the cache is off or
    /// keeps nothing new); the entries it makes redundant are freed.
    pub(super) fn cache_insert(&mut self, slot: Slot, tokens: Vec<TokenId>) {
        self.sync_slots();
        let id = slot.id();
        let mut slot = Some(slot);
        for freed in self.slots.cache(id, tokens) {
            if freed == id {
                slot = None;
            } else {
                self.cached.remove(&freed);
            }
        }
        if let Some(slot) = slot {
            self.cached.insert(id, slot);
        }
    }

    /// Drops every cache entry (their slots are free).
    pub(super) fn clear_cache(&mut self) {
        self.sync_slots();
        for id in self.slots.clear_cache() {
            self.cached.remove(&id);
        }
    }

    /// The handle of a slot the plan allocated (an evicted entry's, or a free one).
    fn allocated(&mut self, a: Allocation) -> Option<Slot> {
        if a.evicted {
            self.stats.prefix_evictions.fetch_add(1, Ordering::Relaxed);
            return self.cached.remove(&a.slot);
        }
        self.arena.take(a.slot)
    }

    /// Slot `id` for the decoding batch. A cache entry there moves to a free slot if there
    /// is one (its rows are copied), else it is evicted.
    pub(super) fn take_slot(&mut self, id: SlotId) -> Option<Slot> {
        self.sync_slots();
        match self.slots.take(id)? {
            Taken::Free => self.arena.take(id),
            Taken::Moved { to, len } => {
                let slot = self.cached.remove(&id)?;
                let moved = self.arena.take(to);
                match moved {
                    Some(moved) if self.arena.copy_prefix(id, to, len).is_ok() => {
                        self.cached.insert(to, moved);
                    }
                    _ => {
                        self.slots.evict(to);
                        self.stats.prefix_evictions.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(slot)
            }
            Taken::Evicted => {
                self.stats.prefix_evictions.fetch_add(1, Ordering::Relaxed);
                self.cached.remove(&id)
            }
        }
    }

    /// Slot `id` for a prefill group's next prompt (fresh: no cached prefix is reused), as
    /// the slot plan claims it.
    pub(super) fn group_slot(&mut self, id: SlotId) -> Option<Slot> {
        self.sync_slots();
        let allocation = self.slots.claim(id)?;
        if self.slots.cache_on() {
            self.stats.prefix_misses.fetch_add(1, Ordering::Relaxed);
        }
        self.allocated(allocation)
    }

    /// Tokens of `job`'s prompt `tokens` a cached prefix may cover ([`Job::reusable`]): a
    /// cache hit leaves at least 2 tokens to prefill when only rows of multi-token steps may
    /// be reused (the rest must not be a one-token step), else 1.
    pub(super) fn reusable_prefix(&self, job: &Job, tokens: &[TokenId]) -> usize {
        let min_prefill = if self.limits.multi_token_rows_only {
            2
        } else {
            1
        };
        job.reusable(tokens, min_prefill)
    }

    /// A slot for the prompt `tokens` of `job` and how many of its tokens it already holds,
    /// as the slot plan places it: the longest cached prefix copied into a fresh slot (the
    /// entry stays), the entry taken over, or a fresh slot.
    pub(super) fn prefill_slot(&mut self, job: &Job, tokens: &[TokenId]) -> Option<(Slot, usize)> {
        self.sync_slots();
        let (lookup, placement) = self.slots.place(tokens, self.reusable_prefix(job, tokens));
        match lookup {
            Lookup::Off => {}
            Lookup::Miss => {
                self.stats.prefix_misses.fetch_add(1, Ordering::Relaxed);
            }
            Lookup::Hit { len } => {
                self.stats.prefix_hits.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .prefix_reused_tokens
                    .fetch_add(len as u64, Ordering::Relaxed);
            }
        }
        match placement? {
            Placement::Fresh(slot) => Some((self.allocated(slot)?, 0)),
            Placement::Copy { from, len, to } => {
                let fresh = self.allocated(to)?;
                if self.arena.copy_prefix(from, fresh.id(), len).is_ok() {
                    self.slots.reused(from);
                    return Some((fresh, len));
                }
                Some((fresh, 0))
            }
            Placement::TakeOver { slot, len } => Some((self.cached.remove(&slot)?, len)),
        }
    }
}
