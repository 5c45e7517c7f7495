//! The scoring job behind `tpo score`: rows of one shard, in chunks, through the reward
//! model and the implicit-reward engines, into a resumable output.
//!
//! Each output line is `{"id", "line", "chosen_reward", "rejected_reward", "margin", ...}`
//! for a pair or `{"id", "line", "reward", ...}` for a single response; with reference
//! models, an `implicit` object adds the log-probs, each reference's DPO reward and the
//! MRPO combination. The headline reward is the reward model's; without one, MRPO's when
//! it is on, else the first reference's DPO reward. A row that cannot be scored (a NaN or
//! infinite score included) goes to the errors file as `{"line", "id", "error"}` and the
//! job goes on; a scorer that answers more or fewer scores than it was asked for fails it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::checkpoint::{progress_path, Checkpoint};
use super::reader::RowReader;
use super::row::{Columns, DataRow, Responses};
use super::scored::{Implicit, MrpoScores, ReferenceScores, ScoredRow, Side};
use super::shard::Shard;
use super::summary::Summary;
use super::{DatasetError, ResumeRefusal};
use crate::engine::EngineError;
use crate::reward::implicit::{ImplicitModels, ResponseLogprobs};
use crate::reward::{RewardInput, RewardModel};

/// What scores the rows.
pub struct Scorers {
    pub reward: Option<Box<dyn RewardModel>>,
    pub implicit: Option<ImplicitModels>,
}

/// Rows per chunk at most: the most work a crash can lose, and the rows held in memory at
/// once.
pub const MAX_CHUNK_ROWS: usize = 1024;

/// One `tpo score` run.
pub struct ScoreJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub errors: PathBuf,
    pub summary: PathBuf,
    pub columns: Columns,
    pub shard: Shard,
    /// Rows per committed chunk (the most work a crash can lose), 1 to [`MAX_CHUNK_ROWS`].
    pub chunk_rows: usize,
    pub overwrite: bool,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct ScoreOutcome {
    pub summary: Summary,
    /// Rows of this shard.
    pub shard_rows: usize,
    /// Rows already done when this invocation started.
    pub resumed_from: usize,
}

