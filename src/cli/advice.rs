//! What the user of the command line can do about a library error, in flags.
//!
//! The layers below the CLI report facts (the limit, the value, what exceeded it) and name
//! no flag; this room turns those facts into the CLI's advice (`--max-new-tokens`,
//! `--max-seq-len`, `--overwrite`, …), printed after the error. It is NOT where errors are
//! made or classified, and NOT the server's wording: `server::error` turns the same facts
//! into advice naming request fields. Also how a failed `tpo bench` command ends
//! ([`report`]).

use std::fmt;

use tpo_engine::dataset::{DatasetError, ResumeRefusal};
use tpo_engine::engine::EngineError;
use tpo_engine::model::ModelError;
use tpo_engine::reward::RewardError;
use tpo_engine::runtime::RuntimeError;
use tpo_engine::search::SearchError;
use tpo_engine::viewer::ViewerError;
use tpo_engine::Error;

/// The advice for `err`, when the CLI has one.
pub fn advice(err: &Error) -> Option<String> {
    match err {
        Error::Runtime(e) => runtime(e),
        Error::Model(e) => model(e),
        Error::Engine(e) => engine(e),
        Error::Reward(e) => reward(e),
        Error::Dataset(e) => dataset(e),
        Error::Search(e) => search(e),
        Error::Viewer(ViewerError::SameFile(_)) => Some("pass another --output".into()),
        _ => None,
    }
}

/// `fact`, then `advice` when there is one: how every error line of the CLI reads.
pub fn with_advice(fact: impl fmt::Display, advice: Option<String>) -> String {
    match advice {
        Some(advice) => format!("{fact}; {advice}"),
        None => fact.to_string(),
    }
}

/// A library error shown with its CLI advice (for errors that travel as text, such as a
/// server's load failure).
#[derive(Debug)]
pub struct Advised(pub Error);

impl fmt::Display for Advised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&with_advice(&self.0, advice(&self.0)))
    }
}

fn runtime(e: &RuntimeError) -> Option<String> {
    match e {
        RuntimeError::ProviderMissing { .. } | RuntimeError::ProviderStart { .. } => {
            Some("or use --device cpu to run on the CPU".into())
        }
        _ => None,
    }
}

fn model(e: &ModelError) -> Option<String> {
    match e {
        ModelError::MissingFolder { .. } => {
            Some("run `make setup` to export the default model, or pass --model DIR".into())
        }
        _ => None,
    }
}

pub fn engine(e: &EngineError) -> Option<String> {
    match e {
        EngineError::SequenceTooLong { .. } => {
            Some("shorten the prompt, lower --max-new-tokens or raise --max-seq-len".into())
        }
        EngineError::BelowSlidingWindow { window, .. } => {
            Some(format!("raise --max-seq-len to at least {window}"))
        }
        EngineError::KvTooLarge { .. } => {
            Some("lower --kv-slots (or --kv-memory) or --max-seq-len".into())
        }
        EngineError::KvBudgetTooSmall { .. } => {
            Some("raise --kv-memory or lower --max-seq-len".into())
        }
        EngineError::Runtime(e) => runtime(e),
        EngineError::Model(e) => model(e),
        _ => None,
    }
}

fn reward(e: &RewardError) -> Option<String> {
    match e {
        RewardError::Runtime(e) => runtime(e),
        RewardError::Model(e) => model(e),
        _ => None,
    }
}

fn dataset(e: &DatasetError) -> Option<String> {
    match e {
        DatasetError::Resume { reason, .. } => Some(
            match reason {
                ResumeRefusal::DifferentRun { .. } => {
                    "pass --overwrite to start again, or choose another --output"
                }
                ResumeRefusal::Unrecorded => "pass --overwrite to replace it",
                ResumeRefusal::ChangedOutside { .. } | ResumeRefusal::PastShard { .. } => {
                    "pass --overwrite to start again"
                }
            }
            .into(),
        ),
        DatasetError::BadProgress { .. } => Some("delete it or pass --overwrite".into()),
        DatasetError::ChunkRows { max, .. } => {
            Some(format!("--chunk-rows must be within 1..={max}"))
        }
        DatasetError::Engine(e) => engine(e),
        DatasetError::Reward(e) => reward(e),
        _ => None,
    }
}

pub fn search(e: &SearchError) -> Option<String> {
    match e {
        SearchError::DoesNotFit(e) => Some(format!(
            "lower --max-new-tokens to at most {}, or raise --max-seq-len",
            e.fits
        )),
        SearchError::Engine(e) => engine(e),
        _ => None,
    }
}

/// A bench's outcome as the command's: a failure of the library is returned (`main` prints
/// it), any other failure of the bench is printed here and exits 1.
pub(super) fn report(
    result: Result<std::process::ExitCode, tpo_engine::bench::BenchError>,
) -> Result<std::process::ExitCode, tpo_engine::Error> {
    match result {
        Ok(code) => Ok(code),
        Err(tpo_engine::bench::BenchError::Lib(e)) => Err(e),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(err: impl Into<Error>) -> String {
        let err = err.into();
        with_advice(&err, advice(&err))
    }

    #[test]
    fn context_errors_name_the_flags() {
        let long = line(EngineError::SequenceTooLong {
            tokens: 40,
            limit: 16,
        });
        assert!(long.contains("context holds 16"), "{long}");
        assert!(
            long.contains("lower --max-new-tokens or raise --max-seq-len"),
            "{long}"
        );
        let window = line(EngineError::BelowSlidingWindow {
            max_seq_len: 256,
            window: 512,
        });
        assert!(
            window.contains("raise --max-seq-len to at least 512"),
            "{window}"
        );
        let kv = line(EngineError::KvTooLarge {
            slots: 64,
            max_len: 2048,
            bytes: 1 << 40,
            available: Some(1 << 30),
        });
        assert!(kv.contains("lower --kv-slots"), "{kv}");
        // Through the layers that wrap an engine error.
        let searched = line(SearchError::Engine(EngineError::SequenceTooLong {
            tokens: 40,
            limit: 16,
        }));
        assert!(searched.contains("--max-seq-len"), "{searched}");
    }

    #[test]
    fn resume_refusals_name_overwrite() {
        let different = line(DatasetError::Resume {
            output: "o.jsonl".into(),
            reason: ResumeRefusal::DifferentRun {
                differs: vec!["shard".into()],
            },
        });
        assert!(different.contains("(differs in: shard)"), "{different}");
        assert!(different.contains("pass --overwrite"), "{different}");
        assert!(different.contains("another --output"), "{different}");
        for reason in [
            ResumeRefusal::Unrecorded,
            ResumeRefusal::ChangedOutside {
                actual: 1,
                recorded: 2,
            },
            ResumeRefusal::PastShard {
                done: 3,
                shard_rows: 2,
            },
        ] {
            let l = line(DatasetError::Resume {
                output: "o.jsonl".into(),
                reason,
            });
            assert!(l.contains("--overwrite"), "{l}");
        }
        let chunk = line(DatasetError::ChunkRows { value: 0, max: 10 });
        assert!(chunk.contains("--chunk-rows"), "{chunk}");
    }

    #[test]
    fn a_missing_model_folder_names_the_flag() {
        let l = line(ModelError::MissingFolder {
            path: "nowhere".into(),
        });
        assert!(l.contains("pass --model DIR"), "{l}");
    }

    #[test]
    fn errors_without_advice_print_as_they_are() {
        let l = line(EngineError::EmptyPrompt);
        assert_eq!(l, "the prompt is empty");
    }
}
