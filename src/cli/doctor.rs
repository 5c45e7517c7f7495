//! `tpo doctor`: what this machine can run, and why not when it cannot.

use std::process::ExitCode;

use tpo_engine::app::doctor::{DoctorOptions, DoctorReport};
use tpo_engine::gpu::{CpuReason, GpuError, KernelPath};

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode, tpo_engine::Error> {
    let report = DoctorReport::check(&DoctorOptions {
        policy: args.model.model_dir(),
        engine: args.model.engine_options(),
    });
    let nvrtc = match &report.nvrtc {
        Ok(from) => format!("found ({from})"),
        Err(e) => format!("not found: {}", with_advice(e)),
    };
    print!("{}", report.render(&nvrtc, &kernels_line(&report.kernels)));
    Ok(if report.usable() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// What to do when NVRTC is missing: the GPU layer states what it looked for, the CLI says
/// how to get it.
const NVRTC_ADVICE: &str = "install the nvidia-cuda-nvrtc wheel (CUDA 13) into .venv \
     (`make kernels-setup`), or set TPO_NVRTC_PATH to libnvrtc.so.13";

/// A GPU error, with what to do about it where the CLI knows.
fn with_advice(e: &GpuError) -> String {
    match e {
        GpuError::NvrtcNotFound { .. } => format!("{e}; {NVRTC_ADVICE}"),
        _ => e.to_string(),
    }
}

/// Which implementation sampling and pooling take, and why, in the CLI's words.
fn kernels_line(path: &KernelPath) -> String {
    match path {
        KernelPath::Cpu {
            reason: CpuReason::CpuDevice,
        } => "CPU (the models run on the CPU (--device cpu))".into(),
        KernelPath::Cpu {
            reason: CpuReason::Unavailable(e),
        } => format!(
            "CPU (GPU kernels unavailable, CPU fallback: {})",
            with_advice(e)
        ),
        gpu => gpu.to_string(),
    }
}
