//! The slot plan: which KV slot each piece of work gets and what the prefix cache keeps, as a
//! pure state machine over slot ids, so it can be tested without a model or an arena.
//!
//! It owns the state of every slot id: free, held (by a decoding sequence or the prefilling
//! prompt; the batch plan says which) or cached (a prefix-cache entry, with the cache's LRU
//! order). The scheduler (`scheduler/placement.rs`) asks it for decisions and executes them
//! on the arena (takes the slots it names, copies the rows it says, drops the handles of the
//! entries it evicts), and reports the slots whose handles it dropped ([`SlotPlan::release`]).
//! The policy, exactly the scheduler's since the prefix cache came in:
//! - a fresh slot is the lowest free one; with none free, the least recently used entry is
//!   evicted (never the entry a prompt is copying from) and its slot is the fresh one;
//! - a prompt reuses the longest cached prefix: its rows are copied into a fresh slot (the
//!   entry stays, and is touched once the copy succeeded), or the entry's slot is taken over
//!   when the prompt covers the whole entry or no other slot is left;
//! - a sequence joining the batch at position `p` needs slot `p`: a free one is taken; an
//!   entry there moves to the lowest free slot (its rows are copied) or, with none free, is
//!   evicted;
//! - finished rows become entries (or free slots when the cache is off or keeps nothing new).
//!
//! What it is NOT: it holds no KV memory and no `Slot` handles, does not run copies, and does
//! not decide admission, budgets or batch positions (`engine/batch_plan.rs`). Token matching
//! is the prefix cache's (`engine/prefix_cache.rs`), which the plan holds by slot id.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::BuildHasher;

use super::kv::SlotId;
use super::prefix_cache::PrefixCache;
use crate::model::TokenId;

/// A slot handed out: `slot`, after evicting the entry that was there (`evicted`, the same
/// id) when none was free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allocation {
    pub(crate) slot: SlotId,
    pub(crate) evicted: bool,
}

/// What the prefix-cache lookup for a prompt found (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The cache is off.
    Off,
    Miss,
    /// A cached prefix of `len` tokens.
    Hit {
        len: usize,
    },
}

/// Where a prompt's KV rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// No usable cached prefix: prefill from 0 in `slot`.
    Fresh(Allocation),
    /// Copy rows `0..len` of entry `from` into `to`; on success report
    /// [`SlotPlan::reused`] and prefill from `len`, else prefill from 0 in `to`.
    Copy {
        from: SlotId,
        len: usize,
        to: Allocation,
    },
    /// Take entry `slot` over (it leaves the cache): its rows `0..len` are the prompt's.
    TakeOver { slot: SlotId, len: usize },
}

/// How slot `id` was taken for a batch position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// It was free.
    Free,
    /// It held an entry, which moves to slot `to`: copy rows `0..len` of `id` there (if the
    /// copy fails, report [`SlotPlan::evict`] of `to`).
    Moved { to: SlotId, len: usize },
    /// It held an entry, now evicted (no slot was free to move it to).
    Evicted,
}

/// Every slot's state.
pub(crate) struct SlotPlan<S = RandomState> {
    /// Slots in all (read by the consistency checks of tests and debug builds).
    #[cfg_attr(not(any(test, debug_assertions)), allow(dead_code))]
    slots: usize,
    free: BTreeSet<SlotId>,
    held: BTreeSet<SlotId>,
    /// The entries in slots nobody holds (`None`: the cache is off).
    cache: Option<PrefixCache<S, SlotId>>,
}

impl SlotPlan {
    /// A plan over `slots` free slots, with the prefix cache on or off.
    pub(crate) fn new(slots: usize, prefix_cache: bool) -> Self {
        Self::with_cache(slots, prefix_cache.then(PrefixCache::new))
    }
}

