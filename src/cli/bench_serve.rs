//! `tpo bench serve` flags: parsed here, run by [`tpo_engine::bench::serve`], its table
//! printed here. Not the load generator itself (that is the library's).

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::bench::serve::{SearchKind, ServeBenchOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchArg {
    None,
    Tpo,
    Bon,
    Darwin,
}

#[derive(Debug, clap::Args)]
pub struct ServeBenchArgs {
    /// The server's root URL (http only; a trailing /v1 is accepted).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Bearer key sent with every request [default: env TPO_API_KEY; none = no header].
    #[arg(long, env = "TPO_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Model id [default: the first id of GET /v1/models].
    #[arg(long)]
    model: Option<String>,
    /// Closed loop: concurrency levels, comma separated (each keeps C requests in flight).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,4,16,64",
        conflicts_with = "rate"
    )]
    concurrency: Vec<usize>,
    /// Open loop instead: Poisson arrival rates in requests/s, comma separated.
    #[arg(long, value_delimiter = ',')]
    rate: Option<Vec<f64>>,
    /// Requests per level [default: 64 when --duration is not given].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Seconds each level sends for (with --requests: whichever ends first). Requests in
    /// flight at the end still finish and count.
    #[arg(long, value_parser = crate::cli::parse_seconds)]
    duration: Option<f64>,
    /// Search run through the model id suffix (the server's search defaults apply).
    #[arg(long, value_enum, default_value_t = SearchArg::None)]
    search: SearchArg,
    /// max_tokens of each request [default: none sent, the server's default; for a search
    /// it caps every policy call].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: Option<u32>,
    /// temperature of each request [default: none sent, the server's default; 0 = greedy].
    #[arg(long, value_parser = parse_temperature)]
    temperature: Option<f32>,
    /// Prompts: one per line, or JSONL with an "instruction" or "prompt" field; used in
    /// file order, round robin.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "data/alpaca_eval/pairs.jsonl"
    )]
    prompts: PathBuf,
    /// Untimed requests sent one at a time before the first level.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Seconds one request may take, send to [DONE] (then it counts as "timeout").
    #[arg(long, default_value_t = 600.0, value_parser = crate::cli::parse_seconds)]
    timeout: f64,
    /// Seed of the open loop's arrival times.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the report as JSON to this file too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn parse_temperature(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(t) if t.is_finite() && (0.0..=2.0).contains(&t) => Ok(t),
        _ => Err(format!("{s:?} is not a temperature between 0 and 2")),
    }
}

pub fn run(args: ServeBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let options = ServeBenchOptions {
        url: args.url,
        api_key: args.api_key,
        model: args.model,
        concurrency: args.concurrency,
        rate: args.rate,
        requests: args.requests,
        duration: args.duration,
        search: match args.search {
            SearchArg::None => SearchKind::None,
            SearchArg::Tpo => SearchKind::Tpo,
            SearchArg::Bon => SearchKind::Bon,
            SearchArg::Darwin => SearchKind::Darwin,
        },
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        prompts: args.prompts,
        warmup: args.warmup,
        timeout: args.timeout,
        seed: args.seed,
    };
    super::advice::report((|| -> Result<ExitCode, tpo_engine::bench::BenchError> {
        let report = tpo_engine::bench::serve::run(&options)?;
        print!("{}", report.table());
        if let Some(path) = &args.json {
            report.write_json(path)?;
        }
        Ok(ExitCode::SUCCESS)
    })())
}
