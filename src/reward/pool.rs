//! Pooling of model outputs into rewards: last-token gather, masked mean, head dot product,
//! cosine and BERTScore matching.
//!
//! This is the CPU implementation and the reference: the GPU step adds
//! `kernels/reward_pool.cu` behind these same functions and is tested against them
//! (`gpu::GpuPool`, which takes its own `HiddenStates` view; `device_pool` converts
//! [`Hidden`] to it).
//! Inputs are row-major `[B, T, H]` buffers with a per-row `[T]` mask of real tokens.

/// A `[batch, seq, hidden]` float buffer, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Hidden<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub seq: usize,
    pub hidden: usize,
}

impl<'a> Hidden<'a> {
    /// Checks that `data` holds exactly `batch * seq * hidden` values.
    pub fn new(data: &'a [f32], batch: usize, seq: usize, hidden: usize) -> Option<Self> {
        (batch.checked_mul(seq)?.checked_mul(hidden)? == data.len()).then_some(Self {
            data,
            batch,
            seq,
            hidden,
        })
    }

    /// Checks that `masks` has one mask per row, each as long as the output's sequence: a
    /// graph whose output is shorter (or longer) than its input gets this error instead of
    /// an out-of-range read in pooling.
    pub fn check_masks(&self, masks: &[&[i64]]) -> Result<(), String> {
        if masks.len() != self.batch {
            return Err(format!(
                "the output has {} rows but the batch has {}",
                self.batch,
                masks.len()
            ));
        }
        match masks.iter().find(|m| m.len() != self.seq) {
            Some(m) => Err(format!(
                "the output has {} positions per row but the input has {}",
                self.seq,
                m.len()
            )),
            None => Ok(()),
        }
    }

    /// The hidden vector of `row` at position `pos` (in range after [`Self::check_masks`]).
    pub fn at(&self, row: usize, pos: usize) -> &'a [f32] {
        let start = (row * self.seq + pos) * self.hidden;
        &self.data[start..start + self.hidden]
    }
}

/// Position of the last real token of a row (`mask[t] != 0`), for either padding side;
/// `None` when the row has no real token.
pub fn last_real_position(mask: &[i64]) -> Option<usize> {
    mask.iter().rposition(|&m| m != 0)
}

/// The hidden vector at each row's last real token.
pub fn last_token<'a>(hidden: &Hidden<'a>, masks: &[&[i64]]) -> Vec<Option<&'a [f32]>> {
    masks
        .iter()
        .enumerate()
        .map(|(row, mask)| last_real_position(mask).map(|pos| hidden.at(row, pos)))
        .collect()
}

/// Mean of each row's hidden vectors over its real tokens (zeros for an empty row).
pub fn masked_mean(hidden: &Hidden<'_>, masks: &[&[i64]]) -> Vec<Vec<f32>> {
    masks
        .iter()
        .enumerate()
        .map(|(row, mask)| {
            let mut sum = vec![0f32; hidden.hidden];
            let mut count = 0usize;
            for (pos, _) in mask.iter().enumerate().filter(|(_, &m)| m != 0) {
                for (s, v) in sum.iter_mut().zip(hidden.at(row, pos)) {
                    *s += v;
                }
                count += 1;
            }
            if count > 0 {
                let inv = 1.0 / count as f32;
                sum.iter_mut().for_each(|s| *s *= inv);
            }
            sum
        })
        .collect()
}

/// `w · x + b` (a one-label classification head).
pub fn head_dot(weight: &[f32], bias: f32, x: &[f32]) -> f32 {
    dot(weight, x) + bias
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit L2 norm in place (a zero vector stays zero).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity (0 when either vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot(a, b) / (na * nb)
    }
}

