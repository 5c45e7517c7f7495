//! Launching `kernels/top_p.cu`: one token per row of a `[B, vocab]` batch of logits, one
//! launch per step, with per-row parameters and the row's uniform from the same per-sequence
//! RNG stream as the CPU path (`SequenceRng`).
//!
//! Rows the kernel does not handle take the CPU path ([`RowSampling::for_row`] says which):
//! presence/frequency penalties over the generated tokens (as the fused CPU sampler also
//! defers them to the reference path) and `top_logprobs`.

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::{GpuDevice, GpuError, TOP_P};
use crate::engine::{LogitsError, Sampled, SamplingParams};
use crate::model::TokenId;

/// Threads per block: must equal `THREADS` in `kernels/top_p.cu`.
const THREADS: u32 = 1024;

/// The kernel's view of one row's sampling parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSampling {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    /// 0 = no top-k limit.
    pub top_k: i32,
    /// The row's draw, in [0, 1).
    pub uniform: f32,
}

impl RowSampling {
    /// The kernel's parameters for a row sampled with `params` and uniform `u`, or `None`
    /// when the row must take the CPU path (penalties over `generated`, `top_logprobs`).
    pub fn for_row(params: &SamplingParams, uniform: f32, generated: &[TokenId]) -> Option<Self> {
        let o = params.options();
        let penalized =
            (o.presence_penalty != 0.0 || o.frequency_penalty != 0.0) && !generated.is_empty();
        if penalized || o.top_logprobs > 0 {
            return None;
        }
        Some(Self {
            temperature: o.temperature,
            top_p: o.top_p,
            min_p: o.min_p,
            top_k: i32::try_from(o.top_k).unwrap_or(i32::MAX),
            uniform,
        })
    }
}

/// Row status codes written by the kernel (`STATUS_*` in `kernels/top_p.cu`).
fn row_result(status: i32, token: i32, logprob: f32) -> Result<Sampled, LogitsError> {
    let token = TokenId::try_from(token).unwrap_or(0);
    match status {
        0 => Ok(Sampled {
            token,
            logprob,
            top: Vec::new(),
        }),
        1 => Err(LogitsError::NotANumber { token }),
        2 => Err(LogitsError::Infinite { token }),
        _ => Err(LogitsError::AllNegativeInfinity),
    }
}

/// The sampling kernel, loaded on one device, launched on that device's stream.
pub struct GpuSampler {
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

/// Per-row inputs and outputs on the device for one launch.
struct RowBuffers {
    rows: usize,
    temperature: CudaSlice<f32>,
    top_p: CudaSlice<f32>,
    min_p: CudaSlice<f32>,
    top_k: CudaSlice<i32>,
    uniform: CudaSlice<f32>,
    token: CudaSlice<i32>,
    logprob: CudaSlice<f32>,
    status: CudaSlice<i32>,
}

impl GpuSampler {
    /// Compiles and loads the kernel on `device`.
    pub fn new(device: &GpuDevice) -> Result<Self, GpuError> {
        let module = device.load(&TOP_P)?;
        let function = module.load_function("sample_rows")?;
        Ok(Self {
            stream: Arc::clone(device.stream()),
            function,
        })
    }

    /// Samples every row of host `logits` (`rows.len()` rows of `vocab`), uploading them
    /// first (the parity harness; the engine passes device logits to [`Self::sample_device`]).
    pub fn sample_host(
        &self,
        logits: &[f32],
        vocab: usize,
        rows: &[RowSampling],
    ) -> Result<Vec<Result<Sampled, LogitsError>>, GpuError> {
        check_shape(logits.len(), vocab, rows.len())?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let stream = &self.stream;
        let device_logits = stream.clone_htod(logits)?;
        let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&device_logits, stream);
        // SAFETY: `ptr` addresses `rows.len() * vocab` floats of `device_logits`, which lives
        // (and is not written) until this call returns, after the stream synchronizes.
        unsafe { self.sample_device(ptr, vocab, rows) }
    }

