//! DARWIN, reward-guided evolutionary decoding (docs/algorithms.md §3), with M mutations, a
//! replacement every m tokens keeping the top k, and I iterations:
//!
//! 1. **mutation**: the policy rewords the parent instruction M times (one request, n = M;
//!    the parent is the query, then the archive's best instruction); each variant starts one
//!    candidate, answering the variant;
//! 2. **reward-guided replacement**: every live candidate generates up to m more tokens (all
//!    in the engine's batch at once); the partial answers are scored by the reward model
//!    against the *original* query; the top k are kept and every other candidate is replaced
//!    by a **fork** of the best unfinished one: a copy of its state (instruction and tokens)
//!    that continues with its own seed. Candidates sharing a state are one engine request
//!    with n = copies, so the shared prefix is prefilled once and its KV rows are forked.
//!    This repeats until every candidate has finished (end of turn or the token limit);
//! 3. the iteration's instructions and their best answers go to the **archive**; the next
//!    iteration mutates the archive's best instruction.
//!
//! The answer is the best finished candidate of the whole search.
//!
//! Seeds: the mutation call is seeded by [`call_seed`]`(seed, iteration, Mutation)`, each
//! segment request by [`segment_seed`]`(seed, iteration, round, first member)`; nothing else
//! enters, so a DARWIN search is reproducible alone or among others.
//!
//! A segment or a fork re-submits the candidate's prompt and tokens (token ids, never
//! re-tokenized text) as a new prompt: the engine's prefix cache holds the rows of the
//! segment that produced them, so only the last token is prefilled and the rows are copied
//! (or the slot taken over); the copies of one state then fork those rows.

use std::time::Instant;

use super::best_of_n::trace_params;
use super::params::{call_seed, segment_seed, CallRole};
use super::prompts;
use super::state::SearchState;
use super::trace::{
    ArchiveEntry, Candidate, DarwinIteration, DarwinRecord, Finish, MemberScore, MutationRecord,
    Origin, Replacement, RoundRecord, Trace, UNSCORED,
};
use super::{Progress, SearchError, SearchParams, StepEvent, Strategy};
use crate::engine::{FinishReason, SampleOutput};
use crate::model::TokenId;

/// Drop code of a candidate outranked at a replacement.
pub const REPLACED: &str = "replaced";

/// DARWIN on `query`; the trace holds every mutation, round, replacement and candidate.
pub(crate) async fn darwin(
    mut state: SearchState<'_>,
    params: &SearchParams,
    progress: Progress<'_>,
) -> Result<Trace, SearchError> {
    let rewards = state.rewards;
    let query = state.query;
    let options = params.darwin();
    let mut archive: Vec<ArchiveEntry> = Vec::new();
    let mut iterations = Vec::with_capacity(options.iterations);
    let mut parent = query.to_string();
    for iteration in 1..=options.iterations {
        let record = run_iteration(&mut state, params, iteration, &parent).await?;
        add_to_archive(&mut archive, &state, iteration, &record);
        if let Some(best) = best_entry(&archive) {
            parent = best.instruction.clone();
        }
        progress(&StepEvent::after(
            iteration,
            options.iterations,
            &state.log,
            None,
            Some(record.clone()),
        ));
        iterations.push(record);
    }
    let mut trace_settings = trace_params(params, rewards, options.iterations);
    trace_settings.width = options.mutations;
    let mut trace = state.finish(Strategy::Darwin, trace_settings, Vec::new())?;
    trace.darwin = Some(DarwinRecord {
        mutations: options.mutations,
        replace_every: options.replace_every,
        keep: options.keep,
        iterations,
        archive,
    });
    Ok(trace)
}

/// A candidate being generated.
#[derive(Debug, Clone)]
struct Member {
    /// Its candidate id (the log holds a placeholder until it is finalized).
    id: usize,
    /// Index of the instruction it answers.
    instruction: usize,
    tokens: Vec<TokenId>,
    finished: Option<Finish>,
    /// Reward of its latest text, or why it has none.
    score: Result<f32, String>,
    /// Whether `tokens` changed since it was last scored.
    stale: bool,
}

