//! `tpo bench search` flags: parsed and checked here, the models opened through
//! `SearchFlags` as `tpo search` does, the bench run by [`tpo_engine::bench::search`] and its
//! report printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::bench::search::{Models, SearchBenchOptions};
use tpo_engine::bench::BenchError;

use super::search_flags::SearchFlags;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct SearchBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Searches per phase (the first N rows of --input).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    searches: u32,
    #[command(flatten)]
    search: SearchFlags,
    /// JSONL queries: one object per line with "prompt" and "reference".
    #[arg(
        long,
        default_value = "data/alpaca_eval/pairs.jsonl",
        value_name = "FILE"
    )]
    input: PathBuf,
    /// Searches of the sequential phases: the first K of the N [default: N]. Ratios are of
    /// searches/s, so a shorter one-at-a-time phase measures the same rate sooner.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    sequential_searches: Option<u32>,
    /// Add a third phase, the reference way of running searches: one at a time on a second
    /// engine without the prefix cache, its reward model at batch size 1 (same weights,
    /// float32 as ours). Its searches/s is compared with the concurrent phase's.
    #[arg(long)]
    reference: bool,
    /// Write the result as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: SearchBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let flags = &args.search;
    let params = flags.params()?;
    flags.check_kv_slots(&args.model)?;
    let options = SearchBenchOptions {
        searches: args.searches as usize,
        params,
        reward_model: flags.reward_model.clone(),
        threads: args.model.threads,
        input: args.input.clone(),
        sequential_searches: args.sequential_searches.map(|k| k as usize),
        reference: args.reference,
    };
    let open = |models: Models| match models {
        Models::Ours => flags.open_models(&args.model),
        Models::Reference => {
            let mut reference_model = args.model.clone();
            reference_model.no_prefix_cache = true;
            flags.open_models_batched(&reference_model, 1)
        }
    };
    super::advice::report((|| -> Result<ExitCode, BenchError> {
        let report = tpo_engine::bench::search::run(&options, &open)?;
        print!("{}", report.table());
        if let Some(path) = &args.json {
            report.write_json(path)?;
        }
        eprint!("{}", report.mismatches());
        Ok(if report.failed() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })())
}
