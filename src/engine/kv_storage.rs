//! Where the KV arena's bytes live: host memory (bound to ONNX Runtime as CPU tensors) or one
//! device allocation per layer buffer on a GPU (bound as CUDA tensors, so a CUDA session reads
//! and writes KV in place and nothing crosses PCIe), in float32 or float16.
//!
//! Both backends speak in elements of the arena's [`KvDtype`] and expose the same three
//! operations the arena needs: a raw pointer to an element offset of a layer's key or value
//! buffer (for binding), a copy of a run of elements from one offset to another, and a swap of
//! two runs. On the device the copies are `cuMemcpyDtoDAsync` on the arena's stream, which is
//! synchronized before the call returns, so the next ONNX Runtime run (on its own stream) sees
//! them.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result as cu, CudaContext, CudaStream};

use super::EngineError;
use crate::gpu::{DeviceBuffer, GpuDevice, GpuError};

/// Element type of the cached keys and values (the decoder graph's `past_key_values.*` type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    #[default]
    F32,
    F16,
}

impl KvDtype {
    pub fn bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F32 => "float32",
            KvDtype::F16 => "float16",
        }
    }
}

/// Where the arena is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvPlacement {
    #[default]
    Host,
    /// Device memory of GPU `N` (the GPU the decoder's CUDA / TensorRT session runs on).
    Cuda(usize),
}

/// Which of a layer's two buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPart {
    Keys,
    Values,
}

/// A run of `len` elements of one buffer, from element `from` to element `to`.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub layer: usize,
    pub part: KvPart,
    pub from: usize,
    pub to: usize,
    pub len: usize,
}

/// What [`KvStorage::copy`] and [`KvStorage::swap`] do to each run.
#[derive(Debug, Clone, Copy)]
enum RunOp {
    Copy,
    Swap,
}

/// The arena's memory: `2 * layers` buffers of `elems` elements each.
pub enum KvStorage {
    Host(HostStorage),
    Cuda(CudaStorage),
}

impl KvStorage {
    /// `too_large(bytes, free)` is the error when the device has less free memory than the
    /// arena needs (the host arena is checked by `check_arena_fits` before).
    pub fn new(
        placement: KvPlacement,
        dtype: KvDtype,
        layers: usize,
        elems: usize,
        too_large: impl FnOnce(usize, usize) -> EngineError,
    ) -> Result<Self, EngineError> {
        match placement {
            KvPlacement::Host => Ok(KvStorage::Host(HostStorage::new(dtype, layers, elems))),
            KvPlacement::Cuda(ordinal) => {
                CudaStorage::new(ordinal, dtype, layers, elems, too_large).map(KvStorage::Cuda)
            }
        }
    }

    pub fn placement(&self) -> KvPlacement {
        match self {
            KvStorage::Host(_) => KvPlacement::Host,
            KvStorage::Cuda(c) => KvPlacement::Cuda(c.ordinal),
        }
    }

    /// Address of element `offset` of `layer`'s `part` buffer (host or device address).
    /// The caller keeps `offset` within the buffer.
    pub fn ptr(&mut self, layer: usize, part: KvPart, offset: usize) -> *mut c_void {
        match self {
            KvStorage::Host(h) => h.ptr(layer, part, offset),
            KvStorage::Cuda(c) => c.ptr(layer, part, offset) as *mut c_void,
        }
    }

    /// Copies every run (the runs of one call never overlap each other's destinations).
    pub fn copy(&mut self, runs: &[Run]) -> Result<(), EngineError> {
        self.apply(RunOp::Copy, runs)
    }

    /// Exchanges the elements of `from..from+len` and `to..to+len` of each run (disjoint).
    pub fn swap(&mut self, runs: &[Run]) -> Result<(), EngineError> {
        self.apply(RunOp::Swap, runs)
    }

    /// Applies `op` to every run, on the host or on the device.
    fn apply(&mut self, op: RunOp, runs: &[Run]) -> Result<(), EngineError> {
        match self {
            KvStorage::Host(h) => {
                runs.iter().for_each(|r| match op {
                    RunOp::Copy => h.copy(*r),
                    RunOp::Swap => h.swap(*r),
                });
                Ok(())
            }
            KvStorage::Cuda(c) => c.apply(op, runs).map_err(gpu_err),
        }
    }

    /// The elements of a run's source as float32 (tests and the parity harness).
    pub fn read(
        &self,
        layer: usize,
        part: KvPart,
        from: usize,
        len: usize,
    ) -> Result<Vec<f32>, EngineError> {
        match self {
            KvStorage::Host(h) => Ok(h.read(layer, part, from, len)),
            KvStorage::Cuda(c) => c.read(layer, part, from, len).map_err(gpu_err),
        }
    }

