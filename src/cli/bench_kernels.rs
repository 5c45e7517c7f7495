//! `tpo bench kernels`: the cudarc kernels' throughput against the GPU's copy bandwidth,
//! measured side by side in one run (see `tpo_engine::gpu::throughput`). Needs a GPU; on a
//! machine without one it says so and exits with an error rather than printing nothing.

use std::process::ExitCode;

use tpo_engine::engine::EngineError;
use tpo_engine::gpu::throughput::{self, PoolShape, Throughput};
use tpo_engine::gpu::GpuDevice;

#[derive(Debug, clap::Args)]
pub struct KernelBenchArgs {
    /// The GPU to measure.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
    /// Rows sampled per top-p launch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Vocabulary sizes, comma separated (SmolLM2: 49152; Llama 3: 128256).
    #[arg(long, value_delimiter = ',', default_value = "49152,128256")]
    vocab: Vec<usize>,
    /// Timed launches of each kernel.
    #[arg(long, default_value_t = 200)]
    launches: usize,
    /// Reward-model pooling shape `batch,seq,hidden`.
    #[arg(long, value_delimiter = ',', default_value = "64,512,576")]
    pool: Vec<usize>,
    /// Size of the reference device-to-device copy, in MiB.
    #[arg(long, default_value_t = 1024)]
    copy_mib: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The share of the copy's rate that counts as keeping up with memory (the goal for
/// top-p at batch 64 × vocab 128k).
const GOAL: f64 = 0.8;

#[derive(Debug, serde::Serialize)]
struct Report {
    device: String,
    copy: Throughput,
    kernels: Vec<Row>,
}

#[derive(Debug, serde::Serialize)]
struct Row {
    #[serde(flatten)]
    throughput: Throughput,
    share_of_copy_bandwidth: f64,
}

fn invalid(msg: String) -> tpo_engine::Error {
    EngineError::InvalidConfig(msg).into()
}

pub fn run(args: KernelBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let [pool_batch, seq, hidden] = args.pool[..] else {
        return Err(invalid(
            "--pool takes three numbers: batch,seq,hidden".into(),
        ));
    };
    if args.batch == 0
        || args.launches == 0
        || args.copy_mib == 0
        || args.vocab.contains(&0)
        || args.pool.contains(&0)
    {
        return Err(invalid(
            "--batch, --vocab, --launches, --pool and --copy-mib must be positive".into(),
        ));
    }
    let device = GpuDevice::open(args.gpu).map_err(|e| {
        invalid(format!(
            "tpo bench kernels measures the CUDA kernels and needs a GPU: {e}"
        ))
    })?;
    eprintln!(
        "kernel bench on GPU {} ({}, {}): {} timed launches each",
        device.ordinal(),
        device.name(),
        device.arch(),
        args.launches
    );
    // The copy runs first and last; the faster of the two is the yardstick, so a clock
    // still ramping up at the start does not flatter the kernels.
    let copy_bytes = args.copy_mib << 20;
    let copy_launches = (args.launches / 10).max(5);
    let first_copy = throughput::copy_bandwidth(&device, copy_bytes, copy_launches)?;
    let mut measured = Vec::new();
    for &vocab in &args.vocab {
        measured.push(throughput::top_p(
            &device,
            args.batch,
            vocab,
            args.launches,
        )?);
    }
    let shape = PoolShape {
        batch: pool_batch,
        seq,
        hidden,
    };
    measured.extend(throughput::pooling(&device, shape, args.launches)?);
    let last_copy = throughput::copy_bandwidth(&device, copy_bytes, copy_launches)?;
    let copy = if last_copy.bytes_per_second() > first_copy.bytes_per_second() {
        last_copy
    } else {
        first_copy
    };
    let ceiling = copy.bytes_per_second().max(f64::MIN_POSITIVE);

    println!(
        "| kernel | µs / launch | bytes read / s | share of copy bandwidth ({:.0} GB/s) |",
        ceiling / 1e9
    );
    println!("|---|---:|---:|---:|");
    let kernels: Vec<Row> = measured
        .into_iter()
        .map(|t| Row {
            share_of_copy_bandwidth: t.bytes_per_second() / ceiling,
            throughput: t,
        })
        .collect();
    for r in &kernels {
        println!(
            "| {} | {:.1} | {:.0} GB/s | {:.0}% |",
            r.throughput.name,
            r.throughput.microseconds_per_launch(),
            r.throughput.bytes_per_second() / 1e9,
            100.0 * r.share_of_copy_bandwidth
        );
    }
    if let Some(goal) = kernels
        .iter()
        .find(|r| r.throughput.name == "top_p batch 64 × vocab 128256")
    {
        println!(
            "top_p at batch 64 × vocab 128256: {:.0}% of copy bandwidth (goal {:.0}%): {}",
            100.0 * goal.share_of_copy_bandwidth,
            100.0 * GOAL,
            if goal.share_of_copy_bandwidth >= GOAL {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    if let Some(path) = args.json {
        let report = Report {
            device: format!("{} ({})", device.name(), device.arch()),
            copy,
            kernels,
        };
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| EngineError::Internal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(ExitCode::SUCCESS)
}
