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
//!
//! The bytes live in a [`KvStorage`]: host memory, or device memory on the GPU a CUDA session
//! runs on (`kv_storage`), in the graph's KV type (float32, or float16 for an f16 export).

use std::cell::RefCell;
use std::ffi::c_void;
use std::rc::Rc;

pub use super::kv_storage::{KvDtype, KvPlacement};
use super::kv_storage::{KvPart, KvStorage, Run};
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
    /// Element type of the cached keys and values.
    pub dtype: KvDtype,
}

impl KvShape {
    /// Elements of one slot in one layer's key (or value) buffer.
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
            .saturating_mul(2 * self.dtype.bytes())
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

/// The slot count of an arena sized by memory: as many slots of `shape` as fit in
/// `budget_bytes`. `Err` when not even one does.
pub fn slots_in_budget(shape: KvShape, budget_bytes: usize) -> Result<usize, EngineError> {
    let per_slot = shape.arena_bytes(1);
    match budget_bytes.checked_div(per_slot) {
        Some(slots) if slots >= 1 => Ok(slots),
        _ => Err(EngineError::KvBudgetTooSmall {
            budget: budget_bytes,
            max_len: shape.max_len,
            per_slot,
        }),
    }
}

/// Per-layer key and value buffers plus the free list of slots.
pub struct KvArena {
    shape: KvShape,
    slots: usize,
    storage: KvStorage,
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
    /// Allocates the arena in host memory (zeroed pages are only committed when first written).
    pub fn new(shape: KvShape, slots: usize) -> Result<Self, EngineError> {
        Self::on(KvPlacement::Host, shape, slots)
    }

    /// Allocates the arena at `placement` (on a GPU: one zeroed device allocation per layer
    /// buffer, refused when the device has less free memory than it needs).
    pub fn on(placement: KvPlacement, shape: KvShape, slots: usize) -> Result<Self, EngineError> {
        if slots == 0 || shape.max_len == 0 {
            return Err(EngineError::InvalidConfig(
                "the KV arena needs at least one slot and max_seq_len > 0".into(),
            ));
        }
        let per_layer = slots
            .checked_mul(shape.slot_elems())
            .ok_or_else(|| EngineError::InvalidConfig("the KV arena is too large".into()))?;
        let too_large = |bytes, free| EngineError::KvTooLarge {
            slots,
            max_len: shape.max_len,
            bytes,
            available: Some(free),
        };
        let storage = KvStorage::new(placement, shape.dtype, shape.layers, per_layer, too_large)?;
        // Lowest slot ids are handed out first (pop from the end), keeping the batch dense.
        let free = (0..slots).rev().map(SlotId).collect();
        Ok(Self {
            shape,
            slots,
            storage,
            free: Rc::new(RefCell::new(free)),
        })
    }

    /// Where the arena's memory is (host, or the GPU it was allocated on).
    pub fn placement(&self) -> KvPlacement {
        self.storage.placement()
    }

    /// The runs that move the first `len` positions of slot `from` to slot `to`, in every
    /// layer, part and head.
    fn prefix_runs(&self, from: SlotId, to: SlotId, len: usize) -> Vec<Run> {
        let s = self.shape;
        let mut runs = Vec::with_capacity(2 * s.layers * s.kv_heads);
        for layer in 0..s.layers {
            for part in [KvPart::Keys, KvPart::Values] {
                for h in 0..s.kv_heads {
                    let head = h * s.max_len * s.head_dim;
                    runs.push(Run {
                        layer,
                        part,
                        from: from.0 * s.slot_elems() + head,
                        to: to.0 * s.slot_elems() + head,
                        len: len * s.head_dim,
                    });
                }
            }
        }
        runs
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

    /// The free slots (in no particular order).
    pub fn free_ids(&self) -> Vec<SlotId> {
        self.free.borrow().clone()
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
        if from == to || len == 0 {
            return Ok(());
        }
        let runs = self.prefix_runs(from, to, len);
        self.storage.copy(&runs)
    }

    /// Exchanges the first `len` cached positions of slots `a` and `b`, in every layer and
    /// head (a finished sequence keeps its rows for the prefix cache while the last decoding
    /// sequence moves into its slot).
    pub fn swap_prefix(&mut self, a: SlotId, b: SlotId, len: usize) -> Result<(), EngineError> {
        self.check_len(len)?;
        if a == b || len == 0 {
            return Ok(());
        }
        let runs = self.prefix_runs(a, b, len);
        self.storage.swap(&runs)
    }

    /// Addresses of slot `lo` of layer `layer` (keys, values), for binding a view of slots
    /// `lo..lo+n` as a `[n, kv_heads, max_len, head_dim]` tensor: host addresses, or device
    /// addresses on the GPU of [`KvArena::placement`].
    ///
    /// The addresses stay valid while the arena lives: its buffers are never reallocated.
    pub(crate) fn layer_ptrs(&mut self, layer: usize, lo: SlotId) -> (*mut c_void, *mut c_void) {
        // `offset` is within the buffer for any slot id the arena handed out.
        let offset = lo.0 * self.shape.slot_elems();
        let k = self.storage.ptr(layer, KvPart::Keys, offset);
        let v = self.storage.ptr(layer, KvPart::Values, offset);
        (k, v)
    }

    /// The cached keys of one slot, layer and head as float32: `[max_len, head_dim]` (tests).
    pub fn key_rows(
        &self,
        layer: usize,
        slot: SlotId,
        head: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let s = self.shape;
        let start = slot.0 * s.slot_elems() + head * s.max_len * s.head_dim;
        self.storage
            .read(layer, KvPart::Keys, start, s.max_len * s.head_dim)
    }

    /// Writes `data` (converted to the arena's type) into the keys of one slot, layer and head
    /// from position 0 (tests and the GPU parity harness).
    pub fn write_key_rows(
        &mut self,
        layer: usize,
        slot: SlotId,
        head: usize,
        data: &[f32],
    ) -> Result<(), EngineError> {
        let s = self.shape;
        if data.len() > s.max_len * s.head_dim || slot.0 >= self.slots || head >= s.kv_heads {
            return Err(EngineError::Internal(
                "write_key_rows outside the slot".into(),
            ));
        }
        let start = slot.0 * s.slot_elems() + head * s.max_len * s.head_dim;
        self.storage.write(layer, KvPart::Keys, start, data)
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
            dtype: KvDtype::F32,
        }
    }

