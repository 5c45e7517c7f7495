//! Drawing a token from a row at a temperature above zero: the top-k / top-p / min-p
//! nucleus (never a full sort: a window of the best logits, widened until it holds the
//! nucleus) and the untruncated inverse-CDF draw over blocks of the row. Not the row checks,
//! penalties or log-probs (the parent module, `penalties`, `logprobs`).

use super::params::SamplingOptions;
use super::row::{fast_exp, sum_exp};
use crate::model::TokenId;

/// Draws from the top-k / top-p / min-p nucleus of `row` (finite or `-inf` entries, finite
/// `max`) at `temperature > 0`; returns the token and `sum exp((row - max) / t)`.
pub(super) fn nucleus_draw(
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
pub(super) fn untruncated(o: &SamplingOptions, len: usize) -> bool {
    o.top_p >= 1.0 && top_k_limit(o, len) == len && o.min_p <= 0.0
}

/// Draws from the truncated nucleus of `row` (some of top-k, top-p, min-p set), given
/// `total = sum exp((row - max) / t)`.
pub(super) fn nucleus_select(
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
pub(super) const DRAW_BLOCK: usize = 64;

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
pub(super) fn walk_blocks(
    block_sums: &[f32],
    row: &[f32],
    max: f32,
    inv_t: f32,
    u: f32,
) -> TokenId {
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
