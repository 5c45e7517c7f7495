//! `tpo trace view`: a saved search trace as one self-contained HTML page (the viewer of
//! `tpo serve`, with the trace inlined; no network at view time).

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::viewer::write_trace_page;

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

pub fn run(args: TraceArgs) -> Result<ExitCode, tpo_engine::Error> {
    let TraceCommand::View(view) = args.command;
    let (count, output) = write_trace_page(&view.trace, view.output.as_deref())?;
    let searches = if count == 1 { "search" } else { "searches" };
    println!(
        "wrote {count} {searches} to {} (open it in a browser)",
        output.display()
    );
    Ok(ExitCode::SUCCESS)
}
