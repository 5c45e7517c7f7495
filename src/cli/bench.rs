//! `tpo bench`: benchmarks that print ratios measured side by side in one run.
//!
//! `tpo bench engine`: for each concurrency C, C requests submitted at once versus the same
//! C requests run one after another on the same engine; aggregate decode tokens/s of each,
//! their ratio, and the share of decode-step time spent outside ONNX Runtime's `run`.
//! `tpo bench score`: see `bench_score`. `tpo bench search`: see `bench_search`.
//! `tpo bench quality`: see `bench_quality`. `tpo bench serve`: see `bench_serve`.
//! `tpo bench peers` / `tpo bench --peers`: see `bench_peers`. `tpo bench kernels`: see
//! `bench_kernels`.

use std::process::ExitCode;
use std::time::Instant;

use tpo_engine::engine::{Engine, EngineError, GenerateRequest, SamplingOptions, SamplingParams};

use super::ModelArgs;

// Declared here rather than in `cli/mod.rs`: it is only ever a `tpo bench` subcommand.
#[path = "bench_serve/mod.rs"]
pub(super) mod bench_serve;

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

const QUESTIONS: &[&str] = &[
    "Explain how a rainbow forms.",
    "Write a short poem about the ocean.",
    "What are three benefits of regular exercise?",
    "Describe the water cycle.",
    "Give me a recipe for pancakes.",
    "Why do cats purr?",
    "Summarize the plot of Romeo and Juliet.",
    "How does a bicycle stay upright?",
    "What is photosynthesis?",
    "List some tips for a job interview.",
    "Explain what a computer program is to a child.",
    "What causes the seasons on Earth?",
    "Write a haiku about mountains.",
    "How do airplanes fly?",
    "What is the difference between weather and climate?",
    "Tell me a fun fact about octopuses.",
];

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

#[derive(Debug, serde::Serialize)]
struct LevelResult {
    concurrency: usize,
    tokens: usize,
    batched_seconds: f64,
    batched_tokens_per_second: f64,
    sequential_seconds: f64,
    sequential_tokens_per_second: f64,
    speedup: f64,
    mean_decode_batch: f64,
    decode_step_ms: f64,
    our_share_of_decode_step: f64,
    sampling_share_of_decode_step: f64,
}

fn requests(
    engine: &Engine,
    count: usize,
    max_new_tokens: usize,
) -> Result<Vec<GenerateRequest>, EngineError> {
    (0..count)
        .map(|i| {
            let params = SamplingParams::new(SamplingOptions {
                temperature: 0.7,
                top_p: 0.95,
                max_new_tokens,
                seed: Some(i as u64),
                ignore_eos: true,
                ..SamplingOptions::default()
            })?;
            let prompt = engine.question_prompt(QUESTIONS[i % QUESTIONS.len()])?;
            Ok(GenerateRequest::new(prompt, params))
        })
        .collect()
}

fn engine_bench(args: EngineBenchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let max_level = args.concurrency.iter().copied().max().unwrap_or(1);
    if args.concurrency.contains(&0) || args.max_new_tokens == 0 {
        return Err(EngineError::InvalidConfig(
            "concurrency levels and --max-new-tokens must be positive".into(),
        )
        .into());
    }
    if (args.model.kv_slots as usize) < max_level {
        return Err(EngineError::InvalidConfig(format!(
            "--kv-slots {} is below the highest concurrency {max_level}; raise it so the batch is not capped",
            args.model.kv_slots
        ))
        .into());
    }
    let engine = args.model.start_engine()?;
    // Warm up: first runs pay for page faults in the arena and ORT's allocations.
    engine.generate_blocking(requests(&engine, 1, 8)?.remove(0))?;

    eprintln!(
        "engine bench: {} new tokens per request, levels {:?}, {} threads",
        args.max_new_tokens, args.concurrency, args.model.threads
    );
    let mut results = Vec::new();
    for &c in &args.concurrency {
        let work = requests(&engine, c, args.max_new_tokens)?;
        let tokens = c * args.max_new_tokens;

        let before = engine.stats().snapshot();
        let started = Instant::now();
        let streams = work
            .iter()
            .cloned()
            .map(|r| engine.submit(r))
            .collect::<Result<Vec<_>, _>>()?;
        for s in streams {
            futures::executor::block_on(s.collect())?;
        }
        let batched = started.elapsed().as_secs_f64();
        let after = engine.stats().snapshot();

        let started = Instant::now();
        for r in work {
            engine.generate_blocking(r)?;
        }
        let sequential = started.elapsed().as_secs_f64();

        let delta = after.since(&before);
        let steps = delta.steps.max(1);
        let nanos = delta.nanos.max(1);
        let result = LevelResult {
            concurrency: c,
            tokens,
            batched_seconds: batched,
            batched_tokens_per_second: tokens as f64 / batched,
            sequential_seconds: sequential,
            sequential_tokens_per_second: tokens as f64 / sequential,
            speedup: sequential / batched,
            mean_decode_batch: delta.mean_decode_batch(),
            decode_step_ms: nanos as f64 / steps as f64 / 1e6,
            sampling_share_of_decode_step: delta.sample_nanos as f64 / nanos as f64,
            our_share_of_decode_step: 1.0 - delta.ort_nanos as f64 / nanos as f64,
        };
        eprintln!(
            "  C={c}: batched {:.1} tok/s, sequential {:.1} tok/s, x{:.2}",
            result.batched_tokens_per_second, result.sequential_tokens_per_second, result.speedup
        );
        results.push(result);
    }

    println!("| concurrency | batched tok/s | sequential tok/s | speed-up | mean decode batch | decode step ms | our code share of step | of which sampling |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.1}% | {:.1}% |",
            r.concurrency,
            r.batched_tokens_per_second,
            r.sequential_tokens_per_second,
            r.speedup,
            r.mean_decode_batch,
            r.decode_step_ms,
            100.0 * r.our_share_of_decode_step,
            100.0 * r.sampling_share_of_decode_step
        );
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&results)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        std::fs::write(&path, text)
            .map_err(|e| EngineError::Internal(format!("writing {}: {e}", path.display())))?;
    }
    Ok(ExitCode::SUCCESS)
}
