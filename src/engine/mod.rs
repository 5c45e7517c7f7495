//! The generation engine: the decoder session, the KV arena, sampling, and the generation
//! loop built on them.
//!
//! Lower layers only: the engine knows token ids and sampling parameters, never HTTP, CLI
//! flags or traces.

mod decoder;
mod generate;
mod kv;
mod sampler;

pub use decoder::{Decoder, DecoderOptions, LogitsWanted, RowInput};
pub use generate::{FinishReason, Generation, Generator, GeneratorOptions};
pub use kv::{KvArena, KvShape, Slot, SlotId};
pub use sampler::{
    argmax, Sampled, Sampler, SamplingError, SamplingOptions, SamplingParams, SequenceRng,
};

use std::path::PathBuf;

use crate::model::ModelError;
use crate::runtime::RuntimeError;

/// Errors of the engine layer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] SamplingError),
    #[error("could not load the ONNX model {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    #[error("the sequence needs {tokens} tokens but the context holds {limit} (shorten the prompt, lower --max-new-tokens or raise --max-seq-len)")]
    SequenceTooLong { tokens: usize, limit: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("internal engine error: {0}")]
    Internal(String),
}
