//! tpo-engine: test-time preference optimization over ONNX Runtime models.
//!
//! Rooms, each a module with its own error type, lowest rank first. A room uses only rooms
//! of lower rank (`tests/architecture.rs` fails on an import that points up; see
//! `docs/architecture.md`):
//! 1. [`runtime`]: ONNX Runtime itself (library, execution providers, in-place tensors);
//!    [`liveness`]: whether a worker thread (scheduler, scorer) is alive, and why not;
//! 2. [`gpu`]: the CUDA kernels (top-p sampling, reward pooling) over plain slices and their
//!    own small types, compiled at run time with NVRTC, used only where a driver is present;
//! 3. [`model`]: a model folder on disk (config, tokenizer, chat template and the text side:
//!    rendering prompts, detokenizing);
//! 4. [`engine`]: decoding over token ids (decoder session, KV arena, prefix cache, sampling,
//!    the batch plan and the scheduler thread);
//! 5. [`reward`]: reward models (classifier heads, the judge, similarity, DPO/MRPO);
//! 6. [`search`]: greedy, Best-of-N, TPO and DARWIN over an engine and a reward model;
//! 7. [`dataset`]: files of work in, results out: preference datasets scored into typed rows
//!    (resumable, sharded), prompt files answered by searches;
//! 8. [`paths`]: the edge: where the project's models, ONNX Runtime, NVRTC and data are on
//!    disk, resolved here and passed down (nothing below asks);
//! 9. [`app`]: opens the policy engine and the reward services from one options struct;
//! 10. [`bench`]: everything `tpo bench` measures (engine, peers, search, quality, serve
//!     load, score, kernels) with statistics and plots; [`viewer`]: the search viewer page;
//! 11. [`server`]: `tpo serve`, the OpenAI-compatible HTTP API over an [`app::App`].
//!
//! Errors below the edge state facts (a limit, a value, what exceeded it) and name no flag
//! or request field: the CLI and the server each add advice in their own words.
//!
//! The `tpo` binary (`src/main.rs`, `src/cli/`, rank 12) parses flags, calls one of these
//! and prints.

pub mod app;
pub mod bench;
pub mod dataset;
pub mod engine;
pub mod gpu;
pub mod liveness;
pub mod model;
pub mod paths;
pub mod reward;
pub mod runtime;
pub mod search;
pub mod server;
pub mod viewer;

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
    #[error(transparent)]
    Gpu(#[from] gpu::GpuError),
    #[error(transparent)]
    Server(#[from] server::ServerError),
    #[error(transparent)]
    Viewer(#[from] viewer::ViewerError),
}
