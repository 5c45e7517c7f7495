//! The generation engine: a scheduler thread per model that owns the decoder session and the
//! KV arena and runs every request in one continuous batch, behind a cloneable [`Engine`]
//! handle.
//!
//! Rooms: `decoder` (one forward step over KV slots), `kv` (the arena), `prefix_cache`
//! (finished sequences' KV rows, found by their tokens), `sampler` (sampling
//! parameters and the CPU sampler), `device_sampling` (decode logits kept on the GPU and
//! sampled there), `batch_plan` (admission, prefill budget and batch positions as a pure state
//! machine), `scheduler` (the batching loop gluing it to the model), `request` (what goes in
//! and comes out), `handle` (the `Engine` callers hold).
//!
//! Lower layers only: the engine knows token ids and sampling parameters, never HTTP, CLI
//! flags or traces.

mod batch_plan;
mod decoder;
mod device_sampling;
mod handle;
mod kv;
mod kv_storage;
mod prefix_cache;
mod request;
mod sampler;
mod scheduler;
pub mod self_check;
mod slot_plan;

pub use decoder::{Decoder, DecoderOptions, LogitsWanted, RowInput};
pub use handle::{Engine, EngineOptions};
pub use kv::{
    available_memory_bytes, check_arena_fits, slots_in_budget, KvArena, KvDtype, KvPlacement,
    KvShape, Slot, SlotId,
};
pub use prefix_cache::{PrefixCache, PrefixMatch, BLOCK as PREFIX_BLOCK};
pub use request::{
    ContinuationLogprobs, FinishReason, GenerateRequest, GenerationEvent, GenerationStream,
    SampleOutput,
};
#[cfg(feature = "fault-injection")]
pub use sampler::InjectedFault;
pub use sampler::{
    argmax, log_softmax_at, LogitsError, Sampled, Sampler, SamplingError, SamplingOptions,
    SamplingParams, SequenceRng, MAX_STOP_BYTES, MAX_TOP_LOGPROBS, MIN_TEMPERATURE,
};
pub use scheduler::{EngineStats, StatsSnapshot};

use crate::model::{ModelError, TokenId};
use crate::runtime::RuntimeError;

/// `bytes` in GiB, for messages.
pub fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Errors of the engine layer.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] SamplingError),
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    /// A KV memory budget that holds no slot of the asked length.
    #[error("a KV budget of {budget} bytes holds no slot of {max_len} tokens (one takes {per_slot} bytes)")]
    KvBudgetTooSmall {
        budget: usize,
        max_len: usize,
        per_slot: usize,
    },
    /// A prompt plus its `max_new_tokens` needs more tokens than a KV slot holds.
    #[error("the sequence needs {tokens} tokens but the context holds {limit}")]
    SequenceTooLong { tokens: usize, limit: usize },
    /// The context asked for (`max_seq_len`) is shorter than the graph's attention window.
    #[error("a context of {max_seq_len} tokens is below the model's sliding-window size {window} (genai_config.json sliding_window.window_size): its windowed attention needs the whole window in the KV cache")]
    BelowSlidingWindow { max_seq_len: usize, window: usize },
    #[error("the policy model failed its load-time self-check: {0}")]
    SelfCheck(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the continuation to score is empty")]
    EmptyContinuation,
    #[error("token id {token} is outside the vocabulary (size {vocab})")]
    InvalidToken { token: TokenId, vocab: usize },
    #[error(
        "n = {n} samples cannot run: it must be between 1 and the number of KV slots ({slots})"
    )]
    InvalidSampleCount { n: usize, slots: usize },
    #[error("the model produced logits that cannot be sampled: {0}")]
    Logits(#[from] LogitsError),
    #[error("the engine is overloaded: {pending} requests in flight (limit {limit}); retry later")]
    Overloaded { pending: usize, limit: usize },
    /// The KV arena of `slots` slots of `max_len` tokens needs `bytes`, more than is free.
    #[error("a KV arena of {slots} slots x {max_len} tokens needs {} but {}", gib(*bytes), available.map_or_else(|| "the available memory is unknown".to_string(), |a| format!("only {} is available", gib(a))))]
    KvTooLarge {
        slots: usize,
        max_len: usize,
        bytes: usize,
        available: Option<usize>,
    },
    #[error("the engine has stopped")]
    Stopped,
    /// The scheduler thread died (a panic); every request in flight failed with this and
    /// every later one gets it at once.
    #[error("the engine's scheduler thread died: {reason}")]
    Died { reason: String },
    #[error("internal engine error: {0}")]
    Internal(String),
}
