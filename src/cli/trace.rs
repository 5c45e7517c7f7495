//! `tpo trace view`: a saved search trace as one self-contained HTML page (the viewer of
//! `tpo serve`, with the trace inlined; no network at view time).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tpo_engine::search::{parse_traces, TraceFileError};
use tpo_engine::viewer::{trace_page, ViewerError};

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TraceCommand {
    /// Write a trace as a self-contained HTML page: every step's candidates and rewards,
    /// chosen and rejected, critiques and suggestions, drops with their reason, DARWIN's
    /// mutations and replacements, the best reward per step, the answer and its cost.
    ///
    /// Examples:
    ///   tpo trace view target/demo-trace.json             # writes target/demo-trace.html
    ///   tpo trace view run.trace.jsonl --output run.html  # JSON lines: one page, a picker
    #[command(verbatim_doc_comment)]
    View(ViewArgs),
}

#[derive(Debug, clap::Args)]
struct ViewArgs {
    /// A trace from `tpo search --trace`: one JSON trace, or JSON lines (one per prompt).
    trace: PathBuf,
    /// Where to write the page [default: the trace's path with the extension .html].
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
enum TraceCliError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: TraceFileError,
    },
    #[error(transparent)]
    Viewer(#[from] ViewerError),
    #[error("the output {0} is the trace itself; pass another --output")]
    SameFile(PathBuf),
}

pub fn run(args: TraceArgs) -> Result<ExitCode, tpo_engine::Error> {
    let TraceCommand::View(view) = args.command;
    match write_view(&view) {
        Ok((count, output)) => {
            let searches = if count == 1 { "search" } else { "searches" };
            println!(
                "wrote {count} {searches} to {} (open it in a browser)",
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn write_view(args: &ViewArgs) -> Result<(usize, PathBuf), TraceCliError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| TraceCliError::Io { what, path, source }
    };
    let text = std::fs::read_to_string(&args.trace).map_err(io("reading", &args.trace))?;
    let traces = parse_traces(&text).map_err(|source| TraceCliError::Parse {
        path: args.trace.clone(),
        source,
    })?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.trace.with_extension("html"));
    if output == args.trace {
        return Err(TraceCliError::SameFile(output));
    }
    let page = trace_page(&traces)?;
    // Written whole, then renamed over the target: an interrupted run leaves no half page.
    let partial = output.with_extension("html.partial");
    std::fs::write(&partial, page).map_err(io("writing", &partial))?;
    std::fs::rename(&partial, &output).map_err(io("writing", &output))?;
    Ok((traces.len(), output))
}