impl ScoreJob {
    /// Runs (or resumes) the job; `progress(done, total)` is called after each chunk.
    pub fn run(
        &self,
        scorers: &Scorers,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<ScoreOutcome, DatasetError> {
        if scorers.reward.is_none() && scorers.implicit.is_none() {
            return Err(DatasetError::Options(
                "nothing to score with: give a reward model or reference models".into(),
            ));
        }
        self.validate()?;
        let started = Instant::now();
        let total_rows = RowReader::count(&self.input)?;
        let range = self.shard.range(total_rows);
        let (mut checkpoint, resume) = Checkpoint::open(
            &self.output,
            &self.errors,
            self.identity(scorers)?,
            self.overwrite,
        )?;
        let shard_rows = range.len();
        if resume.rows_done > shard_rows {
            return Err(DatasetError::Resume {
                output: self.output.clone(),
                reason: ResumeRefusal::PastShard {
                    done: resume.rows_done,
                    shard_rows,
                },
            });
        }
        progress(resume.rows_done, shard_rows);
        let mut done = resume.rows_done;
        if !resume.finished {
            let mut rows = RowReader::open(&self.input)?
                .skip(range.start + done)
                .take(shard_rows - done);
            loop {
                let chunk: Vec<_> = rows
                    .by_ref()
                    .take(self.chunk_rows)
                    .collect::<Result<_, _>>()?;
                if chunk.is_empty() {
                    break;
                }
                let parsed: Vec<(usize, Result<DataRow, String>)> = chunk
                    .into_iter()
                    .map(|raw| {
                        let row = raw
                            .value
                            .and_then(|v| DataRow::parse(&v, raw.line, &self.columns));
                        (raw.line, row)
                    })
                    .collect();
                let (out, err) = score_chunk(scorers, &parsed)?;
                checkpoint.commit(&out, &err, parsed.len())?;
                done += parsed.len();
                progress(done, shard_rows);
            }
            checkpoint.finish()?;
        }
        let mut summary = Summary::of_files(&self.output, &self.errors)?;
        summary.seconds = started.elapsed().as_secs_f64();
        let fresh = done - resume.rows_done;
        if fresh > 0 && summary.seconds > 0.0 {
            summary.rows_per_second = Some(fresh as f64 / summary.seconds);
        }
        write_summary(&self.summary, &summary)?;
        Ok(ScoreOutcome {
            summary,
            shard_rows,
            resumed_from: resume.rows_done,
        })
    }

    /// Checks the options before anything is opened for writing (`run` does it first; a
    /// caller may call it earlier, before loading models): the chunk size is within bounds,
    /// and no file the job writes is the input, however spelled (`./`, `..`, symlinks).
    pub fn validate(&self) -> Result<(), DatasetError> {
        if !(1..=MAX_CHUNK_ROWS).contains(&self.chunk_rows) {
            return Err(DatasetError::ChunkRows {
                value: self.chunk_rows,
                max: MAX_CHUNK_ROWS,
            });
        }
        let input = std::fs::canonicalize(&self.input).map_err(|source| DatasetError::Io {
            path: self.input.clone(),
            source,
        })?;
        let progress = progress_path(&self.output);
        let written = [
            ("output", &self.output),
            ("errors file", &self.errors),
            ("summary", &self.summary),
            ("progress record", &progress),
        ];
        for (what, path) in written {
            // A path that does not resolve names no existing file, so not the input.
            if std::fs::canonicalize(path).is_ok_and(|p| p == input) {
                return Err(DatasetError::SameFile {
                    what,
                    path: path.clone(),
                    input: self.input.clone(),
                });
            }
        }
        Ok(())
    }

    /// What makes two invocations the same run: a resume must not mix outputs of different
    /// inputs, shards, columns or models.
    fn identity(&self, scorers: &Scorers) -> Result<Map<String, Value>, DatasetError> {
        let meta = std::fs::metadata(&self.input).map_err(|source| DatasetError::Io {
            path: self.input.clone(),
            source,
        })?;
        let input = std::fs::canonicalize(&self.input).unwrap_or_else(|_| self.input.clone());
        let implicit = scorers.implicit.as_ref().map(|m| {
            json!({
                "policy": m.policy.name,
                "references": m.references.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
                "beta": m.beta,
                "mrpo": m.mrpo,
                "eta": m.eta,
            })
        });
        let value = json!({
            "input": input.display().to_string(),
            "input_bytes": meta.len(),
            "shard": self.shard.to_string(),
            "columns": self.columns,
            "reward_model": scorers.reward.as_ref().map(|r| r.name().to_string()),
            "implicit": implicit,
        });
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(DatasetError::Internal(
                "run identity is not an object".into(),
            )),
        }
    }
}

fn write_summary(path: &Path, summary: &Summary) -> Result<(), DatasetError> {
    let text =
        serde_json::to_string_pretty(summary).map_err(|e| DatasetError::Internal(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Engine failures that concern one row (it does not fit, it is empty) rather than the run.
fn is_row_error(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::SequenceTooLong { .. }
            | EngineError::EmptyPrompt
            | EngineError::EmptyContinuation
            | EngineError::InvalidToken { .. }
            | EngineError::Model(_)
    )
}

/// One response to score: its row's index in the chunk, prompt, response and reference.
type Item<'a> = (usize, &'a str, &'a str, Option<&'a str>);

/// Every response of every good row, in order.
fn items_of(rows: &[(usize, Result<DataRow, String>)]) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    for (i, (_, row)) in rows.iter().enumerate() {
        if let Ok(row) = row {
            let reference = row.reference.as_deref();
            for response in row.responses.texts() {
                items.push((i, row.prompt.as_str(), response, reference));
            }
        }
    }
    items
}

/// What the scorers answered for a chunk's items: one entry per item, in order.
struct ChunkScores {
    rm: Option<Vec<Result<f32, String>>>,
    logprobs: Option<Vec<Result<ResponseLogprobs, String>>>,
}

/// `scores` when there is one per item; a scorer that answers more or fewer would shift
/// every later row's scores onto the wrong row.
fn one_per_item<T>(
    scorer: &'static str,
    expected: usize,
    scores: Vec<T>,
) -> Result<Vec<T>, DatasetError> {
    if scores.len() == expected {
        Ok(scores)
    } else {
        Err(DatasetError::ScoreCount {
            scorer,
            expected,
            got: scores.len(),
        })
    }
}

