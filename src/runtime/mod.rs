//! ONNX Runtime as a resource: finding and loading the shared library, choosing an
//! execution provider, building sessions, and making tensors that alias memory we own.
//!
//! This room knows nothing about language models; `model` and `engine` build on it.
//! The library is loaded dynamically (`ort`'s `load-dynamic`) from the path the caller
//! resolved ([`init`]; `crate::paths::onnxruntime_library` finds `ORT_DYLIB_PATH` or the
//! `onnxruntime` wheel in the project's virtual environment), and its version is checked
//! before `ort` touches it so that a mismatch is a clear error rather than a panic.

mod device;
mod library;
mod session;
mod tensor;

pub use device::{available_providers, set_tensorrt_cache_dir, Device};
pub use library::{init, library, OrtLibrary, REQUIRED_ORT_MINOR};
pub use session::{open_session, output_is_f32, SessionOptions};
pub use tensor::{alias_f32_tensor, alias_tensor, cuda_memory_info, AliasElement};

use std::path::PathBuf;

/// Errors of the runtime layer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked in: {searched}). Run `make setup` to create the \
         project's .venv with onnxruntime, or set ORT_DYLIB_PATH to libonnxruntime.so"
    )]
    LibraryNotFound { searched: String },
    #[error(
        "ONNX Runtime is not loaded yet: load it with runtime::init (the CLI and the server \
         do, from paths::onnxruntime_library) before opening a model"
    )]
    NotInitialized,
    #[error("ONNX Runtime is already loaded from {loaded}; one process cannot also load {asked}")]
    AlreadyInitialized { loaded: PathBuf, asked: PathBuf },
    #[error("could not load ONNX Runtime from {path}: {reason}")]
    LibraryLoad { path: PathBuf, reason: String },
    #[error(
        "ONNX Runtime at {path} is version {found}; tpo needs 1.{required}.x \
         (run `make setup`, or point ORT_DYLIB_PATH at onnxruntime 1.{required})"
    )]
    WrongVersion {
        path: PathBuf,
        found: String,
        required: u32,
    },
    #[error("unknown device {0:?}: expected one of cpu, cuda[:N], tensorrt[:N]")]
    UnknownDevice(String),
    #[error(
        "execution provider {provider} was asked for but this ONNX Runtime build does not have it; \
         run `make gpu-setup` (the onnxruntime-gpu 1.31.1 wheel, CUDA 13, in .venv-gpu; TensorRT \
         also needs TensorRT 10 and cuDNN 9) and a CUDA driver"
    )]
    ProviderMissing { provider: &'static str },
    #[error(
        "execution provider {provider} is in this ONNX Runtime build but could not start: \
         {reason}. It needs an NVIDIA driver and the CUDA 13 libraries (cuBLAS 13, cudart 13, \
         cuRAND 10, cuDNN 9; TensorRT 10 for TensorRT) on LD_LIBRARY_PATH (docs/gpu.md)"
    )]
    ProviderStart {
        provider: &'static str,
        reason: String,
    },
    #[error("cannot use {path} as the TensorRT engine cache: {reason}")]
    TensorRtCache { path: PathBuf, reason: String },
    #[error("could not load the ONNX model {path}: {reason}")]
    SessionLoad { path: PathBuf, reason: String },
    #[error("ONNX Runtime error: {0}")]
    Ort(#[from] ort::Error),
}
