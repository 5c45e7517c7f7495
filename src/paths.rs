//! Where things are on disk: the one module that knows the project's layout (`.venv/` with
//! ONNX Runtime, `models/` with the exported models, `data/`). The CLI, the server and the
//! tests resolve paths here and pass them down; `runtime`, `model`, `reward`, `engine` and
//! `search` only ever open the paths they are given.

use std::path::{Path, PathBuf};

use crate::model::DEFAULT_POLICY;
use crate::reward::{RewardSource, SimilarityMetric};
use crate::runtime::RuntimeError;

/// Folder of the embedded judge under `models/`.
pub const JUDGE_DIR: &str = "smollm2-judge";
/// Folder of the embedded judge's int8 form (`--reward-model judge-int8`; docs/quantization.md).
pub const JUDGE_INT8_DIR: &str = "smollm2-judge-int8";
/// Folder of the embedded similarity encoder under `models/`.
pub const ENCODER_DIR: &str = "all-minilm-l6-v2";
/// Folder of the encoder's int8 form (`similarity-int8`, `bertscore-int8`).
pub const ENCODER_INT8_DIR: &str = "all-minilm-l6-v2-int8";

/// Folders that may be the project root (holding `.venv/` and `models/`), most specific
/// first: `TPO_HOME`, the executable's ancestors, the working directory's ancestors, and the
/// source tree this binary was built from.
pub fn project_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(home) = std::env::var("TPO_HOME") {
        if !home.is_empty() {
            roots.push(PathBuf::from(home));
        }
    }
    let mut push_ancestors = |start: Option<PathBuf>| {
        if let Some(start) = start {
            for dir in start.ancestors() {
                if dir.join("models").is_dir() || dir.join(".venv").is_dir() {
                    roots.push(dir.to_path_buf());
                }
            }
        }
    };
    push_ancestors(std::env::current_exe().ok());
    push_ancestors(std::env::current_dir().ok());
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    roots.dedup();
    roots
}

/// `rel` under the first project root that has it (a file or folder), else `rel` itself
/// (relative to the working directory, so an error message names where it was expected).
pub fn project_path(rel: &str) -> PathBuf {
    project_roots()
        .iter()
        .map(|root| root.join(rel))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(rel))
}

/// The default policy folder: `TPO_MODEL_DIR`, else `models/smollm2-135m-instruct` under the
/// project root.
pub fn default_policy_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TPO_MODEL_DIR") {
        if !dir.is_empty() {
            return PathBuf::from(dir);
        }
    }
    project_path(&format!("models/{DEFAULT_POLICY}"))
}

/// The policy formats `make setup` exports, by the short name commands take (`--model q4`):
/// the name, its folder under `models/`, and what it is.
pub const POLICY_FORMATS: [(&str, &str, &str); 4] = [
    (
        "f32",
        "smollm2-135m-instruct",
        "float32 weights and KV (the default)",
    ),
    (
        "f16",
        "smollm2-135m-instruct-f16",
        "float16 weights, activations and KV (the GPU layout)",
    ),
    (
        "q4",
        "smollm2-135m-instruct-q4",
        "the GGUF's own Q4_1 blocks on MatMulNBits (docs/int4.md)",
    ),
    (
        "int8",
        "smollm2-135m-instruct-int8",
        "int8 attention and gate/up projections on MatMulInteger (docs/quantization.md)",
    ),
];

/// The policy folder `spec` names: a short name of [`POLICY_FORMATS`] (`f32` is
/// [`default_policy_dir`]), else `spec` itself as a path.
pub fn policy_dir(spec: &str) -> PathBuf {
    match POLICY_FORMATS.iter().find(|(name, _, _)| *name == spec) {
        Some(("f32", _, _)) => default_policy_dir(),
        Some((_, dir, _)) => embedded_model(dir),
        None => PathBuf::from(spec),
    }
}

/// `models/NAME` under the first project root that has it.
pub fn embedded_model(name: &str) -> PathBuf {
    project_path(&format!("models/{name}"))
}

