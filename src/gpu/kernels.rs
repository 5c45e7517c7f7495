//! The CUDA sources, embedded in the binary at build time (`include_str!`, so cargo rebuilds
//! when a `.cu` file changes), and their compilation to PTX with NVRTC.
//!
//! Compiling needs NVRTC only, not a GPU: CI compiles every kernel for `sm_90` (the lent
//! H200s) through this same function, so a kernel that does not compile fails the tests.

use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use super::{nvrtc, GpuError};

/// One `.cu` file and the `extern "C"` kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// The file under `kernels/`.
    pub file: &'static str,
    pub source: &'static str,
    pub functions: &'static [&'static str],
}

/// Batched sampling (temperature, top-k, top-p, min-p, the draw): `kernels/top_p.cu`.
pub const TOP_P: KernelSource = KernelSource {
    file: "top_p.cu",
    source: include_str!("../../kernels/top_p.cu"),
    functions: &["sample_rows"],
};

/// Reward-head pooling (last token + head, masked mean, head, cosine):
/// `kernels/reward_pool.cu`.
pub const REWARD_POOL: KernelSource = KernelSource {
    file: "reward_pool.cu",
    source: include_str!("../../kernels/reward_pool.cu"),
    functions: &[
        "pool_last_token_head",
        "pool_masked_mean",
        "pool_head",
        "pool_cosine",
    ],
};

/// Every kernel source, for the compile check.
pub const ALL_KERNELS: [KernelSource; 2] = [TOP_P, REWARD_POOL];

/// Compiles `kernel` to PTX for `arch` (e.g. `"sm_90"`). Loads NVRTC first (an error saying
/// where it looked when it is missing). Exact IEEE division and square roots, no fast math
/// and no FMA contraction, so results stay close to the CPU reference.
pub fn compile_ptx(kernel: &KernelSource, arch: &'static str) -> Result<Ptx, GpuError> {
    nvrtc::load_nvrtc()?;
    let options = CompileOptions {
        arch: Some(arch),
        fmad: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ftz: Some(false),
        name: Some(kernel.file.to_string()),
        ..CompileOptions::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(kernel.source, options).map_err(|e| GpuError::Compile {
        kernel: kernel.file,
        arch,
        log: match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => other.to_string(),
        },
    })
}

/// The NVRTC `arch` option for a device of compute capability `major.minor`, if the kernels
/// target it (sm_70 and newer: they use `__shfl_*_sync` and 64-bit shared atomics).
pub(crate) fn arch_for(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "sm_70",
        (7, 2) => "sm_72",
        (7, 5) => "sm_75",
        (8, 0) => "sm_80",
        (8, 6) => "sm_86",
        (8, 7) => "sm_87",
        (8, 9) => "sm_89",
        (9, 0) => "sm_90",
        (10, 0) => "sm_100",
        (10, 3) => "sm_103",
        (12, 0) => "sm_120",
        (12, 1) => "sm_121",
        // A newer device runs PTX for the newest architecture we know, JIT-compiled.
        (m, _) if m > 12 => "sm_120",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_names_functions_its_source_defines() {
        for k in ALL_KERNELS {
            for f in k.functions {
                let decl = format!("{f}(");
                assert!(
                    k.source.contains("__global__ void __launch_bounds__")
                        && k.source.contains(&decl),
                    "{} lacks {f}",
                    k.file
                );
            }
        }
    }

    #[test]
    fn architectures_map_to_nvrtc_targets() {
        assert_eq!(arch_for(9, 0), Some("sm_90"));
        assert_eq!(arch_for(8, 0), Some("sm_80"));
        assert_eq!(arch_for(6, 1), None);
        assert_eq!(arch_for(14, 0), Some("sm_120"));
    }
}
