//! Loading `libonnxruntime` from the path the caller resolved (see `crate::paths`), checking
//! its version and initializing `ort` once per process.

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

/// The library [`init`] loaded, or [`RuntimeError::NotInitialized`].
pub fn library() -> Result<&'static OrtLibrary, RuntimeError> {
    INITIALIZED.get().ok_or(RuntimeError::NotInitialized)
}

/// Loads ONNX Runtime from `path`, checks its version and initializes `ort`, once per
/// process; a later call with the same path returns the same library, with another path it
/// is [`RuntimeError::AlreadyInitialized`] (one process has one ONNX Runtime).
pub fn init(path: &Path) -> Result<&'static OrtLibrary, RuntimeError> {
    let loaded = |lib: &'static OrtLibrary| {
        if lib.path == path {
            Ok(lib)
        } else {
            Err(RuntimeError::AlreadyInitialized {
                loaded: lib.path.clone(),
                asked: path.to_path_buf(),
            })
        }
    };
    if let Some(lib) = INITIALIZED.get() {
        return loaded(lib);
    }
    // One initializer at a time: engines started from several threads must not build two
    // ONNX Runtime environments.
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(lib) = INITIALIZED.get() {
        return loaded(lib);
    }
    let path = path.to_path_buf();
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
