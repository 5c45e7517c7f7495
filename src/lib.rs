//! tpo-engine: test-time preference optimization over ONNX Runtime models.
//!
//! Layers, each a module with its own error type, data flowing one way:
//! - [`runtime`]: ONNX Runtime itself (library, execution providers, in-place tensors);
//! - [`model`]: a model folder on disk (config, tokenizer, chat template);
//! - [`engine`]: decoding (decoder session, KV arena, sampling, generation);
//! - [`gpu`]: the CUDA kernels (top-p sampling, reward pooling) behind the CPU paths' functions,
//!   compiled at run time with NVRTC, used only where a driver is present;
//! - [`liveness`]: whether a worker thread (scheduler, scorer) is alive, and why not;
//! - [`reward`]: reward models (classifier heads, the judge, similarity, DPO/MRPO);
//! - [`dataset`]: preference datasets in and scored rows out, resumable and sharded;
//! - [`search`]: greedy, Best-of-N and TPO over an engine and a reward model, with traces;
//! - [`paths`]: where the project's models, ONNX Runtime and data are on disk, resolved at
//!   the edge (CLI, server, tests) and passed down;
//! - [`app`]: opens the policy engine and the reward services from one options struct;
//! - [`bench`]: benchmark machinery (statistics, peer engines, bandwidth ceiling, plots);
//! - [`server`]: `tpo serve`, the OpenAI-compatible HTTP API over an [`app::App`];
//! - [`viewer`]: the search viewer page (live from the server's stream, or from saved traces).
//!
//! The `tpo` binary (`src/main.rs`, `src/cli/`) translates command lines into calls of these.

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
}
