//! The sampler's row sweeps, fused: the maximum, the first argmax and the row check in one
//! sweep; every exponential a draw needs (both normalizers, or the block sums of an
//! untruncated draw and the total) in another. Each runs on AVX2 where the CPU has it
//! (checked at run time; the crate builds for baseline x86-64) and as portable code
//! elsewhere.
//!
//! Results are bit-identical to the reference functions of the parent module: the same
//! eight accumulator lanes in the same order, the same `fast_exp`, and no fused
//! multiply-add (only `avx2` is enabled, not `fma`, and Rust never contracts `a * b + c`),
//! so a wider register changes the speed and nothing else. The tests compare them.

use super::{fast_exp, LogitsError, DRAW_BLOCK};
use crate::model::TokenId;

/// Calls `$body` compiled for AVX2 when the CPU has it, else the portable build of it.
macro_rules! dispatch {
    ($body:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        let out = if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `avx2::$body` is `$body` compiled with `target_feature(avx2)`; calling
            // it needs only that the CPU has AVX2, checked on the line above.
            unsafe { avx2::$body($($arg),*) }
        } else {
            $body($($arg),*)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let out = $body($($arg),*);
        out
    }};
}

/// The largest logit of a row and the first position holding it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RowMax {
    pub max: f32,
    pub argmax: TokenId,
}

/// The row's maximum and first argmax, or why it cannot be sampled (a NaN or `+inf`
/// logit, or every logit `-inf`): the reference's `checked_max` and `argmax` in one sweep.
pub(super) fn checked_max_argmax(row: &[f32]) -> Result<RowMax, LogitsError> {
    let (max, argmax, any_nan) = dispatch!(max_argmax(row));
    if let Some(e) = super::row::row_fault(row, max, any_nan) {
        return Err(e);
    }
    Ok(RowMax { max, argmax })
}

/// `sum_i exp((row_i - max) * scale)`, as the reference's `sum_exp`.
pub(super) fn sum_exp(row: &[f32], max: f32, scale: f32) -> f32 {
    dispatch!(sum_exp_body(row, max, scale))
}

/// `(sum exp((row - max) * scale), sum exp(row - max))` in one sweep.
pub(super) fn sum_exp_pair(row: &[f32], max: f32, scale: f32) -> (f32, f32) {
    dispatch!(sum_exp_pair_body(row, max, scale))
}

