//! The GPU kernels (`kernels/*.cu`) behind the same functions as their CPU references:
//! batched top-p sampling (reference: `engine`'s `Sampler`) and reward-head pooling
//! (reference: `reward::pool`).
//!
//! Rooms: `kernels` (the embedded CUDA sources and their compilation to PTX with NVRTC),
//! `nvrtc` (loading the NVRTC library from candidate files the caller resolved; no GPU
//! needed), `device` (the CUDA driver: is one there, and a context on it), `buffer` (raw
//! device memory we hand to ONNX Runtime), `sampler` and `pool` (launching the kernels),
//! `path` (which implementation runs, and why).
//!
//! This is rank 2 of the layers: it works over plain slices and its own small types
//! ([`RowSettings`], [`RowSampling`], [`SampledRow`], [`HiddenStates`]) and imports nothing
//! above the runtime. The engine and the reward models convert their types to these and call
//! in; where files are on disk is resolved at the edge and passed in
//! ([`set_nvrtc_candidates`]); timing the kernels is `bench::kernels`'s business.
//!
//! Everything is loaded at run time through `cudarc`'s dynamic loading, so the crate builds
//! and its CPU paths run on machines without CUDA. `cudarc` panics when a library it needs is
//! missing, so this module checks for each library before `cudarc` touches it and turns its
//! absence into a [`GpuError`] that says what is missing; callers fall back to the CPU path
//! with that one-line reason (`tpo doctor` shows it, with what to install).

mod buffer;
mod device;
mod kernels;
mod nvrtc;
mod path;
mod pool;
mod sampler;

pub use buffer::DeviceBuffer;
pub use device::{driver_status, GpuDevice};
pub use kernels::{compile_ptx, KernelSource, ALL_KERNELS, REWARD_POOL, TOP_P};
pub use nvrtc::{load_nvrtc, set_nvrtc_candidates, NVRTC_SONAME};
pub use path::{CpuReason, KernelPath};
pub use pool::{DeviceHead, GpuPool, HiddenStates, LastTokenInputs, MaskedMeanInputs};
pub use sampler::{
    GpuSampler, RowBuffers, RowFault, RowResult, RowSampling, RowSettings, SampledRow,
};

/// Errors of the GPU layer.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    #[error("NVRTC (the CUDA runtime compiler) was not found (looked in: {searched})")]
    NvrtcNotFound { searched: String },
    #[error("could not load NVRTC from {path}: {reason}")]
    NvrtcLoad { path: String, reason: String },
    #[error("kernel {kernel} does not compile for {arch}: {log}")]
    Compile {
        kernel: &'static str,
        arch: &'static str,
        log: String,
    },
    #[error("GPU {ordinal} has compute capability {major}.{minor}, which the kernels do not target (sm_70 and newer)")]
    UnsupportedArch {
        ordinal: usize,
        major: i32,
        minor: i32,
    },
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("invalid kernel input: {0}")]
    Input(String),
}
