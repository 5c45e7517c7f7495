//! Presence and frequency penalties (OpenAI's definition, over the generated tokens): a
//! shifted copy of the row, the model's own row left untouched (reported log-probs are
//! always the model's). Not validation of the penalty values (`params`).

use super::params::SamplingOptions;
use crate::model::TokenId;

/// Writes into `shifted` the row `logits` with every token of `generated` lowered by
/// `presence_penalty + frequency_penalty * occurrences`; `counts` is scratch space.
pub(super) fn penalize(
    shifted: &mut Vec<f32>,
    counts: &mut Vec<TokenId>,
    logits: &[f32],
    generated: &[TokenId],
    o: &SamplingOptions,
) {
    shifted.clear();
    shifted.extend_from_slice(logits);
    counts.clear();
    counts.extend_from_slice(generated);
    counts.sort_unstable();
    for run in counts.chunk_by(|a, b| a == b) {
        if let Some(l) = shifted.get_mut(run[0] as usize) {
            *l -= o.presence_penalty + o.frequency_penalty * run.len() as f32;
        }
    }
}
