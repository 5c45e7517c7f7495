//! Sampling parameters (validated once) and the CPU sampler: temperature, top-k, top-p,
//! min-p and a draw from one uniform number. This CPU path is the reference; a GPU kernel
//! must give the same token for the same logits and uniform.
//!
//! Top-p never sorts the whole vocabulary: one pass keeps the tokens within a few logits of
//! the best (a prefix of the sorted order), sorts only those, and widens the window only
//! when their probability mass is still below `top_p`. Exponentials use a vectorizable
//! polynomial (`fast_exp`, relative error below 2e-7·(1+|x|)).
//!
//! Every row is checked first: a NaN or `+inf` logit, or a row that is all `-inf`, is a
//! [`LogitsError`] for that one sequence (the loops below terminate only on rows that pass).
//! Presence and frequency penalties (OpenAI's definition, over the generated tokens) shift a
//! copy of the row; the reported log-probs are always the model's own (temperature 1, no
//! penalties, no truncation), as vLLM reports them by default.

mod fused;

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

/// A row of logits that cannot be sampled: the model produced non-finite values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LogitsError {
    #[error("the model produced a NaN logit (token {token})")]
    NotANumber { token: TokenId },
    #[error("the model produced an infinite logit (token {token})")]
    Infinite { token: TokenId },
    #[error("every logit of the row is -inf")]
    AllNegativeInfinity,
}

