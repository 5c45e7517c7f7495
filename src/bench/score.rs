//! `tpo bench score`: pairs scored per second by `tpo score`'s job versus a batch-size-1
//! Python onnxruntime loop over the same reward model and rows (the way the TPO reference
//! scores), in one run, with the two sets of scores compared.
//! Not here: the flags (`src/cli/bench.rs`) and printing the table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use super::BenchError;
use crate::dataset::{Columns, DatasetError, ScoreJob, ScoredRow, Scorers, Shard};
use crate::reward::{self, RewardOptions};
use crate::runtime::SessionOptions;

/// What `tpo bench score` runs (its flags, parsed).
#[derive(Debug, Clone)]
pub struct ScoreBenchOptions {
    /// Reward model: judge, similarity, or a folder (the baseline supports the embedded
    /// judge and similarity folders).
    pub reward_model: String,
    /// The model the Python loop runs, when it is not `reward_model` (e.g. `judge` against
    /// our `judge-int8`: the reference way runs float32).
    pub baseline_model: Option<String>,
    /// Preference pairs (JSONL with prompt/chosen/rejected[/reference]).
    pub input: PathBuf,
    /// Pairs to score (the first N of the input).
    pub pairs: usize,
    /// ONNX Runtime intra-op threads, the same for both sides (0 = one per physical core).
    pub threads: usize,
    /// Padded tokens per reward-model batch on our side.
    pub rm_batch_tokens: usize,
}

fn bench_err(reason: String) -> BenchError {
    BenchError::Lib(DatasetError::Options(reason).into())
}

/// A file of the project (the venv's Python, the baseline script), if it is there.
fn project_file(rel: &str) -> Option<PathBuf> {
    Some(crate::paths::project_path(rel)).filter(|p| p.is_file())
}

/// `(id, chosen, rejected)` of each row of a scored JSONL file that has both rewards (a
/// row a side refused, e.g. too long for the model, has none).
fn read_scores(path: &Path) -> Result<Vec<(String, f64, f64)>, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bench_err(format!("reading {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: ScoredRow = serde_json::from_str(line)
            .map_err(|e| bench_err(format!("{}: {e}", path.display())))?;
        if let (Some(c), Some(r)) = (row.chosen_reward, row.rejected_reward) {
            rows.push((row.id.to_string(), c, r));
        }
    }
    Ok(rows)
}

/// What a run measured: the caller prints [`Self::table`] and writes [`Self::json`].
pub struct ScoreBenchReport {
    /// What each side ran (`--reward-model`, `--baseline-model`).
    pub reward_model: String,
    pub baseline_model: String,
    pub pairs: usize,
    pub seconds: f64,
    pub pairs_per_s: f64,
    pub baseline_seconds: f64,
    pub baseline_pairs_per_s: f64,
    pub max_abs_score_diff: f64,
    /// The settings and the numbers, as `--json` writes them.
    pub json: Value,
}

impl ScoreBenchReport {
    /// The Markdown table and the speed-up line.
    pub fn table(&self) -> String {
        let (pairs, seconds, ours_pps) = (self.pairs, self.seconds, self.pairs_per_s);
        let (baseline_pps, max_diff) = (self.baseline_pairs_per_s, self.max_abs_score_diff);
        format!(
            "| side | pairs | seconds | pairs/s |\n| --- | ---: | ---: | ---: |\n\
             | Python onnxruntime, batch 1 ({}) | {pairs} | {:.2} | {baseline_pps:.2} |\n\
             | tpo score ({}) | {pairs} | {seconds:.2} | {ours_pps:.2} |\n\
             speed-up {:.2}x; max |score difference| {max_diff:.2e}\n",
            self.baseline_model,
            self.baseline_seconds,
            self.reward_model,
            ours_pps / baseline_pps
        )
    }

    /// Writes [`Self::json`] (pretty, with a final newline) to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), BenchError> {
        super::write_json(path, &self.json)
    }
}

