//! A raw device allocation: memory whose address we hand to ONNX Runtime as tensor data (the
//! KV arena's buffers, the decode step's logits), so it is a plain `cuMemAlloc` freed on drop
//! rather than a cudarc slice tracked per stream.

use std::sync::Arc;

use cudarc::driver::{result as cu, CudaContext};

use super::GpuError;

/// `bytes` of zeroed device memory in one context, freed when dropped.
pub struct DeviceBuffer {
    context: Arc<CudaContext>,
    ptr: cudarc::driver::sys::CUdeviceptr,
    bytes: usize,
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("ptr", &self.ptr)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl DeviceBuffer {
    /// Allocates and zeroes `bytes` (at least one) in `context`, binding it to this thread.
    pub fn zeroed(context: &Arc<CudaContext>, bytes: usize) -> Result<Self, GpuError> {
        context.bind_to_thread()?;
        // SAFETY: the context is current on this thread (bound above); the allocation is
        // `bytes.max(1)` long and zeroed synchronously before anyone reads it; `Drop` frees it
        // once.
        let ptr = unsafe {
            let ptr = cu::malloc_sync(bytes.max(1))?;
            cu::memset_d8_sync(ptr, 0, bytes)?;
            ptr
        };
        Ok(Self {
            context: Arc::clone(context),
            ptr,
            bytes,
        })
    }

    /// Free device memory in `context` (bound to this thread), in bytes.
    pub fn free_bytes(context: &Arc<CudaContext>) -> Result<usize, GpuError> {
        context.bind_to_thread()?;
        Ok(cu::mem_get_info()?.0)
    }

    /// The device address of byte 0.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.context.bind_to_thread().is_err() {
            return;
        }
        // SAFETY: the pointer came from `malloc_sync` in this context and is freed once; the
        // owners synchronize the streams that used it before dropping it (see `CudaStorage`
        // and `DeviceLogits`), and `free_sync` itself waits for outstanding work on it.
        let _ = unsafe { cu::free_sync(self.ptr) };
    }
}