/// Failures injected on purpose, to test that one broken request fails alone. Never set by
/// the CLI or the server (their options come from `..Default::default()`).
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
    /// Test hook; `None` in every real request.
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

    fn has_penalties(&self) -> bool {
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

/// A sampled token and its log-probability under the model (temperature 1, no truncation),
/// which is what teacher-forced scoring of the same text computes.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: TokenId,
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens under the model, most likely first (ties by
    /// lower id); empty when not asked for.
    pub top: Vec<(TokenId, f32)>,
}

/// Reusable scratch space for sampling rows of logits.
#[derive(Default)]
pub struct Sampler {
    candidates: Vec<u32>,
    /// Weight sums of blocks of [`DRAW_BLOCK`] tokens, for an untruncated draw.
    block_sums: Vec<f32>,
    /// The penalized copy of a row.
    shifted: Vec<f32>,
    /// Generated tokens, sorted, to count occurrences for penalties.
    counts: Vec<TokenId>,
}

impl Sampler {
    /// Picks the next token of one row of `logits` with uniform `u` in [0, 1); `generated`
    /// are the sequence's tokens so far (for presence and frequency penalties).
    ///
    /// The fused path (`fused`): one sweep for the maximum, the argmax and the row check,
    /// then one for every exponential the draw and the log-prob need, on AVX2 where the CPU
    /// has it. Same token and bit-identical log-probs as [`Sampler::sample_reference`] (the
    /// tests compare them); a penalized row takes the reference path.
    pub fn sample(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
        u: f32,
        generated: &[TokenId],
    ) -> Result<Sampled, LogitsError> {
        if params.has_penalties() && !generated.is_empty() {
            return self.sample_reference(logits, params, u, generated);
        }
        let fused::RowMax { max, argmax } = fused::checked_max_argmax(logits)?;
        let o = params.options();
        let (token, total) = if params.is_greedy() {
            (argmax, fused::sum_exp(logits, max, 1.0))
        } else {
            let inv_t = 1.0 / o.temperature;
            let at_one = o.temperature == 1.0;
            if untruncated(o, logits.len()) {
                let total_t = fused::block_sums(&mut self.block_sums, logits, max, inv_t);
                let token = walk_blocks(&self.block_sums, logits, max, inv_t, u);
                let total = if at_one {
                    total_t
                } else {
                    fused::sum_exp(logits, max, 1.0)
                };
                (token, total)
            } else {
                let (total_t, total) = if at_one {
                    let total = fused::sum_exp(logits, max, 1.0);
                    (total, total)
                } else {
                    fused::sum_exp_pair(logits, max, inv_t)
                };
                let token = nucleus_select(&mut self.candidates, logits, max, o, u, total_t);
                (token, total)
            }
        };
        let log_total = total.ln();
        let logprob = logits[token as usize] - max - log_total;
        let top = if o.top_logprobs > 0 {
            top_logprobs(logits, o.top_logprobs, max + log_total)
        } else {
            Vec::new()
        };
        Ok(Sampled {
            token,
            logprob,
            top,
        })
    }

    /// The reference implementation of [`Sampler::sample`], pass by pass: the row check,
    /// penalties on a copy, the argmax or the nucleus draw, then the log-sum-exp.
    pub fn sample_reference(
        &mut self,
        logits: &[f32],
        params: &SamplingParams,
        u: f32,
        generated: &[TokenId],
    ) -> Result<Sampled, LogitsError> {
        let raw_max = checked_max(logits)?;
        let o = params.options();
        let penalized = params.has_penalties() && !generated.is_empty();
        if penalized {
            self.shifted.clear();
            self.shifted.extend_from_slice(logits);
            self.counts.clear();
            self.counts.extend_from_slice(generated);
            self.counts.sort_unstable();
            for run in self.counts.chunk_by(|a, b| a == b) {
                if let Some(l) = self.shifted.get_mut(run[0] as usize) {
                    *l -= o.presence_penalty + o.frequency_penalty * run.len() as f32;
                }
            }
        }
        let row: &[f32] = if penalized { &self.shifted } else { logits };
        let (token, sampling_total) = if params.is_greedy() {
            (argmax(row), None)
        } else {
            let max = if penalized { max_of(row) } else { raw_max };
            let (token, total) =
                nucleus_draw(&mut self.candidates, &mut self.block_sums, row, max, o, u);
            // At temperature 1 without penalties the sampling normalizer is the model's.
            let reusable = !penalized && o.temperature == 1.0;
            (token, reusable.then_some(total))
        };
        let log_total = sampling_total
            .unwrap_or_else(|| sum_exp(logits, raw_max, 1.0))
            .ln();
        let logprob = logits[token as usize] - raw_max - log_total;
        let top = if o.top_logprobs > 0 {
            top_logprobs(logits, o.top_logprobs, raw_max + log_total)
        } else {
            Vec::new()
        };
        Ok(Sampled {
            token,
            logprob,
            top,
        })
    }
}

/// The largest logit of `row`, or why the row cannot be sampled. One vectorizable pass (a
/// NaN never compares greater, so it is tracked on the side).
fn checked_max(row: &[f32]) -> Result<f32, LogitsError> {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut nan = [false; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for ((a, n), &l) in acc.iter_mut().zip(nan.iter_mut()).zip(chunk) {
            *n |= l.is_nan();
            if l > *a {
                *a = l;
            }
        }
    }
    let any_nan = nan.iter().any(|&n| n) || tail.iter().any(|l| l.is_nan());
    let max = acc
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let position = |bad: fn(f32) -> bool| row.iter().position(|&l| bad(l)).unwrap_or(0) as TokenId;
    if any_nan {
        return Err(LogitsError::NotANumber {
            token: position(f32::is_nan),
        });
    }
    if max == f32::INFINITY {
        return Err(LogitsError::Infinite {
            token: position(|l| l == f32::INFINITY),
        });
    }
    if max == f32::NEG_INFINITY {
        return Err(LogitsError::AllNegativeInfinity);
    }
    Ok(max)
}

/// Draws from the top-k / top-p / min-p nucleus of `row` (finite or `-inf` entries, finite
/// `max`) at `temperature > 0`; returns the token and `sum exp((row - max) / t)`.
fn nucleus_draw(
    candidates: &mut Vec<u32>,
    block_sums: &mut Vec<f32>,
    row: &[f32],
    max: f32,
    o: &SamplingOptions,
    u: f32,
) -> (TokenId, f32) {
    let inv_t = 1.0 / o.temperature;
    let total = sum_exp(row, max, inv_t);
    if untruncated(o, row.len()) {
        // No truncation: the nucleus is the whole row, and no sort is needed.
        return (whole_row_draw(block_sums, row, max, inv_t, u), total);
    }
    (nucleus_select(candidates, row, max, o, u, total), total)
}

/// The most tokens top-k leaves of a row of `len`.
fn top_k_limit(o: &SamplingOptions, len: usize) -> usize {
    if o.top_k == 0 {
        len
    } else {
        o.top_k.min(len)
    }
}

/// Whether the options keep the whole row (no top-k, top-p or min-p truncation).
fn untruncated(o: &SamplingOptions, len: usize) -> bool {
    o.top_p >= 1.0 && top_k_limit(o, len) == len && o.min_p <= 0.0
}

/// Draws from the truncated nucleus of `row` (some of top-k, top-p, min-p set), given
/// `total = sum exp((row - max) / t)`.
fn nucleus_select(
    candidates: &mut Vec<u32>,
    row: &[f32],
    max: f32,
    o: &SamplingOptions,
    u: f32,
    total: f32,
) -> TokenId {
    let inv_t = 1.0 / o.temperature;
    let weight = |i: u32| fast_exp((row[i as usize] - max) * inv_t);
    let limit = top_k_limit(o, row.len());

    // Candidates: every token within `delta` logits of the best, sorted. They are a
    // prefix of the full sorted order, so once they hold `top_p` of the mass (or
    // `top_k` tokens) the nucleus is exactly what a full sort would give. The window
    // doubles until it does; at the latest when `delta` is infinite it holds every token
    // (all entries are >= -inf), which ends the loop.
    let mut delta = 3.0 * o.temperature;
    let kept = loop {
        let floor = max - delta;
        candidates.clear();
        candidates.extend(
            row.iter()
                .enumerate()
                .filter(|(_, &l)| l >= floor)
                .map(|(i, _)| i as u32),
        );
        candidates
            .sort_unstable_by(|a, b| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b)));
        let mut mass = 0.0f32;
        let mut kept = None;
        for (n, &i) in candidates.iter().take(limit).enumerate() {
            mass += weight(i) / total;
            if mass >= o.top_p || n + 1 == limit {
                kept = Some(n + 1);
                break;
            }
        }
        match kept {
            Some(k) => break k,
            None if candidates.len() == row.len() => break candidates.len(),
            None => delta *= 2.0,
        }
    };
    let mut kept = kept.max(1);
    if o.min_p > 0.0 {
        let floor = o.min_p; // the best candidate has weight 1 (max subtracted)
        kept = candidates[..kept]
            .iter()
            .take_while(|&&i| weight(i) >= floor)
            .count()
            .max(1);
    }
    let chosen = &candidates[..kept];
    let kept_mass: f32 = chosen.iter().map(|&i| weight(i)).sum();
    let target = u * kept_mass;
    let mut acc = 0.0f32;
    let mut token = chosen[kept - 1];
    for &i in chosen {
        acc += weight(i);
        if acc > target {
            token = i;
            break;
        }
    }
    token
}

