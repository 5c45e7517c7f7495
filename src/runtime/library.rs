//! Locating `libonnxruntime`, checking its version and initializing `ort` once per process.

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::RuntimeError;

/// ONNX Runtime minor version the `ort` crate is built against (`api-31`).
pub const REQUIRED_ORT_MINOR: u32 = 31;

/// The loaded library: where it came from, what it says its version is, and the process's
/// ONNX Runtime environment that sessions are built in.
pub struct OrtLibrary {
    pub path: PathBuf,
    pub version: String,
    pub environment: ort::environment::Environment,
}

static INITIALIZED: OnceLock<OrtLibrary> = OnceLock::new();
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Loads and initializes ONNX Runtime once; later calls return the same library.
pub fn ensure_initialized() -> Result<&'static OrtLibrary, RuntimeError> {
    if let Some(lib) = INITIALIZED.get() {
        return Ok(lib);
    }
    // One initializer at a time: engines started from several threads must not build two
    // ONNX Runtime environments.
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(lib) = INITIALIZED.get() {
        return Ok(lib);
    }
    let path = locate_library()?;
    let version = read_version(&path)?;
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok());
    if minor != Some(REQUIRED_ORT_MINOR) {
        return Err(RuntimeError::WrongVersion {
            path,
            found: version,
            required: REQUIRED_ORT_MINOR,
        });
    }
    let builder = ort::init_from(&path).map_err(|e| RuntimeError::LibraryLoad {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let environment = builder
        .with_name("tpo")
        .build()
        .map_err(RuntimeError::Ort)?;
    Ok(INITIALIZED.get_or_init(|| OrtLibrary {
        path,
        version,
        environment,
    }))
}

/// Finds the library: `ORT_DYLIB_PATH`, else `.venv/lib/python3*/site-packages/onnxruntime/capi/`
/// under the project root (found from `TPO_HOME`, the executable's ancestors, the working
/// directory's ancestors, then the source tree this binary was built from).
pub fn locate_library() -> Result<PathBuf, RuntimeError> {
    if let Ok(explicit) = std::env::var("ORT_DYLIB_PATH") {
        if !explicit.is_empty() {
            let path = PathBuf::from(&explicit);
            return if path.is_file() {
                Ok(path)
            } else {
                Err(RuntimeError::LibraryNotFound {
                    searched: format!("ORT_DYLIB_PATH={explicit} (no such file)"),
                })
            };
        }
    }
    let mut searched = Vec::new();
    for root in crate::project_roots() {
        let venv_lib = root.join(".venv").join("lib");
        searched.push(venv_lib.display().to_string());
        if let Some(found) = find_in_venv(&venv_lib) {
            return Ok(found);
        }
    }
    Err(RuntimeError::LibraryNotFound {
        searched: searched.join(", "),
    })
}

fn find_in_venv(venv_lib: &Path) -> Option<PathBuf> {
    let pythons = std::fs::read_dir(venv_lib).ok()?;
    for python in pythons.flatten() {
        let capi = python
            .path()
            .join("site-packages")
            .join("onnxruntime")
            .join("capi");
        let Ok(entries) = std::fs::read_dir(&capi) else {
            continue;
        };
        let mut candidates: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with("libonnxruntime.so") || n == "libonnxruntime.dylib"
                })
            })
            .collect();
        // Prefer the fully versioned file name (libonnxruntime.so.1.31.1) when several exist.
        candidates.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        if let Some(first) = candidates.into_iter().next() {
            return Some(first);
        }
    }
    None
}

/// Reads `OrtGetApiBase()->GetVersionString()` without initializing `ort`, so that a wrong
/// version is reported instead of tripping `ort`'s own checks.
fn read_version(path: &Path) -> Result<String, RuntimeError> {
    let load_err = |reason: String| RuntimeError::LibraryLoad {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading a shared library runs its initializers; the path is the ONNX Runtime
    // library the user pointed us to (or the one in our venv), which is what we intend to run.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| load_err(e.to_string()))?;
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release (C ABI, no args).
    let getter: libloading::Symbol<GetApiBase> = unsafe { lib.get(b"OrtGetApiBase") }
        .map_err(|_| load_err("the library does not export OrtGetApiBase".into()))?;
    // SAFETY: the symbol was resolved above; the call has no preconditions.
    let base = unsafe { getter() };
    if base.is_null() {
        return Err(load_err("OrtGetApiBase returned null".into()));
    }
    // SAFETY: `base` is non-null and points to the library's static OrtApiBase; the version
    // string it returns is a static NUL-terminated C string owned by the library.
    let version = unsafe { CStr::from_ptr(((*base).GetVersionString)()) };
    let version = version.to_string_lossy().into_owned();
    // Keep the library mapped: `ort` will dlopen the same path again and must find it intact.
    std::mem::forget(lib);
    Ok(version)
}
