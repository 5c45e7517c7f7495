//! Kernel throughput against the GPU's own memory bandwidth (`tpo bench kernels`).
//!
//! Both kernels are memory-bound: top-p sampling reads each logit row a few times from L2
//! and once from memory, pooling reads the hidden states. So the yardstick is what a plain
//! device-to-device copy reaches on the same GPU in the same run, and each kernel is
//! reported as the bytes it must read per second and that as a share of the copy's rate
//! (read + write bytes per second). The goal for top-p at batch 64 × vocabulary 128,256 is
//! at least 80 %.
//!
//! This is timing only: the kernels, their buffers and launches are `gpu`'s (this module
//! uploads inputs once through it and times its queued launches); the flags, the table and
//! the JSON file are the CLI's (`src/cli/bench_kernels.rs`).

use std::time::Duration;

use crate::gpu::{
    DeviceBuffer, GpuDevice, GpuError, GpuPool, GpuSampler, HiddenStates, RowSampling,
};

/// The share of the copy's rate that counts as keeping up with memory (the goal for
/// top-p at batch 64 × vocab 128k).
pub const GOAL: f64 = 0.8;

/// The measurement the goal is about.
pub const GOAL_KERNEL: &str = "top_p batch 64 × vocab 128256";

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
/// `launches` times back to back, and returns the wall time of those up to the device's
/// stream being idle.
fn time_repeated(
    device: &GpuDevice,
    launches: usize,
    mut launch: impl FnMut() -> Result<(), GpuError>,
) -> Result<Duration, GpuError> {
    launch()?;
    device.synchronize()?;
    let started = std::time::Instant::now();
    for _ in 0..launches {
        launch()?;
    }
    device.synchronize()?;
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
    let elapsed = time_repeated(device, launches, || {
        // SAFETY: both buffers were allocated in this device's context (which allocating
        // them bound to this thread), and they outlive the stream's work: `time_repeated`
        // synchronizes before returning, and they drop after that.
        unsafe { dst.enqueue_copy_from(&src, device) }
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
/// sampling settings of a TPO search (temperature 0.7, top-p 0.9): one launch per step
/// (row parameters uploaded once, nothing read back).
pub fn top_p(
    device: &GpuDevice,
    batch: usize,
    vocab: usize,
    launches: usize,
) -> Result<Throughput, GpuError> {
    let sampler = GpuSampler::new(device)?;
    let host = synthetic_logits(batch * vocab, 7);
    let logits = DeviceBuffer::zeroed(device.context(), std::mem::size_of_val(&host[..]))?;
    logits.write_f32s(&host)?;
    let rows: Vec<RowSampling> = (0..batch)
        .map(|i| RowSampling {
            temperature: 0.7,
            top_p: 0.9,
            min_p: 0.0,
            top_k: 0,
            uniform: (i as f32 + 0.5) / batch as f32,
        })
        .collect();
    let mut buffers = sampler.upload_rows(&rows)?;
    let elapsed = time_repeated(device, launches, || {
        // SAFETY: `logits` holds `batch * vocab` floats in this device's context, nothing
        // writes it, and it lives until the timed launches have finished (`time_repeated`
        // synchronizes before returning).
        unsafe { sampler.enqueue(logits.ptr(), vocab, &mut buffers) }
    })?;
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
/// with one label (reads one `hidden` vector per row and the head), `launches` times each
/// over inputs uploaded once (nothing read back).
pub fn pooling(
    device: &GpuDevice,
    shape: PoolShape,
    launches: usize,
) -> Result<[Throughput; 2], GpuError> {
    let PoolShape { batch, seq, hidden } = shape;
    let data = synthetic_logits(batch * seq * hidden, 11);
    let view = HiddenStates::new(&data, batch, seq, hidden)
        .ok_or_else(|| GpuError::Input("pooling shape overflows".into()))?;
    let mask = vec![1i64; seq];
    let masks: Vec<&[i64]> = (0..batch).map(|_| mask.as_slice()).collect();
    let weight = synthetic_logits(hidden, 13);
    let pool = GpuPool::new(device)?;
    // Each kernel's device inputs are freed before the next kernel's are uploaded.
    let mean = {
        let mut x = pool.upload_masked_mean(&view, &masks)?;
        time_repeated(device, launches, || pool.enqueue_masked_mean(&mut x))?
    };
    let last = {
        let head = pool.upload_head(&weight, &[0.0], 1, hidden)?;
        let mut x = pool.upload_last_token(&view, &masks, 1)?;
        time_repeated(device, launches, || pool.enqueue_last_token(&mut x, &head))?
    };
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

/// What `tpo bench kernels` measures (the CLI checks the numbers are positive).
#[derive(Debug, Clone)]
pub struct KernelBenchOptions {
    /// Rows sampled per top-p launch.
    pub batch: usize,
    /// One top-p measurement per vocabulary size.
    pub vocabs: Vec<usize>,
    /// Timed launches of each kernel.
    pub launches: usize,
    pub pool: PoolShape,
    /// Size of the reference device-to-device copy, in bytes.
    pub copy_bytes: usize,
}

/// One kernel's measurement and its share of the copy's rate.
#[derive(Debug, serde::Serialize)]
pub struct KernelRow {
    #[serde(flatten)]
    pub throughput: Throughput,
    pub share_of_copy_bandwidth: f64,
}

/// A run of `tpo bench kernels` (also its JSON file).
#[derive(Debug, serde::Serialize)]
pub struct KernelReport {
    /// The GPU's name and target, e.g. "NVIDIA H200 (sm_90)".
    pub device: String,
    /// The faster of the two reference copies.
    pub copy: Throughput,
    pub kernels: Vec<KernelRow>,
}

impl KernelReport {
    /// The copy's rate in bytes per second: the ceiling the shares are of.
    pub fn ceiling(&self) -> f64 {
        copy_ceiling(&self.copy)
    }

    /// The report as `tpo bench kernels` prints it: a markdown table of every kernel's share
    /// of the copy bandwidth, then whether the goal was met.
    pub fn table(&self) -> String {
        let mut out = format!(
            "| kernel | µs / launch | bytes read / s | share of copy bandwidth ({:.0} GB/s) |\n\
             |---|---:|---:|---:|\n",
            self.ceiling() / 1e9
        );
        for r in &self.kernels {
            out += &format!(
                "| {} | {:.1} | {:.0} GB/s | {:.0}% |\n",
                r.throughput.name,
                r.throughput.microseconds_per_launch(),
                r.throughput.bytes_per_second() / 1e9,
                100.0 * r.share_of_copy_bandwidth
            );
        }
        if let Some(goal) = self.goal_row() {
            let met = goal.share_of_copy_bandwidth >= GOAL;
            out += &format!(
                "top_p at batch 64 × vocab 128256: {:.0}% of copy bandwidth (goal {:.0}%): {}\n",
                100.0 * goal.share_of_copy_bandwidth,
                100.0 * GOAL,
                if met { "met" } else { "NOT met" }
            );
        }
        out
    }

    /// The row the goal is about, when it was measured.
    pub fn goal_row(&self) -> Option<&KernelRow> {
        self.kernels
            .iter()
            .find(|r| r.throughput.name == GOAL_KERNEL)
    }
}

fn copy_ceiling(copy: &Throughput) -> f64 {
    copy.bytes_per_second().max(f64::MIN_POSITIVE)
}

/// Measures the copy, every top-p vocabulary, both pooling kernels and the copy again, on
/// `device`. The copy runs first and last; the faster of the two is the yardstick, so a
/// clock still ramping up at the start does not flatter the kernels.
pub fn measure(device: &GpuDevice, o: &KernelBenchOptions) -> Result<KernelReport, GpuError> {
    let copy_launches = (o.launches / 10).max(5);
    let first_copy = copy_bandwidth(device, o.copy_bytes, copy_launches)?;
    let mut measured = Vec::new();
    for &vocab in &o.vocabs {
        measured.push(top_p(device, o.batch, vocab, o.launches)?);
    }
    measured.extend(pooling(device, o.pool, o.launches)?);
    let last_copy = copy_bandwidth(device, o.copy_bytes, copy_launches)?;
    let copy = if last_copy.bytes_per_second() > first_copy.bytes_per_second() {
        last_copy
    } else {
        first_copy
    };
    Ok(report(
        format!("{} ({})", device.name(), device.arch()),
        copy,
        measured,
    ))
}

fn report(device: String, copy: Throughput, measured: Vec<Throughput>) -> KernelReport {
    let ceiling = copy_ceiling(&copy);
    let kernels = measured
        .into_iter()
        .map(|t| KernelRow {
            share_of_copy_bandwidth: t.bytes_per_second() / ceiling,
            throughput: t,
        })
        .collect();
    KernelReport {
        device,
        copy,
        kernels,
    }
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

    #[test]
    fn shares_are_of_the_copy_rate_and_the_goal_row_is_found() {
        let copy = Throughput::new("copy".into(), 2000, 10, Duration::from_millis(1));
        let kernel = Throughput::new(GOAL_KERNEL.into(), 1000, 10, Duration::from_millis(1));
        let r = report("test".into(), copy, vec![kernel]);
        assert!((r.ceiling() - 2e7).abs() < 1.0);
        let goal = r.goal_row().unwrap();
        assert!((goal.share_of_copy_bandwidth - 0.5).abs() < 1e-9);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kernels"][0]["name"], GOAL_KERNEL);
        assert!(json["kernels"][0]["share_of_copy_bandwidth"].is_number());
        assert!(json["copy"]["bytes_per_launch"].is_number());
    }
}