/// Tokens per block of [`whole_row_draw`]'s first pass.
const DRAW_BLOCK: usize = 64;

/// Draws from the whole of `row` at temperature `1 / inv_t`: the inverse CDF walked in token
/// order. One vectorized pass sums the weights of blocks of [`DRAW_BLOCK`] tokens; the walk
/// then skips whole blocks and reads the weights of one block only. A draw that rounding
/// carries past the last weight takes the block's last token of positive weight.
fn whole_row_draw(block_sums: &mut Vec<f32>, row: &[f32], max: f32, inv_t: f32, u: f32) -> TokenId {
    block_sums.clear();
    block_sums.extend(row.chunks(DRAW_BLOCK).map(|b| sum_exp(b, max, inv_t)));
    walk_blocks(block_sums, row, max, inv_t, u)
}

/// The walk of [`whole_row_draw`] over `block_sums` (one per [`DRAW_BLOCK`] tokens).
fn walk_blocks(block_sums: &[f32], row: &[f32], max: f32, inv_t: f32, u: f32) -> TokenId {
    let weight = |l: f32| fast_exp((l - max) * inv_t);
    let total: f32 = block_sums.iter().sum();
    let target = u * total;
    let mut acc = 0.0f32;
    let mut last_block = 0;
    for (b, (block, &sum)) in row.chunks(DRAW_BLOCK).zip(block_sums.iter()).enumerate() {
        if sum > 0.0 {
            last_block = b;
        }
        if acc + sum <= target {
            acc += sum;
            continue;
        }
        let start = b * DRAW_BLOCK;
        let mut last_positive = None;
        for (i, &l) in block.iter().enumerate() {
            let w = weight(l);
            if w > 0.0 && l > f32::NEG_INFINITY {
                last_positive = Some(i);
            }
            acc += w;
            if acc > target && l > f32::NEG_INFINITY {
                return (start + i) as TokenId;
            }
        }
        if let Some(i) = last_positive {
            return (start + i) as TokenId;
        }
    }
    // Rounding left the target at the very end: the last token of positive weight.
    let start = last_block * DRAW_BLOCK;
    let end = (start + DRAW_BLOCK).min(row.len());
    (start..end)
        .rev()
        .find(|&i| row[i] > f32::NEG_INFINITY)
        .or_else(|| row.iter().rposition(|&l| l > f32::NEG_INFINITY))
        .unwrap_or(0) as TokenId
}

