//! Slot placement: which KV slot a prompt, a fork or a moved sequence gets, and what the
//! prefix cache keeps. A prompt reuses the longest cached prefix (copying it into a fresh
//! slot, or taking the entry over), a slot is found by evicting the least recently used
//! entry when none is free, a sequence leaving the batch has the last one move into its
//! slot (the batch plan says which), and finished rows become cache entries.
//!
//! Not here: when a job is admitted or how many slots it may take (the batch plan,
//! `engine/batch_plan.rs`), and the model steps that fill the slots.

use std::sync::atomic::Ordering;

use super::super::kv::{Slot, SlotId};
#[cfg(debug_assertions)]
use super::super::prefix_cache::PrefixCache;
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

    /// Caches `slot`'s rows `0..tokens.len()` (or frees the slot when the cache is off).
    pub(super) fn cache_insert(&mut self, slot: Slot, tokens: Vec<TokenId>) {
        if let Some(cache) = self.cache.as_mut() {
            cache.insert(slot, tokens);
        }
    }

    /// Free slots plus cached ones (which can be evicted): what the batch plan counts as
    /// available (checked in debug builds).
    #[cfg(debug_assertions)]
    pub(super) fn available_slots(&self) -> usize {
        self.arena.free_slots() + self.cache.as_ref().map_or(0, PrefixCache::len)
    }

    /// The lowest free slot, evicting the least recently used cache entry (never `keep`)
    /// when none is free.
    pub(super) fn allocate_slot(&mut self, keep: Option<SlotId>) -> Option<Slot> {
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
    pub(super) fn take_slot(&mut self, id: SlotId) -> Option<Slot> {
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
    pub(super) fn prefill_slot(&mut self, job: &Job, tokens: &[TokenId]) -> Option<(Slot, usize)> {
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
}