impl ChunkScores {
    fn of(scorers: &Scorers, items: &[Item<'_>]) -> Result<Self, DatasetError> {
        let rm = match &scorers.reward {
            Some(rm) => {
                let inputs: Vec<RewardInput<'_>> = items
                    .iter()
                    .map(|&(_, prompt, response, reference)| RewardInput {
                        prompt,
                        response,
                        reference,
                    })
                    .collect();
                let scores = one_per_item("reward model", items.len(), rm.score(&inputs)?)?;
                Some(
                    scores
                        .into_iter()
                        .map(|r| r.map_err(|e| e.to_string()))
                        .collect(),
                )
            }
            None => None,
        };
        let logprobs = match &scorers.implicit {
            Some(models) => {
                let pairs: Vec<(&str, &str)> = items.iter().map(|&(_, p, r, _)| (p, r)).collect();
                let all = one_per_item(
                    "implicit-reward models",
                    items.len(),
                    models.logprobs(&pairs),
                )?;
                let mut out = Vec::with_capacity(all.len());
                for r in all {
                    out.push(match r {
                        Ok(l) => Ok(l),
                        Err(e) if is_row_error(&e) => Err(e.to_string()),
                        Err(e) => return Err(e.into()),
                    });
                }
                Some(out)
            }
            None => None,
        };
        Ok(Self { rm, logprobs })
    }
}

/// `value` when finite; otherwise why the row cannot be scored, naming who returned it.
fn finite(value: f64, who: &str) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{who} returned {value}"))
    }
}

/// The reward model's finite scores of one row's responses.
fn rm_rewards(scores: &[Result<f32, String>]) -> Result<Vec<f64>, String> {
    scores
        .iter()
        .map(|s| finite(f64::from(s.clone()?), "the reward model"))
        .collect()
}

/// One row's log-probs, each finite (every implicit reward is computed from them).
fn finite_logprobs(
    logprobs: &[Result<ResponseLogprobs, String>],
    models: Option<&ImplicitModels>,
) -> Result<Vec<ResponseLogprobs>, String> {
    let mut out = Vec::with_capacity(logprobs.len());
    for l in logprobs {
        let l = l.clone()?;
        finite(l.policy, "the policy model")?;
        for (k, &r) in l.references.iter().enumerate() {
            let name = models
                .and_then(|m| m.references.get(k))
                .map_or_else(|| k.to_string(), |m| m.name.clone());
            finite(r, &format!("reference model {name}"))?;
        }
        out.push(l);
    }
    Ok(out)
}

/// Scores one chunk; returns the output and errors lines to append.
fn score_chunk(
    scorers: &Scorers,
    rows: &[(usize, Result<DataRow, String>)],
) -> Result<(Vec<u8>, Vec<u8>), DatasetError> {
    let items = items_of(rows);
    let scores = ChunkScores::of(scorers, &items)?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut next = 0;
    for (line, row) in rows {
        let result = row.as_ref().map_err(Clone::clone).and_then(|row| {
            let n = row.responses.texts().len();
            let at = next;
            next += n;
            // In bounds: `ChunkScores::of` checked one score per response of the good rows.
            let rm = scores
                .rm
                .as_ref()
                .map(|s| rm_rewards(&s[at..at + n]))
                .transpose()?;
            let lp = scores
                .logprobs
                .as_ref()
                .map(|s| finite_logprobs(&s[at..at + n], scorers.implicit.as_ref()))
                .transpose()?;
            Ok(scored_row(row, rm, lp, scorers.implicit.as_ref()))
        });
        let (target, value) = match result {
            Ok(v) => (
                &mut out,
                serde_json::to_value(v).map_err(|e| DatasetError::Internal(e.to_string()))?,
            ),
            Err(reason) => {
                let id = row.as_ref().map(|r| r.id.clone()).unwrap_or(Value::Null);
                (&mut err, json!({"line": line, "id": id, "error": reason}))
            }
        };
        serde_json::to_writer(&mut *target, &value)
            .map_err(|e| DatasetError::Internal(e.to_string()))?;
        target.push(b'\n');
    }
    Ok((out, err))
}