/// One iteration: mutate `parent`, then generate with replacement until every candidate is
/// finished.
async fn run_iteration(
    state: &mut SearchState<'_>,
    params: &SearchParams,
    iteration: usize,
    parent: &str,
) -> Result<DarwinIteration, SearchError> {
    let started = Instant::now();
    let tokens_before = state.totals.tokens_generated;
    let first_id = state.log.next_id();
    let (mutations, prompts) = mutate(state, params, iteration, parent).await?;
    let mut members = Vec::with_capacity(mutations.len());
    for (i, mutation) in mutations.iter().enumerate() {
        let id = push_placeholder(state, iteration, Origin::Mutation, Vec::new(), mutation);
        members.push(Member {
            id,
            instruction: i,
            tokens: Vec::new(),
            finished: None,
            score: Err("not scored yet".into()),
            stale: true,
        });
    }
    let mut rounds = Vec::new();
    for round in 0.. {
        generate_segment(state, params, iteration, round, &prompts, &mut members).await?;
        score_members(state, &mut members).await?;
        let scores = members
            .iter()
            .map(|m| MemberScore {
                id: m.id,
                tokens: m.tokens.len(),
                score: m.score.as_ref().ok().copied(),
                finished: m.finished.is_some(),
            })
            .collect();
        let (kept, replacements) = if members.iter().all(|m| m.finished.is_some()) {
            (Vec::new(), Vec::new())
        } else {
            let keep = params.darwin().keep;
            replace(state, iteration, round, keep, &mutations, &mut members)?
        };
        let done = members.iter().all(|m| m.finished.is_some());
        rounds.push(RoundRecord {
            round,
            scores,
            kept,
            replacements,
        });
        if done {
            break;
        }
    }
    for member in &members {
        finalize(state, member, None)?;
    }
    let best = state.log.best();
    Ok(DarwinIteration {
        iteration,
        parent_instruction: parent.to_string(),
        mutations,
        rounds,
        candidate_ids: (first_id..state.log.next_id()).collect(),
        best_id_so_far: best.map(|c| c.id),
        best_score_so_far: best.and_then(|c| c.score),
        tokens: state.totals.tokens_generated - tokens_before,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Why a variant the policy wrote is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MutationDrop {
    /// Nothing left after cleaning.
    Empty,
    /// The token limit cut it (a variant is one line).
    TooLong,
    /// Its chat prompt does not fit the context with room to answer.
    PromptTooLong,
}

impl MutationDrop {
    pub fn code(self) -> &'static str {
        match self {
            MutationDrop::Empty => "empty",
            MutationDrop::TooLong => "too_long",
            MutationDrop::PromptTooLong => "prompt_too_long",
        }
    }
}

/// The instruction in a mutation output: the first line, trimmed, without wrapping quotes.
pub fn clean_mutation(raw: &str, finish: FinishReason) -> Result<String, MutationDrop> {
    if finish == FinishReason::Length {
        return Err(MutationDrop::TooLong);
    }
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty());
    let mut text = line.unwrap_or_default();
    for (open, close) in [('"', '"'), ('\u{201c}', '\u{201d}'), ('\'', '\'')] {
        if text.len() >= 2 && text.starts_with(open) && text.ends_with(close) {
            text = text[open.len_utf8()..text.len() - close.len_utf8()].trim();
        }
    }
    if text.is_empty() {
        Err(MutationDrop::Empty)
    } else {
        Ok(text.to_string())
    }
}

/// Tokens a mutation may take: twice the parent's length plus a margin, within the
/// search's limit.
fn mutation_budget(parent_tokens: usize, max_new_tokens: usize) -> usize {
    (2 * parent_tokens + 32).min(max_new_tokens)
}

/// The M variants of `parent` (a dropped variant falls back to `parent`, with the reason),
/// each with the token ids of its chat prompt.
async fn mutate(
    state: &mut SearchState<'_>,
    params: &SearchParams,
    iteration: usize,
    parent: &str,
) -> Result<(Vec<MutationRecord>, Vec<Vec<TokenId>>), SearchError> {
    let engine = state.engine;
    let parent_tokens = state.encode(parent)?.len();
    let sampling = params.sampling_up_to(
        call_seed(params.seed(), iteration, CallRole::Mutation),
        prompts::mutation_stop(),
        mutation_budget(parent_tokens, params.max_new_tokens()),
    )?;
    let prompt = prompts::mutation_prompt(engine, parent)?;
    let samples = state
        .generate(prompt, sampling, params.darwin().mutations)
        .await?;
    let parent_prompt = engine.chat().question_prompt(parent)?;
    let mut records = Vec::with_capacity(samples.len());
    let mut prompts = Vec::with_capacity(samples.len());
    for sample in &samples {
        let raw = sample.text_in(engine.chat())?;
        let cleaned = match clean_mutation(&raw, sample.finish_reason) {
            Ok(instruction) => {
                // The variant's own prompt must leave room for an answer.
                let prompt = engine.chat().question_prompt(&instruction)?;
                if prompt.len() + 1 > engine.max_seq_len() {
                    Err(MutationDrop::PromptTooLong)
                } else {
                    Ok((instruction, prompt))
                }
            }
            Err(reason) => Err(reason),
        };
        let (record, prompt) = match cleaned {
            Ok((instruction, prompt)) => (
                MutationRecord {
                    instruction,
                    raw,
                    dropped: None,
                },
                prompt,
            ),
            Err(reason) => (
                MutationRecord {
                    instruction: parent.to_string(),
                    raw,
                    dropped: Some(reason.code().to_string()),
                },
                parent_prompt.clone(),
            ),
        };
        records.push(record);
        prompts.push(prompt);
    }
    Ok((records, prompts))
}

/// Adds an unfinished candidate to the log (filled in by [`finalize`]) and returns its id.
fn push_placeholder(
    state: &mut SearchState<'_>,
    iteration: usize,
    origin: Origin,
    parents: Vec<usize>,
    mutation: &MutationRecord,
) -> usize {
    let id = state.log.next_id();
    state.log.candidates.push(Candidate {
        id,
        step: iteration,
        origin,
        parents,
        instruction: Some(mutation.instruction.clone()),
        seed: None,
        text: String::new(),
        raw: None,
        tokens: 0,
        finish_reason: Finish::Length,
        score: None,
        dropped: None,
        drop_detail: None,
    });
    id
}

/// Up to m more tokens for every live member: members with the same state (a candidate and
/// its forks before they diverge) share one request with n = their count.
async fn generate_segment(
    state: &mut SearchState<'_>,
    params: &SearchParams,
    iteration: usize,
    round: usize,
    prompts: &[Vec<TokenId>],
    members: &mut [Member],
) -> Result<(), SearchError> {
    let max_new = params.max_new_tokens();
    let every = params.darwin().replace_every;
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..members.len() {
        if members[i].finished.is_some() {
            continue;
        }
        let same = groups.iter_mut().find(|g| {
            let first = &members[g[0]];
            first.instruction == members[i].instruction && first.tokens == members[i].tokens
        });
        match same {
            Some(group) => group.push(i),
            None => groups.push(vec![i]),
        }
    }
    let mut requests = Vec::with_capacity(groups.len());
    let mut sent = Vec::with_capacity(groups.len());
    for group in groups {
        let lead = &members[group[0]];
        let mut prompt = prompts[lead.instruction].clone();
        prompt.extend_from_slice(&lead.tokens);
        let budget = every.min(max_new.saturating_sub(lead.tokens.len()));
        if budget == 0 || prompt.len() + 1 > state.engine.max_seq_len() {
            for &i in &group {
                members[i].finished = Some(Finish::Length);
            }
            continue;
        }
        let seed = segment_seed(params.seed(), iteration, round, group[0]);
        let sampling = params.sampling_up_to(seed, Vec::new(), budget)?;
        requests.push((prompt, sampling.clone(), group.len()));
        sent.push((group, sampling, budget));
    }
    let results = state.generate_all(requests).await?;
    for ((group, sampling, budget), samples) in sent.into_iter().zip(results) {
        for (&i, sample) in group.iter().zip(&samples) {
            let member = &mut members[i];
            if member.tokens.is_empty() {
                state.log.candidates[member.id].seed =
                    Some(sampling.sample_seed(sample.index as u64));
            }
            member.tokens.extend_from_slice(&sample.tokens);
            member.stale = true;
            member.finished = segment_finish(sample, budget, member.tokens.len(), max_new);
        }
    }
    Ok(())
}

/// Whether a member is done after a segment: the end of its turn, or a length stop that was
/// not the segment's own limit (the search's token limit or the context).
fn segment_finish(
    sample: &SampleOutput,
    budget: usize,
    total: usize,
    max_new: usize,
) -> Option<Finish> {
    match sample.finish_reason {
        FinishReason::Stop => Some(Finish::Stop),
        FinishReason::Length if total >= max_new || sample.tokens.len() < budget => {
            Some(Finish::Length)
        }
        FinishReason::Length => None,
    }
}

/// Scores every member whose text changed since its last score, in one reward request; an
/// empty answer is not sent and has no score.
async fn score_members(
    state: &mut SearchState<'_>,
    members: &mut [Member],
) -> Result<(), SearchError> {
    let mut to_score = Vec::new();
    let mut texts = Vec::new();
    for (i, member) in members.iter_mut().enumerate() {
        if !member.stale {
            continue;
        }
        member.stale = false;
        let text = state.decode(&member.tokens)?;
        if text.trim().is_empty() {
            member.score = Err("the answer is empty".into());
            continue;
        }
        // A leak or a loop already written stays: such a member ranks last (and is
        // replaced) without being scored.
        if let Err(why) = state.guard.check_partial(state.query, &text) {
            member.score = Err(format!("{}: {why}", why.code()));
            continue;
        }
        to_score.push(i);
        texts.push(text.trim().to_string());
    }
    let scores = state.score_responses(texts).await?;
    for (i, score) in to_score.into_iter().zip(scores) {
        members[i].score = score;
    }
    Ok(())
}

/// Ranks members by reward (unscored last, ties to the lower index), keeps the top k and
/// replaces every other member by a fork of the best unfinished kept one. When every kept
/// member has finished there is nothing to fork: the others end as outranked.
fn replace(
    state: &mut SearchState<'_>,
    iteration: usize,
    round: usize,
    keep: usize,
    mutations: &[MutationRecord],
    members: &mut Vec<Member>,
) -> Result<(Vec<usize>, Vec<Replacement>), SearchError> {
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |m: &Member| m.score.as_ref().ok().copied();
        match (key(&members[a]), key(&members[b])) {
            (Some(x), Some(y)) => y.total_cmp(&x).then(a.cmp(&b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(&b),
        }
    });
    let (kept, outranked) = order.split_at(keep.min(order.len()));
    let source = kept
        .iter()
        .copied()
        .find(|&i| members[i].finished.is_none());
    let kept_ids = kept.iter().map(|&i| members[i].id).collect();
    let mut replacements = Vec::new();
    let mut retired = Vec::new();
    for &i in outranked {
        let from = source.map(|s| members[s].clone());
        let detail = match &from {
            Some(f) => format!(
                "outranked at round {round}; replaced by a fork of candidate {}",
                f.id
            ),
            None => format!("outranked at round {round}; every kept candidate had finished"),
        };
        finalize(state, &members[i], Some(detail))?;
        let Some(from) = from else {
            // Nothing to continue from: the member ends here, its candidate final.
            retired.push(i);
            continue;
        };
        let fork_id = push_placeholder(
            state,
            iteration,
            Origin::Fork,
            vec![from.id],
            &mutations[from.instruction],
        );
        replacements.push(Replacement {
            replaced_id: members[i].id,
            fork_id,
            from_id: from.id,
            prefix_tokens: from.tokens.len(),
            prefix_text: state.decode(&from.tokens)?,
        });
        members[i] = Member {
            id: fork_id,
            ..from
        };
    }
    retired.sort_unstable();
    for i in retired.into_iter().rev() {
        members.remove(i);
    }
    Ok((kept_ids, replacements))
}

/// Writes a member's final state into its candidate: its text, tokens and finish, and its
/// score, or `outranked` as the reason it was dropped (the score is then only in the round).
fn finalize(
    state: &mut SearchState<'_>,
    member: &Member,
    outranked: Option<String>,
) -> Result<(), SearchError> {
    let text = state.decode(&member.tokens)?;
    let candidate = &mut state.log.candidates[member.id];
    candidate.text = text.trim().to_string();
    candidate.tokens = member.tokens.len();
    candidate.finish_reason = member.finished.unwrap_or(Finish::Length);
    let degenerate = state.guard.check(state.query, &candidate.text).err();
    match (outranked, &member.score, degenerate) {
        (Some(detail), _, _) => {
            candidate.score = None;
            candidate.dropped = Some(REPLACED.to_string());
            candidate.drop_detail = Some(detail);
        }
        (None, result, Some(why)) => {
            // Not an answer: dropped with the guard's reason; a score it already had is
            // kept for the search that has nothing better (`CandidateLog::best`).
            candidate.score = result.as_ref().ok().copied();
            candidate.dropped = Some(why.code().to_string());
            candidate.drop_detail = Some(why.to_string());
        }
        (None, Ok(score), None) => candidate.score = Some(*score),
        (None, Err(reason), None) => {
            candidate.score = None;
            candidate.dropped = Some(UNSCORED.to_string());
            candidate.drop_detail = Some(reason.clone());
        }
    }
    Ok(())
}

/// Adds each instruction of the iteration with its best finished kept answer.
fn add_to_archive(
    archive: &mut Vec<ArchiveEntry>,
    state: &SearchState<'_>,
    iteration: usize,
    record: &DarwinIteration,
) {
    let mut seen: Vec<&str> = Vec::new();
    for mutation in &record.mutations {
        if seen.contains(&mutation.instruction.as_str()) {
            continue;
        }
        seen.push(&mutation.instruction);
        let best = record
            .candidate_ids
            .iter()
            .map(|&id| &state.log.candidates[id])
            .filter(|c| c.instruction.as_deref() == Some(mutation.instruction.as_str()))
            .filter(|c| c.is_kept())
            .filter_map(|c| c.score.map(|s| (c.id, s)))
            .fold(None, |best: Option<(usize, f32)>, (id, s)| match best {
                Some((_, b)) if b >= s => best,
                _ => Some((id, s)),
            });
        archive.push(ArchiveEntry {
            iteration,
            instruction: mutation.instruction.clone(),
            best_id: best.map(|b| b.0),
            best_score: best.map(|b| b.1),
        });
    }
}

/// The archive entry with the highest score (ties: the earliest).
fn best_entry(archive: &[ArchiveEntry]) -> Option<&ArchiveEntry> {
    archive.iter().filter(|e| e.best_score.is_some()).fold(
        None,
        |best: Option<&ArchiveEntry>, e| match best {
            Some(b) if b.best_score >= e.best_score => Some(b),
            _ => Some(e),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_mutations_are_cleaned_to_one_unquoted_line() {
        // Outputs SmolLM2 wrote after the "Paraphrased request:" prefix (temperature 0.7).
        let stop = FinishReason::Stop;
        assert_eq!(
            clean_mutation(" How did the United States get its name?", stop),
            Ok("How did the United States get its name?".to_string())
        );
        assert_eq!(
            clean_mutation(
                " \"In a winter's day, a frosty expanse holds my heart's sorrow.\"",
                stop
            ),
            Ok("In a winter's day, a frosty expanse holds my heart's sorrow.".to_string())
        );
        assert_eq!(
            clean_mutation("\n\n  Some famous actors started on Broadway.\nMore.", stop),
            Ok("Some famous actors started on Broadway.".to_string())
        );
        assert_eq!(
            clean_mutation("\u{201c}Write a poem.\u{201d}", stop),
            Ok("Write a poem.".to_string())
        );
        assert_eq!(clean_mutation("  \"\" ", stop), Err(MutationDrop::Empty));
        assert_eq!(clean_mutation("", stop), Err(MutationDrop::Empty));
        assert_eq!(
            clean_mutation("A long rambling line", FinishReason::Length),
            Err(MutationDrop::TooLong)
        );
    }

    fn sample(tokens: usize, finish_reason: FinishReason) -> SampleOutput {
        SampleOutput {
            index: 0,
            tokens: vec![1; tokens],
            logprobs: vec![0.0; tokens],
            top_logprobs: Vec::new(),
            stop_at: None,
            text: None,
            finish_reason,
            prompt_tokens: 3,
            time_to_first_token: std::time::Duration::ZERO,
            elapsed: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_segment_ends_a_candidate_only_at_its_turn_end_or_the_search_limit() {
        // The segment's own limit: the candidate goes on.
        assert_eq!(
            segment_finish(&sample(8, FinishReason::Length), 8, 16, 24),
            None
        );
        // End of turn.
        assert_eq!(
            segment_finish(&sample(3, FinishReason::Stop), 8, 11, 24),
            Some(Finish::Stop)
        );
        // The search's token limit.
        assert_eq!(
            segment_finish(&sample(8, FinishReason::Length), 8, 24, 24),
            Some(Finish::Length)
        );
        // The context ran out before the segment's limit.
        assert_eq!(
            segment_finish(&sample(5, FinishReason::Length), 8, 13, 24),
            Some(Finish::Length)
        );
    }

    #[test]
    fn the_archive_best_is_the_highest_scored_instruction_ties_to_the_earliest() {
        let entry = |instruction: &str, score: Option<f32>| ArchiveEntry {
            iteration: 1,
            instruction: instruction.into(),
            best_id: score.map(|_| 0),
            best_score: score,
        };
        let archive = vec![
            entry("a", Some(0.2)),
            entry("b", None),
            entry("c", Some(0.5)),
            entry("d", Some(0.5)),
        ];
        assert_eq!(
            best_entry(&archive).map(|e| e.instruction.as_str()),
            Some("c")
        );
        assert!(best_entry(&[entry("x", None)]).is_none());
    }

    #[test]
    fn a_mutation_may_take_twice_its_parent_plus_a_margin_within_the_limit() {
        assert_eq!(mutation_budget(10, 512), 52);
        assert_eq!(mutation_budget(300, 128), 128);
    }
}
