//! Command-line front end: parses flags into library calls and prints results.
//! Nothing below `cli` knows about flags.

mod advice;
mod bench;
mod bench_kernels;
mod bench_peers;
mod bench_quality;
mod bench_score;
mod bench_search;
mod bench_serve;
mod doctor;
mod generate;
mod models;
mod score;
mod search;
mod search_flags;
mod serve;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tpo_engine::app::{App, AppOptions};
use tpo_engine::runtime::Device;

/// tpo — test-time preference optimization engine.
#[derive(Debug, Parser)]
#[command(name = "tpo", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("TPO_GIT_COMMIT"), ")"), about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer one question with the policy model.
    ///
    /// Examples:
    ///   tpo generate "What is the capital of France?"
    ///   tpo generate --temperature 0.7 --top-p 0.95 --seed 7 "Write a haiku about rain"
    #[command(verbatim_doc_comment)]
    Generate(generate::GenerateArgs),
    /// Check the setup: ONNX Runtime, execution providers, CUDA driver, models.
    Doctor(doctor::DoctorArgs),
    /// Model folders: what tpo reads or infers from one, and its load-time self-check.
    Models(models::ModelsArgs),
    /// Score a preference dataset with reward models (resumable, shardable).
    ///
    /// Examples:
    ///   tpo score --input pairs.jsonl --output scored.jsonl
    ///   tpo score --input pairs.parquet --output s.jsonl --reward-model similarity
    ///   tpo score --input pairs.jsonl --output s.jsonl --shard 3/8
    ///   tpo score --input pairs.jsonl --output s.jsonl --reward-model none \
    ///       --reference-model ref1/ --reference-model ref2/ --mrpo
    #[command(verbatim_doc_comment)]
    Score(Box<score::ScoreArgs>),
    /// Answer with a search: TPO, Best-of-N, DARWIN or greedy, scored by a reward model.
    ///
    /// Examples:
    ///   tpo search "How do I wrap a present neatly?"
    ///   tpo search --strategy bon --width 8 --trace trace.json "Write a haiku about rain"
    ///   tpo search --strategy darwin --mutations 5 --replace-every 40 --keep 3 "..."
    ///   tpo search --width 5 --depth 2 --seed 7 --reward-model path/to/rm "..."
    ///   tpo search --file prompts.jsonl --concurrency 8 --output answers.jsonl
    #[command(verbatim_doc_comment)]
    Search(Box<search::SearchArgs>),
    /// Serve the OpenAI-compatible HTTP API (chat, completions, searches, scoring).
    ///
    /// Examples:
    ///   tpo serve --port 8000
    ///   tpo serve --api-key secret --kv-slots 32 --max-concurrent-requests 64
    ///   tpo serve --reward-model judge --reward-model similarity --search-width 4
    #[command(verbatim_doc_comment)]
    Serve(Box<serve::ServeArgs>),
    /// Benchmarks that print ratios measured side by side in one run.
    Bench(bench::BenchArgs),
    /// Saved search traces: `tpo trace view TRACE` writes them as an HTML page.
    Trace(trace::TraceArgs),
}

/// Flags shared by every command that loads a policy model.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Policy model: f32 (default: the embedded SmolLM2-135M-Instruct), f16 or q4 (its
    /// other formats, exported by `make setup`; see `tpo models list`), or a folder
    /// (genai_config.json, model.onnx, tokenizer.json).
    #[arg(long, value_name = "NAME|DIR")]
    model: Option<String>,
    /// Execution device: cpu, cuda[:N] or tensorrt[:N] (GPU N; GPU runs need `make gpu-setup`).
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: Device,
    /// ONNX Runtime intra-op threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Tokens per sequence the KV cache holds (prompt + answer).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(2..))]
    max_seq_len: u32,
    /// Sequences that decode at once (KV slots); more requests wait in the queue.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    kv_slots: u32,
    /// Size the KV arena by memory instead of --kv-slots: as many slots of --max-seq-len
    /// tokens as fit (e.g. 6GiB, 512MiB; shorter slots give more of them).
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, conflicts_with = "kv_slots")]
    kv_memory: Option<usize>,
    /// Prompt tokens prefilled per scheduler iteration before each decode step.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    prefill_budget: u32,
    /// Turn off the automatic prefix cache (finished sequences' KV rows reused by later
    /// prompts that start with the same tokens); outputs are the same either way.
    #[arg(long)]
    no_prefix_cache: bool,
    /// On a GPU device, bring decode logits (and reward models' hidden states) to the host
    /// and sample (pool) them on the CPU instead of with the top-p (reward-pooling) kernels
    /// on the device (the results are the same; for comparison).
    #[arg(long)]
    sample_on_host: bool,
}

/// A duration flag in seconds: positive, finite, at most a day.
pub(crate) fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && v > 0.0 && v <= 86_400.0 {
        Ok(v)
    } else {
        Err(format!("{s} must be between 0 and 86400 seconds"))
    }
}

