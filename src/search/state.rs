//! What every strategy does with the engine and the reward model, in one place: run a policy
//! call and count its cost, turn samples into candidates, score them, keep them all (the
//! TPO cache is every scored candidate), and finish the trace.

use std::time::Instant;

use crate::engine::{Engine, EngineError, GenerateRequest, SampleOutput, SamplingParams};
use crate::model::TokenId;

use super::guard::Guard;
use super::trace::{
    Candidate, CandidateLog, Origin, StepRecord, Totals, Trace, TraceParams, UNSCORED,
};
use super::{SearchError, StepEvent, Strategy};
use crate::reward::{OwnedRewardInput, RewardService, ServiceError};

/// One search in progress.
pub(crate) struct SearchState<'a> {
    pub engine: &'a Engine,
    pub rewards: &'a RewardService,
    pub query: &'a str,
    reference: Option<&'a str>,
    /// The degenerate-candidate guard: our prompt text and the policy's chat template.
    pub guard: Guard,
    pub log: CandidateLog,
    pub totals: Totals,
    started: Instant,
}

/// How a batch of new candidates fared.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    pub kept: usize,
    pub dropped: usize,
}

impl<'a> SearchState<'a> {
    pub fn new(
        engine: &'a Engine,
        rewards: &'a RewardService,
        query: &'a str,
        reference: Option<&'a str>,
    ) -> Self {
        Self {
            engine,
            rewards,
            query,
            reference,
            guard: Guard::new(engine.chat().template_text()),
            log: CandidateLog::default(),
            totals: Totals::default(),
            started: Instant::now(),
        }
    }

    /// One policy request of `n` samples (one prefill, `n` forked decodes).
    pub async fn generate(
        &mut self,
        prompt: Vec<TokenId>,
        sampling: SamplingParams,
        n: usize,
    ) -> Result<Vec<SampleOutput>, SearchError> {
        let prompt_tokens = prompt.len();
        let samples = self
            .engine
            .generate(GenerateRequest::new(prompt, sampling).with_n(n))
            .await?;
        self.totals.requests += 1;
        self.totals.prompt_tokens += prompt_tokens;
        self.totals.completions += samples.len();
        self.totals.tokens_generated += samples.iter().map(|s| s.tokens.len()).sum::<usize>();
        Ok(samples)
    }

    /// Several policy requests at once, so they share the engine's batch (DARWIN's
    /// segments); each is `(prompt, sampling, n)`, the results in the same order.
    pub async fn generate_all(
        &mut self,
        requests: Vec<(Vec<TokenId>, SamplingParams, usize)>,
    ) -> Result<Vec<Vec<SampleOutput>>, SearchError> {
        let engine = self.engine;
        self.totals.prompt_tokens += requests.iter().map(|(p, _, _)| p.len()).sum::<usize>();
        let results =
            futures::future::try_join_all(requests.into_iter().map(|(prompt, sampling, n)| {
                engine.generate(GenerateRequest::new(prompt, sampling).with_n(n))
            }))
            .await?;
        for samples in &results {
            self.totals.requests += 1;
            self.totals.completions += samples.len();
            self.totals.tokens_generated += samples.iter().map(|s| s.tokens.len()).sum::<usize>();
        }
        Ok(results)
    }

    /// Rewards of `responses` to the query, in one reward request: a row the model refuses
    /// or a non-finite reward gives `Err` with the reason.
    pub async fn score_responses(
        &mut self,
        responses: Vec<String>,
    ) -> Result<Vec<Result<f32, String>>, SearchError> {
        let expected = responses.len();
        let inputs = responses
            .into_iter()
            .map(|response| OwnedRewardInput {
                prompt: self.query.to_string(),
                response,
                reference: self.reference.map(str::to_string),
            })
            .collect::<Vec<_>>();
        self.totals.rm_inputs += inputs.len();
        let scores = self.rewards.score(inputs).await?;
        if scores.len() != expected {
            return Err(SearchError::Reward(ServiceError::Count {
                expected,
                got: scores.len(),
            }));
        }
        Ok(scores
            .into_iter()
            .map(|score| match score {
                Ok(s) if s.is_finite() => Ok(s),
                Ok(s) => Err(format!("the reward model returned {s}")),
                Err(e) => Err(e.to_string()),
            })
            .collect())
    }

    /// Token ids of `text` under the policy's tokenizer.
    pub fn encode(&self, text: &str) -> Result<Vec<TokenId>, SearchError> {
        Ok(self
            .engine
            .tokenizer()
            .encode(text)
            .map_err(EngineError::from)?)
    }

    /// Text of `tokens` under the policy's tokenizer (untrimmed).
    pub fn decode(&self, tokens: &[TokenId]) -> Result<String, SearchError> {
        Ok(self
            .engine
            .tokenizer()
            .decode(tokens)
            .map_err(EngineError::from)?)
    }

    /// Text of a sample, trimmed.
    pub fn text(&self, sample: &SampleOutput) -> Result<String, SearchError> {
        Ok(sample.text_in(self.engine.chat())?.trim().to_string())
    }

