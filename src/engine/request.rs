//! What callers send to the scheduler and what comes back: requests, streamed events and
//! final outputs. The stream is an async channel; dropping it cancels the request.

use std::time::Duration;

use tokio::sync::mpsc::{Receiver, Sender};

use super::sampler::SamplingParams;
use super::EngineError;
use crate::liveness::Liveness;
use crate::model::{ChatFormat, ModelError, TokenId};

/// A generation request: `n` samples continuing one prompt.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<TokenId>,
    pub params: SamplingParams,
    /// Samples of the prompt; the prompt is prefilled once and its KV rows forked.
    pub n: usize,
}

impl GenerateRequest {
    pub fn new(prompt: Vec<TokenId>, params: SamplingParams) -> Self {
        Self {
            prompt,
            params,
            n: 1,
        }
    }

    pub fn with_n(mut self, n: usize) -> Self {
        self.n = n;
        self
    }
}

/// Why a sample stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS, a stop token or a stop string.
    Stop,
    /// `max_new_tokens` or the context length.
    Length,
}

/// One finished sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOutput {
    /// Index of the sample within its request (its seed is the request's seed + index).
    pub index: usize,
    pub tokens: Vec<TokenId>,
    /// Log-probability of each generated token under the model (temperature 1).
    pub logprobs: Vec<f32>,
    /// Per generated token, the `top_logprobs` most likely tokens and their log-probs (empty
    /// when not asked for).
    pub top_logprobs: Vec<Vec<(TokenId, f32)>>,
    /// Byte offset into the decoded text where a stop string matched, if one did.
    pub stop_at: Option<usize>,
    /// When a stop string matched: the answer's text up to it, from the same incremental
    /// decode the match was found in (`SampleOutput::text_in` returns it).
    pub text: Option<String>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// From submission to the last token.
    pub elapsed: Duration,
}

impl SampleOutput {
    /// Mean seconds between generated tokens after the first (`None` with fewer than two).
    pub fn inter_token_seconds(&self) -> Option<f64> {
        let decode = self.elapsed.saturating_sub(self.time_to_first_token);
        (self.tokens.len() > 1).then(|| decode.as_secs_f64() / (self.tokens.len() - 1) as f64)
    }

    /// Tokens per second after the first token (0 when there was no time to measure).
    pub fn decode_rate(&self) -> f64 {
        match self.inter_token_seconds() {
            Some(seconds) if seconds > 0.0 => 1.0 / seconds,
            _ => 0.0,
        }
    }

    pub fn logprob_sum(&self) -> f32 {
        self.logprobs.iter().sum()
    }

    /// The sample's text by the model's [`ChatFormat::text_of`]: its tokens decoded, cut at
    /// its stop string if one matched.
    pub fn text_in(&self, chat: &ChatFormat) -> Result<String, ModelError> {
        chat.text_of(&self.tokens, self.text.as_deref(), self.stop_at)
    }
}

/// Teacher-forced scoring result: log-probs of a given continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationLogprobs {
    pub token_logprobs: Vec<f32>,
    pub sum: f32,
}

/// What the scheduler streams back for a generation.
#[derive(Debug)]
pub enum GenerationEvent {
    Token {
        index: usize,
        token: TokenId,
        logprob: f32,
        /// The `top_logprobs` most likely tokens of this position (empty when not asked for).
        top: Vec<(TokenId, f32)>,
    },
    Finished(SampleOutput),
    Failed(EngineError),
}

/// The receiving end of a generation. Dropping it cancels the request: the scheduler frees
/// its slots at its next step.
pub struct GenerationStream {
    pub(crate) rx: Receiver<GenerationEvent>,
    pub(crate) n: usize,
    /// Samples finished so far, and whether a failure ended the stream.
    pub(crate) finished: usize,
    pub(crate) over: bool,
    /// Counts the request as in flight until the stream is dropped.
    pub(crate) _pending: PendingGuard,
    /// The scheduler's liveness: a stream that ends early names a dead scheduler.
    pub(crate) liveness: Liveness,
}

/// The error of a channel to the scheduler that closed early: the scheduler died (and
/// said why), or it stopped.
pub(crate) fn stopped(liveness: &Liveness) -> EngineError {
    match liveness.dead_reason() {
        Some(reason) => EngineError::Died { reason },
        None => EngineError::Stopped,
    }
}

