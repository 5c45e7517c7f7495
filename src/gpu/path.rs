//! Which implementation of the kernels' functions runs, and why: the GPU kernels on the GPU
//! the models run on, or the CPU references (the default, and the fallback with a one-line
//! reason whenever the GPU path cannot start).

use std::fmt;

use super::{GpuDevice, GpuError, GpuPool, GpuSampler};
use crate::runtime::Device;

/// Why sampling and pooling run on the CPU.
#[derive(Debug)]
pub enum CpuReason {
    /// The models themselves run on the CPU.
    CpuDevice,
    /// The GPU path could not start.
    Unavailable(GpuError),
}

impl fmt::Display for CpuReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuReason::CpuDevice => write!(f, "the models run on the CPU"),
            CpuReason::Unavailable(e) => write!(f, "GPU kernels unavailable, CPU fallback: {e}"),
        }
    }
}

/// The path sampling and pooling take.
#[derive(Debug)]
pub enum KernelPath {
    /// The kernels compiled and loaded on this GPU.
    Gpu {
        ordinal: usize,
        name: String,
        arch: &'static str,
    },
    /// The CPU implementations, with why.
    Cpu { reason: CpuReason },
}

impl KernelPath {
    /// Chooses the path for models running on `device`: the CPU for a CPU device;
    /// otherwise the GPU when its driver is there and both kernels compile and load.
    pub fn for_device(device: Device) -> Self {
        let Some(ordinal) = device.gpu_ordinal() else {
            return KernelPath::Cpu {
                reason: CpuReason::CpuDevice,
            };
        };
        let opened = GpuDevice::open(ordinal).and_then(|gpu| {
            GpuSampler::new(&gpu)?;
            GpuPool::new(&gpu)?;
            Ok(gpu)
        });
        match opened {
            Ok(gpu) => KernelPath::Gpu {
                ordinal,
                name: gpu.name().to_string(),
                arch: gpu.arch(),
            },
            Err(e) => KernelPath::Cpu {
                reason: CpuReason::Unavailable(e),
            },
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, KernelPath::Gpu { .. })
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelPath::Gpu {
                ordinal,
                name,
                arch,
            } => write!(
                f,
                "GPU {ordinal} ({name}, {arch}): top_p.cu, reward_pool.cu"
            ),
            KernelPath::Cpu { reason } => write!(f, "CPU ({reason})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_device_takes_the_cpu_path_with_its_reason() {
        let path = KernelPath::for_device(Device::Cpu);
        assert!(!path.is_gpu());
        assert!(matches!(
            path,
            KernelPath::Cpu {
                reason: CpuReason::CpuDevice
            }
        ));
        assert_eq!(path.to_string(), "CPU (the models run on the CPU)");
    }

    #[test]
    fn a_gpu_device_without_a_driver_falls_back_with_the_reason() {
        if crate::gpu::driver_status().is_ok() {
            // A machine with a GPU: the path is whatever the kernels give there.
            return;
        }
        let path = KernelPath::for_device(Device::Cuda(0));
        assert!(!path.is_gpu());
        let text = path.to_string();
        assert!(text.contains("CPU fallback: no CUDA driver"), "{text}");
    }
}