/// The `k` largest entries of `row` as log-probs (`row - log_normalizer`), most likely
/// first, ties by lower id. One pass keeping a small sorted list.
fn top_logprobs(row: &[f32], k: usize, log_normalizer: f32) -> Vec<(TokenId, f32)> {
    let k = k.min(row.len());
    let mut best: Vec<(TokenId, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in row.iter().enumerate() {
        if best.len() == k && best.last().is_some_and(|&(_, worst)| l <= worst) {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= l);
        best.insert(at, (i as TokenId, l));
        best.truncate(k);
    }
    best.into_iter()
        .map(|(t, l)| (t, l - log_normalizer))
        .collect()
}

/// Largest value of `row`, with eight lanes so the loop vectorizes (`maxps`).
fn max_of(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &l) in acc.iter_mut().zip(chunk) {
            if l > *a {
                *a = l;
            }
        }
    }
    acc.iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `sum_i exp((row_i - max) * scale)` with eight independent accumulators, so the
/// compiler vectorizes the loop (a single running sum would force strict ordering).
fn sum_exp(row: &[f32], max: f32, scale: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &l) in acc.iter_mut().zip(chunk) {
            *a += fast_exp((l - max) * scale);
        }
    }
    let tail: f32 = tail.iter().map(|&l| fast_exp((l - max) * scale)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `exp(x)` for `x <= 0` to a relative error below `2e-7 * (1 + |x|)` (the float32
/// rounding of `x * log2 e` dominates), in plain arithmetic the compiler can
/// vectorize: `2^n * 2^f` with `n = round(x log2 e)`, `|f| <= 1/2`, and a degree-6 Taylor
/// polynomial for `2^f`. Inputs below -87 give `exp(-87)` (about 1.6e-38).
#[inline]
pub fn fast_exp(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    // Round to nearest by adding 1.5 * 2^23: the sum's low mantissa bits then hold n as an
    // integer, so neither `floor` (a libm call on baseline x86-64) nor a saturating
    // float-to-int cast stops the loop from vectorizing.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let shifted = t + ROUND;
    let n = shifted - ROUND;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND_BITS);
    let f = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    f32::from_bits((n_int.wrapping_add(127) << 23) as u32) * p
}

/// `log softmax(row)[token]`: the model's log-probability of `token` (temperature 1).
pub fn log_softmax_at(row: &[f32], token: TokenId) -> f32 {
    log_softmax_with_max(row, max_of(row), token)
}

fn log_softmax_with_max(row: &[f32], max: f32, token: TokenId) -> f32 {
    row[token as usize] - max - sum_exp(row, max, 1.0).ln()
}

/// Index of the largest logit (the lowest index among ties; NaN entries are skipped).
pub fn argmax(logits: &[f32]) -> TokenId {
    let max = max_of(logits);
    logits.iter().position(|&l| l == max).unwrap_or(0) as TokenId
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: usize) -> SamplingParams {
        SamplingParams::new(SamplingOptions {
            temperature,
            top_p,
            top_k,
            seed: Some(1),
            ..SamplingOptions::default()
        })
        .unwrap()
    }

    /// Full-sort reference of the nucleus: tokens kept by top-k then top-p.
    fn reference_nucleus(logits: &[f32], t: f32, top_p: f32, top_k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|a, b| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        });
        if top_k > 0 {
            idx.truncate(top_k);
        }
        let max = logits[idx[0] as usize];
        let total: f32 = logits.iter().map(|l| ((l - max) / t).exp()).sum();
        let mut mass = 0.0;
        let mut kept = Vec::new();
        for i in idx {
            kept.push(i);
            mass += ((logits[i as usize] - max) / t).exp() / total;
            if mass >= top_p {
                break;
            }
        }
        kept
    }

    fn pseudo_logits(n: usize, spread: f32) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        (0..n).map(|_| rng.random::<f32>() * spread).collect()
    }

    #[test]
    fn the_fused_sampler_equals_the_reference_token_for_token_and_bit_for_bit() {
        let mut rows = vec![
            pseudo_logits(49_152, 12.0),
            pseudo_logits(49_157, 3.0),
            pseudo_logits(1_000, 30.0),
            pseudo_logits(13, 1.0),
        ];
        let mut holes = pseudo_logits(49_152, 8.0);
        for (i, l) in holes.iter_mut().enumerate() {
            if i % 3 != 0 {
                *l = f32::NEG_INFINITY;
            }
        }
        holes[777] = 9.5;
        holes[30_000] = 9.5;
        rows.push(holes);
        let settings = [
            (0.0, 1.0, 0, 0.0, 0),
            (0.7, 0.95, 0, 0.0, 0),
            (1.0, 0.95, 0, 0.0, 3),
            (1.0, 1.0, 0, 0.0, 0),
            (0.7, 1.0, 0, 0.0, 5),
            (1.3, 0.9, 20, 0.0, 0),
            (0.8, 1.0, 50, 0.0, 0),
            (1.0, 1.0, 0, 0.05, 0),
            (0.05, 0.5, 0, 0.0, 0),
        ];
        let mut fused = Sampler::default();
        let mut reference = Sampler::default();
        for (r, row) in rows.iter().enumerate() {
            for &(temperature, top_p, top_k, min_p, top_logprobs) in &settings {
                let p = SamplingParams::new(SamplingOptions {
                    temperature,
                    top_p,
                    top_k,
                    min_p,
                    top_logprobs,
                    seed: Some(1),
                    ..SamplingOptions::default()
                })
                .unwrap();
                for k in 0..97 {
                    let u = (k as f32 + 0.5) / 97.0;
                    let a = fused.sample(row, &p, u, &[]).unwrap();
                    let b = reference.sample_reference(row, &p, u, &[]).unwrap();
                    assert_eq!(a.token, b.token, "row {r} t {temperature} p {top_p} u {u}");
                    assert_eq!(a.logprob.to_bits(), b.logprob.to_bits(), "row {r}");
                    assert_eq!(a.top, b.top);
                }
            }
        }
        // Penalized rows take the reference path itself.
        let p = with(SamplingOptions {
            temperature: 0.7,
            presence_penalty: 1.5,
            ..SamplingOptions::default()
        });
        let row = &rows[0];
        assert_eq!(
            fused.sample(row, &p, 0.3, &[5, 9]),
            reference.sample_reference(row, &p, 0.3, &[5, 9])
        );
    }

    #[test]
    fn rejects_invalid_parameters_by_name() {
        let bad = |o: SamplingOptions| SamplingParams::new(o).unwrap_err();
        let d = SamplingOptions::default;
        assert_eq!(
            bad(SamplingOptions {
                temperature: -1.0,
                ..d()
            }),
            SamplingError::Temperature(-1.0)
        );
        assert_eq!(
            bad(SamplingOptions { top_p: 0.0, ..d() }),
            SamplingError::TopP(0.0)
        );
        assert_eq!(
            bad(SamplingOptions { top_p: 1.5, ..d() }),
            SamplingError::TopP(1.5)
        );
        assert_eq!(
            bad(SamplingOptions { min_p: 1.0, ..d() }),
            SamplingError::MinP(1.0)
        );
        assert_eq!(
            bad(SamplingOptions {
                max_new_tokens: 0,
                ..d()
            }),
            SamplingError::MaxNewTokens
        );
        assert_eq!(
            bad(SamplingOptions {
                stop: vec![String::new()],
                ..d()
            }),
            SamplingError::EmptyStop
        );
        assert!(matches!(
            bad(SamplingOptions {
                temperature: f32::NAN,
                ..d()
            }),
            SamplingError::Temperature(_)
        ));
    }

    #[test]
    fn greedy_takes_the_argmax_and_reports_its_log_softmax() {
        let logits = [0.0, 3.0, 1.0];
        let s = Sampler::default()
            .sample(&logits, &SamplingParams::greedy(1).unwrap(), 0.99, &[])
            .unwrap();
        assert_eq!(s.token, 1);
        let z: f32 = logits.iter().map(|l: &f32| l.exp()).sum();
        assert!((s.logprob - (3.0 - z.ln())).abs() < 1e-6);
    }

    #[test]
    fn partial_selection_draws_only_from_the_full_sort_nucleus() {
        // Flat logits force the candidate set to widen several times.
        for (spread, top_p, top_k) in [
            (1.0, 0.95, 0),
            (20.0, 0.9, 0),
            (5.0, 0.5, 100),
            (2.0, 1.0, 0),
        ] {
            let logits = pseudo_logits(4096, spread);
            let p = params(0.7, top_p, top_k);
            let nucleus = reference_nucleus(&logits, 0.7, top_p, top_k);
            let mut sampler = Sampler::default();
            let mut seen = std::collections::HashSet::new();
            for k in 0..400 {
                let u = (k as f32 + 0.5) / 400.0;
                let s = sampler.sample(&logits, &p, u, &[]).unwrap();
                assert!(
                    nucleus.contains(&s.token),
                    "token {} outside nucleus (spread {spread})",
                    s.token
                );
                seen.insert(s.token);
            }
            assert!(seen.len() > 1, "sampling collapsed to one token");
        }
    }

    #[test]
    fn an_untruncated_draw_is_the_inverse_cdf_in_token_order() {
        // 49,152 tokens (768 blocks) with a few large ones and -inf holes.
        let mut logits = pseudo_logits(49_152, 6.0);
        for (i, l) in logits.iter_mut().enumerate() {
            if i % 97 == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
        logits[40_000] = 14.0;
        logits[64] = 12.5;
        logits[49_151] = 13.0;
        for t in [1.0f32, 0.7] {
            let p = params(t, 1.0, 0);
            let max = 14.0f32;
            let w: Vec<f64> = logits
                .iter()
                .map(|&l| (((l - max) / t) as f64).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut sampler = Sampler::default();
            let draws = 20_000;
            let mut counts = std::collections::HashMap::new();
            for k in 0..draws {
                let u = (k as f32 + 0.5) / draws as f32;
                let s = sampler.sample(&logits, &p, u, &[]).unwrap();
                assert!(logits[s.token as usize].is_finite(), "drew a -inf token");
                *counts.entry(s.token).or_insert(0usize) += 1;
            }
            // A stratified grid of u: each token gets its probability's share of the grid,
            // within a couple of grid points.
            for token in [40_000u32, 64, 49_151] {
                let expected = w[token as usize] / total * draws as f64;
                let got = *counts.get(&token).unwrap_or(&0) as f64;
                assert!(
                    (got - expected).abs() <= 2.0 + expected * 1e-3,
                    "t {t} token {token}: {got} draws, expected {expected:.1}"
                );
            }
            let rest: usize = counts
                .iter()
                .filter(|(k, _)| ![40_000u32, 64, 49_151].contains(k))
                .map(|(_, c)| c)
                .sum();
            let expected_rest = (total - w[40_000] - w[64] - w[49_151]) / total * draws as f64;
            assert!((rest as f64 - expected_rest).abs() <= 4.0 + expected_rest * 1e-3);
            // The edges of u.
            for u in [0.0f32, 1.0 - f32::EPSILON / 2.0] {
                let s = sampler.sample(&logits, &p, u, &[]).unwrap();
                assert!(logits[s.token as usize].is_finite());
            }
        }
    }

    #[test]
    fn argmax_takes_the_first_of_ties_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5, 0.7, f32::NAN]), 2);
        let mut long = vec![0.0f32; 1001];
        long[1000] = 1.0;
        assert_eq!(argmax(&long), 1000);
    }

    #[test]
    fn fast_exp_matches_std_exp() {
        for i in 0..=20_000 {
            let x = -(i as f32) * 0.0043;
            let (a, b) = (fast_exp(x), x.exp());
            assert!(
                (a - b).abs() <= 2e-7 * (1.0 - x) * b + 1e-38,
                "exp({x}): {a} vs {b}"
            );
        }
    }

    #[test]
    fn the_same_uniform_gives_the_same_token() {
        let logits = pseudo_logits(1000, 8.0);
        let p = params(0.7, 0.95, 0);
        let mut sampler = Sampler::default();
        let a = sampler.sample(&logits, &p, 0.3, &[]).unwrap();
        let b = sampler.sample(&logits, &p, 0.3, &[]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rng_streams_depend_on_seed_and_index_only() {
        let p = params(0.7, 0.95, 0);
        let draw = |i| {
            (0..4)
                .map(|_| 0)
                .fold((Vec::new(), p.rng(i)), |(mut v, mut r), _| {
                    v.push(r.next_uniform());
                    (v, r)
                })
                .0
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        let shifted = SamplingParams::new(SamplingOptions {
            seed: Some(2),
            ..p.options().clone()
        })
        .unwrap();
        let mut r = shifted.rng(2);
        assert_eq!(
            draw(3)[0],
            r.next_uniform(),
            "sample i of seed s is seed s + i"
        );
    }

    fn with(options: SamplingOptions) -> SamplingParams {
        SamplingParams::new(SamplingOptions {
            seed: Some(1),
            ..options
        })
        .unwrap()
    }

    #[test]
    fn non_finite_rows_are_errors_not_hangs() {
        // Each of these used to spin forever in the top-p loop (or sample garbage).
        let sampled = SamplingOptions {
            temperature: 0.7,
            top_p: 0.9,
            ..SamplingOptions::default()
        };
        let cases: Vec<(Vec<f32>, LogitsError)> = vec![
            (vec![f32::NAN; 64], LogitsError::NotANumber { token: 0 }),
            (
                {
                    let mut r = pseudo_logits(64, 4.0);
                    r[17] = f32::NAN;
                    r
                },
                LogitsError::NotANumber { token: 17 },
            ),
            (
                {
                    let mut r = pseudo_logits(64, 4.0);
                    r[5] = f32::INFINITY;
                    r[9] = f32::INFINITY;
                    r
                },
                LogitsError::Infinite { token: 5 },
            ),
            (
                vec![f32::NEG_INFINITY; 64],
                LogitsError::AllNegativeInfinity,
            ),
        ];
        for top_k in [0, 1, 5] {
            for greedy in [false, true] {
                let options = if greedy {
                    SamplingOptions::default()
                } else {
                    SamplingOptions {
                        top_k,
                        ..sampled.clone()
                    }
                };
                let p = with(options);
                for (row, expected) in &cases {
                    let got = Sampler::default().sample(row, &p, 0.5, &[]);
                    assert_eq!(got, Err(expected.clone()), "top_k {top_k}, greedy {greedy}");
                }
            }
        }
    }

    #[test]
    fn a_row_that_is_all_minus_infinity_but_one_samples_that_one() {
        let mut row = vec![f32::NEG_INFINITY; 4096];
        row[1234] = -3.0;
        for top_p in [0.5, 1.0] {
            let p = with(SamplingOptions {
                temperature: 1.3,
                top_p,
                ..SamplingOptions::default()
            });
            for u in [0.0, 0.5, 0.999] {
                let s = Sampler::default().sample(&row, &p, u, &[]).unwrap();
                assert_eq!(s.token, 1234);
                assert!(s.logprob.abs() < 1e-5, "logprob {}", s.logprob);
            }
        }
    }

    #[test]
    fn penalties_shift_the_sampled_distribution_but_not_the_reported_logprob() {
        // Token 0 is far ahead; a frequency penalty over three earlier 0s takes it back.
        let row = [5.0f32, 4.0, 0.0, 0.0];
        let greedy_penalized = with(SamplingOptions {
            frequency_penalty: 1.0,
            ..SamplingOptions::default()
        });
        let history = [0, 0, 0];
        let s = Sampler::default()
            .sample(&row, &greedy_penalized, 0.5, &history)
            .unwrap();
        assert_eq!(s.token, 1, "5 - 3 * 1.0 = 2 < 4");
        assert!((s.logprob - log_softmax_at(&row, 1)).abs() < 1e-6);
        // Presence counts once, however often the token came.
        let presence = with(SamplingOptions {
            presence_penalty: 0.5,
            ..SamplingOptions::default()
        });
        let s = Sampler::default()
            .sample(&row, &presence, 0.5, &history)
            .unwrap();
        assert_eq!(s.token, 0, "5 - 0.5 > 4");
        let s = Sampler::default()
            .sample(&row, &presence, 0.5, &[])
            .unwrap();
        assert_eq!(s.token, 0);
        // A negative penalty favours repeats.
        let favour = with(SamplingOptions {
            presence_penalty: -2.0,
            ..SamplingOptions::default()
        });
        let s = Sampler::default().sample(&row, &favour, 0.5, &[3]).unwrap();
        assert_eq!(s.token, 0, "0 + 2 < 5");
        let s = Sampler::default()
            .sample(&[1.0, 0.0, 0.0, 0.5], &favour, 0.5, &[3])
            .unwrap();
        assert_eq!(s.token, 3, "0.5 + 2 > 1");
    }

    #[test]
    fn penalties_out_of_range_are_refused() {
        for (presence, frequency) in [(2.5, 0.0), (0.0, -2.1), (f32::NAN, 0.0)] {
            let err = SamplingParams::new(SamplingOptions {
                presence_penalty: presence,
                frequency_penalty: frequency,
                ..SamplingOptions::default()
            })
            .unwrap_err();
            assert!(matches!(err, SamplingError::Penalty { .. }), "{err:?}");
        }
        let err = SamplingParams::new(SamplingOptions {
            top_logprobs: 21,
            ..SamplingOptions::default()
        })
        .unwrap_err();
        assert_eq!(err, SamplingError::TopLogprobs(21));
    }

    #[test]
    fn top_logprobs_are_the_full_sort_top_k_of_the_log_softmax() {
        let mut logits = pseudo_logits(49_152, 12.0);
        logits[100] = logits[7]; // a tie: the lower id comes first
        for k in [1, 3, 20] {
            let p = with(SamplingOptions {
                temperature: 0.8,
                top_p: 0.9,
                top_logprobs: k,
                ..SamplingOptions::default()
            });
            let s = Sampler::default().sample(&logits, &p, 0.25, &[]).unwrap();
            let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
            idx.sort_by(|a, b| {
                logits[*b as usize]
                    .total_cmp(&logits[*a as usize])
                    .then(a.cmp(b))
            });
            let expected: Vec<u32> = idx[..k].to_vec();
            let got: Vec<u32> = s.top.iter().map(|&(t, _)| t).collect();
            assert_eq!(got, expected);
            for &(t, lp) in &s.top {
                assert!((lp - log_softmax_at(&logits, t)).abs() < 1e-4);
            }
            assert!(s.top.windows(2).all(|w| w[0].1 >= w[1].1));
        }
    }

    #[test]
    fn a_tiny_temperature_samples_greedily_instead_of_uniformly() {
        let logits = pseudo_logits(4_096, 8.0);
        let best = argmax(&logits);
        let mut sampler = Sampler::default();
        for t in [1e-39_f32, 1e-30, 1e-8, MIN_TEMPERATURE / 2.0] {
            let p = params(t, 0.95, 0);
            assert!(p.is_greedy(), "t = {t}");
            for u in [0.0, 0.37, 0.999] {
                let s = sampler.sample(&logits, &p, u, &[]).unwrap();
                assert_eq!(s.token, best, "t = {t}, u = {u}");
            }
        }
        // At the floor itself the temperature stands (and 1 / t is finite).
        assert!(!params(MIN_TEMPERATURE, 1.0, 0).is_greedy());
    }

    #[test]
    fn stop_strings_are_bounded_in_length() {
        let options = |stop: String| SamplingOptions {
            stop: vec!["ok".into(), stop],
            ..SamplingOptions::default()
        };
        assert!(SamplingParams::new(options("x".repeat(MAX_STOP_BYTES))).is_ok());
        assert_eq!(
            SamplingParams::new(options("x".repeat(256 * 1024))).err(),
            Some(SamplingError::StopTooLong {
                len: 256 * 1024,
                max: MAX_STOP_BYTES
            })
        );
    }
}
