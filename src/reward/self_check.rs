//! The load-time self-check of a reward graph: a few canned texts of different lengths, each
//! run alone (no padding), then all together padded to one length; the padded rows must give
//! what the rows alone gave. A graph that pools by a pad id `tpo` does not use, a padding
//! side it cannot take, or positions it numbers itself shows up here as a difference, and
//! the folder is refused with the likely cause instead of scoring silently wrong.
//!
//! Outputs are compared where they are computed: a per-token output (`[B, T, …]`) at each
//! row's real positions, a pooled one (`[B, …]`) row by row. Cost: the texts are short
//! ([`TEXTS`], 4–30 tokens), so a 135M-parameter graph checks in a few tens of milliseconds
//! on two CPU cores (the time is in the report).

use std::path::Path;
use std::time::Instant;

use super::config::PaddingSide;
use super::resolve::PadCandidate;
use super::sequence::SequenceModel;
use super::RewardError;
use crate::model::TokenId;

/// The canned texts, of clearly different lengths (so the batch pads every row but one).
pub const TEXTS: &[&str] = &[
    "Yes, it is.",
    "The capital of France is Paris, a city on the river Seine.",
    "Plants make their food by photosynthesis: in their leaves, light turns water and carbon \
     dioxide into sugar, and oxygen is released into the air.",
];

/// Largest difference allowed between a padded row and the same row alone, relative to the
/// output's scale (its largest magnitude, at least 1). Measured on our folders: float32
/// graphs differ by about 1e-6 of scale, float16 ones by about 1e-3; a graph fed the wrong
/// pad id differs by the size of the output itself.
pub const TOLERANCE: f32 = 0.02;

/// What the self-check ran and found.
#[derive(Debug, Clone, PartialEq)]
pub struct SelfCheck {
    /// Tokens of each canned text.
    pub tokens: Vec<usize>,
    /// The configured padding side, and the largest relative difference it gave.
    pub side: PaddingSide,
    pub difference: f32,
    /// The other side, when asked for and the graph can take it (it has `position_ids`),
    /// and its difference; informative only, as the config does not use it.
    pub other_side: Option<(PaddingSide, f32)>,
    pub tolerance: f32,
    pub seconds: f64,
}