    #[test]
    fn a_memory_budget_holds_as_many_whole_slots_as_fit_and_at_least_one() {
        let per_slot = shape().arena_bytes(1); // 2 layers x 2 heads x 4 x 3 x (K + V) x 4 bytes
        assert_eq!(per_slot, 384);
        assert_eq!(slots_in_budget(shape(), 384).unwrap(), 1);
        assert_eq!(slots_in_budget(shape(), 10 * 384 + 383).unwrap(), 10);
        let half_length = KvShape {
            max_len: 2,
            ..shape()
        };
        assert_eq!(slots_in_budget(half_length, 10 * 384).unwrap(), 20);
        let err = slots_in_budget(shape(), 383).unwrap_err().to_string();
        assert!(
            err.contains("383 bytes") && err.contains("384 bytes"),
            "{err}"
        );
    }

    #[test]
    fn an_arena_larger_than_memory_is_refused_with_its_size() {
        assert_eq!(
            check_arena_fits(shape(), 2).unwrap(),
            2 * 2 * 2 * 2 * 4 * 3 * 4
        );
        let f16 = KvShape {
            dtype: KvDtype::F16,
            ..shape()
        };
        assert_eq!(f16.arena_bytes(2), 2 * 2 * 2 * 2 * 4 * 3 * 2);
        let smollm = KvShape {
            layers: 30,
            kv_heads: 3,
            max_len: 2048,
            head_dim: 64,
            dtype: KvDtype::F32,
        };
        // 45 KiB per token: 64 slots of 2048 tokens are 5.6 GiB.
        assert_eq!(smollm.arena_bytes(1) / 2048, 46_080);
        let err = check_arena_fits(smollm, 1 << 40).unwrap_err();
        assert!(
            matches!(err, EngineError::KvTooLarge { slots, .. } if slots == 1 << 40),
            "{err}"
        );
        // A fact, no CLI advice: the CLI and the server phrase the remedy in their own words.
        assert!(!err.to_string().contains("--"), "{err}");
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

    /// Fills every head of every slot's keys with distinct values (exact in float16 too).
    fn numbered(dtype: KvDtype) -> KvArena {
        let mut arena = KvArena::new(KvShape { dtype, ..shape() }, 2).unwrap();
        let s = arena.shape();
        for layer in 0..s.layers {
            for slot in 0..2 {
                for head in 0..s.kv_heads {
                    let base = (((layer * 2 + slot) * s.kv_heads + head) * 100) as f32;
                    let rows: Vec<f32> = (0..s.max_len * s.head_dim)
                        .map(|i| base + i as f32)
                        .collect();
                    arena
                        .write_key_rows(layer, SlotId(slot), head, &rows)
                        .unwrap();
                }
            }
        }
        arena
    }

    #[test]
    fn copy_and_swap_move_only_the_prefix_rows_of_every_head_in_both_types() {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let mut arena = numbered(dtype);
            let s = arena.shape();
            let rows =
                |a: &KvArena, layer, slot, head| a.key_rows(layer, SlotId(slot), head).unwrap();
            let before: Vec<Vec<f32>> = (0..s.kv_heads).map(|h| rows(&arena, 1, 1, h)).collect();
            arena.copy_prefix(SlotId(0), SlotId(1), 2).unwrap();
            for (head, before) in before.iter().enumerate() {
                let src = rows(&arena, 1, 0, head);
                let dst = rows(&arena, 1, 1, head);
                assert_eq!(&dst[..2 * s.head_dim], &src[..2 * s.head_dim], "{dtype:?}");
                assert_eq!(
                    &dst[2 * s.head_dim..],
                    &before[2 * s.head_dim..],
                    "{dtype:?}"
                );
            }
            let before0 = rows(&arena, 0, 0, 1);
            let before1 = rows(&arena, 0, 1, 1);
            arena.swap_prefix(SlotId(1), SlotId(0), 3).unwrap();
            let row = 3 * s.head_dim;
            assert_eq!(&rows(&arena, 0, 0, 1)[..row], &before1[..row], "{dtype:?}");
            assert_eq!(&rows(&arena, 0, 1, 1)[..row], &before0[..row], "{dtype:?}");
            assert_eq!(&rows(&arena, 0, 0, 1)[row..], &before0[row..], "{dtype:?}");
            assert!(matches!(
                arena.copy_prefix(SlotId(0), SlotId(1), 5),
                Err(EngineError::SequenceTooLong { .. })
            ));
        }
    }
}
