//! Best-of-N (docs/algorithms.md §2): N samples of the query in ONE request (one prefill, N
//! forked decodes; sample `i` seeded `seed + i`), all scored, the argmax returned.

use super::params::{call_seed, CallRole};
use super::state::SearchState;
use super::trace::{Origin, Trace, TraceParams};
use super::{Progress, RewardService, SearchError, SearchParams, Strategy};

/// The best of `params.width()` scored samples of `query`.
pub(crate) async fn best_of_n(
    mut state: SearchState<'_>,
    params: &SearchParams,
    progress: Progress<'_>,
) -> Result<Trace, SearchError> {
    let rewards = state.rewards;
    sample_and_score(&mut state, params, 0, progress).await?;
    state.finish(
        Strategy::BestOfN,
        trace_params(params, rewards, 0),
        Vec::new(),
    )
}

/// The N initial samples, scored and logged (step 0 of TPO too); fails when none could be
/// scored. Reports step 0 with `depth` steps to come.
pub(crate) async fn sample_and_score(
    state: &mut SearchState<'_>,
    params: &SearchParams,
    depth: usize,
    progress: Progress<'_>,
) -> Result<(), SearchError> {
    let sampling = params.sampling(call_seed(params.seed(), 0, CallRole::Sample), Vec::new())?;
    state
        .sample_query(sampling, params.width(), Origin::Sample)
        .await?;
    state.require_scored()?;
    progress(&state.initial_event(depth));
    Ok(())
}

/// The settings a sampled search ran with.
pub(crate) fn trace_params(
    params: &SearchParams,
    rewards: &RewardService,
    depth: usize,
) -> TraceParams {
    let o = params.options();
    TraceParams {
        width: o.width,
        depth,
        temperature: o.temperature,
        top_p: o.top_p,
        max_new_tokens: o.max_new_tokens,
        seed: o.seed,
        reward_model: rewards.name().to_string(),
    }
}