/// BERTScore F1 by greedy matching of token embeddings (no idf weights, no baseline
/// rescaling): precision = mean over candidate tokens of their best cosine with a reference
/// token, recall the other way round, F1 their harmonic mean (0 when either side is empty).
pub fn bertscore_f1(candidate: &[Vec<f32>], reference: &[Vec<f32>]) -> f32 {
    if candidate.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let unit = |tokens: &[Vec<f32>]| -> Vec<Vec<f32>> {
        tokens
            .iter()
            .map(|t| {
                let mut t = t.clone();
                l2_normalize(&mut t);
                t
            })
            .collect()
    };
    let (c, r) = (unit(candidate), unit(reference));
    let mut best_for_ref = vec![f32::NEG_INFINITY; r.len()];
    let mut precision = 0f32;
    for ct in &c {
        let mut best = f32::NEG_INFINITY;
        for (j, rt) in r.iter().enumerate() {
            let s = dot(ct, rt);
            best = best.max(s);
            best_for_ref[j] = best_for_ref[j].max(s);
        }
        precision += best;
    }
    precision /= c.len() as f32;
    let recall = best_for_ref.iter().sum::<f32>() / r.len() as f32;
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer() -> Vec<f32> {
        // batch 2, seq 3, hidden 2: value = 10*row + pos, second component negated
        let mut v = Vec::new();
        for row in 0..2 {
            for pos in 0..3 {
                let x = (10 * row + pos) as f32;
                v.extend([x, -x]);
            }
        }
        v
    }

    #[test]
    fn last_token_finds_the_last_real_token_on_either_padding_side() {
        let data = buffer();
        let h = Hidden::new(&data, 2, 3, 2).unwrap();
        let right: &[i64] = &[1, 1, 0];
        let left: &[i64] = &[0, 1, 1];
        let got = last_token(&h, &[right, left]);
        assert_eq!(got[0], Some(&[1.0, -1.0][..]));
        assert_eq!(got[1], Some(&[12.0, -12.0][..]));
        assert_eq!(last_token(&h, &[&[0, 0, 0], &[1, 0, 0]])[0], None);
    }

    #[test]
    fn masked_mean_ignores_padding() {
        let data = buffer();
        let h = Hidden::new(&data, 2, 3, 2).unwrap();
        let got = masked_mean(&h, &[&[1, 1, 0], &[0, 1, 1]]);
        assert_eq!(got[0], vec![0.5, -0.5]);
        assert_eq!(got[1], vec![11.5, -11.5]);
        assert_eq!(masked_mean(&h, &[&[0, 0, 0]])[0], vec![0.0, 0.0]);
    }

    #[test]
    fn hidden_rejects_a_buffer_of_the_wrong_size() {
        assert!(Hidden::new(&[0.0; 5], 2, 3, 1).is_none());
    }

    #[test]
    fn masks_longer_or_shorter_than_the_output_are_an_error() {
        let data = buffer();
        let h = Hidden::new(&data, 2, 3, 2).unwrap();
        assert!(h.check_masks(&[&[1, 1, 0], &[0, 1, 1]]).is_ok());
        let longer: &[i64] = &[1, 1, 1, 1];
        let err = h.check_masks(&[&[1, 1, 0], longer]).unwrap_err();
        assert!(
            err.contains("3 positions per row but the input has 4"),
            "{err}"
        );
        assert!(h.check_masks(&[&[1, 1]]).unwrap_err().contains("2 rows"));
    }

    #[test]
    fn cosine_and_head() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.70710677).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        assert_eq!(head_dot(&[1.0, 2.0], 0.5, &[3.0, 4.0]), 11.5);
    }

    #[test]
    fn bertscore_is_one_for_identical_tokens_and_symmetric_in_f1() {
        let a = vec![vec![1.0, 0.0], vec![0.0, 2.0]];
        let b = vec![vec![1.0, 1.0]];
        assert!((bertscore_f1(&a, &a) - 1.0).abs() < 1e-6);
        assert!((bertscore_f1(&a, &b) - bertscore_f1(&b, &a)).abs() < 1e-6);
        // candidate tokens each match b at cos 0.7071: P = 0.7071, R = 0.7071
        assert!((bertscore_f1(&a, &b) - 0.70710677).abs() < 1e-6);
        assert_eq!(bertscore_f1(&[], &b), 0.0);
    }
}