impl<S: BuildHasher> SlotPlan<S> {
    /// A plan over `slots` free slots and `cache` (tests pass one with their own hashing).
    pub(crate) fn with_cache(slots: usize, cache: Option<PrefixCache<S, SlotId>>) -> Self {
        Self {
            slots,
            free: (0..slots).map(SlotId).collect(),
            held: BTreeSet::new(),
            cache,
        }
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Prefix-cache entries (each in one slot).
    pub(crate) fn cached(&self) -> usize {
        self.cache.as_ref().map_or(0, PrefixCache::len)
    }

    pub(crate) fn cache_on(&self) -> bool {
        self.cache.is_some()
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn is_free(&self, id: SlotId) -> bool {
        self.free.contains(&id)
    }

    pub(crate) fn is_held(&self, id: SlotId) -> bool {
        self.held.contains(&id)
    }

    #[cfg(any(test, debug_assertions))]
    pub(crate) fn is_cached(&self, id: SlotId) -> bool {
        self.cache.as_ref().is_some_and(|c| c.holds(id))
    }

    /// The cached slots, least recently used first.
    pub(crate) fn lru_order(&self) -> Vec<SlotId> {
        self.cache
            .as_ref()
            .map_or(Vec::new(), PrefixCache::lru_order)
    }

    /// Held slot `id` is free again (its handle was dropped).
    pub(crate) fn release(&mut self, id: SlotId) {
        if self.held.remove(&id) {
            self.free.insert(id);
        }
    }

    /// A fresh slot: the lowest free one, or the least recently used entry's (never `keep`)
    /// when none is free.
    pub(crate) fn allocate(&mut self, keep: Option<SlotId>) -> Option<Allocation> {
        if let Some(id) = self.free.pop_first() {
            self.held.insert(id);
            return Some(Allocation {
                slot: id,
                evicted: false,
            });
        }
        let cache = self.cache.as_mut()?;
        let victim = cache.lru(keep)?;
        cache.remove(victim)?;
        self.held.insert(victim);
        Some(Allocation {
            slot: victim,
            evicted: true,
        })
    }

    /// Slot `id` for a batch position: free, or an entry that moves out or is evicted;
    /// `None` when it is held.
    pub(crate) fn take(&mut self, id: SlotId) -> Option<Taken> {
        if self.free.remove(&id) {
            self.held.insert(id);
            return Some(Taken::Free);
        }
        let (_, tokens) = self.cache.as_mut()?.remove(id)?;
        self.held.insert(id);
        let len = tokens.len();
        match self.free.pop_first() {
            Some(to) => {
                let freed = self.insert(to, tokens);
                // An entry moved whole: nothing covers it and it covers no other.
                debug_assert!(freed.is_empty(), "moving entry {id:?} freed {freed:?}");
                Some(Taken::Moved { to, len })
            }
            None => Some(Taken::Evicted),
        }
    }

    /// How many of the first `reusable` tokens of `tokens` a cache entry holds (0: none, or
    /// the cache is off); nothing changes.
    pub(crate) fn cached_prefix_len(&self, tokens: &[TokenId], reusable: usize) -> usize {
        self.cache
            .as_ref()
            .and_then(|c| c.longest_match(tokens, reusable))
            .map_or(0, |hit| hit.len)
    }

    /// Whether [`SlotPlan::claim`] would hand out slot `id`.
    pub(crate) fn can_claim(&self, id: SlotId) -> bool {
        self.free.contains(&id)
            || (self.free.is_empty() && self.cache.as_ref().is_some_and(|c| c.holds(id)))
    }

    /// Slot `id` itself for a fresh prompt (a prefill group's next row, which must sit right
    /// after the previous one): free, or an entry, which is evicted (the scheduler asks
    /// [`SlotPlan::can_claim`] first, which allows that only when no slot is free, as a
    /// fresh slot would have evicted the least recently used entry then). `None` when it
    /// is held.
    pub(crate) fn claim(&mut self, id: SlotId) -> Option<Allocation> {
        if self.free.remove(&id) {
            self.held.insert(id);
            return Some(Allocation {
                slot: id,
                evicted: false,
            });
        }
        self.cache.as_mut()?.remove(id)?;
        self.held.insert(id);
        Some(Allocation {
            slot: id,
            evicted: true,
        })
    }

    /// What the lookup found and where the prompt `tokens` goes, reusing at most its first
    /// `reusable` tokens (`None`: no slot is left).
    pub(crate) fn place(
        &mut self,
        tokens: &[TokenId],
        reusable: usize,
    ) -> (Lookup, Option<Placement>) {
        let found = self
            .cache
            .as_ref()
            .and_then(|c| c.longest_match(tokens, reusable));
        let Some(hit) = found else {
            let lookup = if self.cache.is_some() {
                Lookup::Miss
            } else {
                Lookup::Off
            };
            return (lookup, self.allocate(None).map(Placement::Fresh));
        };
        let lookup = Lookup::Hit { len: hit.len };
        if hit.len < hit.entry_len {
            if let Some(to) = self.allocate(Some(hit.slot)) {
                let copy = Placement::Copy {
                    from: hit.slot,
                    len: hit.len,
                    to,
                };
                return (lookup, Some(copy));
            }
        }
        let taken = self.cache.as_mut().and_then(|c| c.remove(hit.slot));
        if taken.is_none() {
            return (lookup, None);
        }
        self.held.insert(hit.slot);
        let take_over = Placement::TakeOver {
            slot: hit.slot,
            len: hit.len,
        };
        (lookup, Some(take_over))
    }

    /// Entry `from`'s rows were copied for a prompt: it is the most recently used.
    pub(crate) fn reused(&mut self, from: SlotId) {
        if let Some(cache) = self.cache.as_mut() {
            cache.touch(from);
        }
    }

    /// Held slot `id`, whose rows `0..tokens.len()` hold `tokens`, becomes an entry. Returns
    /// the slots freed: `id` itself (the cache is off or keeps nothing new) or the entries it
    /// makes redundant.
    pub(crate) fn cache(&mut self, id: SlotId, tokens: Vec<TokenId>) -> Vec<SlotId> {
        if !self.held.remove(&id) {
            return Vec::new();
        }
        self.insert(id, tokens)
    }

    /// Inserts slot `id` (in no set) into the cache; the slots handed back are free.
    fn insert(&mut self, id: SlotId, tokens: Vec<TokenId>) -> Vec<SlotId> {
        self.held.remove(&id);
        let freed = match self.cache.as_mut() {
            Some(cache) => cache.insert_entry(id, tokens),
            None => vec![id],
        };
        self.free.extend(freed.iter().copied());
        freed
    }

    /// Drops entry `id` (its slot is free); false when it is no entry.
    pub(crate) fn evict(&mut self, id: SlotId) -> bool {
        let removed = self.cache.as_mut().and_then(|c| c.remove(id)).is_some();
        if removed {
            self.free.insert(id);
        }
        removed
    }

    /// Drops every entry, least recently used first; returns their slots (now free).
    pub(crate) fn clear_cache(&mut self) -> Vec<SlotId> {
        let order = self.lru_order();
        for &id in &order {
            self.evict(id);
        }
        order
    }
}

#[cfg(test)]
mod tests;
