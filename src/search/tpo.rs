//! TPO, test-time preference optimization (docs/algorithms.md §1), width N and depth D:
//!
//! 1. sample N answers (Best-of-N's step), score them: the cache is every scored candidate
//!    of the search, for the whole search;
//! 2. each step t = 1..=D: chosen = best and rejected = worst of the WHOLE cache; the policy
//!    writes a critique (textual loss), then suggestions from it (textual gradient), then N
//!    rewrites of the chosen answer (update, one request with n = N); the rewrites are parsed
//!    out of their tags, scored and added to the cache;
//! 3. the answer is the best of the cache.
//!
//! Cost: 1 + 3·D requests, N + D·(N + 2) completions, N·(D + 1) reward inputs at most.
//! Every call samples with the search's sampler (temperature, top-p, token limit), as the
//! reference does, each seeded by [`call_seed`] from (search seed, step, role).

use std::time::Instant;

use super::best_of_n::{sample_and_score, trace_params};
use super::params::{call_seed, CallRole};
use super::prompts;
use super::state::SearchState;
use super::tags;
use super::trace::{Origin, StepRecord, Trace};
use super::{Progress, SearchError, SearchParams, StepEvent, Strategy};
use crate::engine::{EngineError, SamplingParams};
use crate::model::TokenId;

/// TPO on `query`; the trace holds every candidate, critique and suggestion.
pub(crate) async fn tpo(
    mut state: SearchState<'_>,
    params: &SearchParams,
    progress: Progress<'_>,
) -> Result<Trace, SearchError> {
    let rewards = state.rewards;
    let depth = params.depth();
    sample_and_score(&mut state, params, depth, progress).await?;
    let mut steps = Vec::with_capacity(depth);
    for step in 1..=depth {
        let record = run_step(&mut state, params, step).await?;
        progress(&StepEvent::after(
            step,
            depth,
            &state.log,
            Some(record.clone()),
            None,
        ));
        steps.push(record);
    }
    state.finish(Strategy::Tpo, trace_params(params, rewards, depth), steps)
}

/// One TPO step: critique, suggestions, N updates, scored into the cache.
async fn run_step(
    state: &mut SearchState<'_>,
    params: &SearchParams,
    step: usize,
) -> Result<StepRecord, SearchError> {
    let started = Instant::now();
    let tokens_before = state.totals.tokens_generated;
    let no_cache = || SearchError::NothingScored("the cache is empty".into());
    // The cache always holds a scored candidate here: step 0 fails the search otherwise.
    let chosen = state.log.best().cloned().ok_or_else(no_cache)?;
    let rejected = state.log.worst().cloned().ok_or_else(no_cache)?;
    let seed = params.seed();

    let prompt = prompts::loss_prompt(state.engine, state.query, &chosen.text, &rejected.text)?;
    let sampling = params.sampling(call_seed(seed, step, CallRole::Loss), Vec::new())?;
    let critique = first_text(state, prompt, sampling).await?;

    let prompt = prompts::gradient_prompt(state.engine, state.query, &chosen.text, &critique)?;
    let sampling = params.sampling(call_seed(seed, step, CallRole::Gradient), Vec::new())?;
    let suggestions = first_text(state, prompt, sampling).await?;

    let prompt = prompts::update_prompt(state.engine, state.query, &chosen.text, &suggestions)?;
    let sampling = params.sampling(
        call_seed(seed, step, CallRole::Update),
        prompts::update_stop(),
    )?;
    let samples = state
        .generate(prompt, sampling.clone(), params.width())
        .await?;
    let mut candidates = Vec::with_capacity(samples.len());
    for (offset, sample) in samples.iter().enumerate() {
        // Untrimmed: the tag rules see exactly what followed the prompt's opening tag.
        let raw = sample.text_in(state.engine.chat())?;
        let parsed = tags::extract_revised_answer(&prompts::update_output(&raw));
        let mut c = state.candidate(
            offset,
            sample,
            step,
            Origin::Update,
            &sampling,
            parsed.clone().unwrap_or_default(),
        );
        c.parents = vec![chosen.id, rejected.id];
        c.raw = Some(raw);
        if let Err(reason) = parsed {
            c.dropped = Some(reason.code().to_string());
            c.drop_detail = Some(reason.to_string());
        }
        candidates.push(c);
    }
    let candidate_ids = candidates.iter().map(|c| c.id).collect();
    let outcome = state.score_and_add(candidates).await?;
    let best = state.log.best().ok_or_else(no_cache)?;
    Ok(StepRecord {
        step,
        chosen_id: chosen.id,
        rejected_id: rejected.id,
        chosen_score: chosen.score.unwrap_or(f32::NAN),
        rejected_score: rejected.score.unwrap_or(f32::NAN),
        critique,
        suggestions,
        candidate_ids,
        kept: outcome.kept,
        dropped: outcome.dropped,
        best_id_so_far: best.id,
        best_score_so_far: best.score.unwrap_or(f32::NAN),
        tokens: state.totals.tokens_generated - tokens_before,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The trimmed text of a one-sample request.
async fn first_text(
    state: &mut SearchState<'_>,
    prompt: Vec<TokenId>,
    sampling: SamplingParams,
) -> Result<String, SearchError> {
    let samples = state.generate(prompt, sampling, 1).await?;
    match samples.first() {
        Some(sample) => state.text(sample),
        None => Err(SearchError::Engine(EngineError::Internal(
            "a one-sample request returned no sample".into(),
        ))),
    }
}
