//! `tpo generate`: one answer from the policy, streamed to stdout, speed on stderr.

use std::io::Write;
use std::process::ExitCode;

use tpo_engine::engine::{
    EngineError, GenerateRequest, GenerationEvent, SamplingOptions, SamplingParams,
};
use tpo_engine::model::TextStream;

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
    // Whole characters as they arrive; the tail a stop string could claim is held back.
    let mut text = TextStream::new(&args.stop);
    let mut stdout = std::io::stdout();
    while let Some(event) = stream.blocking_next() {
        let (shown, out) = match event {
            GenerationEvent::Token { token, .. } => (text.push(engine.tokenizer(), token), None),
            GenerationEvent::Finished(out) => {
                let answer = out.text_in(engine.chat()).map_err(EngineError::from)?;
                (text.finish(&answer) + "\n", Some(out))
            }
            GenerationEvent::Failed(e) => return Err(e.into()),
        };
        let _ = write!(stdout, "{shown}");
        let _ = stdout.flush();
        if let Some(out) = out {
            eprintln!(
                "[{} prompt tokens, first token after {:.0} ms; {} new tokens, {:.1} tokens/s decode; finish: {:?}]",
                out.prompt_tokens,
                out.time_to_first_token.as_secs_f64() * 1e3,
                out.tokens.len(),
                out.decode_rate(),
                out.finish_reason
            );
            return Ok(ExitCode::SUCCESS);
        }
    }
    Err(EngineError::Stopped.into())
}
