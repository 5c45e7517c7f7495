//! The scoring job behind `tpo score`: rows of one shard, in chunks, through the reward
//! model and the implicit-reward engines, into a resumable output.
//!
//! Each output line is `{"id", "line", "chosen_reward", "rejected_reward", "margin", ...}`
//! for a pair or `{"id", "line", "reward", ...}` for a single response; with reference
//! models, an `implicit` object adds the log-probs, each reference's DPO reward and the
//! MRPO combination. The headline reward is the reward model's; without one, MRPO's when
//! it is on, else the first reference's DPO reward. A row that cannot be scored goes to the
//! errors file as `{"line", "id", "error"}` and the job goes on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::checkpoint::Checkpoint;
use super::reader::RowReader;
use super::row::{Columns, DataRow, Responses};
use super::shard::Shard;
use super::summary::Summary;
use super::DatasetError;
use crate::engine::EngineError;
use crate::reward::implicit::{ImplicitModels, ResponseLogprobs};
use crate::reward::{RewardInput, RewardModel};

/// What scores the rows.
pub struct Scorers {
    pub reward: Option<Box<dyn RewardModel>>,
    pub implicit: Option<ImplicitModels>,
}

/// One `tpo score` run.
pub struct ScoreJob {
    pub input: PathBuf,
    pub output: PathBuf,
    pub errors: PathBuf,
    pub summary: PathBuf,
    pub columns: Columns,
    pub shard: Shard,
    /// Rows per committed chunk (the most work a crash can lose).
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
        if self.chunk_rows == 0 {
            return Err(DatasetError::Options(
                "--chunk-rows must be at least 1".into(),
            ));
        }
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
                reason: format!(
                    "the progress record says {} rows are done but the shard has {shard_rows}",
                    resume.rows_done
                ),
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

/// Scores one chunk; returns the output and errors lines to append.
fn score_chunk(
    scorers: &Scorers,
    rows: &[(usize, Result<DataRow, String>)],
) -> Result<(Vec<u8>, Vec<u8>), DatasetError> {
    // Every response of every good row, in order: (row index, prompt, response, reference).
    let mut items: Vec<(usize, &str, &str, Option<&str>)> = Vec::new();
    for (i, (_, row)) in rows.iter().enumerate() {
        if let Ok(row) = row {
            let reference = row.reference.as_deref();
            match &row.responses {
                Responses::Pair { chosen, rejected } => {
                    items.push((i, &row.prompt, chosen, reference));
                    items.push((i, &row.prompt, rejected, reference));
                }
                Responses::Single { response } => items.push((i, &row.prompt, response, reference)),
            }
        }
    }
    let rm_scores: Option<Vec<Result<f32, String>>> = match &scorers.reward {
        Some(rm) => {
            let inputs: Vec<RewardInput<'_>> = items
                .iter()
                .map(|&(_, prompt, response, reference)| RewardInput {
                    prompt,
                    response,
                    reference,
                })
                .collect();
            Some(
                rm.score(&inputs)?
                    .into_iter()
                    .map(|r| r.map_err(|e| e.to_string()))
                    .collect(),
            )
        }
        None => None,
    };
    let logprobs: Option<Vec<Result<ResponseLogprobs, String>>> = match &scorers.implicit {
        Some(models) => {
            let pairs: Vec<(&str, &str)> = items.iter().map(|&(_, p, r, _)| (p, r)).collect();
            let mut out = Vec::with_capacity(pairs.len());
            for r in models.logprobs(&pairs) {
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

    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut next = 0;
    for (line, row) in rows {
        let result = row.as_ref().map_err(Clone::clone).and_then(|row| {
            let n = match row.responses {
                Responses::Pair { .. } => 2,
                Responses::Single { .. } => 1,
            };
            let at = next;
            next += n;
            let rm: Option<Vec<f32>> = rm_scores
                .as_ref()
                .map(|s| s[at..at + n].iter().cloned().collect::<Result<_, _>>())
                .transpose()?;
            let lp: Option<Vec<ResponseLogprobs>> = logprobs
                .as_ref()
                .map(|s| s[at..at + n].iter().cloned().collect::<Result<_, _>>())
                .transpose()?;
            Ok(scored_row(row, rm, lp, scorers.implicit.as_ref()))
        });
        let (target, value) = match result {
            Ok(v) => (&mut out, v),
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

/// The output object of a scored row.
fn scored_row(
    row: &DataRow,
    rm: Option<Vec<f32>>,
    logprobs: Option<Vec<ResponseLogprobs>>,
    models: Option<&ImplicitModels>,
) -> Value {
    let mut obj = Map::new();
    obj.insert("id".into(), row.id.clone());
    obj.insert("line".into(), json!(row.line));
    let pair = matches!(row.responses, Responses::Pair { .. });
    // Headline rewards: the RM's, else MRPO's, else the first reference's DPO reward.
    let mut headline: Option<Vec<f64>> = rm.map(|v| v.into_iter().map(f64::from).collect());
    if let (Some(lp), Some(models)) = (&logprobs, models) {
        let mut implicit = Map::new();
        let names = ["chosen", "rejected"];
        let label = |i: usize, what: &str| {
            if pair {
                format!("{}_{what}", names[i])
            } else {
                what.to_string()
            }
        };
        let mut policy = Map::new();
        for (i, l) in lp.iter().enumerate() {
            policy.insert(label(i, "logprob"), json!(l.policy));
        }
        implicit.insert("policy".into(), Value::Object(policy));
        let mut references = Vec::new();
        for (k, r) in models.references.iter().enumerate() {
            let mut o = Map::new();
            o.insert("model".into(), json!(r.name));
            let rewards: Vec<f64> = lp.iter().map(|l| models.dpo(l, k)).collect();
            for (i, l) in lp.iter().enumerate() {
                o.insert(label(i, "logprob"), json!(l.references[k]));
                o.insert(label(i, "reward"), json!(rewards[i]));
            }
            if pair {
                o.insert("margin".into(), json!(rewards[0] - rewards[1]));
            }
            if headline.is_none() && k == 0 && !models.mrpo {
                headline = Some(rewards);
            }
            references.push(Value::Object(o));
        }
        implicit.insert("references".into(), Value::Array(references));
        if let Some(m) = models.mrpo(&lp[0], lp.get(1)) {
            let mut o = Map::new();
            o.insert("alpha".into(), json!(m.alpha));
            o.insert(label(0, "reward"), json!(m.chosen));
            if let Some(r) = m.rejected {
                o.insert("rejected_reward".into(), json!(r));
                o.insert("margin".into(), json!(m.chosen - r));
            }
            if headline.is_none() {
                headline = Some([Some(m.chosen), m.rejected].into_iter().flatten().collect());
            }
            implicit.insert("mrpo".into(), Value::Object(o));
        }
        obj.insert("implicit".into(), Value::Object(implicit));
    }
    if let Some(h) = headline {
        if pair && h.len() == 2 {
            obj.insert("chosen_reward".into(), json!(h[0]));
            obj.insert("rejected_reward".into(), json!(h[1]));
            obj.insert("margin".into(), json!(h[0] - h[1]));
        } else if let Some(&r) = h.first() {
            obj.insert("reward".into(), json!(r));
        }
    }
    Value::Object(obj)
}
