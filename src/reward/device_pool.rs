//! Reward-head pooling on the GPU. On a CUDA / TensorRT session, a hidden-states reward
//! graph writes its `[B, T, H]` output into device memory (bound through `IoBinding`), and
//! `kernels/reward_pool.cu` gathers each row's last real token and applies the head there:
//! only the masks go up and one reward per row comes back, instead of the hidden states
//! (`B · T · H` float32s per batch) crossing PCIe.
//!
//! The CPU pooling in `reward::pool` is the reference and the fallback: when the kernels
//! cannot load (no driver, no NVRTC) or the graph's output is not float32, the model pools on
//! the host as before and says why once.
//!
//! The GPU room knows nothing of rewards: [`Hidden`] becomes its [`HiddenStates`] here.

use ort::memory::MemoryInfo;
use parking_lot::Mutex;

use super::pool::Hidden;
use crate::gpu::{DeviceBuffer, DeviceHead, GpuDevice, GpuError, GpuPool, HiddenStates};
use crate::runtime::{self, Device};

impl<'a> From<Hidden<'a>> for HiddenStates<'a> {
    fn from(h: Hidden<'a>) -> Self {
        HiddenStates {
            data: h.data,
            rows: h.batch,
            seq: h.seq,
            dim: h.hidden,
        }
    }
}

/// The pooling kernels, the head and the output memory description on one GPU.
pub struct DeviceHeadPool {
    device: GpuDevice,
    pool: GpuPool,
    head: DeviceHead,
    memory: MemoryInfo<'static>,
    /// The last batch's output buffer, handed back by [`Self::recycle`]: reused by the next
    /// batch that fits, so a scoring call does not allocate (and free, which synchronizes the
    /// device) once per batch.
    spare: Mutex<Option<DeviceBuffer>>,
}

impl std::fmt::Debug for DeviceHeadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceHeadPool")
            .field("device", &self.device)
            .field("dim", &self.head.dim())
            .finish()
    }
}

impl DeviceHeadPool {
    /// Loads the kernels on GPU `ordinal` and uploads the head row (`weight` over the hidden
    /// size, `bias`).
    pub fn open(ordinal: usize, weight: &[f32], bias: f32) -> Result<Self, GpuError> {
        let device = GpuDevice::open(ordinal)?;
        let pool = GpuPool::new(&device)?;
        let head = pool.upload_head(weight, &[bias], 1, weight.len())?;
        let memory = runtime::cuda_memory_info(ordinal)
            .map_err(|e| GpuError::Input(format!("device memory info: {e}")))?;
        Ok(Self {
            device,
            pool,
            head,
            memory,
            spare: Mutex::new(None),
        })
    }

    /// Device pooling for a session on `device` when it is a GPU, the graph's output is
    /// float32 and the kernels load; otherwise `None` (host pooling), the reason logged.
    pub fn for_session(
        device: Device,
        output_f32: bool,
        weight: &[f32],
        bias: f32,
    ) -> Option<Self> {
        let ordinal = device.gpu_ordinal()?;
        if !output_f32 {
            tracing::warn!("the reward graph's output is not float32; it is pooled on the host");
            return None;
        }
        match Self::open(ordinal, weight, bias) {
            Ok(pool) => Some(pool),
            Err(e) => {
                tracing::warn!(error = %e, "the pooling kernels are unavailable; reward hidden states come to the host and the CPU pools them");
                None
            }
        }
    }

    /// The hidden size the head reads.
    pub fn dim(&self) -> usize {
        self.head.dim()
    }

    /// Where ONNX Runtime should see the output buffer.
    pub fn memory(&self) -> &MemoryInfo<'static> {
        &self.memory
    }

    /// Device memory for one batch's output `[rows, seq, dim]` float32 (at least that many
    /// bytes): the spare buffer when it is large enough, else a new one.
    pub fn output_buffer(&self, rows: usize, seq: usize) -> Result<DeviceBuffer, GpuError> {
        let bytes = rows
            .checked_mul(seq)
            .and_then(|n| n.checked_mul(self.dim()))
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()))
            .ok_or_else(|| GpuError::Input(format!("an output of {rows} × {seq} overflows")))?;
        match self.spare.lock().take() {
            Some(spare) if spare.bytes() >= bytes => Ok(spare),
            _ => DeviceBuffer::zeroed(self.device.context(), bytes),
        }
    }

    /// Hands a batch's output buffer back for the next batch, once it has been pooled.
    pub fn recycle(&self, buffer: DeviceBuffer) {
        *self.spare.lock() = Some(buffer);
    }

    /// The reward of each row whose hidden states ONNX Runtime wrote into `output` (`None`
    /// for a row with no real token).
    pub fn rewards(
        &self,
        output: &DeviceBuffer,
        seq: usize,
        masks: &[&[i64]],
    ) -> Result<Vec<Option<f32>>, GpuError> {
        let needed = masks.len() * seq * self.dim() * std::mem::size_of::<f32>();
        if output.bytes() < needed {
            return Err(GpuError::Input(format!(
                "an output buffer of {} bytes for {} rows × {seq} × {}",
                output.bytes(),
                masks.len(),
                self.dim()
            )));
        }
        // SAFETY: `output` holds at least rows × seq × dim float32s on this device (checked
        // above); ONNX Runtime's run that wrote it has returned (a run synchronizes its
        // stream before returning), and the caller owns the buffer and writes nothing into it
        // until this returns.
        let rows = unsafe {
            self.pool
                .last_token_head_device(output.ptr(), seq, masks, &self.head)
        }?;
        Ok(rows
            .into_iter()
            .map(|r| r.and_then(|v| v.first().copied()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_converts_to_the_gpu_view_of_the_same_shape() {
        let data = [0.5f32; 12];
        let h = Hidden::new(&data, 2, 3, 2).unwrap();
        let v = HiddenStates::from(h);
        assert_eq!((v.rows, v.seq, v.dim), (2, 3, 2));
        assert_eq!(v.data.len(), 12);
        assert!(HiddenStates::new(v.data, v.rows, v.seq, v.dim).is_some());
    }
}
