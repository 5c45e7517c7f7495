//! `tpo bench engine`: for each concurrency C, C requests submitted at once versus the same
//! C requests run one after another on the same engine; aggregate decode tokens/s of each,
//! their ratio, and the share of decode-step time spent outside ONNX Runtime's `run`.
//! Not here: the flags (`src/cli/bench.rs`) and printing.

use std::path::Path;
use std::time::Instant;

use super::BenchError;
use crate::app::{App, AppOptions};
use crate::engine::{Engine, EngineError, GenerateRequest, SamplingOptions, SamplingParams};

/// What `tpo bench engine` runs.
#[derive(Debug, Clone)]
pub struct EngineBenchOptions {
    /// The policy and its engine settings (its KV slots must hold the highest level).
    pub app: AppOptions,
    /// Concurrency levels.
    pub concurrency: Vec<usize>,
    /// Tokens each request generates (EOS is ignored so every request does the same work).
    pub max_new_tokens: usize,
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

/// One concurrency level's measurements.
#[derive(Debug, serde::Serialize)]
pub struct LevelResult {
    pub concurrency: usize,
    pub tokens: usize,
    pub batched_seconds: f64,
    pub batched_tokens_per_second: f64,
    pub sequential_seconds: f64,
    pub sequential_tokens_per_second: f64,
    pub speedup: f64,
    pub mean_decode_batch: f64,
    pub decode_step_ms: f64,
    pub our_share_of_decode_step: f64,
    pub sampling_share_of_decode_step: f64,
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
            let prompt = engine
                .chat()
                .question_prompt(QUESTIONS[i % QUESTIONS.len()])?;
            Ok(GenerateRequest::new(prompt, params))
        })
        .collect()
}

/// Runs every level (progress on stderr); the caller prints [`table`] of the results.
pub fn run(args: &EngineBenchOptions) -> Result<Vec<LevelResult>, BenchError> {
    let max_level = args.concurrency.iter().copied().max().unwrap_or(1);
    if args.concurrency.contains(&0) || args.max_new_tokens == 0 {
        return Err(EngineError::InvalidConfig(
            "concurrency levels and --max-new-tokens must be positive".into(),
        )
        .into());
    }
    if args.app.engine.kv_slots < max_level {
        return Err(EngineError::InvalidConfig(format!(
            "--kv-slots {} is below the highest concurrency {max_level}; raise it so the batch is not capped",
            args.app.engine.kv_slots
        ))
        .into());
    }
    let engine = App::open(&args.app)?.engine;
    // Warm up: first runs pay for page faults in the arena and ORT's allocations.
    engine.generate_blocking(requests(&engine, 1, 8)?.remove(0))?;

    eprintln!(
        "engine bench: {} new tokens per request, levels {:?}, {} threads",
        args.max_new_tokens, args.concurrency, args.app.engine.decoder.threads
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

    Ok(results)
}

/// The Markdown table of the levels.
pub fn table(results: &[LevelResult]) -> String {
    let mut out = String::from("| concurrency | batched tok/s | sequential tok/s | speed-up | mean decode batch | decode step ms | our code share of step | of which sampling |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in results {
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.2}x | {:.1} | {:.1} | {:.1}% | {:.1}% |\n",
            r.concurrency,
            r.batched_tokens_per_second,
            r.sequential_tokens_per_second,
            r.speedup,
            r.mean_decode_batch,
            r.decode_step_ms,
            100.0 * r.our_share_of_decode_step,
            100.0 * r.sampling_share_of_decode_step
        ));
    }
    out
}

/// Writes the results as pretty JSON to `path`.
pub fn write_json(path: &Path, results: &[LevelResult]) -> Result<(), BenchError> {
    super::write_json(path, &results)
}
