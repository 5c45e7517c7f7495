//! A sampled row's consequences for its sequence: sampling a row of host logits on the CPU,
//! taking the token (stop tokens, streaming, stop strings, length limits), and ending a
//! sequence that is done (its result queued, its slot freed or cached).
//!
//! Not here: where logits come from (`decode`, `prefill`) or GPU sampling (`decode`).

use super::super::request::{FinishReason, GenerationEvent, SampleOutput};
use super::super::sampler::Sampled;
use super::super::EngineError;
use super::sequence::Outcome;
use super::Scheduler;
use crate::model::find_stop;

impl Scheduler {
    /// Samples row `logits` for decoding sequence `i` with uniform `u` and takes the token.
    pub(super) fn sample_row(&mut self, i: usize, logits: &[f32], u: f32) -> Outcome {
        let seq = &self.decoding[i];
        if seq.group.cancelled() {
            return Outcome::Dropped;
        }
        #[cfg(feature = "fault-injection")]
        if seq.panics_scheduler() {
            panic!(
                "injected scheduler panic (test hook of sample {})",
                seq.index
            );
        }
        #[cfg(feature = "fault-injection")]
        let logits = if seq.poisons_logits() {
            self.poisoned_row.clear();
            self.poisoned_row.resize(logits.len(), f32::NAN);
            &self.poisoned_row[..]
        } else {
            logits
        };
        let row = logits;
        match self.sampler.sample(row, &seq.group.params, u, &seq.tokens) {
            Ok(sampled) => self.accept_sampled(i, sampled),
            Err(e) => {
                seq.group.fail(EngineError::Logits(e));
                Outcome::Dropped
            }
        }
    }

    /// Appends `sampled` to decoding sequence `i`.
    pub(super) fn accept_sampled(&mut self, i: usize, sampled: Sampled) -> Outcome {
        let max_len = self.arena.shape().max_len;
        let seq = &mut self.decoding[i];
        let params = &seq.group.params;
        let o = params.options();
        let is_eos = !params.ignore_eos() && self.eos.contains(&sampled.token);
        if is_eos || o.stop_token_ids.contains(&sampled.token) {
            return Outcome::Finished(FinishReason::Stop);
        }
        seq.tokens.push(sampled.token);
        seq.logprobs.push(sampled.logprob);
        if o.top_logprobs > 0 {
            seq.top_logprobs.push(sampled.top.clone());
        }
        seq.next_input = sampled.token;
        if seq.first_token_at.is_none() {
            seq.first_token_at = Some(seq.group.submitted.elapsed());
        }
        let sent = seq.group.send(GenerationEvent::Token {
            index: seq.index,
            token: sampled.token,
            logprob: sampled.logprob,
            top: sampled.top,
        });
        if !sent {
            // Cancelled: the slot is freed now; nothing reaches the closed stream.
            return Outcome::Dropped;
        }
        if !o.stop.is_empty() {
            // Only the new text (and the longest stop's reach before it) is searched.
            match seq.text.push(&self.tokenizer, &seq.tokens) {
                Ok(new_from) => {
                    seq.stop_at = find_stop(seq.text.text(), new_from, &o.stop);
                    if seq.stop_at.is_some() {
                        return Outcome::Finished(FinishReason::Stop);
                    }
                }
                Err(e) => {
                    seq.group.fail(EngineError::Model(e));
                    return Outcome::Dropped;
                }
            }
        }
        if seq.tokens.len() >= params.max_new_tokens() || seq.len >= max_len {
            Outcome::Finished(FinishReason::Length)
        } else {
            Outcome::Continue
        }
    }

    /// Ends sequence `i` as `outcome` says (call highest index first).
    pub(super) fn settle(&mut self, i: usize, outcome: Outcome) {
        match outcome {
            Outcome::Continue => {}
            Outcome::Finished(reason) => self.finish(i, reason),
            Outcome::Dropped => {
                self.remove_decoding(i, false);
            }
        }
    }

    /// Queues sequence `i`'s result (sent by `flush_finished`) and frees its slot.
    pub(super) fn finish(&mut self, i: usize, finish_reason: FinishReason) {
        let seq = self.remove_decoding(i, self.slots.cache_on());
        let elapsed = seq.group.submitted.elapsed();
        let prompt_only = self.limits.multi_token_rows_only;
        let cached = self
            .slots
            .cache_on()
            .then(|| seq.cached_tokens(prompt_only));
        // The answer cut at its stop string, on the very text the stop was found in (a fresh
        // decode of the tokens may differ from the incremental one, so an offset into this
        // text is not one into that).
        let text = seq
            .stop_at
            .and_then(|at| seq.text.text().get(..at))
            .map(str::to_string);
        let output = SampleOutput {
            index: seq.index,
            text,
            prompt_tokens: seq.group.prompt_len,
            time_to_first_token: seq.first_token_at.unwrap_or(elapsed),
            elapsed,
            tokens: seq.tokens,
            logprobs: seq.logprobs,
            top_logprobs: seq.top_logprobs,
            stop_at: seq.stop_at,
            finish_reason,
        };
        if let Some(tokens) = cached {
            self.cache_insert(seq.slot, tokens);
        }
        self.finished.push((seq.group, output));
    }

    /// Publishes the gauges, then sends the results of sequences finished since the last
    /// flush: whoever receives a result sees every slot freed with it already counted.
    pub(super) fn flush_finished(&mut self) {
        self.publish_gauges();
        for (group, output) in self.finished.drain(..) {
            group.send(GenerationEvent::Finished(output));
        }
    }
}
