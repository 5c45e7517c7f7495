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
//!
//! Rooms: `params` (options, validation, seeded streams), `row` (checked max, argmax,
//! `sum exp`, `fast_exp`), `nucleus` (top-k / top-p / min-p and whole-row draws),
//! `penalties`, `logprobs` (log-softmax and top alternatives), `fused` (the fast sweeps);
//! this file is the [`Sampler`] that puts them together.

mod fused;
mod logprobs;
mod nucleus;
mod params;
mod penalties;
mod row;

use crate::model::TokenId;

pub use logprobs::log_softmax_at;
#[cfg(feature = "fault-injection")]
pub use params::InjectedFault;
pub use params::{
    SamplingError, SamplingOptions, SamplingParams, SequenceRng, MAX_STOP_BYTES, MAX_TOP_LOGPROBS,
    MIN_TEMPERATURE,
};
pub use row::argmax;

use logprobs::top_logprobs;
use nucleus::{nucleus_draw, nucleus_select, untruncated, walk_blocks, DRAW_BLOCK};
use penalties::penalize;
use row::{checked_max, fast_exp, max_of, sum_exp};

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
        Ok(sampled(logits, token, max, total.ln(), o.top_logprobs))
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
            penalize(&mut self.shifted, &mut self.counts, logits, generated, o);
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
        Ok(sampled(logits, token, raw_max, log_total, o.top_logprobs))
    }
}

/// What sampling `token` from `logits` gives: its log-prob under the model's own
/// distribution (whose log normalizer is `max + log_total`, `max` being the raw row's) and,
/// for `top_k > 0`, the `top_k` most likely tokens. The end of both sampling paths.
fn sampled(logits: &[f32], token: TokenId, max: f32, log_total: f32, top_k: usize) -> Sampled {
    let logprob = logits[token as usize] - max - log_total;
    let top = if top_k > 0 {
        top_logprobs(logits, top_k, max + log_total)
    } else {
        Vec::new()
    };
    Sampled {
        token,
        logprob,
        top,
    }
}

#[cfg(test)]
mod tests;
