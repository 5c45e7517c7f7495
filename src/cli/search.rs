//! `tpo search`: flags → one engine, one reward service and one search per question (a
//! prompt file's run is [`tpo_engine::dataset::answers`]).
//!
//! One question: progress on stderr as steps finish, the answer on stdout, the trace as
//! pretty JSON (`--trace FILE`). A prompt file (`--file`): up to `--concurrency` searches at
//! once on the same engine and reward service, interleaved on one thread (a current-thread
//! tokio runtime; no thread per search); one answer line per prompt, written as each search
//! finishes (each line carries its input `line` number to restore the order), traces as
//! JSON lines. Exit code 0 when every prompt was answered, 2 when some failed (bad lines and
//! failed searches are reported with their line number and the run goes on), 1 when the run
//! itself failed.

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::dataset::answers::{
    answer_file_blocking, answer_one, describe, summary, AnswerFiles,
};
use tpo_engine::search::{SearchError, StepEvent};

use super::score::EXIT_ROWS_REJECTED;
use super::search_flags::SearchFlags;
use super::ModelArgs;

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    search: SearchFlags,
    /// Reference answer for similarity rewards (with one question).
    #[arg(long, value_name = "TEXT", conflicts_with = "file")]
    reference: Option<String>,
    /// Write the trace here: pretty JSON for one question, one JSON line per prompt with
    /// --file.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// JSONL prompts, one object per line with "prompt" (and optional "id", "reference").
    #[arg(long, value_name = "FILE", conflicts_with = "question")]
    file: Option<PathBuf>,
    /// Searches run at once with --file.
    #[arg(long, default_value_t = 4, requires = "file", value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Answers with --file, one JSON line per prompt [default: stdout].
    #[arg(long, value_name = "FILE", requires = "file")]
    output: Option<PathBuf>,
    /// The question.
    #[arg(required_unless_present = "file")]
    question: Option<String>,
}

pub fn run(args: SearchArgs) -> Result<ExitCode, tpo_engine::Error> {
    let params = args.search.params()?;
    args.search.check_kv_slots(&args.model)?;
    if let Some(file) = &args.file {
        if !file.is_file() {
            return Err(SearchError::InvalidParams(format!(
                "--file {} is not a file",
                file.display()
            ))
            .into());
        }
    }
    let (engine, rewards) = args.search.open_models(&args.model)?;
    let models = (&engine, &rewards);
    match (&args.file, &args.question) {
        (Some(file), _) => {
            let files = AnswerFiles {
                prompts: file.clone(),
                output: args.output.clone(),
                traces: args.trace.clone(),
                concurrency: args.concurrency as usize,
            };
            let done = answer_file_blocking(&files, models, &params, |e| {
                super::advice::with_advice(e, super::advice::search(e))
            })?;
            Ok(if done.failed > 0 {
                ExitCode::from(EXIT_ROWS_REJECTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        (None, Some(question)) => {
            let trace = answer_one(
                models,
                question,
                args.reference.as_deref(),
                &params,
                args.trace.as_deref(),
                &mut |event: &StepEvent| eprintln!("{}", describe(event)),
            )?;
            println!("{}", trace.final_answer);
            eprintln!("{}", summary(&trace));
            if let Some(path) = &args.trace {
                eprintln!("trace written to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, None) => {
            Err(SearchError::InvalidParams("give a question or --file prompts.jsonl".into()).into())
        }
    }
}
