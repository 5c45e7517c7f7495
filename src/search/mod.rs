//! Searches over the policy with a reward model: greedy decoding, Best-of-N, TPO and DARWIN
//! (docs/algorithms.md §1–3). Each search is plain async code over an [`Engine`] and a
//! [`RewardService`]: it awaits generations and scores and owns no thread, so many searches
//! interleave in the engine's continuous batch and the scorer's batches.
//!
//! Rooms: `params` (validated search settings and per-call seeds), `prompts` (our TPO role
//! prompts), `tags` (pulling the rewritten answer out of an update), `guard` (dropping
//! candidates that are not answers: leaked prompt text, echoes, loops), `state` (what every
//! strategy does: policy calls, samples → scored candidates, the cache), `trace` (the JSON
//! record of a search), `progress` (the step events a running search reports, and the same
//! rebuilt from a trace), and one room per strategy: `greedy`, `best_of_n`, `tpo`, `darwin`.
//!
//! Not here: flags, files and printing (the CLI), sampling and batching (the engine),
//! reward arithmetic and the batching reward service (the reward layer).

mod best_of_n;
pub mod darwin;
pub mod fit;
mod greedy;
pub mod guard;
mod params;
mod progress;
pub mod prompts;
mod state;
pub mod tags;
mod tpo;
pub mod trace;

pub use params::{
    call_seed, segment_seed, CallRole, DarwinOptions, PeakSetting, SearchOptions, SearchParams,
    Strategy,
};
pub use progress::{events_of, Progress, StepEvent};
pub use tags::{extract_revised_answer, DropReason};
pub use trace::{
    parse_traces, ArchiveEntry, Candidate, DarwinIteration, DarwinRecord, Finish, MemberScore,
    MutationRecord, Origin, Replacement, RoundRecord, StepRecord, Totals, Trace, TraceFileError,
    TraceParams, SCHEMA_VERSION,
};

use crate::engine::{Engine, EngineError};
use crate::reward::{RewardService, ServiceError};
use state::SearchState;

/// Errors of a search.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("invalid search settings: {0}")]
    InvalidParams(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Reward(#[from] ServiceError),
    #[error("no candidate could be scored ({0}); the search has nothing to return")]
    NothingScored(String),
    #[error("the search does not fit the context: {0}")]
    DoesNotFit(#[from] fit::DoesNotFit),
}

/// A chat that cannot be rendered or an answer that cannot be decoded (the policy's text
/// side) fails the search as the engine's model error, as when the engine did the text.
impl From<crate::model::ModelError> for SearchError {
    fn from(e: crate::model::ModelError) -> Self {
        SearchError::Engine(e.into())
    }
}

/// Runs the search `params` asks for on `query` (with `reference` for similarity rewards).
pub async fn run(
    engine: &Engine,
    rewards: &RewardService,
    query: &str,
    reference: Option<&str>,
    params: &SearchParams,
    progress: Progress<'_>,
) -> Result<Trace, SearchError> {
    // Refused before any work when one of its calls could not fit (see `fit`).
    fit::check_engine(engine, params, query)??;
    let state = SearchState::new(engine, rewards, query, reference);
    match params.strategy() {
        Strategy::Greedy => greedy::greedy(state, params, progress).await,
        Strategy::BestOfN => best_of_n::best_of_n(state, params, progress).await,
        Strategy::Tpo => tpo::tpo(state, params, progress).await,
        Strategy::Darwin => darwin::darwin(state, params, progress).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Compile-time check: a search is a `Send` future, so a multi-threaded server can spawn
    /// it as a task (nothing is run here).
    #[allow(dead_code)]
    fn searches_are_send_futures(
        engine: &Engine,
        rewards: &RewardService,
        params: &SearchParams,
        progress: Progress<'_>,
    ) {
        assert_send(&run(engine, rewards, "q", None, params, progress));
    }
}
