//! The automatic prefix cache: finished sequences leave their KV rows in the arena, indexed
//! by their tokens, so a later prompt that starts with the same tokens prefills only the rest.
//!
//! Design (the slot arena's version of vLLM's automatic prefix caching and SGLang's
//! RadixAttention):
//! - an entry is one slot that is not decoding, owned by the cache, with the tokens whose
//!   KV rows it holds (positions `0..tokens.len()`);
//! - entries are found through block hashes: the tokens are cut into blocks of [`BLOCK`]
//!   tokens and block `k` is keyed by a hash chained over blocks `0..=k`, so one lookup walks
//!   the prompt's blocks once and ends on the entries sharing the most whole blocks; the
//!   match is then verified token by token (no hash collision can make a wrong hit) and
//!   extended token by token past the last whole block;
//! - memory stays the arena's: entries live only in slots nobody else holds and are evicted
//!   least recently used first when a request needs a slot;
//! - an entry whose tokens are a prefix of another entry's holds nothing the longer one does
//!   not, so inserting the longer one drops it.
//!
//! The cache knows slots and tokens only; the scheduler decides when to look up, copy, take
//! over and insert.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use super::kv::{Slot, SlotId};
use crate::model::TokenId;

/// Tokens per hashed block: matches are found in whole blocks, then extended token-wise.
pub const BLOCK: usize = 16;

/// A cached slot and the tokens its KV rows hold.
struct Entry {
    slot: Slot,
    tokens: Vec<TokenId>,
    /// Chained hash of each whole block (`tokens.len() / BLOCK` of them).
    hashes: Vec<u64>,
    last_used: u64,
}

/// The longest cached prefix of a prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMatch {
    /// The entry's slot (its rows `0..len` are the prompt's).
    pub slot: SlotId,
    /// Tokens shared with the prompt.
    pub len: usize,
    /// Tokens the entry holds (`len` when the prompt covers the whole entry).
    pub entry_len: usize,
}

/// Cached KV entries and their block-hash index.
#[derive(Default)]
pub struct PrefixCache {
    entries: HashMap<SlotId, Entry>,
    /// Chained hash of blocks `0..=k` → the entries holding those `k + 1` blocks.
    index: HashMap<u64, Vec<SlotId>>,
    clock: u64,
}

/// The chained hash of each whole block of `tokens`.
fn block_hashes(tokens: &[TokenId]) -> Vec<u64> {
    let mut previous = 0u64;
    tokens
        .chunks_exact(BLOCK)
        .map(|block| {
            previous = chain(previous, block);
            previous
        })
        .collect()
}

fn chain(previous: u64, block: &[TokenId]) -> u64 {
    let mut hasher = DefaultHasher::new();
    previous.hash(&mut hasher);
    block.hash(&mut hasher);
    hasher.finish()
}

fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries (slots) the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `slot` is a cached entry.
    pub fn holds(&self, slot: SlotId) -> bool {
        self.entries.contains_key(&slot)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The entry sharing the longest prefix with `prompt[..limit]`, at least one whole
    /// block; ties go to the most recently used entry.
    pub fn longest_match(&self, prompt: &[TokenId], limit: usize) -> Option<PrefixMatch> {
        let prompt = &prompt[..limit.min(prompt.len())];
        let mut hash = 0u64;
        let mut candidates: &[SlotId] = &[];
        let mut blocks = 0;
        for block in prompt.chunks_exact(BLOCK) {
            hash = chain(hash, block);
            match self.index.get(&hash) {
                Some(slots) if !slots.is_empty() => {
                    candidates = slots;
                    blocks += 1;
                }
                _ => break,
            }
        }
        let whole = blocks * BLOCK;
        candidates
            .iter()
            .filter_map(|slot| self.entries.get(slot).map(|e| (slot, e)))
            .filter(|(_, e)| e.tokens[..whole] == prompt[..whole])
            .map(|(&slot, e)| {
                let len = whole + common_prefix(&e.tokens[whole..], &prompt[whole..]);
                (len, e.last_used, slot, e.tokens.len())
            })
            .max()
            .map(|(len, _, slot, entry_len)| PrefixMatch {
                slot,
                len,
                entry_len,
            })
    }

    /// Marks `slot`'s entry as just used (it is evicted last).
    pub fn touch(&mut self, slot: SlotId) {
        let now = self.tick();
        if let Some(e) = self.entries.get_mut(&slot) {
            e.last_used = now;
        }
    }

    /// Caches `slot`, whose rows `0..tokens.len()` hold `tokens`. Entries that are a prefix
    /// of `tokens` are dropped (their slots return to the arena); when `tokens` is itself a
    /// prefix of an entry (or shorter than a block), `slot` returns to the arena instead.
    /// Returns the number of slots handed back.
    pub fn insert(&mut self, slot: Slot, tokens: Vec<TokenId>) -> usize {
        if tokens.len() < BLOCK {
            return 1;
        }
        let covered = self
            .entries
            .values()
            .find(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
            .map(|e| e.slot.id());
        if let Some(longer) = covered {
            self.touch(longer);
            return 1;
        }
        let redundant: Vec<SlotId> = self
            .entries
            .values()
            .filter(|e| tokens.starts_with(&e.tokens))
            .map(|e| e.slot.id())
            .collect();
        for id in &redundant {
            self.remove(*id);
        }
        let hashes = block_hashes(&tokens);
        for hash in &hashes {
            self.index.entry(*hash).or_default().push(slot.id());
        }
        let last_used = self.tick();
        self.entries.insert(
            slot.id(),
            Entry {
                slot,
                tokens,
                hashes,
                last_used,
            },
        );
        redundant.len()
    }

    /// Takes `slot`'s entry out of the cache: its slot handle and tokens.
    pub fn remove(&mut self, slot: SlotId) -> Option<(Slot, Vec<TokenId>)> {
        let entry = self.entries.remove(&slot)?;
        for hash in &entry.hashes {
            if let Some(slots) = self.index.get_mut(hash) {
                slots.retain(|&s| s != slot);
                if slots.is_empty() {
                    self.index.remove(hash);
                }
            }
        }
        Some((entry.slot, entry.tokens))
    }

    /// Drops the least recently used entry other than `keep` (its slot returns to the
    /// arena); false when there is none.
    pub fn evict_lru(&mut self, keep: Option<SlotId>) -> bool {
        let victim = self
            .entries
            .values()
            .filter(|e| Some(e.slot.id()) != keep)
            .min_by_key(|e| e.last_used)
            .map(|e| e.slot.id());
        match victim {
            Some(id) => self.remove(id).is_some(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv::{KvArena, KvDtype, KvShape};

    fn arena(slots: usize) -> KvArena {
        let shape = KvShape {
            layers: 1,
            kv_heads: 1,
            max_len: 256,
            head_dim: 1,
            dtype: KvDtype::F32,
        };
        KvArena::new(shape, slots).unwrap()
    }

    fn tokens(range: std::ops::Range<u32>) -> Vec<TokenId> {
        range.collect()
    }

    #[test]
    fn the_longest_verified_prefix_is_found_and_extended_past_whole_blocks() {
        let mut arena = arena(4);
        let mut cache = PrefixCache::new();
        let a = arena.allocate().unwrap();
        let a_id = a.id();
        cache.insert(a, tokens(0..40));
        let b = arena.allocate().unwrap();
        let b_id = b.id();
        let mut other = tokens(0..20);
        other.extend(100..130);
        cache.insert(b, other);

        let mut prompt = tokens(0..37);
        prompt.push(999);
        let m = cache.longest_match(&prompt, prompt.len()).unwrap();
        assert_eq!((m.slot, m.len, m.entry_len), (a_id, 37, 40));
        // The limit bounds the match (a prompt keeps at least one token to prefill).
        let m = cache.longest_match(&tokens(0..40), 39).unwrap();
        assert_eq!((m.slot, m.len), (a_id, 39));
        // Only one whole block shared with `b` beyond which it diverges.
        let mut p = tokens(0..20);
        p.extend(100..110);
        let m = cache.longest_match(&p, p.len()).unwrap();
        assert_eq!((m.slot, m.len), (b_id, 30));
        // Less than a whole block in common: no hit.
        assert!(cache.longest_match(&tokens(0..15), 15).is_none());
        let mut first_differs = tokens(0..40);
        first_differs[0] = 7;
        assert!(cache.longest_match(&first_differs, 40).is_none());
    }

    #[test]
    fn a_prompt_differing_in_its_last_token_matches_only_up_to_it() {
        let mut arena = arena(2);
        let mut cache = PrefixCache::new();
        cache.insert(arena.allocate().unwrap(), tokens(0..48));
        let mut prompt = tokens(0..48);
        prompt[47] = 5000;
        let m = cache.longest_match(&prompt, prompt.len()).unwrap();
        assert_eq!(m.len, 47);
    }

    #[test]
    fn prefixes_of_an_entry_are_dropped_and_their_slots_returned() {
        let mut arena = arena(3);
        let mut cache = PrefixCache::new();
        cache.insert(arena.allocate().unwrap(), tokens(0..20));
        cache.insert(arena.allocate().unwrap(), tokens(0..32));
        assert_eq!(cache.len(), 1, "0..20 is a prefix of 0..32");
        assert_eq!(arena.free_slots(), 2);
        // A prefix of an existing entry is not cached.
        assert_eq!(cache.insert(arena.allocate().unwrap(), tokens(0..17)), 1);
        assert_eq!((cache.len(), arena.free_slots()), (1, 2));
        // Too short to index.
        assert_eq!(cache.insert(arena.allocate().unwrap(), tokens(0..5)), 1);
        assert_eq!(arena.free_slots(), 2);
    }

    #[test]
    fn eviction_is_least_recently_used_first_and_spares_the_kept_slot() {
        let mut arena = arena(3);
        let mut cache = PrefixCache::new();
        let ids: Vec<SlotId> = (0..3)
            .map(|i| {
                let slot = arena.allocate().unwrap();
                let id = slot.id();
                cache.insert(slot, tokens(i * 100..i * 100 + 16));
                id
            })
            .collect();
        cache.touch(ids[0]);
        assert!(cache.evict_lru(Some(ids[1])));
        assert!(cache.holds(ids[0]) && cache.holds(ids[1]) && !cache.holds(ids[2]));
        assert!(cache.evict_lru(None));
        assert!(!cache.holds(ids[1]));
        assert_eq!(arena.free_slots(), 2);
        assert!(!cache.evict_lru(Some(ids[0])));
        let (slot, toks) = cache.remove(ids[0]).unwrap();
        assert_eq!((slot.id(), toks.len()), (ids[0], 16));
        assert!(cache.is_empty() && cache.index.is_empty());
    }
}