/// The output line of a scored row.
fn scored_row(
    row: &DataRow,
    rm: Option<Vec<f64>>,
    logprobs: Option<Vec<ResponseLogprobs>>,
    models: Option<&ImplicitModels>,
) -> ScoredRow {
    let mut out = ScoredRow {
        id: row.id.clone(),
        line: row.line,
        ..ScoredRow::default()
    };
    let pair = matches!(row.responses, Responses::Pair { .. });
    let side = |i: usize| match (pair, i) {
        (false, _) => Side::Single,
        (true, 0) => Side::Chosen,
        (true, _) => Side::Rejected,
    };
    // Headline rewards: the RM's, else MRPO's, else the first reference's DPO reward.
    let mut headline: Option<Vec<f64>> = rm;
    if let (Some(lp), Some(models)) = (&logprobs, models) {
        let mut implicit = Implicit::default();
        for (i, l) in lp.iter().enumerate() {
            implicit.policy.set(side(i), l.policy);
        }
        for (k, r) in models.references.iter().enumerate() {
            let mut o = ReferenceScores {
                model: r.name.clone(),
                ..ReferenceScores::default()
            };
            let rewards: Vec<f64> = lp.iter().map(|l| models.dpo(l, k)).collect();
            for (i, l) in lp.iter().enumerate() {
                o.set(side(i), l.references[k], rewards[i]);
            }
            if pair {
                o.margin = Some(rewards[0] - rewards[1]);
            }
            if headline.is_none() && k == 0 && !models.mrpo {
                headline = Some(rewards);
            }
            implicit.references.push(o);
        }
        if let Some(m) = models.mrpo(&lp[0], lp.get(1)) {
            let mut o = MrpoScores {
                alpha: m.alpha,
                ..MrpoScores::default()
            };
            if pair {
                o.chosen_reward = Some(m.chosen);
            } else {
                o.reward = Some(m.chosen);
            }
            if let Some(r) = m.rejected {
                o.rejected_reward = Some(r);
                o.margin = Some(m.chosen - r);
            }
            if headline.is_none() {
                headline = Some([Some(m.chosen), m.rejected].into_iter().flatten().collect());
            }
            implicit.mrpo = Some(o);
        }
        out.implicit = Some(implicit);
    }
    if let Some(h) = headline {
        if pair && h.len() == 2 {
            out.chosen_reward = Some(h[0]);
            out.rejected_reward = Some(h[1]);
            out.margin = Some(h[0] - h[1]);
        } else if let Some(&r) = h.first() {
            out.reward = Some(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::{RewardError, RowError};

    /// A fake reward model (no real model returns NaN or the wrong number of scores on
    /// demand): every call answers the scores it was built with, whatever the inputs.
    struct FakeRm(Vec<f32>);

    impl RewardModel for FakeRm {
        fn name(&self) -> &str {
            "fake"
        }

        fn score(&self, _: &[RewardInput<'_>]) -> Result<Vec<Result<f32, RowError>>, RewardError> {
            Ok(self.0.iter().map(|&s| Ok(s)).collect())
        }
    }

    fn pair(line: usize) -> (usize, Result<DataRow, String>) {
        let row = DataRow {
            id: json!(format!("r{line}")),
            line,
            prompt: "q".into(),
            responses: Responses::Pair {
                chosen: "c".into(),
                rejected: "r".into(),
            },
            reference: None,
        };
        (line, Ok(row))
    }

    type Lines = (Vec<Value>, Vec<Value>);

    /// The output and errors lines of one chunk scored by a [`FakeRm`] answering `scores`.
    fn score_with(
        scores: Vec<f32>,
        rows: &[(usize, Result<DataRow, String>)],
    ) -> Result<Lines, DatasetError> {
        let scorers = Scorers {
            reward: Some(Box::new(FakeRm(scores))),
            implicit: None,
        };
        let (out, err) = score_chunk(&scorers, rows)?;
        let parse = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        Ok((parse(&out), parse(&err)))
    }

    #[test]
    fn a_non_finite_reward_is_a_row_error_naming_the_value() {
        let rows = [pair(1), pair(2), pair(3), pair(4)];
        let scores = vec![
            1.0,
            0.5,
            f32::NAN,
            0.0,
            2.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1.0,
        ];
        let (out, err) = score_with(scores, &rows).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0]["line"], 1);
        assert_eq!(out[0]["margin"], 0.5);
        let reasons: Vec<(u64, &str)> = err
            .iter()
            .map(|e| (e["line"].as_u64().unwrap(), e["error"].as_str().unwrap()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "the reward model returned NaN"),
                (3, "the reward model returned inf"),
                (4, "the reward model returned -inf"),
            ]
        );
    }

    #[test]
    fn a_reward_model_returning_too_few_or_too_many_scores_fails_the_chunk() {
        for scores in [vec![1.0; 3], vec![1.0; 5]] {
            let got = scores.len();
            let e = score_with(scores, &[pair(1), pair(2)])
                .err()
                .unwrap_or_else(|| panic!("{got} scores for 4 inputs were accepted"));
            assert!(
                e.to_string()
                    .contains(&format!("returned {got} scores for 4 inputs")),
                "{e}"
            );
        }
    }
}