/// Runs the self-check on `model` (the folder `dir`); an error names the likely cause,
/// trying the folder's `pad_candidates` when padded rows disagree. With `both_sides`, the
/// side the config does not use is measured too when the graph can take it (one more run:
/// `tpo models inspect` asks for it, loading does not).
pub fn run(
    dir: &Path,
    model: &SequenceModel,
    pad_candidates: &[PadCandidate],
    both_sides: bool,
) -> Result<SelfCheck, RewardError> {
    let started = Instant::now();
    let seqs: Vec<Vec<TokenId>> = TEXTS
        .iter()
        .map(|t| {
            model.encode(t).map_err(|e| RewardError::Graph {
                path: dir.to_path_buf(),
                reason: format!("the self-check could not tokenize {t:?}: {e}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let alone: Vec<(Vec<usize>, Vec<f32>)> = (0..seqs.len())
        .map(|i| model.probe(&seqs, &[i], PaddingSide::Right, 0))
        .collect::<Result<_, _>>()?;
    let scale = alone
        .iter()
        .flat_map(|(_, d)| d.iter())
        .fold(1.0f32, |m, x| m.max(x.abs()));
    if alone.iter().any(|(_, d)| d.iter().any(|x| !x.is_finite())) {
        return Err(refused(
            dir,
            "the graph outputs NaN or infinity on short plain texts run alone".into(),
        ));
    }
    let all: Vec<usize> = (0..seqs.len()).collect();
    let (side, pad) = model.padding();
    let difference_with = |side: PaddingSide, pad: TokenId| -> Result<f32, RewardError> {
        let (shape, data) = model.probe(&seqs, &all, side, pad)?;
        compare(&seqs, &alone, &shape, &data, side)
            .map(|d| d / scale)
            .ok_or_else(|| {
                refused(
                    dir,
                    format!(
                        "a padded batch's output has shape {shape:?}, which does not match the \
                         rows run alone ({:?} …)",
                        alone[0].0
                    ),
                )
            })
    };
    let difference = difference_with(side, pad)?;
    if difference > TOLERANCE {
        return Err(refused(
            dir,
            cause(
                model,
                side,
                pad,
                difference,
                pad_candidates,
                &difference_with,
            ),
        ));
    }
    let other = match side {
        PaddingSide::Right => PaddingSide::Left,
        PaddingSide::Left => PaddingSide::Right,
    };
    let other_side = if both_sides && model.takes_position_ids() {
        Some((other, difference_with(other, pad)?))
    } else {
        None
    };
    Ok(SelfCheck {
        tokens: seqs.iter().map(Vec::len).collect(),
        side,
        difference,
        other_side,
        tolerance: TOLERANCE,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn refused(dir: &Path, reason: String) -> RewardError {
    RewardError::SelfCheck {
        path: dir.to_path_buf(),
        reason,
    }
}

/// The likely cause of a failed check, found by trying what would fix it.
fn cause(
    model: &SequenceModel,
    side: PaddingSide,
    pad: TokenId,
    difference: f32,
    pad_candidates: &[PadCandidate],
    difference_with: &dyn Fn(PaddingSide, TokenId) -> Result<f32, RewardError>,
) -> String {
    let side_name = super::resolve::json_name(&side);
    let head = format!(
        "rows padded ({side_name}, pad id {pad}) to a common length give outputs that differ \
         from the same rows run alone by {difference:.3} of the output's scale (tolerance \
         {TOLERANCE})"
    );
    let agrees = |s: PaddingSide, p: TokenId| difference_with(s, p).is_ok_and(|d| d <= TOLERANCE);
    if let Some(c) = pad_candidates
        .iter()
        .find(|c| c.id != pad && agrees(side, c.id))
    {
        return format!(
            "{head}. Padded with id {} ({}) they agree: the graph finds each row's end by its \
             pad id. Set \"pad_token_id\": {} in reward_config.json",
            c.id, c.from, c.id
        );
    }
    if side == PaddingSide::Left && agrees(PaddingSide::Right, pad) {
        return format!(
            "{head}. Padded on the right they agree: set \"padding_side\": \"right\" in \
             reward_config.json"
        );
    }
    format!(
        "{head}. Likely causes: the pad id (the graph may find each row's end by it: set \
         \"pad_token_id\" in reward_config.json), the padding side, a graph that numbers \
         positions itself without a position_ids input{}, or pooling inside the graph that \
         ignores attention_mask",
        if model.takes_position_ids() {
            ""
        } else {
            " (this one has none)"
        }
    )
}

/// Largest absolute difference between the padded batch (`shape`, `data`) and the rows run
/// alone; `None` when the shapes do not line up.
fn compare(
    seqs: &[Vec<TokenId>],
    alone: &[(Vec<usize>, Vec<f32>)],
    shape: &[usize],
    data: &[f32],
    side: PaddingSide,
) -> Option<f32> {
    let b = seqs.len();
    if shape.first() != Some(&b) || data.len() != shape.iter().product::<usize>() {
        return None;
    }
    let t = seqs.iter().map(Vec::len).max()?;
    // Per-token when every alone output's second axis is its own length.
    let per_token = shape.len() >= 3
        && shape[1] == t
        && alone
            .iter()
            .zip(seqs)
            .all(|((s, _), q)| s.len() == shape.len() && s[1] == q.len());
    let mut worst = 0.0f32;
    for (i, ((s, a), q)) in alone.iter().zip(seqs).enumerate() {
        let (row, expected) = if per_token {
            let width: usize = shape[2..].iter().product();
            if s[2..] != shape[2..] {
                return None;
            }
            let offset = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => t - q.len(),
            };
            let start = (i * t + offset) * width;
            (&data[start..start + q.len() * width], a.as_slice())
        } else {
            if s.len() != shape.len() || s[1..] != shape[1..] {
                return None;
            }
            let width: usize = shape[1..].iter().product();
            (&data[i * width..(i + 1) * width], a.as_slice())
        };
        if row.len() != expected.len() {
            return None;
        }
        for (x, y) in row.iter().zip(expected) {
            let d = (x - y).abs();
            if !d.is_finite() {
                return Some(f32::INFINITY);
            }
            worst = worst.max(d);
        }
    }
    Some(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(lens: &[usize]) -> Vec<Vec<TokenId>> {
        lens.iter().map(|&n| vec![7; n]).collect()
    }

    #[test]
    fn per_token_outputs_are_compared_at_real_positions_on_either_side() {
        let q = seqs(&[1, 2]);
        // alone: [1, len, 1] with values = position + 10 × row
        let alone = vec![
            (vec![1, 1, 1], vec![0.0]),
            (vec![1, 2, 1], vec![10.0, 11.0]),
        ];
        // right padded [2, 2, 1]: row 0 = [0, pad garbage]
        let right = [0.0, 99.0, 10.0, 11.0];
        assert_eq!(
            compare(&q, &alone, &[2, 2, 1], &right, PaddingSide::Right),
            Some(0.0)
        );
        let left = [99.0, 0.0, 10.0, 11.0];
        assert_eq!(
            compare(&q, &alone, &[2, 2, 1], &left, PaddingSide::Left),
            Some(0.0)
        );
        // read on the wrong side, the garbage shows
        assert_eq!(
            compare(&q, &alone, &[2, 2, 1], &left, PaddingSide::Right),
            Some(99.0)
        );
    }

    #[test]
    fn pooled_outputs_are_compared_row_by_row() {
        let q = seqs(&[1, 3]);
        let alone = vec![(vec![1, 1], vec![0.5]), (vec![1, 1], vec![-2.0])];
        assert_eq!(
            compare(&q, &alone, &[2, 1], &[0.5, -2.0], PaddingSide::Right),
            Some(0.0)
        );
        // the wrong pad id: row 0 pooled at a pad position
        assert_eq!(
            compare(&q, &alone, &[2, 1], &[3.0, -2.0], PaddingSide::Right),
            Some(2.5)
        );
        // shapes that do not line up are named, not compared
        assert_eq!(
            compare(
                &q,
                &alone,
                &[2, 2],
                &[0.5, 0.0, -2.0, 0.0],
                PaddingSide::Right
            ),
            None
        );
    }
}
