//! Decode steps whose logits stay on the GPU: ONNX Runtime writes each step's `[B, 1, V]`
//! logits into a device buffer of one row per KV slot, `kernels/top_p.cu` samples every row
//! in one launch, and only token ids and log-probs come back to the host.
//!
//! Rows the kernel does not handle (penalties over generated tokens, `top_logprobs`, the
//! logits-poisoning test hook) copy their one row to the host and take the CPU sampler, so
//! every option behaves as on the CPU path. If the kernels cannot load, the engine runs as
//! before, with host logits, and says why once at start.

use cudarc::driver::result as cu;

use super::{LogitsError, Sampled};
use crate::gpu::{DeviceBuffer, GpuDevice, GpuError, GpuSampler, RowSampling};

/// The device logits buffer and the sampling kernel on the arena's GPU.
pub(crate) struct DeviceSampling {
    device: GpuDevice,
    sampler: GpuSampler,
    logits: DeviceBuffer,
    vocab: usize,
    rows: usize,
}

/// Kernel parameters for a row whose kernel result is not used (it is sampled on the CPU, or
/// its step failed): greedy, the cheapest row.
pub(crate) const SKIPPED_ROW: RowSampling = RowSampling {
    temperature: 0.0,
    top_p: 1.0,
    min_p: 0.0,
    top_k: 0,
    uniform: 0.0,
};

impl DeviceSampling {
    /// Loads the kernel on GPU `ordinal` and allocates logits for `rows` rows of `vocab`.
    pub(crate) fn open(ordinal: usize, rows: usize, vocab: usize) -> Result<Self, GpuError> {
        let device = GpuDevice::open(ordinal)?;
        let sampler = GpuSampler::new(&device)?;
        let bytes = rows
            .checked_mul(vocab)
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()))
            .ok_or_else(|| GpuError::Input(format!("{rows} rows of {vocab} logits overflow")))?;
        let logits = DeviceBuffer::zeroed(device.context(), bytes)?;
        Ok(Self {
            device,
            sampler,
            logits,
            vocab,
            rows,
        })
    }

    /// Device address of row `row`'s logits, or an error past the buffer's rows.
    pub(crate) fn row_ptr(&self, row: usize) -> Result<u64, GpuError> {
        if row >= self.rows {
            return Err(GpuError::Input(format!(
                "logits row {row} of a buffer of {}",
                self.rows
            )));
        }
        Ok(self.logits.ptr() + (row * self.vocab * std::mem::size_of::<f32>()) as u64)
    }

    /// Samples rows `0..rows.len()` of the buffer in one launch.
    pub(crate) fn sample(
        &self,
        rows: &[RowSampling],
    ) -> Result<Vec<Result<Sampled, LogitsError>>, GpuError> {
        if rows.len() > self.rows {
            return Err(GpuError::Input(format!(
                "{} rows to sample from a buffer of {}",
                rows.len(),
                self.rows
            )));
        }
        // SAFETY: the buffer holds `self.rows * vocab` float32s in this device's context,
        // `rows.len() <= self.rows` (checked), and the scheduler thread that owns `self` runs
        // nothing else on the buffer until this returns (it returns after the results are back).
        unsafe {
            self.sampler
                .sample_device(self.logits.ptr(), self.vocab, rows)
        }
    }

    /// Copies row `row`'s logits to `out` (for a row the CPU samples).
    pub(crate) fn row_to_host(&self, row: usize, out: &mut Vec<f32>) -> Result<(), GpuError> {
        let src = self.row_ptr(row)?;
        self.device.context().bind_to_thread()?;
        out.clear();
        out.resize(self.vocab, 0.0);
        // SAFETY: `src` addresses `vocab` float32s inside the buffer (checked by `row_ptr`),
        // the context is current, and the copy is synchronous.
        unsafe { cu::memcpy_dtoh_sync(&mut out[..], src) }?;
        Ok(())
    }
}
