//! Decode steps whose logits stay on the GPU: ONNX Runtime writes each step's `[B, 1, V]`
//! logits into a device buffer of one row per KV slot, `kernels/top_p.cu` samples every row
//! in one launch, and only token ids and log-probs come back to the host.
//!
//! Rows the kernel does not handle (penalties over generated tokens, `top_logprobs`, the
//! logits-poisoning test hook) copy their one row to the host and take the CPU sampler, so
//! every option behaves as on the CPU path. If the kernels cannot load, the engine runs as
//! before, with host logits, and says why once at start.
//!
//! This is where the engine's sampling types meet the GPU room's own: [`SamplingParams`]
//! become [`RowSettings`] (so `RowSampling::for_row` takes them), and the kernel's
//! [`SampledRow`] / [`RowFault`] become [`Sampled`] / [`LogitsError`]. The GPU room knows
//! nothing of the engine.

use cudarc::driver::result as cu;

use super::{LogitsError, Sampled, SamplingParams};
use crate::gpu::{
    DeviceBuffer, GpuDevice, GpuError, GpuSampler, RowFault, RowSampling, RowSettings, SampledRow,
};

impl From<&SamplingParams> for RowSettings {
    fn from(params: &SamplingParams) -> Self {
        let o = params.options();
        RowSettings {
            temperature: o.temperature,
            top_p: o.top_p,
            min_p: o.min_p,
            top_k: o.top_k,
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            top_logprobs: o.top_logprobs,
        }
    }
}

impl From<SampledRow> for Sampled {
    fn from(row: SampledRow) -> Self {
        Sampled {
            token: row.token,
            logprob: row.logprob,
            top: Vec::new(),
        }
    }
}

impl From<RowFault> for LogitsError {
    fn from(fault: RowFault) -> Self {
        match fault {
            RowFault::NotANumber { token } => LogitsError::NotANumber { token },
            RowFault::Infinite { token } => LogitsError::Infinite { token },
            RowFault::AllNegativeInfinity => LogitsError::AllNegativeInfinity,
        }
    }
}

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
        let results = unsafe {
            self.sampler
                .sample_device(self.logits.ptr(), self.vocab, rows)
        }?;
        Ok(results
            .into_iter()
            .map(|r| r.map(Sampled::from).map_err(LogitsError::from))
            .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SamplingOptions;

    fn params(o: SamplingOptions) -> SamplingParams {
        SamplingParams::new(o).unwrap()
    }

    #[test]
    fn penalized_rows_and_top_logprobs_take_the_cpu_path() {
        let plain = params(SamplingOptions {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            min_p: 0.05,
            ..SamplingOptions::default()
        });
        let row = RowSampling::for_row(&plain, 0.25, &[1, 2]).unwrap();
        assert_eq!(
            row,
            RowSampling {
                temperature: 0.7,
                top_p: 0.9,
                min_p: 0.05,
                top_k: 40,
                uniform: 0.25
            }
        );
        let penalized = params(SamplingOptions {
            presence_penalty: 0.5,
            ..SamplingOptions::default()
        });
        assert!(RowSampling::for_row(&penalized, 0.5, &[3]).is_none());
        // Nothing generated yet: the penalty changes nothing, so the kernel may take it.
        assert!(RowSampling::for_row(&penalized, 0.5, &[]).is_some());
        let top = params(SamplingOptions {
            top_logprobs: 2,
            ..SamplingOptions::default()
        });
        assert!(RowSampling::for_row(&top, 0.5, &[]).is_none());
    }

    #[test]
    fn kernel_results_map_to_the_cpu_results_and_errors() {
        let sampled = Sampled::from(SampledRow {
            token: 7,
            logprob: -0.5,
        });
        assert_eq!((sampled.token, sampled.logprob), (7, -0.5));
        assert!(sampled.top.is_empty());
        assert_eq!(
            LogitsError::from(RowFault::NotANumber { token: 3 }),
            LogitsError::NotANumber { token: 3 }
        );
        assert_eq!(
            LogitsError::from(RowFault::Infinite { token: 4 }),
            LogitsError::Infinite { token: 4 }
        );
        assert_eq!(
            LogitsError::from(RowFault::AllNegativeInfinity),
            LogitsError::AllNegativeInfinity
        );
    }
}
