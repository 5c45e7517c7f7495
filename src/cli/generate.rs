//! `tpo generate`: one answer from the policy, text on stdout, speed on stderr.

use std::process::ExitCode;

use tpo_engine::engine::{
    DecoderOptions, EngineError, Generator, GeneratorOptions, SamplingOptions, SamplingParams,
};
use tpo_engine::model::ModelDir;

use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Keep only the k most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler (same seed, same answer).
    #[arg(long)]
    seed: Option<u64>,
    /// Feed the text to the model as is, without the chat template.
    #[arg(long)]
    raw: bool,
    /// The question (or, with --raw, the prompt text).
    prompt: String,
}

pub fn run(args: GenerateArgs) -> Result<ExitCode, tpo_engine::Error> {
    let params = SamplingParams::new(SamplingOptions {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        seed: args.seed,
        ..SamplingOptions::default()
    })
    .map_err(EngineError::from)?;
    let model = ModelDir::open(&args.model.model_dir())?;
    let mut generator = Generator::load(
        &model,
        GeneratorOptions {
            decoder: DecoderOptions {
                device: args.model.device,
                threads: args.model.threads,
            },
            max_seq_len: args.model.max_seq_len as usize,
        },
    )?;
    let prompt = if args.raw {
        generator
            .tokenizer()
            .encode(&args.prompt)
            .map_err(EngineError::from)?
    } else {
        generator.chat_prompt(&args.prompt)?
    };
    let out = generator.generate(&prompt, &params, 0)?;
    println!("{}", out.text);
    eprintln!(
        "[{} prompt tokens, prefill {:.0} ms; {} new tokens, {:.1} tokens/s decode; finish: {:?}]",
        out.prompt_tokens,
        out.prefill_time.as_secs_f64() * 1e3,
        out.tokens.len(),
        out.decode_tokens_per_second(),
        out.finish_reason
    );
    Ok(ExitCode::SUCCESS)
}
