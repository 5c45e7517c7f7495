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
//! - the hash is keyed per process (std's `RandomState`), so nobody can compute colliding
//!   blocks from outside; and a collision that happens anyway only costs a miss: every
//!   candidate's tokens are compared (length first) before it counts, and when the deepest
//!   blocks' candidates do not verify, shallower ones are tried;
//! - memory stays the arena's: entries live only in slots nobody else holds and are evicted
//!   least recently used first when a request needs a slot;
//! - an entry whose tokens are a prefix of another entry's holds nothing the longer one does
//!   not, so inserting the longer one drops it.
//!
//! The cache knows slots and tokens only; the slot plan (`engine/slot_plan.rs`) decides
//! when to look up, copy, take over and insert. An entry holds its slot by an arena
//! [`Slot`] handle (dropping the entry frees the slot) or, in the slot plan, by its plain
//! [`SlotId`] ([`SlotRef`]).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use super::kv::{Slot, SlotId};
use crate::model::TokenId;

/// Tokens per hashed block: matches are found in whole blocks, then extended token-wise.
pub const BLOCK: usize = 16;

/// How an entry holds its slot: an arena handle, or a plain id (the slot plan's bookkeeping).
pub trait SlotRef {
    fn slot_id(&self) -> SlotId;
}

impl SlotRef for Slot {
    fn slot_id(&self) -> SlotId {
        self.id()
    }
}

impl SlotRef for SlotId {
    fn slot_id(&self) -> SlotId {
        *self
    }
}

/// A cached slot and the tokens its KV rows hold.
struct Entry<H> {
    slot: H,
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

/// Cached KV entries and their block-hash index, hashed with `S` (a per-process random key
/// by default; tests pass a colliding one), holding their slots by `H`.
pub struct PrefixCache<S = RandomState, H = Slot> {
    entries: HashMap<SlotId, Entry<H>>,
    /// Chained hash of blocks `0..=k` → the entries holding those `k + 1` blocks.
    index: HashMap<u64, Vec<SlotId>>,
    clock: u64,
    hasher: S,
}

impl<H: SlotRef> Default for PrefixCache<RandomState, H> {
    fn default() -> Self {
        Self::with_hasher(RandomState::new())
    }
}

fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<H: SlotRef> PrefixCache<RandomState, H> {
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: BuildHasher, H: SlotRef> PrefixCache<S, H> {
    /// An empty cache whose block hashes use `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self {
            entries: HashMap::new(),
            index: HashMap::new(),
            clock: 0,
            hasher,
        }
    }

    fn chain(&self, previous: u64, block: &[TokenId]) -> u64 {
        self.hasher.hash_one((previous, block))
    }

