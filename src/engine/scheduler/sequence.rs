//! What the scheduler holds per request and per sample: a request's shared state
//! ([`Group`]), a decoding sample ([`Sequence`]), work waiting or prefilling ([`Job`],
//! [`Waiting`], [`Prefill`]) and what a sample's token led to ([`Outcome`]). Plain data and
//! its small helpers; no scheduling decisions.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::super::batch_plan::JobId;
use super::super::decoder::LogitsWanted;
use super::super::kv::Slot;
use super::super::request::{ContinuationLogprobs, FinishReason, GenerationEvent};
use super::super::sampler::{SamplingParams, SequenceRng};
use super::super::EngineError;
use crate::model::{IncrementalText, TokenId};

/// A request's shared state, referenced by each of its samples.
pub(super) struct Group {
    pub(super) params: SamplingParams,
    /// Bounded by construction: room for every event the request can produce.
    pub(super) events: Sender<GenerationEvent>,
    pub(super) submitted: Instant,
    pub(super) prompt_len: usize,
    /// Set once the request has failed (its stream got the error).
    pub(super) failed: Cell<bool>,
}

impl Group {
    /// The caller is gone or the request failed: its sequences should leave.
    pub(super) fn cancelled(&self) -> bool {
        self.failed.get() || self.events.is_closed()
    }

    /// Sends `event`; false when the caller is gone.
    pub(super) fn send(&self, event: GenerationEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            // The channel holds every event a request can produce, so this means a bug;
            // the request fails rather than the scheduler blocking or growing memory.
            Err(TrySendError::Full(_)) => {
                self.failed.set(true);
                false
            }
        }
    }

    /// Fails the request (once): its stream gets `error`, its sequences leave.
    pub(super) fn fail(&self, error: EngineError) {
        if !self.failed.replace(true) {
            let _ = self.events.try_send(GenerationEvent::Failed(error));
        }
    }
}

/// What happened to a sequence after a token.
pub(super) enum Outcome {
    Continue,
    Finished(FinishReason),
    /// The request failed (or was already failed / cancelled): leave without a result.
    Dropped,
}

/// A sample being decoded.
pub(super) struct Sequence {
    pub(super) slot: Slot,
    pub(super) group: Rc<Group>,
    /// The request's prompt (shared by its samples), for the prefix-cache entry.
    pub(super) prompt: Rc<[TokenId]>,
    pub(super) index: usize,
    pub(super) rng: SequenceRng,
    /// Tokens cached in the slot.
    pub(super) len: usize,
    /// Sampled but not yet fed to the model.
    pub(super) next_input: TokenId,
    pub(super) tokens: Vec<TokenId>,
    pub(super) logprobs: Vec<f32>,
    pub(super) top_logprobs: Vec<Vec<(TokenId, f32)>>,
    /// The answer's text so far, kept only when the request has stop strings.
    pub(super) text: IncrementalText,
    pub(super) first_token_at: Option<std::time::Duration>,
    /// Byte offset in the decoded answer where a stop string matched.
    pub(super) stop_at: Option<usize>,
}

impl Sequence {
    /// The tokens whose KV rows the slot holds (the last sampled token is never fed), or
    /// with `prompt_only` just the prompt's, which a multi-token step computed (the decoded
    /// tokens' rows came from one-token steps).
    pub(super) fn cached_tokens(&self, prompt_only: bool) -> Vec<TokenId> {
        let mut tokens = Vec::with_capacity(self.len);
        tokens.extend_from_slice(&self.prompt);
        if !prompt_only {
            tokens.extend_from_slice(&self.tokens);
        }
        tokens.truncate(self.len);
        tokens
    }
}

pub(super) enum Job {
    Generate {
        group: Rc<Group>,
        n: usize,
    },
    Logprobs {
        prompt_len: usize,
        reply: tokio::sync::oneshot::Sender<Result<ContinuationLogprobs, EngineError>>,
        logprobs: Vec<f32>,
    },
}

impl Job {
    pub(super) fn cancelled(&self) -> bool {
        match self {
            Job::Generate { group, .. } => group.cancelled(),
            Job::Logprobs { reply, .. } => reply.is_closed(),
        }
    }
    pub(super) fn slots_needed(&self) -> usize {
        match self {
            Job::Generate { n, .. } => *n,
            Job::Logprobs { .. } => 1,
        }
    }

    /// The logits its prefill step needs: the last position's to sample from, or every
    /// position's for teacher-forced log-probs.
    pub(super) fn logits_wanted(&self) -> LogitsWanted {
        match self {
            Job::Generate { .. } => LogitsWanted::Last,
            Job::Logprobs { .. } => LogitsWanted::All,
        }
    }

    /// Tokens of `tokens` a cached prefix may cover: prefill must still compute the logits
    /// the job reads (the last prompt token's for sampling; from the prompt's last token on
    /// for teacher-forced log-probs), and at least `min_prefill` tokens (2 when only rows of
    /// multi-token steps may be reused, so the rest is not a one-token step).
    pub(super) fn reusable(&self, tokens: &[TokenId], min_prefill: usize) -> usize {
        let at_most = tokens.len().saturating_sub(min_prefill.max(1));
        match self {
            Job::Generate { .. } => at_most,
            Job::Logprobs { prompt_len, .. } => prompt_len.saturating_sub(1).min(at_most),
        }
    }
}

/// Work admitted but not yet prefilled.
pub(super) struct Waiting {
    /// The job's id in the batch plan.
    pub(super) id: JobId,
    pub(super) job: Job,
    pub(super) tokens: Vec<TokenId>,
}

/// The prompt being prefilled.
pub(super) struct Prefill {
    /// The job's id in the batch plan.
    pub(super) id: JobId,
    pub(super) job: Job,
    pub(super) slot: Slot,
    pub(super) tokens: Vec<TokenId>,
    pub(super) done: usize,
}

pub(super) fn fail_job(job: Job, error: EngineError) {
    match job {
        Job::Generate { group, .. } => group.fail(error),
        Job::Logprobs { reply, .. } => {
            let _ = reply.send(Err(error));
        }
    }
}
