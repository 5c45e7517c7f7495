//! Execution-provider choice: `--device cpu|cuda|tensorrt`.
//!
//! An EP that is asked for and missing is an error naming what to install; never a silent
//! fallback to CPU.

use std::fmt;
use std::str::FromStr;

use ort::ep::{self, ExecutionProvider};

use super::RuntimeError;

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
}

impl FromStr for Device {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            "tensorrt" | "trt" => Ok(Device::TensorRt),
            _ => Err(RuntimeError::UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
        })
    }
}

impl Device {
    /// Execution providers to register for this device, erroring if the loaded ONNX Runtime
    /// lacks them. CPU needs none (ONNX Runtime always has it).
    pub fn execution_providers(self) -> Result<Vec<ep::ExecutionProviderDispatch>, RuntimeError> {
        match self {
            Device::Cpu => Ok(Vec::new()),
            Device::Cuda => {
                require::<ep::CUDA>("CUDAExecutionProvider")?;
                Ok(vec![ep::CUDA::default().build().error_on_failure()])
            }
            Device::TensorRt => {
                require::<ep::TensorRT>("TensorrtExecutionProvider")?;
                require::<ep::CUDA>("CUDAExecutionProvider")?;
                Ok(vec![
                    ep::TensorRT::default().build().error_on_failure(),
                    ep::CUDA::default().build().error_on_failure(),
                ])
            }
        }
    }
}

fn require<E: ExecutionProvider>(provider: &'static str) -> Result<(), RuntimeError> {
    if E::is_available()? {
        Ok(())
    } else {
        Err(RuntimeError::ProviderMissing { provider })
    }
}

/// Names of the execution providers compiled into the loaded ONNX Runtime, for `tpo doctor`.
pub fn available_providers() -> Vec<&'static str> {
    let mut names = vec!["CPUExecutionProvider"];
    if ep::CUDA::is_available().unwrap_or(false) {
        names.push("CUDAExecutionProvider");
    }
    if ep::TensorRT::is_available().unwrap_or(false) {
        names.push("TensorrtExecutionProvider");
    }
    names
}
