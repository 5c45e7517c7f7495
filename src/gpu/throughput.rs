//! Kernel throughput against the GPU's own memory bandwidth (`tpo bench kernels`).
//!
//! Both kernels are memory-bound: top-p sampling reads each logit row a few times from L2
//! and once from memory, pooling reads the hidden states. So the yardstick is what a plain
//! device-to-device copy reaches on the same GPU in the same run, and each kernel is
//! reported as the bytes it must read per second and that as a share of the copy's rate
//! (read + write bytes per second). The goal for top-p at batch 64 × vocabulary 128,256 is
//! at least 80 %.

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{result as cu, CudaStream};

use super::{DeviceBuffer, GpuDevice, GpuError, GpuPool, GpuSampler, RowSampling};
use crate::reward::pool::Hidden;

/// One measurement: `launches` runs that each move `bytes_per_launch` bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub name: String,
    pub bytes_per_launch: u64,
    pub launches: usize,
    pub seconds: f64,
}

impl Throughput {
    fn new(name: String, bytes_per_launch: usize, launches: usize, elapsed: Duration) -> Self {
        Self {
            name,
            bytes_per_launch: bytes_per_launch as u64,
            launches,
            seconds: elapsed.as_secs_f64(),
        }
    }

    pub fn microseconds_per_launch(&self) -> f64 {
        self.seconds * 1e6 / self.launches.max(1) as f64
    }

    pub fn bytes_per_second(&self) -> f64 {
        if self.seconds <= 0.0 {
            return 0.0;
        }
        self.bytes_per_launch as f64 * self.launches as f64 / self.seconds
    }
}

/// Runs `launch` once untimed (first-touch and module costs are not the kernel's), then
/// `launches` times back to back, and returns the wall time of those up to the stream
/// being idle.
pub(super) fn time_repeated(
    stream: &Arc<CudaStream>,
    launches: usize,
    mut launch: impl FnMut() -> Result<(), GpuError>,
) -> Result<Duration, GpuError> {
    launch()?;
    stream.synchronize()?;
    let started = std::time::Instant::now();
    for _ in 0..launches {
        launch()?;
    }
    stream.synchronize()?;
    Ok(started.elapsed())
}

/// `cuMemcpyDtoDAsync` of `bytes` between two device buffers, `launches` times: counted as
/// `2 * bytes` per copy (each byte is read once and written once).
pub fn copy_bandwidth(
    device: &GpuDevice,
    bytes: usize,
    launches: usize,
) -> Result<Throughput, GpuError> {
    let src = DeviceBuffer::zeroed(device.context(), bytes)?;
    let dst = DeviceBuffer::zeroed(device.context(), bytes)?;
    let stream = device.stream();
    let elapsed = time_repeated(stream, launches, || {
        // SAFETY: both buffers are `bytes` long, live in this context and outlive the
        // stream's work (synchronized inside `time_repeated` before they drop).
        unsafe { cu::memcpy_dtod_async(dst.ptr(), src.ptr(), bytes, stream.cu_stream()) }?;
        Ok(())
    })?;
    Ok(Throughput::new(
        format!("device copy {} MiB", bytes >> 20),
        2 * bytes,
        launches,
        elapsed,
    ))
}

/// Deterministic logits that look like a language model's: a few large values over a
/// long low tail (an xorshift generator, so runs are comparable).
fn synthetic_logits(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            // Most mass near -4, a thin tail up to +12.
            -4.0 + 16.0 * u.powi(8)
        })
        .collect()
}

/// `sample_rows` on `batch` rows of `vocab` logits already on the device, with the
/// sampling settings of a TPO search (temperature 0.7, top-p 0.9): one launch per step.
pub fn top_p(
    device: &GpuDevice,
    batch: usize,
    vocab: usize,
    launches: usize,
) -> Result<Throughput, GpuError> {
    let sampler = GpuSampler::new(device)?;
    let logits = device
        .stream()
        .clone_htod(&synthetic_logits(batch * vocab, 7))?;
    let rows: Vec<RowSampling> = (0..batch)
        .map(|i| RowSampling {
            temperature: 0.7,
            top_p: 0.9,
            min_p: 0.0,
            top_k: 0,
            uniform: (i as f32 + 0.5) / batch as f32,
        })
        .collect();
    let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&logits, device.stream());
    // SAFETY: `ptr` addresses `batch * vocab` floats of `logits`, which nothing writes and
    // which lives until the timed launches have finished (they synchronize).
    let elapsed = unsafe { sampler.time_launches(ptr, vocab, &rows, launches) }?;
    Ok(Throughput::new(
        format!("top_p batch {batch} × vocab {vocab}"),
        batch * vocab * std::mem::size_of::<f32>(),
        launches,
        elapsed,
    ))
}

/// The shape of a reward-model pooling benchmark: `[batch, seq, hidden]` hidden states,
/// every token real.
#[derive(Debug, Clone, Copy)]
pub struct PoolShape {
    pub batch: usize,
    pub seq: usize,
    pub hidden: usize,
}

/// `pool_masked_mean` (reads all of `[batch, seq, hidden]`) and `pool_last_token_head`
/// with one label (reads one `hidden` vector per row and the head), `launches` times each.
pub fn pooling(
    device: &GpuDevice,
    shape: PoolShape,
    launches: usize,
) -> Result<[Throughput; 2], GpuError> {
    let PoolShape { batch, seq, hidden } = shape;
    let data = synthetic_logits(batch * seq * hidden, 11);
    let view = Hidden::new(&data, batch, seq, hidden)
        .ok_or_else(|| GpuError::Input("pooling shape overflows".into()))?;
    let mask = vec![1i64; seq];
    let masks: Vec<&[i64]> = (0..batch).map(|_| mask.as_slice()).collect();
    let weight = synthetic_logits(hidden, 13);
    let pool = GpuPool::new(device)?;
    let mean = pool.time_masked_mean(&view, &masks, launches)?;
    let last = pool.time_last_token_head(&view, &masks, &weight, &[0.0], 1, launches)?;
    let f = std::mem::size_of::<f32>();
    let label = format!("[{batch}, {seq}, {hidden}]");
    Ok([
        Throughput::new(
            format!("masked_mean {label}"),
            batch * seq * hidden * f,
            launches,
            mean,
        ),
        Throughput::new(
            format!("last_token_head {label}, 1 label"),
            batch * hidden * f + hidden * f,
            launches,
            last,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_logits_are_finite_repeatable_and_peaked() {
        let a = synthetic_logits(10_000, 7);
        assert_eq!(a, synthetic_logits(10_000, 7));
        assert!(a.iter().all(|x| x.is_finite() && (-4.0..=12.0).contains(x)));
        let high = a.iter().filter(|&&x| x > 4.0).count();
        // u^8 > 1/2 for about 8 % of draws: a peaked head over a long flat tail.
        assert!((300..1500).contains(&high), "{high} of 10000 above 4");
    }

    #[test]
    fn throughput_counts_bytes_over_time() {
        let t = Throughput::new("x".into(), 1000, 10, Duration::from_millis(1));
        assert!((t.bytes_per_second() - 1e7).abs() < 1.0);
        assert!((t.microseconds_per_launch() - 100.0).abs() < 1e-9);
    }
}
