//! Benchmark machinery shared by `tpo bench`: statistics over repeated runs, peer engines
//! driven side by side with ours, the machine's memory-bandwidth ceiling, and PNG plots.
//! The CLI (`src/cli/bench*.rs`) parses flags, calls these and prints.
//!
//! - [`stats`]: medians and spreads of interleaved rounds;
//! - [`peer`]: a peer engine (llama.cpp, onnxruntime-genai) as a long-lived worker process
//!   speaking JSON lines (`benches/peers/`), fed the same token ids as our engine;
//! - [`bandwidth`]: measured memory read bandwidth, and the batch-1 decode ceiling it sets
//!   for a given number of weight bytes read per token;
//! - [`plot`]: line charts (throughput or latency against concurrency), one line per engine.

pub mod bandwidth;
pub mod kernels;
pub mod peer;
pub mod plot;
pub mod stats;

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
}
