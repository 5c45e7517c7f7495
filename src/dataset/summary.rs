//! What a scored output says in aggregate: accuracy (share of pairs with a positive
//! margin; a tie is not positive), mean and median margin, mean reward of single responses.
//! Computed from the output file itself, so a resumed or merged run reports all its rows.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use super::scored::ScoredRow;
use super::DatasetError;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// Rows in the output file.
    pub rows_scored: usize,
    /// Rows in the errors file.
    pub rows_rejected: usize,
    pub pairs: usize,
    pub accuracy: Option<f64>,
    pub mean_margin: Option<f64>,
    pub median_margin: Option<f64>,
    pub single_responses: usize,
    pub mean_reward: Option<f64>,
    /// Rows scored per second by this invocation (not counting rows resumed from before).
    pub rows_per_second: Option<f64>,
    pub seconds: f64,
}

impl Summary {
    /// Aggregates the output lines at `output` (and counts the lines at `errors`).
    pub fn of_files(output: &Path, errors: &Path) -> Result<Self, DatasetError> {
        let mut margins = Vec::new();
        let mut rewards = Vec::new();
        let mut rows = 0;
        for line in lines(output)? {
            let line = line?;
            let row: ScoredRow =
                serde_json::from_str(&line).map_err(|e| DatasetError::BadFile {
                    path: output.to_path_buf(),
                    reason: format!("not a scored row: {e}"),
                })?;
            rows += 1;
            if let Some(m) = row.margin {
                margins.push(m);
            } else if let Some(r) = row.reward {
                rewards.push(r);
            }
        }
        let rejected = if errors.exists() {
            lines(errors)?.count()
        } else {
            0
        };
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Ok(Self {
            rows_scored: rows,
            rows_rejected: rejected,
            pairs: margins.len(),
            accuracy: (!margins.is_empty()).then(|| {
                margins.iter().filter(|&&m| m > 0.0).count() as f64 / margins.len() as f64
            }),
            mean_margin: mean(&margins),
            median_margin: median(&mut margins),
            single_responses: rewards.len(),
            mean_reward: mean(&rewards),
            rows_per_second: None,
            seconds: 0.0,
        })
    }
}

fn lines(path: &Path) -> Result<impl Iterator<Item = Result<String, DatasetError>>, DatasetError> {
    let owned = path.to_path_buf();
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Io {
        path: owned.clone(),
        source,
    })?;
    Ok(BufReader::new(file)
        .lines()
        .map(move |l| {
            l.map_err(|source| DatasetError::Io {
                path: owned.clone(),
                source,
            })
        })
        .filter(|l| !matches!(l, Ok(s) if s.trim().is_empty())))
}

/// The median of `v` (the mean of the middle two for an even count; `None` for none),
/// sorting `v` in place. The codebase's one median: `bench::stats` quotes it too.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
