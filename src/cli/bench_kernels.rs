//! `tpo bench kernels`: the cudarc kernels' throughput against the GPU's copy bandwidth,
//! measured side by side in one run (see `tpo_engine::bench::kernels`, which measures; this
//! file parses the flags and prints). Needs a GPU; on a machine without one it says so and
//! exits with an error rather than printing nothing.

use std::process::ExitCode;

use tpo_engine::bench::kernels::{self, KernelBenchOptions, PoolShape};
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
    print!("{}", report.table());
    super::advice::report(match args.json {
        Some(path) => tpo_engine::bench::write_json(&path, &report).map(|()| ExitCode::SUCCESS),
        None => Ok(ExitCode::SUCCESS),
    })
}
