//! The KV arena: preallocated per-layer key/value memory `[slots, kv_heads, max_len, head_dim]`
//! that the decoder graph's GroupQueryAttention reads and writes in place.
//!
//! GroupQueryAttention conventions this arena relies on (ONNX Runtime 1.31, measured when the
//! arena was designed and re-checked by `tests/engine.rs`):
//! - `past_*` and `present_*` are bound to the SAME buffer `[B, kv_heads, MAX, head_dim]`; the
//!   op writes the new rows of row `b` at positions `seqlens_k[b] - S + 1 ..= seqlens_k[b]`.
//! - the graph derives `seqlens_k[b] = sum(attention_mask[b]) - 1` and
//!   `total_sequence_length = attention_mask.shape[1]`, so a right-padded mask whose row `b` has
//!   `past_b + new_b` ones expresses a ragged batch.
//! - the buffer's first dimension equals the batch, but any contiguous slot range works in
//!   place: a step binds a view of slots `lo..hi` without copying.
//! - ONNX Runtime does not bound-check `seqlens_k < MAX` for us on every version: callers check
//!   lengths against `max_len` before a step (`KvArena::check_len`).
//!
//! A slot is owned by a [`Slot`] handle and returns to the free list when the handle drops.

use std::cell::RefCell;
use std::rc::Rc;

use super::EngineError;

/// Index of a slot in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotId(pub usize);

/// Geometry of one layer's cache for one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub max_len: usize,
    pub head_dim: usize,
}

impl KvShape {
    /// Floats of one slot in one layer's key (or value) buffer.
    pub fn slot_elems(&self) -> usize {
        self.kv_heads * self.max_len * self.head_dim
    }

    /// Bytes the whole arena takes for `slots` slots (keys and values, every layer).
    /// Saturates at `usize::MAX` (which no machine has).
    pub fn arena_bytes(&self, slots: usize) -> usize {
        self.layers
            .saturating_mul(slots)
            .saturating_mul(self.kv_heads)
            .saturating_mul(self.max_len)
            .saturating_mul(self.head_dim)
            .saturating_mul(2 * std::mem::size_of::<f32>())
    }
}

