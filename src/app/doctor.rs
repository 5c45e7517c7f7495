//! `tpo doctor`: what this machine can run, and why not when it cannot: ONNX Runtime, the
//! CUDA driver, NVRTC and the kernels, the policy (its session and KV arena) and the embedded
//! reward models, checked in that order into a typed [`DoctorReport`]. It is NOT the flags
//! nor the advice on what to do about a GPU error (the CLI's words, passed to
//! [`DoctorReport::render`]).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::engine::{Decoder, EngineOptions};
use crate::gpu::{GpuError, KernelPath};
use crate::model::{DecoderConfig, ModelDir};
use crate::runtime::{OrtLibrary, RuntimeError};

/// What to check: the policy folder and the engine settings it would run with.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    pub policy: PathBuf,
    pub engine: EngineOptions,
}

/// What `tpo doctor` found, in the order it checked.
pub struct DoctorReport {
    /// The ONNX Runtime library loaded and its execution providers.
    pub onnxruntime: Result<(&'static OrtLibrary, Vec<&'static str>), RuntimeError>,
    /// GPUs the NVIDIA driver reports.
    pub driver: Result<usize, GpuError>,
    /// Where NVRTC was loaded from.
    pub nvrtc: Result<&'static str, GpuError>,
    pub kernels: KernelPath,
    /// Where decode logits are sampled, and where reward hidden states are pooled.
    pub logits: &'static str,
    pub pooling: &'static str,
    pub policy: Result<PolicyFound, crate::model::ModelError>,
    /// Each embedded reward model's name and whether it loads.
    pub rewards: Vec<(&'static str, Result<String, crate::reward::RewardError>)>,
}

/// The policy folder, when it opens.
#[derive(Debug)]
pub struct PolicyFound {
    pub path: PathBuf,
    pub size_bytes: u64,
    pub config: DecoderConfig,
    /// The session's load and KV arena check (`None` when ONNX Runtime is unusable).
    pub session: Option<Result<ArenaCheck, crate::Error>>,
}

/// The KV arena the engine would allocate.
#[derive(Debug)]
pub struct ArenaCheck {
    /// The device the session loaded on.
    pub device: crate::runtime::Device,
    pub slots: usize,
    pub max_len: usize,
    /// Its size in bytes, or why it does not fit.
    pub bytes: Result<usize, crate::engine::EngineError>,
    /// Device memory available, in words.
    pub available: String,
}

impl DoctorReport {
    /// Runs every check.
    pub fn check(options: &DoctorOptions) -> Self {
        let onnxruntime =
            crate::paths::init_runtime().map(|lib| (lib, crate::runtime::available_providers()));
        let driver = crate::gpu::driver_status();
        let nvrtc = crate::gpu::load_nvrtc();
        let device = options.engine.decoder.device;
        let kernels = KernelPath::for_device(device);
        let on_host = device.gpu_ordinal().is_none();
        let logits = if on_host {
            "host (CPU sampler)"
        } else if !options.engine.sample_on_device {
            "host: --sample-on-host brings them back for the CPU sampler"
        } else if kernels.is_gpu() {
            "on the GPU: decode steps write logits to device memory and top_p.cu samples them"
        } else {
            "host: the KV arena is on the GPU but logits come back for the CPU sampler"
        };
        let pooling = if on_host {
            "host (CPU pooling)"
        } else if !options.engine.sample_on_device {
            "host: --sample-on-host brings reward hidden states back for the CPU"
        } else if kernels.is_gpu() {
            "on the GPU: hidden-states reward models write [B, T, H] to device memory and reward_pool.cu applies the head there"
        } else {
            "host: the kernels are unavailable, so reward hidden states come back for the CPU"
        };
        let runtime_ok = onnxruntime.is_ok();
        let policy = ModelDir::open(&options.policy).map(|model| PolicyFound {
            path: model.path.clone(),
            size_bytes: model.size_bytes(),
            config: model.config.clone(),
            session: runtime_ok.then(|| check_session(&model, options.engine)),
        });
        let rewards = ["judge", "similarity"]
            .into_iter()
            .map(|name| {
                // Loading checks the config, the tokenizer and the graph's inputs and outputs.
                let source = crate::paths::reward_source(name);
                let loaded = crate::reward::load(&source, Default::default());
                (name, loaded.map(|rm| rm.name().to_string()))
            })
            .collect();
        Self {
            onnxruntime,
            driver,
            nvrtc,
            kernels,
            logits,
            pooling,
            policy,
            rewards,
        }
    }

