//! `tpo bench`: benchmarks that print ratios measured side by side in one run. Each
//! subcommand's flags are parsed here or in its `bench_*` file and handed to one function
//! of [`tpo_engine::bench`], whose report is printed here; the benches themselves (and
//! `tpo bench engine`'s, [`tpo_engine::bench::engine`]) are library code.

use std::process::ExitCode;

use tpo_engine::bench::engine::EngineBenchOptions;
use tpo_engine::bench::BenchError;
use tpo_engine::engine::EngineError;

use super::{bench_serve, ModelArgs};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_required = false)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: Option<BenchKind>,
    /// Run `tpo bench peers` with its defaults (after `make bench-setup`).
    #[arg(long)]
    peers: bool,
}

#[derive(Debug, clap::Subcommand)]
enum BenchKind {
    /// Continuous batching versus one request at a time.
    ///
    /// Example: tpo bench engine --concurrency 1,4,16,32,64 --max-new-tokens 64
    Engine(EngineBenchArgs),
    /// `tpo score` versus a batch-1 Python onnxruntime loop over the same RM and rows.
    ///
    /// Example: tpo bench score --reward-model judge --pairs 24
    Score(super::bench_score::ScoreBenchArgs),
    /// N concurrent searches versus the same N searches one after another, same engine and
    /// reward service, with the traces of the two phases compared.
    ///
    /// Example: tpo bench search --searches 32 --strategy tpo --width 5 --depth 2
    /// --max-new-tokens 64 --reward-model similarity
    Search(Box<super::bench_search::SearchBenchArgs>),
    /// Reward, cost and best-reward-per-step report over `tpo search --trace` files
    ///
    /// Example: tpo bench quality --run "TPO (judge)=tpo.trace.jsonl"
    ///   --run "BoN N=5 (judge)=bon19.trace.jsonl@5" --plot judge.png --markdown judge.md
    #[command(verbatim_doc_comment)]
    Quality(super::bench_quality::QualityArgs),
    /// Load generator for any OpenAI-compatible server: streamed chat requests at fixed
    /// concurrencies (closed loop) or Poisson arrival rates (open loop); TTFT, ITL, TPOT and
    /// E2E percentiles, req/s, output tok/s and searches/s per level.
    ///
    /// Examples:
    ///   tpo bench serve --url http://127.0.0.1:8000 --concurrency 1,4,16,64 --max-tokens 64
    ///   tpo bench serve --rate 0.5,1,2 --duration 60 --json serve.json
    ///   tpo bench serve --search tpo --concurrency 1,4 --requests 8
    #[command(verbatim_doc_comment)]
    Serve(Box<bench_serve::ServeBenchArgs>),
    /// Ours against llama.cpp and onnxruntime-genai, interleaved in one run: decode tokens/s
    /// at each batch size, the memory-bandwidth ceiling, and `tpo serve` against
    /// `llama_cpp.server`; a ratio table, JSON and PNG plots. Needs `make bench-setup`.
    ///
    /// Example: tpo bench peers --rounds 5 --out docs/peers
    Peers(Box<super::bench_peers::PeersArgs>),
    /// The CUDA kernels (top-p sampling, reward pooling) against the GPU's device-to-device
    /// copy bandwidth, side by side in one run. Needs a GPU.
    ///
    /// Example: tpo bench kernels --batch 64 --vocab 49152,128256 --json kernels.json
    Kernels(super::bench_kernels::KernelBenchArgs),
}

#[derive(Debug, clap::Args)]
struct EngineBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Concurrency levels, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32,64")]
    concurrency: Vec<usize>,
    /// Tokens each request generates (EOS is ignored so every request does the same work).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

pub fn run(args: BenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let Some(what) = args.what else {
        if args.peers {
            return super::bench_peers::run(super::bench_peers::default_args()?);
        }
        return Err(EngineError::InvalidConfig(
            "tpo bench needs a subcommand (engine, score, search, quality, serve, peers, kernels) or --peers; see tpo bench --help".into(),
        )
        .into());
    };
    match what {
        BenchKind::Peers(a) => super::bench_peers::run(*a),
        BenchKind::Engine(a) => engine_bench(a),
        BenchKind::Score(a) => super::bench_score::run(a),
        BenchKind::Search(a) => super::bench_search::run(*a),
        BenchKind::Quality(a) => super::bench_quality::run(a),
        BenchKind::Serve(a) => bench_serve::run(*a),
        BenchKind::Kernels(a) => super::bench_kernels::run(a),
    }
}

fn engine_bench(args: EngineBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let options = EngineBenchOptions {
        app: args
            .model
            .app_options(&[], tpo_engine::reward::DEFAULT_BATCH_TOKENS)?,
        concurrency: args.concurrency,
        max_new_tokens: args.max_new_tokens,
    };
    super::advice::report((|| -> Result<ExitCode, BenchError> {
        let results = tpo_engine::bench::engine::run(&options)?;
        print!("{}", tpo_engine::bench::engine::table(&results));
        if let Some(path) = &args.json {
            tpo_engine::bench::engine::write_json(path, &results)?;
        }
        Ok(ExitCode::SUCCESS)
    })())
}
