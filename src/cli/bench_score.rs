//! `tpo bench score`: pairs scored per second by `tpo score`'s job versus a batch-size-1
//! Python onnxruntime loop over the same reward model and rows (the way the TPO reference
//! scores), in one run, with the two sets of scores compared.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use serde_json::{json, Value};

use tpo_engine::dataset::{Columns, DatasetError, ScoreJob, Scorers, Shard};
use tpo_engine::reward::{self, RewardOptions};
use tpo_engine::runtime::SessionOptions;

#[derive(Debug, clap::Args)]
pub struct ScoreBenchArgs {
    /// Reward model: judge, similarity, or a folder (the baseline supports the embedded
    /// judge and similarity folders).
    #[arg(long, default_value = "judge")]
    reward_model: String,
    /// Preference pairs (JSONL with prompt/chosen/rejected[/reference]).
    #[arg(long, default_value = "data/alpaca_eval/pairs.jsonl")]
    input: PathBuf,
    /// Pairs to score (the first N of the input).
    #[arg(long, default_value_t = 24)]
    pairs: usize,
    /// ONNX Runtime intra-op threads, the same for both sides (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Padded tokens per reward-model batch on our side.
    #[arg(long, default_value_t = reward::DEFAULT_BATCH_TOKENS)]
    rm_batch_tokens: usize,
    /// Write the result as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn bench_err(reason: String) -> tpo_engine::Error {
    DatasetError::Options(reason).into()
}

/// A file of the project (the venv's Python, the baseline script), if it is there.
fn project_file(rel: &str) -> Option<PathBuf> {
    Some(tpo_engine::paths::project_path(rel)).filter(|p| p.is_file())
}

/// `(id, chosen, rejected)` of each row of a scored JSONL file that has both rewards (a
/// row a side refused, e.g. too long for the model, has none).
fn read_scores(path: &Path) -> Result<Vec<(String, f64, f64)>, tpo_engine::Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bench_err(format!("reading {}: {e}", path.display())))?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bench_err(format!("{}: {e}", path.display())))?;
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        if let (Some(c), Some(r)) = (f("chosen_reward"), f("rejected_reward")) {
            rows.push((v["id"].to_string(), c, r));
        }
    }
    Ok(rows)
}

pub fn run(args: ScoreBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let python = project_file(".venv/bin/python")
        .ok_or_else(|| bench_err("no .venv/bin/python: run `make setup`".into()))?;
    let script = project_file("benches/score_python_baseline.py")
        .ok_or_else(|| bench_err("benches/score_python_baseline.py not found".into()))?;
    let source = tpo_engine::paths::reward_source(&args.reward_model);
    let dir = source.dir.clone();
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
        .arg(&dir)
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
    tpo_engine::paths::init_runtime()?;
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
    println!("| side | pairs | seconds | pairs/s |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| Python onnxruntime, batch 1 | {pairs} | {:.2} | {baseline_pps:.2} |",
        baseline["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    println!("| tpo score | {pairs} | {seconds:.2} | {ours_pps:.2} |");
    println!(
        "speed-up {:.2}x; max |score difference| {max_diff:.2e}",
        ours_pps / baseline_pps
    );
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result).unwrap_or_default();
        std::fs::write(path, text + "\n")
            .map_err(|e| bench_err(format!("{}: {e}", path.display())))?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(ExitCode::SUCCESS)
}