    /// An unscored candidate for `sample` with the next free id (`offset` places it after
    /// others made in the same batch).
    pub fn candidate(
        &self,
        offset: usize,
        sample: &SampleOutput,
        step: usize,
        origin: Origin,
        sampling: &SamplingParams,
        text: String,
    ) -> Candidate {
        Candidate {
            id: self.log.next_id() + offset,
            step,
            origin,
            parents: Vec::new(),
            instruction: None,
            seed: (!sampling.is_greedy()).then(|| sampling.sample_seed(sample.index as u64)),
            text,
            raw: None,
            tokens: sample.tokens.len(),
            finish_reason: sample.finish_reason.into(),
            score: None,
            dropped: None,
            drop_detail: None,
        }
    }

    /// Drops the degenerate candidates (the guard), scores the others (one reward request),
    /// then adds them all to the log: a row the reward model refuses, or a non-finite
    /// reward, drops its candidate as `unscored` with the reason. While the search has no
    /// kept candidate at all, the guard's drops are scored too (they stay dropped), so a
    /// search whose every candidate is degenerate can still answer, flagged
    /// ([`CandidateLog::best`]).
    pub async fn score_and_add(
        &mut self,
        mut candidates: Vec<Candidate>,
    ) -> Result<Outcome, SearchError> {
        for c in candidates.iter_mut().filter(|c| c.dropped.is_none()) {
            if let Err(why) = self.guard.check(self.query, &c.text) {
                c.dropped = Some(why.code().to_string());
                c.drop_detail = Some(why.to_string());
            }
        }
        self.score_where(&mut candidates, |c| c.dropped.is_none())
            .await?;
        let nothing_kept = !self.log.has_kept() && !candidates.iter().any(Candidate::is_kept);
        if nothing_kept {
            self.score_where(&mut candidates, Candidate::is_guard_dropped)
                .await?;
        }
        let kept = candidates.iter().filter(|c| c.is_kept()).count();
        let outcome = Outcome {
            kept,
            dropped: candidates.len() - kept,
        };
        self.log.candidates.extend(candidates);
        Ok(outcome)
    }

    /// Scores the candidates `select` picks (one reward request); a refusal drops the
    /// candidate as `unscored` (a guard drop keeps its code and gets the reason appended).
    async fn score_where(
        &mut self,
        candidates: &mut [Candidate],
        select: impl Fn(&Candidate) -> bool,
    ) -> Result<(), SearchError> {
        let to_score: Vec<usize> = (0..candidates.len())
            .filter(|&i| select(&candidates[i]))
            .collect();
        if to_score.is_empty() {
            return Ok(());
        }
        let responses = to_score
            .iter()
            .map(|&i| candidates[i].text.clone())
            .collect();
        let scores = self.score_responses(responses).await?;
        for (&i, score) in to_score.iter().zip(scores) {
            let c = &mut candidates[i];
            match score {
                Ok(s) => c.score = Some(s),
                Err(reason) if c.dropped.is_some() => {
                    let detail = c.drop_detail.take().unwrap_or_default();
                    c.drop_detail = Some(format!("{detail}; not scored either: {reason}"));
                }
                Err(reason) => {
                    c.dropped = Some(UNSCORED.to_string());
                    c.drop_detail = Some(reason);
                }
            }
        }
        Ok(())
    }

    /// Samples `n` answers to the query itself (one request), scores them and logs them as
    /// step-0 candidates.
    pub async fn sample_query(
        &mut self,
        sampling: SamplingParams,
        n: usize,
        origin: Origin,
    ) -> Result<Outcome, SearchError> {
        let prompt = self.engine.chat().question_prompt(self.query)?;
        let samples = self.generate(prompt, sampling.clone(), n).await?;
        let mut candidates = Vec::with_capacity(samples.len());
        for (offset, sample) in samples.iter().enumerate() {
            let text = self.text(sample)?;
            candidates.push(self.candidate(offset, sample, 0, origin, &sampling, text));
        }
        self.score_and_add(candidates).await
    }

    /// The progress report after the initial candidates were scored (step 0 of `depth`).
    pub fn initial_event(&self, depth: usize) -> StepEvent {
        StepEvent::after(0, depth, &self.log, None, None)
    }

    /// Fails the search when nothing was scored: there is no answer to return.
    pub fn require_scored(&self) -> Result<(), SearchError> {
        if self.log.best().is_some() {
            return Ok(());
        }
        let reasons: Vec<String> = self
            .log
            .candidates
            .iter()
            .map(|c| match (&c.dropped, &c.drop_detail) {
                (Some(code), Some(detail)) => format!("{code}: {detail}"),
                (Some(code), None) => code.clone(),
                _ => "not scored".to_string(),
            })
            .collect();
        Err(SearchError::NothingScored(reasons.join("; ")))
    }

    pub fn finish(
        mut self,
        strategy: Strategy,
        params: TraceParams,
        steps: Vec<StepRecord>,
    ) -> Result<Trace, SearchError> {
        self.require_scored()?;
        self.totals.seconds = self.started.elapsed().as_secs_f64();
        let Self {
            query, log, totals, ..
        } = self;
        log.into_trace(query, strategy, params, steps, totals)
            .ok_or_else(|| SearchError::NothingScored("no candidates".into()))
    }
}
