//! Whole-row arithmetic the sampler builds on: the checked maximum (a NaN, `+inf` or
//! all-`-inf` row is a [`LogitsError`]), the maximum, the argmax, `sum exp` and the
//! vectorizable `fast_exp`, each written so the compiler vectorizes it. The reference
//! versions of what `fused` does in fewer sweeps. No sampling decisions.

use super::LogitsError;
use crate::model::TokenId;

/// The largest logit of `row`, or why the row cannot be sampled. One vectorizable pass (a
/// NaN never compares greater, so it is tracked on the side).
pub(super) fn checked_max(row: &[f32]) -> Result<f32, LogitsError> {
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
    match row_fault(row, max, any_nan) {
        Some(e) => Err(e),
        None => Ok(max),
    }
}

/// Why a row whose maximum is `max` (and which holds a NaN where `any_nan`) cannot be
/// sampled: a NaN (first one named), a `+inf` (first one named) or every logit `-inf`;
/// `None` for a row that can. The check after `checked_max`'s sweep and the fused one.
pub(super) fn row_fault(row: &[f32], max: f32, any_nan: bool) -> Option<LogitsError> {
    let position = |bad: fn(f32) -> bool| row.iter().position(|&l| bad(l)).unwrap_or(0) as TokenId;
    if any_nan {
        return Some(LogitsError::NotANumber {
            token: position(f32::is_nan),
        });
    }
    if max == f32::INFINITY {
        return Some(LogitsError::Infinite {
            token: position(|l| l == f32::INFINITY),
        });
    }
    if max == f32::NEG_INFINITY {
        return Some(LogitsError::AllNegativeInfinity);
    }
    None
}

/// Largest value of `row`, with eight lanes so the loop vectorizes (`maxps`).
pub(super) fn max_of(row: &[f32]) -> f32 {
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
pub(super) fn sum_exp(row: &[f32], max: f32, scale: f32) -> f32 {
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

/// Index of the largest logit (the lowest index among ties; NaN entries are skipped).
pub fn argmax(logits: &[f32]) -> TokenId {
    let max = max_of(logits);
    logits.iter().position(|&l| l == max).unwrap_or(0) as TokenId
}
