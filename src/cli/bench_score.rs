//! `tpo bench score` flags: parsed here, run by [`tpo_engine::bench::score`], its table
//! printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::bench::score::ScoreBenchOptions;
use tpo_engine::bench::BenchError;
use tpo_engine::reward;

#[derive(Debug, clap::Args)]
pub struct ScoreBenchArgs {
    /// Reward model: judge, similarity, or a folder (the baseline supports the embedded
    /// judge and similarity folders).
    #[arg(long, default_value = "judge")]
    reward_model: String,
    /// The model the Python loop runs [default: --reward-model]; e.g. `--reward-model
    /// judge-int8 --baseline-model judge` against the float32 reference way.
    #[arg(long, value_name = "NAME|DIR")]
    baseline_model: Option<String>,
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

pub fn run(args: ScoreBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let options = ScoreBenchOptions {
        reward_model: args.reward_model,
        baseline_model: args.baseline_model,
        input: args.input,
        pairs: args.pairs,
        threads: args.threads,
        rm_batch_tokens: args.rm_batch_tokens,
    };
    super::advice::report((|| -> Result<ExitCode, BenchError> {
        let report = tpo_engine::bench::score::run(&options)?;
        print!("{}", report.table());
        if let Some(path) = &args.json {
            report.write_json(path)?;
        }
        Ok(ExitCode::SUCCESS)
    })())
}
