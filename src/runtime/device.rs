//! Execution-provider choice: `--device cpu | cuda[:N] | tensorrt[:N]`.
//!
//! An EP that is asked for and missing is an error naming what to install; never a silent
//! fallback to CPU. TensorRT runs in fp16 with an engine cache folder (engines are built on
//! the first run of a graph, minutes, and loaded from the cache after), and the CUDA EP is
//! registered after it for the nodes TensorRT does not take.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use ort::ep::{self, ExecutionProvider};

use super::RuntimeError;

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA EP on GPU `N`.
    Cuda(usize),
    /// ONNX Runtime's TensorRT EP on GPU `N` (CUDA EP as the fallback for other nodes).
    TensorRt(usize),
}

impl FromStr for Device {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        let (kind, ordinal) = match lower.split_once(':') {
            Some((kind, n)) => {
                let n = n
                    .parse::<usize>()
                    .map_err(|_| RuntimeError::UnknownDevice(s.to_string()))?;
                (kind, Some(n))
            }
            None => (lower.as_str(), None),
        };
        match (kind, ordinal) {
            ("cpu", None) => Ok(Device::Cpu),
            ("cuda" | "gpu", n) => Ok(Device::Cuda(n.unwrap_or(0))),
            ("tensorrt" | "trt", n) => Ok(Device::TensorRt(n.unwrap_or(0))),
            _ => Err(RuntimeError::UnknownDevice(s.to_string())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::TensorRt(n) => write!(f, "tensorrt:{n}"),
        }
    }
}

/// The TensorRT engine cache folder, set once by the caller (`crate::paths` resolves it);
/// `tensorrt-cache` in the working directory when unset.
static TENSORRT_CACHE: OnceLock<PathBuf> = OnceLock::new();

/// Sets where TensorRT keeps built engines (first call wins).
pub fn set_tensorrt_cache_dir(dir: PathBuf) {
    let _ = TENSORRT_CACHE.set(dir);
}

fn tensorrt_cache_dir() -> PathBuf {
    TENSORRT_CACHE
        .get()
        .cloned()
        .unwrap_or_else(|| PathBuf::from("tensorrt-cache"))
}

impl Device {
    /// The GPU ordinal, for the GPU devices.
    pub fn gpu_ordinal(self) -> Option<usize> {
        match self {
            Device::Cpu => None,
            Device::Cuda(n) | Device::TensorRt(n) => Some(n),
        }
    }

    /// The ONNX Runtime execution provider this device runs on.
    pub fn provider_name(self) -> &'static str {
        match self {
            Device::Cpu => "CPUExecutionProvider",
            Device::Cuda(_) => "CUDAExecutionProvider",
            Device::TensorRt(_) => "TensorrtExecutionProvider",
        }
    }

    /// Execution providers to register for this device, erroring if the loaded ONNX Runtime
    /// lacks them. CPU needs none (ONNX Runtime always has it).
    pub fn execution_providers(self) -> Result<Vec<ep::ExecutionProviderDispatch>, RuntimeError> {
        let ordinal =
            |n: usize| i32::try_from(n).map_err(|_| RuntimeError::UnknownDevice(format!("{self}")));
        match self {
            Device::Cpu => Ok(Vec::new()),
            Device::Cuda(n) => {
                require::<ep::CUDA>("CUDAExecutionProvider")?;
                Ok(vec![ep::CUDA::default()
                    .with_device_id(ordinal(n)?)
                    .build()
                    .error_on_failure()])
            }
            Device::TensorRt(n) => {
                require::<ep::TensorRT>("TensorrtExecutionProvider")?;
                require::<ep::CUDA>("CUDAExecutionProvider")?;
                let cache = tensorrt_cache_dir();
                std::fs::create_dir_all(&cache).map_err(|e| RuntimeError::TensorRtCache {
                    path: cache.clone(),
                    reason: e.to_string(),
                })?;
                let cache = cache.display().to_string();
                Ok(vec![
                    ep::TensorRT::default()
                        .with_device_id(ordinal(n)?)
                        .with_fp16(true)
                        .with_engine_cache(true)
                        .with_engine_cache_path(&cache)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&cache)
                        .build()
                        .error_on_failure(),
                    ep::CUDA::default()
                        .with_device_id(ordinal(n)?)
                        .build()
                        .error_on_failure(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_with_and_without_an_ordinal() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("CUDA".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("cuda:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert_eq!("gpu:1".parse::<Device>().unwrap(), Device::Cuda(1));
        assert_eq!("trt".parse::<Device>().unwrap(), Device::TensorRt(0));
        assert_eq!("tensorrt:2".parse::<Device>().unwrap(), Device::TensorRt(2));
        for bad in ["cpu:0", "cuda:", "cuda:x", "cuda:-1", "tpu", ""] {
            let err = bad.parse::<Device>().unwrap_err();
            assert!(err.to_string().contains("expected one of"), "{bad}: {err}");
        }
        assert_eq!(Device::TensorRt(2).to_string(), "tensorrt:2");
        assert_eq!(Device::Cuda(0).gpu_ordinal(), Some(0));
        assert_eq!(Device::Cpu.gpu_ordinal(), None);
    }
}
