//! Tensors over memory we own (the KV arena), so ONNX Runtime reads and writes it in place.

use std::ptr::NonNull;

use ort::memory::{Allocator, MemoryInfo};
use ort::value::DynValue;
use ort::AsPointer;

use super::RuntimeError;

/// Makes an owned `ort` value of shape `shape` over `data` (float32, CPU) without copying.
///
/// Such a value can be bound both as a graph input and as an output through `IoBinding`,
/// which is how the GroupQueryAttention past/present buffers share one allocation.
///
/// # Safety
/// `data` must point to at least `shape.iter().product()` valid `f32`s that stay allocated,
/// and are not read or written by Rust code, for as long as the returned value (or any
/// binding holding it) is used by ONNX Runtime.
pub unsafe fn alias_f32_tensor(data: *mut f32, shape: &[i64]) -> Result<DynValue, RuntimeError> {
    let elements: i64 = shape.iter().product();
    let bytes = usize::try_from(elements).unwrap_or(0) * std::mem::size_of::<f32>();
    let info = MemoryInfo::default();
    let mut out: *mut ort::sys::OrtValue = std::ptr::null_mut();
    // SAFETY: `info` is a valid CPU memory info; the caller guarantees `data` covers `bytes`
    // and outlives the value; `shape` is a valid slice for the duration of the call.
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            info.ptr(),
            data.cast(),
            bytes,
            shape.as_ptr(),
            shape.len(),
            ort::sys::ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
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
    // SAFETY: `ptr` is a freshly created tensor value we own; the default CPU allocator is the
    // one `ort` uses to describe CPU tensors (the data itself is ours and is never freed by it).
    Ok(unsafe { DynValue::from_ptr(ptr, Some(&Allocator::default())) })
}
