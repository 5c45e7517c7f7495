//! Implicit rewards from log-probabilities (docs/algorithms.md §4): DPO's β(ℓ_θ − ℓ_ref) and
//! MRPO's combination of two references, plus the teacher-forced log-prob scoring that
//! feeds them (through the engine's `logprobs`, batched with everything else it runs).
//!
//! ℓ is the sum of the response's token log-probs after the chat-templated prompt; the
//! end-of-turn token is not part of the response.
//!
//! Requests go to each engine in a sliding window of [`MAX_IN_FLIGHT`], so a batch of any
//! size stays within what the engine admits; a request it still refuses as overloaded
//! (another caller filled it, or its limit is lower) is resubmitted after a short wait.

use std::time::Duration;

use futures::StreamExt;

use crate::engine::{Engine, EngineError};

/// DPO's β, the reference's default.
pub const DEFAULT_BETA: f64 = 0.1;
/// MRPO's clipping η, the reference's default.
pub const DEFAULT_ETA: f64 = 0.1;

/// β (ℓ_θ − ℓ_ref).
pub fn dpo_reward(beta: f64, policy: f64, reference: f64) -> f64 {
    beta * (policy - reference)
}

/// MRPO's adaptive α from each reference's own preference margin Δ_k = ℓ_k(chosen) −
/// ℓ_k(rejected): α = |Δ₁| / (|Δ₁| + |Δ₂|), ½ when both are 0.
pub fn mrpo_alpha(delta1: f64, delta2: f64) -> f64 {
    let total = delta1.abs() + delta2.abs();
    if total == 0.0 || !total.is_finite() {
        0.5
    } else {
        delta1.abs() / total
    }
}

/// Reference 2's log-prob clipped into [ℓ₁ − η|ℓ₁|, ℓ₁ + η|ℓ₁|], so it cannot pull the
/// combination further than a fraction η from reference 1.
pub fn mrpo_clip(l1: f64, l2: f64, eta: f64) -> f64 {
    let width = eta * l1.abs();
    l2.clamp(l1 - width, l1 + width)
}

/// The combined reference log-prob ℓ̃ = ℓ₁ + ℓ₂ − log(α e^{ℓ₁} + (1 − α) e^{ℓ₂}), with ℓ₂
/// clipped first; computed in log space (log-probs of whole answers are in the hundreds).
pub fn mrpo_reference(l1: f64, l2: f64, alpha: f64, eta: f64) -> f64 {
    let l2 = mrpo_clip(l1, l2, eta);
    l1 + l2 - log_add_exp(alpha.ln() + l1, (1.0 - alpha).ln() + l2)
}

/// log(e^a + e^b) without overflow; −∞ terms (a weight of 0) drop out.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Log-probs of one (prompt, response) under a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResponseLogprob {
    pub sum: f64,
    pub tokens: usize,
}

/// Log-prob requests one call keeps in flight per engine: enough to fill its batches (64 KV
/// slots by default), far below its pending limit (4096 by default).
pub const MAX_IN_FLIGHT: usize = 256;

/// First and longest wait before resubmitting requests an engine refused as overloaded.
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LONGEST_RETRY: Duration = Duration::from_millis(200);

/// Teacher-forced ℓ = log π(response | prompt) for every pair, in order, submitted so the
/// engine's scheduler interleaves them (for synchronous callers, not from inside an async
/// runtime).
pub fn response_logprobs(
    engine: &Engine,
    pairs: &[(&str, &str)],
) -> Vec<Result<ResponseLogprob, EngineError>> {
    logprobs_under(&[engine], pairs).pop().unwrap_or_default()
}