    /// Whether everything needed to run loads.
    pub fn usable(&self) -> bool {
        let policy = match &self.policy {
            Ok(p) => matches!(&p.session, None | Some(Ok(ArenaCheck { bytes: Ok(_), .. }))),
            Err(_) => false,
        };
        self.onnxruntime.is_ok() && policy && self.rewards.iter().all(|(_, r)| r.is_ok())
    }

    /// The report's lines, each ending in a newline; `nvrtc` and `kernels` are those two
    /// lines' values in the caller's words.
    pub fn render(&self, nvrtc: &str, kernels: &str) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out, nvrtc, kernels);
        out
    }

    fn write(&self, f: &mut String, nvrtc: &str, kernels: &str) -> std::fmt::Result {
        match &self.onnxruntime {
            Ok((lib, providers)) => {
                writeln!(
                    f,
                    "onnxruntime      {} ({})",
                    lib.version,
                    lib.path.display()
                )?;
                writeln!(f, "providers        {}", providers.join(", "))?;
            }
            Err(e) => writeln!(f, "onnxruntime      NOT USABLE: {e}")?,
        }
        let driver = match &self.driver {
            Ok(n) => format!("found, {n} GPU(s)"),
            Err(e) => format!(
                "not found ({e}): GPU execution providers and kernels are unavailable; CPU paths run"
            ),
        };
        writeln!(f, "cuda driver      {driver}")?;
        writeln!(f, "nvrtc            {nvrtc}")?;
        writeln!(f, "kernels          {kernels}")?;
        writeln!(f, "decode logits    {}", self.logits)?;
        writeln!(f, "reward pooling   {}", self.pooling)?;
        match &self.policy {
            Ok(p) => {
                let c = &p.config;
                writeln!(
                    f,
                    "policy model     {} ({:.0} MiB; {} {} layers, {} heads / {} kv heads, vocab {})",
                    p.path.display(),
                    p.size_bytes as f64 / (1 << 20) as f64,
                    c.model_type,
                    c.num_layers,
                    c.num_heads,
                    c.num_kv_heads,
                    c.vocab_size
                )?;
                match &p.session {
                    None => {}
                    Some(Ok(arena)) => {
                        writeln!(f, "session          loads on {}", arena.device)?;
                        match &arena.bytes {
                            Ok(bytes) => writeln!(
                                f,
                                "kv arena         {} slots x {} tokens = {} ({} available)",
                                arena.slots,
                                arena.max_len,
                                crate::engine::gib(*bytes),
                                arena.available
                            )?,
                            Err(e) => writeln!(f, "kv arena         NOT USABLE: {e}")?,
                        }
                    }
                    Some(Err(e)) => writeln!(f, "session          NOT USABLE: {e}")?,
                }
            }
            Err(e) => writeln!(f, "policy model     NOT USABLE: {e}")?,
        }
        for (name, loaded) in &self.rewards {
            let label = format!("{name} RM");
            match loaded {
                Ok(rm) => writeln!(f, "{label:<17}{rm} (loads)")?,
                Err(e) => writeln!(f, "{label:<17}NOT USABLE: {e}")?,
            }
        }
        writeln!(
            f,
            "status           {}",
            if self.usable() {
                "ok"
            } else {
                "not usable (see above)"
            }
        )
    }
}

/// Loads the tokenizer and the decoder session, and sizes the KV arena `options` ask for.
fn check_session(model: &ModelDir, options: EngineOptions) -> Result<ArenaCheck, crate::Error> {
    model.tokenizer()?;
    let decoder = Decoder::load(model, options.decoder)?;
    let max_len = options.max_seq_len.min(decoder.config().context_length);
    let shape = decoder.kv_shape(max_len);
    let available = crate::engine::available_memory_bytes()
        .map_or_else(|| "unknown".into(), crate::engine::gib);
    let slots = match options.kv_memory {
        Some(budget) => crate::engine::slots_in_budget(shape, budget)?,
        None => options.kv_slots,
    };
    Ok(ArenaCheck {
        device: options.decoder.device,
        slots,
        max_len,
        bytes: crate::engine::check_arena_fits(shape, slots),
        available,
    })
}