    /// The chained hash of each whole block of `tokens`.
    fn block_hashes(&self, tokens: &[TokenId]) -> Vec<u64> {
        let mut previous = 0u64;
        tokens
            .chunks_exact(BLOCK)
            .map(|block| {
                previous = self.chain(previous, block);
                previous
            })
            .collect()
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
        // The candidates of each depth that has any (depth k + 1 holds k + 1 whole blocks).
        let mut levels: Vec<&[SlotId]> = Vec::new();
        for block in prompt.chunks_exact(BLOCK) {
            hash = self.chain(hash, block);
            match self.index.get(&hash) {
                Some(slots) if !slots.is_empty() => levels.push(slots),
                _ => break,
            }
        }
        // Deepest first; a level whose candidates do not verify (a hash collision) falls
        // back to the one above it.
        levels.iter().enumerate().rev().find_map(|(k, candidates)| {
            let whole = (k + 1) * BLOCK;
            candidates
                .iter()
                .filter_map(|slot| self.entries.get(slot).map(|e| (slot, e)))
                .filter(|(_, e)| e.tokens.get(..whole) == Some(&prompt[..whole]))
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
    pub fn insert(&mut self, slot: H, tokens: Vec<TokenId>) -> usize {
        self.insert_entry(slot, tokens).len()
    }

    /// [`PrefixCache::insert`], handing back the slots it does not keep: `slot` itself, or
    /// the entries `tokens` makes redundant.
    pub fn insert_entry(&mut self, slot: H, tokens: Vec<TokenId>) -> Vec<H> {
        if tokens.len() < BLOCK {
            return vec![slot];
        }
        let covered = self
            .entries
            .values()
            .find(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
            .map(|e| e.slot.slot_id());
        if let Some(longer) = covered {
            self.touch(longer);
            return vec![slot];
        }
        let redundant: Vec<SlotId> = self
            .entries
            .values()
            .filter(|e| tokens.starts_with(&e.tokens))
            .map(|e| e.slot.slot_id())
            .collect();
        let handed_back = redundant
            .iter()
            .filter_map(|id| self.remove(*id).map(|(slot, _)| slot))
            .collect();
        let id = slot.slot_id();
        let hashes = self.block_hashes(&tokens);
        for hash in &hashes {
            self.index.entry(*hash).or_default().push(id);
        }
        let last_used = self.tick();
        self.entries.insert(
            id,
            Entry {
                slot,
                tokens,
                hashes,
                last_used,
            },
        );
        handed_back
    }

    /// Takes `slot`'s entry out of the cache: its slot handle and tokens.
    pub fn remove(&mut self, slot: SlotId) -> Option<(H, Vec<TokenId>)> {
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
        match self.lru(keep) {
            Some(id) => self.remove(id).is_some(),
            None => false,
        }
    }

    /// The least recently used entry other than `keep` (the next to be evicted).
    pub fn lru(&self, keep: Option<SlotId>) -> Option<SlotId> {
        self.entries
            .values()
            .filter(|e| Some(e.slot.slot_id()) != keep)
            .min_by_key(|e| e.last_used)
            .map(|e| e.slot.slot_id())
    }

    /// The cached slots, least recently used first (the eviction order).
    pub fn lru_order(&self) -> Vec<SlotId> {
        let mut entries: Vec<(u64, SlotId)> = self
            .entries
            .values()
            .map(|e| (e.last_used, e.slot.slot_id()))
            .collect();
        entries.sort_unstable();
        entries.into_iter().map(|(_, id)| id).collect()
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

    /// Every block hashes to the same value (or to one of a few): the worst collisions.
    #[derive(Clone, Copy)]
    struct Colliding {
        buckets: u64,
    }

    struct CollidingHasher {
        buckets: u64,
        sum: u64,
    }

    impl std::hash::Hasher for CollidingHasher {
        fn finish(&self) -> u64 {
            self.sum % self.buckets
        }
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.sum = self.sum.wrapping_add(b as u64);
            }
        }
    }

    impl BuildHasher for Colliding {
        type Hasher = CollidingHasher;
        fn build_hasher(&self) -> CollidingHasher {
            CollidingHasher {
                buckets: self.buckets,
                sum: 0,
            }
        }
    }

    #[test]
    fn colliding_block_hashes_at_different_depths_never_panic_or_give_a_wrong_hit() {
        let mut arena = arena(4);
        let mut cache = PrefixCache::with_hasher(Colliding { buckets: 1 });
        // One block cached; the prompt's three blocks all "hit" the same hash.
        let short = arena.allocate().unwrap();
        let short_id = short.id();
        cache.insert(short, tokens(0..16));
        let prompt = tokens(1000..1048);
        assert_eq!(cache.longest_match(&prompt, prompt.len()), None);
        // A real shared block under colliding deeper levels is still found.
        let mut prompt = tokens(0..16);
        prompt.extend(500..540);
        let m = cache.longest_match(&prompt, prompt.len()).unwrap();
        assert_eq!((m.slot, m.len, m.entry_len), (short_id, 16, 16));
    }

    /// The cache's answers, computed the plain way over a list of entries.
    #[derive(Default)]
    struct Naive {
        entries: Vec<(SlotId, Vec<TokenId>)>,
    }

    impl Naive {
        fn longest(&self, prompt: &[TokenId], limit: usize) -> usize {
            let prompt = &prompt[..limit.min(prompt.len())];
            self.entries
                .iter()
                .map(|(_, t)| common_prefix(t, prompt))
                .filter(|&l| l >= BLOCK)
                .max()
                .unwrap_or(0)
        }

        fn insert(&mut self, id: SlotId, tokens: Vec<TokenId>) {
            if tokens.len() < BLOCK || self.entries.iter().any(|(_, e)| e.starts_with(&tokens)) {
                return;
            }
            self.entries.retain(|(_, e)| !tokens.starts_with(e));
            self.entries.push((id, tokens));
        }
    }

    fn drive<S: BuildHasher>(mut cache: PrefixCache<S>, seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let slots = 6;
        let mut arena = arena(slots);
        let mut naive = Naive::default();
        // A small alphabet and shared stems, so prompts share blocks often.
        let stems: Vec<Vec<TokenId>> = (0..3)
            .map(|_| (0..40).map(|_| rng.random_range(0..4)).collect())
            .collect();
        let sequence = |rng: &mut rand_chacha::ChaCha8Rng| {
            let stem = &stems[rng.random_range(0..stems.len())];
            let keep = rng.random_range(0..=stem.len());
            let mut t = stem[..keep].to_vec();
            let extra = rng.random_range(0..40);
            t.extend((0..extra).map(|_| rng.random_range(0..4)));
            t
        };
        for step in 0..3000 {
            match rng.random_range(0..10) {
                0..=3 => {
                    if arena.free_slots() == 0 && !cache.evict_lru(None) {
                        continue;
                    }
                    // Mirror the eviction in the naive model.
                    naive.entries.retain(|(id, _)| cache.holds(*id));
                    let Some(slot) = arena.allocate() else {
                        continue;
                    };
                    let id = slot.id();
                    let t = sequence(&mut rng);
                    cache.insert(slot, t.clone());
                    naive.insert(id, t);
                }
                4 => {
                    cache.evict_lru(None);
                    naive.entries.retain(|(id, _)| cache.holds(*id));
                }
                5 => {
                    if let Some(&(id, _)) = naive.entries.first() {
                        let (slot, t) = cache.remove(id).expect("a naive entry is cached");
                        assert_eq!(slot.id(), id);
                        assert!(naive.entries.iter().any(|(i, e)| *i == id && *e == t));
                        naive.entries.retain(|(i, _)| *i != id);
                    }
                }
                _ => {
                    let prompt = sequence(&mut rng);
                    let limit = rng.random_range(0..=prompt.len() + 2);
                    let want = naive.longest(&prompt, limit);
                    match cache.longest_match(&prompt, limit) {
                        None => assert_eq!(want, 0, "step {step}: missed a {want}-token match"),
                        Some(m) => {
                            assert_eq!(m.len, want, "step {step}");
                            let (_, entry) = naive
                                .entries
                                .iter()
                                .find(|(id, _)| *id == m.slot)
                                .expect("the match names a cached entry");
                            assert_eq!(entry.len(), m.entry_len);
                            assert_eq!(entry[..m.len], prompt[..m.len], "step {step}");
                            if let Some(id) = naive.entries.first().map(|e| e.0) {
                                cache.touch(id);
                            }
                        }
                    }
                }
            }
            assert_eq!(cache.len(), naive.entries.len(), "step {step}");
            assert_eq!(
                arena.free_slots() + cache.len(),
                slots,
                "step {step}: a slot leaked"
            );
        }
    }

    #[test]
    fn insert_evict_and_lookup_agree_with_a_naive_model_under_any_hashing() {
        for seed in 0..8 {
            drive(PrefixCache::new(), seed);
            drive(PrefixCache::with_hasher(Colliding { buckets: 1 }), seed);
            drive(PrefixCache::with_hasher(Colliding { buckets: 3 }), seed);
        }
    }
}
