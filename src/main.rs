//! The `tpo` command line: see `tpo --help`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // Usage errors exit 1 (clap's default 2 would read as `tpo score`'s "rows rejected").
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            cli::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