/// Runs both sides over the first pairs of the input and compares their scores.
pub fn run(args: &ScoreBenchOptions) -> Result<ScoreBenchReport, BenchError> {
    let python = project_file(".venv/bin/python")
        .ok_or_else(|| bench_err("no .venv/bin/python: run `make setup`".into()))?;
    let script = project_file("benches/score_python_baseline.py")
        .ok_or_else(|| bench_err("benches/score_python_baseline.py not found".into()))?;
    let source = crate::paths::reward_source(&args.reward_model);
    let baseline_model = args.baseline_model.as_deref().unwrap_or(&args.reward_model);
    let baseline_source = crate::paths::reward_source(baseline_model);
    if baseline_source.metric != source.metric {
        return Err(bench_err(format!(
            "--baseline-model {baseline_model} scores with another metric than {}",
            args.reward_model
        )));
    }
    if source.metric == Some(reward::SimilarityMetric::Bertscore) {
        // The baseline scores with the folder's own metric (cosine for the embedded encoder).
        return Err(bench_err(
            "the Python baseline scores the embedded encoder with cosine only: use \
             --reward-model similarity"
                .into(),
        ));
    }
    let work = std::env::temp_dir().join(format!("tpo-bench-score-{}", std::process::id()));
    std::fs::create_dir_all(&work).map_err(|e| bench_err(format!("{}: {e}", work.display())))?;

    // The first N pairs, so both sides read the very same rows.
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| bench_err(format!("reading {}: {e}", args.input.display())))?;
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(args.pairs)
        .collect();
    if rows.is_empty() {
        return Err(bench_err(format!("{} has no rows", args.input.display())));
    }
    let input = work.join("pairs.jsonl");
    std::fs::write(&input, rows.join("\n") + "\n")
        .map_err(|e| bench_err(format!("{}: {e}", input.display())))?;

    // Baseline: batch 1, one session.run per text, timed inside Python after loading.
    let baseline_out = work.join("baseline.jsonl");
    let out = Command::new(&python)
        .arg(&script)
        .arg("--model-dir")
        .arg(&baseline_source.dir)
        .arg("--input")
        .arg(&input)
        .arg("--threads")
        .arg(args.threads.to_string())
        .arg("--output")
        .arg(&baseline_out)
        .output()
        .map_err(|e| bench_err(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(bench_err(format!(
            "the Python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let baseline: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| bench_err(format!("the baseline printed no result: {stdout}")))?;
    let baseline_pps = baseline["pairs_per_s"]
        .as_f64()
        .ok_or_else(|| bench_err(format!("no pairs_per_s in {baseline}")))?;

    // Ours: the `tpo score` job, timed after the model is loaded.
    crate::paths::init_runtime()?;
    let rm = reward::load(
        &source,
        RewardOptions {
            session: SessionOptions {
                threads: args.threads,
                ..SessionOptions::default()
            },
            batch_tokens: args.rm_batch_tokens,
            ..RewardOptions::default()
        },
    )?;
    let ours_out = work.join("ours.jsonl");
    let job = ScoreJob {
        input: input.clone(),
        output: ours_out.clone(),
        errors: work.join("ours.errors.jsonl"),
        summary: work.join("ours.summary.json"),
        columns: Columns::default(),
        shard: Shard::WHOLE,
        chunk_rows: 64,
        overwrite: true,
    };
    let started = Instant::now();
    let outcome = job.run(
        &Scorers {
            reward: Some(rm),
            implicit: None,
        },
        |_, _| {},
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let pairs = outcome.summary.rows_scored;
    let ours_pps = pairs as f64 / seconds;

    // Same rows, same scores?
    let (a, b) = (read_scores(&ours_out)?, read_scores(&baseline_out)?);
    let ids = |rows: &[(String, f64, f64)]| rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>();
    if ids(&a) != ids(&b) {
        return Err(bench_err(format!(
            "the two sides scored different rows ({} vs {})",
            a.len(),
            b.len()
        )));
    }
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|((_, c1, r1), (_, c2, r2))| (c1 - c2).abs().max((r1 - r2).abs()))
        .fold(0f64, f64::max);

    let result = json!({
        "reward_model": args.reward_model,
        "baseline_model": baseline_model,
        "pairs": pairs,
        "threads": args.threads,
        "rm_batch_tokens": args.rm_batch_tokens,
        "tpo_seconds": seconds,
        "tpo_pairs_per_s": ours_pps,
        "python_batch1_seconds": baseline["seconds"],
        "python_batch1_pairs_per_s": baseline_pps,
        "speedup": ours_pps / baseline_pps,
        "max_abs_score_diff": max_diff,
        "tpo_version": env!("CARGO_PKG_VERSION"),
        "commit": env!("TPO_GIT_COMMIT"),
    });
    let _ = std::fs::remove_dir_all(&work);
    Ok(ScoreBenchReport {
        reward_model: args.reward_model.clone(),
        baseline_model: baseline_model.to_string(),
        pairs,
        seconds,
        pairs_per_s: ours_pps,
        baseline_seconds: baseline["seconds"].as_f64().unwrap_or(f64::NAN),
        baseline_pairs_per_s: baseline_pps,
        max_abs_score_diff: max_diff,
        json: result,
    })
}