/// Fills `sums` with the weight sum of each [`DRAW_BLOCK`] tokens (as the reference's
/// untruncated draw does) and returns the row's `sum_exp` at the same scale, in one sweep.
pub(super) fn block_sums(sums: &mut Vec<f32>, row: &[f32], max: f32, scale: f32) -> f32 {
    sums.clear();
    dispatch!(block_sums_body(sums, row, max, scale))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The bodies compiled with AVX2 (inlined into these wrappers, so they get its codegen).
    #[target_feature(enable = "avx2")]
    pub(super) fn max_argmax(row: &[f32]) -> (f32, u32, bool) {
        super::max_argmax(row)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_exp_body(row: &[f32], max: f32, scale: f32) -> f32 {
        super::sum_exp_body(row, max, scale)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn sum_exp_pair_body(row: &[f32], max: f32, scale: f32) -> (f32, f32) {
        super::sum_exp_pair_body(row, max, scale)
    }
    #[target_feature(enable = "avx2")]
    pub(super) fn block_sums_body(sums: &mut Vec<f32>, row: &[f32], max: f32, scale: f32) -> f32 {
        super::block_sums_body(sums, row, max, scale)
    }
}

/// Lanes of every accumulator (the reference's).
const LANES: usize = 8;

/// `(max, first argmax, any NaN)`. Each lane keeps its own first maximum; the row's first
/// maximum is the lowest position among the lanes (and the tail) that hold the maximum.
#[inline(always)]
fn max_argmax(row: &[f32]) -> (f32, u32, bool) {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let mut nan = [false; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, chunk) in chunks.enumerate() {
        let base = (c * LANES) as u32;
        for j in 0..LANES {
            let l = chunk[j];
            nan[j] |= l.is_nan();
            let greater = l > acc[j];
            acc[j] = if greater { l } else { acc[j] };
            at[j] = if greater { base + j as u32 } else { at[j] };
        }
    }
    let any_nan = nan.iter().any(|&n| n) || tail.iter().any(|l| l.is_nan());
    let max = acc
        .iter()
        .chain(tail)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    let tail_start = (row.len() - tail.len()) as u32;
    let first = (0..LANES)
        .filter(|&j| acc[j] == max)
        .map(|j| at[j])
        .chain(
            tail.iter()
                .enumerate()
                .filter(|&(_, &l)| l == max)
                .map(|(k, _)| tail_start + k as u32),
        )
        .min()
        .unwrap_or(0);
    (max, first, any_nan)
}

#[inline(always)]
fn sum_exp_body(row: &[f32], max: f32, scale: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &l) in acc.iter_mut().zip(chunk) {
            *a += fast_exp((l - max) * scale);
        }
    }
    let tail: f32 = tail.iter().map(|&l| fast_exp((l - max) * scale)).sum();
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_exp_pair_body(row: &[f32], max: f32, scale: f32) -> (f32, f32) {
    let mut at_scale = [0.0f32; LANES];
    let mut at_one = [0.0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for j in 0..LANES {
            let d = chunk[j] - max;
            at_scale[j] += fast_exp(d * scale);
            at_one[j] += fast_exp(d * 1.0);
        }
    }
    let tail_scale: f32 = tail.iter().map(|&l| fast_exp((l - max) * scale)).sum();
    let tail_one: f32 = tail.iter().map(|&l| fast_exp((l - max) * 1.0)).sum();
    (
        at_scale.iter().sum::<f32>() + tail_scale,
        at_one.iter().sum::<f32>() + tail_one,
    )
}

/// Per block: the block's own lanes (its sum) and the row's lanes (the total) take the same
/// exponentials. Blocks hold a multiple of [`LANES`] tokens, so the row's lane order and
/// tail are exactly the reference's.
#[inline(always)]
fn block_sums_body(sums: &mut Vec<f32>, row: &[f32], max: f32, scale: f32) -> f32 {
    const _: () = assert!(DRAW_BLOCK % LANES == 0);
    let mut total = [0.0f32; LANES];
    let mut total_tail = 0.0f32;
    for block in row.chunks(DRAW_BLOCK) {
        let mut acc = [0.0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for j in 0..LANES {
                let w = fast_exp((chunk[j] - max) * scale);
                acc[j] += w;
                total[j] += w;
            }
        }
        // Only the last block can have a tail, and it is the row's.
        let tail: f32 = tail.iter().map(|&l| fast_exp((l - max) * scale)).sum();
        total_tail = tail;
        sums.push(acc.iter().sum::<f32>() + tail);
    }
    total.iter().sum::<f32>() + total_tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Rows with tails of every length, `-inf` holes, ties at the maximum and signed zeros.
    fn rows() -> Vec<Vec<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut out = Vec::new();
        for len in [1usize, 7, 8, 9, 63, 64, 65, 1000, 4099, 49_152, 49_159] {
            let row: Vec<f32> = (0..len).map(|_| rng.random::<f32>() * 16.0 - 8.0).collect();
            let mut holes = row.clone();
            for (i, l) in holes.iter_mut().enumerate() {
                if i % 5 == 1 {
                    *l = f32::NEG_INFINITY;
                }
            }
            let mut ties = row.clone();
            let n = ties.len();
            ties[n - 1] = 9.0;
            ties[n / 2] = 9.0;
            ties[n / 3] = 9.0;
            let mut zeros = vec![f32::NEG_INFINITY; len];
            zeros[len - 1] = 0.0;
            zeros[len / 2] = -0.0;
            out.extend([row, holes, ties, zeros]);
        }
        out
    }

    #[test]
    fn every_sweep_equals_the_reference_bit_for_bit_portable_and_avx2() {
        for row in rows() {
            let Ok(max) = super::super::checked_max(&row) else {
                continue;
            };
            let reference_argmax = super::super::argmax(&row);
            let fused = checked_max_argmax(&row).unwrap();
            // Equal as numbers: `f32::max` may pick either sign of a zero maximum, which
            // changes nothing downstream (`l - 0.0 == l - -0.0`).
            assert_eq!(fused.max, max);
            assert_eq!(fused.argmax, reference_argmax, "len {}", row.len());
            assert_eq!(max_argmax(&row).1, reference_argmax);
            for scale in [1.0f32, 1.0 / 0.7, 1.0 / 1.3] {
                let reference = super::super::sum_exp(&row, max, scale);
                let at_one = super::super::sum_exp(&row, max, 1.0);
                let reference_blocks: Vec<f32> = row
                    .chunks(DRAW_BLOCK)
                    .map(|b| super::super::sum_exp(b, max, scale))
                    .collect();
                let mut blocks = Vec::new();
                let portable = [
                    sum_exp_body(&row, max, scale),
                    sum_exp_pair_body(&row, max, scale).0,
                    block_sums_body(&mut blocks, &row, max, scale),
                ];
                let mut avx_blocks = Vec::new();
                let mut dispatched = vec![
                    sum_exp(&row, max, scale),
                    sum_exp_pair(&row, max, scale).0,
                    block_sums(&mut avx_blocks, &row, max, scale),
                ];
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut b = Vec::new();
                    // SAFETY: the CPU has AVX2 (checked on the line above).
                    let avx = unsafe {
                        [
                            avx2::sum_exp_body(&row, max, scale),
                            avx2::sum_exp_pair_body(&row, max, scale).0,
                            avx2::block_sums_body(&mut b, &row, max, scale),
                        ]
                    };
                    dispatched.extend(avx);
                    assert_eq!(b, reference_blocks);
                    // SAFETY: as above.
                    assert_eq!(unsafe { avx2::max_argmax(&row) }.1, reference_argmax);
                }
                for got in portable.iter().chain(&dispatched) {
                    assert_eq!(
                        got.to_bits(),
                        reference.to_bits(),
                        "len {} scale {scale}",
                        row.len()
                    );
                }
                assert_eq!(sum_exp_pair(&row, max, scale).1.to_bits(), at_one.to_bits());
                assert_eq!(blocks, reference_blocks);
                assert_eq!(avx_blocks, reference_blocks);
            }
        }
    }

    #[test]
    fn bad_rows_are_the_reference_errors() {
        let mut row = vec![0.5f32; 100];
        row[37] = f32::NAN;
        row[60] = f32::INFINITY;
        assert_eq!(
            checked_max_argmax(&row),
            Err(LogitsError::NotANumber { token: 37 })
        );
        row[37] = 0.0;
        assert_eq!(
            checked_max_argmax(&row),
            Err(LogitsError::Infinite { token: 60 })
        );
        assert_eq!(
            checked_max_argmax(&[f32::NEG_INFINITY; 19]),
            Err(LogitsError::AllNegativeInfinity)
        );
        for bad in [vec![f32::NAN; 3], vec![1.0, f32::INFINITY, f32::NAN]] {
            assert_eq!(
                checked_max_argmax(&bad),
                super::super::checked_max(&bad).map(|max| RowMax { max, argmax: 0 })
            );
        }
    }
}
