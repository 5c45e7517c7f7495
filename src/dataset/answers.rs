//! `tpo search`'s runs: one question answered by a search with its trace written as pretty
//! JSON ([`answer_one`]), or a prompt file answered by searches, the answers (and traces)
//! out as JSON lines, one per prompt, written as each search finishes (each line carries its
//! input `line` to restore the order; [`answer_file`]). The prompts are read with
//! [`super::prompts`]. Not the search itself ([`crate::search`]) nor the flags or the exit
//! code (the CLI's).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;

use super::prompts::{numbered_lines, parse_row, Field};
use crate::engine::Engine;
use crate::reward::RewardService;
use crate::search::{self, SearchError, SearchParams, StepEvent, Trace};

/// Why a run stopped (in a `--file` run, a bad line or a failed search does not stop it).
#[derive(Debug, thiserror::Error)]
pub enum AnswersError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    AsyncRuntime(std::io::Error),
    /// The one search of [`answer_one`] failed.
    #[error(transparent)]
    Search(#[from] SearchError),
}

impl From<AnswersError> for crate::Error {
    fn from(e: AnswersError) -> Self {
        match e {
            AnswersError::Search(e) => e.into(),
            e => super::DatasetError::Answers(e).into(),
        }
    }
}

/// A current-thread tokio runtime: the searches of a run interleave on one thread.
fn runtime() -> Result<tokio::runtime::Runtime, AnswersError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(AnswersError::AsyncRuntime)
}

/// Answers `question` with one search, `report`ing each step as it finishes, and writes the
/// trace as pretty JSON to `trace_path` when one is given.
pub fn answer_one(
    (engine, rewards): (&Engine, &RewardService),
    question: &str,
    reference: Option<&str>,
    params: &SearchParams,
    trace_path: Option<&Path>,
    report: search::Progress<'_>,
) -> Result<Trace, AnswersError> {
    let trace = runtime()?.block_on(search::run(
        engine, rewards, question, reference, params, report,
    ))?;
    if let Some(path) = trace_path {
        let json = serde_json::to_string_pretty(&trace)
            .map_err(|e| io_error("writing the trace", path)(e.into()))?;
        std::fs::write(path, json + "\n").map_err(io_error("writing the trace", path))?;
    }
    Ok(trace)
}

/// [`answer_file`] on its own current-thread runtime.
pub fn answer_file_blocking(
    files: &AnswerFiles,
    (engine, rewards): (&Engine, &RewardService),
    params: &SearchParams,
    explain: impl Fn(&SearchError) -> String,
) -> Result<Answered, AnswersError> {
    runtime()?.block_on(answer_file(files, engine, rewards, params, explain))
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AnswersError {
    let path = path.to_path_buf();
    move |source| AnswersError::Io { what, path, source }
}

/// How a step reads on stderr.
pub fn describe(event: &StepEvent) -> String {
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

/// The one-line summary of a finished search, as `tpo search` prints it.
pub fn summary(trace: &Trace) -> String {
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

/// Parses one input line (read with [`super::prompts`]); `Err` says what is
/// wrong with it.
fn parse_line(line: usize, text: &str) -> Result<Prompt, (Option<String>, String)> {
    let row = parse_row(line, text).map_err(|e| (None, e.to_string()))?;
    let id = match row.id {
        Field::Absent | Field::Null => line.to_string(),
        Field::Text(s) | Field::Number(s) => s,
        Field::Other => return Err((None, "\"id\" must be a string or a number".into())),
    };
    let prompt = match row.prompt {
        Field::Text(s) if !s.trim().is_empty() => s,
        Field::Text(_) => return Err((Some(id), "\"prompt\" is empty".into())),
        Field::Absent => return Err((Some(id), "missing \"prompt\"".into())),
        _ => return Err((Some(id), "\"prompt\" must be a string".into())),
    };
    let reference = match row.reference {
        Field::Absent | Field::Null => None,
        Field::Text(s) => Some(s),
        _ => return Err((Some(id), "\"reference\" must be a string".into())),
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
    fn line(&mut self, value: &serde_json::Value) -> Result<(), AnswersError> {
        writeln!(self.answers, "{value}")
            .and_then(|()| self.answers.flush())
            .map_err(io_error("writing answers to", &self.answers_path))
    }

    fn failure(&mut self, line: usize, id: Option<&str>, error: &str) -> Result<(), AnswersError> {
        self.failed += 1;
        eprintln!(
            "line {line}{}: {error}",
            id.map(|id| format!(" (id {id})")).unwrap_or_default()
        );
        self.line(&serde_json::json!({ "id": id, "line": line, "error": error }))
    }

    fn answer(&mut self, prompt: &Prompt, trace: &Trace) -> Result<(), AnswersError> {
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

/// Where a `--file` run reads and writes.
#[derive(Debug, Clone)]
pub struct AnswerFiles {
    /// JSONL prompts, one object per line with "prompt" (and optional "id", "reference").
    pub prompts: PathBuf,
    /// Answers, one JSON line per prompt [`None`: stdout].
    pub output: Option<PathBuf>,
    /// Traces, one JSON line per answered prompt.
    pub traces: Option<PathBuf>,
    /// Searches run at once.
    pub concurrency: usize,
}

/// What a `--file` run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub answered: usize,
    pub failed: usize,
}

/// Answers every prompt of `files.prompts` with a search, up to `concurrency` at once on
/// one thread; a bad line or a failed search is reported (stderr and an answer line with
/// its `error`, worded by `explain`: the caller's words, e.g. the CLI's advice) and the run
/// goes on.
pub async fn answer_file(
    files: &AnswerFiles,
    engine: &Engine,
    rewards: &RewardService,
    params: &SearchParams,
    explain: impl Fn(&SearchError) -> String,
) -> Result<Answered, AnswersError> {
    let file = files.prompts.as_path();
    let text = std::fs::read_to_string(file).map_err(io_error("reading", file))?;
    let (answers, answers_path): (Box<dyn Write>, PathBuf) = match &files.output {
        Some(path) => (
            Box::new(BufWriter::new(
                File::create(path).map_err(io_error("creating", path))?,
            )),
            path.clone(),
        ),
        None => (Box::new(std::io::stdout()), PathBuf::from("stdout")),
    };
    let traces = match &files.traces {
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
    for (line, raw) in numbered_lines(&text) {
        match parse_line(line, raw) {
            Ok(prompt) => prompts.push(prompt),
            Err((id, error)) => sink.failure(line, id.as_deref(), &error)?,
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
        .buffer_unordered(files.concurrency);
    while let Some((prompt, result)) = results.next().await {
        match result {
            Ok(trace) => sink.answer(prompt, &trace)?,
            Err(e) => sink.failure(prompt.line, Some(&prompt.id), &explain(&e))?,
        }
    }
    eprintln!(
        "answered {} prompts, {} failed (answers in {})",
        sink.answered,
        sink.failed,
        sink.answers_path.display()
    );
    Ok(Answered {
        answered: sink.answered,
        failed: sink.failed,
    })
}
