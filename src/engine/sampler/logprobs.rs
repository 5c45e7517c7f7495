//! Log-probabilities the sampler reports: a token's log-softmax under the model
//! (temperature 1, no penalties or truncation, as teacher-forced scoring computes it) and
//! the `top_logprobs` most likely alternatives. Not the draw itself.

use super::row::{max_of, sum_exp};
use crate::model::TokenId;

/// The `k` largest entries of `row` as log-probs (`row - log_normalizer`), most likely
/// first, ties by lower id. One pass keeping a small sorted list.
pub(super) fn top_logprobs(row: &[f32], k: usize, log_normalizer: f32) -> Vec<(TokenId, f32)> {
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

/// `log softmax(row)[token]`: the model's log-probability of `token` (temperature 1).
pub fn log_softmax_at(row: &[f32], token: TokenId) -> f32 {
    log_softmax_with_max(row, max_of(row), token)
}

fn log_softmax_with_max(row: &[f32], max: f32, token: TokenId) -> f32 {
    row[token as usize] - max - sum_exp(row, max, 1.0).ln()
}