/// ℓ of every pair under each engine (one vector per engine, one result per pair, in
/// order), every engine working at once. Back-pressure is waited out: an `Overloaded`
/// answer is never a result.
fn logprobs_under(
    engines: &[&Engine],
    pairs: &[(&str, &str)],
) -> Vec<Vec<Result<ResponseLogprob, EngineError>>> {
    let all: Vec<usize> = (0..pairs.len()).collect();
    let mut results = futures::executor::block_on(futures::future::join_all(
        engines.iter().map(|&engine| windowed(engine, pairs, &all)),
    ));
    let mut wait = FIRST_RETRY;
    loop {
        let refused: Vec<Vec<usize>> = results.iter().map(|r| overloaded(r)).collect();
        if refused.iter().all(Vec::is_empty) {
            return results;
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(LONGEST_RETRY);
        let again = futures::executor::block_on(futures::future::join_all(
            engines
                .iter()
                .zip(&refused)
                .map(|(&engine, which)| windowed(engine, pairs, which)),
        ));
        for ((slots, which), redone) in results.iter_mut().zip(&refused).zip(again) {
            for (&i, r) in which.iter().zip(redone) {
                slots[i] = r;
            }
        }
    }
}

/// Positions of the results the engine refused as overloaded.
fn overloaded(results: &[Result<ResponseLogprob, EngineError>]) -> Vec<usize> {
    results
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, Err(EngineError::Overloaded { .. })))
        .map(|(i, _)| i)
        .collect()
}

/// ℓ of `pairs[i]` for each `i` of `which`, in that order, with at most [`MAX_IN_FLIGHT`]
/// requests in flight (answered in any order, so a slow one does not hold the window).
async fn windowed(
    engine: &Engine,
    pairs: &[(&str, &str)],
    which: &[usize],
) -> Vec<Result<ResponseLogprob, EngineError>> {
    let mut answered: Vec<(usize, Result<ResponseLogprob, EngineError>)> =
        futures::stream::iter(which.iter().enumerate())
            .map(|(at, &i)| async move { (at, response_logprob(engine, pairs[i]).await) })
            .buffer_unordered(MAX_IN_FLIGHT)
            .collect()
            .await;
    answered.sort_unstable_by_key(|&(at, _)| at);
    answered.into_iter().map(|(_, r)| r).collect()
}

/// ℓ of one (prompt, response).
async fn response_logprob(
    engine: &Engine,
    (prompt, response): (&str, &str),
) -> Result<ResponseLogprob, EngineError> {
    let prompt_ids = engine.chat().question_prompt(prompt)?;
    let response_ids = engine.tokenizer().encode(response)?;
    let out = engine.logprobs(prompt_ids, response_ids).await?;
    Ok(ResponseLogprob {
        sum: out.token_logprobs.iter().map(|&x| f64::from(x)).sum(),
        tokens: out.token_logprobs.len(),
    })
}

/// The models implicit rewards are computed from: the policy and one or more references,
/// each a running engine, with DPO's β and (for two references) MRPO's η.
pub struct ImplicitModels {
    pub policy: NamedEngine,
    pub references: Vec<NamedEngine>,
    pub beta: f64,
    /// Combine exactly two references with MRPO.
    pub mrpo: bool,
    pub eta: f64,
}

/// An engine and the folder it was loaded from.
pub struct NamedEngine {
    pub name: String,
    pub engine: Engine,
}

/// Log-probs of one response under the policy and each reference.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseLogprobs {
    pub policy: f64,
    pub references: Vec<f64>,
}

impl ImplicitModels {
    /// Log-probs of every (prompt, response) under every model, one result per pair; a
    /// pair's error is the first model's error for it.
    pub fn logprobs(&self, pairs: &[(&str, &str)]) -> Vec<Result<ResponseLogprobs, EngineError>> {
        let engines: Vec<&Engine> = std::iter::once(&self.policy)
            .chain(&self.references)
            .map(|m| &m.engine)
            .collect();
        let mut models = logprobs_under(&engines, pairs).into_iter();
        let policy = models.next().unwrap_or_default();
        let mut references: Vec<std::vec::IntoIter<_>> = models.map(Vec::into_iter).collect();
        policy
            .into_iter()
            .map(|p| {
                // `logprobs_under` answers every engine for every pair.
                let refs: Vec<Result<ResponseLogprob, EngineError>> = references
                    .iter_mut()
                    .map(|r| {
                        r.next().unwrap_or_else(|| {
                            Err(EngineError::Internal(
                                "a reference model answered fewer log-probs than pairs".into(),
                            ))
                        })
                    })
                    .collect();
                let policy = p?.sum;
                let references = refs
                    .into_iter()
                    .map(|r| r.map(|r| r.sum))
                    .collect::<Result<Vec<f64>, EngineError>>()?;
                Ok(ResponseLogprobs { policy, references })
            })
            .collect()
    }

