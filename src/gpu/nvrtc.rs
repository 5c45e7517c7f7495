//! Loading NVRTC, the CUDA runtime compiler (no GPU needed).
//!
//! `cudarc` opens `libnvrtc.so.13` by its bare name, which the dynamic loader finds only on
//! the library path; the wheel `nvidia-cuda-nvrtc` puts it inside the venv instead. So we
//! open it first by its full path and keep it loaded: a later `dlopen` of the same soname
//! then resolves to the library already in the process. The search order is the candidate
//! files the caller set once at start ([`set_nvrtc_candidates`]; the edge resolves them:
//! `TPO_NVRTC_PATH`, the project's venv, the CUDA toolkit), then the loader's own path (a
//! CUDA toolkit on `LD_LIBRARY_PATH`). This room does not know where the project keeps
//! things on disk.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::GpuError;

/// The soname `cudarc` asks for (CUDA 13).
pub const NVRTC_SONAME: &str = "libnvrtc.so.13";

/// The files NVRTC may be, most specific first, as the caller resolved them; none (only the
/// loader's path) when unset.
static CANDIDATES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// Sets where NVRTC may be, most specific first (first call wins; call it before anything
/// compiles a kernel, as later calls do not move an NVRTC already loaded).
pub fn set_nvrtc_candidates(candidates: Vec<PathBuf>) {
    let _ = CANDIDATES.set(candidates);
}

/// Where NVRTC was loaded from (a path, or the soname when the loader found it), or why not.
static NVRTC: OnceLock<Result<String, GpuError>> = OnceLock::new();

/// Loads NVRTC once per process; later calls return the first call's result.
pub fn load_nvrtc() -> Result<&'static str, GpuError> {
    match NVRTC.get_or_init(open_nvrtc) {
        Ok(from) => Ok(from.as_str()),
        Err(e) => Err(clone_error(e)),
    }
}

fn open_nvrtc() -> Result<String, GpuError> {
    let mut searched = Vec::new();
    for path in CANDIDATES.get().map(Vec::as_slice).unwrap_or_default() {
        searched.push(path.display().to_string());
        if path.is_file() {
            return preload(path);
        }
    }
    searched.push(format!("{NVRTC_SONAME} on the loader path"));
    // SAFETY: `is_culib_present` only tries `dlopen` on cudarc's candidate names and closes
    // what it opened; it never calls into the library.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Ok(NVRTC_SONAME.to_string());
    }
    Err(GpuError::NvrtcNotFound {
        searched: searched.join(", "),
    })
}

fn preload(path: &Path) -> Result<String, GpuError> {
    // NVRTC itself opens its builtins (`libnvrtc-builtins.so.13.x`) by soname when it
    // compiles; load the copy next to it first so that open resolves the same way.
    let builtins = path
        .parent()
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .and_then(|entries| {
            entries.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libnvrtc-builtins.so.13"))
            })
        });
    if let Some(builtins) = builtins {
        // SAFETY: the builtins library has no initializers beyond the loader's own; it is
        // leaked so it stays loaded for NVRTC's later dlopen by soname.
        match unsafe { libloading::Library::new(&builtins) } {
            Ok(lib) => std::mem::forget(lib),
            Err(e) => {
                return Err(GpuError::NvrtcLoad {
                    path: builtins.display().to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
    // SAFETY: loading NVRTC runs its initializers only (it starts no threads and touches no
    // GPU). The handle is leaked on purpose: the library must stay loaded for the process's
    // life so that cudarc's later dlopen of the soname resolves to it.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| GpuError::NvrtcLoad {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    std::mem::forget(lib);
    // SAFETY: as above; now resolves to the library loaded by path.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(path.display().to_string())
    } else {
        Err(GpuError::NvrtcLoad {
            path: path.display().to_string(),
            reason: format!("loaded, but its soname is not {NVRTC_SONAME} (a CUDA 12 NVRTC?)"),
        })
    }
}

/// `GpuError` holds a `DriverError` that is not `Clone`; the cached NVRTC result only ever
/// holds the variants below.
fn clone_error(e: &GpuError) -> GpuError {
    match e {
        GpuError::NvrtcNotFound { searched } => GpuError::NvrtcNotFound {
            searched: searched.clone(),
        },
        GpuError::NvrtcLoad { path, reason } => GpuError::NvrtcLoad {
            path: path.clone(),
            reason: reason.clone(),
        },
        other => GpuError::NvrtcLoad {
            path: String::new(),
            reason: other.to_string(),
        },
    }
}