    /// Samples every row of device logits at `logits` (`rows.len()` rows of `vocab`
    /// floats, row-major). Returns after the results are back on the host.
    ///
    /// # Safety
    /// `logits` must be a device pointer of this device's context to at least
    /// `rows.len() * vocab` floats that nothing writes until this call returns.
    pub unsafe fn sample_device(
        &self,
        logits: u64,
        vocab: usize,
        rows: &[RowSampling],
    ) -> Result<Vec<Result<Sampled, LogitsError>>, GpuError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut buffers = self.upload(rows)?;
        // SAFETY: the caller's guarantee on `logits`, passed on.
        unsafe { self.launch(logits, vocab, &mut buffers) }?;
        let stream = &self.stream;
        let tokens = stream.clone_dtoh(&buffers.token)?;
        let logprobs = stream.clone_dtoh(&buffers.logprob)?;
        let statuses = stream.clone_dtoh(&buffers.status)?;
        Ok(statuses
            .iter()
            .zip(tokens.iter().zip(&logprobs))
            .map(|(&s, (&t, &l))| row_result(s, t, l))
            .collect())
    }

    /// Wall time of `launches` back-to-back launches over the same device logits (row
    /// parameters uploaded once, nothing read back), synchronized at the end: the kernel's
    /// own cost for `tpo bench kernels`.
    ///
    /// # Safety
    /// As for [`Self::sample_device`].
    pub unsafe fn time_launches(
        &self,
        logits: u64,
        vocab: usize,
        rows: &[RowSampling],
        launches: usize,
    ) -> Result<std::time::Duration, GpuError> {
        let mut buffers = self.upload(rows)?;
        super::throughput::time_repeated(&self.stream, launches, || {
            // SAFETY: the caller's guarantee on `logits`, passed on.
            unsafe { self.launch(logits, vocab, &mut buffers) }
        })
    }

    /// The per-row parameters on the device, and room for the per-row results.
    fn upload(&self, rows: &[RowSampling]) -> Result<RowBuffers, GpuError> {
        let stream = &self.stream;
        let column = |f: fn(&RowSampling) -> f32| rows.iter().map(f).collect::<Vec<f32>>();
        let top_k: Vec<i32> = rows.iter().map(|r| r.top_k).collect();
        Ok(RowBuffers {
            rows: rows.len(),
            temperature: stream.clone_htod(&column(|r| r.temperature))?,
            top_p: stream.clone_htod(&column(|r| r.top_p))?,
            min_p: stream.clone_htod(&column(|r| r.min_p))?,
            top_k: stream.clone_htod(&top_k)?,
            uniform: stream.clone_htod(&column(|r| r.uniform))?,
            token: stream.alloc_zeros::<i32>(rows.len())?,
            logprob: stream.alloc_zeros::<f32>(rows.len())?,
            status: stream.alloc_zeros::<i32>(rows.len())?,
        })
    }

    /// One launch of `sample_rows` over `b.rows` rows of device logits (queued, not waited
    /// for).
    ///
    /// # Safety
    /// `logits` must point to at least `b.rows * vocab` floats of this context's memory that
    /// nothing writes while the launch runs.
    unsafe fn launch(&self, logits: u64, vocab: usize, b: &mut RowBuffers) -> Result<(), GpuError> {
        let vocab_i32 = i32::try_from(vocab)
            .map_err(|_| GpuError::Input(format!("vocabulary of {vocab} exceeds i32")))?;
        let batch = u32::try_from(b.rows)
            .map_err(|_| GpuError::Input(format!("{} rows exceed a grid", b.rows)))?;
        let config = LaunchConfig {
            grid_dim: (batch, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(&self.function);
        launch
            .arg(&logits)
            .arg(&vocab_i32)
            .arg(&b.temperature)
            .arg(&b.top_p)
            .arg(&b.min_p)
            .arg(&b.top_k)
            .arg(&b.uniform)
            .arg(&mut b.token)
            .arg(&mut b.logprob)
            .arg(&mut b.status);
        // SAFETY: the argument list matches `sample_rows`'s signature in kernels/top_p.cu
        // (a float pointer, an int, five per-row input arrays of `batch` elements, three
        // output arrays of `batch` elements); the caller guarantees the logits pointer; the
        // block size equals the kernel's THREADS, which its shared reductions assume.
        unsafe { launch.launch(config) }?;
        Ok(())
    }
}

fn check_shape(len: usize, vocab: usize, rows: usize) -> Result<(), GpuError> {
    if vocab == 0 || rows.checked_mul(vocab) != Some(len) {
        return Err(GpuError::Input(format!(
            "{len} logits are not {rows} rows of a vocabulary of {vocab}"
        )));
    }
    Ok(())
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
    fn status_codes_map_to_the_cpu_errors() {
        assert_eq!(row_result(0, 7, -0.5).unwrap().token, 7);
        assert_eq!(
            row_result(1, 3, 0.0).unwrap_err(),
            LogitsError::NotANumber { token: 3 }
        );
        assert_eq!(
            row_result(2, 4, 0.0).unwrap_err(),
            LogitsError::Infinite { token: 4 }
        );
        assert_eq!(
            row_result(3, 0, 0.0).unwrap_err(),
            LogitsError::AllNegativeInfinity
        );
    }

    #[test]
    fn a_buffer_that_is_not_whole_rows_is_refused() {
        assert!(check_shape(10, 5, 2).is_ok());
        assert!(check_shape(11, 5, 2).is_err());
        assert!(check_shape(0, 0, 0).is_err());
    }
}
