//! Everything `tpo bench …` does, as library code: each bench takes a typed options struct
//! and returns a typed report (or a [`BenchError`]). The CLI (`src/cli/bench*.rs`) only
//! parses flags into those options, calls one function here and prints the report; the
//! benches never parse flags.
//!
//! - [`engine`]: continuous batching against one request at a time (`tpo bench engine`);
//! - [`score`]: `tpo score`'s job against a batch-1 Python loop (`tpo bench score`);
//! - [`search`]: N searches at once against one after another (`tpo bench search`);
//! - [`quality`]: rewards and best-so-far curves over saved traces (`tpo bench quality`);
//! - [`serve`]: a load generator for OpenAI-compatible servers (`tpo bench serve`);
//! - [`peers`]: ours against llama.cpp and onnxruntime-genai (`tpo bench peers`);
//! - [`stats`]: medians and spreads of interleaved rounds;
//! - [`peer`]: a peer engine (llama.cpp, onnxruntime-genai) as a long-lived worker process
//!   speaking JSON lines (`benches/peers/`), fed the same token ids as our engine;
//! - [`bandwidth`]: measured memory read bandwidth, and the batch-1 decode ceiling it sets
//!   for a given number of weight bytes read per token;
//! - [`plot`]: line charts (throughput or latency against concurrency), one line per engine.

pub mod bandwidth;
pub mod engine;
pub mod kernels;
pub mod peer;
pub mod peers;
pub mod plot;
pub mod quality;
pub mod score;
pub mod search;
pub mod serve;
pub mod stats;

use std::path::{Path, PathBuf};

/// Why a benchmark could not run (a slow result is a number, never one of these).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("starting peer {peer} ({command}): {source}")]
    Spawn {
        peer: String,
        command: String,
        source: std::io::Error,
    },
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("plot {path}: {reason}")]
    Plot {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("no usable TrueType font for the plot; searched {searched}. Pass --font FILE.ttf (e.g. after `apt-get install fonts-dejavu-core`)")]
    NoFont { searched: String },
    /// A failure of the library under the bench (loading a model, a search, scoring).
    #[error(transparent)]
    Lib(#[from] crate::Error),
    #[error(transparent)]
    Serve(#[from] serve::BenchServeError),
    /// Options that do not make a run (the message names the flag).
    #[error("{0}")]
    Options(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the bench reads (queries, traces) that does not say what it should.
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{phase} phase, search {index} ({query:?}): {source}")]
    Search {
        phase: &'static str,
        index: usize,
        query: String,
        source: crate::search::SearchError,
    },
    #[error("drawing the plot {path}: {reason}")]
    DrawPlot { path: PathBuf, reason: String },
}

/// A library error under a bench is [`BenchError::Lib`], whichever room it comes from.
macro_rules! lib_errors {
    ($($error:ty),+) => {$(
        impl From<$error> for BenchError {
            fn from(e: $error) -> Self {
                BenchError::Lib(e.into())
            }
        }
    )+};
}

lib_errors!(
    crate::runtime::RuntimeError,
    crate::model::ModelError,
    crate::engine::EngineError,
    crate::search::SearchError,
    crate::dataset::DatasetError,
    crate::reward::RewardError
);

/// Writes `value` to `path` as pretty JSON with a final newline: every bench's `--json` file.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), BenchError> {
    let io = |source| BenchError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| io(e.into()))?;
    std::fs::write(path, text + "\n").map_err(io)
}