    /// DPO reward of a response under reference `k`.
    pub fn dpo(&self, logprobs: &ResponseLogprobs, k: usize) -> f64 {
        dpo_reward(self.beta, logprobs.policy, logprobs.references[k])
    }

    /// MRPO rewards of a row; `None` unless MRPO is on with two references.
    pub fn mrpo(
        &self,
        chosen: &ResponseLogprobs,
        rejected: Option<&ResponseLogprobs>,
    ) -> Option<Mrpo> {
        if !self.mrpo {
            return None;
        }
        mrpo_rewards(self.beta, self.eta, chosen, rejected)
    }
}

/// MRPO rewards of a chosen/rejected pair (α from both references' margins), or of a single
/// response (α = ½); `None` unless both have exactly two references.
pub fn mrpo_rewards(
    beta: f64,
    eta: f64,
    chosen: &ResponseLogprobs,
    rejected: Option<&ResponseLogprobs>,
) -> Option<Mrpo> {
    if chosen.references.len() != 2 || rejected.is_some_and(|r| r.references.len() != 2) {
        return None;
    }
    let alpha = match rejected {
        Some(r) => mrpo_alpha(
            chosen.references[0] - r.references[0],
            chosen.references[1] - r.references[1],
        ),
        None => 0.5,
    };
    let reward = |l: &ResponseLogprobs| {
        let combined = mrpo_reference(l.references[0], l.references[1], alpha, eta);
        dpo_reward(beta, l.policy, combined)
    };
    Some(Mrpo {
        alpha,
        chosen: reward(chosen),
        rejected: rejected.map(reward),
    })
}

/// MRPO's result for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mrpo {
    pub alpha: f64,
    pub chosen: f64,
    pub rejected: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpo_is_beta_times_the_log_ratio() {
        assert!((dpo_reward(0.1, -10.0, -12.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn mrpo_with_equal_references_is_that_reference() {
        for alpha in [0.0, 0.3, 0.5, 1.0] {
            let l = mrpo_reference(-50.0, -50.0, alpha, 0.1);
            assert!((l + 50.0).abs() < 1e-9, "alpha {alpha}: {l}");
        }
    }

    #[test]
    fn mrpo_weights_select_one_reference_at_the_ends() {
        // α = 1 leaves ℓ₂ (clipped), α = 0 leaves ℓ₁ (the formula as docs/algorithms.md states it).
        assert!((mrpo_reference(-100.0, -95.0, 1.0, 0.1) + 95.0).abs() < 1e-9);
        assert!((mrpo_reference(-100.0, -95.0, 0.0, 0.1) + 100.0).abs() < 1e-9);
    }

    #[test]
    fn mrpo_clips_the_second_reference() {
        assert_eq!(mrpo_clip(-100.0, -300.0, 0.1), -110.0);
        assert_eq!(mrpo_clip(-100.0, -20.0, 0.1), -90.0);
        assert_eq!(mrpo_clip(-100.0, -105.0, 0.1), -105.0);
    }

    #[test]
    fn mrpo_alpha_follows_the_margins() {
        assert_eq!(mrpo_alpha(3.0, -1.0), 0.75);
        assert_eq!(mrpo_alpha(0.0, 0.0), 0.5);
    }

    #[test]
    fn mrpo_is_finite_for_long_answers() {
        let l = mrpo_reference(-2000.0, -2100.0, 0.4, 0.1);
        assert!(l.is_finite() && l < -1900.0 && l > -2300.0);
    }
}
