//! Sampling parameters: what a caller may ask for ([`SamplingOptions`]), their validation
//! into [`SamplingParams`] (refusals are [`SamplingError`]s naming the field), the limits
//! validation enforces, and each sample's seeded random stream ([`SequenceRng`]). The test
//! hook [`InjectedFault`] is here too, in `fault-injection` builds only. Not how a row is
//! sampled (the parent module and its rooms).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::TokenId;

/// Why a set of sampling parameters was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be finite and >= 0, got {0}")]
    Temperature(f32),
    #[error("top_p must be in (0, 1], got {0}")]
    TopP(f32),
    #[error("min_p must be in [0, 1), got {0}")]
    MinP(f32),
    #[error("max_new_tokens must be at least 1")]
    MaxNewTokens,
    #[error("stop strings must not be empty")]
    EmptyStop,
    #[error("a stop string may be at most {max} bytes, got one of {len}")]
    StopTooLong { len: usize, max: usize },
    #[error("{name} must be finite and in [-2, 2], got {value}")]
    Penalty { name: &'static str, value: f32 },
    #[error("top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {0}")]
    TopLogprobs(usize),
}

/// Most alternatives a token may report (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Temperatures below this run greedy (argmax), as in vLLM: `1 / t` of a tinier one
/// overflows to infinity and would turn sampling into a uniform draw, the opposite of what
/// a near-zero temperature asks for.
pub const MIN_TEMPERATURE: f32 = 1e-5;

/// Longest stop string, in bytes: every generated token searches the new text plus the
/// longest stop's reach before it, so the bound keeps that search small.
pub const MAX_STOP_BYTES: usize = 1024;

/// Failures injected on purpose, to test that one broken request fails alone. Only in
/// builds with the `fault-injection` feature (the tests'); never set by the CLI, and by the
/// server only when it runs with the hidden `--enable-fault-injection`.
#[cfg(feature = "fault-injection")]
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// Once this many tokens are generated, the sequence's logits rows are all NaN.
    NanLogitsAfter(usize),
    /// Once this many tokens are generated, every model step holding the sequence's row
    /// fails (as a failing ONNX Runtime run would).
    StepErrorAfter(usize),
    /// Once this many tokens are generated, the scheduler thread panics (as a bug in it
    /// would): every request in flight fails and the engine reports itself dead.
    PanicAfter(usize),
}

/// What a caller asks for; turned into [`SamplingParams`] by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingOptions {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    /// 0 means no top-k limit.
    pub top_k: usize,
    /// Keep tokens whose probability is at least `min_p` times the best one's (0 = off).
    pub min_p: f32,
    pub max_new_tokens: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<TokenId>,
    /// Seed of the request's RNG streams; `None` draws one from the OS.
    pub seed: Option<u64>,
    /// Keep generating through EOS until `max_new_tokens` (for benchmarks).
    pub ignore_eos: bool,
    /// Subtracted once from the logit of every token already generated (0 = off).
    pub presence_penalty: f32,
    /// Subtracted per occurrence from the logit of every token already generated (0 = off).
    pub frequency_penalty: f32,
    /// Alternatives (most likely first) reported with each token, 0..=20 (0 = off).
    pub top_logprobs: usize,
    /// Test hook (the `fault-injection` feature only); `None` in every real request.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub inject_fault: Option<InjectedFault>,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            max_new_tokens: 256,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            seed: None,
            ignore_eos: false,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: 0,
            #[cfg(feature = "fault-injection")]
            inject_fault: None,
        }
    }
}

/// Validated sampling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    options: SamplingOptions,
    seed: u64,
}

impl SamplingParams {
    pub fn new(mut options: SamplingOptions) -> Result<Self, SamplingError> {
        if !options.temperature.is_finite() || options.temperature < 0.0 {
            return Err(SamplingError::Temperature(options.temperature));
        }
        if options.temperature < MIN_TEMPERATURE {
            options.temperature = 0.0;
        }
        let o = &options;
        if !(o.top_p > 0.0 && o.top_p <= 1.0) {
            return Err(SamplingError::TopP(o.top_p));
        }
        if !(o.min_p >= 0.0 && o.min_p < 1.0) {
            return Err(SamplingError::MinP(o.min_p));
        }
        if o.max_new_tokens == 0 {
            return Err(SamplingError::MaxNewTokens);
        }
        if o.stop.iter().any(String::is_empty) {
            return Err(SamplingError::EmptyStop);
        }
        if let Some(len) = o.stop.iter().map(String::len).find(|&l| l > MAX_STOP_BYTES) {
            return Err(SamplingError::StopTooLong {
                len,
                max: MAX_STOP_BYTES,
            });
        }
        for (name, value) in [
            ("presence_penalty", o.presence_penalty),
            ("frequency_penalty", o.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&value) {
                return Err(SamplingError::Penalty { name, value });
            }
        }
        if o.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(SamplingError::TopLogprobs(o.top_logprobs));
        }
        let seed = o.seed.unwrap_or_else(rand::random);
        Ok(Self { options, seed })
    }

    /// Greedy decoding of at most `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Result<Self, SamplingError> {
        Self::new(SamplingOptions {
            max_new_tokens,
            ..SamplingOptions::default()
        })
    }

    pub fn options(&self) -> &SamplingOptions {
        &self.options
    }

    /// The same parameters (seed included) with a test fault injected.
    #[cfg(feature = "fault-injection")]
    #[doc(hidden)]
    pub fn with_fault(mut self, fault: InjectedFault) -> Self {
        self.options.inject_fault = Some(fault);
        self
    }

    pub fn max_new_tokens(&self) -> usize {
        self.options.max_new_tokens
    }

    pub fn is_greedy(&self) -> bool {
        self.options.temperature == 0.0 || self.options.top_k == 1
    }

    /// The seed of sample `index` of this request: `seed + index`, so sample `i` of an
    /// `n`-sample request equals a one-sample request seeded `seed + i`.
    pub fn sample_seed(&self, index: u64) -> u64 {
        self.seed.wrapping_add(index)
    }

    /// The RNG stream of sample `index`: the same (seed, index) gives the same numbers
    /// whatever else runs in the batch.
    pub fn rng(&self, index: u64) -> SequenceRng {
        SequenceRng(ChaCha8Rng::seed_from_u64(self.sample_seed(index)))
    }

    /// Whether EOS tokens are ignored (benchmarks that need a fixed number of tokens).
    pub fn ignore_eos(&self) -> bool {
        self.options.ignore_eos
    }

    pub(super) fn has_penalties(&self) -> bool {
        self.options.presence_penalty != 0.0 || self.options.frequency_penalty != 0.0
    }
}

/// A sequence's own random stream: one uniform per sampled token.
#[derive(Debug, Clone)]
pub struct SequenceRng(ChaCha8Rng);

impl SequenceRng {
    pub fn next_uniform(&mut self) -> f32 {
        self.0.random::<f32>()
    }
}