/// A memory size: a number with an optional unit B, KiB, MiB, GiB (or K, M, G, also
/// powers of 1024), e.g. `6GiB`, `1.5G`, `512MiB`.
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" | "kb" => 1024.0,
        "m" | "mib" | "mb" => 1024.0 * 1024.0,
        "g" | "gib" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" | "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB or TiB)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 6GiB, 512MiB)"))?;
    let bytes = value * scale;
    if bytes.is_finite() && bytes >= 1.0 && bytes < usize::MAX as f64 {
        Ok(bytes as usize)
    } else {
        Err(format!("{s:?} must be at least one byte"))
    }
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse()
        .map_err(|e: tpo_engine::runtime::RuntimeError| e.to_string())
}

impl ModelArgs {
    /// The slot count the flags fix before the model loads: `None` with --kv-memory (the
    /// count follows from the model's KV shape; the engine checks each request against it).
    fn fixed_kv_slots(&self) -> Option<u32> {
        self.kv_memory.is_none().then_some(self.kv_slots)
    }

    fn model_dir(&self) -> PathBuf {
        match &self.model {
            Some(spec) => tpo_engine::paths::policy_dir(spec),
            None => tpo_engine::paths::default_policy_dir(),
        }
    }

    fn decoder_options(&self) -> tpo_engine::engine::DecoderOptions {
        tpo_engine::engine::DecoderOptions {
            device: self.device,
            threads: self.threads,
        }
    }

    /// The engine settings of these flags.
    fn engine_options(&self) -> tpo_engine::engine::EngineOptions {
        tpo_engine::engine::EngineOptions {
            decoder: self.decoder_options(),
            kv_slots: self.kv_slots as usize,
            kv_memory: self.kv_memory,
            max_seq_len: self.max_seq_len as usize,
            prefill_budget: self.prefill_budget as usize,
            prefix_cache: !self.no_prefix_cache,
            sample_on_device: !self.sample_on_host,
            ..tpo_engine::engine::EngineOptions::default()
        }
    }

    /// What [`App::open`] opens for these flags: ONNX Runtime and the policy found here, at
    /// the edge, and `reward_models` by name (see [`tpo_engine::paths::reward_source`]),
    /// batched `rm_batch_tokens` per call on the policy's device and threads.
    pub(super) fn app_options(
        &self,
        reward_models: &[String],
        rm_batch_tokens: usize,
    ) -> Result<AppOptions, tpo_engine::Error> {
        Ok(AppOptions {
            onnxruntime: tpo_engine::paths::onnxruntime_library_for(self.device)?,
            policy: self.model_dir(),
            engine: self.engine_options(),
            reward_models: reward_models
                .iter()
                .map(|name| tpo_engine::paths::reward_source(name))
                .collect(),
            reward: tpo_engine::reward::RewardOptions {
                session: self.decoder_options(),
                batch_tokens: rm_batch_tokens,
                pool_on_device: !self.sample_on_host,
                ..Default::default()
            },
        })
    }

    /// Opens the policy (and no reward model) the way every command does.
    fn start_engine(&self) -> Result<tpo_engine::engine::Engine, tpo_engine::Error> {
        Ok(App::open(&self.app_options(&[], tpo_engine::reward::DEFAULT_BATCH_TOKENS)?)?.engine)
    }
}

/// Tells the user, on stderr, which settings of the reward model `name` were inferred from
/// its folder (nothing for a folder whose `reward_config.json` says everything).
fn print_reward_load(name: &str, report: Option<&tpo_engine::reward::LoadReport>) {
    if let Some(notice) = report.and_then(|r| r.notice(name)) {
        eprint!("{notice}");
    }
}

/// Prints a failed run's error on stderr, with the CLI's advice (flags to change) when it
/// has one.
pub fn print_error(err: &tpo_engine::Error) {
    eprintln!("error: {}", advice::with_advice(err, advice::advice(err)));
}

/// Runs the parsed command; `Err` is a failure of the run, printed by `main`.
pub fn run(cli: Cli) -> Result<ExitCode, tpo_engine::Error> {
    tpo_engine::runtime::set_tensorrt_cache_dir(tpo_engine::paths::tensorrt_cache_dir());
    tpo_engine::gpu::set_nvrtc_candidates(tpo_engine::paths::nvrtc_library_candidates());
    match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Models(args) => models::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Score(args) => score::run(*args),
        Command::Search(args) => search::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Trace(args) => trace::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_read_with_binary_units_and_bad_ones_are_named() {
        assert_eq!(parse_bytes("6GiB"), Ok(6 << 30));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        let unit = parse_bytes("6 parsecs").unwrap_err();
        assert!(unit.contains("unknown unit \"parsecs\""), "{unit}");
        assert!(parse_bytes("GiB").unwrap_err().contains("not a size"));
        assert!(parse_bytes("0").unwrap_err().contains("at least one byte"));
        assert!(parse_bytes("1e999G").is_err());
    }
}
