//! `tpo generate`: one answer from the policy, streamed to stdout, speed on stderr.

use std::io::Write;
use std::process::ExitCode;

use tpo_engine::engine::{
    EngineError, GenerateRequest, GenerationEvent, SamplingOptions, SamplingParams,
};

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
    /// Stop when the answer contains this text (repeatable); the text is cut before it.
    #[arg(long)]
    stop: Vec<String>,
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
        stop: args.stop.clone(),
        seed: args.seed,
        ..SamplingOptions::default()
    })
    .map_err(EngineError::from)?;
    let engine = args.model.start_engine()?;
    let prompt = if args.raw {
        engine
            .tokenizer()
            .encode(&args.prompt)
            .map_err(EngineError::from)?
    } else {
        engine
            .chat()
            .question_prompt(&args.prompt)
            .map_err(EngineError::from)?
    };
    let mut stream = engine.submit(GenerateRequest::new(prompt, params))?;
    let mut tokens = Vec::new();
    let mut printed = 0usize;
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.blocking_next() {
        match event {
            GenerationEvent::Token { token, .. } => {
                tokens.push(token);
                let text = engine
                    .tokenizer()
                    .decode(&tokens)
                    .map_err(EngineError::from)?;
                // Print whole characters only; a stop string is cut at the end.
                if args.stop.is_empty() && !text.ends_with('\u{FFFD}') && text.len() > printed {
                    let _ = write!(stdout, "{}", &text[printed..]);
                    let _ = stdout.flush();
                    printed = text.len();
                }
            }
            GenerationEvent::Finished(out) => {
                let text = out.text_in(engine.chat()).map_err(EngineError::from)?;
                if text.len() > printed {
                    let _ = write!(stdout, "{}", &text[printed.min(text.len())..]);
                }
                let _ = writeln!(stdout);
                let decode = out
                    .elapsed
                    .saturating_sub(out.time_to_first_token)
                    .as_secs_f64();
                let rate = if decode > 0.0 {
                    out.tokens.len().saturating_sub(1) as f64 / decode
                } else {
                    0.0
                };
                eprintln!(
                    "[{} prompt tokens, first token after {:.0} ms; {} new tokens, {:.1} tokens/s decode; finish: {:?}]",
                    out.prompt_tokens,
                    out.time_to_first_token.as_secs_f64() * 1e3,
                    out.tokens.len(),
                    rate,
                    out.finish_reason
                );
                return Ok(ExitCode::SUCCESS);
            }
            GenerationEvent::Failed(e) => return Err(e.into()),
        }
    }
    Err(EngineError::Stopped.into())
}
