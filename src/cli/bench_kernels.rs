//! `tpo bench kernels`: the cudarc kernels' throughput against the GPU's copy bandwidth,
//! measured side by side in one run (see `tpo_engine::bench::kernels`, which measures; this
//! file parses the flags and prints). Needs a GPU; on a machine without one it says so and
//! exits with an error rather than printing nothing.

use std::process::ExitCode;

use tpo_engine::bench::kernels::{self, KernelBenchOptions, PoolShape, GOAL};
use tpo_engine::engine::EngineError;
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
    let options = KernelBenchOptions {
        batch: args.batch,
        vocabs: args.vocab,
        launches: args.launches,
        pool: PoolShape {
            batch: pool_batch,
            seq,
            hidden,
        },
        copy_bytes: args.copy_mib << 20,
    };
    let report = kernels::measure(&device, &options)?;

    println!(
        "| kernel | µs / launch | bytes read / s | share of copy bandwidth ({:.0} GB/s) |",
        report.ceiling() / 1e9
    );
    println!("|---|---:|---:|---:|");
    for r in &report.kernels {
        println!(
            "| {} | {:.1} | {:.0} GB/s | {:.0}% |",
            r.throughput.name,
            r.throughput.microseconds_per_launch(),
            r.throughput.bytes_per_second() / 1e9,
            100.0 * r.share_of_copy_bandwidth
        );
    }
    if let Some(goal) = report.goal_row() {
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
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| EngineError::Internal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(ExitCode::SUCCESS)
}
