//! Tensors over memory we own (the KV arena), so ONNX Runtime reads and writes it in place.

use std::ffi::c_void;
use std::ptr::NonNull;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::value::DynValue;
use ort::AsPointer;

use super::RuntimeError;

/// Element types of the tensors we alias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AliasElement {
    F32,
    F16,
}

impl AliasElement {
    fn bytes(self) -> usize {
        match self {
            AliasElement::F32 => 4,
            AliasElement::F16 => 2,
        }
    }

    fn onnx(self) -> ort::sys::ONNXTensorElementDataType {
        match self {
            AliasElement::F32 => {
                ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT
            }
            AliasElement::F16 => {
                ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16
            }
        }
    }
}

/// Describes memory on GPU `ordinal` for ONNX Runtime's CUDA execution provider.
pub fn cuda_memory_info(ordinal: usize) -> Result<MemoryInfo<'static>, RuntimeError> {
    let id = i32::try_from(ordinal)
        .map_err(|_| RuntimeError::UnknownDevice(format!("cuda:{ordinal}")))?;
    Ok(MemoryInfo::new(
        AllocationDevice::CUDA,
        id,
        AllocatorType::Device,
        MemoryType::Default,
    )?)
}

/// Makes an owned `ort` value of shape `shape` over `data` (float32, CPU) without copying.
///
/// # Safety
/// As [`alias_tensor`].
pub unsafe fn alias_f32_tensor(data: *mut f32, shape: &[i64]) -> Result<DynValue, RuntimeError> {
    // SAFETY: forwarded from the caller.
    unsafe {
        alias_tensor(
            data.cast(),
            AliasElement::F32,
            shape,
            &MemoryInfo::default(),
        )
    }
}

/// Makes an owned `ort` value of shape `shape` and element type `element` over `data`, which
/// is host memory or device memory as `memory` says, without copying.
///
/// Such a value can be bound both as a graph input and as an output through `IoBinding`,
/// which is how the GroupQueryAttention past/present buffers share one allocation.
///
/// # Safety
/// `data` must point to at least `shape.iter().product()` valid elements of `element`, in the
/// memory `memory` describes, that stay allocated and are not read or written by Rust code for
/// as long as the returned value (or any binding holding it) is used by ONNX Runtime.
pub unsafe fn alias_tensor(
    data: *mut c_void,
    element: AliasElement,
    shape: &[i64],
    memory: &MemoryInfo,
) -> Result<DynValue, RuntimeError> {
    let elements: i64 = shape.iter().product();
    let bytes = usize::try_from(elements).unwrap_or(0) * element.bytes();
    let info = memory;
    let mut out: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: `info` is a valid memory info; the caller guarantees `data` covers `bytes`
    // and outlives the value; `shape` is a valid slice for the duration of the call.
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            data.cast(),
            bytes,
            shape.as_ptr(),
            shape.len(),
            element.onnx(),
            &mut out,
        )
    };
    // SAFETY: `status` comes straight from the ONNX Runtime call above.
    unsafe { ort::Error::result_from_status(status) }?;
    let ptr = NonNull::new(out).ok_or_else(|| {
        RuntimeError::Ort(ort::Error::new(
            "CreateTensorWithDataAsOrtValue returned null",
        ))
    })?;
    // SAFETY: `ptr` is a freshly created tensor value we own. The data is ours and never freed
    // through an allocator; `ort` only keeps the default CPU allocator's handle alongside the
    // value (it needs one for any tensor), and we never extract a device tensor on the host.
    Ok(unsafe { DynValue::from_ptr(ptr, Some(&Allocator::default())) })
}
