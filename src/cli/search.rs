//! `tpo search`: flags → one engine, one reward service and one search per question.
//!
//! One question: progress on stderr as steps finish, the answer on stdout, the trace as
//! pretty JSON (`--trace FILE`). A prompt file (`--file`): up to `--concurrency` searches at
//! once on the same engine and reward service, interleaved on one thread (a current-thread
//! tokio runtime; no thread per search); one answer line per prompt, written as each search
//! finishes (each line carries its input `line` number to restore the order), traces as
//! JSON lines. Exit code 0 when every prompt was answered, 2 when some failed (bad lines and
//! failed searches are reported with their line number and the run goes on), 1 when the run
//! itself failed.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures::StreamExt;

use tpo_engine::engine::Engine;
use tpo_engine::reward::RewardService;
use tpo_engine::search::{self, SearchError, SearchParams, StepEvent, Trace};

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
        (Some(file), _) => runtime.block_on(run_file(&args, file, &engine, &rewards, &params)),
        (None, Some(question)) => {
            runtime.block_on(run_one(&args, question, &engine, &rewards, &params))
        }
        (None, None) => {
            Err(SearchError::InvalidParams("give a question or --file prompts.jsonl".into()).into())
        }
    }
}

/// How a step reads on stderr.
fn describe(event: &StepEvent) -> String {
    let what = if event.step == 0 {
        "samples".to_string()
    } else {
        format!("step {}/{}", event.step, event.depth)
    };
    format!(
        "{what}: best reward {:.4}, kept {}, dropped {}",
        event.best_reward, event.kept, event.dropped
    )
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

fn summary(trace: &Trace) -> String {
    let dropped: usize = trace.dropped.values().sum();
    let reasons = if trace.dropped.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = trace
            .dropped
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        format!(": {}", list.join(", "))
    };
    let flag = if trace.all_dropped {
        "; EVERY candidate was dropped, this is the best-scored dropped one"
    } else {
        ""
    };
    format!(
        "[{}: reward {:.4} (candidate {} of {}, {} dropped{reasons}){flag}; {} requests, {} tokens, {:.1} s]",
        trace.strategy,
        trace.final_reward,
        trace.final_id,
        trace.candidates.len(),
        dropped,
        trace.totals.requests,
        trace.totals.tokens_generated,
        trace.totals.seconds
    )
}

/// One prompt of a `--file`.
struct Prompt {
    line: usize,
    id: String,
    prompt: String,
    reference: Option<String>,
}

/// Parses one input line; `Err` says what is wrong with it.
fn parse_line(line: usize, text: &str) -> Result<Prompt, (Option<String>, String)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, format!("not valid JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err((None, "not a JSON object".into()));
    };
    let id = match object.get("id") {
        None | Some(serde_json::Value::Null) => line.to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(_) => return Err((None, "\"id\" must be a string or a number".into())),
    };
    let prompt = match object.get("prompt") {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(serde_json::Value::String(_)) => return Err((Some(id), "\"prompt\" is empty".into())),
        Some(_) => return Err((Some(id), "\"prompt\" must be a string".into())),
        None => return Err((Some(id), "missing \"prompt\"".into())),
    };
    let reference = match object.get("reference") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err((Some(id), "\"reference\" must be a string".into())),
    };
    Ok(Prompt {
        line,
        id,
        prompt,
        reference,
    })
}

/// Where the answers of a `--file` run go.
struct Sink {
    answers: Box<dyn Write>,
    /// Where the answers go, for messages ("stdout" without --output).
    answers_path: PathBuf,
    traces: Option<(BufWriter<File>, PathBuf)>,
    answered: usize,
    failed: usize,
}

impl Sink {
    fn line(&mut self, value: &serde_json::Value) -> Result<(), CliError> {
        writeln!(self.answers, "{value}")
            .and_then(|()| self.answers.flush())
            .map_err(io_error("writing answers to", &self.answers_path))
    }

    fn failure(&mut self, line: usize, id: Option<&str>, error: &str) -> Result<(), CliError> {
        self.failed += 1;
        eprintln!(
            "line {line}{}: {error}",
            id.map(|id| format!(" (id {id})")).unwrap_or_default()
        );
        self.line(&serde_json::json!({ "id": id, "line": line, "error": error }))
    }

    fn answer(&mut self, prompt: &Prompt, trace: &Trace) -> Result<(), CliError> {
        self.answered += 1;
        eprintln!("[{}] {}", prompt.id, summary(trace));
        self.line(&serde_json::json!({
            "id": prompt.id,
            "line": prompt.line,
            "answer": trace.final_answer,
            "reward": trace.final_reward,
            "strategy": trace.strategy,
            "tokens_generated": trace.totals.tokens_generated,
            "seconds": trace.totals.seconds,
        }))?;
        if let Some((traces, path)) = &mut self.traces {
            let json = serde_json::to_string(trace)
                .map_err(|e| io_error("writing traces to", path)(e.into()))?;
            writeln!(traces, "{json}")
                .and_then(|()| traces.flush())
                .map_err(io_error("writing traces to", path))?;
        }
        Ok(())
    }
}

async fn run_file(
    args: &SearchArgs,
    file: &Path,
    engine: &Engine,
    rewards: &RewardService,
    params: &SearchParams,
) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(file).map_err(io_error("reading", file))?;
    let (answers, answers_path): (Box<dyn Write>, PathBuf) = match &args.output {
        Some(path) => (
            Box::new(BufWriter::new(
                File::create(path).map_err(io_error("creating", path))?,
            )),
            path.clone(),
        ),
        None => (Box::new(std::io::stdout()), PathBuf::from("stdout")),
    };
    let traces = match &args.trace {
        Some(path) => Some((
            BufWriter::new(File::create(path).map_err(io_error("creating", path))?),
            path.clone(),
        )),
        None => None,
    };
    let mut sink = Sink {
        answers,
        answers_path,
        traces,
        answered: 0,
        failed: 0,
    };
    let mut prompts = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match parse_line(index + 1, raw) {
            Ok(prompt) => prompts.push(prompt),
            Err((id, error)) => sink.failure(index + 1, id.as_deref(), &error)?,
        }
    }
    let mut results = futures::stream::iter(prompts.iter())
        .map(|prompt| async move {
            let mut report = |event: &StepEvent| eprintln!("[{}] {}", prompt.id, describe(event));
            let result = search::run(
                engine,
                rewards,
                &prompt.prompt,
                prompt.reference.as_deref(),
                params,
                &mut report,
            )
            .await;
            (prompt, result)
        })
        .buffer_unordered(args.concurrency as usize);
    while let Some((prompt, result)) = results.next().await {
        match result {
            Ok(trace) => sink.answer(prompt, &trace)?,
            Err(e) => {
                let error = super::advice::with_advice(&e, super::advice::search(&e));
                sink.failure(prompt.line, Some(&prompt.id), &error)?
            }
        }
    }
    eprintln!(
        "answered {} prompts, {} failed (answers in {})",
        sink.answered,
        sink.failed,
        sink.answers_path.display()
    );
    Ok(if sink.failed > 0 {
        ExitCode::from(EXIT_ROWS_REJECTED)
    } else {
        ExitCode::SUCCESS
    })
}