/// One request counted against the engine's in-flight limit; dropping it uncounts it.
pub(crate) struct PendingGuard(pub(crate) std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl GenerationStream {
    /// Next event, or `None` when the request is over. A channel that closes before the
    /// request is over (the scheduler died) yields one `Failed` event naming why.
    pub async fn next(&mut self) -> Option<GenerationEvent> {
        let event = self.rx.recv().await;
        self.or_failed(event)
    }

    /// Next event, blocking the thread (not for async contexts).
    pub fn blocking_next(&mut self) -> Option<GenerationEvent> {
        let event = self.rx.blocking_recv();
        self.or_failed(event)
    }

    fn or_failed(&mut self, event: Option<GenerationEvent>) -> Option<GenerationEvent> {
        match &event {
            Some(GenerationEvent::Finished(_)) => self.finished += 1,
            Some(GenerationEvent::Failed(_)) => self.over = true,
            Some(GenerationEvent::Token { .. }) => {}
            None if !self.over && self.finished < self.n => {
                self.over = true;
                return Some(GenerationEvent::Failed(stopped(&self.liveness)));
            }
            None => {}
        }
        event
    }

    /// Waits for every sample, ordered by index.
    pub async fn collect(mut self) -> Result<Vec<SampleOutput>, EngineError> {
        let mut done = Vec::with_capacity(self.n);
        while done.len() < self.n {
            match self.rx.recv().await {
                Some(GenerationEvent::Finished(out)) => done.push(out),
                Some(GenerationEvent::Failed(e)) => return Err(e),
                Some(GenerationEvent::Token { .. }) => {}
                None => return Err(stopped(&self.liveness)),
            }
        }
        done.sort_by_key(|o| o.index);
        Ok(done)
    }
}

/// Messages into the scheduler thread.
pub(crate) enum Command {
    Generate {
        request: GenerateRequest,
        events: Sender<GenerationEvent>,
    },
    Logprobs {
        prompt: Vec<TokenId>,
        continuation: Vec<TokenId>,
        reply: tokio::sync::oneshot::Sender<Result<ContinuationLogprobs, EngineError>>,
    },
    /// Drop every prefix-cache entry (work submitted later finds none).
    ClearPrefixCache,
}

impl Command {
    /// Fails a command the scheduler never took up: its caller hears `error` (a dropped
    /// reply would also end its wait, but without saying why).
    pub(crate) fn fail(self, error: EngineError) {
        match self {
            Command::Generate { events, .. } => {
                let _ = events.try_send(GenerationEvent::Failed(error));
            }
            Command::Logprobs { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Command::ClearPrefixCache => {}
        }
    }
}

/// Fails every command still queued in `commands` once `liveness` says the scheduler is
/// dead; does nothing while it lives (the scheduler alone receives then).
///
/// Why the handle needs this: the dying scheduler marks itself dead, fails what is queued
/// and then drops its receiver, and a bounded crossbeam channel keeps messages queued after
/// its last receiver is gone. A command sent between that final drain and the drop would
/// sit in the channel for as long as any handle lives, its caller waiting forever. So every
/// send is followed by this check: if the scheduler is dead by then, the sender fails what
/// is queued itself. The fences order "queued, then liveness read" here against "marked
/// dead, then queue drained" on the scheduler, so one of the two always sees the command.
pub(crate) fn fail_orphans(commands: &crossbeam_channel::Receiver<Command>, liveness: &Liveness) {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    let Some(reason) = liveness.dead_reason() else {
        return;
    };
    while let Ok(command) = commands.try_recv() {
        command.fail(EngineError::Died {
            reason: reason.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphaned_commands_fail_once_the_scheduler_is_dead_and_not_before() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let liveness = Liveness::new();
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let (events, mut stream) = tokio::sync::mpsc::channel(4);
        tx.send(Command::Logprobs {
            prompt: vec![1],
            continuation: vec![2],
            reply,
        })
        .unwrap();
        let params = SamplingParams::greedy(4).unwrap();
        tx.send(Command::Generate {
            request: GenerateRequest::new(vec![1], params),
            events,
        })
        .unwrap();
        // Alive: the scheduler's commands are left to it.
        fail_orphans(&rx, &liveness);
        assert_eq!(rx.len(), 2);
        assert!(answer.try_recv().is_err());
        // Dead after its final drain: the sender fails what is still queued.
        liveness.mark_dead("injected");
        fail_orphans(&rx, &liveness);
        assert_eq!(rx.len(), 0);
        match answer.try_recv() {
            Ok(Err(EngineError::Died { reason })) => assert_eq!(reason, "injected"),
            other => panic!("the logprobs caller heard {other:?}"),
        }
        match stream.try_recv() {
            Ok(GenerationEvent::Failed(EngineError::Died { reason })) => {
                assert_eq!(reason, "injected")
            }
            other => panic!("the generate caller heard {:?}", other.map(|_| "an event")),
        }
    }
}
