//! A raw device allocation: memory whose address we hand to ONNX Runtime as tensor data (the
//! KV arena's buffers, the decode step's logits), so it is a plain `cuMemAlloc` freed on drop
//! rather than a cudarc slice tracked per stream.

use std::sync::Arc;

use cudarc::driver::{result as cu, CudaContext};

use super::{GpuDevice, GpuError};

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

    /// Copies `data` into the start of the buffer (synchronously; binds its context to this
    /// thread). Refused when `data` is longer than the buffer.
    pub fn write_f32s(&self, data: &[f32]) -> Result<(), GpuError> {
        let bytes = std::mem::size_of_val(data);
        if bytes > self.bytes {
            return Err(GpuError::Input(format!(
                "{bytes} bytes written into a device buffer of {}",
                self.bytes
            )));
        }
        self.context.bind_to_thread()?;
        // SAFETY: the buffer holds at least `bytes` bytes (checked above) in its context,
        // which is current; the copy is synchronous, so `data` outlives it.
        unsafe { cu::memcpy_htod_sync(self.ptr, data) }?;
        Ok(())
    }

    /// Queues a copy of all of `src` into the start of this buffer on `device`'s stream (not
    /// waited for). Refused when `src` is larger than this buffer.
    ///
    /// # Safety
    /// Both buffers must belong to `device`'s context, which must be current on this thread
    /// (allocating them there binds it), and stay alive, unwritten by anything else, until
    /// the stream has finished the copy (synchronize it before dropping them).
    pub unsafe fn enqueue_copy_from(
        &self,
        src: &DeviceBuffer,
        device: &GpuDevice,
    ) -> Result<(), GpuError> {
        if src.bytes > self.bytes {
            return Err(GpuError::Input(format!(
                "a copy of {} bytes into a device buffer of {}",
                src.bytes, self.bytes
            )));
        }
        // SAFETY: both allocations hold at least `src.bytes` bytes (checked above); the
        // caller guarantees they share the stream's context and outlive the queued copy.
        unsafe {
            cu::memcpy_dtod_async(self.ptr, src.ptr, src.bytes, device.stream().cu_stream())
        }?;
        Ok(())
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