/// The embedded reward models, by the short name commands take (`--reward-model judge`): the
/// name, its folder under `models/`, the similarity metric it scores with (`None`: the
/// folder's own reward), and what it is.
pub const EMBEDDED_REWARDS: [(&str, &str, Option<SimilarityMetric>, &str); 6] = [
    (
        "judge",
        JUDGE_DIR,
        None,
        "the SmolLM2 judge: a yes/no preference prompt, scored",
    ),
    (
        "judge-int8",
        JUDGE_INT8_DIR,
        None,
        "the judge with int8 linears on MatMulInteger (docs/quantization.md)",
    ),
    (
        "similarity",
        ENCODER_DIR,
        Some(SimilarityMetric::Cosine),
        "MiniLM cosine similarity to the row's reference answer",
    ),
    (
        "bertscore",
        ENCODER_DIR,
        Some(SimilarityMetric::Bertscore),
        "MiniLM BERTScore F1 against the row's reference answer",
    ),
    (
        "similarity-int8",
        ENCODER_INT8_DIR,
        Some(SimilarityMetric::Cosine),
        "similarity with MiniLM's int8 form (docs/quantization.md)",
    ),
    (
        "bertscore-int8",
        ENCODER_INT8_DIR,
        Some(SimilarityMetric::Bertscore),
        "BERTScore with MiniLM's int8 form (docs/quantization.md)",
    ),
];

/// What a reward-model name stands for: a name of [`EMBEDDED_REWARDS`] (the embedded models
/// under `models/`; `bertscore` is the encoder with token-level matching), a folder (named by
/// its last component, so a server never shows its own paths), or `NAME=DIR` (a folder under
/// a name of the caller's choosing).
pub fn reward_source(spec: &str) -> RewardSource {
    let embedded = EMBEDDED_REWARDS
        .iter()
        .find(|(name, _, _, _)| *name == spec);
    let (name, dir, metric) = match embedded {
        Some(&(name, folder, metric, _)) => (name.to_string(), embedded_model(folder), metric),
        None => match spec
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
        {
            Some((name, dir)) => (name.to_string(), PathBuf::from(dir), None),
            None => {
                let dir = PathBuf::from(spec);
                let name = folder_name(&dir).unwrap_or_else(|| spec.to_string());
                (name, dir, None)
            }
        },
    };
    RewardSource { name, dir, metric }
}