    /// Writes float32 `data` (converted to the arena's type) at element `at` (tests).
    pub fn write(
        &mut self,
        layer: usize,
        part: KvPart,
        at: usize,
        data: &[f32],
    ) -> Result<(), EngineError> {
        match self {
            KvStorage::Host(h) => {
                h.write(layer, part, at, data);
                Ok(())
            }
            KvStorage::Cuda(c) => c.write(layer, part, at, data).map_err(gpu_err),
        }
    }
}

fn gpu_err(e: GpuError) -> EngineError {
    EngineError::Internal(format!("KV arena on the GPU: {e}"))
}

fn index(layer: usize, part: KvPart) -> usize {
    2 * layer + usize::from(part == KvPart::Values)
}

/// Host buffers; float16 is kept as its bit pattern (`u16`), which is all ONNX Runtime reads.
pub enum HostStorage {
    F32(Vec<Vec<f32>>),
    F16(Vec<Vec<u16>>),
}

impl HostStorage {
    fn new(dtype: KvDtype, layers: usize, elems: usize) -> Self {
        // Zeroed pages are only committed when first written.
        match dtype {
            KvDtype::F32 => HostStorage::F32((0..2 * layers).map(|_| vec![0.0; elems]).collect()),
            KvDtype::F16 => HostStorage::F16((0..2 * layers).map(|_| vec![0; elems]).collect()),
        }
    }

    fn ptr(&mut self, layer: usize, part: KvPart, offset: usize) -> *mut c_void {
        let i = index(layer, part);
        match self {
            HostStorage::F32(b) => b[i][offset..].as_mut_ptr().cast(),
            HostStorage::F16(b) => b[i][offset..].as_mut_ptr().cast(),
        }
    }

    fn copy(&mut self, r: Run) {
        let i = index(r.layer, r.part);
        match self {
            HostStorage::F32(b) => b[i].copy_within(r.from..r.from + r.len, r.to),
            HostStorage::F16(b) => b[i].copy_within(r.from..r.from + r.len, r.to),
        }
    }

    fn swap(&mut self, r: Run) {
        fn swap_runs<T>(buf: &mut [T], a: usize, b: usize, len: usize) {
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            // The runs are disjoint, so `lo + len <= hi` and the split separates them.
            let (first, second) = buf.split_at_mut(hi);
            first[lo..lo + len].swap_with_slice(&mut second[..len]);
        }
        let i = index(r.layer, r.part);
        match self {
            HostStorage::F32(b) => swap_runs(&mut b[i], r.from, r.to, r.len),
            HostStorage::F16(b) => swap_runs(&mut b[i], r.from, r.to, r.len),
        }
    }

    fn read(&self, layer: usize, part: KvPart, from: usize, len: usize) -> Vec<f32> {
        let i = index(layer, part);
        match self {
            HostStorage::F32(b) => b[i][from..from + len].to_vec(),
            HostStorage::F16(b) => b[i][from..from + len]
                .iter()
                .map(|&x| half::f16::from_bits(x).to_f32())
                .collect(),
        }
    }

    fn write(&mut self, layer: usize, part: KvPart, at: usize, data: &[f32]) {
        let i = index(layer, part);
        match self {
            HostStorage::F32(b) => b[i][at..at + data.len()].copy_from_slice(data),
            HostStorage::F16(b) => {
                for (dst, &x) in b[i][at..at + data.len()].iter_mut().zip(data) {
                    *dst = half::f16::from_f32(x).to_bits();
                }
            }
        }
    }
}

/// One device allocation per buffer on one GPU, plus a scratch run for swaps.
pub struct CudaStorage {
    ordinal: usize,
    dtype: KvDtype,
    elems: usize,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    buffers: Vec<DeviceBuffer>,
    scratch: DeviceBuffer,
}

