//! Greedy decoding as a search: one temperature-0 answer, scored, so its trace and reward
//! compare directly with Best-of-N's and TPO's.

use super::state::SearchState;
use super::trace::{Origin, Trace, TraceParams};
use super::{Progress, SearchError, SearchParams, Strategy};

/// The policy's temperature-0 answer to `query` and its reward.
pub(crate) async fn greedy(
    mut state: SearchState<'_>,
    params: &SearchParams,
    progress: Progress<'_>,
) -> Result<Trace, SearchError> {
    let rewards = state.rewards;
    state
        .sample_query(params.greedy_sampling()?, 1, Origin::Greedy)
        .await?;
    state.require_scored()?;
    progress(&state.initial_event(0));
    let trace_params = TraceParams {
        width: 1,
        depth: 0,
        temperature: 0.0,
        top_p: 1.0,
        max_new_tokens: params.max_new_tokens(),
        seed: params.seed(),
        reward_model: rewards.name().to_string(),
    };
    state.finish(Strategy::Greedy, trace_params, Vec::new())
}
