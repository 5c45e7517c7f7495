//! `tpo bench quality` flags: parsed here, the report built by
//! [`tpo_engine::bench::quality`] and printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use tpo_engine::bench::quality::{self, QualityOptions, RunSpec};
use tpo_engine::bench::BenchError;

#[derive(Debug, clap::Args)]
pub struct QualityArgs {
    /// A run: LABEL=FILE, or LABEL=FILE@N for the first N candidates of each trace as a
    /// Best-of-N (repeat for each run).
    #[arg(long = "run", value_name = "LABEL=FILE[@N]", required = true, value_parser = quality::parse_run_spec)]
    runs: Vec<RunSpec>,
    /// Draw the best reward so far per step, one line per run, to this PNG.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// TrueType font for the plot's text [default: DejaVu Sans or the first .ttf found].
    #[arg(long, value_name = "FILE.ttf")]
    font: Option<PathBuf>,
    /// Plot title.
    #[arg(long, default_value = "best reward so far per step")]
    title: String,
    /// Write the table as Markdown to this file too.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write the runs (summaries and curves) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

pub fn run(args: QualityArgs) -> Result<ExitCode, tpo_engine::Error> {
    let options = QualityOptions {
        runs: args.runs,
        plot: args.plot,
        font: args.font,
        title: args.title,
        markdown: args.markdown,
        json: args.json,
    };
    let result = (|| -> Result<ExitCode, BenchError> {
        let report = quality::run(&options)?;
        print!("{}", report.table());
        report.write(&options)?;
        Ok(ExitCode::SUCCESS)
    })();
    // Every failure of the report is its own (no library error reaches `main`).
    match result {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