impl CudaStorage {
    fn new(
        ordinal: usize,
        dtype: KvDtype,
        layers: usize,
        elems: usize,
        too_large: impl FnOnce(usize, usize) -> EngineError,
    ) -> Result<Self, EngineError> {
        let device = GpuDevice::open(ordinal).map_err(gpu_err)?;
        let context = Arc::clone(device.context());
        let stream = Arc::clone(device.stream());
        let bytes = elems * dtype.bytes();
        let total = bytes.saturating_mul(2 * layers);
        let free = DeviceBuffer::free_bytes(&context).map_err(gpu_err)?;
        if total > free {
            return Err(too_large(total, free));
        }
        let buffers = (0..2 * layers)
            .map(|_| DeviceBuffer::zeroed(&context, bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(gpu_err)?;
        let scratch = DeviceBuffer::zeroed(&context, bytes).map_err(gpu_err)?;
        Ok(Self {
            ordinal,
            dtype,
            elems,
            context,
            stream,
            buffers,
            scratch,
        })
    }

    fn ptr(&self, layer: usize, part: KvPart, offset: usize) -> u64 {
        self.buffers[index(layer, part)].ptr() + (offset * self.dtype.bytes()) as u64
    }

    fn check(&self, r: &Run) -> Result<(), GpuError> {
        let fits = |at: usize| at.checked_add(r.len).is_some_and(|end| end <= self.elems);
        if index(r.layer, r.part) < self.buffers.len() && fits(r.from) && fits(r.to) {
            Ok(())
        } else {
            Err(GpuError::Input(format!(
                "KV run {r:?} is outside the arena"
            )))
        }
    }

    fn dtod(&self, dst: u64, src: u64, elems: usize) -> Result<(), GpuError> {
        // SAFETY: callers pass addresses inside this storage's allocations with `elems`
        // elements after them (checked by `check`), and the context is current.
        unsafe {
            cu::memcpy_dtod_async(
                dst,
                src,
                elems * self.dtype.bytes(),
                self.stream.cu_stream(),
            )
        }?;
        Ok(())
    }

    /// Applies `op` to every run (each checked against the arena first), then waits for
    /// the stream.
    fn apply(&mut self, op: RunOp, runs: &[Run]) -> Result<(), GpuError> {
        self.context.bind_to_thread()?;
        for r in runs {
            self.check(r)?;
            let (from, to) = (
                self.ptr(r.layer, r.part, r.from),
                self.ptr(r.layer, r.part, r.to),
            );
            match op {
                RunOp::Copy => self.dtod(to, from, r.len)?,
                RunOp::Swap => {
                    // The stream orders the three copies, so one scratch run serves every swap.
                    self.dtod(self.scratch.ptr(), from, r.len)?;
                    self.dtod(from, to, r.len)?;
                    self.dtod(to, self.scratch.ptr(), r.len)?;
                }
            }
        }
        Ok(self.stream.synchronize()?)
    }

    fn read(
        &self,
        layer: usize,
        part: KvPart,
        from: usize,
        len: usize,
    ) -> Result<Vec<f32>, GpuError> {
        self.context.bind_to_thread()?;
        let r = Run {
            layer,
            part,
            from,
            to: from,
            len,
        };
        self.check(&r)?;
        let src = self.ptr(layer, part, from);
        Ok(match self.dtype {
            KvDtype::F32 => {
                let mut out = vec![0f32; len];
                // SAFETY: `src` has `len` elements (checked); synchronized before `out` is read.
                unsafe { cu::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream()) }?;
                self.stream.synchronize()?;
                out
            }
            KvDtype::F16 => {
                let mut out = vec![0u16; len];
                // SAFETY: as above.
                unsafe { cu::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream()) }?;
                self.stream.synchronize()?;
                out.iter()
                    .map(|&x| half::f16::from_bits(x).to_f32())
                    .collect()
            }
        })
    }

    fn write(
        &mut self,
        layer: usize,
        part: KvPart,
        at: usize,
        data: &[f32],
    ) -> Result<(), GpuError> {
        self.context.bind_to_thread()?;
        let r = Run {
            layer,
            part,
            from: at,
            to: at,
            len: data.len(),
        };
        self.check(&r)?;
        let dst = self.ptr(layer, part, at);
        match self.dtype {
            KvDtype::F32 => {
                // SAFETY: `dst` has room for `data` (checked); synchronized before returning.
                unsafe { cu::memcpy_htod_async(dst, data, self.stream.cu_stream()) }?;
                self.stream.synchronize()?;
            }
            KvDtype::F16 => {
                let bits: Vec<u16> = data
                    .iter()
                    .map(|&x| half::f16::from_f32(x).to_bits())
                    .collect();
                // SAFETY: as above; `bits` lives until the synchronize.
                unsafe { cu::memcpy_htod_async(dst, &bits, self.stream.cu_stream()) }?;
                self.stream.synchronize()?;
            }
        }
        Ok(())
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        // Every copy that used the buffers finishes before they are freed (fields drop after).
        if self.context.bind_to_thread().is_ok() {
            let _ = self.stream.synchronize();
        }
    }
}
