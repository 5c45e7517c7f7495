//! tpo-engine: test-time preference optimization over ONNX Runtime models.
//!
//! Layers, each a module with its own error type, data flowing one way:
//! - [`runtime`]: ONNX Runtime itself (library, execution providers, in-place tensors);
//! - [`model`]: a model folder on disk (config, tokenizer, chat template);
//! - [`engine`]: decoding (decoder session, KV arena, sampling, generation);
//! - [`reward`]: reward models (classifier heads, the judge, similarity, DPO/MRPO);
//! - [`dataset`]: preference datasets in and scored rows out, resumable and sharded;
//! - [`search`]: greedy, Best-of-N and TPO over an engine and a reward model, with traces;
//! - [`app`]: opens the policy engine and the reward services from one options struct;
//! - [`server`]: `tpo serve`, the OpenAI-compatible HTTP API over an [`app::App`].
//!
//! The `tpo` binary (`src/main.rs`, `src/cli/`) translates command lines into calls of these.

pub mod app;
pub mod dataset;
pub mod engine;
pub mod model;
pub mod reward;
pub mod runtime;
pub mod search;
pub mod server;

use std::path::PathBuf;

/// Any error of the library, by layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] model::ModelError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Reward(#[from] reward::RewardError),
    #[error(transparent)]
    Dataset(#[from] dataset::DatasetError),
    #[error(transparent)]
    Search(#[from] search::SearchError),
}

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
