//! What a search reports while it runs: one [`StepEvent`] after the initial samples are
//! scored (step 0) and after each TPO step or DARWIN iteration, with the candidates that step
//! made and the step's own record (TPO's critique and suggestions, DARWIN's mutations and
//! replacements). [`events_of`] rebuilds the same events from a finished [`Trace`], so a
//! saved trace replays exactly what the live stream showed (the server streams these; the
//! viewer renders both).

use super::trace::{Candidate, CandidateLog, DarwinIteration, StepRecord, Trace};

/// Where a search reports progress: called after the initial samples are scored (step 0)
/// and after each TPO step or DARWIN iteration, as it happens.
pub type Progress<'a> = &'a mut (dyn FnMut(&StepEvent) + Send);

/// One progress report of a search.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepEvent {
    /// 0 for the initial samples, then 1..=depth (DARWIN: its iterations, from 1).
    pub step: usize,
    /// Steps this search will run (0 for greedy and Best-of-N).
    pub depth: usize,
    /// Highest reward the search can answer with so far (`NaN`, serialized as `null`, while
    /// nothing is scored).
    pub best_reward: f32,
    /// Candidates of this step that were scored and kept.
    pub kept: usize,
    /// Candidates of this step that were dropped (each says why).
    pub dropped: usize,
    /// The candidates this step made, as the trace records them.
    pub candidates: Vec<Candidate>,
    /// TPO: the step's chosen and rejected answers, critique and suggestions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpo_step: Option<StepRecord>,
    /// DARWIN: the iteration's mutations, rounds and replacements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub darwin_iteration: Option<DarwinIteration>,
}

impl StepEvent {
    /// The report after `step` of `depth`, from the log as it stands then: the candidates
    /// whose `step` is this one, and the best of everything logged so far.
    pub(crate) fn after(
        step: usize,
        depth: usize,
        log: &CandidateLog,
        tpo_step: Option<StepRecord>,
        darwin_iteration: Option<DarwinIteration>,
    ) -> Self {
        let candidates: Vec<Candidate> = log
            .candidates
            .iter()
            .filter(|c| c.step == step)
            .cloned()
            .collect();
        let kept = candidates.iter().filter(|c| c.is_kept()).count();
        Self {
            step,
            depth,
            best_reward: log.best().and_then(|c| c.score).unwrap_or(f32::NAN),
            kept,
            dropped: candidates.len() - kept,
            candidates,
            tpo_step,
            darwin_iteration,
        }
    }
}

/// The events a live run of `trace`'s search reported, rebuilt from the trace: step 0 (not
/// for DARWIN, whose first report is iteration 1), then one per TPO step or DARWIN
/// iteration.
pub fn events_of(trace: &Trace) -> Vec<StepEvent> {
    type Report = (usize, Option<StepRecord>, Option<DarwinIteration>);
    let (depth, reports): (usize, Vec<Report>) = match &trace.darwin {
        Some(darwin) => (
            darwin.iterations.len(),
            darwin
                .iterations
                .iter()
                .map(|it| (it.iteration, None, Some(it.clone())))
                .collect(),
        ),
        None => (
            trace.params.depth,
            std::iter::once((0, None, None))
                .chain(trace.steps.iter().map(|r| (r.step, Some(r.clone()), None)))
                .collect(),
        ),
    };
    reports
        .into_iter()
        .map(|(step, tpo_step, darwin_iteration)| {
            // The log as it stood then: everything made up to this step.
            let log = CandidateLog {
                candidates: trace
                    .candidates
                    .iter()
                    .filter(|c| c.step <= step)
                    .cloned()
                    .collect(),
            };
            StepEvent::after(step, depth, &log, tpo_step, darwin_iteration)
        })
        .collect()
}