/// The last component of `dir` (`models/my-rm/` → `my-rm`), if it has one.
fn folder_name(dir: &Path) -> Option<String> {
    dir.components().rev().find_map(|c| match c {
        std::path::Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
        _ => None,
    })
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH`, else
/// `.venv/lib/python3*/site-packages/onnxruntime/capi/` under a project root.
pub fn onnxruntime_library() -> Result<PathBuf, RuntimeError> {
    onnxruntime_library_for(crate::runtime::Device::Cpu)
}

/// The venv `make gpu-setup` creates with the `onnxruntime-gpu` wheel (kept apart from
/// `.venv`, whose CPU wheel installs into the same `onnxruntime` package folder).
pub const GPU_VENV: &str = ".venv-gpu";

/// The ONNX Runtime library for `device`: as [`onnxruntime_library`], except that a GPU
/// device looks in [`GPU_VENV`] first.
pub fn onnxruntime_library_for(device: crate::runtime::Device) -> Result<PathBuf, RuntimeError> {
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
    let venvs: &[&str] = if device.gpu_ordinal().is_some() {
        &[GPU_VENV, ".venv"]
    } else {
        &[".venv"]
    };
    let mut searched = Vec::new();
    for venv in venvs {
        for root in project_roots() {
            let venv_lib = root.join(venv).join("lib");
            searched.push(venv_lib.display().to_string());
            if let Some(found) = find_in_venv(&venv_lib) {
                return Ok(found);
            }
        }
    }
    Err(RuntimeError::LibraryNotFound {
        searched: searched.join(", "),
    })
}

/// Where NVRTC (`libnvrtc.so.13`, CUDA 13) may be, most specific first: `TPO_NVRTC_PATH`,
/// the `nvidia-cuda-nvrtc` wheel in a project venv (`nvidia/cu13/lib/`, or the older
/// `nvidia/cuda_nvrtc/lib/` layout), then `$CUDA_HOME/lib64` and `/usr/local/cuda/lib64`.
/// The edge hands them to [`crate::gpu::set_nvrtc_candidates`] at start.
pub fn nvrtc_library_candidates() -> Vec<PathBuf> {
    const SONAME: &str = "libnvrtc.so.13";
    let mut out = Vec::new();
    if let Ok(explicit) = std::env::var("TPO_NVRTC_PATH") {
        if !explicit.is_empty() {
            out.push(PathBuf::from(explicit));
        }
    }
    for root in project_roots() {
        let venv_lib = root.join(".venv").join("lib");
        let Ok(pythons) = std::fs::read_dir(&venv_lib) else {
            continue;
        };
        for python in pythons.flatten() {
            let nvidia = python.path().join("site-packages").join("nvidia");
            out.push(nvidia.join("cu13").join("lib").join(SONAME));
            out.push(nvidia.join("cuda_nvrtc").join("lib").join(SONAME));
        }
    }
    for home in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(dir) = std::env::var(home) {
            if !dir.is_empty() {
                out.push(PathBuf::from(dir).join("lib64").join(SONAME));
            }
        }
    }
    out.push(PathBuf::from("/usr/local/cuda/lib64").join(SONAME));
    out.dedup();
    out
}

/// Finds ONNX Runtime and loads it (once per process): what every command that runs a
/// model does first.
pub fn init_runtime() -> Result<&'static crate::runtime::OrtLibrary, RuntimeError> {
    if let Ok(lib) = crate::runtime::library() {
        return Ok(lib);
    }
    crate::runtime::init(&onnxruntime_library()?)
}

/// Where TensorRT keeps the engines it builds: `TPO_TENSORRT_CACHE`, else
/// `.cache/tensorrt/` under the first project root.
pub fn tensorrt_cache_dir() -> PathBuf {
    match std::env::var("TPO_TENSORRT_CACHE") {
        Ok(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => project_roots()
            .into_iter()
            .next()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
            .join("tensorrt"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_formats_have_short_names_and_anything_else_is_a_path() {
        assert_eq!(policy_dir("q4"), embedded_model("smollm2-135m-instruct-q4"));
        assert_eq!(
            policy_dir("f16"),
            embedded_model("smollm2-135m-instruct-f16")
        );
        assert_eq!(policy_dir("f32"), default_policy_dir());
        assert_eq!(policy_dir("my/export"), PathBuf::from("my/export"));
        assert_eq!(policy_dir("./q4"), PathBuf::from("./q4"));
        // The float32 entry is the folder the engine's default names.
        assert_eq!(POLICY_FORMATS[0].1, crate::model::DEFAULT_POLICY);
    }

    #[test]
    fn reward_sources_are_named_by_keyword_folder_name_or_name_equals_dir() {
        let judge = reward_source("judge");
        assert_eq!((judge.name.as_str(), judge.metric), ("judge", None));
        let int8 = reward_source("judge-int8");
        assert_eq!(int8.dir, embedded_model(JUDGE_INT8_DIR));
        let encoder = reward_source("bertscore-int8");
        assert_eq!(encoder.dir, embedded_model(ENCODER_INT8_DIR));
        assert_eq!(encoder.metric, Some(SimilarityMetric::Bertscore));
        let bert = reward_source("bertscore");
        assert_eq!(bert.metric, Some(SimilarityMetric::Bertscore));
        let folder = reward_source("/srv/models/my-rm/");
        assert_eq!(folder.name, "my-rm");
        assert_eq!(folder.dir, PathBuf::from("/srv/models/my-rm/"));
        let named = reward_source("rm=/srv/models/other");
        assert_eq!(
            (named.name.as_str(), named.dir),
            ("rm", PathBuf::from("/srv/models/other"))
        );
    }
}
