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

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tpo_engine::dataset::answers::{answer_file, describe, summary, AnswerFiles, AnswersError};
use tpo_engine::engine::Engine;
use tpo_engine::reward::RewardService;
use tpo_engine::search::{self, SearchError, SearchParams, StepEvent};

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

/// Failures of the command that are not the library's: files it reads and writes.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Lib(#[from] tpo_engine::Error),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the search does not fit the context: {0} (lower --max-new-tokens to at most {fits}, or raise --max-seq-len)", fits = .0.fits)]
    DoesNotFit(search::fit::DoesNotFit),
}

impl From<AnswersError> for CliError {
    fn from(e: AnswersError) -> Self {
        match e {
            AnswersError::Io { what, path, source } => CliError::Io { what, path, source },
        }
    }
}

impl From<SearchError> for CliError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::DoesNotFit(e) => CliError::DoesNotFit(e),
            e => CliError::Lib(e.into()),
        }
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CliError {
    let path = path.to_path_buf();
    move |source| CliError::Io { what, path, source }
}

pub fn run(args: SearchArgs) -> Result<ExitCode, tpo_engine::Error> {
    match run_inner(args) {
        Ok(code) => Ok(code),
        Err(CliError::Lib(e)) => Err(e),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn run_inner(args: SearchArgs) -> Result<ExitCode, CliError> {
    let params = args.search.params()?;
    args.search.check_kv_slots(args.model.kv_slots)?;
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(CliError::Runtime)?;
    match (&args.file, &args.question) {
        (Some(file), _) => {
            let files = AnswerFiles {
                prompts: file.clone(),
                output: args.output.clone(),
                traces: args.trace.clone(),
                concurrency: args.concurrency as usize,
            };
            let done = runtime.block_on(answer_file(&files, &engine, &rewards, &params, |e| {
                super::advice::with_advice(e, super::advice::search(e))
            }))?;
            Ok(if done.failed > 0 {
                ExitCode::from(EXIT_ROWS_REJECTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        (None, Some(question)) => {
            runtime.block_on(run_one(&args, question, &engine, &rewards, &params))
        }
        (None, None) => {
            Err(SearchError::InvalidParams("give a question or --file prompts.jsonl".into()).into())
        }
    }
}

async fn run_one(
    args: &SearchArgs,
    question: &str,
    engine: &Engine,
    rewards: &RewardService,
    params: &SearchParams,
) -> Result<ExitCode, CliError> {
    let mut report = |event: &StepEvent| eprintln!("{}", describe(event));
    let trace = search::run(
        engine,
        rewards,
        question,
        args.reference.as_deref(),
        params,
        &mut report,
    )
    .await?;
    println!("{}", trace.final_answer);
    eprintln!("{}", summary(&trace));
    if let Some(path) = &args.trace {
        let json = serde_json::to_string_pretty(&trace)
            .map_err(|e| io_error("writing the trace", path)(e.into()))?;
        std::fs::write(path, json + "\n").map_err(io_error("writing the trace", path))?;
        eprintln!("trace written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
