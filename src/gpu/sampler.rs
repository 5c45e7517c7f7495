//! Launching `kernels/top_p.cu`: one token per row of a `[B, vocab]` batch of logits, one
//! launch per step, with per-row parameters and the row's uniform (the caller draws it, from
//! the same per-sequence RNG stream as its CPU path).
//!
//! Rows the kernel does not handle take the caller's CPU path ([`RowSampling::for_row`] says
//! which): presence/frequency penalties over the generated tokens and `top_logprobs`.
//!
//! This room knows its own small types only ([`RowSettings`] in, [`SampledRow`] or
//! [`RowFault`] out); the engine converts its sampling parameters and results to and from
//! them. Timing the kernel is the benchmark's business (`bench::kernels`), over
//! [`GpuSampler::upload_rows`] and [`GpuSampler::enqueue`].

use std::sync::Arc;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::{GpuDevice, GpuError, TOP_P};

/// Threads per block: must equal `THREADS` in `kernels/top_p.cu`.
const THREADS: u32 = 1024;

/// What a row asks of a sampler, in the terms the kernel cares about (the caller converts
/// its own sampling parameters into this).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RowSettings {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    /// 0 = no top-k limit.
    pub top_k: usize,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// How many most-likely tokens to report with each draw (the kernel reports none).
    pub top_logprobs: usize,
}

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
    /// The kernel's parameters for a row sampled with `settings` and uniform `u`, or `None`
    /// when the row must take the CPU path (penalties over `generated`, `top_logprobs`).
    pub fn for_row(
        settings: impl Into<RowSettings>,
        uniform: f32,
        generated: &[u32],
    ) -> Option<Self> {
        let o: RowSettings = settings.into();
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

/// A token the kernel drew for one row, and its log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampledRow {
    pub token: u32,
    pub logprob: f32,
}

/// Why the kernel drew nothing for a row (the row's logits, not the launch, were bad).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowFault {
    /// A NaN logit at `token`.
    NotANumber { token: u32 },
    /// A `+inf` logit at `token`.
    Infinite { token: u32 },
    /// Every logit of the row is `-inf`.
    AllNegativeInfinity,
}

/// One row's result: the draw, or what was wrong with its logits.
pub type RowResult = Result<SampledRow, RowFault>;

/// Row status codes written by the kernel (`STATUS_*` in `kernels/top_p.cu`).
fn row_result(status: i32, token: i32, logprob: f32) -> RowResult {
    let token = u32::try_from(token).unwrap_or(0);
    match status {
        0 => Ok(SampledRow { token, logprob }),
        1 => Err(RowFault::NotANumber { token }),
        2 => Err(RowFault::Infinite { token }),
        _ => Err(RowFault::AllNegativeInfinity),
    }
}

/// The sampling kernel, loaded on one device, launched on that device's stream.
pub struct GpuSampler {
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

/// Per-row inputs and outputs on the device for one launch ([`GpuSampler::upload_rows`]).
pub struct RowBuffers {
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
    ) -> Result<Vec<RowResult>, GpuError> {
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
    ) -> Result<Vec<RowResult>, GpuError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut buffers = self.upload_rows(rows)?;
        // SAFETY: the caller's guarantee on `logits`, passed on.
        unsafe { self.enqueue(logits, vocab, &mut buffers) }?;
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

    /// The per-row parameters on the device, and room for the per-row results: the inputs
    /// of [`Self::enqueue`].
    pub fn upload_rows(&self, rows: &[RowSampling]) -> Result<RowBuffers, GpuError> {
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

    /// One launch of `sample_rows` over `b.rows` rows of device logits, queued on this
    /// device's stream and not waited for (results stay in `b` on the device).
    ///
    /// # Safety
    /// `logits` must point to at least `b.rows * vocab` floats of this context's memory that
    /// nothing writes while the launch runs.
    pub unsafe fn enqueue(
        &self,
        logits: u64,
        vocab: usize,
        b: &mut RowBuffers,
    ) -> Result<(), GpuError> {
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

    fn settings() -> RowSettings {
        RowSettings {
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            min_p: 0.05,
            ..RowSettings::default()
        }
    }

    #[test]
    fn penalized_rows_and_top_logprobs_take_the_cpu_path() {
        let row = RowSampling::for_row(settings(), 0.25, &[1, 2]).unwrap();
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
        let penalized = RowSettings {
            frequency_penalty: 0.5,
            ..settings()
        };
        assert!(RowSampling::for_row(penalized, 0.5, &[3]).is_none());
        // Nothing generated yet: the penalty changes nothing, so the kernel may take it.
        assert!(RowSampling::for_row(penalized, 0.5, &[]).is_some());
        let top = RowSettings {
            top_logprobs: 2,
            ..settings()
        };
        assert!(RowSampling::for_row(top, 0.5, &[]).is_none());
        let huge_k = RowSettings {
            top_k: usize::MAX,
            ..settings()
        };
        assert_eq!(
            RowSampling::for_row(huge_k, 0.5, &[]).map(|r| r.top_k),
            Some(i32::MAX)
        );
    }

    #[test]
    fn status_codes_map_to_row_faults() {
        assert_eq!(
            row_result(0, 7, -0.5),
            Ok(SampledRow {
                token: 7,
                logprob: -0.5
            })
        );
        assert_eq!(
            row_result(1, 3, 0.0),
            Err(RowFault::NotANumber { token: 3 })
        );
        assert_eq!(row_result(2, 4, 0.0), Err(RowFault::Infinite { token: 4 }));
        assert_eq!(row_result(3, 0, 0.0), Err(RowFault::AllNegativeInfinity));
    }

    #[test]
    fn a_buffer_that_is_not_whole_rows_is_refused() {
        assert!(check_shape(10, 5, 2).is_ok());
        assert!(check_shape(11, 5, 2).is_err());
        assert!(check_shape(0, 0, 0).is_err());
    }
}
