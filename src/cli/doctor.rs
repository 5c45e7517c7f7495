//! `tpo doctor`: what this machine can run, and why not when it cannot.

use std::process::ExitCode;

use tpo_engine::engine::Decoder;
use tpo_engine::gpu::{CpuReason, GpuError, KernelPath};
use tpo_engine::model::ModelDir;
use tpo_engine::runtime;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn run(args: DoctorArgs) -> Result<ExitCode, tpo_engine::Error> {
    let mut usable = true;
    match tpo_engine::paths::init_runtime() {
        Ok(lib) => {
            println!("onnxruntime      {} ({})", lib.version, lib.path.display());
            println!(
                "providers        {}",
                runtime::available_providers().join(", ")
            );
        }
        Err(e) => {
            println!("onnxruntime      NOT USABLE: {e}");
            usable = false;
        }
    }
    println!("cuda driver      {}", cuda_driver_status());
    println!("nvrtc            {}", nvrtc_line());
    let kernels = KernelPath::for_device(args.model.device);
    println!("kernels          {}", kernels_line(&kernels));
    let logits = if args.model.device.gpu_ordinal().is_none() {
        "host (CPU sampler)"
    } else if !args.model.engine_options().sample_on_device {
        "host: --sample-on-host brings them back for the CPU sampler"
    } else if kernels.is_gpu() {
        "on the GPU: decode steps write logits to device memory and top_p.cu samples them"
    } else {
        "host: the KV arena is on the GPU but logits come back for the CPU sampler"
    };
    println!("decode logits    {logits}");
    let pooling = if args.model.device.gpu_ordinal().is_none() {
        "host (CPU pooling)"
    } else if !args.model.engine_options().sample_on_device {
        "host: --sample-on-host brings reward hidden states back for the CPU"
    } else if kernels.is_gpu() {
        "on the GPU: hidden-states reward models write [B, T, H] to device memory and reward_pool.cu applies the head there"
    } else {
        "host: the kernels are unavailable, so reward hidden states come back for the CPU"
    };
    println!("reward pooling   {pooling}");
    let dir = args.model.model_dir();
    match ModelDir::open(&dir) {
        Ok(model) => {
            let c = &model.config;
            println!(
                "policy model     {} ({:.0} MiB; {} {} layers, {} heads / {} kv heads, vocab {})",
                model.path.display(),
                model.size_bytes() as f64 / (1 << 20) as f64,
                c.model_type,
                c.num_layers,
                c.num_heads,
                c.num_kv_heads,
                c.vocab_size
            );
            if usable {
                let loaded = model
                    .tokenizer()
                    .map_err(tpo_engine::Error::from)
                    .and_then(|_| {
                        Decoder::load(&model, args.model.decoder_options())
                            .map_err(tpo_engine::Error::from)
                    });
                match loaded {
                    Ok(decoder) => {
                        println!("session          loads on {}", args.model.device);
                        let options = args.model.engine_options();
                        let max_len = options.max_seq_len.min(decoder.config().context_length);
                        let shape = decoder.kv_shape(max_len);
                        let available = tpo_engine::engine::available_memory_bytes()
                            .map_or_else(|| "unknown".into(), tpo_engine::engine::gib);
                        match tpo_engine::engine::check_arena_fits(shape, options.kv_slots) {
                            Ok(bytes) => println!(
                                "kv arena         {} slots x {max_len} tokens = {} ({available} available)",
                                options.kv_slots,
                                tpo_engine::engine::gib(bytes)
                            ),
                            Err(e) => {
                                println!("kv arena         NOT USABLE: {e}");
                                usable = false;
                            }
                        }
                    }
                    Err(e) => {
                        println!("session          NOT USABLE: {e}");
                        usable = false;
                    }
                }
            }
        }
        Err(e) => {
            println!("policy model     NOT USABLE: {e}");
            usable = false;
        }
    }
    for name in ["judge", "similarity"] {
        // Loading checks the config, the tokenizer and the graph's inputs and outputs.
        let label = format!("{name} RM");
        let source = tpo_engine::paths::reward_source(name);
        match tpo_engine::reward::load(&source, tpo_engine::reward::RewardOptions::default()) {
            Ok(rm) => println!("{label:<17}{} (loads)", rm.name()),
            Err(e) => {
                println!("{label:<17}NOT USABLE: {e}");
                usable = false;
            }
        }
    }
    println!(
        "status           {}",
        if usable {
            "ok"
        } else {
            "not usable (see above)"
        }
    );
    Ok(if usable {
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

/// Where NVRTC comes from, or why it is unavailable.
fn nvrtc_line() -> String {
    match tpo_engine::gpu::load_nvrtc() {
        Ok(from) => format!("found ({from})"),
        Err(e) => format!("not found: {}", with_advice(&e)),
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

/// Whether the NVIDIA driver is there (GPU kernels and CUDA EPs need it).
fn cuda_driver_status() -> String {
    match tpo_engine::gpu::driver_status() {
        Ok(n) => format!("found, {n} GPU(s)"),
        Err(e) => format!(
            "not found ({e}): GPU execution providers and kernels are unavailable; CPU paths run"
        ),
    }
}