/// Bytes of memory the system can still give (Linux `MemAvailable`), if known.
pub fn available_memory_bytes() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Checks that an arena of `slots` slots of `shape` fits the memory available (the arena's
/// pages are committed as sequences write them, so an arena that does not fit fails late,
/// under load, unless refused here). Returns the arena's size in bytes.
pub fn check_arena_fits(shape: KvShape, slots: usize) -> Result<usize, EngineError> {
    let bytes = shape.arena_bytes(slots);
    let available = available_memory_bytes();
    match available {
        _ if bytes == usize::MAX => Err(EngineError::KvTooLarge {
            slots,
            max_len: shape.max_len,
            bytes,
            available,
        }),
        Some(available) if bytes > available => Err(EngineError::KvTooLarge {
            slots,
            max_len: shape.max_len,
            bytes,
            available: Some(available),
        }),
        _ => Ok(bytes),
    }
}

/// Per-layer key and value buffers plus the free list of slots.
pub struct KvArena {
    shape: KvShape,
    slots: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    free: Rc<RefCell<Vec<SlotId>>>,
}

/// Ownership of one slot; dropping it returns the slot to the arena.
#[derive(Debug)]
pub struct Slot {
    id: SlotId,
    free: Rc<RefCell<Vec<SlotId>>>,
}

impl Slot {
    pub fn id(&self) -> SlotId {
        self.id
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.free.borrow_mut().push(self.id);
    }
}

impl KvArena {
    /// Allocates the arena (zeroed pages are only committed when first written).
    pub fn new(shape: KvShape, slots: usize) -> Result<Self, EngineError> {
        if slots == 0 || shape.max_len == 0 {
            return Err(EngineError::InvalidConfig(
                "the KV arena needs at least one slot and max_seq_len > 0".into(),
            ));
        }
        let per_layer = slots * shape.slot_elems();
        let buffers = || {
            (0..shape.layers)
                .map(|_| vec![0.0f32; per_layer])
                .collect::<Vec<_>>()
        };
        // Lowest slot ids are handed out first (pop from the end), keeping the batch dense.
        let free = (0..slots).rev().map(SlotId).collect();
        Ok(Self {
            shape,
            slots,
            keys: buffers(),
            values: buffers(),
            free: Rc::new(RefCell::new(free)),
        })
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn free_slots(&self) -> usize {
        self.free.borrow().len()
    }

    /// Takes the lowest free slot, if any.
    pub fn allocate(&mut self) -> Option<Slot> {
        let mut free = self.free.borrow_mut();
        free.sort_unstable_by(|a, b| b.cmp(a));
        let id = free.pop()?;
        Some(Slot {
            id,
            free: Rc::clone(&self.free),
        })
    }

    /// Takes slot `id` if it is free (to place a sequence at a given position of the batch).
    pub fn take(&mut self, id: SlotId) -> Option<Slot> {
        let mut free = self.free.borrow_mut();
        let pos = free.iter().position(|&s| s == id)?;
        free.swap_remove(pos);
        Some(Slot {
            id,
            free: Rc::clone(&self.free),
        })
    }

    /// Errors when a sequence of `len` tokens would not fit a slot.
    pub fn check_len(&self, len: usize) -> Result<(), EngineError> {
        if len > self.shape.max_len {
            Err(EngineError::SequenceTooLong {
                tokens: len,
                limit: self.shape.max_len,
            })
        } else {
            Ok(())
        }
    }

    /// Copies the first `len` cached positions of `from` into `to`, in every layer and head
    /// (the prefix-fork primitive: N samples of one prompt, DARWIN replacement).
    pub fn copy_prefix(&mut self, from: SlotId, to: SlotId, len: usize) -> Result<(), EngineError> {
        self.check_len(len)?;
        if from == to {
            return Ok(());
        }
        let s = self.shape;
        let row = len * s.head_dim;
        for buffers in [&mut self.keys, &mut self.values] {
            for layer in buffers.iter_mut() {
                for h in 0..s.kv_heads {
                    let src = from.0 * s.slot_elems() + h * s.max_len * s.head_dim;
                    let dst = to.0 * s.slot_elems() + h * s.max_len * s.head_dim;
                    layer.copy_within(src..src + row, dst);
                }
            }
        }
        Ok(())
    }

    /// Exchanges the first `len` cached positions of slots `a` and `b`, in every layer and
    /// head (a finished sequence keeps its rows for the prefix cache while the last decoding
    /// sequence moves into its slot).
    pub fn swap_prefix(&mut self, a: SlotId, b: SlotId, len: usize) -> Result<(), EngineError> {
        self.check_len(len)?;
        if a == b {
            return Ok(());
        }
        let s = self.shape;
        let row = len * s.head_dim;
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        for buffers in [&mut self.keys, &mut self.values] {
            for layer in buffers.iter_mut() {
                // Slot `lo` lies wholly before slot `hi`, so the split separates them.
                let (first, second) = layer.split_at_mut(hi.0 * s.slot_elems());
                for h in 0..s.kv_heads {
                    let head = h * s.max_len * s.head_dim;
                    let x = lo.0 * s.slot_elems() + head;
                    first[x..x + row].swap_with_slice(&mut second[head..head + row]);
                }
            }
        }
        Ok(())
    }

    /// Raw pointers to slot `lo` of layer `layer` (keys, values), for binding a view of
    /// slots `lo..lo+n` as a `[n, kv_heads, max_len, head_dim]` tensor.
    ///
    /// The pointers stay valid while the arena lives: its buffers are never reallocated.
    pub(crate) fn layer_ptrs(&mut self, layer: usize, lo: SlotId) -> (*mut f32, *mut f32) {
        let offset = lo.0 * self.shape.slot_elems();
        // `offset` is within the buffer for any slot id the arena handed out.
        let k = self.keys[layer][offset..].as_mut_ptr();
        let v = self.values[layer][offset..].as_mut_ptr();
        (k, v)
    }

    /// The cached keys of one slot, layer and head: `[max_len, head_dim]` (for tests).
    pub fn key_rows(&self, layer: usize, slot: SlotId, head: usize) -> &[f32] {
        let s = self.shape;
        let start = slot.0 * s.slot_elems() + head * s.max_len * s.head_dim;
        &self.keys[layer][start..start + s.max_len * s.head_dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> KvShape {
        KvShape {
            layers: 2,
            kv_heads: 2,
            max_len: 4,
            head_dim: 3,
        }
    }

    #[test]
    fn an_arena_larger_than_memory_is_refused_with_its_size() {
        assert_eq!(
            check_arena_fits(shape(), 2).unwrap(),
            2 * 2 * 2 * 2 * 4 * 3 * 4
        );
        let smollm = KvShape {
            layers: 30,
            kv_heads: 3,
            max_len: 2048,
            head_dim: 64,
        };
        // 45 KiB per token: 64 slots of 2048 tokens are 5.6 GiB.
        assert_eq!(smollm.arena_bytes(1) / 2048, 46_080);
        let err = check_arena_fits(smollm, 1 << 40).unwrap_err();
        assert!(
            matches!(err, EngineError::KvTooLarge { slots, .. } if slots == 1 << 40),
            "{err}"
        );
        assert!(err.to_string().contains("lower --kv-slots"), "{err}");
        assert_eq!(smollm.arena_bytes(usize::MAX), usize::MAX);
    }

    #[test]
    fn slots_return_to_the_free_list_on_drop() {
        let mut arena = KvArena::new(shape(), 2).unwrap();
        let a = arena.allocate().unwrap();
        let b = arena.allocate().unwrap();
        assert_eq!((a.id(), b.id()), (SlotId(0), SlotId(1)));
        assert!(arena.allocate().is_none());
        drop(a);
        assert_eq!(arena.free_slots(), 1);
        assert_eq!(arena.allocate().unwrap().id(), SlotId(0));
    }

    #[test]
    fn copy_prefix_copies_only_the_prefix_rows_of_every_head() {
        let mut arena = KvArena::new(shape(), 2).unwrap();
        let s = arena.shape();
        for layer in 0..s.layers {
            for (i, x) in arena.keys[layer].iter_mut().enumerate() {
                *x = i as f32;
            }
        }
        arena.copy_prefix(SlotId(0), SlotId(1), 2).unwrap();
        for head in 0..s.kv_heads {
            let src = arena.key_rows(1, SlotId(0), head).to_vec();
            let dst = arena.key_rows(1, SlotId(1), head);
            assert_eq!(&dst[..2 * s.head_dim], &src[..2 * s.head_dim]);
            assert_ne!(&dst[2 * s.head_dim..], &src[2 * s.head_dim..]);
        }
        let before0 = arena.key_rows(0, SlotId(0), 1).to_vec();
        let before1 = arena.key_rows(0, SlotId(1), 1).to_vec();
        arena.swap_prefix(SlotId(1), SlotId(0), 3).unwrap();
        let row = 3 * s.head_dim;
        assert_eq!(&arena.key_rows(0, SlotId(0), 1)[..row], &before1[..row]);
        assert_eq!(&arena.key_rows(0, SlotId(1), 1)[..row], &before0[..row]);
        assert_eq!(&arena.key_rows(0, SlotId(0), 1)[row..], &before0[row..]);
        assert!(matches!(
            arena.copy_prefix(SlotId(0), SlotId(1), 5),
            Err(EngineError::SequenceTooLong { .. })
        ));
    }
}
