//! Building an ONNX Runtime session for any graph we run (the decoder and every reward
//! model), so execution-provider choice, threading and load errors are handled in one place.

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

use super::{library, Device, RuntimeError};

/// How a session is built: where it runs and with how many intra-op threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionOptions {
    pub device: Device,
    /// Intra-op threads; 0 lets ONNX Runtime use one per physical core.
    pub threads: usize,
}

/// Whether the session has an output `name` whose elements are float32.
pub fn output_is_f32(session: &Session, name: &str) -> bool {
    session.outputs().iter().any(|o| {
        o.name() == name
            && matches!(
                o.dtype(),
                ValueType::Tensor {
                    ty: TensorElementType::Float32,
                    ..
                }
            )
    })
}

/// Loads `onnx` into a session (full graph optimization, the device's providers).
pub fn open_session(onnx: &Path, options: SessionOptions) -> Result<Session, RuntimeError> {
    let lib = library()?;
    let providers = options.device.execution_providers()?;
    let mut builder = Session::builder(&lib.environment)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| RuntimeError::Ort(e.into()))?;
    if options.threads > 0 {
        builder = builder
            .with_intra_threads(options.threads)
            .map_err(|e| RuntimeError::Ort(e.into()))?;
    }
    if !providers.is_empty() {
        builder = builder.with_execution_providers(providers).map_err(|e| {
            RuntimeError::ProviderStart {
                provider: options.device.provider_name(),
                reason: e.to_string().trim_end().to_string(),
            }
        })?;
    }
    builder
        .commit_from_file(onnx)
        .map_err(|e| RuntimeError::SessionLoad {
            path: onnx.to_path_buf(),
            reason: e.to_string(),
        })
}
