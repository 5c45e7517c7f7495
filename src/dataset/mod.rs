//! Preference datasets in, scored rows out: reading JSONL / JSON / Parquet rows in the
//! Hugging Face shapes, sharding, and the resumable scoring job behind `tpo score`.
//!
//! Rooms: `reader` (rows as JSON values), `row` (a value → what to score), `shard`
//! (`--shard i/n`), `checkpoint` (crash-safe append + progress record), `job` (the loop that
//! ties them to the reward models), `answers` (`tpo search --file`: prompts answered by
//! searches), `scored` (an output line, typed), `summary` (accuracy
//! and margins of an output file), `prompts` (the one reader of prompt files).

pub mod answers;
pub mod checkpoint;
pub mod job;
pub mod prompts;
pub mod reader;
pub mod row;
pub mod scored;
pub mod shard;
pub mod summary;

use std::path::PathBuf;

pub use job::{ScoreJob, ScoreOutcome, Scorers};
pub use row::Columns;
pub use scored::ScoredRow;
pub use shard::Shard;
pub use summary::Summary;

/// Why a job cannot resume into its output, as facts (the CLI names the flags that get
/// past them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeRefusal {
    #[error("it holds a different run (differs in: {})", .differs.join(", "))]
    DifferentRun { differs: Vec<String> },
    #[error("the file exists and no progress record says which run wrote it")]
    Unrecorded,
    #[error(
        "the file has {actual} bytes but the progress record says {recorded} were written; \
         it was changed outside tpo"
    )]
    ChangedOutside { actual: u64, recorded: u64 },
    #[error("the progress record says {done} rows are done but the shard has {shard_rows}")]
    PastShard { done: usize, shard_rows: usize },
}

/// Errors of a dataset job as a whole (a bad row is not one: it goes to the errors file).
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("cannot resume into {output}: {reason}")]
    Resume {
        output: PathBuf,
        reason: ResumeRefusal,
    },
    /// The progress record beside an output cannot be read as one (`reason`: what is wrong).
    #[error("{path}: {reason}")]
    BadProgress { path: PathBuf, reason: String },
    #[error(
        "{path} is locked: another `tpo score` is writing it (wait for it to stop, or choose \
         another output)"
    )]
    Busy { path: PathBuf },
    #[error(
        "the {what} {path} is the input {input}: writing it would destroy the rows being read"
    )]
    SameFile {
        what: &'static str,
        path: PathBuf,
        input: PathBuf,
    },
    #[error("the {scorer} returned {got} scores for {expected} inputs")]
    ScoreCount {
        scorer: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("the chunk size must be within 1..={max} rows, not {value}")]
    ChunkRows { value: usize, max: usize },
    #[error("invalid options: {0}")]
    Options(String),
    #[error(transparent)]
    Reward(#[from] crate::reward::RewardError),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Answers(#[from] answers::AnswersError),
    #[error("internal dataset error: {0}")]
    Internal(String),
}
