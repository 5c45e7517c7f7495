//! The CUDA driver: whether one is there, and a context plus stream on one GPU.
//!
//! `cudarc` panics when `libcuda` cannot be loaded, so [`GpuDevice::open`] checks for the
//! library first and turns every failure (no library, no device, a bad ordinal, an
//! architecture the kernels do not target) into a [`GpuError`].

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaModule, CudaStream};

use super::kernels::{arch_for, compile_ptx, KernelSource};
use super::GpuError;

/// A context and stream on one GPU (the device's primary context, which ONNX Runtime's CUDA
/// execution provider also uses, so device pointers from either are valid in the other).
/// A clone shares the context and the stream.
#[derive(Clone)]
pub struct GpuDevice {
    ordinal: usize,
    name: String,
    arch: &'static str,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
}

impl std::fmt::Debug for GpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuDevice")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("arch", &self.arch)
            .finish()
    }
}

/// Whether the driver library loads and reports at least one device; the reason if not.
pub fn driver_status() -> Result<usize, GpuError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate names for libcuda
    // and closes what it opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoDriver(
            "libcuda.so (the NVIDIA driver) cannot be loaded on this machine".into(),
        ));
    }
    let count = CudaContext::device_count()?;
    match usize::try_from(count) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(GpuError::NoDriver(
            "the NVIDIA driver is loaded but reports no GPU".into(),
        )),
    }
}

impl GpuDevice {
    /// Opens GPU `ordinal`: checks the driver, retains the primary context, makes a stream.
    pub fn open(ordinal: usize) -> Result<Self, GpuError> {
        let count = driver_status()?;
        if ordinal >= count {
            return Err(GpuError::NoDriver(format!(
                "GPU {ordinal} was asked for but the driver reports {count}"
            )));
        }
        let context = CudaContext::new(ordinal)?;
        let (major, minor) = context.compute_capability()?;
        let arch = arch_for(major, minor).ok_or(GpuError::UnsupportedArch {
            ordinal,
            major,
            minor,
        })?;
        let name = context.name()?;
        let stream = context.new_stream()?;
        Ok(Self {
            ordinal,
            name,
            arch,
            context,
            stream,
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    /// The device's name as the driver reports it (e.g. "NVIDIA H200").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The NVRTC target the kernels are compiled for on this device.
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Waits until everything queued on this device's stream has run.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }

    /// Compiles `kernel` for this device and loads it.
    pub fn load(&self, kernel: &KernelSource) -> Result<Arc<CudaModule>, GpuError> {
        let ptx = compile_ptx(kernel, self.arch)?;
        Ok(self.context.load_module(ptx)?)
    }
}
